//! [`AuditEvent`], one audit record, and its [`Decision`].

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::record::TokenId;

/// Whether the request was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Let through.
    Allow,
    /// Refused.
    Deny,
}

impl Decision {
    /// `allow` or `deny`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// One audit record. Serialises to one JSON object (one line in a JSON Lines file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    /// When the decision was made (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub timestamp: OffsetDateTime,
    /// `authenticate`, `token.create`, `token.revoke`, `token.rotate`, `token.purge`,
    /// `token.leaked` (a leak report), `token.expiring` (an expiry warning), ….
    pub event: String,
    /// The token's id, when a token was identified.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    pub api_token_id: Option<TokenId>,
    /// The token's name, when a token was identified.
    pub api_token_name: Option<String>,
    /// The token's owner (or the account acting), when known.
    pub owner: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Request path as the client sent it (no query string: it may carry secrets; a token
    /// in the path is replaced by [`TOKEN_IN_PATH`](super::TOKEN_IN_PATH)), at most
    /// [`MAX_PATH_LEN`](super::MAX_PATH_LEN) bytes.
    pub path: String,
    /// HTTP status code of the response.
    pub status_code: u16,
    /// `allow` or `deny`.
    pub rbac_decision: Decision,
    /// The precise cause of a denial (`unknown`, `revoked`, `expired`, `wrong_kind`,
    /// `insufficient_scope`, `rate_limited`, `ip_not_allowed`, …); `None` when a request
    /// was allowed. An event for a change the manager made outside a request (a revocation
    /// or a release for inactivity, a release by the owner) is `allow` with its cause:
    /// `inactive` or `owner`.
    pub reason: Option<String>,
    /// The client address, as the layer determined it.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub client_ip: Option<IpAddr>,
    /// The request's `x-request-id`, when it is at most
    /// [`MAX_REQUEST_ID_LEN`](super::MAX_REQUEST_ID_LEN) visible ASCII characters.
    pub request_id: Option<String>,
    /// What some events carry besides (e.g. `url` and `source` of a `token.leaked` event,
    /// `expires_at` of a `token.expiring` one); left out of the JSON when `None`. Never a
    /// token, a hash or a password. Every bundled sink and reader keeps it (the SQL audit
    /// stores as a JSON object in their `details` column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<std::collections::BTreeMap<String, String>>,
}

/// An `authenticate` event with status code `n`, for the tests of the audit modules.
#[cfg(test)]
pub(super) fn event(n: u16) -> AuditEvent {
    AuditEvent {
        timestamp: time::macros::datetime!(2024-01-15 10:30 UTC),
        event: "authenticate".into(),
        api_token_id: None,
        api_token_name: Some("ci-production-deploy".into()),
        owner: None,
        method: "POST".into(),
        path: "/apps/myapp/builds".into(),
        status_code: n,
        rbac_decision: Decision::Allow,
        reason: None,
        client_ip: None,
        request_id: None,
        details: None,
    }
}

/// An event's [`details`](AuditEvent::details) as the SQL stores keep them: a JSON object of
/// strings, or `NULL` for none (and for an empty map).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn details_json(
    details: Option<&std::collections::BTreeMap<String, String>>,
) -> Option<String> {
    details
        .filter(|d| !d.is_empty())
        .and_then(|d| serde_json::to_string(d).ok())
}

/// The [`details`](AuditEvent::details) kept as [`details_json`] wrote them; `Err` for text
/// that is not such an object.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn details_from_json(
    text: Option<&str>,
) -> Result<Option<std::collections::BTreeMap<String, String>>, ()> {
    text.map(|t| serde_json::from_str(t).map_err(|_| ()))
        .transpose()
}
