//! Per-token limits: [`RateLimits`], kept in process or in a [`SharedRateLimiter`].

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use governor::RateLimiter;
use governor::clock::{Clock as _, DefaultClock, Reference as _};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;

use super::lineage::{Lineage, LineageKey};
use super::{Rate, RateLimitDecision};
use crate::error::StoreError;

/// Most limiters [`RateLimits`] keeps for token rates that no kind uses: the size of the
/// series such rates are rounded down to (see the [module docs](super)).
pub const MAX_TOKEN_RATE_LIMITERS: usize = 100;

/// How often the per-token state of idle tokens is dropped, in nanoseconds (a minute).
const PRUNE_EVERY_NANOS: u64 = 60_000_000_000;

/// A limiter shared by several instances (e.g. through Redis). The key is a token's
/// lineage (`lineage:` and the hex SHA-256 of its owner and name, see [`Lineage`]) or
/// `ip:<address>`, never a token.
#[async_trait]
pub trait SharedRateLimiter: Send + Sync + 'static {
    /// Counts one request for `key` against `rate` and says whether it may go on.
    ///
    /// # Errors
    ///
    /// When the backend is unreachable; the layer then answers 503 (fail closed).
    async fn check(&self, key: &str, rate: Rate) -> Result<RateLimitDecision, StoreError>;
}

type Local = RateLimiter<
    LineageKey,
    DefaultKeyedStateStore<LineageKey>,
    DefaultClock,
    StateInformationMiddleware,
>;

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
    /// The two SipHash keys of [`LineageKey`].
    lineage_keys: (RandomState, RandomState),
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
                lineage_keys: (RandomState::new(), RandomState::new()),
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

    /// Counts one request of a token of `lineage` (see [`Lineage::of`]) and `kind` whose
    /// record sets its own rate of `per_minute` requests a minute, if any, against
    /// [`effective_rate`](Self::effective_rate): a token's own rate only lowers its kind's
    /// (or the default) rate. The tokens of one lineage share a budget, so rotating a token
    /// does not refill it. `Ok(None)` when no rate applies.
    ///
    /// In process, a rate that no kind uses is rounded down to the series of the
    /// [module docs](super); once a minute the state of idle tokens is dropped.
    ///
    /// # Errors
    ///
    /// Only with a shared limiter whose backend fails.
    pub async fn check(
        &self,
        lineage: Lineage<'_>,
        kind: &str,
        per_minute: Option<u32>,
    ) -> Result<Option<RateLimitDecision>, StoreError> {
        let Some(rate) = self.effective_rate(kind, per_minute) else {
            return Ok(None);
        };
        if let Some(shared) = &self.inner.shared {
            return shared.check(&lineage.shared_key(), rate).await.map(Some);
        }
        self.prune_if_due();
        let (a, b) = &self.inner.lineage_keys;
        let pair = (lineage.owner, lineage.name);
        let id = LineageKey(a.hash_one(pair), b.hash_one(pair));
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

    fn decide(&self, limiter: &Local, id: &LineageKey, rate: Rate) -> RateLimitDecision {
        let limit = rate.requests();
        let per_cell = rate.period() / limit;
        match limiter.check_key(id) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                RateLimitDecision {
                    limit,
                    remaining,
                    reset: per_cell * (limit - remaining.min(limit)),
                    window: rate.period(),
                    retry_after: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.inner.clock.now());
                RateLimitDecision {
                    limit,
                    remaining: 0,
                    reset: per_cell * limit,
                    window: rate.period(),
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
    if rate.period() != Duration::from_secs(60) {
        return rate;
    }
    let n = rate.requests();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_101st_request_in_a_minute_is_refused_and_headers_count_down() {
        let limits = RateLimits::new(Rate::per_minute(100).unwrap());
        let id = Lineage::new("alice", "bot");
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
                .check(Lineage::new("alice", "other"), "pat", None)
                .await
                .unwrap()
                .unwrap()
                .allowed()
        );
    }

    #[tokio::test]
    async fn a_lineage_keeps_its_budget_and_other_lineages_have_their_own() {
        let limits = RateLimits::new(Rate::per_minute(2).unwrap());
        // The same owner and name (what a rotation keeps), from distinct strings.
        let (owner, name) = (String::from("alice"), String::from("bot"));
        for _ in 0..2 {
            let d = limits.check(Lineage::new(&owner, &name), "pat", None);
            assert!(d.await.unwrap().unwrap().allowed());
        }
        let d = limits.check(Lineage::new("alice", "bot"), "pat", None);
        assert!(!d.await.unwrap().unwrap().allowed(), "the same lineage");
        for other in [
            ("alice", "bot2"),
            ("alicebot", ""),
            ("alic", "ebot"),
            ("bob", "bot"),
        ] {
            let d = limits.check(Lineage::new(other.0, other.1), "pat", None);
            assert!(d.await.unwrap().unwrap().allowed(), "{other:?}");
        }
        assert_ne!(
            Lineage::new("alic", "ebot").shared_key(),
            Lineage::new("alice", "bot").shared_key()
        );
        assert_eq!(
            Lineage::new(&owner, &name).shared_key(),
            Lineage::new("alice", "bot").shared_key()
        );
    }

    #[tokio::test]
    async fn kinds_can_have_their_own_rate_or_none() {
        let limits = RateLimits::new(Rate::per_minute(2).unwrap())
            .with_kind("bulk", None)
            .with_kind("seat", Some(Rate::per_minute(1).unwrap()));
        let id = Lineage::new("alice", "bot");
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
        let id = Lineage::new("alice", "bot");
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
        let other = Lineage::new("alice", "other");
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
        let id = Lineage::new("alice", "bot");
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
                let name = format!("t{n}-{own}");
                let d = limits
                    .check(Lineage::new("alice", &name), "bulk", Some(own))
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
}
