//! The audit log in the `keygate_audit_events` table: [`AuditSink`] and [`AuditReader`]
//! for [`PostgresStore`].

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::{PostgresStore, pg_err};
use crate::audit::{AuditEvent, AuditFilter, AuditPurge, AuditReader, AuditSink, Decision};
use crate::store::{StoreError, TokenId};

fn corrupt(column: &'static str) -> StoreError {
    StoreError::backend(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("invalid value in column `{column}` of keygate_audit_events"),
    ))
}

/// Writes each batch with one `INSERT … SELECT FROM UNNEST(…)` statement.
#[async_trait]
impl AuditSink for PostgresStore {
    async fn write(
        &self,
        events: &[AuditEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if events.is_empty() {
            return Ok(());
        }
        self.ready().await?;
        let col = |f: &dyn Fn(&AuditEvent) -> Option<String>| -> Vec<Option<String>> {
            events.iter().map(f).collect()
        };
        let timestamps: Vec<time::OffsetDateTime> = events.iter().map(|e| e.timestamp).collect();
        let ids: Vec<Option<Uuid>> = events.iter().map(|e| e.api_token_id.map(|i| i.0)).collect();
        let statuses: Vec<i32> = events.iter().map(|e| i32::from(e.status_code)).collect();
        sqlx::query(
            "INSERT INTO keygate_audit_events (timestamp, event, api_token_id, api_token_name, \
             owner, method, path, status_code, rbac_decision, reason, client_ip, request_id, \
             details) \
             SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::uuid[], $4::text[], \
             $5::text[], $6::text[], $7::text[], $8::int4[], $9::text[], $10::text[], \
             $11::text[], $12::text[], $13::text[])",
        )
        .bind(timestamps)
        .bind(col(&|e| Some(e.event.clone())))
        .bind(ids)
        .bind(col(&|e| e.api_token_name.clone()))
        .bind(col(&|e| e.owner.clone()))
        .bind(col(&|e| Some(e.method.clone())))
        .bind(col(&|e| Some(e.path.clone())))
        .bind(statuses)
        .bind(col(&|e| Some(e.rbac_decision.as_str().to_owned())))
        .bind(col(&|e| e.reason.clone()))
        .bind(col(&|e| e.client_ip.map(|ip| ip.to_string())))
        .bind(col(&|e| e.request_id.clone()))
        .bind(col(&|e| crate::audit::details_json(e.details.as_ref())))
        .execute(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(())
    }
}

/// One `DELETE` of the oldest events per batch, so no statement holds its row locks for
/// long: the batch's keys through the `(timestamp, seq)` index, then the rows through the
/// primary key (`= ANY(ARRAY(…))`; an `IN (…)` subquery is planned as a scan of the whole
/// table per batch).
#[async_trait]
impl AuditPurge for PostgresStore {
    async fn purge_audit_batch(
        &self,
        before: time::OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.ready().await?;
        let done = sqlx::query(
            "DELETE FROM keygate_audit_events WHERE seq = ANY(ARRAY(SELECT seq FROM \
             keygate_audit_events WHERE timestamp < $1 ORDER BY timestamp, seq LIMIT $2))",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(done.rows_affected())
    }
}

fn decode(row: &PgRow) -> Result<AuditEvent, StoreError> {
    let decision: String = row.try_get("rbac_decision").map_err(pg_err)?;
    let client_ip: Option<String> = row.try_get("client_ip").map_err(pg_err)?;
    let id: Option<Uuid> = row.try_get("api_token_id").map_err(pg_err)?;
    Ok(AuditEvent {
        timestamp: row.try_get("timestamp").map_err(pg_err)?,
        event: row.try_get("event").map_err(pg_err)?,
        api_token_id: id.map(TokenId),
        api_token_name: row.try_get("api_token_name").map_err(pg_err)?,
        owner: row.try_get("owner").map_err(pg_err)?,
        method: row.try_get("method").map_err(pg_err)?,
        path: row.try_get("path").map_err(pg_err)?,
        status_code: u16::try_from(row.try_get::<i32, _>("status_code").map_err(pg_err)?)
            .map_err(|_| corrupt("status_code"))?,
        rbac_decision: match decision.as_str() {
            "allow" => Decision::Allow,
            "deny" => Decision::Deny,
            _ => return Err(corrupt("rbac_decision")),
        },
        reason: row.try_get("reason").map_err(pg_err)?,
        client_ip: client_ip
            .map(|s| s.parse().map_err(|_| corrupt("client_ip")))
            .transpose()?,
        request_id: row.try_get("request_id").map_err(pg_err)?,
        details: crate::audit::details_from_json(
            row.try_get::<Option<String>, _>("details")
                .map_err(pg_err)?
                .as_deref(),
        )
        .map_err(|()| corrupt("details"))?,
    })
}

#[async_trait]
impl AuditReader for PostgresStore {
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        self.ready().await?;
        let rows = sqlx::query(
            "SELECT timestamp, event, api_token_id, api_token_name, owner, method, path, \
             status_code, rbac_decision, reason, client_ip, request_id, details FROM keygate_audit_events \
             WHERE ($1::uuid IS NULL OR api_token_id = $1) \
             AND ($2::timestamptz IS NULL OR timestamp >= $2) \
             AND ($3::timestamptz IS NULL OR timestamp < $3) \
             AND ($5::text IS NULL OR owner = $5) \
             ORDER BY timestamp DESC, seq DESC LIMIT $4",
        )
        .bind(filter.token_id.map(|id| id.0))
        .bind(filter.since)
        .bind(filter.until)
        .bind(i64::from(filter.limit))
        .bind(filter.owner.as_deref())
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        rows.iter().map(decode).collect()
    }
}
