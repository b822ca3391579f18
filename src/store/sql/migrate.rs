//! What the SQLite and PostgreSQL migrators share: keygate's own bookkeeping table, the
//! carry-over from the table keygate shared with its host before, and the error of a
//! database whose schema is missing when migrations are off.

use std::borrow::Cow;

use sqlx::migrate::Migrator;

/// The table keygate records its applied migrations in, apart from the host application's
/// (`_sqlx_migrations`, sqlx's default).
pub const MIGRATIONS_TABLE: &str = "_keygate_migrations";

/// sqlx's default bookkeeping table, which keygate shared with its host before it had its own.
pub(crate) const SHARED_TABLE: &str = "_sqlx_migrations";

/// `embedded` (from `sqlx::migrate!`) recording into [`MIGRATIONS_TABLE`].
pub(crate) fn migrator(embedded: &Migrator) -> Migrator {
    let mut migrator = Migrator::with_migrations(embedded.iter().cloned().collect());
    migrator.dangerous_set_table_name(Cow::Borrowed(MIGRATIONS_TABLE));
    migrator
}

/// The versions of `migrator`'s migrations and their checksums: the rows of
/// [`SHARED_TABLE`] that are keygate's (a host's migration with the same version has
/// another checksum).
pub(crate) fn versions(migrator: &Migrator) -> (Vec<i64>, Vec<Vec<u8>>) {
    migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| (m.version, m.checksum.to_vec()))
        .unzip()
}

/// Logs a carry-over that copied rows (nothing when it copied none).
pub(crate) fn carried_over(copied: u64) {
    if copied > 0 {
        tracing::info!(
            copied,
            from = SHARED_TABLE,
            to = MIGRATIONS_TABLE,
            "keygate's applied migrations carried over to its own table"
        );
    }
}

/// A database that lacks keygate's tables (or their latest columns) while the store was
/// told not to run migrations.
#[derive(Debug, thiserror::Error)]
#[error(
    "keygate's schema is missing or out of date in this database ({table}): migrations are \
     off, so apply keygate's `migrations/{dialect}/` with your migration tool first, or let \
     keygate run them"
)]
pub(crate) struct SchemaMissing {
    /// The table whose probe failed.
    pub(crate) table: &'static str,
    /// `postgres` or `sqlite`.
    pub(crate) dialect: &'static str,
    /// What the database said.
    #[source]
    pub(crate) source: sqlx::Error,
}
