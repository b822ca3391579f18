//! [`PostgresStore`]: the shared source of truth when several instances serve the same
//! tokens (feature `postgres`).
//!
//! The schema lives in `migrations/postgres/`; the migrations are embedded in the binary and
//! run when the store connects (or, for [`PostgresOptions::connect_lazy`], before its first
//! query). They are recorded in keygate's own table, [`MIGRATIONS_TABLE`]
//! (`_keygate_migrations`, in keygate's schema), apart from a host application's
//! `_sqlx_migrations`; rows an earlier keygate left in `_sqlx_migrations` are copied over
//! once. [`PostgresOptions::without_migrations`] leaves the schema to another tool. Tokens are kept as their SHA-256 in a `BYTEA` column with a unique index,
//! timestamps as `timestamptz` (microsecond precision: records round-trip exactly when
//! their times are whole microseconds, which is what [`Tokens`](crate::Tokens) produces).
//!
//! # How the guarantees are kept
//!
//! - **Unique names and the per-owner limit** are enforced by the database, not by a read
//!   followed by a write in Rust: an insert first makes sure the owner has a row in
//!   `keygate_owners`, locks it with `SELECT … FOR UPDATE`, then counts the owner's live
//!   tokens, checks the name and inserts, all in one transaction. Concurrent inserts for
//!   the same owner queue on that row lock, on every instance.
//! - **Duplicates** (same id or hash) are refused by the primary key and the unique index.
//! - **Revocation and rotation** are single transactions that also run
//!   `pg_notify('keygate_revocations', <hex of the token's SHA-256>)`; PostgreSQL delivers
//!   the notification only if the transaction commits. A
//!   [`CachedStore`](crate::store::cached::CachedStore) listening on that channel drops the
//!   entry on every instance (see [`CachedStore::listen_postgres`](crate::store::cached::CachedStore::listen_postgres)).
//! - **Durability** is PostgreSQL's: an acknowledged write is committed (with the default
//!   `synchronous_commit = on`, flushed to the WAL). When the sessions' `synchronous_commit`
//!   is `off`, a crash of the database can undo an acknowledged create or revocation: the
//!   store logs a warning when it first connects.
//!
//! # TLS
//!
//! The URL's `sslmode` decides: `require` encrypts (and checks the certificate only when
//! `sslrootcert=` is given), `verify-ca` also checks the certificate and `verify-full` its
//! host name too, against the operating system's certificate store
//! plus the CA file `sslrootcert=` names (rustls; no OpenSSL). The default, `prefer`,
//! encrypts when the server offers it. `sslcert=` / `sslkey=` give a client certificate.
//!
//! # Isolation for tests
//!
//! [`PostgresOptions::with_schema`] puts every table in its own schema (created if needed;
//! the connections' `search_path` points at it), so tests can share one database and run in
//! parallel.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keygate::StoreError> {
//! use keygate::store::postgres::{PostgresOptions, PostgresStore};
//!
//! let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
//! let isolated = PostgresOptions::new("postgres://postgres@127.0.0.1:5432/test")
//!     .with_schema("keygate_test_1")
//!     .connect()
//!     .await?;
//! # let _ = (store, isolated);
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    InactiveOutcome, InsertRules, ReleaseOutcome, RotateOutcome, StoreError, TokenId, TokenRecord,
    TokenStore,
};
use crate::token::TokenHash;

#[cfg(feature = "management")]
mod accounts;
mod admin;
mod audit;
mod codec;
mod expiry;
mod feed;
mod inactive;
mod migrate;
mod options;
mod rehash;
mod usage;
pub use crate::store::sql::migrate::MIGRATIONS_TABLE;
pub use feed::PostgresFeed;
pub use options::PostgresOptions;

use super::sql::{self, counted_kind, live_at, valid_at};
use crate::store::codec::decode as decode_record;
use codec::insert_row;

/// The `NOTIFY` channel on which revocations and rotations are announced. The payload is
/// the lower-case hex SHA-256 of the token whose record changed (never the token).
pub const REVOCATION_CHANNEL: &str = "keygate_revocations";

/// A [`TokenStore`] (and, with feature `management`, an
/// [`AccountStore`](crate::accounts::AccountStore)) on PostgreSQL. Cheap to clone; clones
/// share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    schema: Option<Arc<str>>,
    /// Run keygate's migrations (else only check that its tables are there).
    migrate: bool,
    migrated: Arc<tokio::sync::OnceCell<()>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("migrate", &self.migrate)
            .field("pool_size", &self.pool.size())
            .finish_non_exhaustive()
    }
}

fn pg_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut => StoreError::Timeout,
        other => StoreError::backend(other),
    }
}

fn insert_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate,
        _ => pg_err(e),
    }
}

impl PostgresStore {
    fn new(pool: PgPool, schema: Option<String>, migrate: bool) -> Self {
        Self {
            pool,
            schema: schema.map(Arc::from),
            migrate,
            migrated: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// Connects to `url` with the default [`PostgresOptions`] and runs the migrations.
    ///
    /// # Errors
    ///
    /// An invalid URL, an unreachable database, or a failed migration.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        PostgresOptions::new(url).connect().await
    }

    /// Uses an existing pool (its connections' `search_path` decides the schema) and runs
    /// the migrations.
    ///
    /// # Errors
    ///
    /// An unreachable database or a failed migration.
    pub async fn from_pool(pool: PgPool) -> Result<Self, StoreError> {
        let store = Self::new(pool, None, true);
        store.ready().await?;
        Ok(store)
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema given to [`PostgresOptions::with_schema`], if any.
    #[must_use]
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Runs the migrations now if they have not run yet on this store (for a store made
    /// [`without_migrations`](PostgresOptions::without_migrations): checks that keygate's
    /// tables are there).
    ///
    /// # Errors
    ///
    /// An unreachable database, a failed migration, or (without migrations) a schema that
    /// lacks keygate's tables.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.ready().await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.migrated
            .get_or_try_init(|| async {
                if !self.migrate {
                    migrate::check(&self.pool).await?;
                } else {
                    if let Some(schema) = &self.schema {
                        // Checked by `PostgresOptions::pool`: only [A-Za-z0-9_].
                        let sql = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
                        sqlx::query(AssertSqlSafe(sql))
                            .execute(&self.pool)
                            .await
                            .map_err(pg_err)?;
                    }
                    migrate::run(&self.pool).await?;
                }
                warn_unless_commits_are_durable(&self.pool).await;
                Ok(())
            })
            .await
            .map(|_| ())
    }
}

/// Logs a warning when the sessions' `synchronous_commit` is `off` (set for the server, the
/// database, the role or in the URL's `options`): PostgreSQL then answers a commit before
/// it is in the WAL on disk, so a create or a revocation keygate has acknowledged can be
/// undone by a crash of the database. Every other value keeps a commit on the primary's disk.
async fn warn_unless_commits_are_durable(pool: &PgPool) {
    let setting = sqlx::query_scalar::<_, String>("SHOW synchronous_commit")
        .fetch_one(pool)
        .await;
    if let Ok(value) = setting
        && value.eq_ignore_ascii_case("off")
    {
        tracing::warn!(
            synchronous_commit = %value,
            "PostgreSQL's synchronous_commit is off: a token created or revoked can be lost \
             if the database crashes right after; set it on for keygate's role or database"
        );
    }
}

/// Takes the owner's row lock, held until the transaction ends: every write that checks
/// the owner's limit or names (insert, rotate) is serialised per owner.
async fn lock_owner(tx: &mut sqlx::PgConnection, owner: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO keygate_owners (owner) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(owner)
        .execute(&mut *tx)
        .await
        .map_err(pg_err)?;
    sqlx::query("SELECT owner FROM keygate_owners WHERE owner = $1 FOR UPDATE")
        .bind(owner)
        .fetch_one(&mut *tx)
        .await
        .map_err(pg_err)?;
    Ok(())
}

#[async_trait]
impl TokenStore for PostgresStore {
    async fn insert(&self, record: TokenRecord, rules: InsertRules) -> Result<(), StoreError> {
        self.ready().await?;
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        lock_owner(&mut tx, &record.owner).await?;
        let counts = sqlx::query(concat!(
            "SELECT count(*) FILTER (WHERE name = $2 AND replaced_by IS NULL) AS same_name, \
             count(*) FILTER (WHERE ",
            counted_kind!("$3"),
            ") AS counted FROM keygate_tokens WHERE owner = $1 AND ",
            valid_at!("$4")
        ))
        .bind(record.owner.as_str())
        .bind(record.name.as_str())
        .bind(rules.per_kind.then_some(record.kind.as_str()))
        .bind(rules.now)
        .fetch_one(&mut *tx)
        .await
        .map_err(pg_err)?;
        let same_name: i64 = counts.try_get("same_name").map_err(pg_err)?;
        let counted: i64 = counts.try_get("counted").map_err(pg_err)?;
        if same_name > 0 {
            return Err(StoreError::NameTaken);
        }
        if rules.max_live.is_some_and(|max| counted >= i64::from(max)) {
            return Err(StoreError::LimitReached);
        }
        insert_row(&mut tx, &record).await?;
        tx.commit().await.map_err(pg_err)
    }

    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        self.ready().await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            sql::token_columns!(),
            " FROM keygate_tokens WHERE hash = $1"
        ))
        .bind(&hash.as_bytes()[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_err)?;
        row.as_ref()
            .map(decode_record)
            .transpose()
            .map(|r| r.map(Arc::new))
    }

    async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, StoreError> {
        self.ready().await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            sql::token_columns!(),
            " FROM keygate_tokens WHERE id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_err)?;
        row.as_ref().map(decode_record).transpose()
    }

    async fn list_by_owner(&self, owner: &str) -> Result<Vec<TokenRecord>, StoreError> {
        self.ready().await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            sql::token_columns!(),
            " FROM keygate_tokens WHERE owner = $1 ORDER BY created_at, seq"
        ))
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        rows.iter().map(decode_record).collect()
    }

    async fn revoke(&self, id: &TokenId, at: OffsetDateTime) -> Result<bool, StoreError> {
        self.ready().await?;
        // One statement, so one transaction: the notification is sent only if it commits.
        let notified = sqlx::query(
            "WITH r AS (UPDATE keygate_tokens SET revoked_at = $2 \
             WHERE id = $1 AND revoked_at IS NULL RETURNING hash) \
             SELECT pg_notify($3, encode(hash, 'hex')) FROM r",
        )
        .bind(id.0)
        .bind(at)
        .bind(REVOCATION_CHANNEL)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(notified.is_some())
    }

    async fn rotate(
        &self,
        old: &TokenId,
        new: TokenRecord,
        old_expires_at: OffsetDateTime,
        rules: InsertRules,
    ) -> Result<RotateOutcome, StoreError> {
        self.ready().await?;
        let now = rules.now;
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        // The owner's lock first, as inserts take it: rotations and inserts of one owner
        // are serialised, so the limit below holds under any mix of them.
        let owner: Option<String> =
            sqlx::query_scalar("SELECT owner FROM keygate_tokens WHERE id = $1")
                .bind(old.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(pg_err)?;
        let Some(owner) = owner else {
            return Err(StoreError::NotFound);
        };
        lock_owner(&mut tx, &owner).await?;
        let live = sqlx::query(concat!(
            "SELECT ",
            live_at!("$2"),
            " AS live FROM keygate_tokens WHERE id = $1 FOR UPDATE"
        ))
        .bind(old.0)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_err)?;
        let live: bool = match live {
            Some(row) => row.try_get("live").map_err(pg_err)?,
            None => false,
        };
        if !live {
            return Err(StoreError::NotFound);
        }
        // The predecessor still in grace, if any: its grace ends now, and every instance
        // hears of it like a revocation.
        let ended: Vec<Uuid> = sqlx::query_scalar(concat!(
            "WITH e AS (UPDATE keygate_tokens SET expires_at = $2 WHERE replaced_by = $1 AND ",
            valid_at!("$2"),
            " RETURNING id, hash) SELECT id FROM e, pg_notify($3, encode(e.hash, 'hex'))"
        ))
        .bind(old.0)
        .bind(now)
        .bind(REVOCATION_CHANNEL)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_err)?;
        if old_expires_at > now
            && ended.is_empty()
            && let Some(max) = rules.max_live
        {
            let counted: i64 = sqlx::query_scalar(concat!(
                "SELECT count(*) FROM keygate_tokens WHERE owner = $1 AND ",
                counted_kind!("$2"),
                " AND ",
                valid_at!("$3")
            ))
            .bind(&owner)
            .bind(rules.per_kind.then_some(new.kind.as_str()))
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(pg_err)?;
            if counted >= i64::from(max) {
                return Err(StoreError::LimitReached);
            }
        }
        insert_row(&mut tx, &new).await?;
        sqlx::query(
            "WITH u AS (UPDATE keygate_tokens SET replaced_by = $2, \
             expires_at = LEAST(COALESCE(expires_at, $3), $3) WHERE id = $1 RETURNING hash) \
             SELECT pg_notify($4, encode(hash, 'hex')) FROM u",
        )
        .bind(old.0)
        .bind(new.id.0)
        .bind(old_expires_at)
        .bind(REVOCATION_CHANNEL)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(RotateOutcome {
            ended: ended.into_iter().map(TokenId).collect(),
        })
    }

    async fn record_use(&self, uses: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        self.ready().await?;
        // One row per id (the latest time), so the UPDATE … FROM matches each row once.
        let mut latest: std::collections::HashMap<Uuid, OffsetDateTime> =
            std::collections::HashMap::with_capacity(uses.len());
        for (id, at) in uses {
            latest
                .entry(id.0)
                .and_modify(|t| *t = (*t).max(*at))
                .or_insert(*at);
        }
        let (ids, times): (Vec<Uuid>, Vec<OffsetDateTime>) = latest.into_iter().unzip();
        sqlx::query(
            "UPDATE keygate_tokens t SET last_used_at = u.at \
             FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(id, at) \
             WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)",
        )
        .bind(ids)
        .bind(times)
        .execute(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn record_usage(&self, uses: &[crate::store::TokenUse]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        self.ready().await?;
        self.update_usage(uses).await
    }

    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.ready().await?;
        let done =
            sqlx::query("DELETE FROM keygate_tokens WHERE revoked_at <= $1 OR expires_at <= $1")
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(pg_err)?;
        Ok(done.rows_affected())
    }

    async fn bind(
        &self,
        id: &TokenId,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        self.ready().await?;
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        // The row lock makes concurrent first uses queue: the first binds, the others read
        // its binding.
        let row = sqlx::query("SELECT bound_to FROM keygate_tokens WHERE id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let bound: Option<String> = row.try_get("bound_to").map_err(pg_err)?;
        if let Some(b) = bound {
            return Ok(Some(b));
        }
        sqlx::query("UPDATE keygate_tokens SET bound_to = $2, bound_at = $3 WHERE id = $1")
            .bind(id.0)
            .bind(fingerprint)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Some(fingerprint.to_owned()))
    }

    async fn release(
        &self,
        id: &TokenId,
        now: OffsetDateTime,
        min_interval: Duration,
    ) -> Result<ReleaseOutcome, StoreError> {
        self.ready().await?;
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        let row = sqlx::query(
            "SELECT bound_to, released_at FROM keygate_tokens WHERE id = $1 FOR UPDATE",
        )
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_err)?;
        let Some(row) = row else {
            return Err(StoreError::NotFound);
        };
        let bound: Option<String> = row.try_get("bound_to").map_err(pg_err)?;
        let released: Option<OffsetDateTime> = row.try_get("released_at").map_err(pg_err)?;
        let outcome = ReleaseOutcome::judge(bound.is_some(), released, now, min_interval);
        if outcome != ReleaseOutcome::Released {
            return Ok(outcome);
        }
        // Announced like a revocation, so caches on other instances drop the old binding.
        sqlx::query(
            "WITH u AS (UPDATE keygate_tokens SET bound_to = NULL, bound_at = NULL, \
             released_at = $2 WHERE id = $1 RETURNING hash) \
             SELECT pg_notify($3, encode(hash, 'hex')) FROM u",
        )
        .bind(id.0)
        .bind(now)
        .bind(REVOCATION_CHANNEL)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(ReleaseOutcome::Released)
    }

    async fn rehash(
        &self,
        id: &TokenId,
        from: &TokenHash,
        to: &TokenHash,
    ) -> Result<bool, StoreError> {
        self.try_rehash(id, from, to).await
    }

    async fn expire_inactive(
        &self,
        cutoff: OffsetDateTime,
        now: OffsetDateTime,
        kinds: &[String],
        release_kinds: &[String],
    ) -> Result<InactiveOutcome, StoreError> {
        self.expire_idle(cutoff, now, kinds, release_kinds).await
    }

    async fn claim_expiry_warnings(
        &self,
        before: OffsetDateTime,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        self.claim_expiry(before, now, limit).await
    }

    async fn update(
        &self,
        id: &TokenId,
        update: &super::TokenUpdate,
        now: OffsetDateTime,
    ) -> Result<TokenRecord, StoreError> {
        self.update_record(id, update, now).await
    }

    async fn list_tokens(&self, query: &super::TokenQuery) -> Result<Vec<TokenRecord>, StoreError> {
        self.list_page(query).await
    }
}
