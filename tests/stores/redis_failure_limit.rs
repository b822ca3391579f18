//! Failure limits shared by several instances through `RedisFailureLimiter`, against the
//! Redis at `KEYGATE_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). Each test uses its
//! own random key prefix. Without a reachable server the tests skip with a message, or fail
//! when `CI` is set.

#![allow(clippy::unwrap_used)]

use crate::common;
use crate::common::redis_cleanup as cleanup;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::{TestStore, bearer, body_string, echo, get};
use http::StatusCode;
use keygate::client_ip::ClientAddr;
use keygate::rate_limit::{FailureLimits, Rate, SignInRefused};
use keygate::store::redis::{RedisFailureLimiter, RedisOptions, RedisStore};
use keygate::{AuthLayer, NewToken, TokenKind, Tokens};
use tower::{Layer, ServiceExt};

/// A connection under `prefix`, or `None` (with the reason printed) when Redis is not
/// reachable and `CI` is unset. Under `CI` an unreachable server fails the test.
async fn connect(test: &str, prefix: &str) -> Option<RedisStore> {
    let url = common::redis_url();
    common::available(
        "Redis",
        &url,
        test,
        RedisOptions::new(url.clone())
            .with_prefix(prefix)
            .connect()
            .await,
    )
}

fn prefix() -> String {
    format!("keygate-test:fl:{}:", uuid::Uuid::new_v4().simple())
}

fn from(
    peer: &str,
    mut req: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    req.extensions_mut()
        .insert(ClientAddr(peer.parse::<SocketAddr>().unwrap()));
    req
}

/// Every key under `prefix`, each with its time to live (ms).
async fn keys_and_ttls(redis: &RedisStore) -> Vec<(String, i64)> {
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", redis.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut out = Vec::new();
    for k in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        out.push((k, ttl));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_give_a_guesser_one_budget() {
    let test = "two_instances_give_a_guesser_one_budget";
    let prefix = prefix();
    let (Some(a), Some(b)) = (connect(test, &prefix).await, connect(test, &prefix).await) else {
        return;
    };
    let store = TestStore::default();
    let good = Tokens::new(store.clone())
        .issue(NewToken::new("alice", "ci"))
        .await
        .unwrap();
    let instance = |redis: &RedisStore| {
        AuthLayer::new(Tokens::new(store.clone()))
            .with_failure_limits(
                FailureLimits::new(Rate::per_minute(6).unwrap())
                    .shared(RedisFailureLimiter::new(redis.clone())),
            )
            .layer(echo(Arc::default()))
    };
    let instances = [instance(&a), instance(&b)];
    let guess = || format!("Bearer {}", TokenKind::pat().generate().expose_secret());
    // Six guesses from one address, alternating between the instances: one budget of six,
    // not two.
    for i in 0..6 {
        let res = instances[i % 2]
            .clone()
            .oneshot(from("203.0.113.5:4000", get(Some(&guess()))))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let res = instances[0]
        .clone()
        .oneshot(from("203.0.113.5:4000", get(Some(&guess()))))
        .await
        .unwrap();
    let (status, headers, _) = body_string(res).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the 7th guess");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // Blocked on the other instance too, even with a valid token, before any lookup.
    let lookups = store.lookups();
    let res = instances[1]
        .clone()
        .oneshot(from("203.0.113.5:4001", get(Some(&bearer(&good.token)))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        store.lookups(),
        lookups,
        "a blocked address costs no lookup"
    );
    // Another address is not affected.
    let res = instances[1]
        .clone()
        .oneshot(from("198.51.100.1:4000", get(Some(&bearer(&good.token)))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Every key expires by itself and names no token.
    let keys = keys_and_ttls(&a).await;
    assert!(!keys.is_empty());
    for (k, ttl) in &keys {
        assert!(*ttl > 0 && *ttl <= 60_000, "{k} has TTL {ttl}");
        assert!(!k.contains("pat_"), "{k}");
    }
    assert!(
        keys.iter()
            .any(|(k, _)| k == &format!("{prefix}fail:block:203.0.113.5"))
    );
    cleanup(&a).await;
}

#[tokio::test]
async fn an_account_backoff_is_shared_and_refunds_reach_every_instance() {
    let test = "an_account_backoff_is_shared_and_refunds_reach_every_instance";
    let prefix = prefix();
    let (Some(ra), Some(rb)) = (connect(test, &prefix).await, connect(test, &prefix).await) else {
        return;
    };
    let limits = |redis: &RedisStore| {
        FailureLimits::new(Rate::per_minute(5).unwrap())
            .with_account_rate(Rate::per_minute(3).unwrap())
            .shared(RedisFailureLimiter::new(redis.clone()))
    };
    let (a, b) = (limits(&ra), limits(&rb));
    let ip = |i: u8| IpAddr::from([203, 0, 113, i]);
    // Three addresses fail once each, spread over both instances: the account is over.
    drop(a.begin_sign_in("Admin@example.com", ip(1)).await.unwrap());
    drop(b.begin_sign_in("admin@example.com", ip(2)).await.unwrap());
    drop(a.begin_sign_in("ADMIN@example.com", ip(3)).await.unwrap());
    // Each of them is refused on that account, on either instance, in any case...
    for (f, i) in [(&b, 1), (&a, 2), (&b, 3)] {
        match f.begin_sign_in("admin@EXAMPLE.com", ip(i)).await {
            Err(SignInRefused::Wait(wait)) => assert!(wait >= Duration::from_secs(1)),
            other => panic!("address {i}: {other:?}"),
        }
    }
    // ... but not on another account, and a fresh address still gets its try, whose
    // refund (a right password) reaches the other instance.
    drop(b.begin_sign_in("bob@example.com", ip(1)).await.unwrap());
    a.begin_sign_in("admin@example.com", ip(9))
        .await
        .unwrap()
        .refund()
        .await;
    // Five refunded sign-ins from one address use up nothing of its budget of five.
    for _ in 0..5 {
        b.begin_sign_in("carol@example.com", ip(20))
            .await
            .unwrap()
            .refund()
            .await;
    }
    assert_eq!(a.blocked(ip(20)).await.unwrap(), None);
    // Five failures from one address on five accounts (across instances) block it on
    // both.
    for i in 0..5 {
        let f = if i % 2 == 0 { &a } else { &b };
        let account = format!("user{i}@example.com");
        drop(f.begin_sign_in(&account, ip(21)).await.unwrap());
    }
    assert!(matches!(
        a.begin_sign_in("dave@example.com", ip(21)).await,
        Err(SignInRefused::Wait(_))
    ));
    assert!(b.blocked(ip(21)).await.unwrap().is_some());
    // No account name is kept, and every key expires.
    for (k, ttl) in keys_and_ttls(&ra).await {
        assert!(!k.to_lowercase().contains("example"), "{k}");
        assert!(ttl > 0 && ttl <= 15 * 60_000, "{k} has TTL {ttl}");
    }
    cleanup(&ra).await;
}

#[tokio::test]
async fn unreachable_redis_refuses_every_bearer_request_and_sign_in() {
    // Nothing listens on port 1: every call fails fast, and nothing is let through.
    let redis = RedisOptions::new("redis://127.0.0.1:1")
        .with_connection_timeout(Duration::from_millis(200))
        .connect_lazy()
        .unwrap();
    let limits =
        FailureLimits::new(Rate::per_minute(5).unwrap()).shared(RedisFailureLimiter::new(redis));
    let store = TestStore::default();
    let good = Tokens::new(store.clone())
        .issue(NewToken::new("alice", "ci"))
        .await
        .unwrap();
    let svc = AuthLayer::new(Tokens::new(store.clone()))
        .with_failure_limits(limits.clone())
        .layer(echo(Arc::default()));
    let guess = format!("Bearer {}", TokenKind::pat().generate().expose_secret());
    for auth in [bearer(&good.token), guess] {
        let res = svc
            .clone()
            .oneshot(from("203.0.113.5:4000", get(Some(&auth))))
            .await
            .unwrap();
        let (status, _, body) = body_string(res).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("store_unavailable"), "{body}");
    }
    assert!(matches!(
        limits
            .begin_sign_in("admin@example.com", IpAddr::from([203, 0, 113, 5]))
            .await,
        Err(SignInRefused::Unavailable(_))
    ));
}
