//! Why a management operation failed: [`TokenError`].

use time::OffsetDateTime;

use crate::store::StoreError;

/// Why a management operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The name is empty, too long, or has control, format or bidirectional characters.
    #[error("invalid name: {0}")]
    InvalidName(&'static str),
    /// The description is empty, too long, or has control, format or bidirectional
    /// characters.
    #[error("invalid description: {0}")]
    InvalidDescription(&'static str),
    /// The owner is empty, too long, or has control, format or bidirectional characters.
    #[error("invalid owner: {0}")]
    InvalidOwner(&'static str),
    /// No such role in the manager's [`Roles`](crate::Roles).
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    /// No such kind in the manager.
    #[error("unknown token kind {0:?}")]
    UnknownKind(String),
    /// Explicit permissions go beyond the given role's.
    #[error("the permissions go beyond the role's")]
    PermissionsExceedRole,
    /// An edit asked for permissions the token does not hold: an edit only narrows.
    #[error("the new permissions go beyond the token's")]
    PermissionsWiden,
    /// The expiry is zero, too long, or missing where the kind requires one.
    #[error("invalid expiry: {0}")]
    InvalidExpiry(&'static str),
    /// The allow-list is too long.
    #[error("invalid allowed_ips: {0}")]
    InvalidAllowedIps(&'static str),
    /// The per-token rate is zero.
    #[error("invalid rate_limit: {0}")]
    InvalidRateLimit(&'static str),
    /// A rotation asked for a grace window longer than the manager's maximum
    /// ([`TokensBuilder::max_rotation_grace`](super::TokensBuilder::max_rotation_grace)).
    #[error("the grace window must be at most {max_seconds} seconds")]
    GraceTooLong {
        /// The longest grace allowed, in seconds.
        max_seconds: u64,
    },
    /// A binding was released less than 24 h ago.
    #[error("the binding was released less than 24 hours ago")]
    ReleaseTooSoon {
        /// When a release is allowed again.
        next_allowed_at: OffsetDateTime,
    },
    /// The token is of a kind without a binding.
    #[error("this kind of token has no binding")]
    NotBindable,
    /// The owner already has a live token with this name.
    #[error("a live token with this name already exists")]
    NameTaken,
    /// The owner is at the limit of valid tokens (live ones and replaced ones in grace).
    #[error("the limit of live tokens is reached")]
    LimitReached,
    /// An imported token's hash is already stored (as another token, live or not); it is
    /// never overwritten.
    #[error("a token with this hash already exists")]
    DuplicateHash,
    /// An imported token's `created_at` or hint is invalid.
    #[error("invalid import: {0}")]
    InvalidImport(&'static str),
    /// No such token for this owner (or not live, for a rotation).
    #[error("token not found")]
    NotFound,
    /// The store failed.
    #[error("token store error")]
    Store(#[source] StoreError),
}

impl From<StoreError> for TokenError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken => Self::NameTaken,
            StoreError::LimitReached => Self::LimitReached,
            StoreError::NotFound => Self::NotFound,
            other => Self::Store(other),
        }
    }
}
