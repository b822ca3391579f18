//! What the SQLite and PostgreSQL stores share besides the record codec
//! ([`codec`](super::codec), with the column list): the rules written in SQL (liveness, the
//! limit count, inactivity) and the insert statement. Each store keeps only what its dialect does
//! differently: types, placeholders, locking, notifications.
//!
//! The rules are macros that expand to SQL literals for `concat!`, with the placeholders of
//! the caller's dialect (`"?1"`, `"$2"`) as arguments, so every statement stays a
//! `&'static str`.

pub(crate) mod migrate;

pub(crate) use super::codec::token_columns;

/// The SQL condition "valid at `$now`" on a token row: not revoked, not expired
/// ([`TokenRecord::is_valid_at`](crate::TokenRecord::is_valid_at)).
macro_rules! valid_at {
    ($now:literal) => {
        concat!(
            "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ",
            $now,
            ")"
        )
    };
}
pub(crate) use valid_at;

/// The SQL condition "live at `$now`": valid and not replaced
/// ([`TokenRecord::is_live_at`](crate::TokenRecord::is_live_at)).
macro_rules! live_at {
    ($now:literal) => {
        concat!(
            "replaced_by IS NULL AND ",
            $crate::store::sql::valid_at!($now)
        )
    };
}
pub(crate) use live_at;

/// The SQL condition "counted against the limit of a new token of kind `$kind`": every
/// kind when `$kind` is bound to `NULL`, that kind only (a per-kind cap) otherwise. Combine
/// it with [`valid_at!`]; bind `rules.per_kind.then_some(kind)`.
macro_rules! counted_kind {
    ($kind:literal) => {
        concat!("(", $kind, " IS NULL OR kind = ", $kind, ")")
    };
}
pub(crate) use counted_kind;

/// The SQL condition "valid at `$now` and silent since before `$cutoff`": the latest of
/// creation, last use and binding
/// ([`TokenRecord::last_active_at`](crate::TokenRecord::last_active_at)) is before the
/// cutoff. `$greatest` is the dialect's n-ary maximum (`max`, `GREATEST`).
macro_rules! idle {
    ($greatest:literal, $cutoff:literal, $now:literal) => {
        concat!(
            $crate::store::sql::valid_at!($now),
            " AND ",
            $greatest,
            "(created_at, coalesce(last_used_at, created_at), coalesce(bound_at, created_at)) < ",
            $cutoff
        )
    };
}
pub(crate) use idle;

/// `INSERT INTO table (every column) VALUES (...)`, the `n`th value written by
/// `placeholder(n)` (from 1).
pub(crate) fn insert_statement(table: &str, placeholder: impl Fn(usize) -> String) -> String {
    let columns = token_columns!();
    let values: Vec<String> = (1..=columns.split(',').count()).map(placeholder).collect();
    format!(
        "INSERT INTO {table} ({columns}) VALUES ({})",
        values.join(", ")
    )
}
