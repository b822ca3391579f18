//! The data a store keeps about a token: its public [`TokenId`] and its [`TokenRecord`].
//!
//! Leaf types: they depend on the token format and the permission types only, never on a
//! store, the manager or HTTP.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::permissions::Permissions;
use crate::token::TokenHash;

mod builder;
mod metadata;
mod text;
#[cfg(feature = "serde")]
mod wire;

pub use builder::TokenRecordBuilder;
pub use metadata::{Metadata, MetadataError};
pub use text::{SharedStr, ShortStr};
#[cfg(feature = "serde")]
pub use wire::MAX_HINT_CHARS;

/// A token's public identifier (a random UUID). Safe to log, show and put in URLs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenId(pub Uuid);

impl TokenId {
    /// A new random id.
    #[must_use]
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({})", self.0.hyphenated())
    }
}

impl std::str::FromStr for TokenId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Everything a store keeps about one token. Never the token itself: only its SHA-256.
///
/// Aligned to a cache line: every verification clones the record's `Arc`, and without the
/// alignment the reference count of one record shares a cache line with the fields of the
/// record allocated before it, so two cores verifying two different tokens slow each other
/// down (on two threads, 1.5× one thread's throughput instead of 1.9×; see BENCHMARKS.md).
/// The record is three cache lines (192 bytes; its `Arc` block is 256 bytes), and the fields
/// a verification reads (digest, kind, revocation, expiry) are in the first one. Kind,
/// owner and creator are [`SharedStr`]s, which a store shares between records; name and
/// hint are [`ShortStr`]s, kept inside the record when short.
///
/// Non-exhaustive, so that a new field is not a breaking change for the stores of other
/// crates: build one with [`builder`](Self::builder) (one setter per field, what a store's
/// decoder wants), or [`new`](Self::new) and the `with_*` methods, and read it through its
/// fields. With the feature `serde` it is `Serialize` and `Deserialize`, validated on the
/// way in, for stores that keep a record as one document (the format is described on its
/// `Serialize` implementation). The fields most tokens leave unset (revocation,
/// rotation, binding, metadata, ...) are kept apart, in one allocation only when one is set:
/// read them with [`extras`](Self::extras), change them with [`extras_mut`](Self::extras_mut).
///
/// ```
/// use keygate::{TokenHash, TokenId, TokenRecord};
/// use time::macros::datetime;
///
/// let record = TokenRecord::new(
///     TokenId::random(),
///     TokenHash::of("kg_example"),
///     "pat",
///     "alice",
///     "ci",
///     datetime!(2026-01-01 00:00 UTC),
/// )
/// .with_description("deploys")
/// .with_expires_at(datetime!(2027-01-01 00:00 UTC));
/// assert_eq!(record.created_by, "alice");
/// assert!(record.is_live_at(datetime!(2026-06-01 00:00 UTC)));
/// ```
#[derive(Clone)]
#[repr(C, align(64))]
#[non_exhaustive]
pub struct TokenRecord {
    // The fields a verification reads come first, in the record's first cache line:
    // digest, kind, the rarely set fields (revocation), expiry.
    /// SHA-256 of the full token.
    pub hash: TokenHash,
    /// The [`TokenKind`](crate::token::TokenKind) name (shared with every record of the
    /// kind in a [`MemoryStore`](crate::MemoryStore)).
    pub kind: SharedStr,
    /// The fields most tokens leave unset, kept apart so that a record without them stays
    /// small: read them with [`extras`](Self::extras), set them with
    /// [`extras_mut`](Self::extras_mut) or the `with_*` methods.
    extras: Option<Box<TokenExtras>>,
    /// Expiry, if any. The token is refused from this instant on.
    pub expires_at: Option<OffsetDateTime>,
    /// Last successful use, recorded in batches (see [`TokenStore::record_use`](crate::store::TokenStore::record_use)).
    pub last_used_at: Option<OffsetDateTime>,
    /// Public identifier.
    pub id: TokenId,
    /// Who the token belongs to (an account id or email; shared with the owner's other
    /// records in a [`MemoryStore`](crate::MemoryStore)).
    pub owner: SharedStr,
    /// Who created the token (the owner, or an admin acting for them).
    pub created_by: SharedStr,
    /// Name, unique among the owner's live tokens.
    pub name: ShortStr,
    /// The token's first 12 characters, for display.
    pub hint: ShortStr,
    /// Explicit permissions.
    pub permissions: Permissions,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

/// The fields of a [`TokenRecord`] that most tokens leave unset (see
/// [`TokenRecord::extras`]). The default leaves every one unset.
#[derive(Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct TokenExtras {
    /// Optional free text.
    pub description: Option<String>,
    /// The role the permissions came from, if any (informational).
    pub role: Option<String>,
    /// Revocation time. Revocation is terminal.
    pub revoked_at: Option<OffsetDateTime>,
    /// Set when the token was rotated: the id of its successor. A replaced token no longer
    /// holds its name, and stops working at `expires_at` (the end of the grace window);
    /// until then it counts against the owner's limits.
    pub replaced_by: Option<TokenId>,
    /// Client networks the token may be used from; empty: any address. A request from
    /// outside the list, or whose address is unknown while the list is not empty, is refused
    /// with 403 `ip_not_allowed`.
    pub allowed_ips: Vec<IpNet>,
    /// This token's own rate, in requests per minute. The layer's
    /// [`RateLimits`](crate::rate_limit::RateLimits) applies the lower of it and the rate of
    /// the token's kind (or the default): it can only lower the server's rate.
    pub rate_limit: Option<u32>,
    /// The client fingerprint (e.g. a machine id) the token is bound to, for kinds with a
    /// binding (see [`TokenKind::with_binding`](crate::token::TokenKind::with_binding)).
    /// Set on first use by [`TokenStore::bind`](crate::store::TokenStore::bind), cleared by [`TokenStore::release`](crate::store::TokenStore::release).
    pub bound_to: Option<String>,
    /// When the current binding was made.
    pub bound_at: Option<OffsetDateTime>,
    /// When a binding was last released by hand (at most one release per interval).
    pub released_at: Option<OffsetDateTime>,
    /// The owner's own data about the token (a JSON object of at most
    /// [`Metadata::MAX_BYTES`]); empty by default. Shown in every view and on the
    /// [`Identity`](crate::Identity).
    pub metadata: Metadata,
    /// The client address of the last recorded use, when it was known (recorded in batches
    /// with [`last_used_at`](TokenRecord::last_used_at)).
    pub last_used_ip: Option<IpAddr>,
    /// The `User-Agent` of the last recorded use, cut to [`MAX_USER_AGENT`] bytes.
    pub last_used_agent: Option<String>,
    /// When the token's owner was warned that it is about to expire (once per token).
    pub expiry_warned_at: Option<OffsetDateTime>,
}

/// The longest `User-Agent` kept in [`TokenExtras::last_used_agent`], in bytes.
pub const MAX_USER_AGENT: usize = 256;

/// Where a token stands at an instant, as the admin view reports it
/// ([`TokenRecord::status_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    /// Authenticates: not revoked, not expired, not replaced.
    Active,
    /// Past its `expires_at` (and neither revoked nor replaced).
    Expired,
    /// Revoked (terminal), whatever else holds.
    Revoked,
    /// Rotated: replaced by a successor (it may still authenticate during its grace).
    Replaced,
}

impl TokenStatus {
    /// The status's name in the API: `active`, `expired`, `revoked` or `replaced`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Replaced => "replaced",
        }
    }
}

impl fmt::Display for TokenStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TokenStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "expired" => Ok(Self::Expired),
            "revoked" => Ok(Self::Revoked),
            "replaced" => Ok(Self::Replaced),
            _ => Err(UnknownStatus),
        }
    }
}

/// A status name other than `active`, `expired`, `revoked` or `replaced`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("status must be one of active, expired, revoked, replaced")]
pub struct UnknownStatus;

impl TokenRecord {
    /// A record of kind `kind` for `owner`, named `name`, created at `created_at`, with the
    /// given id and digest; created by its owner, with no permissions, an empty hint and
    /// every optional field unset.
    #[must_use]
    pub fn new(
        id: TokenId,
        hash: TokenHash,
        kind: impl Into<SharedStr>,
        owner: impl Into<SharedStr>,
        name: impl Into<ShortStr>,
        created_at: OffsetDateTime,
    ) -> Self {
        let owner = owner.into();
        Self {
            id,
            hash,
            kind: kind.into(),
            created_by: owner.clone(),
            owner,
            name: name.into(),
            permissions: Permissions::none(),
            hint: ShortStr::default(),
            created_at,
            expires_at: None,
            last_used_at: None,
            extras: None,
        }
    }

    /// The fields most tokens leave unset: description, role, revocation, rotation,
    /// allowed networks, rate, binding, metadata, details of the last use, expiry warning.
    ///
    /// ```
    /// use keygate::{TokenHash, TokenId, TokenRecord};
    /// use time::macros::datetime;
    ///
    /// let t = datetime!(2026-01-01 00:00 UTC);
    /// let mut record =
    ///     TokenRecord::new(TokenId::random(), TokenHash::of("kg_example"), "pat", "alice", "ci", t);
    /// assert_eq!(record.extras().revoked_at, None);
    /// record.extras_mut().revoked_at = Some(t);
    /// assert_eq!(record.extras().revoked_at, Some(t));
    /// ```
    #[must_use]
    pub fn extras(&self) -> &TokenExtras {
        static UNSET: std::sync::LazyLock<TokenExtras> =
            std::sync::LazyLock::new(TokenExtras::default);
        self.extras.as_deref().unwrap_or(&UNSET)
    }

    /// Sets every field of [`extras`](Self::extras) at once.
    #[must_use]
    pub fn with_extras(mut self, extras: TokenExtras) -> Self {
        self.extras = (extras != TokenExtras::default()).then(|| Box::new(extras));
        self
    }

    /// Drops the storage of [`extras`](Self::extras) when every one of them is unset, so that
    /// the record takes no more memory than one that never had them.
    pub fn compact(&mut self) {
        if self.extras.as_deref() == Some(&TokenExtras::default()) {
            self.extras = None;
        }
    }

    /// The fields most tokens leave unset, to change them (see [`extras`](Self::extras)).
    pub fn extras_mut(&mut self) -> &mut TokenExtras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// Sets [`description`](TokenExtras::description).
    #[must_use]
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.extras_mut().description = Some(description.into());
        self.compact();
        self
    }

    /// Sets [`role`](TokenExtras::role).
    #[must_use]
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.extras_mut().role = Some(role.into());
        self.compact();
        self
    }

    /// Sets [`permissions`](Self::permissions).
    #[must_use]
    pub fn with_permissions(mut self, permissions: Permissions) -> Self {
        self.permissions = permissions;
        self
    }

    /// Sets [`hint`](Self::hint).
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<ShortStr>) -> Self {
        self.hint = hint.into();
        self
    }

    /// Sets [`created_by`](Self::created_by) (by default the owner).
    #[must_use]
    pub fn with_created_by(mut self, created_by: impl Into<SharedStr>) -> Self {
        self.created_by = created_by.into();
        self
    }

    /// Sets [`expires_at`](Self::expires_at).
    #[must_use]
    pub fn with_expires_at(mut self, at: OffsetDateTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Sets [`last_used_at`](Self::last_used_at).
    #[must_use]
    pub fn with_last_used_at(mut self, at: OffsetDateTime) -> Self {
        self.last_used_at = Some(at);
        self
    }

    /// Sets [`revoked_at`](TokenExtras::revoked_at).
    #[must_use]
    pub fn with_revoked_at(mut self, at: OffsetDateTime) -> Self {
        self.extras_mut().revoked_at = Some(at);
        self.compact();
        self
    }

    /// Sets [`replaced_by`](TokenExtras::replaced_by).
    #[must_use]
    pub fn with_replaced_by(mut self, id: TokenId) -> Self {
        self.extras_mut().replaced_by = Some(id);
        self.compact();
        self
    }

    /// Sets [`allowed_ips`](TokenExtras::allowed_ips).
    #[must_use]
    pub fn with_allowed_ips(mut self, networks: Vec<IpNet>) -> Self {
        self.extras_mut().allowed_ips = networks;
        self.compact();
        self
    }

    /// Sets [`rate_limit`](TokenExtras::rate_limit).
    #[must_use]
    pub fn with_rate_limit(mut self, per_minute: u32) -> Self {
        self.extras_mut().rate_limit = Some(per_minute);
        self.compact();
        self
    }

    /// Sets the binding: [`bound_to`](TokenExtras::bound_to) and [`bound_at`](TokenExtras::bound_at).
    #[must_use]
    pub fn with_binding(mut self, fingerprint: impl Into<String>, at: OffsetDateTime) -> Self {
        let extras = self.extras_mut();
        extras.bound_to = Some(fingerprint.into());
        extras.bound_at = Some(at);
        self.compact();
        self
    }

    /// Sets [`released_at`](TokenExtras::released_at).
    #[must_use]
    pub fn with_released_at(mut self, at: OffsetDateTime) -> Self {
        self.extras_mut().released_at = Some(at);
        self.compact();
        self
    }

    /// Sets [`metadata`](TokenExtras::metadata).
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.extras_mut().metadata = metadata;
        self.compact();
        self
    }

    /// Sets the details of the last use: [`last_used_ip`](TokenExtras::last_used_ip) and
    /// [`last_used_agent`](TokenExtras::last_used_agent).
    #[must_use]
    pub fn with_last_used_from(mut self, ip: Option<IpAddr>, agent: Option<String>) -> Self {
        let extras = self.extras_mut();
        extras.last_used_ip = ip;
        extras.last_used_agent = agent;
        self.compact();
        self
    }

    /// Sets [`expiry_warned_at`](TokenExtras::expiry_warned_at).
    #[must_use]
    pub fn with_expiry_warned_at(mut self, at: OffsetDateTime) -> Self {
        self.extras_mut().expiry_warned_at = Some(at);
        self.compact();
        self
    }

    /// The token's status at `now`: `revoked` when revoked (terminal), else `replaced` when
    /// rotated, else `expired` when past its expiry, else `active`.
    #[must_use]
    pub fn status_at(&self, now: OffsetDateTime) -> TokenStatus {
        if self.extras().revoked_at.is_some() {
            TokenStatus::Revoked
        } else if self.extras().replaced_by.is_some() {
            TokenStatus::Replaced
        } else if self.expires_at.is_some_and(|e| e <= now) {
            TokenStatus::Expired
        } else {
            TokenStatus::Active
        }
    }

    /// The last sign of life: the latest of creation, last recorded use and binding.
    /// Inactivity expiry ([`TokenStore::expire_inactive`](crate::store::TokenStore::expire_inactive)) is judged on it.
    #[must_use]
    pub fn last_active_at(&self) -> OffsetDateTime {
        let mut t = self.created_at;
        for u in [self.last_used_at, self.extras().bound_at]
            .into_iter()
            .flatten()
        {
            t = t.max(u);
        }
        t
    }

    /// True when the token may authenticate at `now`: not revoked and not expired.
    #[must_use]
    pub fn is_valid_at(&self, now: OffsetDateTime) -> bool {
        self.extras().revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }

    /// True when the token is *live* at `now`: valid and not replaced. Only live tokens hold
    /// their name; every valid token (live, or replaced and in grace) counts against
    /// per-owner limits.
    #[must_use]
    pub fn is_live_at(&self, now: OffsetDateTime) -> bool {
        self.is_valid_at(now) && self.extras().replaced_by.is_none()
    }
}

impl fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let extras = self.extras();
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("owner", &self.owner)
            .field("name", &self.name)
            .field("description", &extras.description)
            .field("role", &extras.role)
            .field("permissions", &self.permissions)
            .field("hint", &self.hint)
            .field("created_by", &self.created_by)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("last_used_at", &self.last_used_at)
            .field("revoked_at", &extras.revoked_at)
            .field("replaced_by", &extras.replaced_by)
            .field("allowed_ips", &extras.allowed_ips)
            .field("rate_limit", &extras.rate_limit)
            .field("bound_to", &extras.bound_to)
            .field("bound_at", &extras.bound_at)
            .field("released_at", &extras.released_at)
            .field("metadata", &extras.metadata)
            .field("last_used_ip", &extras.last_used_ip)
            .field("last_used_agent", &extras.last_used_agent)
            .field("expiry_warned_at", &extras.expiry_warned_at)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TokenRecord {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.hash == other.hash
            && self.kind == other.kind
            && self.owner == other.owner
            && self.name == other.name
            && self.permissions == other.permissions
            && self.hint == other.hint
            && self.created_by == other.created_by
            && self.created_at == other.created_at
            && self.expires_at == other.expires_at
            && self.last_used_at == other.last_used_at
            && self.extras() == other.extras()
    }
}

impl fmt::Debug for TokenExtras {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenExtras")
            .field("description", &self.description)
            .field("role", &self.role)
            .field("revoked_at", &self.revoked_at)
            .field("replaced_by", &self.replaced_by)
            .field("allowed_ips", &self.allowed_ips)
            .field("rate_limit", &self.rate_limit)
            .field("bound_to", &self.bound_to)
            .field("bound_at", &self.bound_at)
            .field("released_at", &self.released_at)
            .field("metadata", &self.metadata)
            .field("last_used_ip", &self.last_used_ip)
            .field("last_used_agent", &self.last_used_agent)
            .field("expiry_warned_at", &self.expiry_warned_at)
            .finish_non_exhaustive()
    }
}
