//! [`RedisFailureLimiter`]: the failure limits of every instance, kept in Redis.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::{RedisOptions, RedisStore, redis_err};
use crate::rate_limit::{FailurePolicy, Rate, SharedFailureLimiter};
use crate::store::StoreError;

/// KEYS: client arrival time, client block. ARGV: interval, tolerance (µs).
static FAIL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("failure.lua"),
        include_str!("fail.lua")
    ))
});

/// KEYS: client arrival time, client block, account arrival time, pair. ARGV: client
/// interval and tolerance, account interval, tolerance and period, memory (µs).
static SIGN_IN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("failure.lua"),
        include_str!("sign_in.lua")
    ))
});

/// KEYS: client arrival time, account arrival time, pair. ARGV: the two intervals (µs).
static REFUND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("failure.lua"),
        include_str!("refund.lua")
    ))
});

/// A [`SharedFailureLimiter`] in Redis: every instance pointing at the same Redis (and key
/// prefix) gives a client, and an account, one failure budget together, with the rules of
/// [`FailureLimits`](crate::rate_limit::FailureLimits) (GCRA, on Redis's clock). Each
/// check is one command or one Lua script, so concurrent instances cannot overrun a budget.
///
/// | key | holds | expires |
/// | --- | --- | --- |
/// | `<prefix>fail:ip:<client>` | the client's GCRA arrival time (µs) | when its full budget is back |
/// | `<prefix>fail:block:<client>` | `1` while the client is blocked | when the block ends |
/// | `<prefix>fail:acct:<account>` | the account's GCRA arrival time (µs) | when its full budget is back |
/// | `<prefix>fail:pair:<account>:<client>` | `1`: the client failed to sign in to the account | after the account memory (15 min by default) |
///
/// `<client>` is an IPv4 address or an IPv6 /64 (`2001:db8:1:2::`); `<account>` is 32 hex
/// digits of the SHA-256 of the lower-cased account name — never a token, a password or
/// the name itself. Every key expires by itself, so a flood of distinct addresses or
/// names leaves at most the keys of the last account memory behind.
///
/// When Redis cannot be reached, every call fails and the layer and the management API
/// answer 503 `store_unavailable` (fail closed), as with the [`RedisRateLimiter`](super::RedisRateLimiter).
/// Cheap to clone.
///
/// ```no_run
/// # fn demo() -> Result<(), keygate::StoreError> {
/// use keygate::rate_limit::{FailureLimits, Rate};
/// use keygate::store::redis::{RedisFailureLimiter, RedisOptions};
///
/// let shared = RedisFailureLimiter::connect_lazy(RedisOptions::new("redis://127.0.0.1:6379"))?;
/// let limits = FailureLimits::new(Rate::per_minute(20).unwrap()).shared(shared);
/// # let _ = limits;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisFailureLimiter {
    store: RedisStore,
}

impl std::fmt::Debug for RedisFailureLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFailureLimiter")
            .field("prefix", &self.store.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// `(interval, tolerance)` of `rate`, in microseconds.
fn gcra(rate: Rate) -> (u64, u64) {
    let interval = micros(rate.period() / rate.requests());
    (
        interval,
        interval.saturating_mul(u64::from(rate.requests())),
    )
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 4).max(1)
}

/// A wait in microseconds from a script, or none for zero.
fn wait(us: i64) -> Option<Duration> {
    (us > 0).then(|| Duration::from_micros(us.unsigned_abs()))
}

impl RedisFailureLimiter {
    /// Limits on the connection and key prefix of `store` (a store made with
    /// [`RedisOptions::connect_lazy`] connects on the first check).
    #[must_use]
    pub fn new(store: RedisStore) -> Self {
        Self { store }
    }

    /// Limits in the Redis of `options`, connecting on the first check.
    ///
    /// # Errors
    ///
    /// An invalid URL.
    pub fn connect_lazy(options: RedisOptions) -> Result<Self, StoreError> {
        options.connect_lazy().map(Self::new)
    }

    /// The Redis key of `what` (`ip:<client>`, `block:<client>`, `acct:<account>` or
    /// `pair:<account>:<client>`).
    #[must_use]
    pub fn key(&self, what: &str) -> String {
        self.store.key("fail", what)
    }
}

#[async_trait]
impl SharedFailureLimiter for RedisFailureLimiter {
    async fn blocked(&self, client: &str) -> Result<Option<Duration>, StoreError> {
        let mut conn = self.store.conn().await?;
        let ms: i64 = redis::cmd("PTTL")
            .arg(self.key(&format!("block:{client}")))
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(wait(ms.saturating_mul(1000)))
    }

    async fn fail(
        &self,
        client: &str,
        policy: &FailurePolicy,
    ) -> Result<Option<Duration>, StoreError> {
        let mut conn = self.store.conn().await?;
        let (interval, tolerance) = gcra(policy.client_rate);
        let mut inv = FAIL.prepare_invoke();
        inv.key(self.key(&format!("ip:{client}")))
            .key(self.key(&format!("block:{client}")))
            .arg(interval)
            .arg(tolerance);
        let us: i64 = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        Ok(wait(us))
    }

    async fn begin_sign_in(
        &self,
        account: &str,
        client: &str,
        policy: &FailurePolicy,
    ) -> Result<Option<Duration>, StoreError> {
        let mut conn = self.store.conn().await?;
        let (c_interval, c_tolerance) = gcra(policy.client_rate);
        let (a_interval, a_tolerance) = gcra(policy.account_rate);
        let mut inv = SIGN_IN.prepare_invoke();
        inv.key(self.key(&format!("ip:{client}")))
            .key(self.key(&format!("block:{client}")))
            .key(self.key(&format!("acct:{account}")))
            .key(self.key(&format!("pair:{account}:{client}")))
            .arg(c_interval)
            .arg(c_tolerance)
            .arg(a_interval)
            .arg(a_tolerance)
            .arg(micros(policy.account_rate.period()))
            .arg(micros(policy.account_memory));
        let us: i64 = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        Ok(wait(us))
    }

    async fn refund(
        &self,
        account: &str,
        client: &str,
        policy: &FailurePolicy,
    ) -> Result<(), StoreError> {
        let mut conn = self.store.conn().await?;
        let mut inv = REFUND.prepare_invoke();
        inv.key(self.key(&format!("ip:{client}")))
            .key(self.key(&format!("acct:{account}")))
            .key(self.key(&format!("pair:{account}:{client}")))
            .arg(gcra(policy.client_rate).0)
            .arg(gcra(policy.account_rate).0);
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        Ok(())
    }
}
