//! Leak reports (`POST /leaks`) through the management router: a reporter key or a signed
//! body revokes each reported live token at once, answers per entry, and writes a
//! `token.leaked` audit event with the url and source but never the token.
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
use keygate::audit::{AuditLog, MemoryAuditSink};
use keygate::axum::management::{LeakReports, Management};
use keygate::{MemoryStore, Permissions, Tokens};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::basic;

const ADMIN: &str = "admin@example.com";
const PASSWORD: &str = "correct horse battery staple";
const KEY: &str = "reporter-key-0123456789";
const SECRET: &str = "signing-secret-0123456789";

struct Fixture {
    app: Router,
    audit: MemoryAuditSink,
}

async fn fixture(reporters: Option<LeakReports>) -> Fixture {
    let sink = MemoryAuditSink::new();
    let audit = AuditLog::spawn(sink.clone(), 1000);
    let tokens = Tokens::builder(MemoryStore::new())
        .audit(audit.clone())
        .build()
        .unwrap();
    let accounts = MemoryAccounts::new();
    accounts
        .put_account(Account {
            email: ADMIN.into(),
            password_hash: hash_password(PASSWORD).unwrap(),
            permissions: Permissions::parse(["*"]).unwrap(),
            created_at: time::OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    let management = Management::new(tokens, accounts).with_audit(audit);
    let management = match reporters {
        Some(r) => management.with_leak_reports(r),
        None => management,
    };
    Fixture {
        app: management.router(),
        audit: sink,
    }
}

fn reporters() -> LeakReports {
    LeakReports::new()
        .with_reporter_key(KEY)
        .unwrap()
        .with_signing_secret(SECRET)
        .unwrap()
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn create(app: &Router, name: &str) -> String {
    let req = Request::post("/tokens")
        .header(header::AUTHORIZATION, basic(ADMIN, PASSWORD))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "name": name }).to_string()))
        .unwrap();
    let (status, body) = send(app, req).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

async fn me(app: &Router, token: &str) -> StatusCode {
    let req = Request::get("/me")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    send(app, req).await.0
}

fn report(body: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/leaks")
        .header(header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Body::from(body.to_owned())).unwrap()
}

/// A well-formed token that no store holds.
fn stranger() -> String {
    keygate::TokenKind::pat()
        .generate()
        .expose_secret()
        .to_owned()
}

#[tokio::test]
async fn a_reported_token_is_revoked_at_once_and_audited_without_its_value() {
    let f = fixture(Some(reporters())).await;
    let leaked = create(&f.app, "leaked").await;
    let kept = create(&f.app, "kept").await;
    assert_eq!(me(&f.app, &leaked).await, StatusCode::OK);

    let unknown = stranger();
    let body = json!([
        { "token": leaked, "url": "https://github.com/acme/app/blob/main/.env", "source": "content" },
        { "token": "not-a-token", "url": "https://example.com/paste/1", "source": "paste" },
        { "token": unknown, "url": "https://example.com/paste/2", "source": "paste", "type": "keygate_pat" },
        { "token": leaked, "url": format!("https://ci.example/build/1?token={leaked}"), "source": "build log" },
    ])
    .to_string();
    let (status, answer) = send(&f.app, report(&body, &[("x-keygate-reporter-key", KEY)])).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!([
            { "token_hint": &leaked[..12], "found": true, "revoked": true },
            { "token_hint": null, "found": false, "revoked": false },
            { "token_hint": &unknown[..12], "found": false, "revoked": false },
            // Reported twice: the second entry finds it already revoked.
            { "token_hint": &leaked[..12], "found": true, "revoked": false },
        ])
    );
    let text = answer.to_string();
    assert!(
        !text.contains(&leaked) && !text.contains(&unknown),
        "{text}"
    );

    // The very next request with the leaked token is refused; the other token still works.
    assert_eq!(me(&f.app, &leaked).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&f.app, &kept).await, StatusCode::OK);

    let events = f.audit.events();
    let leaks: Vec<_> = events
        .iter()
        .filter(|e| e.event == "token.leaked")
        .collect();
    assert_eq!(leaks.len(), 2, "{events:?}");
    let first = leaks[0];
    assert_eq!(first.owner.as_deref(), Some(ADMIN));
    assert_eq!(first.api_token_name.as_deref(), Some("leaked"));
    assert_eq!(first.reason.as_deref(), Some("leaked"));
    let details = first.details.as_ref().unwrap();
    assert_eq!(details["url"], "https://github.com/acme/app/blob/main/.env");
    assert_eq!(details["source"], "content");
    assert_eq!(leaks[1].reason.as_deref(), Some("not_live"));
    // A URL holding the token is kept without it.
    assert_eq!(
        leaks[1].details.as_ref().unwrap()["url"],
        "https://ci.example/build/1?token=[token]"
    );
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains(&leaked), "the audit trail holds the token");
    assert!(
        !all.contains(&leaked[12..]),
        "the audit trail holds the secret part"
    );
}

#[tokio::test]
async fn a_rotated_token_reported_in_its_grace_takes_its_successor_down() {
    let f = fixture(Some(reporters())).await;
    let old = create(&f.app, "ci").await;
    let req = Request::get("/tokens")
        .header(header::AUTHORIZATION, basic(ADMIN, PASSWORD))
        .body(Body::empty())
        .unwrap();
    let id = send(&f.app, req).await.1[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let req = Request::post(format!("/tokens/{id}/rotate"))
        .header(header::AUTHORIZATION, format!("Bearer {old}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "grace_seconds": 3600 }).to_string()))
        .unwrap();
    let (status, rotated) = send(&f.app, req).await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    let new = rotated["token"].as_str().unwrap().to_owned();
    assert_eq!(me(&f.app, &old).await, StatusCode::OK, "in grace");

    let body = json!([{ "token": old, "url": "https://example.com/log", "source": "log" }]);
    let (status, answer) = send(
        &f.app,
        report(&body.to_string(), &[("x-keygate-reporter-key", KEY)]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer[0]["revoked"], true);
    // Whoever found the old token may have rotated it: the successor goes too.
    assert_eq!(me(&f.app, &old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&f.app, &new).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_signed_report_is_taken_and_a_bad_signature_or_key_is_refused() {
    let f = fixture(Some(reporters())).await;
    let leaked = create(&f.app, "leaked").await;
    let body =
        json!([{ "token": leaked, "url": "https://example.com/x", "source": "scan" }]).to_string();

    let (status, answer) = send(&f.app, report(&body, &[])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer["code"], "missing_credentials");

    let (status, answer) = send(
        &f.app,
        report(
            &body,
            &[("x-keygate-reporter-key", "reporter-key-wrong-00000")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(answer["code"], "invalid_reporter");

    // A signature of another body, and one under another secret.
    let other = keygate::signature::sign(SECRET.as_bytes(), b"[]");
    let (status, answer) = send(&f.app, report(&body, &[("x-keygate-signature", &other)])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(answer["code"], "invalid_reporter");
    let forged = keygate::signature::sign(b"guessed-secret-0123456789", body.as_bytes());
    let (status, _) = send(&f.app, report(&body, &[("x-keygate-signature", &forged)])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A right key with a wrong signature: every credential sent must be right.
    let (status, _) = send(
        &f.app,
        report(
            &body,
            &[
                ("x-keygate-reporter-key", KEY),
                ("x-keygate-signature", &forged),
            ],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        me(&f.app, &leaked).await,
        StatusCode::OK,
        "nothing was revoked"
    );

    let signed = keygate::signature::sign(SECRET.as_bytes(), body.as_bytes());
    let (status, answer) = send(&f.app, report(&body, &[("x-keygate-signature", &signed)])).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer[0]["revoked"], true);
    assert_eq!(me(&f.app, &leaked).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn reports_are_bounded_and_the_route_exists_only_when_configured() {
    let f = fixture(Some(reporters().with_max_entries(3))).await;
    let entry = json!({ "token": "x", "url": "u", "source": "s" });
    let four = Value::Array(vec![entry.clone(); 4]).to_string();
    let (status, answer) = send(&f.app, report(&four, &[("x-keygate-reporter-key", KEY)])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"].as_str().unwrap().contains("at most 3"),
        "{answer}"
    );
    let long = json!([{ "token": "x", "url": "u".repeat(1025), "source": "s" }]).to_string();
    let (status, _) = send(&f.app, report(&long, &[("x-keygate-reporter-key", KEY)])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = send(&f.app, report("{}", &[("x-keygate-reporter-key", KEY)])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let off = fixture(None).await;
    let one = Value::Array(vec![entry]).to_string();
    let (status, _) = send(&off.app, report(&one, &[("x-keygate-reporter-key", KEY)])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn weak_reporter_secrets_are_refused_and_never_printed() {
    assert!(LeakReports::new().with_reporter_key("short").is_err());
    assert!(LeakReports::new().with_signing_secret("short").is_err());
    let shown = format!("{:?}", reporters());
    assert!(!shown.contains(KEY) && !shown.contains(SECRET), "{shown}");
}
