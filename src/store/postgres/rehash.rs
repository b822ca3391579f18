//! Re-hashing a record to the current pepper's digest: a compare-and-set on `hash`.

use super::{PostgresStore, REVOCATION_CHANNEL, StoreError, insert_err};
use crate::store::TokenId;
use crate::token::TokenHash;

impl PostgresStore {
    /// [`TokenStore::rehash`](crate::TokenStore::rehash): one statement, so one transaction;
    /// both digests are announced on the revocation channel (only if it commits), so that
    /// other instances drop the record they cache under the old one and the "unknown" they
    /// may cache for the new one (every candidate digest is looked up). The unique index on `hash`
    /// refuses a `to` held by another record ([`StoreError::Duplicate`]).
    pub(super) async fn try_rehash(
        &self,
        id: &TokenId,
        from: &TokenHash,
        to: &TokenHash,
    ) -> Result<bool, StoreError> {
        self.ready().await?;
        let notified = sqlx::query(
            "WITH u AS (UPDATE keygate_tokens SET hash = $3 \
             WHERE id = $1 AND hash = $2 RETURNING id) \
             SELECT pg_notify($4, encode($2, 'hex')), pg_notify($4, encode($3, 'hex')) FROM u",
        )
        .bind(id.0)
        .bind(&from.as_bytes()[..])
        .bind(&to.as_bytes()[..])
        .bind(REVOCATION_CHANNEL)
        .fetch_optional(&self.pool)
        .await
        .map_err(insert_err)?;
        Ok(notified.is_some())
    }
}
