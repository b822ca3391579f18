//! [`TokensBuilder`]: the manager's settings.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::error::ConfigError;
use crate::identity::Roles;
use crate::store::TokenStore;
use crate::token::TokenKind;

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

    /// Builds the manager.
    ///
    /// # Errors
    ///
    /// [`ConfigError::DuplicateKind`] when two kinds share a name or prefix.
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
        Ok(Tokens {
            inner: Arc::new(Inner {
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
            }),
        })
    }
}
