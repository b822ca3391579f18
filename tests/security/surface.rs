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

/// The form a foreign page would post: `description=…` with the browser's cached Basic
/// credentials, plus the headers the browser adds.
fn form_post(path: &str, extra: &[(&str, &str)]) -> http::Request<axum::body::Body> {
    let mut b = http::Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(http::header::HOST, "keys.example.com")
        .header(http::header::AUTHORIZATION, crate::support::admin_basic())
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(axum::body::Body::from(
        "description=planted+by+evil.example",
    ))
    .unwrap()
}

async fn live_tokens(server: &Server) -> usize {
    let a = server
        .send(request(
            Method::GET,
            "/api/v1/tokens",
            &crate::support::admin_basic(),
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.json().as_array().unwrap().len()
}

#[tokio::test]
async fn a_foreign_page_cannot_post_a_form_with_the_browsers_basic_credentials() {
    let server = Server::start().await;
    for marks in [
        &[("origin", "https://evil.example")][..],
        &[("origin", "null")][..],
        &[("sec-fetch-site", "cross-site")][..],
        &[
            ("sec-fetch-site", "same-site"),
            ("origin", "https://x.keys.example.com"),
        ][..],
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ][..],
    ] {
        let a = server.send(form_post("/api/v1/tokens", marks)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{marks:?}: {}", a.text);
        assert_eq!(a.code(), "cross_site_request", "{marks:?}");
    }
    assert_eq!(live_tokens(&server).await, 0, "no token was created");

    // Revoking and rotating from another site are refused too; the token keeps working.
    let victim = server.create(json!({ "name": "victim" })).await;
    for (method, path) in [
        (Method::DELETE, format!("/api/v1/tokens/{}", victim.id)),
        (Method::POST, format!("/api/v1/tokens/{}/rotate", victim.id)),
    ] {
        let mut req = request(method, &path, &crate::support::admin_basic());
        req.headers_mut()
            .insert("sec-fetch-site", "cross-site".parse().unwrap());
        let a = server.send(req).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}: {}", a.text);
        assert_eq!(a.code(), "cross_site_request");
    }
    let me = server
        .send(request(Method::GET, "/api/v1/me", &victim.bearer()))
        .await;
    assert_eq!(
        me.status,
        StatusCode::OK,
        "the victim's token was not touched"
    );
}

#[tokio::test]
async fn same_origin_pages_and_clients_that_are_not_browsers_still_write() {
    let server = Server::start().await;
    for marks in [
        &[][..],
        &[
            ("sec-fetch-site", "same-origin"),
            ("origin", "https://keys.example.com"),
        ][..],
        &[("origin", "https://keys.example.com")][..],
        &[("sec-fetch-site", "none")][..],
    ] {
        let a = server.send(form_post("/api/v1/tokens", marks)).await;
        assert_eq!(a.status, StatusCode::CREATED, "{marks:?}: {}", a.text);
    }
    // Reads are not writes: a cross-site GET is answered as before.
    let mut req = request(
        Method::GET,
        "/api/v1/tokens",
        &crate::support::admin_basic(),
    );
    req.headers_mut()
        .insert("sec-fetch-site", "cross-site".parse().unwrap());
    assert_eq!(server.send(req).await.status, StatusCode::OK);
    assert_eq!(live_tokens(&server).await, 4);
}
