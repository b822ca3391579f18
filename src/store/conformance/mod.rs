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
//!
//! [`run`] is [`run_core`] and the checks of the optional methods: those with a default
//! body ([`record_usage`](TokenStore::record_usage), [`bind`](TokenStore::bind),
//! [`release`](TokenStore::release), [`expire_inactive`](TokenStore::expire_inactive),
//! [`claim_expiry_warnings`](TokenStore::claim_expiry_warnings),
//! [`update`](TokenStore::update), [`list_tokens`](TokenStore::list_tokens),
//! [`rehash`](TokenStore::rehash)). Each is checked when the store implements it; a store
//! may answer [`StoreError::Unsupported`] instead, and [`run`] then checks that it fails
//! closed where that matters: a token of a binding kind is refused with 503
//! `store_unavailable`.
//!
//! [`run_core`] checks the eight required methods only, and never calls an optional one:
//! a new store can pass it before it implements any of them. What a store that implements
//! none of them gives up: tokens of binding kinds are refused with 503
//! `store_unavailable`; configured inactivity expiry never revokes (each purge pass reports
//! the error); expiry warnings are off; edits and the admin listing across owners fail
//! with [`StoreError::Unsupported`] (503 in the management API); with a pepper, tokens
//! found under a previous one keep their old digest (each flush reports it); and the last
//! use's client address and `User-Agent` are not kept (its time is).
//!
//! A store that keeps the last use's client details (implements
//! [`record_usage`](TokenStore::record_usage)) should pass [`usage_details_are_kept`] too:
//! [`run`] also accepts the trait's default, which keeps the times only.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::{InsertRules, StoreError, TokenId, TokenRecord, TokenStore};

mod admin;
mod expiry;
mod optional;
mod rehash;
mod rotation;
mod usage;
use crate::identity::Permissions;
use crate::token::TokenKind;

/// Runs every check against `store`: [`run_core`], then the checks of the optional methods
/// (see the [module](self)'s documentation).
///
/// # Panics
///
/// On the first broken guarantee, with a message naming it.
pub async fn run<S: TokenStore>(store: S) {
    let store: Arc<dyn TokenStore> = Arc::new(store);
    core(&store).await;
    usage::record_usage_moves_details_with_the_time(&store, usage::Details::Optional).await;
    // The optional methods: checked when implemented; a store may answer `Unsupported`
    // instead, and must then fail closed.
    let supported = optional::probe(&store).await;
    if supported.bind {
        optional::bind_sets_once(&store).await;
        optional::concurrent_first_uses_bind_one(&store).await;
        if supported.release {
            optional::release_respects_its_interval(&store).await;
        }
    } else {
        optional::unsupported_bindings_fail_closed(&store).await;
    }
    if supported.expire_inactive {
        optional::inactive_tokens_expire(&store).await;
    }
    if expiry::supported(&store).await {
        expiry::claims_live_records_due_once(&store).await;
        expiry::concurrent_claims_are_disjoint(&store).await;
    }
    let (update, list) = admin::probe(&store).await;
    if update {
        admin::update_changes_what_it_names(&store).await;
        admin::update_needs_a_live_token(&store).await;
        admin::renames_keep_names_unique(&store).await;
    }
    if list {
        admin::list_tokens_filters_and_pages(&store).await;
    }
    if rehash::probe(&store).await {
        rehash::rehash_moves_the_digest_once(&store).await;
        rehash::rehash_refuses_a_taken_digest(&store).await;
        rehash::concurrent_rehashes_move_once(&store).await;
    }
}

/// Checks the guarantees of the required methods of [`TokenStore`] (those without a
/// default body: [`insert`](TokenStore::insert), [`find_by_hash`](TokenStore::find_by_hash),
/// [`get`](TokenStore::get), [`list_by_owner`](TokenStore::list_by_owner),
/// [`revoke`](TokenStore::revoke), [`rotate`](TokenStore::rotate),
/// [`record_use`](TokenStore::record_use), [`purge_expired`](TokenStore::purge_expired))
/// and never calls an optional one. A store that passes it works with keygate, without the
/// features of the optional methods (see the [module](self)'s documentation for what it
/// gives up). Every record it writes round-trips with every field set.
///
/// ```
/// # #[cfg(feature = "test-util")]
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// keygate::store::conformance::run_core(keygate::MemoryStore::new()).await;
/// # });
/// ```
///
/// # Panics
///
/// On the first broken guarantee, with a message naming it.
pub async fn run_core<S: TokenStore>(store: S) {
    let store: Arc<dyn TokenStore> = Arc::new(store);
    core(&store).await;
}

/// The checks of [`run_core`].
async fn core(store: &Arc<dyn TokenStore>) {
    round_trip(store).await;
    unknown_is_none(store).await;
    duplicates_are_refused(store).await;
    names_are_unique_among_live_tokens(store).await;
    limits_count_live_tokens(store).await;
    concurrent_inserts_respect_the_limit(store).await;
    concurrent_inserts_respect_names(store).await;
    revoke_is_terminal(store).await;
    rotation::rotate_is_atomic(store).await;
    rotation::rotation_ends_the_earlier_grace(store).await;
    rotation::tokens_in_grace_count_against_the_limit(store).await;
    rotation::concurrent_rotations_respect_the_limit(store).await;
    record_use_moves_forward(store).await;
    purge_removes_dead_records(store).await;
    list_is_per_owner_oldest_first(store).await;
}

/// Checks that `store` keeps the details of the last use
/// ([`TokenStore::record_usage`] implemented, not the trait's default, which keeps the times
/// only and passes [`run`]). Every bundled store does; run it on yours if it implements
/// `record_usage`.
///
/// # Panics
///
/// When the details of a recorded use are not kept, or not with the rules of
/// [`TokenStore::record_usage`].
pub async fn usage_details_are_kept<S: TokenStore>(store: S) {
    let store: Arc<dyn TokenStore> = Arc::new(store);
    usage::record_usage_moves_details_with_the_time(&store, usage::Details::Required).await;
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
    TokenRecord::new(TokenId::random(), token.hash(), "pat", owner, name, at)
        .with_description("conformance «test» ✓")
        .with_role("viewer")
        .with_permissions(Permissions::parse(["things:read", "tokens:*"]).expect("valid"))
        .with_hint(token.hint())
        .with_created_by("admin@conformance.test")
}

fn rules(at: OffsetDateTime, max: Option<u32>) -> InsertRules {
    InsertRules::new(at, max)
}

async fn round_trip(s: &Arc<dyn TokenStore>) {
    let t = now();
    let mut r = record(&owner("round-trip"), "ci", t);
    r.expires_at = Some(t + Duration::from_secs(3600));
    r.last_used_at = Some(t);
    r.extras_mut().allowed_ips = vec![
        "10.0.0.0/8".parse().expect("valid"),
        "192.0.2.7/32".parse().expect("valid"),
        "2001:db8::/32".parse().expect("valid"),
    ];
    r.extras_mut().rate_limit = Some(42);
    r.extras_mut().bound_to = Some("machine «7» ✓".into());
    r.extras_mut().bound_at = Some(t - Duration::from_secs(60));
    r.extras_mut().released_at = Some(t - Duration::from_secs(7200));
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
    bare.extras_mut().description = None;
    bare.extras_mut().role = None;
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
        found.extras().revoked_at,
        Some(t),
        "the revocation is visible at once and keeps the first time"
    );
    assert!(!found.is_valid_at(t));
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
        .map(|r| r.name.to_string())
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
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(names, ["c", "a", "b"], "oldest first, only this owner's");
}

#[cfg(test)]
mod unsupported;
