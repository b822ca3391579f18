//! The row ↔ [`TokenRecord`] codec of the SQL stores, written once: [`decode`] reads a row
//! through the [`Row`] of a dialect, [`bind_record`] binds a record's columns through its
//! [`Binder`], both in the order of [`token_columns!`](super::token_columns).

use ipnet::IpNet;
use time::OffsetDateTime;

use crate::error::StoreError;
use crate::identity::Permissions;
use crate::record::{TokenId, TokenRecord};
use crate::token::TokenHash;

/// A token row of one dialect, read column by column.
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

/// The arguments of a statement of one dialect, bound value by value.
pub(crate) trait Binder: Sized {
    /// A token id.
    fn id(self, v: TokenId) -> Result<Self, StoreError>;
    /// A token id or `NULL`.
    fn opt_id(self, v: Option<TokenId>) -> Result<Self, StoreError>;
    /// A 32-byte digest.
    fn hash(self, v: &TokenHash) -> Result<Self, StoreError>;
    /// Text.
    fn text(self, v: &str) -> Result<Self, StoreError>;
    /// Text or `NULL`.
    fn opt_text(self, v: Option<&str>) -> Result<Self, StoreError>;
    /// A time.
    fn time(self, v: OffsetDateTime) -> Result<Self, StoreError>;
    /// A time or `NULL`.
    fn opt_time(self, v: Option<OffsetDateTime>) -> Result<Self, StoreError>;
    /// A permission list.
    fn permissions(self, v: &Permissions) -> Result<Self, StoreError>;
    /// A list of networks.
    fn networks(self, v: &[IpNet]) -> Result<Self, StoreError>;
    /// A positive count or `NULL`.
    fn opt_u32(self, v: Option<u32>) -> Result<Self, StoreError>;
}

/// The record in `row` (selected with [`token_columns!`](super::token_columns)).
pub(crate) fn decode(row: &impl Row) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: row.id("id")?,
        hash: row.hash("hash")?,
        kind: row.text("kind")?,
        owner: row.text("owner")?,
        name: row.text("name")?,
        description: row.opt_text("description")?,
        role: row.opt_text("role")?,
        permissions: row.permissions("permissions")?,
        hint: row.text("hint")?,
        created_by: row.text("created_by")?,
        created_at: row.time("created_at")?,
        expires_at: row.opt_time("expires_at")?,
        last_used_at: row.opt_time("last_used_at")?,
        revoked_at: row.opt_time("revoked_at")?,
        replaced_by: row.opt_id("replaced_by")?,
        allowed_ips: row.networks("allowed_ips")?,
        rate_limit: row.opt_u32("rate_limit")?,
        bound_to: row.opt_text("bound_to")?,
        bound_at: row.opt_time("bound_at")?,
        released_at: row.opt_time("released_at")?,
    })
}

/// Binds every column of `r`, in the order of [`token_columns!`](super::token_columns).
pub(crate) fn bind_record<B: Binder>(b: B, r: &TokenRecord) -> Result<B, StoreError> {
    b.id(r.id)?
        .hash(&r.hash)?
        .text(&r.kind)?
        .text(&r.owner)?
        .text(&r.name)?
        .opt_text(r.description.as_deref())?
        .opt_text(r.role.as_deref())?
        .permissions(&r.permissions)?
        .text(&r.hint)?
        .text(&r.created_by)?
        .time(r.created_at)?
        .opt_time(r.expires_at)?
        .opt_time(r.last_used_at)?
        .opt_time(r.revoked_at)?
        .opt_id(r.replaced_by)?
        .networks(&r.allowed_ips)?
        .opt_u32(r.rate_limit)?
        .opt_text(r.bound_to.as_deref())?
        .opt_time(r.bound_at)?
        .opt_time(r.released_at)
}
