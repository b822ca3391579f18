//! The verification pipeline was written once for every path (the synchronous fast path of a
//! store that answers from memory, the asynchronous path of a store that must be asked, and
//! the path with policies: failure limits, audit, a permission resolver). Attack: find a
//! request that one path admits and another refuses, or refuses with another answer. Every
//! case below is sent through every combination, and each must give the same status and
//! code as the table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ConnectInfo;
use http::{Method, StatusCode};
use keygate::audit::{AuditLog, MemoryAuditSink};
use keygate::clock::ManualClock;
use keygate::permissions::PermissionResolver;
use keygate::rate_limit::{FailureLimits, Rate, RateLimits};
use keygate::{AuthLayer, MemoryStore, NewToken, Permissions, StoreError, TokenKind, Tokens};
use time::OffsetDateTime;
use tower::{Layer, ServiceExt};

use crate::common::{TestStore, body_string, echo, req};

/// Every owner holds everything: the resolver changes no answer, only the path.
struct Everything;

#[async_trait]
impl PermissionResolver for Everything {
    async fn owner_permissions(&self, _owner: &str) -> Result<Option<Permissions>, StoreError> {
        Ok(Some(Permissions::parse(["*"]).unwrap()))
    }
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    /// Answers lookups from memory: no future at all on the fast path.
    Memory,
    /// Must be asked (no `find_by_hash_now`): the asynchronous path.
    Asked,
    /// A cache over a store that must be asked: a miss takes the asynchronous path, a hit
    /// the fast one.
    Cached,
}

/// One request: its name, method, `Authorization`, other headers and socket peer.
type Case<'a> = (
    &'a str,
    Method,
    Option<String>,
    &'a [(&'a str, &'a str)],
    &'a str,
);

#[derive(Clone, Copy, Debug)]
enum Policies {
    None,
    Audit,
    Limits,
    Resolver,
}

async fn answers(backend: Backend, policies: Policies) -> Vec<(String, StatusCode, String)> {
    let clock = ManualClock::new(OffsetDateTime::now_utc());
    let seat = TokenKind::new("seat", "seat")
        .unwrap()
        .with_binding("x-machine-id")
        .unwrap();
    let other = TokenKind::new("gateway", "rgw").unwrap();
    let builder = match backend {
        Backend::Memory => Tokens::builder(MemoryStore::new()),
        Backend::Asked => Tokens::builder(TestStore::default()),
        Backend::Cached => Tokens::builder(keygate::store::cached::CachedStore::new(
            TestStore::default(),
        )),
    };
    let tokens = builder
        .kind(TokenKind::pat())
        .kind(seat)
        .kind(other)
        .clock(clock.clone())
        .build()
        .unwrap();
    let issue = |new: NewToken| {
        let tokens = tokens.clone();
        async move { tokens.issue(new).await.unwrap() }
    };
    let reader = issue(
        NewToken::new("alice", "reader").permissions(Permissions::parse(["things:read"]).unwrap()),
    )
    .await;
    let writer = issue(
        NewToken::new("alice", "writer").permissions(Permissions::parse(["things:write"]).unwrap()),
    )
    .await;
    let revoked = issue(NewToken::new("alice", "revoked")).await;
    tokens.revoke("alice", revoked.record.id).await.unwrap();
    let expiring =
        issue(NewToken::new("alice", "expiring").expires_in(Duration::from_secs(60))).await;
    let fenced =
        issue(NewToken::new("alice", "fenced").allowed_ips(["10.0.0.0/8".parse().unwrap()])).await;
    let seat_token = issue(NewToken::new("alice", "seat").kind("seat")).await;
    let gateway = issue(NewToken::new("alice", "gateway").kind("gateway")).await;
    let unknown = TokenKind::pat().generate();
    clock.advance(Duration::from_secs(120));

    let mut layer = AuthLayer::new(tokens.clone())
        .accept_kinds(["pat", "seat"])
        .unwrap()
        .read_write("things:write");
    layer = match policies {
        Policies::None => layer,
        Policies::Audit => layer.with_audit(AuditLog::spawn(MemoryAuditSink::new(), 1000)),
        Policies::Limits => layer
            .with_rate_limits(RateLimits::new(Rate::per_minute(1000).unwrap()))
            .with_failure_limits(FailureLimits::new(Rate::per_minute(1000).unwrap())),
        Policies::Resolver => layer.with_permission_resolver(Everything),
    };
    let svc = layer.layer(echo(Arc::new(AtomicUsize::new(0))));

    let secret = |t: &keygate::IssuedToken| format!("Bearer {}", t.token.expose_secret());
    let cases: Vec<Case> = vec![
        (
            "reader GET",
            Method::GET,
            Some(secret(&reader)),
            &[],
            "192.0.2.10:1",
        ),
        (
            "reader POST",
            Method::POST,
            Some(secret(&reader)),
            &[],
            "192.0.2.10:1",
        ),
        (
            "writer POST",
            Method::POST,
            Some(secret(&writer)),
            &[],
            "192.0.2.10:1",
        ),
        (
            "revoked",
            Method::GET,
            Some(secret(&revoked)),
            &[],
            "192.0.2.10:1",
        ),
        (
            "expired",
            Method::GET,
            Some(secret(&expiring)),
            &[],
            "192.0.2.10:1",
        ),
        (
            "wrong kind",
            Method::GET,
            Some(secret(&gateway)),
            &[],
            "192.0.2.10:1",
        ),
        (
            "unknown",
            Method::GET,
            Some(format!("Bearer {}", unknown.expose_secret())),
            &[],
            "192.0.2.10:1",
        ),
        (
            "garbage",
            Method::GET,
            Some("Bearer pat_nope".into()),
            &[],
            "192.0.2.10:1",
        ),
        (
            "bad header",
            Method::GET,
            Some("Bearer a b".into()),
            &[],
            "192.0.2.10:1",
        ),
        ("missing", Method::GET, None, &[], "192.0.2.10:1"),
        (
            "fenced outside",
            Method::GET,
            Some(secret(&fenced)),
            &[],
            "192.0.2.10:1",
        ),
        (
            "fenced inside",
            Method::GET,
            Some(secret(&fenced)),
            &[],
            "10.1.2.3:1",
        ),
        (
            "seat bare",
            Method::GET,
            Some(secret(&seat_token)),
            &[],
            "192.0.2.10:1",
        ),
        (
            "seat machine a",
            Method::GET,
            Some(secret(&seat_token)),
            &[("x-machine-id", "machine-a")],
            "192.0.2.10:1",
        ),
        (
            "seat machine b",
            Method::GET,
            Some(secret(&seat_token)),
            &[("x-machine-id", "machine-b")],
            "192.0.2.10:1",
        ),
        (
            "seat machine a again",
            Method::GET,
            Some(secret(&seat_token)),
            &[("x-machine-id", "machine-a")],
            "192.0.2.10:1",
        ),
        (
            "seat write without permission",
            Method::POST,
            Some(secret(&seat_token)),
            &[("x-machine-id", "machine-a")],
            "192.0.2.10:1",
        ),
    ];
    let mut out = Vec::new();
    // Twice: the second round is answered from the cache where there is one.
    for (name, method, auth, headers, peer) in cases.iter().chain(&cases).cloned() {
        let mut r = req(method, auth.as_deref());
        for (k, v) in headers {
            r.headers_mut().insert(*k, v.parse().unwrap());
        }
        r.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let res = svc.clone().oneshot(r).await.unwrap();
        let (status, _, text) = body_string(res).await;
        let code = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "-".into());
        out.push((name.to_owned(), status, code));
    }
    out
}

#[tokio::test]
async fn every_path_of_the_pipeline_gives_the_same_answers() {
    let expected: &[(&str, u16, &str)] = &[
        ("reader GET", 200, "-"),
        ("reader POST", 403, "insufficient_scope"),
        ("writer POST", 200, "-"),
        ("revoked", 401, "invalid_token"),
        ("expired", 401, "invalid_token"),
        ("wrong kind", 401, "invalid_token"),
        ("unknown", 401, "invalid_token"),
        ("garbage", 401, "invalid_token"),
        ("bad header", 400, "invalid_request"),
        ("missing", 401, "missing_token"),
        ("fenced outside", 403, "ip_not_allowed"),
        ("fenced inside", 200, "-"),
        ("seat bare", 403, "binding_required"),
        ("seat machine a", 200, "-"),
        ("seat machine b", 403, "bound_elsewhere"),
        ("seat machine a again", 200, "-"),
        ("seat write without permission", 403, "insufficient_scope"),
    ];
    for backend in [Backend::Memory, Backend::Asked, Backend::Cached] {
        for policies in [
            Policies::None,
            Policies::Audit,
            Policies::Limits,
            Policies::Resolver,
        ] {
            let got = answers(backend, policies).await;
            assert_eq!(got.len(), 2 * expected.len());
            for ((name, status, code), (want_name, want_status, want_code)) in
                got.iter().zip(expected.iter().chain(expected))
            {
                assert_eq!(name, want_name);
                assert_eq!(
                    (status.as_u16(), code.as_str()),
                    (*want_status, *want_code),
                    "{backend:?} / {policies:?}: {name}"
                );
            }
        }
    }
}

/// A leaked narrow token (`things:read`) of an owner who holds everything tries a write.
/// Under a resolver it is refused: the resolver only narrows, unless the token's kind opted
/// in to widening, the one case where the owner's rights replace the token's.
#[tokio::test]
async fn a_narrow_token_does_not_gain_its_owners_rights_unless_its_kind_widens() {
    let tokens = Tokens::builder(MemoryStore::new())
        .kind(TokenKind::pat())
        .kind(
            TokenKind::new("account", "acct")
                .unwrap()
                .with_resolver_may_widen(),
        )
        .build()
        .unwrap();
    let read_only = || Permissions::parse(["things:read"]).unwrap();
    let narrow = tokens
        .issue(NewToken::new("alice", "ci").permissions(read_only()))
        .await
        .unwrap();
    let account = tokens
        .issue(
            NewToken::new("alice", "account")
                .kind("account")
                .permissions(read_only()),
        )
        .await
        .unwrap();
    let svc = AuthLayer::new(tokens)
        .require("things:write")
        .with_permission_resolver(Everything)
        .layer(echo(Arc::new(AtomicUsize::new(0))));

    let res = svc
        .clone()
        .oneshot(req(
            Method::POST,
            Some(&crate::common::bearer(&narrow.token)),
        ))
        .await
        .unwrap();
    let (status, _, body) = body_string(res).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("insufficient_scope"), "{body}");

    let res = svc
        .oneshot(req(
            Method::POST,
            Some(&crate::common::bearer(&account.token)),
        ))
        .await
        .unwrap();
    let (status, _, body) = body_string(res).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the widening kind holds the owner's rights: {body}"
    );
}
