//! Audit events: one structured event per authentication decision and per management
//! action, written to an [`AuditSink`].
//!
//! Two paths lead to the sink:
//!
//! - [`AuditLog::record`] queues an event for a background writer and never blocks. When
//!   the queue is full (a flood of requests) the event is shed and counted
//!   ([`AuditLog::dropped`], `keygate_audit_dropped_total`). Request events
//!   (`authenticate`) and refused management attempts take this path; their refusals
//!   are also budgeted per client address ([`AuditLog::with_denial_budget`], 60 a minute
//!   by default): past it they are shed and counted ([`AuditLog::shed`],
//!   `keygate_audit_shed_total`) and summed up in one `audit.shed` event.
//! - [`AuditLog::write_now`] writes one event to the sink and waits for it, at most the
//!   log's write timeout (2 s by default). The management API writes every management
//!   action that took effect this way before it answers, and answers 503 when the sink
//!   fails, so a flood of request events cannot push them out.
//!
//! A sink failure on either path is logged (without the events) and counted
//! ([`AuditLog::write_errors`], `keygate_audit_write_errors_total`); the events of a failed
//! background batch are counted as dropped.
//!
//! Old events are deleted by [`purge_audit`] over any [`AuditPurge`] store (the reference
//! server does it every hour, for events older than `KEYGATE_AUDIT_RETENTION`). A
//! [`JsonLinesSink`] reopens its file on [`JsonLinesSink::reopen`] (the reference server
//! calls it on SIGHUP), for log rotation.
//!
//! Field names follow a common audit-log shape (`api_token_id`, `api_token_name`, `method`,
//! `path`, `status_code`, `rbac_decision`, …) so that tooling written for it keeps working.
//! An event never holds a token, a token hash or a password. What the request's sender
//! chooses is bounded, credentials or not: `request_id` is kept only when it is at most
//! [`MAX_REQUEST_ID_LEN`] visible ASCII characters, and `path` (the path the client
//! requested, also behind `Router::nest`) is cut to [`MAX_PATH_LEN`] bytes, with any token
//! in it replaced by [`TOKEN_IN_PATH`], and `method` to [`MAX_METHOD_LEN`] bytes.
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

mod event;
mod log;
mod reader;
mod request;
mod retention;
mod sink;

pub use event::{AuditEvent, Decision};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use event::{details_from_json, details_json};
pub use log::{AuditLog, AuditWriteError, DEFAULT_WRITE_TIMEOUT};
pub use reader::{AuditFilter, AuditReader};
#[cfg(feature = "server")]
pub(crate) use request::kept_method;
pub use request::{MAX_METHOD_LEN, MAX_PATH_LEN, MAX_REQUEST_ID_LEN, TOKEN_IN_PATH};
pub(crate) use request::{RequestEvent, RequestParts, request_id, request_path};
pub use retention::{AUDIT_PURGE_BATCH, AuditPurge, purge_audit};
pub use sink::{AuditSink, JsonLinesSink, MemoryAuditSink, TracingSink};
