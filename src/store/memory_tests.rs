//! Unit tests of `MemoryStore`: its maps stay consistent and records stay compact.

use std::time::Duration;

use super::*;
use crate::store::conformance::record;

/// Every record is held once: the digest map and the id index point at the same allocation,
/// and the owner lists name exactly the records held.
fn assert_consistent(store: &MemoryStore) {
    let index = store.index();
    let mut in_map = 0;
    for (hash, r) in store.inner.by_hash.pin().iter() {
        in_map += 1;
        assert_eq!(hash, &r.hash);
        let by_id = index
            .by_id
            .get(&r.id)
            .expect("digest map record in the id index");
        assert!(Arc::ptr_eq(r, &by_id.0), "one allocation per record");
    }
    assert_eq!(in_map, index.by_id.len());
    let listed: usize = index.by_owner.values().map(Vec::len).sum();
    assert_eq!(listed, index.by_id.len());
    for (owner, ids) in &index.by_owner {
        assert!(!ids.is_empty());
        for id in ids {
            assert_eq!(&index.by_id.get(id).expect("listed id held").0.owner, owner);
        }
    }
}

#[tokio::test]
async fn every_write_keeps_one_copy_of_each_record() {
    let store = MemoryStore::new();
    let t = OffsetDateTime::now_utc();
    let rules = InsertRules::new(t, None);
    let a = record("alice", "a", t);
    let b = record("alice", "b", t);
    let c = record("bob", "c", t);
    for r in [&a, &b, &c] {
        store.insert(r.clone(), rules).await.expect("insert");
    }
    assert!(matches!(
        store.insert_unchecked(a.clone()),
        Err(StoreError::Duplicate)
    ));
    assert_consistent(&store);

    store.record_use(&[(a.id, t)]).await.expect("use");
    assert!(store.revoke(&c.id, t).await.expect("revoke"));
    assert_eq!(
        store.bind(&b.id, "m1", t).await.expect("bind").as_deref(),
        Some("m1")
    );
    let next = record("alice", "b", t);
    store
        .rotate(&b.id, next.clone(), t, rules)
        .await
        .expect("rotate");
    assert_consistent(&store);
    let seen = store.find_by_hash_now(&a.hash).expect("sync").expect("ok");
    assert_eq!(seen.expect("held").last_used_at, Some(t));
    let seen = store.find_by_hash(&b.hash).await.expect("find");
    assert_eq!(seen.expect("held").extras().replaced_by, Some(next.id));

    let out = store
        .expire_inactive(
            t + Duration::from_secs(10),
            t + Duration::from_secs(10),
            &["pat".to_owned()],
            &[],
        )
        .await
        .expect("expire");
    assert_eq!(out.revoked.len(), 2, "a and next; b expired, c revoked");
    assert_consistent(&store);

    let purged = store
        .purge_expired(t + Duration::from_secs(10))
        .await
        .expect("purge");
    assert_eq!(purged, 4);
    assert!(store.is_empty());
    assert_consistent(&store);
    assert!(store.index().by_owner.is_empty());
}

#[tokio::test]
async fn records_stay_findable_and_unknown_digests_missing_across_resizes() {
    // Enough records for the digest map to double several times, kept at most half
    // full by the inserts; reads and misses are checked after every doubling size.
    let store = MemoryStore::new();
    let t = OffsetDateTime::now_utc();
    let mut held = Vec::new();
    for i in 0..3_000 {
        let r = record(&format!("owner-{}", i % 7), &format!("t{i}"), t);
        store.insert_unchecked(r.clone()).expect("insert");
        held.push(r);
        if (i + 1usize).is_power_of_two() {
            for r in &held {
                let found = store.record(&r.hash).expect("held record found");
                assert_eq!(found.id, r.id);
            }
            let unknown = record("nobody", "unknown", t);
            assert!(store.record(&unknown.hash).is_none());
        }
    }
    assert_eq!(store.len(), 3_000);
    assert_consistent(&store);
}

#[test]
fn records_share_one_copy_of_each_owner_creator_and_kind() {
    let store = MemoryStore::new();
    let t = OffsetDateTime::now_utc();
    // Each record is built from strings of its own; the store keeps one of each value.
    let a = record(&String::from("alice"), "a", t).with_created_by(String::from("alice"));
    let b = record(&String::from("alice"), "b", t).with_created_by(String::from("alice"));
    let c = record(&String::from("carol"), "c", t).with_created_by(String::from("alice"));
    assert!(!SharedStr::ptr_eq(&a.owner, &b.owner));
    for r in [&a, &b, &c] {
        store.insert_unchecked(r.clone()).expect("insert");
    }
    let [a, b, c] = [&a, &b, &c].map(|r| store.record(&r.hash).expect("held"));
    assert!(SharedStr::ptr_eq(&a.owner, &b.owner));
    assert!(SharedStr::ptr_eq(&a.owner, &a.created_by));
    assert!(SharedStr::ptr_eq(&a.owner, &c.created_by));
    assert!(SharedStr::ptr_eq(&a.kind, &c.kind));
    assert_eq!(
        (a.owner.as_str(), c.owner.as_str(), a.kind.as_str()),
        ("alice", "carol", "pat")
    );
    assert_consistent(&store);
}

#[test]
fn a_record_is_three_cache_lines() {
    assert_eq!(std::mem::align_of::<TokenRecord>(), 64);
    assert_eq!(std::mem::size_of::<TokenRecord>(), 192);
}
