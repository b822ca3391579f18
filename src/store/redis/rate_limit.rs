//! [`RedisRateLimiter`]: one rate limit shared by every instance, kept in Redis.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::{RedisOptions, RedisStore, invalid, redis_err};
use crate::rate_limit::{Rate, RateLimitDecision, SharedRateLimiter};
use crate::store::StoreError;

/// GCRA in one atomic script, on Redis's own clock (so instances with skewed clocks agree).
///
/// KEYS: the limiter key. ARGV: emission interval (µs), period (µs).
/// Returns {allowed (0/1), remaining, reset (µs), retry_after (µs)}.
///
/// The key holds the theoretical arrival time (µs): a request is allowed when, counting it,
/// the arrival time stays within one period of now. The key expires when the full limit is
/// available again, so idle tokens leave nothing behind.
static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("gcra.lua")));

/// A [`SharedRateLimiter`] in Redis: every instance pointing at the same Redis (and key
/// prefix) enforces one limit together. Each check is one Lua script (GCRA, the algorithm
/// of the in-process limiter, on Redis's clock), keyed by `<prefix>rl:<key>` (a token's lineage, see [`Lineage`](crate::rate_limit::Lineage)) — never
/// by a token. Its answers match the in-process limiter's: the limit, what remains, when
/// the full limit is back and, when refused, how long to wait.
///
/// When Redis cannot be reached the check fails and the layer answers 503
/// `store_unavailable` (fail closed). Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), keygate::StoreError> {
/// use keygate::rate_limit::{Rate, RateLimits};
/// use keygate::store::redis::{RedisOptions, RedisRateLimiter};
///
/// let limiter = RedisRateLimiter::new(RedisOptions::new("redis://127.0.0.1:6379").connect_lazy()?);
/// let limits = RateLimits::new(Rate::per_minute(100).unwrap()).shared(limiter);
/// # let _ = limits;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisRateLimiter {
    store: RedisStore,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.store.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// A limiter on the connection and key prefix of `store` (a store made with
    /// [`RedisOptions::connect_lazy`] connects on the first check).
    #[must_use]
    pub fn new(store: RedisStore) -> Self {
        Self { store }
    }

    /// A limiter for the Redis of `options`, connecting on the first check.
    ///
    /// # Errors
    ///
    /// An invalid URL.
    pub fn connect_lazy(options: RedisOptions) -> Result<Self, StoreError> {
        options.connect_lazy().map(Self::new)
    }

    /// The Redis key of `key` (a token id, or `ip:<address>`).
    #[must_use]
    pub fn key(&self, key: &str) -> String {
        self.store.key("rl", key)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 4).max(1)
}

#[async_trait]
impl SharedRateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str, rate: Rate) -> Result<RateLimitDecision, StoreError> {
        let mut conn = self.store.conn().await?;
        let limit = rate.requests();
        let period = micros(rate.period());
        let interval = (period / u64::from(limit)).max(1);
        let mut inv = GCRA.key(self.key(key));
        inv.arg(interval).arg(period);
        let answer: Vec<i64> = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        let [allowed, remaining, reset, retry] = answer[..] else {
            return Err(invalid("unexpected answer of the rate-limit script"));
        };
        let us = |v: i64| Duration::from_micros(v.max(0).unsigned_abs());
        Ok(RateLimitDecision {
            limit,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(limit).min(limit),
            reset: us(reset),
            window: rate.period(),
            retry_after: (allowed == 0).then(|| us(retry).max(Duration::from_micros(1))),
        })
    }
}
