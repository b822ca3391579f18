//! Audit events: one structured event per authentication decision and per management
//! action, written to an [`AuditSink`] through a bounded queue that never blocks a request.
//!
//! Field names follow Rack Gateway's audit log (`api_token_id`, `api_token_name`, `method`,
//! `path`, `status_code`, `rbac_decision`, …) so that tooling written for it keeps working.
//! An event never holds a token, a token hash or a password.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use keygate::audit::{AuditLog, MemoryAuditSink};
//! use keygate::{AuthLayer, MemoryStore, Tokens};
//!
//! let sink = MemoryAuditSink::new();
//! let audit = AuditLog::spawn(sink.clone(), 10_000);
//! let layer = AuthLayer::new(Tokens::new(MemoryStore::new())).with_audit(audit.clone());
//! # let _ = layer;
//! // ... serve requests; then, on shutdown:
//! audit.shutdown().await;
//! # });
//! ```

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::store::{StoreError, TokenId};

/// Whether the request was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Let through.
    Allow,
    /// Refused.
    Deny,
}

impl Decision {
    /// `allow` or `deny`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// One audit record. Serialises to one JSON object (one line in a JSON Lines file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When the decision was made (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// `authenticate`, `token.create`, `token.revoke`, `token.rotate`, `token.purge`, ….
    pub event: String,
    /// The token's id, when a token was identified.
    pub api_token_id: Option<TokenId>,
    /// The token's name, when a token was identified.
    pub api_token_name: Option<String>,
    /// The token's owner (or the account acting), when known.
    pub owner: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Request path (no query string: it may carry secrets).
    pub path: String,
    /// HTTP status code of the response.
    pub status_code: u16,
    /// `allow` or `deny`, as Rack Gateway names it.
    pub rbac_decision: Decision,
    /// The precise cause of a denial (`unknown`, `revoked`, `expired`, `wrong_kind`,
    /// `insufficient_scope`, `rate_limited`, `ip_not_allowed`, …); `None` when allowed.
    pub reason: Option<String>,
    /// The client address, as the layer determined it.
    pub client_ip: Option<IpAddr>,
    /// The request's `x-request-id`, if any.
    pub request_id: Option<String>,
}

/// Where audit events go. Called from the background task of an [`AuditLog`], never on the
/// request path.
#[async_trait]
pub trait AuditSink: Send + Sync + 'static {
    /// Writes a batch of events, in order.
    ///
    /// # Errors
    ///
    /// Any I/O or backend error; the log counts the batch as dropped and goes on.
    async fn write(
        &self,
        events: &[AuditEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// A handle to the audit queue. Cheap to clone; [`record`](Self::record) never blocks: when
/// the queue is full the event is dropped and counted.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<LogInner>,
}

struct LogInner {
    tx: Mutex<Option<mpsc::Sender<AuditEvent>>>,
    dropped: AtomicU64,
    written: Arc<AtomicU64>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dropped", &self.dropped())
            .field("written", &self.written())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the background writer for `sink` with a queue of `capacity` events. Needs a
    /// Tokio runtime.
    pub fn spawn(sink: impl AuditSink, capacity: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<AuditEvent>(capacity.max(1));
        let written = Arc::new(AtomicU64::new(0));
        let counter = written.clone();
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(256);
            while rx.recv_many(&mut batch, 256).await > 0 {
                match sink.write(&batch).await {
                    Ok(()) => {
                        counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                    Err(error) => {
                        tracing::warn!(%error, events = batch.len(), "audit sink failed; events lost");
                    }
                }
                batch.clear();
            }
        });
        Self {
            inner: Arc::new(LogInner {
                tx: Mutex::new(Some(tx)),
                dropped: AtomicU64::new(0),
                written,
                task: Mutex::new(Some(task)),
            }),
        }
    }

    /// Queues an event; drops (and counts) it when the queue is full or closed.
    pub fn record(&self, event: AuditEvent) {
        let tx = self.inner.tx.lock().unwrap_or_else(PoisonError::into_inner);
        let sent = tx.as_ref().is_some_and(|tx| tx.try_send(event).is_ok());
        if !sent {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "metrics")]
            ::metrics::counter!("keygate_audit_dropped_total").increment(1);
        }
    }

    /// Events dropped because the queue was full.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Events the sink has accepted.
    #[must_use]
    pub fn written(&self) -> u64 {
        self.inner.written.load(Ordering::Relaxed)
    }

    /// Closes the queue and waits until every queued event is written.
    pub async fn shutdown(&self) {
        self.inner
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Writes each event as a `tracing` event at INFO on the `keygate::audit` target.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

#[async_trait]
impl AuditSink for TracingSink {
    async fn write(
        &self,
        events: &[AuditEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        for e in events {
            tracing::info!(
                target: "keygate::audit",
                event = %e.event,
                api_token_id = e.api_token_id.map(|id| id.to_string()),
                api_token_name = e.api_token_name.as_deref(),
                owner = e.owner.as_deref(),
                method = %e.method,
                path = %e.path,
                status_code = e.status_code,
                rbac_decision = ?e.rbac_decision,
                reason = e.reason.as_deref(),
                client_ip = e.client_ip.map(|ip| ip.to_string()),
                request_id = e.request_id.as_deref(),
            );
        }
        Ok(())
    }
}

/// Appends events to a file as JSON Lines (one object per line), flushed after each batch.
#[derive(Debug)]
pub struct JsonLinesSink {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl JsonLinesSink {
    /// Opens (or creates) `path` for appending. On Unix a file it creates is readable and
    /// writable by its owner only (mode `0600`): audit events name owners, tokens and
    /// client addresses. An existing file keeps its mode.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened.
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path.as_ref())?;
        Ok(Self {
            path: path.as_ref().to_owned(),
            file: Mutex::new(file),
        })
    }

    /// The file written to.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl AuditSink for JsonLinesSink {
    async fn write(
        &self,
        events: &[AuditEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut buf = Vec::with_capacity(events.len() * 256);
        for e in events {
            serde_json::to_writer(&mut buf, e)?;
            buf.push(b'\n');
        }
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(&buf)?;
        file.flush()?;
        Ok(())
    }
}

/// Keeps events in memory, for tests and for an admin page. Clones share the events.
#[derive(Debug, Clone, Default)]
pub struct MemoryAuditSink {
    events: Arc<Mutex<Vec<AuditEvent>>>,
}

impl MemoryAuditSink {
    /// An empty sink.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the events written so far.
    #[must_use]
    pub fn events(&self) -> Vec<AuditEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl AuditSink for MemoryAuditSink {
    async fn write(
        &self,
        events: &[AuditEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(events);
        Ok(())
    }
}

/// Which events to read back from an [`AuditReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFilter {
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
        self.token_id.is_none_or(|id| e.api_token_id == Some(id))
            && self.since.is_none_or(|t| e.timestamp >= t)
            && self.until.is_none_or(|t| e.timestamp < t)
    }
}

/// Where audit events can be read back from (the SQL stores, [`MemoryAuditSink`]); the
/// management API serves it on `GET /audit`.
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

#[async_trait]
impl AuditReader for MemoryAuditSink {
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(events
            .iter()
            .rev()
            .filter(|e| filter.matches(e))
            .take(filter.limit as usize)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u16) -> AuditEvent {
        AuditEvent {
            timestamp: time::macros::datetime!(2024-01-15 10:30 UTC),
            event: "authenticate".into(),
            api_token_id: None,
            api_token_name: Some("ci-production-deploy".into()),
            owner: None,
            method: "POST".into(),
            path: "/apps/myapp/builds".into(),
            status_code: n,
            rbac_decision: Decision::Allow,
            reason: None,
            client_ip: None,
            request_id: None,
        }
    }

    #[tokio::test]
    async fn events_reach_the_sink_and_a_full_queue_drops_instead_of_blocking() {
        let sink = MemoryAuditSink::new();
        let log = AuditLog::spawn(sink.clone(), 4);
        for i in 0..100 {
            log.record(event(200 + i));
        }
        log.shutdown().await;
        let written = sink.events().len() as u64;
        assert_eq!(written + log.dropped(), 100);
        assert!(
            log.dropped() > 0,
            "a queue of 4 cannot take 100 events at once"
        );
        assert_eq!(log.written(), written);
        log.record(event(1));
        assert_eq!(
            written + log.dropped(),
            100 + 1,
            "after shutdown events are counted as dropped"
        );
    }

    #[tokio::test]
    async fn json_lines_use_rack_gateway_field_names() {
        let dir = std::env::temp_dir().join(format!("keygate-audit-{}", TokenId::random()));
        let sink = JsonLinesSink::open(&dir).unwrap();
        sink.write(&[event(200)]).await.unwrap();
        let text = std::fs::read_to_string(&dir).unwrap();
        let _ = std::fs::remove_file(&dir);
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["timestamp"], "2024-01-15T10:30:00Z");
        assert_eq!(v["api_token_name"], "ci-production-deploy");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/apps/myapp/builds");
        assert_eq!(v["status_code"], 200);
        assert_eq!(v["rbac_decision"], "allow");
        assert!(text.ends_with('\n'));
    }
}
