//! Policies on the layer: per-token rate limits with headers, failure limits per client
//! address, audit events, client addresses behind trusted proxies.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{TestStore, bearer, body_string, echo, get};
use http::{StatusCode, header};
use keygate::audit::{AuditLog, Decision, MemoryAuditSink};
use keygate::client_ip::{ClientAddr, ClientIpSource};
use keygate::rate_limit::{FailureLimits, Rate, RateLimits};
use keygate::{AuthLayer, NewToken, Roles, TokenKind, Tokens};
use tower::{Layer, ServiceExt};

fn tokens(store: &TestStore) -> Tokens {
    Tokens::builder(store.clone())
        .roles(Roles::new().with_role("viewer", ["things:read"]).unwrap())
        .build()
        .unwrap()
}

fn from(
    peer: &str,
    mut req: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    req.extensions_mut()
        .insert(ClientAddr(peer.parse::<SocketAddr>().unwrap()));
    req
}

#[tokio::test]
async fn the_101st_request_in_a_minute_gets_429_and_headers_count_down() {
    let store = TestStore::default();
    let tokens = tokens(&store);
    let a = tokens.issue(NewToken::new("alice", "a")).await.unwrap();
    let b = tokens.issue(NewToken::new("alice", "b")).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = AuthLayer::new(tokens)
        .with_rate_limits(RateLimits::new(Rate::per_minute(100).unwrap()))
        .layer(echo(calls.clone()));
    for i in 0..100u32 {
        let res = svc
            .clone()
            .oneshot(get(Some(&bearer(&a.token))))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "request {i}");
        let h = res.headers();
        assert_eq!(h["ratelimit-limit"], "100");
        assert_eq!(h["ratelimit-remaining"], (99 - i).to_string().as_str());
        let reset: u64 = h["ratelimit-reset"].to_str().unwrap().parse().unwrap();
        assert!(reset <= 60, "reset {reset}");
    }
    let res = svc
        .clone()
        .oneshot(get(Some(&bearer(&a.token))))
        .await
        .unwrap();
    let (status, headers, body) = body_string(res).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
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
    assert_eq!(headers["ratelimit-remaining"], "0");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        100,
        "the 101st never reached the handler"
    );
    // Another token of the same owner has its own budget.
    let res = svc.oneshot(get(Some(&bearer(&b.token)))).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn failed_guesses_from_one_address_are_limited() {
    let store = TestStore::default();
    let tokens = tokens(&store);
    let good = tokens.issue(NewToken::new("alice", "a")).await.unwrap();
    let svc = AuthLayer::new(tokens)
        .with_failure_limits(FailureLimits::new(Rate::per_minute(5).unwrap()))
        .layer(echo(Arc::default()));
    let guess = || format!("Bearer {}", TokenKind::pat().generate().expose_secret());
    for _ in 0..5 {
        let res = svc
            .clone()
            .oneshot(from("203.0.113.5:4000", get(Some(&guess()))))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = svc
        .clone()
        .oneshot(from("203.0.113.5:4000", get(Some(&guess()))))
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the 6th failure"
    );
    assert!(res.headers().contains_key(header::RETRY_AFTER));
    let lookups = store.lookups();
    let res = svc
        .clone()
        .oneshot(from("203.0.113.5:4000", get(Some(&bearer(&good.token)))))
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the address is blocked"
    );
    assert_eq!(
        store.lookups(),
        lookups,
        "a blocked address costs no store lookup"
    );
    let res = svc
        .oneshot(from("198.51.100.1:4000", get(Some(&bearer(&good.token)))))
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "other addresses are not affected"
    );
}

#[tokio::test]
async fn one_audit_event_per_decision_with_the_precise_reason() {
    let store = TestStore::default();
    let tokens = tokens(&store);
    let viewer = tokens
        .issue(NewToken::new("alice", "ci-production-deploy").role("viewer"))
        .await
        .unwrap();
    let revoked = tokens.issue(NewToken::new("alice", "old")).await.unwrap();
    tokens.revoke("alice", revoked.record.id).await.unwrap();
    let sink = MemoryAuditSink::new();
    let audit = AuditLog::spawn(sink.clone(), 1000);
    let svc = AuthLayer::new(tokens)
        .read_write("things:write")
        .with_audit(audit.clone())
        .layer(echo(Arc::default()));
    let with_id = |mut r: http::Request<_>| {
        r.headers_mut()
            .insert("x-request-id", "req-42".parse().unwrap());
        from("192.0.2.10:5555", r)
    };
    let cases = [
        (get(Some(&bearer(&viewer.token))), 200),
        (
            common::req(http::Method::POST, Some(&bearer(&viewer.token))),
            403,
        ),
        (get(Some(&bearer(&revoked.token))), 401),
        (get(None), 401),
        (get(Some("Bearer a b")), 400),
    ];
    for (r, want) in cases {
        let res = svc.clone().oneshot(with_id(r)).await.unwrap();
        assert_eq!(res.status(), want);
    }
    audit.shutdown().await;
    let events = sink.events();
    assert_eq!(events.len(), 5, "one event per request: {events:?}");
    let summary: Vec<_> = events
        .iter()
        .map(|e| (e.status_code, e.rbac_decision, e.reason.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            (200, Decision::Allow, None),
            (403, Decision::Deny, Some("insufficient_scope")),
            (401, Decision::Deny, Some("revoked")),
            (401, Decision::Deny, Some("missing")),
            (400, Decision::Deny, Some("invalid_request")),
        ]
    );
    let first = &events[0];
    assert_eq!(first.event, "authenticate");
    assert_eq!(first.api_token_id, Some(viewer.record.id));
    assert_eq!(
        first.api_token_name.as_deref(),
        Some("ci-production-deploy")
    );
    assert_eq!(first.owner.as_deref(), Some("alice"));
    assert_eq!(
        (first.method.as_str(), first.path.as_str()),
        ("GET", "/things")
    );
    assert_eq!(first.client_ip, Some("192.0.2.10".parse().unwrap()));
    assert_eq!(first.request_id.as_deref(), Some("req-42"));
    assert_eq!(
        events[2].api_token_id,
        Some(revoked.record.id),
        "a revoked token is named"
    );
    let json = serde_json::to_string(&events).unwrap();
    for secret in [viewer.token.expose_secret(), revoked.token.expose_secret()] {
        assert!(!json.contains(&secret[4..]), "no token in audit events");
    }
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let store = TestStore::default();
    let tokens = tokens(&store);
    let sink = MemoryAuditSink::new();
    let audit = AuditLog::spawn(sink.clone(), 100);
    let svc = AuthLayer::new(tokens)
        .with_audit(audit.clone())
        .with_client_ip(ClientIpSource::new().trust_proxies(["10.0.0.0/8".parse().unwrap()]))
        .layer(echo(Arc::default()));
    let spoofed = |peer: &str| {
        let mut r = from(peer, get(None));
        r.headers_mut()
            .insert("x-forwarded-for", "6.6.6.6, 198.51.100.23".parse().unwrap());
        r
    };
    svc.clone().oneshot(spoofed("10.0.0.9:80")).await.unwrap();
    svc.clone()
        .oneshot(spoofed("203.0.113.77:80"))
        .await
        .unwrap();
    audit.shutdown().await;
    let ips: Vec<_> = sink.events().iter().map(|e| e.client_ip).collect();
    assert_eq!(
        ips,
        [
            Some("198.51.100.23".parse().unwrap()),
            Some("203.0.113.77".parse().unwrap())
        ],
        "behind a trusted proxy the rightmost untrusted hop; otherwise the socket peer"
    );
}

#[tokio::test]
async fn a_full_audit_queue_never_blocks_requests() {
    let store = TestStore::default();
    let tokens = tokens(&store);
    let t = tokens.issue(NewToken::new("alice", "a")).await.unwrap();
    let sink = MemoryAuditSink::new();
    let audit = AuditLog::spawn(sink.clone(), 1);
    let svc = AuthLayer::new(tokens)
        .with_audit(audit.clone())
        .layer(echo(Arc::default()));
    let all = tokio::time::timeout(Duration::from_secs(10), async {
        for _ in 0..200 {
            let res = svc
                .clone()
                .oneshot(get(Some(&bearer(&t.token))))
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
        }
    })
    .await;
    assert!(all.is_ok(), "requests must not wait for the audit sink");
    audit.shutdown().await;
    assert_eq!(sink.events().len() as u64 + audit.dropped(), 200);
}

#[tokio::test]
async fn a_denial_by_an_inner_permission_check_is_audited_as_deny() {
    let store = TestStore::default();
    let tokens = tokens(&store);
    let viewer = tokens
        .issue(NewToken::new("alice", "v").role("viewer"))
        .await
        .unwrap();
    let sink = MemoryAuditSink::new();
    let audit = AuditLog::spawn(sink.clone(), 100);
    let guarded = keygate::RequirePermissionLayer::new("things:write").layer(echo(Arc::default()));
    let svc = AuthLayer::new(tokens)
        .with_audit(audit.clone())
        .layer(guarded);
    let res = svc
        .oneshot(get(Some(&bearer(&viewer.token))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    audit.shutdown().await;
    let events = sink.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].rbac_decision, Decision::Deny);
    assert_eq!(events[0].reason.as_deref(), Some("insufficient_scope"));
    assert_eq!(events[0].status_code, 403);
    assert_eq!(events[0].api_token_id, Some(viewer.record.id));
}

#[tokio::test]
async fn the_management_api_judges_allow_lists_like_the_layer() {
    use axum::extract::ConnectInfo;
    use keygate::accounts::MemoryAccounts;
    use keygate::axum::management::Management;
    let store = TestStore::default();
    let tokens = Tokens::builder(store.clone())
        .roles(Roles::new().with_role("reader", ["tokens:read"]).unwrap())
        .build()
        .unwrap();
    let fenced = tokens
        .issue(
            NewToken::new("alice", "fenced")
                .role("reader")
                .allowed_ips(["10.1.0.0/16".parse().unwrap()]),
        )
        .await
        .unwrap();
    let router = Management::new(tokens, MemoryAccounts::new()).router();
    for (peer, want) in [
        ("10.1.2.3:5000", StatusCode::OK),
        ("203.0.113.9:5000", StatusCode::FORBIDDEN),
    ] {
        let mut req = http::Request::get("/tokens")
            .header(header::AUTHORIZATION, bearer(&fenced.token))
            .body(axum::body::Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let (status, _, body) = body_string(router.clone().oneshot(req).await.unwrap()).await;
        assert_eq!(status, want, "from {peer}: {body}");
        if want == StatusCode::FORBIDDEN {
            assert!(body.contains("ip_not_allowed"), "{body}");
        }
    }
    // Without any known address a fenced token is refused (fail closed).
    let req = http::Request::get("/tokens")
        .header(header::AUTHORIZATION, bearer(&fenced.token))
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(
        router.oneshot(req).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
}
