//! Expiry warnings: [`Tokens::warn_expiring`], run by the maintenance task.

use time::format_description::well_known::Rfc3339;

use super::{TokenError, Tokens, maintenance_event};
use crate::audit::{AuditEvent, Decision};
use crate::store::TokenRecord;

/// Records claimed per store call.
const BATCH: u32 = 100;
/// Most records warned of in one run (the next run takes the rest).
const MAX_PER_RUN: usize = 10_000;

impl Tokens {
    /// Warns of the live tokens that expire within
    /// [`warn_before_expiry`](super::TokensBuilder::warn_before_expiry) (7 days by default)
    /// and were not warned of yet: claims them in the store (so that each is warned of once,
    /// even with several instances), writes a `token.expiring` audit event for each
    /// (`allow`, reason `expiring`, with the token's id, name and owner, and `expires_at`
    /// in `details`) when the manager has an [`audit`](super::TokensBuilder::audit) log,
    /// and queues it for the [webhook](super::TokensBuilder::expiry_webhook), if any,
    /// without waiting for it. Returns the tokens warned of. Does nothing without a warning
    /// period. The maintenance task calls it with each purge.
    ///
    /// # Errors
    ///
    /// [`TokenError::Store`] (a store without
    /// [`claim_expiry_warnings`](crate::TokenStore::claim_expiry_warnings) answers
    /// [`StoreError::Unsupported`](crate::StoreError::Unsupported)).
    pub async fn warn_expiring(&self) -> Result<Vec<TokenRecord>, TokenError> {
        let Some(before) = self.inner.expiry_warning else {
            return Ok(Vec::new());
        };
        let now = self.now();
        let until = time::Duration::try_from(before)
            .ok()
            .and_then(|d| now.checked_add(d))
            .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc());
        let mut warned = Vec::new();
        while warned.len() < MAX_PER_RUN {
            let batch = self
                .inner
                .store
                .claim_expiry_warnings(until, now, BATCH)
                .await?;
            // Short or empty while another instance holds some: claim until none is left.
            if batch.is_empty() {
                break;
            }
            for record in &batch {
                self.announce(expiring_event(now, record)).await;
            }
            warned.extend(batch);
        }
        if !warned.is_empty() {
            tracing::info!(tokens = warned.len(), "expiry warnings sent");
        }
        Ok(warned)
    }

    /// Writes `event` to the audit log (waiting for it: a claimed warning is not claimed
    /// again, so it is not left to a queue that may shed it) and queues it for the webhook.
    async fn announce(&self, event: AuditEvent) {
        #[cfg(feature = "webhook")]
        if let Some(webhook) = &self.inner.webhook {
            webhook.send(event.clone());
        }
        if let Some(audit) = &self.inner.audit
            && let Err(error) = audit.write_now(event.clone()).await
        {
            tracing::warn!(%error, "writing a token.expiring event failed; queued instead");
            audit.record(event);
        }
    }

    /// What the [expiry webhook](super::TokensBuilder::expiry_webhook) did so far; `None`
    /// without one.
    #[cfg(feature = "webhook")]
    #[must_use]
    pub fn expiry_webhook_stats(&self) -> Option<super::WebhookStats> {
        self.inner
            .webhook
            .as_ref()
            .map(super::webhook::Queue::stats)
    }
}

/// The `token.expiring` event of `record`, warned of at `now`.
fn expiring_event(now: time::OffsetDateTime, record: &TokenRecord) -> AuditEvent {
    let mut e = maintenance_event(
        now,
        "token.expiring",
        record.id,
        Some(record),
        Decision::Allow,
        "expiring",
    );
    if let Some(at) = record.expires_at.and_then(|t| t.format(&Rfc3339).ok()) {
        e.details = Some([("expires_at".to_owned(), at)].into_iter().collect());
    }
    e
}
