//! Opening the database `KEYGATE_DB` names, for the server and the command-line tool alike.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::StoreError;
#[cfg(feature = "postgres")]
use crate::store::postgres::{PostgresOptions, PostgresStore};
use crate::store::sqlite::SqliteStore;

/// The database `KEYGATE_DB` (or the command line's `--db`) names.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file, created `0600` when missing (it holds password hashes).
    Sqlite(PathBuf),
    /// A `postgres://` (or `postgresql://`) URL; it may hold a password, never printed.
    Postgres(String),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The SQLite path is empty.
    #[error("the database path is empty")]
    EmptyPath,
    /// Neither a SQLite file nor a PostgreSQL URL: a URL of another scheme (a misspelled
    /// `postgres://`, a JDBC URL), `postgres:` without `//`, or a libpq keyword/value
    /// string. The value is not quoted: it may hold a password.
    #[error(
        "KEYGATE_DB is {0}; name a SQLite file, or a PostgreSQL database as a \
         postgres:// URL (the value is not shown: it may hold a password)"
    )]
    NotADatabase(&'static str),
    /// A PostgreSQL URL, in a build without the `postgres` feature.
    #[error(
        "KEYGATE_DB is a PostgreSQL URL, but this keygate was built without the `postgres` \
         feature; rebuild with the `postgres` feature, or point KEYGATE_DB at a SQLite file"
    )]
    PostgresNotBuilt,
    /// The SQLite file could not be opened or migrated.
    #[error("cannot open the database {path:?}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: StoreError,
    },
    /// The PostgreSQL database could not be reached or migrated (the message never holds
    /// the URL's password).
    #[error("cannot open the PostgreSQL database")]
    Postgres(#[source] StoreError),
}

impl OpenError {
    /// Whether the database named is wrong (an empty path, an unsupported URL) rather than
    /// unreachable or broken.
    #[must_use]
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::EmptyPath | Self::NotADatabase(_) | Self::PostgresNotBuilt
        )
    }
}

/// How to open a database (SQLite takes only `migrate`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OpenOptions {
    /// The schema for keygate's tables (default `public`).
    pub schema: Option<String>,
    /// The most connections in the pool (default: the store's).
    pub max_connections: Option<u32>,
    /// The longest wait for a connection (default: the store's).
    pub acquire_timeout: Option<Duration>,
    /// Run keygate's migrations (default); `false`: only check that its tables are there
    /// (the schema is applied by another tool), and never create the SQLite file.
    pub migrate: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            schema: None,
            max_connections: None,
            acquire_timeout: None,
            migrate: true,
        }
    }
}

impl OpenOptions {
    /// The store's defaults.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps keygate's tables in `schema`; `None`: `public`.
    #[must_use]
    pub fn with_schema(mut self, schema: Option<String>) -> Self {
        self.schema = schema;
        self
    }

    /// Runs keygate's migrations (`true`, the default), or only checks that its tables
    /// are there (`false`).
    #[must_use]
    pub fn with_migrations(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// A pool of at most `n` connections, each waited for at most `wait`: for a short-lived
    /// program beside a running server.
    #[must_use]
    pub fn with_small_pool(mut self, n: u32, wait: Duration) -> Self {
        self.max_connections = Some(n);
        self.acquire_timeout = Some(wait);
        self
    }
}

/// An opened store, ready for tokens, accounts and audit events.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum OpenedStore {
    /// A SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database.
    #[cfg(feature = "postgres")]
    Postgres(PostgresStore),
}

fn is_postgres_url(db: &str) -> bool {
    let lower = db.to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// Why `db` (trimmed, not PostgreSQL) is not a SQLite path either: a value meant as a
/// connection to a server must never become a new local file, nor be printed as a path.
fn not_a_file(db: &str) -> Option<&'static str> {
    let lower = db.to_ascii_lowercase();
    if lower.contains("://") && !lower.starts_with("sqlite://") {
        return Some("a URL that is neither postgres:// nor sqlite://");
    }
    if lower.starts_with("postgres:") || lower.starts_with("postgresql:") {
        return Some("a PostgreSQL URL without the // after its scheme");
    }
    // libpq's keyword/value form: `host=db user=keygate password=...`.
    const KEYWORDS: [&str; 7] = [
        "host=",
        "hostaddr=",
        "port=",
        "dbname=",
        "user=",
        "password=",
        "sslmode=",
    ];
    if lower
        .split_whitespace()
        .any(|word| KEYWORDS.iter().any(|k| word.starts_with(k)))
    {
        return Some("a keyword/value connection string (host=... password=...)");
    }
    None
}

impl Database {
    /// A `postgres://` or `postgresql://` URL (in any case) is PostgreSQL; anything else is
    /// a SQLite file path, with an optional `sqlite://` or `sqlite:` prefix. Surrounding
    /// whitespace is ignored: a URL pasted with a stray space is still a URL, whose password
    /// is never shown, not a file path printed in full. A value meant as a connection to a
    /// server (another URL scheme, `postgres:` without `//`, libpq's `host=... password=...`)
    /// is refused rather than created as a local file.
    ///
    /// # Errors
    ///
    /// [`OpenError::EmptyPath`], [`OpenError::NotADatabase`].
    pub fn parse(db: &str) -> Result<Self, OpenError> {
        let db = db.trim();
        if is_postgres_url(db) {
            return Ok(Self::Postgres(db.to_owned()));
        }
        let path = db
            .strip_prefix("sqlite://")
            .or_else(|| db.strip_prefix("sqlite:"))
            .unwrap_or(db);
        if path.is_empty() {
            return Err(OpenError::EmptyPath);
        }
        if let Some(what) = not_a_file(db) {
            return Err(OpenError::NotADatabase(what));
        }
        Ok(Self::Sqlite(path.into()))
    }

    /// As [`parse`](Self::parse), from a path (a path that is not UTF-8 is a SQLite file).
    ///
    /// # Errors
    ///
    /// [`OpenError::EmptyPath`], [`OpenError::NotADatabase`].
    pub fn from_path(db: &Path) -> Result<Self, OpenError> {
        match db.to_str() {
            Some(s) => Self::parse(s),
            None => Ok(Self::Sqlite(db.to_owned())),
        }
    }

    /// The database for people to read: a file path, or a PostgreSQL URL with its
    /// password (user information or `password=`-like query parameters) replaced by `***`.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(path) => path.display().to_string(),
            #[cfg(feature = "postgres")]
            Self::Postgres(url) => crate::store::redact_url(url),
            // Nothing of a URL this build cannot read is shown but its scheme.
            #[cfg(not(feature = "postgres"))]
            Self::Postgres(url) => {
                let scheme = url.split_once("://").map_or("postgres", |(s, _)| s);
                format!("{scheme}://***")
            }
        }
    }

    /// Opens the store, creating the SQLite file (`0600`) or the PostgreSQL schema and
    /// tables when missing (unless [`OpenOptions::migrate`] is off: then the tables must be
    /// there).
    ///
    /// # Errors
    ///
    /// [`OpenError`]: the database cannot be opened or migrated, or it is PostgreSQL in a
    /// build without the `postgres` feature.
    pub async fn open(&self, options: &OpenOptions) -> Result<OpenedStore, OpenError> {
        match self {
            Self::Sqlite(path) => if options.migrate {
                SqliteStore::open(path).await
            } else {
                SqliteStore::open_without_migrations(path).await
            }
            .map(OpenedStore::Sqlite)
            .map_err(|source| OpenError::Sqlite {
                path: path.clone(),
                source,
            }),
            #[cfg(feature = "postgres")]
            Self::Postgres(url) => {
                let mut pg = PostgresOptions::new(url.as_str());
                if let Some(schema) = &options.schema {
                    pg = pg.with_schema(schema.clone());
                }
                if let Some(n) = options.max_connections {
                    pg = pg.with_max_connections(n);
                }
                if let Some(wait) = options.acquire_timeout {
                    pg = pg.with_acquire_timeout(wait);
                }
                if !options.migrate {
                    pg = pg.without_migrations();
                }
                pg.connect()
                    .await
                    .map(OpenedStore::Postgres)
                    .map_err(OpenError::Postgres)
            }
            #[cfg(not(feature = "postgres"))]
            Self::Postgres(_) => {
                let _ = options;
                Err(OpenError::PostgresNotBuilt)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        assert_eq!(
            Database::parse("PostgreSQL://u@h/db").unwrap(),
            Database::Postgres("PostgreSQL://u@h/db".into())
        );
        assert_eq!(
            Database::parse("sqlite://x.db").unwrap(),
            Database::Sqlite("x.db".into())
        );
        assert_eq!(
            Database::parse("keygate.db").unwrap(),
            Database::Sqlite("keygate.db".into())
        );
        assert!(matches!(
            Database::parse("sqlite:"),
            Err(OpenError::EmptyPath)
        ));
        assert!(
            !Database::parse("postgres://u:pw@h/db")
                .unwrap()
                .describe()
                .contains("pw")
        );
    }
}
