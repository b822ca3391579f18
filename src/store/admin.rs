//! What [`TokenStore::update`](super::TokenStore::update) changes ([`TokenUpdate`]) and what
//! [`TokenStore::list_tokens`](super::TokenStore::list_tokens) selects ([`TokenQuery`]): the
//! edit-in-place and the admin view across owners.
//!
//! Both carry their rule as a method ([`TokenUpdate::apply`], [`TokenQuery::matches`]), so
//! a store that judges in Rust (the memory store, Redis) and one that judges in SQL agree:
//! the conformance suite checks that every store answers as the rule does.

use ipnet::IpNet;
use time::OffsetDateTime;

use crate::identity::Permissions;
use crate::record::{Metadata, TokenId, TokenRecord, TokenStatus};

/// The changes of an edit in place ([`TokenStore::update`](super::TokenStore::update)):
/// each field left `None` is kept as it is. Non-exhaustive: build it with
/// [`new`](Self::new) (or `default()`) and the `with_*` methods.
///
/// It holds no policy: the store applies it as given. The manager
/// ([`Tokens::update`](crate::Tokens::update)) checks names, lifetimes and that
/// permissions only narrow.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct TokenUpdate {
    /// A new name (unique among the owner's live tokens, like at insert).
    pub name: Option<String>,
    /// A new description: `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// A new expiry: `Some(None)` clears it (the token no longer expires).
    pub expires_at: Option<Option<OffsetDateTime>>,
    /// A new allow-list (empty: any address).
    pub allowed_ips: Option<Vec<IpNet>>,
    /// New metadata, replacing the old as a whole.
    pub metadata: Option<Metadata>,
    /// New permissions.
    pub permissions: Option<Permissions>,
}

impl TokenUpdate {
    /// An update that changes nothing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`name`](Self::name).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets [`description`](Self::description) (`None` clears it).
    #[must_use]
    pub fn with_description(mut self, description: Option<String>) -> Self {
        self.description = Some(description);
        self
    }

    /// Sets [`expires_at`](Self::expires_at) (`None` clears it).
    #[must_use]
    pub fn with_expires_at(mut self, at: Option<OffsetDateTime>) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Sets [`allowed_ips`](Self::allowed_ips).
    #[must_use]
    pub fn with_allowed_ips(mut self, networks: Vec<IpNet>) -> Self {
        self.allowed_ips = Some(networks);
        self
    }

    /// Sets [`metadata`](Self::metadata).
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Sets [`permissions`](Self::permissions).
    #[must_use]
    pub fn with_permissions(mut self, permissions: Permissions) -> Self {
        self.permissions = Some(permissions);
        self
    }

    /// True when the update changes no field.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.changed_fields().is_empty()
    }

    /// The names of the fields this update sets, in the API's spelling (`name`,
    /// `description`, `expires_at`, `allowed_ips`, `metadata`, `permissions`).
    #[must_use]
    pub fn changed_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.name.is_some() {
            out.push("name");
        }
        if self.description.is_some() {
            out.push("description");
        }
        if self.expires_at.is_some() {
            out.push("expires_at");
        }
        if self.allowed_ips.is_some() {
            out.push("allowed_ips");
        }
        if self.metadata.is_some() {
            out.push("metadata");
        }
        if self.permissions.is_some() {
            out.push("permissions");
        }
        out
    }

    /// Applies the update to `record`: the rule every store follows.
    pub fn apply(&self, record: &mut TokenRecord) {
        if let Some(n) = &self.name {
            record.name = n.into();
        }
        if let Some(d) = &self.description {
            record.extras_mut().description.clone_from(d);
        }
        if let Some(e) = self.expires_at {
            record.expires_at = e;
        }
        if let Some(nets) = &self.allowed_ips {
            record.extras_mut().allowed_ips.clone_from(nets);
        }
        if let Some(m) = &self.metadata {
            record.extras_mut().metadata = m.clone();
        }
        if let Some(p) = &self.permissions {
            record.permissions = p.clone();
        }
    }
}

/// A page of the admin view across owners
/// ([`TokenStore::list_tokens`](super::TokenStore::list_tokens)): records in
/// `(created_at, id)` order, after the cursor, that pass every filter set, at most
/// `limit` of them. Non-exhaustive: build it with [`new`](Self::new) and the `with_*`
/// methods.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenQuery {
    /// The time at which `status` is judged.
    pub now: OffsetDateTime,
    /// Only this owner's records.
    pub owner: Option<String>,
    /// Only records of this kind.
    pub kind: Option<String>,
    /// Only records with this status at `now` ([`TokenRecord::status_at`]).
    pub status: Option<TokenStatus>,
    /// Only records with an expiry strictly before this time.
    pub expiring_before: Option<OffsetDateTime>,
    /// Only records whose last use — `last_used_at`, or `created_at` when never used — is
    /// strictly before this time (a token never used counts as last used when it was
    /// created; bindings do not count).
    pub last_used_before: Option<OffsetDateTime>,
    /// Only records strictly after this `(created_at, id)` position: the cursor of the
    /// previous page (its last record's).
    pub after: Option<(OffsetDateTime, TokenId)>,
    /// At most this many records.
    pub limit: usize,
}

impl TokenQuery {
    /// Every record, judged at `now`, at most `limit` of them.
    #[must_use]
    pub fn new(now: OffsetDateTime, limit: usize) -> Self {
        Self {
            now,
            owner: None,
            kind: None,
            status: None,
            expiring_before: None,
            last_used_before: None,
            after: None,
            limit,
        }
    }

    /// Sets [`owner`](Self::owner).
    #[must_use]
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Sets [`kind`](Self::kind).
    #[must_use]
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Sets [`status`](Self::status).
    #[must_use]
    pub fn with_status(mut self, status: TokenStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets [`expiring_before`](Self::expiring_before).
    #[must_use]
    pub fn with_expiring_before(mut self, t: OffsetDateTime) -> Self {
        self.expiring_before = Some(t);
        self
    }

    /// Sets [`last_used_before`](Self::last_used_before).
    #[must_use]
    pub fn with_last_used_before(mut self, t: OffsetDateTime) -> Self {
        self.last_used_before = Some(t);
        self
    }

    /// Sets [`after`](Self::after): the page starts after this position.
    #[must_use]
    pub fn with_after(mut self, created_at: OffsetDateTime, id: TokenId) -> Self {
        self.after = Some((created_at, id));
        self
    }

    /// Whether `r` passes every filter and lies after the cursor: the rule every store
    /// follows (the order and the limit aside).
    #[must_use]
    pub fn matches(&self, r: &TokenRecord) -> bool {
        self.owner.as_ref().is_none_or(|o| &r.owner == o)
            && self.kind.as_ref().is_none_or(|k| &r.kind == k)
            && self.status.is_none_or(|s| r.status_at(self.now) == s)
            && self
                .expiring_before
                .is_none_or(|t| r.expires_at.is_some_and(|e| e < t))
            && self
                .last_used_before
                .is_none_or(|t| r.last_used_at.unwrap_or(r.created_at) < t)
            && self
                .after
                .is_none_or(|(at, id)| (r.created_at, r.id) > (at, id))
    }

    /// The page from `records` (in any order), for stores that judge in Rust: the matching
    /// records in `(created_at, id)` order, at most `limit`.
    #[must_use]
    pub fn page(&self, records: impl IntoIterator<Item = TokenRecord>) -> Vec<TokenRecord> {
        let mut v: Vec<TokenRecord> = records.into_iter().filter(|r| self.matches(r)).collect();
        v.sort_by_key(|r| (r.created_at, r.id));
        v.truncate(self.limit);
        v
    }
}
