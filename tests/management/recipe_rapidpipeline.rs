//! Seed 002 (RapidPipeline) walked through `examples/machine_seats.rs`: API and licence
//! tokens that are not interchangeable, status and recent use, terminal revocation that
//! frees a slot, a seat bound to one machine on first use, release at most once per 24 h,
//! automatic release after two weeks without use (manual clock, no sleeps).
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../../examples/machine_seats.rs"]
mod recipe;

use std::time::Duration;

use axum::Router;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::accounts::MemoryAccounts;
use keygate::clock::ManualClock;
use keygate::{NewToken, TokenId};
use serde_json::Value;
use tower::ServiceExt;

const EMAIL: &str = "studio@example.com";
const PASSWORD: &str = "correct horse battery staple";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn basic() -> String {
    crate::common::basic(EMAIL, PASSWORD)
}

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    auth: &str,
    machine: Option<&str>,
    form: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, auth);
    if let Some(m) = machine {
        req = req.header(recipe::MACHINE_HEADER, m);
    }
    let res = app
        .clone()
        .oneshot(crate::common::form_body(req, form))
        .await
        .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let json = crate::common::json_or_null(&bytes);
    (status, json)
}

/// The licence check from `machine`: status and error code.
async fn check(app: &Router, token: &str, machine: Option<&str>) -> (StatusCode, Value) {
    send(
        app,
        Method::POST,
        "/licence/check",
        &format!("Bearer {token}"),
        machine,
        None,
    )
    .await
}

#[tokio::test]
async fn rapidpipeline_tokens_and_seats() {
    let clock = ManualClock::new(time::macros::datetime!(2026-05-04 9:00 UTC));
    let api = recipe::api_tokens(clock.clone()).unwrap();
    let licences = recipe::licence_tokens(clock.clone()).unwrap();
    let accounts = MemoryAccounts::new();
    recipe::add_account(&accounts, EMAIL, PASSWORD)
        .await
        .unwrap();
    let app = recipe::app(api.clone(), licences.clone(), accounts);
    let me = basic();

    // "Create Authentication Token" with a name: shown once.
    let (status, cli) = send(
        &app,
        Method::POST,
        "/auth/tokens",
        &me,
        None,
        Some("name=CLI"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{cli}");
    let cli_token = cli["token"].as_str().unwrap().to_owned();
    assert!(cli_token.starts_with("rpd_"));
    let (status, seat) = send(
        &app,
        Method::POST,
        "/seats/tokens",
        &me,
        None,
        Some("name=Blender+seat"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{seat}");
    let seat_token = seat["token"].as_str().unwrap().to_owned();
    let seat_id: TokenId = seat["id"].as_str().unwrap().parse().unwrap();
    assert!(seat_token.starts_with("lic_"));

    // Each works where it belongs...
    let (status, _) = send(
        &app,
        Method::POST,
        "/api/v1/optimize",
        &format!("Bearer {cli_token}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = check(&app, &seat_token, Some("workstation-1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["machine"], "workstation-1");
    // ...and nowhere else: the two types are not interchangeable.
    let (status, err) = send(
        &app,
        Method::POST,
        "/api/v1/optimize",
        &format!("Bearer {seat_token}"),
        Some("workstation-1"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["code"], "invalid_token");
    let (status, err) = check(&app, &cli_token, Some("workstation-1")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["code"], "invalid_token");

    // The seat is bound to the first machine.
    let (status, err) = check(&app, &seat_token, Some("laptop-2")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["code"], "bound_elsewhere");
    let (status, err) = check(&app, &seat_token, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["code"], "binding_required");
    let record = licences.get(EMAIL, seat_id).await.unwrap();
    assert_eq!(record.extras().bound_to.as_deref(), Some("workstation-1"));

    // Status and recent use.
    api.flush_usage().await.unwrap();
    licences.flush_usage().await.unwrap();
    for uri in ["/auth/tokens", "/seats/tokens"] {
        let (status, list) = send(&app, Method::GET, uri, &me, None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list[0]["status"], "active", "{uri}");
        assert!(list[0]["last_used_at"].is_string(), "{uri}");
        assert!(list[0].get("token").is_none());
    }

    // Release the seat: the next machine takes it.
    let release = format!("/seats/tokens/{seat_id}/release");
    let (status, _) = send(&app, Method::POST, &release, &me, None, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = check(&app, &seat_token, Some("laptop-2")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = check(&app, &seat_token, Some("workstation-1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["code"], "bound_elsewhere");
    // At most one release every 24 hours.
    let (status, err) = send(&app, Method::POST, &release, &me, None, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["code"], "release_too_soon");
    clock.advance(DAY);
    let (status, _) = send(&app, Method::POST, &release, &me, None, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = check(&app, &seat_token, Some("workstation-1")).await;
    assert_eq!(status, StatusCode::OK);

    // Two weeks without use: the seat is released on its own (not revoked), and an idle
    // API token keeps working.
    licences.flush_usage().await.unwrap();
    clock.advance(recipe::SEAT_IDLE + Duration::from_secs(60));
    api.purge().await.unwrap();
    licences.purge().await.unwrap();
    let record = licences.get(EMAIL, seat_id).await.unwrap();
    assert_eq!(record.extras().bound_to, None);
    assert!(record.extras().revoked_at.is_none());
    let (status, _) = check(&app, &seat_token, Some("render-node-3")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(
        &app,
        Method::POST,
        "/api/v1/optimize",
        &format!("Bearer {cli_token}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Licence tokens are limited by the licence terms; API tokens are not.
    let (status, _) = send(
        &app,
        Method::POST,
        "/seats/tokens",
        &me,
        None,
        Some("name=Maya+seat"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, err) = send(
        &app,
        Method::POST,
        "/seats/tokens",
        &me,
        None,
        Some("name=Houdini+seat"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["code"], "token_limit");
    for i in 0..150 {
        api.issue(NewToken::new(EMAIL, format!("ci-{i}")))
            .await
            .unwrap();
    }

    // Revocation is terminal and frees a slot.
    let (status, _) = send(
        &app,
        Method::DELETE,
        &format!("/seats/tokens/{seat_id}"),
        &me,
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, err) = check(&app, &seat_token, Some("render-node-3")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["code"], "invalid_token");
    let (status, _) = send(
        &app,
        Method::DELETE,
        &format!("/seats/tokens/{seat_id}"),
        &me,
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "cannot be revoked twice");
    let (status, _) = send(&app, Method::POST, &release, &me, None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nor released");
    let (_, list) = send(&app, Method::GET, "/seats/tokens", &me, None, None).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Maya seat"]);
    let (status, _) = send(
        &app,
        Method::POST,
        "/seats/tokens",
        &me,
        None,
        Some("name=Houdini+seat"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

/// Inactivity expiry per kind: ONE manager over one store holds API tokens revoked after 90
/// days without use and seats released after the recipe's two weeks, each kind on its own
/// clock (the manager's setting is the default, the licence kind overrides it). Seen
/// through the management list and the API.
#[tokio::test]
async fn one_manager_expires_each_kind_on_its_own_clock() {
    let clock = ManualClock::new(time::macros::datetime!(2026-05-04 9:00 UTC));
    let api_idle = 90 * DAY;
    let tokens = keygate::Tokens::builder(keygate::MemoryStore::new())
        .clock(clock.clone())
        .kind(keygate::TokenKind::new("api", "rpd").unwrap())
        .kind(
            keygate::TokenKind::new("licence", "lic")
                .unwrap()
                .with_binding(recipe::MACHINE_HEADER)
                .unwrap()
                .with_inactivity_expiry(Some(recipe::SEAT_IDLE)),
        )
        .max_tokens_per_owner(None)
        .revoke_after_inactivity(api_idle)
        .build()
        .unwrap();
    let accounts = MemoryAccounts::new();
    recipe::add_account(&accounts, EMAIL, PASSWORD)
        .await
        .unwrap();
    // The same manager behind both routers and both APIs.
    let app = recipe::app(tokens.clone(), tokens.clone(), accounts);
    let me = basic();

    let (status, cli) = send(
        &app,
        Method::POST,
        "/auth/tokens",
        &me,
        None,
        Some("name=CLI"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{cli}");
    let cli_auth = format!("Bearer {}", cli["token"].as_str().unwrap());
    let seat = tokens
        .issue(NewToken::new(EMAIL, "Blender seat").kind("licence"))
        .await
        .unwrap();
    let seat_token = seat.token.expose_secret().to_owned();
    let (status, _) = check(&app, &seat_token, Some("workstation-1")).await;
    assert_eq!(status, StatusCode::OK);

    let listed = |list: &Value, name: &str| -> Value {
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };

    // Two weeks and a bit without use: the seat is released (not revoked); the API token,
    // idle just as long, is untouched.
    tokens.flush_usage().await.unwrap();
    clock.advance(recipe::SEAT_IDLE + Duration::from_secs(60));
    let out = tokens.expire_inactive().await.unwrap();
    assert_eq!(out.released, [seat.record.id]);
    assert!(out.revoked.is_empty());
    let (_, list) = send(&app, Method::GET, "/auth/tokens", &me, None, None).await;
    let seat_view = listed(&list, "Blender seat");
    assert_eq!(seat_view["status"], "active");
    assert!(seat_view["bound_to"].is_null(), "{seat_view}");
    assert_eq!(listed(&list, "CLI")["status"], "active");
    let (status, _) = send(
        &app,
        Method::POST,
        "/api/v1/optimize",
        &cli_auth,
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The seat moves to the next machine.
    let (status, _) = check(&app, &seat_token, Some("render-node-3")).await;
    assert_eq!(status, StatusCode::OK);

    // 90 days after its last use the API token is revoked; the seat, in use, is kept.
    tokens.flush_usage().await.unwrap();
    clock.advance(api_idle + Duration::from_secs(60));
    let (status, _) = check(&app, &seat_token, Some("render-node-3")).await;
    assert_eq!(status, StatusCode::OK);
    tokens.flush_usage().await.unwrap();
    tokens.purge().await.unwrap();
    let (status, err) = send(
        &app,
        Method::POST,
        "/api/v1/optimize",
        &cli_auth,
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["code"], "invalid_token");
    let (status, _) = check(&app, &seat_token, Some("render-node-3")).await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = send(&app, Method::GET, "/auth/tokens", &me, None, None).await;
    assert_eq!(listed(&list, "Blender seat")["bound_to"], "render-node-3");
    assert_ne!(listed(&list, "CLI")["status"], "active");
}
