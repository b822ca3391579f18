//! The OpenAPI 3.1 document of the management API: the paths of the route table
//! ([`Routes`]), generated from the handlers, with the API's info, schemas, security
//! schemes, the headers every answer may carry, and the limits of the [`Tokens`] manager
//! the router serves ([`document`]).

use serde_json::{Value, json};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::Routes;
use super::admin::AdminTokenPage;
use super::error::ErrorBody;
use super::import::{ImportEntry, ImportResponse, ImportResult};
use super::types::{
    CreateToken, CreateTokenForm, IdentityView, RotateToken, RotateTokenForm, TokenStatus,
    TokenView, UpdateToken,
};
use crate::audit::{AuditEvent, Decision};
use crate::tokens::{MAX_EXPIRES_IN, Tokens};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keygate management API",
        description = "Create, list, rotate and revoke API tokens. Creating needs HTTP Basic \
                       authentication (email and password); the other routes also take a \
                       bearer token with `tokens:read` / `tokens:write`.",
    ),
    components(schemas(
        CreateToken,
        CreateTokenForm,
        RotateToken,
        RotateTokenForm,
        UpdateToken,
        AdminTokenPage,
        TokenView,
        TokenStatus,
        IdentityView,
        ImportEntry,
        ImportResult,
        ImportResponse,
        ErrorBody
    )),
    modifiers(&Security),
    tags(
        (name = "tokens", description = "Personal access tokens"),
        (name = "identity", description = "Who is calling"),
        (name = "admin", description = "Administration across owners (`tokens:admin`)"),
        (name = "meta", description = "This document"),
    ),
)]
struct ApiDoc;

/// `GET /audit`, served only with an audit reader.
#[derive(OpenApi)]
#[openapi(
    paths(super::audit::list),
    components(schemas(AuditEvent, Decision)),
    tags((name = "audit", description = "What happened to the caller's tokens")),
)]
struct AuditRoute;

/// `POST /leaks`, served only with [`LeakReports`](super::LeakReports).
#[derive(OpenApi)]
#[openapi(
    paths(super::leaks::report),
    components(schemas(super::leaks::LeakEntry, super::leaks::LeakResult)),
    tags((name = "leaks", description = "Reports of leaked tokens, from secret scanners")),
)]
struct LeakRoute;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        // Leak reporters (`POST /leaks`, when served).
        components.add_security_scheme(
            "reporter_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                super::leaks::REPORTER_KEY_HEADER,
                "The configured leak reporter key",
            ))),
        );
        components.add_security_scheme(
            "reporter_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                crate::signature::SIGNATURE_HEADER,
                "`sha256=` and the hex HMAC-SHA256 of the raw body under the configured leak signing secret",
            ))),
        );
    }
}

/// The OpenAPI 3.1 document of the management routes (paths relative to where the router is
/// mounted), without `GET /audit` (served only with an audit reader) and without the limits
/// of a particular [`Tokens`] manager: [`Management::openapi`](super::Management::openapi)
/// is the document of a configured router, as it serves it at `GET /openapi.json`.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(Routes::openapi());
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    from_value(finish(to_value(&doc)))
}

/// The document of a router over `tokens`, with `GET /audit` when `audit` is set and
/// `POST /leaks` when `leaks` is, listing `server_url` under `servers`.
pub(super) fn document(
    tokens: &Tokens,
    audit: bool,
    leaks: Option<usize>,
    server_url: Option<&str>,
) -> Value {
    let mut doc = ApiDoc::openapi();
    doc.merge(Routes::openapi());
    if audit {
        doc.merge(AuditRoute::openapi());
    }
    if leaks.is_some() {
        doc.merge(LeakRoute::openapi());
    }
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    if let Some(url) = server_url {
        doc.servers = Some(vec![utoipa::openapi::Server::new(url)]);
    }
    let mut doc = finish(to_value(&doc));
    limits(&mut doc, tokens);
    if let Some(max) = leaks {
        leak_limits(&mut doc, max);
    }
    doc
}

/// `POST /leaks`: its body is required, holds 1 to `max` entries, and each field is at
/// most [`MAX_LEAK_FIELD_LEN`](super::MAX_LEAK_FIELD_LEN) characters without control
/// characters; an entry has no other field.
fn leak_limits(doc: &mut Value, max: usize) {
    if let Some(body) = doc.pointer_mut("/paths/~1leaks/post/requestBody") {
        body["required"] = Value::Bool(true);
        if let Some(schema) = body.pointer_mut("/content/application~1json/schema") {
            schema["minItems"] = json!(1);
            schema["maxItems"] = json!(max);
        }
    }
    if let Some(entry) = doc.pointer_mut("/components/schemas/LeakEntry") {
        entry["additionalProperties"] = Value::Bool(false);
        for field in ["token", "url", "source", "type"] {
            if let Some(p) = entry.pointer_mut(&format!("/properties/{field}")) {
                p["maxLength"] = json!(super::MAX_LEAK_FIELD_LEN);
                p["pattern"] = json!(r"^[^\u0000-\u001F\u007F-\u009F]*$");
            }
        }
    }
}

fn to_value(doc: &utoipa::openapi::OpenApi) -> Value {
    serde_json::to_value(doc).unwrap_or_default()
}

fn from_value(doc: Value) -> utoipa::openapi::OpenApi {
    serde_json::from_value(doc).unwrap_or_default()
}

/// The HTTP methods of an OpenAPI path item.
pub(crate) const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Calls `f` with every operation of `doc`: its path, method and the operation.
pub(crate) fn each_operation(doc: &mut Value, mut f: impl FnMut(&str, &str, &mut Value)) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        for method in METHODS {
            if let Some(op) = item.get_mut(method) {
                f(path, method, op);
            }
        }
    }
}

/// A header of a response, as OpenAPI writes it.
pub(crate) fn header(description: &str, schema: Value) -> Value {
    json!({ "description": description, "schema": schema })
}

/// The `Retry-After` header of a 429 or 503 answer, as OpenAPI writes it.
pub(crate) fn retry_after_header() -> Value {
    header(
        "Seconds to wait before trying again",
        json!({ "type": "integer", "minimum": 0 }),
    )
}

/// Adds the header `name` to the response `status` of `op`, if `op` has that response.
pub(crate) fn add_header(op: &mut Value, status: &str, name: &str, value: &Value) {
    if let Some(res) = op.pointer_mut(&format!("/responses/{status}"))
        && let Some(res) = res.as_object_mut()
    {
        let headers = res.entry("headers").or_insert_with(|| json!({}));
        if let Some(headers) = headers.as_object_mut() {
            headers.insert(name.to_owned(), value.clone());
        }
    }
}

/// A permission: 1 to 64 of `[a-z0-9_.:*-]` ([`Permission::new`](crate::Permission::new)).
const PERMISSION: &str = "^[a-z0-9_.:*-]{1,64}$";
/// A name or description ([`NewToken`](crate::NewToken)): not blank, and none of the
/// characters that are invisible or rearrange the text around them (controls, format
/// characters, line and paragraph separators). The pattern lists those of the Basic
/// Multilingual Plane; the few beyond it (e.g. the tag characters) are refused too.
const TEXT: &str = r"^[ \u00A0\u1680\u2000-\u200A\u202F\u205F\u3000]*[^\u0000-\u001F\u007F-\u009F\u00AD\u0600-\u0605\u061C\u06DD\u070F\u0890-\u0891\u08E2\u180E\u200B-\u200F\u2028-\u202E\u2060-\u2064\u2066-\u206F\uFEFF\uFFF9-\uFFFB \u00A0\u1680\u2000-\u200A\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F\u00AD\u0600-\u0605\u061C\u06DD\u070F\u0890-\u0891\u08E2\u180E\u200B-\u200F\u2028-\u202E\u2060-\u2064\u2066-\u206F\uFEFF\uFFF9-\uFFFB]*$";
/// Permissions in a form: separated by commas or spaces.
const PERMISSION_LIST: &str = "^[ ,]*([a-z0-9_.:*-]{1,64}([ ,]+[a-z0-9_.:*-]{1,64})*)?[ ,]*$";
/// Networks in a form: IPv4 addresses or networks in CIDR notation, separated by commas
/// or spaces (the server takes IPv6 too; the pattern, which a regular expression could not
/// state readably for IPv6, names IPv4 only).
const IPV4_NET_LIST: &str = r"^[ ,]*((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}(/(3[0-2]|[12]?[0-9]))?([ ,]+(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}(/(3[0-2]|[12]?[0-9]))?)*)?[ ,]*$";
/// Metadata in a form: JSON text. The pattern names flat objects of up to 8 lowercase
/// keys with short plain strings (at most 433 bytes, so within the 1 KiB limit); the server
/// takes any JSON object within the limits (1 KiB of compact JSON, nested at most 8 deep),
/// and an empty field is none.
const METADATA_TEXT: &str = r#"^(\{("[a-z][a-z0-9_]{0,15}":"[a-z0-9 ._-]{0,32}"(,"[a-z][a-z0-9_]{0,15}":"[a-z0-9 ._-]{0,32}"){0,7})?\})?$"#;
/// An IPv4 network in CIDR notation.
const IPV4_NET: &str = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])$";

/// The syntax of the request fields the derive cannot state: permissions, networks.
fn syntax(doc: &mut Value) {
    let network = json!({
        "anyOf": [
            { "type": "string", "format": "ipv4" },
            { "type": "string", "format": "ipv6" },
            { "type": "string", "pattern": IPV4_NET },
        ],
        "description": "An address, or a network in CIDR notation (IPv6 networks such as `2001:db8::/32` are taken too)",
    });
    // A token's own rate is a `u32`: the derive writes `format: int32`, which tools read as
    // "at most 2^31 - 1".
    for schema in ["CreateToken", "CreateTokenForm", "TokenView"] {
        if let Some(rate) = doc.pointer_mut(&format!(
            "/components/schemas/{schema}/properties/rate_limit"
        )) {
            rate["format"] = json!("int64");
            rate["maximum"] = json!(u32::MAX);
        }
    }
    if let Some(props) = doc.pointer_mut("/components/schemas/CreateToken/properties") {
        props["name"]["pattern"] = json!(TEXT);
        props["description"]["pattern"] = json!(TEXT);
        props["permissions"]["items"] = json!({ "type": "string", "pattern": PERMISSION });
        props["allowed_ips"]["items"] = network.clone();
        props["allowed_ips"]["maxItems"] = json!(64);
        props["metadata"]["description"] = json!(
            "The owner's own data about the token: a JSON object of at most 1 KiB of compact \
             JSON, nested at most 8 levels deep (larger or deeper: 400); `null` or left out: none"
        );
    }
    // The admin view's cursor: 32 characters of base64url (any such string is a position).
    if let Some(params) = doc
        .pointer_mut("/paths/~1admin~1tokens/get/parameters")
        .and_then(Value::as_array_mut)
    {
        for p in params {
            if p["name"] == "cursor" {
                p["schema"]["pattern"] = json!(super::admin::CURSOR_PATTERN);
            }
        }
    }
    // An edit changes at least one field, and takes one expiry at most.
    if let Some(schema) = doc
        .pointer_mut("/components/schemas/UpdateToken")
        .and_then(Value::as_object_mut)
    {
        schema.insert("minProperties".to_owned(), json!(1));
        schema.insert(
            "not".to_owned(),
            json!({ "required": ["expires_at", "expires_in"] }),
        );
    }
    if let Some(props) = doc.pointer_mut("/components/schemas/UpdateToken/properties") {
        props["name"]["pattern"] = json!(TEXT);
        props["description"]["pattern"] = json!(TEXT);
        props["permissions"]["items"] = json!({ "type": "string", "pattern": PERMISSION });
        props["allowed_ips"]["items"] = network.clone();
        props["allowed_ips"]["maxItems"] = json!(64);
    }
    if let Some(props) = doc.pointer_mut("/components/schemas/ImportEntry/properties") {
        for text in ["owner", "name", "description", "hint"] {
            props[text]["pattern"] = json!(TEXT);
        }
        props["permissions"]["items"] = json!({ "type": "string", "pattern": PERMISSION });
    }
    if let Some(body) = doc.pointer_mut(
        "/paths/~1admin~1tokens~1import/post/requestBody/content/application~1json/schema",
    ) {
        body["maxItems"] = json!(super::import::MAX_IMPORT_ENTRIES);
    }
    if let Some(props) = doc.pointer_mut("/components/schemas/CreateTokenForm/properties") {
        props["name"]["pattern"] = json!(TEXT);
        props["description"]["pattern"] = json!(TEXT);
        props["permissions"]["pattern"] = json!(PERMISSION_LIST);
        props["allowed_ips"]["pattern"] = json!(IPV4_NET_LIST);
        props["metadata"]["pattern"] = json!(METADATA_TEXT);
    }
}

/// What every route's answers share, added to each operation: the bodies of `POST /tokens`
/// and `POST /tokens/{id}/rotate` are optional (every field has a default), that of
/// `PATCH /tokens/{id}` is required; every route
/// that authenticates may answer 429 (failure limits) and 503 with `Retry-After`, and its
/// 401 carries `WWW-Authenticate`.
fn finish(mut doc: Value) -> Value {
    syntax(&mut doc);
    let challenge = header(
        "The challenges the route accepts: `Basic realm=\"keygate\", charset=\"UTF-8\"` and, \
         where a token is accepted, `Bearer realm=\"keygate\"` (with `error=\"invalid_token\"` \
         for a bad one)",
        json!({ "type": "string" }),
    );
    let retry_after = retry_after_header();
    let error =
        json!({ "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } });
    each_operation(&mut doc, |path, method, op| {
        if let Some(body) = op.get_mut("requestBody").and_then(Value::as_object_mut) {
            // Only an edit needs a body: it names what to change.
            let required = path == "/tokens/{id}" && method == "patch";
            body.insert("required".to_owned(), Value::Bool(required));
        }
        if op.get("security").is_none() {
            return;
        }
        if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
            responses.entry("400").or_insert_with(|| {
                json!({
                    "description": "`invalid_request`: a malformed `Authorization` header",
                    "content": error,
                })
            });
            responses.entry("429").or_insert_with(|| {
                json!({
                    "description": "`rate_limited`: too many failed sign-ins or bad tokens from this address (or on this account); `Retry-After` says when to try again",
                    "content": error,
                })
            });
            responses.entry("503").or_insert_with(|| {
                json!({
                    "description": "`store_unavailable` or `server_busy`",
                    "content": error,
                })
            });
        }
        // A leak reporter is not challenged: its 401 names the headers it lacks.
        if !path.ends_with("/leaks") {
            add_header(op, "401", "WWW-Authenticate", &challenge);
        }
        add_header(op, "429", "Retry-After", &retry_after);
        add_header(op, "503", "Retry-After", &retry_after);
    });
    doc
}

/// The limits of `tokens` written into the request schemas, so that a request the schema
/// allows is one the server takes: the roles it knows, the longest lifetime and grace, the
/// largest own rate.
fn limits(doc: &mut Value, tokens: &Tokens) {
    let Some(schemas) = doc.pointer_mut("/components/schemas") else {
        return;
    };
    let roles: Vec<Value> = tokens
        .roles()
        .names()
        .map(|r| Value::String(r.to_owned()))
        .collect();
    let lifetime = tokens
        .kinds()
        .first()
        .and_then(crate::TokenKind::max_lifetime)
        .map_or(MAX_EXPIRES_IN, |max| max.min(MAX_EXPIRES_IN))
        .as_secs();
    let grace = tokens.max_rotation_grace().as_secs();
    for (schema, nullable) in [("CreateToken", true), ("CreateTokenForm", false)] {
        let Some(props) = schemas.pointer_mut(&format!("/{schema}/properties")) else {
            continue;
        };
        if roles.is_empty() {
            // No role can be named: the field is refused like an unknown one.
            if let Some(props) = props.as_object_mut() {
                props.remove("role");
            }
        } else {
            let mut allowed = roles.clone();
            if nullable {
                allowed.push(Value::Null);
            }
            props["role"]["enum"] = Value::Array(allowed);
        }
        props["expires_in"]["maximum"] = json!(lifetime);
    }
    if let Some(props) = schemas.pointer_mut("/UpdateToken/properties") {
        props["expires_in"]["maximum"] = json!(lifetime);
    }
    within_roles(schemas, tokens);
    for schema in ["RotateToken", "RotateTokenForm"] {
        if let Some(props) = schemas.pointer_mut(&format!("/{schema}/properties")) {
            props["grace_seconds"]["maximum"] = json!(grace);
        }
    }
}

/// A regular expression (without anchors) for the permissions `held` grants
/// ([`Permission::grants`](crate::Permission::grants)): itself, everything for `*`, and
/// everything under `stem:` for `stem:*`.
fn granted_by(held: &crate::Permission) -> String {
    let escape = |s: &str| s.replace('.', r"\.").replace('*', r"\*");
    let held = held.as_str();
    if held == "*" {
        return "[a-z0-9_.:*-]{1,64}".to_owned();
    }
    match held.strip_suffix('*') {
        Some(stem) if stem.ends_with(':') => format!(
            "{}[a-z0-9_.:*-]{{0,{}}}",
            escape(stem),
            64usize.saturating_sub(stem.len())
        ),
        _ => escape(held),
    }
}

/// With a `role`, explicit `permissions` must stay within the role's
/// ([`TokenError::PermissionsExceedRole`](crate::tokens::TokenError::PermissionsExceedRole)):
/// one `if`/`then` per role, whose `then` allows only the permissions the role grants.
fn within_roles(schemas: &mut Value, tokens: &Tokens) {
    let roles = tokens.roles();
    let mut json_rules = Vec::new();
    let mut form_rules = Vec::new();
    for name in roles.names() {
        let Some(held) = roles.get(name) else {
            continue;
        };
        let one = held.iter().map(granted_by).collect::<Vec<_>>().join("|");
        let one = if one.is_empty() {
            "(?!)".to_owned()
        } else {
            format!("(?:{one})")
        };
        let when = json!({ "properties": { "role": { "const": name } }, "required": ["role"] });
        json_rules.push(json!({
            "if": when,
            "then": { "properties": { "permissions": { "items": { "pattern": format!("^{one}$") } } } },
        }));
        form_rules.push(json!({
            "if": when,
            "then": { "properties": { "permissions": {
                "pattern": format!("^[ ,]*(?:{one}(?:[ ,]+{one})*)?[ ,]*$"),
            } } },
        }));
    }
    for (schema, rules) in [("CreateToken", json_rules), ("CreateTokenForm", form_rules)] {
        if !rules.is_empty()
            && let Some(schema) = schemas.get_mut(schema).and_then(Value::as_object_mut)
        {
            schema.insert("allOf".to_owned(), Value::Array(rules));
        }
    }
}
