//! Per-token rate limits, and a separate limit on failed authentications per client address.
//!
//! In one process, limits are kept by [`governor`] (GCRA) keyed by the token's
//! [`Lineage`] — its owner and name, never the token. A rotation keeps both, so a token
//! and the tokens that replace it share one budget: rotating does not refill it. Names are
//! unique among an owner's live tokens, so two live lineages never share a budget; a new
//! token given the name of a revoked one may inherit what is left of its budget for at most
//! one period. Several instances can share one limit through a [`SharedRateLimiter`] (the
//! Redis one lives in `keygate::store::redis`).
//!
//! Every allowed response carries `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset` (seconds until the full limit is available again), or the IETF draft's
//! `RateLimit-Policy` and `RateLimit` ([`RateLimitHeaders`](crate::RateLimitHeaders)); a
//! request over the limit gets 429 `rate_limited` with `Retry-After`.
//!
//! # A token's own rate only lowers the server's
//!
//! A token may carry its own rate ([`NewToken::rate_limit_per_minute`](crate::NewToken::rate_limit_per_minute),
//! `rate_limit` in the management API). It applies only where it is *lower* than the rate
//! the server gives the token's kind (or the default rate): [`RateLimits::check`] uses the
//! lower of the two, whoever set the token's rate and however it got there (creation,
//! rotation, an import). No caller can give a token a larger budget than the server's
//! configuration; an operator who wants some clients to have more gives them a kind with its
//! own rate ([`RateLimits::with_kind`]). Under a kind without a rate (unlimited), the
//! token's own rate applies as it is.
//!
//! # A budget per account
//!
//! [`RateLimits::per_owner`] adds one budget per owner that all of the owner's tokens share,
//! checked after the token's own: a request goes through only when both allow it, and the
//! headers report the tighter of the two. It is keyed by the owner id (a keyed hash in
//! process, [`Lineage::owner_shared_key`] in a [`SharedRateLimiter`]), never by a token.
//! Off by default (server setting `owner_rate_limit`).
//!
//! # Bounded state
//!
//! In process, the rates that no kind uses (a token's own, lower rate) are rounded *down*
//! to a fixed series of at most [`MAX_TOKEN_RATE_LIMITERS`] rates (1 to 10, then 10, 12, 15,
//! 20, 25, 30, 40, 50, 60 and 80 times each power of ten), so hostile distinct values
//! cannot make limiters without end; rounding never gives more than the token asked for,
//! and takes off less than a quarter.
//! The state of tokens and owners not seen for a full period is dropped once a minute,
//! from within [`RateLimits::check`].
//!
//! ```
//! use keygate::rate_limit::{Rate, RateLimits};
//! use keygate::{AuthLayer, MemoryStore, Tokens};
//!
//! let limits = RateLimits::new(Rate::per_minute(100).unwrap())
//!     .with_kind("licence", Some(Rate::per_minute(10).unwrap()));
//! let layer = AuthLayer::new(Tokens::new(MemoryStore::new())).with_rate_limits(limits);
//! # let _ = layer;
//! ```

mod audit_budget;
mod bounded;
mod counts;
mod failure;
mod limits;
mod lineage;
mod rate;
mod shared_failure;

pub(crate) use audit_budget::Admission;
pub use audit_budget::{AuditBudget, DEFAULT_AUDIT_BUDGET, DEFAULT_MAX_AUDIT_BUDGET_ENTRIES};
pub use failure::{DEFAULT_ACCOUNT_MEMORY, DEFAULT_MAX_FAILURE_ENTRIES, FailureLimits, SignIn};
pub use limits::{MAX_TOKEN_RATE_LIMITERS, RateLimits, SharedRateLimiter};
pub use lineage::Lineage;
pub(crate) use rate::ceil_secs;
pub use rate::{Rate, RateLimitDecision};
pub use shared_failure::{FailurePolicy, SharedFailureLimiter, SignInRefused};
