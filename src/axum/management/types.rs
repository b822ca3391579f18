//! Request and response bodies of the management API.

use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, UtcOffset};

use crate::identity::{AuthMethod, Identity, Permissions};
use crate::record::Metadata;
use crate::store::{TokenId, TokenRecord};

/// `POST /tokens` as JSON. Every field is optional; unknown fields are refused.
///
/// As a form (`application/x-www-form-urlencoded`) the same fields are accepted, with
/// `permissions` as one comma- or space-separated value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Unique among the owner's live tokens, 1–100 printable characters. Left out, the
    /// server picks `token-<n>`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub name: Option<String>,
    /// Free text, 1–100 printable characters.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub description: Option<String>,
    /// A role of the server's [`Roles`](crate::Roles); the token gets its permissions.
    #[serde(default)]
    pub role: Option<String>,
    /// Explicit permissions (within the role's, when a role is given). With neither `role`
    /// nor `permissions`, the token gets the account's own permissions.
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
    /// Lifetime in seconds; the response carries the absolute `expires_at`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub expires_in: Option<i64>,
    /// Client networks (CIDR strings such as `10.0.0.0/8` or `2001:db8::/32`, or single
    /// addresses) the token may be used from; left out or empty: any address.
    #[serde(default)]
    pub allowed_ips: Option<Vec<String>>,
    /// The token's own rate in requests per minute. It only ever lowers the server's rate
    /// for the token: where it is higher, the server's applies.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub rate_limit: Option<u32>,
    /// The owner's own data about the token: a JSON object of at most 1 KiB (compact JSON)
    /// nested at most 8 levels deep ([`Metadata`]); `null` or left out: none (`{}`). Kept by
    /// rotation; shown in every view, in `GET /me` and on the handler's `Identity`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Metadata>,
}

/// `POST /tokens` as a form (`application/x-www-form-urlencoded`): every value is text, and
/// a field is either given or left out (a form has no `null`).
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTokenForm {
    /// Unique among the owner's live tokens, 1–100 printable characters. Left out, the
    /// server picks `token-<n>`.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, min_length = 1, max_length = 100)
    )]
    pub(crate) name: Option<String>,
    /// Free text, 1–100 printable characters.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, min_length = 1, max_length = 100)
    )]
    pub(crate) description: Option<String>,
    /// A role of the server's; the token gets its permissions.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub(crate) role: Option<String>,
    /// Explicit permissions, comma- or space-separated (e.g. `apps:read,apps:write`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub(crate) permissions: Option<String>,
    /// Lifetime in seconds.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = i64, nullable = false, minimum = 1)
    )]
    pub(crate) expires_in: Option<String>,
    /// Client networks (CIDR or single addresses), comma- or space-separated.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub(crate) allowed_ips: Option<String>,
    /// The token's own rate in requests per minute.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = u32, nullable = false, minimum = 1)
    )]
    pub(crate) rate_limit: Option<String>,
    /// The token's metadata as JSON text: an object of at most 1 KiB; empty: none.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub(crate) metadata: Option<String>,
}

/// `POST /tokens/{id}/rotate` (the body is optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotateToken {
    /// Seconds during which the old token keeps working (default 0: it stops at once; at
    /// most the manager's maximum, 86 400 by default, else 400). The old token counts
    /// against the owner's limit while in grace (409 `token_limit` when there is no room),
    /// and rotating its successor ends the grace at once.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub grace_seconds: Option<i64>,
}

/// `POST /tokens/{id}/rotate` as a form: `grace_seconds` given or left out (a form has no
/// `null`).
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateTokenForm {
    /// Seconds during which the old token keeps working (default 0).
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = i64, nullable = false, minimum = 0)
    )]
    pub(crate) grace_seconds: Option<String>,
}

/// `PATCH /tokens/{id}` (JSON): the fields to change, at least one; a field left out is
/// kept. Unknown fields are refused. For the documentation: the handler reads the body
/// field by field, so that `null` can clear `description` and `expires_at`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateToken {
    /// A new name: unique among the owner's live tokens, 1–100 printable characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, min_length = 1, max_length = 100)
    )]
    pub name: Option<String>,
    /// A new description, 1–100 printable characters; `null` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub description: Option<Option<String>>,
    /// A new expiry (RFC 3339), within the kind's longest lifetime; a time already past
    /// ends the token now (it stays listed, expired); `null`: no expiry (not for a kind that
    /// requires one). A bearer token may only move an expiry earlier. Not with `expires_in`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<Option<String>>,
    /// A new expiry this many seconds from now. Not with `expires_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, minimum = 1))]
    pub expires_in: Option<i64>,
    /// A new allow-list (CIDR strings or single addresses; empty or `null`: any address).
    /// A bearer token may only narrow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ips: Option<Vec<String>>,
    /// New metadata, replacing the old: a JSON object of at most 1 KiB (`null`: `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<serde_json::Value>,
    /// New permissions: only a subset of the token's (403 `insufficient_scope` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub permissions: Option<Vec<String>>,
}

pub use crate::record::TokenStatus;

/// A token as the management API shows it. `token` is set only in the answers to a create
/// or a rotation; the hash is never shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenView {
    /// The token's id (a UUID), used in `/tokens/{id}` routes.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub id: TokenId,
    /// The token in clear: only in create and rotate responses. Store it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Name, unique among the owner's live tokens.
    pub name: String,
    /// The token's kind (its prefix names it).
    pub kind: String,
    /// Who the token belongs to.
    pub owner: String,
    /// Who created it: the owner, or an admin acting for them.
    pub created_by: String,
    /// Free text.
    pub description: Option<String>,
    /// The role the permissions came from, if any.
    pub role: Option<String>,
    /// The token's permissions.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub permissions: Permissions,
    /// The token's first 12 characters.
    pub hint: String,
    /// The owner's data about the token: a JSON object of at most 1 KiB (`{}` when none).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Metadata,
    /// Creation time (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    /// Expiry (RFC 3339, UTC), if any.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
    /// Last successful use (RFC 3339, UTC), recorded in batches.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_used_at: Option<OffsetDateTime>,
    /// The client address of the last recorded use, when known.
    #[serde(default)]
    pub last_used_ip: Option<String>,
    /// The `User-Agent` of the last recorded use (at most 256 bytes), when sent.
    #[serde(default)]
    pub last_used_user_agent: Option<String>,
    /// Revocation time (RFC 3339, UTC), for a revoked token.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub revoked_at: Option<OffsetDateTime>,
    /// `active`, `expired`, `revoked` or `replaced` (rotated; accepted until `expires_at`,
    /// the end of the grace window).
    pub status: TokenStatus,
    /// Client networks the token may be used from (CIDR); empty: any address.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// The token's own rate in requests per minute, if any.
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// For a seat (a kind with a binding): the machine fingerprint it is bound to.
    #[serde(default)]
    pub bound_to: Option<String>,
    /// When the current binding was made (RFC 3339, UTC).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub bound_at: Option<OffsetDateTime>,
}

impl TokenView {
    /// The view of `record` at `now`, without the secret.
    #[must_use]
    pub fn from_record(record: &TokenRecord, now: OffsetDateTime) -> Self {
        let utc = |t: OffsetDateTime| t.to_offset(UtcOffset::UTC);
        Self {
            id: record.id,
            token: None,
            name: record.name.to_string(),
            kind: record.kind.to_string(),
            owner: record.owner.to_string(),
            created_by: record.created_by.to_string(),
            description: record.extras().description.clone(),
            role: record.extras().role.clone(),
            permissions: record.permissions.clone(),
            hint: record.hint.to_string(),
            metadata: record.extras().metadata.clone(),
            created_at: utc(record.created_at),
            expires_at: record.expires_at.map(utc),
            last_used_at: record.last_used_at.map(utc),
            last_used_ip: record.extras().last_used_ip.map(|ip| ip.to_string()),
            last_used_user_agent: record.extras().last_used_agent.clone(),
            revoked_at: record.extras().revoked_at.map(utc),
            status: record.status_at(now),
            allowed_ips: record
                .extras()
                .allowed_ips
                .iter()
                .map(ToString::to_string)
                .collect(),
            rate_limit: record.extras().rate_limit,
            bound_to: record.extras().bound_to.clone(),
            bound_at: record.extras().bound_at.map(utc),
        }
    }
}

impl Drop for TokenView {
    fn drop(&mut self) {
        if let Some(t) = self.token.as_mut() {
            zeroize::Zeroize::zeroize(t);
        }
    }
}

impl std::fmt::Debug for TokenView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenView")
            .field("id", &self.id)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("owner", &self.owner)
            .field("created_by", &self.created_by)
            .field("description", &self.description)
            .field("role", &self.role)
            .field("permissions", &self.permissions)
            .field("hint", &self.hint)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("last_used_at", &self.last_used_at)
            .field("last_used_ip", &self.last_used_ip)
            .field("last_used_user_agent", &self.last_used_user_agent)
            .field("revoked_at", &self.revoked_at)
            .field("status", &self.status)
            .field("allowed_ips", &self.allowed_ips)
            .field("rate_limit", &self.rate_limit)
            .field("metadata", &self.metadata)
            .field("bound_to", &self.bound_to)
            .field("bound_at", &self.bound_at)
            .finish()
    }
}

/// `GET /me`: who the bearer token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IdentityView {
    /// The token's id.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub token_id: TokenId,
    /// The owner (the account's email).
    pub owner: String,
    /// The token's name.
    pub token_name: String,
    /// The token's kind.
    pub kind: String,
    /// The effective permissions.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub permissions: Permissions,
    /// Always `bearer`.
    pub auth_method: String,
    /// The token's metadata (`{}` when none).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Metadata,
}

impl From<&Identity> for IdentityView {
    fn from(id: &Identity) -> Self {
        Self {
            token_id: id.token_id(),
            owner: id.owner().to_owned(),
            token_name: id.token_name().to_owned(),
            kind: id.kind().to_owned(),
            permissions: id.permissions().clone(),
            auth_method: match id.auth_method() {
                AuthMethod::Bearer => "bearer".to_owned(),
            },
            metadata: id.metadata().clone(),
        }
    }
}

/// `DELETE /tokens/{id}?successors=`: what happens to the tokens that replaced this one.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // Only its schema is used: the query is read by `body::keep_successors`.
pub(crate) enum Successors {
    /// Revoked with it (the default).
    Revoke,
    /// Kept.
    Keep,
}
