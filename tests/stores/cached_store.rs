//! `CachedStore` and `TimeoutStore` over an in-process backend that counts lookups and can
//! be made slow, failing or paused: cache bounds, invalidation, the re-cache race and
//! failing closed (503 through the layer, then recovery).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use keygate::store::cached::{CachedStore, TimeoutStore};
use keygate::store::{InsertRules, RotateOutcome, StoreError, TokenId, TokenRecord, TokenStore};
use keygate::{AuthLayer, MemoryStore, NewToken, TokenHash, TokenKind, Tokens};
use time::OffsetDateTime;
use tower::{ServiceBuilder, ServiceExt};

/// A `MemoryStore` that counts `find_by_hash` calls and can fail, hang or pause them.
#[derive(Clone, Default)]
struct Probe {
    inner: MemoryStore,
    lookups: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    slow: Arc<AtomicBool>,
    /// When set, a lookup reads the record, then waits for `resume` before answering.
    pause: Arc<AtomicBool>,
    paused: Arc<tokio::sync::Notify>,
    resume: Arc<tokio::sync::Notify>,
}

impl Probe {
    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TokenStore for Probe {
    async fn insert(&self, record: TokenRecord, rules: InsertRules) -> Result<(), StoreError> {
        self.inner.insert(record, rules).await
    }
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::backend(std::io::Error::other("backend down")));
        }
        if self.slow.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        let found = self.inner.find_by_hash(hash).await;
        if self.pause.swap(false, Ordering::SeqCst) {
            self.paused.notify_one();
            self.resume.notified().await;
        }
        found
    }
    async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.get(id).await
    }
    async fn list_by_owner(&self, owner: &str) -> Result<Vec<TokenRecord>, StoreError> {
        self.inner.list_by_owner(owner).await
    }
    async fn revoke(&self, id: &TokenId, at: OffsetDateTime) -> Result<bool, StoreError> {
        self.inner.revoke(id, at).await
    }
    async fn rotate(
        &self,
        old: &TokenId,
        new: TokenRecord,
        old_expires_at: OffsetDateTime,
        rules: InsertRules,
    ) -> Result<RotateOutcome, StoreError> {
        self.inner.rotate(old, new, old_expires_at, rules).await
    }
    async fn record_use(&self, uses: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError> {
        self.inner.record_use(uses).await
    }
    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.inner.purge_expired(now).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cached_store_passes_the_conformance_suite() {
    keygate::store::conformance::run(CachedStore::new(MemoryStore::new())).await;
    keygate::store::conformance::usage_details_are_kept(CachedStore::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeout_store_passes_the_conformance_suite() {
    keygate::store::conformance::run(TimeoutStore::new(
        MemoryStore::new(),
        Duration::from_secs(5),
    ))
    .await;
    keygate::store::conformance::usage_details_are_kept(TimeoutStore::new(
        MemoryStore::new(),
        Duration::from_secs(5),
    ))
    .await;
}

#[tokio::test]
async fn hits_do_not_reach_the_backend() {
    let probe = Probe::default();
    let tokens = Tokens::new(CachedStore::new(probe.clone()));
    let issued = tokens.issue(NewToken::new("alice", "ci")).await.unwrap();
    for _ in 0..100 {
        tokens
            .authenticate(issued.token.expose_secret())
            .await
            .unwrap();
    }
    assert_eq!(probe.lookups(), 1, "one miss, then hits");
    // Unknown tokens are remembered too.
    let unknown = TokenKind::pat().generate();
    for _ in 0..10 {
        assert!(tokens.authenticate(unknown.expose_secret()).await.is_err());
    }
    assert_eq!(probe.lookups(), 2, "one miss for the unknown token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_tokens_does_not_evict_real_entries() {
    let probe = Probe::default();
    let store = CachedStore::new(probe.clone())
        .with_capacity(1_024)
        .with_negative_capacity(64);
    let tokens = Tokens::builder(store.clone())
        .max_tokens_per_owner(None)
        .build()
        .unwrap();
    let mut real = Vec::new();
    for i in 0..200 {
        real.push(
            tokens
                .issue(NewToken::new("alice", format!("t{i}")))
                .await
                .unwrap()
                .token,
        );
    }
    for t in &real {
        tokens.authenticate(t.expose_secret()).await.unwrap();
    }
    assert_eq!(probe.lookups(), 200);
    assert_eq!(store.len(), 200);

    // 20 000 random tokens with valid checksums: each one reaches the backend once.
    let flood = 20_000;
    for _ in 0..flood {
        let t = TokenKind::pat().generate();
        assert!(tokens.authenticate(t.expose_secret()).await.is_err());
    }
    assert_eq!(probe.lookups(), 200 + flood);
    assert!(
        store.negative_len() <= 64,
        "the negative set stays bounded: {}",
        store.negative_len()
    );
    assert_eq!(store.len(), 200, "no real entry was evicted");

    let before = probe.lookups();
    for t in &real {
        tokens.authenticate(t.expose_secret()).await.unwrap();
    }
    assert_eq!(
        probe.lookups(),
        before,
        "every real token is still served from the cache"
    );
}

#[tokio::test]
async fn the_found_cache_is_bounded() {
    let probe = Probe::default();
    let store = CachedStore::new(probe.clone()).with_capacity(128);
    let tokens = Tokens::builder(store.clone())
        .max_tokens_per_owner(None)
        .build()
        .unwrap();
    for i in 0..1_000 {
        let t = tokens
            .issue(NewToken::new("bob", format!("t{i}")))
            .await
            .unwrap();
        tokens.authenticate(t.token.expose_secret()).await.unwrap();
    }
    assert!(store.len() <= 128, "capacity holds: {}", store.len());
}

#[tokio::test]
async fn revoke_and_rotate_on_this_instance_take_effect_at_once() {
    let probe = Probe::default();
    let tokens = Tokens::new(CachedStore::new(probe.clone()).with_ttl(Duration::from_secs(3600)));
    let a = tokens.issue(NewToken::new("alice", "a")).await.unwrap();
    let b = tokens.issue(NewToken::new("alice", "b")).await.unwrap();
    tokens.authenticate(a.token.expose_secret()).await.unwrap();
    tokens.authenticate(b.token.expose_secret()).await.unwrap();
    tokens.revoke("alice", a.record.id).await.unwrap();
    assert!(tokens.authenticate(a.token.expose_secret()).await.is_err());
    let next = tokens.rotate("alice", b.record.id, None).await.unwrap();
    assert!(
        tokens.authenticate(b.token.expose_secret()).await.is_err(),
        "rotated without grace: the old token dies at once"
    );
    tokens
        .authenticate(next.token.expose_secret())
        .await
        .unwrap();
}

/// A lookup that read the record before the revoke must not cache it after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_read_is_not_cached_after_a_revoke() {
    let probe = Probe::default();
    let tokens = Tokens::new(CachedStore::new(probe.clone()).with_ttl(Duration::from_secs(3600)));
    let issued = tokens.issue(NewToken::new("alice", "ci")).await.unwrap();
    let secret = issued.token.expose_secret().to_owned();

    probe.pause.store(true, Ordering::SeqCst);
    let paused = probe.paused.notified();
    let t = tokens.clone();
    let in_flight = tokio::spawn(async move { t.authenticate(&secret).await.is_ok() });
    paused.await; // the lookup has read the live record
    tokens.revoke("alice", issued.record.id).await.unwrap();
    probe.resume.notify_one();
    let _ = in_flight.await.unwrap(); // started before the revoke: either answer is fine

    assert!(
        tokens
            .authenticate(issued.token.expose_secret())
            .await
            .is_err(),
        "the stale read must not have been cached"
    );
}

fn service(
    tokens: Tokens,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = http::Response<impl http_body::Body>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    ServiceBuilder::new()
        .layer(AuthLayer::new(tokens))
        .service_fn(|_req: Request<Full<Bytes>>| async move {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::<Bytes>::default()))
        })
}

fn request(token: &str) -> Request<Full<Bytes>> {
    Request::get("/")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap()
}

/// Down or slow: 503 within the timeout, never a 2xx, never a hang; then service resumes by
/// itself. On paused Tokio time: the slow backend's 30 s and the timeout pass without waiting.
#[tokio::test(start_paused = true)]
async fn a_failing_or_slow_backend_fails_closed_and_recovers() {
    let probe = Probe::default();
    let limit = Duration::from_millis(200);
    // No cache in the way: the failure reaches every request.
    let tokens = Tokens::new(TimeoutStore::new(probe.clone(), limit));
    let issued = tokens.issue(NewToken::new("alice", "ci")).await.unwrap();
    let secret = issued.token.expose_secret();
    let svc = service(tokens);

    let res = svc.clone().oneshot(request(secret)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    probe.down.store(true, Ordering::SeqCst);
    let res = svc.clone().oneshot(request(secret)).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);

    probe.down.store(false, Ordering::SeqCst);
    probe.slow.store(true, Ordering::SeqCst);
    let start = tokio::time::Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(2), svc.clone().oneshot(request(secret)))
        .await
        .expect("no hang past the timeout")
        .unwrap();
    let took = start.elapsed();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(took < limit + Duration::from_millis(300), "took {took:?}");

    probe.slow.store(false, Ordering::SeqCst);
    let res = svc.clone().oneshot(request(secret)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "service resumes by itself");
}

/// With a cache, errors are not cached: a cold token gets 503 while the backend is down and
/// 200 once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_never_cached() {
    let probe = Probe::default();
    let store = CachedStore::new(probe.clone()).with_timeout(Duration::from_millis(200));
    let tokens = Tokens::new(store.clone());
    let issued = tokens.issue(NewToken::new("alice", "ci")).await.unwrap();
    let svc = service(tokens);
    probe.down.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let res = svc
            .clone()
            .oneshot(request(issued.token.expose_secret()))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(store.is_empty() && store.negative_len() == 0);
    probe.down.store(false, Ordering::SeqCst);
    let res = svc
        .oneshot(request(issued.token.expose_secret()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// A feed driven by the test: it panics when told to (a bug in a feed of one's own), and
/// can fail every subscription (its backend is down).
struct ScriptedFeed {
    orders: tokio::sync::mpsc::UnboundedReceiver<Order>,
    subscribable: bool,
}

enum Order {
    Panic,
}

#[async_trait]
impl keygate::store::cached::RevocationFeed for ScriptedFeed {
    async fn subscribe(&mut self) -> Result<(), StoreError> {
        if self.subscribable {
            Ok(())
        } else {
            Err(StoreError::backend(std::io::Error::other(
                "feed backend down",
            )))
        }
    }

    async fn next(&mut self) -> Option<keygate::store::cached::Notice> {
        match self.orders.recv().await? {
            Order::Panic => panic!("a feed of one's own panicked"),
        }
    }
}

fn scripted(subscribable: bool) -> (ScriptedFeed, tokio::sync::mpsc::UnboundedSender<Order>) {
    let (tx, orders) = tokio::sync::mpsc::unbounded_channel();
    (
        ScriptedFeed {
            orders,
            subscribable,
        },
        tx,
    )
}

/// Attack: another instance revokes a leaked token while this instance's revocation feed
/// has died by a panic (a `RevocationFeed` of one's own, the new extension point). The
/// listener task is gone, so the revocation is never heard; the cache must then be treated
/// as disconnected (bypassed), not keep serving the token for its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_feed_does_not_leave_the_cache_serving_revoked_tokens() {
    let backend = MemoryStore::new();
    let cached = CachedStore::new(backend.clone()).with_ttl(Duration::from_secs(3600));
    let (feed, orders) = scripted(true);
    let listener = cached.listen(feed);
    assert!(listener.wait_connected(Duration::from_secs(5)).await);
    let here = Tokens::new(cached.clone());
    let elsewhere = Tokens::new(backend.clone());
    let issued = here.issue(NewToken::new("alice", "ci")).await.unwrap();
    here.authenticate(issued.token.expose_secret())
        .await
        .unwrap();
    assert_eq!(cached.len(), 1, "served from the cache from now on");

    orders.send(Order::Panic).unwrap();
    for _ in 0..500 {
        if !listener.is_connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !listener.is_connected(),
        "a listener whose task died must not report itself connected"
    );
    // Revoked on another instance: the notification is lost with the dead feed.
    elsewhere.revoke("alice", issued.record.id).await.unwrap();
    assert!(
        here.authenticate(issued.token.expose_secret())
            .await
            .is_err(),
        "the revoked token was served from the cache of a dead listener"
    );
}

/// Attack: an application replaces its listener (a new pool, a new Redis client) while the
/// new feed cannot subscribe yet. Dropping the old listener must not re-enable the cache
/// while the new one is down: revocations made elsewhere meanwhile are not heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_one_listener_does_not_enable_the_cache_while_another_is_down() {
    let backend = MemoryStore::new();
    let cached = CachedStore::new(backend.clone()).with_ttl(Duration::from_secs(3600));
    let (feed, _orders) = scripted(true);
    let old = cached.listen(feed);
    assert!(old.wait_connected(Duration::from_secs(5)).await);
    let (down_feed, _down_orders) = scripted(false);
    let new = cached.listen(down_feed);
    drop(old);
    assert!(!new.is_connected());

    let here = Tokens::new(cached.clone());
    let elsewhere = Tokens::new(backend.clone());
    let issued = here.issue(NewToken::new("alice", "ci")).await.unwrap();
    here.authenticate(issued.token.expose_secret())
        .await
        .unwrap();
    elsewhere.revoke("alice", issued.record.id).await.unwrap();
    assert!(
        here.authenticate(issued.token.expose_secret())
            .await
            .is_err(),
        "the cache served a revoked token while the only listener was down"
    );
    drop(new);
}
