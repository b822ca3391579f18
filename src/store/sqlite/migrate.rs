//! The SQLite migrations: keygate's own bookkeeping table, the carry-over from
//! `_sqlx_migrations`, and the schema check when migrations are off.

use std::sync::LazyLock;

use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::sqlite::SqlitePool;

use crate::store::StoreError;
use crate::store::sql::migrate::{
    MIGRATIONS_TABLE, SHARED_TABLE, SchemaMissing, carried_over, migrator, versions,
};
use crate::store::sql::token_columns;

static EMBEDDED: Migrator = sqlx::migrate!("./migrations/sqlite");

/// keygate's migrations, recorded in [`MIGRATIONS_TABLE`].
pub(super) static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| migrator(&EMBEDDED));

/// One query per table keygate reads or writes; each fails when its table (or, for the
/// tokens, one of the columns the latest migration added) is missing.
const PROBES: &[(&str, &str)] = &[
    (
        "tokens",
        concat!("SELECT ", token_columns!(), " FROM tokens WHERE 0"),
    ),
    ("accounts", "SELECT * FROM accounts WHERE 0"),
    ("audit_events", "SELECT * FROM audit_events WHERE 0"),
];

/// When [`MIGRATIONS_TABLE`] does not exist yet but `_sqlx_migrations` does (a file
/// migrated by a keygate that shared sqlx's table with its host), creates keygate's table
/// and copies into it the rows of `_sqlx_migrations` that are keygate's: same version and
/// same checksum. The host's rows, and keygate's old ones, stay where they are. One
/// `BEGIN IMMEDIATE` transaction: processes opening the file together copy the rows once.
/// Returns the rows copied.
pub(super) async fn carry_over(pool: &SqlitePool) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let exists = |table: &'static str| {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?)",
        )
        .bind(table)
    };
    if exists(MIGRATIONS_TABLE).fetch_one(&mut *tx).await?
        || !exists(SHARED_TABLE).fetch_one(&mut *tx).await?
    {
        return Ok(0);
    }
    tx.ensure_migrations_table(MIGRATIONS_TABLE)
        .await
        .map_err(|e| match e {
            MigrateError::Execute(inner) => inner,
            other => sqlx::Error::Migrate(Box::new(other)),
        })?;
    // Names from constants, not input.
    let copy = format!(
        "INSERT INTO {MIGRATIONS_TABLE} \
         (version, description, installed_on, success, checksum, execution_time) \
         SELECT version, description, installed_on, success, checksum, execution_time \
         FROM {SHARED_TABLE} WHERE version = ? AND checksum = ?"
    );
    let mut copied = 0;
    let (versions, checksums) = versions(&MIGRATOR);
    for (version, checksum) in versions.into_iter().zip(checksums) {
        copied += sqlx::query(sqlx::AssertSqlSafe(copy.as_str()))
            .bind(version)
            .bind(checksum)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    tx.commit().await?;
    carried_over(copied);
    Ok(copied)
}

/// Carries the bookkeeping over if needed, then applies keygate's pending migrations.
pub(super) async fn run(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    carry_over(pool).await?;
    MIGRATOR.run(pool).await.map_err(|e| match e {
        MigrateError::Execute(inner) => inner,
        other => sqlx::Error::Migrate(Box::new(other)),
    })
}

/// Checks, without changing anything, that keygate's tables are in the file: for a store
/// whose migrations are applied by another tool.
pub(super) async fn check(pool: &SqlitePool) -> Result<(), StoreError> {
    for (table, probe) in PROBES {
        match sqlx::query(*probe).execute(pool).await {
            Ok(_) => {}
            // SQLite answered that the table or a column is not there.
            Err(source @ sqlx::Error::Database(_)) => {
                return Err(StoreError::backend(SchemaMissing {
                    table,
                    dialect: "sqlite",
                    source,
                }));
            }
            Err(e) => return Err(super::sql_error(e)),
        }
    }
    Ok(())
}
