//! [`AuditSink`], where events go, and the sinks keygate ships: [`TracingSink`],
//! [`JsonLinesSink`] and [`MemoryAuditSink`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use super::{AuditEvent, AuditFilter, AuditReader};
use crate::error::StoreError;

/// Where audit events go: batches from the background task of an
/// [`AuditLog`](super::AuditLog), and single events from
/// [`AuditLog::write_now`](super::AuditLog::write_now), possibly at the same time.
#[async_trait]
pub trait AuditSink: Send + Sync + 'static {
    /// Writes a batch of events, in order. Returns `Ok` only once the events are kept.
    ///
    /// # Errors
    ///
    /// Any I/O or backend error; the log counts it, counts a background batch as dropped
    /// and goes on, and hands it to the caller of
    /// [`AuditLog::write_now`](super::AuditLog::write_now). The error is logged, so it
    /// should not quote the events.
    async fn write(
        &self,
        events: &[AuditEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
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
    use crate::audit::event::event;
    use crate::record::TokenId;

    #[tokio::test]
    async fn json_lines_use_the_audit_field_names() {
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
