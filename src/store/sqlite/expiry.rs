//! Expiry warnings in the SQLite store: [`TokenStore::claim_expiry_warnings`]
//! (crate::store::TokenStore::claim_expiry_warnings) as one `UPDATE … RETURNING` in a
//! write transaction.

use super::codec::micros;
use super::{Failure, SqliteStore};
use crate::store::codec::decode;
use crate::store::sql::{self, live_at};
use crate::store::{StoreError, TokenRecord};

impl SqliteStore {
    /// Claims at most `limit` live records expiring in `(now, before]` and not yet warned:
    /// one statement under `BEGIN IMMEDIATE` (SQLite has one writer), so two claims never
    /// take the same record.
    pub(super) async fn claim_expiry(
        &self,
        before: time::OffsetDateTime,
        now: time::OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let (before, now) = (micros(before)?, micros(now)?);
        let pool = &self.pool;
        let mut claimed = self
            .write(|| async move {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let rows = sqlx::query(concat!(
                    "UPDATE tokens SET expiry_warned_at = ?1 WHERE id IN (SELECT id FROM tokens \
                     WHERE expiry_warned_at IS NULL AND expires_at <= ?2 AND ",
                    live_at!("?1"),
                    " ORDER BY expires_at, rowid LIMIT ?3) RETURNING ",
                    sql::token_columns!()
                ))
                .bind(now)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                rows.iter()
                    .map(decode)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(Failure::Store)
            })
            .await?;
        claimed.sort_by_key(|r| r.expires_at);
        Ok(claimed)
    }
}
