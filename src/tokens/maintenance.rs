//! Background upkeep: purging ended tokens, inactivity expiry, the maintenance task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use time::OffsetDateTime;

use crate::audit::{AuditEvent, Decision};
use crate::store::{InactiveOutcome, TokenId, TokenRecord, TokenStore};

use super::{Inner, TokenError, Tokens};

/// The automatic upkeep's default intervals: usage every 10 s, the purge every hour.
pub(super) const DEFAULT_INTERVALS: (Duration, Duration) =
    (Duration::from_secs(10), Duration::from_secs(3600));

/// The longest interval a maintenance task waits (about a century): a longer one, such as
/// `Duration::MAX` for "never", would overflow the timer's clock and end the task with a
/// panic before its first turn.
const LONGEST_INTERVAL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `every`, at most [`LONGEST_INTERVAL`].
fn bounded(every: Duration) -> Duration {
    every.min(LONGEST_INTERVAL)
}

/// The state of the upkeep a manager starts on its own.
pub(super) struct Auto {
    /// The intervals (flush, purge); `None`: manual upkeep.
    intervals: Option<(Duration, Duration)>,
    started: AtomicBool,
    /// [`Tokens::spawn_maintenance`] took over: the automatic task stops at its next turn.
    replaced: AtomicBool,
}

impl Auto {
    pub(super) fn new(intervals: Option<(Duration, Duration)>) -> Self {
        Self {
            intervals,
            started: AtomicBool::new(false),
            replaced: AtomicBool::new(false),
        }
    }
}

impl Drop for Inner {
    /// The last clone is gone: the uses still queued are written by a task of their own
    /// (inside a runtime, with the automatic upkeep on), so that a program that drops its
    /// manager does not lose them.
    fn drop(&mut self) {
        if self.auto.intervals.is_none() || self.auto.replaced.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let batch = self.usage.drain();
        if batch.is_empty() {
            return;
        }
        let store = self.store.clone();
        runtime.spawn(async move {
            if let Err(error) = store.record_usage(&batch).await {
                tracing::warn!(%error, "writing the last-used times of a dropped manager failed");
            }
        });
    }
}

/// The automatic upkeep: the same turns as [`Tokens::spawn_maintenance`]'s, holding the
/// manager only during a turn, until the manager is gone or replaced.
async fn auto_maintenance(running: Running, flush_every: Duration, purge_every: Duration) {
    let inner = running.0.clone();
    let (flush_every, purge_every) = (bounded(flush_every), bounded(purge_every));
    let start = tokio::time::Instant::now();
    let mut flush = tokio::time::interval_at(start + flush_every, flush_every);
    let mut purge = tokio::time::interval_at(start + purge_every, purge_every);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let purging = tokio::select! {
            _ = flush.tick() => false,
            _ = purge.tick() => true,
        };
        let Some(inner) = inner.upgrade() else { break };
        if inner.auto.replaced.load(Ordering::Relaxed) {
            break;
        }
        let tokens = Tokens { inner };
        if purging {
            tokens.purge_turn().await;
        } else {
            tokens.flush_turn().await;
        }
    }
}

/// Held by the automatic upkeep while it runs. A task dropped without finishing (its
/// runtime shut down, as a runtime used only to build the manager does) lets the next use
/// start the upkeep again in the runtime at hand, rather than leaving the manager without
/// one for good; a task that panicked is not started again.
struct Running(Weak<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if let Some(inner) = self.0.upgrade() {
            inner.auto.started.store(false, Ordering::Release);
        }
    }
}

/// An audit event for something the manager did outside a request: `decision` is
/// [`Decision::Allow`] for a change that took effect, and `reason` names its cause
/// (`inactive`, `owner`).
pub(super) fn maintenance_event(
    now: OffsetDateTime,
    event: &str,
    id: TokenId,
    record: Option<&TokenRecord>,
    decision: Decision,
    reason: &str,
) -> AuditEvent {
    AuditEvent {
        timestamp: now,
        event: event.to_owned(),
        api_token_id: Some(id),
        api_token_name: record.map(|r| r.name.to_string()),
        owner: record.map(|r| r.owner.to_string()),
        method: String::new(),
        path: String::new(),
        status_code: 0,
        rbac_decision: decision,
        reason: Some(reason.to_owned()),
        client_ip: None,
        request_id: None,
        details: None,
    }
}

/// Handle to the task started by [`Tokens::spawn_maintenance`]. Dropping it aborts the task;
/// [`shutdown`](Self::shutdown) stops it after a last flush.
#[derive(Debug)]
pub struct Maintenance {
    stop: Arc<tokio::sync::Notify>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Maintenance {
    /// Stops the task after writing the queued `last_used_at` updates.
    pub async fn shutdown(mut self) {
        self.stop.notify_one();
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

impl Tokens {
    /// Deletes expired and revoked records now; returns how many. With
    /// [`revoke_after_inactivity`](super::TokensBuilder::revoke_after_inactivity) or a kind's
    /// [`with_inactivity_expiry`](crate::TokenKind::with_inactivity_expiry), then revokes
    /// the inactive tokens and releases the idle seats (they are deleted by the next purge,
    /// so the owner sees them revoked until then).
    ///
    /// # Errors
    ///
    /// [`TokenError::Store`].
    pub async fn purge(&self) -> Result<u64, TokenError> {
        let now = self.now();
        let purged = self.inner.store.purge_expired(now).await?;
        if !self.inactivity_groups().is_empty() {
            self.expire_inactive().await?;
        }
        Ok(purged)
    }

    /// Inactivity expiry now (see
    /// [`revoke_after_inactivity`](super::TokensBuilder::revoke_after_inactivity) and
    /// [`TokenKind::with_inactivity_expiry`](crate::TokenKind::with_inactivity_expiry)): one
    /// store pass per distinct time, each over the kinds that have it; does nothing when no
    /// kind has one. Each revoked token and released seat gets an audit event (event
    /// `token.revoke` / `token.release`, reason `inactive`) when the manager has an
    /// [`audit`](super::TokensBuilder::audit) log.
    ///
    /// # Errors
    ///
    /// [`TokenError::Store`].
    pub async fn expire_inactive(&self) -> Result<InactiveOutcome, TokenError> {
        let now = self.now();
        let mut out = InactiveOutcome::default();
        // One store pass per distinct cutoff, each naming the kinds it covers.
        for (after, kinds) in self.inactivity_groups() {
            let cutoff = now - after;
            let release_kinds: Vec<String> = self
                .inner
                .kinds
                .iter()
                .filter(|k| k.binding_header().is_some() && kinds.iter().any(|n| n == k.name()))
                .map(|k| k.name().to_owned())
                .collect();
            let pass = self
                .inner
                .store
                .expire_inactive(cutoff, now, &kinds, &release_kinds)
                .await?;
            out.revoked.extend(pass.revoked);
            out.released.extend(pass.released);
        }
        if !out.revoked.is_empty() || !out.released.is_empty() {
            tracing::info!(
                revoked = out.revoked.len(),
                released = out.released.len(),
                "inactive tokens revoked and idle seats released"
            );
        }
        if let Some(audit) = &self.inner.audit {
            let events = out
                .revoked
                .iter()
                .map(|id| (id, "token.revoke"))
                .chain(out.released.iter().map(|id| (id, "token.release")));
            for (id, event) in events {
                // Name and owner, best effort: a failed read only thins the event.
                let record = self.inner.store.get(id).await.ok().flatten();
                audit.record(maintenance_event(
                    now,
                    event,
                    *id,
                    record.as_ref(),
                    Decision::Allow,
                    "inactive",
                ));
            }
        }
        Ok(out)
    }

    /// The manager's kinds grouped by their inactivity expiry (a kind's own setting, else
    /// the manager's), leaving out the kinds that have none.
    fn inactivity_groups(&self) -> Vec<(Duration, Vec<String>)> {
        let mut groups: Vec<(Duration, Vec<String>)> = Vec::new();
        for kind in &self.inner.kinds {
            let Some(after) = kind.inactivity_expiry().unwrap_or(self.inner.inactivity) else {
                continue;
            };
            match groups.iter_mut().find(|(d, _)| *d == after) {
                Some((_, names)) => names.push(kind.name().to_owned()),
                None => groups.push((after, vec![kind.name().to_owned()])),
            }
        }
        groups
    }

    /// Starts the automatic upkeep (see [`Tokens`]) if it is on, not yet started, and a
    /// Tokio runtime is at hand; otherwise does nothing. Cheap: one atomic load once started.
    pub(crate) fn ensure_maintenance(&self) {
        let auto = &self.inner.auto;
        let Some((flush_every, purge_every)) = auto.intervals else {
            return;
        };
        if auto.started.load(Ordering::Relaxed) || auto.replaced.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if auto.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        // The guard is made here, not in the task: a task dropped before its first poll
        // drops it too.
        runtime.spawn(auto_maintenance(Running(weak), flush_every, purge_every));
    }

    /// One flush of the upkeep, its failure logged.
    async fn flush_turn(&self) {
        if let Err(error) = self.flush_usage().await {
            tracing::warn!(%error, "flushing last-used times failed; will retry");
        }
    }

    /// One purge of the upkeep (with inactivity expiry and expiry warnings), its failures
    /// logged.
    async fn purge_turn(&self) {
        match self.purge().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "purged expired and revoked tokens"),
            Err(error) => tracing::warn!(%error, "purge failed; will retry"),
        }
        match self.warn_expiring().await {
            Ok(_) => {}
            Err(TokenError::Store(crate::StoreError::Unsupported(_))) => {
                tracing::debug!("the store keeps no expiry warnings");
            }
            Err(error) => tracing::warn!(%error, "expiry warnings failed; will retry"),
        }
    }

    /// Starts the background task that flushes usage every `flush_every` and purges expired
    /// and revoked tokens every `purge_every` (with inactivity expiry, if configured: see
    /// [`purge`](Self::purge)), then sends the expiry warnings that are due
    /// ([`warn_expiring`](Self::warn_expiring); never waiting for a webhook). Needs a Tokio runtime with time enabled.
    /// Call [`Maintenance::shutdown`] on the way out to write the last batch. It replaces
    /// the manager's automatic upkeep (see [`Tokens`]).
    #[must_use = "dropping the handle stops the task"]
    pub fn spawn_maintenance(&self, flush_every: Duration, purge_every: Duration) -> Maintenance {
        // It replaces the automatic upkeep, which stops at its next turn.
        self.inner.auto.replaced.store(true, Ordering::Relaxed);
        let tokens = self.clone();
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        let handle = tokio::spawn(async move {
            let mut flush = tokio::time::interval(bounded(flush_every));
            let mut purge = tokio::time::interval(bounded(purge_every));
            flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = flush.tick() => tokens.flush_turn().await,
                    _ = purge.tick() => tokens.purge_turn().await,
                    () = stopped.notified() => break,
                }
            }
            if let Err(error) = tokens.flush_usage().await {
                tracing::warn!(%error, "final flush of last-used times failed");
            }
        });
        Maintenance {
            stop,
            handle: Some(handle),
        }
    }
}
