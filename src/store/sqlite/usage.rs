//! [`TokenStore::record_usage`](crate::store::TokenStore::record_usage) for SQLite: one
//! write transaction per batch.

use super::codec::micros;
use super::{Failure, SqliteStore};
use crate::store::{StoreError, TokenUse};

/// A use as bound: id, time in microseconds, address and agent.
pub(super) struct Row(String, i64, Option<String>, Option<String>);

/// The batch as bound, or a time out of range.
pub(super) fn rows(uses: &[TokenUse]) -> Result<Vec<Row>, StoreError> {
    uses.iter()
        .map(|u| {
            Ok(Row(
                u.id.to_string(),
                micros(u.at)?,
                u.client_ip.map(|ip| ip.to_string()),
                u.user_agent.clone(),
            ))
        })
        .collect()
}

impl SqliteStore {
    /// Each use moves `last_used_at` forward and, with it (only then), the address and
    /// agent; a use that is not later changes nothing.
    pub(super) async fn try_record_usage(&self, uses: &[Row]) -> Result<(), Failure> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for Row(id, at, ip, agent) in uses {
            sqlx::query(
                "UPDATE tokens SET last_used_at = ?1, last_used_ip = ?3, last_used_agent = ?4 \
                 WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)",
            )
            .bind(at)
            .bind(id)
            .bind(ip)
            .bind(agent)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
