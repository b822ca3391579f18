//! The route handlers.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use super::Shared;
use super::audit::{Action, tag};
use super::auth::{Accept, Caller};
use super::error::ApiError;
#[cfg(feature = "openapi")]
use super::error::ErrorBody;
use super::types::{
    CreateToken, CreateTokenForm, IdentityView, RotateToken, RotateTokenForm, TokenStatus,
    TokenView,
};
use crate::identity::Permissions;
use crate::store::TokenId;
use crate::tokens::{IssuedToken, NewToken};

pub(crate) async fn caller(
    s: &Shared,
    headers: &HeaderMap,
    ip: CallerIp,
    accept: Accept,
) -> Result<Caller, ApiError> {
    let request = super::auth::RequestInfo {
        headers,
        origin: &ip,
    };
    super::auth::authenticate(s, request, accept).await
}

/// Where the caller is, as the router's [`ClientIpSource`](crate::client_ip::ClientIpSource)
/// finds it (bearer tokens with an allow-list are judged on the client, as behind the
/// layer; failure limits count against the client or, when it is unknown, the peer), and
/// what a sign-in audit event needs from the request.
pub(crate) struct CallerIp {
    pub(crate) addrs: crate::client_ip::Addresses,
    pub(crate) method: http::Method,
    pub(crate) path: String,
    pub(crate) request_id: Option<String>,
}

impl axum::extract::FromRequestParts<Arc<Shared>> for CallerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        s: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            addrs: s.client_ip.resolve(&parts.extensions, &parts.headers),
            method: parts.method.clone(),
            path: crate::audit::request_path(&parts.extensions, &parts.uri),
            request_id: crate::audit::request_id(&parts.headers),
        })
    }
}

/// Refuses a body announced as too large before any password check, then reads at most
/// `limit` bytes.
fn check_length(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match announced {
        Some(n) if n > limit as u64 => Err(ApiError::payload_too_large(limit)),
        _ => Ok(()),
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::payload_too_large(limit))
        }
        Err(_) => Err(ApiError::bad_request("Could not read the request body")),
    }
}

enum BodyFormat {
    Empty,
    Json,
    Form,
}

fn body_format(headers: &HeaderMap, body: &[u8]) -> Result<BodyFormat, ApiError> {
    let essence = headers.get(header::CONTENT_TYPE).map(|v| {
        v.to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    if body.is_empty() {
        return Ok(BodyFormat::Empty);
    }
    match essence.as_deref() {
        Some("application/json") => Ok(BodyFormat::Json),
        Some(t) if t.starts_with("application/") && t.ends_with("+json") => Ok(BodyFormat::Json),
        Some("application/x-www-form-urlencoded") => Ok(BodyFormat::Form),
        _ => Err(ApiError::unsupported_media_type()),
    }
}

/// A JSON object with only the `known` fields; each field is then read on its own, so that
/// an error names the field.
fn json_object(
    body: &[u8],
    known: &[&str],
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(ApiError::bad_request(
            "Invalid JSON body: expected an object",
        ));
    };
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "Unknown field {unknown:?}; expected one of: {}",
            known.join(", ")
        )));
    }
    Ok(map)
}

fn json_field<T: DeserializeOwned>(
    map: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<T>, ApiError> {
    match map.remove(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| ApiError::bad_request(format!("Invalid {key}: {e}"))),
    }
}

fn parse_form<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid form body: {e}")))
}

fn parse_seconds(field: &str, v: &str) -> Result<i64, ApiError> {
    v.trim().parse::<i64>().map_err(|_| {
        ApiError::bad_request(format!(
            "Invalid {field}: must be a whole number of seconds"
        ))
    })
}

fn parse_create(headers: &HeaderMap, body: &[u8]) -> Result<CreateToken, ApiError> {
    match body_format(headers, body)? {
        BodyFormat::Empty => Ok(CreateToken::default()),
        BodyFormat::Json => {
            let mut m = json_object(
                body,
                &[
                    "name",
                    "description",
                    "role",
                    "permissions",
                    "expires_in",
                    "allowed_ips",
                    "rate_limit",
                ],
            )?;
            Ok(CreateToken {
                name: json_field(&mut m, "name")?,
                description: json_field(&mut m, "description")?,
                role: json_field(&mut m, "role")?,
                permissions: json_field(&mut m, "permissions")?,
                expires_in: json_field(&mut m, "expires_in")?,
                allowed_ips: json_field(&mut m, "allowed_ips")?,
                rate_limit: json_field(&mut m, "rate_limit")?,
            })
        }
        BodyFormat::Form => {
            let f: CreateTokenForm = parse_form(body)?;
            Ok(CreateToken {
                name: f.name,
                description: f.description,
                role: f.role,
                permissions: f.permissions.map(|p| {
                    p.split([',', ' '])
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                }),
                expires_in: f
                    .expires_in
                    .as_deref()
                    .map(|v| parse_seconds("expires_in", v))
                    .transpose()?,
                allowed_ips: f.allowed_ips.map(|p| {
                    p.split([',', ' '])
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                }),
                rate_limit: f
                    .rate_limit
                    .as_deref()
                    .map(|v| {
                        v.trim().parse::<u32>().map_err(|_| {
                            ApiError::bad_request(
                                "Invalid rate_limit: must be a whole number of requests per minute",
                            )
                        })
                    })
                    .transpose()?,
            })
        }
    }
}

/// CIDR strings (or single addresses) to networks; 400 naming the first bad one.
fn parse_nets(list: &[String]) -> Result<Vec<ipnet::IpNet>, ApiError> {
    list.iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "Invalid allowed_ips: {s:?} is not an IP network in CIDR notation \
                         (e.g. 10.0.0.0/8 or 2001:db8::/32)"
                    ))
                })
        })
        .collect()
}

fn parse_rotate(headers: &HeaderMap, body: &[u8]) -> Result<RotateToken, ApiError> {
    match body_format(headers, body)? {
        BodyFormat::Empty => Ok(RotateToken::default()),
        BodyFormat::Json => {
            let mut m = json_object(body, &["grace_seconds"])?;
            Ok(RotateToken {
                grace_seconds: json_field(&mut m, "grace_seconds")?,
            })
        }
        BodyFormat::Form => {
            let f: RotateTokenForm = parse_form(body)?;
            Ok(RotateToken {
                grace_seconds: f
                    .grace_seconds
                    .as_deref()
                    .map(|v| parse_seconds("grace_seconds", v))
                    .transpose()?,
            })
        }
    }
}

/// `successors=revoke` (the default) or `successors=keep`; 400 for anything else.
fn keep_successors(query: Option<&str>) -> Result<bool, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("Invalid query: {e}")))?;
    let mut keep = false;
    for (key, value) in &pairs {
        match (key.as_str(), value.as_str()) {
            ("successors", "keep") => keep = true,
            ("successors", "revoke") => keep = false,
            ("successors", _) => {
                return Err(ApiError::bad_request(
                    "Invalid successors: must be revoke or keep",
                ));
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Unknown query parameter {key:?}; expected: successors"
                )));
            }
        }
    }
    Ok(keep)
}

fn token_id(raw: &str) -> Result<TokenId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found())
}

/// Every permission of `wanted` must be held by the caller (403 otherwise).
fn within(wanted: &Permissions, held: &Permissions, who: &str) -> Result<(), ApiError> {
    match wanted.iter().find(|p| !held.allows(p.as_str())) {
        None => Ok(()),
        Some(p) => Err(ApiError::insufficient_scope(format!(
            "Missing permission: {p} (a token cannot hold more than {who})"
        ))),
    }
}

/// A bearer caller may only manage (revoke, rotate, release) the owner's tokens that are at
/// least as restricted as itself, so that no token can hand on, or keep alive, a credential
/// it could not be: every permission of the target held by the caller; the same kind (and,
/// for a kind with a binding, the same machine); an allow-list within the caller's (a
/// caller without one is unrestricted); an expiry no later than the caller's (a caller
/// without one is unrestricted); and a rate of its own no higher than the caller's (a
/// caller without one is unrestricted). 403 `insufficient_scope` otherwise. An account
/// signed in with its password manages all its tokens. Returns the target's record.
async fn may_manage(
    s: &Shared,
    caller: &Caller,
    id: TokenId,
) -> Result<crate::store::TokenRecord, ApiError> {
    let target = s.tokens.get(caller.owner(), id).await?;
    match caller {
        Caller::Basic(account) => within(&target.permissions, &account.permissions, "its account")?,
        Caller::Bearer(identity) => {
            within(
                &target.permissions,
                identity.permissions(),
                "the token that asks",
            )?;
            as_restricted(s, &target, identity.record()).map_err(|what| {
                ApiError::insufficient_scope(format!(
                    "The token to manage is less restricted than the token that asks: {what}"
                ))
            })?;
        }
    }
    Ok(target)
}

/// Whether `target` is at least as restricted as `caller` in everything but permissions;
/// the first way it is not, otherwise.
fn as_restricted(
    s: &Shared,
    target: &crate::store::TokenRecord,
    caller: &crate::store::TokenRecord,
) -> Result<(), &'static str> {
    if target.kind != caller.kind {
        return Err("it is of another kind");
    }
    let binds = s
        .tokens
        .kind(&caller.kind)
        .and_then(crate::TokenKind::binding_header)
        .is_some();
    if binds && target.bound_to != caller.bound_to {
        return Err("it is not bound to the same machine");
    }
    if !caller.allowed_ips.is_empty()
        && (target.allowed_ips.is_empty()
            || !target
                .allowed_ips
                .iter()
                .all(|t| caller.allowed_ips.iter().any(|c| c.contains(t))))
    {
        return Err("its allowed_ips are not within the caller's");
    }
    if let Some(limit) = caller.expires_at
        && target.expires_at.is_none_or(|e| e > limit)
    {
        return Err("it expires later than the caller");
    }
    if let Some(rate) = caller.rate_limit
        && target.rate_limit.is_none_or(|r| r > rate)
    {
        return Err("its rate_limit is higher than the caller's");
    }
    Ok(())
}

fn issued_response(s: &Shared, issued: IssuedToken) -> Response {
    let mut view = TokenView::from_record(&issued.record, s.tokens.now());
    view.status = TokenStatus::Active;
    view.token = Some(issued.token.expose_secret().to_owned());
    let mut res = (StatusCode::CREATED, Json(&view)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// Creates a token for the account signed in with Basic authentication.
#[cfg_attr(feature = "openapi", utoipa::path(
    post,
    path = "/tokens",
    tag = "tokens",
    operation_id = "create_token",
    request_body(
        description = "JSON, or a form such as `description=My+automation+script`. Every field is optional.",
        content(
            (CreateToken = "application/json"),
            (CreateToken = "application/x-www-form-urlencoded"),
        ),
    ),
    responses(
        (status = 201, description = "Created; `token` is shown this once (`Cache-Control: no-store`)", body = TokenView),
        (status = 400, description = "An invalid field or a malformed body", body = ErrorBody),
        (status = 401, description = "Missing or wrong email/password, or a bearer token (creating needs Basic)", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: the permissions go beyond the account's; `cross_site_request`: a browser sent it from another site", body = ErrorBody),
        (status = 409, description = "`name_taken` or `token_limit`", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Neither JSON nor a form", body = ErrorBody),
        (status = 503, description = "`store_unavailable` or `server_busy`", body = ErrorBody),
    ),
    security(("basic" = [])),
))]
pub(crate) async fn create_token(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    ip: CallerIp,
    body: Body,
) -> Result<Response, ApiError> {
    check_length(&headers, s.body_limit)?;
    let Caller::Basic(account) = caller(&s, &headers, ip, Accept::BasicOnly).await? else {
        return Err(ApiError::basic_required());
    };
    let bytes = read_body(body, s.body_limit).await?;
    let req = parse_create(&headers, &bytes)?;

    let role_permissions = match &req.role {
        Some(r) => Some(
            s.tokens
                .roles()
                .get(r)
                .cloned()
                .ok_or_else(|| ApiError::bad_request(format!("Unknown role {r:?}")))?,
        ),
        None => None,
    };
    let explicit = req
        .permissions
        .as_ref()
        .map(Permissions::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("Invalid permissions: {e}")))?;
    let mut new = match req.name {
        Some(name) => NewToken::new(&account.email, name),
        None => NewToken::unnamed(&account.email),
    };
    if let Some(d) = req.description {
        new = new.description(d);
    }
    if let Some(nets) = &req.allowed_ips {
        new = new.allowed_ips(parse_nets(nets)?);
    }
    if let Some(n) = req.rate_limit {
        new = new.rate_limit_per_minute(n);
    }
    if let Some(e) = req.expires_in {
        if e <= 0 {
            return Err(ApiError::bad_request(
                "Invalid expires_in: must be a positive number of seconds",
            ));
        }
        new = new.expires_in(Duration::from_secs(e.unsigned_abs()));
    }
    let effective = match (&explicit, &role_permissions) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => p.clone(),
        (None, None) => account.permissions.clone(),
    };
    if let Some(r) = req.role {
        new = new.role(r);
    }
    if explicit.is_some() || role_permissions.is_none() {
        new = new.permissions(effective.clone());
    }
    within(&effective, &account.permissions, "its account")?;

    let issued = s.tokens.issue(new).await?;
    tracing::info!(
        token_id = %issued.record.id,
        owner = %issued.record.owner,
        name = %issued.record.name,
        "token created"
    );
    let action = Action {
        event: "token.create",
        owner: issued.record.owner.clone(),
        token_id: issued.record.id,
        token_name: Some(issued.record.name.clone()),
    };
    Ok(tag(issued_response(&s, issued), action))
}

/// Lists the caller's tokens (never the secrets nor their hashes).
#[cfg_attr(feature = "openapi", utoipa::path(
    get,
    path = "/tokens",
    tag = "tokens",
    operation_id = "list_tokens",
    responses(
        (status = 200, description = "The owner's tokens that are not revoked, oldest first", body = Vec<TokenView>),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The bearer token lacks `tokens:read`", body = ErrorBody),
        (status = 503, description = "The store failed", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = ["tokens:read"])),
))]
pub(crate) async fn list_tokens(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    ip: CallerIp,
) -> Result<Response, ApiError> {
    let caller = caller(&s, &headers, ip, Accept::BasicOrBearer("tokens:read")).await?;
    let now = s.tokens.now();
    let views: Vec<TokenView> = s
        .tokens
        .list(caller.owner())
        .await?
        .iter()
        // Revoked tokens, and replaced ones whose grace is over, are gone for the owner.
        .filter(|r| r.revoked_at.is_none() && (r.replaced_by.is_none() || r.is_valid_at(now)))
        .map(|r| TokenView::from_record(r, now))
        .collect();
    Ok(Json(views).into_response())
}

/// Revokes one of the caller's tokens and, unless `successors=keep`, the tokens that
/// replaced it by rotation.
#[cfg_attr(feature = "openapi", utoipa::path(
    delete,
    path = "/tokens/{id}",
    tag = "tokens",
    operation_id = "revoke_token",
    params(
        ("id" = String, Path, description = "The token's id"),
        ("successors" = Option<String>, Query, description = "`revoke` (the default): the tokens that replaced this one by rotation are revoked too, so revoking a leaked token stops whoever rotated it; `keep`: only this token (ends a rotation's grace early)"),
    ),
    responses(
        (status = 204, description = "Revoked, with its successors unless `successors=keep`; refused from the next request on"),
        (status = 400, description = "An invalid query", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: the bearer token lacks `tokens:write`, or the token to revoke is less restricted than it (a permission, the kind or binding, `allowed_ips`, expiry or `rate_limit`); `cross_site_request`: a browser sent it from another site", body = ErrorBody),
        (status = 404, description = "No such token of this owner, or it (and, by default, every successor) is already revoked", body = ErrorBody),
        (status = 503, description = "The store failed", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = ["tokens:write"])),
))]
pub(crate) async fn revoke_token(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ip: CallerIp,
) -> Result<Response, ApiError> {
    let keep = keep_successors(query.as_deref())?;
    let caller = caller(&s, &headers, ip, Accept::BasicOrBearer("tokens:write")).await?;
    let id = token_id(&id)?;
    may_manage(&s, &caller, id).await?;
    if keep {
        s.tokens
            .revoke_keeping_successors(caller.owner(), id)
            .await?;
        tracing::info!(token_id = %id, owner = %caller.owner(), "token revoked, successors kept");
    } else {
        let successors = s.tokens.revoke_with_successors(caller.owner(), id).await?;
        tracing::info!(
            token_id = %id,
            owner = %caller.owner(),
            successors = successors.len(),
            "token revoked"
        );
    }
    let action = Action {
        event: "token.revoke",
        owner: caller.owner().to_owned(),
        token_id: id,
        token_name: None,
    };
    Ok(tag(StatusCode::NO_CONTENT.into_response(), action))
}

/// Replaces one of the caller's tokens by a new one with the same name and permissions.
#[cfg_attr(feature = "openapi", utoipa::path(
    post,
    path = "/tokens/{id}/rotate",
    tag = "tokens",
    operation_id = "rotate_token",
    params(("id" = String, Path, description = "The token's id")),
    request_body(
        description = "Optional: how long the old token keeps working.",
        content(
            (RotateToken = "application/json"),
            (RotateToken = "application/x-www-form-urlencoded"),
        ),
    ),
    responses(
        (status = 201, description = "The new token; `token` is shown this once (`Cache-Control: no-store`)", body = TokenView),
        (status = 400, description = "An invalid field or a malformed body", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: the bearer token lacks `tokens:write`, or the token to rotate is less restricted than it (a permission, the kind or binding, `allowed_ips`, expiry or `rate_limit`); `cross_site_request`: a browser sent it from another site", body = ErrorBody),
        (status = 404, description = "No such live token of this owner", body = ErrorBody),
        (status = 409, description = "`token_limit`: with grace the old token would count against a full limit", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Neither JSON nor a form", body = ErrorBody),
        (status = 503, description = "The store failed", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = ["tokens:write"])),
))]
pub(crate) async fn rotate_token(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ip: CallerIp,
    body: Body,
) -> Result<Response, ApiError> {
    check_length(&headers, s.body_limit)?;
    let caller = caller(&s, &headers, ip, Accept::BasicOrBearer("tokens:write")).await?;
    let bytes = read_body(body, s.body_limit).await?;
    let req = parse_rotate(&headers, &bytes)?;
    let id = token_id(&id)?;
    let grace = match req.grace_seconds {
        Some(g) if g < 0 => {
            return Err(ApiError::bad_request(
                "Invalid grace_seconds: must not be negative",
            ));
        }
        Some(g) => Some(Duration::from_secs(g.unsigned_abs())),
        None => None,
    };
    // Rotation hands out a new secret with the old token's permissions and restrictions:
    // a bearer caller must be at least as broad (a narrow token must not mint a copy of a
    // broader one). A bearer token's rotation keeps the old token's expiry, so no token outlives the
    // lifetime it was given by rotating itself (or a sibling) again and again; the account,
    // which may create tokens of any lifetime, gets a new token with the same lifetime.
    may_manage(&s, &caller, id).await?;
    let issued = match caller {
        Caller::Basic(_) => s.tokens.rotate(caller.owner(), id, grace).await?,
        Caller::Bearer(_) => {
            s.tokens
                .rotate_keeping_expiry(caller.owner(), id, grace)
                .await?
        }
    };
    tracing::info!(
        old = %id,
        new = %issued.record.id,
        owner = %issued.record.owner,
        grace_seconds = grace.map_or(0, |g| g.as_secs()),
        "token rotated"
    );
    let action = Action {
        event: "token.rotate",
        owner: issued.record.owner.clone(),
        token_id: issued.record.id,
        token_name: Some(issued.record.name.clone()),
    };
    Ok(tag(issued_response(&s, issued), action))
}

/// Releases the machine binding of one of the caller's tokens (a kind with a binding), so
/// the next machine that uses it takes the seat. Once every 24 hours per token.
#[cfg_attr(feature = "openapi", utoipa::path(
    post,
    path = "/tokens/{id}/release",
    tag = "tokens",
    operation_id = "release_token",
    params(("id" = String, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Released (or it was not bound); the next machine to use the token binds it"),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: the bearer token lacks `tokens:write`, or the token to release is less restricted than it (a permission, the kind or binding, `allowed_ips`, expiry or `rate_limit`); `cross_site_request`: a browser sent it from another site", body = ErrorBody),
        (status = 404, description = "No such live token of this owner", body = ErrorBody),
        (status = 409, description = "`release_too_soon` (the message names the next allowed time) or `not_bindable`", body = ErrorBody),
        (status = 503, description = "The store failed", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = ["tokens:write"])),
))]
pub(crate) async fn release_token(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ip: CallerIp,
) -> Result<Response, ApiError> {
    let caller = caller(&s, &headers, ip, Accept::BasicOrBearer("tokens:write")).await?;
    let id = token_id(&id)?;
    may_manage(&s, &caller, id).await?;
    s.tokens.release_binding(caller.owner(), id).await?;
    tracing::info!(token_id = %id, owner = %caller.owner(), "token binding released");
    let action = Action {
        event: "token.release",
        owner: caller.owner().to_owned(),
        token_id: id,
        token_name: None,
    };
    Ok(tag(StatusCode::NO_CONTENT.into_response(), action))
}

/// The identity behind the bearer token.
#[cfg_attr(feature = "openapi", utoipa::path(
    get,
    path = "/me",
    tag = "identity",
    operation_id = "me",
    responses(
        (status = 200, description = "The caller's identity", body = IdentityView),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 503, description = "The store failed", body = ErrorBody),
    ),
    security(("bearer" = [])),
))]
pub(crate) async fn me(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    ip: CallerIp,
) -> Result<Response, ApiError> {
    let Caller::Bearer(id) = caller(&s, &headers, ip, Accept::BearerOnly).await? else {
        return Err(crate::middleware::Rejection::new(
            crate::middleware::RejectionKind::MissingToken,
        )
        .into());
    };
    Ok(Json(IdentityView::from(&id)).into_response())
}

/// This API's OpenAPI 3.1 document.
#[cfg(feature = "openapi")]
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")),
)]
pub(crate) async fn openapi_json(State(s): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        s.openapi.clone(),
    )
        .into_response()
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such route")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed on this route",
    )
}
