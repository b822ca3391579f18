//! Inactivity expiry: idle seats released, other idle tokens revoked, in one transaction
//! that announces each on the revocation channel.

use sqlx::Row;
use sqlx::postgres::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{PostgresStore, REVOCATION_CHANNEL, StoreError, pg_err};
use crate::store::sql::idle;
use crate::store::{InactiveOutcome, TokenId};

/// Released seats: the binding cleared, for the release kinds ($3) among the kinds ($5).
const RELEASE: &str = concat!(
    "WITH u AS (UPDATE keygate_tokens SET bound_to = NULL, bound_at = NULL \
     WHERE bound_to IS NOT NULL AND kind = ANY($3) AND kind = ANY($5) AND ",
    idle!("GREATEST", "$1", "$2"),
    " RETURNING id, hash) SELECT id, pg_notify($4, encode(hash, 'hex'))::text AS n FROM u"
);

/// Revoked tokens: the kinds ($5) other than the release kinds ($3).
const REVOKE: &str = concat!(
    "WITH u AS (UPDATE keygate_tokens SET revoked_at = $2 WHERE NOT (kind = ANY($3)) \
     AND kind = ANY($5) AND ",
    idle!("GREATEST", "$1", "$2"),
    " RETURNING id, hash) SELECT id, pg_notify($4, encode(hash, 'hex'))::text AS n FROM u"
);

impl PostgresStore {
    /// [`TokenStore::expire_inactive`](crate::TokenStore::expire_inactive): the tokens valid
    /// at `now` and silent since before `cutoff`.
    pub(super) async fn expire_idle(
        &self,
        cutoff: OffsetDateTime,
        now: OffsetDateTime,
        kinds: &[String],
        release_kinds: &[String],
    ) -> Result<InactiveOutcome, StoreError> {
        self.ready().await?;
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        let released = idle_pass(&mut tx, RELEASE, cutoff, now, kinds, release_kinds).await?;
        let revoked = idle_pass(&mut tx, REVOKE, cutoff, now, kinds, release_kinds).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(InactiveOutcome { revoked, released })
    }
}

/// One of the two statements, with the same parameters; the ids it changed.
async fn idle_pass(
    tx: &mut PgConnection,
    statement: &'static str,
    cutoff: OffsetDateTime,
    now: OffsetDateTime,
    kinds: &[String],
    release_kinds: &[String],
) -> Result<Vec<TokenId>, StoreError> {
    let rows = sqlx::query(statement)
        .bind(cutoff)
        .bind(now)
        .bind(release_kinds)
        .bind(REVOCATION_CHANNEL)
        .bind(kinds)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_err)?;
    rows.iter()
        .map(|r| r.try_get::<Uuid, _>("id").map(TokenId).map_err(pg_err))
        .collect()
}
