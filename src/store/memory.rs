use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{
    InactiveOutcome, InsertRules, ReleaseOutcome, StoreError, TokenId, TokenRecord, TokenStore,
};
use crate::token::TokenHash;

const SHARDS: usize = 64;

/// Hashes a [`TokenHash`] by its first 8 bytes: SHA-256 output is already uniform, and the
/// keys are digests of server-generated secrets, which an attacker cannot choose.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = RwLock<HashMap<TokenHash, Arc<TokenRecord>, BuildHasherDefault<DigestHasher>>>;

/// The in-process [`TokenStore`]: nothing survives a restart.
///
/// Lookups by hash take a read lock on one of 64 shards chosen by the digest, so concurrent
/// verifications do not serialise on one lock. Writes (insert, revoke, rotate, record use,
/// purge) go through one mutex, which makes the insert checks atomic. Clones share the same
/// data.
///
/// ```
/// # tokio_test_block_on(async {
/// use keygate::{MemoryStore, Tokens, NewToken};
///
/// let tokens = Tokens::new(MemoryStore::new());
/// let issued = tokens.issue(NewToken::new("alice", "ci")).await.unwrap();
/// let identity = tokens.authenticate(issued.token.expose_secret()).await.unwrap();
/// assert_eq!(identity.owner(), "alice");
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Shard]>,
    index: Mutex<Index>,
}

#[derive(Default)]
struct Index {
    by_id: HashMap<TokenId, TokenHash>,
    by_owner: HashMap<String, Vec<TokenId>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("tokens", &self.len())
            .finish()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Shard::default()).collect(),
                index: Mutex::new(Index::default()),
            }),
        }
    }

    /// Number of records held, in any state.
    #[must_use]
    pub fn len(&self) -> usize {
        self.index().by_id.len()
    }

    /// True when the store holds no record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Inserts a record without any check, for bulk loading (benchmarks, imports).
    ///
    /// # Errors
    ///
    /// [`StoreError::Duplicate`] when the id or hash is already present.
    pub fn insert_unchecked(&self, record: TokenRecord) -> Result<(), StoreError> {
        let mut index = self.index();
        self.put_new(&mut index, record)
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.inner
            .index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn shard(&self, hash: &TokenHash) -> &Shard {
        // Byte 8 is not among the bytes the map hashes on.
        &self.inner.shards[usize::from(hash.as_bytes()[8]) % SHARDS]
    }

    fn record(&self, hash: &TokenHash) -> Option<Arc<TokenRecord>> {
        read(self.shard(hash)).get(hash).cloned()
    }

    fn put_new(&self, index: &mut Index, record: TokenRecord) -> Result<(), StoreError> {
        if index.by_id.contains_key(&record.id) || self.record(&record.hash).is_some() {
            return Err(StoreError::Duplicate);
        }
        index.by_id.insert(record.id, record.hash);
        index
            .by_owner
            .entry(record.owner.clone())
            .or_default()
            .push(record.id);
        write(self.shard(&record.hash)).insert(record.hash, Arc::new(record));
        Ok(())
    }

    /// Replaces the record with id `id` by `f(record)`, under the index lock.
    fn update(
        &self,
        index: &Index,
        id: &TokenId,
        f: impl FnOnce(&mut TokenRecord) -> bool,
    ) -> Option<bool> {
        let hash = index.by_id.get(id)?;
        let mut shard = write(self.shard(hash));
        let slot = shard.get_mut(hash)?;
        let mut rec = TokenRecord::clone(slot);
        let changed = f(&mut rec);
        if changed {
            *slot = Arc::new(rec);
        }
        Some(changed)
    }

    fn owner_records(&self, index: &Index, owner: &str) -> Vec<Arc<TokenRecord>> {
        index
            .by_owner
            .get(owner)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| index.by_id.get(id))
                    .filter_map(|h| self.record(h))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn insert(&self, record: TokenRecord, rules: InsertRules) -> Result<(), StoreError> {
        let mut index = self.index();
        let live: Vec<_> = self
            .owner_records(&index, &record.owner)
            .into_iter()
            .filter(|r| r.is_live_at(rules.now))
            .collect();
        if live.iter().any(|r| r.name == record.name) {
            return Err(StoreError::NameTaken);
        }
        if let Some(max) = rules.max_live {
            let counted = live
                .iter()
                .filter(|r| !rules.per_kind || r.kind == record.kind)
                .count();
            if counted >= max as usize {
                return Err(StoreError::LimitReached);
            }
        }
        self.put_new(&mut index, record)
    }

    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        Ok(self.record(hash))
    }

    fn find_by_hash_now(
        &self,
        hash: &TokenHash,
    ) -> Option<Result<Option<Arc<TokenRecord>>, StoreError>> {
        Some(Ok(self.record(hash)))
    }

    async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, StoreError> {
        let index = self.index();
        Ok(index
            .by_id
            .get(id)
            .and_then(|h| self.record(h))
            .map(|r| TokenRecord::clone(&r)))
    }

    async fn list_by_owner(&self, owner: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let index = self.index();
        let mut v: Vec<TokenRecord> = self
            .owner_records(&index, owner)
            .into_iter()
            .map(|r| TokenRecord::clone(&r))
            .collect();
        v.sort_by_key(|r| r.created_at);
        Ok(v)
    }

    async fn revoke(&self, id: &TokenId, at: OffsetDateTime) -> Result<bool, StoreError> {
        let index = self.index();
        Ok(self
            .update(&index, id, |r| {
                if r.revoked_at.is_some() {
                    return false;
                }
                r.revoked_at = Some(at);
                true
            })
            .unwrap_or(false))
    }

    async fn rotate(
        &self,
        old: &TokenId,
        new: TokenRecord,
        old_expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut index = self.index();
        let old_hash = *index.by_id.get(old).ok_or(StoreError::NotFound)?;
        let old_rec = self.record(&old_hash).ok_or(StoreError::NotFound)?;
        if !old_rec.is_live_at(now) {
            return Err(StoreError::NotFound);
        }
        if index.by_id.contains_key(&new.id) || self.record(&new.hash).is_some() {
            return Err(StoreError::Duplicate);
        }
        let new_id = new.id;
        self.put_new(&mut index, new)?;
        self.update(&index, old, |r| {
            r.replaced_by = Some(new_id);
            r.expires_at = Some(
                r.expires_at
                    .map_or(old_expires_at, |e| e.min(old_expires_at)),
            );
            true
        });
        Ok(())
    }

    async fn record_use(&self, uses: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError> {
        let index = self.index();
        for (id, at) in uses {
            self.update(&index, id, |r| {
                if r.last_used_at.is_some_and(|t| t >= *at) {
                    return false;
                }
                r.last_used_at = Some(*at);
                true
            });
        }
        Ok(())
    }

    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut index = self.index();
        let mut removed: Vec<TokenRecord> = Vec::new();
        for shard in self.inner.shards.iter() {
            write(shard).retain(|_, r| {
                let dead = r.revoked_at.is_some_and(|t| t <= now)
                    || r.expires_at.is_some_and(|t| t <= now);
                if dead {
                    removed.push(TokenRecord::clone(r));
                }
                !dead
            });
        }
        for r in &removed {
            index.by_id.remove(&r.id);
            if let Some(ids) = index.by_owner.get_mut(&r.owner) {
                ids.retain(|id| *id != r.id);
                if ids.is_empty() {
                    index.by_owner.remove(&r.owner);
                }
            }
        }
        Ok(removed.len() as u64)
    }

    async fn bind(
        &self,
        id: &TokenId,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        let index = self.index();
        let mut bound = None;
        self.update(&index, id, |r| {
            if let Some(b) = &r.bound_to {
                bound = Some(b.clone());
                return false;
            }
            r.bound_to = Some(fingerprint.to_owned());
            r.bound_at = Some(now);
            bound = Some(fingerprint.to_owned());
            true
        });
        Ok(bound)
    }

    async fn release(
        &self,
        id: &TokenId,
        now: OffsetDateTime,
        min_interval: std::time::Duration,
    ) -> Result<ReleaseOutcome, StoreError> {
        let index = self.index();
        let mut outcome = ReleaseOutcome::NotBound;
        self.update(&index, id, |r| {
            outcome = release_outcome(r, now, min_interval);
            if outcome != ReleaseOutcome::Released {
                return false;
            }
            r.bound_to = None;
            r.bound_at = None;
            r.released_at = Some(now);
            true
        })
        .ok_or(StoreError::NotFound)?;
        Ok(outcome)
    }

    async fn expire_inactive(
        &self,
        cutoff: OffsetDateTime,
        now: OffsetDateTime,
        release_kinds: &[String],
    ) -> Result<InactiveOutcome, StoreError> {
        let index = self.index();
        let mut out = InactiveOutcome::default();
        for id in index.by_id.keys() {
            self.update(&index, id, |r| {
                if !r.is_valid_at(now) || r.last_active_at() >= cutoff {
                    return false;
                }
                if release_kinds.contains(&r.kind) {
                    if r.bound_to.is_none() {
                        return false;
                    }
                    r.bound_to = None;
                    r.bound_at = None;
                    out.released.push(r.id);
                } else {
                    r.revoked_at = Some(now);
                    out.revoked.push(r.id);
                }
                true
            });
        }
        Ok(out)
    }
}

/// What a release of `r` at `now` does: the rule every backend applies.
pub(crate) fn release_outcome(
    r: &TokenRecord,
    now: OffsetDateTime,
    min_interval: std::time::Duration,
) -> ReleaseOutcome {
    if r.bound_to.is_none() {
        return ReleaseOutcome::NotBound;
    }
    match r.released_at.map(|t| t + min_interval) {
        Some(next) if next > now => ReleaseOutcome::TooSoon {
            next_allowed_at: next,
        },
        _ => ReleaseOutcome::Released,
    }
}
