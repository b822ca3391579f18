//! `keygate serve` stopped the hard way and the soft way, on SQLite and on PostgreSQL.
//!
//! - Killed with SIGKILL in the middle of a stream of creates and revokes, then restarted on
//!   the same database: every token whose 201 reached the client still verifies, and every
//!   revoke answered 204 still holds.
//! - Stopped with SIGTERM right after tokens were used (long before the periodic write of
//!   last-used times, with the audit table held by another session on PostgreSQL so the
//!   events wait in the queue): it exits 0, and the database has every last-used time and
//!   every audit event, as has the JSON Lines audit file.
//! - Stopped with SIGTERM while requests wait on a database that does not answer: it
//!   stops taking connections, gives up on them after the drain timeout and exits 0.
//!
//! The server is the installed binary (`keygate serve`), run as a child process on a
//! loopback port it picks itself. The PostgreSQL runs use `KEYGATE_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`), each in a schema of its own
//! (`KEYGATE_DB_SCHEMA`) dropped at the end; without the database they print why and skip,
//! unless `CI` is set, where they fail.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keygate::audit::{AuditEvent, AuditFilter, AuditReader};
use keygate::store::postgres::{PostgresOptions, PostgresStore};
use keygate::store::sqlite::SqliteStore;
use keygate::{TokenId, TokenStore};
use serde_json::Value;

use crate::common::{self, Served};

const ADMIN: &str = "admin@example.com";
/// A throwaway password for the throwaway databases of these tests.
const PASSWORD: &str = "crash-safety test password";

/// Where a test keeps its tokens.
enum Backend {
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// A schema of its own on the test PostgreSQL; `store` is the test's own connection.
    Postgres {
        url: String,
        schema: String,
        store: PostgresStore,
    },
}

impl Backend {
    fn sqlite(dir: &Path) -> Self {
        Self::Sqlite(dir.join("keygate.db"))
    }

    /// A new schema on the test PostgreSQL (created by the test's connection), or `None`
    /// when it is unreachable outside CI.
    async fn postgres(test: &str) -> Option<Self> {
        let url = common::postgres_url();
        let schema = format!("kg_crash_{}", uuid::Uuid::new_v4().simple());
        let store = common::available(
            "PostgreSQL",
            &url,
            test,
            PostgresOptions::new(&url)
                .with_schema(&schema)
                .connect()
                .await,
        )?;
        Some(Self::Postgres { url, schema, store })
    }

    /// `keygate serve` on this database.
    fn serve(&self, dir: &Path) -> Command {
        let mut cmd = common::keygate(dir);
        cmd.arg("serve")
            .env("KEYGATE_ADMIN_EMAIL", ADMIN)
            .env("KEYGATE_ADMIN_PASSWORD", PASSWORD)
            // Durability, not the store bound, is under test: a loaded machine's fsync may
            // take longer than the 2 s default.
            .env("KEYGATE_STORE_TIMEOUT", "30")
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit());
        match self {
            Self::Sqlite(file) => cmd.env("KEYGATE_DB", file),
            Self::Postgres { url, schema, .. } => {
                cmd.env("KEYGATE_DB", url).env("KEYGATE_DB_SCHEMA", schema)
            }
        };
        cmd
    }

    fn label(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "SQLite",
            Self::Postgres { .. } => "PostgreSQL",
        }
    }

    /// The token `id` as the database has it now, and every audit event it holds.
    async fn read_back(&self, ids: &[String]) -> (Vec<keygate::TokenRecord>, Vec<AuditEvent>) {
        let filter = AuditFilter {
            limit: AuditFilter::MAX_LIMIT,
            ..AuditFilter::default()
        };
        let ids: Vec<TokenId> = ids.iter().map(|id| id.parse().unwrap()).collect();
        match self {
            Self::Sqlite(file) => {
                let store = SqliteStore::open(file).await.unwrap();
                let mut records = Vec::new();
                for id in &ids {
                    records.push(store.get(id).await.unwrap().unwrap());
                }
                (records, store.list_audit(&filter).await.unwrap())
            }
            Self::Postgres { store, .. } => {
                let mut records = Vec::new();
                for id in &ids {
                    records.push(store.get(id).await.unwrap().unwrap());
                }
                (records, store.list_audit(&filter).await.unwrap())
            }
        }
    }

    async fn clean_up(&self) {
        if let Self::Postgres { store, .. } = self {
            common::drop_schema(store).await;
        }
    }
}

fn basic() -> String {
    common::basic(ADMIN, PASSWORD)
}

fn call(
    addr: &str,
    method: &str,
    path: &str,
    auth: &str,
    form: Option<&str>,
) -> std::io::Result<(u16, Value)> {
    common::http_json(addr, method, path, Some(auth), form)
}

/// What the clients saw acknowledged.
#[derive(Default)]
struct Acked {
    /// (id, token) of every create answered 201.
    created: Vec<(String, String)>,
    /// Ids of every revoke answered 204.
    revoked: Vec<String>,
    /// Ids of revokes sent but never answered (the server died) or answered 503: either
    /// outcome is right.
    in_flight: Vec<String>,
}

/// Two clients create tokens and revoke every third one until the server goes away.
fn stream_until_killed(server: Served, acked: &Arc<Mutex<Acked>>, cycle: usize, min_acks: usize) {
    let total = |a: &Acked| a.created.len() + a.revoked.len();
    let before = total(&acked.lock().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..2 {
        let (addr, acked, stop) = (server.addr.clone(), acked.clone(), stop.clone());
        clients.push(std::thread::spawn(move || {
            let auth = basic();
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let form = format!("description=cycle+{cycle}+client+{c}+token+{i}");
                let Ok((status, v)) = call(&addr, "POST", "/api/v1/tokens", &auth, Some(&form))
                else {
                    break;
                };
                // 503: not done (a store or the audit log too slow on a loaded machine);
                // nothing acknowledged, nothing to check.
                if status == 503 {
                    eprintln!("create answered 503 (not acknowledged): {v}");
                    continue;
                }
                assert_eq!(status, 201, "create: {v}");
                let id = v["id"].as_str().unwrap().to_owned();
                let token = v["token"].as_str().unwrap().to_owned();
                acked.lock().unwrap().created.push((id.clone(), token));
                if i % 3 == 2 {
                    let path = format!("/api/v1/tokens/{id}");
                    let Ok((status, v)) = call(&addr, "DELETE", &path, &auth, None) else {
                        acked.lock().unwrap().in_flight.push(id);
                        break;
                    };
                    if status == 503 {
                        // Not acknowledged: the revoke may or may not have been made.
                        eprintln!("revoke answered 503 (not acknowledged): {v}");
                        acked.lock().unwrap().in_flight.push(id);
                        continue;
                    }
                    assert_eq!(status, 204, "revoke: {v}");
                    acked.lock().unwrap().revoked.push(id);
                }
            }
        }));
    }
    // Kill once enough has been acknowledged, while both clients still have requests in
    // flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = total(&acked.lock().unwrap()) - before;
        if n >= min_acks || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill();
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
}

/// Every acknowledged create verifies, every acknowledged revoke holds.
fn check(server: &Served, acked: &Acked, label: &str) -> (usize, usize) {
    let revoked: HashSet<&String> = acked.revoked.iter().collect();
    let (mut live, mut dead) = (0, 0);
    for (id, token) in &acked.created {
        if acked.in_flight.contains(id) {
            continue;
        }
        let auth = format!("Bearer {token}");
        let (status, v) = call(&server.addr, "GET", "/api/v1/me", &auth, None).unwrap();
        if revoked.contains(id) {
            assert_eq!(status, 401, "{label}: revoked token {id} answered {v}");
            assert_eq!(v["code"], "invalid_token", "{label}: {v}");
            dead += 1;
        } else {
            assert_eq!(status, 200, "{label}: acknowledged token {id} answered {v}");
            assert_eq!(v["token_id"], id.as_str(), "{label}");
            live += 1;
        }
    }
    (live, dead)
}

/// Three SIGKILLs mid-stream and a last restart on `backend`: nothing acknowledged is lost.
fn sigkill_mid_stream(backend: &Backend, dir: &Path) {
    let started = Instant::now();
    let label = backend.label();
    let acked = Arc::new(Mutex::new(Acked::default()));
    for cycle in 0..3 {
        let server = Served::start(backend.serve(dir));
        if cycle > 0 {
            // Everything acknowledged before the previous kill, before any new traffic.
            let (live, dead) = check(
                &server,
                &acked.lock().unwrap(),
                &format!("{label}, restart {cycle}"),
            );
            eprintln!(
                "{label}, restart {cycle}: {live} acknowledged tokens verify, {dead} acknowledged revokes hold"
            );
        }
        stream_until_killed(server, &acked, cycle, 24);
    }
    let server = Served::start(backend.serve(dir));
    let (live, dead) = check(
        &server,
        &acked.lock().unwrap(),
        &format!("{label}, final restart"),
    );
    eprintln!(
        "{label}, final restart: {live} acknowledged tokens verify, {dead} acknowledged revokes hold ({:?})",
        started.elapsed()
    );
    assert!(live > 0 && dead > 0, "the stream acknowledged too little");
    // The list agrees: every acknowledged, unrevoked token is there.
    let (status, v) = call(&server.addr, "GET", "/api/v1/tokens", &basic(), None).unwrap();
    assert_eq!(status, 200);
    let listed: HashSet<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    let a = acked.lock().unwrap();
    for (id, _) in a.created.iter().filter(|(id, _)| !a.in_flight.contains(id)) {
        assert_eq!(
            listed.contains(id.as_str()),
            !a.revoked.contains(id),
            "{label}: {id} in the list"
        );
    }
}

#[test]
fn sigkill_mid_stream_loses_no_acknowledged_create_or_revoke_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    sigkill_mid_stream(&Backend::sqlite(dir.path()), dir.path());
}

#[test]
fn sigkill_mid_stream_loses_no_acknowledged_create_or_revoke_on_postgres() {
    let rt = runtime();
    let Some(backend) = rt.block_on(Backend::postgres(
        "sigkill_mid_stream_loses_no_acknowledged_create_or_revoke_on_postgres",
    )) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sigkill_mid_stream(&backend, dir.path());
    }));
    rt.block_on(backend.clean_up());
    outcome.unwrap();
}

/// A runtime for the test's own connections to the database.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Creates a token named `name`: its id and secret.
fn create(addr: &str, name: &str) -> (String, String) {
    let form = format!("description={name}");
    let (status, v) = call(addr, "POST", "/api/v1/tokens", &basic(), Some(&form)).unwrap();
    assert_eq!(status, 201, "create: {v}");
    (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

/// Another session's lock on one of keygate's tables, held until it is released.
struct Held {
    tx: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
}

impl Held {
    /// With PostgreSQL, `LOCK TABLE {table} IN {mode} MODE` in an open transaction.
    fn postgres(rt: &tokio::runtime::Runtime, backend: &Backend, table: &str, mode: &str) -> Self {
        let Backend::Postgres { store, .. } = backend else {
            return Self { tx: None };
        };
        let tx = rt.block_on(async {
            let mut tx = store.pool().begin().await.unwrap();
            let sql = format!("LOCK TABLE {table} IN {mode} MODE");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .unwrap();
            tx
        });
        Self { tx: Some(tx) }
    }

    fn release(&mut self, rt: &tokio::runtime::Runtime) {
        if let Some(tx) = self.tx.take() {
            rt.block_on(tx.rollback()).unwrap();
        }
    }
}

/// Tokens used, then SIGTERM at once: exit 0, and every last-used time and audit event is
/// in the database (and the audit file) afterwards.
fn sigterm_flushes_usage_and_audit(backend: &Backend, dir: &Path) {
    const TOKENS: usize = 3;
    const USES: usize = 4;
    let rt = runtime();
    let label = backend.label();
    let audit_file = dir.join("audit.jsonl");
    let mut cmd = backend.serve(dir);
    cmd.env("KEYGATE_AUDIT_LOG", &audit_file);
    let mut server = Served::start(cmd);
    // The server writes last-used times as it starts, then every 10 s (not a setting):
    // from here on, they wait in its memory until the next write or the last one.
    let started = Instant::now();
    let tokens: Vec<(String, String)> = (0..TOKENS)
        .map(|i| create(&server.addr, &format!("flushed+{i}")))
        .collect();
    // PostgreSQL: another session holds the audit table, so the events of the uses wait in
    // the queue (the writer's batch blocked on the table) when SIGTERM arrives.
    let mut held = Held::postgres(&rt, backend, "keygate_audit_events", "EXCLUSIVE");
    for _ in 0..USES {
        for (_, token) in &tokens {
            let auth = format!("Bearer {token}");
            let (status, v) = call(&server.addr, "GET", "/api/v1/me", &auth, None).unwrap();
            assert_eq!(status, 200, "{label}: {v}");
        }
    }
    // The list reads the database: no last-used time is there yet.
    let (status, listed) = call(&server.addr, "GET", "/api/v1/tokens", &basic(), None).unwrap();
    assert_eq!(status, 200, "{listed}");
    let written = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !t["last_used_at"].is_null())
        .count();
    let before_sigterm = started.elapsed();
    if before_sigterm < Duration::from_secs(9) {
        assert_eq!(
            written, 0,
            "{label}: last-used times written before SIGTERM"
        );
    } else {
        eprintln!(
            "{label}: {before_sigterm:?} before SIGTERM; the periodic write may have run ({written} written)"
        );
    }
    server.terminate();
    let terminated = Instant::now();
    if held.tx.is_some() {
        std::thread::sleep(Duration::from_millis(500));
        let waiting = server.child.try_wait().unwrap().is_none();
        eprintln!("{label}: still writing its audit events 500 ms after SIGTERM: {waiting}");
        held.release(&rt);
    }
    let status = server
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{label}: keygate serve did not stop after SIGTERM"));
    eprintln!(
        "{label}: exited {status} {:?} after SIGTERM",
        terminated.elapsed()
    );
    assert_eq!(status.code(), Some(0), "{label}: exit status");

    // The database: every token's last use, every audit event.
    let ids: Vec<String> = tokens.iter().map(|(id, _)| id.clone()).collect();
    let (records, events) = rt.block_on(backend.read_back(&ids));
    for r in &records {
        let used = r
            .last_used_at
            .unwrap_or_else(|| panic!("{label}: no last-used time for {}", r.id));
        assert!(
            used >= r.created_at,
            "{label}: {used} before {}",
            r.created_at
        );
    }
    let count = |events: &mut dyn Iterator<Item = (String, Option<String>, u16)>, what: &str| {
        events
            .filter(|(event, id, status)| {
                event == what && id.as_ref().is_some_and(|id| ids.contains(id)) && *status != 0
            })
            .count()
    };
    let in_db = |what| {
        count(
            &mut events.iter().map(|e| {
                (
                    e.event.clone(),
                    e.api_token_id.map(|i| i.to_string()),
                    e.status_code,
                )
            }),
            what,
        )
    };
    assert_eq!(
        in_db("authenticate"),
        TOKENS * USES,
        "{label}: in the database"
    );
    assert_eq!(in_db("token.create"), TOKENS, "{label}: in the database");
    // The file: the same events, one JSON object a line.
    let text = std::fs::read_to_string(&audit_file).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let in_file = |what| {
        count(
            &mut lines.iter().map(|e| {
                (
                    e["event"].as_str().unwrap().to_owned(),
                    e["api_token_id"].as_str().map(str::to_owned),
                    u16::try_from(e["status_code"].as_u64().unwrap()).unwrap(),
                )
            }),
            what,
        )
    };
    assert_eq!(
        in_file("authenticate"),
        TOKENS * USES,
        "{label}: in the file"
    );
    assert_eq!(in_file("token.create"), TOKENS, "{label}: in the file");
}

#[test]
fn sigterm_flushes_last_used_times_and_audit_events_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    sigterm_flushes_usage_and_audit(&Backend::sqlite(dir.path()), dir.path());
}

#[test]
fn sigterm_flushes_last_used_times_and_audit_events_on_postgres() {
    let rt = runtime();
    let Some(backend) = rt.block_on(Backend::postgres(
        "sigterm_flushes_last_used_times_and_audit_events_on_postgres",
    )) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sigterm_flushes_usage_and_audit(&backend, dir.path());
    }));
    rt.block_on(backend.clean_up());
    outcome.unwrap();
}

/// SIGTERM while requests wait on a database that does not answer (another session holds
/// the tokens table; the store timeout is longer than the drain): the server exits 0 once
/// the drain timeout and the bounded last writes are over, not when the requests give up.
#[test]
fn sigterm_with_requests_stuck_on_the_database_exits_after_the_drain_timeout() {
    let rt = runtime();
    let Some(backend) = rt.block_on(Backend::postgres(
        "sigterm_with_requests_stuck_on_the_database_exits_after_the_drain_timeout",
    )) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut cmd = backend.serve(dir.path());
        cmd.env("KEYGATE_DRAIN_TIMEOUT", "2")
            .env("KEYGATE_STORE_TIMEOUT", "300");
        let mut server = Served::start(cmd);
        let (_, used) = create(&server.addr, "used");
        let (_, unseen) = create(&server.addr, "unseen");
        // A last-used time waiting to be written: the last write will wait on the table too.
        let auth = format!("Bearer {used}");
        assert_eq!(
            call(&server.addr, "GET", "/api/v1/me", &auth, None)
                .unwrap()
                .0,
            200
        );
        let mut held = Held::postgres(&rt, &backend, "keygate_tokens", "ACCESS EXCLUSIVE");
        // In flight: a create, and a token the server has not seen (not in its cache).
        let addr = server.addr.clone();
        let creating = std::thread::spawn(move || {
            call(
                &addr,
                "POST",
                "/api/v1/tokens",
                &basic(),
                Some("description=stuck"),
            )
        });
        let addr = server.addr.clone();
        let verifying = std::thread::spawn(move || {
            call(
                &addr,
                "GET",
                "/api/v1/me",
                &format!("Bearer {unseen}"),
                None,
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        assert!(!creating.is_finished() && !verifying.is_finished(), "stuck");
        server.terminate();
        let terminated = Instant::now();
        let status = server.wait_exit(Duration::from_secs(60));
        let took = terminated.elapsed();
        held.release(&rt);
        let status = status.expect("keygate serve did not stop within 60 s of SIGTERM");
        eprintln!("exited {status} {took:?} after SIGTERM (drain timeout 2 s)");
        assert_eq!(status.code(), Some(0));
        // Drain timeout (2 s) plus the last writes, each bounded by 10 s, with room for a
        // loaded machine; far from the 300 s the requests would wait.
        assert!(took < Duration::from_secs(45), "{took:?}");
        for (what, client) in [("create", creating), ("verify", verifying)] {
            match client.join().unwrap() {
                Err(_) => {}
                Ok((status, v)) => assert!(
                    status == 503,
                    "{what}: a request cut off by the shutdown answered {status} {v}"
                ),
            }
        }
    }));
    rt.block_on(backend.clean_up());
    outcome.unwrap();
}

/// PostgreSQL with `synchronous_commit = off` answers a commit before it is on disk, so a
/// crash of the database can undo a create or a revoke keygate acknowledged: `keygate serve`
/// warns at start, and only then.
#[test]
fn keygate_serve_warns_when_postgres_may_lose_acknowledged_writes() {
    let rt = runtime();
    let Some(backend) = rt.block_on(Backend::postgres(
        "keygate_serve_warns_when_postgres_may_lose_acknowledged_writes",
    )) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Backend::Postgres { url, .. } = &backend else {
            unreachable!()
        };
        let warning = "synchronous_commit is off";
        let output = |cmd: Command| {
            let mut server = Served::start(cmd);
            server.terminate();
            let status = server.wait_exit(Duration::from_secs(60)).unwrap();
            assert_eq!(status.code(), Some(0));
            server.output()
        };
        let plain = output(backend.serve(dir.path()));
        assert!(!plain.contains(warning), "{plain}");
        let mut cmd = backend.serve(dir.path());
        let sep = if url.contains('?') { '&' } else { '?' };
        cmd.env(
            "KEYGATE_DB",
            format!("{url}{sep}options=-c%20synchronous_commit%3Doff"),
        );
        let asynchronous = output(cmd);
        assert!(asynchronous.contains(warning), "{asynchronous}");
    }));
    rt.block_on(backend.clean_up());
    outcome.unwrap();
}

/// SIGTERM as soon as the server has announced its address (a service manager stopping it
/// the moment it is up): a graceful stop, exit 0, not the signal's default (death by
/// SIGTERM, nothing written).
#[test]
fn sigterm_right_after_the_announcement_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::sqlite(dir.path());
    for round in 0..5 {
        let mut server = Served::announced(backend.serve(dir.path()));
        server.terminate();
        let status = server
            .wait_exit(Duration::from_secs(60))
            .expect("keygate serve did not stop after SIGTERM");
        assert_eq!(status.code(), Some(0), "round {round}: {status}");
    }
}
