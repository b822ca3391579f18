//! The rate-limit header fields on responses: [`RateLimitHeaders`].

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::rate_limit::{RateLimitDecision, ceil_secs};

/// Which rate-limit header fields a response carries, set with
/// [`AuthLayer::with_rate_limit_headers`](crate::AuthLayer::with_rate_limit_headers).
///
/// Allowed responses carry them, and so does a 429 past the limit (beside its
/// `Retry-After`). The quota partition is the token (with the tokens that replaced it by
/// rotation); the values are the same in every form:
///
/// | form | fields |
/// | --- | --- |
/// | [`Separate`](Self::Separate) (default) | `RateLimit-Limit: 100`, `RateLimit-Remaining: 42`, `RateLimit-Reset: 17` |
/// | [`Draft`](Self::Draft) | `RateLimit-Policy: "token";q=100;w=60`, `RateLimit: "token";r=42;t=17` |
/// | [`Both`](Self::Both) | all five |
///
/// [`Draft`](Self::Draft) follows the IETF HTTPAPI working group's
/// `draft-ietf-httpapi-ratelimit-headers` (revisions 08 to 11: a policy field and a state
/// field, both Structured Fields items). The default stays the three separate fields:
/// they are what API clients, gateways and client libraries read today (GitHub-style
/// clients, Envoy's and Kong's rate-limit plugins, the earlier revisions of the same
/// draft), the draft is not yet an RFC and has changed its syntax twice, and a change of
/// default would silently break clients that back off on `RateLimit-Remaining`. Servers
/// that want the draft's form choose [`Draft`](Self::Draft), or [`Both`](Self::Both) while
/// their clients move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RateLimitHeaders {
    /// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds until the
    /// full limit is available again).
    #[default]
    Separate,
    /// `RateLimit-Policy` (`q`: requests a window, `w`: the window in seconds) and
    /// `RateLimit` (`r`: requests left, `t`: seconds until the full limit is available
    /// again), for the policy named `"token"`.
    Draft,
    /// Both forms.
    Both,
    /// No rate-limit fields (a 429 still carries `Retry-After`).
    Off,
}

const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const STATE: HeaderName = HeaderName::from_static("ratelimit");

impl RateLimitHeaders {
    /// Writes the fields of `decision` into `headers`.
    pub(crate) fn write(self, headers: &mut HeaderMap, decision: &RateLimitDecision) {
        let reset = ceil_secs(decision.reset);
        if matches!(self, Self::Separate | Self::Both) {
            headers.reserve(3);
            headers.insert(LIMIT, number(u64::from(decision.limit)));
            headers.insert(REMAINING, number(u64::from(decision.remaining)));
            headers.insert(RESET, number(reset));
        }
        if matches!(self, Self::Draft | Self::Both) {
            // Digits and ASCII only: always a valid header value.
            let policy = format!(
                "\"token\";q={};w={}",
                decision.limit,
                ceil_secs(decision.window)
            );
            let state = format!("\"token\";r={};t={reset}", decision.remaining);
            if let Ok(v) = HeaderValue::try_from(policy) {
                headers.insert(POLICY, v);
            }
            if let Ok(v) = HeaderValue::try_from(state) {
                headers.insert(STATE, v);
            }
        }
    }
}

/// How many numbers [`number`] keeps ready.
const NUMBERS: usize = 1024;

/// `n` in decimal as a header value. Below [`NUMBERS`] it is a clone of a value made once,
/// which allocates nothing (`HeaderValue::from(n)` allocates its bytes on every call: three
/// allocations and frees a response, counted by the allocation test of one request with
/// every policy on, `tests/metrics/allocations.rs`).
fn number(n: u64) -> HeaderValue {
    static TABLE: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        // One string holding every number, kept for the life of the process, so each value
        // borrows it statically.
        let mut all = String::new();
        let mut ends = Vec::with_capacity(NUMBERS);
        for i in 0..NUMBERS {
            all.push_str(&i.to_string());
            ends.push(all.len());
        }
        let all: &'static str = Box::leak(all.into_boxed_str());
        let mut start = 0;
        ends.into_iter()
            .map(|end| {
                let v = HeaderValue::from_static(&all[start..end]);
                start = end;
                v
            })
            .collect()
    });
    usize::try_from(n)
        .ok()
        .and_then(|i| table.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn numbers_read_the_same_from_the_table_and_past_it() {
        for n in [0, 1, 9, 10, 99, 100, 1023, 1024, 65_536, u64::MAX] {
            assert_eq!(number(n), HeaderValue::from(n), "{n}");
        }
    }

    fn decision() -> RateLimitDecision {
        RateLimitDecision {
            limit: 100,
            remaining: 42,
            reset: Duration::from_millis(16_200),
            window: Duration::from_secs(60),
            retry_after: None,
        }
    }

    #[test]
    fn each_form_writes_its_fields() {
        let mut h = HeaderMap::new();
        RateLimitHeaders::Separate.write(&mut h, &decision());
        assert_eq!(h["ratelimit-limit"], "100");
        assert_eq!(h["ratelimit-remaining"], "42");
        assert_eq!(h["ratelimit-reset"], "17");
        assert!(!h.contains_key("ratelimit") && !h.contains_key("ratelimit-policy"));

        let mut h = HeaderMap::new();
        RateLimitHeaders::Draft.write(&mut h, &decision());
        assert_eq!(h["ratelimit-policy"], "\"token\";q=100;w=60");
        assert_eq!(h["ratelimit"], "\"token\";r=42;t=17");
        assert!(!h.contains_key("ratelimit-limit"));

        let mut h = HeaderMap::new();
        RateLimitHeaders::Both.write(&mut h, &decision());
        assert_eq!(h.len(), 5);

        let mut h = HeaderMap::new();
        RateLimitHeaders::Off.write(&mut h, &decision());
        assert!(h.is_empty());
    }
}
