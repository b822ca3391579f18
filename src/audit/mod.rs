//! Audit events: one structured event per authentication decision and per management
//! action, written to an [`AuditSink`].
//!
//! Two paths lead to the sink:
//!
//! - [`AuditLog::record`] queues an event for a background writer and never blocks. When
//!   the queue is full (a flood of requests) the event is shed and counted
//!   ([`AuditLog::dropped`], `keygate_audit_dropped_total`). Request events
//!   (`authenticate`) and refused management attempts take this path.
//! - [`AuditLog::write_now`] writes one event to the sink and waits for it, at most the
//!   log's write timeout (2 s by default). The management API writes every management
//!   action that took effect this way before it answers, and answers 503 when the sink
//!   fails, so a flood of request events cannot push them out.
//!
//! A sink failure on either path is logged (without the events) and counted
//! ([`AuditLog::write_errors`], `keygate_audit_write_errors_total`); the events of a failed
//! background batch are counted as dropped.
//!
//! Field names follow a common audit-log shape (`api_token_id`, `api_token_name`, `method`,
//! `path`, `status_code`, `rbac_decision`, …) so that tooling written for it keeps working.
//! An event never holds a token, a token hash or a password. What the request's sender
//! chooses is bounded, credentials or not: `request_id` is kept only when it is at most
//! [`MAX_REQUEST_ID_LEN`] visible ASCII characters, and `path` (the path the client
//! requested, also behind `Router::nest`) is cut to [`MAX_PATH_LEN`] bytes.
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
use std::time::Duration;

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
    /// Request path as the client sent it (no query string: it may carry secrets), at most
    /// [`MAX_PATH_LEN`] bytes.
    pub path: String,
    /// HTTP status code of the response.
    pub status_code: u16,
    /// `allow` or `deny`.
    pub rbac_decision: Decision,
    /// The precise cause of a denial (`unknown`, `revoked`, `expired`, `wrong_kind`,
    /// `insufficient_scope`, `rate_limited`, `ip_not_allowed`, …); `None` when a request
    /// was allowed. An event for a change the manager made outside a request (a revocation
    /// or a release for inactivity, a release by the owner) is `allow` with its cause:
    /// `inactive` or `owner`.
    pub reason: Option<String>,
    /// The client address, as the layer determined it.
    pub client_ip: Option<IpAddr>,
    /// The request's `x-request-id`, when it is at most [`MAX_REQUEST_ID_LEN`] visible ASCII
    /// characters.
    pub request_id: Option<String>,
}

/// The longest `request_id` an event keeps: 128 characters. A longer `x-request-id`, or
/// one with anything but visible ASCII, is not kept at all (`request_id` is `None`).
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The longest `path` an event keeps, in bytes: 1 024. A longer path is cut at the last
/// character boundary before it.
pub const MAX_PATH_LEN: usize = 1024;

/// The request id an event keeps: the request's single `x-request-id` when it is 1 to
/// [`MAX_REQUEST_ID_LEN`] visible ASCII characters, `None` otherwise. The request's sender
/// chooses it, with or without credentials: bounding it bounds what an anonymous request
/// can put into the log. One allocation, of the kept id only.
pub(crate) fn request_id(headers: &http::HeaderMap) -> Option<String> {
    let mut values = headers.get_all("x-request-id").iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let bytes = value.as_bytes();
    let visible = !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes.iter().all(|b| b.is_ascii_graphic());
    // Visible ASCII is valid UTF-8.
    visible
        .then(|| std::str::from_utf8(bytes).ok().map(str::to_owned))
        .flatten()
}

/// The path an event keeps: the request's path as the client sent it (with axum, from
/// [`OriginalUri`](axum::extract::OriginalUri) when a router nested the service, so
/// `/api/v1/apps` rather than `/apps`), without the query string, cut to
/// [`MAX_PATH_LEN`] bytes at a character boundary.
pub(crate) fn request_path(extensions: &http::Extensions, uri: &http::Uri) -> String {
    #[cfg(feature = "axum")]
    let uri = extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(uri, |original| &original.0);
    #[cfg(not(feature = "axum"))]
    let _ = extensions;
    let path = uri.path();
    path[..path.floor_char_boundary(MAX_PATH_LEN)].to_owned()
}

/// Where audit events go: batches from the background task of an [`AuditLog`], and single
/// events from [`AuditLog::write_now`], possibly at the same time.
#[async_trait]
pub trait AuditSink: Send + Sync + 'static {
    /// Writes a batch of events, in order. Returns `Ok` only once the events are kept.
    ///
    /// # Errors
    ///
    /// Any I/O or backend error; the log counts it, counts a background batch as dropped
    /// and goes on, and hands it to the caller of [`AuditLog::write_now`]. The error is
    /// logged, so it should not quote the events.
    async fn write(
        &self,
        events: &[AuditEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// The default longest wait of [`AuditLog::write_now`]: 2 s.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why [`AuditLog::write_now`] could not write an event. Never holds the event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditWriteError {
    /// The sink refused the write.
    #[error("audit sink failed")]
    Sink(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The sink did not answer within the log's write timeout.
    #[error("audit sink did not answer within {0:?}")]
    TimedOut(Duration),
}

/// A handle to the audit log. Cheap to clone; [`record`](Self::record) never blocks (when
/// the queue is full the event is dropped and counted), [`write_now`](Self::write_now)
/// waits for the sink, at most the write timeout.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<LogInner>,
    write_timeout: Duration,
}

struct LogInner {
    tx: Mutex<Option<mpsc::Sender<AuditEvent>>>,
    sink: Arc<dyn AuditSink>,
    counters: Arc<Counters>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct Counters {
    dropped: AtomicU64,
    written: AtomicU64,
    write_errors: AtomicU64,
}

impl Counters {
    fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        ::metrics::counter!("keygate_audit_dropped_total").increment(n);
    }

    fn write_error(&self, error: &dyn std::fmt::Display, events: usize) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        ::metrics::counter!("keygate_audit_write_errors_total").increment(1);
        tracing::warn!(%error, events, "audit sink failed");
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dropped", &self.dropped())
            .field("written", &self.written())
            .field("write_errors", &self.write_errors())
            .field("write_timeout", &self.write_timeout)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the background writer for `sink` with a queue of `capacity` events. Needs a
    /// Tokio runtime.
    pub fn spawn(sink: impl AuditSink, capacity: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<AuditEvent>(capacity.max(1));
        let sink: Arc<dyn AuditSink> = Arc::new(sink);
        let counters = Arc::new(Counters::default());
        let task = {
            let (sink, counters) = (sink.clone(), counters.clone());
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(256);
                while rx.recv_many(&mut batch, 256).await > 0 {
                    let n = batch.len() as u64;
                    match sink.write(&batch).await {
                        Ok(()) => {
                            counters.written.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(error) => {
                            counters.write_error(&error, batch.len());
                            counters.dropped(n);
                        }
                    }
                    batch.clear();
                }
            })
        };
        Self {
            inner: Arc::new(LogInner {
                tx: Mutex::new(Some(tx)),
                sink,
                counters,
                task: Mutex::new(Some(task)),
            }),
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        }
    }

    /// How long [`write_now`](Self::write_now) waits for the sink (default
    /// [`DEFAULT_WRITE_TIMEOUT`], 2 s). Applies to this handle and its later clones.
    #[must_use]
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The longest wait of [`write_now`](Self::write_now).
    #[must_use]
    pub fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// Queues an event; drops (and counts) it when the queue is full or closed.
    pub fn record(&self, event: AuditEvent) {
        let tx = self.inner.tx.lock().unwrap_or_else(PoisonError::into_inner);
        let sent = tx.as_ref().is_some_and(|tx| tx.try_send(event).is_ok());
        if !sent {
            self.inner.counters.dropped(1);
        }
    }

    /// Writes `event` to the sink now, past the queue (so a full queue does not hold it
    /// up), and returns once the sink has kept it. It may land before events queued
    /// earlier; readers order by timestamp.
    ///
    /// # Errors
    ///
    /// [`AuditWriteError::Sink`] when the sink fails, [`AuditWriteError::TimedOut`] when it
    /// does not answer within the [write timeout](Self::with_write_timeout). Both are
    /// counted in [`write_errors`](Self::write_errors) and logged.
    pub async fn write_now(&self, event: AuditEvent) -> Result<(), AuditWriteError> {
        let events = [event];
        let outcome = tokio::time::timeout(self.write_timeout, self.inner.sink.write(&events))
            .await
            .map_err(|_| AuditWriteError::TimedOut(self.write_timeout))
            .and_then(|r| r.map_err(AuditWriteError::Sink));
        match outcome {
            Ok(()) => {
                self.inner.counters.written.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => {
                match &error {
                    AuditWriteError::Sink(source) => self.inner.counters.write_error(source, 1),
                    timed_out => self.inner.counters.write_error(timed_out, 1),
                }
                Err(error)
            }
        }
    }

    /// Events that never reached the sink: the queue was full or closed, or the sink failed
    /// their batch.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.inner.counters.dropped.load(Ordering::Relaxed)
    }

    /// Sink writes that failed or timed out (background batches and
    /// [`write_now`](Self::write_now) calls alike).
    #[must_use]
    pub fn write_errors(&self) -> u64 {
        self.inner.counters.write_errors.load(Ordering::Relaxed)
    }

    /// Events the sink has accepted.
    #[must_use]
    pub fn written(&self) -> u64 {
        self.inner.counters.written.load(Ordering::Relaxed)
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

    #[test]
    fn request_ids_and_paths_are_bounded() {
        let id = |v: &[u8]| {
            let mut h = http::HeaderMap::new();
            h.insert("x-request-id", http::HeaderValue::from_bytes(v).unwrap());
            request_id(&h)
        };
        assert_eq!(id(b"req-42").as_deref(), Some("req-42"));
        let longest = "a".repeat(MAX_REQUEST_ID_LEN);
        assert_eq!(id(longest.as_bytes()), Some(longest.clone()));
        assert_eq!(id(format!("{longest}a").as_bytes()), None);
        for bad in [&b""[..], b"two words", b"tab\there", b"caf\xc3\xa9"] {
            assert_eq!(id(bad), None, "{bad:?}");
        }
        let mut two = http::HeaderMap::new();
        two.append("x-request-id", http::HeaderValue::from_static("a"));
        two.append("x-request-id", http::HeaderValue::from_static("b"));
        assert_eq!(request_id(&two), None);
        assert_eq!(request_id(&http::HeaderMap::new()), None);

        let ext = http::Extensions::new();
        let uri: http::Uri = "/apps/x?token=secret".parse().unwrap();
        assert_eq!(request_path(&ext, &uri), "/apps/x");
        // A path of multi-byte characters is cut before the character that would cross
        // the bound.
        let long: http::Uri = format!("/{}", "%C3%A9".repeat(400)).parse().unwrap();
        assert_eq!(request_path(&ext, &long).len(), MAX_PATH_LEN);
        let wide: http::Uri = format!("/{}", "é".repeat(600)).parse().unwrap();
        let kept = request_path(&ext, &wide);
        assert_eq!(kept.len(), MAX_PATH_LEN - 1, "1 + 2 × 511 bytes");
        assert!(kept.ends_with('é'));
    }

    #[cfg(feature = "axum")]
    #[test]
    fn a_nested_request_is_audited_with_its_original_path() {
        let mut ext = http::Extensions::new();
        ext.insert(axum::extract::OriginalUri(
            "/api/v1/apps?x=1".parse().unwrap(),
        ));
        let nested: http::Uri = "/apps".parse().unwrap();
        assert_eq!(request_path(&ext, &nested), "/api/v1/apps");
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

    /// Blocks every batch that holds an `authenticate` event (a wedged writer); fails or
    /// keeps the others.
    #[derive(Clone, Default)]
    struct Wedged {
        fail: bool,
        kept: MemoryAuditSink,
    }

    #[async_trait]
    impl AuditSink for Wedged {
        async fn write(
            &self,
            events: &[AuditEvent],
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            if events.iter().any(|e| e.event == "authenticate") {
                std::future::pending::<()>().await;
            }
            if self.fail {
                return Err("disk full".into());
            }
            self.kept.write(events).await
        }
    }

    #[tokio::test]
    async fn write_now_passes_a_full_queue_and_reports_a_failing_or_silent_sink() {
        let sink = Wedged::default();
        let log = AuditLog::spawn(sink.clone(), 4);
        for i in 0..100 {
            log.record(event(200 + i));
        }
        tokio::task::yield_now().await;
        assert!(log.dropped() > 0, "the flood is shed and counted");
        let mut create = event(201);
        create.event = "token.create".into();
        log.write_now(create.clone()).await.unwrap();
        assert_eq!(
            sink.kept.events(),
            [create.clone()],
            "kept before write_now returns"
        );

        let failing = AuditLog::spawn(
            Wedged {
                fail: true,
                ..Wedged::default()
            },
            4,
        );
        let err = failing.write_now(create.clone()).await.unwrap_err();
        assert!(matches!(err, AuditWriteError::Sink(_)), "{err:?}");
        assert_eq!(failing.write_errors(), 1);
        failing.record(create.clone());
        failing.shutdown().await;
        assert_eq!(failing.write_errors(), 2, "a failed batch is counted");
        assert_eq!(
            failing.dropped(),
            1,
            "and its events are counted as dropped"
        );
        assert_eq!(failing.written(), 0);

        let silent =
            AuditLog::spawn(Wedged::default(), 4).with_write_timeout(Duration::from_millis(20));
        let mut auth = create;
        auth.event = "authenticate".into();
        let err = silent.write_now(auth).await.unwrap_err();
        assert!(matches!(err, AuditWriteError::TimedOut(_)), "{err:?}");
        assert_eq!(silent.write_errors(), 1);
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
