//! Time source for expiry, grace windows and purges, replaceable in tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;
#[cfg(not(target_os = "linux"))]
use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

/// Where keygate reads the current time. Production code uses [`SystemClock`]; tests inject a
/// [`ManualClock`] and move it forward instead of sleeping.
pub trait Clock: Send + Sync + 'static {
    /// The current time, in UTC.
    fn now(&self) -> OffsetDateTime;

    /// The current time as nanoseconds since the Unix epoch: the form the verification
    /// path reads, once per request. The provided method derives it from
    /// [`now`](Self::now); override it when the clock can answer more cheaply. It may lag
    /// behind `now` by a few milliseconds, never run ahead of it: near an expiry, keygate
    /// asks `now` before deciding.
    fn unix_nanos(&self) -> i128 {
        self.now().unix_timestamp_nanos()
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    /// On Linux, the coarse realtime clock (`CLOCK_REALTIME_COARSE`, read from the vDSO in
    /// a few nanoseconds): the same wall clock as of the last scheduler tick (1 to 4 ms
    /// ago). Elsewhere, the system time. Neither builds an `OffsetDateTime`.
    fn unix_nanos(&self) -> i128 {
        #[cfg(target_os = "linux")]
        {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
            i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
        }
        #[cfg(not(target_os = "linux"))]
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
            Err(before) => i128::try_from(before.duration().as_nanos()).map_or(i128::MIN, |n| -n),
        }
    }
}

/// A clock that moves only when told to. Clones share the same time.
///
/// ```
/// use keygate::clock::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(time::macros::datetime!(2026-01-01 0:00 UTC));
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.now(), time::macros::datetime!(2026-01-01 0:01:30 UTC));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<OffsetDateTime>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    #[must_use]
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now += by;
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: OffsetDateTime) {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = to;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new(OffsetDateTime::now_utc())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_nanos_agree_with_its_date_time() {
        // The coarse clock may lag the precise one by a tick (at most 4 ms at 250 Hz); allow
        // 50 ms for a slow machine, which still catches a wrong epoch or unit.
        let before = SystemClock.now().unix_timestamp_nanos();
        let nanos = SystemClock.unix_nanos();
        let after = SystemClock.now().unix_timestamp_nanos();
        let slack = 50_000_000;
        assert!(
            before - slack <= nanos && nanos <= after,
            "{before} <= {nanos} <= {after}"
        );
    }

    #[test]
    fn manual_clock_nanos_follow_the_set_time() {
        let clock = ManualClock::new(time::macros::datetime!(2026-01-01 0:00 UTC));
        clock.advance(Duration::from_nanos(1_500));
        assert_eq!(clock.unix_nanos(), 1_767_225_600_000_001_500);
    }
}
