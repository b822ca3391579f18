//! The record ↔ row codec of the persistent stores (SQLite, PostgreSQL, Redis), written
//! once: [`decode`] reads a record through a backend's [`Row`], [`bind_record`] writes its
//! columns through a backend's [`Binder`], in the order of [`token_columns!`]. A new
//! [`TokenRecord`] field is added here (and to the migrations), not in every backend.

use ipnet::IpNet;
use time::OffsetDateTime;

use crate::error::StoreError;
use crate::identity::Permissions;
use crate::record::{Metadata, TokenExtras, TokenId, TokenRecord};
use crate::token::TokenHash;

/// The columns of the token table, in the order [`bind_record`] binds them.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! token_columns {
    () => {
        "id, hash, kind, owner, name, description, role, permissions, hint, created_by, \
         created_at, expires_at, last_used_at, revoked_at, replaced_by, allowed_ips, rate_limit, \
         bound_to, bound_at, released_at, metadata, last_used_ip, last_used_agent, expiry_warned_at"
    };
}
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use token_columns;

/// A token row of one backend, read column by column.
pub(crate) trait Row {
    /// A token id.
    fn id(&self, column: &'static str) -> Result<TokenId, StoreError>;
    /// A token id or `NULL`.
    fn opt_id(&self, column: &'static str) -> Result<Option<TokenId>, StoreError>;
    /// A 32-byte digest.
    fn hash(&self, column: &'static str) -> Result<TokenHash, StoreError>;
    /// Text.
    fn text(&self, column: &'static str) -> Result<String, StoreError>;
    /// Text or `NULL`.
    fn opt_text(&self, column: &'static str) -> Result<Option<String>, StoreError>;
    /// A time.
    fn time(&self, column: &'static str) -> Result<OffsetDateTime, StoreError>;
    /// A time or `NULL`.
    fn opt_time(&self, column: &'static str) -> Result<Option<OffsetDateTime>, StoreError>;
    /// A permission list.
    fn permissions(&self, column: &'static str) -> Result<Permissions, StoreError>;
    /// A list of networks.
    fn networks(&self, column: &'static str) -> Result<Vec<IpNet>, StoreError>;
    /// A positive count or `NULL`.
    fn opt_u32(&self, column: &'static str) -> Result<Option<u32>, StoreError>;
}

/// The values of a record being written by one backend, bound column by column.
pub(crate) trait Binder: Sized {
    /// A token id.
    fn id(self, column: &'static str, v: TokenId) -> Result<Self, StoreError>;
    /// A token id or `NULL`.
    fn opt_id(self, column: &'static str, v: Option<TokenId>) -> Result<Self, StoreError>;
    /// A 32-byte digest.
    fn hash(self, column: &'static str, v: &TokenHash) -> Result<Self, StoreError>;
    /// Text.
    fn text(self, column: &'static str, v: &str) -> Result<Self, StoreError>;
    /// Text or `NULL`.
    fn opt_text(self, column: &'static str, v: Option<&str>) -> Result<Self, StoreError>;
    /// A time.
    fn time(self, column: &'static str, v: OffsetDateTime) -> Result<Self, StoreError>;
    /// A time or `NULL`.
    fn opt_time(self, column: &'static str, v: Option<OffsetDateTime>) -> Result<Self, StoreError>;
    /// A permission list.
    fn permissions(self, column: &'static str, v: &Permissions) -> Result<Self, StoreError>;
    /// A list of networks.
    fn networks(self, column: &'static str, v: &[IpNet]) -> Result<Self, StoreError>;
    /// A positive count or `NULL`.
    fn opt_u32(self, column: &'static str, v: Option<u32>) -> Result<Self, StoreError>;
}

/// The record in `row`.
pub(crate) fn decode(row: &impl Row) -> Result<TokenRecord, StoreError> {
    let mut record = TokenRecord::new(
        row.id("id")?,
        row.hash("hash")?,
        row.text("kind")?,
        row.text("owner")?,
        row.text("name")?,
        row.time("created_at")?,
    )
    .with_permissions(row.permissions("permissions")?)
    .with_hint(row.text("hint")?)
    .with_created_by(row.text("created_by")?);
    record.expires_at = row.opt_time("expires_at")?;
    record.last_used_at = row.opt_time("last_used_at")?;
    let extras = TokenExtras {
        description: row.opt_text("description")?,
        role: row.opt_text("role")?,
        revoked_at: row.opt_time("revoked_at")?,
        replaced_by: row.opt_id("replaced_by")?,
        allowed_ips: row.networks("allowed_ips")?,
        rate_limit: row.opt_u32("rate_limit")?,
        bound_to: row.opt_text("bound_to")?,
        bound_at: row.opt_time("bound_at")?,
        released_at: row.opt_time("released_at")?,
        // Rows written before these columns existed have none (Redis) or the defaults.
        metadata: match row.opt_text("metadata")? {
            Some(text) => Metadata::from_json(&text).map_err(|_| bad_column("metadata"))?,
            None => Metadata::default(),
        },
        last_used_ip: row
            .opt_text("last_used_ip")?
            .map(|s| s.parse().map_err(|_| bad_column("last_used_ip")))
            .transpose()?,
        last_used_agent: row.opt_text("last_used_agent")?,
        expiry_warned_at: row.opt_time("expiry_warned_at")?,
    };
    Ok(record.with_extras(extras))
}

/// Binds every column of `r`, in the order of `token_columns!`.
pub(crate) fn bind_record<B: Binder>(b: B, r: &TokenRecord) -> Result<B, StoreError> {
    b.id("id", r.id)?
        .hash("hash", &r.hash)?
        .text("kind", &r.kind)?
        .text("owner", &r.owner)?
        .text("name", &r.name)?
        .opt_text("description", r.extras().description.as_deref())?
        .opt_text("role", r.extras().role.as_deref())?
        .permissions("permissions", &r.permissions)?
        .text("hint", &r.hint)?
        .text("created_by", &r.created_by)?
        .time("created_at", r.created_at)?
        .opt_time("expires_at", r.expires_at)?
        .opt_time("last_used_at", r.last_used_at)?
        .opt_time("revoked_at", r.extras().revoked_at)?
        .opt_id("replaced_by", r.extras().replaced_by)?
        .networks("allowed_ips", &r.extras().allowed_ips)?
        .opt_u32("rate_limit", r.extras().rate_limit)?
        .opt_text("bound_to", r.extras().bound_to.as_deref())?
        .opt_time("bound_at", r.extras().bound_at)?
        .opt_time("released_at", r.extras().released_at)?
        .text("metadata", &r.extras().metadata.to_json())?
        .opt_text(
            "last_used_ip",
            r.extras().last_used_ip.map(|ip| ip.to_string()).as_deref(),
        )?
        .opt_text("last_used_agent", r.extras().last_used_agent.as_deref())?
        .opt_time("expiry_warned_at", r.extras().expiry_warned_at)
}

/// The columns an edit in place ([`TokenStore::update`](crate::store::TokenStore::update))
/// writes, in the order [`bind_editable`] binds them (the record's id follows them, for the
/// `WHERE`).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const EDITABLE_COLUMNS: [&str; 6] = [
    "name",
    "description",
    "permissions",
    "expires_at",
    "allowed_ips",
    "metadata",
];

/// Binds the [`EDITABLE_COLUMNS`] of `r`, then its id.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn bind_editable<B: Binder>(b: B, r: &TokenRecord) -> Result<B, StoreError> {
    b.text("name", &r.name)?
        .opt_text("description", r.extras().description.as_deref())?
        .permissions("permissions", &r.permissions)?
        .opt_time("expires_at", r.expires_at)?
        .networks("allowed_ips", &r.extras().allowed_ips)?
        .text("metadata", &r.extras().metadata.to_json())?
        .id("id", r.id)
}

/// A stored value that does not decode.
fn bad_column(column: &'static str) -> StoreError {
    StoreError::Backend(format!("stored column `{column}` is not valid").into())
}
