//! Seed 004 (Tokencraft) walked through `examples/read_write.rs`: `dtk_` bearer tokens, reads
//! with any token and writes only with the write permission, the first 12 characters in the
//! list, immediate revocation, the exact 401 body, 100 requests a minute with rate-limit
//! headers and 429.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../../examples/read_write.rs"]
mod recipe;

use axum::Router;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::accounts::MemoryAccounts;
use serde_json::{Value, json};
use tower::ServiceExt;

const PRO: &str = "pro@example.com";
const FREE: &str = "free@example.com";
const PASSWORD: &str = "correct horse battery staple";
const INVALID: &str = r#"{"error":"Invalid API token","code":"invalid_token"}"#;

fn basic(email: &str) -> String {
    crate::common::basic(email, PASSWORD)
}

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    auth: &str,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, auth);
    let res = app
        .clone()
        .oneshot(crate::common::json_body(req, body))
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

async fn new_token(app: &Router, email: &str, name: &str) -> Value {
    let (status, _, body) = send(
        app,
        Method::POST,
        "/settings/tokens",
        &basic(email),
        Some(json!({ "name": name })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn tokencraft_api_tokens() {
    let tokens = recipe::tokens().unwrap();
    let accounts = MemoryAccounts::new();
    recipe::add_account(&accounts, PRO, PASSWORD, true)
        .await
        .unwrap();
    recipe::add_account(&accounts, FREE, PASSWORD, false)
        .await
        .unwrap();
    let app = recipe::app(tokens, accounts).unwrap();

    // "New Token", shown once: `dtk_…`.
    let pro = new_token(&app, PRO, "CI sync").await;
    let pro_token = pro["token"].as_str().unwrap().to_owned();
    assert!(pro_token.starts_with("dtk_"));
    let pro_auth = format!("Bearer {pro_token}");
    let free = new_token(&app, FREE, "laptop").await;
    let free_auth = format!("Bearer {}", free["token"].as_str().unwrap());

    // Reads work with any valid token.
    for auth in [&pro_auth, &free_auth] {
        let (status, headers, body) =
            send(&app, Method::GET, "/api/v1/workspaces", auth, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["ratelimit-limit"], "100");
        let (status, _, css) = send(
            &app,
            Method::GET,
            "/api/v1/tokensets/ts_1/modes/light/export",
            auth,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(css.contains("--color-primary"));
    }

    // Writes need the write permission: the FREE plan's token gets 403 on each write method.
    for (method, uri) in [
        (Method::POST, "/api/v1/workspaces"),
        (Method::PATCH, "/api/v1/workspaces/ws_1"),
        (Method::DELETE, "/api/v1/workspaces/ws_1"),
    ] {
        let (status, headers, body) = send(&app, method.clone(), uri, &free_auth, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}");
        let err: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(err["code"], "insufficient_scope");
        assert!(
            headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("scope=\"api:write\"")
        );
        let (status, _, _) = send(&app, method.clone(), uri, &pro_auth, None).await;
        assert!(status.is_success(), "{method} {uri}: {status}");
    }

    // The settings page lists the tokens with their first 12 characters only.
    let (status, _, body) = send(&app, Method::GET, "/settings/tokens", &basic(PRO), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains(&pro_token));
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0]["name"], "CI sync");
    assert_eq!(list[0]["hint"], &pro_token[..12]);
    assert!(list[0]["created_at"].is_string());
    assert!(list[0].get("last_used_at").is_some());

    // 100 requests a minute per token; the headers count down; the 101st gets 429.
    let ci = new_token(&app, PRO, "rate test").await;
    let ci_auth = format!("Bearer {}", ci["token"].as_str().unwrap());
    for i in 0..100u32 {
        let (status, headers, _) =
            send(&app, Method::GET, "/api/v1/workspaces", &ci_auth, None).await;
        assert_eq!(status, StatusCode::OK, "request {}", i + 1);
        assert_eq!(headers["ratelimit-limit"], "100");
        assert_eq!(
            headers["ratelimit-remaining"],
            (99 - i).to_string().as_str()
        );
        let reset: u64 = headers["ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(reset <= 60);
    }
    let (status, headers, body) =
        send(&app, Method::GET, "/api/v1/workspaces", &ci_auth, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        body,
        r#"{"error":"Rate limit exceeded. Please try again later.","code":"rate_limited"}"#
    );
    assert_eq!(headers["ratelimit-remaining"], "0");
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    // Other tokens keep their own budget.
    let (status, _, _) = send(&app, Method::GET, "/api/v1/workspaces", &pro_auth, None).await;
    assert_eq!(status, StatusCode::OK);

    // Unknown or malformed tokens: 401 with exactly Tokencraft's body.
    for bad in [
        "Bearer dtk_1234567890abcdef1234567890abcdef12345678".to_owned(),
        format!("Bearer {}x", &pro_token),
    ] {
        let (status, _, body) = send(&app, Method::GET, "/api/v1/workspaces", &bad, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, INVALID);
    }

    // Revocation is immediate: the very next request is refused.
    let (status, _, _) = send(
        &app,
        Method::DELETE,
        &format!("/settings/tokens/{}", pro["id"].as_str().unwrap()),
        &basic(PRO),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, headers, body) =
        send(&app, Method::GET, "/api/v1/workspaces", &pro_auth, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, INVALID);
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    let (_, _, body) = send(&app, Method::GET, "/settings/tokens", &basic(PRO), None).await;
    let names: Vec<String> = serde_json::from_str::<Vec<Value>>(&body)
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["rate test"]);
}

/// "Write requests will return 403 until you upgrade": upgrading the plan gives the tokens
/// already issued the new plan's write access (their kind lets the resolver widen them),
/// and a downgrade takes it away again, with no new token.
#[tokio::test]
async fn a_plan_upgrade_reaches_existing_tokens() {
    let tokens = recipe::tokens().unwrap();
    let accounts = MemoryAccounts::new();
    recipe::add_account(&accounts, FREE, PASSWORD, false)
        .await
        .unwrap();
    let app = recipe::app(tokens, accounts.clone()).unwrap();
    let created = new_token(&app, FREE, "laptop").await;
    assert_eq!(created["permissions"], json!(["api:read"]));
    let auth = format!("Bearer {}", created["token"].as_str().unwrap());

    let (status, _, body) = send(&app, Method::POST, "/api/v1/workspaces", &auth, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // FREE -> PRO: the same token now writes.
    recipe::add_account(&accounts, FREE, PASSWORD, true)
        .await
        .unwrap();
    let (status, _, body) = send(&app, Method::POST, "/api/v1/workspaces", &auth, None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, _) = send(&app, Method::GET, "/api/v1/workspaces", &auth, None).await;
    assert_eq!(status, StatusCode::OK);

    // PRO -> FREE: the write is gone again at once.
    recipe::add_account(&accounts, FREE, PASSWORD, false)
        .await
        .unwrap();
    let (status, _, body) =
        send(&app, Method::DELETE, "/api/v1/workspaces/ws_1", &auth, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _, _) = send(&app, Method::GET, "/api/v1/workspaces", &auth, None).await;
    assert_eq!(status, StatusCode::OK);
}

/// A token as Tokencraft issued it: `dtk_` and 40 lowercase hex characters, no checksum.
fn legacy_dtk_token() -> String {
    let bytes: [u8; 20] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("dtk_{hex}")
}

#[tokio::test]
async fn a_token_tokencraft_issued_keeps_working_once_imported() {
    let store = crate::common::TestStore::default();
    let tokens = recipe::tokens_in(store.clone()).unwrap();
    let accounts = MemoryAccounts::new();
    recipe::add_account(&accounts, PRO, PASSWORD, true)
        .await
        .unwrap();
    let app = recipe::app(tokens.clone(), accounts).unwrap();

    // Tokencraft kept the SHA-256 of each token; the migration imports it for its owner.
    let legacy = legacy_dtk_token();
    assert_eq!(legacy.len(), 44);
    let auth = format!("Bearer {legacy}");
    let (status, _, body) = send(&app, Method::GET, "/api/v1/workspaces", &auth, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "not imported yet");
    assert_eq!(body, INVALID);
    let id = recipe::import_legacy(
        &tokens,
        PRO,
        "CI sync (Tokencraft)",
        &keygate::TokenHash::of(&legacy).to_hex(),
        true,
    )
    .await
    .unwrap();

    // The same token now reads and writes, with the rate-limit headers of any token.
    let (status, headers, body) = send(&app, Method::GET, "/api/v1/workspaces", &auth, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["ratelimit-limit"], "100");
    let (status, _, _) = send(&app, Method::POST, "/api/v1/workspaces", &auth, None).await;
    assert_eq!(status, StatusCode::CREATED);

    // It is listed like the others, by a hint that is not the secret.
    let (_, _, body) = send(&app, Method::GET, "/settings/tokens", &basic(PRO), None).await;
    assert!(!body.contains(&legacy));
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0]["id"], id.to_string());
    assert_eq!(list[0]["hint"], "dtk_…");

    // The same hash cannot be imported twice.
    let again = recipe::import_legacy(
        &tokens,
        PRO,
        "again",
        &keygate::TokenHash::of(&legacy).to_hex(),
        true,
    )
    .await;
    assert!(again.unwrap_err().to_string().contains("already exists"));

    // Wrong length, upper-case hex, or a character outside hex: 401 without a lookup.
    let before = store.lookups();
    for bad in [
        legacy[..43].to_owned(),
        format!("{legacy}0"),
        format!("dtk_{}", "ABCDEF0123".repeat(4)),
        format!("dtk_{}", "g".repeat(40)),
        format!("dtk_{}", "0".repeat(39) + "-"),
    ] {
        let (status, _, body) = send(
            &app,
            Method::GET,
            "/api/v1/workspaces",
            &format!("Bearer {bad}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(body, INVALID);
    }
    assert_eq!(store.lookups(), before, "garbage never reaches the store");

    // Revoking it works as for any token: the next request is refused.
    let (status, _, _) = send(
        &app,
        Method::DELETE,
        &format!("/settings/tokens/{id}"),
        &basic(PRO),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, body) = send(&app, Method::GET, "/api/v1/workspaces", &auth, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, INVALID);
}
