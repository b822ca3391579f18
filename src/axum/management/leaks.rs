//! `POST /leaks`: leak reports in the style of a secret-scanning partner (see
//! [`LeakReports`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::Shared;
use super::auth::sign_in_key;
use super::body::{check_length, read_body};
use super::error::ApiError;
#[cfg(feature = "openapi")]
use super::error::ErrorBody;
use super::handlers::CallerIp;
use crate::audit::{AuditEvent, Decision};
use crate::error::ConfigError;
use crate::signature::SIGNATURE_HEADER;

/// The header carrying a reporter key: `X-Keygate-Reporter-Key: <key>`. Not
/// `Authorization`, which carries API tokens on every other route.
pub const REPORTER_KEY_HEADER: &str = "x-keygate-reporter-key";
/// Default most entries in one report.
pub const DEFAULT_MAX_LEAK_ENTRIES: usize = 100;
/// Longest `token`, `url` or `source` of an entry, in characters.
pub const MAX_LEAK_FIELD_LEN: usize = 1024;
/// Shortest reporter key or signing secret accepted, in bytes.
pub const MIN_REPORTER_SECRET_LEN: usize = 16;

/// Who may report leaked tokens to `POST /leaks`
/// ([`Management::with_leak_reports`](super::Management::with_leak_reports)): a reporter
/// key, sent as `X-Keygate-Reporter-Key: <key>`, and/or an HMAC-SHA256 secret, with which
/// the reporter signs the raw body (`X-Keygate-Signature: sha256=<hex>`, as GitHub signs
/// its webhooks; see [`crate::signature`]). A request needs one of them; every one it
/// sends must be right.
///
/// Both are compared in constant time, and neither is printed by `Debug`.
#[derive(Clone)]
#[must_use]
pub struct LeakReports {
    /// SHA-256 of the reporter key: compared digest to digest, so that the comparison
    /// takes the same time whatever the length of the key presented.
    key: Option<[u8; 32]>,
    secret: Option<Arc<Zeroizing<Vec<u8>>>>,
    max_entries: usize,
}

impl std::fmt::Debug for LeakReports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeakReports")
            .field("reporter_key", &self.key.map(|_| "[redacted]"))
            .field(
                "signing_secret",
                &self.secret.as_ref().map(|_| "[redacted]"),
            )
            .field("max_entries", &self.max_entries)
            .finish()
    }
}

impl Default for LeakReports {
    fn default() -> Self {
        Self::new()
    }
}

impl LeakReports {
    /// No reporter yet: add a key or a secret (without either, every report is refused).
    pub fn new() -> Self {
        Self {
            key: None,
            secret: None,
            max_entries: DEFAULT_MAX_LEAK_ENTRIES,
        }
    }

    /// Accepts reports sent with `X-Keygate-Reporter-Key: <key>`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::WeakSecret`] when `key` is shorter than
    /// [`MIN_REPORTER_SECRET_LEN`] bytes or is not visible ASCII (it travels in a header).
    pub fn with_reporter_key(mut self, key: &str) -> Result<Self, ConfigError> {
        if key.len() < MIN_REPORTER_SECRET_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::WeakSecret("leak reporter key"));
        }
        self.key = Some(Sha256::digest(key.as_bytes()).into());
        Ok(self)
    }

    /// Accepts reports whose raw body is signed with `secret`
    /// (`X-Keygate-Signature: sha256=<hex of HMAC-SHA256(secret, body)>`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::WeakSecret`] when `secret` is shorter than
    /// [`MIN_REPORTER_SECRET_LEN`] bytes.
    pub fn with_signing_secret(mut self, secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let secret = secret.as_ref();
        if secret.len() < MIN_REPORTER_SECRET_LEN {
            return Err(ConfigError::WeakSecret("leak signing secret"));
        }
        self.secret = Some(Arc::new(Zeroizing::new(secret.to_vec())));
        Ok(self)
    }

    /// At most `n` entries in one report (default [`DEFAULT_MAX_LEAK_ENTRIES`]; at least
    /// 1); more are refused with 400.
    pub fn with_max_entries(mut self, n: usize) -> Self {
        self.max_entries = n.max(1);
        self
    }

    /// The most entries a report may hold.
    #[must_use]
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Checks the credentials of a report whose raw body is `body`.
    fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
        let key = headers.get(REPORTER_KEY_HEADER);
        let signature = headers.get(SIGNATURE_HEADER);
        if key.is_none() && signature.is_none() {
            return Err(missing());
        }
        let key_ok = key.is_none_or(|v| {
            self.key.is_some_and(|expected| {
                let given: [u8; 32] = Sha256::digest(v.as_bytes()).into();
                bool::from(given.ct_eq(&expected))
            })
        });
        let signature_ok = signature.is_none_or(|v| {
            self.secret.as_ref().is_some_and(|secret| {
                v.to_str()
                    .is_ok_and(|v| crate::signature::verify(secret, body, v))
            })
        });
        if key_ok && signature_ok {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_reporter",
                "Invalid reporter key or signature",
            ))
        }
    }
}

fn missing() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing_credentials",
        "Missing credentials: send the reporter key in X-Keygate-Reporter-Key or sign the body (X-Keygate-Signature: sha256=<hex>)",
    )
}

/// One entry of a leak report.
#[derive(Debug, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct LeakEntry {
    /// The leaked token, as found.
    token: String,
    /// Where it was found.
    url: String,
    /// Who or what found it (e.g. `github-secret-scanning`, `content`, `commit`).
    source: String,
    /// The kind of secret, as a scanning partner names it; accepted and ignored.
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

/// What was done about one entry of a leak report, in the order of the report.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub(crate) struct LeakResult {
    /// The token's first 12 characters (its display hint) when it is a well-formed token;
    /// `null` otherwise. Never the whole token.
    token_hint: Option<String>,
    /// Whether a token with this value exists (in any state).
    found: bool,
    /// Whether this report revoked it (it still authenticated), with the tokens that
    /// replaced it by rotation.
    revoked: bool,
}

fn check_field(name: &str, i: usize, v: &str) -> Result<(), ApiError> {
    if v.chars().count() > MAX_LEAK_FIELD_LEN {
        return Err(ApiError::bad_request(format!(
            "Invalid entry {i}: {name} must be at most {MAX_LEAK_FIELD_LEN} characters"
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "Invalid entry {i}: {name} must not contain control characters"
        )));
    }
    Ok(())
}

fn parse_report(body: &[u8], max: usize) -> Result<Vec<LeakEntry>, ApiError> {
    // serde's message may quote the value it could not read (a reported token): name
    // only where it failed.
    let entries: Vec<LeakEntry> = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "Invalid JSON body: expected an array of {{\"token\", \"url\", \"source\"}} \
             (at line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if entries.is_empty() {
        return Err(ApiError::bad_request("Invalid report: no entries"));
    }
    if entries.len() > max {
        return Err(ApiError::bad_request(format!(
            "Invalid report: at most {max} entries"
        )));
    }
    for (i, e) in entries.iter().enumerate() {
        check_field("token", i, &e.token)?;
        check_field("url", i, &e.url)?;
        check_field("source", i, &e.source)?;
        if let Some(k) = &e.kind {
            check_field("type", i, k)?;
        }
    }
    Ok(entries)
}

/// Reports leaked tokens: each one that still authenticates is revoked at once.
#[cfg_attr(feature = "openapi", utoipa::path(
    post,
    path = "/leaks",
    tag = "leaks",
    operation_id = "report_leaks",
    request_body(
        description = "The leaked tokens, at most 100 by default: `[{\"token\", \"url\", \"source\"}]` (a `type` field is accepted and ignored). Authenticated by `X-Keygate-Reporter-Key` or an HMAC-SHA256 signature of the raw body in `X-Keygate-Signature: sha256=<hex>`.",
        content((Vec<LeakEntry> = "application/json")),
    ),
    responses(
        (status = 200, description = "One result per entry, in order: whether the token exists and whether this report revoked it", body = Vec<LeakResult>),
        (status = 400, description = "Not a JSON array of entries, no entries, too many, or a field too long or with control characters", body = ErrorBody),
        (status = 401, description = "`missing_credentials`: neither a reporter key nor a signature", body = ErrorBody),
        (status = 403, description = "`invalid_reporter`: a wrong reporter key or signature; `cross_site_request`: a browser sent it from another site", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many failed attempts from this address", body = ErrorBody),
        (status = 503, description = "The store or the audit log failed (revocations already made stay made)", body = ErrorBody),
    ),
    security(("reporter_key" = []), ("reporter_signature" = [])),
))]
pub(crate) async fn report(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    origin: CallerIp,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(leaks) = &s.leaks else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not found",
        ));
    };
    check_length(&headers, s.body_limit)?;
    if headers.get(REPORTER_KEY_HEADER).is_none() && headers.get(SIGNATURE_HEADER).is_none() {
        audit_denial(&s, &origin, 401, "missing_credentials");
        return Err(missing());
    }
    let key = sign_in_key(&origin.addrs);
    if let Some(f) = &s.failures
        && let Some(wait) = f.blocked(key).await.map_err(limits_down)?
    {
        audit_denial(&s, &origin, 429, "rate_limited");
        return Err(rate_limited(wait));
    }
    let bytes = read_body(body, s.body_limit).await?;
    if let Err(e) = leaks.check(&headers, &bytes) {
        if let Some(f) = &s.failures
            && let Some(wait) = f.fail(key).await.map_err(limits_down)?
        {
            audit_denial(&s, &origin, 429, "rate_limited");
            return Err(rate_limited(wait));
        }
        audit_denial(&s, &origin, 403, "invalid_reporter");
        return Err(e);
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let essence = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type must be application/json",
            ));
        }
    }
    let entries = parse_report(&bytes, leaks.max_entries)?;

    let mut results = Vec::with_capacity(entries.len());
    let mut events = Vec::new();
    let mut failed = None;
    for e in &entries {
        let hint = crate::token::parse(&e.token)
            .ok()
            .map(|p| p.hint().to_owned());
        match s.tokens.revoke_leaked(&e.token).await {
            Ok(out) => {
                if let Some(record) = &out.record {
                    let mut event =
                        s.tokens
                            .leak_event(&e.token, record, out.revoked, &e.url, &e.source);
                    event.method = origin.method.to_string();
                    event.path.clone_from(&origin.path);
                    event.status_code = 200;
                    event.client_ip = origin.addrs.client;
                    event.request_id.clone_from(&origin.request_id);
                    events.push(event);
                }
                results.push(LeakResult {
                    token_hint: hint,
                    found: out.record.is_some(),
                    revoked: out.revoked,
                });
            }
            Err(error) => {
                failed = Some(ApiError::from(error));
                break;
            }
        }
    }
    // What was revoked is on record before the answer leaves (or the answer is 503).
    if let Some(audit) = &s.audit {
        for event in events {
            if audit.write_now(event).await.is_err() {
                return Err(ApiError::audit_unavailable());
            }
        }
    }
    if let Some(error) = failed {
        return Err(error);
    }
    let mut res = (StatusCode::OK, Json(results)).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(res)
}

fn limits_down(error: crate::StoreError) -> ApiError {
    tracing::warn!(%error, "failure limits unavailable; answering 503");
    ApiError::store_unavailable()
}

fn rate_limited(wait: std::time::Duration) -> ApiError {
    crate::middleware::Rejection::new(crate::middleware::RejectionKind::RateLimited)
        .with_retry_after(crate::rate_limit::ceil_secs(wait))
        .into()
}

/// A refused report: a `leaks.report` denial, budgeted per address like sign-in failures.
fn audit_denial(s: &Shared, origin: &CallerIp, status_code: u16, reason: &str) {
    let Some(audit) = &s.audit else { return };
    audit.record_request(
        AuditEvent {
            timestamp: s.tokens.now(),
            event: "leaks.report".into(),
            api_token_id: None,
            api_token_name: None,
            owner: None,
            method: origin.method.to_string(),
            path: origin.path.clone(),
            status_code,
            rbac_decision: Decision::Deny,
            reason: Some(reason.to_owned()),
            client_ip: origin.addrs.client,
            request_id: origin.request_id.clone(),
            details: None,
        },
        origin.addrs.failure_key(),
    );
}
