//! [`SqliteStore`]: tokens (and accounts) in an embedded SQLite file (feature `sqlite`).
//!
//! One file holds everything; the schema is created and upgraded by migrations embedded in
//! the binary, run on open. The connection settings favour safety over raw write speed:
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
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use time::OffsetDateTime;

use super::{
    InactiveOutcome, InsertRules, ReleaseOutcome, RotateOutcome, StoreError, TokenId, TokenRecord,
    TokenStore,
};
use crate::identity::Permissions;
use crate::token::TokenHash;

mod audit;

/// How long a connection waits for another writer before SQLite reports the database busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a write that still found the database busy is retried.
const BUSY_RETRIES: u32 = 5;
/// Connections in the pool [`SqliteStore::open`] creates.
const MAX_CONNECTIONS: u32 = 8;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The columns of `tokens`, in the order [`decode_token`] reads them.
macro_rules! token_columns {
    () => {
        "id, hash, kind, owner, name, description, role, permissions, hint, created_by, \
         created_at, expires_at, last_used_at, revoked_at, replaced_by, allowed_ips, rate_limit, \
         bound_to, bound_at, released_at"
    };
}

/// The SQL condition "live at `?1`" on a `tokens` row.
macro_rules! live_at_1 {
    () => {
        "revoked_at IS NULL AND replaced_by IS NULL AND (expires_at IS NULL OR expires_at > ?1)"
    };
}

/// The SQL condition "valid at `?1`" (live, or replaced and in grace) on a `tokens` row.
macro_rules! valid_at_1 {
    () => {
        "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?1)"
    };
}

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

/// A row the schema allows but keygate never writes (e.g. a digest of the wrong length).
#[derive(Debug, thiserror::Error)]
#[error("invalid value in column `{0}` of the SQLite token store")]
struct Corrupt(&'static str);

/// A time outside the range the store can keep.
#[derive(Debug, thiserror::Error)]
#[error("time out of the range the SQLite token store keeps")]
struct OutOfRange;

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

fn micros(t: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000))
        .map_err(|_| StoreError::backend(OutOfRange))
}

fn opt_micros(t: Option<OffsetDateTime>) -> Result<Option<i64>, StoreError> {
    t.map(micros).transpose()
}

fn from_micros(us: i64, column: &'static str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .map_err(|_| StoreError::backend(Corrupt(column)))
}

fn opt_from_micros(
    us: Option<i64>,
    column: &'static str,
) -> Result<Option<OffsetDateTime>, StoreError> {
    us.map(|us| from_micros(us, column)).transpose()
}

fn permissions_json(p: &Permissions) -> Result<String, StoreError> {
    serde_json::to_string(p).map_err(StoreError::backend)
}

fn permissions_from_json(s: &str) -> Result<Permissions, StoreError> {
    serde_json::from_str(s).map_err(|_| StoreError::backend(Corrupt("permissions")))
}

fn get<'r, T>(row: &'r SqliteRow, column: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(StoreError::backend)
}

fn decode_id(s: &str, column: &'static str) -> Result<TokenId, StoreError> {
    s.parse().map_err(|_| StoreError::backend(Corrupt(column)))
}

fn decode_token(row: &SqliteRow) -> Result<TokenRecord, StoreError> {
    let hash: Vec<u8> = get(row, "hash")?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| StoreError::backend(Corrupt("hash")))?;
    let replaced_by: Option<String> = get(row, "replaced_by")?;
    Ok(TokenRecord {
        id: decode_id(&get::<String>(row, "id")?, "id")?,
        hash: TokenHash::from_bytes(hash),
        kind: get(row, "kind")?,
        owner: get(row, "owner")?,
        name: get(row, "name")?,
        description: get(row, "description")?,
        role: get(row, "role")?,
        permissions: permissions_from_json(&get::<String>(row, "permissions")?)?,
        hint: get(row, "hint")?,
        created_by: get(row, "created_by")?,
        created_at: from_micros(get(row, "created_at")?, "created_at")?,
        expires_at: opt_from_micros(get(row, "expires_at")?, "expires_at")?,
        last_used_at: opt_from_micros(get(row, "last_used_at")?, "last_used_at")?,
        revoked_at: opt_from_micros(get(row, "revoked_at")?, "revoked_at")?,
        replaced_by: replaced_by
            .map(|s| decode_id(&s, "replaced_by"))
            .transpose()?,
        allowed_ips: serde_json::from_str(&get::<String>(row, "allowed_ips")?)
            .map_err(|_| StoreError::backend(Corrupt("allowed_ips")))?,
        rate_limit: get::<Option<i64>>(row, "rate_limit")?
            .map(|n| u32::try_from(n).map_err(|_| StoreError::backend(Corrupt("rate_limit"))))
            .transpose()?,
        bound_to: get(row, "bound_to")?,
        bound_at: opt_from_micros(get(row, "bound_at")?, "bound_at")?,
        released_at: opt_from_micros(get(row, "released_at")?, "released_at")?,
    })
}

/// Inserts `r` on `conn` without checks. A unique violation (id or hash) is
/// [`StoreError::Duplicate`].
async fn insert_row(conn: &mut sqlx::SqliteConnection, r: &TokenRecord) -> Result<(), Failure> {
    let result = sqlx::query(concat!(
        "INSERT INTO tokens (",
        token_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(r.id.to_string())
    .bind(&r.hash.as_bytes()[..])
    .bind(&r.kind)
    .bind(&r.owner)
    .bind(&r.name)
    .bind(&r.description)
    .bind(&r.role)
    .bind(permissions_json(&r.permissions)?)
    .bind(&r.hint)
    .bind(&r.created_by)
    .bind(micros(r.created_at)?)
    .bind(opt_micros(r.expires_at)?)
    .bind(opt_micros(r.last_used_at)?)
    .bind(opt_micros(r.revoked_at)?)
    .bind(r.replaced_by.map(|id| id.to_string()))
    .bind(serde_json::to_string(&r.allowed_ips).map_err(StoreError::backend)?)
    .bind(r.rate_limit.map(i64::from))
    .bind(&r.bound_to)
    .bind(opt_micros(r.bound_at)?)
    .bind(opt_micros(r.released_at)?)
    .execute(conn)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(Failure::Store(StoreError::Duplicate)),
        Err(e) => Err(Failure::Sql(e)),
    }
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
        let path = path.as_ref();
        create_private(path)?;
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
        let store = Self::from_pool(pool).await?;
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
        while let Err(e) = MIGRATOR.run(&pool).await {
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

    async fn try_insert(&self, record: &TokenRecord, rules: InsertRules) -> Result<(), Failure> {
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
            live_at_1!(),
            ")"
        ))
        .bind(now)
        .bind(&record.owner)
        .bind(&record.name)
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
            "SELECT count(*) FROM tokens WHERE owner = ?2 AND (?3 IS NULL OR kind = ?3) AND ",
            valid_at_1!()
        ))
        .bind(now)
        .bind(&record.owner)
        .bind(rules.per_kind.then_some(&record.kind))
        .fetch_one(&mut *tx)
        .await?;
        Ok(valid >= i64::from(max))
    }

    async fn try_rotate(
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
            live_at_1!(),
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
            valid_at_1!(),
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

    async fn try_bind(
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

    async fn try_release(
        &self,
        id: &str,
        now: i64,
        min_interval: i64,
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
        let released: Option<i64> = get(&row, "released_at")?;
        let next = released.map(|r| r.saturating_add(min_interval));
        let outcome = match (bound, next) {
            (None, _) => ReleaseOutcome::NotBound,
            (Some(_), Some(next)) if next > now => ReleaseOutcome::TooSoon {
                next_allowed_at: from_micros(next, "released_at")?,
            },
            (Some(_), _) => {
                sqlx::query(
                    "UPDATE tokens SET bound_to = NULL, bound_at = NULL, released_at = ?2 \
                     WHERE id = ?1",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                ReleaseOutcome::Released
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn try_expire_inactive(
        &self,
        cutoff: i64,
        now: i64,
        release_kinds: &str,
    ) -> Result<InactiveOutcome, Failure> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // Valid at ?2 and silent since before ?1 (the latest of creation, use and binding).
        macro_rules! idle {
            () => {
                "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2) AND \
                 max(created_at, coalesce(last_used_at, created_at), \
                 coalesce(bound_at, created_at)) < ?1"
            };
        }
        let released: Vec<String> = sqlx::query_scalar(concat!(
            "UPDATE tokens SET bound_to = NULL, bound_at = NULL WHERE bound_to IS NOT NULL AND \
             kind IN (SELECT value FROM json_each(?3)) AND ",
            idle!(),
            " RETURNING id"
        ))
        .bind(cutoff)
        .bind(now)
        .bind(release_kinds)
        .fetch_all(&mut *tx)
        .await?;
        let revoked: Vec<String> = sqlx::query_scalar(concat!(
            "UPDATE tokens SET revoked_at = ?2 WHERE \
             kind NOT IN (SELECT value FROM json_each(?3)) AND ",
            idle!(),
            " RETURNING id"
        ))
        .bind(cutoff)
        .bind(now)
        .bind(release_kinds)
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

    async fn try_record_use(&self, uses: &[(String, i64)]) -> Result<(), Failure> {
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

#[async_trait]
impl TokenStore for SqliteStore {
    async fn insert(&self, record: TokenRecord, rules: InsertRules) -> Result<(), StoreError> {
        self.write(|| self.try_insert(&record, rules)).await
    }

    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE hash = ?"
        ))
        .bind(&hash.as_bytes()[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        row.map(|r| decode_token(&r).map(Arc::new)).transpose()
    }

    async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE id = ?"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        row.map(|r| decode_token(&r)).transpose()
    }

    async fn list_by_owner(&self, owner: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE owner = ? ORDER BY created_at, rowid"
        ))
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?;
        rows.iter().map(decode_token).collect()
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
        let (id, now) = (id.to_string(), micros(now)?);
        let min_interval = i64::try_from(min_interval.as_micros()).unwrap_or(i64::MAX);
        self.write(|| self.try_release(&id, now, min_interval))
            .await
    }

    async fn expire_inactive(
        &self,
        cutoff: OffsetDateTime,
        now: OffsetDateTime,
        release_kinds: &[String],
    ) -> Result<InactiveOutcome, StoreError> {
        let (cutoff, now) = (micros(cutoff)?, micros(now)?);
        let kinds = serde_json::to_string(release_kinds).map_err(StoreError::backend)?;
        self.write(|| self.try_expire_inactive(cutoff, now, &kinds))
            .await
    }
}

#[cfg(feature = "management")]
mod accounts {
    use async_trait::async_trait;

    use super::{
        SqliteStore, from_micros, get, micros, permissions_from_json, permissions_json, sql_error,
    };
    use crate::accounts::{Account, AccountStore};
    use crate::store::StoreError;

    /// Accounts live in the `accounts` table of the same file; emails are kept lower-cased.
    #[async_trait]
    impl AccountStore for SqliteStore {
        async fn put_account(&self, account: Account) -> Result<(), StoreError> {
            let email = &account.email.to_lowercase();
            let password_hash = &account.password_hash;
            let permissions = &permissions_json(&account.permissions)?;
            let created_at = micros(account.created_at)?;
            let pool = &self.pool;
            self.write(|| async move {
                sqlx::query(
                    "INSERT INTO accounts (email, password_hash, permissions, created_at) \
                     VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (email) DO UPDATE SET password_hash = ?2, permissions = ?3, \
                     created_at = ?4",
                )
                .bind(email)
                .bind(password_hash)
                .bind(permissions)
                .bind(created_at)
                .execute(pool)
                .await?;
                Ok(())
            })
            .await
        }

        async fn find_account(&self, email: &str) -> Result<Option<Account>, StoreError> {
            let row = sqlx::query(
                "SELECT email, password_hash, permissions, created_at FROM accounts \
                 WHERE email = ?",
            )
            .bind(email.to_lowercase())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
            row.map(|row| {
                Ok(Account {
                    email: get(&row, "email")?,
                    password_hash: get(&row, "password_hash")?,
                    permissions: permissions_from_json(&get::<String>(&row, "permissions")?)?,
                    created_at: from_micros(get(&row, "created_at")?, "created_at")?,
                })
            })
            .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_at_microsecond_precision() {
        for t in [
            OffsetDateTime::UNIX_EPOCH,
            OffsetDateTime::UNIX_EPOCH - Duration::from_micros(1),
            time::macros::datetime!(1969-07-20 20:17:40.123456 UTC),
            time::macros::datetime!(2999-12-31 23:59:59.999999 UTC),
        ] {
            assert_eq!(
                from_micros(micros(t).expect("in range"), "t").expect("valid"),
                t
            );
        }
    }

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
