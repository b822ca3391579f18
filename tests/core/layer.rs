//! `AuthLayer` through the public API, driven with `tower::ServiceExt::oneshot` (no ports):
//! every row of the response table, the verification path, revocation, rotation, expiry and
//! the batched last-used updates.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{TestStore, bearer, body_string, echo, get, req};
use http::{Method, StatusCode, header};
use keygate::clock::{Clock, ManualClock};
use keygate::{
    AuthLayer, NewToken, Permissions, RejectionKind, RequirePermissionLayer, Roles, TokenKind,
    Tokens,
};
use tower::{Layer, ServiceExt};

fn clock() -> ManualClock {
    ManualClock::new(time::macros::datetime!(2026-06-01 12:00 UTC))
}

fn manager(store: &TestStore, clock: &ManualClock) -> Tokens {
    Tokens::builder(store.clone())
        .kind(TokenKind::pat())
        .kind(TokenKind::new("gateway", "rgw").unwrap())
        .roles(
            Roles::new()
                .with_role("admin", ["*"])
                .unwrap()
                .with_role("viewer", ["things:read"])
                .unwrap(),
        )
        .clock(clock.clone())
        .build()
        .unwrap()
}

async fn status_of<S, B>(svc: &S, token: &keygate::RawToken) -> StatusCode
where
    S: tower::Service<
            http::Request<http_body_util::Full<bytes::Bytes>>,
            Response = http::Response<B>,
        > + Clone,
    S::Error: std::fmt::Debug,
{
    svc.clone()
        .oneshot(get(Some(&bearer(token))))
        .await
        .expect("infallible")
        .status()
}

const INVALID: &str = r#"{"error":"Invalid API token","code":"invalid_token"}"#;

#[tokio::test]
async fn a_valid_token_reaches_the_handler_with_its_identity() {
    let store = TestStore::default();
    let tokens = manager(&store, &clock());
    let t = tokens
        .issue(NewToken::new("alice", "laptop").role("viewer"))
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = AuthLayer::new(tokens).layer(echo(calls.clone()));
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let auth = format!("{scheme} {}", t.token.expose_secret());
        let res = svc.clone().oneshot(get(Some(&auth))).await.unwrap();
        let (status, _, body) = body_string(res).await;
        assert_eq!(status, StatusCode::OK, "scheme {scheme}");
        assert_eq!(body, "alice");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn no_credentials_get_401_missing_token_with_a_bare_challenge() {
    let store = TestStore::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = AuthLayer::new(manager(&store, &clock())).layer(echo(calls.clone()));
    for auth in [
        None,
        Some("Basic YWxpY2U6cHc="),
        Some("Digest username=\"a\""),
    ] {
        let (status, headers, body) =
            body_string(svc.clone().oneshot(get(auth)).await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(
            body,
            r#"{"error":"Missing API token","code":"missing_token"}"#
        );
        assert_eq!(headers[header::WWW_AUTHENTICATE], r#"Bearer realm="api""#);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(store.lookups(), 0);
}

#[tokio::test]
async fn malformed_headers_get_400_invalid_request_without_a_lookup() {
    let store = TestStore::default();
    let tokens = manager(&store, &clock());
    let t = tokens.issue(NewToken::new("alice", "a")).await.unwrap();
    let svc = AuthLayer::new(tokens).layer(echo(Arc::default()));
    let tok = t.token.expose_secret();
    for auth in [
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        format!("Bearer {tok} x"),
        format!("Bearer {tok},Bearer {tok}"),
        format!("Bearer\t{tok}"),
        format!("Bearer \"{tok}\""),
        format!("Bearer {}", "a".repeat(5000)),
    ] {
        let (status, headers, body) =
            body_string(svc.clone().oneshot(get(Some(&auth))).await.unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{auth:.40}");
        assert_eq!(
            headers[header::WWW_AUTHENTICATE],
            r#"Bearer error="invalid_request""#
        );
        assert!(body.contains(r#""code":"invalid_request""#), "{body}");
    }
    // Two Authorization headers, valid first or second: never first-wins.
    for pair in [
        [bearer(&t.token), "Bearer x".into()],
        ["Bearer x".into(), bearer(&t.token)],
    ] {
        let mut r = get(None);
        for v in &pair {
            r.headers_mut()
                .append(header::AUTHORIZATION, v.parse().unwrap());
        }
        let res = svc.clone().oneshot(r).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            res.extensions().get::<RejectionKind>(),
            Some(&RejectionKind::InvalidRequest)
        );
    }
    // Non-ASCII bytes in the header.
    let mut r = get(None);
    r.headers_mut().insert(
        header::AUTHORIZATION,
        http::HeaderValue::from_bytes(b"Bearer pat_\xff\xfe").unwrap(),
    );
    assert_eq!(
        svc.clone().oneshot(r).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        store.lookups(),
        0,
        "malformed headers never reach the store"
    );
}

#[tokio::test]
async fn garbage_and_typos_get_401_without_a_store_lookup() {
    let store = TestStore::default();
    let tokens = manager(&store, &clock());
    let t = tokens.issue(NewToken::new("alice", "a")).await.unwrap();
    let svc = AuthLayer::new(tokens).layer(echo(Arc::default()));
    let tok = t.token.expose_secret().to_owned();
    let mut typo = tok.clone();
    let c = if typo.as_bytes()[10] == b'A' {
        "B"
    } else {
        "A"
    };
    typo.replace_range(10..11, c);
    for bad in [
        "hello".to_owned(),
        typo,
        format!("{tok}x"),
        tok[..tok.len() - 1].to_owned(),
        tok.replace("pat_", "xyz_"),
        "a".repeat(200),
    ] {
        let (status, headers, body) = body_string(
            svc.clone()
                .oneshot(get(Some(&format!("Bearer {bad}"))))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad:.20}");
        assert_eq!(body, INVALID);
        assert_eq!(
            headers[header::WWW_AUTHENTICATE],
            r#"Bearer error="invalid_token""#
        );
    }
    assert_eq!(
        store.lookups(),
        0,
        "the checksum stops garbage before the store"
    );
}

#[tokio::test]
async fn unknown_revoked_expired_and_wrong_kind_tokens_get_the_same_401() {
    let store = TestStore::default();
    let clock = clock();
    let tokens = manager(&store, &clock);
    let unknown = TokenKind::pat().generate();
    let revoked = tokens.issue(NewToken::new("alice", "r")).await.unwrap();
    tokens.revoke("alice", revoked.record.id).await.unwrap();
    let expiring = tokens
        .issue(NewToken::new("alice", "e").expires_in(Duration::from_secs(60)))
        .await
        .unwrap();
    let gateway = tokens
        .issue(NewToken::new("alice", "g").kind("gateway"))
        .await
        .unwrap();
    let svc = AuthLayer::new(tokens)
        .accept_kinds(["pat"])
        .unwrap()
        .layer(echo(Arc::default()));

    let ok = svc
        .clone()
        .oneshot(get(Some(&bearer(&expiring.token))))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK, "valid until it expires");
    clock.advance(Duration::from_secs(60));

    let cases = [
        (&unknown, RejectionKind::UnknownToken),
        (&revoked.token, RejectionKind::Revoked),
        (&expiring.token, RejectionKind::Expired),
        (&gateway.token, RejectionKind::WrongKind),
    ];
    let mut seen = Vec::new();
    for (token, kind) in cases {
        let res = svc
            .clone()
            .oneshot(get(Some(&bearer(token))))
            .await
            .unwrap();
        assert_eq!(res.extensions().get::<RejectionKind>(), Some(&kind));
        let (status, headers, body) = body_string(res).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind:?}");
        seen.push((headers[header::WWW_AUTHENTICATE].clone(), body));
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "the causes must be indistinguishable from outside: {seen:?}"
    );
    // Every well-formed token was looked up (the same path), the valid one included.
    assert_eq!(store.lookups(), 5);
}

#[tokio::test]
async fn kinds_are_not_interchangeable() {
    let store = TestStore::default();
    let tokens = manager(&store, &clock());
    let pat = tokens.issue(NewToken::new("alice", "p")).await.unwrap();
    let rgw = tokens
        .issue(NewToken::new("alice", "g").kind("gateway"))
        .await
        .unwrap();
    let only_rgw = AuthLayer::new(tokens.clone())
        .accept_kinds(["gateway"])
        .unwrap()
        .layer(echo(Arc::default()));
    let only_pat = AuthLayer::new(tokens.clone())
        .accept_kinds(["pat"])
        .unwrap()
        .layer(echo(Arc::default()));
    assert_eq!(status_of(&only_rgw, &rgw.token).await, StatusCode::OK);
    assert_eq!(
        status_of(&only_rgw, &pat.token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_of(&only_pat, &pat.token).await, StatusCode::OK);
    assert_eq!(
        status_of(&only_pat, &rgw.token).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(AuthLayer::new(tokens).accept_kinds(["nope"]).is_err());
    assert!(rgw.token.expose_secret().starts_with("rgw_"));
}

#[tokio::test]
async fn revocation_takes_effect_on_the_next_request() {
    let store = TestStore::default();
    let tokens = manager(&store, &clock());
    let t = tokens.issue(NewToken::new("alice", "a")).await.unwrap();
    let svc = AuthLayer::new(tokens.clone()).layer(echo(Arc::default()));
    let auth = bearer(&t.token);
    assert_eq!(
        svc.clone()
            .oneshot(get(Some(&auth)))
            .await
            .unwrap()
            .status(),
        200
    );
    tokens.revoke("alice", t.record.id).await.unwrap();
    assert_eq!(
        svc.clone()
            .oneshot(get(Some(&auth)))
            .await
            .unwrap()
            .status(),
        401
    );
    // Someone else cannot revoke, and revoking twice is "not found".
    let other = tokens.issue(NewToken::new("bob", "b")).await.unwrap();
    assert!(tokens.revoke("alice", other.record.id).await.is_err());
    assert!(tokens.revoke("alice", t.record.id).await.is_err());
    assert_eq!(
        svc.oneshot(get(Some(&bearer(&other.token))))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn rotation_without_grace_kills_the_old_token_at_once() {
    let store = TestStore::default();
    let tokens = manager(&store, &clock());
    let old = tokens
        .issue(NewToken::new("alice", "deploy").role("viewer"))
        .await
        .unwrap();
    let new = tokens.rotate("alice", old.record.id, None).await.unwrap();
    assert_eq!(new.record.name, "deploy");
    assert_eq!(new.record.permissions, old.record.permissions);
    assert_ne!(new.token.expose_secret(), old.token.expose_secret());
    let svc = AuthLayer::new(tokens.clone()).layer(echo(Arc::default()));
    assert_eq!(
        svc.clone()
            .oneshot(get(Some(&bearer(&old.token))))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        svc.oneshot(get(Some(&bearer(&new.token))))
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        tokens.rotate("alice", old.record.id, None).await.is_err(),
        "a replaced token cannot be rotated again"
    );
}

#[tokio::test]
async fn rotation_with_grace_keeps_the_old_token_until_the_grace_ends() {
    let store = TestStore::default();
    let clock = clock();
    let tokens = manager(&store, &clock);
    let old = tokens
        .issue(NewToken::new("alice", "deploy"))
        .await
        .unwrap();
    let new = tokens
        .rotate("alice", old.record.id, Some(Duration::from_secs(300)))
        .await
        .unwrap();
    let svc = AuthLayer::new(tokens).layer(echo(Arc::default()));
    let status = |t: &keygate::RawToken| {
        let r = get(Some(&bearer(t)));
        let svc = svc.clone();
        async move { svc.oneshot(r).await.unwrap().status() }
    };
    assert_eq!(status(&old.token).await, 200);
    assert_eq!(status(&new.token).await, 200);
    clock.advance(Duration::from_secs(299));
    assert_eq!(status(&old.token).await, 200, "still inside the grace");
    clock.advance(Duration::from_secs(1));
    assert_eq!(status(&old.token).await, 401, "the grace is over");
    assert_eq!(status(&new.token).await, 200);
}

#[tokio::test]
async fn expiry_and_purge_follow_the_injected_clock() {
    let store = TestStore::default();
    let clock = clock();
    let tokens = manager(&store, &clock);
    let short = tokens
        .issue(NewToken::new("alice", "short").expires_in(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(
        short.record.expires_at,
        Some(time::macros::datetime!(2026-06-01 13:00 UTC)),
        "expires_in becomes an absolute UTC time"
    );
    let forever = tokens
        .issue(NewToken::new("alice", "forever"))
        .await
        .unwrap();
    let revoked = tokens
        .issue(NewToken::new("alice", "revoked"))
        .await
        .unwrap();
    tokens.revoke("alice", revoked.record.id).await.unwrap();
    assert_eq!(
        tokens.purge().await.unwrap(),
        1,
        "only the revoked one is dead yet"
    );
    clock.advance(Duration::from_secs(3600));
    assert!(
        tokens
            .authenticate(short.token.expose_secret())
            .await
            .is_err()
    );
    assert_eq!(tokens.purge().await.unwrap(), 1);
    let left: Vec<_> = tokens
        .list("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(left, ["forever"]);
    assert!(
        tokens
            .authenticate(forever.token.expose_secret())
            .await
            .is_ok()
    );
    // The name of an expired token is free again.
    tokens.issue(NewToken::new("alice", "short")).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_background_task_purges_on_its_interval() {
    let store = TestStore::default();
    let clock = clock();
    let tokens = manager(&store, &clock);
    tokens
        .issue(NewToken::new("alice", "s").expires_in(Duration::from_secs(10)))
        .await
        .unwrap();
    let task = tokens.spawn_maintenance(Duration::from_secs(5), Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(store.inner.len(), 1, "not expired at the first purge");
    clock.advance(Duration::from_secs(11));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(store.inner.len(), 1, "the next purge is due at 60 s");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        store.inner.is_empty(),
        "the purge task removed the expired token"
    );
    task.shutdown().await;
}

#[tokio::test]
async fn permissions_are_enforced_with_403_insufficient_scope() {
    let store = TestStore::default();
    let tokens = manager(&store, &clock());
    let viewer = tokens
        .issue(NewToken::new("alice", "v").role("viewer"))
        .await
        .unwrap();
    let admin = tokens
        .issue(NewToken::new("alice", "a").role("admin"))
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let strict = AuthLayer::new(tokens.clone())
        .require("things:write")
        .layer(echo(calls.clone()));
    let res = strict
        .clone()
        .oneshot(get(Some(&bearer(&viewer.token))))
        .await
        .unwrap();
    let (status, headers, body) = body_string(res).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        headers[header::WWW_AUTHENTICATE],
        r#"Bearer error="insufficient_scope", scope="things:write""#
    );
    assert_eq!(
        body,
        r#"{"error":"Missing permission: things:write","code":"insufficient_scope"}"#
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler never runs");
    assert_eq!(
        strict
            .oneshot(get(Some(&bearer(&admin.token))))
            .await
            .unwrap()
            .status(),
        200
    );

    // Tokencraft's rule: reads need any valid token, writes need the permission.
    let rw = AuthLayer::new(tokens)
        .read_write("things:write")
        .layer(echo(Arc::default()));
    for (method, token, want) in [
        (Method::GET, &viewer.token, 200),
        (Method::HEAD, &viewer.token, 200),
        (Method::POST, &viewer.token, 403),
        (Method::DELETE, &viewer.token, 403),
        (Method::PUT, &admin.token, 200),
    ] {
        let res = rw
            .clone()
            .oneshot(req(method.clone(), Some(&bearer(token))))
            .await
            .unwrap();
        assert_eq!(res.status(), want, "{method}");
    }
}

#[tokio::test]
async fn require_permission_layer_guards_one_route() {
    let store = TestStore::default();
    let tokens = manager(&store, &clock());
    let viewer = tokens
        .issue(NewToken::new("alice", "v").role("viewer"))
        .await
        .unwrap();
    let guarded = RequirePermissionLayer::new("things:write").layer(echo(Arc::default()));
    let svc = AuthLayer::new(tokens).layer(guarded.clone());
    let res = svc
        .oneshot(get(Some(&bearer(&viewer.token))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Outside the auth layer there is no identity: 500 naming the layer, never a pass.
    assert_eq!(
        guarded.oneshot(get(None)).await.unwrap().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn a_store_outage_fails_closed_with_503() {
    let store = TestStore::default();
    let tokens = manager(&store, &clock());
    let t = tokens.issue(NewToken::new("alice", "a")).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = AuthLayer::new(tokens).layer(echo(calls.clone()));
    store.set_down(true);
    let res = svc
        .clone()
        .oneshot(get(Some(&bearer(&t.token))))
        .await
        .unwrap();
    let (status, headers, body) = body_string(res).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        r#"{"error":"Token store unavailable","code":"store_unavailable"}"#
    );
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing is let through");
    store.set_down(false);
    assert_eq!(
        svc.oneshot(get(Some(&bearer(&t.token))))
            .await
            .unwrap()
            .status(),
        200,
        "service resumes when the store is back"
    );
}

#[tokio::test]
async fn optional_mode_lets_anonymous_requests_through_but_not_bad_tokens() {
    let store = TestStore::default();
    let tokens = manager(&store, &clock());
    let svc = AuthLayer::new(tokens)
        .optional()
        .layer(echo(Arc::default()));
    let (status, _, body) = body_string(svc.clone().oneshot(get(None)).await.unwrap()).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "anonymous"));
    let bad = format!("Bearer {}", TokenKind::pat().generate().expose_secret());
    assert_eq!(svc.oneshot(get(Some(&bad))).await.unwrap().status(), 401);
}

#[tokio::test]
async fn last_used_is_batched_not_written_per_request() {
    let store = TestStore::default();
    let clock = clock();
    let tokens = manager(&store, &clock);
    let t = tokens.issue(NewToken::new("alice", "a")).await.unwrap();
    let svc = AuthLayer::new(tokens.clone()).layer(echo(Arc::default()));
    for _ in 0..50 {
        assert_eq!(
            svc.clone()
                .oneshot(get(Some(&bearer(&t.token))))
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(
        store.use_writes.load(Ordering::SeqCst),
        0,
        "no write per request"
    );
    assert_eq!(tokens.pending_usage(), 1, "50 uses coalesce into one entry");
    assert_eq!(tokens.flush_usage().await.unwrap(), 1);
    assert_eq!(store.use_writes.load(Ordering::SeqCst), 1);
    let rec = tokens.get("alice", t.record.id).await.unwrap();
    assert_eq!(rec.last_used_at, Some(clock.now()));
    // Within the granularity, further uses queue nothing.
    svc.clone()
        .oneshot(get(Some(&bearer(&t.token))))
        .await
        .unwrap();
    assert_eq!(tokens.pending_usage(), 0);
    // A failed flush keeps the batch for the next one.
    clock.advance(Duration::from_secs(120));
    svc.oneshot(get(Some(&bearer(&t.token)))).await.unwrap();
    store.set_down(true);
    assert!(tokens.flush_usage().await.is_err());
    assert_eq!(tokens.pending_usage(), 1);
    store.set_down(false);
    assert_eq!(tokens.flush_usage().await.unwrap(), 1);
}

#[tokio::test]
async fn issue_validates_its_input() {
    let store = TestStore::default();
    let tokens = manager(&store, &clock());
    for bad in ["", "   ", &"x".repeat(101), "tab\there", "nl\n"] {
        assert!(
            matches!(
                tokens.issue(NewToken::new("alice", bad)).await,
                Err(keygate::TokenError::InvalidName(_))
            ),
            "{bad:?}"
        );
    }
    assert!(
        tokens
            .issue(NewToken::new("alice", "x".repeat(100)))
            .await
            .is_ok()
    );
    assert!(
        tokens
            .issue(NewToken::new("alice", "ünïcödé ✓"))
            .await
            .is_ok()
    );
    assert!(matches!(
        tokens
            .issue(NewToken::new("alice", "d").description(""))
            .await,
        Err(keygate::TokenError::InvalidDescription(_))
    ));
    assert!(matches!(
        tokens.issue(NewToken::new("alice", "r").role("nope")).await,
        Err(keygate::TokenError::UnknownRole(_))
    ));
    assert!(matches!(
        tokens
            .issue(
                NewToken::new("alice", "p")
                    .role("viewer")
                    .permissions(Permissions::parse(["things:write"]).unwrap())
            )
            .await,
        Err(keygate::TokenError::PermissionsExceedRole)
    ));
    assert!(matches!(
        tokens
            .issue(NewToken::new("alice", "z").expires_in(Duration::ZERO))
            .await,
        Err(keygate::TokenError::InvalidExpiry(_))
    ));
    assert!(matches!(
        tokens.issue(NewToken::new("alice", "d").kind("nope")).await,
        Err(keygate::TokenError::UnknownKind(_))
    ));
    tokens.issue(NewToken::new("alice", "dup")).await.unwrap();
    assert!(matches!(
        tokens.issue(NewToken::new("alice", "dup")).await,
        Err(keygate::TokenError::NameTaken)
    ));
    // Unnamed tokens get unique names.
    let a = tokens.issue(NewToken::unnamed("bob")).await.unwrap();
    let b = tokens.issue(NewToken::unnamed("bob")).await.unwrap();
    assert_eq!(
        (a.record.name.as_str(), b.record.name.as_str()),
        ("token-1", "token-2")
    );
}

#[tokio::test]
async fn the_owner_limit_defaults_to_100_and_kinds_can_cap_themselves() {
    let store = TestStore::default();
    let tokens = Tokens::builder(store.clone())
        .kind(TokenKind::pat())
        .kind(
            TokenKind::new("licence", "lic")
                .unwrap()
                .with_max_live_per_owner(Some(2))
                .with_max_lifetime(Duration::from_secs(90 * 86400)),
        )
        .build()
        .unwrap();
    for i in 0..100 {
        tokens
            .issue(NewToken::new("alice", format!("t{i}")))
            .await
            .unwrap();
    }
    assert!(matches!(
        tokens.issue(NewToken::new("alice", "t100")).await,
        Err(keygate::TokenError::LimitReached)
    ));
    let lic = |n: &str| {
        NewToken::new("alice", n)
            .kind("licence")
            .expires_in(Duration::from_secs(86400))
    };
    tokens.issue(lic("seat-1")).await.unwrap();
    tokens.issue(lic("seat-2")).await.unwrap();
    assert!(matches!(
        tokens.issue(lic("seat-3")).await,
        Err(keygate::TokenError::LimitReached)
    ));
    assert!(matches!(
        tokens
            .issue(NewToken::new("bob", "long").kind("licence"))
            .await,
        Err(keygate::TokenError::InvalidExpiry(_))
    ));
}

#[tokio::test]
async fn the_in_memory_fast_path_gives_the_same_answers() {
    // MemoryStore answers without I/O, so the layer decides without a boxed future; the
    // answers must be those of the async path tested above.
    let tokens = Tokens::builder(keygate::MemoryStore::new())
        .kind(TokenKind::pat())
        .kind(TokenKind::new("gateway", "rgw").unwrap())
        .roles(Roles::new().with_role("viewer", ["things:read"]).unwrap())
        .build()
        .unwrap();
    let ok = tokens
        .issue(NewToken::new("alice", "a").role("viewer"))
        .await
        .unwrap();
    let revoked = tokens.issue(NewToken::new("alice", "r")).await.unwrap();
    tokens.revoke("alice", revoked.record.id).await.unwrap();
    let gateway = tokens
        .issue(NewToken::new("alice", "g").kind("gateway"))
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = AuthLayer::new(tokens)
        .accept_kinds(["pat"])
        .unwrap()
        .read_write("things:write")
        .layer(echo(calls.clone()));
    let unknown = TokenKind::pat().generate();
    for (method, token, want, kind) in [
        (Method::GET, &ok.token, 200, None),
        (
            Method::POST,
            &ok.token,
            403,
            Some(RejectionKind::InsufficientScope),
        ),
        (
            Method::GET,
            &revoked.token,
            401,
            Some(RejectionKind::Revoked),
        ),
        (
            Method::GET,
            &unknown,
            401,
            Some(RejectionKind::UnknownToken),
        ),
        (
            Method::GET,
            &gateway.token,
            401,
            Some(RejectionKind::WrongKind),
        ),
    ] {
        let res = svc
            .clone()
            .oneshot(req(method, Some(&bearer(token))))
            .await
            .unwrap();
        assert_eq!(res.status(), want);
        assert_eq!(res.extensions().get::<RejectionKind>().copied(), kind);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A clock whose fast reading lags its precise one, like the coarse system clock.
#[derive(Clone)]
struct Lagging(ManualClock);

impl Clock for Lagging {
    fn now(&self) -> time::OffsetDateTime {
        self.0.now()
    }
    fn unix_nanos(&self) -> i128 {
        self.0.now().unix_timestamp_nanos() - 5_000_000
    }
}

#[tokio::test]
async fn a_lagging_fast_clock_never_keeps_an_expired_token_alive() {
    let clock = clock();
    let tokens = Tokens::builder(TestStore::default())
        .clock(Lagging(clock.clone()))
        .build()
        .unwrap();
    let t = tokens
        .issue(NewToken::new("alice", "e").expires_in(Duration::from_secs(60)))
        .await
        .unwrap();
    let svc = AuthLayer::new(tokens).layer(echo(Arc::default()));
    let call = || svc.clone().oneshot(get(Some(&bearer(&t.token))));
    clock.advance(Duration::from_millis(59_999));
    assert_eq!(call().await.unwrap().status(), StatusCode::OK, "1 ms left");
    // The fast reading says 5 ms before the expiry; the precise one says it has come.
    clock.advance(Duration::from_millis(1));
    let res = call().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.extensions().get::<RejectionKind>(),
        Some(&RejectionKind::Expired)
    );
}

#[tokio::test]
async fn a_lagging_fast_clock_never_skips_a_use_past_the_usage_window() {
    let clock = clock();
    let tokens = Tokens::builder(TestStore::default())
        .clock(Lagging(clock.clone()))
        .usage_granularity(Duration::from_secs(60))
        .build()
        .unwrap();
    let t = tokens.issue(NewToken::new("alice", "u")).await.unwrap();
    let svc = AuthLayer::new(tokens.clone()).layer(echo(Arc::default()));
    let call = || svc.clone().oneshot(get(Some(&bearer(&t.token))));
    let last_used = || async {
        tokens.flush_usage().await.unwrap();
        tokens
            .get("alice", t.record.id)
            .await
            .unwrap()
            .last_used_at
            .expect("a use is recorded")
    };
    assert_eq!(call().await.unwrap().status(), StatusCode::OK);
    let first = last_used().await;
    // 2 ms past the window by the precise clock, 3 ms short of it by the fast reading: the
    // use is still recorded.
    let past = first + time::Duration::seconds(60) + time::Duration::milliseconds(2);
    clock.advance(Duration::try_from(past - tokens.now()).unwrap());
    assert_eq!(call().await.unwrap().status(), StatusCode::OK);
    let second = last_used().await;
    assert!(second > first, "use at {past} not recorded: still {second}");
    // Well inside the next window, uses are coalesced.
    clock.advance(Duration::from_secs(1));
    assert_eq!(call().await.unwrap().status(), StatusCode::OK);
    assert_eq!(last_used().await, second);
}

/// A renderer of plain-text refusals that tags its responses with an extension of its own.
struct PlainText;

#[derive(Clone, Debug, PartialEq)]
struct RenderedBy(&'static str);

impl keygate::RenderRejection for PlainText {
    fn render(&self, rejection: &keygate::Rejection) -> http::Response<bytes::Bytes> {
        let mut res = http::Response::new(bytes::Bytes::from(format!("no: {rejection}")));
        *res.status_mut() = rejection.kind().status();
        res.extensions_mut().insert(RenderedBy("plain"));
        res
    }
}

#[tokio::test]
async fn a_custom_renderer_shapes_refusals_and_the_layer_still_tags_their_kind() {
    let store = TestStore::default();
    let tokens = manager(&store, &clock());
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = AuthLayer::new(tokens)
        .with_renderer(PlainText)
        .layer(echo(calls.clone()));
    let unknown = TokenKind::pat().generate();
    for (auth, kind, status) in [
        (None, RejectionKind::MissingToken, StatusCode::UNAUTHORIZED),
        (
            Some(bearer(&unknown)),
            RejectionKind::UnknownToken,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Some("Bearer a b".to_owned()),
            RejectionKind::InvalidRequest,
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let res = svc.clone().oneshot(get(auth.as_deref())).await.unwrap();
        assert_eq!(res.extensions().get::<RejectionKind>(), Some(&kind));
        assert_eq!(
            res.extensions().get::<RenderedBy>(),
            Some(&RenderedBy("plain")),
            "the renderer's own extensions are kept"
        );
        let (got, _, body) = body_string(res).await;
        assert_eq!(got, status, "{kind:?}");
        assert_eq!(body, format!("no: {}", keygate::Rejection::new(kind)));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}
