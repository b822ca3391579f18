//! [`CachedStore`]: a bounded verification cache in front of any [`TokenStore`], with
//! revocation fan-out between instances, and [`TimeoutStore`], which bounds every store call.
//!
//! Only [`find_by_hash`](TokenStore::find_by_hash) — the lookup on every request — is
//! cached. Everything else (insert, get, list, revoke, rotate, record use, purge) goes to
//! the wrapped store, and writes drop the entries they change from the local cache before
//! they return, so a revoke is refused at once on the instance that made it.
//!
//! # What is cached
//!
//! - **Found records**, keyed by the token's SHA-256 (never the token), in a map split into
//!   64 shards of lock-free maps ([`papaya`]; writers of a shard take its mutex): a hit
//!   takes no lock, clones an `Arc` and compares the entry's deadline with a millisecond
//!   clock read with one atomic load (advanced every 5 ms by one background thread per
//!   process) — no allocation, and no write to memory that other cores read. Entries live
//!   for their TTL plus at most 5 ms.
//!   Capacity ([`with_capacity`](CachedStore::with_capacity), default 10 000) and TTL
//!   ([`with_ttl`](CachedStore::with_ttl), default 30 s) are bounded; a full shard evicts an
//!   expired or the oldest of a few sampled entries.
//! - **Unknown hashes**, in a separate and smaller set
//!   ([`with_negative_capacity`](CachedStore::with_negative_capacity), default 1 024;
//!   [`with_negative_ttl`](CachedStore::with_negative_ttl), default 5 s). A flood of random
//!   tokens with valid checksums only churns this set: it can never evict a real entry.
//!   (A hash cannot become known later without the store being written: tokens are random,
//!   and a local insert drops its hash from the set.)
//!
//! The core still checks the digest, revocation and expiry of a cached record on every
//! request, so a cached record that expires is refused on time.
//!
//! A record that admits no one any more (revoked, expired, or replaced and past its grace)
//! is cached only as long as an unknown hash (the negative TTL; not at all when negative
//! caching is off), and a valid record at most until it expires. So a token that was real
//! and one that never existed take the same path, with the same store work: how fast a
//! refusal comes does not tell whether the token ever existed.
//!
//! # Staleness after a revoke
//!
//! | where the revoke happened | refused after |
//! | --- | --- |
//! | this instance (through this `CachedStore`) | at once |
//! | another instance, listener connected | the notification's delay: typically a few ms on a LAN, under 1 s (the tests assert it) |
//! | another instance, listener disconnected | at once: the cache is flushed and bypassed until the listener is back |
//! | another instance, no listener at all | up to the TTL |
//!
//! The listeners ([`listen_postgres`](CachedStore::listen_postgres),
//! [`listen_redis`](CachedStore::listen_redis)) subscribe to the store's revocation
//! channel. Push is best-effort (PostgreSQL `NOTIFY` and Redis pub/sub are fire and forget),
//! so a listener treats the loss of its connection as a loss of notifications: it flushes
//! the cache, makes every lookup go to the store until it has subscribed again, then flushes
//! once more and resumes caching. A heartbeat on the same connection detects a silently dead
//! connection within 15 s; until then notifications can be missed and the TTL is the bound.
//!
//! A lookup that read the store before a revocation committed cannot put its stale answer
//! back into the cache afterwards: every invalidation bumps an epoch, and a lookup only
//! caches its answer if the epoch did not move while it waited.
//!
//! # Failing closed
//!
//! [`with_timeout`](CachedStore::with_timeout) (or [`TimeoutStore`] without a cache) turns a
//! store call that takes too long into [`StoreError::Timeout`], which the layer answers with
//! 503 `store_unavailable`. Errors are never cached, so service resumes with the store.
//! While a listener is disconnected nothing is served from the cache, so a store that is
//! down refuses every request (503) rather than letting possibly revoked tokens through.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use keygate::store::cached::CachedStore;
//! use keygate::{MemoryStore, NewToken, Tokens};
//!
//! let store = CachedStore::new(MemoryStore::new())
//!     .with_capacity(50_000)
//!     .with_ttl(Duration::from_secs(10))
//!     .with_timeout(Duration::from_secs(2));
//! let tokens = Tokens::new(store.clone());
//! let issued = tokens.issue(NewToken::new("alice", "ci")).await.unwrap();
//! tokens.authenticate(issued.token.expose_secret()).await.unwrap();
//! assert_eq!(store.len(), 1);
//! tokens.revoke("alice", issued.record.id).await.unwrap();
//! assert!(tokens.authenticate(issued.token.expose_secret()).await.is_err());
//! # });
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{
    InactiveOutcome, InsertRules, ReleaseOutcome, RotateOutcome, StoreError, TokenId, TokenRecord,
    TokenStore,
};
use crate::token::{DigestHasher, TokenHash};

pub use super::timeout::TimeoutStore;
use super::timeout::bounded;

const SHARDS: usize = 64;
/// Entries looked at when a full shard must evict one.
const EVICTION_SAMPLE: usize = 8;
#[cfg(any(feature = "postgres", feature = "redis"))]
const HEARTBEAT: Duration = Duration::from_secs(5);
#[cfg(any(feature = "postgres", feature = "redis"))]
const HEARTBEAT_DEADLINE: Duration = Duration::from_secs(15);
#[cfg(any(feature = "postgres", feature = "redis"))]
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A concurrent map whose reads take no lock and write no shared memory, so hits on several
/// cores do not contend.
type Map<V> = papaya::HashMap<TokenHash, V, DigestHasher>;

/// One shard: lock-free reads; writers take `writer`, which keeps the bound and the epoch
/// rule exact.
struct Shard<V> {
    map: Map<V>,
    writer: Mutex<()>,
}

/// A shard's map while its writer lock is held.
struct ShardWriter<'a, V> {
    map: &'a Map<V>,
    _lock: MutexGuard<'a, ()>,
}

/// A millisecond clock that a hit can read with one atomic load: `Instant::now()` costs as
/// much as the rest of a hit on some machines. One background thread per process advances it
/// every [`TICK`]; if that thread cannot be started, every read falls back to `Instant`.
mod clock {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Once, OnceLock};
    use std::time::{Duration, Instant};

    pub(super) const TICK: Duration = Duration::from_millis(5);

    struct Clock {
        base: Instant,
        ms: AtomicU64,
        ticking: AtomicBool,
    }

    fn elapsed_ms(base: Instant) -> u64 {
        u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn clock() -> &'static Clock {
        static CLOCK: OnceLock<Clock> = OnceLock::new();
        static START: Once = Once::new();
        let c: &'static Clock = CLOCK.get_or_init(|| Clock {
            base: Instant::now(),
            ms: AtomicU64::new(0),
            ticking: AtomicBool::new(false),
        });
        START.call_once(|| {
            let started = std::thread::Builder::new()
                .name("keygate-cache-clock".into())
                .spawn(move || {
                    loop {
                        c.ms.store(elapsed_ms(c.base), Ordering::Relaxed);
                        std::thread::sleep(TICK);
                    }
                })
                .is_ok();
            c.ticking.store(started, Ordering::Release);
        });
        c
    }

    /// Milliseconds since the clock started; at most one tick behind.
    pub(super) fn now_ms() -> u64 {
        let c = clock();
        if c.ticking.load(Ordering::Relaxed) {
            c.ms.load(Ordering::Relaxed)
        } else {
            elapsed_ms(c.base)
        }
    }

    /// The clock reading `ttl` from now.
    pub(super) fn after(ttl: Duration) -> u64 {
        now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
    }
}

struct Entry {
    record: Arc<TokenRecord>,
    until: u64,
}

trait Until {
    fn until(&self) -> u64;
}

impl Until for Entry {
    fn until(&self) -> u64 {
        self.until
    }
}

impl Until for u64 {
    fn until(&self) -> u64 {
        *self
    }
}

/// One bounded, sharded map with a TTL.
struct Sharded<V> {
    shards: Box<[Shard<V>]>,
    per_shard: usize,
    ttl: Duration,
}

fn shard_of(hash: &TokenHash) -> usize {
    // Byte 8 is not among the bytes the maps hash on.
    usize::from(hash.as_bytes()[8]) % SHARDS
}

impl<V: Until + Send + Sync> Sharded<V> {
    fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    map: Map::default(),
                    writer: Mutex::new(()),
                })
                .collect(),
            per_shard: capacity.div_ceil(SHARDS),
            ttl,
        }
    }

    fn read<T>(&self, hash: &TokenHash, f: impl FnOnce(&V) -> T) -> Option<T> {
        self.shards[shard_of(hash)].map.pin().get(hash).map(f)
    }

    fn lock(shard: &Shard<V>) -> ShardWriter<'_, V> {
        ShardWriter {
            map: &shard.map,
            _lock: shard.writer.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    fn write(&self, hash: &TokenHash) -> ShardWriter<'_, V> {
        Self::lock(&self.shards[shard_of(hash)])
    }

    /// Inserts under an already held shard lock, evicting first when the shard is full.
    fn put_locked(&self, shard: &ShardWriter<'_, V>, hash: TokenHash, value: V) {
        if self.per_shard == 0 {
            return;
        }
        let map = shard.map.pin();
        if map.len() >= self.per_shard && !map.contains_key(&hash) {
            let now = clock::now_ms();
            let victim = map
                .iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, v)| {
                    if v.until() <= now {
                        None
                    } else {
                        Some(v.until())
                    }
                })
                .map(|(k, _)| *k);
            if let Some(k) = victim {
                map.remove(&k);
            }
        }
        map.insert(hash, value);
    }

    fn remove(&self, hash: &TokenHash) {
        self.write(hash).map.pin().remove(hash);
    }

    /// Keeps the entries for which `keep` is true, shard by shard under each writer lock.
    fn retain(&self, mut keep: impl FnMut(&V) -> bool) {
        for s in self.shards.iter() {
            Self::lock(s).map.pin().retain(|_, v| keep(v));
        }
    }

    fn clear(&self) {
        for s in self.shards.iter() {
            Self::lock(s).map.pin().clear();
        }
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.map.len()).sum()
    }
}

/// The state shared by a [`CachedStore`], its clones and its listener.
struct Cache {
    found: Sharded<Entry>,
    unknown: Sharded<u64>,
    /// Bumped by every invalidation; a lookup caches its answer only if it did not move.
    epoch: AtomicU64,
    /// True while a listener is attached but not subscribed: nothing is served from or put
    /// into the cache.
    bypass: AtomicBool,
}

enum Cached {
    Found(Arc<TokenRecord>),
    Unknown,
    Miss,
}

impl Cache {
    fn new(config: &Config) -> Self {
        Self {
            found: Sharded::new(config.capacity, config.ttl),
            unknown: Sharded::new(config.negative_capacity, config.negative_ttl),
            epoch: AtomicU64::new(0),
            bypass: AtomicBool::new(false),
        }
    }

    fn lookup(&self, hash: &TokenHash) -> Cached {
        if self.bypass.load(Ordering::Acquire) {
            return Cached::Miss;
        }
        let now = clock::now_ms();
        if let Some(Some(rec)) = self
            .found
            .read(hash, |e| (e.until > now).then(|| e.record.clone()))
        {
            return Cached::Found(rec);
        }
        if self.unknown.read(hash, |until| *until > now) == Some(true) {
            return Cached::Unknown;
        }
        Cached::Miss
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Caches the answer of a lookup that started at `epoch`, unless an invalidation
    /// happened since (or a listener is down).
    fn put(&self, hash: TokenHash, found: Option<&Arc<TokenRecord>>, epoch: u64) {
        if self.bypass.load(Ordering::Acquire) {
            return;
        }
        match found {
            Some(rec) => {
                let Some(ttl) = self.found_ttl(rec) else {
                    return;
                };
                let shard = self.found.write(&hash);
                if self.epoch() != epoch {
                    return;
                }
                let until = clock::after(ttl);
                self.found.put_locked(
                    &shard,
                    hash,
                    Entry {
                        record: rec.clone(),
                        until,
                    },
                );
            }
            None => {
                let shard = self.unknown.write(&hash);
                if self.epoch() != epoch {
                    return;
                }
                let until = clock::after(self.unknown.ttl);
                self.unknown.put_locked(&shard, hash, until);
            }
        }
    }

    /// How long a found record is served from the cache. A record that no longer admits
    /// anyone (revoked, expired, replaced and past its grace) is kept no longer than an
    /// unknown hash (and not at all when negative caching is off), and a valid one no
    /// longer than until it expires: a token that was real and one that never was cost the
    /// same store work, so the time of a refusal does not tell them apart.
    fn found_ttl(&self, rec: &TokenRecord) -> Option<Duration> {
        let now = OffsetDateTime::now_utc();
        let negative = (self.unknown.per_shard > 0).then_some(self.unknown.ttl);
        if !rec.is_valid_at(now) {
            return negative.map(|n| n.min(self.found.ttl));
        }
        let Some(expires_at) = rec.expires_at else {
            return Some(self.found.ttl);
        };
        let left = Duration::try_from(expires_at - now).unwrap_or(Duration::ZERO);
        Some(left.min(self.found.ttl))
    }

    fn invalidate(&self, hash: &TokenHash) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.found.remove(hash);
        self.unknown.remove(hash);
    }

    /// Drops every found record with this id (a scan: revocations are rare).
    fn invalidate_id(&self, id: &TokenId) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.found.retain(|e| e.record.id != *id);
    }

    /// Drops every found record whose id is in `ids`, in one scan.
    fn invalidate_ids(&self, ids: &std::collections::HashSet<TokenId>) {
        if ids.is_empty() {
            return;
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.found.retain(|e| !ids.contains(&e.record.id));
    }

    fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.found.clear();
        self.unknown.clear();
    }
}

#[derive(Debug, Clone, Copy)]
struct Config {
    capacity: usize,
    ttl: Duration,
    negative_capacity: usize,
    negative_ttl: Duration,
}

/// A [`TokenStore`] that caches [`find_by_hash`](TokenStore::find_by_hash) answers of the
/// store it wraps; see the [module docs](self) for the bounds and the staleness guarantees.
///
/// Cheap to clone when `S` is; clones share the cache. Configure it with the `with_*`
/// methods before sharing it or attaching a listener (they start a new, empty cache).
pub struct CachedStore<S> {
    inner: S,
    cache: Arc<Cache>,
    config: Config,
    timeout: Option<Duration>,
}

impl<S: Clone> Clone for CachedStore<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
            config: self.config,
            timeout: self.timeout,
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for CachedStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("inner", &self.inner)
            .field("capacity", &self.config.capacity)
            .field("ttl", &self.config.ttl)
            .field("negative_capacity", &self.config.negative_capacity)
            .field("negative_ttl", &self.config.negative_ttl)
            .field("timeout", &self.timeout)
            .field("cached", &self.cache.found.len())
            .finish()
    }
}

impl<S: TokenStore> CachedStore<S> {
    /// A cache of 10 000 records for 30 s and 1 024 unknown hashes for 5 s, without a
    /// timeout, in front of `inner`.
    #[must_use]
    pub fn new(inner: S) -> Self {
        let config = Config {
            capacity: 10_000,
            ttl: Duration::from_secs(30),
            negative_capacity: 1_024,
            negative_ttl: Duration::from_secs(5),
        };
        Self {
            inner,
            cache: Arc::new(Cache::new(&config)),
            config,
            timeout: None,
        }
    }

    fn reconfigured(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self.cache = Arc::new(Cache::new(&self.config));
        self
    }

    /// At most about `n` cached records (rounded up to a multiple of 64); 0 disables the
    /// cache of found records.
    #[must_use]
    pub fn with_capacity(self, n: usize) -> Self {
        self.reconfigured(|c| c.capacity = n)
    }

    /// How long a found record is served from the cache: the staleness bound after a revoke
    /// made on another instance when no listener is attached.
    #[must_use]
    pub fn with_ttl(self, ttl: Duration) -> Self {
        self.reconfigured(|c| c.ttl = ttl)
    }

    /// At most about `n` remembered unknown hashes (rounded up to a multiple of 64); 0
    /// disables negative caching.
    #[must_use]
    pub fn with_negative_capacity(self, n: usize) -> Self {
        self.reconfigured(|c| c.negative_capacity = n)
    }

    /// How long an unknown hash is remembered.
    #[must_use]
    pub fn with_negative_ttl(self, ttl: Duration) -> Self {
        self.reconfigured(|c| c.negative_ttl = ttl)
    }

    /// Fails every call to the wrapped store that takes longer than `limit` with
    /// [`StoreError::Timeout`] (503 through the layer). Cache hits are not affected.
    #[must_use]
    pub fn with_timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// The wrapped store.
    #[must_use]
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Number of cached records.
    #[must_use]
    pub fn len(&self) -> usize {
        self.cache.found.len()
    }

    /// True when no record is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of remembered unknown hashes.
    #[must_use]
    pub fn negative_len(&self) -> usize {
        self.cache.unknown.len()
    }

    /// Drops whatever is cached for `hash`: what a listener does for each notification. Use
    /// it to feed the cache from your own invalidation channel.
    pub fn invalidate(&self, hash: &TokenHash) {
        self.cache.invalidate(hash);
    }

    /// Drops everything cached.
    pub fn flush(&self) {
        self.cache.flush();
    }

    /// Subscribes to [`postgres::REVOCATION_CHANNEL`](super::postgres::REVOCATION_CHANNEL)
    /// with `LISTEN` on a connection from `pool` (the [`PostgresStore`](super::postgres::PostgresStore)'s
    /// [`pool`](super::postgres::PostgresStore::pool)) and drops each revoked or rotated
    /// token from this cache. Needs a Tokio runtime. Until the listener has subscribed, and
    /// whenever it loses its connection, the cache is flushed and bypassed; it reconnects by
    /// itself with a backoff of up to 5 s.
    #[cfg(feature = "postgres")]
    pub fn listen_postgres(&self, pool: sqlx::PgPool) -> RevocationListener {
        RevocationListener::spawn(self.cache.clone(), |cache, state| {
            pg::listen(cache, pool, state)
        })
    }

    /// Subscribes to the Redis pub/sub `channel` (a [`RedisStore`](super::redis::RedisStore)'s
    /// [`revocation_channel`](super::redis::RedisStore::revocation_channel)) with a
    /// connection of its own from `client`, and drops each revoked or rotated token from
    /// this cache. Same connection-loss rules as
    /// [`listen_postgres`](Self::listen_postgres).
    #[cfg(feature = "redis")]
    pub fn listen_redis(
        &self,
        client: ::redis::Client,
        channel: impl Into<String>,
    ) -> RevocationListener {
        let channel = channel.into();
        RevocationListener::spawn(self.cache.clone(), |cache, state| {
            rd::listen(cache, client, channel, state)
        })
    }

    async fn call<T>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        bounded(self.timeout, fut).await
    }
}

#[async_trait]
impl<S: TokenStore> TokenStore for CachedStore<S> {
    async fn insert(&self, record: TokenRecord, rules: InsertRules) -> Result<(), StoreError> {
        let hash = record.hash;
        let res = self.call(self.inner.insert(record, rules)).await;
        self.cache.invalidate(&hash);
        res
    }

    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        match self.cache.lookup(hash) {
            Cached::Found(rec) => return Ok(Some(rec)),
            Cached::Unknown => return Ok(None),
            Cached::Miss => {}
        }
        let epoch = self.cache.epoch();
        let found = self.call(self.inner.find_by_hash(hash)).await?;
        self.cache.put(*hash, found.as_ref(), epoch);
        Ok(found)
    }

    fn find_by_hash_now(
        &self,
        hash: &TokenHash,
    ) -> Option<Result<Option<Arc<TokenRecord>>, StoreError>> {
        match self.cache.lookup(hash) {
            Cached::Found(rec) => Some(Ok(Some(rec))),
            Cached::Unknown => Some(Ok(None)),
            Cached::Miss => {
                // Filled exactly as the async path does, under the same epoch rule.
                let epoch = self.cache.epoch();
                let found = self.inner.find_by_hash_now(hash)?;
                if let Ok(f) = &found {
                    self.cache.put(*hash, f.as_ref(), epoch);
                }
                Some(found)
            }
        }
    }

    async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, StoreError> {
        self.call(self.inner.get(id)).await
    }

    async fn list_by_owner(&self, owner: &str) -> Result<Vec<TokenRecord>, StoreError> {
        self.call(self.inner.list_by_owner(owner)).await
    }

    async fn revoke(&self, id: &TokenId, at: OffsetDateTime) -> Result<bool, StoreError> {
        let res = self.call(self.inner.revoke(id, at)).await;
        // Also on error or timeout: the revoke may have committed.
        self.cache.invalidate_id(id);
        res
    }

    async fn rotate(
        &self,
        old: &TokenId,
        new: TokenRecord,
        old_expires_at: OffsetDateTime,
        rules: InsertRules,
    ) -> Result<RotateOutcome, StoreError> {
        let hash = new.hash;
        let res = self
            .call(self.inner.rotate(old, new, old_expires_at, rules))
            .await;
        self.cache.invalidate_id(old);
        self.cache.invalidate(&hash);
        match &res {
            // The predecessor whose grace ended must not live on in the cache.
            Ok(out) => self
                .cache
                .invalidate_ids(&out.ended.iter().copied().collect()),
            Err(StoreError::NotFound | StoreError::LimitReached | StoreError::Duplicate) => {}
            // The change may have committed, ending a predecessor we cannot name.
            Err(_) => self.cache.flush(),
        }
        res
    }

    async fn record_use(&self, uses: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError> {
        // Cached records keep their `last_used_at` until they leave the cache; the usage
        // batching only uses it to skip redundant writes.
        self.call(self.inner.record_use(uses)).await
    }

    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        // Purged records are expired or revoked: cached copies are refused anyway and
        // leave the cache with their TTL.
        self.call(self.inner.purge_expired(now)).await
    }

    async fn bind(
        &self,
        id: &TokenId,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        let res = self.call(self.inner.bind(id, fingerprint, now)).await;
        // A cached copy may still read "unbound": drop it once the token is bound to this
        // caller, so its next requests match the binding without asking the store. (A
        // caller bound elsewhere leaves the cache alone: it asks the store every time.)
        if res
            .as_ref()
            .map_or(true, |b| b.as_deref() == Some(fingerprint))
        {
            self.cache.invalidate_id(id);
        }
        res
    }

    async fn release(
        &self,
        id: &TokenId,
        now: OffsetDateTime,
        min_interval: Duration,
    ) -> Result<ReleaseOutcome, StoreError> {
        let res = self.call(self.inner.release(id, now, min_interval)).await;
        self.cache.invalidate_id(id);
        res
    }

    async fn expire_inactive(
        &self,
        cutoff: OffsetDateTime,
        now: OffsetDateTime,
        release_kinds: &[String],
    ) -> Result<InactiveOutcome, StoreError> {
        let res = self
            .call(self.inner.expire_inactive(cutoff, now, release_kinds))
            .await;
        match &res {
            Ok(out) => self
                .cache
                .invalidate_ids(&out.revoked.iter().chain(&out.released).copied().collect()),
            // The change may have committed: forget everything.
            Err(_) => self.cache.flush(),
        }
        res
    }
}

/// What a listener task reports.
#[derive(Default)]
struct ListenerState {
    connected: AtomicBool,
    changed: tokio::sync::Notify,
}

#[cfg(any(feature = "postgres", feature = "redis"))]
impl ListenerState {
    /// Subscribed: flush what was cached while notifications could be missed, resume.
    fn up(&self, cache: &Cache) {
        cache.flush();
        cache.bypass.store(false, Ordering::Release);
        self.connected.store(true, Ordering::Release);
        self.changed.notify_waiters();
        tracing::info!("revocation listener subscribed; cache enabled");
    }

    /// Lost: notifications may be missed from now on; stop serving from the cache.
    fn down(&self, cache: &Cache) {
        cache.bypass.store(true, Ordering::Release);
        cache.flush();
        if self.connected.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                "revocation listener lost its connection; cache flushed and bypassed until it reconnects"
            );
        }
        self.changed.notify_waiters();
    }
}

/// Applies one notification payload: the hex SHA-256 of a changed token.
#[cfg(any(feature = "postgres", feature = "redis"))]
fn on_payload(cache: &Cache, payload: &str) {
    match TokenHash::from_hex(payload) {
        Ok(hash) => cache.invalidate(&hash),
        Err(_) => {
            tracing::warn!("unexpected revocation notification payload; flushing the cache");
            cache.flush();
        }
    }
}

/// The task that keeps a [`CachedStore`] in step with revocations made on other instances.
/// Dropping it (or calling [`stop`](Self::stop)) stops the task, flushes the cache and
/// returns it to TTL-only staleness.
#[must_use = "dropping the listener stops it"]
pub struct RevocationListener {
    task: tokio::task::JoinHandle<()>,
    state: Arc<ListenerState>,
    cache: Arc<Cache>,
}

impl std::fmt::Debug for RevocationListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationListener")
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl RevocationListener {
    #[cfg(any(feature = "postgres", feature = "redis"))]
    fn spawn<F, Fut>(cache: Arc<Cache>, run: F) -> Self
    where
        F: FnOnce(Arc<Cache>, Arc<ListenerState>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let state = Arc::new(ListenerState::default());
        cache.bypass.store(true, Ordering::Release);
        cache.flush();
        let task = tokio::spawn(run(cache.clone(), state.clone()));
        Self { task, state, cache }
    }

    /// True while subscribed (and the cache in use).
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.state.connected.load(Ordering::Acquire)
    }

    /// Waits until the listener is subscribed, at most `limit`; returns whether it is.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.state.changed.notified();
            if self.is_connected() {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.is_connected();
            }
        }
    }

    /// Stops the listener (the same as dropping it).
    pub fn stop(self) {}
}

impl Drop for RevocationListener {
    fn drop(&mut self) {
        self.task.abort();
        self.cache.flush();
        self.cache.bypass.store(false, Ordering::Release);
    }
}

#[cfg(any(feature = "postgres", feature = "redis"))]
async fn backoff(delay: &mut Duration) {
    tokio::time::sleep(*delay).await;
    *delay = (*delay * 2).min(MAX_BACKOFF);
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use crate::store::postgres::REVOCATION_CHANNEL;
    use sqlx::postgres::PgListener;

    pub(super) async fn listen(cache: Arc<Cache>, pool: sqlx::PgPool, state: Arc<ListenerState>) {
        // Heartbeats go to a channel of this listener's own, so instances do not wake each
        // other up.
        let heartbeat = format!("keygate_hb_{}", uuid::Uuid::new_v4().simple());
        let mut delay = Duration::from_millis(100);
        loop {
            match subscribe(&pool, &heartbeat).await {
                Ok(mut listener) => {
                    state.up(&cache);
                    delay = Duration::from_millis(100);
                    let beat = tokio::spawn(beat(pool.clone(), heartbeat.clone()));
                    // Ends on a lost connection, an error, or silence past the deadline
                    // (the heartbeat arrives every 5 s on a live connection).
                    while let Ok(Ok(Some(n))) =
                        tokio::time::timeout(HEARTBEAT_DEADLINE, listener.try_recv()).await
                    {
                        if n.channel() == REVOCATION_CHANNEL {
                            on_payload(&cache, n.payload());
                        }
                    }
                    beat.abort();
                    state.down(&cache);
                }
                Err(error) => {
                    state.down(&cache);
                    tracing::warn!(%error, "revocation listener cannot subscribe; retrying");
                }
            }
            backoff(&mut delay).await;
        }
    }

    async fn subscribe(pool: &sqlx::PgPool, heartbeat: &str) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.eager_reconnect(false);
        listener.listen(REVOCATION_CHANNEL).await?;
        listener.listen(heartbeat).await?;
        Ok(listener)
    }

    async fn beat(pool: sqlx::PgPool, channel: String) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tick.tick().await;
            let _ = tokio::time::timeout(
                HEARTBEAT,
                sqlx::query("SELECT pg_notify($1, '')")
                    .bind(&channel)
                    .execute(&pool),
            )
            .await;
        }
    }
}

#[cfg(feature = "redis")]
mod rd {
    use super::*;
    use futures_util::StreamExt;

    pub(super) async fn listen(
        cache: Arc<Cache>,
        client: ::redis::Client,
        channel: String,
        state: Arc<ListenerState>,
    ) {
        let mut delay = Duration::from_millis(100);
        loop {
            match subscribe(&client, &channel).await {
                Ok(pubsub) => {
                    let (mut sink, mut stream) = pubsub.split();
                    state.up(&cache);
                    delay = Duration::from_millis(100);
                    let mut tick = tokio::time::interval(HEARTBEAT);
                    loop {
                        tokio::select! {
                            msg = stream.next() => match msg {
                                Some(msg) => {
                                    if let Ok(payload) = msg.get_payload::<String>() {
                                        on_payload(&cache, &payload);
                                    } else {
                                        cache.flush();
                                    }
                                }
                                None => break,
                            },
                            _ = tick.tick() => {
                                let ping = tokio::time::timeout(
                                    HEARTBEAT_DEADLINE,
                                    sink.ping::<::redis::Value>(),
                                )
                                .await;
                                if !matches!(ping, Ok(Ok(_))) {
                                    break;
                                }
                            }
                        }
                    }
                    state.down(&cache);
                }
                Err(error) => {
                    state.down(&cache);
                    tracing::warn!(%error, "revocation listener cannot subscribe; retrying");
                }
            }
            backoff(&mut delay).await;
        }
    }

    async fn subscribe(
        client: &::redis::Client,
        channel: &str,
    ) -> ::redis::RedisResult<::redis::aio::PubSub> {
        let connect = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok(pubsub)
        };
        tokio::time::timeout(HEARTBEAT_DEADLINE, connect)
            .await
            .unwrap_or_else(|_| {
                Err(::redis::RedisError::from((
                    ::redis::ErrorKind::Io,
                    "timed out subscribing",
                )))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::record;

    #[test]
    fn a_record_that_admits_no_one_is_cached_like_an_unknown_hash() {
        let config = Config {
            capacity: 64,
            ttl: Duration::from_secs(30),
            negative_capacity: 64,
            negative_ttl: Duration::from_secs(5),
        };
        let cache = Cache::new(&config);
        let now = OffsetDateTime::now_utc();
        let valid = record("alice", "ci", now);
        assert_eq!(cache.found_ttl(&valid), Some(Duration::from_secs(30)));

        let mut revoked = valid.clone();
        revoked.revoked_at = Some(now);
        assert_eq!(cache.found_ttl(&revoked), Some(Duration::from_secs(5)));

        let mut expired = valid.clone();
        expired.expires_at = Some(now - time::Duration::seconds(1));
        assert_eq!(cache.found_ttl(&expired), Some(Duration::from_secs(5)));

        // Valid for 10 more seconds (a rotation's grace, say): cached until then only.
        let mut expiring = valid.clone();
        expiring.expires_at = Some(now + time::Duration::seconds(10));
        let ttl = cache.found_ttl(&expiring).unwrap();
        assert!(ttl <= Duration::from_secs(10), "{ttl:?}");

        // Without negative caching, a dead record is not cached at all.
        let off = Cache::new(&Config {
            negative_capacity: 0,
            ..config
        });
        assert_eq!(off.found_ttl(&revoked), None);
        assert_eq!(off.found_ttl(&valid), Some(Duration::from_secs(30)));
    }
}
