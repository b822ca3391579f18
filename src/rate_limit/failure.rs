//! [`FailureLimits`]: failed authentications per client address, and the backoff of
//! password sign-ins per account.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::Rate;
use super::bounded::{Bounded, Expires};
use super::shared_failure::SharedFailureLimiter;

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
///
/// **Across instances.** In process, each instance keeps its own counts: N instances give
/// a guesser N budgets. [`shared`](Self::shared) keeps every count in a
/// [`SharedFailureLimiter`] instead (the Redis one is
/// `keygate::store::redis::RedisFailureLimiter`), with the same rules, so the instances
/// give one budget together. When that backend cannot be reached, nothing is let through
/// unchecked: a bearer request gets 503 `store_unavailable` and a sign-in is refused
/// (503) before its password is checked — the same as the shared rate limiter.
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
    /// Where the counts are kept instead of the maps above, when shared.
    shared: Option<Arc<dyn SharedFailureLimiter>>,
}

/// A generic cell rate algorithm state: the theoretical arrival time. The budget is full
/// again from `tat` on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gcra {
    tat: Instant,
}

impl Expires for Gcra {
    fn expires(&self) -> Instant {
        self.tat
    }
}

impl Gcra {
    /// Counts one cell at `now` if it fits the budget; otherwise `Err(wait)` until it would.
    pub(super) fn charge(state: Option<Self>, now: Instant, rate: Rate) -> Result<Self, Duration> {
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
pub(super) fn client_key(ip: IpAddr) -> IpAddr {
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
            .field("shared", &self.inner.shared.is_some())
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
            None,
        )
    }

    fn build(
        client_rate: Rate,
        account_rate: Rate,
        memory: Duration,
        cap: usize,
        shared: Option<Arc<dyn SharedFailureLimiter>>,
    ) -> Self {
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
                shared,
            }),
        }
    }

    fn rebuild(&self, f: impl FnOnce(&mut Rate, &mut Duration, &mut usize)) -> Self {
        let i = &self.inner;
        let (mut account_rate, mut memory) = (i.account_rate, i.memory);
        let mut cap = lock(&i.clients).cap();
        f(&mut account_rate, &mut memory, &mut cap);
        Self::build(i.client_rate, account_rate, memory, cap, i.shared.clone())
    }

    /// Keeps every count in `shared` (e.g. Redis) instead of this process, so that several
    /// instances give a client, and an account, one budget together (see the type's docs).
    #[must_use]
    pub fn shared(self, shared: impl SharedFailureLimiter) -> Self {
        let i = &self.inner;
        let cap = lock(&i.clients).cap();
        Self::build(
            i.client_rate,
            i.account_rate,
            i.memory,
            cap,
            Some(Arc::new(shared)),
        )
    }

    /// Whether the counts are kept in a [`SharedFailureLimiter`].
    #[must_use]
    pub fn is_shared(&self) -> bool {
        self.inner.shared.is_some()
    }

    pub(super) fn shared_backend(&self) -> Option<&dyn SharedFailureLimiter> {
        self.inner.shared.as_deref()
    }

    pub(super) fn rates(&self) -> (Rate, Rate, Duration) {
        (
            self.inner.client_rate,
            self.inner.account_rate,
            self.inner.memory,
        )
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

    /// How many entries the limits hold in this process now, all maps together: at most
    /// four times the [`with_max_entries`](Self::with_max_entries) cap, whatever the
    /// traffic (none when shared).
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

    /// In process: `Some(wait)` when `ip` is blocked right now.
    #[must_use]
    pub(crate) fn blocked_local(&self, ip: IpAddr) -> Option<Duration> {
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

    /// In process: counts a failure from `ip`; `Some(wait)` when it is now over its budget.
    pub(crate) fn fail_local(&self, ip: IpAddr) -> Option<Duration> {
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

    /// In process: see [`begin_sign_in`](Self::begin_sign_in).
    pub(super) fn begin_sign_in_local(
        &self,
        account: &str,
        ip: IpAddr,
    ) -> Result<SignIn, Duration> {
        if let Some(wait) = self.blocked_local(ip) {
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
        if let Some(wait) = self.fail_local(ip) {
            return Err(wait);
        }
        {
            // The account counts every attempt, over budget or not (a sustained flood
            // keeps it over), but never more than one period beyond its budget.
            let mut accounts = lock(&inner.accounts);
            let rate = inner.account_rate;
            let tat = accounts.get(&account).map_or(now, |s| s.tat.max(now)) + rate.interval();
            let tat = tat.min(now + rate.tolerance() + rate.period());
            accounts.insert(account, Gcra { tat }, now);
        }
        lock(&inner.pairs).insert((account, client), now + inner.memory, now);
        Ok(SignIn {
            limits: self.clone(),
            charged: Charged::Local { client, account },
        })
    }

    /// In process: gives back the charge of a sign-in (see [`SignIn::refund`]).
    pub(super) fn refund_local(&self, client: IpAddr, account: u64) {
        let inner = &self.inner;
        let give_back = |s: &mut Gcra, rate: Rate| {
            s.tat = s.tat.checked_sub(rate.interval()).unwrap_or(s.tat);
        };
        if let Some(s) = lock(&inner.clients).get_mut(&client) {
            give_back(s, inner.client_rate);
        }
        if let Some(s) = lock(&inner.accounts).get_mut(&account) {
            give_back(s, inner.account_rate);
        }
        lock(&inner.pairs).remove(&(account, client));
    }
}

/// What a [`SignIn`] was charged to.
pub(super) enum Charged {
    /// This process's maps.
    Local { client: IpAddr, account: u64 },
    /// The shared backend's keys (see [`SharedFailureLimiter`]).
    Shared { client: String, account: String },
}

/// A password check let through by [`FailureLimits::begin_sign_in`], already counted as a
/// failure. Drop it when the password was wrong; call [`refund`](Self::refund) otherwise.
#[must_use = "dropping a SignIn counts it as a failure"]
pub struct SignIn {
    pub(super) limits: FailureLimits,
    pub(super) charged: Charged,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_an_address_after_its_budget() {
        let f = FailureLimits::new(Rate::per_minute(3).unwrap());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        for _ in 0..3 {
            assert!(f.fail_local(ip).is_none());
        }
        assert!(f.blocked_local(ip).is_none());
        assert!(f.fail_local(ip).is_some());
        assert!(f.blocked_local(ip).is_some());
        assert!(f.blocked_local(other).is_none());
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let f = FailureLimits::new(Rate::per_minute(2).unwrap());
        // Every address of one /64 spends the same budget; the next /64 has its own.
        assert!(f.fail_local("2001:db8:1:2::1".parse().unwrap()).is_none());
        assert!(
            f.fail_local("2001:db8:1:2:ffff::9".parse().unwrap())
                .is_none()
        );
        assert!(
            f.fail_local("2001:db8:1:2:1234::7".parse().unwrap())
                .is_some()
        );
        assert!(
            f.blocked_local("2001:db8:1:2::abcd".parse().unwrap())
                .is_some()
        );
        assert!(
            f.blocked_local("2001:db8:1:3::1".parse().unwrap())
                .is_none()
        );
        // A mapped IPv4 address is that IPv4 address.
        assert!(f.fail_local("::ffff:192.0.2.1".parse().unwrap()).is_none());
        assert!(f.fail_local("192.0.2.1".parse().unwrap()).is_none());
        assert!(f.blocked_local("192.0.2.1".parse().unwrap()).is_none());
        assert!(f.fail_local("192.0.2.1".parse().unwrap()).is_some());
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
            assert!(f.fail_local(ip).is_none());
            assert!(f.fail_local(ip).is_some());
            assert!(f.entries() <= 4 * cap, "{}", f.entries());
            blocked_now += usize::from(f.blocked_local(ip).is_some());
        }
        assert_eq!(
            blocked_now, 200_000,
            "each address was blocked when it went over"
        );
        assert!(f.entries() <= 2 * cap, "{}", f.entries());
        // Once every entry is idle, the next pruning drops all of them.
        tokio::time::advance(Duration::from_secs(3600)).await;
        for i in 0..=cap as u32 {
            let _ = f.fail_local(IpAddr::from(std::net::Ipv4Addr::from(0xc000_0200 + i)));
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
            drop(f.begin_sign_in_local("Admin@example.com", ip(i)).unwrap());
        }
        // Each of them is refused on that account (any case of the name) ...
        for i in 0..3 {
            let wait = f
                .begin_sign_in_local("admin@EXAMPLE.com", ip(i))
                .unwrap_err();
            assert!(wait >= Duration::from_secs(1));
        }
        // ... but not on another account, and a fresh address still gets its try.
        drop(f.begin_sign_in_local("bob@example.com", ip(0)).unwrap());
        f.begin_sign_in_local("admin@example.com", ip(9))
            .unwrap()
            .refund()
            .await;
        // A right password gives the charge back and forgets the address: the owner who
        // mistyped once is let in again once the account cools down.
        tokio::time::advance(Duration::from_secs(120)).await;
        f.begin_sign_in_local("admin@example.com", ip(0))
            .unwrap()
            .refund()
            .await;
        // A sustained flood keeps the account over its budget.
        for i in 10..40 {
            drop(f.begin_sign_in_local("admin@example.com", ip(i)).unwrap());
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        assert!(f.begin_sign_in_local("admin@example.com", ip(10)).is_err());
        assert!(f.begin_sign_in_local("admin@example.com", ip(100)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn sign_ins_are_charged_before_the_check_and_refunded_after_success() {
        let f = FailureLimits::new(Rate::per_minute(3).unwrap());
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        // Concurrent attempts: the budget is spent when they start, not when they fail.
        let held: Vec<_> = (0..3)
            .map(|_| f.begin_sign_in_local("a@example.com", ip).unwrap())
            .collect();
        assert!(f.begin_sign_in_local("b@example.com", ip).is_err());
        assert!(f.blocked_local(ip).is_some());
        drop(held);
        // Successful sign-ins do not use up the budget.
        let f = FailureLimits::new(Rate::per_minute(3).unwrap());
        for _ in 0..10 {
            f.begin_sign_in_local("a@example.com", ip)
                .unwrap()
                .refund()
                .await;
        }
        assert!(f.blocked_local(ip).is_none());
        // A blocked address is refused until the budget refills.
        for _ in 0..3 {
            drop(f.begin_sign_in_local("c@example.com", ip).unwrap());
        }
        let wait = f.begin_sign_in_local("a@example.com", ip).unwrap_err();
        assert!(f.begin_sign_in_local("a@example.com", ip).is_err());
        tokio::time::advance(wait).await;
        assert!(f.blocked_local(ip).is_none());
    }
}
