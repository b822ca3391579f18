//! [`ExpiryWebhook`]: expiry warnings POSTed to a URL, signed, from a bounded queue drained
//! by a background task (feature `webhook`, part of `server`).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use zeroize::Zeroizing;

use crate::audit::AuditEvent;
use crate::error::ConfigError;
use crate::signature::SIGNATURE_HEADER;

/// The header carrying the time a webhook call was signed, in seconds since the Unix epoch:
/// `X-Keygate-Timestamp`. It is part of the signed text.
pub const TIMESTAMP_HEADER: &str = "x-keygate-timestamp";
/// The header naming the event of a webhook call (`token.expiring`).
pub const EVENT_HEADER: &str = "x-keygate-event";
/// The header carrying a delivery's id, the same on every attempt (for receivers that
/// drop repeats).
pub const DELIVERY_HEADER: &str = "x-keygate-delivery";

/// Where expiry warnings are sent ([`TokensBuilder::expiry_webhook`]): each
/// `token.expiring` audit event is POSTed as JSON to an `http://` URL, one request per
/// event.
///
/// Each request carries `X-Keygate-Timestamp: <unix seconds>` and
/// `X-Keygate-Signature: sha256=<hex>`, the HMAC-SHA256 under the secret of the text
/// `<timestamp>.<body>` (check it with [`verify_signature`]; refuse a timestamp more than
/// a few minutes old, so that a recorded call cannot be replayed later), plus
/// `X-Keygate-Event: token.expiring` and `X-Keygate-Delivery: <uuid>` (the same on every
/// attempt).
///
/// Events wait in a bounded queue (default 1,000) drained by one background task; a
/// full queue drops the event with a warning, counted ([`WebhookStats::dropped`]). A call
/// that fails (no connection, a timeout of 10 s by default, a 5xx or 429 answer) is tried
/// again after a backoff that doubles from 1 s up to 60 s, five attempts in all by default;
/// another 4xx answer is not retried. Nothing waits on the webhook: not a request, not the
/// maintenance task.
///
/// Only `http://` URLs: for `https`, send the calls through a TLS-terminating proxy (e.g.
/// a local sidecar), since keygate carries no TLS client for this.
///
/// [`TokensBuilder::expiry_webhook`]: super::TokensBuilder::expiry_webhook
#[derive(Clone)]
#[must_use]
pub struct ExpiryWebhook {
    target: Target,
    secret: Arc<Zeroizing<Vec<u8>>>,
    queue: usize,
    attempts: u32,
    first_backoff: Duration,
    max_backoff: Duration,
    timeout: Duration,
}

impl std::fmt::Debug for ExpiryWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpiryWebhook")
            .field("url", &self.target.uri.to_string())
            .field("secret", &"[redacted]")
            .field("queue", &self.queue)
            .field("attempts", &self.attempts)
            .field("first_backoff", &self.first_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Clone, Debug)]
struct Target {
    uri: Uri,
    host: String,
    port: u16,
}

impl ExpiryWebhook {
    /// Sends to `url` (`http://host[:port]/path`), signed with `secret` (at least 16 bytes).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidWebhookUrl`] for anything but an `http://` URL with a host;
    /// [`ConfigError::WeakSecret`] for a secret shorter than 16 bytes.
    pub fn new(url: &str, secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let target = parse_url(url)?;
        let secret = secret.as_ref();
        if secret.len() < 16 {
            return Err(ConfigError::WeakSecret("expiry webhook secret"));
        }
        Ok(Self {
            target,
            secret: Arc::new(Zeroizing::new(secret.to_vec())),
            queue: 1000,
            attempts: 5,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        })
    }

    /// Whether `url` is one [`new`](Self::new) takes.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidWebhookUrl`].
    pub fn check_url(url: &str) -> Result<(), ConfigError> {
        parse_url(url).map(drop)
    }

    /// At most `n` events wait for delivery (default 1,000; at least 1); more are dropped
    /// with a warning and counted.
    pub fn with_queue(mut self, n: usize) -> Self {
        self.queue = n.max(1);
        self
    }

    /// Tries each call at most `n` times (default 5; at least 1).
    pub fn with_attempts(mut self, n: u32) -> Self {
        self.attempts = n.max(1);
        self
    }

    /// Waits `first` after the first failed attempt, doubling each time up to `max`
    /// (default 1 s and 60 s).
    pub fn with_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.first_backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// The longest one attempt may take, connection included (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

fn parse_url(url: &str) -> Result<Target, ConfigError> {
    let bad = || ConfigError::InvalidWebhookUrl(url.chars().take(200).collect());
    let uri: Uri = url.trim().parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") {
        return Err(bad());
    }
    let authority = uri.authority().ok_or_else(bad)?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(bad());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = authority.port_u16().unwrap_or(80);
    Ok(Target { uri, host, port })
}

/// Whether `signature` (`sha256=<hex>`) signs `body` sent at `timestamp` (the
/// `X-Keygate-Timestamp` value) under `secret`, as an [`ExpiryWebhook`] signs its calls.
/// Check the timestamp's age apart.
#[must_use]
pub fn verify_signature(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    crate::signature::verify(secret, &signed_text(timestamp, body), signature)
}

fn signed_text(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut text = Vec::with_capacity(timestamp.len() + 1 + body.len());
    text.extend_from_slice(timestamp.as_bytes());
    text.push(b'.');
    text.extend_from_slice(body);
    text
}

/// What an [`ExpiryWebhook`] did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookStats {
    /// Calls the receiver answered with a 2xx.
    pub delivered: u64,
    /// Events given up after every attempt failed (or a 4xx answer).
    pub failed: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// The manager's side of a webhook: the queue, its drainer (started on first use, inside
/// the runtime) and the counters.
pub(super) struct Queue {
    tx: tokio::sync::mpsc::Sender<AuditEvent>,
    rx: Mutex<Option<tokio::sync::mpsc::Receiver<AuditEvent>>>,
    hook: ExpiryWebhook,
    counters: Arc<Counters>,
}

impl Queue {
    pub(super) fn new(hook: ExpiryWebhook) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(hook.queue);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            hook,
            counters: Arc::default(),
        }
    }

    /// Queues `event` without waiting: dropped (counted, with a warning) when full.
    pub(super) fn send(&self, event: AuditEvent) {
        let rx = self
            .rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(rx) = rx {
            let hook = self.hook.clone();
            let counters = self.counters.clone();
            tokio::spawn(drain(rx, hook, counters));
        }
        if self.tx.try_send(event).is_err() {
            let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                dropped = n,
                "expiry webhook queue full; a token.expiring event was not sent"
            );
        }
    }

    pub(super) fn stats(&self) -> WebhookStats {
        WebhookStats {
            delivered: self.counters.delivered.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

async fn drain(
    mut rx: tokio::sync::mpsc::Receiver<AuditEvent>,
    hook: ExpiryWebhook,
    counters: Arc<Counters>,
) {
    while let Some(event) = rx.recv().await {
        let Ok(body) = serde_json::to_vec(&event) else {
            continue;
        };
        let body = Bytes::from(body);
        let delivery = uuid::Uuid::new_v4().to_string();
        let mut wait = hook.first_backoff;
        let mut outcome = Err("not tried".to_owned());
        for attempt in 1..=hook.attempts {
            outcome = post(&hook, &event.event, &delivery, body.clone()).await;
            match &outcome {
                Ok(status) if status.is_success() => break,
                Ok(status)
                    if status.is_client_error() && *status != StatusCode::TOO_MANY_REQUESTS =>
                {
                    break;
                }
                _ if attempt < hook.attempts => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(hook.max_backoff);
                }
                _ => {}
            }
        }
        match outcome {
            Ok(status) if status.is_success() => {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
            }
            other => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                let answer = match other {
                    Ok(status) => status.to_string(),
                    Err(e) => e,
                };
                tracing::warn!(
                    token_id = ?event.api_token_id,
                    %answer,
                    "expiry webhook call failed; the warning was not delivered"
                );
            }
        }
    }
}

/// One attempt: a fresh connection, one request, the answer's status.
async fn post(
    hook: &ExpiryWebhook,
    event: &str,
    delivery: &str,
    body: Bytes,
) -> Result<StatusCode, String> {
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    let signature = crate::signature::sign(&hook.secret, &signed_text(&timestamp, &body));
    let target = &hook.target;
    let path = target
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str)
        .to_owned();
    let request = Request::post(path)
        .header(
            header::HOST,
            target.uri.authority().map_or("", |a| a.as_str()),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("keygate/", env!("CARGO_PKG_VERSION")),
        )
        .header(TIMESTAMP_HEADER, &timestamp)
        .header(SIGNATURE_HEADER, signature)
        .header(EVENT_HEADER, event)
        .header(DELIVERY_HEADER, delivery)
        .body(http_body_util::Full::new(body))
        .map_err(|e| e.to_string())?;
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| e.to_string())?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let res = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        Ok(res.status())
    };
    tokio::time::timeout(hook.timeout, attempt)
        .await
        .map_err(|_| format!("no answer within {:?}", hook.timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_with_a_host_are_taken() {
        for good in [
            "http://127.0.0.1:9000/hooks/expiring",
            "http://hooks.internal/",
            "http://[::1]:8080/x?y=1",
        ] {
            assert!(ExpiryWebhook::check_url(good).is_ok(), "{good}");
        }
        for bad in [
            "https://hooks.example.com/",
            "http://user:secret@hooks.example.com/",
            "ftp://hooks.example.com/",
            "/relative",
            "http:///nohost",
            "",
        ] {
            assert!(ExpiryWebhook::check_url(bad).is_err(), "{bad}");
        }
        let t = parse_url("http://[::1]:8080/x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert_eq!(parse_url("http://h/").unwrap().port, 80);
    }

    #[test]
    fn the_secret_is_required_long_and_never_printed() {
        assert!(ExpiryWebhook::new("http://h/", "short").is_err());
        let hook = ExpiryWebhook::new("http://h/", "webhook-secret-0123456789").unwrap();
        assert!(!format!("{hook:?}").contains("webhook-secret"));
    }

    #[test]
    fn the_signature_covers_the_timestamp_and_the_body() {
        let secret = b"webhook-secret-0123456789";
        let sig = crate::signature::sign(secret, &signed_text("1700000000", b"{}"));
        assert!(verify_signature(secret, "1700000000", b"{}", &sig));
        assert!(!verify_signature(secret, "1700000001", b"{}", &sig));
        assert!(!verify_signature(secret, "1700000000", b"{ }", &sig));
    }
}
