//! The chaos and soak harness that `scripts/chaos.sh` and `scripts/soak.sh` run: two
//! `keygate serve` processes on a PostgreSQL and a Redis of the harness's own, under a steady
//! load of valid, invalid and revoked tokens while tokens are created and revoked.
//!
//! ```sh
//! cargo build --release --features server --bin keygate --example chaos
//! target/release/examples/chaos chaos --bin target/release/keygate
//! target/release/examples/chaos soak --bin target/release/keygate --minutes 10
//! ```
//!
//! `chaos` runs the faults one after the other, each followed by a quiet stretch:
//! PostgreSQL stopped for 2 s and started again, Redis shut down for 2 s and started again
//! (empty), the backends of the revocation listeners ended with `pg_terminate_backend`,
//! and the second instance killed with SIGKILL and started again. For each fault it measures
//! the time from the service being back (`pg_isready`, Redis `PING`, the instance's
//! `/healthz`) to the first second in which every answer was the right one. `soak` runs the
//! same load with no fault and reports, every minute, each instance's resident memory, the
//! fewest open file descriptors it had in the minute's once-a-second samples, and the latency
//! percentiles.
//!
//! Both modes check every answer: a valid token must be let in (200), an invalid one (garbage,
//! a wrong checksum, a well-formed unknown token) and a revoked one refused (401). A 5xx
//! other than 503, or a token let in more than 1 s after its revoke returned, is a failure.
//! The report is a plain-text table and one JSON line (starting `{"mode":`); the exit status
//! is 1 when a goal is missed.
//!
//! Everything runs on loopback. PostgreSQL (`initdb`, `pg_ctl`, `pg_isready`, `psql` from
//! `--pg-bin`, default `/usr/lib/postgresql/15/bin`; run as the `postgres` user through
//! `runuser` when the harness runs as root) and `redis-server` live in a temporary
//! directory that is removed at the end (`--keep` keeps it, with the servers' logs). The
//! harness stops by itself: a deadline ends the run, and the services are stopped on the
//! way out, on an error, Ctrl-C or SIGTERM too.
//!
//! Options: `--bin PATH` (the keygate binary, default `target/release/keygate`), `--rate N`
//! (requests a second over both instances, default 300), `--minutes N` (soak, default 10),
//! `--pg-port` (55432), `--redis-port` (56379), `--port` (the first instance's; the second
//! listens on the next, default 38080), `--pg-bin DIR`, `--keep`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::Rng;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const ADMIN_EMAIL: &str = "chaos@example.com";
/// Requests in a window before it may count as "a fully correct second".
const MIN_WINDOW_REQUESTS: usize = 20;
/// Live tokens the churn keeps.
const LIVE_TOKENS: usize = 30;
/// Idle kept-alive connections per instance.
const MAX_IDLE: usize = 32;

// ---------------------------------------------------------------------------------------
// Options

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Chaos,
    Soak,
}

#[derive(Clone, Debug)]
struct Options {
    mode: Mode,
    bin: PathBuf,
    rate: u32,
    minutes: u32,
    pg_port: u16,
    redis_port: u16,
    port: u16,
    pg_bin: PathBuf,
    keep: bool,
}

fn options() -> Result<Options, BoxError> {
    let mut args = std::env::args().skip(1);
    let mode = match args.next().as_deref() {
        Some("chaos") => Mode::Chaos,
        Some("soak") => Mode::Soak,
        other => return Err(format!("expected `chaos` or `soak`, not {other:?}").into()),
    };
    let mut o = Options {
        mode,
        bin: "target/release/keygate".into(),
        rate: 300,
        minutes: 10,
        pg_port: 55432,
        redis_port: 56379,
        port: 38080,
        pg_bin: "/usr/lib/postgresql/15/bin".into(),
        keep: false,
    };
    while let Some(flag) = args.next() {
        if flag == "--keep" {
            o.keep = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bin" => o.bin = value.into(),
            "--rate" => o.rate = value.parse()?,
            "--minutes" => o.minutes = value.parse()?,
            "--pg-port" => o.pg_port = value.parse()?,
            "--redis-port" => o.redis_port = value.parse()?,
            "--port" => o.port = value.parse()?,
            "--pg-bin" => o.pg_bin = value.into(),
            _ => return Err(format!("unknown option {flag}").into()),
        }
    }
    if o.rate == 0 || o.minutes == 0 {
        return Err("--rate and --minutes must be above 0".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------
// The private PostgreSQL and Redis

/// Runs a command to completion; its output is returned, a failure is an error naming it.
fn run(program: &Path, args: &[&str], as_postgres: bool) -> Result<String, BoxError> {
    let mut cmd = if as_postgres {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        std::process::Command::new(program)
    };
    let out = cmd.args(args).stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(format!(
            "{} {} failed: {}{}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Services {
    dir: PathBuf,
    pg_bin: PathBuf,
    pg_port: u16,
    redis_port: u16,
    /// initdb and postgres refuse root: run them as `postgres`.
    as_postgres: bool,
}

impl Services {
    fn pg(&self, tool: &str) -> PathBuf {
        self.pg_bin.join(tool)
    }

    fn data(&self) -> String {
        self.dir.join("pg").display().to_string()
    }

    fn create(dir: &Path, o: &Options) -> Result<Self, BoxError> {
        let root = run(Path::new("id"), &["-u"], false)?.trim() == "0";
        let s = Self {
            dir: dir.to_owned(),
            pg_bin: o.pg_bin.clone(),
            pg_port: o.pg_port,
            redis_port: o.redis_port,
            as_postgres: root,
        };
        if root {
            run(
                Path::new("chown"),
                &["-R", "postgres:postgres", &dir.display().to_string()],
                false,
            )?;
        }
        run(
            &s.pg("initdb"),
            &[
                "-D",
                &s.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            s.as_postgres,
        )?;
        s.start_pg()?;
        run(
            &s.pg("psql"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &s.pg_port.to_string(),
                "-U",
                "postgres",
                "-q",
                "-c",
                "CREATE DATABASE keygate",
            ],
            false,
        )?;
        s.start_redis()?;
        Ok(s)
    }

    fn start_pg(&self) -> Result<(), BoxError> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.pg_port,
            self.dir.display()
        );
        run(
            &self.pg("pg_ctl"),
            &[
                "-D",
                &self.data(),
                "-l",
                &self.dir.join("postgres.log").display().to_string(),
                "-w",
                "-o",
                &opts,
                "start",
            ],
            self.as_postgres,
        )?;
        Ok(())
    }

    fn stop_pg(&self, mode: &str) -> Result<(), BoxError> {
        run(
            &self.pg("pg_ctl"),
            &["-D", &self.data(), "-w", "-m", mode, "stop"],
            self.as_postgres,
        )?;
        Ok(())
    }

    fn pg_ready(&self) -> bool {
        run(
            &self.pg("pg_isready"),
            &["-q", "-h", "127.0.0.1", "-p", &self.pg_port.to_string()],
            false,
        )
        .is_ok()
    }

    fn psql(&self, sql: &str) -> Result<String, BoxError> {
        run(
            &self.pg("psql"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.pg_port.to_string(),
                "-U",
                "postgres",
                "-d",
                "keygate",
                "-At",
                "-c",
                sql,
            ],
            false,
        )
    }

    fn start_redis(&self) -> Result<(), BoxError> {
        let dir = self.dir.display().to_string();
        run(
            Path::new("redis-server"),
            &[
                "--port",
                &self.redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--dir",
                &dir,
                "--pidfile",
                &format!("{dir}/redis.pid"),
                "--logfile",
                &format!("{dir}/redis.log"),
            ],
            false,
        )?;
        Ok(())
    }

    fn stop_redis(&self) -> Result<(), BoxError> {
        run(
            Path::new("redis-cli"),
            &["-p", &self.redis_port.to_string(), "shutdown", "nosave"],
            false,
        )?;
        Ok(())
    }

    fn redis_ready(&self) -> bool {
        run(
            Path::new("redis-cli"),
            &["-p", &self.redis_port.to_string(), "ping"],
            false,
        )
        .is_ok_and(|out| out.trim() == "PONG")
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        let _ = self.stop_pg("immediate");
        if self.stop_redis().is_err()
            && let Ok(pid) = std::fs::read_to_string(self.dir.join("redis.pid"))
        {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The keygate instances

struct Instance {
    addr: SocketAddr,
    log: PathBuf,
    env: Vec<(String, String)>,
    bin: PathBuf,
    child: Option<Child>,
}

impl Instance {
    fn start(&mut self) -> Result<(), BoxError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .arg("serve")
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// Resident memory (kB) and open file descriptors of a process.
fn usage(pid: Option<u32>) -> (u64, u64) {
    let Some(pid) = pid else { return (0, 0) };
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    (rss, fds)
}

// ---------------------------------------------------------------------------------------
// A small HTTP/1.1 client with keep-alive connections

type Sender = http1::SendRequest<Full<Bytes>>;

struct Client {
    addr: SocketAddr,
    idle: Mutex<Vec<Sender>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Status(u16),
    /// No connection, or the connection broke before an answer.
    ConnError,
    /// No answer within the client's timeout.
    Timeout,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            idle: Mutex::new(Vec::new()),
        }
    }

    async fn connect(&self) -> Result<Sender, BoxError> {
        let stream = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(self.addr),
        )
        .await??;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn pooled(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    async fn once(
        &self,
        mut sender: Sender,
        req: Request<Full<Bytes>>,
    ) -> Result<(u16, Bytes), BoxError> {
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Kept-alive connections past a few are closed: the instances' descriptor counts
        // then measure the instances, not how many requests were once in flight.
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
        drop(idle);
        Ok((status, body))
    }

    /// Sends `make()`'s request; a kept-alive connection that turns out closed is replaced
    /// by a new one once.
    async fn send(
        &self,
        make: impl Fn() -> Request<Full<Bytes>>,
        timeout: Duration,
    ) -> (Outcome, Bytes) {
        self.send_noting(make, timeout, &Mutex::new(Vec::new()))
            .await
    }

    /// [`send`](Self::send), noting the error of a failed request in `errors`.
    async fn send_noting(
        &self,
        make: impl Fn() -> Request<Full<Bytes>>,
        timeout: Duration,
        errors: &Mutex<Vec<String>>,
    ) -> (Outcome, Bytes) {
        let attempt = async {
            if let Some(sender) = self.pooled()
                && let Ok(answer) = self.once(sender, make()).await
            {
                return Ok(answer);
            }
            let sender = self.connect().await?;
            self.once(sender, make()).await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok((status, body))) => (Outcome::Status(status), body),
            Ok(Err(e)) => {
                let mut errors = errors.lock().unwrap_or_else(|e| e.into_inner());
                if errors.len() < 50 {
                    errors.push(format!("{} {}: {e}", wall_now(), self.addr));
                }
                (Outcome::ConnError, Bytes::new())
            }
            Err(_) => (Outcome::Timeout, Bytes::new()),
        }
    }
}

fn get(path: &str, auth: Option<&str>) -> Request<Full<Bytes>> {
    let mut r = Request::builder().method(Method::GET).uri(path);
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    r.body(Full::new(Bytes::new())).expect("a valid request")
}

// ---------------------------------------------------------------------------------------
// Tokens and the record of every request

#[derive(Clone, Copy, Debug, PartialEq)]
enum TokState {
    Live,
    /// The revoke was sent at this time and has not returned.
    Revoking(f64),
    /// Sent, and its 204 returned, through instance `via`.
    Revoked {
        sent: f64,
        returned: f64,
        via: u8,
    },
    /// The revoke failed (e.g. 503 while PostgreSQL was down): maybe revoked, maybe not;
    /// no longer used, nor judged, from the moment it was sent.
    Uncertain(f64),
}

struct Tok {
    secret: String,
    id: String,
    state: TokState,
}

#[derive(Default)]
struct Table {
    toks: Vec<Tok>,
    live: VecDeque<usize>,
    revoked: VecDeque<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Cat {
    /// A live token (judged against its revoke's times at the end).
    Token,
    /// A token whose revoke had returned when the request was sent.
    Revoked,
    Garbage,
    WrongChecksum,
    Unknown,
}

impl Cat {
    fn name(self) -> &'static str {
        match self {
            Cat::Token => "valid",
            Cat::Revoked => "revoked",
            Cat::Garbage => "garbage",
            Cat::WrongChecksum => "wrong_checksum",
            Cat::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Rec {
    sent: f64,
    done: f64,
    instance: u8,
    cat: Cat,
    token: Option<usize>,
    outcome: Outcome,
}

/// What a request's answer should have been.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Right,
    Wrong,
    /// Either answer is right (the request crossed its token's revoke), or the token's
    /// revoke failed and its state is unknown.
    Either,
    /// Let in by the instance that did not revoke the token, within
    /// [`STALENESS_BOUND`] of the revoke returning: the documented window in which another
    /// instance's cache may still hold the token (its notification on the way). Reported,
    /// not wrong; the revoking instance itself must refuse at once.
    Stale,
}

/// How long after a revoke returned another instance may still let its token in: the
/// bound the deployment guide documents for a cache fed by notifications.
const STALENESS_BOUND: f64 = 1.0;

struct Judged {
    verdict: Verdict,
    /// A 2xx for a token sent this long after its revoke returned.
    admitted_after_revoke: Option<f64>,
}

fn judge(rec: &Rec, toks: &[Tok]) -> Judged {
    let status = match rec.outcome {
        Outcome::Status(s) => s,
        _ => {
            return Judged {
                verdict: Verdict::Wrong,
                admitted_after_revoke: None,
            };
        }
    };
    let ok = (200..300).contains(&status);
    let Some(t) = rec.token else {
        return Judged {
            verdict: if status == 401 {
                Verdict::Right
            } else {
                Verdict::Wrong
            },
            admitted_after_revoke: None,
        };
    };
    let (expect_ok, either, after) = match toks[t].state {
        TokState::Live => (true, false, None),
        TokState::Revoking(sent) | TokState::Uncertain(sent) => (true, rec.done >= sent, None),
        TokState::Revoked {
            sent,
            returned,
            via,
        } => {
            if rec.sent > returned {
                let after = rec.sent - returned;
                if ok && rec.instance != via && after <= STALENESS_BOUND {
                    return Judged {
                        verdict: Verdict::Stale,
                        admitted_after_revoke: Some(after),
                    };
                }
                (false, false, Some(after))
            } else {
                (true, rec.done >= sent, None)
            }
        }
    };
    let verdict = if either && (ok || status == 401) {
        Verdict::Either
    } else if (expect_ok && ok) || (!expect_ok && status == 401) {
        Verdict::Right
    } else {
        Verdict::Wrong
    };
    Judged {
        verdict,
        admitted_after_revoke: if ok { after } else { None },
    }
}

// ---------------------------------------------------------------------------------------
// The run

struct Shared {
    start: Instant,
    /// `start` on the wall clock.
    start_wall: time::OffsetDateTime,
    clients: [Client; 2],
    table: Mutex<Table>,
    recs: Mutex<Vec<Rec>>,
    unknown: Vec<String>,
    basic: String,
    manager: Mutex<Option<String>>,
    creates: Mutex<(u64, u64)>,
    revokes: Mutex<(u64, u64)>,
    stop: tokio::sync::watch::Sender<bool>,
    /// The first connection errors of the load, with their time.
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One load request: its kind and token chosen now, sent on a task of its own.
fn fire(shared: &Arc<Shared>, n: u64, rng: &mut impl Rng) {
    let instance = (n % 2) as u8;
    let slot = n % 20;
    let (cat, token, bearer) = {
        let table = shared.table();
        let live = |rng: &mut dyn rand::RngCore| {
            if table.live.is_empty() {
                None
            } else {
                let i = table.live[rng.random_range(0..table.live.len())];
                Some(i)
            }
        };
        match slot {
            0..=10 => match live(rng) {
                Some(i) => (Cat::Token, Some(i), table.toks[i].secret.clone()),
                None => (Cat::Garbage, None, "nothing-live-yet".to_owned()),
            },
            // One in three to the newest revoked token: the first milliseconds after a
            // revoke, when the other instance's cache may still hold it, are sampled densely.
            11 if !table.revoked.is_empty() => {
                let i = table.revoked[table.revoked.len() - 1];
                (Cat::Revoked, Some(i), table.toks[i].secret.clone())
            }
            12 | 13 if !table.revoked.is_empty() => {
                let i = table.revoked[rng.random_range(0..table.revoked.len())];
                (Cat::Revoked, Some(i), table.toks[i].secret.clone())
            }
            11..=15 => (
                Cat::Garbage,
                None,
                format!("garbage-{}", rng.random::<u64>()),
            ),
            16 | 17 => match live(rng) {
                Some(i) => {
                    let mut s = table.toks[i].secret.clone();
                    let last = s.pop().unwrap_or('a');
                    s.push(if last == 'a' { 'b' } else { 'a' });
                    (Cat::WrongChecksum, None, s)
                }
                None => (Cat::Garbage, None, "nothing-live-yet".to_owned()),
            },
            _ => (
                Cat::Unknown,
                None,
                shared.unknown[rng.random_range(0..shared.unknown.len())].clone(),
            ),
        }
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let auth = format!("Bearer {bearer}");
        let sent = shared.now();
        let (outcome, _) = shared.clients[usize::from(instance)]
            .send_noting(
                || get("/api/v1/verify", Some(&auth)),
                Duration::from_secs(5),
                &shared.errors,
            )
            .await;
        let done = shared.now();
        shared
            .recs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Rec {
                sent,
                done,
                instance,
                cat,
                token,
                outcome,
            });
    });
}

async fn load(shared: Arc<Shared>, rate: u32) {
    let mut stop = shared.stop.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let per_tick = f64::from(rate) / 100.0;
    let mut owed = 0.0;
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        owed += per_tick;
        let mut rng = rand::rng();
        while owed >= 1.0 {
            owed -= 1.0;
            fire(&shared, n, &mut rng);
            n += 1;
        }
    }
}

/// Creates a token through `instance` with the admin's password; returns (id, secret).
async fn create(shared: &Shared, instance: usize, name: &str) -> Option<(String, String)> {
    let body = json!({ "name": name }).to_string();
    let basic = shared.basic.clone();
    let (outcome, bytes) = shared.clients[instance]
        .send(
            || {
                Request::builder()
                    .method(Method::POST)
                    .uri("/api/v1/tokens")
                    .header("authorization", &basic)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.clone())))
                    .expect("a valid request")
            },
            Duration::from_secs(10),
        )
        .await;
    let ok = matches!(outcome, Outcome::Status(s) if (200..300).contains(&s));
    let made = if ok {
        serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
            Some((
                v.get("id")?.as_str()?.to_owned(),
                v.get("token")?.as_str()?.to_owned(),
            ))
        })
    } else {
        None
    };
    let mut c = shared.creates.lock().unwrap_or_else(|e| e.into_inner());
    if made.is_some() {
        c.0 += 1;
    } else {
        c.1 += 1;
    }
    made
}

/// Revokes token `i` through `instance`, recording when it was sent and when its 204 came.
async fn revoke(shared: &Shared, instance: usize, i: usize) {
    let id = {
        let mut table = shared.table();
        table.live.retain(|&x| x != i);
        let now = shared.now();
        table.toks[i].state = TokState::Revoking(now);
        table.toks[i].id.clone()
    };
    let manager = shared
        .manager
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default();
    let uri = format!("/api/v1/tokens/{id}");
    let (outcome, _) = shared.clients[instance]
        .send(
            || {
                Request::builder()
                    .method(Method::DELETE)
                    .uri(&uri)
                    .header("authorization", &manager)
                    .body(Full::new(Bytes::new()))
                    .expect("a valid request")
            },
            Duration::from_secs(10),
        )
        .await;
    let returned = shared.now();
    let mut table = shared.table();
    let TokState::Revoking(sent) = table.toks[i].state else {
        return;
    };
    let mut r = shared.revokes.lock().unwrap_or_else(|e| e.into_inner());
    if outcome == Outcome::Status(204) {
        r.0 += 1;
        table.toks[i].state = TokState::Revoked {
            sent,
            returned,
            via: u8::try_from(instance).unwrap_or(u8::MAX),
        };
        table.revoked.push_back(i);
        if table.revoked.len() > 100 {
            table.revoked.pop_front();
        }
    } else {
        r.1 += 1;
        table.toks[i].state = TokState::Uncertain(sent);
    }
}

/// Creates and revokes tokens every `every`, keeping about [`LIVE_TOKENS`] live.
async fn churn(shared: Arc<Shared>, every: Duration) {
    let mut stop = shared.stop.subscribe();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: usize = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        n += 1;
        if let Some((id, secret)) = create(&shared, n % 2, &format!("load-{n}")).await {
            let mut table = shared.table();
            let i = table.toks.len();
            table.toks.push(Tok {
                secret,
                id,
                state: TokState::Live,
            });
            table.live.push_back(i);
        }
        let oldest = {
            let table = shared.table();
            (table.live.len() > LIVE_TOKENS).then(|| table.live[0])
        };
        if let Some(i) = oldest {
            revoke(&shared, (n + 1) % 2, i).await;
        }
    }
}

async fn wait_for(
    what: &str,
    limit: Duration,
    mut ready: impl AsyncFnMut() -> bool,
) -> Result<(), BoxError> {
    let deadline = Instant::now() + limit;
    loop {
        if ready().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{what} not ready within {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn answers(client: &Client, path: &str, want: u16) -> bool {
    client
        .send(|| get(path, None), Duration::from_secs(2))
        .await
        .0
        == Outcome::Status(want)
}

// ---------------------------------------------------------------------------------------
// Faults

struct Fault {
    name: &'static str,
    start: f64,
    back: f64,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BoxError> {
    Ok(tokio::task::spawn_blocking(f).await?)
}

async fn faults(
    shared: &Arc<Shared>,
    services: &Arc<Services>,
    instances: &mut [Instance; 2],
    quiet: Duration,
    samples: &mut BTreeMap<String, (u64, u64)>,
) -> Result<Vec<Fault>, BoxError> {
    let mut done = Vec::new();

    // (a) PostgreSQL stopped (fast shutdown: connections closed) for 2 s, started again.
    let start = shared.now();
    let s = services.clone();
    blocking(move || s.stop_pg("fast")).await??;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = services.clone();
    blocking(move || s.start_pg()).await??;
    let s = services.clone();
    wait_for("PostgreSQL", Duration::from_secs(30), async || {
        let s = s.clone();
        blocking(move || s.pg_ready()).await.unwrap_or(false)
    })
    .await?;
    done.push(Fault {
        name: "postgres_restart",
        start,
        back: shared.now(),
    });
    tokio::time::sleep(quiet).await;

    // (b) Redis shut down for 2 s and started again, empty.
    let start = shared.now();
    let s = services.clone();
    blocking(move || s.stop_redis()).await??;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = services.clone();
    blocking(move || s.start_redis()).await??;
    let s = services.clone();
    wait_for("Redis", Duration::from_secs(30), async || {
        let s = s.clone();
        blocking(move || s.redis_ready()).await.unwrap_or(false)
    })
    .await?;
    done.push(Fault {
        name: "redis_restart",
        start,
        back: shared.now(),
    });
    tokio::time::sleep(quiet).await;

    // (c) The revocation listeners' backends ended (both instances').
    let start = shared.now();
    let s = services.clone();
    let ended = blocking(move || {
        s.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = 'keygate' AND query ILIKE 'LISTEN%'",
        )
    })
    .await??;
    let ended: u32 = ended.trim().parse().unwrap_or(0);
    if ended == 0 {
        return Err("no revocation listener backend found to terminate".into());
    }
    done.push(Fault {
        name: "listener_terminated",
        start,
        back: shared.now(),
    });
    tokio::time::sleep(quiet).await;

    // (d) The second instance killed (SIGKILL) and started again after 1 s.
    let start = shared.now();
    let (rss, fds) = usage(instances[1].pid());
    samples.insert("b_before_kill".into(), (rss, fds));
    instances[1].kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    instances[1].start()?;
    let client = &shared.clients[1];
    wait_for("instance b", Duration::from_secs(30), async || {
        answers(client, "/healthz", 200).await
    })
    .await?;
    done.push(Fault {
        name: "instance_sigkill",
        start,
        back: shared.now(),
    });
    tokio::time::sleep(quiet).await;
    Ok(done)
}

// ---------------------------------------------------------------------------------------
// Analysis

/// From `back`, the first instant starting a second in which every answer was right (and at
/// least [`MIN_WINDOW_REQUESTS`] came); `None` when there is none before `until`.
fn recovered(recs: &[(f64, Verdict)], back: f64, until: f64) -> Option<f64> {
    let mut window_start = back;
    let mut count = 0;
    for &(sent, verdict) in recs.iter().filter(|(s, _)| *s >= back && *s < until) {
        if sent >= window_start + 1.0 && count >= MIN_WINDOW_REQUESTS {
            return Some(window_start);
        }
        if verdict == Verdict::Wrong {
            window_start = sent + 1e-6;
            count = 0;
        } else if sent >= window_start {
            count += 1;
        }
    }
    None
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("chaos: {e}");
            std::process::exit(2);
        }
    };
    let deadline = match o.mode {
        Mode::Chaos => Duration::from_secs(300),
        Mode::Soak => Duration::from_secs(u64::from(o.minutes) * 60 + 300),
    };
    let dir = match tempfile::Builder::new().prefix("keygate-chaos-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("chaos: cannot make a temporary directory: {e}");
            std::process::exit(2);
        }
    };
    let path = dir.path().to_owned();
    let outcome = tokio::select! {
        r = tokio::time::timeout(deadline, run_all(&o, &path)) => match r {
            Ok(r) => r,
            Err(_) => Err(format!("the run passed its deadline of {deadline:?}").into()),
        },
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        _ = sigterm() => Err("terminated".into()),
    };
    // The instances were killed and the services stopped when `run_all` ended (dropped).
    if o.keep {
        let kept = dir.keep();
        eprintln!("chaos: kept {}", kept.display());
    }
    match outcome {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("chaos: error: {e}");
            std::process::exit(2);
        }
    }
}

async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

async fn run_all(o: &Options, dir: &Path) -> Result<bool, BoxError> {
    let services = {
        let (dir, o2) = (dir.to_owned(), o.clone());
        Arc::new(blocking(move || Services::create(&dir, &o2)).await??)
    };
    let password = format!("chaos-{}", uuid::Uuid::new_v4().simple());
    let addrs: [SocketAddr; 2] = [
        SocketAddr::from(([127, 0, 0, 1], o.port)),
        SocketAddr::from(([127, 0, 0, 1], o.port + 1)),
    ];
    let mk = |i: usize| {
        let env = vec![
            (
                "KEYGATE_DB".to_owned(),
                format!(
                    "postgres://postgres@127.0.0.1:{}/keygate?sslmode=disable",
                    o.pg_port
                ),
            ),
            (
                "KEYGATE_REDIS_URL".to_owned(),
                format!("redis://127.0.0.1:{}/0", o.redis_port),
            ),
            ("KEYGATE_ADDR".to_owned(), addrs[i].to_string()),
            ("KEYGATE_ADMIN_EMAIL".to_owned(), ADMIN_EMAIL.to_owned()),
            ("KEYGATE_ADMIN_PASSWORD".to_owned(), password.clone()),
            // Roomy limits: the load is one client address and a few tokens.
            ("KEYGATE_RATE_LIMIT".to_owned(), "10000000".to_owned()),
            ("KEYGATE_FAILURE_LIMIT".to_owned(), "10000000".to_owned()),
            ("KEYGATE_DRAIN_TIMEOUT".to_owned(), "2".to_owned()),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
        ];
        Instance {
            addr: addrs[i],
            log: dir.join(format!("keygate-{}.log", ["a", "b"][i])),
            env,
            bin: o.bin.clone(),
            child: None,
        }
    };
    let mut instances = [mk(0), mk(1)];
    let (stop, _) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared {
        start: Instant::now(),
        start_wall: time::OffsetDateTime::now_utc(),
        clients: [
            Client::new(instances[0].addr),
            Client::new(instances[1].addr),
        ],
        table: Mutex::new(Table::default()),
        recs: Mutex::new(Vec::new()),
        unknown: unknown_tokens().await?,
        basic: format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN_EMAIL}:{password}"))
        ),
        manager: Mutex::new(None),
        creates: Mutex::new((0, 0)),
        revokes: Mutex::new((0, 0)),
        stop,
        errors: Mutex::new(Vec::new()),
    });
    // The first instance migrates; then the second.
    for (instance, client) in instances.iter_mut().zip(&shared.clients) {
        instance.start()?;
        wait_for("instance", Duration::from_secs(60), async || {
            answers(client, "/readyz", 200).await
        })
        .await?;
    }
    let (_, manager) = create(&shared, 0, "chaos-manager")
        .await
        .ok_or("cannot create the manager token")?;
    *shared.manager.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("Bearer {manager}"));
    for n in 0..LIVE_TOKENS {
        let (id, secret) = create(&shared, n % 2, &format!("seed-{n}"))
            .await
            .ok_or("cannot create the first tokens")?;
        let mut table = shared.table();
        table.toks.push(Tok {
            secret,
            id,
            state: TokState::Live,
        });
        table.live.push_back(n);
    }
    eprintln!(
        "chaos: {} instances up (pids {:?}, {:?}); load {} req/s; `uptime`: {}",
        instances.len(),
        instances[0].pid(),
        instances[1].pid(),
        o.rate,
        uptime()
    );

    let load_task = tokio::spawn(load(shared.clone(), o.rate));
    let churn_every = match o.mode {
        Mode::Chaos => Duration::from_millis(300),
        Mode::Soak => Duration::from_millis(500),
    };
    let churn_task = tokio::spawn(churn(shared.clone(), churn_every));

    let mut samples: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut minutes: Vec<Value> = Vec::new();
    let mut fault_list = Vec::new();
    let warmup = Duration::from_secs(8);
    let mut minute_usage: Vec<[(u64, u64); 2]> = Vec::new();
    match o.mode {
        Mode::Chaos => {
            tokio::time::sleep(warmup).await;
            samples.insert("a_before".into(), usage(instances[0].pid()));
            samples.insert("b_before".into(), usage(instances[1].pid()));
            fault_list = faults(
                &shared,
                &services,
                &mut instances,
                Duration::from_secs(10),
                &mut samples,
            )
            .await?;
        }
        Mode::Soak => {
            for m in 1..=o.minutes {
                // Sampled every second: a minute's resident memory is its last sample, its
                // descriptors the fewest seen. A single sample also counts the connections
                // in flight at that instant (the load's, one or two either way at 300
                // requests a second); the fewest over 60 samples is the instance's own set,
                // which a leak would raise.
                let mut u = [(0, u64::MAX); 2];
                for second in 1..=60u64 {
                    tokio::time::sleep_until(
                        tokio::time::Instant::from_std(shared.start)
                            + Duration::from_secs((u64::from(m) - 1) * 60 + second),
                    )
                    .await;
                    for (k, slot) in u.iter_mut().enumerate() {
                        let (rss, fds) = usage(instances[k].pid());
                        *slot = (rss, slot.1.min(fds));
                    }
                }
                eprintln!(
                    "chaos: minute {m}: rss a {} kB b {} kB, fds a {} b {}",
                    u[0].0, u[1].0, u[0].1, u[1].1
                );
                minute_usage.push(u);
            }
        }
    }
    samples.insert("a_after".into(), usage(instances[0].pid()));
    samples.insert("b_after".into(), usage(instances[1].pid()));
    let _ = shared.stop.send(true);
    let _ = load_task.await;
    let _ = churn_task.await;
    // Requests in flight finish (or time out) before the tally.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let end = shared.now();
    for i in &mut instances {
        i.kill().await;
    }
    drop(services);

    // ----- the tally
    let recs = std::mem::take(&mut *shared.recs.lock().unwrap_or_else(|e| e.into_inner()));
    let table = shared.table();
    let mut recs = recs;
    recs.sort_by(|a, b| a.sent.total_cmp(&b.sent));
    let judged: Vec<Judged> = recs.iter().map(|r| judge(r, &table.toks)).collect();
    let total = recs.len();
    let span = recs.last().map_or(0.0, |r| r.sent) - recs.first().map_or(0.0, |r| r.sent);
    let mut by: BTreeMap<(Cat, Outcome), u64> = BTreeMap::new();
    for r in &recs {
        *by.entry((r.cat, r.outcome)).or_default() += 1;
    }
    let other_5xx = recs
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Status(s) if s >= 500 && s != 503))
        .count();
    let count_503 = recs
        .iter()
        .filter(|r| r.outcome == Outcome::Status(503))
        .count();
    let late: Vec<f64> = judged
        .iter()
        .filter_map(|j| j.admitted_after_revoke)
        .collect();
    let admitted_late_1s = late.iter().filter(|&&d| d > 1.0).count();
    // Of those, let in by the other instance within the staleness bound (not wrong).
    let stale_other = judged
        .iter()
        .filter(|j| j.verdict == Verdict::Stale)
        .count();
    let max_late = late.iter().copied().fold(0.0_f64, f64::max);
    let verdicts: Vec<(f64, Verdict)> = recs
        .iter()
        .zip(&judged)
        .map(|(r, j)| (r.sent, j.verdict))
        .collect();

    let mut pass = other_5xx == 0 && admitted_late_1s == 0;
    let mut lines = Vec::new();
    let mut fault_json = Vec::new();
    let mut windows: Vec<(f64, f64)> = Vec::new();
    for (k, f) in fault_list.iter().enumerate() {
        let until = fault_list.get(k + 1).map_or(end, |n| n.start);
        let rec = recovered(&verdicts, f.back, until);
        let win_end = rec.map_or(until, |r| r);
        windows.push((f.start, win_end));
        let in_window: Vec<&Rec> = recs
            .iter()
            .filter(|r| r.sent >= f.start && r.sent < win_end)
            .collect();
        let e503 = in_window
            .iter()
            .filter(|r| r.outcome == Outcome::Status(503))
            .count();
        let conn = in_window
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::ConnError | Outcome::Timeout))
            .count();
        let recovery = rec.map(|r| r - f.back);
        if recovery.is_none_or(|r| r >= 1.0) {
            pass = false;
        }
        lines.push(format!(
            "{:<22} {:>8.2} {:>8.2} {:>8.2} {:>12} {:>8} {:>8}",
            f.name,
            f.start,
            f.back,
            f.back - f.start,
            recovery.map_or("never".to_owned(), |r| format!("{r:.3}")),
            e503,
            conn
        ));
        fault_json.push(json!({
            "fault": f.name,
            "start_t": round3(f.start),
            "back_t": round3(f.back),
            "down_s": round3(f.back - f.start),
            "recovery_s": recovery.map(round3),
            "answers_503": e503,
            "conn_errors": conn,
        }));
    }
    // Wrong answers outside the faults (after the warm-up of the first tokens).
    let wrong_steady: Vec<&Rec> = recs
        .iter()
        .zip(&judged)
        .filter(|(r, j)| {
            j.verdict == Verdict::Wrong
                // In flight at some moment of a fault's window: the fault's.
                && !windows.iter().any(|(s, e)| r.done >= *s && r.sent < *e)
        })
        .map(|(r, _)| r)
        .collect();
    if !wrong_steady.is_empty() {
        pass = false;
    }

    let (creates, create_fail) = *shared.creates.lock().unwrap_or_else(|e| e.into_inner());
    let (revokes, revoke_fail) = *shared.revokes.lock().unwrap_or_else(|e| e.into_inner());
    println!(
        "== keygate {} report ==",
        if o.mode == Mode::Chaos {
            "chaos"
        } else {
            "soak"
        }
    );
    println!(
        "load: {:.0} req/s asked, {} requests in {:.1} s ({:.0} req/s)",
        f64::from(o.rate),
        total,
        span,
        total as f64 / span.max(1e-9)
    );
    println!(
        "tokens: {creates} created ({create_fail} failed), {revokes} revoked ({revoke_fail} revokes failed or unknown)"
    );
    println!("{:<16} {:<12} {:>8}", "kind", "answer", "count");
    for ((cat, outcome), n) in &by {
        let a = match outcome {
            Outcome::Status(s) => s.to_string(),
            Outcome::ConnError => "conn_error".into(),
            Outcome::Timeout => "timeout".into(),
        };
        println!("{:<16} {:<12} {:>8}", cat.name(), a, n);
    }
    println!("t=0 is {}", wall(shared.start_wall));
    println!("5xx other than 503: {other_5xx} (goal 0); 503: {count_503}");
    for e in shared
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .take(8)
    {
        println!("  connection error: {e}");
    }
    println!(
        "admitted after their revoke returned: {} (max {:.3} s after; {} by the other instance within {STALENESS_BOUND} s, none may be by the revoking one); more than 1 s after: {} (goal 0)",
        late.len(),
        max_late,
        stale_other,
        admitted_late_1s
    );
    println!(
        "wrong answers outside the fault windows: {} (goal 0)",
        wrong_steady.len()
    );
    for r in wrong_steady.iter().take(10) {
        println!(
            "  t={:.3}s ({}) instance {} {} -> {:?} ({:.3} s)",
            r.sent,
            wall(shared.start_wall + Duration::from_secs_f64(r.sent)),
            ["a", "b"][usize::from(r.instance)],
            r.cat.name(),
            r.outcome,
            r.done - r.sent
        );
    }
    if !lines.is_empty() {
        println!(
            "{:<22} {:>8} {:>8} {:>8} {:>12} {:>8} {:>8}",
            "fault", "start_t", "back_t", "down_s", "recovery_s", "503", "conn_err"
        );
        for l in &lines {
            println!("{l}");
        }
        println!(
            "(recovery: from the service back to the first second of only right answers; goal < 1 s)"
        );
    }
    let mut minute_json = Vec::new();
    if o.mode == Mode::Soak {
        println!(
            "{:>6} {:>8} {:>9} {:>9} {:>10} {:>10} {:>6} {:>6}",
            "minute", "requests", "p50_ms", "p99_ms", "rss_a_kB", "rss_b_kB", "fd_a", "fd_b"
        );
        for (m, u) in minute_usage.iter().enumerate() {
            let (lo, hi) = (m as f64 * 60.0, (m as f64 + 1.0) * 60.0);
            let mut lat: Vec<f64> = recs
                .iter()
                .filter(|r| r.sent >= lo && r.sent < hi && matches!(r.outcome, Outcome::Status(_)))
                .map(|r| (r.done - r.sent) * 1000.0)
                .collect();
            lat.sort_by(f64::total_cmp);
            let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
            println!(
                "{:>6} {:>8} {:>9.2} {:>9.2} {:>10} {:>10} {:>6} {:>6}",
                m + 1,
                lat.len(),
                p50,
                p99,
                u[0].0,
                u[1].0,
                u[0].1,
                u[1].1
            );
            minutes.push(json!({
                "minute": m + 1, "requests": lat.len(), "p50_ms": round3(p50), "p99_ms": round3(p99),
                "rss_kb": [u[0].0, u[1].0], "fds": [u[0].1, u[1].1],
            }));
        }
        // Warm-up: the first two minutes (one when the soak is shorter than four).
        let base = if minute_usage.len() >= 4 { 1 } else { 0 };
        if let (Some(b), Some(l)) = (minute_usage.get(base), minute_usage.last()) {
            for (i, name) in ["a", "b"].iter().enumerate() {
                let rss = growth(b[i].0, l[i].0);
                let fds = growth(b[i].1, l[i].1);
                println!(
                    "instance {name}: rss {} -> {} kB ({rss:+.1} %), fds {} -> {} ({fds:+.1} %) from the end of minute {} to the end (goal < 5 %)",
                    b[i].0,
                    l[i].0,
                    b[i].1,
                    l[i].1,
                    base + 1
                );
                if rss >= 5.0 || fds >= 5.0 {
                    pass = false;
                }
                minute_json.push(json!({"instance": name, "rss_growth_pct": round3(rss), "fd_growth_pct": round3(fds)}));
            }
            let p99 = |m: usize| {
                minutes
                    .get(m)
                    .and_then(|v| v["p99_ms"].as_f64())
                    .unwrap_or(f64::NAN)
            };
            let (first, last) = (p99(base), p99(minutes.len() - 1));
            println!(
                "p99: {first:.2} ms in minute {} -> {last:.2} ms in the last (goal: stable, at most 2x)",
                base + 1
            );
            if last > 2.0 * first.max(1.0) {
                pass = false;
            }
        }
    } else {
        println!("{:<16} {:>10} {:>6}", "process", "rss_kB", "fds");
        for (k, (rss, fds)) in &samples {
            println!("{k:<16} {rss:>10} {fds:>6}");
        }
        println!("(instance b was killed and started again: b_after is the new process)");
    }
    println!("machine load at the end: {}", uptime());
    println!("result: {}", if pass { "PASS" } else { "FAIL" });
    let by_json: BTreeMap<String, u64> = by
        .iter()
        .map(|((c, out), n)| {
            let a = match out {
                Outcome::Status(s) => s.to_string(),
                Outcome::ConnError => "conn_error".into(),
                Outcome::Timeout => "timeout".into(),
            };
            (format!("{}:{a}", c.name()), *n)
        })
        .collect();
    println!(
        "{}",
        json!({
            "mode": if o.mode == Mode::Chaos { "chaos" } else { "soak" },
            "rate": o.rate,
            "requests": total,
            "seconds": round3(span),
            "answers": by_json,
            "other_5xx": other_5xx,
            "answers_503": count_503,
            "admitted_after_revoke": late.len(),
            "admitted_after_revoke_1s": admitted_late_1s,
            "admitted_after_revoke_by_other_instance": stale_other,
            "max_admitted_after_revoke_s": round3(max_late),
            "wrong_outside_faults": wrong_steady.len(),
            "faults": fault_json,
            "usage": samples.iter().map(|(k, (r, f))| (k.clone(), json!({"rss_kb": r, "fds": f}))).collect::<BTreeMap<_, _>>(),
            "minutes": minutes,
            "growth": minute_json,
            "creates": creates, "create_failures": create_fail,
            "revokes": revokes, "revoke_failures": revoke_fail,
            "pass": pass,
        })
    );
    Ok(pass)
}

fn growth(from: u64, to: u64) -> f64 {
    if from == 0 {
        return 0.0;
    }
    (to as f64 - from as f64) / from as f64 * 100.0
}

/// The wall clock (UTC, RFC 3339), to find a moment in the servers' logs.
fn wall_now() -> String {
    wall(time::OffsetDateTime::now_utc())
}

fn wall(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Well-formed tokens the servers never issued.
async fn unknown_tokens() -> Result<Vec<String>, BoxError> {
    let tokens = keygate::Tokens::new(keygate::MemoryStore::new());
    let mut out = Vec::new();
    for n in 0..50 {
        let issued = tokens
            .issue(keygate::NewToken::new("nobody", format!("unknown-{n}")))
            .await?;
        out.push(issued.token.expose_secret().to_owned());
    }
    Ok(out)
}
