//! The conformance suite every [`TokenStore`] should pass (feature `test-util`).
//!
//! One call checks every guarantee written on the trait, including the race of 200
//! concurrent inserts against a limit of 100. Each check uses owners with a random suffix,
//! so the suite can share a database with other tests. Run it from a multi-threaded Tokio
//! test:
//!
//! ```
//! # #[cfg(feature = "test-util")]
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! keygate::store::conformance::run(keygate::MemoryStore::new()).await;
//! # });
//! ```
//!
//! It panics with a message naming the broken guarantee.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::{InsertRules, ReleaseOutcome, StoreError, TokenId, TokenRecord, TokenStore};
use crate::identity::Permissions;
use crate::token::TokenKind;

/// Runs every check against `store`.
///
/// # Panics
///
/// On the first broken guarantee, with a message naming it.
pub async fn run<S: TokenStore>(store: S) {
    let store: Arc<dyn TokenStore> = Arc::new(store);
    round_trip(&store).await;
    unknown_is_none(&store).await;
    duplicates_are_refused(&store).await;
    names_are_unique_among_live_tokens(&store).await;
    limits_count_live_tokens(&store).await;
    concurrent_inserts_respect_the_limit(&store).await;
    concurrent_inserts_respect_names(&store).await;
    revoke_is_terminal(&store).await;
    rotate_is_atomic(&store).await;
    rotation_ends_the_earlier_grace(&store).await;
    tokens_in_grace_count_against_the_limit(&store).await;
    concurrent_rotations_respect_the_limit(&store).await;
    record_use_moves_forward(&store).await;
    purge_removes_dead_records(&store).await;
    list_is_per_owner_oldest_first(&store).await;
    bind_sets_once(&store).await;
    concurrent_first_uses_bind_one(&store).await;
    release_respects_its_interval(&store).await;
    inactive_tokens_expire(&store).await;
}

/// Now, at microsecond precision (what SQL backends keep).
fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .expect("a truncated nanosecond is valid")
}

fn owner(tag: &str) -> String {
    format!("{tag}-{}@conformance.test", TokenId::random())
}

/// A valid record for `owner` named `name`, created at `at`.
#[must_use]
pub fn record(owner: &str, name: &str, at: OffsetDateTime) -> TokenRecord {
    let token = TokenKind::pat().generate();
    TokenRecord {
        id: TokenId::random(),
        hash: token.hash(),
        kind: "pat".into(),
        owner: owner.into(),
        name: name.into(),
        description: Some("conformance «test» ✓".into()),
        role: Some("viewer".into()),
        permissions: Permissions::parse(["things:read", "tokens:*"]).expect("valid"),
        hint: token.hint(),
        created_by: "admin@conformance.test".into(),
        created_at: at,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
        replaced_by: None,
        allowed_ips: Vec::new(),
        rate_limit: None,
        bound_to: None,
        bound_at: None,
        released_at: None,
    }
}

fn rules(at: OffsetDateTime, max: Option<u32>) -> InsertRules {
    InsertRules::new(at, max)
}

async fn round_trip(s: &Arc<dyn TokenStore>) {
    let t = now();
    let mut r = record(&owner("round-trip"), "ci", t);
    r.expires_at = Some(t + Duration::from_secs(3600));
    r.last_used_at = Some(t);
    r.allowed_ips = vec![
        "10.0.0.0/8".parse().expect("valid"),
        "192.0.2.7/32".parse().expect("valid"),
        "2001:db8::/32".parse().expect("valid"),
    ];
    r.rate_limit = Some(42);
    r.bound_to = Some("machine «7» ✓".into());
    r.bound_at = Some(t - Duration::from_secs(60));
    r.released_at = Some(t - Duration::from_secs(7200));
    s.insert(r.clone(), rules(t, None)).await.expect("insert");
    let found = s
        .find_by_hash(&r.hash)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(*found, r, "find_by_hash must return the record as inserted");
    let got = s.get(&r.id).await.expect("get").expect("present");
    assert_eq!(got, r, "get must return the record as inserted");
    let mut bare = record(&owner("round-trip"), "bare", t);
    bare.description = None;
    bare.role = None;
    bare.permissions = Permissions::none();
    s.insert(bare.clone(), rules(t, None))
        .await
        .expect("insert");
    assert_eq!(
        s.get(&bare.id).await.expect("get").expect("present"),
        bare,
        "optional fields must round-trip as None"
    );
}

async fn unknown_is_none(s: &Arc<dyn TokenStore>) {
    let r = record(&owner("unknown"), "x", now());
    assert!(s.find_by_hash(&r.hash).await.expect("find").is_none());
    assert!(s.get(&r.id).await.expect("get").is_none());
    assert!(!s.revoke(&r.id, now()).await.expect("revoke unknown"));
    assert!(
        s.list_by_owner(&r.owner).await.expect("list").is_empty(),
        "an owner without tokens lists nothing"
    );
}

async fn duplicates_are_refused(s: &Arc<dyn TokenStore>) {
    let t = now();
    let o = owner("dup");
    let a = record(&o, "a", t);
    s.insert(a.clone(), rules(t, None)).await.expect("insert");
    let mut same_id = record(&o, "b", t);
    same_id.id = a.id;
    assert!(
        matches!(
            s.insert(same_id, rules(t, None)).await,
            Err(StoreError::Duplicate)
        ),
        "a second record with the same id must be refused as Duplicate"
    );
    let mut same_hash = record(&o, "c", t);
    same_hash.hash = a.hash;
    assert!(
        matches!(
            s.insert(same_hash, rules(t, None)).await,
            Err(StoreError::Duplicate)
        ),
        "a second record with the same hash must be refused as Duplicate"
    );
}

async fn names_are_unique_among_live_tokens(s: &Arc<dyn TokenStore>) {
    let t = now();
    let o = owner("names");
    let first = record(&o, "deploy", t);
    s.insert(first.clone(), rules(t, None))
        .await
        .expect("insert");
    assert!(
        matches!(
            s.insert(record(&o, "deploy", t), rules(t, None)).await,
            Err(StoreError::NameTaken)
        ),
        "a live token's name must not be taken twice by one owner"
    );
    s.insert(record(&owner("names-other"), "deploy", t), rules(t, None))
        .await
        .expect("another owner may use the same name");
    // Revoked tokens hold no name.
    assert!(s.revoke(&first.id, t).await.expect("revoke"));
    s.insert(record(&o, "deploy", t), rules(t, None))
        .await
        .expect("a revoked token's name is free again");
    // Expired tokens hold no name.
    let mut old = record(&o, "nightly", t - Duration::from_secs(7200));
    old.expires_at = Some(t - Duration::from_secs(1));
    s.insert(old, rules(t - Duration::from_secs(7200), None))
        .await
        .expect("insert");
    s.insert(record(&o, "nightly", t), rules(t, None))
        .await
        .expect("an expired token's name is free again");
}

async fn limits_count_live_tokens(s: &Arc<dyn TokenStore>) {
    let t = now();
    let o = owner("limit");
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = record(&o, &format!("t{i}"), t);
        ids.push(r.id);
        s.insert(r, rules(t, Some(3)))
            .await
            .expect("under the limit");
    }
    assert!(
        matches!(
            s.insert(record(&o, "t3", t), rules(t, Some(3))).await,
            Err(StoreError::LimitReached)
        ),
        "the 4th live token must be refused with a limit of 3"
    );
    s.insert(record(&owner("limit-other"), "t3", t), rules(t, Some(3)))
        .await
        .expect("limits are per owner");
    assert!(s.revoke(&ids[0], t).await.expect("revoke"));
    s.insert(record(&o, "t3", t), rules(t, Some(3)))
        .await
        .expect("revoked tokens do not count");
    // An expired token does not count either.
    let later = t + Duration::from_secs(10);
    let o2 = owner("limit-expiry");
    let mut short = record(&o2, "short", t);
    short.expires_at = Some(t + Duration::from_secs(5));
    s.insert(short, rules(t, Some(1))).await.expect("insert");
    s.insert(record(&o2, "next", later), rules(later, Some(1)))
        .await
        .expect("expired tokens do not count");
    // A per-kind cap counts only that kind.
    let o3 = owner("limit-kind");
    s.insert(record(&o3, "api", t), rules(t, None))
        .await
        .expect("insert");
    let mut lic = record(&o3, "seat-1", t);
    lic.kind = "lic".into();
    s.insert(lic, rules(t, Some(1)).per_kind())
        .await
        .expect("a per-kind cap ignores other kinds");
    let mut lic2 = record(&o3, "seat-2", t);
    lic2.kind = "lic".into();
    assert!(
        matches!(
            s.insert(lic2, rules(t, Some(1)).per_kind()).await,
            Err(StoreError::LimitReached)
        ),
        "a per-kind cap counts that kind"
    );
}

async fn concurrent_inserts_respect_the_limit(s: &Arc<dyn TokenStore>) {
    let t = now();
    let o = owner("race");
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = s.clone();
            let r = record(&o, &format!("race-{i}"), t);
            tokio::spawn(async move { s.insert(r, rules(t, Some(100))).await })
        })
        .collect();
    let (mut ok, mut limited) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => ok += 1,
            Err(StoreError::LimitReached) => limited += 1,
            Err(e) => panic!("unexpected error in the insert race: {e:?}"),
        }
    }
    let live = s.list_by_owner(&o).await.expect("list").len();
    assert_eq!(
        (ok, limited, live),
        (100, 100, 100),
        "200 concurrent inserts against a limit of 100 must leave exactly 100"
    );
}

async fn concurrent_inserts_respect_names(s: &Arc<dyn TokenStore>) {
    let t = now();
    let o = owner("race-names");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let s = s.clone();
            let r = record(&o, "same", t);
            tokio::spawn(async move { s.insert(r, rules(t, None)).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => ok += 1,
            Err(StoreError::NameTaken) => {}
            Err(e) => panic!("unexpected error in the name race: {e:?}"),
        }
    }
    assert_eq!(
        ok, 1,
        "50 concurrent inserts of one name must leave exactly one"
    );
}

async fn revoke_is_terminal(s: &Arc<dyn TokenStore>) {
    let t = now();
    let r = record(&owner("revoke"), "x", t);
    s.insert(r.clone(), rules(t, None)).await.expect("insert");
    assert!(s.revoke(&r.id, t).await.expect("revoke"), "first revoke");
    assert!(
        !s.revoke(&r.id, t + Duration::from_secs(1))
            .await
            .expect("revoke"),
        "a second revoke reports false"
    );
    let found = s.find_by_hash(&r.hash).await.expect("find").expect("kept");
    assert_eq!(
        found.revoked_at,
        Some(t),
        "the revocation is visible at once and keeps the first time"
    );
    assert!(!found.is_valid_at(t));
}

async fn rotate_is_atomic(s: &Arc<dyn TokenStore>) {
    let t = now();
    let o = owner("rotate");
    let mut old = record(&o, "deploy", t);
    old.expires_at = Some(t + Duration::from_secs(3600));
    s.insert(old.clone(), rules(t, Some(1)))
        .await
        .expect("insert");
    let new = TokenRecord {
        id: TokenId::random(),
        hash: TokenKind::pat().generate().hash(),
        ..old.clone()
    };
    let grace_end = t + Duration::from_secs(60);
    let out = s
        .rotate(&old.id, new.clone(), grace_end, rules(t, Some(2)))
        .await
        .expect("rotate with grace and room under the limit");
    assert!(out.ended.is_empty(), "nothing in grace before");
    let old_now = s.get(&old.id).await.expect("get").expect("kept");
    assert_eq!(old_now.replaced_by, Some(new.id));
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
    let again = TokenRecord {
        id: TokenId::random(),
        hash: TokenKind::pat().generate().hash(),
        ..old.clone()
    };
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
    let next = TokenRecord {
        id: TokenId::random(),
        hash: TokenKind::pat().generate().hash(),
        ..short.clone()
    };
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
    TokenRecord {
        id: TokenId::random(),
        hash: TokenKind::pat().generate().hash(),
        replaced_by: None,
        ..r.clone()
    }
}

async fn valid_count(s: &Arc<dyn TokenStore>, owner: &str, at: OffsetDateTime) -> usize {
    s.list_by_owner(owner)
        .await
        .expect("list")
        .iter()
        .filter(|r| r.is_valid_at(at))
        .count()
}

async fn rotation_ends_the_earlier_grace(s: &Arc<dyn TokenStore>) {
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
    assert_eq!(b_now.replaced_by, Some(c.id));
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

async fn tokens_in_grace_count_against_the_limit(s: &Arc<dyn TokenStore>) {
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
    seat.bound_to = Some("machine-1".into());
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

async fn concurrent_rotations_respect_the_limit(s: &Arc<dyn TokenStore>) {
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

async fn record_use_moves_forward(s: &Arc<dyn TokenStore>) {
    let t = now();
    let a = record(&owner("use"), "a", t);
    let b = record(&owner("use"), "b", t);
    s.insert(a.clone(), rules(t, None)).await.expect("insert");
    s.insert(b.clone(), rules(t, None)).await.expect("insert");
    let later = t + Duration::from_secs(30);
    s.record_use(&[(a.id, later), (b.id, t), (TokenId::random(), t)])
        .await
        .expect("record_use ignores unknown ids");
    s.record_use(&[(a.id, t)]).await.expect("record_use");
    assert_eq!(
        s.get(&a.id).await.expect("get").expect("a").last_used_at,
        Some(later),
        "last_used_at only moves forward"
    );
    assert_eq!(
        s.get(&b.id).await.expect("get").expect("b").last_used_at,
        Some(t)
    );
    s.record_use(&[]).await.expect("an empty batch is fine");
}

async fn purge_removes_dead_records(s: &Arc<dyn TokenStore>) {
    let t = now();
    let o = owner("purge");
    let mut expired = record(&o, "expired", t - Duration::from_secs(100));
    expired.expires_at = Some(t - Duration::from_secs(1));
    let revoked = record(&o, "revoked", t);
    let mut future = record(&o, "future", t);
    future.expires_at = Some(t + Duration::from_secs(3600));
    let forever = record(&o, "forever", t);
    for r in [&expired, &revoked, &future, &forever] {
        s.insert((*r).clone(), rules(t - Duration::from_secs(100), None))
            .await
            .expect("insert");
    }
    assert!(s.revoke(&revoked.id, t).await.expect("revoke"));
    let n = s.purge_expired(t).await.expect("purge");
    assert!(n >= 2, "purge must report the records it removed (got {n})");
    for gone in [&expired, &revoked] {
        assert!(
            s.find_by_hash(&gone.hash).await.expect("find").is_none(),
            "{} must be purged",
            gone.name
        );
        assert!(s.get(&gone.id).await.expect("get").is_none());
    }
    let names: Vec<String> = s
        .list_by_owner(&o)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names.len(), 2, "purge keeps live records: {names:?}");
    assert!(names.contains(&"future".to_owned()) && names.contains(&"forever".to_owned()));
}

async fn list_is_per_owner_oldest_first(s: &Arc<dyn TokenStore>) {
    let t = now();
    let o = owner("list");
    for (i, name) in ["c", "a", "b"].iter().enumerate() {
        let r = record(&o, name, t + Duration::from_secs(i as u64));
        s.insert(r, rules(t, None)).await.expect("insert");
    }
    s.insert(record(&owner("list-other"), "z", t), rules(t, None))
        .await
        .expect("insert");
    let names: Vec<String> = s
        .list_by_owner(&o)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["c", "a", "b"], "oldest first, only this owner's");
}

async fn bind_sets_once(s: &Arc<dyn TokenStore>) {
    let t = now();
    let r = record(&owner("bind"), "seat", t);
    s.insert(r.clone(), rules(t, None)).await.expect("insert");
    assert_eq!(
        s.bind(&r.id, "machine-a", t)
            .await
            .expect("bind")
            .as_deref(),
        Some("machine-a"),
        "the first bind binds"
    );
    let later = t + Duration::from_secs(5);
    assert_eq!(
        s.bind(&r.id, "machine-b", later)
            .await
            .expect("bind")
            .as_deref(),
        Some("machine-a"),
        "a bound token stays bound and reports its binding"
    );
    assert_eq!(
        s.bind(&r.id, "machine-a", later)
            .await
            .expect("bind")
            .as_deref(),
        Some("machine-a")
    );
    let got = s.get(&r.id).await.expect("get").expect("present");
    assert_eq!(got.bound_to.as_deref(), Some("machine-a"));
    assert_eq!(
        got.bound_at,
        Some(t),
        "bound_at is the time of the first bind"
    );
    let found = s
        .find_by_hash(&r.hash)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(
        found.bound_to.as_deref(),
        Some("machine-a"),
        "lookups see the binding"
    );
    assert!(
        s.bind(&TokenId::random(), "machine-a", t)
            .await
            .expect("bind unknown")
            .is_none(),
        "binding an unknown id answers None"
    );
}

async fn concurrent_first_uses_bind_one(s: &Arc<dyn TokenStore>) {
    let t = now();
    let r = record(&owner("bind-race"), "seat", t);
    s.insert(r.clone(), rules(t, None)).await.expect("insert");
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            let id = r.id;
            tokio::spawn(async move {
                let fp = format!("machine-{i}");
                let bound = s.bind(&id, &fp, t).await;
                (fp, bound)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut answers = std::collections::HashSet::new();
    for task in tasks {
        let (fp, bound) = task.await.expect("task");
        let bound = bound.expect("bind in the race").expect("the record exists");
        if bound == fp {
            winners.push(fp);
        }
        answers.insert(bound);
    }
    assert_eq!(
        winners.len(),
        1,
        "20 concurrent first uses with different fingerprints must bind exactly one"
    );
    assert_eq!(answers.len(), 1, "every caller must learn the same binding");
    let got = s.get(&r.id).await.expect("get").expect("present");
    assert_eq!(got.bound_to.as_ref(), Some(&winners[0]));
}

async fn release_respects_its_interval(s: &Arc<dyn TokenStore>) {
    let t = now();
    let day = Duration::from_secs(24 * 3600);
    let r = record(&owner("release"), "seat", t);
    s.insert(r.clone(), rules(t, None)).await.expect("insert");
    assert_eq!(
        s.release(&r.id, t, day).await.expect("release"),
        ReleaseOutcome::NotBound,
        "an unbound token has nothing to release"
    );
    s.bind(&r.id, "machine-a", t).await.expect("bind");
    assert_eq!(
        s.release(&r.id, t, day).await.expect("release"),
        ReleaseOutcome::Released
    );
    let got = s.get(&r.id).await.expect("get").expect("present");
    assert_eq!(
        (got.bound_to, got.bound_at, got.released_at),
        (None, None, Some(t)),
        "a release clears the binding and records when"
    );
    let t2 = t + Duration::from_secs(60);
    assert_eq!(
        s.bind(&r.id, "machine-b", t2)
            .await
            .expect("bind")
            .as_deref(),
        Some("machine-b"),
        "after a release the next first use binds"
    );
    let t3 = t + Duration::from_secs(3600);
    assert_eq!(
        s.release(&r.id, t3, day).await.expect("release"),
        ReleaseOutcome::TooSoon {
            next_allowed_at: t + day
        },
        "a second release within the interval is refused with the next allowed time"
    );
    assert_eq!(
        s.get(&r.id)
            .await
            .expect("get")
            .expect("present")
            .bound_to
            .as_deref(),
        Some("machine-b"),
        "a refused release changes nothing"
    );
    assert_eq!(
        s.release(&r.id, t + day, day).await.expect("release"),
        ReleaseOutcome::Released,
        "a release is allowed again once the interval is over"
    );
    assert!(
        matches!(
            s.release(&TokenId::random(), t, day).await,
            Err(StoreError::NotFound)
        ),
        "releasing an unknown id is NotFound"
    );
}

async fn inactive_tokens_expire(s: &Arc<dyn TokenStore>) {
    let t = now();
    let weeks = Duration::from_secs(14 * 24 * 3600);
    let long_ago = t - weeks - Duration::from_secs(3600);
    let cutoff = t - weeks;
    let o = owner("inactive");
    let idle = record(&o, "idle", long_ago);
    let mut used = record(&o, "used", long_ago);
    used.last_used_at = Some(t - Duration::from_secs(60));
    let fresh = record(&o, "fresh", t - Duration::from_secs(60));
    let mut seat = record(&o, "seat", long_ago);
    seat.kind = "seat".into();
    seat.bound_to = Some("machine-a".into());
    seat.bound_at = Some(long_ago);
    seat.released_at = Some(long_ago);
    let mut unbound_seat = record(&o, "unbound-seat", long_ago);
    unbound_seat.kind = "seat".into();
    let mut expired = record(&o, "expired", long_ago);
    expired.expires_at = Some(t - Duration::from_secs(1));
    for r in [&idle, &used, &fresh, &seat, &unbound_seat, &expired] {
        s.insert((*r).clone(), rules(long_ago, None))
            .await
            .expect("insert");
    }
    let out = s
        .expire_inactive(cutoff, t, &["seat".to_owned()])
        .await
        .expect("expire_inactive");
    assert!(
        out.revoked.contains(&idle.id),
        "a token silent since before the cutoff is revoked"
    );
    assert!(
        out.released.contains(&seat.id),
        "an idle token of a release kind loses its binding"
    );
    for kept in [&used, &fresh, &seat, &unbound_seat, &expired] {
        assert!(
            !out.revoked.contains(&kept.id),
            "{} must not be revoked",
            kept.name
        );
    }
    assert!(!out.released.contains(&unbound_seat.id));
    let idle_now = s.get(&idle.id).await.expect("get").expect("present");
    assert_eq!(idle_now.revoked_at, Some(t), "revoked at `now`");
    let seat_now = s.get(&seat.id).await.expect("get").expect("present");
    assert_eq!(
        (seat_now.revoked_at, seat_now.bound_to, seat_now.released_at),
        (None, None, Some(long_ago)),
        "an automatic release keeps the token and the time of the last manual release"
    );
    for kept in [&used, &fresh, &unbound_seat] {
        let r = s.get(&kept.id).await.expect("get").expect("present");
        assert!(r.revoked_at.is_none(), "{} must stay valid", kept.name);
    }
    let again = s
        .expire_inactive(cutoff, t, &["seat".to_owned()])
        .await
        .expect("expire_inactive");
    assert!(
        !again.revoked.contains(&idle.id) && !again.released.contains(&seat.id),
        "a second pass changes nothing more"
    );
}
