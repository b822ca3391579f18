//! Per-token rate limits, and a separate limit on failed authentications per client address.
//!
//! In one process, limits are kept by [`governor`] (GCRA) keyed by the token's id — never
//! by the token. Several instances can share one limit through a [`SharedRateLimiter`]
//! (the Redis one lives in `keygate::store::redis`).
//!
//! Every allowed response carries `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset` (seconds until the full limit is available again); a request over the
//! limit gets 429 `rate_limited` with `Retry-After`.
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
//! # Bounded state
//!
//! In process, the rates that no kind uses (a token's own, lower rate) are rounded *down*
//! to a fixed series of at most [`MAX_TOKEN_RATE_LIMITERS`] rates (1 to 10, then 10, 12, 15,
//! 20, 25, 30, 40, 50, 60 and 80 times each power of ten), so hostile distinct values
//! cannot make limiters without end; rounding never gives more than the token asked for,
//! and takes off less than a quarter.
//! The per-token state of tokens not seen for a full period is dropped once a minute, from
//! within [`RateLimits::check`].
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

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use governor::clock::{Clock as _, DefaultClock, Reference as _};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::error::ConfigError;
use crate::store::{StoreError, TokenId};

/// Most limiters [`RateLimits`] keeps for token rates that no kind uses: the size of the
/// series such rates are rounded down to (see the [module docs](self)).
pub const MAX_TOKEN_RATE_LIMITERS: usize = 100;

/// How often the per-token state of idle tokens is dropped, in nanoseconds (a minute).
const PRUNE_EVERY_NANOS: u64 = 60_000_000_000;

/// A number of requests per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    requests: NonZeroU32,
    period: Duration,
}

impl Rate {
    /// `requests` per `period`, all of them available at once (the burst is the limit).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidRate`] for zero requests or a zero period.
    pub fn new(requests: u32, period: Duration) -> Result<Self, ConfigError> {
        let requests = NonZeroU32::new(requests).ok_or(ConfigError::InvalidRate)?;
        if period.is_zero() {
            return Err(ConfigError::InvalidRate);
        }
        Ok(Self { requests, period })
    }

    /// `requests` per minute.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidRate`] for zero.
    pub fn per_minute(requests: u32) -> Result<Self, ConfigError> {
        Self::new(requests, Duration::from_secs(60))
    }

    /// The number of requests.
    #[must_use]
    pub fn requests(&self) -> u32 {
        self.requests.get()
    }

    /// The period.
    #[must_use]
    pub fn period(&self) -> Duration {
        self.period
    }

    /// True when `self` allows fewer requests per unit of time than `other`.
    fn is_lower_than(&self, other: &Rate) -> bool {
        u128::from(self.requests.get()) * other.period.as_nanos()
            < u128::from(other.requests.get()) * self.period.as_nanos()
    }

    fn quota(&self) -> Quota {
        let interval = self.period / self.requests.get();
        Quota::with_period(interval.max(Duration::from_nanos(1)))
            .expect("a non-zero interval")
            .allow_burst(self.requests)
    }
}

/// The outcome of one rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitDecision {
    /// The limit (requests per period).
    pub limit: u32,
    /// Requests left right now.
    pub remaining: u32,
    /// Until the full limit is available again.
    pub reset: Duration,
    /// `Some` when the request is over the limit: how long to wait.
    pub retry_after: Option<Duration>,
}

impl RateLimitDecision {
    /// True when the request may go on.
    #[must_use]
    pub fn allowed(&self) -> bool {
        self.retry_after.is_none()
    }
}

/// A limiter shared by several instances (e.g. through Redis). The key is a token id (or
/// `ip:<address>`), never a token.
#[async_trait]
pub trait SharedRateLimiter: Send + Sync + 'static {
    /// Counts one request for `key` against `rate` and says whether it may go on.
    ///
    /// # Errors
    ///
    /// When the backend is unreachable; the layer then answers 503 (fail closed).
    async fn check(&self, key: &str, rate: Rate) -> Result<RateLimitDecision, StoreError>;
}

type Local =
    RateLimiter<TokenId, DefaultKeyedStateStore<TokenId>, DefaultClock, StateInformationMiddleware>;

/// Per-token limits: one default rate, optional rates per kind, kept in process or in a
/// [`SharedRateLimiter`]. Cheap to clone.
#[derive(Clone)]
pub struct RateLimits {
    inner: Arc<LimitsInner>,
}

struct LimitsInner {
    default: Option<Rate>,
    per_kind: HashMap<String, Option<Rate>>,
    local: HashMap<Rate, Local>,
    /// Limiters for per-token rates ([`TokenRecord::rate_limit`](crate::TokenRecord)) that
    /// no kind uses, one per rate of the series they are rounded down to (at most
    /// [`MAX_TOKEN_RATE_LIMITERS`]), made on first use.
    overrides: RwLock<HashMap<Rate, Arc<Local>>>,
    shared: Option<Arc<dyn SharedRateLimiter>>,
    clock: DefaultClock,
    /// When the limiters were made, on `clock`.
    start: governor::clock::QuantaInstant,
    /// Nanoseconds after `start` at which idle tokens' state is next dropped.
    next_prune: AtomicU64,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("default", &self.inner.default)
            .field("per_kind", &self.inner.per_kind)
            .field("shared", &self.inner.shared.is_some())
            .finish()
    }
}

impl RateLimits {
    /// Every token gets `default` unless its kind has its own rate.
    #[must_use]
    pub fn new(default: Rate) -> Self {
        Self::build(Some(default), HashMap::new(), None)
    }

    fn build(
        default: Option<Rate>,
        per_kind: HashMap<String, Option<Rate>>,
        shared: Option<Arc<dyn SharedRateLimiter>>,
    ) -> Self {
        let mut local = HashMap::new();
        for rate in default.iter().chain(per_kind.values().flatten()) {
            local
                .entry(*rate)
                .or_insert_with(|| RateLimiter::keyed(rate.quota()).with_middleware());
        }
        let clock = DefaultClock::default();
        Self {
            inner: Arc::new(LimitsInner {
                default,
                per_kind,
                local,
                overrides: RwLock::new(HashMap::new()),
                shared,
                start: clock.now(),
                clock,
                next_prune: AtomicU64::new(PRUNE_EVERY_NANOS),
            }),
        }
    }

    /// Gives tokens of `kind` their own rate (`None`: unlimited).
    #[must_use]
    pub fn with_kind(self, kind: &str, rate: Option<Rate>) -> Self {
        let mut per_kind = self.inner.per_kind.clone();
        per_kind.insert(kind.to_owned(), rate);
        Self::build(self.inner.default, per_kind, self.inner.shared.clone())
    }

    /// Keeps the counts in `shared` (e.g. Redis) so that several instances enforce one
    /// limit together.
    #[must_use]
    pub fn shared(self, shared: impl SharedRateLimiter) -> Self {
        Self::build(
            self.inner.default,
            self.inner.per_kind.clone(),
            Some(Arc::new(shared)),
        )
    }

    /// The rate that applies to tokens of `kind`, if any.
    #[must_use]
    pub fn rate_for(&self, kind: &str) -> Option<Rate> {
        match self.inner.per_kind.get(kind) {
            Some(r) => *r,
            None => self.inner.default,
        }
    }

    /// The rate a token of `kind` whose record sets its own rate of `per_minute` requests a
    /// minute (if any) gets: the lower of its own rate and its kind's (or the default) rate.
    /// A token's own rate never raises the server's; under an unlimited kind it applies as
    /// it is. `None` when no rate applies.
    #[must_use]
    pub fn effective_rate(&self, kind: &str, per_minute: Option<u32>) -> Option<Rate> {
        // Zero (never stored by the manager): no rate of its own.
        let own = per_minute.and_then(|n| Rate::per_minute(n).ok());
        match (own, self.rate_for(kind)) {
            (Some(own), Some(server)) if own.is_lower_than(&server) => Some(own),
            (_, Some(server)) => Some(server),
            (own, None) => own,
        }
    }

    /// Counts one request of token `id` (of `kind`) whose record sets its own rate of
    /// `per_minute` requests a minute, if any, against
    /// [`effective_rate`](Self::effective_rate): a token's own rate only lowers its kind's
    /// (or the default) rate. `Ok(None)` when no rate applies.
    ///
    /// In process, a rate that no kind uses is rounded down to the series of the
    /// [module docs](self); once a minute the state of idle tokens is dropped.
    ///
    /// # Errors
    ///
    /// Only with a shared limiter whose backend fails.
    pub async fn check(
        &self,
        id: TokenId,
        kind: &str,
        per_minute: Option<u32>,
    ) -> Result<Option<RateLimitDecision>, StoreError> {
        let Some(rate) = self.effective_rate(kind, per_minute) else {
            return Ok(None);
        };
        if let Some(shared) = &self.inner.shared {
            return shared.check(&id.to_string(), rate).await.map(Some);
        }
        self.prune_if_due();
        let decision = match self.inner.local.get(&rate) {
            Some(limiter) => self.decide(limiter, &id, rate),
            None => {
                let rate = series_floor(rate);
                let limiter = self.override_limiter(rate);
                self.decide(&limiter, &id, rate)
            }
        };
        Ok(Some(decision))
    }

    /// Drops idle tokens' state when a minute has passed since the last time: one clock
    /// read and one atomic load otherwise. One caller wins the exchange and prunes.
    fn prune_if_due(&self) {
        let elapsed = self
            .inner
            .clock
            .now()
            .duration_since(self.inner.start)
            .as_u64();
        let due = self.inner.next_prune.load(Ordering::Relaxed);
        if elapsed < due {
            return;
        }
        if self
            .inner
            .next_prune
            .compare_exchange(
                due,
                elapsed.saturating_add(PRUNE_EVERY_NANOS),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            self.retain_recent();
        }
    }

    /// How many limiters are kept for token rates no kind uses (at most
    /// [`MAX_TOKEN_RATE_LIMITERS`]).
    #[must_use]
    pub fn token_rate_limiters(&self) -> usize {
        self.inner
            .overrides
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The limiter of a per-token rate no kind uses: looked up under a read lock (no
    /// allocation once made), made under the write lock the first time.
    fn override_limiter(&self, rate: Rate) -> Arc<Local> {
        if let Some(l) = self
            .inner
            .overrides
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&rate)
        {
            return l.clone();
        }
        self.inner
            .overrides
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(rate)
            .or_insert_with(|| Arc::new(RateLimiter::keyed(rate.quota()).with_middleware()))
            .clone()
    }

    fn decide(&self, limiter: &Local, id: &TokenId, rate: Rate) -> RateLimitDecision {
        let limit = rate.requests();
        let per_cell = rate.period / limit;
        match limiter.check_key(id) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                RateLimitDecision {
                    limit,
                    remaining,
                    reset: per_cell * (limit - remaining.min(limit)),
                    retry_after: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.inner.clock.now());
                RateLimitDecision {
                    limit,
                    remaining: 0,
                    reset: per_cell * limit,
                    retry_after: Some(wait),
                }
            }
        }
    }

    /// Forgets the state of tokens that have not been seen for a full period (memory
    /// hygiene). [`check`](Self::check) calls it once a minute; call it yourself to
    /// prune at other times.
    pub fn retain_recent(&self) {
        for l in self.inner.local.values() {
            l.retain_recent();
        }
        for l in self
            .inner
            .overrides
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            l.retain_recent();
        }
    }
}

/// The largest rate of the series (1 to 10 requests a minute, then 10, 12, 15, 20, 25, 30,
/// 40, 50, 60 and 80 times each power of ten) that is not above `rate`, a per-minute rate;
/// never more than `rate` asked for. A rate with another period is kept as it is (only
/// per-minute rates come from token records).
fn series_floor(rate: Rate) -> Rate {
    const STEPS: [u32; 10] = [10, 12, 15, 20, 25, 30, 40, 50, 60, 80];
    if rate.period != Duration::from_secs(60) {
        return rate;
    }
    let n = rate.requests.get();
    if n <= 10 {
        return rate;
    }
    let mut scale = 1u32;
    while n / scale >= 100 {
        scale *= 10;
    }
    let mantissa = n / scale;
    let step = STEPS
        .iter()
        .rev()
        .find(|&&s| s <= mantissa)
        .copied()
        .unwrap_or(10);
    Rate::per_minute(step * scale).unwrap_or(rate)
}

/// Limits failed authentications per client address, so guessing costs something: after
/// `rate` failures an address gets 429 for every bearer request until the budget refills.
/// Valid tokens from other addresses are not affected.
#[derive(Clone)]
pub struct FailureLimits {
    inner: Arc<FailureInner>,
}

struct FailureInner {
    limiter: RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>,
    blocked: RwLock<HashMap<IpAddr, Instant>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for FailureLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureLimits").finish_non_exhaustive()
    }
}

impl FailureLimits {
    /// Allows `rate` failed authentications per client address.
    #[must_use]
    pub fn new(rate: Rate) -> Self {
        Self {
            inner: Arc::new(FailureInner {
                limiter: RateLimiter::keyed(rate.quota()),
                blocked: RwLock::new(HashMap::new()),
                clock: DefaultClock::default(),
            }),
        }
    }

    /// `Some(wait)` when `ip` is blocked right now.
    #[must_use]
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let map = self
            .inner
            .blocked
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if map.is_empty() {
            return None;
        }
        let until = *map.get(&ip)?;
        until.checked_duration_since(Instant::now())
    }

    /// Counts a failure from `ip`; `Some(wait)` when it is now over its budget.
    pub fn fail(&self, ip: IpAddr) -> Option<Duration> {
        match self.inner.limiter.check_key(&ip) {
            Ok(()) => None,
            Err(not_until) => {
                let wait = not_until
                    .wait_time_from(self.inner.clock.now())
                    .max(Duration::from_secs(1));
                let now = Instant::now();
                let mut map = self
                    .inner
                    .blocked
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                map.retain(|_, until| *until > now);
                map.insert(ip, now + wait);
                Some(wait)
            }
        }
    }
}

/// Whole seconds, rounded up (HTTP headers carry delay-seconds).
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_101st_request_in_a_minute_is_refused_and_headers_count_down() {
        let limits = RateLimits::new(Rate::per_minute(100).unwrap());
        let id = TokenId::random();
        for i in 0..100u32 {
            let d = limits.check(id, "pat", None).await.unwrap().unwrap();
            assert!(d.allowed(), "request {i}");
            assert_eq!(d.limit, 100);
            assert_eq!(d.remaining, 99 - i);
        }
        let d = limits.check(id, "pat", None).await.unwrap().unwrap();
        assert!(!d.allowed());
        let wait = d.retry_after.unwrap();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(600),
            "{wait:?}"
        );
        // Other tokens are not affected.
        assert!(
            limits
                .check(TokenId::random(), "pat", None)
                .await
                .unwrap()
                .unwrap()
                .allowed()
        );
    }

    #[tokio::test]
    async fn kinds_can_have_their_own_rate_or_none() {
        let limits = RateLimits::new(Rate::per_minute(2).unwrap())
            .with_kind("bulk", None)
            .with_kind("seat", Some(Rate::per_minute(1).unwrap()));
        let id = TokenId::random();
        assert!(limits.check(id, "bulk", None).await.unwrap().is_none());
        assert!(
            limits
                .check(id, "seat", None)
                .await
                .unwrap()
                .unwrap()
                .allowed()
        );
        assert!(
            !limits
                .check(id, "seat", None)
                .await
                .unwrap()
                .unwrap()
                .allowed()
        );
    }

    #[tokio::test]
    async fn a_token_rate_overrides_its_kind() {
        let limits = RateLimits::new(Rate::per_minute(100).unwrap()).with_kind("bulk", None);
        let id = TokenId::random();
        for _ in 0..3 {
            assert!(
                limits
                    .check(id, "pat", Some(3))
                    .await
                    .unwrap()
                    .unwrap()
                    .allowed()
            );
        }
        let d = limits.check(id, "pat", Some(3)).await.unwrap().unwrap();
        assert!(!d.allowed());
        assert_eq!(d.limit, 3);
        // An unlimited kind is limited by the token's own rate, and a rate equal to a
        // kind's shares its limiter.
        let other = TokenId::random();
        assert_eq!(
            limits
                .check(other, "bulk", Some(100))
                .await
                .unwrap()
                .unwrap()
                .limit,
            100
        );
        assert!(limits.check(other, "bulk", None).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_token_cannot_raise_its_own_rate_above_the_servers() {
        let limits = RateLimits::new(Rate::per_minute(100).unwrap());
        let id = TokenId::random();
        for i in 0..100u32 {
            let d = limits
                .check(id, "pat", Some(u32::MAX))
                .await
                .unwrap()
                .unwrap();
            assert!(d.allowed(), "request {i}");
            assert_eq!(d.limit, 100, "the server's rate, not the token's");
        }
        let d = limits
            .check(id, "pat", Some(u32::MAX))
            .await
            .unwrap()
            .unwrap();
        assert!(!d.allowed(), "the 101st request is refused");
        // A lower rate of its own still applies.
        assert_eq!(
            limits.effective_rate("pat", Some(7)),
            Some(Rate::per_minute(7).unwrap())
        );
    }

    #[tokio::test]
    async fn hostile_distinct_rates_do_not_grow_the_limiters() {
        // Under an unlimited kind a token's own rate applies as it is: the worst case.
        let limits = RateLimits::new(Rate::per_minute(100).unwrap()).with_kind("bulk", None);
        for n in 1..=10_000u32 {
            for own in [n, u32::MAX - n, n.wrapping_mul(2_654_435_761)] {
                let own = own.max(1);
                let d = limits
                    .check(TokenId::random(), "bulk", Some(own))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(d.limit <= own, "{own} rounded up to {}", d.limit);
                assert!(
                    u64::from(d.limit) * 4 >= u64::from(own) * 3,
                    "{own} -> {}: rounded down by a quarter at most",
                    d.limit
                );
            }
        }
        let made = limits.token_rate_limiters();
        assert!(
            made <= MAX_TOKEN_RATE_LIMITERS,
            "{made} limiters for 30 000 distinct rates"
        );
    }

    #[test]
    fn the_series_never_rounds_up_and_has_at_most_the_cap() {
        let mut seen = std::collections::HashSet::new();
        let samples = (1..=100_000u32)
            .chain((0..32).map(|b| 1u32 << b))
            .chain((0..32).map(|b| (1u32 << b).wrapping_sub(1).max(1)))
            .chain([u32::MAX, 4_000_000_000, 999_999_999]);
        for n in samples {
            let r = series_floor(Rate::per_minute(n).unwrap()).requests();
            assert!(r <= n && r >= 1, "{n} -> {r}");
            seen.insert(r);
        }
        assert!(seen.len() <= MAX_TOKEN_RATE_LIMITERS, "{}", seen.len());
    }

    #[test]
    fn failures_block_an_address_after_its_budget() {
        let f = FailureLimits::new(Rate::per_minute(3).unwrap());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        for _ in 0..3 {
            assert!(f.fail(ip).is_none());
        }
        assert!(f.blocked(ip).is_none());
        assert!(f.fail(ip).is_some());
        assert!(f.blocked(ip).is_some());
        assert!(f.blocked(other).is_none());
    }

    #[test]
    fn rates_are_validated() {
        assert!(Rate::per_minute(0).is_err());
        assert!(Rate::new(1, Duration::ZERO).is_err());
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
    }
}
