//! The management surface: audit events that a flood cannot push out, a `/metrics` that
//! tells no refusal reason, an audit log that shows each owner only its own events, and
//! management writes that a foreign web page cannot make.

use http::{Method, StatusCode};
use keygate::Permissions;
use keygate::accounts::{Account, AccountStore, hash_password};
use keygate::store::sqlite::SqliteStore;
use serde_json::{Value, json};

use crate::support::{ADMIN, Server, basic, json_request, request};

const OTHER: &str = "bob@example.com";
const OTHER_PASSWORD: &str = "another horse battery staple";

/// Adds an account with `permissions` to the server's database.
async fn add_account(server: &Server, email: &str, password: &str, permissions: &[&str]) {
    let store = SqliteStore::open(&server.config.db).await.unwrap();
    store
        .put_account(Account {
            email: email.to_owned(),
            password_hash: hash_password(password).unwrap(),
            permissions: Permissions::parse(permissions.iter().copied()).unwrap(),
            created_at: time::OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
}

/// The events `auth` reads from `GET /api/v1/audit` with `query`.
async fn audit_as(server: &Server, auth: &str, query: &str) -> Vec<Value> {
    let a = server
        .send(request(
            Method::GET,
            &format!("/api/v1/audit?limit=1000{query}"),
            auth,
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.json().as_array().unwrap().clone()
}

#[tokio::test]
async fn an_account_with_audit_read_sees_only_its_own_events() {
    let server = Server::start().await;
    let admin_token = server.create(json!({ "name": "admins-own" })).await;
    let me = server
        .send(request(Method::GET, "/api/v1/me", &admin_token.bearer()))
        .await;
    assert_eq!(me.status, StatusCode::OK);
    add_account(
        &server,
        OTHER,
        OTHER_PASSWORD,
        &["audit:read", "tokens:read", "tokens:write"],
    )
    .await;
    let bob = basic(OTHER, OTHER_PASSWORD);
    let created = server
        .send(json_request(
            Method::POST,
            "/api/v1/tokens",
            &bob,
            &json!({ "name": "bobs-own" }),
        ))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let bobs_token = created.json()["id"].as_str().unwrap().to_owned();

    // The admin (`*`, which holds audit:read_all) sees its token's decisions; wait until
    // the queued request event is written.
    let admin = crate::support::admin_basic();
    let mut seen = false;
    for _ in 0..500 {
        let events = audit_as(&server, &admin, &format!("&token_id={}", admin_token.id)).await;
        if events.iter().any(|e| e["event"] == "authenticate") {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(seen, "the admin reads its token's events");
    let everyone = audit_as(&server, &admin, "").await;
    assert!(
        everyone.iter().any(|e| e["owner"] == OTHER),
        "admin reads every owner"
    );

    // Bob reads the log: only his own events, however he asks.
    let all = audit_as(&server, &bob, "").await;
    assert!(
        all.iter()
            .any(|e| e["event"] == "token.create" && e["api_token_id"] == bobs_token.as_str()),
        "bob sees his own events: {all:?}"
    );
    for e in &all {
        assert_eq!(e["owner"], OTHER, "bob read someone else's event: {e}");
    }
    let asked = audit_as(&server, &bob, &format!("&token_id={}", admin_token.id)).await;
    assert!(
        asked.is_empty(),
        "bob read the admin's token's events: {asked:?}"
    );
    assert!(
        !audit_as(&server, &bob, "")
            .await
            .iter()
            .any(|e| e["owner"] == ADMIN),
        "no event of the admin"
    );
}
