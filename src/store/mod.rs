//! The [`TokenStore`] trait every backend implements, the [`TokenRecord`] it keeps, and
//! [`MemoryStore`], the in-process default.
//!
//! Stores are data-only: they never see a token in clear and never decide whether a token is
//! valid. The core hashes the presented token, asks the store for the record with that hash,
//! compares the digests in constant time and checks expiry and revocation itself.
//!
//! | backend | feature | for |
//! | --- | --- | --- |
//! | [`MemoryStore`] | default | one process, tests; nothing survives a restart |
//! | `SqliteStore` | `sqlite` | one instance with an embedded file |
//! | `postgres::PostgresStore` | `postgres` | many instances: the shared source of truth |
//! | `redis::RedisStore` | `redis` | many instances (read its durability caveat) |
//!
//! [`cached::CachedStore`] puts a bounded verification cache with revocation fan-out in
//! front of any of them: a backend that can tell other instances of its changes offers a
//! [`cached::RevocationFeed`] (the PostgreSQL and Redis stores do, beside their store);
//! [`timeout::TimeoutStore`] bounds every call (503, never a hang), and [`timeout`] has the
//! same bound for account stores and permission resolvers.
//!
//! A backend of your own implements [`TokenStore`] (and, to share a cache across
//! instances, a [`cached::RevocationFeed`]), builds records with [`TokenRecord::builder`]
//! (or keeps them as documents: feature `serde`), and may leave out the optional methods:
//! they then answer [`StoreError::Unsupported`] and what needs them fails closed (503).
//! [`TokenStore::record_usage`] has a default that records the times of uses only.
//! Every backend should pass the conformance suite in `conformance` (feature `test-util`):
//! `run_core` checks the required methods only, `run` every guarantee written on the trait.
//! `examples/kv_store.rs` is a whole store over a key-value table, in about 200 lines.

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::token::TokenHash;

mod admin;
mod memory;
pub use admin::{TokenQuery, TokenUpdate};
pub use memory::MemoryStore;

pub mod cached;
#[cfg(any(feature = "postgres", feature = "redis"))]
mod redact;
#[cfg(any(feature = "postgres", feature = "redis"))]
pub use redact::redact_url;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
mod codec;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
pub mod rules;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod timeout;
mod usage;
pub(crate) use usage::same_agent;
pub use usage::{TokenUse, clean_user_agent};

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;

pub use crate::error::StoreError;
pub use crate::record::{TokenExtras, TokenId, TokenRecord};
pub use rules::InsertRules;

/// What [`TokenStore::release`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// The binding was cleared; the next first use binds the token again.
    Released,
    /// The token was not bound: nothing changed (and no release was counted).
    NotBound,
    /// The last release was less than the minimum interval ago: nothing changed.
    TooSoon {
        /// The first instant at which a release is allowed again.
        next_allowed_at: OffsetDateTime,
    },
}

impl ReleaseOutcome {
    /// The release rule, the one every store applies: what a release at `now` of a token
    /// that is `bound` (or not), whose binding was last released by hand at `released_at`,
    /// does with a minimum interval of `min_interval` between releases.
    /// [`Released`](Self::Released) means the store clears the binding and sets
    /// `released_at` to `now`.
    #[must_use]
    pub fn judge(
        bound: bool,
        released_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
        min_interval: std::time::Duration,
    ) -> Self {
        if !bound {
            return Self::NotBound;
        }
        let next = released_at.map(|t| {
            time::Duration::try_from(min_interval)
                .ok()
                .and_then(|d| t.checked_add(d))
                // An interval past the calendar: never again.
                .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
        });
        match next {
            Some(next) if next > now => Self::TooSoon {
                next_allowed_at: next,
            },
            _ => Self::Released,
        }
    }
}

/// What [`TokenStore::rotate`] changed besides the rotated pair. Non-exhaustive: build it
/// with [`new`](Self::new) (or `default()`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotateOutcome {
    /// Predecessors of the rotated token that were still in their grace window and whose
    /// grace this rotation ended (a lineage keeps at most one token in grace).
    pub ended: Vec<TokenId>,
}

impl RotateOutcome {
    /// A rotation that ended the grace of `ended`.
    #[must_use]
    pub fn new(ended: Vec<TokenId>) -> Self {
        Self { ended }
    }
}

/// What [`TokenStore::expire_inactive`] changed. Non-exhaustive: build it with
/// [`new`](Self::new) (or `default()`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InactiveOutcome {
    /// Tokens revoked for inactivity.
    pub revoked: Vec<TokenId>,
    /// Tokens of binding kinds whose binding was released for inactivity.
    pub released: Vec<TokenId>,
}

impl InactiveOutcome {
    /// An expiry that revoked `revoked` and released the bindings of `released`.
    #[must_use]
    pub fn new(revoked: Vec<TokenId>, released: Vec<TokenId>) -> Self {
        Self { revoked, released }
    }
}

/// Persistence for token records. Implement it to keep tokens anywhere; run the conformance
/// suite (feature `test-util`) to check the guarantees below.
///
/// Definitions used below: a record is *valid* at `now` when it is not revoked and its
/// `expires_at` is unset or later than `now`; it is *live* when it is valid and not replaced
/// (see [`TokenRecord::is_live_at`]).
///
/// # Guarantees a backend must keep
///
/// - [`insert`](Self::insert) is atomic with its checks: it fails with
///   [`StoreError::NameTaken`] when the owner has a live token with the same name, and with
///   [`StoreError::LimitReached`] when the owner already has `max_live` valid tokens (of
///   the same kind when `per_kind`), even under any number of concurrent inserts for the
///   same owner (no check-then-insert race). Expired, revoked and replaced tokens hold no
///   name; expired and revoked ones count against no limit, while a replaced token counts
///   until its grace window ends (it still authenticates).
/// - [`find_by_hash`](Self::find_by_hash) returns the record whatever its state (the core
///   decides); it never compares secrets itself beyond the index lookup.
/// - [`revoke`](Self::revoke) is terminal: a revoked record is never valid again, and the
///   revocation is visible to every later `find_by_hash` once `revoke` has returned.
/// - [`rotate`](Self::rotate) is atomic with its checks: either the old record is marked
///   replaced (with its new expiry), its own predecessor's grace ended and the new record
///   inserted, or nothing changes. A lineage (a token and the tokens it replaced) holds at
///   most one replaced token in grace, and a rotation that leaves the old token in grace
///   respects `max_live` like an insert, even under concurrent rotations and inserts.
/// - [`record_use`](Self::record_use) only moves `last_used_at` forward;
///   [`record_usage`](Self::record_usage) too, and sets the last use's client address and
///   agent only with a `last_used_at` it moves forward (both together, from the same use).
/// - [`bind`](Self::bind) is atomic: of any number of concurrent first uses with different
///   fingerprints, exactly one binds the token, and every call returns the fingerprint the
///   token is bound to afterwards (so all the others learn they lost).
/// - [`release`](Self::release) is atomic with its interval check: two concurrent releases
///   within the interval clear the binding once.
/// - [`expire_inactive`](Self::expire_inactive) changes only records of the kinds it names
///   whose last sign of life ([`TokenRecord::last_active_at`]) is before the cutoff, judged atomically per
///   record, so a token used (or bound) after the cutoff is never revoked by it.
/// - [`claim_expiry_warnings`](Self::claim_expiry_warnings) claims each record once: of
///   any number of concurrent claims (from one instance or many), each record is returned
///   by at most one, and never again once claimed.
/// - [`update`](Self::update) is atomic with its checks: it changes only a record live at
///   `now`, and fails with [`StoreError::NameTaken`] when another live token of the owner
///   holds the new name, under any number of concurrent inserts, rotations and updates
///   (the same guarantee as insert). It is announced like a revocation where the backend
///   publishes those, so that caches on every instance drop the old record (a narrowed
///   permission or allow-list applies on the next request).
/// - [`list_tokens`](Self::list_tokens) answers exactly the records
///   [`TokenQuery::matches`] accepts, in `(created_at, id)` order, at most `limit`: paging
///   with the last record's position as the next cursor visits every record present for
///   the whole walk once, whatever is inserted meanwhile.
/// - [`rehash`](Self::rehash) is a compare-and-set: the record's digest changes only if it
///   is still `from`, and afterwards `find_by_hash(to)` finds it and `find_by_hash(from)`
///   does not.
/// - Acknowledged writes are durable to the degree the backend documents.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Inserts a new record, enforcing `rules` atomically.
    ///
    /// # Errors
    ///
    /// [`StoreError::NameTaken`], [`StoreError::LimitReached`], [`StoreError::Duplicate`] or
    /// a backend failure.
    async fn insert(&self, record: TokenRecord, rules: InsertRules) -> Result<(), StoreError>;

    /// The record whose hash is `hash`, in any state.
    ///
    /// # Errors
    ///
    /// Backend failures only; an unknown hash is `Ok(None)`.
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<Arc<TokenRecord>>, StoreError>;

    /// [`find_by_hash`](Self::find_by_hash) without waiting, for stores that can answer
    /// from memory (an in-process map, a cache hit): `Some(answer)`, or `None` when the
    /// answer needs I/O (the caller then awaits `find_by_hash`). The layer uses it to verify
    /// without allocating a future. The default, `None`, is always correct; an
    /// implementation must give the same answer `find_by_hash` would.
    fn find_by_hash_now(
        &self,
        hash: &TokenHash,
    ) -> Option<Result<Option<Arc<TokenRecord>>, StoreError>> {
        let _ = hash;
        None
    }

    /// The record with id `id`, in any state.
    ///
    /// # Errors
    ///
    /// Backend failures only.
    async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, StoreError>;

    /// All records of `owner` (in any state), oldest first.
    ///
    /// # Errors
    ///
    /// Backend failures only.
    async fn list_by_owner(&self, owner: &str) -> Result<Vec<TokenRecord>, StoreError>;

    /// Marks the record revoked at `at`. Returns `false` when there is no such record or it
    /// was already revoked.
    ///
    /// # Errors
    ///
    /// Backend failures only.
    async fn revoke(&self, id: &TokenId, at: OffsetDateTime) -> Result<bool, StoreError>;

    /// Atomically, judged at `rules.now`:
    ///
    /// 1. fails with [`StoreError::NotFound`] unless `old` is live;
    /// 2. ends the grace of `old`'s predecessors: every valid record whose `replaced_by` is
    ///    `old` gets `expires_at = rules.now` (they are returned in
    ///    [`RotateOutcome::ended`], and announced like a revocation where the backend
    ///    publishes those);
    /// 3. when `old` stays valid after the call (`old_expires_at` later than `rules.now`)
    ///    and no predecessor was ended, the owner gains a valid token: fails with
    ///    [`StoreError::LimitReached`] if the owner already has `rules.max_live` valid
    ///    tokens (of `new`'s kind when `rules.per_kind`), as [`insert`](Self::insert) does.
    ///    Otherwise the count does not grow and no limit applies;
    /// 4. marks `old` replaced by `new.id`, sets its `expires_at` to the earlier of its
    ///    current expiry and `old_expires_at`, and inserts `new` (which keeps the old name).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::LimitReached`], [`StoreError::Duplicate`];
    /// backend failures.
    async fn rotate(
        &self,
        old: &TokenId,
        new: TokenRecord,
        old_expires_at: OffsetDateTime,
        rules: InsertRules,
    ) -> Result<RotateOutcome, StoreError>;

    /// Records last use times, batched by the caller. For each pair, sets `last_used_at` to
    /// the later of its current value and the given time; unknown ids are ignored.
    ///
    /// # Errors
    ///
    /// Backend failures only.
    async fn record_use(&self, uses: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError>;

    /// Records uses with their client details, batched by the caller (the manager calls
    /// this one). For each use whose time is later than the record's `last_used_at` (or
    /// when it has none), sets `last_used_at` to it and `last_used_ip` and
    /// `last_used_agent` to the use's (clearing them when the use has none); a use that is
    /// not later changes nothing. Several uses of one id in a batch: the latest wins.
    /// Unknown ids are ignored.
    ///
    /// The default calls [`record_use`](Self::record_use) without the details, so a store
    /// written before this method keeps working (its records show no address or agent).
    ///
    /// # Errors
    ///
    /// Backend failures only.
    async fn record_usage(&self, uses: &[TokenUse]) -> Result<(), StoreError> {
        let times: Vec<(TokenId, OffsetDateTime)> = uses.iter().map(|u| (u.id, u.at)).collect();
        self.record_use(&times).await
    }

    /// Deletes every record that expired or was revoked at or before `now`; returns how many.
    ///
    /// # Errors
    ///
    /// Backend failures only.
    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError>;

    /// Binds the record `id` to `fingerprint` at `now` if it is not bound yet (setting
    /// `bound_to` and `bound_at`), atomically. Returns the fingerprint the record is bound to
    /// afterwards — `fingerprint` when this call bound it or it was already bound to it,
    /// another one when someone else holds it — or `None` when there is no such record.
    ///
    /// The default returns [`StoreError::Unsupported`] (tokens of binding kinds are then
    /// refused with 503): implement it to use bindings.
    ///
    /// # Errors
    ///
    /// Backend failures.
    async fn bind(
        &self,
        id: &TokenId,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        let _ = (id, fingerprint, now);
        Err(StoreError::Unsupported("bindings"))
    }

    /// Clears the binding of record `id` (`bound_to`, `bound_at`) and sets `released_at` to
    /// `now`, unless its last release is less than `min_interval` before `now`
    /// ([`ReleaseOutcome::TooSoon`]) or it is not bound ([`ReleaseOutcome::NotBound`]).
    /// Atomic with its checks. The default returns [`StoreError::Unsupported`].
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for an unknown id; backend failures.
    async fn release(
        &self,
        id: &TokenId,
        now: OffsetDateTime,
        min_interval: std::time::Duration,
    ) -> Result<ReleaseOutcome, StoreError> {
        let _ = (id, now, min_interval);
        Err(StoreError::Unsupported("bindings"))
    }

    /// Inactivity expiry. Among records of the kinds named in `kinds` that are valid at
    /// `now` and whose [`last_active_at`](TokenRecord::last_active_at) is before `cutoff`
    /// (records of any other kind are left alone, so that each kind can have its own
    /// cutoff): those whose kind is in `release_kinds` lose their binding, if they have one (`bound_to` and `bound_at`
    /// cleared; `released_at` is left alone: an automatic release does not use up the
    /// owner's manual one); every other one is revoked at `now` (terminal, like
    /// [`revoke`](Self::revoke), and announced like it). The default returns
    /// [`StoreError::Unsupported`].
    ///
    /// # Errors
    ///
    /// Backend failures.
    async fn expire_inactive(
        &self,
        cutoff: OffsetDateTime,
        now: OffsetDateTime,
        kinds: &[String],
        release_kinds: &[String],
    ) -> Result<InactiveOutcome, StoreError> {
        let _ = (cutoff, now, kinds, release_kinds);
        Err(StoreError::Unsupported("inactivity expiry"))
    }

    /// Edits the record `id` in place, atomically, judged at `now`: fails with
    /// [`StoreError::NotFound`] unless the record is live (see
    /// [`TokenRecord::is_live_at`]); with [`StoreError::NameTaken`] when `update` renames it
    /// to the name of another live token of the same owner; otherwise applies `update`
    /// ([`TokenUpdate::apply`]) and returns the record as it is afterwards. Announced like a
    /// revocation where the backend publishes those. The default returns
    /// [`StoreError::Unsupported`] (edits then fail closed with 503).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::NameTaken`]; backend failures.
    async fn update(
        &self,
        id: &TokenId,
        update: &TokenUpdate,
        now: OffsetDateTime,
    ) -> Result<TokenRecord, StoreError> {
        let _ = (id, update, now);
        Err(StoreError::Unsupported("token updates"))
    }

    /// The admin view across owners: the records `query` selects
    /// ([`TokenQuery::matches`]), in `(created_at, id)` order, at most `query.limit`. The
    /// default returns [`StoreError::Unsupported`].
    ///
    /// # Errors
    ///
    /// Backend failures.
    async fn list_tokens(&self, query: &TokenQuery) -> Result<Vec<TokenRecord>, StoreError> {
        let _ = query;
        Err(StoreError::Unsupported("listing tokens across owners"))
    }

    /// Expiry warnings. Atomically, at most `limit` records that are live at `now` (see
    /// [`TokenRecord::is_live_at`]), whose `expires_at` is later than `now` and at or
    /// before `before`, and whose `expiry_warned_at` is unset, get `expiry_warned_at = now`
    /// and are returned (with it set), soonest expiry first (which ones a call limited by
    /// `limit` takes when more qualify is the backend's choice: the SQL stores take the
    /// soonest, Redis the first its walk meets; the next call takes the rest). A record is
    /// claimed once:
    /// concurrent claims return disjoint sets, and a claimed record is never returned
    /// again (a token rotated before it expires starts afresh: its successor is a new
    /// record). A call may return fewer than `limit`, even none, while due records remain
    /// that concurrent claims were holding (PostgreSQL skips locked rows): the next call
    /// takes them. The default returns [`StoreError::Unsupported`].
    ///
    /// # Errors
    ///
    /// Backend failures.
    async fn claim_expiry_warnings(
        &self,
        before: OffsetDateTime,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let _ = (before, now, limit);
        Err(StoreError::Unsupported("expiry warnings"))
    }

    /// Moves record `id` from the digest `from` to the digest `to` (a token found under a
    /// previous pepper, or the plain SHA-256, re-hashed to the current pepper's digest), if
    /// its digest is still `from`: a compare-and-set, atomic. Returns `true` when it moved,
    /// `false` when there is no such record or its digest is no longer `from`. Nothing else
    /// about the record changes; a backend that announces changes to other instances
    /// announces both digests, so that their caches drop the record kept under `from` and
    /// any "unknown" kept for `to`. The default
    /// returns [`StoreError::Unsupported`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Duplicate`] when another record already has the digest `to`; backend
    /// failures.
    async fn rehash(
        &self,
        id: &TokenId,
        from: &TokenHash,
        to: &TokenHash,
    ) -> Result<bool, StoreError> {
        let _ = (id, from, to);
        Err(StoreError::Unsupported("re-hashing"))
    }
}

#[async_trait]
impl<T: TokenStore + ?Sized> TokenStore for Arc<T> {
    async fn insert(&self, record: TokenRecord, rules: InsertRules) -> Result<(), StoreError> {
        (**self).insert(record, rules).await
    }
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        (**self).find_by_hash(hash).await
    }
    fn find_by_hash_now(
        &self,
        hash: &TokenHash,
    ) -> Option<Result<Option<Arc<TokenRecord>>, StoreError>> {
        (**self).find_by_hash_now(hash)
    }
    async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, StoreError> {
        (**self).get(id).await
    }
    async fn list_by_owner(&self, owner: &str) -> Result<Vec<TokenRecord>, StoreError> {
        (**self).list_by_owner(owner).await
    }
    async fn revoke(&self, id: &TokenId, at: OffsetDateTime) -> Result<bool, StoreError> {
        (**self).revoke(id, at).await
    }
    async fn rotate(
        &self,
        old: &TokenId,
        new: TokenRecord,
        old_expires_at: OffsetDateTime,
        rules: InsertRules,
    ) -> Result<RotateOutcome, StoreError> {
        (**self).rotate(old, new, old_expires_at, rules).await
    }
    async fn record_use(&self, uses: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError> {
        (**self).record_use(uses).await
    }
    async fn record_usage(&self, uses: &[TokenUse]) -> Result<(), StoreError> {
        (**self).record_usage(uses).await
    }
    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        (**self).purge_expired(now).await
    }
    async fn bind(
        &self,
        id: &TokenId,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        (**self).bind(id, fingerprint, now).await
    }
    async fn release(
        &self,
        id: &TokenId,
        now: OffsetDateTime,
        min_interval: std::time::Duration,
    ) -> Result<ReleaseOutcome, StoreError> {
        (**self).release(id, now, min_interval).await
    }
    async fn expire_inactive(
        &self,
        cutoff: OffsetDateTime,
        now: OffsetDateTime,
        kinds: &[String],
        release_kinds: &[String],
    ) -> Result<InactiveOutcome, StoreError> {
        (**self)
            .expire_inactive(cutoff, now, kinds, release_kinds)
            .await
    }
    async fn claim_expiry_warnings(
        &self,
        before: OffsetDateTime,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        (**self).claim_expiry_warnings(before, now, limit).await
    }
    async fn update(
        &self,
        id: &TokenId,
        update: &TokenUpdate,
        now: OffsetDateTime,
    ) -> Result<TokenRecord, StoreError> {
        (**self).update(id, update, now).await
    }
    async fn list_tokens(&self, query: &TokenQuery) -> Result<Vec<TokenRecord>, StoreError> {
        (**self).list_tokens(query).await
    }
    async fn rehash(
        &self,
        id: &TokenId,
        from: &TokenHash,
        to: &TokenHash,
    ) -> Result<bool, StoreError> {
        (**self).rehash(id, from, to).await
    }
}
