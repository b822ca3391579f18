//! Expiry warnings in the PostgreSQL store: [`TokenStore::claim_expiry_warnings`]
//! (crate::store::TokenStore::claim_expiry_warnings) as one `UPDATE … RETURNING` whose
//! rows are picked `FOR UPDATE SKIP LOCKED`, so that instances claiming at once take
//! disjoint sets.

use super::{PostgresStore, pg_err};
use crate::store::codec::decode;
use crate::store::sql::{self, live_at};
use crate::store::{StoreError, TokenRecord};

impl PostgresStore {
    /// Claims at most `limit` live records expiring in `(now, before]` and not yet warned.
    /// The outer condition is evaluated again on each locked row (read committed), so a
    /// row another claim warned meanwhile is left out.
    pub(super) async fn claim_expiry(
        &self,
        before: time::OffsetDateTime,
        now: time::OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        self.ready().await?;
        let rows = sqlx::query(concat!(
            "UPDATE keygate_tokens SET expiry_warned_at = $1 WHERE id IN (SELECT id FROM \
             keygate_tokens WHERE expiry_warned_at IS NULL AND expires_at <= $2 AND ",
            live_at!("$1"),
            " ORDER BY expires_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED) \
             AND expiry_warned_at IS NULL RETURNING ",
            sql::token_columns!()
        ))
        .bind(now)
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        let mut claimed = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|r| r.expires_at);
        Ok(claimed)
    }
}
