//! Configuration errors.

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
    /// The realm must be printable ASCII without `"` or `\`.
    #[error("invalid realm: use printable ASCII without quotes or backslashes")]
    InvalidRealm,
    /// A trusted origin must read `http://host[:port]` or `https://host[:port]`, nothing
    /// more.
    #[error("invalid origin {0:?}: use http(s)://host[:port] without a path")]
    InvalidOrigin(String),
}
