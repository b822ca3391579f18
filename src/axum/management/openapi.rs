//! The OpenAPI 3.1 document of the management API: the paths of the route table
//! ([`Routes`]), generated from the handlers, with the API's info, schemas, security
//! schemes, the headers every answer may carry, and the limits of the [`Tokens`] manager
//! the router serves ([`document`]).

use serde_json::{Value, json};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::Routes;
use super::error::ErrorBody;
use super::types::{
    CreateToken, CreateTokenForm, IdentityView, RotateToken, RotateTokenForm, TokenStatus,
    TokenView,
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
        TokenView,
        TokenStatus,
        IdentityView,
        ErrorBody
    )),
    modifiers(&Security),
    tags(
        (name = "tokens", description = "Personal access tokens"),
        (name = "identity", description = "Who is calling"),
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

/// The document of a router over `tokens`, with `GET /audit` when `audit` is set, listing
/// `server_url` under `servers`.
pub(super) fn document(tokens: &Tokens, audit: bool, server_url: Option<&str>) -> Value {
    let mut doc = ApiDoc::openapi();
    doc.merge(Routes::openapi());
    if audit {
        doc.merge(AuditRoute::openapi());
    }
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    if let Some(url) = server_url {
        doc.servers = Some(vec![utoipa::openapi::Server::new(url)]);
    }
    let mut doc = finish(to_value(&doc));
    limits(&mut doc, tokens);
    doc
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
        props["allowed_ips"]["items"] = network;
        props["allowed_ips"]["maxItems"] = json!(64);
    }
    if let Some(props) = doc.pointer_mut("/components/schemas/CreateTokenForm/properties") {
        props["name"]["pattern"] = json!(TEXT);
        props["description"]["pattern"] = json!(TEXT);
        props["permissions"]["pattern"] = json!(PERMISSION_LIST);
        props["allowed_ips"]["pattern"] = json!(IPV4_NET_LIST);
    }
}

/// What every route's answers share, added to each operation: the bodies of `POST /tokens`
/// and `POST /tokens/{id}/rotate` are optional (every field has a default); every route
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
    let retry_after = header(
        "Seconds to wait before trying again",
        json!({ "type": "integer", "minimum": 0 }),
    );
    let error =
        json!({ "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } });
    each_operation(&mut doc, |_, _, op| {
        if let Some(body) = op.get_mut("requestBody").and_then(Value::as_object_mut) {
            body.insert("required".to_owned(), Value::Bool(false));
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
        add_header(op, "401", "WWW-Authenticate", &challenge);
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
