//! Audit of the management API: `token.create`, `token.revoke`, `token.rotate`,
//! `token.release` and `token.update` events
//! (with [`Management::with_audit`](super::Management::with_audit)), and `GET /audit` to
//! read them back (with [`Management::with_audit_reader`](super::Management::with_audit_reader)):
//! a caller with `audit:read` reads the events whose owner it is; every owner's events need
//! `audit:read_all` as well (`audit:*` and `*` hold both).

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Shared;
use super::auth::{Accept, Caller};
#[cfg(feature = "openapi")]
use super::error::ErrorBody;
use super::error::{ApiError, ErrorCode};
use crate::audit::{AuditEvent, AuditFilter, Decision};
use crate::middleware::RejectionKind;
use crate::store::TokenId;

/// What a management handler did, left in the response's extensions for the audit event.
#[derive(Debug, Clone)]
pub(crate) struct Action {
    /// `token.create`, `token.revoke`, `token.rotate`.
    pub(crate) event: &'static str,
    /// The account acting (the tokens' owner).
    pub(crate) owner: String,
    /// The token created, revoked, or the new token of a rotation.
    pub(crate) token_id: TokenId,
    /// Its name, when known.
    pub(crate) token_name: Option<String>,
    /// What else the event records as its `reason` (e.g. the fields an update changed, or
    /// the administrator who revoked another owner's token); never a secret.
    pub(crate) detail: Option<String>,
}

/// Tags `res` with `action` for the audit event.
pub(crate) fn tag(mut res: Response, action: Action) -> Response {
    res.extensions_mut().insert(action);
    res
}

/// The event a management write records, by method and route; `None` for reads.
fn event_of(method: &Method, path: &str) -> Option<&'static str> {
    let path = path.trim_end_matches('/');
    match *method {
        Method::POST if path.ends_with("/rotate") => Some("token.rotate"),
        Method::POST if path.ends_with("/release") => Some("token.release"),
        Method::POST if path.ends_with("/tokens/import") => Some("token.import"),
        Method::POST if path.ends_with("/tokens") || path == "/tokens" => Some("token.create"),
        Method::DELETE if path.contains("/tokens/") => Some("token.revoke"),
        Method::PATCH if path.contains("/tokens/") => Some("token.update"),
        _ => None,
    }
}

/// Records one audit event per management write.
///
/// A write that took effect (a 2xx with an [`Action`]) is written to the sink before the
/// answer leaves ([`AuditLog::write_now`](crate::audit::AuditLog::write_now)): a flood of
/// request events cannot push it out of the queue. When the sink fails or does not answer
/// within the log's write timeout, the answer is 503 `store_unavailable` instead, and what
/// can be undone is: a token just created (or the successor of a rotation) is revoked
/// before anyone sees its secret, so no unaudited token stays usable. A revocation stays
/// done; a released binding stays released (freeing a seat grants nothing). An event for the
/// refused write is then queued (`deny`, reason `audit_unavailable`).
///
/// Refused attempts change nothing and are queued like request events (shed, and counted,
/// under a flood, and past the address's
/// [denial budget](crate::audit::AuditLog::with_denial_budget)).
pub(crate) async fn record(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let Some(audit) = s.audit.clone() else {
        return next.run(req).await;
    };
    let Some(event) = event_of(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let path = crate::audit::request_path(req.extensions(), req.uri());
    let method = req.method().to_string();
    let addrs = s.client_ip.resolve(req.extensions(), req.headers());
    let client_ip = addrs.client;
    let request_id = crate::audit::request_id(req.headers());
    let res = next.run(req).await;
    if res
        .extensions()
        .get::<super::import::AuditedByHandler>()
        .is_some()
    {
        return res;
    }
    let action = res.extensions().get::<Action>().cloned();
    let allowed = action.is_some() && res.status().is_success();
    let reason = if allowed {
        action.as_ref().and_then(|a| a.detail.clone())
    } else if let Some(k) = res.extensions().get::<RejectionKind>() {
        Some(k.reason().to_owned())
    } else {
        Some(
            res.extensions()
                .get::<ErrorCode>()
                .map_or("error", |c| c.0)
                .to_owned(),
        )
    };
    let mut e = AuditEvent {
        timestamp: s.tokens.now(),
        event: action.as_ref().map_or(event, |a| a.event).to_owned(),
        api_token_id: action.as_ref().map(|a| a.token_id),
        api_token_name: action.as_ref().and_then(|a| a.token_name.clone()),
        owner: action.as_ref().map(|a| a.owner.clone()),
        method,
        path,
        status_code: res.status().as_u16(),
        rbac_decision: if allowed {
            Decision::Allow
        } else {
            Decision::Deny
        },
        reason,
        client_ip,
        request_id,
        details: None,
    };
    let Some(action) = action.filter(|_| allowed) else {
        // A refusal changed nothing: budgeted per address like the layer's.
        audit.record_request(e, addrs.failure_key());
        return res;
    };
    if audit.write_now(e.clone()).await.is_ok() {
        return res;
    }
    // The write took effect but is not on record: take back what grants access.
    if matches!(action.event, "token.create" | "token.rotate") {
        match s.tokens.revoke(&action.owner, action.token_id).await {
            Ok(()) => {
                tracing::warn!(token_id = %action.token_id, "audit unavailable; the new token was revoked");
            }
            Err(error) => {
                tracing::error!(%error, token_id = %action.token_id, "audit unavailable and the new token could not be revoked");
            }
        }
    }
    let refused = ApiError::audit_unavailable().into_response();
    e.status_code = refused.status().as_u16();
    e.rbac_decision = Decision::Deny;
    e.reason = Some("audit_unavailable".to_owned());
    audit.record(e);
    refused
}

/// The query of `GET /audit`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    token_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
}

fn time_param(name: &str, v: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    v.map(|v| {
        OffsetDateTime::parse(v, &Rfc3339)
            .map_err(|_| ApiError::bad_request(format!("Invalid {name}: expected RFC 3339")))
    })
    .transpose()
}

fn parse_filter(query: Option<&str>) -> Result<AuditFilter, ApiError> {
    let q: Query = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("Invalid query: {e}")))?;
    let limit = match q.limit.as_deref() {
        None => AuditFilter::DEFAULT_LIMIT,
        Some(v) => match v.trim().parse::<u32>() {
            Ok(n) if (1..=AuditFilter::MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Invalid limit: a whole number from 1 to {}",
                    AuditFilter::MAX_LIMIT
                )));
            }
        },
    };
    let token_id = q
        .token_id
        .as_deref()
        .map(|v| {
            v.parse::<TokenId>()
                .map_err(|_| ApiError::bad_request("Invalid token_id"))
        })
        .transpose()?;
    let since = time_param("since", q.since.as_deref())?;
    let until = time_param("until", q.until.as_deref())?;
    Ok(AuditFilter {
        owner: None,
        token_id,
        since,
        until,
        limit,
    })
}

/// The permission to read every owner's audit events; with `audit:read` alone a caller
/// reads only the events whose owner it is.
pub(crate) const READ_ALL: &str = "audit:read_all";

/// `GET /audit`: the newest events first, filtered by `token_id`, `since`, `until` (RFC
/// 3339) and `limit` (default 100, at most 1000). Needs `audit:read` (Basic: the account's;
/// Bearer: the token's effective permissions), and shows only the events whose owner is
/// the caller (its tokens' decisions and its own management actions) unless the caller also
/// holds `audit:read_all`.
#[cfg_attr(feature = "openapi", utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    operation_id = "list_audit",
    params(
        ("token_id" = Option<String>, Query, nullable = false, format = Uuid, description = "Only the events about this token"),
        ("since" = Option<String>, Query, nullable = false, format = DateTime, description = "Only events at or after this time (RFC 3339)"),
        ("until" = Option<String>, Query, nullable = false, format = DateTime, description = "Only events at or before this time (RFC 3339); before `since`, the answer is empty"),
        ("limit" = Option<u32>, Query, nullable = false, minimum = 1, maximum = 1000, description = "At most this many events (default 100)"),
    ),
    responses(
        (status = 200, description = "The events, newest first: the caller's own, or every owner's with `audit:read_all`", body = Vec<crate::audit::AuditEvent>),
        (status = 400, description = "An invalid or unknown query parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 403, description = "The caller lacks `audit:read`", body = ErrorBody),
        (status = 503, description = "The store failed", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = ["audit:read"])),
))]
pub(crate) async fn list(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    ip: super::handlers::CallerIp,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let caller =
        super::handlers::caller(&s, &headers, ip, Accept::BasicOrBearer("audit:read")).await?;
    if let Caller::Account(account) = &caller
        && !account.permissions.allows("audit:read")
    {
        return Err(ApiError::insufficient_scope(
            "Reading the audit log needs the permission audit:read".to_owned(),
        ));
    }
    let mut filter = parse_filter(query.as_deref())?;
    if !caller.permissions().allows(READ_ALL) {
        filter.owner = Some(caller.owner().to_owned());
    }
    let Some(reader) = &s.audit_reader else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such route",
        ));
    };
    // `since` after `until` is a range no event falls in.
    if let (Some(since), Some(until)) = (filter.since, filter.until)
        && since > until
    {
        return Ok(Json(Vec::<AuditEvent>::new()).into_response());
    }
    let events = reader.list_audit(&filter).await.map_err(|error| {
        tracing::warn!(%error, "audit store failed; answering 503");
        ApiError::store_unavailable()
    })?;
    Ok(Json(events).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_parsed_and_bad_ones_refused() {
        let f = parse_filter(None).unwrap();
        assert_eq!(f.limit, 100);
        let f = parse_filter(Some(
            "since=2024-01-15T10:30:00Z&until=2024-01-16T00:00:00%2B01:00&limit=1000",
        ))
        .unwrap();
        assert_eq!(f.limit, 1000);
        assert!(f.since.is_some() && f.until.is_some());
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "since=yesterday",
            "token_id=nope",
            "colour=red",
        ] {
            assert!(parse_filter(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(event_of(&Method::POST, "/tokens"), Some("token.create"));
        assert_eq!(
            event_of(&Method::POST, "/tokens/x/rotate"),
            Some("token.rotate")
        );
        assert_eq!(event_of(&Method::DELETE, "/tokens/x"), Some("token.revoke"));
        assert_eq!(
            event_of(&Method::POST, "/admin/tokens/import"),
            Some("token.import")
        );
        assert_eq!(event_of(&Method::GET, "/tokens"), None);
    }
}
