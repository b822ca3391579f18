//! `POST /admin/tokens/import`: an administrator imports tokens another system issued, by
//! their SHA-256, so that their holders keep using them (see [`Tokens::import`]).
//!
//! The body is a JSON array of [`ImportEntry`] (or JSON Lines, one entry a line, with
//! `Content-Type: application/jsonl` or `application/x-ndjson`), at most
//! [`MAX_IMPORT_ENTRIES`] entries and [`IMPORT_BODY_LIMIT`] bytes. The whole body is checked
//! first: an entry that is not what the schema says (a missing or unknown field, a hash that
//! is not 64 hex digits, an invalid name, permission or time) is a 400 naming it, and
//! nothing is imported. Then each entry is imported on its own: the answer is 200 with one
//! result per entry, its `id` or its `error` and `code` (`name_taken`, `token_limit`,
//! `duplicate`, `insufficient_scope`, `invalid_request` for an unknown kind or role, an
//! expiry that has passed…), so a partial import is plain to see and the failed entries
//! can be sent again.
//!
//! [`Tokens::import`]: crate::Tokens::import

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Shared;
use super::auth::{Accept, Caller};
use super::body::{check_length, read_body};
use super::error::ApiError;
#[cfg(feature = "openapi")]
use super::error::ErrorBody;
use super::handlers::{CallerIp, caller};
use crate::audit::{AuditEvent, Decision};
use crate::identity::Permissions;
use crate::permissions::TOKENS_ADMIN;
use crate::store::TokenId;
use crate::token::TokenHash;
use crate::tokens::{ImportToken, TokenError};

/// Most entries in one import request.
pub const MAX_IMPORT_ENTRIES: usize = 1000;
/// Largest import request body: 1 MiB (the router's body limit applies to the other routes).
pub const IMPORT_BODY_LIMIT: usize = 1024 * 1024;

/// One token to import.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportEntry {
    /// The owner (an account's email, or any owner name of the other system).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub owner: String,
    /// Unique among the owner's live tokens, 1–100 printable characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub name: String,
    /// The SHA-256 of the whole token (prefix included), 64 hexadecimal digits.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-fA-F]{64}$"))]
    pub hash: String,
    /// The kind by name (default: the server's first kind).
    #[serde(default)]
    pub kind: Option<String>,
    /// Explicit permissions (within the role's, when a role is given).
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
    /// A role of the server's; the token gets its permissions.
    #[serde(default)]
    pub role: Option<String>,
    /// Free text, 1–100 printable characters.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub description: Option<String>,
    /// When the token stops working (RFC 3339, in the future); left out: never.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub expires_at: Option<String>,
    /// When the other system created it (RFC 3339, not in the future); default now.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: Option<String>,
    /// The display hint, at most 12 characters (default: the kind's prefix, `_` and `…`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 12))]
    pub hint: Option<String>,
}

impl ImportEntry {
    /// Checks the entry's syntax (what the schema says: texts, the hash, permissions,
    /// times) and turns it into the library's request, created by `created_by`.
    ///
    /// # Errors
    ///
    /// A message naming the first invalid field.
    pub fn into_request(self, created_by: &str) -> Result<ImportToken, String> {
        check_entry(self).map(|c| c.request(created_by))
    }
}

/// The outcome of one entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportResult {
    /// The entry's position in the request, from 0.
    pub index: usize,
    /// The imported token's id.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<TokenId>,
    /// Why the entry was not imported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A stable code for the failure: `invalid_request`, `insufficient_scope`,
    /// `name_taken`, `token_limit` or `duplicate` (a token with this hash is already
    /// stored; it is never overwritten).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// The answer to an import.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportResponse {
    /// How many entries were imported.
    pub imported: usize,
    /// How many were not.
    pub failed: usize,
    /// One result per entry, in the request's order.
    pub results: Vec<ImportResult>,
}

/// The handler tagged its answer: it wrote the audit events itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuditedByHandler;

/// Imports tokens of another system by their SHA-256 (administrators only).
#[cfg_attr(feature = "openapi", utoipa::path(
    post,
    path = "/admin/tokens/import",
    tag = "admin",
    operation_id = "import_tokens",
    request_body(
        description = "A JSON array of at most 1000 entries (or, with `Content-Type: application/jsonl`, one JSON object a line). Each entry is imported on its own.",
        content((Vec<ImportEntry> = "application/json")),
    ),
    responses(
        (status = 200, description = "One result per entry: its `id`, or its `error` and `code`", body = ImportResponse),
        (status = 400, description = "A body that is not a JSON array (or JSON Lines)", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials; `basic_auth_required`: a bearer token (an import needs the account's sign-in)", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`: the caller lacks `tokens:admin`; `cross_site_request`: a browser sent it from another site", body = ErrorBody),
        (status = 413, description = "More than 1000 entries, or a body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Neither JSON nor JSON Lines", body = ErrorBody),
        (status = 503, description = "The store failed, or an imported token's audit event could not be written (that token was revoked; the entries before it were imported)", body = ErrorBody),
    ),
    security(("basic" = [])),
))]
pub(crate) async fn import_tokens(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    ip: CallerIp,
    body: Body,
) -> Result<Response, ApiError> {
    check_length(&headers, IMPORT_BODY_LIMIT)?;
    let method = ip.method.to_string();
    let path = ip.path.clone();
    let request_id = ip.request_id.clone();
    let client_ip = ip.addrs.client;
    // Like `POST /tokens`, an import needs the account's sign-in, never a bearer token:
    // whoever imports a hash may know its secret, so a leaked token could otherwise mint a
    // token outside its own lineage, expiry and allow-list that outlives its revocation.
    let caller = caller(&s, &headers, ip, Accept::BasicOnly).await?;
    if let Caller::Account(account) = &caller
        && !account.permissions.allows(TOKENS_ADMIN)
    {
        return Err(ApiError::insufficient_scope(format!(
            "Importing tokens needs the permission {TOKENS_ADMIN}"
        )));
    }
    let bytes = read_body(body, IMPORT_BODY_LIMIT).await?;
    let entries = parse_entries(&headers, &bytes)?;

    let event =
        |id: Option<TokenId>, name: Option<String>, owner: Option<String>, reason: Option<&str>| {
            AuditEvent {
                timestamp: s.tokens.now(),
                event: "token.import".to_owned(),
                api_token_id: id,
                api_token_name: name,
                owner,
                method: method.clone(),
                path: path.clone(),
                // A refused entry is recorded with the status its code has elsewhere in the
                // API (the request itself was answered 200).
                status_code: match reason {
                    None => 200,
                    Some("insufficient_scope") => 403,
                    Some("name_taken" | "token_limit" | "duplicate") => 409,
                    Some(_) => 400,
                },
                rbac_decision: if reason.is_some() {
                    Decision::Deny
                } else {
                    Decision::Allow
                },
                reason: reason.map(str::to_owned),
                client_ip,
                request_id: request_id.clone(),
                details: None,
            }
        };

    let mut results = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let owner = Some(entry.owner().to_owned());
        let outcome = import_one(&s, &caller, entry).await;
        match outcome {
            Ok((id, name)) => {
                if let Some(audit) = &s.audit
                    && audit
                        .write_now(event(Some(id), Some(name.clone()), owner.clone(), None))
                        .await
                        .is_err()
                {
                    // Not on record: the token must not work.
                    if let Err(error) = s
                        .tokens
                        .revoke(owner.as_deref().unwrap_or_default(), id)
                        .await
                    {
                        tracing::error!(%error, token_id = %id, "audit unavailable and the imported token could not be revoked");
                    }
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store_unavailable",
                        format!(
                            "Audit log unavailable: the entries before index {index} were imported; entry {index} was revoked and the rest were not attempted"
                        ),
                    ));
                }
                tracing::info!(token_id = %id, owner = owner.as_deref().unwrap_or_default(), "token imported");
                results.push(ImportResult {
                    index,
                    id: Some(id),
                    error: None,
                    code: None,
                });
            }
            Err(failure) if failure.code == "store_unavailable" => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    format!(
                        "Token store unavailable: the entries before index {index} were processed (see the owners' token lists); entry {index} and the rest were not imported"
                    ),
                ));
            }
            Err(failure) => {
                if let Some(audit) = &s.audit {
                    audit.record(event(None, None, owner, Some(failure.code)));
                }
                results.push(ImportResult {
                    index,
                    id: None,
                    error: Some(failure.message),
                    code: Some(failure.code.to_owned()),
                });
            }
        }
    }
    let imported = results.iter().filter(|r| r.id.is_some()).count();
    let answer = ImportResponse {
        imported,
        failed: results.len() - imported,
        results,
    };
    let mut res = Json(answer).into_response();
    res.extensions_mut().insert(AuditedByHandler);
    Ok(res)
}

/// Why one entry was not imported.
struct Failure {
    code: &'static str,
    message: String,
}

impl Failure {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: "invalid_request",
            message: message.into(),
        }
    }
}

impl From<TokenError> for Failure {
    fn from(e: TokenError) -> Self {
        let (code, message) = match e {
            TokenError::NameTaken => (
                "name_taken",
                "The owner already has a live token with this name".to_owned(),
            ),
            TokenError::LimitReached => (
                "token_limit",
                "The owner's limit of live tokens is reached".to_owned(),
            ),
            TokenError::DuplicateHash => (
                "duplicate",
                "A token with this hash already exists".to_owned(),
            ),
            TokenError::Store(_) => ("store_unavailable", "Token store unavailable".to_owned()),
            other => ("invalid_request", other.to_string()),
        };
        Self { code, message }
    }
}

/// Reads the entries, a JSON array or JSON Lines (an empty body is no entry), and checks
/// each against the schema; the first that fails is a 400 naming it.
fn parse_entries(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Checked>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let lines = match essence.as_deref() {
        Some("application/json") => false,
        Some("application/jsonl" | "application/x-ndjson" | "application/json-lines") => true,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type must be application/json (an array) or application/jsonl (one entry a line)",
            ));
        }
    };
    let values: Vec<serde_json::Value> = if lines {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("Invalid JSON Lines body: not UTF-8"))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| ApiError::bad_request(format!("Entry {i}: invalid JSON: {e}")))
            })
            .collect::<Result<_, _>>()?
    } else {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?;
        let serde_json::Value::Array(items) = value else {
            return Err(ApiError::bad_request(
                "Invalid JSON body: expected an array of entries",
            ));
        };
        items
    };
    if values.len() > MAX_IMPORT_ENTRIES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("At most {MAX_IMPORT_ENTRIES} entries per request; split the import"),
        ));
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value::<ImportEntry>(v)
                .map_err(|e| format!("invalid entry: {e}"))
                .and_then(check_entry)
                .map_err(|m| ApiError::bad_request(format!("Entry {i}: {m}")))
        })
        .collect()
}

/// An entry whose every field has the syntax the schema gives it.
pub(crate) struct Checked {
    entry: ImportEntry,
    hash: TokenHash,
    permissions: Option<Permissions>,
    expires_at: Option<OffsetDateTime>,
    created_at: Option<OffsetDateTime>,
}

impl Checked {
    fn owner(&self) -> &str {
        &self.entry.owner
    }
}

fn time_field(name: &str, v: Option<&str>) -> Result<Option<OffsetDateTime>, String> {
    v.map(|v| {
        OffsetDateTime::parse(v, &Rfc3339).map_err(|_| format!("invalid {name}: expected RFC 3339"))
    })
    .transpose()
}

/// Checks an entry's syntax: what the schema states, nothing that depends on the store or
/// the server's kinds and roles. Shared with `keygate token import`.
pub(crate) fn check_entry(entry: ImportEntry) -> Result<Checked, String> {
    let text = |name: &str, v: &str| {
        crate::tokens::check_text(v).map_err(|m| format!("invalid {name}: {m}"))
    };
    text("owner", &entry.owner)?;
    text("name", &entry.name)?;
    if let Some(d) = &entry.description {
        text("description", d)?;
    }
    if let Some(h) = &entry.hint {
        text("hint", h)?;
        if h.chars().count() > crate::token::HINT_LEN {
            return Err("invalid hint: must be at most 12 characters".to_owned());
        }
    }
    let hash = TokenHash::from_hex(&entry.hash)
        .map_err(|_| "invalid hash: expected 64 hexadecimal digits (SHA-256)".to_owned())?;
    let permissions = entry
        .permissions
        .as_ref()
        .map(Permissions::parse)
        .transpose()
        .map_err(|e| format!("invalid permissions: {e}"))?;
    let expires_at = time_field("expires_at", entry.expires_at.as_deref())?;
    let created_at = time_field("created_at", entry.created_at.as_deref())?;
    Ok(Checked {
        entry,
        hash,
        permissions,
        expires_at,
        created_at,
    })
}

impl Checked {
    /// The library's request, created by `created_by`.
    pub(crate) fn request(self, created_by: &str) -> ImportToken {
        let e = self.entry;
        let mut req = ImportToken::new(e.owner, e.name, self.hash).created_by(created_by);
        if let Some(k) = e.kind {
            req = req.kind(k);
        }
        if let Some(r) = e.role {
            req = req.role(r);
        }
        if let Some(p) = self.permissions {
            req = req.permissions(p);
        }
        if let Some(d) = e.description {
            req = req.description(d);
        }
        if let Some(at) = self.expires_at {
            req = req.expires_at(at);
        }
        if let Some(at) = self.created_at {
            req = req.created_at(at);
        }
        if let Some(h) = e.hint {
            req = req.hint(h);
        }
        req
    }
}

/// Imports one entry, refusing permissions beyond the caller's own: whoever imports a
/// hash may know its token, so an import must not grant more than the importer holds.
async fn import_one(s: &Shared, caller: &Caller, c: Checked) -> Result<(TokenId, String), Failure> {
    let granted = match (&c.permissions, &c.entry.role) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(r)) => Some(
            s.tokens
                .roles()
                .get(r)
                .cloned()
                .ok_or_else(|| Failure::invalid(format!("Unknown role {r:?}")))?,
        ),
        (None, None) => None,
    };
    // A kind whose resolver may widen gives its tokens their owner's permissions, whatever
    // the entry names: only a caller holding everything may import into it.
    if c.entry
        .kind
        .as_deref()
        .map_or_else(
            || s.tokens.kinds().first(),
            |k| s.tokens.kinds().iter().find(|kind| kind.name() == k),
        )
        .is_some_and(crate::token::TokenKind::resolver_may_widen)
        && !caller.permissions().allows("*")
    {
        return Err(Failure {
            code: "insufficient_scope",
            message: "Tokens of this kind take their owner's permissions: importing them needs every permission (*)".to_owned(),
        });
    }
    if let Some(p) = &granted
        && !p.is_subset_of(caller.permissions())
    {
        return Err(Failure {
            code: "insufficient_scope",
            message: "The token's permissions go beyond the importer's own".to_owned(),
        });
    }
    let record = s
        .tokens
        .import(c.request(caller.owner()))
        .await
        .map_err(|err| {
            if let TokenError::Store(error) = &err {
                tracing::warn!(%error, "token store failed during an import");
            }
            Failure::from(err)
        })?;
    Ok((record.id, record.name.into()))
}

#[cfg(all(test, feature = "openapi"))]
mod tests {
    #[test]
    fn the_document_states_the_entry_syntax_and_the_limit() {
        let doc = serde_json::to_value(super::super::openapi()).unwrap();
        let op = &doc["paths"]["/admin/tokens/import"]["post"];
        assert_eq!(
            op["requestBody"]["content"]["application/json"]["schema"]["maxItems"], 1000,
            "{op}"
        );
        // Signed in only: a bearer token cannot import.
        assert_eq!(op["security"], serde_json::json!([{ "basic": [] }]), "{op}");
        let entry = &doc["components"]["schemas"]["ImportEntry"];
        assert_eq!(entry["additionalProperties"], false, "{entry}");
        assert_eq!(
            entry["required"],
            serde_json::json!(["owner", "name", "hash"])
        );
        assert!(entry["properties"]["name"]["pattern"].is_string());
        assert!(entry["properties"]["permissions"]["items"]["pattern"].is_string());
        assert_eq!(entry["properties"]["hash"]["pattern"], "^[0-9a-fA-F]{64}$");
    }
}
