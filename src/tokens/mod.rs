//! [`Tokens`], the manager: issue, authenticate, list, rotate, revoke and purge tokens over
//! any [`TokenStore`], enforcing the policies (names, limits, lifetimes, roles).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use keygate::{MemoryStore, NewToken, Roles, Tokens};
//!
//! let tokens = Tokens::builder(MemoryStore::new())
//!     .roles(Roles::deployment_platform())
//!     .build()
//!     .unwrap();
//! let issued = tokens
//!     .issue(NewToken::new("alice@example.com", "ci-production-deploy").role("cicd"))
//!     .await
//!     .unwrap();
//! // Show `issued.token` to its owner once; only its hash is stored.
//! let id = tokens.authenticate(issued.token.expose_secret()).await.unwrap();
//! assert!(id.can("builds:create"));
//! tokens.revoke("alice@example.com", issued.record.id).await.unwrap();
//! assert!(tokens.authenticate(issued.token.expose_secret()).await.is_err());
//! # });
//! ```

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::audit::AuditLog;
use crate::clock::{Clock, SystemClock};
use crate::identity::Roles;
use crate::store::TokenStore;
use crate::token::TokenKind;

/// Default cap on live tokens per owner.
pub const DEFAULT_MAX_TOKENS_PER_OWNER: u32 = 100;
/// Longest name or description, in characters.
pub const MAX_TEXT_LEN: usize = 100;
/// Longest accepted expiry: 100 years.
pub const MAX_EXPIRES_IN: Duration = Duration::from_secs(100 * 366 * 24 * 3600);
/// Most networks in one token's allow-list.
pub const MAX_ALLOWED_IPS: usize = 64;
/// How often an owner may release a token's binding by hand (once every 24 h).
pub const RELEASE_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Default longest grace window of a rotation: 24 hours (see
/// [`TokensBuilder::max_rotation_grace`]).
pub const DEFAULT_MAX_ROTATION_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Most successors [`Tokens::revoke_with_successors`] follows from one token.
pub const MAX_SUCCESSORS: usize = 10_000;
/// Default time before expiry that a token is warned of: 7 days (see
/// [`TokensBuilder::warn_before_expiry`]).
pub const DEFAULT_EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest client fingerprint a binding accepts, in bytes.
pub const MAX_FINGERPRINT_LEN: usize = 128;

mod admin;
mod binding;
mod builder;
mod error;
mod expiry;
mod import;
mod issue;
mod lookup;
mod maintenance;
mod pepper;
mod rotate;
mod update;
mod usage;
mod verify;
#[cfg(feature = "webhook")]
mod webhook;

pub(crate) use binding::client;
pub use builder::TokensBuilder;
pub use error::TokenError;
pub use import::ImportToken;
#[cfg(feature = "management")]
pub(crate) use issue::check_text;
pub(crate) use issue::is_hidden;
pub use issue::{IssuedToken, NewToken};
pub use lookup::LeakOutcome;
pub use maintenance::Maintenance;
use maintenance::maintenance_event;
pub(crate) use pepper::Digests;
pub use update::TokenChanges;
use usage::{CLOSE_TO_EXPIRY, Usage};
pub(crate) use verify::Lookup;
#[cfg(feature = "webhook")]
pub use webhook::{
    DELIVERY_HEADER, EVENT_HEADER, ExpiryWebhook, TIMESTAMP_HEADER, WebhookStats, verify_signature,
};

/// The token manager. Cheap to clone; clones share everything.
///
/// Build one with [`Tokens::new`] (defaults) or [`Tokens::builder`].
///
/// **What runs in the background.** Inside a Tokio runtime, the manager starts one task of
/// its own (when it is built, when a layer is made from it, or at its first use) that
/// writes the queued `last_used_at` times every 10 seconds and, every hour, deletes
/// expired and revoked tokens, applies inactivity expiry and writes the expiry warnings
/// that are due. It holds no reference to the manager between runs: it ends once the last
/// clone is dropped, and the uses still queued then are written by a task of their own.
/// A manager built in one runtime and used in another (the first one gone) starts it again
/// at its first use there. The task needs the runtime's timers: in a runtime built without
/// them (no `enable_time`), turn it off with [`TokensBuilder::manual_maintenance`].
/// [`TokensBuilder::maintenance_intervals`] changes the intervals;
/// [`TokensBuilder::manual_maintenance`] turns it off for programs that call
/// [`flush_usage`](Self::flush_usage) and [`purge`](Self::purge) themselves, and
/// [`spawn_maintenance`](Self::spawn_maintenance) replaces it with a task whose handle the
/// program keeps (to write the last batch on shutdown).
#[derive(Clone)]
pub struct Tokens {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn TokenStore>,
    kinds: Vec<TokenKind>,
    /// Whether any kind binds its tokens to a client fingerprint.
    bindings: bool,
    roles: Roles,
    clock: Arc<dyn Clock>,
    max_per_owner: Option<u32>,
    max_grace: Duration,
    usage: Usage,
    inactivity: Option<Duration>,
    audit: Option<AuditLog>,
    expiry_warning: Option<Duration>,
    #[cfg(feature = "webhook")]
    webhook: Option<webhook::Queue>,
    hasher: pepper::Hasher,
    rehashes: pepper::Rehashes,
    /// The background upkeep that starts on its own ([`maintenance::Auto`]).
    auto: maintenance::Auto,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("kinds", &self.inner.kinds)
            .field("roles", &self.inner.roles)
            .field("max_per_owner", &self.inner.max_per_owner)
            .field("max_rotation_grace", &self.inner.max_grace)
            .field("peppered", &self.inner.hasher.peppered())
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// A manager over `store` with the defaults: kind `pat`, no roles, the system clock,
    /// 100 live tokens per owner.
    pub fn new(store: impl TokenStore) -> Self {
        Self::builder(store)
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder over `store`.
    pub fn builder(store: impl TokenStore) -> TokensBuilder {
        TokensBuilder {
            store: Arc::new(store),
            kinds: Vec::new(),
            roles: Roles::new(),
            clock: Arc::new(SystemClock),
            max_per_owner: Some(DEFAULT_MAX_TOKENS_PER_OWNER),
            max_grace: DEFAULT_MAX_ROTATION_GRACE,
            usage_granularity: Duration::from_secs(60),
            inactivity: None,
            audit: None,
            expiry_warning: Some(DEFAULT_EXPIRY_WARNING),
            #[cfg(feature = "webhook")]
            webhook: None,
            pepper: None,
            previous_peppers: Vec::new(),
            unpeppered: true,
            maintenance: Some(maintenance::DEFAULT_INTERVALS),
        }
    }

    /// The store behind the manager.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.inner.store
    }

    /// The configured kinds; the first is the default.
    #[must_use]
    pub fn kinds(&self) -> &[TokenKind] {
        &self.inner.kinds
    }

    /// The longest grace a rotation may give the old token
    /// ([`TokensBuilder::max_rotation_grace`]).
    #[must_use]
    pub fn max_rotation_grace(&self) -> Duration {
        self.inner.max_grace
    }

    /// The configured roles.
    #[must_use]
    pub fn roles(&self) -> &Roles {
        &self.inner.roles
    }

    /// The current time on the manager's clock, at microsecond precision (what SQL
    /// backends keep, so records read back compare equal).
    #[must_use]
    pub fn now(&self) -> OffsetDateTime {
        let t = self.inner.clock.now();
        t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
            .unwrap_or(t)
    }

    /// The clock as nanoseconds since the Unix epoch ([`Clock::unix_nanos`], which may lag
    /// a little behind [`now`](Self::now)): what the verification path reads, once per
    /// request.
    pub(crate) fn now_nanos(&self) -> i128 {
        self.inner.clock.unix_nanos()
    }

    /// Whether `expires_at` has passed. `now` comes from [`now_nanos`](Self::now_nanos);
    /// within [`CLOSE_TO_EXPIRY`] of the expiry the precise [`now`](Self::now) decides, so a
    /// coarse clock never keeps a token alive past its expiry (a rotation without grace ends
    /// the old token at once).
    fn expired(&self, expires_at: OffsetDateTime, now: i128) -> bool {
        let e = expires_at.unix_timestamp_nanos();
        if e <= now {
            return true;
        }
        e - now < CLOSE_TO_EXPIRY && expires_at <= self.now()
    }

    /// The kind named `name`.
    #[must_use]
    pub fn kind(&self, name: &str) -> Option<&TokenKind> {
        self.inner.kinds.iter().find(|k| k.name() == name)
    }

    /// Whether a resolver may widen the tokens of the kind named `kind` (see
    /// [`TokenKind::with_resolver_may_widen`]); `false` for a kind the manager does not have.
    #[must_use]
    pub fn resolver_may_widen(&self, kind: &str) -> bool {
        self.kind(kind).is_some_and(TokenKind::resolver_may_widen)
    }

    fn kind_by_prefix(&self, prefix: &str) -> Option<&TokenKind> {
        self.inner.kinds.iter().find(|k| k.prefix() == prefix)
    }
}
