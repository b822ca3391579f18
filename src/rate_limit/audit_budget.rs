//! [`AuditBudget`]: how many refused requests a client address may add to the audit trail.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;

use super::Rate;
use super::bounded::{Bounded, Expires};
use super::failure::{Gcra, client_key};

/// The default budget: 60 refused requests a minute per client address, all of them
/// available at once.
pub const DEFAULT_AUDIT_BUDGET: u32 = 60;

/// The default cap on the addresses an [`AuditBudget`] remembers.
pub const DEFAULT_MAX_AUDIT_BUDGET_ENTRIES: usize = 50_000;

/// How many refused requests each client address may add to the audit trail.
///
/// Every request the layer refuses (no credentials, a bad or revoked token, a client over
/// its failure budget, a token used outside its allow-list, …) and every refused
/// management write is an audit event, a row kept for the retention period. Without a
/// bound, one address adds rows as fast as it can send requests. With this budget (given
/// to [`AuditLog::with_denial_budget`](crate::audit::AuditLog::with_denial_budget); on by
/// default, [`DEFAULT_AUDIT_BUDGET`] a minute), each address gets `rate` refusal events,
/// all available at once and refilling evenly over the period; past it, its refusal events
/// are shed and counted ([`AuditLog::shed`](crate::audit::AuditLog::shed), metric
/// `keygate_audit_shed_total`), and the next event the address is allowed again is
/// preceded by one `audit.shed` event whose `reason` is `shed:<n>`, the number shed since.
///
/// Only refusals are budgeted: a request a valid token was allowed is always recorded
/// (its token has a rate limit of its own), and so is every management write that took
/// effect. Addresses are counted like [`FailureLimits`](super::FailureLimits) counts
/// them: the client, or the socket peer when the client is unknown; IPv6 by its /64.
/// Events without any address are not budgeted.
///
/// The map of addresses is capped ([`DEFAULT_MAX_AUDIT_BUDGET_ENTRIES`],
/// [`with_max_entries`](Self::with_max_entries)); when it is full, idle addresses are
/// dropped first. An address dropped while it had events shed loses its `audit.shed`
/// summary (the counter still has them). Clones share the counts.
#[derive(Clone)]
pub struct AuditBudget {
    inner: Arc<Inner>,
}

struct Inner {
    rate: Rate,
    clients: Mutex<Bounded<IpAddr, Entry>>,
}

/// One address's budget, and the events shed since its last kept one.
#[derive(Debug, Clone, Copy)]
struct Entry {
    gcra: Gcra,
    shed: u64,
}

impl Expires for Entry {
    fn expires(&self) -> Instant {
        self.gcra.expires()
    }
}

/// What [`AuditBudget::admit`] decided for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Record it; `shed` events of this address were shed before it (0: none).
    Keep {
        /// Events of this address shed since its last kept one.
        shed: u64,
    },
    /// Over the budget: shed it.
    Shed,
}

impl std::fmt::Debug for AuditBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditBudget")
            .field("rate", &self.inner.rate)
            .finish_non_exhaustive()
    }
}

impl Default for AuditBudget {
    /// [`DEFAULT_AUDIT_BUDGET`] events a minute per address.
    fn default() -> Self {
        Self::new(Rate::per_minute(DEFAULT_AUDIT_BUDGET).expect("a positive rate"))
    }
}

impl AuditBudget {
    /// `rate` refusal events per client address.
    #[must_use]
    pub fn new(rate: Rate) -> Self {
        Self::build(rate, DEFAULT_MAX_AUDIT_BUDGET_ENTRIES)
    }

    fn build(rate: Rate, cap: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                rate,
                clients: Mutex::new(Bounded::new(cap)),
            }),
        }
    }

    /// The most addresses remembered (default [`DEFAULT_MAX_AUDIT_BUDGET_ENTRIES`]; at
    /// least 2). Starts from empty state.
    #[must_use]
    pub fn with_max_entries(self, entries: usize) -> Self {
        Self::build(self.inner.rate, entries)
    }

    /// The budget of each address.
    #[must_use]
    pub fn rate(&self) -> Rate {
        self.inner.rate
    }

    /// How many addresses are remembered now: at most the
    /// [`with_max_entries`](Self::with_max_entries) cap, whatever the traffic.
    #[must_use]
    pub fn entries(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bounded<IpAddr, Entry>> {
        self.inner
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Charges one refusal event from `ip` to its budget.
    pub(crate) fn admit(&self, ip: IpAddr) -> Admission {
        let key = client_key(ip);
        let now = Instant::now();
        let mut clients = self.lock();
        let entry = clients.get(&key).copied();
        match Gcra::charge(entry.map(|e| e.gcra), now, self.inner.rate) {
            Ok(gcra) => {
                clients.insert(key, Entry { gcra, shed: 0 }, now);
                Admission::Keep {
                    shed: entry.map_or(0, |e| e.shed),
                }
            }
            Err(_) => {
                if let Some(e) = clients.get_mut(&key) {
                    e.shed = e.shed.saturating_add(1);
                }
                Admission::Shed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_over_its_budget_is_shed_then_summarised_once_it_refills() {
        let budget = AuditBudget::new(Rate::per_minute(3).unwrap());
        for _ in 0..3 {
            assert_eq!(
                budget.admit(ip("198.51.100.7")),
                Admission::Keep { shed: 0 }
            );
        }
        for _ in 0..5 {
            assert_eq!(budget.admit(ip("198.51.100.7")), Admission::Shed);
        }
        // Another address has a budget of its own.
        assert_eq!(
            budget.admit(ip("198.51.100.8")),
            Admission::Keep { shed: 0 }
        );
        // One event's worth comes back after a third of the minute.
        tokio::time::advance(std::time::Duration::from_secs(21)).await;
        assert_eq!(
            budget.admit(ip("198.51.100.7")),
            Admission::Keep { shed: 5 }
        );
        assert_eq!(budget.admit(ip("198.51.100.7")), Admission::Shed);
        // An IPv6 host is counted by its /64.
        for _ in 0..3 {
            assert_eq!(budget.admit(ip("2001:db8::1")), Admission::Keep { shed: 0 });
        }
        assert_eq!(budget.admit(ip("2001:db8::ffff")), Admission::Shed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_addresses_does_not_grow_the_map_past_its_cap() {
        let budget = AuditBudget::default().with_max_entries(100);
        for i in 0..10_000u32 {
            let _ = budget.admit(IpAddr::from(i.to_be_bytes()));
        }
        assert!(budget.entries() <= 100, "{}", budget.entries());
    }
}
