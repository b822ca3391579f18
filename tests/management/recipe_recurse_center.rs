//! Seed 000 (Recurse Center) walked through `examples/form_tokens.rs`: create with Basic
//! only and a form body, the token shown once, use, list with `id`/`description`/
//! `last_used_at`, authentication and bad-request errors, rotation, delete.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../../examples/form_tokens.rs"]
mod recipe;

use crate::common::basic;

use axum::Router;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::accounts::MemoryAccounts;
use serde_json::Value;
use tower::ServiceExt;

const EMAIL: &str = "you@example.com";
const PASSWORD: &str = "correct horse battery staple";

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    auth: Option<&str>,
    form: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    let res = app
        .clone()
        .oneshot(crate::common::form_body(req, form))
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = crate::common::json_or_null(&bytes);
    (parts.status, parts.headers, json)
}

#[tokio::test]
async fn recurse_center_token_flow() {
    let tokens = recipe::tokens();
    let accounts = MemoryAccounts::new();
    recipe::add_account(&accounts, EMAIL, PASSWORD)
        .await
        .unwrap();
    let app = recipe::app(tokens.clone(), accounts);
    let me = basic(EMAIL, PASSWORD);

    // create_token("My automation script"): Basic auth, form body.
    let (status, headers, created) = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        Some(&me),
        Some("description=My+automation+script"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(created["description"], "My automation script");
    assert!(created["last_used_at"].is_null());
    let id = created["id"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("pat_"));
    let bearer = format!("Bearer {token}");

    // The new token authenticates the profile call.
    let (status, _, profile) = send(
        &app,
        Method::GET,
        "/api/v1/profiles/me",
        Some(&bearer),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(profile["email"], EMAIL);

    // Bearer tokens cannot create tokens: AuthenticationFailed.
    let (status, _, err) = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        Some(&bearer),
        Some("description=New+Token"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["code"], "basic_auth_required");

    // Wrong password and unknown email: the same AuthenticationFailed.
    for auth in [
        basic(EMAIL, "wrong_password"),
        basic("nobody@example.com", PASSWORD),
    ] {
        let (status, headers, err) = send(
            &app,
            Method::POST,
            "/api/v1/tokens",
            Some(&auth),
            Some("description=My+Token"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(err["code"], "invalid_credentials");
        assert!(
            headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Basic")
        );
    }

    // BadRequest when the description is invalid: empty, blank, or over 100 characters.
    let long = format!("description={}", "a".repeat(101));
    for form in ["description=", "description=+++", long.as_str()] {
        let (status, _, err) =
            send(&app, Method::POST, "/api/v1/tokens", Some(&me), Some(form)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{form}");
        assert_eq!(err["code"], "invalid_request");
        assert!(err["error"].as_str().unwrap().contains("description"));
    }

    // The list shows id, description and the last use, never the token.
    assert_eq!(tokens.flush_usage().await.unwrap(), 1);
    let (status, _, list) = send(&app, Method::GET, "/api/v1/tokens", Some(&me), None).await;
    assert_eq!(status, StatusCode::OK);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["description"], "My automation script");
    assert!(list[0]["last_used_at"].as_str().unwrap().ends_with('Z'));
    assert!(list[0].get("token").is_none());
    assert!(!list[0].to_string().contains(&token));

    // Rotation: a new token with the same description; the old one is refused at once.
    let (status, _, rotated) = send(
        &app,
        Method::POST,
        &format!("/api/v1/tokens/{id}/rotate"),
        Some(&me),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(rotated["description"], "My automation script");
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    let new_bearer = format!("Bearer {}", rotated["token"].as_str().unwrap());
    let (status, _, err) = send(
        &app,
        Method::GET,
        "/api/v1/profiles/me",
        Some(&bearer),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["code"], "invalid_token");
    let (status, _, _) = send(
        &app,
        Method::GET,
        "/api/v1/profiles/me",
        Some(&new_bearer),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Delete: the token stops working and leaves the list.
    let (status, _, _) = send(
        &app,
        Method::DELETE,
        &format!("/api/v1/tokens/{new_id}"),
        Some(&me),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = send(
        &app,
        Method::GET,
        "/api/v1/profiles/me",
        Some(&new_bearer),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, _, list) = send(&app, Method::GET, "/api/v1/tokens", Some(&me), None).await;
    assert_eq!(list, Value::Array(vec![]));
}
