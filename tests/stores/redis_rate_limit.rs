//! One rate limit shared by several instances through `RedisRateLimiter`, against the Redis
//! at `KEYGATE_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). Each test uses its own
//! random key prefix. Without a reachable server the tests skip with a message, or fail
//! when `CI` is set.

#![allow(clippy::unwrap_used)]

use crate::common;
use crate::common::redis_cleanup as cleanup;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use common::{TestStore, bearer, body_string, echo, get};
use http::StatusCode;
use keygate::rate_limit::{Rate, RateLimits, SharedRateLimiter};
use keygate::store::redis::{RedisOptions, RedisRateLimiter, RedisStore};
use keygate::{AuthLayer, NewToken, Tokens};
use tower::{Layer, ServiceExt};

fn url() -> String {
    common::redis_url()
}

/// A connection under `prefix`, or `None` (with the reason printed) when Redis is not
/// reachable and `CI` is unset. Under `CI` an unreachable server fails the test.
async fn connect(test: &str, prefix: &str) -> Option<RedisStore> {
    common::available(
        "Redis",
        &url(),
        test,
        RedisOptions::new(url()).with_prefix(prefix).connect().await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_limit_of_100_a_minute() {
    let prefix = format!("keygate-test:rl:{}:", uuid::Uuid::new_v4().simple());
    let test = "two_instances_share_one_limit_of_100_a_minute";
    let (Some(a), Some(b)) = (connect(test, &prefix).await, connect(test, &prefix).await) else {
        return;
    };
    // One token store (the shared source of truth), two instances with their own
    // connection to Redis.
    let store = TestStore::default();
    let tokens = Tokens::new(store.clone());
    let issued = tokens.issue(NewToken::new("alice", "ci")).await.unwrap();
    let rate = Rate::per_minute(100).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let instance = |redis: &RedisStore| {
        AuthLayer::new(Tokens::new(store.clone()))
            .with_rate_limits(RateLimits::new(rate).shared(RedisRateLimiter::new(redis.clone())))
            .layer(echo(calls.clone()))
    };
    let instances = [instance(&a), instance(&b)];
    let auth = bearer(&issued.token);
    let mut allowed = 0;
    let mut last_remaining = None;
    for i in 0..300 {
        let res = instances[i % 2]
            .clone()
            .oneshot(get(Some(&auth)))
            .await
            .unwrap();
        let (status, headers, _) = body_string(res).await;
        match status {
            StatusCode::OK => {
                allowed += 1;
                assert_eq!(headers["ratelimit-limit"], "100");
                let remaining: u32 = headers["ratelimit-remaining"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                if let Some(prev) = last_remaining {
                    assert!(remaining <= prev + 1, "{remaining} after {prev}");
                }
                last_remaining = Some(remaining);
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&retry), "Retry-After {retry}");
                assert_eq!(headers["ratelimit-remaining"], "0");
            }
            other => panic!("request {i}: {other}"),
        }
    }
    println!("two instances, one Redis limit of 100/min: {allowed} of 300 allowed");
    assert!((95..=105).contains(&allowed), "{allowed} of 300 allowed");
    // The key is the token's lineage (a digest of its owner and name, which a rotation
    // keeps), never the token nor the owner.
    let mut conn = a.client().get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let lineage = keygate::rate_limit::Lineage::of(&issued.record).shared_key();
    assert_eq!(keys, vec![format!("{prefix}rl:{lineage}")]);
    assert!(!keys[0].contains(issued.record.owner.as_str()));
    cleanup(&a).await;
}

#[tokio::test]
async fn decisions_match_the_in_process_limiter() {
    let prefix = format!("keygate-test:rl:{}:", uuid::Uuid::new_v4().simple());
    let Some(redis) = connect("decisions_match_the_in_process_limiter", &prefix).await else {
        return;
    };
    let limiter = RedisRateLimiter::new(redis.clone());
    let rate = Rate::new(3, Duration::from_secs(3)).unwrap();
    for left in [2, 1, 0] {
        let d = limiter.check("k", rate).await.unwrap();
        assert!(d.allowed());
        assert_eq!((d.limit, d.remaining), (3, left));
        assert!(d.reset <= Duration::from_secs(3));
    }
    let d = limiter.check("k", rate).await.unwrap();
    assert!(!d.allowed());
    let wait = d.retry_after.unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    // Another key has its own budget.
    assert!(limiter.check("other", rate).await.unwrap().allowed());
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    assert!(limiter.check("k", rate).await.unwrap().allowed());
    cleanup(&redis).await;
}

#[tokio::test]
async fn unreachable_redis_fails_closed_with_503() {
    // Nothing listens on port 1: the limiter cannot count, so the request is refused.
    let redis = RedisOptions::new("redis://127.0.0.1:1")
        .with_connection_timeout(Duration::from_millis(200))
        .with_response_timeout(Duration::from_millis(200))
        .connect_lazy()
        .unwrap();
    let store = TestStore::default();
    let tokens = Tokens::new(store.clone());
    let issued = tokens.issue(NewToken::new("alice", "ci")).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = AuthLayer::new(tokens)
        .with_rate_limits(
            RateLimits::new(Rate::per_minute(100).unwrap()).shared(RedisRateLimiter::new(redis)),
        )
        .layer(echo(calls.clone()));
    let res = svc
        .oneshot(get(Some(&bearer(&issued.token))))
        .await
        .unwrap();
    let (status, _, body) = body_string(res).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains(r#""code":"store_unavailable""#), "{body}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}
