//! Running the reference server: JSON log lines (the banner included, never a secret),
//! request ids, the generated admin password in a `0600` file; shutdown with a drain
//! timeout. Through a real listener on
//! a port the system picks, spoken to in plain HTTP/1.1.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keygate::server::{self, Config, LogFormat, Server};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::common::{self, Capture};

const ADMIN: &str = "admin@example.com";

/// One answer over the wire.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request on a new connection (`Connection: close`) and reads the whole answer.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Reply> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// A server configuration on a fresh SQLite file in `dir`, on a port the system picks.
pub fn config(dir: &Path) -> Config {
    Config {
        db: dir.join("keygate.db"),
        addr: "127.0.0.1:0".into(),
        admin_email: ADMIN.into(),
        // Behaviour, not the store bound, is under test: a loaded machine's fsync may
        // take longer than the 2 s default.
        store_timeout: std::time::Duration::from_secs(30),
        // The demo API is the protected route these tests call.
        demo: true,
        ..Config::default()
    }
}

/// The lines `capture` holds, each parsed as JSON (a line that is not JSON fails the test).
fn json_lines(capture: &Capture) -> Vec<Value> {
    let bytes = capture.0.lock().unwrap().clone();
    let text = String::from_utf8(bytes).unwrap();
    text.lines()
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect()
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_request_ids_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(server::log_subscriber(LogFormat::Json, capture.clone()));
    let _every = common::ask_every_dispatcher();
    let config = Config {
        log_format: LogFormat::Json,
        audit_log: Some(dir.path().join("audit.jsonl")),
        ..config(dir.path())
    };

    let server = Server::bind(&config).await.unwrap();
    let addr = server.local_addr();
    // The generated password is in a file only its owner may read, and in no log line.
    let password_file = dir.path().join(server::PASSWORD_FILE);
    let password = std::fs::read_to_string(&password_file).unwrap();
    let password = password.trim_end().to_owned();
    assert!(password.len() >= 16, "a generated password: {password:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&password_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the password file is the owner's only");
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));

    let basic = common::basic(ADMIN, &password);
    let created = http(
        addr,
        "POST",
        "/api/v1/tokens",
        &[
            ("Authorization", &basic),
            ("Content-Type", "application/json"),
            ("X-Request-Id", "deploy-42"),
        ],
        r#"{"name":"ci","role":"viewer"}"#,
    )
    .await
    .unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.header("x-request-id"),
        Some("deploy-42"),
        "a sane incoming id is echoed"
    );
    let v: Value = serde_json::from_str(&created.body).unwrap();
    let token = v["token"].as_str().unwrap().to_owned();
    let token_id = v["id"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");

    let apps = http(
        addr,
        "GET",
        "/api/v1/apps",
        &[("Authorization", &bearer)],
        "",
    )
    .await
    .unwrap();
    assert_eq!(apps.status, 200, "{}", apps.body);
    let generated = apps.header("x-request-id").unwrap().to_owned();
    assert_eq!(generated.len(), 36, "a new UUID: {generated}");
    // An id with a space in it is not kept: a new one replaces it.
    let refused = http(
        addr,
        "GET",
        "/api/v1/me",
        &[
            ("Authorization", "Bearer pat_notarealtoken"),
            ("X-Request-Id", "two words"),
        ],
        "",
    )
    .await
    .unwrap();
    assert_eq!(refused.status, 401);
    let replaced = refused.header("x-request-id").unwrap().to_owned();
    assert_ne!(replaced, "two words");

    stop.send(()).unwrap();
    running.await.unwrap().unwrap();

    let lines = json_lines(&capture);
    let all = lines.iter().map(Value::to_string).collect::<String>();
    assert!(!all.contains(&password), "the password is in a log line");
    assert!(!all.contains(&token), "the token is in a log line");
    let banner = lines
        .iter()
        .find(|l| l["message"] == "keygate reference server listening")
        .expect("the banner is a JSON event");
    assert_eq!(banner["address"], format!("http://{addr}"));
    assert!(banner["database"].as_str().unwrap().ends_with("keygate.db"));
    assert!(
        lines.iter().any(|l| l["password_file"]
            .as_str()
            .is_some_and(|p| p.ends_with(server::PASSWORD_FILE))),
        "the password file's path is logged"
    );
    let request = |id: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "request" && l["request_id"] == id)
            .unwrap_or_else(|| panic!("no request line for {id}: {all}"))
            .clone()
    };
    let create = request("deploy-42");
    assert_eq!(create["method"], "POST");
    assert_eq!(create["path"], "/api/v1/tokens");
    assert_eq!(create["status"], 201);
    assert!(create["latency_us"].is_u64());
    let allowed = request(&generated);
    assert_eq!(allowed["token_id"], token_id.as_str(), "{allowed}");
    assert_eq!(allowed["status"], 200);
    assert!(allowed.get("rejection").is_none(), "{allowed}");
    let denied = request(&replaced);
    assert_eq!(denied["status"], 401);
    assert_eq!(denied["rejection"], "malformed", "{denied}");
    assert!(denied.get("token_id").is_none(), "{denied}");
    assert!(
        lines.iter().any(|l| l["message"] == "stopped"),
        "the shutdown is logged too"
    );

    // The audit events carry the same request id as the log line.
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains(&format!("\"request_id\":\"{generated}\""))),
        "{audit}"
    );
}

/// `config`'s app with a route `/slow` that says when it starts and answers `done` after
/// `wait`, bound and running until the returned sender fires.
async fn slow_server(
    config: &Config,
    wait: Duration,
) -> (
    SocketAddr,
    Arc<Notify>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), server::BoxError>>,
) {
    let mut app = server::build_app(config).await.unwrap();
    let started = Arc::new(Notify::new());
    let notify = started.clone();
    app.router = app.router.route(
        "/slow",
        axum::routing::get(move || {
            let notify = notify.clone();
            async move {
                notify.notify_one();
                tokio::time::sleep(wait).await;
                "done"
            }
        }),
    );
    let server = Server::bind_app(config, app).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    (addr, started, stop, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_lets_a_request_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        admin_password: Some(zeroize::Zeroizing::new("correct horse battery".into())),
        drain_timeout: Duration::from_secs(30),
        ..config(dir.path())
    };
    let (addr, started, stop, running) = slow_server(&config, Duration::from_millis(800)).await;
    let slow = tokio::spawn(http(addr, "GET", "/slow", &[], ""));
    started.notified().await;
    stop.send(()).unwrap();
    // The accept loop ends on the signal: a new connection finds no listener.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = http(addr, "GET", "/healthz", &[], "").await;
    assert!(
        late.as_ref().is_err() || late.as_ref().is_ok_and(|r| r.status == 0),
        "a connection made after the signal was served"
    );
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(
        (slow.status, slow.body.as_str()),
        (200, "done"),
        "the request in flight finishes"
    );
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the server stops once the request is answered")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_slower_than_the_drain_timeout_does_not_hold_the_server_nor_lose_the_flush() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        admin_password: Some(zeroize::Zeroizing::new("correct horse battery".into())),
        drain_timeout: Duration::from_secs(1),
        ..config(dir.path())
    };
    let (addr, started, stop, running) = slow_server(&config, Duration::from_secs(600)).await;
    // A token used once: its last-used time and its audit event are queued, not written
    // (the flush runs every 10 s).
    let store = keygate::store::sqlite::SqliteStore::open(&config.db)
        .await
        .unwrap();
    let tokens = keygate::Tokens::new(store.clone());
    let issued = tokens
        .issue(
            keygate::NewToken::new(ADMIN, "ci")
                .permissions(keygate::Permissions::parse(["apps:read"]).unwrap()),
        )
        .await
        .unwrap();
    let bearer = format!("Bearer {}", issued.token.expose_secret());
    let apps = http(
        addr,
        "GET",
        "/api/v1/apps",
        &[("Authorization", &bearer)],
        "",
    )
    .await
    .unwrap();
    assert_eq!(apps.status, 200, "{}", apps.body);

    let slow = tokio::spawn(http(addr, "GET", "/slow", &[], ""));
    started.notified().await;
    let signalled = std::time::Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("a request slower than the drain timeout held the server")
        .unwrap()
        .unwrap();
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "the request in flight got its drain time: {took:?}"
    );
    assert!(!slow.is_finished(), "the slow request was not answered");
    slow.abort();

    // The last flushes happened anyway.
    let record = keygate::TokenStore::get(&store, &issued.record.id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        record.last_used_at.is_some(),
        "the last-used time was written"
    );
    let events = keygate::audit::AuditReader::list_audit(
        &store,
        &keygate::audit::AuditFilter {
            token_id: Some(issued.record.id),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        events.iter().any(|e| e.event == "authenticate"),
        "the queued audit event was written: {events:?}"
    );
}

/// Runs `config`'s server until the returned sender fires.
async fn running(
    config: &Config,
) -> (
    Server,
    tokio::sync::oneshot::Sender<()>,
    impl FnOnce(Server) -> tokio::task::JoinHandle<Result<(), server::BoxError>>,
) {
    let server = Server::bind(config).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let start = move |server: Server| {
        tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }))
    };
    (server, stop, start)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_their_own_address_are_not_on_the_main_one() {
    let dir = tempfile::tempdir().unwrap();
    let apart = Config {
        admin_password: Some(zeroize::Zeroizing::new("correct horse battery".into())),
        metrics_addr: Some("127.0.0.1:0".into()),
        ..config(dir.path())
    };
    let (server, stop, start) = running(&apart).await;
    let (addr, metrics) = (server.local_addr(), server.metrics_addr().unwrap());
    assert_ne!(addr, metrics);
    let task = start(server);
    // A refused token counts in the verification metrics.
    let refused = http(
        addr,
        "GET",
        "/api/v1/me",
        &[("Authorization", "Bearer pat_notarealtoken")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(refused.status, 401);
    let main = http(addr, "GET", "/metrics", &[], "").await.unwrap();
    assert_eq!(main.status, 404, "the main address has no /metrics");
    let scraped = http(metrics, "GET", "/metrics", &[], "").await.unwrap();
    assert_eq!(scraped.status, 200);
    assert!(
        scraped.body.contains("keygate_verification"),
        "{}",
        scraped.body
    );
    let other = http(metrics, "GET", "/api/v1/openapi.json", &[], "")
        .await
        .unwrap();
    assert_eq!(other.status, 404, "the metrics address serves metrics only");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    // Without an address of their own, metrics are on the main one.
    let dir = tempfile::tempdir().unwrap();
    let together = Config {
        admin_password: Some(zeroize::Zeroizing::new("correct horse battery".into())),
        ..config(dir.path())
    };
    let (server, stop, start) = running(&together).await;
    assert_eq!(server.metrics_addr(), None);
    let addr = server.local_addr();
    let task = start(server);
    let main = http(addr, "GET", "/metrics", &[], "").await.unwrap();
    assert_eq!(main.status, 200);
    assert!(main.body.contains("keygate_verification"), "{}", main.body);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

/// Waits (at most 20 s) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_audit_file_after_rotation() {
    use std::os::unix::fs::PermissionsExt;
    // Installed first: a SIGHUP can never end this test process, whatever the order.
    let _hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let config = Config {
        admin_password: Some(zeroize::Zeroizing::new("correct horse battery".into())),
        audit_log: Some(path.clone()),
        ..config(dir.path())
    };
    let (server, stop, start) = running(&config).await;
    let addr = server.local_addr();
    let task = start(server);
    let refuse = || {
        http(
            addr,
            "GET",
            "/api/v1/me",
            &[("Authorization", "Bearer pat_x")],
            "",
        )
    };
    assert_eq!(refuse().await.unwrap().status, 401);
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    eventually("the refusal is audited", || lines(&path) == 1).await;

    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("a new file at the path", || path.exists()).await;
    assert_eq!(refuse().await.unwrap().status, 401);
    eventually("the next event in the new file", || lines(&path) == 1).await;
    assert_eq!(lines(&rotated), 1, "the moved file keeps what it had");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the new file is the owner's only");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_deletes_audit_events_past_the_retention() {
    use keygate::audit::{AuditEvent, AuditFilter, AuditReader, AuditSink, Decision};
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        admin_password: Some(zeroize::Zeroizing::new("correct horse battery".into())),
        audit_retention: Some(Duration::from_secs(12 * 3600)),
        ..config(dir.path())
    };
    let server = Server::bind(&config).await.unwrap();
    let store = keygate::store::sqlite::SqliteStore::open(&config.db)
        .await
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let at = |hours_ago: u64, reason: &str| AuditEvent {
        timestamp: now - Duration::from_secs(hours_ago * 3600),
        event: "authenticate".into(),
        api_token_id: None,
        api_token_name: None,
        owner: None,
        method: "GET".into(),
        path: "/api/v1/me".into(),
        status_code: 401,
        rbac_decision: Decision::Deny,
        reason: Some(reason.into()),
        client_ip: None,
        request_id: None,
        details: None,
    };
    store
        .write(&[at(24 * 30, "old"), at(13, "old"), at(11, "recent")])
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let reasons = || async {
        store
            .list_audit(&AuditFilter::default())
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| e.reason)
            .collect::<Vec<_>>()
    };
    let mut left = reasons().await;
    for _ in 0..200 {
        if left == ["recent"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = reasons().await;
    }
    assert_eq!(
        left,
        ["recent"],
        "events past 12 h are deleted at the start"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

/// Whether the server closes `stream` within `bound`, reading (and dropping) whatever it
/// sends meanwhile; `feed` is written every 200 ms until then (a slow client's trickle).
async fn closed_within(stream: &mut tokio::net::TcpStream, bound: Duration, feed: &[u8]) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    let mut buf = [0u8; 512];
    loop {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => {
                if !feed.is_empty() && stream.write_all(feed).await.is_err() {
                    return true;
                }
            }
        }
    }
}

/// Slowloris: connections that send a request head a byte at a time, or nothing at all,
/// would each hold a socket and a task for as long as the client likes (`axum::serve`
/// leaves hyper's header timeout off), until the process runs out of file descriptors.
/// Each is closed once the header timeout has passed; a client that sends its request
/// in time is served, on a kept-alive connection as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_connections_are_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        admin_password: Some(zeroize::Zeroizing::new("correct horse battery".into())),
        ..config(dir.path())
    };
    assert_eq!(server::HEADER_READ_TIMEOUT, Duration::from_secs(30));
    let server = Server::bind(&config)
        .await
        .unwrap()
        .with_header_read_timeout(Duration::from_secs(1));
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));

    let mut trickle = tokio::net::TcpStream::connect(addr).await.unwrap();
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A kept-alive connection that goes quiet after one answered request.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 256];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    // Generous: ten times the timeout.
    let bound = Duration::from_secs(10);
    assert!(
        closed_within(&mut trickle, bound, b"X").await,
        "a head sent a byte at a time is still open after {bound:?}"
    );
    assert!(
        closed_within(&mut silent, bound, b"").await,
        "a connection that sends nothing is still open after {bound:?}"
    );
    assert!(
        closed_within(&mut idle, bound, b"").await,
        "an idle kept-alive connection is still open after {bound:?}"
    );

    // Clients that send their requests in time are served as before.
    let ok = http(addr, "GET", "/healthz", &[], "").await.unwrap();
    assert_eq!(ok.status, 200);
    let refused = http(
        addr,
        "GET",
        "/api/v1/me",
        &[("Authorization", "Bearer pat_notarealtoken")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(refused.status, 401);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
