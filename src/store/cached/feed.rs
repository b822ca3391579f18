//! Revocation fan-out: the [`RevocationFeed`] a backend offers, and the
//! [`RevocationListener`] task that applies it to a [`CachedStore`](super::CachedStore).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use super::cache::Cache;
use crate::error::StoreError;
use crate::token::TokenHash;

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One message of a [`RevocationFeed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// The token with this hash was revoked, rotated, released or otherwise changed on
    /// another instance: drop it from the cache.
    Changed(TokenHash),
    /// Something changed that the feed cannot name (an unreadable message, messages lost on
    /// the way): drop everything cached.
    Flush,
}

impl Notice {
    /// The notice for a message carrying the hex SHA-256 of a changed token (what the
    /// PostgreSQL and Redis stores publish); anything else is [`Notice::Flush`].
    #[must_use]
    pub fn from_hex(payload: &str) -> Self {
        match TokenHash::from_hex(payload) {
            Ok(hash) => Self::Changed(hash),
            Err(_) => {
                tracing::warn!("unexpected revocation notification payload; flushing the cache");
                Self::Flush
            }
        }
    }
}

/// Where a [`CachedStore`](super::CachedStore) hears of the changes other instances make
/// (revocations, rotations, releases), so that it drops them from its cache at once.
///
/// The PostgreSQL store offers one on `LISTEN`/`NOTIFY`
/// (`store::postgres::PostgresFeed`), the Redis store one on pub/sub
/// (`store::redis::RedisFeed`); a backend of your own plugs its feed into
/// [`CachedStore::listen`](super::CachedStore::listen) the same way.
///
/// A feed is a subscription that can be lost. The listener calls
/// [`subscribe`](Self::subscribe), then [`next`](Self::next) until it returns `None`, then
/// subscribes again after a backoff (100 ms doubling up to 5 s). Push is assumed to be
/// best-effort: from the moment a subscription may have missed a message (before
/// `subscribe` returns, after `next` returned `None`) the cache is flushed and bypassed, so
/// a lookup goes to the store; it resumes after the next successful `subscribe`. A feed
/// whose connection can die silently should detect it (a heartbeat) and end `next` with
/// `None` within a bounded time.
///
/// # Example
///
/// A feed over an in-process broadcast channel, on which a store of your own would send
/// the hash of every token it changes:
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use async_trait::async_trait;
/// use keygate::store::cached::{CachedStore, Notice, RevocationFeed};
/// use keygate::{MemoryStore, NewToken, StoreError, TokenHash, Tokens};
/// use tokio::sync::broadcast;
///
/// struct BroadcastFeed {
///     sender: broadcast::Sender<TokenHash>,
///     receiver: Option<broadcast::Receiver<TokenHash>>,
/// }
///
/// #[async_trait]
/// impl RevocationFeed for BroadcastFeed {
///     async fn subscribe(&mut self) -> Result<(), StoreError> {
///         self.receiver = Some(self.sender.subscribe());
///         Ok(())
///     }
///
///     async fn next(&mut self) -> Option<Notice> {
///         match self.receiver.as_mut()?.recv().await {
///             Ok(hash) => Some(Notice::Changed(hash)),
///             // Messages were dropped: we cannot tell which tokens changed.
///             Err(broadcast::error::RecvError::Lagged(_)) => Some(Notice::Flush),
///             Err(broadcast::error::RecvError::Closed) => None,
///         }
///     }
/// }
///
/// let (sender, _) = broadcast::channel(1024);
/// let store = CachedStore::new(MemoryStore::new());
/// let listener = store.listen(BroadcastFeed { sender: sender.clone(), receiver: None });
/// assert!(listener.wait_connected(Duration::from_secs(5)).await);
///
/// let tokens = Tokens::new(store.clone());
/// let issued = tokens.issue(NewToken::new("alice", "ci")).await.unwrap();
/// tokens.authenticate(issued.token.expose_secret()).await.unwrap();
/// assert_eq!(store.len(), 1);
/// // Another instance changed the token: its hash arrives, and this cache drops it.
/// sender.send(TokenHash::of(issued.token.expose_secret())).unwrap();
/// while !store.is_empty() {
///     tokio::time::sleep(Duration::from_millis(1)).await;
/// }
/// # });
/// ```
#[async_trait]
pub trait RevocationFeed: Send + 'static {
    /// Connects and subscribes. Once it returns `Ok`, every change committed afterwards
    /// must be delivered by [`next`](Self::next) (or the subscription reported lost).
    ///
    /// # Errors
    ///
    /// When the feed cannot subscribe; the listener retries after a backoff.
    async fn subscribe(&mut self) -> Result<(), StoreError>;

    /// The next notice, or `None` when the subscription is lost (connection closed, missed
    /// heartbeat): the listener then flushes and bypasses the cache and subscribes again.
    async fn next(&mut self) -> Option<Notice>;
}

/// What a listener task reports.
#[derive(Default)]
struct ListenerState {
    connected: AtomicBool,
    /// Whether this listener counts in the cache's `listeners_down`, and whether it was
    /// stopped (dropped): changed together, under the lock, so the count stays exact.
    flags: Mutex<Flags>,
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct Flags {
    counted_down: bool,
    stopped: bool,
}

impl ListenerState {
    fn flags(&self) -> std::sync::MutexGuard<'_, Flags> {
        self.flags.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Attached, not yet subscribed: the cache is bypassed until [`up`](Self::up).
    fn attach(&self, cache: &Cache) {
        let mut flags = self.flags();
        if !flags.counted_down {
            flags.counted_down = true;
            cache.listeners_down.fetch_add(1, Ordering::AcqRel);
        }
        drop(flags);
        cache.flush();
    }

    /// Subscribed: flush what was cached while notifications could be missed, resume (once
    /// no other listener of this cache is down).
    fn up(&self, cache: &Cache) {
        cache.flush();
        let mut flags = self.flags();
        if flags.stopped {
            return;
        }
        if flags.counted_down {
            flags.counted_down = false;
            cache.listeners_down.fetch_sub(1, Ordering::AcqRel);
        }
        self.connected.store(true, Ordering::Release);
        drop(flags);
        self.changed.notify_waiters();
        tracing::info!("revocation listener subscribed; cache enabled");
    }

    /// Lost: notifications may be missed from now on; stop serving from the cache.
    fn down(&self, cache: &Cache) {
        let mut flags = self.flags();
        if !flags.stopped && !flags.counted_down {
            flags.counted_down = true;
            cache.listeners_down.fetch_add(1, Ordering::AcqRel);
        }
        drop(flags);
        cache.flush();
        if self.connected.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                "revocation listener lost its connection; cache flushed and bypassed until it reconnects"
            );
        }
        self.changed.notify_waiters();
    }

    /// Stopped by its owner: this listener no longer holds the cache bypassed (other
    /// listeners of the same cache still do while they are down).
    fn stop(&self, cache: &Cache) {
        let mut flags = self.flags();
        flags.stopped = true;
        if flags.counted_down {
            flags.counted_down = false;
            cache.listeners_down.fetch_sub(1, Ordering::AcqRel);
        }
        self.connected.store(false, Ordering::Release);
        drop(flags);
        cache.flush();
        self.changed.notify_waiters();
    }
}

/// Applies one notice to the cache.
fn apply(cache: &Cache, notice: Notice) {
    match notice {
        Notice::Changed(hash) => cache.invalidate(&hash),
        Notice::Flush => cache.flush(),
    }
}

/// Held by the listener task: if the task ends without being stopped (a feed that
/// panicked, a runtime shutting down), the listener counts as down, so the cache is not
/// left serving while nobody hears revocations.
struct DownOnExit {
    cache: Arc<Cache>,
    state: Arc<ListenerState>,
}

impl Drop for DownOnExit {
    fn drop(&mut self) {
        self.state.down(&self.cache);
    }
}

/// Subscribes, applies notices, and subscribes again when the subscription is lost.
async fn run<F: RevocationFeed>(mut feed: F, cache: Arc<Cache>, state: Arc<ListenerState>) {
    let _exit = DownOnExit {
        cache: cache.clone(),
        state: state.clone(),
    };
    let mut delay = Duration::from_millis(100);
    loop {
        match feed.subscribe().await {
            Ok(()) => {
                state.up(&cache);
                delay = Duration::from_millis(100);
                while let Some(notice) = feed.next().await {
                    apply(&cache, notice);
                }
                state.down(&cache);
            }
            Err(error) => {
                state.down(&cache);
                tracing::warn!(%error, "revocation listener cannot subscribe; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}

/// The task that keeps a [`CachedStore`](super::CachedStore) in step with revocations made
/// on other instances. Dropping it (or calling [`stop`](Self::stop)) stops the task, flushes
/// the cache and returns it to TTL-only staleness (unless another listener of the same cache
/// is down: the cache stays bypassed until every attached listener is subscribed). A task
/// that ends by itself (a feed that panicked) leaves the cache bypassed, never serving.
#[must_use = "dropping the listener stops it"]
pub struct RevocationListener {
    task: tokio::task::JoinHandle<()>,
    state: Arc<ListenerState>,
    cache: Arc<Cache>,
}

impl std::fmt::Debug for RevocationListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationListener")
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl RevocationListener {
    /// Starts `feed` on the Tokio runtime; the cache is bypassed until it has subscribed.
    pub(super) fn spawn<F: RevocationFeed>(cache: Arc<Cache>, feed: F) -> Self {
        let state = Arc::new(ListenerState::default());
        state.attach(&cache);
        let task = tokio::spawn(run(feed, cache.clone(), state.clone()));
        Self { task, state, cache }
    }

    /// True while subscribed (and the cache in use).
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.state.connected.load(Ordering::Acquire)
    }

    /// Waits until the listener is subscribed, at most `limit`; returns whether it is.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.state.changed.notified();
            if self.is_connected() {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.is_connected();
            }
        }
    }

    /// Stops the listener (the same as dropping it).
    pub fn stop(self) {}
}

impl Drop for RevocationListener {
    fn drop(&mut self) {
        // Stopped first: the task's exit guard then leaves the count alone.
        self.state.stop(&self.cache);
        self.task.abort();
    }
}
