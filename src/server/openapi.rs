//! The OpenAPI document the reference server serves at `/api/v1/openapi.json`: one document
//! for the whole service, with absolute paths: the management API (nested under
//! `/api/v1`), forward authentication (`/api/v1/verify`), the route index (`/`), the probes
//! (`/healthz`, `/readyz`) and, when it is served on the main listener, `/metrics`. The
//! token page (`/tokens/`, HTML and its assets) is a page for people, not an API, and is
//! not listed.

use serde_json::{Map, Value, json};

use crate::axum::management::openapi::{add_header, each_operation, header};

/// The API prefix the management routes and `/verify` are nested under.
pub(super) const API: &str = "/api/v1";

/// The whole service's document: `management` (the management router's own document,
/// paths relative to [`API`]) nested under [`API`], with the server's routes;
/// `metrics` when `GET /metrics` is served on the main listener, `demo` when the demo API is.
pub(super) fn document(management: Value, metrics: bool, demo: bool) -> Value {
    let mut doc = management;
    if let Some(doc) = doc.as_object_mut() {
        doc.remove("servers");
        doc.insert(
            "info".to_owned(),
            json!({
                "title": "keygate reference server",
                "description": "The token management API, forward authentication and the \
                                probes of `keygate serve`. Managing tokens takes HTTP Basic \
                                authentication (email and password) or, where a route says \
                                so, a bearer token; forward authentication takes a bearer \
                                token.",
                "version": env!("CARGO_PKG_VERSION"),
            }),
        );
    }
    let mut paths = Map::new();
    if let Some(nested) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in std::mem::take(nested) {
            paths.insert(format!("{API}{path}"), item);
        }
    }
    paths.insert(format!("{API}/verify"), verify());
    paths.insert("/".to_owned(), index());
    paths.insert("/healthz".to_owned(), healthz());
    paths.insert("/readyz".to_owned(), readyz());
    if metrics {
        paths.insert("/metrics".to_owned(), metrics_path());
    }
    if demo {
        for (path, method, permission, status) in [
            ("/apps", "get", "apps:read", "200"),
            ("/apps/{app}/restart", "post", "processes:restart", "200"),
            ("/apps/{app}/builds", "post", "builds:create", "201"),
            ("/apps/{app}/env", "put", "env:write", "200"),
        ] {
            paths.insert(
                format!("{API}{path}"),
                demo_path(path, method, permission, status),
            );
        }
    }
    doc["paths"] = Value::Object(paths);
    if let Some(tags) = doc.get_mut("tags").and_then(Value::as_array_mut) {
        tags.push(json!({ "name": "forward-auth", "description": "Whether a request a reverse proxy describes may pass" }));
        tags.push(
            json!({ "name": "service", "description": "The route index, probes and metrics" }),
        );
    }
    headers(&mut doc);
    doc
}

/// The headers the server's layers add: `X-Request-Id` on every answer but the probes', and
/// the rate-limit fields on every answer to a bearer token.
fn headers(doc: &mut Value) {
    let request_id = header(
        "The request's id: the client's own `X-Request-Id` when it is 1 to 128 visible ASCII \
         characters, else a new UUID; the audit events and log lines carry the same",
        json!({ "type": "string" }),
    );
    let limit_fields = [
        ("RateLimit-Limit", "Requests a token may make per window"),
        ("RateLimit-Remaining", "Requests left in the window"),
        ("RateLimit-Reset", "Seconds until the window resets"),
        (
            "RateLimit-Policy",
            "The policy, as the IETF draft writes it (e.g. `\"default\";q=100;w=60`)",
        ),
        (
            "RateLimit",
            "What is left, as the IETF draft writes it (e.g. `\"default\";r=99;t=60`)",
        ),
    ]
    .map(|(name, what)| {
        let schema = if matches!(
            name,
            "RateLimit-Limit" | "RateLimit-Remaining" | "RateLimit-Reset"
        ) {
            json!({ "type": "integer", "minimum": 0 })
        } else {
            json!({ "type": "string" })
        };
        (
            name,
            header(&format!("{what} (answers to a bearer token)"), schema),
        )
    });
    each_operation(doc, |path, _, op| {
        if path == "/healthz" || path == "/readyz" {
            return;
        }
        let bearer = op
            .get("security")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
        let statuses: Vec<String> = op
            .get("responses")
            .and_then(Value::as_object)
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default();
        for status in &statuses {
            add_header(op, status, "X-Request-Id", &request_id);
            if bearer {
                for (name, h) in &limit_fields {
                    add_header(op, status, name, h);
                }
            }
        }
    });
}

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } },
    })
}

fn text(description: &str, example: &str) -> Value {
    json!({
        "description": description,
        "content": { "text/plain": { "schema": { "type": "string", "example": example } } },
    })
}

/// The methods `/api/v1/verify` answers: all of them, since a proxy's check may keep the
/// client's.
const VERIFY_METHODS: [&str; 8] = [
    "get", "head", "post", "put", "patch", "delete", "options", "trace",
];

/// `/api/v1/verify`: every method, since a proxy's check may keep the client's.
fn verify() -> Value {
    let operation = |method: &str| {
        let mut ok = json!({
            "description": "The request may pass; the proxy copies these headers onto the request it forwards (`Cache-Control: no-store`)",
            "headers": {
                "X-Keygate-Owner": header("The token's owner, percent-encoded outside visible ASCII", json!({ "type": "string" })),
                "X-Keygate-Token-Id": header("The token's id", json!({ "type": "string", "format": "uuid" })),
                "X-Keygate-Permissions": header("The token's effective permissions, comma-separated", json!({ "type": "string" })),
            },
        });
        if method == "head" {
            ok["description"] = json!("The request may pass (no body)");
        }
        json!({
            "tags": ["forward-auth"],
            "operationId": format!("verify_{method}"),
            "summary": "Forward authentication",
            "description": "Whether the request a reverse proxy describes may pass: the original \
                            method and URI come from `X-Original-Method` and `X-Original-URI` \
                            (nginx `auth_request`) or `X-Forwarded-Method` and `X-Forwarded-Uri` \
                            (Traefik `ForwardAuth`), each pair sent whole or not at all (400 \
                            otherwise, and for both pairs at once); with neither, the check's \
                            own method and path (Envoy `ext_authz`, which may add a path below \
                            `/verify`). Writes need the permission `KEYGATE_VERIFY_WRITE_PERMISSION` \
                            names, when it is set.",
            "responses": {
                "200": ok,
                "400": error("`invalid_request`: the headers describing the original request are not a method and an origin-form URI, or only half of a pair"),
                "401": error("`missing_token` or `invalid_token`"),
                "403": error("`insufficient_scope` (a write without the write permission) or `ip_not_allowed`"),
                "429": error("`rate_limited`: the token's rate, or too many bad tokens from this address"),
                "503": error("`store_unavailable`: the store did not answer in time"),
            },
            "security": [{ "bearer": [] }],
        })
    };
    let mut item = Map::new();
    for method in VERIFY_METHODS {
        item.insert(method.to_owned(), operation(method));
    }
    let mut item = Value::Object(item);
    for method in VERIFY_METHODS {
        let op = &mut item[method];
        add_header(
            op,
            "401",
            "WWW-Authenticate",
            &header(
                "`Bearer realm=\"keygate\"`, with `error=\"invalid_token\"` for a bad token",
                json!({ "type": "string" }),
            ),
        );
        for status in ["429", "503"] {
            add_header(
                op,
                status,
                "Retry-After",
                &header(
                    "Seconds to wait before trying again",
                    json!({ "type": "integer", "minimum": 0 }),
                ),
            );
        }
    }
    item
}

/// `GET /`: what the server mounts.
fn index() -> Value {
    json!({
        "get": {
            "tags": ["service"],
            "operationId": "index",
            "summary": "The routes this server mounts and its roles",
            "responses": {
                "200": {
                    "description": "The service's name, this document's path, its routes (`\"METHOD /path\": \"what it does\"`) and its roles",
                    "content": { "application/json": { "schema": {
                        "type": "object",
                        "required": ["service", "docs", "routes", "roles"],
                        "properties": {
                            "service": { "type": "string" },
                            "docs": { "type": "string" },
                            "routes": { "type": "object", "additionalProperties": { "type": "string" } },
                            "roles": { "type": "array", "items": { "type": "string" } },
                        },
                    } } },
                },
            },
        },
    })
}

fn healthz() -> Value {
    json!({
        "get": {
            "tags": ["service"],
            "operationId": "healthz",
            "summary": "Liveness: the process answers",
            "responses": { "200": text("The process answers", "ok\n") },
        },
    })
}

fn readyz() -> Value {
    json!({
        "get": {
            "tags": ["service"],
            "operationId": "readyz",
            "summary": "Readiness: the database, the revocation listener and Redis (when configured) answer",
            "responses": {
                "200": text("Ready", "ready\n"),
                "503": text("Not ready (the reason is logged, not shown)", "not ready\n"),
            },
        },
    })
}

fn metrics_path() -> Value {
    json!({
        "get": {
            "tags": ["service"],
            "operationId": "metrics",
            "summary": "Prometheus metrics",
            "responses": { "200": text("The Prometheus text exposition format", "keygate_requests_total 0\n") },
        },
    })
}

/// A route of the demo API: a bearer token with `permission`.
fn demo_path(path: &str, method: &str, permission: &str, status: &str) -> Value {
    let mut op = json!({
        "tags": ["demo"],
        "operationId": format!("demo_{method}_{}", path.replace(['/', '{', '}'], "_")),
        "summary": format!("Demo route; needs `{permission}`"),
        "responses": {
            status: {
                "description": "Done (a canned answer)",
                "content": { "application/json": { "schema": { "type": "object" } } },
            },
            "401": error("`missing_token` or `invalid_token`"),
            "403": error("`insufficient_scope`: the token lacks the permission, or `ip_not_allowed`"),
            "429": error("`rate_limited`"),
            "503": error("`store_unavailable`"),
        },
        "security": [{ "bearer": [permission] }],
    });
    if path.contains("{app}") {
        op["parameters"] = json!([{
            "name": "app", "in": "path", "required": true, "schema": { "type": "string" },
        }]);
    }
    json!({ method: op })
}
