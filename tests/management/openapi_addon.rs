//! `keygate::openapi::SecurityAddon` in a user's own utoipa document: the bearer scheme,
//! the error schema and the refusal responses as components, the requirement and the
//! references on each operation, a response the user declared kept.

#![allow(clippy::unwrap_used)]

use keygate::openapi::{ERROR_SCHEMA, RESPONSES, SecurityAddon};
use serde_json::{Value, json};
use utoipa::OpenApi;

/// The things.
#[utoipa::path(
    get,
    path = "/things",
    responses(
        (status = 200, description = "The things"),
        (status = 403, description = "Our own refusal"),
    )
)]
#[allow(dead_code)]
async fn list_things() {}

/// Deletes a thing.
#[utoipa::path(
    delete,
    path = "/things/{id}",
    params(("id" = String, Path, description = "The thing")),
    responses((status = 204, description = "Deleted")),
    security(("session" = []))
)]
#[allow(dead_code)]
async fn delete_thing() {}

/// Liveness.
#[utoipa::path(get, path = "/health", responses((status = 200, description = "Alive")))]
#[allow(dead_code)]
async fn health() {}

const EVERYWHERE: SecurityAddon = SecurityAddon::new();

#[derive(OpenApi)]
#[openapi(paths(list_things, delete_thing, health), modifiers(&EVERYWHERE))]
struct Everywhere;

const THINGS_ONLY: SecurityAddon = SecurityAddon::new()
    .scheme("api_token")
    .only_paths(&["/things", "/things/{id}"]);

#[derive(OpenApi)]
#[openapi(paths(list_things, delete_thing, health), modifiers(&THINGS_ONLY))]
struct ThingsOnly;

/// Follows a local `$ref` (`#/components/...`) in `doc`.
fn resolve<'a>(doc: &'a Value, reference: &Value) -> &'a Value {
    let pointer = reference.as_str().unwrap().strip_prefix('#').unwrap();
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("{pointer} is not in the document"))
}

#[test]
fn the_users_document_gets_the_scheme_the_components_and_each_operations_responses() {
    let doc = serde_json::to_value(Everywhere::openapi()).unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["keygate"],
        json!({
            "type": "http",
            "scheme": "bearer",
            "description": "A keygate API token: `Authorization: Bearer <token>`",
        })
    );
    let error = &doc["components"]["schemas"][ERROR_SCHEMA];
    assert_eq!(error["required"], json!(["error", "code"]));

    let responses = &doc["components"]["responses"];
    assert!(responses["KeygateUnauthorized"]["headers"]["WWW-Authenticate"].is_object());
    for name in ["KeygateRateLimited", "KeygateUnavailable"] {
        assert_eq!(
            responses[name]["headers"]["Retry-After"]["schema"]["type"], "integer",
            "{name}"
        );
    }

    for (path, method) in [
        ("/things", "get"),
        ("/things/{id}", "delete"),
        ("/health", "get"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(
            op["security"]
                .as_array()
                .unwrap()
                .contains(&json!({ "keygate": [] })),
            "{method} {path}: {}",
            op["security"]
        );
        for (status, _) in RESPONSES {
            let res = &op["responses"][status];
            let res = match res.get("$ref") {
                Some(r) => resolve(&doc, r),
                None => res,
            };
            assert!(
                res["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{method} {path} {status}"
            );
        }
        // Every body reference leads to keygate's error schema.
        if let Some(r) = op["responses"]["401"].get("$ref") {
            let body = &resolve(&doc, r)["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(resolve(&doc, body), error);
        }
    }

    // What the user wrote stays: their 200 and 403, and their own security requirement.
    let get = &doc["paths"]["/things"]["get"];
    assert_eq!(get["responses"]["200"]["description"], "The things");
    assert_eq!(get["responses"]["403"]["description"], "Our own refusal");
    assert_eq!(
        get["responses"]["401"]["$ref"],
        "#/components/responses/KeygateUnauthorized"
    );
    let delete = &doc["paths"]["/things/{id}"]["delete"];
    assert_eq!(
        delete["security"],
        json!([{ "session": [] }, { "keygate": [] }])
    );
    assert_eq!(delete["responses"]["204"]["description"], "Deleted");
}

#[test]
fn a_named_scheme_secures_only_the_named_paths() {
    let doc = serde_json::to_value(ThingsOnly::openapi()).unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["api_token"]["scheme"],
        "bearer"
    );
    assert!(
        doc["components"]["securitySchemes"]
            .get("keygate")
            .is_none()
    );
    let get = &doc["paths"]["/things"]["get"];
    assert_eq!(get["security"], json!([{ "api_token": [] }]));
    assert_eq!(
        get["responses"]["429"]["$ref"],
        "#/components/responses/KeygateRateLimited"
    );
    let health = &doc["paths"]["/health"]["get"];
    assert!(health.get("security").is_none(), "{health}");
    assert!(health["responses"].get("401").is_none(), "{health}");
    assert_eq!(health["responses"]["200"]["description"], "Alive");
}
