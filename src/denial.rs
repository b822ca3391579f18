//! Why a token or a request was refused, in the terms of the domain: [`Denial`].
//!
//! A leaf type: it imports nothing from the stores, the manager, the middleware or HTTP.
//! The manager ([`Tokens`](crate::Tokens)) answers with it; only the middleware and the
//! management router turn it into an HTTP answer, through
//! [`RejectionKind`](crate::RejectionKind) (`RejectionKind::from(denial)`), which decides the
//! status, the public code and the body.

use std::fmt;

/// The precise reason a token or a request was refused.
///
/// Outside, several reasons share one answer (an unknown, revoked, expired, wrong-kind or
/// malformed token all read `invalid_token`); the precise reason is for logs, audit events
/// and the code that called [`Tokens::authenticate`](crate::Tokens::authenticate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Denial {
    /// No token was presented.
    Missing,
    /// The credentials break the grammar (e.g. several `Authorization` headers).
    InvalidRequest,
    /// Not a token of this manager (shape, prefix or checksum).
    Malformed,
    /// No token with this hash.
    Unknown,
    /// The token was revoked.
    Revoked,
    /// The token expired (or its rotation grace ended).
    Expired,
    /// A token of a kind that is not accepted here.
    WrongKind,
    /// The token lacks a required permission.
    InsufficientScope,
    /// The client address is outside the token's allow-list (or unknown while the list is
    /// not empty).
    IpNotAllowed,
    /// A token of a binding kind came without its client fingerprint.
    BindingRequired,
    /// A token bound to another client fingerprint.
    BoundElsewhere,
    /// The token or the client is over its rate limit.
    RateLimited,
    /// The request body is over the limit.
    PayloadTooLarge,
    /// The token store (or a resolver, or a rate limiter) failed or timed out: fail closed.
    StoreUnavailable,
    /// No authentication ran for the request: the route is not behind the layer. A mistake
    /// in the program, not in the request.
    MissingLayer,
}

impl Denial {
    /// The reason as a short word for logs and audit events (`unknown`, `revoked`, …); the
    /// same word as [`RejectionKind::reason`](crate::RejectionKind::reason).
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::InvalidRequest => "invalid_request",
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::WrongKind => "wrong_kind",
            Self::InsufficientScope => "insufficient_scope",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::BindingRequired => "binding_required",
            Self::BoundElsewhere => "bound_elsewhere",
            Self::RateLimited => "rate_limited",
            Self::PayloadTooLarge => "payload_too_large",
            Self::StoreUnavailable => "store_unavailable",
            Self::MissingLayer => "missing_layer",
        }
    }
}

/// The text is what the token's holder may be told: the reasons a client cannot tell apart
/// (a malformed, unknown, revoked, expired or wrong-kind token) read the same, so an
/// application that shows `err.to_string()` reveals no more than the HTTP answer does. The
/// precise reason is [`reason`](Denial::reason) and `Debug`.
impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed | Self::Unknown | Self::Revoked | Self::Expired | Self::WrongKind => {
                f.write_str("invalid API token")
            }
            other => write!(f, "token refused: {}", other.reason()),
        }
    }
}

impl std::error::Error for Denial {}

#[cfg(test)]
mod tests {
    use super::Denial;

    #[test]
    fn the_text_does_not_tell_a_revoked_token_from_an_unknown_one() {
        let texts: Vec<String> = [
            Denial::Malformed,
            Denial::Unknown,
            Denial::Revoked,
            Denial::Expired,
            Denial::WrongKind,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert!(texts.iter().all(|t| *t == texts[0]), "{texts:?}");
        assert_eq!(Denial::Revoked.reason(), "revoked");
        assert_ne!(Denial::StoreUnavailable.to_string(), texts[0]);
    }
}
