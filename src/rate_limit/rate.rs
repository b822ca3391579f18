//! [`Rate`], a number of requests per period, and [`RateLimitDecision`], what one check
//! of a limit answers.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;

use crate::error::ConfigError;

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
    pub(super) fn is_lower_than(&self, other: &Rate) -> bool {
        u128::from(self.requests.get()) * other.period.as_nanos()
            < u128::from(other.requests.get()) * self.period.as_nanos()
    }

    pub(super) fn quota(&self) -> Quota {
        let interval = self.period / self.requests.get();
        Quota::with_period(interval.max(Duration::from_nanos(1)))
            .expect("a non-zero interval")
            .allow_burst(self.requests)
    }
}

impl Rate {
    /// The time one request of the budget takes to come back.
    pub(super) fn interval(&self) -> Duration {
        (self.period / self.requests.get()).max(Duration::from_nanos(1))
    }

    /// The whole budget, as time.
    pub(super) fn tolerance(&self) -> Duration {
        self.interval() * self.requests.get()
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
    /// The period the limit is counted over (a minute for [`Rate::per_minute`]).
    pub window: Duration,
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

/// Whole seconds, rounded up (HTTP headers carry delay-seconds).
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_validated() {
        assert!(Rate::per_minute(0).is_err());
        assert!(Rate::new(1, Duration::ZERO).is_err());
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
    }
}
