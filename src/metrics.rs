//! Prometheus metrics (feature `metrics`), recorded through the [`metrics`] facade.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `keygate_verifications_total` | counter | `outcome`, `kind` |
//! | `keygate_verification_seconds` | histogram | `outcome` |
//! | `keygate_store_errors_total` | counter | — |
//! | `keygate_rate_limited_total` | counter | — |
//! | `keygate_audit_dropped_total` | counter | — (request events shed by a full audit queue, or lost with a failed batch) |
//! | `keygate_audit_shed_total` | counter | — (refusal events shed by the per-address denial budget, [`AuditBudget`](crate::rate_limit::AuditBudget)) |
//! | `keygate_audit_write_errors_total` | counter | — (audit sink writes that failed or timed out) |
//!
//! `/metrics` is usually served without authentication, so its labels tell nothing the
//! client did not already see in its own answer:
//!
//! - `outcome` is `allow`, or the `code` of the refusal the client received
//!   (`missing_token`, `invalid_request`, `invalid_token`, `insufficient_scope`,
//!   `ip_not_allowed`, `binding_required`, `bound_elsewhere`, `rate_limited`,
//!   `payload_too_large`, `store_unavailable`). An unknown, revoked, expired, wrong-kind or
//!   wrong-secret token is `invalid_token` alike, as in the 401 body: someone holding a
//!   leaked token cannot learn from `/metrics` whether it was ever real.
//! - `kind` is the name of the configured kind whose prefix the presented token carries
//!   (`none` without a token or with a prefix no kind has), never the kind of a stored
//!   record, which would appear only for a token on record.
//!
//! The precise reason (`unknown`, `revoked`, `expired`, `wrong_kind`, …) is kept for the
//! audit event ([`crate::audit`]) and the response's extensions. No label ever holds a
//! token, a hash or a token name. Install the exporter once with [`install`] and serve
//! [`PrometheusHandle::render`] on `GET /metrics`.

use metrics::{Counter, Histogram};

use crate::middleware::RejectionKind;
pub use metrics_exporter_prometheus::PrometheusHandle;

/// Installs the Prometheus recorder for the whole process and returns the handle that
/// renders the text format.
///
/// # Errors
///
/// When another recorder is already installed.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("keygate_verification_seconds".into()),
            &[
                0.000_001, 0.000_005, 0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01,
                0.05, 0.1, 0.5, 1.0,
            ],
        )?
        .install_recorder()
}

/// The handles of one layer's metrics, each registered with the installed recorder on
/// first use of its label set and kept, so that a decision costs an index into a table and
/// an atomic add, never a registration or a lookup by key (the `metrics` macros look the
/// key up in the recorder's registry on every call; compare
/// `cargo bench --bench policies -- policies/metrics` with `policies/layer`). Install the
/// recorder before the layer serves its first request.
#[derive(Default)]
pub(crate) struct Handles {
    /// By outcome: `allow` first, then each refusal by its [`RejectionKind`] index.
    outcomes: [std::sync::OnceLock<Outcome>; OUTCOMES],
    store_errors: std::sync::OnceLock<Counter>,
    rate_limited: std::sync::OnceLock<Counter>,
}

/// The outcomes with a slot of their own: `allow` and up to 31 refusal kinds (there are
/// fewer); a kind past them would be registered on each use.
const OUTCOMES: usize = 32;

/// The configured kinds with a counter slot of their own (by their index in
/// [`Tokens::kinds`](crate::Tokens::kinds)), after the slot of `none`; kinds past them are
/// looked up by name.
const KIND_SLOTS: usize = 16;

struct Outcome {
    seconds: Histogram,
    /// `none`, then the configured kinds by index.
    by_index: [std::sync::OnceLock<Counter>; KIND_SLOTS + 1],
    by_name: papaya::HashMap<Box<str>, Counter>,
}

/// The presented token's kind for the `kind` label: its index among the configured kinds
/// and its name, or `None` for `none`.
pub(crate) type PresentedKind<'a> = Option<(usize, &'a str)>;

impl Handles {
    /// Counts one decision: `denial` is `None` for `allow`, else the kind of the refusal,
    /// whose public code is the label (see the [module docs](self)); `kind` the configured
    /// kind the presented prefix names.
    pub(crate) fn verification(
        &self,
        denial: Option<RejectionKind>,
        kind: PresentedKind<'_>,
        seconds: f64,
    ) {
        let outcome = denial.map_or("allow", RejectionKind::code);
        let slot = denial.map_or(0, |k| k as usize + 1);
        let fresh;
        let o = match self.outcomes.get(slot) {
            Some(cell) => cell.get_or_init(|| Outcome::register(outcome)),
            None => {
                fresh = Outcome::register(outcome);
                &fresh
            }
        };
        o.count(outcome, kind);
        o.seconds.record(seconds);
        match denial {
            Some(RejectionKind::StoreUnavailable) => self
                .store_errors
                .get_or_init(|| metrics::counter!("keygate_store_errors_total"))
                .increment(1),
            Some(RejectionKind::RateLimited) => self
                .rate_limited
                .get_or_init(|| metrics::counter!("keygate_rate_limited_total"))
                .increment(1),
            _ => {}
        }
    }
}

impl Outcome {
    fn register(outcome: &'static str) -> Self {
        Self {
            seconds: metrics::histogram!("keygate_verification_seconds", "outcome" => outcome),
            by_index: Default::default(),
            by_name: papaya::HashMap::new(),
        }
    }

    fn count(&self, outcome: &'static str, kind: PresentedKind<'_>) {
        let register = |name: &str| {
            metrics::counter!(
                "keygate_verifications_total",
                "outcome" => outcome,
                "kind" => name.to_owned()
            )
        };
        let (slot, name) = match kind {
            None => (0, "none"),
            Some((index, name)) => (index + 1, name),
        };
        if let Some(cell) = self.by_index.get(slot) {
            cell.get_or_init(|| register(name)).increment(1);
            return;
        }
        let by_name = self.by_name.pin();
        match by_name.get(name) {
            Some(c) => c.increment(1),
            None => by_name
                .get_or_insert_with(name.into(), || register(name))
                .increment(1),
        }
    }
}
