//! The SQL audit sinks: events written by an `AuditLog` read back through `list_audit`
//! with every filter, on SQLite and on the PostgreSQL at `KEYGATE_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`; skipped with a message when
//! unreachable, failed when `CI` is set).

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use keygate::TokenId;
use keygate::audit::{
    AuditEvent, AuditFilter, AuditLog, AuditPurge, AuditReader, AuditSink, Decision, purge_audit,
};
use keygate::store::postgres::PostgresOptions;
use keygate::store::sqlite::SqliteStore;
use time::OffsetDateTime;

fn event(at: OffsetDateTime, token: Option<TokenId>, status: u16) -> AuditEvent {
    AuditEvent {
        timestamp: at,
        event: "authenticate".into(),
        api_token_id: token,
        api_token_name: token.map(|_| "ci-production-deploy".into()),
        owner: Some("alice@example.com".into()),
        method: "POST".into(),
        path: "/apps/myapp/builds".into(),
        status_code: status,
        rbac_decision: if status < 400 {
            Decision::Allow
        } else {
            Decision::Deny
        },
        reason: (status >= 400).then(|| "insufficient_scope".into()),
        client_ip: Some("192.0.2.7".parse().unwrap()),
        request_id: Some("req-1".into()),
        details: None,
    }
}

/// Writes 10 events a second apart (two tokens and one without), then checks the filters.
async fn round_trip(store: impl AuditSink + AuditReader + Clone) {
    let t0 = time::macros::datetime!(2024-01-15 10:30 UTC);
    let (a, b) = (TokenId::random(), TokenId::random());
    let log = AuditLog::spawn(store.clone(), 100);
    let mut written = Vec::new();
    for i in 0..10u8 {
        let token = match i % 3 {
            0 => Some(a),
            1 => Some(b),
            _ => None,
        };
        let mut e = event(
            t0 + Duration::from_secs(u64::from(i)),
            token,
            if i == 4 { 403 } else { 200 },
        );
        if i == 7 {
            e.owner = Some("bob@example.com".into());
        }
        if i == 5 {
            // A leak report's details (url and source) are kept and read back.
            e.event = "token.leaked".into();
            e.details = Some(
                [
                    ("url".to_owned(), "https://example.com/paste/1".to_owned()),
                    ("source".to_owned(), "paste".to_owned()),
                ]
                .into(),
            );
        }
        written.push(e.clone());
        log.record(e);
    }
    log.shutdown().await;
    assert_eq!(log.written(), 10);

    let all = store.list_audit(&AuditFilter::default()).await.unwrap();
    let mut newest_first = written.clone();
    newest_first.reverse();
    assert_eq!(all, newest_first, "every field round-trips, newest first");

    let only_a = store
        .list_audit(&AuditFilter {
            token_id: Some(a),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(only_a.len(), 4);
    assert!(only_a.iter().all(|e| e.api_token_id == Some(a)));

    let bobs = store
        .list_audit(&AuditFilter {
            owner: Some("bob@example.com".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(bobs, [written[7].clone()], "only the owner's events");
    let alices = store
        .list_audit(&AuditFilter {
            owner: Some("alice@example.com".into()),
            token_id: Some(b),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(alices.len(), 2, "the owner and the token filter together");

    let window = store
        .list_audit(&AuditFilter {
            since: Some(t0 + Duration::from_secs(2)),
            until: Some(t0 + Duration::from_secs(5)),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let seconds: Vec<i64> = window
        .iter()
        .map(|e| (e.timestamp - t0).whole_seconds())
        .collect();
    assert_eq!(seconds, vec![4, 3, 2], "since inclusive, until exclusive");
    assert_eq!(window[0].rbac_decision, Decision::Deny);
    assert_eq!(window[0].reason.as_deref(), Some("insufficient_scope"));

    let limited = store
        .list_audit(&AuditFilter {
            limit: 3,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(limited, newest_first[..3]);
}

#[tokio::test]
async fn sqlite_keeps_and_filters_audit_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("audit.db"))
        .await
        .unwrap();
    round_trip(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_and_filters_audit_events() {
    let url = std::env::var("KEYGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("kg_audit_{}", uuid::Uuid::new_v4().simple());
    let Some(store) = common::available(
        "PostgreSQL",
        &url,
        "postgres_keeps_and_filters_audit_events",
        PostgresOptions::new(&url)
            .with_schema(&schema)
            .with_acquire_timeout(Duration::from_secs(3))
            .connect()
            .await,
    ) else {
        return;
    };
    round_trip(store.clone()).await;
    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(store.pool())
        .await
        .unwrap();
}

/// Events 100, 91, 89 and 0 days old, plus 2 500 from a year ago: purging what is older
/// than 90 days leaves the two recent ones, batch by batch.
async fn retention(store: impl AuditSink + AuditReader + AuditPurge + Clone) {
    let now = OffsetDateTime::now_utc();
    let day = Duration::from_secs(24 * 3600);
    let token = TokenId::random();
    let mut events: Vec<AuditEvent> = [100u32, 91, 89, 0]
        .iter()
        .map(|&d| event(now - day * d, Some(token), 200))
        .collect();
    events.extend((0..2_500).map(|i| event(now - day * 365 + Duration::from_secs(i), None, 401)));
    store.write(&events).await.unwrap();

    let cutoff = now - day * 90;
    assert_eq!(
        store.purge_audit_batch(cutoff, 3).await.unwrap(),
        3,
        "one batch deletes at most its limit"
    );
    assert_eq!(
        purge_audit(&store, cutoff).await.unwrap(),
        2_500 + 2 - 3,
        "the rest, over several batches"
    );
    assert_eq!(purge_audit(&store, cutoff).await.unwrap(), 0);
    let left = store
        .list_audit(&AuditFilter {
            limit: 10_000,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let ages: Vec<i64> = left
        .iter()
        .map(|e| (now - e.timestamp).whole_days())
        .collect();
    assert_eq!(ages, [0, 89], "newer events are kept: {ages:?}");
}

#[tokio::test]
async fn sqlite_purges_audit_events_past_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("audit.db"))
        .await
        .unwrap();
    retention(store).await;
}

#[tokio::test]
async fn memory_sink_purges_audit_events_past_their_retention() {
    retention(keygate::audit::MemoryAuditSink::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_purges_audit_events_past_their_retention() {
    let url = common::postgres_url();
    let schema = format!("kg_retention_{}", uuid::Uuid::new_v4().simple());
    let Some(store) = common::available(
        "PostgreSQL",
        &url,
        "postgres_purges_audit_events_past_their_retention",
        PostgresOptions::new(&url)
            .with_schema(&schema)
            .with_acquire_timeout(Duration::from_secs(3))
            .connect()
            .await,
    ) else {
        return;
    };
    retention(store.clone()).await;
    common::drop_schema(&store).await;
}
