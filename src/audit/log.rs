//! [`AuditLog`]: the queue in front of a sink, its background writer, and its counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::request::RequestEvent;
use super::{AuditEvent, AuditSink, Decision};
use crate::rate_limit::{Admission, AuditBudget};

/// The default longest wait of [`AuditLog::write_now`]: 2 s.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why [`AuditLog::write_now`] could not write an event. Never holds the event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditWriteError {
    /// The sink refused the write.
    #[error("audit sink failed")]
    Sink(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The sink did not answer within the log's write timeout.
    #[error("audit sink did not answer within {0:?}")]
    TimedOut(Duration),
}

/// A handle to the audit log. Cheap to clone; [`record`](Self::record) never blocks (when
/// the queue is full the event is dropped and counted), [`write_now`](Self::write_now)
/// waits for the sink, at most the write timeout.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<LogInner>,
    write_timeout: Duration,
    budget: Option<AuditBudget>,
}

struct LogInner {
    /// The queue to the background writer. Senders need no lock: after
    /// [`shutdown`](AuditLog::shutdown) (`closed`) events are counted as dropped, and the
    /// writer closes its end (woken through `stop`) and writes what is left.
    tx: mpsc::Sender<Queued>,
    closed: AtomicBool,
    stop: Arc<Notify>,
    sink: Arc<dyn AuditSink>,
    counters: Arc<Counters>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What the queue carries: an event made by its caller, or a request's compact event,
/// made into an [`AuditEvent`] by the writer.
enum Queued {
    Event(AuditEvent),
    Request(RequestEvent),
}

impl Queued {
    fn into_event(self) -> AuditEvent {
        match self {
            Self::Event(e) => e,
            Self::Request(r) => r.into_event(),
        }
    }
}

#[derive(Default)]
struct Counters {
    dropped: AtomicU64,
    shed: AtomicU64,
    written: AtomicU64,
    write_errors: AtomicU64,
    metrics: metrics_handles::Handles,
}

impl Counters {
    fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.metrics
            .dropped
            .increment("keygate_audit_dropped_total", n);
    }

    fn shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
        self.metrics.shed.increment("keygate_audit_shed_total", 1);
    }

    fn write_error(&self, error: &dyn std::fmt::Display, events: usize) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .write_errors
            .increment("keygate_audit_write_errors_total", 1);
        tracing::warn!(%error, events, "audit sink failed");
    }
}

/// The log's counters in the installed metrics recorder, each registered on its first use
/// and kept (the `metrics` macros look the key up on every call); nothing without the
/// `metrics` feature.
mod metrics_handles {
    use super::OnceLock;

    #[derive(Default)]
    pub(super) struct Handles {
        pub(super) dropped: Handle,
        pub(super) shed: Handle,
        pub(super) write_errors: Handle,
    }

    /// One counter, registered on first use.
    #[derive(Default)]
    pub(super) struct Handle {
        #[cfg(feature = "metrics")]
        counter: OnceLock<::metrics::Counter>,
        #[cfg(not(feature = "metrics"))]
        counter: OnceLock<()>,
    }

    impl Handle {
        #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
        pub(super) fn increment(&self, name: &'static str, n: u64) {
            #[cfg(feature = "metrics")]
            self.counter
                .get_or_init(|| ::metrics::counter!(name))
                .increment(n);
            #[cfg(not(feature = "metrics"))]
            let _ = (&self.counter, name, n);
        }
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dropped", &self.dropped())
            .field("shed", &self.shed())
            .field("written", &self.written())
            .field("write_errors", &self.write_errors())
            .field("write_timeout", &self.write_timeout)
            .field("denial_budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the background writer for `sink` with a queue of `capacity` events. Needs a
    /// Tokio runtime.
    pub fn spawn(sink: impl AuditSink, capacity: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<Queued>(capacity.max(1));
        let sink: Arc<dyn AuditSink> = Arc::new(sink);
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(Notify::new());
        let task = {
            let (sink, counters, stop) = (sink.clone(), counters.clone(), stop.clone());
            tokio::spawn(async move {
                let mut queued = Vec::with_capacity(256);
                let mut batch = Vec::with_capacity(256);
                let mut stopping = false;
                loop {
                    let n = if stopping {
                        rx.recv_many(&mut queued, 256).await
                    } else {
                        tokio::select! {
                            biased;
                            n = rx.recv_many(&mut queued, 256) => n,
                            () = stop.notified() => {
                                // No event is taken after this; those queued are written.
                                rx.close();
                                stopping = true;
                                continue;
                            }
                        }
                    };
                    if n == 0 {
                        break;
                    }
                    batch.extend(queued.drain(..).map(Queued::into_event));
                    let len = batch.len();
                    let n = len as u64;
                    // In a task of its own: a sink that panics (a bug some event trips)
                    // loses that batch, counted, not the writer and every later event.
                    let write = {
                        let (sink, events) = (sink.clone(), std::mem::take(&mut batch));
                        tokio::spawn(async move { (sink.write(&events).await, events) })
                    };
                    match write.await {
                        Ok((Ok(()), events)) => {
                            counters.written.fetch_add(n, Ordering::Relaxed);
                            batch = events;
                        }
                        Ok((Err(error), events)) => {
                            counters.write_error(&error, events.len());
                            counters.dropped(n);
                            batch = events;
                        }
                        Err(_) => {
                            counters.write_error(&"the audit sink panicked", len);
                            counters.dropped(n);
                        }
                    }
                    batch.clear();
                }
            })
        };
        Self {
            inner: Arc::new(LogInner {
                tx,
                closed: AtomicBool::new(false),
                stop,
                sink,
                counters,
                task: Mutex::new(Some(task)),
            }),
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            budget: Some(AuditBudget::default()),
        }
    }

    /// How many refused requests each client address may add to the log (default
    /// [`AuditBudget::default`], 60 a minute; `None`: no bound). Past it, the address's
    /// refusal events are shed and counted ([`shed`](Self::shed)), and one `audit.shed`
    /// event says how many once it is recorded again (see [`AuditBudget`]). Allowed
    /// requests and management writes that took effect are never shed. Applies to this
    /// handle and its later clones.
    #[must_use]
    pub fn with_denial_budget(mut self, budget: Option<AuditBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// How long [`write_now`](Self::write_now) waits for the sink (default
    /// [`DEFAULT_WRITE_TIMEOUT`], 2 s). Applies to this handle and its later clones.
    #[must_use]
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The longest wait of [`write_now`](Self::write_now).
    #[must_use]
    pub fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// Queues an event; drops (and counts) it when the queue is full or closed.
    pub fn record(&self, event: AuditEvent) {
        self.queue(Queued::Event(event));
    }

    fn queue(&self, queued: Queued) {
        let sent =
            !self.inner.closed.load(Ordering::Acquire) && self.inner.tx.try_send(queued).is_ok();
        if !sent {
            self.inner.counters.dropped(1);
        }
    }

    /// Queues the event of a request from `client` (the address its failures count
    /// against): a refusal is charged to the address's [denial
    /// budget](Self::with_denial_budget) and shed past it; the first refusal kept after
    /// some were shed is preceded by an `audit.shed` event with their number.
    pub(crate) fn record_request(&self, mut event: AuditEvent, client: Option<std::net::IpAddr>) {
        // The method is the client's choice, of any length: cut like the path.
        super::request::cut_method(&mut event.method);
        if event.rbac_decision == Decision::Deny
            && let (Some(budget), Some(ip)) = (&self.budget, client)
        {
            match budget.admit(ip) {
                Admission::Shed => {
                    self.inner.counters.shed();
                    return;
                }
                Admission::Keep { shed } if shed > 0 => self.record(shed_summary(&event, shed)),
                Admission::Keep { .. } => {}
            }
        }
        self.record(event);
    }

    /// [`record_request`](Self::record_request) for the layer's `authenticate` events: the
    /// event is queued as it is, and made into an [`AuditEvent`] by the background writer,
    /// so an allowed request allocates nothing here. The budget and the `audit.shed`
    /// summary are those of [`record_request`](Self::record_request).
    pub(crate) fn record_request_event(
        &self,
        event: RequestEvent,
        client: Option<std::net::IpAddr>,
    ) {
        if event.decision() == Decision::Deny
            && let (Some(budget), Some(ip)) = (&self.budget, client)
        {
            match budget.admit(ip) {
                Admission::Shed => {
                    self.inner.counters.shed();
                    return;
                }
                Admission::Keep { shed } if shed > 0 => {
                    // Rare: the first refusal kept after some were shed.
                    let event = event.into_event();
                    self.record(shed_summary(&event, shed));
                    self.record(event);
                    return;
                }
                Admission::Keep { .. } => {}
            }
        }
        self.queue(Queued::Request(event));
    }

    /// Writes `event` to the sink now, past the queue (so a full queue does not hold it
    /// up), and returns once the sink has kept it. It may land before events queued
    /// earlier; readers order by timestamp.
    ///
    /// # Errors
    ///
    /// [`AuditWriteError::Sink`] when the sink fails, [`AuditWriteError::TimedOut`] when it
    /// does not answer within the [write timeout](Self::with_write_timeout). Both are
    /// counted in [`write_errors`](Self::write_errors) and logged.
    pub async fn write_now(&self, event: AuditEvent) -> Result<(), AuditWriteError> {
        let events = [event];
        let outcome = tokio::time::timeout(self.write_timeout, self.inner.sink.write(&events))
            .await
            .map_err(|_| AuditWriteError::TimedOut(self.write_timeout))
            .and_then(|r| r.map_err(AuditWriteError::Sink));
        match outcome {
            Ok(()) => {
                self.inner.counters.written.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => {
                match &error {
                    AuditWriteError::Sink(source) => self.inner.counters.write_error(source, 1),
                    timed_out => self.inner.counters.write_error(timed_out, 1),
                }
                Err(error)
            }
        }
    }

    /// Events that never reached the sink: the queue was full or closed, or the sink failed
    /// their batch.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.inner.counters.dropped.load(Ordering::Relaxed)
    }

    /// Refusal events shed by the [denial budget](Self::with_denial_budget).
    #[must_use]
    pub fn shed(&self) -> u64 {
        self.inner.counters.shed.load(Ordering::Relaxed)
    }

    /// Sink writes that failed or timed out (background batches and
    /// [`write_now`](Self::write_now) calls alike).
    #[must_use]
    pub fn write_errors(&self) -> u64 {
        self.inner.counters.write_errors.load(Ordering::Relaxed)
    }

    /// Events the sink has accepted.
    #[must_use]
    pub fn written(&self) -> u64 {
        self.inner.counters.written.load(Ordering::Relaxed)
    }

    /// Closes the queue and waits until every queued event is written.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.stop.notify_one();
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// The `audit.shed` event that stands for `shed` refusals of `event`'s address: no token,
/// no owner, no request id; the method and path are those of `event` (the refusal kept
/// now), the reason `shed:<n>`.
fn shed_summary(event: &AuditEvent, shed: u64) -> AuditEvent {
    AuditEvent {
        timestamp: event.timestamp,
        event: "audit.shed".to_owned(),
        api_token_id: None,
        api_token_name: None,
        owner: None,
        method: event.method.clone(),
        path: event.path.clone(),
        status_code: event.status_code,
        rbac_decision: Decision::Deny,
        reason: Some(format!("shed:{shed}")),
        client_ip: event.client_ip,
        request_id: None,
        details: None,
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::audit::MemoryAuditSink;
    use crate::audit::event::event;

    #[tokio::test]
    async fn events_reach_the_sink_and_a_full_queue_drops_instead_of_blocking() {
        let sink = MemoryAuditSink::new();
        let log = AuditLog::spawn(sink.clone(), 4);
        for i in 0..100 {
            log.record(event(200 + i));
        }
        log.shutdown().await;
        let written = sink.events().len() as u64;
        assert_eq!(written + log.dropped(), 100);
        assert!(
            log.dropped() > 0,
            "a queue of 4 cannot take 100 events at once"
        );
        assert_eq!(log.written(), written);
        log.record(event(1));
        assert_eq!(
            written + log.dropped(),
            100 + 1,
            "after shutdown events are counted as dropped"
        );
    }

    /// Blocks every batch that holds an `authenticate` event (a wedged writer); fails or
    /// keeps the others.
    #[derive(Clone, Default)]
    struct Wedged {
        fail: bool,
        kept: MemoryAuditSink,
    }

    #[async_trait]
    impl AuditSink for Wedged {
        async fn write(
            &self,
            events: &[AuditEvent],
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            if events.iter().any(|e| e.event == "authenticate") {
                std::future::pending::<()>().await;
            }
            if self.fail {
                return Err("disk full".into());
            }
            self.kept.write(events).await
        }
    }

    #[tokio::test]
    async fn write_now_passes_a_full_queue_and_reports_a_failing_or_silent_sink() {
        let sink = Wedged::default();
        let log = AuditLog::spawn(sink.clone(), 4);
        for i in 0..100 {
            log.record(event(200 + i));
        }
        tokio::task::yield_now().await;
        assert!(log.dropped() > 0, "the flood is shed and counted");
        let mut create = event(201);
        create.event = "token.create".into();
        log.write_now(create.clone()).await.unwrap();
        assert_eq!(
            sink.kept.events(),
            [create.clone()],
            "kept before write_now returns"
        );

        let failing = AuditLog::spawn(
            Wedged {
                fail: true,
                ..Wedged::default()
            },
            4,
        );
        let err = failing.write_now(create.clone()).await.unwrap_err();
        assert!(matches!(err, AuditWriteError::Sink(_)), "{err:?}");
        assert_eq!(failing.write_errors(), 1);
        failing.record(create.clone());
        failing.shutdown().await;
        assert_eq!(failing.write_errors(), 2, "a failed batch is counted");
        assert_eq!(
            failing.dropped(),
            1,
            "and its events are counted as dropped"
        );
        assert_eq!(failing.written(), 0);

        let silent =
            AuditLog::spawn(Wedged::default(), 4).with_write_timeout(Duration::from_millis(20));
        let mut auth = create;
        auth.event = "authenticate".into();
        let err = silent.write_now(auth).await.unwrap_err();
        assert!(matches!(err, AuditWriteError::TimedOut(_)), "{err:?}");
        assert_eq!(silent.write_errors(), 1);
    }
}
