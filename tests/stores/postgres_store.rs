//! `PostgresStore` against the PostgreSQL at `KEYGATE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Each test works in its own schema, so the
//! tests run in parallel. Without a reachable database the tests skip with a message, or
//! fail when `CI` is set.

#![allow(clippy::unwrap_used)]

use crate::common;
use crate::common::drop_schema as cleanup;

use std::time::{Duration, Instant};

use keygate::store::cached::CachedStore;
use keygate::store::postgres::{PostgresOptions, PostgresStore};
use keygate::{NewToken, TokenStore, Tokens};

fn url() -> String {
    common::postgres_url()
}

/// A store in a fresh schema, or `None` (with the reason printed) when PostgreSQL is not
/// reachable and `CI` is unset. Under `CI` an unreachable database fails the test.
async fn store(test: &str) -> Option<PostgresStore> {
    let schema = format!("kg_{test}_{}", uuid::Uuid::new_v4().simple());
    common::available(
        "PostgreSQL",
        &url(),
        test,
        PostgresOptions::new(url())
            .with_schema(&schema[..schema.len().min(63)])
            .with_acquire_timeout(Duration::from_secs(3))
            .connect()
            .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_passes_the_conformance_suite() {
    let Some(store) = store("conformance").await else {
        return;
    };
    keygate::store::conformance::run(store.clone()).await;
    keygate::store::conformance::usage_details_are_kept(store.clone()).await;
    cleanup(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_round_trip_with_nanoseconds_truncated_to_microseconds() {
    let Some(store) = store("precision").await else {
        return;
    };
    let tokens = Tokens::new(store.clone());
    let issued = tokens
        .issue(NewToken::new("alice@example.com", "ci").expires_in(Duration::from_secs(60)))
        .await
        .unwrap();
    let back = store.get(&issued.record.id).await.unwrap().unwrap();
    assert_eq!(back, issued.record, "Tokens::now is whole microseconds");
    let id = tokens
        .authenticate(issued.token.expose_secret())
        .await
        .unwrap();
    assert_eq!(id.owner(), "alice@example.com");
    cleanup(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accounts_are_kept_lower_cased() {
    use keygate::accounts::{Account, AccountStore};
    let Some(store) = store("accounts").await else {
        return;
    };
    let acc = Account {
        email: "Admin@Example.COM".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        permissions: keygate::Permissions::parse(["tokens:*", "things:read"]).unwrap(),
        created_at: keygate::Tokens::new(keygate::MemoryStore::new()).now(),
    };
    store.put_account(acc.clone()).await.unwrap();
    let found = store
        .find_account("admin@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.email, "admin@example.com");
    assert_eq!(found.permissions, acc.permissions);
    assert_eq!(found.created_at, acc.created_at);
    assert!(
        store
            .find_account("nobody@example.com")
            .await
            .unwrap()
            .is_none()
    );
    cleanup(&store).await;
}

/// Two instances, each with its own cache over the same database: a revoke on A is refused
/// on B within 1 s (through `LISTEN keygate_revocations`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_on_one_instance_reaches_the_other_within_a_second() {
    let Some(store) = store("fanout").await else {
        return;
    };
    // Two pools on the same schema, as two processes would have.
    let other = PostgresOptions::new(url())
        .with_schema(store.schema().unwrap())
        .connect()
        .await
        .unwrap();
    let cache_a = CachedStore::new(store.clone()).with_ttl(Duration::from_secs(300));
    let cache_b = CachedStore::new(other.clone()).with_ttl(Duration::from_secs(300));
    let _listen_a = cache_a.listen_postgres(store.pool().clone());
    let listen_b = cache_b.listen_postgres(other.pool().clone());
    assert!(
        listen_b.wait_connected(Duration::from_secs(5)).await,
        "listener B connects"
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
    eprintln!("postgres revoke propagation to the other instance: {delay:?}");
    assert!(delay < Duration::from_secs(1));
    drop((listen_b, _listen_a));
    cleanup(&store).await;
}

/// A database on a closed port: every request through the layer gets 503, quickly. On paused Tokio
/// time: the store's bound, not the machine's load, decides how long a request takes.
#[tokio::test(start_paused = true)]
async fn unreachable_database_fails_closed_with_503() {
    use bytes::Bytes;
    use http::{Request, StatusCode};
    use http_body_util::Full;
    use tower::{ServiceBuilder, ServiceExt};

    let down = PostgresOptions::new("postgres://postgres@127.0.0.1:1/test")
        .with_acquire_timeout(Duration::from_secs(1))
        .connect_lazy()
        .unwrap();
    let store = CachedStore::new(down).with_timeout(Duration::from_millis(500));
    let tokens = Tokens::new(store);
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
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains("store_unavailable"),
            "{body:?}"
        );
    }
}

/// The listener's connection dies: the cache is flushed and bypassed (every lookup goes to
/// the database, so a revoke made meanwhile is seen at once), and the listener reconnects
/// by itself and caching resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_listener_flushes_and_bypasses_the_cache_until_it_reconnects() {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use std::str::FromStr;

    let Some(store) = store("listener_loss").await else {
        return;
    };
    let app = format!("kg-listener-{}", uuid::Uuid::new_v4().simple());
    let listen_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(
            PgConnectOptions::from_str(&url())
                .unwrap()
                .application_name(&app),
        )
        .await
        .unwrap();
    let cached = CachedStore::new(store.clone()).with_ttl(Duration::from_secs(300));
    let listener = cached.listen_postgres(listen_pool);
    assert!(listener.wait_connected(Duration::from_secs(5)).await);
    let tokens = Tokens::new(cached.clone());
    let issued = tokens.issue(NewToken::new("alice", "ci")).await.unwrap();
    crate::authenticate_until_cached(&tokens, &cached, issued.token.expose_secret()).await;

    // Kill the listener's backend, as a restart or a network cut would.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&app)
    .execute(store.pool())
    .await
    .unwrap();
    let start = Instant::now();
    while listener.is_connected() || !cached.is_empty() {
        if start.elapsed() > Duration::from_secs(5) {
            // It may already have reconnected (and flushed on the way).
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        cached.is_empty(),
        "the cache is flushed when the listener drops"
    );

    // Revoke behind this instance's back (straight in the database, no notification seen
    // if the listener is still down): the next request is refused.
    store.revoke(&issued.record.id, tokens.now()).await.unwrap();
    assert!(
        tokens
            .authenticate(issued.token.expose_secret())
            .await
            .is_err()
    );

    assert!(
        listener.wait_connected(Duration::from_secs(10)).await,
        "the listener reconnects by itself"
    );
    let fresh = tokens.issue(NewToken::new("alice", "fresh")).await.unwrap();
    // Caching resumes after the reconnect.
    crate::authenticate_until_cached(&tokens, &cached, fresh.token.expose_secret()).await;
    drop(listener);
    cleanup(&store).await;
}

/// Two instances with caches: narrowing a token's permissions on A applies on B within 1 s
/// (the edit is announced like a revocation), not after the cache's TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edit_on_one_instance_reaches_the_other_within_a_second() {
    let Some(store) = store("edit_fanout").await else {
        return;
    };
    let other = PostgresOptions::new(url())
        .with_schema(store.schema().unwrap())
        .connect()
        .await
        .unwrap();
    let cache_a = CachedStore::new(store.clone()).with_ttl(Duration::from_secs(300));
    let cache_b = CachedStore::new(other.clone()).with_ttl(Duration::from_secs(300));
    let _listen_a = cache_a.listen_postgres(store.pool().clone());
    let listen_b = cache_b.listen_postgres(other.pool().clone());
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

/// Rotating the pepper on two instances, each with its cache: the token issued under the
/// old pepper is re-hashed by A; B, which cached it under the old digest (and "unknown"
/// under the new one), keeps accepting it throughout, then refuses it within a second of a
/// revoke on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rehash_on_one_instance_keeps_the_token_working_on_the_other() {
    use keygate::Pepper;
    let Some(store) = store("rehash").await else {
        return;
    };
    let other = PostgresOptions::new(url())
        .with_schema(store.schema().unwrap())
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
        .issue(NewToken::new("alice", "deploy"))
        .await
        .unwrap();
    let secret = issued.token.expose_secret();

    let long = Duration::from_secs(300);
    let cache_a = CachedStore::new(store.clone()).with_ttl(long);
    let cache_b = CachedStore::new(other.clone())
        .with_ttl(long)
        .with_negative_ttl(long);
    let _listen_a = cache_a.listen_postgres(store.pool().clone());
    let listen_b = cache_b.listen_postgres(other.pool().clone());
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
    assert!(
        cache_b.negative_len() >= 1,
        "B caches the new digest as unknown"
    );

    a.authenticate(secret).await.expect("valid on A");
    a.flush_usage().await.unwrap();
    assert_eq!(
        store.get(&issued.record.id).await.unwrap().unwrap().hash,
        new.digest(secret),
        "A re-hashed the token"
    );
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        b.authenticate(secret)
            .await
            .expect("B keeps accepting the re-hashed token");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

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
