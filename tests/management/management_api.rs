//! The management HTTP API (`keygate::axum::management`) through its public router, driven
//! with `tower::ServiceExt::oneshot` (no ports): every route, status and error code of
//! DESIGN's "Management HTTP API", Basic vs Bearer, rotation with and without grace on a
//! manual clock, the limits, a failing store, and the OpenAPI document.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use base64::Engine;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
use keygate::axum::management::Management;
use keygate::clock::ManualClock;
use keygate::{NewToken, Permissions, Roles, StoreError, TokenId, Tokens};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tower::ServiceExt;

use crate::common;

const ADMIN: &str = "admin@example.com";
const BOB: &str = "bob@example.com";
const VIEWER: &str = "viewer@example.com";
const PASSWORD: &str = "correct horse battery staple";

/// A `MemoryStore` that can be switched off: every call then fails like a lost connection.
use common::TestStore as FlakyStore;
use common::basic;

/// Accounts that can be switched off too.
#[derive(Clone, Default)]
struct FlakyAccounts {
    inner: MemoryAccounts,
    down: Arc<AtomicBool>,
}

#[async_trait]
impl AccountStore for FlakyAccounts {
    async fn put_account(&self, account: Account) -> Result<(), StoreError> {
        self.inner.put_account(account).await
    }
    async fn find_account(&self, email: &str) -> Result<Option<Account>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Timeout);
        }
        self.inner.find_account(email).await
    }
}

fn password_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(PASSWORD).unwrap())
        .clone()
}

struct Fixture {
    app: Router,
    tokens: Tokens,
    clock: ManualClock,
    store: FlakyStore,
    accounts: FlakyAccounts,
}

async fn fixture_with(configure: impl FnOnce(Management) -> Management) -> Fixture {
    let clock = ManualClock::new(time::macros::datetime!(2026-06-01 12:00 UTC));
    let store = FlakyStore::default();
    let tokens = Tokens::builder(store.clone())
        .roles(Roles::deployment_platform())
        .clock(clock.clone())
        .build()
        .unwrap();
    let accounts = FlakyAccounts::default();
    for (email, perms) in [
        (ADMIN, vec!["*"]),
        (BOB, vec!["*"]),
        (VIEWER, vec!["apps:read", "tokens:read"]),
    ] {
        accounts
            .put_account(Account {
                email: email.into(),
                password_hash: password_hash(),
                permissions: Permissions::parse(perms).unwrap(),
                created_at: clock_now(),
            })
            .await
            .unwrap();
    }
    let app = configure(Management::new(tokens.clone(), accounts.clone())).router();
    Fixture {
        app,
        tokens,
        clock,
        store,
        accounts,
    }
}

fn clock_now() -> OffsetDateTime {
    time::macros::datetime!(2026-06-01 12:00 UTC)
}

async fn fixture() -> Fixture {
    fixture_with(|m| m).await
}

fn admin() -> String {
    basic(ADMIN, PASSWORD)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// Asserts an error answer: status, `code`, and the `{"error","code"}` shape.
    #[track_caller]
    fn assert_error(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert!(self.text.starts_with("{\"error\":"), "{}", self.text);
        let v = self.json();
        assert_eq!(v["code"], code, "body: {}", self.text);
        assert_eq!(
            v.as_object().unwrap().len(),
            2,
            "only error and code: {}",
            self.text
        );
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/json");
        v["error"].as_str().unwrap().to_owned()
    }

    fn header(&self, name: header::HeaderName) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

async fn send(app: &Router, req: Request<Body>) -> Reply {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        text: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

fn request(method: Method, uri: &str, auth: Option<&str>) -> http::request::Builder {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        b = b.header(header::AUTHORIZATION, a);
    }
    b
}

async fn call(app: &Router, method: Method, uri: &str, auth: Option<&str>) -> Reply {
    send(app, request(method, uri, auth).body(Body::empty()).unwrap()).await
}

async fn post_json(app: &Router, uri: &str, auth: Option<&str>, body: Value) -> Reply {
    let req = request(Method::POST, uri, auth)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(app, req).await
}

async fn post_form(app: &Router, uri: &str, auth: Option<&str>, body: &str) -> Reply {
    let req = request(Method::POST, uri, auth)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap();
    send(app, req).await
}

/// Creates a token over HTTP with Basic auth as `email`; returns (id, token).
async fn create(app: &Router, email: &str, body: Value) -> (String, String) {
    let r = post_json(app, "/tokens", Some(&basic(email, PASSWORD)), body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v = r.json();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

async fn me_status(app: &Router, token: &str) -> StatusCode {
    call(app, Method::GET, "/me", Some(&bearer(token)))
        .await
        .status
}

#[tokio::test]
async fn seed_000_create_with_basic_auth_and_a_form_description() {
    let f = fixture().await;
    let r = post_form(
        &f.app,
        "/tokens",
        Some(&admin()),
        "description=My+automation+script",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.header(header::CACHE_CONTROL), ["no-store"]);
    let v = r.json();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "id",
        "token",
        "name",
        "description",
        "role",
        "permissions",
        "hint",
        "created_at",
        "expires_at",
        "last_used_at",
    ] {
        assert!(keys.contains(&k), "missing {k} in {}", r.text);
    }
    assert_eq!(v["description"], "My automation script");
    assert_eq!(v["name"], "token-1", "the server picks a name");
    assert_eq!(v["created_at"], "2026-06-01T12:00:00Z");
    assert_eq!(v["expires_at"], Value::Null);
    assert_eq!(v["last_used_at"], Value::Null);
    assert_eq!(v["role"], Value::Null);
    // Neither role nor permissions: the token acts with the account's own permissions.
    assert_eq!(v["permissions"], json!(["*"]));
    let token = v["token"].as_str().unwrap();
    assert!(token.starts_with("pat_"));
    assert_eq!(v["hint"], &token[..12]);
    assert!(keygate::token::looks_like_token(token));

    // The new token works at once, as the account's owner.
    let me = call(&f.app, Method::GET, "/me", Some(&bearer(token))).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    let me = me.json();
    assert_eq!(me["owner"], ADMIN);
    assert_eq!(me["token_id"], v["id"]);
    assert_eq!(me["token_name"], "token-1");
    assert_eq!(me["auth_method"], "bearer");

    // A second unnamed token gets the next free name.
    let r = post_form(&f.app, "/tokens", Some(&admin()), "description=CLI+tool").await;
    assert_eq!(r.json()["name"], "token-2");
}

#[tokio::test]
async fn create_with_json_role_and_expiry() {
    let f = fixture().await;
    let r = post_json(
        &f.app,
        "/tokens",
        Some(&admin()),
        json!({"name": "ci-deploy", "description": "GitHub Actions", "role": "cicd", "expires_in": 3600}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v = r.json();
    assert_eq!(v["name"], "ci-deploy");
    assert_eq!(v["role"], "cicd");
    assert_eq!(v["expires_at"], "2026-06-01T13:00:00Z");
    let perms: Vec<&str> = v["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(perms.contains(&"builds:create"));
    assert!(!perms.contains(&"tokens:write"));

    // Explicit permissions, in a form too.
    let r = post_form(
        &f.app,
        "/tokens",
        Some(&admin()),
        "name=reader&permissions=apps:read,tokens:read&expires_in=60",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["permissions"], json!(["apps:read", "tokens:read"]));
    assert_eq!(r.json()["expires_at"], "2026-06-01T12:01:00Z");

    // Emails are case-insensitive for Basic sign-in.
    let r = post_json(
        &f.app,
        "/tokens",
        Some(&basic("ADMIN@Example.COM", PASSWORD)),
        json!({"name": "shouty"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn a_bearer_token_cannot_create_tokens() {
    let f = fixture().await;
    let (_, token) = create(&f.app, ADMIN, json!({"name": "all-powerful"})).await;
    let r = post_form(
        &f.app,
        "/tokens",
        Some(&bearer(&token)),
        "description=Sneaky",
    )
    .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "basic_auth_required");
    assert_eq!(
        r.header(header::WWW_AUTHENTICATE),
        ["Basic realm=\"keygate\", charset=\"UTF-8\""]
    );
    // Nothing was created.
    assert_eq!(f.tokens.list(ADMIN).await.unwrap().len(), 1);
}

#[tokio::test]
async fn basic_failures_look_the_same_for_unknown_email_and_wrong_password() {
    let f = fixture().await;
    let wrong = post_form(
        &f.app,
        "/tokens",
        Some(&basic(ADMIN, "wrong password")),
        "description=x",
    )
    .await;
    let unknown = post_form(
        &f.app,
        "/tokens",
        Some(&basic("nobody@example.com", PASSWORD)),
        "description=x",
    )
    .await;
    wrong.assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!(wrong.status, unknown.status);
    assert_eq!(wrong.text, unknown.text);
    assert_eq!(wrong.headers, unknown.headers);
    assert_eq!(
        wrong.header(header::WWW_AUTHENTICATE),
        ["Basic realm=\"keygate\", charset=\"UTF-8\""]
    );

    // No credentials at all.
    let none = post_form(&f.app, "/tokens", None, "description=x").await;
    none.assert_error(StatusCode::UNAUTHORIZED, "missing_credentials");
    assert_eq!(
        none.header(header::WWW_AUTHENTICATE),
        ["Basic realm=\"keygate\", charset=\"UTF-8\""]
    );
    // Where a bearer token is accepted too, both challenges are offered.
    let none = call(&f.app, Method::GET, "/tokens", None).await;
    none.assert_error(StatusCode::UNAUTHORIZED, "missing_credentials");
    assert_eq!(
        none.header(header::WWW_AUTHENTICATE),
        [
            "Basic realm=\"keygate\", charset=\"UTF-8\"",
            "Bearer realm=\"keygate\""
        ]
    );
    // Broken Basic credentials and broken headers are bad requests.
    let r = post_form(&f.app, "/tokens", Some("Basic %%%"), "description=x").await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let r = post_form(
        &f.app,
        "/tokens",
        Some(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("no-colon")
        )),
        "description=x",
    )
    .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let req = request(Method::GET, "/tokens", Some(&admin()))
        .header(header::AUTHORIZATION, admin())
        .body(Body::empty())
        .unwrap();
    send(&f.app, req)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn every_invalid_field_is_a_clear_400() {
    let f = fixture().await;
    let long = "x".repeat(101);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"name": ""}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": long}), "name"),
        (json!({"name": "tab\there"}), "name"),
        (json!({"description": ""}), "description"),
        (json!({"description": long}), "description"),
        (json!({"description": "new\nline"}), "description"),
        (json!({"role": "superuser"}), "role"),
        (json!({"permissions": ["Apps:Read"]}), "permission"),
        (json!({"permissions": "apps:read"}), "permissions"),
        (
            json!({"role": "viewer", "permissions": ["builds:create"]}),
            "permissions",
        ),
        (json!({"expires_in": 0}), "expires_in"),
        (json!({"expires_in": -5}), "expires_in"),
        (json!({"expires_in": 999_999_999_999i64}), "expires_in"),
        (json!({"expires_in": "soon"}), "expires_in"),
        (json!({"name": "a", "colour": "blue"}), "colour"),
        (json!({"name": 42}), "name"),
        (json!(["name"]), "object"),
    ];
    for (body, mention) in cases {
        let r = post_json(&f.app, "/tokens", Some(&admin()), body.clone()).await;
        let msg = r.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert!(
            msg.contains(mention),
            "{body}: message {msg:?} should mention {mention}"
        );
    }
    // Malformed JSON and forms.
    let req = request(Method::POST, "/tokens", Some(&admin()))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"name\": "))
        .unwrap();
    let msg = send(&f.app, req)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(msg.contains("JSON"), "{msg}");
    for (form, mention) in [
        ("description=x&colour=blue", "colour"),
        ("expires_in=soon", "expires_in"),
        ("description=a&description=b", "description"),
    ] {
        let r = post_form(&f.app, "/tokens", Some(&admin()), form).await;
        let msg = r.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert!(msg.contains(mention), "{form}: {msg}");
    }
    assert!(f.tokens.list(ADMIN).await.unwrap().is_empty());
}

#[tokio::test]
async fn unsupported_content_types_get_415() {
    let f = fixture().await;
    for ct in [Some("text/plain"), Some("application/xml"), None] {
        let mut b = request(Method::POST, "/tokens", Some(&admin()));
        if let Some(ct) = ct {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        let r = send(&f.app, b.body(Body::from("description=x")).unwrap()).await;
        r.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
    // `application/json; charset=utf-8` is JSON.
    let req = request(Method::POST, "/tokens", Some(&admin()))
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(r#"{"name":"with-charset"}"#))
        .unwrap();
    assert_eq!(send(&f.app, req).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let f = fixture().await;
    let big = format!("description={}", "x".repeat(17 * 1024));
    // Announced by Content-Length: refused before any password check.
    let req = request(Method::POST, "/tokens", Some(&basic(ADMIN, "wrong")))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big.clone()))
        .unwrap();
    let r = send(&f.app, req).await;
    r.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Streamed without a length: refused while reading.
    let stream = futures_like_stream(big.clone().into_bytes());
    let req = request(Method::POST, "/tokens", Some(&admin()))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(stream)
        .unwrap();
    assert!(!req.headers().contains_key(header::CONTENT_LENGTH));
    send(&f.app, req)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // The limit is configurable.
    let f = fixture_with(|m| m.with_body_limit(64)).await;
    let r = post_json(
        &f.app,
        "/tokens",
        Some(&admin()),
        json!({"description": "y".repeat(80)}),
    )
    .await;
    r.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

/// A body without a known length (like a chunked upload).
fn futures_like_stream(bytes: Vec<u8>) -> Body {
    Body::new(Chunked(
        bytes
            .chunks(1024)
            .map(bytes::Bytes::copy_from_slice)
            .collect::<Vec<_>>()
            .into_iter(),
    ))
}

struct Chunked(std::vec::IntoIter<bytes::Bytes>);

impl http_body::Body for Chunked {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(self.0.next().map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[tokio::test]
async fn a_token_never_holds_more_than_its_account() {
    let f = fixture().await;
    for body in [
        json!({"role": "admin"}),
        json!({"role": "deployer"}),
        json!({"permissions": ["tokens:write"]}),
        json!({"permissions": ["*"]}),
    ] {
        let r = post_json(&f.app, "/tokens", Some(&basic(VIEWER, PASSWORD)), body).await;
        let msg = r.assert_error(StatusCode::FORBIDDEN, "insufficient_scope");
        assert!(msg.contains("Missing permission"), "{msg}");
    }
    // Within the account's permissions it works; unnamed and unscoped, it gets exactly them.
    let r = post_json(
        &f.app,
        "/tokens",
        Some(&basic(VIEWER, PASSWORD)),
        json!({"permissions": ["apps:read"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = post_form(
        &f.app,
        "/tokens",
        Some(&basic(VIEWER, PASSWORD)),
        "description=mine",
    )
    .await;
    assert_eq!(r.json()["permissions"], json!(["apps:read", "tokens:read"]));
}

#[tokio::test]
async fn list_shows_every_field_but_the_secret() {
    let f = fixture().await;
    let (id1, t1) = create(
        &f.app,
        ADMIN,
        json!({"name": "one", "description": "first"}),
    )
    .await;
    let (id2, t2) = create(
        &f.app,
        ADMIN,
        json!({"name": "two", "role": "viewer", "expires_in": 60}),
    )
    .await;
    let (id3, _) = create(&f.app, ADMIN, json!({"name": "three"})).await;
    let (_, bob_token) = create(&f.app, BOB, json!({"name": "bobs"})).await;
    assert_eq!(
        call(
            &f.app,
            Method::DELETE,
            &format!("/tokens/{id3}"),
            Some(&admin())
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    // Make t1 used, and flush the batched last-used time.
    assert_eq!(me_status(&f.app, &t1).await, StatusCode::OK);
    f.tokens.flush_usage().await.unwrap();
    f.clock.advance(Duration::from_secs(120)); // `two` is now expired

    // With Basic, and with a bearer token holding `tokens:read` (the viewer token `two`
    // expired, so use `one`, which holds `*`).
    for auth in [admin(), bearer(&t1)] {
        let r = call(&f.app, Method::GET, "/tokens", Some(&auth)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(!r.text.contains(&t1) && !r.text.contains(&t2) && !r.text.contains(&bob_token));
        assert!(!r.text.contains("hash"));
        let list = r.json();
        let list = list.as_array().unwrap();
        let ids: Vec<&str> = list.iter().map(|t| t["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids,
            [id1.as_str(), id2.as_str()],
            "revoked and others' tokens are not listed"
        );
        for t in list {
            assert!(t.get("token").is_none());
            for k in [
                "name",
                "description",
                "role",
                "permissions",
                "hint",
                "created_at",
                "expires_at",
                "last_used_at",
                "status",
            ] {
                assert!(t.get(k).is_some(), "{k} missing in {t}");
            }
        }
        assert_eq!(list[0]["status"], "active");
        assert_eq!(list[0]["description"], "first");
        assert_eq!(list[0]["last_used_at"], "2026-06-01T12:00:00Z");
        assert_eq!(list[0]["hint"], &t1[..12]);
        assert_eq!(list[1]["status"], "expired");
        assert_eq!(list[1]["role"], "viewer");
    }
}

#[tokio::test]
async fn bearer_needs_tokens_read_to_list_and_tokens_write_to_revoke() {
    let f = fixture().await;
    let (_, none) = create(&f.app, ADMIN, json!({"name": "none", "permissions": []})).await;
    let (_, viewer) = create(&f.app, ADMIN, json!({"name": "viewer", "role": "viewer"})).await;
    let (target, _) = create(&f.app, ADMIN, json!({"name": "target"})).await;

    let r = call(&f.app, Method::GET, "/tokens", Some(&bearer(&none))).await;
    let msg = r.assert_error(StatusCode::FORBIDDEN, "insufficient_scope");
    assert!(msg.contains("tokens:read"));
    assert_eq!(
        r.header(header::WWW_AUTHENTICATE),
        ["Bearer error=\"insufficient_scope\", scope=\"tokens:read\""]
    );
    // The viewer role reads but holds no `tokens:write`.
    assert_eq!(
        call(&f.app, Method::GET, "/tokens", Some(&bearer(&viewer)))
            .await
            .status,
        StatusCode::OK
    );
    let r = call(
        &f.app,
        Method::DELETE,
        &format!("/tokens/{target}"),
        Some(&bearer(&viewer)),
    )
    .await;
    let msg = r.assert_error(StatusCode::FORBIDDEN, "insufficient_scope");
    assert!(msg.contains("tokens:write"));
    let r = call(
        &f.app,
        Method::POST,
        &format!("/tokens/{target}/rotate"),
        Some(&bearer(&viewer)),
    )
    .await;
    r.assert_error(StatusCode::FORBIDDEN, "insufficient_scope");

    // Bad bearer tokens are refused as the layer refuses them.
    let r = call(
        &f.app,
        Method::GET,
        "/tokens",
        Some("Bearer pat_not_a_real_token"),
    )
    .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "invalid_token");
    assert_eq!(
        r.header(header::WWW_AUTHENTICATE),
        ["Bearer error=\"invalid_token\""]
    );
    assert_eq!(r.json()["error"], "Invalid API token");
}

#[tokio::test]
async fn revoke_takes_effect_on_the_next_request() {
    let f = fixture().await;
    // The revoking token must hold every permission of the token it revokes.
    let (id, token) = create(
        &f.app,
        ADMIN,
        json!({"name": "doomed", "permissions": ["tokens:write"]}),
    )
    .await;
    let (_, writer) = create(
        &f.app,
        ADMIN,
        json!({"name": "writer", "permissions": ["tokens:write"]}),
    )
    .await;
    assert_eq!(me_status(&f.app, &token).await, StatusCode::OK);

    let r = call(
        &f.app,
        Method::DELETE,
        &format!("/tokens/{id}"),
        Some(&bearer(&writer)),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(r.text.is_empty());
    let r = call(&f.app, Method::GET, "/me", Some(&bearer(&token))).await;
    r.assert_error(StatusCode::UNAUTHORIZED, "invalid_token");
    // A second revoke: 404, like any unknown id.
    call(
        &f.app,
        Method::DELETE,
        &format!("/tokens/{id}"),
        Some(&admin()),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn someone_elses_unknown_or_malformed_ids_are_404() {
    let f = fixture().await;
    let (bobs, bob_token) = create(&f.app, BOB, json!({"name": "bobs"})).await;
    let unknown = TokenId::random().to_string();
    let mut bodies = Vec::new();
    for id in [bobs.as_str(), unknown.as_str(), "not-a-uuid", "1", "%20"] {
        for (method, path) in [
            (Method::DELETE, format!("/tokens/{id}")),
            (Method::POST, format!("/tokens/{id}/rotate")),
        ] {
            let r = call(&f.app, method, &path, Some(&admin())).await;
            r.assert_error(StatusCode::NOT_FOUND, "not_found");
            bodies.push(r.text);
        }
    }
    // Always the same answer: nothing tells that Bob's token exists.
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(me_status(&f.app, &bob_token).await, StatusCode::OK);
}

#[tokio::test]
async fn duplicate_names_and_the_token_limit_are_409() {
    let f = fixture().await;
    create(&f.app, ADMIN, json!({"name": "laptop"})).await;
    let r = post_json(&f.app, "/tokens", Some(&admin()), json!({"name": "laptop"})).await;
    r.assert_error(StatusCode::CONFLICT, "name_taken");
    // Another owner may use the name.
    create(&f.app, BOB, json!({"name": "laptop"})).await;

    for i in 1..100 {
        f.tokens
            .issue(NewToken::new(ADMIN, format!("bulk-{i}")))
            .await
            .unwrap();
    }
    assert_eq!(f.tokens.list(ADMIN).await.unwrap().len(), 100);
    let r = post_json(
        &f.app,
        "/tokens",
        Some(&admin()),
        json!({"name": "one-too-many"}),
    )
    .await;
    r.assert_error(StatusCode::CONFLICT, "token_limit");
    let r = post_form(&f.app, "/tokens", Some(&admin()), "description=unnamed").await;
    r.assert_error(StatusCode::CONFLICT, "token_limit");
}

#[tokio::test]
async fn rotation_with_grace_keeps_the_old_token_until_the_grace_ends() {
    let f = fixture().await;
    let (id, old) = create(
        &f.app,
        ADMIN,
        json!({"name": "deploy", "role": "deployer", "description": "CI"}),
    )
    .await;
    let r = post_json(
        &f.app,
        &format!("/tokens/{id}/rotate"),
        Some(&admin()),
        json!({"grace_seconds": 300}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.header(header::CACHE_CONTROL), ["no-store"]);
    let v = r.json();
    let new = v["token"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_ne!(v["id"], id.as_str());
    assert_eq!(v["name"], "deploy");
    assert_eq!(v["role"], "deployer");
    assert_eq!(v["description"], "CI");

    assert_eq!(me_status(&f.app, &old).await, StatusCode::OK);
    assert_eq!(me_status(&f.app, &new).await, StatusCode::OK);
    // The old one is listed as replaced while its grace runs.
    let list = call(&f.app, Method::GET, "/tokens", Some(&admin()))
        .await
        .json();
    let statuses: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["replaced", "active"]);

    f.clock.advance(Duration::from_secs(299));
    assert_eq!(me_status(&f.app, &old).await, StatusCode::OK);
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(me_status(&f.app, &old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&f.app, &new).await, StatusCode::OK);
    let list = call(&f.app, Method::GET, "/tokens", Some(&admin()))
        .await
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    // The replaced token cannot be rotated again.
    call(
        &f.app,
        Method::POST,
        &format!("/tokens/{id}/rotate"),
        Some(&admin()),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn rotation_without_grace_refuses_the_old_token_at_once() {
    let f = fixture().await;
    let (id, old) = create(&f.app, ADMIN, json!({"name": "quick"})).await;
    // A bearer token with `tokens:write` (here the token itself, holding `*`) may rotate;
    // with no body there is no grace.
    let r = call(
        &f.app,
        Method::POST,
        &format!("/tokens/{id}/rotate"),
        Some(&bearer(&old)),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let new = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(me_status(&f.app, &old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&f.app, &new).await, StatusCode::OK);

    // Form bodies and explicit zero work too; negative grace is a 400.
    let new_id = r.json()["id"].as_str().unwrap().to_owned();
    let r = post_form(
        &f.app,
        &format!("/tokens/{new_id}/rotate"),
        Some(&admin()),
        "grace_seconds=-1",
    )
    .await;
    let msg = r.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(msg.contains("grace_seconds"));
    let r = post_json(
        &f.app,
        &format!("/tokens/{new_id}/rotate"),
        Some(&admin()),
        json!({"grace": 5}),
    )
    .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let r = post_form(
        &f.app,
        &format!("/tokens/{new_id}/rotate"),
        Some(&admin()),
        "grace_seconds=0",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(me_status(&f.app, &new).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_narrow_token_cannot_mint_a_copy_of_a_broader_one() {
    let f = fixture().await;
    let (root, root_token) = create(&f.app, ADMIN, json!({"name": "root"})).await;
    let (_, writer) = create(
        &f.app,
        ADMIN,
        json!({"name": "writer", "permissions": ["tokens:write"]}),
    )
    .await;
    let r = call(
        &f.app,
        Method::POST,
        &format!("/tokens/{root}/rotate"),
        Some(&bearer(&writer)),
    )
    .await;
    let msg = r.assert_error(StatusCode::FORBIDDEN, "insufficient_scope");
    assert!(msg.contains('*'), "{msg}");
    assert_eq!(me_status(&f.app, &root_token).await, StatusCode::OK);
}

#[tokio::test]
async fn me_needs_a_bearer_token() {
    let f = fixture().await;
    let r = call(&f.app, Method::GET, "/me", None).await;
    r.assert_error(StatusCode::UNAUTHORIZED, "missing_token");
    assert_eq!(
        r.header(header::WWW_AUTHENTICATE),
        ["Bearer realm=\"keygate\""]
    );
    let r = call(&f.app, Method::GET, "/me", Some(&admin())).await;
    r.assert_error(StatusCode::UNAUTHORIZED, "missing_token");
    let r = call(&f.app, Method::GET, "/me", Some("Bearer two tokens")).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let (_, t) = create(&f.app, ADMIN, json!({"name": "me", "role": "ops"})).await;
    let r = call(&f.app, Method::GET, "/me", Some(&bearer(&t))).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["kind"], "pat");
    assert!(
        v["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("processes:restart"))
    );
    assert!(!r.text.contains(&t));
}

#[tokio::test]
async fn a_failing_store_gives_503_never_500() {
    let f = fixture().await;
    let (id, token) = create(&f.app, ADMIN, json!({"name": "before"})).await;
    f.store.down.store(true, Ordering::SeqCst);
    let r = post_form(&f.app, "/tokens", Some(&admin()), "description=during").await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
    assert_eq!(r.header(header::RETRY_AFTER), ["1"]);
    call(&f.app, Method::GET, "/tokens", Some(&admin()))
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
    call(
        &f.app,
        Method::DELETE,
        &format!("/tokens/{id}"),
        Some(&admin()),
    )
    .await
    .assert_error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
    call(
        &f.app,
        Method::POST,
        &format!("/tokens/{id}/rotate"),
        Some(&admin()),
    )
    .await
    .assert_error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
    // Bearer requests fail closed the way the layer does.
    for (m, p) in [(Method::GET, "/me"), (Method::GET, "/tokens")] {
        call(&f.app, m, p, Some(&bearer(&token)))
            .await
            .assert_error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
    }
    f.store.down.store(false, Ordering::SeqCst);
    assert_eq!(me_status(&f.app, &token).await, StatusCode::OK);

    // The account store failing is a 503 too, not a 401.
    f.accounts.down.store(true, Ordering::SeqCst);
    post_form(&f.app, "/tokens", Some(&admin()), "description=x")
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_checks_are_bounded_and_overflow_gets_503() {
    let f = fixture_with(|m| {
        m.with_basic_auth_concurrency(1)
            .with_basic_auth_wait(Duration::from_millis(1))
    })
    .await;
    let (_, token) = create(&f.app, ADMIN, json!({"name": "steady"})).await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let app = f.app.clone();
        tasks.push(tokio::spawn(async move {
            call(&app, Method::GET, "/tokens", Some(&admin())).await
        }));
    }
    // Token verification is not queued behind the password checks.
    assert_eq!(me_status(&f.app, &token).await, StatusCode::OK);
    let mut ok = 0;
    let mut busy = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == StatusCode::OK {
            ok += 1;
        } else {
            r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "server_busy");
            assert_eq!(r.header(header::RETRY_AFTER), ["1"]);
            busy += 1;
        }
    }
    assert!(ok >= 1, "at least one check ran");
    assert!(busy >= 1, "the others did not queue forever");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let f = fixture().await;
    call(&f.app, Method::GET, "/nope", Some(&admin()))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    call(&f.app, Method::PUT, "/tokens", Some(&admin()))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_lists_every_route() {
    let f = fixture_with(|m| m.with_server_url("/api/v1")).await;
    let r = call(&f.app, Method::GET, "/openapi.json", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header(header::CONTENT_TYPE), ["application/json"]);
    let doc = r.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["servers"][0]["url"], "/api/v1");
    let paths = &doc["paths"];
    for (path, method) in [
        ("/tokens", "post"),
        ("/tokens", "get"),
        ("/tokens/{id}", "delete"),
        ("/tokens/{id}/rotate", "post"),
        ("/me", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
    let create = &paths["/tokens"]["post"];
    assert!(create["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object());
    assert!(create["responses"]["201"].is_object());
    assert_eq!(create["security"], json!([{"basic": []}]));
    for schema in [
        "TokenView",
        "CreateToken",
        "ErrorBody",
        "IdentityView",
        "RotateToken",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["basic"]["scheme"],
        "basic"
    );
    // The document matches the library's own.
    assert_eq!(
        doc["paths"],
        serde_json::to_value(keygate::axum::management::openapi().paths).unwrap()
    );
}

#[tokio::test]
async fn router_helper_and_nesting() {
    let f = fixture().await;
    let app: Router = Router::new().nest(
        "/api/v1",
        keygate::axum::management::router(f.tokens.clone(), f.accounts.clone()),
    );
    let r = post_form(&app, "/api/v1/tokens", Some(&admin()), "description=nested").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let r = call(&app, Method::GET, "/api/v1/me", Some(&bearer(&token))).await;
    assert_eq!(r.status, StatusCode::OK);
}

use keygate::server;

fn server_config(db: &std::path::Path, password: Option<&str>) -> server::Config {
    server::Config {
        db: db.to_owned(),
        addr: "127.0.0.1:0".into(),
        admin_email: ADMIN.into(),
        admin_password: password.map(|p| zeroize::Zeroizing::new(p.to_owned())),
        // Behaviour, not the store bound, is under test: a loaded machine's fsync may
        // take longer than the 2 s default.
        store_timeout: std::time::Duration::from_secs(30),
        demo: true,
        ..server::Config::default()
    }
}

#[tokio::test]
async fn the_reference_server_keeps_tokens_and_revocations_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");

    // First start: no password configured, so one is generated.
    let app = server::build_app(&server_config(&db, None)).await.unwrap();
    let password = app
        .generated_password
        .clone()
        .expect("a generated password");
    let auth = basic(ADMIN, &password);
    let r = call(&app.router, Method::GET, "/", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = post_form(
        &app.router,
        "/api/v1/tokens",
        Some(&auth),
        "description=My+automation+script",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let kept = r.json()["token"].as_str().unwrap().to_owned();
    let r = post_json(
        &app.router,
        "/api/v1/tokens",
        Some(&auth),
        json!({"name": "short-lived", "role": "viewer"}),
    )
    .await;
    let revoked_id = r.json()["id"].as_str().unwrap().to_owned();
    let revoked = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        call(
            &app.router,
            Method::GET,
            "/api/v1/apps",
            Some(&bearer(&revoked))
        )
        .await
        .status,
        StatusCode::OK
    );
    let r = call(
        &app.router,
        Method::DELETE,
        &format!("/api/v1/tokens/{revoked_id}"),
        Some(&auth),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // The demo API enforces the roles' permissions.
    let r = post_json(
        &app.router,
        "/api/v1/tokens",
        Some(&auth),
        json!({"name": "viewer", "role": "viewer"}),
    )
    .await;
    let viewer = r.json()["token"].as_str().unwrap().to_owned();
    call(
        &app.router,
        Method::POST,
        "/api/v1/apps/web/restart",
        Some(&bearer(&viewer)),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "insufficient_scope");
    drop(app);

    // Second start on the same file: the admin keeps its password, nothing is generated.
    let app = server::build_app(&server_config(&db, None)).await.unwrap();
    assert!(app.generated_password.is_none());
    for (method, path) in [
        (Method::GET, "/api/v1/me"),
        (Method::GET, "/api/v1/apps"),
        (Method::POST, "/api/v1/apps/web/restart"),
        (Method::POST, "/api/v1/apps/web/builds"),
    ] {
        let r = call(&app.router, method, path, Some(&bearer(&kept))).await;
        assert!(r.status.is_success(), "{path}: {} {}", r.status, r.text);
    }
    call(
        &app.router,
        Method::GET,
        "/api/v1/me",
        Some(&bearer(&revoked)),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "invalid_token");
    let r = call(&app.router, Method::GET, "/api/v1/tokens", Some(&auth)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    // One document for the whole service, with absolute paths.
    let r = call(&app.router, Method::GET, "/api/v1/openapi.json", None).await;
    assert!(r.json()["paths"]["/api/v1/tokens"]["post"].is_object());
    drop(app);

    // A configured password replaces the old one.
    let app = server::build_app(&server_config(&db, Some("new password")))
        .await
        .unwrap();
    let r = call(&app.router, Method::GET, "/api/v1/tokens", Some(&auth)).await;
    r.assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let r = call(
        &app.router,
        Method::GET,
        "/api/v1/tokens",
        Some(&basic(ADMIN, "new password")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

/// The document a router serves, read back.
async fn served_document(app: &Router, path: &str) -> Value {
    let r = call(app, Method::GET, path, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json()
}

#[tokio::test]
async fn create_and_rotate_take_no_body_as_the_document_says() {
    let f = fixture().await;
    let doc = served_document(&f.app, "/openapi.json").await;
    for path in ["/tokens", "/tokens/{id}/rotate"] {
        let body = &doc["paths"][path]["post"]["requestBody"];
        assert_eq!(body["required"], false, "{path}: {body}");
    }
    // No body at all, no Content-Type: the defaults.
    let r = call(&f.app, Method::POST, "/tokens", Some(&admin())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let created = r.json();
    assert_eq!(created["name"], "token-1");
    assert_eq!(created["permissions"], json!(["*"]));
    let id = created["id"].as_str().unwrap();
    let r = call(
        &f.app,
        Method::POST,
        &format!("/tokens/{id}/rotate"),
        Some(&admin()),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["name"], "token-1");
}

#[tokio::test]
async fn form_fields_have_no_null_in_the_document_and_json_nulls_are_taken() {
    let f = fixture().await;
    let doc = served_document(&f.app, "/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    // A form carries text or nothing: its schema offers no null (the JSON one does, and the
    // server takes it).
    for schema in ["CreateTokenForm", "RotateTokenForm"] {
        for (field, prop) in schemas[schema]["properties"].as_object().unwrap() {
            assert!(
                !prop.to_string().contains("null"),
                "{schema}.{field} offers null: {prop}"
            );
        }
    }
    for path in ["/tokens", "/tokens/{id}/rotate"] {
        let form = &doc["paths"][path]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"];
        assert!(
            form["schema"]["$ref"].as_str().unwrap().ends_with("Form"),
            "{path}: {form}"
        );
    }
    // What the issue's fuzzer sent: the text "null" is no number.
    post_form(&f.app, "/tokens", Some(&admin()), "expires_in=null&name=n")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // JSON null is "left out", for every field the schema lets be null.
    let r = post_json(
        &f.app,
        "/tokens",
        Some(&admin()),
        json!({"name": "nulls", "description": null, "role": null, "permissions": null,
               "expires_in": null, "allowed_ips": null, "rate_limit": null}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = post_json(
        &f.app,
        &format!("/tokens/{id}/rotate"),
        Some(&admin()),
        json!({"grace_seconds": null}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn an_integer_written_with_a_zero_fraction_is_an_integer() {
    let f = fixture().await;
    let r = post_json(
        &f.app,
        "/tokens",
        Some(&admin()),
        json!({"name": "floats", "expires_in": 3600.0, "rate_limit": 60.0}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["rate_limit"], 60);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = post_json(
        &f.app,
        &format!("/tokens/{id}/rotate"),
        Some(&admin()),
        json!({"grace_seconds": 60.0}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // A fraction is still refused.
    post_json(
        &f.app,
        "/tokens",
        Some(&admin()),
        json!({"name": "half", "expires_in": 0.5}),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn the_document_states_the_managers_limits() {
    let f = fixture().await;
    let doc = served_document(&f.app, "/openapi.json").await;
    let create = &doc["components"]["schemas"]["CreateToken"];
    let roles = create["properties"]["role"]["enum"].as_array().unwrap();
    assert!(roles.contains(&json!("viewer")) && roles.contains(&Value::Null));
    assert_eq!(
        doc["components"]["schemas"]["RotateToken"]["properties"]["grace_seconds"]["maximum"],
        86_400
    );
    // A token's own rate is a u32, beyond what `int32` allows.
    let rate = &create["properties"]["rate_limit"];
    assert_eq!(rate["maximum"], u64::from(u32::MAX));
    assert_eq!(rate["format"], "int64");
    // One rule per role bounds explicit permissions by the role's.
    let rules = create["allOf"].as_array().unwrap();
    assert_eq!(rules.len(), roles.len() - 1);
    let successors = doc["paths"]["/tokens/{id}"]["delete"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "successors")
        .unwrap();
    assert_eq!(successors["schema"]["enum"], json!(["revoke", "keep"]));
    // The challenge and the wait are documented where they are sent.
    let list = &doc["paths"]["/tokens"]["get"]["responses"];
    assert!(list["401"]["headers"]["WWW-Authenticate"].is_object());
    assert!(list["429"]["headers"]["Retry-After"].is_object());
    assert!(list["400"].is_object(), "a malformed Authorization header");
}

#[tokio::test]
async fn the_audit_route_is_in_the_document_exactly_when_it_is_served() {
    let f = fixture().await;
    assert_eq!(
        call(&f.app, Method::GET, "/audit", Some(&admin()))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let doc = served_document(&f.app, "/openapi.json").await;
    assert!(doc["paths"]["/audit"].is_null());

    let sink = keygate::audit::MemoryAuditSink::new();
    let f = fixture_with(|m| m.with_audit_reader(sink.clone())).await;
    let doc = served_document(&f.app, "/openapi.json").await;
    let audit = &doc["paths"]["/audit"]["get"];
    assert!(audit["responses"]["200"].is_object(), "{audit}");
    assert!(doc["components"]["schemas"]["AuditEvent"].is_object());
    let r = call(&f.app, Method::GET, "/audit", Some(&admin())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // A range that ends before it starts holds no event (the schema cannot say "until
    // after since", so it is an answer, not an error).
    let r = call(
        &f.app,
        Method::GET,
        "/audit?since=2026-06-02T00:00:00Z&until=2026-06-01T00:00:00Z",
        Some(&admin()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json(), json!([]));
}

#[tokio::test]
async fn every_route_the_server_answers_is_in_its_document() {
    let dir = tempfile::tempdir().unwrap();
    let app = server::build_app(&server_config(
        &dir.path().join("keygate.db"),
        Some(PASSWORD),
    ))
    .await
    .unwrap();
    let doc = served_document(&app.router, "/api/v1/openapi.json").await;
    assert!(
        doc["servers"].is_null(),
        "absolute paths: {}",
        doc["servers"]
    );
    let paths = doc["paths"].as_object().unwrap();
    // Every route the index lists (the demo's too: the config turns it on) is documented.
    let index = served_document(&app.router, "/").await;
    for route in index["routes"].as_object().unwrap().keys() {
        let (method, path) = route.split_once(' ').unwrap();
        if path == "/tokens" {
            // The token page: HTML for people, not an API.
            continue;
        }
        let path = path.trim_end_matches('/');
        assert!(
            paths
                .get(path)
                .is_some_and(|item| item[method.to_ascii_lowercase()].is_object()),
            "{route} is not in the document"
        );
    }
    for (path, method) in [
        ("/api/v1/audit", "get"),
        ("/api/v1/tokens/{id}/release", "post"),
        ("/api/v1/openapi.json", "get"),
        ("/api/v1/verify", "trace"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path}");
    }
    // And every documented operation is one the server answers (not its 404 or 405).
    let id = TokenId::random();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let uri = path
                .replace("{id}", &id.to_string())
                .replace("{app}", "web");
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let r = call(&app.router, method.clone(), &uri, Some(&admin())).await;
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            assert!(
                r.status != StatusCode::NOT_FOUND || r.text.contains("Token not found"),
                "{method} {uri}: {} {}",
                r.status,
                r.text
            );
        }
    }
    // Bearer answers carry the rate-limit fields the document names.
    let me = &paths["/api/v1/me"]["get"]["responses"]["200"]["headers"];
    for name in [
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit",
        "X-Request-Id",
    ] {
        assert!(me[name].is_object(), "{name}");
    }
}
