//! The checks of [`TokenStore::rotate`]: atomicity, the grace of a lineage, the limit.

use std::sync::Arc;
use std::time::Duration;

use super::{now, owner, record, rules};
use time::OffsetDateTime;

use crate::store::{StoreError, TokenId, TokenRecord, TokenStore};
use crate::token::TokenKind;

pub(super) async fn rotate_is_atomic(s: &Arc<dyn TokenStore>) {
    let t = now();
    let o = owner("rotate");
    let mut old = record(&o, "deploy", t);
    old.expires_at = Some(t + Duration::from_secs(3600));
    s.insert(old.clone(), rules(t, Some(1)))
        .await
        .expect("insert");
    let mut new = old.clone();
    new.id = TokenId::random();
    new.hash = TokenKind::pat().generate().hash();
    let grace_end = t + Duration::from_secs(60);
    let out = s
        .rotate(&old.id, new.clone(), grace_end, rules(t, Some(2)))
        .await
        .expect("rotate with grace and room under the limit");
    assert!(out.ended.is_empty(), "nothing in grace before");
    let old_now = s.get(&old.id).await.expect("get").expect("kept");
    assert_eq!(old_now.extras().replaced_by, Some(new.id));
    assert_eq!(
        old_now.expires_at,
        Some(grace_end),
        "the old token ends with the grace"
    );
    assert_eq!(
        *s.find_by_hash(&new.hash).await.expect("find").expect("new"),
        new
    );
    assert!(
        matches!(
            s.insert(record(&o, "deploy", t), rules(t, None)).await,
            Err(StoreError::NameTaken)
        ),
        "the successor holds the name"
    );
    // A replaced token cannot be rotated again, nor can an unknown or revoked one.
    let mut again = old.clone();
    again.id = TokenId::random();
    again.hash = TokenKind::pat().generate().hash();
    assert!(matches!(
        s.rotate(&old.id, again.clone(), t, rules(t, None)).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.rotate(&TokenId::random(), again.clone(), t, rules(t, None))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(
        s.find_by_hash(&again.hash).await.expect("find").is_none(),
        "a failed rotation inserts nothing"
    );
    // An earlier expiry is kept.
    let mut short = record(&o, "short", t);
    short.expires_at = Some(t + Duration::from_secs(10));
    s.insert(short.clone(), rules(t, None))
        .await
        .expect("insert");
    let mut next = short.clone();
    next.id = TokenId::random();
    next.hash = TokenKind::pat().generate().hash();
    s.rotate(
        &short.id,
        next,
        t + Duration::from_secs(3600),
        rules(t, None),
    )
    .await
    .expect("rotate");
    assert_eq!(
        s.get(&short.id)
            .await
            .expect("get")
            .expect("kept")
            .expires_at,
        Some(t + Duration::from_secs(10)),
        "rotation never extends the old token's life"
    );
}

/// A successor of `r` with a fresh id and hash.
fn successor(r: &TokenRecord) -> TokenRecord {
    let mut next = r.clone();
    next.id = TokenId::random();
    next.hash = TokenKind::pat().generate().hash();
    next.extras_mut().replaced_by = None;
    next
}

pub(super) async fn valid_count(s: &Arc<dyn TokenStore>, owner: &str, at: OffsetDateTime) -> usize {
    s.list_by_owner(owner)
        .await
        .expect("list")
        .iter()
        .filter(|r| r.is_valid_at(at))
        .count()
}

pub(super) async fn rotation_ends_the_earlier_grace(s: &Arc<dyn TokenStore>) {
    let t = now();
    let o = owner("lineage");
    let a = record(&o, "deploy", t);
    s.insert(a.clone(), rules(t, None)).await.expect("insert");
    let b = successor(&a);
    let grace = t + Duration::from_secs(3600);
    s.rotate(&a.id, b.clone(), grace, rules(t, None))
        .await
        .expect("rotate a");
    let c = successor(&b);
    let out = s
        .rotate(&b.id, c.clone(), grace, rules(t, None))
        .await
        .expect("rotate b");
    assert_eq!(
        out.ended,
        vec![a.id],
        "rotating b ends the grace of a, and says so"
    );
    let a_now = s.find_by_hash(&a.hash).await.expect("find").expect("kept");
    assert!(
        !a_now.is_valid_at(t),
        "a lineage keeps at most one token in grace: a is dead at once"
    );
    let b_now = s.get(&b.id).await.expect("get").expect("kept");
    assert_eq!(b_now.extras().replaced_by, Some(c.id));
    assert!(b_now.is_valid_at(t), "b is in its grace");
    assert_eq!(valid_count(s, &o, t).await, 2, "c live, b in grace");
    // A rotation without grace ends the earlier grace too.
    let d = successor(&c);
    let out = s
        .rotate(&c.id, d, t, rules(t, None))
        .await
        .expect("rotate c");
    assert_eq!(out.ended, vec![b.id]);
    assert_eq!(valid_count(s, &o, t).await, 1, "only d");
}

pub(super) async fn tokens_in_grace_count_against_the_limit(s: &Arc<dyn TokenStore>) {
    let t = now();
    let grace = t + Duration::from_secs(3600);
    // At the limit, a rotation with grace would add a valid token: refused, nothing changes.
    let o = owner("grace-limit");
    let a = record(&o, "a", t);
    s.insert(a.clone(), rules(t, Some(1)))
        .await
        .expect("insert");
    let b = successor(&a);
    assert!(
        matches!(
            s.rotate(&a.id, b.clone(), grace, rules(t, Some(1))).await,
            Err(StoreError::LimitReached)
        ),
        "a rotation with grace at the limit must be refused"
    );
    assert!(
        s.find_by_hash(&b.hash).await.expect("find").is_none(),
        "a refused rotation inserts nothing"
    );
    assert!(
        s.get(&a.id)
            .await
            .expect("get")
            .expect("kept")
            .is_live_at(t),
        "a refused rotation leaves the old token live"
    );
    // Without grace the count does not change: always allowed.
    s.rotate(&a.id, b.clone(), t, rules(t, Some(1)))
        .await
        .expect("a rotation without grace at the limit");
    // A token in grace counts against inserts.
    let o2 = owner("grace-insert");
    let x = record(&o2, "x", t);
    s.insert(x.clone(), rules(t, Some(2)))
        .await
        .expect("insert");
    s.rotate(&x.id, successor(&x), grace, rules(t, Some(2)))
        .await
        .expect("room for one in grace");
    assert!(
        matches!(
            s.insert(record(&o2, "y", t), rules(t, Some(2))).await,
            Err(StoreError::LimitReached)
        ),
        "a token in grace counts against the owner's limit"
    );
    // A per-kind cap counts the kind's tokens in grace (seats do not multiply).
    let o3 = owner("grace-kind");
    s.insert(record(&o3, "api", t), rules(t, None))
        .await
        .expect("insert");
    let mut seat = record(&o3, "seat", t);
    seat.kind = "lic".into();
    seat.extras_mut().bound_to = Some("machine-1".into());
    s.insert(seat.clone(), rules(t, Some(1)).per_kind())
        .await
        .expect("insert");
    assert!(
        matches!(
            s.rotate(
                &seat.id,
                successor(&seat),
                grace,
                rules(t, Some(1)).per_kind()
            )
            .await,
            Err(StoreError::LimitReached)
        ),
        "a seat at its kind's cap cannot be rotated with grace"
    );
}

pub(super) async fn concurrent_rotations_respect_the_limit(s: &Arc<dyn TokenStore>) {
    let t = now();
    let grace = t + Duration::from_secs(3600);
    let o = owner("race-rotate");
    let mut held = Vec::new();
    for i in 0..8 {
        let r = record(&o, &format!("held-{i}"), t);
        s.insert(r.clone(), rules(t, Some(12)))
            .await
            .expect("insert");
        held.push(r);
    }
    // 8 rotations with grace and 8 inserts race for the 4 free places.
    let mut tasks = Vec::new();
    for r in &held {
        let s = s.clone();
        let (old, new) = (r.id, successor(r));
        tasks.push(tokio::spawn(async move {
            s.rotate(&old, new, grace, rules(t, Some(12)))
                .await
                .map(|_| ())
        }));
    }
    for i in 0..8 {
        let s = s.clone();
        let r = record(&o, &format!("new-{i}"), t);
        tasks.push(tokio::spawn(async move {
            s.insert(r, rules(t, Some(12))).await
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => ok += 1,
            Err(StoreError::LimitReached) => limited += 1,
            Err(e) => panic!("unexpected error in the rotation race: {e:?}"),
        }
    }
    assert_eq!(
        (ok, limited, valid_count(s, &o, t).await),
        (4, 12, 12),
        "concurrent rotations with grace and inserts must never overshoot the limit"
    );
}
