//! Per-token limits and a per-owner limit: [`RateLimits`], kept in process or in a
//! [`SharedRateLimiter`].

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
/// lineage (`lineage:` and the hex SHA-256 of its owner and name, see [`Lineage`]), an
/// owner (`owner:` and the hex SHA-256 of the owner, see [`Lineage::owner_shared_key`]) or
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

/// Per-token limits: one default rate, optional rates per kind, and optionally one rate per
/// owner that all of an owner's tokens share ([`per_owner`](Self::per_owner)), kept in
/// process or in a [`SharedRateLimiter`]. Cheap to clone.
#[derive(Clone)]
pub struct RateLimits {
    inner: Arc<LimitsInner>,
}

struct LimitsInner {
    default: Option<Rate>,
    per_kind: HashMap<String, Option<Rate>>,
    /// The rate all of an owner's tokens share, if any.
    owner: Option<Rate>,
    /// The in-process limiter of `owner`, keyed by the owner.
    owner_local: Option<Local>,
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
            .field("per_owner", &self.inner.owner)
            .field("shared", &self.inner.shared.is_some())
            .finish()
    }
}

impl RateLimits {
    /// Every token gets `default` unless its kind has its own rate.
    #[must_use]
    pub fn new(default: Rate) -> Self {
        Self::build(Some(default), HashMap::new(), None, None)
    }

    fn build(
        default: Option<Rate>,
        per_kind: HashMap<String, Option<Rate>>,
        owner: Option<Rate>,
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
                owner,
                owner_local: owner.map(|r| RateLimiter::keyed(r.quota()).with_middleware()),
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
        Self::build(
            self.inner.default,
            per_kind,
            self.inner.owner,
            self.inner.shared.clone(),
        )
    }

    /// Adds a per-account limit: every request of any of an owner's tokens counts against
    /// one budget of `rate` for that owner, *in addition to* the token's own budget (`None`:
    /// no per-owner limit, the default). A request goes through only when both allow it;
    /// the rate-limit headers report the tighter of the two, and a request refused by the
    /// owner's budget gets the same 429 `rate_limited` and `Retry-After` as a token's. A
    /// request the token's own budget refuses is not counted against the owner's; one the
    /// owner's budget refuses has already been counted against the token's.
    ///
    /// The budget is keyed by the owner id (in process, a keyed hash of it; in a
    /// [`SharedRateLimiter`], [`Lineage::owner_shared_key`]), never by a token, and idle
    /// owners' state is dropped like idle tokens'.
    #[must_use]
    pub fn per_owner(self, rate: Option<Rate>) -> Self {
        Self::build(
            self.inner.default,
            self.inner.per_kind.clone(),
            rate,
            self.inner.shared.clone(),
        )
    }

    /// The rate all of an owner's tokens share, if any (see [`per_owner`](Self::per_owner)).
    #[must_use]
    pub fn owner_rate(&self) -> Option<Rate> {
        self.inner.owner
    }

    /// Keeps the counts in `shared` (e.g. Redis) so that several instances enforce one
    /// limit together.
    #[must_use]
    pub fn shared(self, shared: impl SharedRateLimiter) -> Self {
        Self::build(
            self.inner.default,
            self.inner.per_kind.clone(),
            self.inner.owner,
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
    /// With a [per-owner](Self::per_owner) rate, a request the token's budget allows is
    /// then counted against its owner's budget too, and the answer is the tighter of the two
    /// (the owner's when it refuses).
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
        let token = match self.effective_rate(kind, per_minute) {
            Some(rate) => Some(self.check_token(lineage, rate).await?),
            None => None,
        };
        let (Some(owner_rate), Some(owner_limiter)) = (self.inner.owner, &self.inner.owner_local)
        else {
            return Ok(token);
        };
        if token.as_ref().is_some_and(|d| !d.allowed()) {
            return Ok(token);
        }
        let owner = self.check_owner(lineage, owner_rate, owner_limiter).await?;
        Ok(Some(match token {
            Some(t) if owner.allowed() && t.remaining <= owner.remaining => t,
            _ => owner,
        }))
    }

    /// Counts one request against the owner's budget of `rate`.
    async fn check_owner(
        &self,
        lineage: Lineage<'_>,
        rate: Rate,
        limiter: &Local,
    ) -> Result<RateLimitDecision, StoreError> {
        if let Some(shared) = &self.inner.shared {
            return shared.check(&lineage.owner_shared_key(), rate).await;
        }
        self.prune_if_due();
        let (a, b) = &self.inner.lineage_keys;
        // Tagged apart from the lineage hashes (which hash a pair), in a limiter of its own.
        let tagged = ("owner", lineage.owner);
        let id = LineageKey(a.hash_one(tagged), b.hash_one(tagged));
        Ok(self.decide(limiter, &id, rate))
    }

    /// Counts one request against the token lineage's budget of `rate`.
    async fn check_token(
        &self,
        lineage: Lineage<'_>,
        rate: Rate,
    ) -> Result<RateLimitDecision, StoreError> {
        if let Some(shared) = &self.inner.shared {
            return shared.check(&lineage.shared_key(), rate).await;
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
        Ok(decision)
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
        if let Some(l) = &self.inner.owner_local {
            l.retain_recent();
        }
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
#[path = "limits_tests.rs"]
mod tests;
