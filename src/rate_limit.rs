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
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock as _, DefaultClock, Reference as _};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::error::ConfigError;
use crate::store::{StoreError, TokenRecord};

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

/// Whose budget a request counts against: a token's lineage, named by its owner and name.
/// A rotation keeps both, so the tokens of one rotation chain share a budget; an owner's
/// live tokens have distinct names, so they do not.
#[derive(Debug, Clone, Copy)]
pub struct Lineage<'a> {
    owner: &'a str,
    name: &'a str,
}

impl<'a> Lineage<'a> {
    /// The lineage of the owner's token named `name`.
    #[must_use]
    pub fn new(owner: &'a str, name: &'a str) -> Self {
        Self { owner, name }
    }

    /// The lineage of `record`.
    #[must_use]
    pub fn of(record: &'a TokenRecord) -> Self {
        Self::new(&record.owner, &record.name)
    }

    /// The key of a [`SharedRateLimiter`]: `lineage:` and the hex SHA-256 of the owner's
    /// length, the owner and the name, the same on every instance, and naming neither.
    #[must_use]
    pub fn shared_key(&self) -> String {
        use sha2::{Digest, Sha256};
        use std::fmt::Write as _;
        let digest = Sha256::new()
            .chain_update((self.owner.len() as u64).to_be_bytes())
            .chain_update(self.owner.as_bytes())
            .chain_update(self.name.as_bytes())
            .finalize();
        let mut key = String::with_capacity(8 + 64);
        key.push_str("lineage:");
        for b in digest {
            let _ = write!(key, "{b:02x}");
        }
        key
    }
}

/// A lineage's key in the in-process limiters: 128 bits of two SipHash digests under keys
/// drawn at random for each [`RateLimits`], computed without allocating. Nobody outside the
/// process knows the keys, so no one can choose a name whose budget is someone else's, and
/// an accidental collision takes about 2^64 lineages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct LineageKey(u64, u64);

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
    /// [module docs](self); once a minute the state of idle tokens is dropped.
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

mod bounded;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv6Addr;
use std::sync::Mutex;

use crate::middleware::RejectionKind;
use bounded::{Bounded, Expires};
use tokio::time::Instant;

/// The default cap on the entries of each of [`FailureLimits`]'s maps.
pub const DEFAULT_MAX_FAILURE_ENTRIES: usize = 50_000;

/// How long a client that failed to sign in to an account is remembered by default for
/// the account backoff (see [`FailureLimits`]).
pub const DEFAULT_ACCOUNT_MEMORY: Duration = Duration::from_secs(15 * 60);

/// Limits failed authentications, so guessing costs something.
///
/// **Per client address.** After `rate` failures (bad bearer tokens, wrong passwords, and
/// real tokens presented from where they may not be used: see
/// [`counts`](Self::counts)) an address gets 429 `rate_limited` with `Retry-After` for
/// every authenticated request, before any store lookup, until the budget refills. Valid tokens from other addresses are not affected. An IPv6
/// client is counted by its /64 network: one host usually holds a whole /64, so counting
/// single IPv6 addresses would give it 2^64 budgets.
///
/// **Per account** (password sign-ins, see [`begin_sign_in`](Self::begin_sign_in)). Each
/// account has its own failure budget (by default the same rate). While an account is
/// over it, an address that has itself failed to sign in to that account within the last
/// [`DEFAULT_ACCOUNT_MEMORY`] gets 429 before its password is checked; addresses that have
/// not failed against the account are let through. So a guesser spread over many
/// addresses gets about one guess per address, while the owner signing in from a clean
/// address still gets in: a flood from one address cannot lock the account out for
/// everyone else. The account stays "over" while failures keep coming, and at most one
/// period after they stop.
///
/// Every map is keyed by client input (addresses, attempted account names) and capped
/// ([`DEFAULT_MAX_FAILURE_ENTRIES`] entries each, see
/// [`with_max_entries`](Self::with_max_entries)); idle entries are dropped when a map is
/// full, and under a flood of distinct keys the entries closest to expiry go first, so
/// memory stays bounded. Account names are kept as keyed 64-bit hashes, never as text.
#[derive(Clone)]
pub struct FailureLimits {
    inner: Arc<FailureInner>,
}

struct FailureInner {
    client_rate: Rate,
    account_rate: Rate,
    memory: Duration,
    /// Failure counts per client key.
    clients: Mutex<Bounded<IpAddr, Gcra>>,
    /// Blocked client keys and until when; read on every request.
    blocked: RwLock<Bounded<IpAddr, Instant>>,
    /// Failure counts per account (hash of the lower-cased name).
    accounts: Mutex<Bounded<u64, Gcra>>,
    /// (account, client key) → until when the client's failure against the account is
    /// remembered.
    pairs: Mutex<Bounded<(u64, IpAddr), Instant>>,
    hasher: RandomState,
}

/// A generic cell rate algorithm state: the theoretical arrival time. The budget is full
/// again from `tat` on.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    tat: Instant,
}

impl Expires for Gcra {
    fn expires(&self) -> Instant {
        self.tat
    }
}

impl Rate {
    /// The time one request of the budget takes to come back.
    fn interval(&self) -> Duration {
        (self.period / self.requests.get()).max(Duration::from_nanos(1))
    }

    /// The whole budget, as time.
    fn tolerance(&self) -> Duration {
        self.interval() * self.requests.get()
    }
}

impl Gcra {
    /// Counts one cell at `now` if it fits the budget; otherwise `Err(wait)` until it would.
    fn charge(state: Option<Self>, now: Instant, rate: Rate) -> Result<Self, Duration> {
        let tat = state.map_or(now, |s| s.tat.max(now)) + rate.interval();
        let ahead = tat - now;
        if ahead > rate.tolerance() {
            Err(ahead - rate.tolerance())
        } else {
            Ok(Self { tat })
        }
    }

    /// How long until one more cell fits; zero when it fits now.
    fn over_for(self, now: Instant, rate: Rate) -> Duration {
        (self.tat.saturating_duration_since(now) + rate.interval()).saturating_sub(rate.tolerance())
    }
}

/// The key an address is counted under: IPv4 as is, IPv6 by its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match crate::client_ip::canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for FailureLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureLimits")
            .field("client_rate", &self.inner.client_rate)
            .field("account_rate", &self.inner.account_rate)
            .finish_non_exhaustive()
    }
}

impl FailureLimits {
    /// Allows `rate` failed authentications per client address, and `rate` failed
    /// sign-ins per account before the account backoff starts.
    #[must_use]
    pub fn new(rate: Rate) -> Self {
        Self::build(
            rate,
            rate,
            DEFAULT_ACCOUNT_MEMORY,
            DEFAULT_MAX_FAILURE_ENTRIES,
        )
    }

    fn build(client_rate: Rate, account_rate: Rate, memory: Duration, cap: usize) -> Self {
        Self {
            inner: Arc::new(FailureInner {
                client_rate,
                account_rate,
                memory,
                clients: Mutex::new(Bounded::new(cap)),
                blocked: RwLock::new(Bounded::new(cap)),
                accounts: Mutex::new(Bounded::new(cap)),
                pairs: Mutex::new(Bounded::new(cap)),
                hasher: RandomState::new(),
            }),
        }
    }

    fn rebuild(&self, f: impl FnOnce(&mut Rate, &mut Duration, &mut usize)) -> Self {
        let i = &self.inner;
        let (mut account_rate, mut memory) = (i.account_rate, i.memory);
        let mut cap = lock(&i.clients).cap();
        f(&mut account_rate, &mut memory, &mut cap);
        Self::build(i.client_rate, account_rate, memory, cap)
    }

    /// The failed sign-ins an account takes before its backoff starts (default: the
    /// per-address rate). Starts from empty state.
    #[must_use]
    pub fn with_account_rate(self, rate: Rate) -> Self {
        self.rebuild(|r, _, _| *r = rate)
    }

    /// How long a failed sign-in is held against the address it came from while the
    /// account is over its budget (default [`DEFAULT_ACCOUNT_MEMORY`]). Starts from empty
    /// state.
    #[must_use]
    pub fn with_account_memory(self, memory: Duration) -> Self {
        self.rebuild(|_, m, _| *m = memory)
    }

    /// The most entries each map keeps (default [`DEFAULT_MAX_FAILURE_ENTRIES`]; at least
    /// 2). Starts from empty state.
    #[must_use]
    pub fn with_max_entries(self, entries: usize) -> Self {
        self.rebuild(|_, _, c| *c = entries)
    }

    /// How many entries the limits hold now, all maps together: at most four times the
    /// [`with_max_entries`](Self::with_max_entries) cap, whatever the traffic.
    #[must_use]
    pub fn entries(&self) -> usize {
        let i = &self.inner;
        lock(&i.clients).len()
            + i.blocked
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
            + lock(&i.accounts).len()
            + lock(&i.pairs).len()
    }

    /// True when a refusal of `kind` counts as a failure against the client: a token that
    /// is not accepted (`invalid_token`: unknown, revoked, expired, wrong kind), and a real
    /// token presented from where it may not be used (`ip_not_allowed`, `binding_required`,
    /// `bound_elsewhere`): a stolen token replayed from another address or machine is
    /// throttled like a guess, and once the client is blocked it is refused before the
    /// store is asked (or, for a binding, written to).
    #[must_use]
    pub fn counts(kind: RejectionKind) -> bool {
        kind.counts_as_failure()
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
        let until = *map.get(&client_key(ip))?;
        let wait = until.saturating_duration_since(Instant::now());
        (!wait.is_zero()).then_some(wait)
    }

    /// Counts a failure from `ip`; `Some(wait)` when it is now over its budget.
    pub fn fail(&self, ip: IpAddr) -> Option<Duration> {
        let key = client_key(ip);
        let now = Instant::now();
        let wait = {
            let mut clients = lock(&self.inner.clients);
            match Gcra::charge(clients.get(&key).copied(), now, self.inner.client_rate) {
                Ok(state) => {
                    clients.insert(key, state, now);
                    return None;
                }
                Err(wait) => wait.max(Duration::from_secs(1)),
            }
        };
        self.inner
            .blocked
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, now + wait, now);
        Some(wait)
    }

    fn account_key(&self, account: &str) -> u64 {
        let mut h = self.inner.hasher.build_hasher();
        for c in account.chars().flat_map(char::to_lowercase) {
            h.write_u32(u32::from(c));
        }
        h.finish()
    }

    /// Before checking a password for `account` from `ip`: `Err(wait)` (answer 429 with
    /// `Retry-After`, and check nothing) when the address is blocked, when this attempt
    /// is over its budget, or when the account is over its budget and this address has
    /// failed against it recently (see the type's docs). Otherwise the attempt is counted
    /// as a failure at once — so concurrent attempts cannot overrun the budget — and the
    /// returned [`SignIn`] gives it back with [`SignIn::refund`] when the password was
    /// right (or could not be checked).
    ///
    /// # Errors
    ///
    /// `Err(wait)` as above.
    pub fn begin_sign_in(&self, account: &str, ip: IpAddr) -> Result<SignIn, Duration> {
        if let Some(wait) = self.blocked(ip) {
            return Err(wait);
        }
        let inner = &self.inner;
        let client = client_key(ip);
        let account = self.account_key(account);
        let now = Instant::now();
        let account_over = lock(&inner.accounts)
            .get(&account)
            .map_or(Duration::ZERO, |s| s.over_for(now, inner.account_rate));
        if !account_over.is_zero()
            && let Some(until) = lock(&inner.pairs).get(&(account, client)).copied()
            && until > now
        {
            let wait = account_over.min(until - now);
            return Err(wait.max(Duration::from_secs(1)));
        }
        if let Some(wait) = self.fail(ip) {
            return Err(wait);
        }
        {
            // The account counts every attempt, over budget or not (a sustained flood
            // keeps it over), but never more than one period beyond its budget.
            let mut accounts = lock(&inner.accounts);
            let rate = inner.account_rate;
            let tat = accounts.get(&account).map_or(now, |s| s.tat.max(now)) + rate.interval();
            let tat = tat.min(now + rate.tolerance() + rate.period);
            accounts.insert(account, Gcra { tat }, now);
        }
        lock(&inner.pairs).insert((account, client), now + inner.memory, now);
        Ok(SignIn {
            limits: self.clone(),
            client,
            account,
        })
    }
}

/// A password check let through by [`FailureLimits::begin_sign_in`], already counted as a
/// failure. Drop it when the password was wrong; call [`refund`](Self::refund) otherwise.
#[must_use = "dropping a SignIn counts it as a failure"]
pub struct SignIn {
    limits: FailureLimits,
    client: IpAddr,
    account: u64,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn").finish_non_exhaustive()
    }
}

impl SignIn {
    /// The attempt did not fail (the password was right, or it could not be checked): its
    /// charge goes back to the address and the account, and the account forgets the
    /// address.
    pub fn refund(self) {
        let inner = &self.limits.inner;
        let give_back = |s: &mut Gcra, rate: Rate| {
            s.tat = s.tat.checked_sub(rate.interval()).unwrap_or(s.tat);
        };
        if let Some(s) = lock(&inner.clients).get_mut(&self.client) {
            give_back(s, inner.client_rate);
        }
        if let Some(s) = lock(&inner.accounts).get_mut(&self.account) {
            give_back(s, inner.account_rate);
        }
        lock(&inner.pairs).remove(&(self.account, self.client));
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
    fn an_ipv6_client_is_counted_by_its_64() {
        let f = FailureLimits::new(Rate::per_minute(2).unwrap());
        // Every address of one /64 spends the same budget; the next /64 has its own.
        assert!(f.fail("2001:db8:1:2::1".parse().unwrap()).is_none());
        assert!(f.fail("2001:db8:1:2:ffff::9".parse().unwrap()).is_none());
        assert!(f.fail("2001:db8:1:2:1234::7".parse().unwrap()).is_some());
        assert!(f.blocked("2001:db8:1:2::abcd".parse().unwrap()).is_some());
        assert!(f.blocked("2001:db8:1:3::1".parse().unwrap()).is_none());
        // A mapped IPv4 address is that IPv4 address.
        assert!(f.fail("::ffff:192.0.2.1".parse().unwrap()).is_none());
        assert!(f.fail("192.0.2.1".parse().unwrap()).is_none());
        assert!(f.blocked("192.0.2.1".parse().unwrap()).is_none());
        assert!(f.fail("192.0.2.1".parse().unwrap()).is_some());
    }

    /// Before, every address that ever failed stayed in the maps for good (and an IPv6
    /// client owns 2^64 of them); now each map is capped.
    #[tokio::test(start_paused = true)]
    async fn a_flood_of_distinct_addresses_keeps_the_failure_state_bounded() {
        let cap = 10_000;
        let f = FailureLimits::new(Rate::per_minute(1).unwrap()).with_max_entries(cap);
        let v4 = (0..100_000u32).map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        let v6 = (0..100_000u128)
            .map(|i| IpAddr::from(Ipv6Addr::from((0x2001_0db8_u128 << 96) | (i << 64))));
        let mut blocked_now = 0;
        for ip in v4.chain(v6) {
            // Two failures each: counted, then blocked.
            assert!(f.fail(ip).is_none());
            assert!(f.fail(ip).is_some());
            assert!(f.entries() <= 4 * cap, "{}", f.entries());
            blocked_now += usize::from(f.blocked(ip).is_some());
        }
        assert_eq!(
            blocked_now, 200_000,
            "each address was blocked when it went over"
        );
        assert!(f.entries() <= 2 * cap, "{}", f.entries());
        // Once every entry is idle, the next pruning drops all of them.
        tokio::time::advance(Duration::from_secs(3600)).await;
        for i in 0..=cap as u32 {
            let _ = f.fail(IpAddr::from(std::net::Ipv4Addr::from(0xc000_0200 + i)));
        }
        assert!(f.entries() <= cap + 1, "{}", f.entries());
    }

    #[tokio::test(start_paused = true)]
    async fn an_account_over_its_budget_refuses_only_the_addresses_that_failed_on_it() {
        let f = FailureLimits::new(Rate::per_minute(5).unwrap())
            .with_account_rate(Rate::per_minute(3).unwrap());
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0xcb00_7100 + i));
        // Three addresses fail once each: the account is over its budget.
        for i in 0..3 {
            drop(f.begin_sign_in("Admin@example.com", ip(i)).unwrap());
        }
        // Each of them is refused on that account (any case of the name) ...
        for i in 0..3 {
            let wait = f.begin_sign_in("admin@EXAMPLE.com", ip(i)).unwrap_err();
            assert!(wait >= Duration::from_secs(1));
        }
        // ... but not on another account, and a fresh address still gets its try.
        drop(f.begin_sign_in("bob@example.com", ip(0)).unwrap());
        f.begin_sign_in("admin@example.com", ip(9))
            .unwrap()
            .refund();
        // A right password gives the charge back and forgets the address: the owner who
        // mistyped once is let in again once the account cools down.
        tokio::time::advance(Duration::from_secs(120)).await;
        f.begin_sign_in("admin@example.com", ip(0))
            .unwrap()
            .refund();
        // A sustained flood keeps the account over its budget.
        for i in 10..40 {
            drop(f.begin_sign_in("admin@example.com", ip(i)).unwrap());
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        assert!(f.begin_sign_in("admin@example.com", ip(10)).is_err());
        assert!(f.begin_sign_in("admin@example.com", ip(100)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn sign_ins_are_charged_before_the_check_and_refunded_after_success() {
        let f = FailureLimits::new(Rate::per_minute(3).unwrap());
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        // Concurrent attempts: the budget is spent when they start, not when they fail.
        let held: Vec<_> = (0..3)
            .map(|_| f.begin_sign_in("a@example.com", ip).unwrap())
            .collect();
        assert!(f.begin_sign_in("b@example.com", ip).is_err());
        assert!(f.blocked(ip).is_some());
        drop(held);
        // Successful sign-ins do not use up the budget.
        let f = FailureLimits::new(Rate::per_minute(3).unwrap());
        for _ in 0..10 {
            f.begin_sign_in("a@example.com", ip).unwrap().refund();
        }
        assert!(f.blocked(ip).is_none());
        // A blocked address is refused until the budget refills.
        for _ in 0..3 {
            drop(f.begin_sign_in("c@example.com", ip).unwrap());
        }
        let wait = f.begin_sign_in("a@example.com", ip).unwrap_err();
        assert!(f.begin_sign_in("a@example.com", ip).is_err());
        tokio::time::advance(wait).await;
        assert!(f.blocked(ip).is_none());
    }

    #[test]
    fn rates_are_validated() {
        assert!(Rate::per_minute(0).is_err());
        assert!(Rate::new(1, Duration::ZERO).is_err());
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
    }
}
