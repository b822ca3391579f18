//! The audit log and the caches under attack: what an anonymous request can write into the
//! log, the path an event names, throttling of a stolen token replayed from the wrong place,
//! what the verification cache tells about a token, and a release audited as what it was.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Method, Request, StatusCode};
use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
use keygate::audit::{AuditLog, Decision, MemoryAuditSink};
use keygate::axum::management::Management;
use keygate::rate_limit::{FailureLimits, Rate, RateLimits};
use keygate::store::cached::CachedStore;
use keygate::{AuthLayer, NewToken, Permissions, TokenKind, Tokens};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};

use crate::common::TestStore;
use crate::support::{ADMIN, Answer, PASSWORD, PEER, Server, admin_basic, basic, request};

/// The events of `GET /api/v1/audit` (as the admin) that `pick` selects, waiting for the
/// background writer; empty when none shows up.
async fn audited(s: &Server, pick: impl Fn(&Value) -> bool) -> Vec<Value> {
    for _ in 0..100 {
        let a = s
            .send(request(
                Method::GET,
                "/api/v1/audit?limit=1000",
                &admin_basic(),
            ))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let events: Vec<Value> = a.json().as_array().unwrap().clone();
        let picked: Vec<Value> = events.into_iter().filter(|e| pick(e)).collect();
        if !picked.is_empty() {
            return picked;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Vec::new()
}

/// A request without credentials is audited (reason `missing`) and never throttled: its
/// `X-Request-Id` and its path are the sender's free text. An id of 64 KiB is not kept (a
/// new one takes its place), a path of 8 KiB is cut to 1 024 bytes, and a short, visible
/// id is kept as sent.
#[tokio::test]
async fn anonymous_requests_cannot_write_huge_audit_rows() {
    let s = Server::start().await;
    let anonymous = |method: Method, path: &str, id: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("x-request-id", id)
            .body(Body::empty())
            .unwrap()
    };
    let huge = "r".repeat(64 * 1024);
    let a = s.send(anonymous(Method::GET, "/api/v1/apps", &huge)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let long_path = format!("/api/v1/apps/{}/restart", "p".repeat(8 * 1024));
    let a = s.send(anonymous(Method::POST, &long_path, "req-42")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    let events = audited(&s, |e| e["reason"] == "missing").await;
    let huge_id = events
        .iter()
        .find(|e| e["path"] == "/api/v1/apps")
        .expect("the anonymous request is audited");
    // The server's request log puts a fresh UUID in place of an id it does not keep.
    let kept = huge_id["request_id"].as_str().unwrap_or_default();
    assert_eq!(
        kept.len(),
        36,
        "a 64 KiB request id was kept: {} bytes",
        kept.len()
    );
    let long = events
        .iter()
        .find(|e| e["request_id"] == "req-42")
        .expect("a short request id is kept");
    let kept = long["path"].as_str().unwrap();
    assert_eq!(kept.len(), keygate::audit::MAX_PATH_LEN, "path kept");
    assert!(long_path.starts_with(kept));
}

/// Behind `Router::nest("/api/v1", …)` the layer's `authenticate` events name the path the
/// client requested (`/api/v1/apps`), as the management write events do, not the nested
/// router's view (`/apps`, which would also name the token page's `/tokens`).
#[tokio::test]
async fn audit_events_name_the_request_path() {
    let s = Server::start().await;
    let t = s.create(json!({ "name": "probe" })).await;
    let a = s
        .send(request(Method::GET, "/api/v1/apps", &t.bearer()))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let paths: Vec<String> = audited(&s, |e| e["event"] == "authenticate")
        .await
        .iter()
        .map(|e| e["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(paths, ["/api/v1/apps"], "audited paths");
}

/// A seat token bound to machine A, stolen and replayed from machine B: each replay is
/// refused 403 `bound_elsewhere` after a store write (`bind`). The refusals count against
/// the client's failure limit: after three, the thief gets 429, and a blocked client is
/// refused before the store is asked at all.
#[tokio::test]
async fn a_stolen_seat_token_replayed_elsewhere_is_throttled() {
    let seat = TokenKind::new("seat", "seat")
        .unwrap()
        .with_binding("x-machine-id")
        .unwrap();
    let store = TestStore::default();
    let tokens = Tokens::builder(store.clone()).kind(seat).build().unwrap();
    let issued = tokens
        .issue(NewToken::new("alice", "render-node").kind("seat"))
        .await
        .unwrap();
    let layer = AuthLayer::new(tokens.clone())
        .with_rate_limits(RateLimits::new(Rate::per_minute(100).unwrap()))
        .with_failure_limits(FailureLimits::new(Rate::per_minute(3).unwrap()));
    let svc = layer.layer(crate::common::echo(Arc::new(AtomicUsize::new(0))));
    let call = |machine: &'static str| {
        let mut req = crate::common::get(Some(&crate::common::bearer(&issued.token)));
        req.headers_mut()
            .insert("x-machine-id", machine.parse().unwrap());
        req.extensions_mut()
            .insert(ConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
        svc.clone().oneshot(req)
    };
    // The owner's machine takes the seat.
    assert_eq!(call("machine-a").await.unwrap().status(), StatusCode::OK);
    // The thief replays it from another machine.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(call("machine-b").await.unwrap().status());
    }
    assert_eq!(statuses, [StatusCode::FORBIDDEN; 3]);
    let blocked = call("machine-b").await.unwrap();
    assert_eq!(
        blocked.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the 4th replay within a minute"
    );
    assert!(blocked.headers().contains_key(http::header::RETRY_AFTER));
    // From now on the client is refused before any lookup (so before any bind).
    let lookups = store.lookups();
    for _ in 0..20 {
        let res = call("machine-b").await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(
        store.lookups(),
        lookups,
        "a blocked client reached the store"
    );
}

/// A token confined to an address range, replayed from outside it: 403 `ip_not_allowed`,
/// counted against the client like a bad token.
#[tokio::test]
async fn a_token_replayed_from_outside_its_allow_list_is_throttled() {
    let s = Server::with(|c| c.failure_limit = 3).await;
    let confined = s
        .create(json!({ "name": "ci-inside", "allowed_ips": ["198.51.100.0/24"] }))
        .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let a = s
            .send(request(Method::GET, "/api/v1/apps", &confined.bearer()))
            .await;
        statuses.push(a.status);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::FORBIDDEN,
            StatusCode::FORBIDDEN,
            StatusCode::FORBIDDEN,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

/// The verification cache must not be a timing oracle: a revoked token's record used to be
/// cached for the TTL (here an hour), an unknown hash only for the negative TTL (here
/// 200 ms). Presented again after the negative TTL, the revoked token was answered from
/// memory and the unknown one went to the database, telling a token that was real from one
/// that never was. Both now cost one store lookup.
#[tokio::test]
async fn revoked_and_unknown_tokens_cost_the_same_store_work() {
    let store = TestStore::default();
    let tokens = Tokens::new(
        CachedStore::new(store.clone())
            .with_ttl(Duration::from_secs(3600))
            .with_negative_ttl(Duration::from_millis(200)),
    );
    let revoked = tokens
        .issue(NewToken::new("alice", "leaked"))
        .await
        .unwrap();
    tokens.revoke("alice", revoked.record.id).await.unwrap();
    let unknown = TokenKind::pat().generate();

    // First presentation of each: both go to the store and are remembered.
    let before = store.lookups();
    assert!(
        tokens
            .authenticate(revoked.token.expose_secret())
            .await
            .is_err()
    );
    assert!(tokens.authenticate(unknown.expose_secret()).await.is_err());
    assert_eq!(store.lookups() - before, 2);
    // Within the negative TTL neither goes to the store.
    let before = store.lookups();
    assert!(
        tokens
            .authenticate(revoked.token.expose_secret())
            .await
            .is_err()
    );
    assert!(tokens.authenticate(unknown.expose_secret()).await.is_err());
    assert_eq!(store.lookups() - before, 0, "both remembered");

    // Past the negative TTL (and within the TTL), both go to the store again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = store.lookups();
    assert!(
        tokens
            .authenticate(revoked.token.expose_secret())
            .await
            .is_err()
    );
    let for_revoked = store.lookups() - before;
    let before = store.lookups();
    assert!(tokens.authenticate(unknown.expose_secret()).await.is_err());
    let for_unknown = store.lookups() - before;
    assert_eq!(
        (for_revoked, for_unknown),
        (1, 1),
        "store lookups past the negative TTL: revoked token {for_revoked}, unknown token \
         {for_unknown}"
    );
}

/// A successful release of a seat (204) was audited as a denial by the manager
/// (`token.release` / `deny`), so anyone reading the log for denials saw false alarms and
/// anyone looking for the releases that happened found none marked `allow`. Both events of
/// a release (the management API's and the manager's) now say `allow`.
#[tokio::test]
async fn a_successful_release_is_audited_as_allowed() {
    let seat = TokenKind::new("seat", "seat")
        .unwrap()
        .with_binding("x-machine-id")
        .unwrap();
    let sink = MemoryAuditSink::new();
    let audit = AuditLog::spawn(sink.clone(), 1_000);
    let tokens = Tokens::builder(keygate::MemoryStore::new())
        .kind(seat)
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
    let issued = tokens
        .issue(NewToken::new(ADMIN, "render-node").kind("seat"))
        .await
        .unwrap();
    // Bind the seat to a machine.
    let mut headers = http::HeaderMap::new();
    headers.insert("x-machine-id", "machine-a".parse().unwrap());
    tokens
        .authenticate_request(issued.token.expose_secret(), None, &headers)
        .await
        .unwrap();

    let app = Management::new(tokens.clone(), accounts)
        .with_audit(audit.clone())
        .router();
    let mut req = request(
        Method::POST,
        &format!("/tokens/{}/release", issued.record.id),
        &basic(ADMIN, PASSWORD),
    );
    req.extensions_mut()
        .insert(ConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
    let res = Answer::read(app.oneshot(req).await.unwrap()).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    let record = tokens.get(ADMIN, issued.record.id).await.unwrap();
    assert_eq!(record.extras().bound_to, None, "the seat is free");

    audit.shutdown().await;
    let releases: Vec<_> = sink
        .events()
        .into_iter()
        .filter(|e| e.event == "token.release")
        .collect();
    assert_eq!(releases.len(), 2, "{releases:?}");
    for e in &releases {
        assert_eq!(
            e.rbac_decision,
            Decision::Allow,
            "a 204 release audited as {:?} (reason {:?}, status {})",
            e.rbac_decision,
            e.reason,
            e.status_code
        );
        assert_eq!(e.api_token_id, Some(issued.record.id));
        assert_eq!(e.owner.as_deref(), Some(ADMIN));
    }
}

/// Filling the disk through the audit trail: every request is audited, one row in the
/// database (kept 90 days by default) and one line in the audit file, and a request without
/// credentials is never throttled, nor is a client over its failure budget kept from
/// adding a row per 429. One address without any credentials, or with a garbage token,
/// adds rows as fast as it can send requests. Asked of the trail: what a single address
/// adds once it is refused is bounded by its denial budget (60 a minute by default, all
/// at once), the rest is shed and counted, and one `audit.shed` row says how many once
/// the address is recorded again.
#[tokio::test]
async fn one_address_cannot_grow_the_audit_trail_without_bound() {
    let s = Server::start().await;
    let attacker = "198.51.100.66:4000";
    let from_attacker = |e: &Value| e["client_ip"] == "198.51.100.66";
    let hits = 300;
    for i in 0..hits {
        let mut req = Request::get("/api/v1/apps");
        if i % 2 == 0 {
            req = req.header(http::header::AUTHORIZATION, "Bearer pat_garbage");
        }
        let a = s
            .send_from(attacker, req.body(Body::empty()).unwrap())
            .await;
        assert!(a.status.is_client_error(), "{}", a.status);
    }
    let budget = u64::from(keygate::rate_limit::DEFAULT_AUDIT_BUDGET);
    let shed = s.app.audit.shed();
    assert!(
        shed >= hits - budget,
        "{hits} refusals from one address, {shed} shed"
    );
    // Every request was either written or shed.
    let kept = (hits - shed) as usize;
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = audited(&s, from_attacker).await;
        if rows.len() >= kept {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rows.len(), kept, "rows written for the address");
    assert!(
        rows.len() as u64 <= budget + 1,
        "{} requests from one address wrote {} audit rows",
        hits,
        rows.len()
    );
    // The metric counts them.
    let metrics = s
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(metrics.status, StatusCode::OK);
    let counted: u64 = metrics
        .text
        .lines()
        .find_map(|l| l.strip_prefix("keygate_audit_shed_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64);
    assert!(
        counted >= shed,
        "keygate_audit_shed_total {counted} < {shed}"
    );
    // Once a second of budget is back, the next refusal is kept, preceded by one row
    // that says how many were shed (and names no token).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let a = s
        .send_from(
            attacker,
            Request::get("/api/v1/apps").body(Body::empty()).unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let summary = audited(&s, |e| from_attacker(e) && e["event"] == "audit.shed").await;
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert_eq!(summary[0]["reason"], format!("shed:{shed}"));
    assert_eq!(summary[0]["rbac_decision"], "deny");
    assert!(summary[0]["api_token_id"].is_null() && summary[0]["owner"].is_null());
}

/// While one address floods and is shed, another address's refusals are still written,
/// and so is every request a valid token was allowed, from the flooding address too.
#[tokio::test]
async fn a_flooding_address_does_not_starve_another_of_its_audit_rows() {
    let s = Server::start().await;
    let token = s.create(json!({ "name": "deploy" })).await;
    let attacker = "198.51.100.67:4000";
    for _ in 0..200 {
        let a = s
            .send_from(
                attacker,
                Request::get("/api/v1/apps").body(Body::empty()).unwrap(),
            )
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    assert!(s.app.audit.shed() > 0, "the flood was not shed");
    let neighbour = "203.0.113.5:4000";
    for _ in 0..5 {
        let a = s
            .send_from(
                neighbour,
                Request::get("/api/v1/apps").body(Body::empty()).unwrap(),
            )
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    // A valid token used from the flooding address: allowed, and audited every time.
    for _ in 0..3 {
        let a = s
            .send_from(
                attacker,
                request(Method::GET, "/api/v1/apps", &token.bearer()),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    }
    let mut neighbour_rows = 0;
    let mut allowed_rows = 0;
    for _ in 0..100 {
        neighbour_rows = audited(&s, |e| e["client_ip"] == "203.0.113.5").await.len();
        allowed_rows = audited(&s, |e| {
            e["client_ip"] == "198.51.100.67" && e["rbac_decision"] == "allow"
        })
        .await
        .len();
        if neighbour_rows >= 5 && allowed_rows >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(neighbour_rows, 5, "the other address's refusals");
    assert_eq!(allowed_rows, 3, "the valid token's requests");
}
