//! Attacks on leak reports (`POST /api/v1/leaks`) on the reference server: guessing the
//! reporter key, a tampered signed body, the key sent where tokens go, and a leaked token
//! used after its report.

use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use serde_json::json;

use crate::support::{Server, json_request};

const KEY: &str = "reporter-key-0123456789";
const SECRET: &str = "signing-secret-0123456789";

async fn server() -> Server {
    Server::with(|c| {
        c.leak_reporter_key = Some(zeroize::Zeroizing::new(KEY.to_owned()));
        c.leak_signing_secret = Some(zeroize::Zeroizing::new(SECRET.to_owned()));
        c.failure_limit = 3;
    })
    .await
}

fn report(body: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/leaks")
        .header(header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn a_leaked_token_is_dead_on_its_next_request_after_the_report() {
    let s = server().await;
    let t = s.create(json!({ "name": "leaky" })).await;
    let me = || {
        Request::get("/api/v1/me")
            .header(header::AUTHORIZATION, t.bearer())
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(s.send(me()).await.status, StatusCode::OK);
    let body = json!([{ "token": t.token, "url": "https://gist.example/1", "source": "gist" }])
        .to_string();
    let a = s
        .send(report(&body, &[("x-keygate-reporter-key", KEY)]))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json()[0]["revoked"], true);
    assert!(!a.text.contains(&t.token));
    assert_eq!(s.send(me()).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn guessing_the_reporter_key_is_throttled_per_address() {
    let s = server().await;
    let t = s.create(json!({ "name": "target" })).await;
    let body = json!([{ "token": t.token, "url": "u", "source": "s" }]).to_string();
    for i in 0..3 {
        let guess = format!("reporter-key-guess-{i:04}");
        let a = s
            .send_from(
                "198.51.100.7:4000",
                report(&body, &[("x-keygate-reporter-key", &guess)]),
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
        assert_eq!(a.code(), "invalid_reporter");
    }
    // Over the budget: refused before the key is even compared, the right one too.
    let a = s
        .send_from(
            "198.51.100.7:4000",
            report(
                &body,
                &[("x-keygate-reporter-key", "reporter-key-guess-9999")],
            ),
        )
        .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text);
    assert!(a.headers.contains_key(header::RETRY_AFTER));
    let a = s
        .send_from(
            "198.51.100.7:4000",
            report(&body, &[("x-keygate-reporter-key", KEY)]),
        )
        .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    // The real reporter, from its own address, is not locked out.
    let a = s
        .send_from(
            "203.0.113.5:4000",
            report(&body, &[("x-keygate-reporter-key", KEY)]),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
}

#[tokio::test]
async fn a_tampered_signed_report_is_refused() {
    let s = server().await;
    let victim = s.create(json!({ "name": "victim" })).await;
    // A report signed for one token, replayed with another token swapped in: an attacker
    // who saw a signed report cannot use it to revoke someone else's token.
    let signed_body = json!([{ "token": "pat_nothing", "url": "u", "source": "s" }]).to_string();
    let signature = keygate::signature::sign(SECRET.as_bytes(), signed_body.as_bytes());
    let tampered = signed_body.replace("pat_nothing", &victim.token);
    let a = s
        .send(report(&tampered, &[("x-keygate-signature", &signature)]))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    let a = s
        .send(report(&signed_body, &[("x-keygate-signature", &signature)]))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let me = Request::get("/api/v1/me")
        .header(header::AUTHORIZATION, victim.bearer())
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        s.send(me).await.status,
        StatusCode::OK,
        "the victim's token survives"
    );
}

#[tokio::test]
async fn the_reporter_key_is_not_a_bearer_token_and_the_route_is_off_by_default() {
    let s = server().await;
    let t = s.create(json!({ "name": "kept" })).await;
    let body = json!([{ "token": t.token, "url": "u", "source": "s" }]);
    // The key where tokens go: no reporter credentials at all.
    let a = s
        .send(json_request(
            Method::POST,
            "/api/v1/leaks",
            &format!("Bearer {KEY}"),
            &body,
        ))
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text);
    // And a valid API token is no reporter credential either.
    let a = s
        .send(json_request(
            Method::POST,
            "/api/v1/leaks",
            &t.bearer(),
            &body,
        ))
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text);
    assert_eq!(a.code(), "missing_credentials");

    let doc = s
        .send(
            Request::get("/api/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .json();
    assert!(doc["paths"]["/api/v1/leaks"]["post"].is_object());

    let off = Server::start().await;
    let a = off
        .send(report(
            &body.to_string(),
            &[("x-keygate-reporter-key", KEY)],
        ))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let doc = off
        .send(
            Request::get("/api/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .json();
    assert!(doc["paths"].get("/api/v1/leaks").is_none());
}
