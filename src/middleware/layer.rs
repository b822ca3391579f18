use std::sync::Arc;

use http::Method;
use tower::Layer;

use super::rate_headers::RateLimitHeaders;
use super::rejection::{JsonRenderer, RenderRejection};
use super::service::AuthService;
use super::source::TokenSource;
use crate::audit::AuditLog;
use crate::client_ip::ClientIpSource;
use crate::error::ConfigError;
use crate::identity::{Identity, Permission};
use crate::middleware::Rejection;
use crate::permissions::PermissionResolver;
use crate::rate_limit::{FailureLimits, RateLimits};
use crate::tokens::Tokens;

/// Which permission a request needs once its token is valid.
#[derive(Debug, Clone)]
pub(crate) enum AccessRule {
    /// Any valid token will do.
    AnyToken,
    /// Every request needs this permission.
    Require(Permission),
    /// Safe methods (GET, HEAD, OPTIONS) need only a valid token; others need this.
    WritesNeed(Permission),
}

pub(crate) struct Config {
    pub(crate) tokens: Tokens,
    pub(crate) accept: Option<Vec<String>>,
    pub(crate) rule: AccessRule,
    pub(crate) optional: bool,
    pub(crate) renderer: Arc<dyn RenderRejection>,
    pub(crate) rates: Option<RateLimits>,
    pub(crate) rate_headers: RateLimitHeaders,
    pub(crate) failures: Option<FailureLimits>,
    pub(crate) audit: Option<AuditLog>,
    pub(crate) client_ip: ClientIpSource,
    pub(crate) metrics: bool,
    /// The metric handles of this layer, registered on first use.
    #[cfg(feature = "metrics")]
    pub(crate) metric_handles: Arc<crate::metrics::Handles>,
    pub(crate) resolver: Option<Arc<dyn PermissionResolver>>,
    /// Where the token is read ([`AuthLayer::token_sources`]).
    pub(crate) sources: Arc<[TokenSource]>,
    /// The sources are `Authorization: Bearer` alone (the default): the fast path reads it
    /// in place.
    pub(crate) bearer_only: bool,
}

impl Config {
    /// True when any per-request policy (or metrics) is on: the layer then takes the full
    /// path with client address, limits, audit and metrics.
    pub(crate) fn has_policies(&self) -> bool {
        self.metrics
            || self.rates.is_some()
            || self.failures.is_some()
            || self.audit.is_some()
            || self.resolver.is_some()
    }

    pub(crate) fn check_access(&self, method: &Method, id: &Identity) -> Result<(), Rejection> {
        let needed = match &self.rule {
            AccessRule::AnyToken => return Ok(()),
            AccessRule::Require(p) => p,
            AccessRule::WritesNeed(p) => {
                if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
                    return Ok(());
                }
                p
            }
        };
        id.require(needed.as_str())
    }

    pub(crate) fn reject(&self, r: &Rejection) -> http::Response<bytes::Bytes> {
        let mut res = self.renderer.render(r);
        r.kind().tag(res.extensions_mut());
        res
    }
}

/// The tower [`Layer`] that authenticates every request with a keygate token.
///
/// Cheap to clone. Works with axum (`Router::layer` / `route_layer`), plain tower and hyper
/// services alike.
///
/// ```
/// use keygate::{AuthLayer, MemoryStore, Tokens};
///
/// let tokens = Tokens::new(MemoryStore::new());
/// // Reads need any valid token; POST, PUT, PATCH and DELETE need `things:write`.
/// let layer = AuthLayer::new(tokens).read_write("things:write");
/// # let _ = layer;
/// ```
#[derive(Clone)]
#[must_use]
pub struct AuthLayer {
    config: Arc<Config>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer")
            .field("accept", &self.config.accept)
            .field("rule", &self.config.rule)
            .field("optional", &self.config.optional)
            .field("sources", &self.config.sources)
            .finish_non_exhaustive()
    }
}

impl AuthLayer {
    /// A layer accepting every kind the manager knows, with any valid token allowed.
    pub fn new(tokens: Tokens) -> Self {
        Self {
            config: Arc::new(Config {
                tokens,
                accept: None,
                rule: AccessRule::AnyToken,
                optional: false,
                renderer: Arc::new(JsonRenderer::default()),
                rates: None,
                rate_headers: RateLimitHeaders::default(),
                failures: None,
                audit: None,
                client_ip: ClientIpSource::new(),
                metrics: false,
                #[cfg(feature = "metrics")]
                metric_handles: Arc::default(),
                resolver: None,
                sources: Arc::new([TokenSource::bearer()]),
                bearer_only: true,
            }),
        }
    }

    /// The layer's settings, for services that run its pipeline (forward authentication).
    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }

    fn map(self, f: impl FnOnce(&mut Config)) -> Self {
        let c = &self.config;
        let mut config = Config {
            tokens: c.tokens.clone(),
            accept: c.accept.clone(),
            rule: c.rule.clone(),
            optional: c.optional,
            renderer: c.renderer.clone(),
            rates: c.rates.clone(),
            rate_headers: c.rate_headers,
            failures: c.failures.clone(),
            audit: c.audit.clone(),
            client_ip: c.client_ip.clone(),
            metrics: c.metrics,
            #[cfg(feature = "metrics")]
            metric_handles: c.metric_handles.clone(),
            resolver: c.resolver.clone(),
            sources: c.sources.clone(),
            bearer_only: c.bearer_only,
        };
        f(&mut config);
        Self {
            config: Arc::new(config),
        }
    }

    /// Accepts only tokens of these kinds (by name); any other kind is refused as
    /// `invalid_token`, exactly like an unknown token.
    ///
    /// # Errors
    ///
    /// [`ConfigError::UnknownKind`] for a name the manager does not know.
    pub fn accept_kinds<I, S>(self, kinds: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = kinds.into_iter().map(Into::into).collect();
        if let Some(bad) = names.iter().find(|n| self.config.tokens.kind(n).is_none()) {
            return Err(ConfigError::UnknownKind(bad.clone()));
        }
        Ok(self.map(|c| c.accept = Some(names)))
    }

    /// Every request needs `permission` (403 `insufficient_scope` otherwise).
    ///
    /// For a permission written in the code; use [`try_require`](Self::try_require) for
    /// one read at run time (configuration, user input).
    ///
    /// # Panics
    ///
    /// When `permission` is not a valid permission (see [`Permission`]), with a message
    /// naming it: a literal that is wrong fails the first time the router is built.
    pub fn require(self, permission: &'static str) -> Self {
        let p = static_permission("AuthLayer::require", permission);
        self.map(|c| c.rule = AccessRule::Require(p))
    }

    /// [`require`](Self::require) for a permission known only at run time.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidPermission`].
    pub fn try_require(self, permission: &str) -> Result<Self, ConfigError> {
        let p = Permission::new(permission)?;
        Ok(self.map(|c| c.rule = AccessRule::Require(p)))
    }

    /// The read-only rule: GET, HEAD and OPTIONS need only a valid token; every other method
    /// needs `write_permission`.
    ///
    /// # Panics
    ///
    /// When `write_permission` is not a valid permission, as [`require`](Self::require);
    /// [`try_read_write`](Self::try_read_write) returns the error instead.
    pub fn read_write(self, write_permission: &'static str) -> Self {
        let p = static_permission("AuthLayer::read_write", write_permission);
        self.map(|c| c.rule = AccessRule::WritesNeed(p))
    }

    /// [`read_write`](Self::read_write) for a permission known only at run time.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidPermission`].
    pub fn try_read_write(self, write_permission: &str) -> Result<Self, ConfigError> {
        let p = Permission::new(write_permission)?;
        Ok(self.map(|c| c.rule = AccessRule::WritesNeed(p)))
    }

    /// Where the token is read, in place of `Authorization: Bearer` (see [`TokenSource`]):
    /// e.g. `[TokenSource::bearer(), TokenSource::header("x-api-key")]`. A request holding a
    /// token in two of them is refused (400 `invalid_request`). Every source gets the same
    /// answers; a query parameter or WebSocket protocol entry is removed from the request
    /// before the inner service sees it. Duplicates are ignored.
    ///
    /// # Panics
    ///
    /// When `sources` is empty.
    pub fn token_sources(self, sources: impl IntoIterator<Item = TokenSource>) -> Self {
        let mut list: Vec<TokenSource> = Vec::new();
        for s in sources {
            if !list.contains(&s) {
                list.push(s);
            }
        }
        assert!(
            !list.is_empty(),
            "AuthLayer::token_sources: name at least one source (TokenSource::bearer() is the default)"
        );
        let bearer_only = list.len() == 1 && list[0].is_bearer();
        self.map(|c| {
            c.sources = list.into();
            c.bearer_only = bearer_only;
        })
    }

    /// Lets requests without any credentials through without an [`Identity`] (handlers then
    /// see `Option<Identity>` as `None`). Invalid tokens are still refused.
    pub fn optional(self) -> Self {
        self.map(|c| c.optional = true)
    }

    /// Replaces the response renderer (default: [`JsonRenderer`]).
    pub fn with_renderer(self, renderer: impl RenderRejection) -> Self {
        let r: Arc<dyn RenderRejection> = Arc::new(renderer);
        self.map(|c| c.renderer = r)
    }

    /// Limits each token's requests (default in the reference server: 100 a minute). Allowed
    /// responses carry `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; a
    /// request over the limit gets 429 `rate_limited` with `Retry-After`.
    pub fn with_rate_limits(self, limits: RateLimits) -> Self {
        self.map(|c| c.rates = Some(limits))
    }

    /// Which rate-limit header fields responses carry (default: `RateLimit-Limit`,
    /// `RateLimit-Remaining`, `RateLimit-Reset`; see [`RateLimitHeaders`] for the IETF
    /// draft's `RateLimit-Policy` and `RateLimit`).
    pub fn with_rate_limit_headers(self, headers: RateLimitHeaders) -> Self {
        self.map(|c| c.rate_headers = headers)
    }

    /// Limits failed authentications per client address: past the budget, the address gets
    /// 429 for every bearer request until it refills. Unknown, revoked, expired and
    /// wrong-kind tokens count, and so do real tokens presented from outside their
    /// allow-list or from another machine than the one they are bound to
    /// ([`FailureLimits::counts`]). The address is the client found by
    /// [`with_client_ip`](Self::with_client_ip), or the socket peer when the client is
    /// unknown; requests without any address are not counted. Pass the same limits to the
    /// management router's `with_failure_limits` (feature `management`) so that wrong passwords
    /// share the budget.
    pub fn with_failure_limits(self, limits: FailureLimits) -> Self {
        self.map(|c| c.failures = Some(limits))
    }

    /// Writes one [`AuditEvent`](crate::audit::AuditEvent) per authentication decision.
    pub fn with_audit(self, audit: AuditLog) -> Self {
        self.map(|c| c.audit = Some(audit))
    }

    /// How to find the client's address (default: the socket peer only, from axum's
    /// `ConnectInfo` or a [`ClientAddr`](crate::client_ip::ClientAddr) extension).
    pub fn with_client_ip(self, source: ClientIpSource) -> Self {
        self.map(|c| c.client_ip = source)
    }

    /// Cuts each token's permissions down to what its owner holds now (see
    /// [`crate::permissions`]): the [`Identity`] carries the token's permissions intersected
    /// with the owner's, so demoting an owner demotes their tokens at once (within the
    /// resolver's cache time). An unknown owner holds none; a failing resolver gets 503
    /// `store_unavailable`.
    pub fn with_permission_resolver(self, resolver: impl PermissionResolver) -> Self {
        let r: Arc<dyn PermissionResolver> = Arc::new(resolver);
        self.map(|c| c.resolver = Some(r))
    }

    /// Records every decision in the `keygate_*` metrics (see [`crate::metrics`]).
    #[cfg(feature = "metrics")]
    pub fn with_metrics(self) -> Self {
        self.map(|c| c.metrics = true)
    }

    /// Sets the realm of the bare `WWW-Authenticate` challenge (default `api`), keeping the
    /// default JSON renderer.
    ///
    /// # Panics
    ///
    /// When `realm` is not a valid realm (printable ASCII without `"` or `\\`), with a
    /// message naming it; [`try_with_realm`](Self::try_with_realm) returns the error instead.
    pub fn with_realm(self, realm: &'static str) -> Self {
        match JsonRenderer::new(realm) {
            Ok(r) => self.with_renderer(r),
            Err(error) => panic!("AuthLayer::with_realm({realm:?}): {error}"),
        }
    }

    /// [`with_realm`](Self::with_realm) for a realm known only at run time.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidRealm`].
    pub fn try_with_realm(self, realm: &str) -> Result<Self, ConfigError> {
        let r = JsonRenderer::new(realm)?;
        Ok(self.with_renderer(r))
    }
}

/// A permission written in the code: valid, or a panic naming the call and the literal.
pub(crate) fn static_permission(call: &str, permission: &'static str) -> Permission {
    match Permission::new(permission) {
        Ok(p) => p,
        Err(error) => panic!(
            "{call}({permission:?}): {error}; use the `try_` variant for a permission read at run time"
        ),
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        // The manager's background upkeep starts here at the latest, inside a runtime.
        self.config.tokens.ensure_maintenance();
        AuthService::new(inner, self.config.clone())
    }
}
