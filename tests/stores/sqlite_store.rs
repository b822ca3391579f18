//! `SqliteStore`: the conformance suite, durability across a reopen, and accounts.

use std::time::Duration;

use keygate::accounts::{Account, AccountStore, hash_password, verify_password};
use keygate::store::sqlite::SqliteStore;
use keygate::{NewToken, Permissions, RejectionKind, Roles, Tokens};
use time::OffsetDateTime;

fn micro_now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .expect("a truncated nanosecond is valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("conformance.db"))
        .await
        .expect("open");
    keygate::store::conformance::run(store.clone()).await;
    keygate::store::conformance::usage_details_are_kept(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_respect_the_limit_together() {
    // Two pools on one file behave like two processes: only SQLite's locking keeps the
    // per-owner limit, not the in-process write queue.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("shared.db");
    let a = SqliteStore::open(&path).await.expect("open a");
    let b = SqliteStore::open(&path).await.expect("open b");
    let manager = |store: &SqliteStore| {
        Tokens::builder(store.clone())
            .max_tokens_per_owner(Some(10))
            .build()
            .expect("config")
    };
    let (ta, tb) = (manager(&a), manager(&b));
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let t = if i % 2 == 0 { ta.clone() } else { tb.clone() };
            tokio::spawn(async move { t.issue(NewToken::new("carol", format!("t{i}"))).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => ok += 1,
            Err(keygate::TokenError::LimitReached) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(ok, 10, "two pools on one file must still stop at the limit");
    assert_eq!(Tokens::new(a).list("carol").await.expect("list").len(), 10);
}

#[tokio::test]
async fn tokens_survive_a_reopen_and_revocations_stick() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("restart.db");
    let (live, revoked) = {
        let tokens = Tokens::builder(SqliteStore::open(&path).await.expect("open"))
            .roles(Roles::deployment_platform())
            .build()
            .expect("config");
        let live = tokens
            .issue(
                NewToken::new("alice@example.com", "deploy")
                    .role("deployer")
                    .expires_in(Duration::from_secs(3600)),
            )
            .await
            .expect("issue");
        let revoked = tokens
            .issue(NewToken::new("alice@example.com", "old-ci").role("cicd"))
            .await
            .expect("issue");
        tokens
            .revoke("alice@example.com", revoked.record.id)
            .await
            .expect("revoke");
        (live, revoked)
        // The manager, the store and its pool are all dropped here.
    };

    let store = SqliteStore::open(&path).await.expect("reopen");
    let tokens = Tokens::builder(store)
        .roles(Roles::deployment_platform())
        .build()
        .expect("config");
    let identity = tokens
        .authenticate(live.token.expose_secret())
        .await
        .expect("the live token still authenticates after a reopen");
    assert_eq!(identity.owner(), "alice@example.com");
    assert_eq!(identity.token_name(), "deploy");
    assert!(identity.can("releases:promote"));
    assert_eq!(
        tokens
            .get("alice@example.com", identity.token_id())
            .await
            .expect("get"),
        live.record,
        "the record round-trips exactly"
    );

    let refused = tokens
        .authenticate(revoked.token.expose_secret())
        .await
        .expect_err("the revoked token stays refused after a reopen");
    assert_eq!(RejectionKind::from(refused), RejectionKind::Revoked);

    let listed = tokens.list("alice@example.com").await.expect("list");
    let names: Vec<&str> = listed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["deploy", "old-ci"]);
}

#[tokio::test]
async fn accounts_round_trip_with_hashed_passwords() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("accounts.db");
    let account = Account {
        email: "Admin@Example.COM".into(),
        password_hash: hash_password("correct horse battery staple").expect("hash"),
        permissions: Permissions::parse(["*"]).expect("valid"),
        created_at: micro_now(),
    };
    {
        let store = SqliteStore::open(&path).await.expect("open");
        store.put_account(account.clone()).await.expect("put");
    }
    let store = SqliteStore::open(&path).await.expect("reopen");
    assert!(
        store
            .find_account("nobody@example.com")
            .await
            .expect("find")
            .is_none()
    );
    let found = store
        .find_account("admin@example.com")
        .await
        .expect("find")
        .expect("the account survives a reopen");
    assert_eq!(
        found.email, "admin@example.com",
        "emails are kept lower-cased"
    );
    assert_eq!(found.permissions, account.permissions);
    assert_eq!(found.created_at, account.created_at);
    assert!(found.password_hash.starts_with("$argon2id$"));
    assert!(verify_password(
        "correct horse battery staple",
        Some(&found)
    ));
    assert!(!verify_password("wrong", Some(&found)));

    // Putting the same email again replaces the account.
    let viewer = Account {
        email: "ADMIN@example.com".into(),
        permissions: Permissions::parse(["tokens:read"]).expect("valid"),
        ..found
    };
    store.put_account(viewer).await.expect("replace");
    let replaced = store
        .find_account("Admin@example.com")
        .await
        .expect("find")
        .expect("present");
    assert_eq!(
        replaced.permissions,
        Permissions::parse(["tokens:read"]).expect("valid")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_of_a_new_file_all_succeed() {
    // A server and the CLI may both create the file at once.
    for round in 0..5 {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(format!("fresh-{round}.db"));
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { SqliteStore::open(path).await })
            })
            .collect();
        for open in opens {
            open.await
                .expect("task")
                .expect("every concurrent open succeeds");
        }
    }
}
