//! The checks of the edit in place ([`TokenStore::update`]) and of the admin view
//! ([`TokenStore::list_tokens`]), run when the store implements them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{now, owner, record, rules};
use crate::identity::Permissions;
use crate::record::{Metadata, TokenStatus};
use crate::store::{StoreError, TokenId, TokenQuery, TokenStore, TokenUpdate};

/// Whether the store implements `update` and `list_tokens` (each probed with a call that
/// changes nothing).
pub(super) async fn probe(s: &Arc<dyn TokenStore>) -> (bool, bool) {
    let t = now();
    let update = s
        .update(&TokenId::random(), &TokenUpdate::new().with_name("x"), t)
        .await;
    assert!(
        matches!(
            update,
            Err(StoreError::NotFound | StoreError::Unsupported(_))
        ),
        "updating an unknown id answers NotFound (or Unsupported)"
    );
    let list = s
        .list_tokens(&TokenQuery::new(t, 1).with_owner(owner("probe")))
        .await;
    assert!(
        matches!(&list, Ok(v) if v.is_empty()) || matches!(list, Err(StoreError::Unsupported(_))),
        "listing an owner without tokens answers nothing (or Unsupported)"
    );
    (
        !matches!(update, Err(StoreError::Unsupported(_))),
        !matches!(list, Err(StoreError::Unsupported(_))),
    )
}

pub(super) async fn update_changes_what_it_names(s: &Arc<dyn TokenStore>) {
    let t = now();
    let o = owner("update");
    let mut r = record(&o, "ci", t);
    r.expires_at = Some(t + Duration::from_secs(3600));
    r.extras_mut().allowed_ips = vec!["10.0.0.0/8".parse().expect("valid")];
    r.last_used_at = Some(t);
    s.insert(r.clone(), rules(t, None)).await.expect("insert");
    let u = TokenUpdate::new()
        .with_name("ci-renamed «✓»")
        .with_description(Some("new text".into()))
        .with_expires_at(Some(t + Duration::from_secs(60)))
        .with_allowed_ips(vec![
            "10.1.0.0/16".parse().expect("valid"),
            "2001:db8::/48".parse().expect("valid"),
        ])
        .with_metadata(Metadata::from_json(r#"{"team":"ops","n":[1,2]}"#).expect("valid"))
        .with_permissions(Permissions::parse(["things:read"]).expect("valid"));
    let got = s.update(&r.id, &u, t).await.expect("update");
    let mut want = r.clone();
    u.apply(&mut want);
    assert_eq!(
        got, want,
        "update must return the record with the changes applied"
    );
    assert_eq!(
        s.get(&r.id).await.expect("get").expect("present"),
        want,
        "get must see the update"
    );
    assert_eq!(
        *s.find_by_hash(&r.hash)
            .await
            .expect("find")
            .expect("present"),
        want,
        "find_by_hash must see the update"
    );
    // Clearing, and fields left alone.
    let u = TokenUpdate::new()
        .with_description(None)
        .with_expires_at(None)
        .with_allowed_ips(Vec::new());
    let got = s.update(&r.id, &u, t).await.expect("update");
    u.apply(&mut want);
    assert_eq!(got, want, "None clears description and expiry");
    assert_eq!(got.extras().description, None);
    assert_eq!(got.expires_at, None);
    assert!(got.extras().allowed_ips.is_empty());
    assert_eq!(
        s.get(&r.id).await.expect("get").expect("present"),
        want,
        "the cleared fields read back cleared"
    );
}

pub(super) async fn update_needs_a_live_token(s: &Arc<dyn TokenStore>) {
    let t = now();
    let o = owner("update-live");
    let u = TokenUpdate::new().with_description(Some("x".into()));
    let revoked = record(&o, "revoked", t);
    s.insert(revoked.clone(), rules(t, None))
        .await
        .expect("insert");
    assert!(s.revoke(&revoked.id, t).await.expect("revoke"));
    assert!(
        matches!(
            s.update(&revoked.id, &u, t).await,
            Err(StoreError::NotFound)
        ),
        "a revoked token cannot be edited"
    );
    let mut expired = record(&o, "expired", t - Duration::from_secs(60));
    expired.expires_at = Some(t - Duration::from_secs(1));
    s.insert(expired.clone(), rules(t - Duration::from_secs(60), None))
        .await
        .expect("insert");
    assert!(
        matches!(
            s.update(&expired.id, &u, t).await,
            Err(StoreError::NotFound)
        ),
        "an expired token cannot be edited"
    );
    let old = record(&o, "rotated", t);
    s.insert(old.clone(), rules(t, None)).await.expect("insert");
    s.rotate(
        &old.id,
        record(&o, "rotated", t),
        t + Duration::from_secs(60),
        rules(t, None),
    )
    .await
    .expect("rotate");
    assert!(
        matches!(s.update(&old.id, &u, t).await, Err(StoreError::NotFound)),
        "a replaced token cannot be edited"
    );
    assert_eq!(
        s.get(&revoked.id)
            .await
            .expect("get")
            .expect("present")
            .extras()
            .description,
        revoked.extras().description,
        "a refused update changes nothing"
    );
}

pub(super) async fn renames_keep_names_unique(s: &Arc<dyn TokenStore>) {
    let t = now();
    let o = owner("rename");
    let a = record(&o, "a", t);
    let b = record(&o, "b", t);
    for r in [&a, &b] {
        s.insert(r.clone(), rules(t, None)).await.expect("insert");
    }
    assert!(
        matches!(
            s.update(&b.id, &TokenUpdate::new().with_name("a"), t).await,
            Err(StoreError::NameTaken)
        ),
        "a rename to another live token's name is refused"
    );
    s.update(&b.id, &TokenUpdate::new().with_name("b"), t)
        .await
        .expect("renaming a token to its own name is no change");
    s.insert(record(&owner("rename-other"), "a", t), rules(t, None))
        .await
        .expect("insert");
    s.update(&a.id, &TokenUpdate::new().with_name("c"), t)
        .await
        .expect("rename");
    s.insert(record(&o, "a", t), rules(t, None))
        .await
        .expect("the old name is free after a rename");
    assert!(
        matches!(
            s.insert(record(&o, "c", t), rules(t, None)).await,
            Err(StoreError::NameTaken)
        ),
        "the new name is held after a rename"
    );
    // Concurrent renames to one name: exactly one wins.
    let mut ids = Vec::new();
    for i in 0..8 {
        let r = record(&o, &format!("racer-{i}"), t);
        s.insert(r.clone(), rules(t, None)).await.expect("insert");
        ids.push(r.id);
    }
    let mut tasks = Vec::new();
    for id in ids {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.update(&id, &TokenUpdate::new().with_name("winner"), t)
                .await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => won += 1,
            Err(StoreError::NameTaken) => {}
            Err(e) => panic!("a concurrent rename failed: {e}"),
        }
    }
    assert_eq!(
        won, 1,
        "of concurrent renames to one name, exactly one wins"
    );
}

pub(super) async fn list_tokens_filters_and_pages(s: &Arc<dyn TokenStore>) {
    let t = now();
    let o = owner("admin-list");
    let q = || TokenQuery::new(t, 1000).with_owner(o.clone());
    let mut all = Vec::new();
    // Created a microsecond apart, and two at the same instant (the id orders them).
    for i in 0..7u64 {
        let at = t - Duration::from_secs(600) + Duration::from_micros(i.min(5));
        let mut r = record(&o, &format!("t{i}"), at);
        if i == 1 {
            r.kind = "rgw".into();
        }
        if i == 2 {
            r.expires_at = Some(t - Duration::from_secs(1));
        }
        if i == 3 {
            r.expires_at = Some(t + Duration::from_secs(60));
        }
        if i == 4 {
            r.last_used_at = Some(t - Duration::from_secs(10));
        }
        s.insert(r.clone(), rules(at, None)).await.expect("insert");
        all.push(r);
    }
    assert!(s.revoke(&all[5].id, t).await.expect("revoke"));
    let next = record(&o, "t6", t);
    s.rotate(
        &all[6].id,
        next.clone(),
        t + Duration::from_secs(60),
        rules(t, None),
    )
    .await
    .expect("rotate");
    all.push(next);
    let ids = |v: Vec<crate::store::TokenRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let mut expected: Vec<_> = all.iter().map(|r| (r.created_at, r.id)).collect();
    expected.sort();
    let expected: Vec<TokenId> = expected.into_iter().map(|(_, id)| id).collect();
    assert_eq!(
        ids(s.list_tokens(&q()).await.expect("list")),
        expected,
        "list_tokens answers the owner's records in (created_at, id) order, revoked ones included"
    );
    let with = |query: TokenQuery| async move { ids(s.list_tokens(&query).await.expect("list")) };
    assert_eq!(with(q().with_kind("rgw")).await, vec![all[1].id], "kind");
    assert_eq!(
        with(q().with_status(TokenStatus::Expired)).await,
        vec![all[2].id],
        "status expired"
    );
    assert_eq!(
        with(q().with_status(TokenStatus::Revoked)).await,
        vec![all[5].id],
        "status revoked"
    );
    assert_eq!(
        with(q().with_status(TokenStatus::Replaced)).await,
        vec![all[6].id],
        "status replaced"
    );
    assert_eq!(
        with(q().with_status(TokenStatus::Active)).await.len(),
        5,
        "status active: every other one"
    );
    assert_eq!(
        with(q().with_expiring_before(t + Duration::from_secs(30))).await,
        vec![all[2].id],
        "expiring_before is strict and skips tokens without expiry"
    );
    let mut idle = with(q().with_last_used_before(t - Duration::from_secs(5))).await;
    idle.sort();
    let mut want: Vec<TokenId> = all[..7].iter().map(|r| r.id).collect();
    want.sort();
    assert_eq!(
        idle, want,
        "last_used_before: last use, or creation when never used"
    );
    assert!(
        with(q().with_last_used_before(t - Duration::from_secs(11)))
            .await
            .iter()
            .all(|id| *id != all[4].id),
        "a token used after the cutoff is not idle"
    );
    // Paging two at a time visits every record once, in order, while records are added.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let mut query = q();
        query.limit = 2;
        if let Some((at, id)) = after {
            query = query.with_after(at, id);
        }
        let page = s.list_tokens(&query).await.expect("list");
        assert!(page.len() <= 2, "limit");
        let Some(last) = page.last() else { break };
        after = Some((last.created_at, last.id));
        seen.extend(page.iter().map(|r| r.id));
        // A token added while paging, later than any: seen once at the end.
        if seen.len() == 2 {
            let late = record(&o, "late", t + Duration::from_secs(1));
            s.insert(late.clone(), rules(t, None))
                .await
                .expect("insert");
            all.push(late);
        }
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no record twice");
    assert_eq!(seen.len(), all.len(), "every record once");
    // Across owners: the other owner's record is listed too.
    let other = record(&owner("admin-list-other"), "x", t);
    s.insert(other.clone(), rules(t, None))
        .await
        .expect("insert");
    let mut query = TokenQuery::new(t, 1000);
    query = query.with_after(t - Duration::from_micros(1), TokenId(uuid::Uuid::max()));
    let found = s.list_tokens(&query).await.expect("list");
    assert!(
        found.iter().any(|r| r.id == other.id),
        "without an owner, every owner's records are listed"
    );
    assert!(
        found
            .windows(2)
            .all(|w| (w[0].created_at, w[0].id) < (w[1].created_at, w[1].id)),
        "in (created_at, id) order"
    );
}
