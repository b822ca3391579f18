//! Token details through the management API: metadata given at creation and shown in every
//! answer (create, list, rotate, `GET /me`, the handler's `Identity`), refused with a clear
//! 400 when it is not a small JSON object; and the client address and `User-Agent` of the
//! last use, recorded in batches like `last_used_at`.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
use keygate::axum::management::Management;
use keygate::clock::{Clock, ManualClock};
use keygate::{AuthLayer, Identity, MemoryStore, Permissions, Tokens};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::basic;

const OWNER: &str = "dana@example.com";
const PASSWORD: &str = "correct horse battery staple";

struct Fixture {
    api: Router,
    /// A protected route behind `AuthLayer` whose handler answers the `Identity`.
    app: Router,
    tokens: Tokens,
    clock: ManualClock,
}

async fn fixture() -> Fixture {
    let clock = ManualClock::new(time::macros::datetime!(2026-06-01 12:00 UTC));
    let tokens = Tokens::builder(MemoryStore::new())
        .clock(clock.clone())
        .usage_granularity(Duration::from_secs(60))
        .build()
        .unwrap();
    let accounts = MemoryAccounts::default();
    accounts
        .put_account(Account {
            email: OWNER.into(),
            password_hash: hash_password(PASSWORD).unwrap(),
            permissions: Permissions::parse(["*"]).unwrap(),
            created_at: clock.now(),
        })
        .await
        .unwrap();
    let api = Management::new(tokens.clone(), accounts).router();
    let app = Router::new()
        .route("/whoami", get(|id: Identity| async move { axum::Json(id) }))
        .layer(AuthLayer::new(tokens.clone()));
    Fixture {
        api,
        app,
        tokens,
        clock,
    }
}

struct Reply {
    status: StatusCode,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

async fn send(app: &Router, req: Request<Body>) -> Reply {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn owner() -> String {
    basic(OWNER, PASSWORD)
}

async fn post_json(f: &Fixture, uri: &str, body: &Value) -> Reply {
    let req = Request::post(uri)
        .header(header::AUTHORIZATION, owner())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(&f.api, req).await
}

async fn post_form(f: &Fixture, body: &str) -> Reply {
    let req = Request::post("/tokens")
        .header(header::AUTHORIZATION, owner())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap();
    send(&f.api, req).await
}

async fn list(f: &Fixture) -> Vec<Value> {
    let req = Request::get("/tokens")
        .header(header::AUTHORIZATION, owner())
        .body(Body::empty())
        .unwrap();
    let r = send(&f.api, req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json().as_array().unwrap().clone()
}

async fn listed(f: &Fixture, id: &str) -> Value {
    list(f)
        .await
        .into_iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not listed"))
}

/// A bearer request to `path` on `app` from the socket peer `peer`, with these headers.
async fn use_token(
    app: &Router,
    path: &str,
    token: &str,
    peer: &str,
    agent: Option<HeaderValue>,
) -> Reply {
    let mut req = Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    if let Some(a) = agent {
        req.headers_mut().insert(header::USER_AGENT, a);
    }
    req.extensions_mut()
        .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    send(app, req).await
}

/// Creates a token with this JSON body; returns the create answer.
async fn create(f: &Fixture, body: Value) -> Value {
    let r = post_json(f, "/tokens", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json()
}

#[tokio::test]
async fn metadata_given_at_creation_shows_in_every_answer() {
    let f = fixture().await;
    let meta =
        json!({"team": "payments", "ticket": 42, "tags": ["ci", "eu"], "owner": {"on_call": true}});
    let created = create(&f, json!({"name": "ci", "metadata": meta})).await;
    assert_eq!(created["metadata"], meta, "the create answer");
    let id = created["id"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(listed(&f, &id).await["metadata"], meta, "GET /tokens");

    // GET /me and the handler's Identity, for the token's bearer.
    let me = use_token(&f.api, "/me", &token, "192.0.2.1:1000", None).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.json()["metadata"], meta, "GET /me");
    let who = use_token(&f.app, "/whoami", &token, "192.0.2.1:1000", None).await;
    assert_eq!(who.status, StatusCode::OK, "{}", who.text);
    assert_eq!(
        who.json()["metadata"],
        meta,
        "the Identity a handler receives"
    );
    let identity = f.tokens.authenticate(&token).await.unwrap();
    assert_eq!(identity.metadata().get("team"), Some(&json!("payments")));

    // Rotation keeps it.
    let rotated = post_json(&f, &format!("/tokens/{id}/rotate"), &json!({})).await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.text);
    let successor = rotated.json();
    assert_eq!(successor["metadata"], meta, "the rotate answer");
    let new_id = successor["id"].as_str().unwrap();
    assert_eq!(listed(&f, new_id).await["metadata"], meta);

    // Left out or null: the empty object.
    for body in [
        json!({"name": "plain"}),
        json!({"name": "nulled", "metadata": null}),
    ] {
        let created = create(&f, body).await;
        assert_eq!(created["metadata"], json!({}), "{created}");
    }

    // As a form, `metadata` is JSON text; an empty field is none.
    let r = post_form(
        &f,
        "name=form&metadata=%7B%22team%22%3A%22ops%22%2C%22n%22%3A1%7D",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["metadata"], json!({"team": "ops", "n": 1}));
    let r = post_form(&f, "name=form-empty&metadata=").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["metadata"], json!({}));
}

/// `n` objects nested in one another: `{"a":{"a":…{}}}`, depth `n`.
fn nested(n: usize) -> Value {
    (1..n).fold(json!({}), |inner, _| json!({ "a": inner }))
}

#[tokio::test]
async fn metadata_that_is_not_a_small_json_object_is_a_clear_400_and_creates_nothing() {
    let f = fixture().await;
    // At the limits: 1024 bytes of compact JSON (`{"k":"…"}` is 8 bytes around the text),
    // and 8 levels.
    let at_size = json!({ "k": "x".repeat(1016) });
    assert_eq!(at_size.to_string().len(), 1024);
    create(&f, json!({"name": "at-size", "metadata": at_size})).await;
    create(&f, json!({"name": "at-depth", "metadata": nested(8)})).await;
    let before = list(&f).await.len();

    let json_cases = [
        (json!([1, 2]), "must be a JSON object"),
        (json!("team=payments"), "must be a JSON object"),
        (json!(42), "must be a JSON object"),
        (json!(true), "must be a JSON object"),
        (json!({ "k": "x".repeat(1017) }), "at most 1024 bytes"),
        (
            json!({ "many": vec!["0123456789"; 100] }),
            "at most 1024 bytes",
        ),
        (nested(9), "at most 8 levels"),
    ];
    for (i, (meta, why)) in json_cases.into_iter().enumerate() {
        let r = post_json(
            &f,
            "/tokens",
            &json!({"name": format!("bad-{i}"), "metadata": meta}),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{meta}: {}", r.text);
        let v = r.json();
        assert_eq!(v["code"], "invalid_request", "{}", r.text);
        let error = v["error"].as_str().unwrap();
        assert!(
            error.starts_with("Invalid metadata: ") && error.contains(why),
            "{meta}: {error}"
        );
    }
    for form in [
        "name=f1&metadata=%5B1%5D",
        "name=f2&metadata=team%3Dpayments",
        "name=f3&metadata=%7B",
        "name=f4&metadata=null",
    ] {
        let r = post_form(&f, form).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{form}: {}", r.text);
        assert_eq!(r.json()["code"], "invalid_request");
        assert!(
            r.json()["error"].as_str().unwrap().contains("metadata"),
            "{}",
            r.text
        );
    }
    assert_eq!(list(&f).await.len(), before, "nothing was created");
}

#[tokio::test]
async fn the_last_use_shows_its_client_address_and_user_agent() {
    let f = fixture().await;
    let created = create(&f, json!({"name": "runner"})).await;
    let (id, token) = (
        created["id"].as_str().unwrap().to_owned(),
        created["token"].as_str().unwrap().to_owned(),
    );
    assert_eq!(created["last_used_ip"], Value::Null);
    assert_eq!(created["last_used_user_agent"], Value::Null);

    let agent = HeaderValue::from_static("ci-runner/1.0");
    let r = use_token(&f.api, "/me", &token, "192.0.2.55:4000", Some(agent)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Coalesced: nothing is written before the flush.
    assert_eq!(listed(&f, &id).await["last_used_ip"], Value::Null);
    assert_eq!(f.tokens.flush_usage().await.unwrap(), 1);
    let t = listed(&f, &id).await;
    assert_eq!(t["last_used_ip"], "192.0.2.55");
    assert_eq!(t["last_used_user_agent"], "ci-runner/1.0");
    assert_eq!(t["last_used_at"], "2026-06-01T12:00:00Z");

    // Within the granularity another client's use is not recorded (one write a minute).
    f.clock.advance(Duration::from_secs(10));
    let other = HeaderValue::from_static("other/2.0");
    use_token(
        &f.app,
        "/whoami",
        &token,
        "198.51.100.4:1",
        Some(other.clone()),
    )
    .await;
    assert_eq!(f.tokens.pending_usage(), 0);
    // After it, through the layer this time, the new client replaces the old one.
    f.clock.advance(Duration::from_secs(60));
    let r = use_token(&f.app, "/whoami", &token, "[2001:db8::7]:443", Some(other)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Then a later use without an agent: the details describe the latest use only.
    f.clock.advance(Duration::from_secs(1));
    f.tokens.flush_usage().await.unwrap();
    let t = listed(&f, &id).await;
    assert_eq!(t["last_used_ip"], "2001:db8::7");
    assert_eq!(t["last_used_user_agent"], "other/2.0");
    assert_eq!(t["last_used_at"], "2026-06-01T12:01:10Z");
    f.clock.advance(Duration::from_secs(60));
    use_token(&f.app, "/whoami", &token, "192.0.2.9:1", None).await;
    f.tokens.flush_usage().await.unwrap();
    let t = listed(&f, &id).await;
    assert_eq!(t["last_used_ip"], "192.0.2.9");
    assert_eq!(t["last_used_user_agent"], Value::Null);

    // A check outside HTTP records the time only.
    f.clock.advance(Duration::from_secs(60));
    f.tokens.authenticate(&token).await.unwrap();
    f.tokens.flush_usage().await.unwrap();
    let t = listed(&f, &id).await;
    assert_eq!(t["last_used_at"], "2026-06-01T12:03:11Z");
    assert_eq!(
        (&t["last_used_ip"], &t["last_used_user_agent"]),
        (&Value::Null, &Value::Null)
    );
}

#[tokio::test]
async fn user_agents_are_cleaned_cut_and_never_keep_the_token() {
    let f = fixture().await;
    let cases: Vec<(HeaderValue, Value)> = vec![
        // A tab, a C1 control (U+0085) and a right-to-left override (U+202E) are dropped.
        (
            HeaderValue::from_bytes(b"evil\tagent\xc2\x85 \xe2\x80\xaeok").unwrap(),
            json!("evilagent ok"),
        ),
        // Bytes that are not UTF-8 are shown as U+FFFD.
        (
            HeaderValue::from_bytes(b"bad\xffbyte").unwrap(),
            json!("bad\u{fffd}byte"),
        ),
        // At most 256 bytes, cut on a character boundary.
        (
            HeaderValue::from_str(&"x".repeat(1000)).unwrap(),
            json!("x".repeat(256)),
        ),
        (
            HeaderValue::from_bytes("é".repeat(200).as_bytes()).unwrap(),
            json!("é".repeat(128)),
        ),
        // Nothing left: none.
        (HeaderValue::from_bytes(b"\t\xc2\x85").unwrap(), Value::Null),
    ];
    for (i, (agent, expected)) in cases.into_iter().enumerate() {
        let created = create(&f, json!({ "name": format!("agent-{i}") })).await;
        let token = created["token"].as_str().unwrap();
        let r = use_token(&f.app, "/whoami", token, "192.0.2.1:1", Some(agent)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        f.tokens.flush_usage().await.unwrap();
        let t = listed(&f, created["id"].as_str().unwrap()).await;
        assert_eq!(t["last_used_user_agent"], expected, "case {i}");
        assert_eq!(t["last_used_ip"], "192.0.2.1");
    }

    // A client that sends its own token in the User-Agent: the agent is not kept, and the
    // token appears nowhere in the list.
    let created = create(&f, json!({ "name": "leaky" })).await;
    let token = created["token"].as_str().unwrap();
    let agent = HeaderValue::from_str(&format!("script/1.0 (token {token})")).unwrap();
    let r = use_token(&f.api, "/me", token, "192.0.2.1:1", Some(agent)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    f.tokens.flush_usage().await.unwrap();
    let t = listed(&f, created["id"].as_str().unwrap()).await;
    assert_eq!(t["last_used_user_agent"], Value::Null);
    assert_eq!(t["last_used_ip"], "192.0.2.1");
    let all = serde_json::to_string(&list(&f).await).unwrap();
    assert!(!all.contains(token), "the token leaked into the list");
}

#[tokio::test]
async fn the_document_describes_metadata_in_requests_and_answers() {
    let f = fixture().await;
    let r = send(
        &f.api,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    let doc = r.json();
    let schemas = &doc["components"]["schemas"];
    let meta = &schemas["CreateToken"]["properties"]["metadata"];
    assert!(meta.to_string().contains("object"), "{meta}");
    assert!(
        meta["description"].as_str().unwrap().contains("1 KiB"),
        "{meta}"
    );
    let form = &schemas["CreateTokenForm"]["properties"]["metadata"];
    assert_eq!(form["type"], "string", "{form}");
    // The form's pattern only admits text the server takes.
    let pattern = form["pattern"].as_str().unwrap();
    assert!(
        pattern.starts_with('^') && pattern.ends_with('$'),
        "{pattern}"
    );
    for view in ["TokenView", "IdentityView"] {
        assert!(
            schemas[view]["properties"]["metadata"]
                .to_string()
                .contains("object"),
            "{view}: {}",
            schemas[view]
        );
    }
    for field in ["last_used_ip", "last_used_user_agent"] {
        assert!(
            schemas["TokenView"]["properties"].get(field).is_some(),
            "{field}"
        );
    }
    // The 400 for a bad field, metadata included, is documented.
    assert!(
        doc["paths"]["/tokens"]["post"]["responses"]
            .get("400")
            .is_some()
    );
}
