//! Attacks on token lifetimes and budgets: rotation chains, self-raised rate limits, and
//! what a narrow bearer token may manage.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use keygate::{MemoryStore, NewToken, TokenError, TokenKind, Tokens};
use serde_json::json;

use crate::support::{Created, Server, json_request, request};

/// Rotates `current` with its own bearer token and `grace_seconds`; the new token.
async fn rotate_self(server: &Server, current: &Created, grace_seconds: u64) -> Created {
    let a = server
        .send(json_request(
            Method::POST,
            &format!("/api/v1/tokens/{}/rotate", current.id),
            &current.bearer(),
            &json!({ "grace_seconds": grace_seconds }),
        ))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let v = a.json();
    Created {
        id: v["id"].as_str().unwrap().to_owned(),
        token: v["token"].as_str().unwrap().to_owned(),
    }
}

/// `GET /api/v1/me` with `token`, from a peer of its own (so that the refusals of dead
/// tokens do not add up to the per-address failure limit).
async fn me(server: &Server, token: &Created, peer: usize) -> StatusCode {
    let peer = format!("198.51.{}.{}:40000", peer / 250, peer % 250 + 1);
    server
        .send_from(&peer, request(Method::GET, "/api/v1/me", &token.bearer()))
        .await
        .status
}

#[tokio::test]
async fn a_bearer_token_cannot_keep_itself_alive_with_a_huge_grace() {
    let server = Server::start().await;
    let token = server
        .create(json!({ "name": "writer", "permissions": ["tokens:write"] }))
        .await;
    let a = server
        .send(json_request(
            Method::POST,
            &format!("/api/v1/tokens/{}/rotate", token.id),
            &token.bearer(),
            &json!({ "grace_seconds": 3_000_000_000u64 }),
        ))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    assert_eq!(a.code(), "invalid_request");
    // One second over the default maximum (24 h) is refused too.
    let a = server
        .send(json_request(
            Method::POST,
            &format!("/api/v1/tokens/{}/rotate", token.id),
            &token.bearer(),
            &json!({ "grace_seconds": 24 * 3600 + 1 }),
        ))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    assert_eq!(
        me(&server, &token, 0).await,
        StatusCode::OK,
        "nothing changed"
    );
}

#[tokio::test]
async fn a_rotation_chain_leaves_at_most_two_live_tokens() {
    // A lineage shares one rate budget: 110 rotations in a row need more than the default
    // 100 requests a minute.
    let server = Server::with(|c| c.rate_limit = 1_000).await;
    let first = server
        .create(json!({ "name": "chain", "permissions": ["tokens:write", "tokens:read"] }))
        .await;
    let mut lineage = vec![first];
    for _ in 0..110 {
        let next = rotate_self(&server, lineage.last().unwrap(), 3600).await;
        lineage.push(next);
    }
    let last = lineage.len() - 1;
    for (i, token) in lineage.iter().enumerate() {
        let expected = if i + 2 > last {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(me(&server, token, i).await, expected, "token {i} of {last}");
    }
    // The owner's list shows the two, never more than the limit.
    let a = server
        .send(request(
            Method::GET,
            "/api/v1/tokens",
            &lineage[last].bearer(),
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json().as_array().unwrap().len(), 2, "{}", a.text);
}

#[tokio::test]
async fn a_rotation_with_grace_at_the_owner_limit_is_refused() {
    let tokens = Tokens::builder(MemoryStore::new())
        .max_tokens_per_owner(Some(2))
        .build()
        .unwrap();
    let a = tokens.issue(NewToken::new("mallory", "a")).await.unwrap();
    tokens.issue(NewToken::new("mallory", "b")).await.unwrap();
    let grace = Some(Duration::from_secs(3600));
    assert!(matches!(
        tokens.rotate("mallory", a.record.id, grace).await,
        Err(TokenError::LimitReached)
    ));
    assert!(
        tokens.authenticate(a.token.expose_secret()).await.is_ok(),
        "the refused rotation changed nothing"
    );
    // Without grace the count stays the same: allowed, and the old token dies at once.
    let next = tokens.rotate("mallory", a.record.id, None).await.unwrap();
    assert!(tokens.authenticate(a.token.expose_secret()).await.is_err());
    assert!(
        tokens
            .authenticate(next.token.expose_secret())
            .await
            .is_ok()
    );
    // A token in grace counts: with room for one, a second new token does not fit.
    let roomy = Tokens::builder(MemoryStore::new())
        .max_tokens_per_owner(Some(2))
        .build()
        .unwrap();
    let x = roomy.issue(NewToken::new("mallory", "x")).await.unwrap();
    roomy.rotate("mallory", x.record.id, grace).await.unwrap();
    assert!(matches!(
        roomy.issue(NewToken::new("mallory", "y")).await,
        Err(TokenError::LimitReached)
    ));
}

#[tokio::test]
async fn rotating_a_bound_seat_does_not_make_a_second_seat() {
    let seat = TokenKind::new("seat", "lic")
        .unwrap()
        .with_max_live_per_owner(Some(1))
        .with_binding("x-machine-id")
        .unwrap();
    let tokens = Tokens::builder(MemoryStore::new())
        .kind(seat)
        .build()
        .unwrap();
    let machine = |id: &'static str| {
        let mut h = HeaderMap::new();
        h.insert("x-machine-id", HeaderValue::from_static(id));
        h
    };
    let issued = tokens
        .issue(NewToken::new("mallory", "licence"))
        .await
        .unwrap();
    tokens
        .authenticate_request(issued.token.expose_secret(), None, &machine("m1"))
        .await
        .unwrap();
    // With grace the old seat would stay bound to m1 while the new one is released to m2.
    assert!(matches!(
        tokens
            .rotate("mallory", issued.record.id, Some(Duration::from_secs(3600)))
            .await,
        Err(TokenError::LimitReached)
    ));
    // Without grace the seat moves whole: the old token is dead, the new one stays on m1.
    let next = tokens
        .rotate("mallory", issued.record.id, None)
        .await
        .unwrap();
    assert!(
        tokens
            .authenticate_request(issued.token.expose_secret(), None, &machine("m1"))
            .await
            .is_err()
    );
    assert!(
        tokens
            .authenticate_request(next.token.expose_secret(), None, &machine("m2"))
            .await
            .is_err(),
        "the binding carried over: a second machine gets no seat"
    );
    assert!(
        tokens
            .authenticate_request(next.token.expose_secret(), None, &machine("m1"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_ended_grace_is_not_served_from_the_cache() {
    let store = keygate::store::cached::CachedStore::new(MemoryStore::new());
    let tokens = Tokens::new(store);
    let grace = Some(Duration::from_secs(3600));
    let a = tokens.issue(NewToken::new("mallory", "ci")).await.unwrap();
    let b = tokens.rotate("mallory", a.record.id, grace).await.unwrap();
    // `a` is in grace and now cached.
    assert!(tokens.authenticate(a.token.expose_secret()).await.is_ok());
    tokens.rotate("mallory", b.record.id, grace).await.unwrap();
    assert!(
        tokens.authenticate(a.token.expose_secret()).await.is_err(),
        "rotating b ends a's grace, on this instance at once"
    );
    assert!(tokens.authenticate(b.token.expose_secret()).await.is_ok());
}

#[tokio::test]
async fn a_self_set_rate_limit_cannot_lift_the_servers() {
    // A small budget: at 10 a minute one request comes back every 6 s, far longer than the
    // loop takes even on a loaded machine (at 100 a minute a refill every 0.6 s could land
    // inside it, and the first 429 came at request 102).
    let server = Server::with(|c| c.rate_limit = 10).await;
    let token = server
        .create(json!({ "name": "greedy", "rate_limit": 4_294_967_295u32 }))
        .await;
    let mut first_refusal = None;
    for i in 1..=150 {
        let a = server
            .send(request(Method::GET, "/api/v1/me", &token.bearer()))
            .await;
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(a.headers.contains_key(http::header::RETRY_AFTER));
            first_refusal = Some(i);
            break;
        }
        assert_eq!(a.status, StatusCode::OK, "request {i}: {}", a.text);
        assert_eq!(
            a.headers["ratelimit-limit"],
            server.config.rate_limit.to_string().as_str(),
            "the server's budget, not the token's"
        );
    }
    assert_eq!(
        first_refusal,
        Some(server.config.rate_limit as usize + 1),
        "429 right past the server's limit"
    );
}

#[tokio::test]
async fn a_narrow_token_cannot_revoke_or_rotate_a_broader_one() {
    let server = Server::start().await;
    let broad = server
        .create(json!({ "name": "broad", "role": "admin" }))
        .await;
    let narrow = server
        .create(json!({ "name": "narrow", "permissions": ["tokens:write"] }))
        .await;
    let peer = server
        .create(json!({ "name": "peer", "permissions": ["tokens:write"] }))
        .await;
    let a = server
        .send(request(
            Method::DELETE,
            &format!("/api/v1/tokens/{}", broad.id),
            &narrow.bearer(),
        ))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    assert_eq!(a.code(), "insufficient_scope");
    let a = server
        .send(json_request(
            Method::POST,
            &format!("/api/v1/tokens/{}/rotate", broad.id),
            &narrow.bearer(),
            &json!({}),
        ))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    assert_eq!(me(&server, &broad, 0).await, StatusCode::OK, "untouched");
    // Within its own permissions it may act: on a peer, and on itself.
    for target in [&peer, &narrow] {
        let a = server
            .send(request(
                Method::DELETE,
                &format!("/api/v1/tokens/{}", target.id),
                &narrow.bearer(),
            ))
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    }
}
