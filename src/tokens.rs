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

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::HeaderMap;
use ipnet::IpNet;
use time::OffsetDateTime;

use crate::audit::{AuditEvent, AuditLog, Decision};
use crate::clock::{Clock, SystemClock};
use crate::denial::Denial;
use crate::error::ConfigError;
use crate::identity::{AuthMethod, Identity, Permissions, Roles};
use crate::store::{
    InactiveOutcome, InsertRules, ReleaseOutcome, StoreError, TokenId, TokenRecord, TokenStore,
};
use crate::token::{self, RawToken, TokenHash, TokenKind};

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
/// Longest client fingerprint a binding accepts, in bytes.
pub const MAX_FINGERPRINT_LEN: usize = 128;

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

    /// Takes the permissions of a role defined in the manager's [`Roles`].
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

/// Why a management operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The name is empty, too long, or has control, format or bidirectional characters.
    #[error("invalid name: {0}")]
    InvalidName(&'static str),
    /// The description is empty, too long, or has control, format or bidirectional
    /// characters.
    #[error("invalid description: {0}")]
    InvalidDescription(&'static str),
    /// The owner is empty, too long, or has control, format or bidirectional characters.
    #[error("invalid owner: {0}")]
    InvalidOwner(&'static str),
    /// No such role in the manager's [`Roles`].
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    /// No such kind in the manager.
    #[error("unknown token kind {0:?}")]
    UnknownKind(String),
    /// Explicit permissions go beyond the given role's.
    #[error("the permissions go beyond the role's")]
    PermissionsExceedRole,
    /// The expiry is zero, too long, or missing where the kind requires one.
    #[error("invalid expiry: {0}")]
    InvalidExpiry(&'static str),
    /// The allow-list is too long.
    #[error("invalid allowed_ips: {0}")]
    InvalidAllowedIps(&'static str),
    /// The per-token rate is zero.
    #[error("invalid rate_limit: {0}")]
    InvalidRateLimit(&'static str),
    /// A rotation asked for a grace window longer than the manager's maximum
    /// ([`TokensBuilder::max_rotation_grace`]).
    #[error("the grace window must be at most {max_seconds} seconds")]
    GraceTooLong {
        /// The longest grace allowed, in seconds.
        max_seconds: u64,
    },
    /// A binding was released less than 24 h ago.
    #[error("the binding was released less than 24 hours ago")]
    ReleaseTooSoon {
        /// When a release is allowed again.
        next_allowed_at: OffsetDateTime,
    },
    /// The token is of a kind without a binding.
    #[error("this kind of token has no binding")]
    NotBindable,
    /// The owner already has a live token with this name.
    #[error("a live token with this name already exists")]
    NameTaken,
    /// The owner is at the limit of valid tokens (live ones and replaced ones in grace).
    #[error("the limit of live tokens is reached")]
    LimitReached,
    /// No such token for this owner (or not live, for a rotation).
    #[error("token not found")]
    NotFound,
    /// The store failed.
    #[error("token store error")]
    Store(#[source] StoreError),
}

impl From<StoreError> for TokenError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken => Self::NameTaken,
            StoreError::LimitReached => Self::LimitReached,
            StoreError::NotFound => Self::NotFound,
            other => Self::Store(other),
        }
    }
}

/// The token manager. Cheap to clone; clones share everything.
///
/// Build one with [`Tokens::new`] (defaults) or [`Tokens::builder`].
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
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("kinds", &self.inner.kinds)
            .field("roles", &self.inner.roles)
            .field("max_per_owner", &self.inner.max_per_owner)
            .field("max_rotation_grace", &self.inner.max_grace)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Tokens`] manager.
#[must_use]
pub struct TokensBuilder {
    store: Arc<dyn TokenStore>,
    kinds: Vec<TokenKind>,
    roles: Roles,
    clock: Arc<dyn Clock>,
    max_per_owner: Option<u32>,
    max_grace: Duration,
    usage_granularity: Duration,
    inactivity: Option<Duration>,
    audit: Option<AuditLog>,
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
    /// or creation, see [`TokenRecord::last_active_at`] — is older than `after`. Tokens of
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

/// Names, descriptions and owners are shown to people (lists, the token page, audit
/// logs), so they refuse every character that is invisible or changes how the text
/// around it is shown: controls (Cc), format characters (Cf: zero-width spaces and
/// joiners, soft hyphens, every bidirectional mark, embedding, override and isolate) and
/// the line and paragraph separators (Zl, Zp). `"deploy\u{200b}"` would otherwise read as
/// a second `deploy`, and `"\u{202e}gpj.exe"` as `exe.jpg`.
fn check_text(s: &str) -> Result<(), &'static str> {
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
fn is_hidden(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
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

    fn kind_by_prefix(&self, prefix: &str) -> Option<&TokenKind> {
        self.inner.kinds.iter().find(|k| k.prefix() == prefix)
    }

    /// Issues a token: validates the request, generates the secret, stores its hash.
    ///
    /// # Errors
    ///
    /// A [`TokenError`] for invalid input, a taken name, the owner's limit, or a store
    /// failure.
    pub async fn issue(&self, req: NewToken) -> Result<IssuedToken, TokenError> {
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
            let record = TokenRecord {
                id: TokenId::random(),
                hash: token.hash(),
                kind: kind.name().to_owned(),
                owner: req.owner.clone(),
                name,
                description: req.description.clone(),
                role: req.role.clone(),
                permissions: permissions.clone(),
                hint: token.hint(),
                created_by: req.created_by.clone().unwrap_or_else(|| req.owner.clone()),
                created_at: now,
                expires_at,
                last_used_at: None,
                revoked_at: None,
                replaced_by: None,
                allowed_ips: allowed_ips.clone(),
                rate_limit: req.rate_limit,
                bound_to: None,
                bound_at: None,
                released_at: None,
            };
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
    fn limit_rules(&self, kind: &TokenKind, now: OffsetDateTime) -> InsertRules {
        match kind.max_live_per_owner() {
            Some(own) => InsertRules::new(now, own).per_kind(),
            None => InsertRules::new(now, self.inner.max_per_owner),
        }
    }

    async fn free_name(
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
            .map(|r| r.name)
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

    fn resolve_permissions(
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

    fn expiry(
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

    /// Verifies a presented token and returns its [`Identity`]. This is the check the layer
    /// runs; call it directly to authenticate outside HTTP.
    ///
    /// # Errors
    ///
    /// The [`Denial`]: [`Malformed`](Denial::Malformed), [`Unknown`](Denial::Unknown),
    /// [`Revoked`](Denial::Revoked), [`Expired`](Denial::Expired) or
    /// [`StoreUnavailable`](Denial::StoreUnavailable). It is the domain reason, not an HTTP
    /// answer: `RejectionKind::from(denial)` (or `Rejection::from(denial)`) gives the
    /// middleware's answer for it.
    ///
    /// A token with an allow-list or of a binding kind is refused here (no client address,
    /// no fingerprint): use [`authenticate_request`](Self::authenticate_request).
    pub async fn authenticate(&self, token: &str) -> Result<Identity, Denial> {
        self.verify(token, None).await
    }

    /// [`authenticate`](Self::authenticate) with what the policies kept on the token need:
    /// the client address (for its allow-list) and the request headers (for the fingerprint
    /// of a binding kind).
    ///
    /// # Errors
    ///
    /// As [`authenticate`](Self::authenticate), plus
    /// [`IpNotAllowed`](Denial::IpNotAllowed), [`BindingRequired`](Denial::BindingRequired)
    /// and [`BoundElsewhere`](Denial::BoundElsewhere).
    pub async fn authenticate_request(
        &self,
        token: &str,
        client_ip: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Result<Identity, Denial> {
        let id = self
            .verify_detailed(token, None)
            .await
            .map_err(|d| d.denial)?;
        self.check_record_policies(&id, client_ip, headers).await?;
        Ok(id)
    }

    /// The verification path: format and checksum (no store hit for garbage), SHA-256,
    /// lookup by hash, constant-time compare, kind, revocation, expiry; then the use is
    /// queued for the batched `last_used_at` update.
    ///
    /// Every refusal of a well-formed token (unknown, revoked, expired, wrong kind) walks
    /// the same path: the hash and the lookup happen before any of them is decided.
    pub(crate) async fn verify(
        &self,
        token: &str,
        accept: Option<&[String]>,
    ) -> Result<Identity, Denial> {
        let id = self
            .verify_detailed(token, accept)
            .await
            .map_err(|d| d.denial)?;
        self.check_record_policies(&id, None, &HeaderMap::new())
            .await?;
        Ok(id)
    }

    /// The policies kept on the record that can be judged without the store: the
    /// allow-list (the client address is asked for only when the list is not empty) and
    /// the presence of a binding kind's fingerprint. `Ok(None)`: admitted (and the use
    /// recorded); `Ok(Some(fingerprint))`: the binding must be settled with
    /// [`settle_binding`](Self::settle_binding).
    /// `now` is [`now_nanos`](Self::now_nanos), read once for the request.
    pub(crate) fn record_policies_now<'h>(
        &self,
        identity: &Identity,
        client_ip: impl FnOnce() -> Option<IpAddr>,
        headers: &'h HeaderMap,
        now: i128,
    ) -> Result<Option<&'h str>, Denial> {
        let record = identity.record();
        if !record.allowed_ips.is_empty() {
            // Fail closed: an unknown address is outside every list.
            let allowed = client_ip()
                .map(crate::client_ip::canonical)
                .is_some_and(|ip| record.allowed_ips.iter().any(|n| n.contains(&ip)));
            if !allowed {
                return Err(Denial::IpNotAllowed);
            }
        }
        let binding = if self.inner.bindings {
            self.kind(&record.kind).and_then(TokenKind::binding_header)
        } else {
            None
        };
        let Some(header) = binding else {
            self.inner
                .usage
                .touch(record, now, || self.now().unix_timestamp_nanos());
            return Ok(None);
        };
        let fingerprint = headers
            .get(header)
            .and_then(|v| v.to_str().ok())
            .filter(|f| valid_fingerprint(f))
            .ok_or_else(|| Denial::BindingRequired)?;
        if record.bound_to.as_deref() == Some(fingerprint) {
            self.inner
                .usage
                .touch(record, now, || self.now().unix_timestamp_nanos());
            return Ok(None);
        }
        Ok(Some(fingerprint))
    }

    /// Binds the token to `fingerprint` if it is free (atomically in the store) and admits
    /// the request if it is bound to it. The store is asked whenever the record at hand
    /// does not show this fingerprint, so a stale cached copy never decides.
    pub(crate) async fn settle_binding(
        &self,
        identity: &Identity,
        fingerprint: &str,
    ) -> Result<(), Denial> {
        let record = identity.record();
        let now = self.now();
        match self.inner.store.bind(&record.id, fingerprint, now).await {
            Ok(Some(bound)) if bound == fingerprint => {
                if record.bound_to.is_none() {
                    tracing::debug!(token_id = %record.id, "token bound on first use");
                }
                let now = now.unix_timestamp_nanos();
                self.inner.usage.touch(record, now, || now);
                Ok(())
            }
            Ok(Some(_)) => Err(Denial::BoundElsewhere),
            // Purged meanwhile.
            Ok(None) => Err(Denial::Unknown),
            Err(error) => {
                tracing::warn!(%error, "token store failed to bind; refusing the request");
                Err(Denial::StoreUnavailable)
            }
        }
    }

    /// Every policy kept on the record (allow-list, binding), then the use is recorded.
    pub(crate) async fn check_record_policies(
        &self,
        identity: &Identity,
        client_ip: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Result<(), Denial> {
        let now = self.now_nanos();
        if let Some(fingerprint) = self.record_policies_now(identity, || client_ip, headers, now)? {
            self.settle_binding(identity, fingerprint).await?;
        }
        Ok(())
    }

    /// [`verify`](Self::verify) without the policies kept on the record (the caller runs
    /// [`check_record_policies`](Self::check_record_policies), which records the use),
    /// keeping the record of a refused well-formed token for the audit event.
    pub(crate) async fn verify_detailed(
        &self,
        token: &str,
        accept: Option<&[String]>,
    ) -> Result<Identity, Denied> {
        let (kind, hash) = self.prepare(token)?;
        let found = match self.inner.store.find_by_hash_now(&hash) {
            Some(answer) => answer,
            None => self.inner.store.find_by_hash(&hash).await,
        };
        self.decide(kind, &hash, found, accept, self.now_nanos())
    }

    /// The verification when the store can answer without I/O (see
    /// [`TokenStore::find_by_hash_now`]); `None` when it cannot. Like
    /// [`verify_detailed`](Self::verify_detailed), without the record's policies.
    /// `now` is [`now_nanos`](Self::now_nanos), read once for the request.
    pub(crate) fn verify_now(
        &self,
        token: &str,
        accept: Option<&[String]>,
        now: i128,
    ) -> Option<Result<Identity, Denied>> {
        let (kind, hash) = match self.prepare(token) {
            Ok(prepared) => prepared,
            Err(denied) => return Some(Err(denied)),
        };
        let found = self.inner.store.find_by_hash_now(&hash)?;
        Some(self.decide(kind, &hash, found, accept, now))
    }

    /// Format, checksum and kind (no store hit for garbage), then SHA-256.
    fn prepare(&self, token: &str) -> Result<(&TokenKind, TokenHash), Denied> {
        let parsed = token::parse(token).map_err(|_| Denied::new(Denial::Malformed))?;
        let kind = self
            .kind_by_prefix(parsed.prefix())
            .ok_or(Denied::new(Denial::Malformed))?;
        Ok((kind, parsed.hash()))
    }

    /// Everything after the lookup: constant-time compare, kind, revocation, expiry.
    fn decide(
        &self,
        kind: &TokenKind,
        hash: &TokenHash,
        found: Result<Option<Arc<TokenRecord>>, StoreError>,
        accept: Option<&[String]>,
        now: i128,
    ) -> Result<Identity, Denied> {
        let found = match found {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "token store lookup failed; refusing the request");
                return Err(Denied::new(Denial::StoreUnavailable));
            }
        };
        let Some(record) = found else {
            return Err(Denied::new(Denial::Unknown));
        };
        // The store found the record by its hash; the core still checks the digest itself,
        // in constant time, so a backend bug cannot let a different token through.
        let same = record.hash.ct_eq(hash);
        let kind_ok = record.kind == kind.name()
            && accept.is_none_or(|names| names.iter().any(|n| *n == record.kind));
        let refused = if !same {
            Some(Denial::Unknown)
        } else if !kind_ok {
            Some(Denial::WrongKind)
        } else if record.revoked_at.is_some() {
            Some(Denial::Revoked)
        } else if record.expires_at.is_some_and(|e| self.expired(e, now)) {
            Some(Denial::Expired)
        } else {
            None
        };
        if let Some(kind) = refused {
            return Err(Denied {
                denial: kind,
                record: same.then_some(record),
            });
        }
        Ok(Identity::new(record, AuthMethod::Bearer))
    }

    /// The owner's tokens in every state (active, expired, replaced, revoked until purged),
    /// oldest first. Use [`TokenRecord::is_valid_at`] with [`Tokens::now`] to tell them
    /// apart.
    ///
    /// # Errors
    ///
    /// [`TokenError::Store`].
    pub async fn list(&self, owner: &str) -> Result<Vec<TokenRecord>, TokenError> {
        Ok(self.inner.store.list_by_owner(owner).await?)
    }

    /// The owner's token `id`, in any state.
    ///
    /// # Errors
    ///
    /// [`TokenError::NotFound`] when there is none or it belongs to someone else.
    pub async fn get(&self, owner: &str, id: TokenId) -> Result<TokenRecord, TokenError> {
        match self.inner.store.get(&id).await? {
            Some(r) if r.owner == owner => Ok(r),
            _ => Err(TokenError::NotFound),
        }
    }

    /// Revokes the owner's token `id` and, when it was replaced by a rotation, its
    /// successors (see [`revoke_with_successors`](Self::revoke_with_successors)). Takes
    /// effect on the next request.
    ///
    /// # Errors
    ///
    /// As [`revoke_with_successors`](Self::revoke_with_successors).
    pub async fn revoke(&self, owner: &str, id: TokenId) -> Result<(), TokenError> {
        self.revoke_with_successors(owner, id).await.map(drop)
    }

    /// Revokes the owner's token `id` and every token that replaced it, rotation after
    /// rotation (the whole chain forward): whoever held the old token may hold the new one,
    /// so revoking a leaked token also stops someone who rotated it first. Returns the
    /// successors revoked (without `id`); each gets an audit event (`token.revoke`, reason
    /// `successor`) when the manager has an [`audit`](TokensBuilder::audit) log. Takes
    /// effect on the next request.
    ///
    /// Each token is revoked before its successor is looked up, so a rotation racing the
    /// revocation either is seen and its new token revoked, or fails (the token it rotates
    /// is no longer live). An `id` that is already revoked still has its chain revoked (a
    /// retry after a store failure finishes the work). To end a rotation's grace early
    /// without touching the new token, use
    /// [`revoke_keeping_successors`](Self::revoke_keeping_successors).
    ///
    /// # Errors
    ///
    /// [`TokenError::NotFound`] when there is no such token of this owner, or it and every
    /// successor are already revoked (the same answer as for someone else's token);
    /// [`TokenError::Store`], possibly after part of the chain was revoked.
    pub async fn revoke_with_successors(
        &self,
        owner: &str,
        id: TokenId,
    ) -> Result<Vec<TokenId>, TokenError> {
        let rec = self.get(owner, id).await?;
        let now = self.now();
        let mut any = false;
        if rec.revoked_at.is_none() && self.inner.store.revoke(&id, now).await? {
            tracing::debug!(token_id = %id, "token revoked");
            any = true;
        }
        let mut revoked = Vec::new();
        let mut current = id;
        // A chain is as long as the rotations since its oldest record was purged; the bound
        // only guards against a store that returns a cycle.
        for _ in 0..MAX_SUCCESSORS {
            // Read after `current` was revoked: see above.
            let Some(record) = self.inner.store.get(&current).await? else {
                break;
            };
            let Some(next) = record.replaced_by else {
                break;
            };
            if self.inner.store.revoke(&next, now).await? {
                let successor = self.inner.store.get(&next).await.ok().flatten();
                tracing::info!(token_id = %next, predecessor = %current, "successor of a revoked token revoked");
                if let Some(audit) = &self.inner.audit {
                    audit.record(maintenance_event(
                        now,
                        "token.revoke",
                        next,
                        successor.as_ref(),
                        Decision::Allow,
                        "successor",
                    ));
                }
                revoked.push(next);
            }
            current = next;
        }
        if any || !revoked.is_empty() {
            Ok(revoked)
        } else {
            Err(TokenError::NotFound)
        }
    }

    /// Revokes the owner's token `id` only, leaving the tokens that replaced it alone: ends
    /// a rotation's grace early, once every client uses the new token. Do not use it for a
    /// leaked token (whoever rotated it holds the successor): use
    /// [`revoke`](Self::revoke).
    ///
    /// # Errors
    ///
    /// [`TokenError::NotFound`] when there is no such token of this owner or it is already
    /// revoked (the same answer as for someone else's token).
    pub async fn revoke_keeping_successors(
        &self,
        owner: &str,
        id: TokenId,
    ) -> Result<(), TokenError> {
        let rec = self.get(owner, id).await?;
        if rec.revoked_at.is_some() {
            return Err(TokenError::NotFound);
        }
        if self.inner.store.revoke(&id, self.now()).await? {
            tracing::debug!(token_id = %id, "token revoked, successors kept");
            Ok(())
        } else {
            Err(TokenError::NotFound)
        }
    }

    /// Replaces the owner's live token `id` by a new one with the same name, kind, role,
    /// permissions and description. The old token keeps working for `grace` and then dies;
    /// without grace it dies at once. A new expiry, if the old token had one, keeps the
    /// original lifetime, counted from the rotation (for an owner renewing a token; see
    /// [`rotate_keeping_expiry`](Self::rotate_keeping_expiry) for a rotation that never
    /// extends it). The allow-list, the rate and the binding carry over (a seat stays
    /// on its machine: rotating is not a way around the once-a-day release), as does the
    /// time of the last release.
    ///
    /// Rotation never multiplies tokens: `grace` is at most
    /// [`max_rotation_grace`](TokensBuilder::max_rotation_grace) (default 24 h); a lineage
    /// keeps at most one old token in grace (rotating the successor of a token in grace
    /// ends that grace at once); and a token in grace counts against the owner's limit (and
    /// its kind's), so a rotation with grace needs a free place under it. A rotation
    /// without grace never changes the count and is always allowed.
    ///
    /// # Errors
    ///
    /// [`TokenError::NotFound`] when the token is unknown, someone else's, or no longer live;
    /// [`TokenError::GraceTooLong`]; [`TokenError::LimitReached`] for a grace at the limit.
    pub async fn rotate(
        &self,
        owner: &str,
        id: TokenId,
        grace: Option<Duration>,
    ) -> Result<IssuedToken, TokenError> {
        self.rotate_with(owner, id, grace, Expiry::SameLifetime)
            .await
    }

    /// [`rotate`](Self::rotate), except that the new token expires when the old one would
    /// have (if it had an expiry), instead of a full lifetime after the rotation: a
    /// rotation never extends the life of the lineage. The management API rotates this way
    /// for bearer tokens, so that a token cannot keep itself (or a sibling) alive for ever by
    /// rotating it.
    ///
    /// # Errors
    ///
    /// As [`rotate`](Self::rotate).
    pub async fn rotate_keeping_expiry(
        &self,
        owner: &str,
        id: TokenId,
        grace: Option<Duration>,
    ) -> Result<IssuedToken, TokenError> {
        self.rotate_with(owner, id, grace, Expiry::Same).await
    }

    async fn rotate_with(
        &self,
        owner: &str,
        id: TokenId,
        grace: Option<Duration>,
        expiry: Expiry,
    ) -> Result<IssuedToken, TokenError> {
        let old = self.get(owner, id).await?;
        let now = self.now();
        if !old.is_live_at(now) {
            return Err(TokenError::NotFound);
        }
        let kind = self
            .kind(&old.kind)
            .ok_or_else(|| TokenError::UnknownKind(old.kind.clone()))?
            .clone();
        let grace = grace.unwrap_or_default();
        if grace > self.inner.max_grace {
            return Err(TokenError::GraceTooLong {
                max_seconds: self.inner.max_grace.as_secs(),
            });
        }
        let rules = self.limit_rules(&kind, now);
        let token = kind.generate();
        let expires_at = match expiry {
            Expiry::SameLifetime => old.expires_at.map(|e| now + (e - old.created_at)),
            Expiry::Same => old.expires_at,
        };
        let record = TokenRecord {
            id: TokenId::random(),
            hash: token.hash(),
            hint: token.hint(),
            created_at: now,
            expires_at,
            last_used_at: None,
            revoked_at: None,
            replaced_by: None,
            ..old
        };
        let outcome = self
            .inner
            .store
            .rotate(&id, record.clone(), now + grace, rules)
            .await?;
        for ended in &outcome.ended {
            tracing::debug!(token_id = %ended, "grace of an earlier rotation ended");
        }
        tracing::debug!(old = %id, new = %record.id, "token rotated");
        Ok(IssuedToken { token, record })
    }

    /// Deletes expired and revoked records now; returns how many. With
    /// [`revoke_after_inactivity`](TokensBuilder::revoke_after_inactivity), then revokes
    /// the inactive tokens and releases the idle seats (they are deleted by the next purge,
    /// so the owner sees them revoked until then).
    ///
    /// # Errors
    ///
    /// [`TokenError::Store`].
    pub async fn purge(&self) -> Result<u64, TokenError> {
        let now = self.now();
        let purged = self.inner.store.purge_expired(now).await?;
        if self.inner.inactivity.is_some() {
            self.expire_inactive().await?;
        }
        Ok(purged)
    }

    /// Inactivity expiry now (see
    /// [`revoke_after_inactivity`](TokensBuilder::revoke_after_inactivity)); does nothing
    /// without it. Each revoked token and released seat gets an audit event (event
    /// `token.revoke` / `token.release`, reason `inactive`) when the manager has an
    /// [`audit`](TokensBuilder::audit) log.
    ///
    /// # Errors
    ///
    /// [`TokenError::Store`].
    pub async fn expire_inactive(&self) -> Result<InactiveOutcome, TokenError> {
        let Some(after) = self.inner.inactivity else {
            return Ok(InactiveOutcome::default());
        };
        let now = self.now();
        let cutoff = now - after;
        let release_kinds: Vec<String> = self
            .inner
            .kinds
            .iter()
            .filter(|k| k.binding_header().is_some())
            .map(|k| k.name().to_owned())
            .collect();
        let out = self
            .inner
            .store
            .expire_inactive(cutoff, now, &release_kinds)
            .await?;
        if !out.revoked.is_empty() || !out.released.is_empty() {
            tracing::info!(
                revoked = out.revoked.len(),
                released = out.released.len(),
                "inactive tokens revoked and idle seats released"
            );
        }
        if let Some(audit) = &self.inner.audit {
            let events = out
                .revoked
                .iter()
                .map(|id| (id, "token.revoke"))
                .chain(out.released.iter().map(|id| (id, "token.release")));
            for (id, event) in events {
                // Name and owner, best effort: a failed read only thins the event.
                let record = self.inner.store.get(id).await.ok().flatten();
                audit.record(maintenance_event(
                    now,
                    event,
                    *id,
                    record.as_ref(),
                    Decision::Allow,
                    "inactive",
                ));
            }
        }
        Ok(out)
    }

    /// Releases the binding of the owner's token `id`, so the next machine that uses it
    /// takes the seat. At most once every 24 hours per token; automatic
    /// releases for inactivity do not count.
    ///
    /// # Errors
    ///
    /// [`TokenError::NotFound`] for an unknown, someone else's or revoked token;
    /// [`TokenError::NotBindable`] for a kind without a binding;
    /// [`TokenError::ReleaseTooSoon`] within 24 hours of the last release.
    pub async fn release_binding(&self, owner: &str, id: TokenId) -> Result<(), TokenError> {
        let rec = self.get(owner, id).await?;
        let now = self.now();
        if !rec.is_valid_at(now) {
            return Err(TokenError::NotFound);
        }
        if self
            .kind(&rec.kind)
            .and_then(TokenKind::binding_header)
            .is_none()
        {
            return Err(TokenError::NotBindable);
        }
        match self.inner.store.release(&id, now, RELEASE_INTERVAL).await? {
            ReleaseOutcome::Released => {
                tracing::debug!(token_id = %id, "binding released");
                if let Some(audit) = &self.inner.audit {
                    audit.record(maintenance_event(
                        now,
                        "token.release",
                        id,
                        Some(&rec),
                        Decision::Allow,
                        "owner",
                    ));
                }
                Ok(())
            }
            // Nothing to release: the seat is already free.
            ReleaseOutcome::NotBound => Ok(()),
            ReleaseOutcome::TooSoon { next_allowed_at } => {
                Err(TokenError::ReleaseTooSoon { next_allowed_at })
            }
        }
    }

    /// Writes queued `last_used_at` updates to the store in one batch; returns how many.
    /// On failure they stay queued for the next flush.
    ///
    /// # Errors
    ///
    /// [`TokenError::Store`].
    pub async fn flush_usage(&self) -> Result<usize, TokenError> {
        let batch = self.inner.usage.drain();
        if batch.is_empty() {
            return Ok(0);
        }
        match self.inner.store.record_use(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                self.inner.usage.requeue(batch);
                Err(e.into())
            }
        }
    }

    /// Number of uses waiting for [`flush_usage`](Self::flush_usage).
    #[must_use]
    pub fn pending_usage(&self) -> usize {
        self.inner.usage.len()
    }

    /// Starts the background task that flushes usage every `flush_every` and purges expired
    /// and revoked tokens every `purge_every` (with inactivity expiry, if configured: see
    /// [`purge`](Self::purge)). Needs a Tokio runtime with time enabled.
    /// Call [`Maintenance::shutdown`] on the way out to write the last batch.
    #[must_use = "dropping the handle stops the task"]
    pub fn spawn_maintenance(&self, flush_every: Duration, purge_every: Duration) -> Maintenance {
        let tokens = self.clone();
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        let handle = tokio::spawn(async move {
            let mut flush = tokio::time::interval(flush_every);
            let mut purge = tokio::time::interval(purge_every);
            flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = flush.tick() => {
                        if let Err(error) = tokens.flush_usage().await {
                            tracing::warn!(%error, "flushing last-used times failed; will retry");
                        }
                    }
                    _ = purge.tick() => {
                        match tokens.purge().await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(purged = n, "purged expired and revoked tokens"),
                            Err(error) => tracing::warn!(%error, "purge failed; will retry"),
                        }
                    }
                    () = stopped.notified() => break,
                }
            }
            if let Err(error) = tokens.flush_usage().await {
                tracing::warn!(%error, "final flush of last-used times failed");
            }
        });
        Maintenance {
            stop,
            handle: Some(handle),
        }
    }
}

/// The expiry a rotation gives the new token.
#[derive(Clone, Copy)]
enum Expiry {
    /// The old token's lifetime, from now.
    SameLifetime,
    /// The old token's expiry.
    Same,
}

/// Checks, normalises and deduplicates an allow-list: IPv4-mapped IPv6 networks become
/// IPv4 (the layer sees mapped clients as IPv4), host bits are cleared.
fn normalise_nets(nets: &[IpNet]) -> Result<Vec<IpNet>, TokenError> {
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

/// A client fingerprint: 1–128 visible ASCII characters.
fn valid_fingerprint(f: &str) -> bool {
    !f.is_empty() && f.len() <= MAX_FINGERPRINT_LEN && f.bytes().all(|b| b.is_ascii_graphic())
}

/// An audit event for something the manager did outside a request: `decision` is
/// [`Decision::Allow`] for a change that took effect, and `reason` names its cause
/// (`inactive`, `owner`).
fn maintenance_event(
    now: OffsetDateTime,
    event: &str,
    id: TokenId,
    record: Option<&TokenRecord>,
    decision: Decision,
    reason: &str,
) -> AuditEvent {
    AuditEvent {
        timestamp: now,
        event: event.to_owned(),
        api_token_id: Some(id),
        api_token_name: record.map(|r| r.name.clone()),
        owner: record.map(|r| r.owner.clone()),
        method: String::new(),
        path: String::new(),
        status_code: 0,
        rbac_decision: decision,
        reason: Some(reason.to_owned()),
        client_ip: None,
        request_id: None,
    }
}

/// A refusal with the record of the token, when one was found.
pub(crate) struct Denied {
    pub(crate) denial: Denial,
    pub(crate) record: Option<Arc<TokenRecord>>,
}

impl Denied {
    fn new(denial: Denial) -> Self {
        Self {
            denial,
            record: None,
        }
    }
}

/// Handle to the task started by [`Tokens::spawn_maintenance`]. Dropping it aborts the task;
/// [`shutdown`](Self::shutdown) stops it after a last flush.
#[derive(Debug)]
pub struct Maintenance {
    stop: Arc<tokio::sync::Notify>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Maintenance {
    /// Stops the task after writing the queued `last_used_at` updates.
    pub async fn shutdown(mut self) {
        self.stop.notify_one();
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

const USAGE_SHARDS: usize = 16;

/// How close to a deadline (a token's expiry, the end of a usage window), in nanoseconds,
/// the check re-reads the precise clock: well above the lag of a coarse clock (a scheduler
/// tick, 1 to 10 ms).
const CLOSE_TO_EXPIRY: i128 = 100_000_000;

/// Coalesced last-used times, waiting for a batched write.
struct Usage {
    /// In nanoseconds.
    granularity: i128,
    shards: Box<[Mutex<HashMap<TokenId, OffsetDateTime>>]>,
}

impl Usage {
    fn new(granularity: Duration) -> Self {
        Self {
            granularity: i128::try_from(granularity.as_nanos()).unwrap_or(i128::MAX),
            shards: (0..USAGE_SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, id: &TokenId) -> &Mutex<HashMap<TokenId, OffsetDateTime>> {
        &self.shards[(id.0.as_u128() as usize) % USAGE_SHARDS]
    }

    /// Queues a use at `now` (nanoseconds since the epoch, from a clock that may lag a
    /// little), unless the record shows one within the granularity. Within
    /// [`CLOSE_TO_EXPIRY`] of the window's end, `precise` (the manager's precise clock)
    /// decides, so a lagging clock never skips a use that falls past the window.
    fn touch(&self, record: &TokenRecord, now: i128, precise: impl FnOnce() -> i128) {
        if let Some(t) = record.last_used_at {
            let t = t.unix_timestamp_nanos();
            let within = |now: i128| now.saturating_sub(t) < self.granularity;
            if within(now.saturating_add(CLOSE_TO_EXPIRY)) || (within(now) && within(precise())) {
                return;
            }
        }
        // At microsecond precision, as `Tokens::now` and SQL stores keep times.
        let Ok(now) = OffsetDateTime::from_unix_timestamp_nanos(now - now.rem_euclid(1_000)) else {
            return;
        };
        let mut m = self
            .shard(&record.id)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        m.entry(record.id)
            .and_modify(|t| *t = (*t).max(now))
            .or_insert(now);
    }

    fn drain(&self) -> Vec<(TokenId, OffsetDateTime)> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            out.extend(s.lock().unwrap_or_else(PoisonError::into_inner).drain());
        }
        out
    }

    fn requeue(&self, batch: Vec<(TokenId, OffsetDateTime)>) {
        for (id, at) in batch {
            self.shard(&id)
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(id)
                .and_modify(|t| *t = (*t).max(at))
                .or_insert(at);
        }
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}
