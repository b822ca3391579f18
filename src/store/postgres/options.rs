//! [`PostgresOptions`]: how to connect a [`PostgresStore`].

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::PostgresStore;
use crate::error::StoreError;

/// How to connect a [`PostgresStore`]: URL, optional schema, pool size and timeouts. Its
/// `Debug` shows the URL with its password replaced ([`redact_url`](crate::store::redact_url)).
#[derive(Clone)]
#[must_use]
pub struct PostgresOptions {
    url: String,
    schema: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
    migrate: bool,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &crate::store::redact_url(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("migrate", &self.migrate)
            .finish()
    }
}

/// `url` without the secret query parameters sqlx does not know (`sslpassword`): sqlx
/// ignores them but logs their value, in clear, at `WARN`. `password` stays: sqlx uses it.
fn without_unused_secrets(url: &str) -> std::borrow::Cow<'_, str> {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.into();
    };
    let unused = |k: &str| k != "password" && crate::store::redact::is_secret(k);
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
            migrate: true,
        }
    }

    /// Leaves the schema to you: keygate runs no migration (and creates no schema), for
    /// teams that apply `migrations/postgres/` with their own tool. The store checks
    /// instead, once, before its first query (on [`connect`](Self::connect)), that
    /// keygate's tables are there, and fails with an error naming the missing table if not.
    pub fn without_migrations(mut self) -> Self {
        self.migrate = false;
        self
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
        check_tls_files(&url)?;
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

    /// Connects and runs the migrations (or, [`without_migrations`](Self::without_migrations),
    /// checks that keygate's tables are there).
    ///
    /// # Errors
    ///
    /// An invalid URL or schema name, an unreachable database, a failed migration, or
    /// (without migrations) a schema that lacks keygate's tables.
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
        Ok(PostgresStore::new(pool, self.schema, self.migrate))
    }
}

/// The files the URL's `sslrootcert`, `sslcert` and `sslkey` name can be read: sqlx would
/// only report "No such file or directory" at the first connection, naming neither the
/// parameter nor the file.
fn check_tls_files(url: &str) -> Result<(), StoreError> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(());
    };
    for (key, path) in parsed.query_pairs() {
        if matches!(&*key, "sslrootcert" | "sslcert" | "sslkey")
            && let Err(e) = std::fs::File::open(&*path)
        {
            return Err(StoreError::backend(std::io::Error::new(
                e.kind(),
                format!("{key}: cannot read {path:?}: {e}"),
            )));
        }
    }
    Ok(())
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
