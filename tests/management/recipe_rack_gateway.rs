//! Seed 003 (Rack Gateway) walked through `examples/roles_and_audit.rs`: `rgw_` tokens kept as
//! SHA-256, roles resolved to explicit permissions, admin-only management with
//! `created_by`/`created_at`/`last_used_at`, an audit line per use with the RBAC decision,
//! header-only authentication, IP allow-lists.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../../examples/roles_and_audit.rs"]
mod recipe;

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::accounts::MemoryAccounts;
use keygate::audit::{AuditLog, JsonLinesSink};
use keygate::client_ip::ClientAddr;
use keygate::{Roles, TokenHash};
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "admin@example.com";
const DEV: &str = "dev@example.com";
const PASSWORD: &str = "correct horse battery staple";

fn basic(email: &str) -> String {
    crate::common::basic(email, PASSWORD)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(header::HeaderName, &str)],
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(k, *v);
    }
    let res = app
        .clone()
        .oneshot(crate::common::json_body(req, body))
        .await
        .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let json = crate::common::json_or_null(&bytes);
    (status, json)
}

fn role_permissions(role: &str) -> Value {
    serde_json::to_value(Roles::deployment_platform().get(role).unwrap()).unwrap()
}

#[tokio::test]
async fn rack_gateway_api_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("audit.jsonl");
    let audit = AuditLog::spawn(JsonLinesSink::open(&log_path).unwrap(), 1000);
    let tokens = recipe::tokens().unwrap();
    let accounts = MemoryAccounts::new();
    recipe::add_user(&accounts, ADMIN, PASSWORD, "admin")
        .await
        .unwrap();
    recipe::add_user(&accounts, DEV, PASSWORD, "viewer")
        .await
        .unwrap();
    let app = recipe::app(tokens.clone(), accounts, audit.clone()).unwrap();
    let auth = header::AUTHORIZATION;

    // The admin signs in and takes an admin token for automation.
    let (status, admin) = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        &[(auth.clone(), &basic(ADMIN))],
        Some(json!({ "name": "admin-automation", "role": "admin" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{admin}");
    let admin_token = admin["token"].as_str().unwrap().to_owned();
    assert!(admin_token.starts_with("rgw_"));
    assert_eq!(admin["permissions"], json!(["*"]));

    // A non-admin account cannot mint an admin token...
    let (status, err) = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        &[(auth.clone(), &basic(DEV))],
        Some(json!({ "name": "sneaky", "role": "admin" })),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["code"], "insufficient_scope");
    // ...only a token within its own rights, for itself.
    let (status, monitor) = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        &[(auth.clone(), &basic(DEV))],
        Some(json!({ "name": "Datadog Monitor", "role": "viewer" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let viewer_token = monitor["token"].as_str().unwrap().to_owned();
    // And it cannot use the admin routes: management of others' tokens is admin-only.
    let (status, err) = send(
        &app,
        Method::POST,
        "/api/v1/admin/users/ci@example.com/api-tokens",
        &[(auth.clone(), &bearer(&viewer_token))],
        Some(json!({ "name": "GitHub Actions", "role": "cicd" })),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["code"], "insufficient_scope");
    let (status, _) = send(
        &app,
        Method::GET,
        "/api/v1/admin/users/ci@example.com/api-tokens",
        &[(auth.clone(), &bearer(&viewer_token))],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // `rack-gateway api-token create --name "GitHub Actions" --role cicd`, by the admin, for
    // the CI user; and an ops token for emergency restarts.
    let admin_auth = bearer(&admin_token);
    let (status, ci) = send(
        &app,
        Method::POST,
        "/api/v1/admin/users/ci@example.com/api-tokens",
        &[(auth.clone(), &admin_auth)],
        Some(json!({ "name": "GitHub Actions", "role": "cicd" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{ci}");
    assert_eq!(ci["created_by"], ADMIN);
    assert_eq!(ci["role"], "cicd");
    assert_eq!(ci["permissions"], role_permissions("cicd"));
    assert!(ci["last_used_at"].is_null());
    let ci_token = ci["token"].as_str().unwrap().to_owned();
    let ci_id = ci["id"].as_str().unwrap().to_owned();
    let (status, ops) = send(
        &app,
        Method::POST,
        "/api/v1/admin/users/ops@example.com/api-tokens",
        &[(auth.clone(), &admin_auth)],
        Some(json!({ "name": "emergency-restart", "role": "ops" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(ops["permissions"], role_permissions("ops"));
    let ops_token = ops["token"].as_str().unwrap().to_owned();

    // Only the SHA-256 of the full token is stored.
    let record = tokens
        .store()
        .find_by_hash(&TokenHash::of(&ci_token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.hash, TokenHash::of(&ci_token));
    assert_eq!(record.id.to_string(), ci_id);
    let debug = format!("{record:?}");
    assert!(!debug.contains(&ci_token));
    assert!(
        !debug.contains(&ci_token[12..]),
        "only the 12-character hint"
    );

    // Each role's explicit permissions decide each action.
    let cases = [
        (
            &ci_token,
            Method::POST,
            "/apps/myapp/builds",
            StatusCode::OK,
        ),
        (&ci_token, Method::GET, "/apps", StatusCode::OK),
        (
            &ci_token,
            Method::POST,
            "/apps/myapp/processes/web/restart",
            StatusCode::FORBIDDEN,
        ),
        (
            &ci_token,
            Method::GET,
            "/apps/myapp/env",
            StatusCode::FORBIDDEN,
        ),
        (
            &ops_token,
            Method::POST,
            "/apps/myapp/processes/web/restart",
            StatusCode::OK,
        ),
        (&ops_token, Method::GET, "/apps/myapp/env", StatusCode::OK),
        (
            &ops_token,
            Method::POST,
            "/apps/myapp/builds",
            StatusCode::FORBIDDEN,
        ),
        (&viewer_token, Method::GET, "/apps", StatusCode::OK),
        (
            &viewer_token,
            Method::POST,
            "/apps/myapp/builds",
            StatusCode::FORBIDDEN,
        ),
    ];
    for (token, method, path, expected) in cases {
        let (status, body) = send(
            &app,
            method.clone(),
            path,
            &[(auth.clone(), &bearer(token))],
            None,
        )
        .await;
        assert_eq!(status, expected, "{method} {path}: {body}");
    }

    // Header, not cookie: a token in a cookie is not a credential.
    let (status, err) = send(
        &app,
        Method::GET,
        "/apps",
        &[(header::COOKIE, &format!("rgw_token={ci_token}"))],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["code"], "missing_token");

    // IP allow-list: a token pinned to the CI network is refused from anywhere else.
    let (status, pinned) = send(
        &app,
        Method::POST,
        "/api/v1/admin/users/ci@example.com/api-tokens",
        &[(auth.clone(), &admin_auth)],
        Some(
            json!({ "name": "nightly-deploy", "role": "cicd", "allowed_ips": ["203.0.113.0/24"] }),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{pinned}");
    assert_eq!(pinned["allowed_ips"], json!(["203.0.113.0/24"]));
    let pinned_auth = bearer(pinned["token"].as_str().unwrap());
    for (peer, expected) in [
        (Some("203.0.113.7:50000"), StatusCode::OK),
        (Some("198.51.100.1:50000"), StatusCode::FORBIDDEN),
        (None, StatusCode::FORBIDDEN),
    ] {
        let mut req = Request::post("/apps/myapp/builds")
            .header(&auth, &pinned_auth)
            .body(Body::empty())
            .unwrap();
        if let Some(p) = peer {
            req.extensions_mut().insert(ClientAddr(p.parse().unwrap()));
        }
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), expected, "from {peer:?}");
        if expected == StatusCode::FORBIDDEN {
            let body = res.into_body().collect().await.unwrap().to_bytes();
            let err: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(err["code"], "ip_not_allowed");
        }
    }

    // `rack-gateway api-token list`: created_by, created_at, last_used_at.
    tokens.flush_usage().await.unwrap();
    let (status, list) = send(
        &app,
        Method::GET,
        "/api/v1/admin/users/ci@example.com/api-tokens",
        &[(auth.clone(), &admin_auth)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["name"], "GitHub Actions");
    assert_eq!(list[0]["created_by"], ADMIN);
    assert!(list[0]["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(list[0]["last_used_at"].as_str().unwrap().ends_with('Z'));
    assert!(list[0].get("token").is_none());

    // `rack-gateway api-token delete <token-id>`: refused from the next request on.
    let (status, _) = send(
        &app,
        Method::DELETE,
        &format!("/api/v1/admin/users/ci@example.com/api-tokens/{ci_id}"),
        &[(auth.clone(), &admin_auth)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = send(
        &app,
        Method::POST,
        "/apps/myapp/builds",
        &[(auth.clone(), &bearer(&ci_token))],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The audit log: one line per use, in Rack Gateway's field names, never a token.
    audit.shutdown().await;
    let text = std::fs::read_to_string(&log_path).unwrap();
    for t in [&admin_token, &ci_token, &ops_token, &viewer_token] {
        assert!(!text.contains(t.as_str()));
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |method: &str, path: &str, status: u16| -> &Value {
        lines
            .iter()
            .find(|e| e["method"] == method && e["path"] == path && e["status_code"] == status)
            .unwrap_or_else(|| panic!("no audit line for {method} {path} {status}: {text}"))
    };
    let deploy = find("POST", "/apps/myapp/builds", 200);
    assert_eq!(deploy["api_token_id"], ci_id.as_str());
    assert_eq!(deploy["api_token_name"], "GitHub Actions");
    assert_eq!(deploy["rbac_decision"], "allow");
    assert!(deploy["timestamp"].as_str().unwrap().ends_with('Z'));
    let denied = find("POST", "/apps/myapp/processes/web/restart", 403);
    assert_eq!(denied["api_token_name"], "GitHub Actions");
    assert_eq!(denied["rbac_decision"], "deny");
    assert_eq!(denied["reason"], "insufficient_scope");
    let revoked = find("POST", "/apps/myapp/builds", 401);
    assert_eq!(revoked["api_token_id"], ci_id.as_str());
    assert_eq!(revoked["rbac_decision"], "deny");
    assert_eq!(revoked["reason"], "revoked");
    let admin_use = find("POST", "/api/v1/admin/users/ci@example.com/api-tokens", 201);
    assert_eq!(admin_use["api_token_name"], "admin-automation");
    assert_eq!(admin_use["rbac_decision"], "allow");
    let cookie = find("GET", "/apps", 401);
    assert_eq!(cookie["rbac_decision"], "deny");
    assert!(cookie["api_token_id"].is_null());
    let outside = lines
        .iter()
        .find(|e| e["reason"] == "ip_not_allowed" && e["client_ip"].is_string())
        .unwrap();
    assert_eq!(outside["path"], "/apps/myapp/builds");
    assert_eq!(outside["status_code"], 403);
    assert_eq!(outside["rbac_decision"], "deny");
    assert_eq!(outside["api_token_name"], "nightly-deploy");
    assert_eq!(outside["reason"], "ip_not_allowed");
    assert_eq!(outside["client_ip"], "198.51.100.1");
    // 9 rack requests, 7 on the admin routes, the cookie, 3 from the pinned token, the
    // revoked token; the Basic sign-ins of the management API are not token uses.
    assert_eq!(lines.len(), 21, "{text}");
}

/// A Rack Gateway token (`rgw_` + 32 random bytes in unpadded base64url: 43 characters),
/// as the old system issued it: no checksum.
fn legacy_rgw_token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!(
        "rgw_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

#[tokio::test]
async fn a_token_rack_gateway_issued_keeps_working_once_imported() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("audit.jsonl");
    let audit = AuditLog::spawn(JsonLinesSink::open(&log_path).unwrap(), 1000);
    let store = crate::common::TestStore::default();
    let tokens = recipe::tokens_in(store.clone()).unwrap();
    let accounts = MemoryAccounts::new();
    recipe::add_user(&accounts, ADMIN, PASSWORD, "admin")
        .await
        .unwrap();
    recipe::add_user(&accounts, DEV, PASSWORD, "viewer")
        .await
        .unwrap();
    let app = recipe::app(tokens.clone(), accounts, audit.clone()).unwrap();
    let auth = header::AUTHORIZATION;

    // The old system kept the SHA-256 of each token; its holder keeps the token.
    let legacy = legacy_rgw_token();
    assert_eq!(legacy.len(), 47);
    let entry = json!({
        "owner": "ci@example.com",
        "name": "GitHub Actions (before the switch)",
        "hash": TokenHash::of(&legacy).to_hex(),
        "role": "cicd",
        "created_at": "2024-01-15T10:30:00Z",
    });

    // Importing is for administrators: a viewer gets 403 and nothing is stored.
    let (status, err) = send(
        &app,
        Method::POST,
        "/api/v1/admin/tokens/import",
        &[(auth.clone(), &basic(DEV))],
        Some(json!([entry])),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(err["code"], "insufficient_scope");
    let (status, _) = send(
        &app,
        Method::GET,
        "/apps",
        &[(auth.clone(), &bearer(&legacy))],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The admin imports it.
    let (status, answer) = send(
        &app,
        Method::POST,
        "/api/v1/admin/tokens/import",
        &[(auth.clone(), &basic(ADMIN))],
        Some(json!([entry])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["imported"], 1);
    assert_eq!(answer["failed"], 0);
    let id = answer["results"][0]["id"].as_str().unwrap().to_owned();

    // The old token now works, with its role's permissions, recorded like any other.
    let (status, apps) = send(
        &app,
        Method::GET,
        "/apps",
        &[(auth.clone(), &bearer(&legacy))],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{apps}");
    let (status, _) = send(
        &app,
        Method::POST,
        "/apps/myapp/builds",
        &[(auth.clone(), &bearer(&legacy))],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(
        &app,
        Method::POST,
        "/apps/myapp/processes/web/restart",
        &[(auth.clone(), &bearer(&legacy))],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "cicd may not restart");
    let record = tokens
        .get("ci@example.com", id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(record.created_by, ADMIN);
    assert_eq!(record.hint, "rgw_…");
    assert_eq!(
        record.permissions,
        Roles::deployment_platform().get("cicd").unwrap().clone()
    );
    assert_eq!(
        record.created_at,
        time::macros::datetime!(2024-01-15 10:30:00 UTC)
    );

    // Importing the same hash again is refused, never an overwrite.
    let (status, again) = send(
        &app,
        Method::POST,
        "/api/v1/admin/tokens/import",
        &[(auth.clone(), &basic(ADMIN))],
        Some(json!([{ "owner": "mallory@example.com", "name": "stolen", "hash": TokenHash::of(&legacy).to_hex(), "role": "admin" }])),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["failed"], 1);
    assert_eq!(again["results"][0]["code"], "duplicate");
    let (status, _) = send(
        &app,
        Method::GET,
        "/apps/myapp/env",
        &[(auth.clone(), &bearer(&legacy))],
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "still the cicd token of ci@example.com"
    );

    // A legacy-shaped token of the wrong length or alphabet is refused without a store
    // lookup; so is the imported token with one character changed to one outside base64url.
    let before = store.lookups();
    let plus = format!("{}+{}", &legacy[..20], &legacy[21..]);
    for bad in [
        &legacy[..46],
        &format!("{legacy}A"),
        &plus,
        &format!("rgw_{}", "0123456789abcdef".repeat(3).get(..43).unwrap()).replace('0', "~"),
    ] {
        let (status, err) = send(
            &app,
            Method::GET,
            "/apps",
            &[(auth.clone(), &bearer(bad))],
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(err["code"], "invalid_token");
    }
    assert_eq!(store.lookups(), before, "garbage never reaches the store");
    // A well-formed legacy token that was never imported costs one lookup and gets 401.
    let (status, _) = send(
        &app,
        Method::GET,
        "/apps",
        &[(auth.clone(), &bearer(&legacy_rgw_token()))],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(store.lookups(), before + 1);

    // Tokens keygate issues keep keygate's format and checksum.
    let (status, created) = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        &[(auth.clone(), &basic(ADMIN))],
        Some(json!({ "name": "new", "role": "viewer" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let fresh = created["token"].as_str().unwrap();
    assert!(keygate::token::looks_like_token(fresh));
    assert!(!keygate::token::looks_like_token(&legacy));

    // The audit log tells garbage (decided without a lookup) from an unknown token.
    audit.shutdown().await;
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(!text.contains(&legacy));
    let reasons: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["path"] == "/apps" && e["status_code"] == 401)
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        reasons,
        [
            "unknown",
            "malformed",
            "malformed",
            "malformed",
            "malformed",
            "unknown"
        ],
        "{text}"
    );
}
