//! The PostgreSQL migrations: keygate's own bookkeeping table in keygate's schema, the
//! carry-over from `_sqlx_migrations`, and the schema check when migrations are off.

use std::sync::LazyLock;

use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::postgres::PgPool;

use crate::store::StoreError;
use crate::store::sql::migrate::{
    MIGRATIONS_TABLE, SHARED_TABLE, SchemaMissing, carried_over, migrator, versions,
};
use crate::store::sql::token_columns;

use super::pg_err;

static EMBEDDED: Migrator = sqlx::migrate!("./migrations/postgres");

/// keygate's migrations, recorded in [`MIGRATIONS_TABLE`].
pub(super) static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| migrator(&EMBEDDED));

/// The advisory lock (`pg_advisory_xact_lock`) under which the carry-over runs, so that
/// instances starting together copy the rows once. ("keygate" in ASCII.)
const CARRY_OVER_LOCK: i64 = 0x006b_6579_6761_7465;

/// One query per table keygate reads or writes; each fails when its table (or, for the
/// tokens, one of the columns the latest migration added) is missing.
const PROBES: &[(&str, &str)] = &[
    (
        "keygate_tokens",
        concat!(
            "SELECT ",
            token_columns!(),
            " FROM keygate_tokens WHERE false"
        ),
    ),
    (
        "keygate_owners",
        "SELECT owner FROM keygate_owners WHERE false",
    ),
    (
        "keygate_accounts",
        "SELECT * FROM keygate_accounts WHERE false",
    ),
    (
        "keygate_audit_events",
        "SELECT * FROM keygate_audit_events WHERE false",
    ),
];

/// When [`MIGRATIONS_TABLE`] does not exist yet but `_sqlx_migrations` does (a database
/// migrated by a keygate that shared sqlx's table with its host), creates keygate's table
/// and copies into it the rows of `_sqlx_migrations` that are keygate's: same version and
/// same checksum. The host's rows, and keygate's old ones, stay where they are (an older
/// keygate still running during a rolling upgrade reads them). Both tables are looked up on
/// the connection's `search_path`, i.e. in keygate's schema. Returns the rows copied.
pub(super) async fn carry_over(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CARRY_OVER_LOCK)
        .execute(&mut *tx)
        .await?;
    let exists = |table: &'static str| {
        sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL").bind(table)
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
    let (versions, checksums) = versions(&MIGRATOR);
    // Names from constants, not input.
    let copy = format!(
        "INSERT INTO {MIGRATIONS_TABLE} \
         (version, description, installed_on, success, checksum, execution_time) \
         SELECT s.version, s.description, s.installed_on, s.success, s.checksum, s.execution_time \
         FROM {SHARED_TABLE} s \
         JOIN UNNEST($1::bigint[], $2::bytea[]) AS k(version, checksum) \
         ON s.version = k.version AND s.checksum = k.checksum"
    );
    let copied = sqlx::query(sqlx::AssertSqlSafe(copy))
        .bind(versions)
        .bind(checksums)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    carried_over(copied);
    Ok(copied)
}

/// Carries the bookkeeping over if needed, then applies keygate's pending migrations.
pub(super) async fn run(pool: &PgPool) -> Result<(), StoreError> {
    carry_over(pool).await.map_err(pg_err)?;
    MIGRATOR.run(pool).await.map_err(|e| match e {
        MigrateError::Execute(inner) => pg_err(inner),
        other => StoreError::backend(other),
    })
}

/// Checks, without changing anything, that keygate's tables are there: for a store whose
/// migrations are applied by another tool.
pub(super) async fn check(pool: &PgPool) -> Result<(), StoreError> {
    for (table, probe) in PROBES {
        match sqlx::query(*probe).execute(pool).await {
            Ok(_) => {}
            // The database answered that the table or a column is not there.
            Err(source @ sqlx::Error::Database(_)) => {
                return Err(StoreError::backend(SchemaMissing {
                    table,
                    dialect: "postgres",
                    source,
                }));
            }
            // An unreachable database is not a missing schema.
            Err(e) => return Err(pg_err(e)),
        }
    }
    Ok(())
}
