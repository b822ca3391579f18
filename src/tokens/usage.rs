//! Coalesced last-used times, written to the store in batches.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;

use crate::store::{TokenId, TokenRecord, TokenStore};

use super::{TokenError, Tokens};

pub(super) const USAGE_SHARDS: usize = 16;

/// How close to a deadline (a token's expiry, the end of a usage window), in nanoseconds,
/// the check re-reads the precise clock: well above the lag of a coarse clock (a scheduler
/// tick, 1 to 10 ms).
pub(super) const CLOSE_TO_EXPIRY: i128 = 100_000_000;

/// Coalesced last-used times, waiting for a batched write.
pub(super) struct Usage {
    /// In nanoseconds.
    granularity: i128,
    shards: Box<[Mutex<HashMap<TokenId, OffsetDateTime>>]>,
}

impl Usage {
    pub(super) fn new(granularity: Duration) -> Self {
        Self {
            granularity: i128::try_from(granularity.as_nanos()).unwrap_or(i128::MAX),
            shards: (0..USAGE_SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    pub(super) fn shard(&self, id: &TokenId) -> &Mutex<HashMap<TokenId, OffsetDateTime>> {
        &self.shards[(id.0.as_u128() as usize) % USAGE_SHARDS]
    }

    /// Queues a use at `now` (nanoseconds since the epoch, from a clock that may lag a
    /// little), unless the record shows one within the granularity. Within
    /// [`CLOSE_TO_EXPIRY`] of the window's end, `precise` (the manager's precise clock)
    /// decides, so a lagging clock never skips a use that falls past the window.
    pub(super) fn touch(&self, record: &TokenRecord, now: i128, precise: impl FnOnce() -> i128) {
        if let Some(t) = record.last_used_at {
            let t = t.unix_timestamp_nanos();
            let within = |now: i128| now.saturating_sub(t) < self.granularity;
            if within(now.saturating_add(CLOSE_TO_EXPIRY)) || (within(now) && within(precise())) {
                return;
            }
        }
        // At microsecond precision, as `Tokens::now` and SQL stores keep times.
        let Ok(now) = OffsetDateTime::from_unix_timestamp_nanos(now - now.rem_euclid(1_000)) else {
            return;
        };
        let mut m = self
            .shard(&record.id)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        m.entry(record.id)
            .and_modify(|t| *t = (*t).max(now))
            .or_insert(now);
    }

    pub(super) fn drain(&self) -> Vec<(TokenId, OffsetDateTime)> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            out.extend(s.lock().unwrap_or_else(PoisonError::into_inner).drain());
        }
        out
    }

    pub(super) fn requeue(&self, batch: Vec<(TokenId, OffsetDateTime)>) {
        for (id, at) in batch {
            self.shard(&id)
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(id)
                .and_modify(|t| *t = (*t).max(at))
                .or_insert(at);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

impl Tokens {
    /// Writes queued `last_used_at` updates to the store in one batch; returns how many.
    /// On failure they stay queued for the next flush.
    ///
    /// # Errors
    ///
    /// [`TokenError::Store`].
    pub async fn flush_usage(&self) -> Result<usize, TokenError> {
        let batch = self.inner.usage.drain();
        if batch.is_empty() {
            return Ok(0);
        }
        match self.inner.store.record_use(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                self.inner.usage.requeue(batch);
                Err(e.into())
            }
        }
    }

    /// Number of uses waiting for [`flush_usage`](Self::flush_usage).
    #[must_use]
    pub fn pending_usage(&self) -> usize {
        self.inner.usage.len()
    }
}
