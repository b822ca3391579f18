//! The SQLite store's edit in place and admin view
//! ([`TokenStore::update`](crate::store::TokenStore::update),
//! [`TokenStore::list_tokens`](crate::store::TokenStore::list_tokens)).

use time::OffsetDateTime;

use super::codec::{Bind, micros, opt_micros};
use super::{Failure, SqliteStore, sql_error};
use crate::store::codec::{self, decode as decode_record};
use crate::store::sql::{self, live_at};
use crate::store::{StoreError, TokenQuery, TokenRecord, TokenUpdate};

/// `UPDATE tokens SET (the editable columns) WHERE id = ?7`.
static UPDATE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| sql::update_statement("tokens", |n| format!("?{n}")));

/// The admin view's page.
static LIST: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| sql::list_statement("tokens", |n| format!("?{n}")));

impl SqliteStore {
    /// One attempt at an update, in a write transaction (`BEGIN IMMEDIATE`: the name check
    /// and the write cannot interleave with another writer's, in any process).
    pub(super) async fn try_update(
        &self,
        id: &str,
        update: &TokenUpdate,
        now: OffsetDateTime,
    ) -> Result<TokenRecord, Failure> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        match Self::update_checked(&mut tx, id, update, now).await {
            Ok(r) => {
                tx.commit().await?;
                Ok(r)
            }
            Err(e) => {
                tx.rollback().await?;
                Err(e)
            }
        }
    }

    async fn update_checked(
        tx: &mut sqlx::SqliteConnection,
        id: &str,
        update: &TokenUpdate,
        now: OffsetDateTime,
    ) -> Result<TokenRecord, Failure> {
        let row = sqlx::query(concat!(
            "SELECT ",
            sql::token_columns!(),
            " FROM tokens WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound.into());
        };
        let mut record = decode_record(&row)?;
        if !record.is_live_at(now) {
            return Err(StoreError::NotFound.into());
        }
        let old_name = record.name.clone();
        update.apply(&mut record);
        if record.name != old_name {
            let taken: bool = sqlx::query_scalar(concat!(
                "SELECT EXISTS (SELECT 1 FROM tokens WHERE owner = ?2 AND name = ?3 AND id <> ?4 AND ",
                live_at!("?1"),
                ")"
            ))
            .bind(micros(now)?)
            .bind(record.owner.as_str())
            .bind(record.name.as_str())
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            if taken {
                return Err(StoreError::NameTaken.into());
            }
        }
        let Bind(query) = codec::bind_editable(Bind(sqlx::query(UPDATE.as_str())), &record)?;
        query.execute(&mut *tx).await?;
        Ok(record)
    }

    pub(super) async fn list_page(&self, q: &TokenQuery) -> Result<Vec<TokenRecord>, StoreError> {
        let (after_at, after_id) = match q.after {
            Some((at, id)) => (Some(micros(at)?), Some(id.to_string())),
            None => (None, None),
        };
        let rows = sqlx::query(LIST.as_str())
            .bind(q.owner.as_deref())
            .bind(q.kind.as_deref())
            .bind(q.status.map(|s| s.as_str()))
            .bind(opt_micros(q.expiring_before)?)
            .bind(opt_micros(q.last_used_before)?)
            .bind(after_at)
            .bind(after_id)
            .bind(i64::try_from(q.limit).unwrap_or(i64::MAX))
            .bind(micros(q.now)?)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error)?;
        rows.iter().map(decode_record).collect()
    }
}
