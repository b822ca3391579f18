//! keygate in your own OpenAPI document (feature `openapi`): [`SecurityAddon`] adds the
//! bearer scheme [`AuthLayer`](crate::AuthLayer) checks, the body of its refusals and its
//! 401, 403, 429 and 503 answers to a document you derive with utoipa.
//!
//! ```
//! use keygate::openapi::SecurityAddon;
//! use utoipa::OpenApi;
//!
//! /// The things of the caller.
//! #[utoipa::path(get, path = "/things", responses((status = 200, description = "The things")))]
//! async fn list_things() {}
//!
//! const KEYGATE: SecurityAddon = SecurityAddon::new();
//!
//! #[derive(OpenApi)]
//! #[openapi(paths(list_things), modifiers(&KEYGATE))]
//! struct ApiDoc;
//!
//! let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
//! assert_eq!(doc["components"]["securitySchemes"]["keygate"]["scheme"], "bearer");
//! let get = &doc["paths"]["/things"]["get"];
//! assert_eq!(get["security"][0]["keygate"], serde_json::json!([]));
//! assert_eq!(get["responses"]["401"]["$ref"], "#/components/responses/KeygateUnauthorized");
//! assert_eq!(get["responses"]["200"]["description"], "The things");
//! ```

use serde_json::{Value, json};
use utoipa::openapi::OpenApi;

use crate::axum::management::ErrorBody;
use crate::axum::management::openapi::{each_operation, header, retry_after_header};

/// The name of keygate's error body schema under `components/schemas`.
pub const ERROR_SCHEMA: &str = "KeygateError";

/// The reusable responses [`SecurityAddon`] adds, by status: their names under
/// `components/responses`.
pub const RESPONSES: [(&str, &str); 4] = [
    ("401", "KeygateUnauthorized"),
    ("403", "KeygateForbidden"),
    ("429", "KeygateRateLimited"),
    ("503", "KeygateUnavailable"),
];

/// A utoipa [`Modify`](utoipa::Modify) that describes keygate's authentication in your
/// document:
///
/// - the HTTP bearer security scheme, named `keygate` unless you name it
///   ([`SecurityAddon::scheme`]);
/// - keygate's error body as the schema [`ERROR_SCHEMA`];
/// - the 401 (with `WWW-Authenticate`), 403, 429 and 503 (both with `Retry-After`) answers
///   as reusable responses ([`RESPONSES`]);
/// - on every operation, or on those of the paths you name
///   ([`SecurityAddon::only_paths`]): the security requirement, and a reference to each of
///   those responses the operation does not declare itself (a response you wrote for a
///   status is kept).
///
/// An operation that already lists other security requirements keeps them: the keygate
/// scheme is added as one more way in.
///
/// utoipa's `modifiers(&NAME)` takes a name, so declare the addon as a constant (its
/// builders are `const`):
///
/// ```
/// use keygate::openapi::SecurityAddon;
///
/// const KEYGATE: SecurityAddon = SecurityAddon::new()
///     .scheme("api_token")
///     .only_paths(&["/things", "/things/{id}"]);
/// # let _ = KEYGATE;
/// ```
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct SecurityAddon {
    scheme: &'static str,
    paths: Option<&'static [&'static str]>,
}

impl Default for SecurityAddon {
    fn default() -> Self {
        Self::new()
    }
}

impl SecurityAddon {
    /// The addon with the scheme named `keygate`, for every operation.
    pub const fn new() -> Self {
        Self {
            scheme: "keygate",
            paths: None,
        }
    }

    /// Names the security scheme `name` (in `components/securitySchemes` and in each
    /// operation's `security`).
    pub const fn scheme(mut self, name: &'static str) -> Self {
        self.scheme = name;
        self
    }

    /// Secures only the operations of these paths, written as in the document
    /// (`/things/{id}`); the components are added all the same.
    pub const fn only_paths(mut self, paths: &'static [&'static str]) -> Self {
        self.paths = Some(paths);
        self
    }

    fn covers(&self, path: &str) -> bool {
        self.paths.is_none_or(|paths| paths.contains(&path))
    }
}

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, doc: &mut OpenApi) {
        let Ok(mut value) = serde_json::to_value(&*doc) else {
            return;
        };
        self.add_components(&mut value);
        let requirement = json!({ self.scheme: [] });
        each_operation(&mut value, |path, _, op| {
            if !self.covers(path) {
                return;
            }
            secure(op, &requirement);
        });
        if let Ok(modified) = serde_json::from_value(value) {
            *doc = modified;
        }
    }
}

impl SecurityAddon {
    fn add_components(&self, doc: &mut Value) {
        let Some(doc) = doc.as_object_mut() else {
            return;
        };
        let components = doc.entry("components").or_insert_with(|| json!({}));
        let Some(components) = components.as_object_mut() else {
            return;
        };
        let mut section = |name: &str, key: &str, value: Value| {
            let map = components
                .entry(name.to_owned())
                .or_insert_with(|| json!({}));
            if let Some(map) = map.as_object_mut() {
                map.insert(key.to_owned(), value);
            }
        };
        section(
            "securitySchemes",
            self.scheme,
            json!({
                "type": "http",
                "scheme": "bearer",
                "description": "A keygate API token: `Authorization: Bearer <token>`",
            }),
        );
        let schema = <ErrorBody as utoipa::PartialSchema>::schema();
        section(
            "schemas",
            ERROR_SCHEMA,
            serde_json::to_value(schema).unwrap_or_default(),
        );
        for (status, name) in RESPONSES {
            section("responses", name, response(status));
        }
    }
}

/// Adds `requirement` and the references to keygate's responses to one operation.
fn secure(op: &mut Value, requirement: &Value) {
    let Some(op) = op.as_object_mut() else {
        return;
    };
    let security = op.entry("security").or_insert_with(|| json!([]));
    if let Some(list) = security.as_array_mut()
        && !list.contains(requirement)
    {
        list.push(requirement.clone());
    }
    let responses = op.entry("responses").or_insert_with(|| json!({}));
    if let Some(responses) = responses.as_object_mut() {
        for (status, name) in RESPONSES {
            responses
                .entry(status)
                .or_insert_with(|| json!({ "$ref": format!("#/components/responses/{name}") }));
        }
    }
}

/// The reusable response for `status`, as [`JsonRenderer`](crate::JsonRenderer) answers.
fn response(status: &str) -> Value {
    let (description, headers) = match status {
        "401" => (
            "`missing_token` or `invalid_token`: no API token, or one that is not valid \
             (unknown, revoked, expired and wrong-kind tokens all read the same)",
            json!({ "WWW-Authenticate": header(
                "The bearer challenge: `Bearer realm=\"…\"`, or `Bearer error=\"invalid_token\"`",
                json!({ "type": "string" }),
            ) }),
        ),
        "403" => (
            "`insufficient_scope` (the token lacks a permission, named in the message and in \
             `WWW-Authenticate`), `ip_not_allowed`, `binding_required` or `bound_elsewhere`",
            json!({ "WWW-Authenticate": header(
                "For `insufficient_scope`: `Bearer error=\"insufficient_scope\", scope=\"…\"`",
                json!({ "type": "string" }),
            ) }),
        ),
        "429" => (
            "`rate_limited`: over the token's rate limit, or too many failed attempts from \
             this address",
            json!({ "Retry-After": retry_after_header() }),
        ),
        _ => (
            "`store_unavailable`: the token store could not be reached; the request was refused",
            json!({ "Retry-After": retry_after_header() }),
        ),
    };
    json!({
        "description": description,
        "headers": headers,
        "content": {
            "application/json": {
                "schema": { "$ref": format!("#/components/schemas/{ERROR_SCHEMA}") }
            }
        },
    })
}
