//! The route handlers.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::Shared;
use super::audit::{Action, tag};
use super::auth::{Accept, Caller};
use super::body::{
    check_length, keep_successors, parse_create, parse_nets, parse_rotate, read_body,
};
use super::error::ApiError;
#[cfg(feature = "openapi")]
use super::error::ErrorBody;
use super::scope::{may_manage, may_rotate};
#[cfg(feature = "openapi")]
use super::types::{CreateToken, CreateTokenForm, RotateToken, RotateTokenForm, Successors};
use super::types::{IdentityView, TokenStatus, TokenView};
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
    /// With host sign-in and no bearer token: what the host said.
    pub(crate) host: Option<super::host::HostOutcome>,
}

impl axum::extract::FromRequestParts<Arc<Shared>> for CallerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        s: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let addrs = s.client_ip.resolve(&parts.extensions, &parts.headers);
        let host = match &s.host {
            Some(gate) if !super::auth::has_bearer(&parts.headers) => {
                // A client over its failure budget is refused without asking the host (and
                // so is every client while shared limits cannot be reached: the sign-in then
                // answers 503).
                let blocked = match &s.failures {
                    Some(f) => {
                        !matches!(f.blocked(super::auth::sign_in_key(&addrs)).await, Ok(None))
                    }
                    None => false,
                };
                Some(if blocked {
                    super::host::HostOutcome::Anonymous
                } else {
                    gate.ask(parts, s.tokens.now()).await
                })
            }
            _ => None,
        };
        Ok(Self {
            addrs,
            method: parts.method.clone(),
            path: crate::audit::request_path(&parts.extensions, &parts.uri),
            request_id: crate::audit::request_id(&parts.headers),
            host,
        })
    }
}

pub(crate) fn token_id(raw: &str) -> Result<TokenId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found())
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
        description = "Optional: JSON, or a form such as `description=My+automation+script`. Every field is optional, and so is the body: none at all creates a token with the defaults (a `token-<n>` name, the account's permissions).",
        content(
            (CreateToken = "application/json"),
            (CreateTokenForm = "application/x-www-form-urlencoded"),
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
    let Caller::Account(account) = caller(&s, &headers, ip, Accept::BasicOnly).await? else {
        return Err(ApiError::basic_required());
    };
    super::admin::admin_only(&s, &account.permissions)?;
    let bytes = read_body(body, s.body_limit).await?;
    let req = parse_create(&headers, &bytes)?;

    let role = match req.role {
        Some(r) => {
            let p = s
                .tokens
                .roles()
                .get(&r)
                .cloned()
                .ok_or_else(|| ApiError::bad_request(format!("Unknown role {r:?}")))?;
            Some((r, p))
        }
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
    if let Some(m) = req.metadata {
        new = new.metadata(m);
    }
    if let Some(e) = req.expires_in {
        if e <= 0 {
            return Err(ApiError::bad_request(
                "Invalid expires_in: must be a positive number of seconds",
            ));
        }
        new = new.expires_in(Duration::from_secs(e.unsigned_abs()));
    }
    // Explicit permissions, else the role's, else the account's own; never beyond the
    // account's.
    let grant = account.grant(role, explicit).map_err(|e| {
        ApiError::insufficient_scope(format!(
            "Missing permission: {} (a token cannot hold more than its account)",
            e.missing
        ))
    })?;
    let new = grant.apply(new);

    let issued = s.tokens.issue(new).await?;
    tracing::info!(
        token_id = %issued.record.id,
        owner = %issued.record.owner,
        name = %issued.record.name,
        "token created"
    );
    let action = Action {
        event: "token.create",
        owner: issued.record.owner.to_string(),
        token_id: issued.record.id,
        token_name: Some(issued.record.name.to_string()),
        detail: None,
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
        .filter(|r| {
            r.extras().revoked_at.is_none()
                && (r.extras().replaced_by.is_none() || r.is_valid_at(now))
        })
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
        ("successors" = inline(Option<Successors>), Query, nullable = false, description = "`revoke` (the default): the tokens that replaced this one by rotation are revoked too, so revoking a leaked token stops whoever rotated it; `keep`: only this token (ends a rotation's grace early)"),
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
    super::admin::admin_only(&s, caller.permissions())?;
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
        detail: None,
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
        description = "Optional: how long the old token keeps working. No body at all is no grace.",
        content(
            (RotateToken = "application/json"),
            (RotateTokenForm = "application/x-www-form-urlencoded"),
        ),
    ),
    responses(
        (status = 201, description = "The new token; `token` is shown this once (`Cache-Control: no-store`)", body = TokenView),
        (status = 400, description = "An invalid field or a malformed body", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: the bearer token lacks `tokens:write`, the token to rotate is not of its own lineage (a bearer token rotates only itself; another token needs the account's password or session), or it is less restricted than the bearer token (a permission, the kind or binding, `allowed_ips`, expiry or `rate_limit`); `cross_site_request`: a browser sent it from another site", body = ErrorBody),
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
    super::admin::admin_only(&s, caller.permissions())?;
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
    // lifetime it was given by rotating itself again and again; the account,
    // which may create tokens of any lifetime, gets a new token with the same lifetime.
    may_rotate(&s, &caller, id).await?;
    let issued = match caller {
        Caller::Account(_) => s.tokens.rotate(caller.owner(), id, grace).await?,
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
        owner: issued.record.owner.to_string(),
        token_id: issued.record.id,
        token_name: Some(issued.record.name.to_string()),
        detail: None,
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
    super::admin::admin_only(&s, caller.permissions())?;
    let id = token_id(&id)?;
    may_manage(&s, &caller, id).await?;
    s.tokens.release_binding(caller.owner(), id).await?;
    tracing::info!(token_id = %id, owner = %caller.owner(), "token binding released");
    let action = Action {
        event: "token.release",
        owner: caller.owner().to_owned(),
        token_id: id,
        token_name: None,
        detail: None,
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
