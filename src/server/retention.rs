//! Audit retention: how long events are kept ([`parse_retention`]) and the task that
//! deletes the older ones.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::{AuditPurge, purge_audit};

/// The default audit retention: 90 days.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// How often the server deletes the events past their retention: every hour (and once
/// right after the start).
pub const AUDIT_PURGE_EVERY: Duration = Duration::from_secs(3600);

/// A `KEYGATE_AUDIT_RETENTION` value that is not a retention.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the audit retention must be `off` or a positive number of seconds, or of minutes, hours \
     or days with `m`, `h` or `d` (e.g. `90d`, `12h`), not {0:?}"
)]
pub struct InvalidRetention(String);

/// How long audit events are kept: `90d`, `12h`, `30m`, `3600s` or `3600` (seconds);
/// `off` (or `forever`): `None`, kept forever.
///
/// # Errors
///
/// Anything else, zero included.
pub fn parse_retention(value: &str) -> Result<Option<Duration>, InvalidRetention> {
    let v = value.trim().to_ascii_lowercase();
    if v == "off" || v == "forever" {
        return Ok(None);
    }
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => v.split_at(at),
        None => (v.as_str(), "s"),
    };
    let per = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        _ => return Err(InvalidRetention(value.to_owned())),
    };
    match digits.parse::<u64>().ok().and_then(|n| n.checked_mul(per)) {
        Some(secs) if secs > 0 => Ok(Some(Duration::from_secs(secs))),
        _ => Err(InvalidRetention(value.to_owned())),
    }
}

/// Deletes the events of `store` older than `keep`, now and every `every`, until the task
/// is aborted. A failed purge is logged and tried again at the next tick.
pub(super) fn spawn_audit_retention(
    store: Arc<dyn AuditPurge>,
    keep: Duration,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let before = time::OffsetDateTime::now_utc() - keep;
            match purge_audit(store.as_ref(), before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "audit events past their retention deleted"),
                Err(error) => tracing::warn!(%error, "audit retention purge failed; will retry"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retentions_parse_with_units_and_off() {
        let d = |s: &str| parse_retention(s).unwrap();
        assert_eq!(d("90d"), Some(DEFAULT_AUDIT_RETENTION));
        assert_eq!(d("12h"), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(d("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(d("3600"), Some(Duration::from_secs(3600)));
        assert_eq!(d(" 3600s "), Some(Duration::from_secs(3600)));
        assert_eq!(d("OFF"), None);
        for bad in [
            "",
            "0",
            "0d",
            "-1d",
            "90 days",
            "1w",
            "d",
            "99999999999999999999d",
        ] {
            let err = parse_retention(bad).unwrap_err();
            assert!(err.to_string().contains("`off`"), "{bad:?}: {err}");
        }
    }
}
