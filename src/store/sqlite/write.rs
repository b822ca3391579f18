//! The SQLite store's write transactions: each is one attempt, retried by
//! [`SqliteStore::write`] while the database is busy.

use std::time::Duration;

use time::OffsetDateTime;

use super::codec::{Bind, Corrupt, decode_id, get, micros, opt_from_micros};
use super::{Failure, SqliteStore, is_unique_violation};
use crate::store::codec;
use crate::store::sql::{self, counted_kind, idle, live_at, valid_at};
use crate::store::{
    InactiveOutcome, InsertRules, ReleaseOutcome, RotateOutcome, StoreError, TokenId, TokenRecord,
};

/// `INSERT INTO tokens (every column) VALUES (?, ?, ...)`.
static INSERT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| sql::insert_statement("tokens", |_| "?".to_owned()));

/// Inserts `r` on `conn` without checks. A unique violation (id or hash) is
/// [`StoreError::Duplicate`].
async fn insert_row(conn: &mut sqlx::SqliteConnection, r: &TokenRecord) -> Result<(), Failure> {
    let Bind(query) = codec::bind_record(Bind(sqlx::query(INSERT.as_str())), r)?;
    match query.execute(conn).await {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(Failure::Store(StoreError::Duplicate)),
        Err(e) => Err(Failure::Sql(e)),
    }
}

impl SqliteStore {
    pub(super) async fn try_insert(
        &self,
        record: &TokenRecord,
        rules: InsertRules,
    ) -> Result<(), Failure> {
        let now = micros(rules.now)?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        match Self::insert_checked(&mut tx, record, rules, now).await {
            Ok(()) => Ok(tx.commit().await?),
            Err(e) => {
                tx.rollback().await?;
                Err(e)
            }
        }
    }

    /// The body of [`try_insert`](Self::try_insert), inside its write transaction.
    async fn insert_checked(
        tx: &mut sqlx::SqliteConnection,
        record: &TokenRecord,
        rules: InsertRules,
        now: i64,
    ) -> Result<(), Failure> {
        let taken: bool = sqlx::query_scalar(concat!(
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE owner = ?2 AND name = ?3 AND ",
            live_at!("?1"),
            ")"
        ))
        .bind(now)
        .bind(record.owner.as_str())
        .bind(record.name.as_str())
        .fetch_one(&mut *tx)
        .await?;
        if taken {
            return Err(StoreError::NameTaken.into());
        }
        if Self::at_limit(tx, record, rules, now).await? {
            return Err(StoreError::LimitReached.into());
        }
        insert_row(tx, record).await
    }

    /// Whether the owner of `record` already has `rules.max_live` valid tokens counted
    /// against its limit (inside the caller's write transaction).
    async fn at_limit(
        tx: &mut sqlx::SqliteConnection,
        record: &TokenRecord,
        rules: InsertRules,
        now: i64,
    ) -> Result<bool, Failure> {
        let Some(max) = rules.max_live else {
            return Ok(false);
        };
        let valid: i64 = sqlx::query_scalar(concat!(
            "SELECT count(*) FROM tokens WHERE owner = ?2 AND ",
            counted_kind!("?3"),
            " AND ",
            valid_at!("?1")
        ))
        .bind(now)
        .bind(record.owner.as_str())
        .bind(rules.per_kind.then_some(record.kind.as_str()))
        .fetch_one(&mut *tx)
        .await?;
        Ok(valid >= i64::from(max))
    }

    pub(super) async fn try_rotate(
        &self,
        old: &TokenId,
        new: &TokenRecord,
        old_expires_at: i64,
        rules: InsertRules,
    ) -> Result<RotateOutcome, Failure> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        match Self::rotate_checked(&mut tx, old, new, old_expires_at, rules).await {
            Ok(out) => {
                tx.commit().await?;
                Ok(out)
            }
            Err(e) => {
                tx.rollback().await?;
                Err(e)
            }
        }
    }

    /// The body of [`try_rotate`](Self::try_rotate), inside its write transaction.
    async fn rotate_checked(
        tx: &mut sqlx::SqliteConnection,
        old: &TokenId,
        new: &TokenRecord,
        old_expires_at: i64,
        rules: InsertRules,
    ) -> Result<RotateOutcome, Failure> {
        let now = micros(rules.now)?;
        let live: bool = sqlx::query_scalar(concat!(
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE id = ?2 AND ",
            live_at!("?1"),
            ")"
        ))
        .bind(now)
        .bind(old.to_string())
        .fetch_one(&mut *tx)
        .await?;
        if !live {
            return Err(StoreError::NotFound.into());
        }
        // The predecessor still in grace, if any: its grace ends now.
        let ended: Vec<String> = sqlx::query_scalar(concat!(
            "UPDATE tokens SET expires_at = ?1 WHERE replaced_by = ?2 AND ",
            valid_at!("?1"),
            " RETURNING id"
        ))
        .bind(now)
        .bind(old.to_string())
        .fetch_all(&mut *tx)
        .await?;
        // Left in grace with no predecessor ended, the old token adds one valid token.
        if old_expires_at > now && ended.is_empty() && Self::at_limit(tx, new, rules, now).await? {
            return Err(StoreError::LimitReached.into());
        }
        let ended = ended
            .iter()
            .map(|id| {
                id.parse()
                    .map_err(|_| Failure::Store(StoreError::backend(Corrupt("id"))))
            })
            .collect::<Result<Vec<TokenId>, Failure>>()?;
        insert_row(tx, new).await?;
        sqlx::query(
            "UPDATE tokens SET replaced_by = ?1, \
             expires_at = CASE WHEN expires_at IS NULL OR expires_at > ?2 THEN ?2 \
             ELSE expires_at END \
             WHERE id = ?3",
        )
        .bind(new.id.to_string())
        .bind(old_expires_at)
        .bind(old.to_string())
        .execute(&mut *tx)
        .await?;
        Ok(RotateOutcome { ended })
    }

    pub(super) async fn try_bind(
        &self,
        id: &str,
        fingerprint: &str,
        now: i64,
    ) -> Result<Option<String>, Failure> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "UPDATE tokens SET bound_to = ?2, bound_at = ?3 WHERE id = ?1 AND bound_to IS NULL",
        )
        .bind(id)
        .bind(fingerprint)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let bound: Option<Option<String>> =
            sqlx::query_scalar("SELECT bound_to FROM tokens WHERE id = ?1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(bound.flatten())
    }

    pub(super) async fn try_release(
        &self,
        id: &str,
        now: OffsetDateTime,
        min_interval: Duration,
    ) -> Result<ReleaseOutcome, Failure> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query("SELECT bound_to, released_at FROM tokens WHERE id = ?1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(StoreError::NotFound.into());
        };
        let bound: Option<String> = get(&row, "bound_to")?;
        let released = opt_from_micros(get(&row, "released_at")?, "released_at")?;
        let outcome = ReleaseOutcome::judge(bound.is_some(), released, now, min_interval);
        if outcome == ReleaseOutcome::Released {
            sqlx::query(
                "UPDATE tokens SET bound_to = NULL, bound_at = NULL, released_at = ?2 \
                 WHERE id = ?1",
            )
            .bind(id)
            .bind(micros(now)?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    pub(super) async fn try_expire_inactive(
        &self,
        cutoff: i64,
        now: i64,
        kinds: &str,
        release_kinds: &str,
    ) -> Result<InactiveOutcome, Failure> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // Valid at ?2 and silent since before ?1.
        let released: Vec<String> = sqlx::query_scalar(concat!(
            "UPDATE tokens SET bound_to = NULL, bound_at = NULL WHERE bound_to IS NOT NULL AND \
             kind IN (SELECT value FROM json_each(?3)) AND \
             kind IN (SELECT value FROM json_each(?4)) AND ",
            idle!("max", "?1", "?2"),
            " RETURNING id"
        ))
        .bind(cutoff)
        .bind(now)
        .bind(release_kinds)
        .bind(kinds)
        .fetch_all(&mut *tx)
        .await?;
        let revoked: Vec<String> = sqlx::query_scalar(concat!(
            "UPDATE tokens SET revoked_at = ?2 WHERE \
             kind NOT IN (SELECT value FROM json_each(?3)) AND \
             kind IN (SELECT value FROM json_each(?4)) AND ",
            idle!("max", "?1", "?2"),
            " RETURNING id"
        ))
        .bind(cutoff)
        .bind(now)
        .bind(release_kinds)
        .bind(kinds)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let ids = |v: Vec<String>| -> Result<Vec<TokenId>, StoreError> {
            v.iter().map(|s| decode_id(s, "id")).collect()
        };
        Ok(InactiveOutcome {
            revoked: ids(revoked)?,
            released: ids(released)?,
        })
    }

    pub(super) async fn try_record_use(&self, uses: &[(String, i64)]) -> Result<(), Failure> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for (id, at) in uses {
            sqlx::query(
                "UPDATE tokens SET last_used_at = ?1 \
                 WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)",
            )
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
