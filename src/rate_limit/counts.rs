//! Which refusals count as failures against a client ([`FailureLimits::counts`]).

use super::FailureLimits;
use crate::middleware::RejectionKind;

impl FailureLimits {
    /// True when a refusal of `kind` counts as a failure against the client: a token that
    /// is not accepted (`invalid_token`: unknown, revoked, expired, wrong kind), and a real
    /// token presented from where it may not be used (`ip_not_allowed`, `binding_required`,
    /// `bound_elsewhere`): a stolen token replayed from another address or machine is
    /// throttled like a guess, and once the client is blocked it is refused before the
    /// store is asked (or, for a binding, written to).
    #[must_use]
    pub fn counts(kind: RejectionKind) -> bool {
        kind.counts_as_failure()
    }
}
