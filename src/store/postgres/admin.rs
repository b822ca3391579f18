//! The PostgreSQL store's edit in place and admin view
//! ([`TokenStore::update`](crate::store::TokenStore::update),
//! [`TokenStore::list_tokens`](crate::store::TokenStore::list_tokens)).

use time::OffsetDateTime;

use super::codec::update_row;
use super::{PostgresStore, REVOCATION_CHANNEL, lock_owner, pg_err};
use crate::store::codec::decode as decode_record;
use crate::store::sql::{self, live_at};
use crate::store::{StoreError, TokenId, TokenQuery, TokenRecord, TokenUpdate};

/// The admin view's page.
static LIST: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| sql::list_statement("keygate_tokens", |n| format!("${n}")));

impl PostgresStore {
    /// The update in one transaction under the owner's lock (which inserts and rotations
    /// take too, so a rename and a create of the same name queue), announced on the
    /// revocation channel when it commits.
    pub(super) async fn update_record(
        &self,
        id: &TokenId,
        update: &TokenUpdate,
        now: OffsetDateTime,
    ) -> Result<TokenRecord, StoreError> {
        self.ready().await?;
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        let owner: Option<String> =
            sqlx::query_scalar("SELECT owner FROM keygate_tokens WHERE id = $1")
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(pg_err)?;
        let Some(owner) = owner else {
            return Err(StoreError::NotFound);
        };
        lock_owner(&mut tx, &owner).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            sql::token_columns!(),
            " FROM keygate_tokens WHERE id = $1 FOR UPDATE"
        ))
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_err)?;
        let Some(row) = row else {
            return Err(StoreError::NotFound);
        };
        let mut record = decode_record(&row)?;
        if !record.is_live_at(now) {
            return Err(StoreError::NotFound);
        }
        let old_name = record.name.clone();
        update.apply(&mut record);
        if record.name != old_name {
            let taken: bool = sqlx::query_scalar(concat!(
                "SELECT EXISTS (SELECT 1 FROM keygate_tokens WHERE owner = $2 AND name = $3 \
                 AND id <> $4 AND ",
                live_at!("$1"),
                ")"
            ))
            .bind(now)
            .bind(record.owner.as_str())
            .bind(record.name.as_str())
            .bind(id.0)
            .fetch_one(&mut *tx)
            .await
            .map_err(pg_err)?;
            if taken {
                return Err(StoreError::NameTaken);
            }
        }
        update_row(&mut tx, &record).await?;
        // Sent only if the transaction commits: every instance's cache drops the old record.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(REVOCATION_CHANNEL)
            .bind(record.hash.to_hex())
            .execute(&mut *tx)
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(record)
    }

    pub(super) async fn list_page(&self, q: &TokenQuery) -> Result<Vec<TokenRecord>, StoreError> {
        self.ready().await?;
        let rows = sqlx::query(LIST.as_str())
            .bind(q.owner.as_deref())
            .bind(q.kind.as_deref())
            .bind(q.status.map(|s| s.as_str()))
            .bind(q.expiring_before)
            .bind(q.last_used_before)
            .bind(q.after.map(|(at, _)| at))
            .bind(q.after.map(|(_, id)| id.0))
            .bind(i64::try_from(q.limit).unwrap_or(i64::MAX))
            .bind(q.now)
            .fetch_all(&self.pool)
            .await
            .map_err(pg_err)?;
        rows.iter().map(decode_record).collect()
    }
}
