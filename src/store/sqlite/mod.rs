//! [`SqliteStore`]: tokens (and accounts) in an embedded SQLite file (feature `sqlite`).
//!
//! One file holds everything; the schema is created and upgraded by migrations embedded in
//! the binary, run on open and recorded in keygate's own table, [`MIGRATIONS_TABLE`]
//! (`_keygate_migrations`), so an application's own sqlx migrations can share the file
//! (rows an earlier keygate left in `_sqlx_migrations` are copied over once).
//! [`SqliteStore::open_without_migrations`] leaves the schema to another tool. The connection settings favour safety over raw write speed:
//!
//! - **WAL journal with `synchronous=FULL`**: a write is on disk when it is acknowledged,
//!   so an issued token or a revocation survives a crash or power loss right after the call
//!   returns. Readers never wait for writers.
//! - **`BEGIN IMMEDIATE` write transactions**: every check-and-write (insert with its name
//!   and limit checks, rotation) takes the database's write lock before it reads, so two
//!   connections — in this process or in another one, such as the `keygate` CLI beside a
//!   running server — can never both pass a check and both insert. A busy database is
//!   waited for (busy timeout), and a write that still finds it busy is retried.
//! - Foreign keys on.
//!
//! Tokens are looked up by their SHA-256 digest, kept as a 32-byte `BLOB` under a unique
//! index. Times are kept as microseconds since the Unix epoch (UTC), so records read back
//! equal to what was written at that precision; [`Tokens::now`](crate::Tokens::now) already
//! truncates to it.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use keygate::store::sqlite::SqliteStore;
//! use keygate::{NewToken, Tokens};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = SqliteStore::open(dir.path().join("keygate.db")).await.unwrap();
//! let tokens = Tokens::new(store.clone());
//!
//! let issued = tokens.issue(NewToken::new("alice", "ci")).await.unwrap();
//! let identity = tokens.authenticate(issued.token.expose_secret()).await.unwrap();
//! assert_eq!(identity.owner(), "alice");
//!
//! tokens.revoke("alice", issued.record.id).await.unwrap();
//! assert!(tokens.authenticate(issued.token.expose_secret()).await.is_err());
//! # });
//! ```

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use time::OffsetDateTime;

use super::sql;
use super::{
    InactiveOutcome, InsertRules, ReleaseOutcome, RotateOutcome, StoreError, TokenId, TokenRecord,
    TokenStore,
};
use crate::store::codec::decode as decode_record;
use crate::token::TokenHash;
use codec::micros;

#[cfg(feature = "management")]
mod accounts;
mod admin;
mod audit;
mod codec;
mod expiry;
mod migrate;
mod rehash;
mod usage;
mod write;

pub use crate::store::sql::migrate::MIGRATIONS_TABLE;

/// How long a connection waits for another writer before SQLite reports the database busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a write that still found the database busy is retried.
const BUSY_RETRIES: u32 = 5;
/// Connections in the pool [`SqliteStore::open`] creates.
const MAX_CONNECTIONS: u32 = 8;

/// A [`TokenStore`] (and, with feature `management`, an
/// [`AccountStore`](crate::accounts::AccountStore)) in one SQLite file.
///
/// Cheap to clone: clones share the connection pool. Acknowledged writes are durable (WAL
/// with `synchronous=FULL`), and inserts and rotations are atomic across every connection
/// to the file, including other processes. See the [module docs](self).
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Queues this process's write transactions so they do not spin on SQLite's busy
    /// handler against each other; other processes are kept out by `BEGIN IMMEDIATE`.
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("connections", &self.pool.size())
            .finish_non_exhaustive()
    }
}

/// Why a single attempt at a write failed.
enum Failure {
    /// A store answer (name taken, limit, not found, duplicate).
    Store(StoreError),
    /// The database failed; retried when it was busy.
    Sql(sqlx::Error),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

fn sql_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut => StoreError::Timeout,
        e if is_unique_violation(&e) => StoreError::Duplicate,
        e => StoreError::backend(e),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// SQLITE_BUSY or SQLITE_LOCKED, in any of their extended forms.
fn is_busy(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    db.code()
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

/// Creates the database file, when missing, readable and writable by its owner only
/// (`0600` on Unix): it holds account password hashes. SQLite gives the `-wal` and `-shm`
/// files it creates beside it the database file's mode. An existing file keeps its mode.
/// The mode is set at creation instead of through a umask, which is process-wide.
fn create_private(path: &Path) -> Result<(), StoreError> {
    if path.as_os_str() == ":memory:" {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    // An empty file is an empty SQLite database.
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::backend(e)),
    }
}

/// Makes the `-wal` and `-shm` files no more open than the database file, in case they
/// were created by something else first (SQLite gives new ones the database's mode).
#[cfg(unix)]
fn restrict_journal(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(db) = std::fs::metadata(path) else {
        return;
    };
    let allowed = db.permissions().mode() & 0o777;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        if let Ok(meta) = std::fs::metadata(&side) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & !allowed != 0 {
                let fixed = std::fs::Permissions::from_mode(mode & allowed);
                if let Err(error) = std::fs::set_permissions(&side, fixed) {
                    tracing::warn!(%error, file = %side.to_string_lossy(), "cannot restrict the mode of a SQLite journal file");
                }
            }
        }
    }
}

#[cfg(not(unix))]
fn restrict_journal(_: &Path) {}

impl SqliteStore {
    /// Opens (creating it if missing) the SQLite file at `path` with the settings described
    /// in the [module docs](self), and brings its schema up to date. A file it creates is
    /// readable and writable by its owner only (`0600` on Unix), and so are its `-wal` and
    /// `-shm` files.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the file cannot be opened or created, is not a SQLite
    /// database, or a migration fails (e.g. the file was written by a newer keygate).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_as(path.as_ref(), true).await
    }

    /// Opens the existing SQLite file at `path` with the settings of [`open`](Self::open),
    /// but runs no migration: for teams that apply `migrations/sqlite/` with their own tool.
    /// It checks instead that keygate's tables are there.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the file does not exist or cannot be opened, or its
    /// schema lacks keygate's tables (the error names the first one missing).
    pub async fn open_without_migrations(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_as(path.as_ref(), false).await
    }

    async fn open_as(path: &Path, migrate: bool) -> Result<Self, StoreError> {
        if migrate {
            create_private(path)?;
        } else if path.as_os_str() != ":memory:" && !path.exists() {
            return Err(StoreError::backend(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no SQLite database at {}: with migrations off, keygate does not create one",
                    path.display()
                ),
            )));
        }
        // Switching a brand-new file to WAL takes an exclusive lock that SQLite's busy
        // handler does not wait for: when several processes create the file at once, the
        // losers get SQLITE_BUSY at connect time. They retry, like the migrations below.
        let mut tries = 0;
        let pool = loop {
            match SqlitePoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .connect_with(Self::connect_options(path))
                .await
            {
                Ok(pool) => break pool,
                Err(e) if is_busy(&e) && tries < BUSY_RETRIES => {
                    tries += 1;
                    tracing::debug!(error = %e, tries, "SQLite busy while opening; retrying");
                    tokio::time::sleep(Duration::from_millis(20 << tries)).await;
                }
                Err(e) => return Err(sql_error(e)),
            }
        };
        let store = if migrate {
            Self::from_pool(pool).await?
        } else {
            Self::from_pool_without_migrations(pool).await?
        };
        restrict_journal(path);
        Ok(store)
    }

    /// The connection options [`open`](Self::open) uses for the file at `path`: create if
    /// missing, WAL, `synchronous=FULL`, a busy timeout and foreign keys on. Start from
    /// them to build your own pool for [`from_pool`](Self::from_pool).
    #[must_use]
    pub fn connect_options(path: impl AsRef<Path>) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
    }

    /// A store over an existing pool, after bringing the schema up to date. The pool's
    /// connection settings are used as they are: build it from
    /// [`connect_options`](Self::connect_options) to keep the durability and locking
    /// guarantees of the [module docs](self).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when a migration fails.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self, StoreError> {
        // SQLite has no migration lock: when several processes create the same new file at
        // once, all but one fail a migration (the table already exists) and roll it back.
        // Running the migrator again then finds the migrations applied by the winner.
        let mut tries = 0;
        while let Err(e) = migrate::run(&pool).await {
            tries += 1;
            if tries > BUSY_RETRIES {
                return Err(StoreError::backend(e));
            }
            tracing::debug!(error = %e, tries, "SQLite migration failed; retrying");
            tokio::time::sleep(Duration::from_millis(20 << tries)).await;
        }
        Ok(Self {
            pool,
            writer: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// A store over an existing pool whose schema is kept by another tool: no migration
    /// runs; keygate's tables are checked to be there.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the schema lacks keygate's tables (the error names the
    /// first one missing).
    pub async fn from_pool_without_migrations(pool: SqlitePool) -> Result<Self, StoreError> {
        migrate::check(&pool).await?;
        Ok(Self {
            pool,
            writer: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The connection pool, e.g. to keep your own tables in the same file.
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Runs `attempt` (one write transaction) under this process's write queue, retrying
    /// while SQLite reports the database busy (another process holds the write lock longer
    /// than the busy timeout).
    async fn write<T, F, Fut>(&self, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let _queue = self.writer.lock().await;
        let mut tries = 0;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(Failure::Store(e)) => return Err(e),
                Err(Failure::Sql(e)) if is_busy(&e) && tries < BUSY_RETRIES => {
                    tries += 1;
                    tracing::debug!(error = %e, tries, "SQLite token store busy; retrying");
                    tokio::time::sleep(Duration::from_millis(20 << tries)).await;
                }
                Err(Failure::Sql(e)) => return Err(sql_error(e)),
            }
        }
    }
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn insert(&self, record: TokenRecord, rules: InsertRules) -> Result<(), StoreError> {
        self.write(|| self.try_insert(&record, rules)).await
    }

    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            sql::token_columns!(),
            " FROM tokens WHERE hash = ?"
        ))
        .bind(&hash.as_bytes()[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        row.map(|r| decode_record(&r).map(Arc::new)).transpose()
    }

    async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            sql::token_columns!(),
            " FROM tokens WHERE id = ?"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        row.map(|r| decode_record(&r)).transpose()
    }

    async fn list_by_owner(&self, owner: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            sql::token_columns!(),
            " FROM tokens WHERE owner = ? ORDER BY created_at, rowid"
        ))
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?;
        rows.iter().map(decode_record).collect()
    }

    async fn revoke(&self, id: &TokenId, at: OffsetDateTime) -> Result<bool, StoreError> {
        let at = micros(at)?;
        let id = &id.to_string();
        let pool = &self.pool;
        self.write(|| async move {
            let done =
                sqlx::query("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                    .bind(at)
                    .bind(id)
                    .execute(pool)
                    .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    async fn rotate(
        &self,
        old: &TokenId,
        new: TokenRecord,
        old_expires_at: OffsetDateTime,
        rules: InsertRules,
    ) -> Result<RotateOutcome, StoreError> {
        let old_expires_at = micros(old_expires_at)?;
        self.write(|| self.try_rotate(old, &new, old_expires_at, rules))
            .await
    }

    async fn record_use(&self, uses: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        let uses = uses
            .iter()
            .map(|(id, at)| Ok((id.to_string(), micros(*at)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.write(|| self.try_record_use(&uses)).await
    }

    async fn record_usage(&self, uses: &[crate::store::TokenUse]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        let rows = usage::rows(uses)?;
        self.write(|| self.try_record_usage(&rows)).await
    }

    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let now = micros(now)?;
        let pool = &self.pool;
        self.write(|| async move {
            let done = sqlx::query("DELETE FROM tokens WHERE revoked_at <= ?1 OR expires_at <= ?1")
                .bind(now)
                .execute(pool)
                .await?;
            Ok(done.rows_affected())
        })
        .await
    }

    async fn bind(
        &self,
        id: &TokenId,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        let (id, now) = (id.to_string(), micros(now)?);
        self.write(|| self.try_bind(&id, fingerprint, now)).await
    }

    async fn release(
        &self,
        id: &TokenId,
        now: OffsetDateTime,
        min_interval: Duration,
    ) -> Result<ReleaseOutcome, StoreError> {
        let id = id.to_string();
        self.write(|| self.try_release(&id, now, min_interval))
            .await
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
        let (cutoff, now) = (micros(cutoff)?, micros(now)?);
        let kinds = serde_json::to_string(kinds).map_err(StoreError::backend)?;
        let release = serde_json::to_string(release_kinds).map_err(StoreError::backend)?;
        self.write(|| self.try_expire_inactive(cutoff, now, &kinds, &release))
            .await
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
        let id = id.to_string();
        self.write(|| self.try_update(&id, update, now)).await
    }

    async fn list_tokens(&self, query: &super::TokenQuery) -> Result<Vec<TokenRecord>, StoreError> {
        self.list_page(query).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_write_lock_is_reported_busy() {
        use sqlx::Connection;

        let dir = tempfile::tempdir().expect("test setup");
        let path = dir.path().join("busy.db");
        let store = SqliteStore::open(&path).await.expect("test setup");
        let mut holder = store
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .expect("test setup");
        sqlx::query("DELETE FROM tokens")
            .execute(&mut *holder)
            .await
            .expect("test setup");
        let mut other = sqlx::SqliteConnection::connect_with(
            &SqliteStore::connect_options(&path).busy_timeout(Duration::ZERO),
        )
        .await
        .expect("test setup");
        let e = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .expect_err("the write lock is held");
        assert!(is_busy(&e), "{e}");
        assert!(matches!(sql_error(e), StoreError::Backend(_)));
        assert!(!is_busy(&sqlx::Error::PoolTimedOut));
        assert!(matches!(
            sql_error(sqlx::Error::PoolTimedOut),
            StoreError::Timeout
        ));
        holder.rollback().await.expect("test setup");
    }
}
