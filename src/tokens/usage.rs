//! Coalesced last uses (time, client address, `User-Agent`), written to the store in
//! batches.
//!
//! The verification path calls [`Usage::touch`]. When the record shows a use within the
//! granularity, it returns at once: no lock, no client address, no allocation. Otherwise
//! the use is queued under its token's shard, keeping the latest time with that use's
//! address and agent; an agent equal to the one already queued is compared in place, not
//! copied, so a client that keeps calling costs no allocation either.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::HeaderValue;
use time::OffsetDateTime;

use crate::store::{TokenId, TokenRecord, TokenStore, TokenUse, clean_user_agent, same_agent};

use super::{TokenError, Tokens};

pub(super) const USAGE_SHARDS: usize = 16;

/// How close to a deadline (a token's expiry, the end of a usage window), in nanoseconds,
/// the check re-reads the precise clock: well above the lag of a coarse clock (a scheduler
/// tick, 1 to 10 ms).
pub(super) const CLOSE_TO_EXPIRY: i128 = 100_000_000;

/// Who made a use: the client address as the layer resolved it, and the request's
/// `User-Agent` header (cleaned when queued). Both `None` outside HTTP.
#[derive(Clone, Copy, Default)]
pub(crate) struct Client<'a> {
    pub(crate) ip: Option<IpAddr>,
    pub(crate) agent: Option<&'a HeaderValue>,
}

/// A queued use: the latest time, with that use's details.
struct Pending {
    at: OffsetDateTime,
    ip: Option<IpAddr>,
    agent: Option<String>,
}

/// Coalesced last uses, waiting for a batched write.
pub(super) struct Usage {
    /// In nanoseconds.
    granularity: i128,
    shards: Box<[Mutex<HashMap<TokenId, Pending>>]>,
}

impl Usage {
    pub(super) fn new(granularity: Duration) -> Self {
        Self {
            granularity: i128::try_from(granularity.as_nanos()).unwrap_or(i128::MAX),
            shards: (0..USAGE_SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, id: &TokenId) -> &Mutex<HashMap<TokenId, Pending>> {
        &self.shards[(id.0.as_u128() as usize) % USAGE_SHARDS]
    }

    /// Queues a use at `now` (nanoseconds since the epoch, from a clock that may lag a
    /// little) by `client` (asked only when the use is queued), unless the record shows one
    /// within the granularity. Within [`CLOSE_TO_EXPIRY`] of the window's end, `precise`
    /// (the manager's precise clock) decides, so a lagging clock never skips a use that
    /// falls past the window. True when the use was queued.
    pub(super) fn touch<'a>(
        &self,
        record: &TokenRecord,
        now: i128,
        precise: impl FnOnce() -> i128,
        client: impl FnOnce() -> Client<'a>,
    ) -> bool {
        if let Some(t) = record.last_used_at {
            let t = t.unix_timestamp_nanos();
            let within = |now: i128| now.saturating_sub(t) < self.granularity;
            if within(now.saturating_add(CLOSE_TO_EXPIRY)) || (within(now) && within(precise())) {
                return false;
            }
        }
        // At microsecond precision, as `Tokens::now` and SQL stores keep times.
        let Ok(now) = OffsetDateTime::from_unix_timestamp_nanos(now - now.rem_euclid(1_000)) else {
            return false;
        };
        let client = client();
        let raw = client.agent.map(HeaderValue::as_bytes);
        let clean = || agent_of(record, raw);
        let mut m = self
            .shard(&record.id)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match m.entry(record.id) {
            Entry::Occupied(mut e) => {
                let p = e.get_mut();
                if now > p.at {
                    p.at = now;
                    p.ip = client.ip;
                    if !same_agent(p.agent.as_deref(), raw) {
                        p.agent = clean();
                    }
                }
            }
            Entry::Vacant(e) => {
                e.insert(Pending {
                    at: now,
                    ip: client.ip,
                    agent: clean(),
                });
            }
        }
        true
    }

    pub(super) fn drain(&self) -> Vec<TokenUse> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            let mut m = s.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend(m.drain().map(|(id, p)| {
                let mut u = TokenUse::bare(id, p.at);
                u.client_ip = p.ip;
                u.user_agent = p.agent;
                u
            }));
        }
        out
    }

    /// Puts back a batch the store did not take; a use queued since wins if it is later.
    pub(super) fn requeue(&self, batch: Vec<TokenUse>) {
        for u in batch {
            let mut m = self
                .shard(&u.id)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match m.entry(u.id) {
                Entry::Occupied(mut e) => {
                    let p = e.get_mut();
                    if u.at > p.at {
                        *p = Pending {
                            at: u.at,
                            ip: u.client_ip,
                            agent: u.user_agent,
                        };
                    }
                }
                Entry::Vacant(e) => {
                    e.insert(Pending {
                        at: u.at,
                        ip: u.client_ip,
                        agent: u.user_agent,
                    });
                }
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// The agent kept for a use of `record`: cleaned ([`clean_user_agent`]), and none at all
/// when it holds the token's own first characters (its hint): a client that put its token
/// in the `User-Agent` must not see it kept and shown.
fn agent_of(record: &TokenRecord, raw: Option<&[u8]>) -> Option<String> {
    raw.and_then(clean_user_agent)
        .filter(|a| record.hint.is_empty() || !a.contains(record.hint.as_str()))
}

impl Tokens {
    /// [`Usage::touch`]; a use queued makes sure the upkeep that writes it runs (a manager
    /// built outside a runtime starts it here, at its first use inside one).
    pub(super) fn touch_usage<'a>(
        &self,
        record: &TokenRecord,
        now: i128,
        precise: impl FnOnce() -> i128,
        client: impl FnOnce() -> Client<'a>,
    ) {
        if self.inner.usage.touch(record, now, precise, client) {
            self.ensure_maintenance();
        }
    }

    /// Writes queued uses (`last_used_at`, with the client address and `User-Agent` of the
    /// latest use) to the store in one batch ([`TokenStore::record_usage`]); returns how
    /// many. On failure they stay queued for the next flush. With a pepper, it first
    /// re-hashes the tokens found under an older digest ([`flush_rehashes`](Self::flush_rehashes)).
    ///
    /// # Errors
    ///
    /// [`TokenError::Store`].
    pub async fn flush_usage(&self) -> Result<usize, TokenError> {
        if self.inner.hasher.peppered()
            && let Err(error) = self.flush_rehashes().await
        {
            tracing::warn!(%error, "re-hashing tokens to the current pepper failed; will retry");
        }
        let batch = self.inner.usage.drain();
        if batch.is_empty() {
            return Ok(0);
        }
        match self.inner.store.record_usage(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                self.inner.usage.requeue(batch);
                Err(e.into())
            }
        }
    }

    /// Number of uses waiting for [`flush_usage`](Self::flush_usage).
    #[must_use]
    pub fn pending_usage(&self) -> usize {
        self.inner.usage.len()
    }
}
