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
        release_kinds: &[String],
    ) -> Result<keygate::store::InactiveOutcome, StoreError> {
        self.check()?;
        self.inner.expire_inactive(cutoff, now, release_kinds).await
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
