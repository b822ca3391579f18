//! Reading events back: [`AuditFilter`] and [`AuditReader`].

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::AuditEvent;
use crate::error::StoreError;
use crate::record::TokenId;

/// Which events to read back from an [`AuditReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only the events about this owner's tokens and account (the event's `owner`). The
    /// management API sets it to the caller unless the caller may read every owner's
    /// events; `None` reads every owner's.
    pub owner: Option<String>,
    /// Only the events of this token.
    pub token_id: Option<TokenId>,
    /// Only events at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only events before this time.
    pub until: Option<OffsetDateTime>,
    /// At most this many events (the newest ones).
    pub limit: u32,
}

impl Default for AuditFilter {
    fn default() -> Self {
        Self {
            owner: None,
            token_id: None,
            since: None,
            until: None,
            limit: Self::DEFAULT_LIMIT,
        }
    }
}

impl AuditFilter {
    /// The default `limit`: 100 events.
    pub const DEFAULT_LIMIT: u32 = 100;
    /// The largest `limit` the management API accepts: 1000 events.
    pub const MAX_LIMIT: u32 = 1000;

    /// True when `e` passes the filter (the limit aside).
    #[must_use]
    pub fn matches(&self, e: &AuditEvent) -> bool {
        self.owner
            .as_deref()
            .is_none_or(|o| e.owner.as_deref() == Some(o))
            && self.token_id.is_none_or(|id| e.api_token_id == Some(id))
            && self.since.is_none_or(|t| e.timestamp >= t)
            && self.until.is_none_or(|t| e.timestamp < t)
    }
}

/// Where audit events can be read back from (the SQL stores,
/// [`MemoryAuditSink`](super::MemoryAuditSink)); the management API serves it on
/// `GET /audit`.
#[async_trait]
pub trait AuditReader: Send + Sync + 'static {
    /// The events that pass `filter`, newest first, at most `filter.limit` of them.
    ///
    /// # Errors
    ///
    /// Backend failures.
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;
}

#[async_trait]
impl<T: AuditReader + ?Sized> AuditReader for Arc<T> {
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        (**self).list_audit(filter).await
    }
}
