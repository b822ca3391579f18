//! [`Lineage`]: whose budget a token's requests count against.

use crate::record::TokenRecord;

/// Whose budget a request counts against: a token's lineage, named by its owner and name.
/// A rotation keeps both, so the tokens of one rotation chain share a budget; an owner's
/// live tokens have distinct names, so they do not.
#[derive(Debug, Clone, Copy)]
pub struct Lineage<'a> {
    pub(super) owner: &'a str,
    pub(super) name: &'a str,
}

impl<'a> Lineage<'a> {
    /// The lineage of the owner's token named `name`.
    #[must_use]
    pub fn new(owner: &'a str, name: &'a str) -> Self {
        Self { owner, name }
    }

    /// The lineage of `record`.
    #[must_use]
    pub fn of(record: &'a TokenRecord) -> Self {
        Self::new(&record.owner, &record.name)
    }

    /// The key of a [`SharedRateLimiter`](super::SharedRateLimiter): `lineage:` and the hex
    /// SHA-256 of the owner's length, the owner and the name, the same on every instance,
    /// and naming neither.
    #[must_use]
    pub fn shared_key(&self) -> String {
        use sha2::{Digest, Sha256};
        use std::fmt::Write as _;
        let digest = Sha256::new()
            .chain_update((self.owner.len() as u64).to_be_bytes())
            .chain_update(self.owner.as_bytes())
            .chain_update(self.name.as_bytes())
            .finalize();
        let mut key = String::with_capacity(8 + 64);
        key.push_str("lineage:");
        for b in digest {
            let _ = write!(key, "{b:02x}");
        }
        key
    }

    /// The key of the owner's budget in a [`SharedRateLimiter`](super::SharedRateLimiter)
    /// (see [`RateLimits::per_owner`](super::RateLimits::per_owner)): `owner:` and the hex
    /// SHA-256 of the owner, the same on every instance and for every token of the owner.
    #[must_use]
    pub fn owner_shared_key(&self) -> String {
        use sha2::{Digest, Sha256};
        use std::fmt::Write as _;
        let digest = Sha256::new()
            .chain_update(b"keygate owner\0")
            .chain_update(self.owner.as_bytes())
            .finalize();
        let mut key = String::with_capacity(6 + 64);
        key.push_str("owner:");
        for b in digest {
            let _ = write!(key, "{b:02x}");
        }
        key
    }
}

/// A lineage's key in the in-process limiters: 128 bits of two SipHash digests under keys
/// drawn at random for each [`RateLimits`](super::RateLimits), computed without allocating.
/// Nobody outside the process knows the keys, so no one can choose a name whose budget is
/// someone else's, and an accidental collision takes about 2^64 lineages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct LineageKey(pub(super) u64, pub(super) u64);
