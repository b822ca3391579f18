//! keygate's migrations beside a host application's own sqlx migrations, in the same
//! database and schema (PostgreSQL) or file (SQLite): either may run first, each keeps its
//! own bookkeeping table, a database migrated by a keygate that shared `_sqlx_migrations`
//! is carried over without re-running anything, and migrations can be left to another tool.
//! PostgreSQL tests work in their own schema; without the database they skip, or fail when
//! `CI` is set.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use keygate::store::postgres::{MIGRATIONS_TABLE, PostgresOptions};
use keygate::store::sqlite::SqliteStore;
use keygate::{NewToken, StoreError, TokenStore, Tokens};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};

/// The host's migrations: its version 1 has the same number as keygate's first one (with
/// other SQL, so another checksum), the other one a timestamp, as sqlx-cli names them.
fn host_migrator() -> Migrator {
    let migration = |version, sql: &'static str| {
        Migration::new(
            version,
            format!("host {version}").into(),
            MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(sql),
            false,
        )
    };
    Migrator::with_migrations(vec![
        migration(
            1,
            "CREATE TABLE host_widgets (id BIGINT PRIMARY KEY, name TEXT)",
        ),
        migration(
            20240101000000,
            "CREATE TABLE host_orders (id BIGINT PRIMARY KEY, widget BIGINT)",
        ),
    ])
}

/// The host's migrations as they had to be while keygate shared `_sqlx_migrations`: without
/// the one whose version keygate's took, and ignoring keygate's versions.
fn old_host_migrator() -> Migrator {
    let mut host = Migrator::with_migrations(
        host_migrator()
            .iter()
            .filter(|m| m.version != 1)
            .cloned()
            .collect(),
    );
    host.set_ignore_missing(true);
    host
}

/// keygate's migration files as the sqlx-cli of a team (or a keygate from before its own
/// table) applies them: into `_sqlx_migrations`.
async fn files_migrator(dialect: &str) -> Migrator {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect);
    Migrator::new(dir).await.unwrap()
}

const HOST_VERSIONS: [i64; 2] = [1, 20240101000000];
const KEYGATE_PG_VERSIONS: [i64; 5] = [1, 2, 3, 4, 5];
const KEYGATE_SQLITE_VERSIONS: [i64; 6] = [1, 2, 3, 4, 5, 6];

/// A token issued and accepted through `store`: keygate's tables work.
async fn works(store: impl TokenStore) {
    let tokens = Tokens::new(store);
    let issued = tokens.issue(NewToken::new("alice", "ci")).await.unwrap();
    let who = tokens
        .authenticate(issued.token.expose_secret())
        .await
        .unwrap();
    assert_eq!(who.owner(), "alice");
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

// ---- PostgreSQL ----------------------------------------------------------------------

/// A fresh schema, a host pool whose `search_path` is that schema, and keygate's options
/// for the same schema; `None` when PostgreSQL is unreachable (and `CI` unset).
async fn pg(test: &str) -> Option<(String, PgPool, PostgresOptions)> {
    let schema = format!("kg_mig_{test}_{}", uuid::Uuid::new_v4().simple());
    let schema = schema[..schema.len().min(63)].to_owned();
    let url = common::postgres_url();
    let connect = async {
        let options = PgConnectOptions::from_str(&url)?.options([("search_path", &schema)]);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
            .execute(&pool)
            .await?;
        Ok::<_, sqlx::Error>(pool)
    };
    let pool = common::available("PostgreSQL", &url, test, connect.await)?;
    let keygate = PostgresOptions::new(url)
        .with_schema(schema.clone())
        .with_acquire_timeout(Duration::from_secs(3));
    Some((schema, pool, keygate))
}

async fn pg_versions(pool: &PgPool, table: &str) -> Vec<i64> {
    let sql = format!("SELECT version FROM {table} ORDER BY version");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn pg_drop(pool: &PgPool, schema: &str) {
    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await
        .unwrap();
}

/// Both bookkeeping tables hold their own rows, in the test's schema.
async fn pg_apart(pool: &PgPool) {
    assert_eq!(pg_versions(pool, "_sqlx_migrations").await, HOST_VERSIONS);
    assert_eq!(
        pg_versions(pool, MIGRATIONS_TABLE).await,
        KEYGATE_PG_VERSIONS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_host_migrations_first_then_keygate_then_host_again() {
    let Some((schema, pool, keygate)) = pg("host_first").await else {
        return;
    };
    host_migrator().run(&pool).await.unwrap();
    let store = keygate.clone().connect().await.unwrap();
    works(store).await;
    host_migrator()
        .run(&pool)
        .await
        .expect("the host's migrator does not see keygate's versions");
    keygate.connect().await.expect("keygate again");
    pg_apart(&pool).await;
    pg_drop(&pool, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keygate_migrations_first_then_host_then_keygate_again() {
    let Some((schema, pool, keygate)) = pg("keygate_first").await else {
        return;
    };
    keygate.clone().connect().await.unwrap();
    host_migrator()
        .run(&pool)
        .await
        .expect("the host's migrator does not see keygate's versions");
    let store = keygate.connect().await.expect("keygate again");
    works(store).await;
    sqlx::query("INSERT INTO host_widgets (id, name) VALUES (1, 'w')")
        .execute(&pool)
        .await
        .expect("the host's table is there");
    pg_apart(&pool).await;
    pg_drop(&pool, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_upgrade_carries_keygate_rows_over_from_the_shared_table_without_rerunning() {
    let Some((schema, pool, keygate)) = pg("upgrade").await else {
        return;
    };
    // Before: keygate's first two migrations and the host's, all in `_sqlx_migrations`
    // (each migrator told to ignore the other's versions), and a token owner in the table.
    let mut old_keygate = files_migrator("postgres").await;
    old_keygate.set_ignore_missing(true);
    old_keygate.run_to(2, &pool).await.unwrap();
    old_host_migrator().run(&pool).await.unwrap();
    sqlx::query("INSERT INTO keygate_owners (owner) VALUES ('carol')")
        .execute(&pool)
        .await
        .unwrap();
    let shared_before = pg_versions(&pool, "_sqlx_migrations").await;
    assert_eq!(shared_before, [1, 2, 20240101000000]);

    // The upgrade: 1 and 2 copied (not re-run: their CREATE TABLE would fail), 3 applied.
    let store = keygate.clone().connect().await.unwrap();
    assert_eq!(
        pg_versions(&pool, MIGRATIONS_TABLE).await,
        KEYGATE_PG_VERSIONS
    );
    let copied_at_same_time: bool = sqlx::query_scalar(
        "SELECT bool_and(k.installed_on = s.installed_on AND k.checksum = s.checksum) \
         FROM _keygate_migrations k JOIN _sqlx_migrations s USING (version)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(copied_at_same_time, "the rows are copies, not new runs");
    assert_eq!(
        pg_versions(&pool, "_sqlx_migrations").await,
        shared_before,
        "the shared table is left as it was"
    );
    let owner: String = sqlx::query_scalar("SELECT owner FROM keygate_owners")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(owner, "carol", "data kept");
    works(store).await;
    // And again, beside the host's migrator: nothing to carry over any more.
    old_host_migrator().run(&pool).await.unwrap();
    keygate.connect().await.unwrap();
    pg_drop(&pool, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_without_migrations_checks_the_schema_and_changes_nothing() {
    let Some((schema, pool, keygate)) = pg("without").await else {
        return;
    };
    let e = keygate
        .clone()
        .without_migrations()
        .connect()
        .await
        .expect_err("no tables yet");
    assert!(matches!(e, StoreError::Backend(_)), "{e:?}");
    let text = chain(&e);
    assert!(
        text.contains("keygate_tokens") && text.contains("migrations are off"),
        "{text}"
    );
    let lazy = keygate.clone().without_migrations().connect_lazy().unwrap();
    let e = lazy.list_by_owner("alice").await.expect_err("no tables");
    assert!(chain(&e).contains("keygate_tokens"), "{}", chain(&e));

    // The team's own tool applies the files (here sqlx-cli's way, into `_sqlx_migrations`).
    files_migrator("postgres").await.run(&pool).await.unwrap();
    let store = keygate.without_migrations().connect().await.unwrap();
    works(store.clone()).await;
    store.migrate().await.expect("the check passes again");
    let ours: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('_keygate_migrations')::text")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(ours, None, "keygate created no bookkeeping of its own");
    pg_drop(&pool, &schema).await;
}

// ---- SQLite --------------------------------------------------------------------------

async fn sqlite_pool(path: &Path) -> SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(SqliteStore::connect_options(path))
        .await
        .unwrap()
}

async fn sqlite_versions(pool: &SqlitePool, table: &str) -> Vec<i64> {
    let sql = format!("SELECT version FROM {table} ORDER BY version");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn sqlite_apart(pool: &SqlitePool) {
    assert_eq!(
        sqlite_versions(pool, "_sqlx_migrations").await,
        HOST_VERSIONS
    );
    assert_eq!(
        sqlite_versions(pool, MIGRATIONS_TABLE).await,
        KEYGATE_SQLITE_VERSIONS
    );
}

#[tokio::test]
async fn sqlite_host_first_or_keygate_first_both_work() {
    for keygate_first in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.db");
        let pool = sqlite_pool(&path).await;
        if keygate_first {
            SqliteStore::open(&path).await.unwrap();
        }
        host_migrator().run(&pool).await.unwrap();
        let store = SqliteStore::open(&path).await.unwrap();
        works(store.clone()).await;
        host_migrator()
            .run(&pool)
            .await
            .expect("the host's migrator does not see keygate's versions");
        SqliteStore::from_pool(pool.clone())
            .await
            .expect("keygate again");
        sqlite_apart(&pool).await;
    }
}

#[tokio::test]
async fn sqlite_upgrade_carries_keygate_rows_over_from_the_shared_table_without_rerunning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let pool = sqlite_pool(&path).await;
    let mut old_keygate = files_migrator("sqlite").await;
    old_keygate.set_ignore_missing(true);
    old_keygate.run_to(3, &pool).await.unwrap();
    old_host_migrator().run(&pool).await.unwrap();
    let shared_before = sqlite_versions(&pool, "_sqlx_migrations").await;
    assert_eq!(shared_before, [1, 2, 3, 20240101000000]);

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        sqlite_versions(&pool, MIGRATIONS_TABLE).await,
        KEYGATE_SQLITE_VERSIONS,
        "1 to 3 carried over, 4 applied"
    );
    let copies: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM _keygate_migrations k JOIN _sqlx_migrations s \
         ON k.version = s.version AND k.installed_on = s.installed_on AND k.checksum = s.checksum",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(copies, 3, "the rows are copies, not new runs");
    assert_eq!(
        sqlite_versions(&pool, "_sqlx_migrations").await,
        shared_before
    );
    works(store).await;
}

#[tokio::test]
async fn sqlite_without_migrations_needs_the_file_and_its_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("managed.db");
    let e = SqliteStore::open_without_migrations(&path)
        .await
        .expect_err("no file");
    assert!(chain(&e).contains("no SQLite database at"), "{}", chain(&e));
    assert!(!path.exists(), "no file created");

    let pool = sqlite_pool(&path).await;
    let e = SqliteStore::from_pool_without_migrations(pool.clone())
        .await
        .expect_err("no tables");
    let text = chain(&e);
    assert!(
        text.contains("(tokens)") && text.contains("migrations are off"),
        "{text}"
    );

    // Applied by the team's tool, one migration short: the latest columns are missing.
    files_migrator("sqlite")
        .await
        .run_to(2, &pool)
        .await
        .unwrap();
    let e = SqliteStore::open_without_migrations(&path)
        .await
        .expect_err("out of date");
    assert!(chain(&e).contains("(tokens)"), "{}", chain(&e));

    files_migrator("sqlite").await.run(&pool).await.unwrap();
    let store = SqliteStore::open_without_migrations(&path).await.unwrap();
    works(store).await;
    let ours: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name = '_keygate_migrations'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(ours, 0, "keygate created no bookkeeping of its own");
}

#[tokio::test]
async fn the_server_with_migrations_off_refuses_a_database_without_keygate_tables() {
    use keygate::server::{Database, OpenError, OpenOptions};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let off = OpenOptions::new().with_migrations(false);
    let db = Database::from_path(&path).unwrap();
    let e = db.open(&off).await.expect_err("no file");
    assert!(matches!(e, OpenError::Sqlite { .. }), "{e:?}");
    assert!(!path.exists());
    db.open(&OpenOptions::new()).await.expect("migrations on");
    db.open(&off).await.expect("the tables are there now");
}
