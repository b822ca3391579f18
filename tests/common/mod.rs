//! Shared test helpers: stores that count calls or fail, a plain tower service, request and
//! response helpers, a log capture, and the set-up and clean-up of the backend services.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use keygate::store::postgres::PostgresStore;
use keygate::store::redis::RedisStore;
use keygate::store::{InsertRules, RotateOutcome};
use keygate::{Identity, MemoryStore, StoreError, TokenHash, TokenId, TokenRecord, TokenStore};
use time::OffsetDateTime;

/// Wraps a `MemoryStore`, counting lookups and batched use writes, and failing on demand.
#[derive(Clone, Default)]
pub struct TestStore {
    pub inner: MemoryStore,
    pub lookups: Arc<AtomicUsize>,
    pub use_writes: Arc<AtomicUsize>,
    pub down: Arc<AtomicBool>,
}

impl TestStore {
    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::backend(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused",
            )))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl TokenStore for TestStore {
    async fn insert(&self, record: TokenRecord, rules: InsertRules) -> Result<(), StoreError> {
        self.check()?;
        self.inner.insert(record, rules).await
    }
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        self.inner.find_by_hash(hash).await
    }
    async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, StoreError> {
        self.check()?;
        self.inner.get(id).await
    }
    async fn list_by_owner(&self, owner: &str) -> Result<Vec<TokenRecord>, StoreError> {
        self.check()?;
        self.inner.list_by_owner(owner).await
    }
    async fn revoke(&self, id: &TokenId, at: OffsetDateTime) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.revoke(id, at).await
    }
    async fn rotate(
        &self,
        old: &TokenId,
        new: TokenRecord,
        old_expires_at: OffsetDateTime,
        rules: InsertRules,
    ) -> Result<RotateOutcome, StoreError> {
        self.check()?;
        self.inner.rotate(old, new, old_expires_at, rules).await
    }
    async fn record_use(&self, uses: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError> {
        self.use_writes.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        self.inner.record_use(uses).await
    }
    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.purge_expired(now).await
    }
    async fn bind(
        &self,
        id: &TokenId,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        self.check()?;
        self.inner.bind(id, fingerprint, now).await
    }
    async fn release(
        &self,
        id: &TokenId,
        now: OffsetDateTime,
        min_interval: std::time::Duration,
    ) -> Result<keygate::store::ReleaseOutcome, StoreError> {
        self.check()?;
        self.inner.release(id, now, min_interval).await
    }
    async fn expire_inactive(
        &self,
        cutoff: OffsetDateTime,
        now: OffsetDateTime,
        kinds: &[String],
        release_kinds: &[String],
    ) -> Result<keygate::store::InactiveOutcome, StoreError> {
        self.check()?;
        self.inner
            .expire_inactive(cutoff, now, kinds, release_kinds)
            .await
    }
    async fn rehash(
        &self,
        id: &TokenId,
        from: &TokenHash,
        to: &TokenHash,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.rehash(id, from, to).await
    }
}

/// The inner service: answers 200 with the caller's owner, or `anonymous`, and counts calls.
pub fn echo(
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |req: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let sensitive = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .is_none_or(|v| v.is_sensitive());
        let who = req
            .extensions()
            .get::<Identity>()
            .map_or("anonymous".to_owned(), |i| i.owner().to_owned());
        async move {
            assert!(
                sensitive,
                "the Authorization header must be marked sensitive"
            );
            Ok::<_, Infallible>(Response::new(Full::from(who)))
        }
    })
}

pub fn get(auth: Option<&str>) -> Request<Full<Bytes>> {
    req(http::Method::GET, auth)
}

pub fn req(method: http::Method, auth: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri("/things");
    if let Some(a) = auth {
        b = b.header(http::header::AUTHORIZATION, a);
    }
    b.body(Full::default()).expect("request")
}

pub fn bearer(token: &keygate::RawToken) -> String {
    format!("Bearer {}", token.expose_secret())
}

pub async fn body_string<B>(res: Response<B>) -> (http::StatusCode, http::HeaderMap, String)
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).expect("utf-8 body"),
    )
}

/// The PostgreSQL the backend tests use: `KEYGATE_TEST_POSTGRES_URL`, or the local server.
pub fn postgres_url() -> String {
    std::env::var("KEYGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The Redis the backend tests use: `KEYGATE_TEST_REDIS_URL`, or the local server.
pub fn redis_url() -> String {
    std::env::var("KEYGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The one rule for tests that need a real service: `Some(value)` when it answered; when it
/// did not, `None` with the reason printed (the test then skips) on a laptop, and a failed
/// test under CI (`CI` set), so a missing service never passes unnoticed there.
pub fn available<T, E: std::fmt::Debug>(
    service: &str,
    url: &str,
    test: &str,
    result: Result<T, E>,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping {test}: {service} at {url} unreachable: {e:?}");
            None
        }
        Err(e) => panic!("{service} at {url} unreachable and CI is set: {e:?}"),
    }
}

/// An `Authorization: Basic` value for `email:password`.
pub fn basic(email: &str, password: &str) -> String {
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{email}:{password}"));
    format!("Basic {enc}")
}

/// A response body read as JSON: `null` when it is empty.
pub fn json_or_null(bytes: &[u8]) -> serde_json::Value {
    if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(bytes).unwrap()
    }
}

/// Collects what a `tracing_subscriber::fmt` subscriber writes, for searching afterwards.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A second live dispatcher, to hold while a test captures log lines with
/// `tracing::subscriber::set_default`. With a single dispatcher in the process, tracing-core
/// may decide a callsite's interest from the default of whichever thread reaches it first: a
/// test on another thread (no subscriber) would switch the line off for the capturing test.
/// With two, every live dispatcher is asked each time.
pub fn ask_every_dispatcher() -> tracing::Dispatch {
    tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default())
}

/// Drops the schema a PostgreSQL test worked in.
pub async fn drop_schema(store: &PostgresStore) {
    if let Some(schema) = store.schema() {
        let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(store.pool())
            .await
            .unwrap();
    }
}

/// Deletes every Redis key under the store's prefix.
pub async fn redis_cleanup(store: &RedisStore) {
    let mut conn = store
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", store.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// `req` finished with `body` as JSON (and its content type), or with no body.
pub fn json_body(
    req: http::request::Builder,
    body: Option<serde_json::Value>,
) -> Request<axum::body::Body> {
    match body {
        Some(v) => req
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(v.to_string())),
        None => req.body(axum::body::Body::empty()),
    }
    .unwrap()
}

/// `req` finished with `form` as an urlencoded body (and its content type), or with no body.
pub fn form_body(req: http::request::Builder, form: Option<&str>) -> Request<axum::body::Body> {
    match form {
        Some(f) => req
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(axum::body::Body::from(f.to_owned())),
        None => req.body(axum::body::Body::empty()),
    }
    .unwrap()
}

/// A command for the `keygate` binary, run in `dir`, with none of the test's own
/// `KEYGATE_*` variables nor `RUST_LOG`, its output captured.
pub fn keygate(dir: &std::path::Path) -> std::process::Command {
    use std::process::Stdio;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("KEYGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A server process (`keygate serve`, or a program built on `keygate::server::serve`) on the
/// loopback port it picked itself, killed when dropped. Its standard output is kept.
pub struct Served {
    pub child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    output: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// [`announced`](Self::announced), then waits until `GET /healthz` answers 200: it is
    /// serving, everything it announces is done (a generated password file written).
    pub fn start(cmd: std::process::Command) -> Self {
        let mut served = Self::announced(cmd);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !http_raw(&served.addr, "GET", "/healthz", None, None).is_ok_and(|(s, _)| s == 200) {
            if let Some(status) = served.child.try_wait().unwrap() {
                panic!("the server exited ({status}): {}", served.output());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server never answered /healthz"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        served
    }

    /// Starts `cmd` with `KEYGATE_ADDR=127.0.0.1:0` and its standard output piped, and waits
    /// for the address it announces (the text banner's `http://…` or the JSON `address`),
    /// no longer.
    pub fn announced(mut cmd: std::process::Command) -> Self {
        use std::io::BufRead;
        let mut child = cmd
            .env("KEYGATE_ADDR", "127.0.0.1:0")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the server");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let output = Arc::new(Mutex::new(String::new()));
        let mut line = String::new();
        let addr = loop {
            line.clear();
            // A server that never starts exits (a bad setting, an unreachable database):
            // the read then ends.
            if out.read_line(&mut line).unwrap() == 0 {
                let status = child.wait().unwrap();
                panic!(
                    "the server exited ({status}) before listening: {}",
                    output.lock().unwrap()
                );
            }
            output.lock().unwrap().push_str(&line);
            if let Some(rest) = line.split("http://").nth(1) {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == ':'))
                    .unwrap_or(rest.len());
                break rest[..end].to_owned();
            }
        };
        // Keep reading, so it never blocks on a full pipe.
        let kept = output.clone();
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            while out.read_line(&mut line).is_ok_and(|n| n > 0) {
                kept.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Self {
            child,
            addr,
            output,
            reader: Some(reader),
        }
    }

    /// What it has written to its standard output so far; once it has exited, all of it.
    pub fn output(&mut self) -> String {
        if self.child.try_wait().unwrap().is_some()
            && let Some(reader) = self.reader.take()
        {
            reader.join().unwrap();
        }
        self.output.lock().unwrap().clone()
    }

    /// Sends SIGTERM (the signal a service manager stops it with).
    pub fn terminate(&self) {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, at most `limit`: its status, or `None` when it is
    /// still running.
    pub fn wait_exit(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGKILL: no graceful shutdown, no last flush.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request over a fresh connection to `addr`: the status and the body (a
/// chunked body joined). `Err` when the connection fails or the answer is cut short (the
/// server is gone), so the outcome is unknown.
pub fn http_raw(
    addr: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    form: Option<&str>,
) -> std::io::Result<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let body = form.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(auth) = auth {
        req.push_str(&format!("Authorization: {auth}\r\n"));
    }
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
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        let mut s = body;
        let mut out = String::new();
        loop {
            let Some((size, rest)) = s.split_once("\r\n") else {
                return Err(std::io::Error::other("truncated chunk"));
            };
            let n = usize::from_str_radix(size.trim(), 16).map_err(std::io::Error::other)?;
            if n == 0 {
                break;
            }
            if rest.len() < n {
                return Err(std::io::Error::other("truncated chunk"));
            }
            out.push_str(&rest[..n]);
            s = rest[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// [`http_raw`] with the body read as JSON (`null` when empty).
pub fn http_json(
    addr: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    form: Option<&str>,
) -> std::io::Result<(u16, serde_json::Value)> {
    let (status, body) = http_raw(addr, method, path, auth, form)?;
    let json = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&body).map_err(std::io::Error::other)?
    };
    Ok((status, json))
}

/// `token` with its last character changed: the same shape, another token (a fixed last
/// character would leave a token that already ends with it valid).
pub fn spoiled(token: &str) -> String {
    let last = if token.ends_with('x') { 'y' } else { 'x' };
    format!("{}{last}", &token[..token.len() - 1])
}

/// A GET of `uri` with these headers through an axum router: the status and the body.
pub async fn get_from(
    app: &axum::Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (http::StatusCode, String) {
    use tower::ServiceExt;
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(axum::body::Body::empty()).unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
