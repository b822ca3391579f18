//! Errors shared by the whole crate: a builder given a value it cannot use
//! ([`ConfigError`]) and a store that failed ([`StoreError`]). Leaf types: they import
//! nothing from the stores, the manager or HTTP.

/// A builder was given a value it cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A token kind prefix must be 2–16 characters of `[a-z0-9]`, starting with a letter.
    #[error("invalid token prefix {0:?}: use 2-16 characters of [a-z0-9], starting with a letter")]
    InvalidPrefix(String),
    /// A kind or role name must be 1–64 printable ASCII characters.
    #[error("invalid name {0:?}: use 1-64 printable ASCII characters")]
    InvalidName(String),
    /// A permission must be 1–64 characters of `[a-z0-9_.:*-]`.
    #[error("invalid permission {0:?}: use 1-64 characters of [a-z0-9_.:*-]")]
    InvalidPermission(String),
    /// Two kinds share a name or a prefix.
    #[error("two token kinds share the name or prefix {0:?}")]
    DuplicateKind(String),
    /// A layer names a kind the manager does not know.
    #[error("unknown token kind {0:?}")]
    UnknownKind(String),
    /// A rate needs at least one request and a non-zero period.
    #[error("invalid rate: use at least one request per non-zero period")]
    InvalidRate,
    /// Not a valid HTTP header name.
    #[error("invalid header name {0:?}")]
    InvalidHeader(String),
    /// A token source keygate refuses to read (a cookie, `Authorization` by name, an empty
    /// query parameter name or WebSocket prefix, or an empty list of sources).
    #[error("invalid token source: {0}")]
    InvalidTokenSource(String),
    /// The realm must be printable ASCII without `"` or `\`.
    #[error("invalid realm: use printable ASCII without quotes or backslashes")]
    InvalidRealm,
    /// A trusted origin must read `http://host[:port]` or `https://host[:port]`, nothing
    /// more.
    #[error("invalid origin {0:?}: use http(s)://host[:port] without a path")]
    InvalidOrigin(String),
    /// A legacy token format that is too weak (under 128 bits) or too long.
    #[error("invalid legacy token format: {0}")]
    InvalidLegacyFormat(String),
    /// A shared secret (a leak reporter key, a signing secret) is too short or has
    /// characters it cannot travel with; names which one, never its value.
    #[error(
        "the {0} is too short or has invalid characters: use at least 16 visible ASCII characters"
    )]
    WeakSecret(&'static str),
    /// A webhook URL must read `http://host[:port][/path]`, without credentials.
    #[error(
        "invalid webhook URL {0:?}: use http://host[:port][/path] (for https, a TLS-terminating proxy)"
    )]
    InvalidWebhookUrl(String),
    /// The peppers cannot be used as given (never shows a pepper).
    #[error("invalid pepper configuration: {0}")]
    Pepper(&'static str),
}

/// A store failed. Request-facing code turns every variant but the first three into
/// 503 `store_unavailable`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The owner already has a live token with this name.
    #[error("the owner already has a live token with this name")]
    NameTaken,
    /// The owner is at the limit of live tokens.
    #[error("the owner has reached the limit of live tokens")]
    LimitReached,
    /// The token to change does not exist (or is no longer live, for a rotation).
    #[error("token not found")]
    NotFound,
    /// A record with the same id or hash already exists.
    #[error("a token with the same id or hash already exists")]
    Duplicate,
    /// The backend did not answer in time.
    #[error("the token store did not answer in time")]
    Timeout,
    /// The store does not implement this operation (a store written before it existed);
    /// callers fail closed.
    #[error("the token store does not support {0}")]
    Unsupported(&'static str),
    /// The backend failed; the source is kept.
    #[error("token store backend error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Wraps any backend error, keeping it as the source.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(e))
    }
}
