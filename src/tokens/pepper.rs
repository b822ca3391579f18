//! The manager's hasher: which digest a new token is stored under, which digests a
//! presented token is looked up by (the current pepper's, each previous pepper's, the plain
//! SHA-256), and the queue of records to re-hash to the current digest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::store::{StoreError, TokenId, TokenRecord};
use crate::token::{Pepper, TokenHash};

use super::{TokenError, Tokens};

/// Most re-hashes waiting for a flush; more are dropped (and queued again on a later use).
const MAX_PENDING_REHASH: usize = 10_000;

/// How a token is digested for the store.
pub(super) struct Hasher {
    /// `None`: plain SHA-256, the path without a pepper.
    current: Option<Pepper>,
    previous: Vec<Pepper>,
    /// Whether records kept under the plain SHA-256 are still found (with a pepper).
    unpeppered: bool,
}

/// The digests a presented token is looked up by, in order of preference: the digest it
/// would be stored under today first, then the older ones. Without a pepper there is one,
/// and `rest` is empty (no allocation).
pub(crate) struct Digests {
    pub(crate) first: TokenHash,
    pub(crate) rest: Vec<TokenHash>,
}

impl Digests {
    /// The digest at `i` (0: the current one).
    pub(crate) fn get(&self, i: usize) -> Option<&TokenHash> {
        if i == 0 {
            Some(&self.first)
        } else {
            self.rest.get(i - 1)
        }
    }

    /// All digests, the current one first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &TokenHash> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }
}

impl Hasher {
    pub(super) fn new(current: Option<Pepper>, previous: Vec<Pepper>, unpeppered: bool) -> Self {
        Self {
            current,
            previous,
            unpeppered,
        }
    }

    /// Whether a pepper is set.
    pub(super) fn peppered(&self) -> bool {
        self.current.is_some()
    }

    /// The digest a new token is stored under.
    pub(super) fn stored(&self, token: &str) -> TokenHash {
        match &self.current {
            Some(p) => p.digest(token),
            None => TokenHash::of(token),
        }
    }

    /// Every digest a presented token may be stored under.
    ///
    /// Timing: every candidate is computed, always, whichever of them the store holds; the
    /// caller then looks every one of them up (see `Tokens::find_all`). The work done for
    /// a token therefore depends only on the configuration, never on which digest (if any)
    /// matches, so an unknown token and a revoked one found under an old pepper take the
    /// same time.
    pub(super) fn digests(&self, token: &str) -> Digests {
        let Some(current) = &self.current else {
            return Digests {
                first: TokenHash::of(token),
                rest: Vec::new(),
            };
        };
        let mut rest = Vec::with_capacity(self.previous.len() + usize::from(self.unpeppered));
        rest.extend(self.previous.iter().map(|p| p.digest(token)));
        if self.unpeppered {
            rest.push(TokenHash::of(token));
        }
        Digests {
            first: current.digest(token),
            rest,
        }
    }
}

/// What the lookups of every candidate digest found: the index of the digest that matched
/// and its record.
pub(super) type Found = Result<Option<(usize, Arc<TokenRecord>)>, StoreError>;

/// Records found under an older digest, waiting to be re-hashed to the current one.
#[derive(Default)]
pub(super) struct Rehashes {
    pending: Mutex<HashMap<TokenId, (TokenHash, TokenHash)>>,
}

impl Rehashes {
    fn queue(&self, id: TokenId, from: TokenHash, to: TokenHash) {
        let mut m = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if m.len() < MAX_PENDING_REHASH || m.contains_key(&id) {
            m.insert(id, (from, to));
        }
    }

    fn drain(&self) -> Vec<(TokenId, TokenHash, TokenHash)> {
        let mut m = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        m.drain().map(|(id, (from, to))| (id, from, to)).collect()
    }

    fn len(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Tokens {
    /// Looks every candidate digest up, without waiting: `None` when one of them needs I/O.
    /// Returns the index of the first digest whose record was found (checked in constant
    /// time against the digest) and that record.
    pub(super) fn find_all_now(&self, digests: &Digests) -> Option<Found> {
        let mut answers = Vec::with_capacity(digests.rest.len() + 1);
        for d in digests.iter() {
            answers.push(self.inner.store.find_by_hash_now(d));
        }
        let answers: Option<Vec<_>> = answers.into_iter().collect();
        Some(pick(digests, answers?))
    }

    /// Looks every candidate digest up (one after the other, every one of them, whichever
    /// matches: see [`Hasher::digests`]).
    pub(super) async fn find_all(&self, digests: &Digests) -> Found {
        let mut answers = Vec::with_capacity(digests.rest.len() + 1);
        for d in digests.iter() {
            answers.push(self.inner.store.find_by_hash(d).await);
        }
        pick(digests, answers)
    }

    /// Queues the re-hash of a record found under the older digest `digests[index]`.
    pub(super) fn queue_rehash(&self, record: &TokenRecord, digests: &Digests, index: usize) {
        if index == 0 {
            return;
        }
        if let Some(from) = digests.get(index) {
            self.inner.rehashes.queue(record.id, *from, digests.first);
        }
    }

    /// The record of a presented token, in any state, or `None` when it is malformed, of an
    /// unknown kind or not in the store. The token is digested as the verification does
    /// (the current pepper, the previous ones, the plain SHA-256 when allowed), so use this,
    /// never a hash of your own, to find a token someone presents (a leak report, a support
    /// request).
    ///
    /// # Errors
    ///
    /// [`TokenError::Store`].
    pub async fn find_by_token(&self, token: &str) -> Result<Option<TokenRecord>, TokenError> {
        let Ok((_, digests)) = self.prepare(token) else {
            return Ok(None);
        };
        let found = self.find_all(&digests).await?;
        Ok(found.map(|(_, r)| TokenRecord::clone(&r)))
    }

    /// Re-hashes the records found under an older digest (a previous pepper, or the plain
    /// SHA-256) to the current pepper's, with [`TokenStore::rehash`](crate::TokenStore::rehash);
    /// returns how many were re-hashed. [`flush_usage`](Self::flush_usage) (and so the
    /// maintenance task) calls it. A failed batch stays queued for the next flush.
    ///
    /// # Errors
    ///
    /// [`TokenError::Store`].
    pub async fn flush_rehashes(&self) -> Result<usize, TokenError> {
        let batch = self.inner.rehashes.drain();
        let mut done = 0;
        let mut failed = None;
        for (id, from, to) in batch {
            if failed.is_some() {
                self.inner.rehashes.queue(id, from, to);
                continue;
            }
            match self.inner.store.rehash(&id, &from, &to).await {
                Ok(true) => done += 1,
                Ok(false) => {}
                Err(e) => {
                    self.inner.rehashes.queue(id, from, to);
                    failed = Some(e);
                }
            }
        }
        if done > 0 {
            tracing::debug!(rehashed = done, "token digests moved to the current pepper");
        }
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(done),
        }
    }

    /// Number of re-hashes waiting for [`flush_rehashes`](Self::flush_rehashes).
    #[must_use]
    pub fn pending_rehashes(&self) -> usize {
        self.inner.rehashes.len()
    }

    /// Whether the manager digests tokens with a pepper ([`TokensBuilder::pepper`](super::TokensBuilder::pepper)).
    #[must_use]
    pub fn peppered(&self) -> bool {
        self.inner.hasher.peppered()
    }
}

/// The first digest whose lookup found its record; an error from any lookup fails the
/// whole (closed).
fn pick(digests: &Digests, answers: Vec<Result<Option<Arc<TokenRecord>>, StoreError>>) -> Found {
    let mut hit = None;
    let mut error = None;
    for (i, (answer, d)) in answers.into_iter().zip(digests.iter()).enumerate() {
        match answer {
            Ok(Some(r)) if hit.is_none() && r.hash.ct_eq(d) => hit = Some((i, r)),
            Ok(_) => {}
            Err(e) => error = error.or(Some(e)),
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(hit),
    }
}
