//! A map keyed by client input that cannot grow past a cap.
//!
//! Each value knows when it stops mattering ([`Expires`]). Inserting a new key into a full
//! map first drops every expired entry and then, if more than half the cap is still
//! live, the entries that would expire soonest, down to half the cap. A pruning costs
//! O(n) but leaves room for at least cap / 2 inserts before the next one, so the cost per
//! insert stays constant on average and lookups never scan. Evicting live entries under
//! a flood of distinct keys forgets the state that matters least (closest to expiring).

use std::collections::HashMap;
use std::hash::Hash;

use tokio::time::Instant;

/// When a value is no different from no value at all.
pub(super) trait Expires {
    /// From this instant on, the entry can be dropped.
    fn expires(&self) -> Instant;
}

impl Expires for Instant {
    fn expires(&self) -> Instant {
        *self
    }
}

/// A `HashMap` of at most `cap` entries (see the module docs).
pub(super) struct Bounded<K, V> {
    map: HashMap<K, V>,
    cap: usize,
}

impl<K: Hash + Eq, V: Expires> Bounded<K, V> {
    /// A map of at most `cap` entries (at least 2).
    pub(super) fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            cap: cap.max(2),
        }
    }

    pub(super) fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    pub(super) fn remove(&mut self, key: &K) {
        self.map.remove(key);
    }

    pub(super) fn cap(&self) -> usize {
        self.cap
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Inserts or replaces `key`, pruning first when a new key would not fit.
    pub(super) fn insert(&mut self, key: K, value: V, now: Instant) {
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            self.prune(now);
        }
        self.map.insert(key, value);
    }

    fn prune(&mut self, now: Instant) {
        self.map.retain(|_, v| v.expires() > now);
        let keep = self.cap / 2;
        if self.map.len() <= keep {
            return;
        }
        let mut times: Vec<Instant> = self.map.values().map(Expires::expires).collect();
        let drop = times.len() - keep;
        let (_, threshold, _) = times.select_nth_unstable(drop - 1);
        let threshold = *threshold;
        self.map.retain(|_, v| v.expires() > threshold);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_full_map_drops_expired_then_soonest_expiring_entries() {
        let now = Instant::now();
        let mut m = Bounded::new(10);
        for i in 0..10u64 {
            m.insert(i, now + Duration::from_secs(i), now);
        }
        assert_eq!(m.len(), 10);
        // Entry 0 has expired; the live ones closest to expiry go down to half the cap.
        m.insert(100, now + Duration::from_secs(100), now);
        assert_eq!(m.len(), 6);
        assert!(m.get(&9).is_some() && m.get(&100).is_some());
        assert!(m.get(&1).is_none() && m.get(&4).is_none());
        // Replacing a key never prunes.
        let mut m = Bounded::new(2);
        m.insert(1, now + Duration::from_secs(1), now);
        m.insert(2, now + Duration::from_secs(1), now);
        m.insert(2, now + Duration::from_secs(2), now);
        assert_eq!(m.len(), 2);
    }
}
