//! `PATCH /tokens/{id}`: editing a token in place.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Shared;
use super::admin::admin_only;
use super::audit::{Action, tag};
use super::auth::{Accept, Caller};
use super::body::{check_length, json_object, parse_nets, read_body};
use super::error::ApiError;
#[cfg(feature = "openapi")]
use super::error::ErrorBody;
use super::handlers::{CallerIp, caller, token_id};
use super::scope::may_manage;
use super::types::TokenView;
#[cfg(feature = "openapi")]
use super::types::UpdateToken;
use crate::identity::Permissions;
use crate::record::{Metadata, TokenRecord};
use crate::tokens::{TokenChanges, TokenError};

/// The fields `PATCH /tokens/{id}` accepts.
const FIELDS: [&str; 7] = [
    "name",
    "description",
    "expires_at",
    "expires_in",
    "allowed_ips",
    "metadata",
    "permissions",
];

/// Reads the JSON body into changes; `null` clears `description` and `expires_at`.
fn parse_changes(headers: &HeaderMap, body: &[u8]) -> Result<TokenChanges, ApiError> {
    let json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|t| t == "application/json" || t.ends_with("+json"));
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "Nothing to change: send a JSON object with at least one of: name, description, \
             expires_at, expires_in, allowed_ips, metadata, permissions",
        ));
    }
    if !json {
        return Err(ApiError::unsupported_media_type());
    }
    let map = json_object(body, &FIELDS)?;
    if map.is_empty() {
        return Err(ApiError::bad_request(
            "Nothing to change: give at least one field",
        ));
    }
    let mut changes = TokenChanges::new();
    let text = |key: &str, v: &serde_json::Value| -> Result<String, ApiError> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::bad_request(format!("Invalid {key}: expected a string")))
    };
    if let Some(v) = map.get("name") {
        if v.is_null() {
            return Err(ApiError::bad_request(
                "Invalid name: a token always has a name",
            ));
        }
        changes = changes.name(text("name", v)?);
    }
    if let Some(v) = map.get("description") {
        changes = changes.description(match v {
            serde_json::Value::Null => None,
            v => Some(text("description", v)?),
        });
    }
    match (map.get("expires_at"), map.get("expires_in")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "Give expires_at or expires_in, not both",
            ));
        }
        (Some(serde_json::Value::Null), None) => changes = changes.expires_at(None),
        (Some(v), None) => {
            let at = v
                .as_str()
                .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("Invalid expires_at: expected an RFC 3339 time or null")
                })?;
            changes = changes.expires_at(Some(at));
        }
        (None, Some(v)) => {
            let secs = v
                .as_i64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                        .map(|f| f as i64)
                })
                .filter(|s| *s > 0)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "Invalid expires_in: must be a positive number of seconds",
                    )
                })?;
            changes = changes.expires_in(Duration::from_secs(secs.unsigned_abs()));
        }
        (None, None) => {}
    }
    if let Some(v) = map.get("allowed_ips") {
        let list: Vec<String> = match v {
            serde_json::Value::Null => Vec::new(),
            v => serde_json::from_value(v.clone()).map_err(|_| {
                ApiError::bad_request("Invalid allowed_ips: expected a list of CIDR strings")
            })?,
        };
        changes = changes.allowed_ips(parse_nets(&list)?);
    }
    if let Some(v) = map.get("metadata") {
        let m = match v {
            serde_json::Value::Null => Metadata::new(),
            v => Metadata::from_value(v.clone())
                .map_err(|e| ApiError::bad_request(format!("Invalid metadata: {e}")))?,
        };
        changes = changes.metadata(m);
    }
    if let Some(v) = map.get("permissions") {
        let list: Vec<String> = serde_json::from_value(v.clone()).map_err(|_| {
            ApiError::bad_request("Invalid permissions: expected a list of permissions")
        })?;
        let p = Permissions::parse(&list)
            .map_err(|e| ApiError::bad_request(format!("Invalid permissions: {e}")))?;
        changes = changes.permissions(p);
    }
    Ok(changes)
}

/// A bearer token only narrows what it edits, and never renames: an expiry may only move
/// earlier (and not be cleared), an allow-list may only shrink (each new network within one of the old ones,
/// and not be emptied when there was one). Permissions only narrow for every caller.
fn bearer_narrows(
    target: &TokenRecord,
    changes: &TokenChanges,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    let refuse = |m: &str| {
        ApiError::insufficient_scope(format!("A bearer token may only narrow a token: {m}"))
    };
    // A token's rate budget and its rotation lineage follow its name: a bearer token that
    // renamed itself would start a fresh budget. Renaming needs the account.
    if changes.fields().contains(&"name") {
        return Err(ApiError::insufficient_scope(
            "A bearer token may not rename a token (its rate budget and lineage follow its \
             name); renaming needs the account's password or session"
                .to_owned(),
        ));
    }
    // The host application reads the metadata on the `Identity` and may decide on it (a
    // tenant, a team): whoever holds the token must not rewrite it.
    if changes.fields().contains(&"metadata") {
        return Err(ApiError::insufficient_scope(
            "A bearer token may not change a token's metadata (the application reads it on \
             the identity); that needs the account's password or session"
                .to_owned(),
        ));
    }
    if let Some(new) = changes.new_expiry(now) {
        match (new, target.expires_at) {
            (None, _) => return Err(refuse("it cannot clear an expiry")),
            (Some(n), Some(old)) if n > old => {
                return Err(refuse("an expiry may only move earlier"));
            }
            _ => {}
        }
    }
    if let Some(nets) = changes.new_allowed_ips() {
        if nets.is_empty() {
            if !target.extras().allowed_ips.is_empty() {
                return Err(refuse("it cannot remove the allowed_ips"));
            }
        } else if !target.extras().allowed_ips.is_empty()
            && !nets.iter().all(|n| {
                target
                    .extras()
                    .allowed_ips
                    .iter()
                    .any(|o| o.contains(&n.trunc()))
            })
        {
            return Err(refuse(
                "each new allowed_ips network must lie within one of the old ones",
            ));
        }
    }
    Ok(())
}

/// Edits one of the caller's tokens in place.
#[cfg_attr(feature = "openapi", utoipa::path(
    patch,
    path = "/tokens/{id}",
    tag = "tokens",
    operation_id = "update_token",
    params(("id" = String, Path, description = "The token's id")),
    request_body(
        description = "The fields to change (at least one); a field left out is kept.",
        content((UpdateToken = "application/json")),
    ),
    responses(
        (status = 200, description = "The token as it is now; the change applies from the next request", body = TokenView),
        (status = 400, description = "An invalid or unknown field, both `expires_at` and `expires_in`, nothing to change, or a malformed body", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: new permissions beyond the token's (an edit only narrows), the bearer token lacks `tokens:write`, the token to edit is less restricted than it, it widens an expiry or an allow-list, renames or changes the metadata (a bearer token does neither), or token management is for administrators only; `cross_site_request`: a browser sent it from another site", body = ErrorBody),
        (status = 404, description = "No such live token of this owner", body = ErrorBody),
        (status = 409, description = "`name_taken`: the owner has another live token with this name", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "The store failed", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = ["tokens:write"])),
))]
pub(crate) async fn update_token(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ip: CallerIp,
    body: Body,
) -> Result<Response, ApiError> {
    check_length(&headers, s.body_limit)?;
    let caller = caller(&s, &headers, ip, Accept::BasicOrBearer("tokens:write")).await?;
    admin_only(&s, caller.permissions())?;
    let bytes = read_body(body, s.body_limit).await?;
    let changes = parse_changes(&headers, &bytes)?;
    let id = token_id(&id)?;
    let target = may_manage(&s, &caller, id).await?;
    let now = s.tokens.now();
    if let Caller::Bearer(_) = &caller {
        bearer_narrows(&target, &changes, now)?;
    }
    let fields = changes.fields();
    let record = s
        .tokens
        .update(caller.owner(), id, changes)
        .await
        .map_err(|e| match e {
            TokenError::InvalidExpiry(m) => ApiError::bad_request(format!("Invalid expiry: {m}")),
            e => e.into(),
        })?;
    tracing::info!(token_id = %id, owner = %record.owner, fields = ?fields, "token updated");
    let action = Action {
        event: "token.update",
        owner: record.owner.to_string(),
        token_id: id,
        token_name: Some(record.name.to_string()),
        detail: Some(format!("changed: {}", fields.join(","))),
    };
    let view = TokenView::from_record(&record, s.tokens.now());
    Ok(tag(Json(view).into_response(), action))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str) -> Result<TokenChanges, ApiError> {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        parse_changes(&h, body.as_bytes())
    }

    #[test]
    fn bodies_are_read_field_by_field() {
        let c = json(r#"{"name":"x","description":null,"expires_at":null}"#).unwrap();
        assert_eq!(c.fields(), ["name", "description", "expires_at"]);
        for bad in [
            "{}",
            r#"{"name":null}"#,
            r#"{"colour":"red"}"#,
            r#"{"expires_at":"2030-01-01T00:00:00Z","expires_in":5}"#,
            r#"{"expires_in":0}"#,
            r#"{"expires_at":"tomorrow"}"#,
            r#"{"metadata":[1]}"#,
            r#"{"permissions":"a"}"#,
            r#"{"allowed_ips":["nope"]}"#,
            "[1]",
        ] {
            assert!(json(bad).is_err(), "{bad}");
        }
    }
}
