//! [`AuditSink`], where events go, and the sinks keygate ships: [`TracingSink`],
//! [`JsonLinesSink`] and [`MemoryAuditSink`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use super::{AuditEvent, AuditFilter, AuditPurge, AuditReader};
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
                details = e.details.as_ref().map(|d| format!("{d:?}")),
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
        let file = Self::append_to(path.as_ref())?;
        Ok(Self {
            path: path.as_ref().to_owned(),
            file: Mutex::new(file),
        })
    }

    fn append_to(path: &Path) -> std::io::Result<std::fs::File> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(path)
    }

    /// Opens the path again and writes there from now on: after log rotation moved the
    /// file away (logrotate's `create` mode), the next events go to a new file at the same
    /// path, created `0600` like the first. A batch being written finishes in the old file.
    ///
    /// # Errors
    ///
    /// When the path cannot be opened; the sink then keeps writing to the file it had.
    pub fn reopen(&self) -> std::io::Result<()> {
        let fresh = Self::append_to(&self.path)?;
        let old = std::mem::replace(
            &mut *self.file.lock().unwrap_or_else(PoisonError::into_inner),
            fresh,
        );
        drop(old);
        Ok(())
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
impl AuditPurge for MemoryAuditSink {
    async fn purge_audit_batch(
        &self,
        before: time::OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        let mut left = limit as usize;
        events.retain(|e| {
            let old = left > 0 && e.timestamp < before;
            if old {
                left -= 1;
            }
            !old
        });
        Ok((limit as usize - left) as u64)
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

    #[tokio::test]
    async fn reopen_after_rotation_writes_to_a_fresh_owner_only_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = JsonLinesSink::open(&path).unwrap();
        sink.write(&[event(200)]).await.unwrap();
        let rotated = dir.path().join("audit.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        sink.write(&[event(201)]).await.unwrap();
        sink.reopen().unwrap();
        sink.write(&[event(202)]).await.unwrap();
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old.lines().count(), 2, "before the reopen: the moved file");
        assert_eq!(new.lines().count(), 1, "after: a new file at the path");
        assert!(new.contains("\"status_code\":202"), "{new}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
