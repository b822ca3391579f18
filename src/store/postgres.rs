//! [`PostgresStore`]: the shared source of truth when several instances serve the same
//! tokens (feature `postgres`).
//!
//! The schema lives in `migrations/postgres/`; the migrations are embedded in the binary and
//! run when the store connects (or, for [`PostgresOptions::connect_lazy`], before its first
//! query). Tokens are kept as their SHA-256 in a `BYTEA` column with a unique index,
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
//!   `synchronous_commit = on`, flushed to the WAL).
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

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    InactiveOutcome, InsertRules, ReleaseOutcome, RotateOutcome, StoreError, TokenId, TokenRecord,
    TokenStore,
};
use crate::identity::Permissions;
use crate::token::TokenHash;

mod audit;

/// The `NOTIFY` channel on which revocations and rotations are announced. The payload is
/// the lower-case hex SHA-256 of the token whose record changed (never the token).
pub const REVOCATION_CHANNEL: &str = "keygate_revocations";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The columns [`decode`] reads, as a literal for `concat!`.
macro_rules! columns {
    () => {
        "id, hash, kind, owner, name, description, role, permissions, hint, created_by, \
         created_at, expires_at, last_used_at, revoked_at, replaced_by, allowed_ips, rate_limit, \
         bound_to, bound_at, released_at"
    };
}

/// The live condition of [`TokenRecord::is_live_at`], with `now` as the parameter `$n`.
/// The SQL condition "valid at `$n`" (live, or replaced and in grace).
macro_rules! valid_at {
    ($n:literal) => {
        concat!(
            "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $",
            $n,
            ")"
        )
    };
}

macro_rules! live_at {
    ($n:literal) => {
        concat!(
            "revoked_at IS NULL AND replaced_by IS NULL AND (expires_at IS NULL OR expires_at > $",
            $n,
            ")"
        )
    };
}

/// How to connect a [`PostgresStore`]: URL, optional schema, pool size and timeouts. Its
/// `Debug` shows the URL with its password replaced ([`redact_url`](super::redact_url)).
#[derive(Clone)]
#[must_use]
pub struct PostgresOptions {
    url: String,
    schema: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &super::redact_url(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

/// `url` without the secret query parameters sqlx does not know (`sslpassword`): sqlx
/// ignores them but logs their value, in clear, at `WARN`. `password` stays: sqlx uses it.
fn without_unused_secrets(url: &str) -> std::borrow::Cow<'_, str> {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.into();
    };
    let unused = |k: &str| k != "password" && super::redact::is_secret(k);
    if !parsed.query_pairs().any(|(k, _)| unused(&k)) {
        return url.into();
    }
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| {
            let drop = unused(k);
            if drop {
                tracing::warn!(parameter = %k, "ignoring an unsupported secret connection parameter");
            }
            !drop
        })
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    String::from(parsed).into()
}

impl PostgresOptions {
    /// Options for the database at `url` (`postgres://user@host:port/db`), with a pool of
    /// 10 connections and a 5 s limit on waiting for one.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }

    /// Keeps the tables in `schema` (1–63 characters of `[A-Za-z0-9_]`, not starting with a
    /// digit), created if missing. Every pooled connection gets `search_path` = `schema`.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The most connections the pool opens (default 10).
    pub fn with_max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a query waits for a pooled connection, connecting included, before it fails
    /// with [`StoreError::Timeout`] (default 5 s).
    pub fn with_acquire_timeout(mut self, d: Duration) -> Self {
        self.acquire_timeout = d;
        self
    }

    fn pool(&self) -> Result<PgPool, StoreError> {
        let url = without_unused_secrets(&self.url);
        let mut opts = PgConnectOptions::from_str(&url).map_err(StoreError::backend)?;
        if let Some(schema) = &self.schema {
            check_schema(schema)?;
            opts = opts.options([("search_path", schema.as_str())]);
        }
        Ok(PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect_lazy_with(opts))
    }

    /// Connects and runs the migrations.
    ///
    /// # Errors
    ///
    /// An invalid URL or schema name, an unreachable database, or a failed migration.
    pub async fn connect(self) -> Result<PostgresStore, StoreError> {
        let store = self.connect_lazy()?;
        store.ready().await?;
        Ok(store)
    }

    /// A store that connects on first use: no I/O here. The migrations run before the first
    /// query that needs them (and are retried on the next call if the database is down), so
    /// a service can start before its database and recover when it comes up.
    ///
    /// # Errors
    ///
    /// An invalid URL or schema name.
    pub fn connect_lazy(self) -> Result<PostgresStore, StoreError> {
        let pool = self.pool()?;
        Ok(PostgresStore::new(pool, self.schema))
    }
}

fn check_schema(s: &str) -> Result<(), StoreError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::backend(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "invalid schema name: use 1-63 characters of [A-Za-z0-9_], not starting with a digit",
        )))
    }
}

/// A [`TokenStore`] (and, with feature `management`, an
/// [`AccountStore`](crate::accounts::AccountStore)) on PostgreSQL. Cheap to clone; clones
/// share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    schema: Option<Arc<str>>,
    migrated: Arc<tokio::sync::OnceCell<()>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
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
    fn new(pool: PgPool, schema: Option<String>) -> Self {
        Self {
            pool,
            schema: schema.map(Arc::from),
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
        let store = Self::new(pool, None);
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

    /// Runs the migrations now if they have not run yet on this store.
    ///
    /// # Errors
    ///
    /// An unreachable database or a failed migration.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.ready().await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.migrated
            .get_or_try_init(|| async {
                if let Some(schema) = &self.schema {
                    // Checked by `PostgresOptions::pool`: only [A-Za-z0-9_].
                    let sql = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
                    sqlx::query(AssertSqlSafe(sql))
                        .execute(&self.pool)
                        .await
                        .map_err(pg_err)?;
                }
                MIGRATOR.run(&self.pool).await.map_err(|e| match e {
                    sqlx::migrate::MigrateError::Execute(inner) => pg_err(inner),
                    other => StoreError::backend(other),
                })
            })
            .await
            .map(|_| ())
    }
}

fn decode(row: &PgRow) -> Result<TokenRecord, StoreError> {
    let hash: Vec<u8> = row.try_get("hash").map_err(pg_err)?;
    let hash: [u8; 32] = hash.try_into().map_err(|_| {
        StoreError::backend(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stored token hash is not 32 bytes",
        ))
    })?;
    let permissions: Vec<String> = row.try_get("permissions").map_err(pg_err)?;
    Ok(TokenRecord {
        id: TokenId(row.try_get("id").map_err(pg_err)?),
        hash: TokenHash::from_bytes(hash),
        kind: row.try_get("kind").map_err(pg_err)?,
        owner: row.try_get("owner").map_err(pg_err)?,
        name: row.try_get("name").map_err(pg_err)?,
        description: row.try_get("description").map_err(pg_err)?,
        role: row.try_get("role").map_err(pg_err)?,
        permissions: Permissions::parse(permissions).map_err(StoreError::backend)?,
        hint: row.try_get("hint").map_err(pg_err)?,
        created_by: row.try_get("created_by").map_err(pg_err)?,
        created_at: row.try_get("created_at").map_err(pg_err)?,
        expires_at: row.try_get("expires_at").map_err(pg_err)?,
        last_used_at: row.try_get("last_used_at").map_err(pg_err)?,
        revoked_at: row.try_get("revoked_at").map_err(pg_err)?,
        replaced_by: row
            .try_get::<Option<Uuid>, _>("replaced_by")
            .map_err(pg_err)?
            .map(TokenId),
        allowed_ips: row
            .try_get::<Vec<String>, _>("allowed_ips")
            .map_err(pg_err)?
            .iter()
            .map(|s| s.parse().map_err(StoreError::backend))
            .collect::<Result<_, _>>()?,
        rate_limit: row
            .try_get::<Option<i64>, _>("rate_limit")
            .map_err(pg_err)?
            .map(|n| u32::try_from(n).map_err(StoreError::backend))
            .transpose()?,
        bound_to: row.try_get("bound_to").map_err(pg_err)?,
        bound_at: row.try_get("bound_at").map_err(pg_err)?,
        released_at: row.try_get("released_at").map_err(pg_err)?,
    })
}

async fn insert_row(conn: &mut sqlx::PgConnection, r: &TokenRecord) -> Result<(), StoreError> {
    let permissions: Vec<&str> = r.permissions.iter().map(|p| p.as_str()).collect();
    sqlx::query(
        "INSERT INTO keygate_tokens (id, hash, kind, owner, name, description, role, \
         permissions, hint, created_by, created_at, expires_at, last_used_at, revoked_at, \
         replaced_by, allowed_ips, rate_limit, bound_to, bound_at, released_at) VALUES ($1, $2, \
         $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
    )
    .bind(r.id.0)
    .bind(&r.hash.as_bytes()[..])
    .bind(&r.kind)
    .bind(&r.owner)
    .bind(&r.name)
    .bind(&r.description)
    .bind(&r.role)
    .bind(permissions)
    .bind(&r.hint)
    .bind(&r.created_by)
    .bind(r.created_at)
    .bind(r.expires_at)
    .bind(r.last_used_at)
    .bind(r.revoked_at)
    .bind(r.replaced_by.map(|t| t.0))
    .bind(
        r.allowed_ips
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
    )
    .bind(r.rate_limit.map(i64::from))
    .bind(&r.bound_to)
    .bind(r.bound_at)
    .bind(r.released_at)
    .execute(conn)
    .await
    .map_err(insert_err)?;
    Ok(())
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
             count(*) FILTER (WHERE NOT $4 OR kind = $3) AS counted \
             FROM keygate_tokens WHERE owner = $1 AND ",
            valid_at!(5)
        ))
        .bind(&record.owner)
        .bind(&record.name)
        .bind(&record.kind)
        .bind(rules.per_kind)
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
            columns!(),
            " FROM keygate_tokens WHERE hash = $1"
        ))
        .bind(&hash.as_bytes()[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_err)?;
        row.as_ref()
            .map(decode)
            .transpose()
            .map(|r| r.map(Arc::new))
    }

    async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, StoreError> {
        self.ready().await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM keygate_tokens WHERE id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_err)?;
        row.as_ref().map(decode).transpose()
    }

    async fn list_by_owner(&self, owner: &str) -> Result<Vec<TokenRecord>, StoreError> {
        self.ready().await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM keygate_tokens WHERE owner = $1 ORDER BY created_at, seq"
        ))
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_err)?;
        rows.iter().map(decode).collect()
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
            live_at!(2),
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
            valid_at!(2),
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
                "SELECT count(*) FROM keygate_tokens \
                 WHERE owner = $1 AND (NOT $3 OR kind = $2) AND ",
                valid_at!(4)
            ))
            .bind(&owner)
            .bind(&new.kind)
            .bind(rules.per_kind)
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
        if bound.is_none() {
            return Ok(ReleaseOutcome::NotBound);
        }
        if let Some(next) = released.map(|r| r + min_interval)
            && next > now
        {
            return Ok(ReleaseOutcome::TooSoon {
                next_allowed_at: next,
            });
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

    async fn expire_inactive(
        &self,
        cutoff: OffsetDateTime,
        now: OffsetDateTime,
        release_kinds: &[String],
    ) -> Result<InactiveOutcome, StoreError> {
        self.ready().await?;
        // Valid at $2 and silent since before $1 (GREATEST skips NULLs).
        macro_rules! idle {
            () => {
                "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) AND \
                 GREATEST(created_at, last_used_at, bound_at) < $1"
            };
        }
        let mut tx = self.pool.begin().await.map_err(pg_err)?;
        let released = sqlx::query(concat!(
            "WITH u AS (UPDATE keygate_tokens SET bound_to = NULL, bound_at = NULL \
             WHERE bound_to IS NOT NULL AND kind = ANY($3) AND ",
            idle!(),
            " RETURNING id, hash) SELECT id, pg_notify($4, encode(hash, 'hex'))::text AS n FROM u"
        ))
        .bind(cutoff)
        .bind(now)
        .bind(release_kinds)
        .bind(REVOCATION_CHANNEL)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_err)?;
        let revoked = sqlx::query(concat!(
            "WITH u AS (UPDATE keygate_tokens SET revoked_at = $2 WHERE NOT (kind = ANY($3)) AND ",
            idle!(),
            " RETURNING id, hash) SELECT id, pg_notify($4, encode(hash, 'hex'))::text AS n FROM u"
        ))
        .bind(cutoff)
        .bind(now)
        .bind(release_kinds)
        .bind(REVOCATION_CHANNEL)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        let ids = |rows: Vec<PgRow>| -> Result<Vec<TokenId>, StoreError> {
            rows.iter()
                .map(|r| r.try_get::<Uuid, _>("id").map(TokenId).map_err(pg_err))
                .collect()
        };
        Ok(InactiveOutcome {
            revoked: ids(revoked)?,
            released: ids(released)?,
        })
    }
}

#[cfg(feature = "management")]
#[async_trait]
impl crate::accounts::AccountStore for PostgresStore {
    async fn put_account(&self, account: crate::accounts::Account) -> Result<(), StoreError> {
        self.ready().await?;
        let permissions: Vec<&str> = account.permissions.iter().map(|p| p.as_str()).collect();
        sqlx::query(
            "INSERT INTO keygate_accounts (email, password_hash, permissions, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (email) DO UPDATE SET \
             password_hash = EXCLUDED.password_hash, permissions = EXCLUDED.permissions, \
             created_at = EXCLUDED.created_at",
        )
        .bind(account.email.to_lowercase())
        .bind(&account.password_hash)
        .bind(permissions)
        .bind(account.created_at)
        .execute(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn find_account(
        &self,
        email: &str,
    ) -> Result<Option<crate::accounts::Account>, StoreError> {
        self.ready().await?;
        let row = sqlx::query(
            "SELECT email, password_hash, permissions, created_at FROM keygate_accounts \
             WHERE email = $1",
        )
        .bind(email.to_lowercase())
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_err)?;
        let Some(row) = row else { return Ok(None) };
        let permissions: Vec<String> = row.try_get("permissions").map_err(pg_err)?;
        Ok(Some(crate::accounts::Account {
            email: row.try_get("email").map_err(pg_err)?,
            password_hash: row.try_get("password_hash").map_err(pg_err)?,
            permissions: Permissions::parse(permissions).map_err(StoreError::backend)?,
            created_at: row.try_get("created_at").map_err(pg_err)?,
        }))
    }
}

#[cfg(test)]
mod url_tests {
    use super::without_unused_secrets;

    #[test]
    fn secret_parameters_sqlx_would_log_are_dropped_before_it_sees_them() {
        let url = "postgres://u@h/db?sslmode=require&sslpassword=pw-ssl&password=pw";
        let kept = without_unused_secrets(url);
        assert!(!kept.contains("pw-ssl"), "{kept}");
        assert!(
            kept.contains("password=pw") && kept.contains("sslmode=require"),
            "{kept}"
        );
        let plain = "postgres://u:pw@h/db?sslmode=disable";
        assert_eq!(without_unused_secrets(plain), plain);
    }
}
