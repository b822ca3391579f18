//! [`AuditPurge`]: deleting audit events past their retention, a batch at a time.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::error::StoreError;

/// How many events [`purge_audit`] deletes per statement: small enough that no batch holds
/// the table (or SQLite's one writer) for long.
pub const AUDIT_PURGE_BATCH: u32 = 1_000;

/// An audit store that can forget old events: the SQLite and PostgreSQL stores and
/// [`MemoryAuditSink`](super::MemoryAuditSink). [`purge_audit`] calls it in batches.
#[async_trait]
pub trait AuditPurge: Send + Sync + 'static {
    /// Deletes at most `limit` of the events timestamped before `before`, oldest first,
    /// through the time index; returns how many it deleted. Newer events are never touched.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be reached or refuses the delete.
    async fn purge_audit_batch(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError>;
}

/// Deletes every event of `store` timestamped before `before`, [`AUDIT_PURGE_BATCH`] at a
/// time, letting other work run between batches; returns how many it deleted.
///
/// # Errors
///
/// The first batch that fails (the batches before it stay deleted).
pub async fn purge_audit<P: AuditPurge + ?Sized>(
    store: &P,
    before: OffsetDateTime,
) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let n = store.purge_audit_batch(before, AUDIT_PURGE_BATCH).await?;
        total += n;
        if n < u64::from(AUDIT_PURGE_BATCH) {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}
