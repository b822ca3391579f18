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

/// `UPDATE table SET (each editable column) = ... WHERE id = ...`, the `n`th value written
/// by `placeholder(n)` (from 1), bound by
/// [`bind_editable`](crate::store::codec::bind_editable).
pub(crate) fn update_statement(table: &str, placeholder: impl Fn(usize) -> String) -> String {
    let columns = super::codec::EDITABLE_COLUMNS;
    let set: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = {}", placeholder(i + 1)))
        .collect();
    format!(
        "UPDATE {table} SET {} WHERE id = {}",
        set.join(", "),
        placeholder(columns.len() + 1)
    )
}

/// The admin view's page ([`TokenStore::list_tokens`](crate::store::TokenStore::list_tokens))
/// over `table`, the `n`th value written by `placeholder(n)`: 1 owner, 2 kind, 3 status
/// name, 4 expiring before, 5 last used before, 6 and 7 the cursor's `created_at` and id,
/// 8 the limit, 9 now; a filter bound to `NULL` is off. The status is
/// [`TokenRecord::status_at`](crate::TokenRecord::status_at) written in SQL.
pub(crate) fn list_statement(table: &str, placeholder: impl Fn(usize) -> String) -> String {
    let p = |n| placeholder(n);
    format!(
        "SELECT {columns} FROM {table} WHERE \
         ({p1} IS NULL OR owner = {p1}) \
         AND ({p2} IS NULL OR kind = {p2}) \
         AND ({p3} IS NULL OR (CASE WHEN revoked_at IS NOT NULL THEN 'revoked' \
              WHEN replaced_by IS NOT NULL THEN 'replaced' \
              WHEN expires_at IS NOT NULL AND expires_at <= {p9} THEN 'expired' \
              ELSE 'active' END) = {p3}) \
         AND ({p4} IS NULL OR expires_at < {p4}) \
         AND ({p5} IS NULL OR coalesce(last_used_at, created_at) < {p5}) \
         AND ({p6} IS NULL OR created_at > {p6} OR (created_at = {p6} AND id > {p7})) \
         ORDER BY created_at, id LIMIT {p8}",
        columns = token_columns!(),
        p1 = p(1),
        p2 = p(2),
        p3 = p(3),
        p4 = p(4),
        p5 = p(5),
        p6 = p(6),
        p7 = p(7),
        p8 = p(8),
        p9 = p(9),
    )
}
