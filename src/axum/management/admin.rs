//! The admin view across owners (`GET /admin/tokens`, `DELETE /admin/tokens/{id}`) and the
//! admin-only switch ([`Management::admin_only_token_management`](super::Management::admin_only_token_management)).
//! Both need [`TOKENS_ADMIN`] (`tokens:admin`; `tokens:*` and `*` hold it): the account's
//! permission when signed in with its password, the token's (effective) permission for a
//! bearer token.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Shared;
use super::audit::{Action, tag};
use super::auth::{Accept, Caller};
use super::error::ApiError;
#[cfg(feature = "openapi")]
use super::error::ErrorBody;
use super::handlers::{CallerIp, caller, token_id};
use super::types::TokenView;
use crate::permissions::TOKENS_ADMIN;
use crate::record::TokenStatus;
use crate::store::{TokenId, TokenQuery};

/// Default page size of `GET /admin/tokens`.
pub const DEFAULT_ADMIN_LIMIT: usize = 100;
/// Largest page size of `GET /admin/tokens`.
pub const MAX_ADMIN_LIMIT: usize = 1000;

/// With the admin-only switch on, token management (creating, editing, rotating, revoking, releasing)
/// needs `tokens:admin`: 403 `insufficient_scope` otherwise.
pub(crate) fn admin_only(s: &Shared, caller: &crate::Permissions) -> Result<(), ApiError> {
    if s.admin_only && !caller.allows(TOKENS_ADMIN) {
        return Err(ApiError::insufficient_scope(format!(
            "Token management is reserved to administrators on this server (needs {TOKENS_ADMIN})"
        )));
    }
    Ok(())
}

/// The caller, if it holds `tokens:admin` (403 otherwise).
async fn admin_caller(s: &Shared, headers: &HeaderMap, ip: CallerIp) -> Result<Caller, ApiError> {
    let caller = caller(s, headers, ip, Accept::BasicOrBearer(TOKENS_ADMIN)).await?;
    if !caller.permissions().allows(TOKENS_ADMIN) {
        return Err(ApiError::insufficient_scope(format!(
            "The admin view needs the permission {TOKENS_ADMIN}"
        )));
    }
    Ok(caller)
}

/// A page of `GET /admin/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminTokenPage {
    /// The tokens of the page, every owner's, oldest first (`created_at`, then `id`).
    pub tokens: Vec<TokenView>,
    /// Pass it as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The query of `GET /admin/tokens`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    owner: Option<String>,
    kind: Option<String>,
    status: Option<String>,
    expiring_before: Option<String>,
    last_used_before: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn time_param(name: &str, v: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    v.map(|v| {
        OffsetDateTime::parse(v, &Rfc3339)
            .map_err(|_| ApiError::bad_request(format!("Invalid {name}: expected RFC 3339")))
    })
    .transpose()
}

/// The length of a cursor: 24 bytes (a time in microseconds, big-endian, then an id) in
/// unpadded base64url; the OpenAPI document gives it as the parameter's pattern.
#[cfg(feature = "openapi")]
pub(crate) const CURSOR_PATTERN: &str = "^[A-Za-z0-9_-]{32}$";

/// The opaque cursor of a position: base64url of the creation time (microseconds since
/// the epoch, big-endian `i64`) and the id's 16 bytes.
fn encode_cursor(created_at: OffsetDateTime, id: TokenId) -> String {
    let micros =
        i64::try_from(created_at.unix_timestamp_nanos().div_euclid(1_000)).unwrap_or(i64::MAX);
    let mut bytes = [0u8; 24];
    bytes[..8].copy_from_slice(&micros.to_be_bytes());
    bytes[8..].copy_from_slice(id.0.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The position of a cursor. Every 32-character base64url string is one: a time outside
/// years 1 to 9999 is taken as the nearest of them (a cursor past every token gives an
/// empty page). Times are kept to the microsecond, as the SQL stores keep them.
fn decode_cursor(c: &str) -> Option<(OffsetDateTime, TokenId)> {
    if c.len() != 32 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(c).ok()?;
    let bytes: [u8; 24] = bytes.try_into().ok()?;
    let mut micros = [0u8; 8];
    micros.copy_from_slice(&bytes[..8]);
    let micros = i128::from(i64::from_be_bytes(micros));
    let min = time::macros::datetime!(0001-01-01 00:00 UTC);
    let max = time::macros::datetime!(9999-12-31 23:59:59.999999 UTC);
    let at = OffsetDateTime::from_unix_timestamp_nanos(micros * 1_000)
        .map_or(if micros < 0 { min } else { max }, |t| t.clamp(min, max));
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[8..]);
    Some((at, TokenId(uuid::Uuid::from_bytes(id))))
}

/// The query, and the page size asked for.
fn parse_query(raw: Option<&str>, now: OffsetDateTime) -> Result<(TokenQuery, usize), ApiError> {
    let q: Query = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("Invalid query: {e}")))?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_ADMIN_LIMIT,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_ADMIN_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Invalid limit: a whole number from 1 to {MAX_ADMIN_LIMIT}"
                )));
            }
        },
    };
    // One more than the page, to tell whether another page follows.
    let mut query = TokenQuery::new(now, limit + 1);
    if let Some(o) = q.owner {
        query = query.with_owner(o);
    }
    if let Some(k) = q.kind {
        query = query.with_kind(k);
    }
    if let Some(st) = q.status {
        let st: TokenStatus = st.parse().map_err(|_| {
            ApiError::bad_request(
                "Invalid status: must be one of active, expired, revoked, replaced",
            )
        })?;
        query = query.with_status(st);
    }
    if let Some(t) = time_param("expiring_before", q.expiring_before.as_deref())? {
        query = query.with_expiring_before(t);
    }
    if let Some(t) = time_param("last_used_before", q.last_used_before.as_deref())? {
        query = query.with_last_used_before(t);
    }
    if let Some(c) = q.cursor {
        let (at, id) = decode_cursor(&c).ok_or_else(|| ApiError::bad_request("Invalid cursor"))?;
        query = query.with_after(at, id);
    }
    Ok((query, limit))
}

/// Lists every owner's tokens, a page at a time (administrators only).
#[cfg_attr(feature = "openapi", utoipa::path(
    get,
    path = "/admin/tokens",
    tag = "admin",
    operation_id = "admin_list_tokens",
    params(
        ("owner" = Option<String>, Query, nullable = false, description = "Only this owner's tokens"),
        ("kind" = Option<String>, Query, nullable = false, description = "Only tokens of this kind"),
        ("status" = Option<TokenStatus>, Query, nullable = false, description = "Only tokens with this status now: `active`, `expired`, `revoked` or `replaced`"),
        ("expiring_before" = Option<String>, Query, nullable = false, format = DateTime, description = "Only tokens with an expiry before this time (RFC 3339)"),
        ("last_used_before" = Option<String>, Query, nullable = false, format = DateTime, description = "Only tokens last used before this time (RFC 3339); a token never used counts from its creation"),
        ("limit" = Option<u32>, Query, nullable = false, minimum = 1, maximum = 1000, description = "At most this many tokens (default 100)"),
        ("cursor" = Option<String>, Query, nullable = false, description = "The `next_cursor` of the previous page (32 characters of base64url)"),
    ),
    responses(
        (status = 200, description = "A page of tokens, every owner's, oldest first; revoked ones stay listed until purged", body = AdminTokenPage),
        (status = 400, description = "An invalid or unknown query parameter, or a malformed cursor", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The caller lacks `tokens:admin`", body = ErrorBody),
        (status = 503, description = "The store failed", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = ["tokens:admin"])),
))]
pub(crate) async fn list(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    ip: CallerIp,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    admin_caller(&s, &headers, ip).await?;
    let now = s.tokens.now();
    let (query, limit) = parse_query(raw.as_deref(), now)?;
    let mut records = s.tokens.list_all(&query).await?;
    let more = records.len() > limit;
    records.truncate(limit);
    let next_cursor = if more {
        records.last().map(|r| encode_cursor(r.created_at, r.id))
    } else {
        None
    };
    let page = AdminTokenPage {
        tokens: records
            .iter()
            .map(|r| TokenView::from_record(r, now))
            .collect(),
        next_cursor,
    };
    Ok(Json(page).into_response())
}

/// Revokes any owner's token, with the tokens that replaced it (administrators only).
#[cfg_attr(feature = "openapi", utoipa::path(
    delete,
    path = "/admin/tokens/{id}",
    tag = "admin",
    operation_id = "admin_revoke_token",
    params(("id" = String, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Revoked with its successors; refused from the next request on"),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: the caller lacks `tokens:admin`; `cross_site_request`: a browser sent it from another site", body = ErrorBody),
        (status = 404, description = "No such token, or it and every successor are already revoked", body = ErrorBody),
        (status = 503, description = "The store failed", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = ["tokens:admin"])),
))]
pub(crate) async fn revoke(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ip: CallerIp,
) -> Result<Response, ApiError> {
    let admin = admin_caller(&s, &headers, ip).await?;
    let id = token_id(&id)?;
    let record = s.tokens.revoke_any(id).await?;
    tracing::info!(
        token_id = %id,
        owner = %record.owner,
        admin = %admin.owner(),
        "token revoked by an administrator"
    );
    let action = Action {
        event: "token.revoke",
        owner: record.owner.to_string(),
        token_id: id,
        token_name: Some(record.name.to_string()),
        detail: Some(format!(
            "revoked by administrator {} (created by {})",
            admin.owner(),
            record.created_by
        )),
    };
    Ok(tag(StatusCode::NO_CONTENT.into_response(), action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let t = OffsetDateTime::now_utc();
        let now = t
            .replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
            .unwrap();
        let id = TokenId::random();
        let c = encode_cursor(now, id);
        assert_eq!(c.len(), 32);
        assert_eq!(decode_cursor(&c), Some((now, id)));
        assert!(decode_cursor("nope").is_none());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("1.x")).is_none());
        // Any 32 characters of the alphabet are a position, clamped to years 1 to 9999.
        let (far, _) = decode_cursor(&format!("g{}", "A".repeat(31))).unwrap();
        assert_eq!(far.year(), 1);
        let (near, _) = decode_cursor(&"_".repeat(32)).unwrap();
        assert_eq!(near.year(), 1969, "-1 µs");
        let (far, _) = decode_cursor(&format!("f{}", "_".repeat(31))).unwrap();
        assert_eq!(far.year(), 9999);
        let (q, limit) =
            parse_query(Some(&format!("cursor={c}&limit=5&status=revoked")), now).unwrap();
        assert_eq!(limit, 5);
        assert_eq!(q.after, Some((now, id)));
        for bad in [
            "limit=0",
            "limit=1001",
            "status=dead",
            "cursor=%21",
            "since=x",
            "expiring_before=soon",
        ] {
            assert!(parse_query(Some(bad), now).is_err(), "{bad}");
        }
    }
}
