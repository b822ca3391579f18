//! The rules of the required write methods, applied to one owner's records in memory, for
//! stores that keep an owner's records together (a document, a key prefix, a partition) and
//! write back what changed in one atomic step (a transaction, a conditional write). A store
//! that uses them gets the guarantees the conformance suite checks without restating them.
//!
//! ```
//! use keygate::store::{InsertRules, rules};
//! # use keygate::{TokenHash, store::{TokenId, TokenRecord}};
//! # let now = time::OffsetDateTime::now_utc();
//! # let record = |name: &str| TokenRecord::builder(TokenId::random(),
//! #     TokenHash::of(name), "pat", "alice", name, now).build();
//! let mut alices = vec![record("laptop")];
//! let rules_now = InsertRules::new(now, Some(2));
//! assert!(rules_now.check(&alices, &record("laptop")).is_err()); // name taken
//! rules_now.check(&alices, &record("ci")).unwrap();
//! alices.push(record("ci"));
//! assert!(rules_now.check(&alices, &record("phone")).is_err()); // at the limit
//! assert_eq!(rules::purge(&mut alices, now), 0);
//! ```

use time::OffsetDateTime;

use super::{RotateOutcome, StoreError, TokenId, TokenRecord};

/// The rules an [`insert`](super::TokenStore::insert) or a [`rotate`](super::TokenStore::rotate) must
/// enforce atomically.
///
/// The limit counts the owner's *valid* tokens: live ones and replaced ones still in their
/// grace window (both authenticate, so both count).
///
/// Non-exhaustive: build it with [`new`](Self::new) and [`per_kind`](Self::per_kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct InsertRules {
    /// The time at which liveness is judged.
    pub now: OffsetDateTime,
    /// At most this many valid tokens per owner (live, or replaced and in grace), counting
    /// the new one; `None`: no limit.
    pub max_live: Option<u32>,
    /// Count only the owner's valid tokens of the new token's kind (a per-kind cap), instead
    /// of all their valid tokens.
    pub per_kind: bool,
}

impl InsertRules {
    /// Rules judged at `now` with a limit of `max_live` across the owner's tokens.
    #[must_use]
    pub fn new(now: OffsetDateTime, max_live: Option<u32>) -> Self {
        Self {
            now,
            max_live,
            per_kind: false,
        }
    }

    /// Makes the limit count only tokens of the new token's kind.
    #[must_use]
    pub fn per_kind(mut self) -> Self {
        self.per_kind = true;
        self
    }

    /// The limit rule, for stores that judge it in Rust: whether `records` (the owner's
    /// records, in any state) already hold `max_live` tokens counted against a new token of
    /// kind `kind` — valid at `now`, and of that kind when `per_kind`.
    #[must_use]
    pub fn at_limit<'a>(
        &self,
        records: impl IntoIterator<Item = &'a TokenRecord>,
        kind: &str,
    ) -> bool {
        self.max_live.is_some_and(|max| {
            let counted = records
                .into_iter()
                .filter(|r| r.is_valid_at(self.now) && (!self.per_kind || r.kind == kind))
                .count();
            counted >= usize::try_from(max).unwrap_or(usize::MAX)
        })
    }
}

impl InsertRules {
    /// The checks of [`TokenStore::insert`](super::TokenStore::insert) against the owner's
    /// records (in any state): [`StoreError::NameTaken`] when a live one has `new`'s name,
    /// [`StoreError::LimitReached`] when they hold the limit already. Uniqueness of the id
    /// and the hash across owners is the store's own check ([`StoreError::Duplicate`]).
    ///
    /// # Errors
    ///
    /// As above.
    pub fn check(
        &self,
        owner_records: &[TokenRecord],
        new: &TokenRecord,
    ) -> Result<(), StoreError> {
        let live = |r: &&TokenRecord| r.is_live_at(self.now);
        if owner_records
            .iter()
            .filter(live)
            .any(|r| r.name == new.name)
        {
            return Err(StoreError::NameTaken);
        }
        if self.at_limit(owner_records, &new.kind) {
            return Err(StoreError::LimitReached);
        }
        Ok(())
    }
}

/// [`TokenStore::rotate`](super::TokenStore::rotate) among the owner's records: `old` (live
/// at `rules.now`, else [`StoreError::NotFound`]) points to `new` and ends at
/// `old_expires_at` at the latest; a predecessor of `old` still in its grace ends now; the
/// limit is checked when the owner gains a valid token. `new` is not added: the caller adds
/// it after its own [`StoreError::Duplicate`] check.
///
/// # Errors
///
/// [`StoreError::NotFound`], [`StoreError::LimitReached`].
pub fn rotate(
    owner_records: &mut [TokenRecord],
    old: &TokenId,
    new: &TokenRecord,
    old_expires_at: OffsetDateTime,
    rules: InsertRules,
) -> Result<RotateOutcome, StoreError> {
    let now = rules.now;
    if !owner_records
        .iter()
        .any(|r| r.id == *old && r.is_live_at(now))
    {
        return Err(StoreError::NotFound);
    }
    let in_grace = |r: &TokenRecord| r.is_valid_at(now) && r.extras().replaced_by == Some(*old);
    let ended: Vec<TokenId> = owner_records
        .iter()
        .filter(|r| in_grace(r))
        .map(|r| r.id)
        .collect();
    let grows = old_expires_at > now && ended.is_empty();
    if grows && rules.at_limit(&*owner_records, &new.kind) {
        return Err(StoreError::LimitReached);
    }
    for r in owner_records.iter_mut() {
        if r.id == *old {
            r.extras_mut().replaced_by = Some(new.id);
            r.expires_at = Some(
                r.expires_at
                    .map_or(old_expires_at, |e| e.min(old_expires_at)),
            );
        } else if ended.contains(&r.id) {
            r.expires_at = Some(now);
        }
    }
    Ok(RotateOutcome::new(ended))
}

/// [`TokenStore::revoke`](super::TokenStore::revoke) among the owner's records: true when
/// `id` was there and not yet revoked.
pub fn revoke(owner_records: &mut [TokenRecord], id: &TokenId, at: OffsetDateTime) -> bool {
    let found = owner_records.iter_mut().find(|r| r.id == *id);
    match found.filter(|r| r.extras().revoked_at.is_none()) {
        Some(r) => {
            r.extras_mut().revoked_at = Some(at);
            true
        }
        None => false,
    }
}

/// [`TokenStore::record_use`](super::TokenStore::record_use) among the owner's records: the
/// record `id`'s `last_used_at` moves forward to `at` (never back). False when `id` is not
/// among them.
pub fn record_use(owner_records: &mut [TokenRecord], id: &TokenId, at: OffsetDateTime) -> bool {
    let found = owner_records.iter_mut().find(|r| r.id == *id);
    found
        .map(|r| r.last_used_at = r.last_used_at.max(Some(at)))
        .is_some()
}

/// Whether [`TokenStore::purge_expired`](super::TokenStore::purge_expired) at `now` deletes
/// `record`: revoked or expired by then.
#[must_use]
pub fn ended(record: &TokenRecord, now: OffsetDateTime) -> bool {
    record.extras().revoked_at.is_some_and(|t| t <= now)
        || record.expires_at.is_some_and(|t| t <= now)
}

/// [`TokenStore::purge_expired`](super::TokenStore::purge_expired) among the owner's
/// records: removes the [`ended`] ones; returns how many.
pub fn purge(owner_records: &mut Vec<TokenRecord>, now: OffsetDateTime) -> u64 {
    let before = owner_records.len();
    owner_records.retain(|r| !ended(r, now));
    (before - owner_records.len()) as u64
}
