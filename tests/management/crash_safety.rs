//! The reference server (`examples/server.rs`) killed with SIGKILL in the middle of a
//! stream of creates and revokes, then restarted on the same SQLite file: every token
//! whose 201 reached the client still verifies, and every revoke answered 204 still holds.
//!
//! The test runs the example's binary (`target/debug/examples/server`, which `cargo test`
//! builds with the examples) as a child process on a temporary database and a loopback port
//! the server picks itself (`KEYGATE_ADDR=127.0.0.1:0`; the address is read from its first
//! line of output). When the binary is missing it is built into `target/crash-safety`
//! (its own target directory, so as not to wait on the lock of the running `cargo test`).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const ADMIN: &str = "admin@example.com";
/// A throwaway password for the throwaway database of this test.
const PASSWORD: &str = "crash-safety test password";

fn server_binary() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let exe = format!("server{}", std::env::consts::EXE_SUFFIX);
    let built = target.join("debug/examples").join(&exe);
    if built.exists() {
        return built;
    }
    let own = root.join("target/crash-safety");
    eprintln!(
        "{} is missing; building the example into {}",
        built.display(),
        own.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--example", "server", "--target-dir"])
        .arg(&own)
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(status.success(), "cargo build --example server failed");
    own.join("debug/examples").join(exe)
}

/// A running server and its address.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(db: &Path) -> Self {
        let mut child = Command::new(server_binary())
            .env("KEYGATE_DB", db)
            .env("KEYGATE_ADDR", "127.0.0.1:0")
            .env("KEYGATE_ADMIN_EMAIL", ADMIN)
            .env("KEYGATE_ADMIN_PASSWORD", PASSWORD)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // "keygate reference server on http://127.0.0.1:PORT (database: …)"
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        let addr = loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "the server exited before listening"
            );
            if let Some(rest) = line.split("http://").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
            assert!(Instant::now() < deadline, "the server did not start");
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Self { child, addr }
    }

    /// SIGKILL: no graceful shutdown, no final flush.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request over a fresh connection; `Err` when the connection fails (the
/// server is gone), so the outcome is unknown.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    auth: &str,
    form: Option<&str>,
) -> std::io::Result<(u16, Value)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let body = form.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if form.is_some() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(std::io::Error::other("truncated response"));
    };
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).map_err(std::io::Error::other)?
    };
    Ok((status, json))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn basic() -> String {
    crate::common::basic(ADMIN, PASSWORD)
}

/// What the clients saw acknowledged.
#[derive(Default)]
struct Acked {
    /// (id, token) of every create answered 201.
    created: Vec<(String, String)>,
    /// Ids of every revoke answered 204.
    revoked: Vec<String>,
    /// Ids of revokes sent but never answered (the server died): either outcome is right.
    in_flight: Vec<String>,
}

/// Two clients create tokens and revoke every third one until the server goes away.
fn stream_until_killed(server: Server, acked: &Arc<Mutex<Acked>>, cycle: usize, min_acks: usize) {
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
                let Ok((status, v)) = http(&addr, "POST", "/api/v1/tokens", &auth, Some(&form))
                else {
                    break;
                };
                assert_eq!(status, 201, "create: {v}");
                let id = v["id"].as_str().unwrap().to_owned();
                let token = v["token"].as_str().unwrap().to_owned();
                acked.lock().unwrap().created.push((id.clone(), token));
                if i % 3 == 2 {
                    let path = format!("/api/v1/tokens/{id}");
                    let Ok((status, v)) = http(&addr, "DELETE", &path, &auth, None) else {
                        acked.lock().unwrap().in_flight.push(id);
                        break;
                    };
                    assert_eq!(status, 204, "revoke: {v}");
                    acked.lock().unwrap().revoked.push(id);
                }
            }
        }));
    }
    // Kill once enough has been acknowledged, while both clients still have requests in
    // flight.
    let deadline = Instant::now() + Duration::from_secs(30);
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
fn check(server: &Server, acked: &Acked, label: &str) -> (usize, usize) {
    let revoked: std::collections::HashSet<&String> = acked.revoked.iter().collect();
    let (mut live, mut dead) = (0, 0);
    for (id, token) in &acked.created {
        if acked.in_flight.contains(id) {
            continue;
        }
        let (status, v) = http(
            &server.addr,
            "GET",
            "/api/v1/me",
            &format!("Bearer {token}"),
            None,
        )
        .unwrap();
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

#[test]
fn sigkill_mid_stream_loses_no_acknowledged_create_or_revoke_on_sqlite() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    let acked = Arc::new(Mutex::new(Acked::default()));
    for cycle in 0..3 {
        let server = Server::start(&db);
        if cycle > 0 {
            // Everything acknowledged before the previous kill, before any new traffic.
            let (live, dead) = check(&server, &acked.lock().unwrap(), &format!("restart {cycle}"));
            eprintln!(
                "restart {cycle}: {live} acknowledged tokens verify, {dead} acknowledged revokes hold"
            );
        }
        stream_until_killed(server, &acked, cycle, 24);
    }
    let server = Server::start(&db);
    let (live, dead) = check(&server, &acked.lock().unwrap(), "final restart");
    eprintln!(
        "final restart: {live} acknowledged tokens verify, {dead} acknowledged revokes hold ({:?})",
        started.elapsed()
    );
    assert!(live > 0 && dead > 0, "the stream acknowledged too little");
    // The list agrees: every acknowledged, unrevoked token is there.
    let (status, v) = http(&server.addr, "GET", "/api/v1/tokens", &basic(), None).unwrap();
    assert_eq!(status, 200);
    let listed: std::collections::HashSet<&str> = v
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
            "{id} in the list"
        );
    }
}
