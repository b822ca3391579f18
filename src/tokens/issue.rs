//! Issuing a token: the request ([`NewToken`]), the checks on it, and the answer ([`IssuedToken`]).

use std::time::Duration;

use ipnet::IpNet;
use time::OffsetDateTime;

use crate::identity::Permissions;
use crate::record::Metadata;
use crate::store::{InsertRules, StoreError, TokenId, TokenRecord, TokenStore};
use crate::token::{RawToken, TokenKind};

use super::{MAX_ALLOWED_IPS, MAX_EXPIRES_IN, MAX_TEXT_LEN, TokenError, Tokens};

/// What to issue. Only the owner is required.
///
/// ```
/// use keygate::NewToken;
/// use std::time::Duration;
///
/// let req = NewToken::new("alice", "deploy-bot")
///     .description("GitHub Actions, main branch")
///     .role("deployer")
///     .expires_in(Duration::from_secs(90 * 24 * 3600));
/// # let _ = req;
/// ```
#[derive(Debug, Clone)]
pub struct NewToken {
    owner: String,
    name: Option<String>,
    description: Option<String>,
    kind: Option<String>,
    role: Option<String>,
    permissions: Option<Permissions>,
    expires_in: Option<Duration>,
    created_by: Option<String>,
    allowed_ips: Vec<IpNet>,
    rate_limit: Option<u32>,
    metadata: Metadata,
}

impl NewToken {
    /// A token named `name` for `owner`.
    pub fn new(owner: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            name: Some(name.into()),
            ..Self::unnamed(owner)
        }
    }

    /// A token for `owner` whose name the manager picks (`token-<n>`, unique for the owner).
    pub fn unnamed(owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            name: None,
            description: None,
            kind: None,
            role: None,
            permissions: None,
            expires_in: None,
            created_by: None,
            allowed_ips: Vec::new(),
            rate_limit: None,
            metadata: Metadata::new(),
        }
    }

    /// Free text shown in lists, 1–100 visible characters (no control, format or
    /// bidirectional characters).
    #[must_use]
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
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

    /// Explicit permissions. With a role too, they must be within the role's.
    #[must_use]
    pub fn permissions(mut self, p: Permissions) -> Self {
        self.permissions = Some(p);
        self
    }

    /// Expires this long after creation (stored as an absolute UTC time).
    #[must_use]
    pub fn expires_in(mut self, d: Duration) -> Self {
        self.expires_in = Some(d);
        self
    }

    /// Restricts the token to clients in these networks (IPv4 or IPv6; an IPv4-mapped IPv6
    /// network is kept as IPv4, host bits are cleared). Empty (the default): any address.
    /// A request from outside the list, or whose client address is unknown, gets 403
    /// `ip_not_allowed`. At most [`MAX_ALLOWED_IPS`] networks.
    #[must_use]
    pub fn allowed_ips(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.allowed_ips = nets.into_iter().collect();
        self
    }

    /// Gives the token its own rate of `n` requests a minute. It can only *lower* its kind's
    /// (or the default) rate of the layer's [`RateLimits`](crate::rate_limit::RateLimits):
    /// the lower of the two applies, so no caller raises a token's budget this way. It
    /// applies where the layer limits rates at all.
    #[must_use]
    pub fn rate_limit_per_minute(mut self, n: u32) -> Self {
        self.rate_limit = Some(n);
        self
    }

    /// The owner's own data about the token (validated already: a JSON object of at most
    /// [`Metadata::MAX_BYTES`]). Kept by rotation; shown in every view and on the
    /// [`Identity`](crate::Identity). Empty by default.
    ///
    /// ```
    /// use keygate::NewToken;
    /// use keygate::record::Metadata;
    ///
    /// let meta = Metadata::from_json(r#"{"team": "payments", "ticket": 42}"#)?;
    /// let req = NewToken::new("alice", "deploy-bot").metadata(meta);
    /// # let _ = req;
    /// # Ok::<(), keygate::record::MetadataError>(())
    /// ```
    #[must_use]
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Who creates it, when not the owner (e.g. an admin); recorded as `created_by`.
    #[must_use]
    pub fn created_by(mut self, who: impl Into<String>) -> Self {
        self.created_by = Some(who.into());
        self
    }
}

/// A newly issued token: the secret (show it once) and the stored record.
#[derive(Debug)]
pub struct IssuedToken {
    /// The token in clear. It is not kept anywhere; hand it to its owner now.
    pub token: RawToken,
    /// What the store keeps.
    pub record: TokenRecord,
}

/// Names, descriptions and owners are shown to people (lists, the token page, audit
/// logs), so they refuse every character that is invisible or changes how the text
/// around it is shown: controls (Cc), format characters (Cf: zero-width spaces and
/// joiners, soft hyphens, every bidirectional mark, embedding, override and isolate) and
/// the line and paragraph separators (Zl, Zp). `"deploy\u{200b}"` would otherwise read as
/// a second `deploy`, and `"\u{202e}gpj.exe"` as `exe.jpg`.
pub(crate) fn check_text(s: &str) -> Result<(), &'static str> {
    let n = s.chars().count();
    if n == 0 || s.trim().is_empty() {
        return Err("must not be empty");
    }
    if n > MAX_TEXT_LEN {
        return Err("must be at most 100 characters");
    }
    if s.chars().any(is_hidden) {
        return Err(
            "must not contain control, format or bidirectional characters \
             (e.g. zero-width spaces, direction overrides, line separators)",
        );
    }
    Ok(())
}

/// A character that is not shown, or that rearranges the text around it.
pub(crate) fn is_hidden(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// Checks, normalises and deduplicates an allow-list: IPv4-mapped IPv6 networks become
/// IPv4 (the layer sees mapped clients as IPv4), host bits are cleared.
pub(super) fn normalise_nets(nets: &[IpNet]) -> Result<Vec<IpNet>, TokenError> {
    if nets.len() > MAX_ALLOWED_IPS {
        return Err(TokenError::InvalidAllowedIps("at most 64 networks"));
    }
    let mut out: Vec<IpNet> = Vec::with_capacity(nets.len());
    for net in nets {
        let net = match net {
            IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
                Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                    .map(IpNet::V4)
                    .map_err(|_| TokenError::InvalidAllowedIps("invalid prefix length"))?,
                None => *net,
            },
            other => *other,
        }
        .trunc();
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

impl Tokens {
    /// Issues a token: validates the request, generates the secret, stores its hash.
    ///
    /// # Errors
    ///
    /// A [`TokenError`] for invalid input, a taken name, the owner's limit, or a store
    /// failure.
    pub async fn issue(&self, req: NewToken) -> Result<IssuedToken, TokenError> {
        self.ensure_maintenance();
        check_text(&req.owner).map_err(TokenError::InvalidOwner)?;
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
        let expires_at = self.expiry(&kind, req.expires_in, now)?;
        let rules = self.limit_rules(&kind, now);
        let allowed_ips = normalise_nets(&req.allowed_ips)?;
        if req.rate_limit == Some(0) {
            return Err(TokenError::InvalidRateLimit(
                "must be at least 1 request a minute",
            ));
        }
        let explicit_name = req.name.is_some();
        if let Some(name) = &req.name {
            check_text(name).map_err(TokenError::InvalidName)?;
        }
        // An unnamed token gets the first free `token-<n>`; a concurrent create may take it
        // first, so try a few times.
        for attempt in 0..5 {
            let name = match &req.name {
                Some(n) => n.clone(),
                None => self.free_name(&req.owner, now, attempt).await?,
            };
            let token = kind.generate();
            let mut record = TokenRecord::new(
                TokenId::random(),
                self.inner.hasher.stored(token.expose_secret()),
                kind.shared_name().clone(),
                req.owner.clone(),
                name,
                now,
            )
            .with_permissions(permissions.clone())
            .with_hint(token.hint())
            .with_allowed_ips(allowed_ips.clone())
            .with_metadata(req.metadata.clone());
            if let Some(by) = &req.created_by {
                record = record.with_created_by(by.clone());
            }
            record.extras_mut().description.clone_from(&req.description);
            record.extras_mut().role.clone_from(&req.role);
            record.expires_at = expires_at;
            record.extras_mut().rate_limit = req.rate_limit;
            record.compact();
            match self.inner.store.insert(record.clone(), rules).await {
                Ok(()) => {
                    tracing::debug!(token_id = %record.id, owner = %record.owner, kind = %record.kind, "token issued");
                    return Ok(IssuedToken { token, record });
                }
                Err(StoreError::NameTaken) if !explicit_name => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(TokenError::NameTaken)
    }

    /// The limit a new valid token of `kind` must fit in: the kind's own cap, or the
    /// per-owner one.
    pub(super) fn limit_rules(&self, kind: &TokenKind, now: OffsetDateTime) -> InsertRules {
        match kind.max_live_per_owner() {
            Some(own) => InsertRules::new(now, own).per_kind(),
            None => InsertRules::new(now, self.inner.max_per_owner),
        }
    }

    pub(super) async fn free_name(
        &self,
        owner: &str,
        now: OffsetDateTime,
        skip: usize,
    ) -> Result<String, TokenError> {
        let taken: std::collections::HashSet<String> = self
            .inner
            .store
            .list_by_owner(owner)
            .await?
            .into_iter()
            .filter(|r| r.is_live_at(now))
            .map(|r| r.name.to_string())
            .collect();
        let mut skipped = 0;
        for n in 1.. {
            let candidate = format!("token-{n}");
            if !taken.contains(&candidate) {
                if skipped == skip {
                    return Ok(candidate);
                }
                skipped += 1;
            }
        }
        unreachable!("an unbounded range always yields a free name")
    }

    pub(super) fn resolve_permissions(
        &self,
        role: Option<&str>,
        explicit: Option<Permissions>,
    ) -> Result<Permissions, TokenError> {
        let from_role = match role {
            Some(r) => Some(
                self.inner
                    .roles
                    .get(r)
                    .ok_or_else(|| TokenError::UnknownRole(r.to_owned()))?,
            ),
            None => None,
        };
        match (from_role, explicit) {
            (Some(role), Some(p)) if !p.is_subset_of(role) => {
                Err(TokenError::PermissionsExceedRole)
            }
            (_, Some(p)) => Ok(p),
            (Some(role), None) => Ok(role.clone()),
            (None, None) => Ok(Permissions::none()),
        }
    }

    pub(super) fn expiry(
        &self,
        kind: &TokenKind,
        expires_in: Option<Duration>,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, TokenError> {
        match (expires_in, kind.max_lifetime()) {
            (Some(d), _) if d.is_zero() => Err(TokenError::InvalidExpiry("must be positive")),
            (Some(d), _) if d > MAX_EXPIRES_IN => {
                Err(TokenError::InvalidExpiry("must be at most 100 years"))
            }
            (Some(d), Some(max)) if d > max => Err(TokenError::InvalidExpiry(
                "longer than this kind of token may live",
            )),
            (None, Some(_)) => Err(TokenError::InvalidExpiry(
                "this kind of token requires an expiry",
            )),
            (Some(d), _) => Ok(Some(now + d)),
            (None, None) => Ok(None),
        }
    }
}
