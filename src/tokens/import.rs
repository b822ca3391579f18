//! Importing a token another system issued: [`ImportToken`] and [`Tokens::import`].
//!
//! Only the SHA-256 of the token moves: the old system's digest becomes the record's hash,
//! so the token its holder already has keeps working (for tokens in another format than
//! keygate's, give the kind a [legacy format](crate::TokenKind::with_legacy_format)).

use time::OffsetDateTime;

use crate::identity::Permissions;
use crate::store::{StoreError, TokenId, TokenRecord};
use crate::token::{HINT_LEN, TokenHash};

use super::issue::check_text;
use super::{MAX_EXPIRES_IN, TokenError, Tokens};

/// A token to import: its owner, name and SHA-256, with what it may do.
///
/// ```
/// use keygate::tokens::ImportToken;
/// use keygate::TokenHash;
///
/// let hash = TokenHash::of("dtk_0123456789abcdef0123456789abcdef01234567");
/// let req = ImportToken::new("alice@example.com", "CI sync", hash)
///     .kind("dtk")
///     .role("cicd")
///     .created_by("admin@example.com");
/// # let _ = req;
/// ```
#[derive(Debug, Clone)]
pub struct ImportToken {
    owner: String,
    name: String,
    hash: TokenHash,
    kind: Option<String>,
    role: Option<String>,
    permissions: Option<Permissions>,
    description: Option<String>,
    expires_at: Option<OffsetDateTime>,
    created_at: Option<OffsetDateTime>,
    created_by: Option<String>,
    hint: Option<String>,
}

impl ImportToken {
    /// The token named `name` of `owner` whose SHA-256 (of the whole token, prefix
    /// included, as the other system kept it) is `hash`.
    pub fn new(owner: impl Into<String>, name: impl Into<String>, hash: TokenHash) -> Self {
        Self {
            owner: owner.into(),
            name: name.into(),
            hash,
            kind: None,
            role: None,
            permissions: None,
            description: None,
            expires_at: None,
            created_at: None,
            created_by: None,
            hint: None,
        }
    }

    /// The kind by name; the manager's first kind when not set.
    #[must_use]
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Takes the permissions of a role defined in the manager's [`Roles`](crate::Roles).
    #[must_use]
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// Explicit permissions; with a role too, they must be within the role's. Neither: no
    /// permission at all (the token still authenticates).
    #[must_use]
    pub fn permissions(mut self, p: Permissions) -> Self {
        self.permissions = Some(p);
        self
    }

    /// Free text shown in lists (1–100 visible characters).
    #[must_use]
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    /// When the token stops working (absolute); it must be in the future.
    #[must_use]
    pub fn expires_at(mut self, at: OffsetDateTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// When the other system created it (default: now); not in the future.
    #[must_use]
    pub fn created_at(mut self, at: OffsetDateTime) -> Self {
        self.created_at = Some(at);
        self
    }

    /// Who imports it (e.g. the admin's email), recorded as `created_by`; default the
    /// owner.
    #[must_use]
    pub fn created_by(mut self, who: impl Into<String>) -> Self {
        self.created_by = Some(who.into());
        self
    }

    /// The display hint (at most 12 characters, e.g. the start of the token the other
    /// system showed); default the kind's prefix, `_` and `…`.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The owner.
    #[must_use]
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Tokens {
    /// Imports a token from another system: stores a record whose hash is the given
    /// SHA-256, so the token its holder has keeps working without being re-issued. The
    /// same rules as [`issue`](Self::issue) apply: valid owner, name and description, a
    /// known kind and role, permissions within the role's, a name unique among the
    /// owner's live tokens, the per-owner (or per-kind) limit, the kind's longest lifetime
    /// (counted from now).
    ///
    /// The manager does not audit it by itself; the management API records a
    /// `token.import` event for each imported token.
    ///
    /// # Errors
    ///
    /// [`TokenError::DuplicateHash`] when a token with this hash is already stored (it is
    /// never overwritten), [`TokenError::NameTaken`], [`TokenError::LimitReached`],
    /// [`TokenError::InvalidExpiry`] for an expiry that has passed or is too far, the
    /// other validation errors of [`issue`](Self::issue), or a store failure.
    pub async fn import(&self, req: ImportToken) -> Result<TokenRecord, TokenError> {
        check_text(&req.owner).map_err(TokenError::InvalidOwner)?;
        check_text(&req.name).map_err(TokenError::InvalidName)?;
        if let Some(d) = &req.description {
            check_text(d).map_err(TokenError::InvalidDescription)?;
        }
        let kind = match &req.kind {
            Some(k) => self
                .kind(k)
                .ok_or_else(|| TokenError::UnknownKind(k.clone()))?,
            None => &self.inner.kinds[0],
        }
        .clone();
        let permissions = self.resolve_permissions(req.role.as_deref(), req.permissions)?;
        let now = self.now();
        match (req.expires_at, kind.max_lifetime()) {
            (Some(e), _) if e <= now => {
                return Err(TokenError::InvalidExpiry("expires_at has already passed"));
            }
            (Some(e), _) if e - now > MAX_EXPIRES_IN => {
                return Err(TokenError::InvalidExpiry("must be at most 100 years"));
            }
            (Some(e), Some(max)) if e - now > max => {
                return Err(TokenError::InvalidExpiry(
                    "longer than this kind of token may live",
                ));
            }
            (None, Some(_)) => {
                return Err(TokenError::InvalidExpiry(
                    "this kind of token requires an expiry",
                ));
            }
            _ => {}
        }
        let created_at = match req.created_at {
            Some(at) if at > now => {
                return Err(TokenError::InvalidImport("created_at is in the future"));
            }
            Some(at) => at
                .replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
                .unwrap_or(at),
            None => now,
        };
        let hint = match req.hint {
            Some(h) => {
                check_text(&h).map_err(|_| {
                    TokenError::InvalidImport("hint must be 1-12 visible characters")
                })?;
                if h.chars().count() > HINT_LEN {
                    return Err(TokenError::InvalidImport(
                        "hint must be 1-12 visible characters",
                    ));
                }
                h
            }
            None => format!("{}_…", kind.prefix()),
        };
        let mut record = TokenRecord::new(
            TokenId::random(),
            req.hash,
            kind.shared_name().clone(),
            req.owner.clone(),
            req.name,
            created_at,
        )
        .with_permissions(permissions)
        .with_hint(hint)
        .with_created_by(req.created_by.unwrap_or(req.owner));
        record.extras_mut().description = req.description;
        record.extras_mut().role = req.role;
        record.expires_at = req.expires_at;
        let rules = self.limit_rules(&kind, now);
        match self.inner.store.insert(record.clone(), rules).await {
            Ok(()) => {
                tracing::debug!(token_id = %record.id, owner = %record.owner, kind = %record.kind, "token imported");
                Ok(record)
            }
            Err(StoreError::Duplicate) => Err(TokenError::DuplicateHash),
            Err(e) => Err(e.into()),
        }
    }
}
