//! [`TokensBuilder`]: the manager's settings.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::error::ConfigError;
use crate::identity::Roles;
use crate::store::TokenStore;
use crate::token::{Pepper, TokenKind};

/// Builds a [`Tokens`] manager.
#[must_use]
pub struct TokensBuilder {
    pub(super) store: Arc<dyn TokenStore>,
    pub(super) kinds: Vec<TokenKind>,
    pub(super) roles: Roles,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) max_per_owner: Option<u32>,
    pub(super) max_grace: Duration,
    pub(super) usage_granularity: Duration,
    pub(super) inactivity: Option<Duration>,
    pub(super) audit: Option<AuditLog>,
    pub(super) expiry_warning: Option<Duration>,
    #[cfg(feature = "webhook")]
    pub(super) webhook: Option<super::webhook::ExpiryWebhook>,
    pub(super) pepper: Option<Pepper>,
    pub(super) previous_peppers: Vec<Pepper>,
    pub(super) unpeppered: bool,
    /// The automatic upkeep's intervals (flush, purge); `None`: manual.
    pub(super) maintenance: Option<(Duration, Duration)>,
}

impl TokensBuilder {
    /// Adds a token kind. The first kind added is the default for [`NewToken`]s that name
    /// none. Without any call, the manager has the single kind [`TokenKind::pat`].
    pub fn kind(mut self, kind: TokenKind) -> Self {
        self.kinds.push(kind);
        self
    }

    /// The roles available at creation (default: none).
    pub fn roles(mut self, roles: Roles) -> Self {
        self.roles = roles;
        self
    }

    /// The time source (default: [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Cap on live tokens per owner across kinds without a cap of their own (default 100;
    /// `None`: unlimited).
    pub fn max_tokens_per_owner(mut self, max: Option<u32>) -> Self {
        self.max_per_owner = max;
        self
    }

    /// The longest grace window a [`Tokens::rotate`] may give the old token (default
    /// [`DEFAULT_MAX_ROTATION_GRACE`], 24 hours); a longer one is refused with
    /// [`TokenError::GraceTooLong`]. While in grace the old token still authenticates, so
    /// it counts against the owner's limit, and rotating its successor ends the grace.
    pub fn max_rotation_grace(mut self, max: Duration) -> Self {
        self.max_grace = max;
        self
    }

    /// How fresh `last_used_at` is kept (default 60 s): a token's use is queued for the store
    /// only when its stored `last_used_at` is older than this. Uses are then written in
    /// batches by [`Tokens::flush_usage`] (or the background task), never one write per
    /// request.
    pub fn usage_granularity(mut self, d: Duration) -> Self {
        self.usage_granularity = d;
        self
    }

    /// Inactivity expiry (e.g. two weeks): each [`Tokens::purge`] (and so the
    /// maintenance task) revokes the valid tokens whose last sign of life — last use, binding
    /// or creation, see [`TokenRecord::last_active_at`](crate::TokenRecord::last_active_at) — is older than `after`. Tokens of
    /// kinds with a binding ([`TokenKind::with_binding`]) are not revoked: their seat is
    /// released instead; the
    /// token keeps working and binds to the next machine that uses it. Uses are recorded in
    /// batches, so "last use" is as fresh as [`usage_granularity`](Self::usage_granularity)
    /// and the flush interval.
    ///
    /// This is the default for the manager's kinds: a kind's own
    /// [`TokenKind::with_inactivity_expiry`] overrides it (a shorter or longer time, or
    /// none at all), and each distinct time is one store pass. Only tokens of the manager's
    /// own kinds are touched, so managers sharing a store do not expire each other's.
    pub fn revoke_after_inactivity(mut self, after: Duration) -> Self {
        self.inactivity = Some(after);
        self
    }

    /// Where the manager writes the audit events of what it does on its own (a token
    /// revoked or a seat released for inactivity: event `token.revoke` / `token.release`,
    /// reason `inactive`) and of releases by the owner.
    pub fn audit(mut self, audit: AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Expiry warnings: how long before a token expires the maintenance task (or
    /// [`Tokens::warn_expiring`]) writes its one `token.expiring` audit event (default
    /// [`DEFAULT_EXPIRY_WARNING`], 7 days; `None` or zero: no warnings). Each live token
    /// is warned of once, whichever instance gets there first (see
    /// [`TokenStore::claim_expiry_warnings`](crate::TokenStore::claim_expiry_warnings)).
    pub fn warn_before_expiry(mut self, before: Option<Duration>) -> Self {
        self.expiry_warning = before.filter(|d| !d.is_zero());
        self
    }

    /// Also POSTs each `token.expiring` event to a webhook, signed, from a queue drained
    /// in the background (see [`ExpiryWebhook`](super::ExpiryWebhook)).
    #[cfg(feature = "webhook")]
    pub fn expiry_webhook(mut self, webhook: super::webhook::ExpiryWebhook) -> Self {
        self.webhook = Some(webhook);
        self
    }

    /// Digests tokens with HMAC-SHA256 under `pepper`, a server secret, instead of plain
    /// SHA-256 (default: no pepper). New and rotated tokens are stored under it; a copy of
    /// the store alone can then no longer confirm a guessed token. Keep the pepper out of
    /// the database (an environment variable, a secret file): see SECURITY.md.
    ///
    /// A presented token is looked up under the pepper's digest, each
    /// [previous pepper](Self::previous_peppers)'s and, while
    /// [`allow_unpeppered`](Self::allow_unpeppered) is on (the default), the plain
    /// SHA-256; every one of them, always, so the time a refusal takes does not tell which
    /// matched. A token found under an older digest is re-hashed to the current one by the
    /// next [`Tokens::flush_usage`] (the maintenance task), with
    /// [`TokenStore::rehash`](crate::TokenStore::rehash).
    pub fn pepper(mut self, pepper: Pepper) -> Self {
        self.pepper = Some(pepper);
        self
    }

    /// Peppers used before the current one, newest first: tokens stored under them keep
    /// working and are re-hashed to the current pepper on their next use. Drop one from the
    /// list once its tokens have been re-hashed (or have expired). Ignored without a
    /// [`pepper`](Self::pepper).
    pub fn previous_peppers(mut self, peppers: impl IntoIterator<Item = Pepper>) -> Self {
        self.previous_peppers = peppers.into_iter().collect();
        self
    }

    /// With a [`pepper`](Self::pepper), whether records kept under the plain SHA-256 (tokens
    /// issued before the pepper was turned on, hashes imported from elsewhere) are still
    /// found, and re-hashed on use (default: `true`, so that turning a pepper on locks no
    /// one out). Turn it off once they have all been re-hashed or retired: a copy of the
    /// store can confirm guesses against the records still kept unpeppered.
    pub fn allow_unpeppered(mut self, allow: bool) -> Self {
        self.unpeppered = allow;
        self
    }

    /// How often the automatic upkeep (see [`Tokens`], *What runs in the background*)
    /// writes the queued `last_used_at` times (default 10 s) and purges ended tokens, with
    /// inactivity expiry and expiry warnings (default 1 hour).
    ///
    /// # Panics
    ///
    /// When an interval is zero.
    pub fn maintenance_intervals(mut self, flush_every: Duration, purge_every: Duration) -> Self {
        assert!(
            !flush_every.is_zero() && !purge_every.is_zero(),
            "TokensBuilder::maintenance_intervals: intervals must be longer than zero"
        );
        self.maintenance = Some((flush_every, purge_every));
        self
    }

    /// No automatic upkeep: the program calls [`Tokens::flush_usage`] and
    /// [`Tokens::purge`] itself (or [`Tokens::spawn_maintenance`]). Without either,
    /// `last_used_at` is never written and ended tokens are never deleted.
    pub fn manual_maintenance(mut self) -> Self {
        self.maintenance = None;
        self
    }

    /// Builds the manager. Inside a Tokio runtime this starts its automatic upkeep (see
    /// [`Tokens`]).
    ///
    /// # Errors
    ///
    /// [`ConfigError::DuplicateKind`] when two kinds share a name or prefix;
    /// [`ConfigError::Pepper`] when a previous pepper repeats the current one or another
    /// previous one.
    pub fn build(mut self) -> Result<Tokens, ConfigError> {
        if self.kinds.is_empty() {
            self.kinds.push(TokenKind::pat());
        }
        for (i, a) in self.kinds.iter().enumerate() {
            for b in &self.kinds[i + 1..] {
                if a.name() == b.name() || a.prefix() == b.prefix() {
                    return Err(ConfigError::DuplicateKind(b.name().to_owned()));
                }
            }
        }
        if self.pepper.is_none() {
            self.previous_peppers.clear();
        }
        for (i, a) in self.previous_peppers.iter().enumerate() {
            let repeats = self.pepper.as_ref().is_some_and(|p| p.same_as(a))
                || self.previous_peppers[i + 1..].iter().any(|b| b.same_as(a));
            if repeats {
                return Err(ConfigError::Pepper(
                    "a previous pepper repeats the current one or another previous one",
                ));
            }
        }
        let tokens = Tokens {
            inner: Arc::new(Inner {
                hasher: pepper::Hasher::new(self.pepper, self.previous_peppers, self.unpeppered),
                rehashes: pepper::Rehashes::default(),
                store: self.store,
                bindings: self.kinds.iter().any(|k| k.binding_header().is_some()),
                kinds: self.kinds,
                roles: self.roles,
                clock: self.clock,
                max_per_owner: self.max_per_owner,
                max_grace: self.max_grace,
                usage: Usage::new(self.usage_granularity),
                inactivity: self.inactivity,
                audit: self.audit,
                expiry_warning: self.expiry_warning,
                #[cfg(feature = "webhook")]
                webhook: self.webhook.map(super::webhook::Queue::new),
                auto: maintenance::Auto::new(self.maintenance),
            }),
        };
        tokens.ensure_maintenance();
        Ok(tokens)
    }
}
