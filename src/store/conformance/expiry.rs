//! Checks of [`TokenStore::claim_expiry_warnings`]: which records a claim takes, and that
//! concurrent claims take each record once.
//!
//! The claims run at a `now` far in the future, with a window no other check's record
//! expires in, so that the records of the other checks (and of other tests sharing the
//! database) are neither taken nor counted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::{TokenId, TokenRecord, TokenStore, now, owner, record, rules};
use crate::store::StoreError;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A `now` in a window of its own: 900 days ahead, plus a random number of minutes (so
/// that two runs of the suite on one database do not meet).
fn far_now() -> OffsetDateTime {
    let minutes = u64::from(TokenId::random().0.as_bytes()[0]) * 7;
    now() + 900 * DAY + Duration::from_secs(minutes * 60)
}

/// Whether the store implements the method (it may answer `Unsupported`).
pub(super) async fn supported(s: &Arc<dyn TokenStore>) -> bool {
    let t = far_now();
    let answer = s.claim_expiry_warnings(t, t, 1).await;
    assert!(
        matches!(answer, Err(StoreError::Unsupported(_))) || answer.is_ok(),
        "claim_expiry_warnings answers, or is Unsupported"
    );
    !matches!(answer, Err(StoreError::Unsupported(_)))
}

/// Ids among `claimed` that are in `ours`.
fn mine(claimed: &[TokenRecord], ours: &HashSet<TokenId>) -> Vec<TokenId> {
    claimed
        .iter()
        .map(|r| r.id)
        .filter(|id| ours.contains(id))
        .collect()
}

/// Only live records expiring within the window and not warned yet are claimed, with
/// `expiry_warned_at` set to the claim's `now`; a claimed record is never claimed again.
pub(super) async fn claims_live_records_due_once(s: &Arc<dyn TokenStore>) {
    let created = now();
    let t = far_now();
    let before = t + DAY;
    let o = owner("expiry");
    let expiring = |name: &str, at: OffsetDateTime| {
        let mut r = record(&o, name, created);
        r.expires_at = Some(at);
        r
    };
    let due = expiring("due", t + Duration::from_secs(3600));
    let edge = expiring("edge", before);
    let later = expiring("later", before + Duration::from_secs(60));
    let past = expiring("past", t);
    let mut revoked = expiring("revoked", t + Duration::from_secs(3600));
    revoked.extras_mut().revoked_at = Some(created);
    let mut replaced = expiring("replaced", t + Duration::from_secs(3600));
    replaced.extras_mut().replaced_by = Some(due.id);
    let mut warned = expiring("warned", t + Duration::from_secs(3600));
    warned.extras_mut().expiry_warned_at = Some(created);
    let never = record(&o, "never", created);
    let all = [
        &due, &edge, &later, &past, &revoked, &replaced, &warned, &never,
    ];
    for r in all {
        s.insert((*r).clone(), rules(created, None))
            .await
            .expect("insert");
    }
    let ours: HashSet<TokenId> = all.iter().map(|r| r.id).collect();
    let mut taken = Vec::new();
    // Other records may be due in the window too (another run of the suite): claim until
    // nothing is left, a few at a time.
    loop {
        let claimed = s
            .claim_expiry_warnings(before, t, 3)
            .await
            .expect("claim_expiry_warnings");
        assert!(claimed.len() <= 3, "a claim takes at most `limit` records");
        for r in claimed.iter().filter(|r| ours.contains(&r.id)) {
            assert_eq!(
                r.extras().expiry_warned_at,
                Some(t),
                "a claimed record is returned with expiry_warned_at = now"
            );
        }
        if claimed.is_empty() {
            break;
        }
        taken.extend(mine(&claimed, &ours));
    }
    taken.sort_by_key(|id| id.to_string());
    let mut expected = vec![due.id, edge.id];
    expected.sort_by_key(|id| id.to_string());
    assert_eq!(
        taken, expected,
        "only live records expiring in (now, before] and not warned yet are claimed, once \
         (not later, past, revoked, replaced, already warned or never-expiring ones)"
    );
    let stored = s.get(&due.id).await.expect("get").expect("present");
    assert_eq!(
        stored.extras().expiry_warned_at,
        Some(t),
        "the claim is stored"
    );
    let again = s
        .claim_expiry_warnings(before, t + Duration::from_secs(1), 1000)
        .await
        .expect("claim_expiry_warnings");
    assert!(
        mine(&again, &ours).is_empty(),
        "a claimed record is never claimed again"
    );
}

/// Concurrent claims return disjoint sets; with a last claim after them, every due record
/// is claimed exactly once.
pub(super) async fn concurrent_claims_are_disjoint(s: &Arc<dyn TokenStore>) {
    let created = now();
    let t = far_now() + 2 * DAY;
    let before = t + DAY;
    let o = owner("expiry-race");
    let mut ours = HashSet::new();
    for i in 0..24u64 {
        let mut r = record(&o, &format!("due-{i}"), created);
        r.expires_at = Some(t + Duration::from_secs(60 * (i + 1)));
        ours.insert(r.id);
        s.insert(r, rules(created, None)).await.expect("insert");
    }
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let claimed = s
                    .claim_expiry_warnings(before, t, 4)
                    .await
                    .expect("claim_expiry_warnings");
                if claimed.is_empty() {
                    return got;
                }
                got.extend(claimed.into_iter().map(|r| r.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        for id in task.await.expect("claim task") {
            assert!(
                seen.insert(id),
                "two concurrent claims returned the same record"
            );
        }
    }
    // A claim may come back short, or empty, while others hold the records it picked
    // (PostgreSQL skips locked rows): what is left is claimed by the next call.
    loop {
        let claimed = s
            .claim_expiry_warnings(before, t, 100)
            .await
            .expect("claim_expiry_warnings");
        if claimed.is_empty() {
            break;
        }
        for r in claimed {
            assert!(
                seen.insert(r.id),
                "a record claimed concurrently was claimed again"
            );
        }
    }
    assert!(
        ours.is_subset(&seen),
        "every due record is claimed by one of the concurrent claims"
    );
}
