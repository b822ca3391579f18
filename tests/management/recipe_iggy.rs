//! Seed 001 (Apache Iggy) walked through `examples/personal_tokens.rs`: named PATs unique per user, an
//! optional expiry in seconds turned into an absolute time, list, delete, login with a PAT,
//! at most 100 per user, and the background cleaner on an interval (paused Tokio time and a
//! manual clock: no real sleeps).
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../../examples/personal_tokens.rs"]
mod recipe;

use std::time::Duration;

use axum::Router;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::accounts::MemoryAccounts;
use keygate::clock::ManualClock;
use keygate::{NewToken, Tokens};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tower::ServiceExt;

const USER: &str = "iggy@example.com";
const PASSWORD: &str = "correct horse battery staple";

fn basic() -> String {
    crate::common::basic(USER, PASSWORD)
}

async fn send(app: &Router, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if !uri.ends_with("/login") {
        req = req.header(header::AUTHORIZATION, basic());
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

async fn login(app: &Router, token: &str) -> (StatusCode, Value) {
    send(
        app,
        Method::POST,
        "/personal-access-tokens/login",
        Some(json!({ "token": token })),
    )
    .await
}

fn time(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().unwrap(), &Rfc3339).unwrap()
}

async fn setup() -> (Router, Tokens, ManualClock) {
    let clock = ManualClock::new(time::macros::datetime!(2026-03-01 12:00 UTC));
    let tokens = recipe::tokens(clock.clone()).unwrap();
    let accounts = MemoryAccounts::new();
    recipe::add_user(&accounts, USER, PASSWORD).await.unwrap();
    (recipe::app(tokens.clone(), accounts), tokens, clock)
}

#[tokio::test]
async fn iggy_personal_access_tokens() {
    let (app, tokens, clock) = setup().await;

    // CreatePersonalAccessToken { name, expiry: Some(3600) }: the raw token, once, and the
    // expiry as an absolute timestamp.
    let (status, ci) = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({ "name": "ci", "expires_in": 3600 })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{ci}");
    let ci_token = ci["token"].as_str().unwrap().to_owned();
    assert_eq!(
        time(&ci["expires_at"]) - time(&ci["created_at"]),
        time::Duration::seconds(3600)
    );
    assert_eq!(
        time(&ci["expires_at"]),
        time::macros::datetime!(2026-03-01 13:00 UTC)
    );

    // Names are unique per user.
    let (status, err) = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({ "name": "ci" })),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["code"], "name_taken");

    // The expiry is optional.
    let (status, laptop) = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({ "name": "laptop" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(laptop["expires_at"].is_null());
    let laptop_token = laptop["token"].as_str().unwrap().to_owned();

    // LoginWithPersonalAccessToken returns the user.
    let (status, identity) = login(&app, &ci_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(identity["user_id"], USER);
    assert_eq!(identity["token_name"], "ci");
    let (status, err) = login(&app, "pat_not-a-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["code"], "invalid_token");

    // GetPersonalAccessTokens: names and expiries, never the raw token.
    let (status, list) = send(&app, Method::GET, "/api/v1/tokens", None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ci", "laptop"]);
    assert_eq!(list[0]["expires_at"], ci["expires_at"]);
    assert!(!list.to_string().contains(&ci_token));

    // One second past its expiry the PAT no longer logs in.
    clock.advance(Duration::from_secs(3601));
    let (status, _) = login(&app, &ci_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, list) = send(&app, Method::GET, "/api/v1/tokens", None).await;
    assert_eq!(list[0]["status"], "expired");

    // DeletePersonalAccessToken.
    let (status, _) = send(
        &app,
        Method::DELETE,
        &format!("/api/v1/tokens/{}", laptop["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = login(&app, &laptop_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // At most 100 live PATs per user: fill up to 100, the 101st is refused.
    for i in 0..recipe::MAX_TOKENS_PER_USER {
        tokens
            .issue(NewToken::new(USER, format!("pat-{i}")))
            .await
            .unwrap();
    }
    let (status, err) = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({ "name": "one-too-many" })),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["code"], "token_limit");
    // Deleting one frees a slot.
    let victim = tokens
        .list(USER)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == "pat-0")
        .unwrap();
    let (status, _) = send(
        &app,
        Method::DELETE,
        &format!("/api/v1/tokens/{}", victim.id),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({ "name": "one-too-many" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test(start_paused = true)]
async fn the_cleaner_deletes_expired_tokens_on_its_interval() {
    let (app, tokens, clock) = setup().await;
    let (status, short) = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({ "name": "short-lived", "expires_in": 30 })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({ "name": "forever" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id: keygate::TokenId = short["id"].as_str().unwrap().parse().unwrap();

    // The cleaner's first pass runs at once: nothing has expired yet.
    let cleaner = recipe::start_cleaner(&tokens);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(tokens.list(USER).await.unwrap().len(), 2);

    // The token expires; it stays stored (refused) until the next pass.
    clock.advance(Duration::from_secs(31));
    let (status, _) = login(&app, short["token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(tokens.store().get(&id).await.unwrap().is_some());

    // One interval later (paused Tokio time: no real wait) it is gone.
    tokio::time::sleep(recipe::CLEANER_INTERVAL).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(tokens.store().get(&id).await.unwrap().is_none());
    let names: Vec<String> = tokens
        .list(USER)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(names, ["forever"]);
    cleaner.shutdown().await;
}

/// Iggy's own create body, `CreatePersonalAccessToken { name, expiry }`: `expiry` is seconds
/// from creation (or `null`), read as `expires_in`, and the token stops logging in when it
/// runs out; a bad `expiry` is the same 400 a bad `expires_in` gets.
#[tokio::test]
async fn iggy_create_body_with_expiry() {
    let (app, _tokens, clock) = setup().await;

    let (status, pat) = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({ "name": "iggy-cli", "expiry": 600 })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{pat}");
    assert_eq!(
        time(&pat["expires_at"]),
        time::macros::datetime!(2026-03-01 12:10 UTC)
    );
    let token = pat["token"].as_str().unwrap().to_owned();

    let (status, never) = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({ "name": "no-expiry", "expiry": null })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{never}");
    assert!(never["expires_at"].is_null());

    // Listed with the absolute expiry.
    let (_, list) = send(&app, Method::GET, "/api/v1/tokens", None).await;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "iggy-cli")
        .unwrap();
    assert_eq!(listed["expires_at"], pat["expires_at"]);

    for bad in [json!(0), json!(-5), json!("ten")] {
        let (status, err) = send(
            &app,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({ "name": "bad", "expiry": bad })),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "expiry {bad}: {err}");
        assert!(
            err["error"].as_str().unwrap().contains("expires_in"),
            "{err}"
        );
    }
    // Both fields at once: refused, not silently merged.
    let (status, _) = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({ "name": "both", "expiry": 60, "expires_in": 60 })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A body over the management API's limit is refused as the API refuses it.
    let huge = "x".repeat(keygate::axum::management::DEFAULT_BODY_LIMIT + 1);
    let (status, err) = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({ "name": huge, "expiry": 60 })),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(err["code"], "payload_too_large");

    let (status, _) = login(&app, &token).await;
    assert_eq!(status, StatusCode::OK);
    clock.advance(Duration::from_secs(601));
    let (status, _) = login(&app, &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
