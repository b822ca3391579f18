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

/// The handles of one layer's metrics, registered with the installed recorder on first use
/// of each label set, so that a decision costs a map lookup and an atomic add instead of a
/// registration. Install the recorder before the layer serves its first request. The maps
/// are lock-free for readers, so cores recording at once do not contend.
#[derive(Default)]
pub(crate) struct Handles {
    by_outcome: papaya::HashMap<&'static str, Outcome>,
}

struct Outcome {
    seconds: Histogram,
    by_kind: papaya::HashMap<Box<str>, Counter>,
}

impl Handles {
    /// Counts one decision: `outcome` is `allow` or the public refusal code, `kind` the
    /// configured kind the presented prefix names (see the [module docs](self)).
    pub(crate) fn verification(&self, outcome: &'static str, kind: Option<&str>, seconds: f64) {
        let kind = kind.unwrap_or("none");
        let by_outcome = self.by_outcome.pin();
        let o = by_outcome.get_or_insert_with(outcome, || Outcome {
            seconds: metrics::histogram!("keygate_verification_seconds", "outcome" => outcome),
            by_kind: papaya::HashMap::new(),
        });
        let by_kind = o.by_kind.pin();
        let counter = match by_kind.get(kind) {
            Some(c) => c,
            None => by_kind.get_or_insert_with(kind.into(), || {
                metrics::counter!(
                    "keygate_verifications_total",
                    "outcome" => outcome,
                    "kind" => kind.to_owned()
                )
            }),
        };
        counter.increment(1);
        o.seconds.record(seconds);
        match outcome {
            "store_unavailable" => metrics::counter!("keygate_store_errors_total").increment(1),
            "rate_limited" => metrics::counter!("keygate_rate_limited_total").increment(1),
            _ => {}
        }
    }
}
