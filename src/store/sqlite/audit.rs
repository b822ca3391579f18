//! The audit log in the `audit_events` table of the SQLite file: [`AuditSink`] and
//! [`AuditReader`] for [`SqliteStore`].

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;

use super::codec::{Corrupt, decode_id, from_micros, get, micros};
use super::{SqliteStore, sql_error};
use crate::audit::{AuditEvent, AuditFilter, AuditPurge, AuditReader, AuditSink, Decision};
use crate::store::StoreError;

/// Writes each batch in one transaction (one fsync per batch, not per event), behind the
/// store's write queue.
#[async_trait]
impl AuditSink for SqliteStore {
    async fn write(
        &self,
        events: &[AuditEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if events.is_empty() {
            return Ok(());
        }
        let pool = &self.pool;
        self.write(|| async move {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            for e in events {
                sqlx::query(
                    "INSERT INTO audit_events (timestamp, event, api_token_id, api_token_name, \
                     owner, method, path, status_code, rbac_decision, reason, client_ip, \
                     request_id, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(micros(e.timestamp)?)
                .bind(&e.event)
                .bind(e.api_token_id.map(|id| id.to_string()))
                .bind(&e.api_token_name)
                .bind(&e.owner)
                .bind(&e.method)
                .bind(&e.path)
                .bind(i64::from(e.status_code))
                .bind(e.rbac_decision.as_str())
                .bind(&e.reason)
                .bind(e.client_ip.map(|ip| ip.to_string()))
                .bind(&e.request_id)
                .bind(crate::audit::details_json(e.details.as_ref()))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
        .map_err(Into::into)
    }
}

/// One `DELETE` of the oldest events through the `(timestamp, seq)` index, behind the
/// store's write queue: each batch is a short transaction of its own.
#[async_trait]
impl AuditPurge for SqliteStore {
    async fn purge_audit_batch(
        &self,
        before: time::OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let before = micros(before)?;
        let pool = &self.pool;
        self.write(|| async move {
            let done = sqlx::query(
                "DELETE FROM audit_events WHERE seq IN (SELECT seq FROM audit_events \
                 WHERE timestamp < ? ORDER BY timestamp, seq LIMIT ?)",
            )
            .bind(before)
            .bind(i64::from(limit))
            .execute(pool)
            .await?;
            Ok(done.rows_affected())
        })
        .await
    }
}

fn decode(row: &SqliteRow) -> Result<AuditEvent, StoreError> {
    let decision: String = get(row, "rbac_decision")?;
    let client_ip: Option<String> = get(row, "client_ip")?;
    let api_token_id: Option<String> = get(row, "api_token_id")?;
    Ok(AuditEvent {
        timestamp: from_micros(get(row, "timestamp")?, "timestamp")?,
        event: get(row, "event")?,
        api_token_id: api_token_id
            .map(|s| decode_id(&s, "api_token_id"))
            .transpose()?,
        api_token_name: get(row, "api_token_name")?,
        owner: get(row, "owner")?,
        method: get(row, "method")?,
        path: get(row, "path")?,
        status_code: u16::try_from(get::<i64>(row, "status_code")?)
            .map_err(|_| StoreError::backend(Corrupt("status_code")))?,
        rbac_decision: match decision.as_str() {
            "allow" => Decision::Allow,
            "deny" => Decision::Deny,
            _ => return Err(StoreError::backend(Corrupt("rbac_decision"))),
        },
        reason: get(row, "reason")?,
        client_ip: client_ip
            .map(|s| {
                s.parse()
                    .map_err(|_| StoreError::backend(Corrupt("client_ip")))
            })
            .transpose()?,
        request_id: get(row, "request_id")?,
        details: crate::audit::details_from_json(get::<Option<String>>(row, "details")?.as_deref())
            .map_err(|()| StoreError::backend(Corrupt("details")))?,
    })
}

#[async_trait]
impl AuditReader for SqliteStore {
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT timestamp, event, api_token_id, api_token_name, owner, method, path, \
             status_code, rbac_decision, reason, client_ip, request_id, details FROM audit_events \
             WHERE (?1 IS NULL OR api_token_id = ?1) AND (?2 IS NULL OR timestamp >= ?2) \
             AND (?3 IS NULL OR timestamp < ?3) AND (?5 IS NULL OR owner = ?5) \
             ORDER BY timestamp DESC, seq DESC LIMIT ?4",
        )
        .bind(filter.token_id.map(|id| id.to_string()))
        .bind(filter.since.map(micros).transpose()?)
        .bind(filter.until.map(micros).transpose()?)
        .bind(i64::from(filter.limit))
        .bind(filter.owner.as_deref())
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?;
        rows.iter().map(decode).collect()
    }
}
