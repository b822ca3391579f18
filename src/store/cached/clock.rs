//! A millisecond clock that a hit can read with one atomic load: `Instant::now()` costs as
//! much as the rest of a hit on some machines. One background thread per process advances it
//! every [`TICK`]; if that thread cannot be started, every read falls back to `Instant`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

pub(crate) const TICK: Duration = Duration::from_millis(5);

struct Clock {
    base: Instant,
    ms: AtomicU64,
    ticking: AtomicBool,
}

fn elapsed_ms(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    static START: Once = Once::new();
    let c: &'static Clock = CLOCK.get_or_init(|| Clock {
        base: Instant::now(),
        ms: AtomicU64::new(0),
        ticking: AtomicBool::new(false),
    });
    START.call_once(|| {
        let started = std::thread::Builder::new()
            .name("keygate-cache-clock".into())
            .spawn(move || {
                loop {
                    c.ms.store(elapsed_ms(c.base), Ordering::Relaxed);
                    std::thread::sleep(TICK);
                }
            })
            .is_ok();
        c.ticking.store(started, Ordering::Release);
    });
    c
}

/// Milliseconds since the clock started; at most one tick behind.
pub(crate) fn now_ms() -> u64 {
    let c = clock();
    if c.ticking.load(Ordering::Relaxed) {
        c.ms.load(Ordering::Relaxed)
    } else {
        elapsed_ms(c.base)
    }
}

/// The clock reading `ttl` from now.
pub(crate) fn after(ttl: Duration) -> u64 {
    now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}
