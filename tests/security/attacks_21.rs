//! Attack pass 21: the compact records, interned strings, queued audit events, metric
//! tables and per-shard cache epochs of the performance round.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use keygate::audit::{AuditEvent, AuditLog, AuditSink, MemoryAuditSink};
use keygate::client_ip::ClientAddr;
use keygate::{AuthLayer, MemoryStore, TokenKind, Tokens};
use tokio::sync::Notify;
use tower::{Layer, Service};

/// A sink that holds its first write until released: the writer is busy, and what the
/// layer queues stays queued, as behind a slow disk or database.
#[derive(Clone, Default)]
struct Wedged(Arc<Notify>);

#[async_trait::async_trait]
impl AuditSink for Wedged {
    async fn write(
        &self,
        _events: &[AuditEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.notified().await;
        Ok(())
    }
}

/// A request head as hyper hands it over: the URI and the header values are slices of one
/// buffer holding the whole head, here with 256 KiB of cookies after the request id.
fn hostile_request(peer: &str) -> (Request<Full<Bytes>>, Bytes) {
    let path = format!("/{}", "a".repeat(8 * 1024));
    let cookie = "c".repeat(256 * 1024);
    let text = format!("GET {path} HTTP/1.1\r\nx-request-id: req-1\r\ncookie: {cookie}\r\n\r\n");
    let head = BytesMut::from(text.as_bytes()).freeze();
    let at = |needle: &str| text.find(needle).unwrap();
    let uri = Uri::from_maybe_shared(head.slice(4..4 + path.len())).unwrap();
    let id_at = at("req-1");
    let id = HeaderValue::from_maybe_shared(head.slice(id_at..id_at + 5)).unwrap();
    let cookie_at = at("ccc");
    let cookie =
        HeaderValue::from_maybe_shared(head.slice(cookie_at..cookie_at + cookie.len())).unwrap();
    let mut req = Request::get(uri)
        .header("x-request-id", id)
        .header(http::header::COOKIE, cookie)
        .body(Full::<Bytes>::default())
        .unwrap();
    req.extensions_mut()
        .insert(ClientAddr(peer.parse().unwrap()));
    (req, head)
}

/// Requests without credentials, each with a 264 KiB head, sent while the audit writer is
/// busy: the queued `authenticate` events (65 536 of them by default) must not hold the
/// heads, or a flood pins tens of GiB. Each event keeps at most the bounded path and
/// request id.
#[tokio::test]
async fn queued_audit_events_do_not_hold_the_request_heads() {
    let tokens = Tokens::builder(MemoryStore::new())
        .kind(TokenKind::pat())
        .build()
        .unwrap();
    let sink = Wedged::default();
    let audit = AuditLog::spawn(sink.clone(), 1024).with_write_timeout(Duration::from_secs(60));
    let svc = AuthLayer::new(tokens)
        .with_audit(audit.clone())
        .layer(tower::service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
        }));
    // The first refusal's event keeps the writer busy in the sink.
    let (first, _) = hostile_request("192.0.2.1:1000");
    assert_eq!(svc.clone().call(first).await.unwrap().status(), 401);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut heads = Vec::new();
    for i in 2..10 {
        let (req, head) = hostile_request(&format!("192.0.2.{i}:1000"));
        assert_eq!(svc.clone().call(req).await.unwrap().status(), 401);
        heads.push(head);
    }
    for head in &heads {
        assert!(
            head.is_unique(),
            "a queued audit event holds the client's whole request head"
        );
    }
    sink.0.notify_waiters();
}

/// A request without credentials whose method is 64 KiB of letters (a valid extension
/// method): its `authenticate` event must not carry it whole, as it does not carry a
/// long path or request id, or anonymous clients write rows of any size into the audit
/// log (and hold that much memory per queued event).
#[tokio::test]
async fn an_anonymous_request_cannot_write_a_huge_method_into_the_audit_log() {
    let tokens = Tokens::builder(MemoryStore::new())
        .kind(TokenKind::pat())
        .build()
        .unwrap();
    let sink = MemoryAuditSink::new();
    let audit = AuditLog::spawn(sink.clone(), 1024);
    let svc = AuthLayer::new(tokens)
        .with_audit(audit.clone())
        .layer(tower::service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
        }));
    let huge = http::Method::from_bytes("M".repeat(64 * 1024).as_bytes()).unwrap();
    let mut req = Request::builder()
        .method(huge)
        .uri("/api/things")
        .body(Full::<Bytes>::default())
        .unwrap();
    req.extensions_mut()
        .insert(ClientAddr("192.0.2.20:1000".parse().unwrap()));
    assert_eq!(svc.clone().call(req).await.unwrap().status(), 401);
    audit.shutdown().await;
    let events = sink.events();
    let event = events
        .iter()
        .find(|e| e.path == "/api/things")
        .expect("the refusal is audited");
    assert!(
        event.method.len() <= keygate::audit::MAX_METHOD_LEN,
        "a {} byte method was kept",
        event.method.len()
    );
    assert!(event.method.starts_with("MMMM"));
}

/// The same huge method sent to the reference server without credentials: neither the
/// request log nor the audit file gets it whole.
#[tokio::test]
async fn a_huge_method_reaches_neither_the_request_log_nor_the_audit_file_whole() {
    use crate::common::Capture;
    use crate::support::Server;

    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let _every = crate::common::ask_every_dispatcher();

    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let server = Server::with(|c| c.audit_log = Some(audit.clone())).await;
    let huge = "M".repeat(64 * 1024);
    let req = Request::builder()
        .method(http::Method::from_bytes(huge.as_bytes()).unwrap())
        .uri("/api/v1/apps")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = server.send(req).await;
    assert!(res.status.is_client_error(), "{}", res.status);
    server.app.audit.shutdown().await;
    let trail = std::fs::read_to_string(&audit).unwrap();
    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("/api/v1/apps"), "the request was logged");
    let whole = "M".repeat(keygate::audit::MAX_METHOD_LEN + 1);
    assert!(!log.contains(&whole), "the log holds the whole method");
    assert!(
        !trail.contains(&whole),
        "the audit file holds the whole method"
    );
}

/// A `MemoryStore` whose next lookup, once armed, reads the record and then waits to be
/// resumed before answering: a lookup caught between its read and its answer.
#[derive(Clone, Default)]
struct Paused {
    inner: MemoryStore,
    armed: Arc<std::sync::atomic::AtomicBool>,
    read: Arc<Notify>,
    resume: Arc<Notify>,
}

#[async_trait::async_trait]
impl keygate::store::TokenStore for Paused {
    async fn insert(
        &self,
        record: keygate::store::TokenRecord,
        rules: keygate::store::InsertRules,
    ) -> Result<(), keygate::store::StoreError> {
        self.inner.insert(record, rules).await
    }
    async fn find_by_hash(
        &self,
        hash: &keygate::TokenHash,
    ) -> Result<Option<Arc<keygate::store::TokenRecord>>, keygate::store::StoreError> {
        let found = self.inner.find_by_hash(hash).await;
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.read.notify_one();
            self.resume.notified().await;
        }
        found
    }
    async fn get(
        &self,
        id: &keygate::store::TokenId,
    ) -> Result<Option<keygate::store::TokenRecord>, keygate::store::StoreError> {
        self.inner.get(id).await
    }
    async fn list_by_owner(
        &self,
        owner: &str,
    ) -> Result<Vec<keygate::store::TokenRecord>, keygate::store::StoreError> {
        self.inner.list_by_owner(owner).await
    }
    async fn revoke(
        &self,
        id: &keygate::store::TokenId,
        at: time::OffsetDateTime,
    ) -> Result<bool, keygate::store::StoreError> {
        self.inner.revoke(id, at).await
    }
    async fn rotate(
        &self,
        old: &keygate::store::TokenId,
        new: keygate::store::TokenRecord,
        old_expires_at: time::OffsetDateTime,
        rules: keygate::store::InsertRules,
    ) -> Result<keygate::store::RotateOutcome, keygate::store::StoreError> {
        self.inner.rotate(old, new, old_expires_at, rules).await
    }
    async fn record_use(
        &self,
        uses: &[(keygate::store::TokenId, time::OffsetDateTime)],
    ) -> Result<(), keygate::store::StoreError> {
        self.inner.record_use(uses).await
    }
    async fn purge_expired(
        &self,
        now: time::OffsetDateTime,
    ) -> Result<u64, keygate::store::StoreError> {
        self.inner.purge_expired(now).await
    }
}

/// Another instance revokes a token while this one's lookup of it has read the live
/// record and not yet answered; the notification (an invalidation by hash) arrives in that
/// window, amid notifications for tokens in other shards. The stale answer must not be
/// cached: the next request is refused. (Held: the hash's shard epoch moved.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_that_raced_a_remote_revocation_does_not_cache_its_stale_answer() {
    use keygate::store::TokenStore;
    use keygate::store::cached::CachedStore;

    let backend = Paused::default();
    let cached = CachedStore::new(backend.clone()).with_ttl(Duration::from_secs(3600));
    let tokens = Tokens::new(cached.clone());
    let issued = tokens
        .issue(keygate::NewToken::new("alice", "ci"))
        .await
        .unwrap();
    let secret = issued.token.expose_secret().to_owned();
    // Other tokens, whose revocations arrive too.
    let mut others = Vec::new();
    for i in 0..64 {
        let t = tokens
            .issue(keygate::NewToken::new("bob", format!("t{i}")))
            .await
            .unwrap();
        others.push(t.record.hash);
    }

    backend
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let read = backend.read.notified();
    let t = tokens.clone();
    let in_flight = tokio::spawn(async move { t.authenticate(&secret).await.is_ok() });
    read.await; // the lookup holds the live record
    // The other instance's revoke, on the shared backend, then its notification.
    assert!(
        backend
            .inner
            .revoke(&issued.record.id, time::OffsetDateTime::now_utc())
            .await
            .unwrap()
    );
    for h in &others {
        cached.invalidate(h);
    }
    cached.invalidate(&issued.record.hash);
    for h in &others {
        cached.invalidate(h);
    }
    backend.resume.notify_one();
    let _ = in_flight.await.unwrap(); // started before the revoke: either answer is fine
    assert!(
        tokens
            .authenticate(issued.token.expose_secret())
            .await
            .is_err(),
        "the stale read was cached after the revocation's notification"
    );
}

/// A sink with a bug that a client's input reaches (it panics on one path). The request
/// that trips it costs its own batch (counted as dropped), but the writer must go on:
/// every later event still reaches the sink, instead of all of them being dropped until
/// the process restarts.
#[tokio::test]
async fn a_sink_that_panics_on_one_event_does_not_end_the_audit_trail() {
    #[derive(Clone, Default)]
    struct Fragile(MemoryAuditSink);

    #[async_trait::async_trait]
    impl AuditSink for Fragile {
        async fn write(
            &self,
            events: &[AuditEvent],
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            assert!(!events.iter().any(|e| e.path == "/boom"), "sink bug");
            self.0.write(events).await
        }
    }

    let tokens = Tokens::builder(MemoryStore::new())
        .kind(TokenKind::pat())
        .build()
        .unwrap();
    let sink = Fragile::default();
    let audit = AuditLog::spawn(sink.clone(), 1024);
    let svc = AuthLayer::new(tokens)
        .with_audit(audit.clone())
        .layer(tower::service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
        }));
    let send = |path: &'static str, peer: &'static str| {
        let mut svc = svc.clone();
        async move {
            let mut req = Request::get(path).body(Full::<Bytes>::default()).unwrap();
            req.extensions_mut()
                .insert(ClientAddr(peer.parse().unwrap()));
            svc.call(req).await.unwrap().status()
        }
    };
    assert_eq!(send("/boom", "192.0.2.30:1000").await, 401);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(send("/after", "192.0.2.31:1000").await, 401);
    audit.shutdown().await;
    assert!(
        sink.0.events().iter().any(|e| e.path == "/after"),
        "the audit trail ended with the sink's panic (dropped: {})",
        audit.dropped()
    );
    assert_eq!(audit.dropped(), 1, "the batch that tripped it is counted");
}
