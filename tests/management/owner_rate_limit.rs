//! A per-account rate limit shared by all of an owner's tokens
//! ([`RateLimits::per_owner`]): two tokens of one owner share the owner's budget, another
//! owner's tokens are unaffected, the headers report the tighter budget, and through Redis
//! two instances (two layers) enforce one owner budget together.
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::routing::get;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
use keygate::axum::management::Management;
use keygate::rate_limit::{Rate, RateLimits};
use keygate::store::redis::{RedisOptions, RedisRateLimiter};
use keygate::{AuthLayer, Identity, MemoryStore, Permissions, Tokens};
use serde_json::{Value, json};
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery staple";
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

async fn accounts() -> MemoryAccounts {
    let accounts = MemoryAccounts::new();
    for email in [ALICE, BOB] {
        accounts
            .put_account(Account {
                email: email.to_owned(),
                password_hash: hash_password(PASSWORD).unwrap(),
                permissions: Permissions::parse(["api:read"]).unwrap(),
                created_at: time::OffsetDateTime::now_utc(),
            })
            .await
            .unwrap();
    }
    accounts
}

/// An app (one instance): the management API at `/api/v1` and `GET /data` behind `limits`.
fn app(tokens: &Tokens, accounts: &MemoryAccounts, limits: RateLimits) -> Router {
    let data = Router::new()
        .route(
            "/data",
            get(|id: Identity| async move { id.owner().to_owned() }),
        )
        .layer(AuthLayer::new(tokens.clone()).with_rate_limits(limits));
    Router::new()
        .nest(
            "/api/v1",
            Management::new(tokens.clone(), accounts.clone()).router(),
        )
        .merge(data)
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

/// A new token of `email` through the management API: its `Authorization` value.
async fn new_token(app: &Router, email: &str, name: &str) -> String {
    let (status, _, body) = send(
        app,
        Method::POST,
        "/api/v1/tokens",
        &crate::common::basic(email, PASSWORD),
        Some(json!({ "name": name })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    format!("Bearer {}", v["token"].as_str().unwrap())
}

async fn data(app: &Router, auth: &str) -> (StatusCode, HeaderMap, String) {
    send(app, Method::GET, "/data", auth, None).await
}

fn assert_rate_limited(status: StatusCode, headers: &HeaderMap, body: &str) {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(
        body,
        r#"{"error":"Rate limit exceeded. Please try again later.","code":"rate_limited"}"#
    );
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
}

#[tokio::test]
async fn an_owners_tokens_share_one_budget_and_other_owners_keep_theirs() {
    let tokens = Tokens::new(MemoryStore::new());
    let accounts = accounts().await;
    let limits = RateLimits::new(Rate::per_minute(100).unwrap())
        .per_owner(Some(Rate::per_minute(4).unwrap()));
    let app = app(&tokens, &accounts, limits);
    let ci = new_token(&app, ALICE, "ci").await;
    let laptop = new_token(&app, ALICE, "laptop").await;
    let bob = new_token(&app, BOB, "ci").await;

    // Four requests between Alice's two tokens: the headers show the owner's budget (the
    // tighter one) counting down across both.
    for (i, auth) in [&ci, &laptop, &ci, &laptop].into_iter().enumerate() {
        let (status, headers, body) = data(&app, auth).await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
        assert_eq!(headers["ratelimit-limit"], "4");
        assert_eq!(headers["ratelimit-remaining"], (3 - i).to_string().as_str());
    }
    // The fifth is refused, whichever of her tokens sends it, with the usual 429.
    for auth in [&ci, &laptop] {
        let (status, headers, body) = data(&app, auth).await;
        assert_rate_limited(status, &headers, &body);
    }
    // Bob's token is not affected.
    let (status, headers, body) = data(&app, &bob).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, BOB);
    assert_eq!(headers["ratelimit-remaining"], "3");
}

#[tokio::test]
async fn without_a_per_owner_rate_each_token_keeps_its_own_budget() {
    let tokens = Tokens::new(MemoryStore::new());
    let accounts = accounts().await;
    let app = app(
        &tokens,
        &accounts,
        RateLimits::new(Rate::per_minute(2).unwrap()),
    );
    let ci = new_token(&app, ALICE, "ci").await;
    let laptop = new_token(&app, ALICE, "laptop").await;
    for auth in [&ci, &ci, &laptop, &laptop] {
        let (status, headers, _) = data(&app, auth).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["ratelimit-limit"], "2");
    }
    let (status, headers, body) = data(&app, &ci).await;
    assert_rate_limited(status, &headers, &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_an_owners_budget_through_redis() {
    let test = "two_instances_share_an_owners_budget_through_redis";
    let url = crate::common::redis_url();
    let prefix = format!("keygate-test:owner:{}:", uuid::Uuid::new_v4().simple());
    let Some(redis) = crate::common::available(
        "Redis",
        &url,
        test,
        RedisOptions::new(url.clone())
            .with_prefix(prefix.clone())
            .connect()
            .await,
    ) else {
        return;
    };
    // One store of tokens; each instance its own layer and its own limiter on one Redis.
    let tokens = Tokens::new(MemoryStore::new());
    let accounts = accounts().await;
    let instance = || {
        let limiter = RedisRateLimiter::new(
            RedisOptions::new(url.clone())
                .with_prefix(prefix.clone())
                .connect_lazy()
                .unwrap(),
        );
        let limits = RateLimits::new(Rate::per_minute(100).unwrap())
            .per_owner(Some(Rate::per_minute(6).unwrap()))
            .shared(limiter);
        app(&tokens, &accounts, limits)
    };
    let (a, b) = (instance(), instance());
    let ci = new_token(&a, ALICE, "ci").await;
    let laptop = new_token(&b, ALICE, "laptop").await;
    let bob = new_token(&a, BOB, "ci").await;

    // Six requests of Alice's two tokens, alternating between the instances.
    let mut allowed = 0;
    for i in 0..6 {
        let (app, auth) = if i % 2 == 0 { (&a, &ci) } else { (&b, &laptop) };
        let (status, headers, body) = data(app, auth).await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
        assert_eq!(headers["ratelimit-limit"], "6");
        allowed += 1;
    }
    assert_eq!(allowed, 6);
    // GCRA gives one request back every 10 s at 6 a minute: the next is refused on both.
    for (app, auth) in [(&a, &laptop), (&b, &ci)] {
        let (status, headers, body) = data(app, auth).await;
        assert_rate_limited(status, &headers, &body);
    }
    // Bob, on either instance, has his own budget.
    for app in [&a, &b] {
        let (status, _, body) = data(app, &bob).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // The Redis keys name neither a token nor the owner in clear.
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.iter().any(|k| k.contains("rl:owner:")), "{keys:?}");
    assert!(
        !keys
            .iter()
            .any(|k| k.contains("alice") || k.contains("bob")),
        "{keys:?}"
    );
    crate::common::redis_cleanup(&redis).await;
}
