//! The cache itself: two bounded, sharded maps with a TTL (found records and unknown
//! hashes) and the epoch rule that keeps a stale answer out after an invalidation.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;

use super::clock;
use crate::record::{TokenId, TokenRecord};
use crate::token::{DigestHasher, TokenHash};

const SHARDS: usize = 64;
/// Entries looked at when a full shard must evict one.
const EVICTION_SAMPLE: usize = 8;

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

/// The state shared by a [`CachedStore`](super::CachedStore), its clones and its listener.
pub(super) struct Cache {
    found: Sharded<Entry>,
    unknown: Sharded<u64>,
    /// Bumped by every invalidation that cannot name its shard (by id, a flush); a lookup
    /// caches its answer only if neither this nor its hash's stripe moved.
    epoch: AtomicU64,
    /// One counter per shard, bumped by an invalidation of a hash in that shard: a steady
    /// stream of revocations of other tokens (other instances, other schemas on one
    /// database) does not keep every lookup's answer out of the cache.
    stripes: Box<[AtomicU64]>,
    /// How many attached listeners are not subscribed (not yet, or no longer, or whose task
    /// ended): while any is, nothing is served from or put into the cache. A count, not a
    /// flag, so that one listener coming up (or being dropped) does not re-enable the cache
    /// while another is still down.
    pub(super) listeners_down: AtomicUsize,
}

/// A snapshot of the invalidation counters that concern one hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Epoch {
    all: u64,
    stripe: u64,
}

pub(super) enum Cached {
    Found(Arc<TokenRecord>),
    Unknown,
    Miss,
}

impl Cache {
    pub(super) fn new(config: &Config) -> Self {
        Self {
            found: Sharded::new(config.capacity, config.ttl),
            unknown: Sharded::new(config.negative_capacity, config.negative_ttl),
            epoch: AtomicU64::new(0),
            stripes: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
            listeners_down: AtomicUsize::new(0),
        }
    }

    /// Number of cached records.
    pub(super) fn found_len(&self) -> usize {
        self.found.len()
    }

    /// Number of remembered unknown hashes.
    pub(super) fn unknown_len(&self) -> usize {
        self.unknown.len()
    }

    pub(super) fn lookup(&self, hash: &TokenHash) -> Cached {
        if self.bypassed() {
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

    /// True while an attached listener is not subscribed.
    pub(super) fn bypassed(&self) -> bool {
        self.listeners_down.load(Ordering::Acquire) > 0
    }

    /// Where the invalidations that concern `hash` stand; taken before a lookup.
    pub(super) fn epoch(&self, hash: &TokenHash) -> Epoch {
        Epoch {
            all: self.epoch.load(Ordering::Acquire),
            stripe: self.stripes[shard_of(hash)].load(Ordering::Acquire),
        }
    }

    /// Caches the answer of a lookup that started at `epoch`, unless an invalidation that
    /// concerns `hash` happened since (or a listener is down).
    pub(super) fn put(&self, hash: TokenHash, found: Option<&Arc<TokenRecord>>, epoch: Epoch) {
        if self.bypassed() {
            return;
        }
        match found {
            Some(rec) => {
                let Some(ttl) = self.found_ttl(rec) else {
                    return;
                };
                let shard = self.found.write(&hash);
                if self.epoch(&hash) != epoch {
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
                if self.epoch(&hash) != epoch {
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
    pub(super) fn found_ttl(&self, rec: &TokenRecord) -> Option<Duration> {
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

    pub(super) fn invalidate(&self, hash: &TokenHash) {
        self.stripes[shard_of(hash)].fetch_add(1, Ordering::AcqRel);
        self.found.remove(hash);
        self.unknown.remove(hash);
    }

    /// Drops every found record with this id (a scan: revocations are rare).
    pub(super) fn invalidate_id(&self, id: &TokenId) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.found.retain(|e| e.record.id != *id);
    }

    /// Drops every found record whose id is in `ids`, in one scan.
    pub(super) fn invalidate_ids(&self, ids: &std::collections::HashSet<TokenId>) {
        if ids.is_empty() {
            return;
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.found.retain(|e| !ids.contains(&e.record.id));
    }

    pub(super) fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.found.clear();
        self.unknown.clear();
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Config {
    pub(super) capacity: usize,
    pub(super) ttl: Duration,
    pub(super) negative_capacity: usize,
    pub(super) negative_ttl: Duration,
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
        revoked.extras_mut().revoked_at = Some(now);
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

    #[test]
    fn only_an_invalidation_that_concerns_a_hash_keeps_its_answer_out() {
        let cache = Cache::new(&Config {
            capacity: 64 * SHARDS,
            ttl: Duration::from_secs(30),
            negative_capacity: 64 * SHARDS,
            negative_ttl: Duration::from_secs(5),
        });
        let hash = TokenHash::from_bytes([1; 32]);
        let mut other = [2; 32];
        other[8] = 3; // another shard
        let other = TokenHash::from_bytes(other);
        assert_ne!(shard_of(&hash), shard_of(&other));
        let rec = Arc::new(record("alice", "ci", OffsetDateTime::now_utc()));

        // Revocations of other tokens while the lookup waited: its answer is cached.
        let epoch = cache.epoch(&hash);
        cache.invalidate(&other);
        cache.put(hash, Some(&rec), epoch);
        assert_eq!(cache.found_len(), 1);

        // The same token invalidated meanwhile: the (maybe stale) answer stays out.
        cache.flush();
        for invalidate in [
            &(|c: &Cache| c.invalidate(&hash)) as &dyn Fn(&Cache),
            &|c: &Cache| c.invalidate_id(&rec.id),
            &|c: &Cache| c.flush(),
        ] {
            let epoch = cache.epoch(&hash);
            invalidate(&cache);
            cache.put(hash, Some(&rec), epoch);
            cache.put(hash, None, epoch);
            assert_eq!(cache.found_len() + cache.unknown_len(), 0);
        }
    }
}
