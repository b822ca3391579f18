//! `RedisStore` against the Redis at `KEYGATE_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`). Each test uses its own random key prefix, so the tests run
//! in parallel. Without a reachable server the tests skip with a message, or fail when `CI`
//! is set.

#![allow(clippy::unwrap_used)]

use crate::common;
use crate::common::redis_cleanup as cleanup;

use std::time::{Duration, Instant};

use keygate::store::cached::CachedStore;
use keygate::store::redis::{RedisOptions, RedisStore};
use keygate::{NewToken, TokenStore, Tokens};

fn url() -> String {
    common::redis_url()
}

/// A store under a fresh key prefix, or `None` (with the reason printed) when Redis is not
/// reachable and `CI` is unset. Under `CI` an unreachable server fails the test.
async fn store(test: &str) -> Option<RedisStore> {
    let prefix = format!("keygate-test:{test}:{}:", uuid::Uuid::new_v4().simple());
    common::available(
        "Redis",
        &url(),
        test,
        RedisOptions::new(url()).with_prefix(prefix).connect().await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_passes_the_conformance_suite() {
    let Some(store) = store("conformance").await else {
        return;
    };
    keygate::store::conformance::run(store.clone()).await;
    keygate::store::conformance::usage_details_are_kept(store.clone()).await;
    cleanup(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiring_records_get_a_ttl_no_shorter_than_their_expiry() {
    let Some(store) = store("ttl").await else {
        return;
    };
    let tokens = Tokens::new(store.clone());
    let issued = tokens
        .issue(NewToken::new("alice", "short").expires_in(Duration::from_secs(60)))
        .await
        .unwrap();
    let forever = tokens
        .issue(NewToken::new("alice", "forever"))
        .await
        .unwrap();
    let mut conn = store
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = |r: &keygate::TokenRecord| format!("{}tok:{}", store.prefix(), r.hash.to_hex());
    let ttl: i64 = redis::cmd("PTTL")
        .arg(key(&issued.record))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 60_000, "TTL {ttl} ms must outlast the 60 s expiry");
    let none: i64 = redis::cmd("PTTL")
        .arg(key(&forever.record))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(none, -1, "no expiry, no TTL");
    // The stored hash keeps no token: only the SHA-256 and the 12-character hint.
    let fields: Vec<String> = redis::cmd("HGETALL")
        .arg(key(&issued.record))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        !fields
            .iter()
            .any(|f| f.contains(issued.token.expose_secret()))
    );
    assert_eq!(
        store.get(&issued.record.id).await.unwrap().unwrap(),
        issued.record
    );
    cleanup(&store).await;
}

/// Two instances, each with its own cache over the same Redis: a revoke on A is refused on
/// B within 1 s (through pub/sub).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_on_one_instance_reaches_the_other_within_a_second() {
    let Some(store) = store("fanout").await else {
        return;
    };
    let other = RedisOptions::new(url())
        .with_prefix(store.prefix())
        .connect()
        .await
        .unwrap();
    let cache_a = CachedStore::new(store.clone()).with_ttl(Duration::from_secs(300));
    let cache_b = CachedStore::new(other.clone()).with_ttl(Duration::from_secs(300));
    let _listen_a = cache_a.listen_redis(store.client().clone(), store.revocation_channel());
    let listen_b = cache_b.listen_redis(other.client().clone(), other.revocation_channel());
    assert!(
        listen_b.wait_connected(Duration::from_secs(5)).await,
        "listener B subscribes"
    );
    let a = Tokens::new(cache_a);
    let b = Tokens::new(cache_b.clone());
    let issued = a.issue(NewToken::new("alice", "deploy")).await.unwrap();
    let secret = issued.token.expose_secret();
    crate::authenticate_until_cached(&b, &cache_b, secret).await;

    let start = Instant::now();
    a.revoke("alice", issued.record.id).await.unwrap();
    assert!(
        a.authenticate(secret).await.is_err(),
        "refused at once on A"
    );
    let delay = loop {
        if b.authenticate(secret).await.is_err() {
            break start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "B still accepts the token 1 s after the revoke"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    eprintln!("redis revoke propagation to the other instance: {delay:?}");
    assert!(delay < Duration::from_secs(1));
    cleanup(&store).await;
}

/// A Redis on a closed port: every request through the layer gets 503, quickly. On paused Tokio
/// time: the store's bound, not the machine's load, decides how long a request takes.
#[tokio::test(start_paused = true)]
async fn unreachable_redis_fails_closed_with_503() {
    use bytes::Bytes;
    use http::{Request, StatusCode};
    use http_body_util::Full;
    use tower::{ServiceBuilder, ServiceExt};

    let down = RedisOptions::new("redis://127.0.0.1:1")
        .with_connection_timeout(Duration::from_millis(300))
        .connect_lazy()
        .unwrap();
    let tokens = Tokens::new(CachedStore::new(down).with_timeout(Duration::from_millis(500)));
    let token = keygate::TokenKind::pat().generate();
    let svc = ServiceBuilder::new()
        .layer(keygate::AuthLayer::new(tokens))
        .service_fn(|_req: Request<Full<Bytes>>| async move {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::<Bytes>::default()))
        });
    for _ in 0..3 {
        let req = Request::get("/")
            .header("authorization", format!("Bearer {}", token.expose_secret()))
            .body(Full::default())
            .unwrap();
        let start = tokio::time::Instant::now();
        let res = tokio::time::timeout(Duration::from_secs(3), svc.clone().oneshot(req))
            .await
            .expect("no hang past the timeout")
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(start.elapsed() < Duration::from_millis(1500));
    }
}

/// Two instances with caches: narrowing a token's permissions on A applies on B within 1 s
/// (the edit is announced like a revocation), not after the cache's TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edit_on_one_instance_reaches_the_other_within_a_second() {
    let Some(store) = store("edit-fanout").await else {
        return;
    };
    let other = RedisOptions::new(url())
        .with_prefix(store.prefix())
        .connect()
        .await
        .unwrap();
    let cache_a = CachedStore::new(store.clone()).with_ttl(Duration::from_secs(300));
    let cache_b = CachedStore::new(other.clone()).with_ttl(Duration::from_secs(300));
    let _listen_a = cache_a.listen_redis(store.client().clone(), store.revocation_channel());
    let listen_b = cache_b.listen_redis(other.client().clone(), other.revocation_channel());
    assert!(
        listen_b.wait_connected(Duration::from_secs(5)).await,
        "listener B connects"
    );
    let a = Tokens::new(cache_a);
    let b = Tokens::new(cache_b.clone());
    let issued = a
        .issue(
            NewToken::new("alice", "deploy")
                .permissions(keygate::Permissions::parse(["apps:read", "apps:write"]).unwrap()),
        )
        .await
        .unwrap();
    let secret = issued.token.expose_secret();
    // The issue is announced to B as well, and may drop the entry while it lands.
    let identity = crate::authenticate_until_cached(&b, &cache_b, secret).await;
    assert!(identity.can("apps:write"));
    let start = Instant::now();
    a.update(
        "alice",
        issued.record.id,
        keygate::tokens::TokenChanges::new()
            .permissions(keygate::Permissions::parse(["apps:read"]).unwrap()),
    )
    .await
    .unwrap();
    assert!(
        !a.authenticate(secret).await.unwrap().can("apps:write"),
        "narrowed at once on A"
    );
    loop {
        if !b.authenticate(secret).await.unwrap().can("apps:write") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "B still grants the removed permission 1 s after the edit"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(listen_b);
    cleanup(&store).await;
}

/// Rotating the pepper on two instances over Redis, each with its cache: A re-hashes the
/// token; B, which cached it under the old digest (and "unknown" under the new one), keeps
/// accepting it, then refuses it within a second of a revoke on A. The record's TTL and
/// purge entry follow it to its new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rehash_on_one_instance_keeps_the_token_working_on_the_other() {
    use keygate::Pepper;
    let Some(store) = store("rehash").await else {
        return;
    };
    let other = RedisOptions::new(url())
        .with_prefix(store.prefix())
        .connect()
        .await
        .unwrap();
    let old = Pepper::from_bytes([1u8; 32]).unwrap();
    let new = Pepper::from_bytes([2u8; 32]).unwrap();
    let before = Tokens::builder(store.clone())
        .pepper(old.clone())
        .build()
        .unwrap();
    let issued = before
        .issue(NewToken::new("alice", "deploy").expires_in(Duration::from_secs(3600)))
        .await
        .unwrap();
    let secret = issued.token.expose_secret();

    let long = Duration::from_secs(300);
    let cache_a = CachedStore::new(store.clone()).with_ttl(long);
    let cache_b = CachedStore::new(other.clone())
        .with_ttl(long)
        .with_negative_ttl(long);
    let _listen_a = cache_a.listen_redis(store.client().clone(), store.revocation_channel());
    let listen_b = cache_b.listen_redis(other.client().clone(), other.revocation_channel());
    assert!(listen_b.wait_connected(Duration::from_secs(5)).await);
    let rotated = |s| {
        Tokens::builder(s)
            .pepper(new.clone())
            .previous_peppers([old.clone()])
            .build()
            .unwrap()
    };
    let a = rotated(cache_a);
    let b = rotated(cache_b.clone());
    b.authenticate(secret)
        .await
        .expect("valid on B under the old pepper");

    a.authenticate(secret).await.expect("valid on A");
    a.flush_usage().await.unwrap();
    let moved = store.get(&issued.record.id).await.unwrap().unwrap();
    assert_eq!(moved.hash, new.digest(secret), "A re-hashed the token");
    assert_eq!(moved.expires_at, issued.record.expires_at);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        b.authenticate(secret)
            .await
            .expect("B keeps accepting the re-hashed token");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        store.list_by_owner("alice").await.unwrap().len(),
        1,
        "the owner index follows the record"
    );

    a.revoke("alice", issued.record.id).await.unwrap();
    let start = Instant::now();
    while b.authenticate(secret).await.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "B still accepts the re-hashed token 1 s after the revoke"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop((listen_b, _listen_a));
    cleanup(&store).await;
}
