//! Expiry warnings: the maintenance pass writes one `token.expiring` event per token due
//! within the warning period, and POSTs it, signed, to a webhook (a loopback receiver in
//! the test), retrying a failing one and never holding a request for a dead one.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
use keygate::audit::{AuditLog, MemoryAuditSink};
use keygate::axum::management::Management;
use keygate::clock::ManualClock;
use keygate::tokens::{ExpiryWebhook, verify_signature};
use keygate::{MemoryStore, Permissions, Tokens};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::basic;

const ADMIN: &str = "admin@example.com";
const PASSWORD: &str = "correct horse battery staple";
const SECRET: &str = "webhook-secret-0123456789";
const DAY: u64 = 24 * 3600;

struct Fixture {
    app: Router,
    tokens: Tokens,
    clock: ManualClock,
    audit: MemoryAuditSink,
}

async fn fixture(webhook: Option<ExpiryWebhook>) -> Fixture {
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let sink = MemoryAuditSink::new();
    let audit = AuditLog::spawn(sink.clone(), 1000);
    let builder = Tokens::builder(MemoryStore::new())
        .clock(clock.clone())
        .audit(audit.clone());
    let builder = match webhook {
        Some(w) => builder.expiry_webhook(w),
        None => builder,
    };
    let tokens = builder.build().unwrap();
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
    let app = Management::new(tokens.clone(), accounts)
        .with_audit(audit)
        .router();
    Fixture {
        app,
        tokens,
        clock,
        audit: sink,
    }
}

/// Creates a token expiring in `seconds` through the API; returns its id.
async fn create(app: &Router, name: &str, seconds: u64) -> String {
    let req = Request::post("/tokens")
        .header(header::AUTHORIZATION, basic(ADMIN, PASSWORD))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({ "name": name, "expires_in": seconds }).to_string(),
        ))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    body["id"].as_str().unwrap().to_owned()
}

fn expiring(sink: &MemoryAuditSink, id: &str) -> usize {
    sink.events()
        .iter()
        .filter(|e| {
            e.event == "token.expiring"
                && e.api_token_id.map(|i| i.to_string()).as_deref() == Some(id)
        })
        .count()
}

#[tokio::test]
async fn a_token_due_within_a_week_is_warned_of_once() {
    let f = fixture(None).await;
    let soon = create(&f.app, "soon", 3 * DAY).await;
    let later = create(&f.app, "later", 30 * DAY).await;
    // Several maintenance passes, a day apart.
    for _ in 0..3 {
        f.tokens.warn_expiring().await.unwrap();
        f.clock.advance(Duration::from_secs(3600));
    }
    assert_eq!(expiring(&f.audit, &soon), 1, "exactly one warning");
    assert_eq!(expiring(&f.audit, &later), 0, "not due yet");
    let event = f
        .audit
        .events()
        .into_iter()
        .find(|e| e.event == "token.expiring")
        .unwrap();
    assert_eq!(event.owner.as_deref(), Some(ADMIN));
    assert_eq!(event.api_token_name.as_deref(), Some("soon"));
    assert!(event.details.unwrap().contains_key("expires_at"));

    // 23 days later the second one is due, and warned of once too.
    f.clock.advance(Duration::from_secs(24 * DAY));
    f.tokens.warn_expiring().await.unwrap();
    f.tokens.warn_expiring().await.unwrap();
    assert_eq!(expiring(&f.audit, &later), 1);
    assert_eq!(expiring(&f.audit, &soon), 1);
}

#[derive(Clone, Default)]
struct Receiver {
    calls: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    /// Answer 500 to this many calls first.
    fail_first: usize,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut calls = r.calls.lock().unwrap();
    calls.push((headers, body));
    if calls.len() <= r.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

async fn serve(receiver: Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/hooks/expiring", axum::routing::post(receive))
        .with_state(receiver);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hooks/expiring")
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_webhook_gets_the_warning_signed_and_retried_until_it_answers() {
    let receiver = Receiver {
        fail_first: 2,
        ..Receiver::default()
    };
    let url = serve(receiver.clone()).await;
    let hook = ExpiryWebhook::new(&url, SECRET)
        .unwrap()
        .with_backoff(Duration::from_millis(20), Duration::from_millis(100));
    let f = fixture(Some(hook)).await;
    let soon = create(&f.app, "soon", 3 * DAY).await;
    f.tokens.warn_expiring().await.unwrap();

    wait_for(|| f.tokens.expiry_webhook_stats().unwrap().delivered == 1).await;
    let calls = receiver.calls.lock().unwrap().clone();
    assert_eq!(
        calls.len(),
        3,
        "two failures, then delivered on the third try"
    );
    let deliveries: Vec<_> = calls
        .iter()
        .map(|(h, _)| h["x-keygate-delivery"].clone())
        .collect();
    assert!(
        deliveries.iter().all(|d| *d == deliveries[0]),
        "one delivery id"
    );
    for (headers, body) in &calls {
        let timestamp = headers["x-keygate-timestamp"].to_str().unwrap();
        let signature = headers["x-keygate-signature"].to_str().unwrap();
        assert!(verify_signature(
            SECRET.as_bytes(),
            timestamp,
            body,
            signature
        ));
        assert!(!verify_signature(
            b"another-secret-0123456789",
            timestamp,
            body,
            signature
        ));
        // The timestamp is signed: a replay with a fresh one does not verify.
        assert!(!verify_signature(SECRET.as_bytes(), "1", body, signature));
        assert_eq!(headers["x-keygate-event"], "token.expiring");
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["event"], "token.expiring");
        assert_eq!(event["api_token_id"], soon.as_str());
        assert_eq!(event["owner"], ADMIN);
    }
}

#[tokio::test]
async fn a_dead_webhook_holds_up_neither_requests_nor_the_maintenance_pass() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            keep.lock().unwrap().push(conn);
        }
    });
    let hook = ExpiryWebhook::new(&format!("http://{addr}/"), SECRET)
        .unwrap()
        .with_timeout(Duration::from_secs(30))
        .with_queue(2);
    let f = fixture(Some(hook)).await;
    for i in 0..4 {
        create(&f.app, &format!("soon-{i}"), 3 * DAY).await;
    }
    let start = Instant::now();
    let warned = f.tokens.warn_expiring().await.unwrap();
    assert_eq!(warned.len(), 4);
    let req = Request::get("/tokens")
        .header(header::AUTHORIZATION, basic(ADMIN, PASSWORD))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        f.app.clone().oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "waited on the webhook: {:?}",
        start.elapsed()
    );
    // The audit trail has every warning; the queue (2) dropped what it could not hold.
    assert_eq!(
        f.audit
            .events()
            .iter()
            .filter(|e| e.event == "token.expiring")
            .count(),
        4
    );
    wait_for(|| !held.lock().unwrap().is_empty()).await;
    let stats = f.tokens.expiry_webhook_stats().unwrap();
    assert_eq!(stats.delivered, 0);
    assert!(stats.dropped >= 1, "{stats:?}");
}
