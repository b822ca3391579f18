//! [`CachedStore`]: a bounded verification cache in front of any [`TokenStore`], with
//! revocation fan-out between instances, and [`TimeoutStore`], which bounds every store call.
//!
//! Only [`find_by_hash`](TokenStore::find_by_hash) — the lookup on every request — is
//! cached. Everything else (insert, get, list, revoke, rotate, update, record use, purge)
//! goes to the wrapped store, and writes drop the entries they change from the local cache
//! before they return, so a revoke (or an edit that narrows a token) applies at once on the
//! instance that made it; other instances hear of an edit as of a revocation.
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
//! The listeners ([`listen`](CachedStore::listen) with a [`RevocationFeed`]; for the
//! built-in stores [`listen_postgres`](CachedStore::listen_postgres),
//! [`listen_redis`](CachedStore::listen_redis)) subscribe to the store's revocation
//! channel. Push is best-effort (PostgreSQL `NOTIFY` and Redis pub/sub are fire and forget),
//! so a listener treats the loss of its connection as a loss of notifications: it flushes
//! the cache, makes every lookup go to the store until it has subscribed again, then flushes
//! once more and resumes caching. A heartbeat on the same connection detects a silently dead
//! connection within 15 s; until then notifications can be missed and the TTL is the bound.
//!
//! A lookup that read the store before a revocation committed cannot put its stale answer
//! back into the cache afterwards: every invalidation bumps an epoch (one per shard of
//! hashes, and one for invalidations by id and flushes), and a lookup only caches its
//! answer if the epochs that concern its hash did not move while it waited.
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
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{
    InactiveOutcome, InsertRules, ReleaseOutcome, RotateOutcome, StoreError, TokenId, TokenRecord,
    TokenStore,
};
use crate::token::TokenHash;

mod cache;
mod clock;
mod feed;

use cache::{Cache, Cached, Config};
pub use feed::{Notice, RevocationFeed, RevocationListener};

pub use super::timeout::TimeoutStore;
use super::timeout::bounded;

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
            .field("cached", &self.cache.found_len())
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
        self.cache.found_len()
    }

    /// True when no record is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of remembered unknown hashes.
    #[must_use]
    pub fn negative_len(&self) -> usize {
        self.cache.unknown_len()
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

    /// Starts a [`RevocationListener`] that applies `feed` to this cache: each token the
    /// feed names is dropped from it. Needs a Tokio runtime. Until the feed has subscribed,
    /// and whenever it loses its subscription, the cache is flushed and bypassed; the
    /// listener subscribes again by itself with a backoff of up to 5 s.
    pub fn listen(&self, feed: impl RevocationFeed) -> RevocationListener {
        RevocationListener::spawn(self.cache.clone(), feed)
    }

    /// Subscribes to [`postgres::REVOCATION_CHANNEL`](super::postgres::REVOCATION_CHANNEL)
    /// with `LISTEN` on a connection from `pool` (the [`PostgresStore`](super::postgres::PostgresStore)'s
    /// [`pool`](super::postgres::PostgresStore::pool)) and drops each revoked or rotated
    /// token from this cache: [`listen`](Self::listen) with a
    /// [`PostgresFeed`](super::postgres::PostgresFeed).
    #[cfg(feature = "postgres")]
    pub fn listen_postgres(&self, pool: sqlx::PgPool) -> RevocationListener {
        self.listen(super::postgres::PostgresFeed::new(pool))
    }

    /// Subscribes to the Redis pub/sub `channel` (a [`RedisStore`](super::redis::RedisStore)'s
    /// [`revocation_channel`](super::redis::RedisStore::revocation_channel)) with a
    /// connection of its own from `client`, and drops each revoked or rotated token from
    /// this cache: [`listen`](Self::listen) with a [`RedisFeed`](super::redis::RedisFeed).
    #[cfg(feature = "redis")]
    pub fn listen_redis(
        &self,
        client: ::redis::Client,
        channel: impl Into<String>,
    ) -> RevocationListener {
        self.listen(super::redis::RedisFeed::new(client, channel))
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
        let epoch = self.cache.epoch(hash);
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
                let epoch = self.cache.epoch(hash);
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

    async fn record_usage(&self, uses: &[super::TokenUse]) -> Result<(), StoreError> {
        // As `record_use`: cached copies keep their last-use details until they leave the
        // cache; lists and views read the store.
        self.call(self.inner.record_usage(uses)).await
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
        kinds: &[String],
        release_kinds: &[String],
    ) -> Result<InactiveOutcome, StoreError> {
        let res = self
            .call(
                self.inner
                    .expire_inactive(cutoff, now, kinds, release_kinds),
            )
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

    async fn claim_expiry_warnings(
        &self,
        before: OffsetDateTime,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        // Passed through; the claimed records' cached copies (whose `expiry_warned_at` is
        // now stale) are dropped. Verification does not read the field, so a failed call
        // leaves the cache as it is.
        let res = self
            .call(self.inner.claim_expiry_warnings(before, now, limit))
            .await;
        if let Ok(claimed) = &res {
            self.cache
                .invalidate_ids(&claimed.iter().map(|r| r.id).collect());
        }
        res
    }

    async fn update(
        &self,
        id: &TokenId,
        update: &super::TokenUpdate,
        now: OffsetDateTime,
    ) -> Result<TokenRecord, StoreError> {
        let res = self.call(self.inner.update(id, update, now)).await;
        // Also on error or timeout: the update may have committed. A narrowed permission or
        // allow-list applies on the next request here; other instances hear of it through
        // their listener, as of a revocation.
        self.cache.invalidate_id(id);
        res
    }

    async fn list_tokens(&self, query: &super::TokenQuery) -> Result<Vec<TokenRecord>, StoreError> {
        self.call(self.inner.list_tokens(query)).await
    }

    async fn rehash(
        &self,
        id: &TokenId,
        from: &TokenHash,
        to: &TokenHash,
    ) -> Result<bool, StoreError> {
        let res = self.call(self.inner.rehash(id, from, to)).await;
        // Also on error or timeout (the change may have committed): the record cached under
        // `from` is stale, and `to` may be cached as unknown (every candidate digest is
        // looked up, so it was, just before).
        self.cache.invalidate(from);
        self.cache.invalidate(to);
        self.cache.invalidate_id(id);
        res
    }
}
