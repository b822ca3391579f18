//! The checks of [`TokenStore::rehash`]: a compare-and-set of a record's digest, after which
//! the record is found, revoked, listed and purged under its new digest only.

use std::sync::Arc;
use std::time::Duration;

use super::{now, owner, record, rules};
use crate::store::{StoreError, TokenId, TokenStore};
use crate::token::TokenHash;

/// Whether the store implements `rehash` (an unknown id answers `false`), or answers
/// [`StoreError::Unsupported`].
pub(super) async fn probe(s: &Arc<dyn TokenStore>) -> bool {
    let answer = s
        .rehash(&TokenId::random(), &digest("a"), &digest("b"))
        .await;
    match answer {
        Ok(false) => true,
        Err(StoreError::Unsupported(_)) => false,
        other => panic!("rehash of an unknown id must answer false (or Unsupported): {other:?}"),
    }
}

fn digest(tag: &str) -> TokenHash {
    TokenHash::of(&format!("{tag}-{}", TokenId::random()))
}

pub(super) async fn rehash_moves_the_digest_once(s: &Arc<dyn TokenStore>) {
    let t = now();
    let o = owner("rehash");
    let r = record(&o, "ci", t);
    s.insert(r.clone(), rules(t, None)).await.expect("insert");
    let to = digest("to");
    // Looked up first, as the verification does with every candidate digest: a cache in
    // front of the store must not keep answering "unknown" for it afterwards.
    assert!(s.find_by_hash(&to).await.expect("find").is_none());
    assert!(
        s.rehash(&r.id, &r.hash, &to).await.expect("rehash"),
        "rehash from the stored digest must move it"
    );
    let found = s.find_by_hash(&to).await.expect("find").expect("present");
    let mut expected = r.clone();
    expected.hash = to;
    assert_eq!(*found, expected, "only the digest changes");
    assert!(
        s.find_by_hash(&r.hash).await.expect("find").is_none(),
        "the old digest must find nothing after a rehash"
    );
    assert_eq!(s.get(&r.id).await.expect("get").expect("present").hash, to);
    let listed = s.list_by_owner(&o).await.expect("list");
    assert_eq!(listed.len(), 1, "the owner still lists the record once");
    assert_eq!(listed[0].hash, to);
    // A compare-and-set: from a digest that is no longer the stored one, nothing moves.
    assert!(
        !s.rehash(&r.id, &r.hash, &digest("again"))
            .await
            .expect("rehash"),
        "a rehash from a stale digest must change nothing"
    );
    assert_eq!(s.get(&r.id).await.expect("get").expect("present").hash, to);
    // Revoking and purging work under the new digest.
    assert!(s.revoke(&r.id, t).await.expect("revoke"));
    let found = s.find_by_hash(&to).await.expect("find").expect("present");
    assert!(
        found.extras().revoked_at.is_some(),
        "revocation after a rehash"
    );
    s.purge_expired(t + Duration::from_secs(1))
        .await
        .expect("purge");
    // (Through `get`: a cache may keep answering a purged record, refused anyway, by its
    // digest until its entry ends.)
    assert!(
        s.get(&r.id).await.expect("get").is_none(),
        "a revoked record is purged under its new digest"
    );
}

pub(super) async fn rehash_refuses_a_taken_digest(s: &Arc<dyn TokenStore>) {
    let t = now();
    let o = owner("rehash-taken");
    let a = record(&o, "a", t);
    let b = record(&o, "b", t);
    s.insert(a.clone(), rules(t, None)).await.expect("insert");
    s.insert(b.clone(), rules(t, None)).await.expect("insert");
    assert!(
        matches!(
            s.rehash(&a.id, &a.hash, &b.hash).await,
            Err(StoreError::Duplicate)
        ),
        "a rehash to another record's digest must be refused as Duplicate"
    );
    assert_eq!(
        s.find_by_hash(&a.hash).await.expect("find").expect("a").id,
        a.id
    );
    assert_eq!(
        s.find_by_hash(&b.hash).await.expect("find").expect("b").id,
        b.id
    );
}

pub(super) async fn concurrent_rehashes_move_once(s: &Arc<dyn TokenStore>) {
    let t = now();
    let r = record(&owner("rehash-race"), "ci", t);
    s.insert(r.clone(), rules(t, None)).await.expect("insert");
    let targets: Vec<TokenHash> = (0..8).map(|i| digest(&format!("race{i}"))).collect();
    let mut tasks = Vec::new();
    for to in &targets {
        let (s, id, from, to) = (Arc::clone(s), r.id, r.hash, *to);
        tasks.push(tokio::spawn(async move { s.rehash(&id, &from, &to).await }));
    }
    let mut moved = 0;
    for task in tasks {
        if task.await.expect("task").expect("rehash") {
            moved += 1;
        }
    }
    assert_eq!(
        moved, 1,
        "of concurrent rehashes from one digest, exactly one wins"
    );
    let now_hash = s.get(&r.id).await.expect("get").expect("present").hash;
    assert!(targets.contains(&now_hash));
    for to in &targets {
        let found = s.find_by_hash(to).await.expect("find");
        assert_eq!(
            found.is_some(),
            *to == now_hash,
            "one digest finds the record"
        );
    }
}
