//! Policies kept on the token record, through the layer and the management router, with an
//! injected clock: IP allow-lists, per-token rates, bind on first use with release, and
//! inactivity expiry.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use bytes::Bytes;
use common::{TestStore, basic, bearer, body_string, echo, get};
use http::{Request, StatusCode};
use http_body_util::Full;
use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
use keygate::audit::{AuditLog, MemoryAuditSink};
use keygate::client_ip::{ClientAddr, ClientIpSource};
use keygate::clock::ManualClock;
use keygate::rate_limit::{Rate, RateLimits};
use keygate::{AuthLayer, NewToken, Permissions, RawToken, TokenKind, Tokens};
use tower::{Layer, Service, ServiceExt};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn start() -> time::OffsetDateTime {
    time::macros::datetime!(2026-03-01 12:00 UTC)
}

fn seat_kind() -> TokenKind {
    TokenKind::new("seat", "seat")
        .unwrap()
        .with_binding("X-Machine-Id")
        .unwrap()
}

fn manager(store: &TestStore, clock: &ManualClock) -> Tokens {
    Tokens::builder(store.clone())
        .kind(TokenKind::pat())
        .kind(seat_kind())
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn from(peer: Option<&str>, mut req: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    if let Some(p) = peer {
        req.extensions_mut()
            .insert(ClientAddr(p.parse::<SocketAddr>().unwrap()));
    }
    req
}

async fn status_and_code<S>(svc: &S, req: Request<Full<Bytes>>) -> (StatusCode, String)
where
    S: Service<
            Request<Full<Bytes>>,
            Response = http::Response<keygate::middleware::ResponseBody<Full<Bytes>>>,
        > + Clone,
    S::Error: std::fmt::Debug,
{
    let res = svc.clone().oneshot(req).await.unwrap();
    let (status, _, body) = body_string(res).await;
    let code = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code)
}

#[tokio::test]
async fn allow_lists_admit_inside_and_refuse_outside_on_both_paths() {
    let store = TestStore::default();
    let clock = ManualClock::new(start());
    let tokens = manager(&store, &clock);
    let listed = tokens
        .issue(NewToken::new("alice", "office").allowed_ips([
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
            "192.0.2.7/32".parse().unwrap(),
        ]))
        .await
        .unwrap();
    assert_eq!(listed.record.extras().allowed_ips.len(), 3);
    let open = tokens
        .issue(NewToken::new("alice", "anywhere"))
        .await
        .unwrap();
    let sink = MemoryAuditSink::new();
    let audit = AuditLog::spawn(sink.clone(), 100);
    let calls = Arc::new(AtomicUsize::new(0));
    // The fast path (no layer policies) and the full path (audit on) must agree.
    let fast = AuthLayer::new(tokens.clone()).layer(echo(calls.clone()));
    let full = AuthLayer::new(tokens.clone())
        .with_audit(audit.clone())
        .layer(echo(calls.clone()));
    let cases: [(Option<&str>, &RawToken, StatusCode); 10] = [
        (Some("10.1.2.3:4000"), &listed.token, StatusCode::OK),
        (Some("10.255.255.255:1"), &listed.token, StatusCode::OK),
        (Some("11.0.0.1:4000"), &listed.token, StatusCode::FORBIDDEN),
        (Some("192.0.2.7:80"), &listed.token, StatusCode::OK),
        (Some("192.0.2.8:80"), &listed.token, StatusCode::FORBIDDEN),
        (Some("[2001:db8::5]:443"), &listed.token, StatusCode::OK),
        (
            Some("[2001:db9::1]:443"),
            &listed.token,
            StatusCode::FORBIDDEN,
        ),
        // An IPv4-mapped IPv6 peer is judged as IPv4.
        (Some("[::ffff:10.9.9.9]:443"), &listed.token, StatusCode::OK),
        // No client address: fail closed for a listed token, no effect on the others.
        (None, &listed.token, StatusCode::FORBIDDEN),
        (None, &open.token, StatusCode::OK),
    ];
    for svc in [&fast, &full] {
        for (peer, token, want) in &cases {
            let (status, code) = status_and_code(svc, from(*peer, get(Some(&bearer(token))))).await;
            assert_eq!(status, *want, "peer {peer:?}");
            if *want == StatusCode::FORBIDDEN {
                assert_eq!(code, "ip_not_allowed", "peer {peer:?}");
            }
        }
    }
    audit.shutdown().await;
    let denied: Vec<_> = sink
        .events()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ip_not_allowed"))
        .collect();
    assert_eq!(denied.len(), 4, "one audit event per refused request");
    assert_eq!(denied[0].api_token_id, Some(listed.record.id));
}

#[tokio::test]
async fn a_forwarded_header_from_an_untrusted_peer_does_not_move_the_client() {
    let store = TestStore::default();
    let clock = ManualClock::new(start());
    let tokens = manager(&store, &clock);
    let issued = tokens
        .issue(NewToken::new("alice", "partner").allowed_ips(["203.0.113.0/24".parse().unwrap()]))
        .await
        .unwrap();
    let svc = AuthLayer::new(tokens)
        .with_client_ip(ClientIpSource::new().trust_proxies(["10.0.0.0/8".parse().unwrap()]))
        .layer(echo(Arc::new(AtomicUsize::new(0))));
    let spoofed = |peer: &str| {
        let mut req = get(Some(&bearer(&issued.token)));
        req.headers_mut()
            .insert("x-forwarded-for", "203.0.113.5".parse().unwrap());
        from(Some(peer), req)
    };
    // An untrusted peer claims an allowed address: judged by the socket peer.
    assert_eq!(
        status_and_code(&svc, spoofed("198.51.100.9:5000")).await,
        (StatusCode::FORBIDDEN, "ip_not_allowed".to_owned())
    );
    // The same header from a trusted proxy is believed.
    assert_eq!(
        status_and_code(&svc, spoofed("10.0.0.2:443")).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_token_rate_overrides_the_default() {
    let store = TestStore::default();
    let clock = ManualClock::new(start());
    let tokens = manager(&store, &clock);
    let slow = tokens
        .issue(NewToken::new("alice", "slow").rate_limit_per_minute(2))
        .await
        .unwrap();
    let normal = tokens
        .issue(NewToken::new("alice", "normal"))
        .await
        .unwrap();
    assert!(
        tokens
            .issue(NewToken::new("alice", "zero").rate_limit_per_minute(0))
            .await
            .is_err(),
        "a rate of zero is refused"
    );
    let svc = AuthLayer::new(tokens)
        .with_rate_limits(RateLimits::new(Rate::per_minute(100).unwrap()))
        .layer(echo(Arc::new(AtomicUsize::new(0))));
    for i in 0..2 {
        let res = svc
            .clone()
            .oneshot(get(Some(&bearer(&slow.token))))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "request {i}");
        assert_eq!(res.headers()["ratelimit-limit"], "2");
    }
    let res = svc
        .clone()
        .oneshot(get(Some(&bearer(&slow.token))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    let res = svc
        .clone()
        .oneshot(get(Some(&bearer(&normal.token))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["ratelimit-limit"], "100");
}

fn machine(token: &RawToken, id: Option<&str>) -> Request<Full<Bytes>> {
    let mut req = get(Some(&bearer(token)));
    if let Some(id) = id {
        req.headers_mut()
            .insert("x-machine-id", id.parse().unwrap());
    }
    req
}

#[tokio::test]
async fn a_seat_binds_on_first_use_and_is_released_at_most_once_a_day() {
    let store = TestStore::default();
    let clock = ManualClock::new(start());
    let tokens = manager(&store, &clock);
    let seat = tokens
        .issue(NewToken::new("alice@example.com", "workstation").kind("seat"))
        .await
        .unwrap();
    let accounts = MemoryAccounts::new();
    accounts
        .put_account(Account {
            email: "alice@example.com".into(),
            password_hash: hash_password("correct horse").unwrap(),
            permissions: Permissions::parse(["*"]).unwrap(),
            created_at: start(),
        })
        .await
        .unwrap();
    let api = keygate::axum::management::router(tokens.clone(), accounts);
    let release = |id: keygate::TokenId| {
        Request::builder()
            .method("POST")
            .uri(format!("/tokens/{id}/release"))
            .header("authorization", basic("alice@example.com", "correct horse"))
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let fast = AuthLayer::new(tokens.clone()).layer(echo(calls.clone()));
    let full = AuthLayer::new(tokens.clone())
        .with_rate_limits(RateLimits::new(Rate::per_minute(1000).unwrap()))
        .layer(echo(calls.clone()));
    for svc in [&fast, &full] {
        assert_eq!(
            status_and_code(svc, machine(&seat.token, None)).await,
            (StatusCode::FORBIDDEN, "binding_required".to_owned())
        );
    }
    assert_eq!(
        status_and_code(&fast, machine(&seat.token, Some("machine-a")))
            .await
            .0,
        StatusCode::OK,
        "the first use binds"
    );
    let rec = tokens
        .get("alice@example.com", seat.record.id)
        .await
        .unwrap();
    assert_eq!(rec.extras().bound_to.as_deref(), Some("machine-a"));
    assert_eq!(rec.extras().bound_at, Some(start()));
    for svc in [&fast, &full] {
        assert_eq!(
            status_and_code(svc, machine(&seat.token, Some("machine-a")))
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            status_and_code(svc, machine(&seat.token, Some("machine-b"))).await,
            (StatusCode::FORBIDDEN, "bound_elsewhere".to_owned())
        );
    }
    // A rotated seat stays on its machine.
    let rotated = tokens
        .rotate("alice@example.com", seat.record.id, None)
        .await
        .unwrap();
    assert_eq!(
        rotated.record.extras().bound_to.as_deref(),
        Some("machine-a")
    );
    let seat = rotated;
    assert_eq!(
        status_and_code(&fast, machine(&seat.token, Some("machine-b"))).await,
        (StatusCode::FORBIDDEN, "bound_elsewhere".to_owned())
    );

    // The owner releases the seat: the next machine takes it.
    let res = api.clone().oneshot(release(seat.record.id)).await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        status_and_code(&full, machine(&seat.token, Some("machine-b")))
            .await
            .0,
        StatusCode::OK,
        "after a release a new machine binds"
    );
    assert_eq!(
        status_and_code(&full, machine(&seat.token, Some("machine-a"))).await,
        (StatusCode::FORBIDDEN, "bound_elsewhere".to_owned())
    );
    // A second release within 24 hours is refused, naming the next allowed time.
    clock.advance(Duration::from_secs(23 * 3600));
    let res = api.clone().oneshot(release(seat.record.id)).await.unwrap();
    let (status, _, body) = body_string(res).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "release_too_soon");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("2026-03-02T12:00:00Z"),
        "{body}"
    );
    assert_eq!(
        status_and_code(&fast, machine(&seat.token, Some("machine-b")))
            .await
            .0,
        StatusCode::OK,
        "a refused release changes nothing"
    );
    // After 24 hours it is allowed again.
    clock.advance(Duration::from_secs(3600));
    let res = api.clone().oneshot(release(seat.record.id)).await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        status_and_code(&fast, machine(&seat.token, Some("machine-c")))
            .await
            .0,
        StatusCode::OK
    );
    // Releasing a token of a kind without a binding is a conflict, someone else's a 404.
    let pat = tokens
        .issue(NewToken::new("alice@example.com", "plain"))
        .await
        .unwrap();
    let res = api.clone().oneshot(release(pat.record.id)).await.unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let bob = tokens
        .issue(NewToken::new("bob@example.com", "seat").kind("seat"))
        .await
        .unwrap();
    let res = api.clone().oneshot(release(bob.record.id)).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_uses_through_the_layer_bind_one_machine() {
    let store = TestStore::default();
    let clock = ManualClock::new(start());
    let tokens = manager(&store, &clock);
    let seat = tokens
        .issue(NewToken::new("alice", "seat").kind("seat"))
        .await
        .unwrap();
    let svc = AuthLayer::new(tokens).layer(echo(Arc::new(AtomicUsize::new(0))));
    let token = Arc::new(seat.token);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let svc = svc.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let id = format!("machine-{i}");
                svc.oneshot(machine(&token, Some(&id)))
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 1, "exactly one machine gets the seat");
}

#[tokio::test]
async fn inactive_tokens_are_revoked_and_idle_seats_released_by_the_purge() {
    let store = TestStore::default();
    let clock = ManualClock::new(start());
    let sink = MemoryAuditSink::new();
    let audit = AuditLog::spawn(sink.clone(), 100);
    let tokens = Tokens::builder(store.clone())
        .kind(TokenKind::pat())
        .kind(seat_kind())
        .clock(clock.clone())
        .revoke_after_inactivity(14 * DAY)
        .audit(audit.clone())
        .build()
        .unwrap();
    let idle = tokens.issue(NewToken::new("alice", "idle")).await.unwrap();
    let busy = tokens.issue(NewToken::new("alice", "busy")).await.unwrap();
    let seat = tokens
        .issue(NewToken::new("alice", "seat").kind("seat"))
        .await
        .unwrap();
    let svc = AuthLayer::new(tokens.clone()).layer(echo(Arc::new(AtomicUsize::new(0))));
    assert_eq!(
        status_and_code(&svc, machine(&seat.token, Some("machine-a")))
            .await
            .0,
        StatusCode::OK
    );
    clock.advance(10 * DAY);
    assert_eq!(
        status_and_code(&svc, get(Some(&bearer(&busy.token))))
            .await
            .0,
        StatusCode::OK
    );
    tokens.flush_usage().await.unwrap();
    clock.advance(4 * DAY + Duration::from_secs(1));
    tokens.purge().await.unwrap();

    let idle_now = tokens.get("alice", idle.record.id).await.unwrap();
    assert!(
        idle_now.extras().revoked_at.is_some(),
        "unused for 14 days: revoked"
    );
    assert_eq!(
        status_and_code(&svc, get(Some(&bearer(&idle.token)))).await,
        (StatusCode::UNAUTHORIZED, "invalid_token".to_owned())
    );
    let busy_now = tokens.get("alice", busy.record.id).await.unwrap();
    assert!(
        busy_now.extras().revoked_at.is_none(),
        "used 4 days ago: kept"
    );
    let seat_now = tokens.get("alice", seat.record.id).await.unwrap();
    assert!(
        seat_now.extras().revoked_at.is_none(),
        "an idle seat is not revoked"
    );
    assert_eq!(seat_now.extras().bound_to, None, "an idle seat is released");
    assert_eq!(
        status_and_code(&svc, machine(&seat.token, Some("machine-b")))
            .await
            .0,
        StatusCode::OK,
        "another machine takes the released seat"
    );
    audit.shutdown().await;
    let events = sink.events();
    let revoked: Vec<_> = events
        .iter()
        .filter(|e| e.event == "token.revoke")
        .collect();
    assert_eq!(revoked.len(), 1, "{events:?}");
    assert_eq!(revoked[0].api_token_id, Some(idle.record.id));
    assert_eq!(revoked[0].reason.as_deref(), Some("inactive"));
    assert_eq!(revoked[0].rbac_decision, keygate::audit::Decision::Allow);
    assert_eq!(revoked[0].api_token_name.as_deref(), Some("idle"));
    let released: Vec<_> = events
        .iter()
        .filter(|e| e.event == "token.release")
        .collect();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].api_token_id, Some(seat.record.id));
    assert_eq!(released[0].reason.as_deref(), Some("inactive"));
    assert_eq!(released[0].rbac_decision, keygate::audit::Decision::Allow);
    // The revoked record is deleted by the next purge.
    tokens.purge().await.unwrap();
    assert!(tokens.get("alice", idle.record.id).await.is_err());
}

#[tokio::test]
async fn the_management_api_takes_and_shows_allowed_ips_and_rate_limit() {
    let store = TestStore::default();
    let clock = ManualClock::new(start());
    let tokens = manager(&store, &clock);
    let accounts = MemoryAccounts::new();
    accounts
        .put_account(Account {
            email: "alice@example.com".into(),
            password_hash: hash_password("correct horse").unwrap(),
            permissions: Permissions::parse(["*"]).unwrap(),
            created_at: start(),
        })
        .await
        .unwrap();
    let api = keygate::axum::management::router(tokens.clone(), accounts);
    let create = |body: &str, ct: &str| {
        Request::builder()
            .method("POST")
            .uri("/tokens")
            .header("authorization", basic("alice@example.com", "correct horse"))
            .header("content-type", ct)
            .body(axum::body::Body::from(body.to_owned()))
            .unwrap()
    };
    let res = api
        .clone()
        .oneshot(create(
            r#"{"name":"ci","allowed_ips":["10.0.0.0/8","2001:db8::/32","192.0.2.7"],"rate_limit":30}"#,
            "application/json",
        ))
        .await
        .unwrap();
    let (status, _, body) = body_string(res).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["allowed_ips"],
        serde_json::json!(["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"])
    );
    assert_eq!(v["rate_limit"], 30);
    let res = api
        .clone()
        .oneshot(create(
            "name=form&allowed_ips=10.0.0.0/8,192.168.0.0/16&rate_limit=5",
            "application/x-www-form-urlencoded",
        ))
        .await
        .unwrap();
    let (status, _, body) = body_string(res).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for bad in [
        r#"{"name":"bad","allowed_ips":["10.0.0.0/33"]}"#,
        r#"{"name":"bad","allowed_ips":["not-an-ip"]}"#,
        r#"{"name":"bad","allowed_ips":"10.0.0.0/8"}"#,
        r#"{"name":"bad","rate_limit":0}"#,
        r#"{"name":"bad","rate_limit":-3}"#,
    ] {
        let res = api
            .clone()
            .oneshot(create(bad, "application/json"))
            .await
            .unwrap();
        let (status, _, body) = body_string(res).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body.contains("invalid_request"), "{body}");
    }
    let list = Request::builder()
        .uri("/tokens")
        .header("authorization", basic("alice@example.com", "correct horse"))
        .body(axum::body::Body::empty())
        .unwrap();
    let (_, _, body) = body_string(api.clone().oneshot(list).await.unwrap()).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["rate_limit"], 30);
    assert_eq!(v[1]["allowed_ips"][1], "192.168.0.0/16");
}
