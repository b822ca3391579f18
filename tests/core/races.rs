//! Many tasks creating, verifying, rotating and revoking at once through `Tokens`, on
//! `MemoryStore`, `CachedStore` over `MemoryStore`, `SqliteStore` (a temporary file) and
//! `PostgresStore` (at `KEYGATE_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`; skipped with a message when unreachable, a
//! failure when `CI` is set).
//!
//! Invariants checked:
//!
//! - a burst of concurrent creates fills an owner up to the limit exactly, never past it,
//!   and a burst of creates with one name yields exactly one token;
//! - under a mix of creates, verifications, rotations and revocations, no owner ever has
//!   more tokens that authenticate (live, or replaced and in grace) than the limit, and
//!   live names stay unique;
//! - a token whose revoke (or rotation without grace) has returned is never verified
//!   afterwards: checked right after each call returns, and by every verifier that saw the
//!   revocation before it started;
//! - after `flush_usage`, every token that was verified has `last_used_at` set, no older
//!   than its last successful verification minus the coalescing window.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate::store::cached::CachedStore;
use keygate::store::postgres::{PostgresOptions, PostgresStore};
use keygate::store::sqlite::SqliteStore;
use keygate::{MemoryStore, NewToken, TokenError, TokenId, TokenStore, Tokens};
use time::OffsetDateTime;
use tokio::sync::Barrier;

/// Live tokens per owner.
const LIMIT: u32 = 8;
/// Owners in the mixed phase, and tasks working on each.
const OWNERS: usize = 3;
const WORKERS: usize = 8;
/// Operations per task in the mixed phase.
const ROUNDS: usize = 40;
/// `last_used_at` is kept this fresh (the manager's coalescing window).
const GRANULARITY: Duration = Duration::from_millis(100);
/// Each store's whole run must end within this.
const BUDGET: Duration = Duration::from_secs(40);

fn manager(store: impl TokenStore) -> Tokens {
    Tokens::builder(store)
        .max_tokens_per_owner(Some(LIMIT))
        .usage_granularity(GRANULARITY)
        .build()
        .unwrap()
}

#[derive(Clone)]
struct Issued {
    owner: String,
    id: TokenId,
    token: String,
}

#[derive(Default)]
struct Ledger {
    issued: Mutex<Vec<Issued>>,
    /// Tokens whose revoke, or rotation without grace, has returned.
    dead: Mutex<HashSet<String>>,
    /// Per token id, the latest time a verification started that then succeeded.
    used: Mutex<HashMap<TokenId, OffsetDateTime>>,
    violations: Mutex<Vec<String>>,
    counts: Mutex<HashMap<&'static str, usize>>,
}

impl Ledger {
    fn violation(&self, v: String) {
        self.violations.lock().unwrap().push(v);
    }
    fn count(&self, what: &'static str) {
        *self.counts.lock().unwrap().entry(what).or_default() += 1;
    }
    /// A random token: of `owner` and not dead, or (`owner` None) any token ever issued.
    fn pick(&self, owner: Option<&str>) -> Option<Issued> {
        let issued = self.issued.lock().unwrap();
        let dead = self.dead.lock().unwrap();
        let candidates: Vec<&Issued> = issued
            .iter()
            .filter(|i| owner.is_none_or(|o| i.owner == o && !dead.contains(&i.token)))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let n = rand::random_range(0..candidates.len());
        Some(candidates[n].clone())
    }
    fn is_dead(&self, token: &str) -> bool {
        self.dead.lock().unwrap().contains(token)
    }
}

/// Live tokens of `owner` right now, and whether their names are unique.
/// How many of the owner's tokens authenticate (live ones and replaced ones in grace: all
/// count against the limit), and whether the live ones have unique names.
async fn live(tokens: &Tokens, owner: &str) -> (usize, bool) {
    // Judged after the read: a grace ended by a rotation that committed before the read
    // ends at or before this time.
    let records = tokens.list(owner).await.unwrap();
    let now = tokens.now();
    let valid = records.iter().filter(|r| r.is_valid_at(now)).count();
    let names: Vec<&str> = records
        .iter()
        .filter(|r| r.is_live_at(now))
        .map(|r| r.name.as_str())
        .collect();
    let unique: HashSet<&&str> = names.iter().collect();
    (valid, unique.len() == names.len())
}

/// Phase 1: bursts of creates released together by a barrier.
async fn bursts(tokens: &Tokens, label: &str) {
    // 3 × LIMIT creates for one owner at once: exactly LIMIT succeed.
    let owner = format!("burst-{label}");
    let n = 3 * LIMIT as usize;
    let barrier = Arc::new(Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (tokens, barrier, owner) = (tokens.clone(), barrier.clone(), owner.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            tokens.issue(NewToken::new(owner, format!("t{i}"))).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(TokenError::LimitReached) => {}
            Err(e) => panic!("{label}: unexpected error in a create burst: {e:?}"),
        }
    }
    assert_eq!(ok, LIMIT as usize, "{label}: creates that passed the limit");
    assert_eq!(
        live(tokens, &owner).await,
        (LIMIT as usize, true),
        "{label}"
    );

    // 10 creates of one name at once: exactly one succeeds.
    let owner = format!("names-{label}");
    let barrier = Arc::new(Barrier::new(10));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (tokens, barrier, owner) = (tokens.clone(), barrier.clone(), owner.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            tokens.issue(NewToken::new(owner, "deploy")).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(TokenError::NameTaken) => {}
            Err(e) => panic!("{label}: unexpected error in a name burst: {e:?}"),
        }
    }
    assert_eq!(ok, 1, "{label}: creates of one name that succeeded");
}

/// One task of phase 2: a random mix of operations on its owner's tokens.
async fn worker(tokens: Tokens, ledger: Arc<Ledger>, owner: String, worker: usize) {
    for round in 0..ROUNDS {
        match rand::random_range(0..10u32) {
            // Create (30 %).
            0..=2 => {
                let name = format!("w{worker}-r{round}");
                match tokens.issue(NewToken::new(owner.clone(), name)).await {
                    Ok(issued) => {
                        ledger.count("created");
                        ledger.issued.lock().unwrap().push(Issued {
                            owner: owner.clone(),
                            id: issued.record.id,
                            token: issued.token.expose_secret().to_owned(),
                        });
                        let (n, unique) = live(&tokens, &owner).await;
                        if n > LIMIT as usize {
                            ledger.violation(format!("{owner}: {n} live tokens, limit {LIMIT}"));
                        }
                        if !unique {
                            ledger.violation(format!("{owner}: two live tokens share a name"));
                        }
                    }
                    Err(TokenError::LimitReached) => ledger.count("limit reached"),
                    Err(e) => ledger.violation(format!("create failed: {e:?}")),
                }
            }
            // Verify any owner's token (30 %).
            3..=5 => {
                // Any token ever issued: live, dead, or being revoked right now.
                let Some(t) = ledger.pick(None) else {
                    continue;
                };
                let dead_before = ledger.is_dead(&t.token);
                let started = tokens.now();
                match tokens.authenticate(&t.token).await {
                    Ok(id) => {
                        ledger.count("verified");
                        if dead_before {
                            ledger
                                .violation(format!("{} verified after its revoke", id.token_id()));
                        }
                        let mut used = ledger.used.lock().unwrap();
                        let e = used.entry(id.token_id()).or_insert(started);
                        *e = (*e).max(started);
                    }
                    Err(r) if keygate::RejectionKind::from(r).code() == "invalid_token" => {
                        ledger.count("refused")
                    }
                    Err(r) => ledger.violation(format!("verify failed: {r:?}")),
                }
            }
            // Revoke (20 %).
            6 | 7 => {
                let Some(t) = ledger.pick(Some(&owner)) else {
                    continue;
                };
                match tokens.revoke(&owner, t.id).await {
                    Ok(()) => {
                        ledger.count("revoked");
                        ledger.dead.lock().unwrap().insert(t.token.clone());
                        if tokens.authenticate(&t.token).await.is_ok() {
                            ledger.violation(format!("{} verified right after revoke", t.id));
                        }
                    }
                    Err(TokenError::NotFound) => ledger.count("revoke lost a race"),
                    Err(e) => ledger.violation(format!("revoke failed: {e:?}")),
                }
            }
            // Rotate, half of the time with a grace window (10 %).
            8 => {
                let Some(t) = ledger.pick(Some(&owner)) else {
                    continue;
                };
                let grace = rand::random_bool(0.5).then(|| Duration::from_secs(30));
                match tokens.rotate(&owner, t.id, grace).await {
                    Ok(issued) => {
                        ledger.count("rotated");
                        ledger.issued.lock().unwrap().push(Issued {
                            owner: owner.clone(),
                            id: issued.record.id,
                            token: issued.token.expose_secret().to_owned(),
                        });
                        if grace.is_none() {
                            ledger.dead.lock().unwrap().insert(t.token.clone());
                            if tokens.authenticate(&t.token).await.is_ok() {
                                ledger.violation(format!(
                                    "{} verified right after a rotation without grace",
                                    t.id
                                ));
                            }
                        }
                        let (n, _) = live(&tokens, &owner).await;
                        if n > LIMIT as usize {
                            ledger.violation(format!("{owner}: {n} live tokens after a rotation"));
                        }
                    }
                    Err(TokenError::NotFound) => ledger.count("rotate lost a race"),
                    // A token in grace counts against the limit; without grace the count
                    // does not change, so only a rotation with grace may be refused.
                    Err(TokenError::LimitReached) if grace.is_some() => {
                        ledger.count("rotate limit reached");
                    }
                    Err(e) => ledger.violation(format!("rotate failed: {e:?}")),
                }
            }
            // Flush the batched uses while everything else runs (10 %).
            _ => {
                if let Err(e) = tokens.flush_usage().await {
                    ledger.violation(format!("flush failed: {e:?}"));
                }
            }
        }
    }
}

async fn race(tokens: Tokens, label: &str) {
    tokio::time::timeout(BUDGET, race_inner(tokens, label))
        .await
        .unwrap_or_else(|_| panic!("{label}: did not finish within {BUDGET:?}"));
}

async fn race_inner(tokens: Tokens, label: &str) {
    bursts(&tokens, label).await;

    let ledger = Arc::new(Ledger::default());
    // Every owner starts with a few tokens, so that there is something to verify at once.
    for o in 0..OWNERS {
        let owner = format!("{label}-owner-{o}");
        for i in 0..3 {
            let issued = tokens
                .issue(NewToken::new(owner.clone(), format!("seed-{i}")))
                .await
                .unwrap();
            ledger.issued.lock().unwrap().push(Issued {
                owner: owner.clone(),
                id: issued.record.id,
                token: issued.token.expose_secret().to_owned(),
            });
        }
    }
    let mut tasks = Vec::new();
    for o in 0..OWNERS {
        for w in 0..WORKERS {
            tasks.push(tokio::spawn(worker(
                tokens.clone(),
                ledger.clone(),
                format!("{label}-owner-{o}"),
                w,
            )));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }

    // Afterwards: the limit, unique names, every dead token refused.
    for o in 0..OWNERS {
        let owner = format!("{label}-owner-{o}");
        let (n, unique) = live(&tokens, &owner).await;
        assert!(
            n <= LIMIT as usize,
            "{label}: {owner} ends with {n} live tokens"
        );
        assert!(unique, "{label}: {owner} ends with duplicate live names");
    }
    let dead: Vec<String> = ledger.dead.lock().unwrap().iter().cloned().collect();
    for t in &dead {
        assert!(
            tokens.authenticate(t).await.is_err(),
            "{label}: a revoked token verifies at the end"
        );
    }

    // No lost last-used updates: after a flush, every token verified has `last_used_at`,
    // no older than its last successful verification minus the coalescing window.
    tokens.flush_usage().await.unwrap();
    let window = time::Duration::try_from(GRANULARITY).unwrap();
    let used: Vec<(TokenId, OffsetDateTime)> = ledger
        .used
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    assert!(!used.is_empty(), "{label}: nothing was verified");
    for (id, last) in &used {
        let record = tokens.store().get(id).await.unwrap().unwrap();
        let at = record
            .last_used_at
            .unwrap_or_else(|| panic!("{label}: {id} was used but has no last_used_at"));
        assert!(
            at >= *last - window,
            "{label}: {id} last used at {last}, recorded {at}"
        );
    }
    assert_eq!(tokens.pending_usage(), 0);

    let violations = ledger.violations.lock().unwrap();
    assert!(violations.is_empty(), "{label}: {violations:#?}");
    let counts = ledger.counts.lock().unwrap();
    eprintln!(
        "{label}: {counts:?}; {} tokens used, {} dead",
        used.len(),
        dead.len()
    );
    for op in ["created", "verified", "revoked", "rotated"] {
        assert!(counts.get(op).is_some_and(|&n| n > 0), "{label}: no {op}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn races_on_memory_store() {
    race(manager(MemoryStore::new()), "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn races_on_cached_memory_store() {
    let store = CachedStore::new(MemoryStore::new()).with_ttl(Duration::from_secs(30));
    race(manager(store), "cached").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn races_on_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("races.db"))
        .await
        .unwrap();
    race(manager(store), "sqlite").await;
}

/// A store in a fresh schema, or `None` (with the reason printed) when PostgreSQL is not
/// reachable and `CI` is unset. Under `CI` an unreachable database fails the test.
async fn postgres(test: &str) -> Option<PostgresStore> {
    let url = std::env::var("KEYGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("kg_{test}_{}", uuid::Uuid::new_v4().simple());
    common::available(
        "PostgreSQL",
        &url,
        test,
        PostgresOptions::new(url.clone())
            .with_schema(&schema[..schema.len().min(63)])
            .with_acquire_timeout(Duration::from_secs(3))
            .connect()
            .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn races_on_postgres_store() {
    let Some(store) = postgres("races").await else {
        return;
    };
    race(manager(store.clone()), "postgres").await;
    common::drop_schema(&store).await;
}

/// The window the race above found: another revoke of a token has reached the store but
/// not yet the verification cache in front of it when this caller's revoke (which goes on
/// to revoke the token's successor) answers Ok. The token must be refused right after,
/// not let in by the cache until the other call catches up.
#[tokio::test]
async fn a_revoke_that_answers_ok_is_seen_by_the_cache_even_when_another_got_there_first() {
    let inner = MemoryStore::new();
    let tokens = manager(CachedStore::new(inner.clone()).with_ttl(Duration::from_secs(30)));
    let first = tokens.issue(NewToken::new("alice", "ci")).await.unwrap();
    let token = first.token.expose_secret().to_owned();
    let rotated = tokens
        .rotate("alice", first.record.id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    // In grace: verified, and now cached.
    assert!(tokens.authenticate(&token).await.is_ok());
    // The other caller's revoke has reached the store, not yet the cache.
    assert!(
        inner
            .revoke(&first.record.id, OffsetDateTime::now_utc())
            .await
            .unwrap()
    );
    // This caller's revoke answers Ok (it revokes the successor)...
    let revoked = tokens
        .revoke_with_successors("alice", first.record.id)
        .await
        .unwrap();
    assert_eq!(revoked, vec![rotated.record.id]);
    // ...and neither token is let in afterwards.
    assert!(
        tokens.authenticate(&token).await.is_err(),
        "the revoked token was let in from the cache"
    );
    assert!(
        tokens
            .authenticate(rotated.token.expose_secret())
            .await
            .is_err()
    );
}
