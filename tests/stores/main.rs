//! The store backends (SQLite, PostgreSQL, Redis, the key-value example), the cache and
//! timeout wrappers, the shared rate limiter and the SQL audit sinks: one test binary, a
//! module per backend.
//! PostgreSQL and Redis tests skip without their service, or fail when `CI` is set.

#[path = "../common/mod.rs"]
mod common;

mod audit_stores;
mod cached_store;
mod kv_store;
mod migrations;
mod postgres_store;
mod redis_failure_limit;
mod redis_rate_limit;
mod redis_store;
mod sqlite_store;
mod tls;

/// Authenticates `secret` through `tokens` until `cache` holds its record, at most 5 s:
/// lookups on a multi-instance cache are left uncached while a notification for the same
/// token (its issue, announced to every instance) may still be on its way.
async fn authenticate_until_cached<S: keygate::TokenStore>(
    tokens: &keygate::Tokens,
    cache: &keygate::store::cached::CachedStore<S>,
    secret: &str,
) -> keygate::Identity {
    let start = std::time::Instant::now();
    loop {
        let identity = tokens.authenticate(secret).await.expect("valid token");
        if cache.len() == 1 {
            return identity;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "the cache holds no record 5 s after the first lookup"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
