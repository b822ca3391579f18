//! The cost of each per-request policy of the layer, alone and all together, against the
//! plain layer and a no-auth baseline in the same run (1 000 tokens in a `MemoryStore`).
//!
//! ```sh
//! cargo bench --bench policies
//! cargo bench --bench policies -- 'policies/(no_auth|all)' --warm-up-time 1 --measurement-time 3
//! ```
//!
//! `all_drained` runs the same requests as `all` and lets the audit log's background
//! writer run every 64 requests, so its work (turning the queued events into
//! `AuditEvent`s and handing them to the sink) is counted in the figure too.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, header};
use http_body_util::Full;
use keygate::audit::{AuditEvent, AuditLog, AuditSink};
use keygate::client_ip::ClientAddr;
use keygate::rate_limit::{FailureLimits, Rate, RateLimits};
use keygate::{AuthLayer, MemoryStore, NewToken, Tokens};
use tower::{Layer, Service};

type Body = Full<Bytes>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn baseline() -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(|req: Request<Body>| async move {
        black_box(&req);
        Ok::<_, Infallible>(Response::new(Body::default()))
    })
}

fn request(auth: &str) -> Request<Body> {
    let mut r = Request::get("/things")
        .header(header::AUTHORIZATION, auth)
        .body(Body::default())
        .expect("request");
    r.extensions_mut()
        .insert(ClientAddr("192.0.2.1:4000".parse().expect("addr")));
    r
}

/// Takes every batch and keeps nothing.
struct NullSink;

#[async_trait::async_trait]
impl AuditSink for NullSink {
    async fn write(
        &self,
        events: &[AuditEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        black_box(events.len());
        Ok(())
    }
}

fn setup(rt: &tokio::runtime::Runtime) -> (Tokens, String) {
    let store = MemoryStore::new();
    let tokens = Tokens::builder(store).build().expect("tokens");
    rt.block_on(async {
        for i in 0..999 {
            tokens
                .issue(NewToken::new(format!("owner-{}", i % 100), format!("t{i}")))
                .await
                .expect("issue");
        }
        let issued = tokens
            .issue(NewToken::new("bench-owner", "valid"))
            .await
            .expect("issue");
        // A use recorded and flushed, so that the valid path skips the usage queue, as it
        // does in a server whose maintenance task flushes every few seconds.
        tokens
            .authenticate(issued.token.expose_secret())
            .await
            .expect("valid");
        tokens.flush_usage().await.expect("flush");
        (
            tokens.clone(),
            format!("Bearer {}", issued.token.expose_secret()),
        )
    })
}

#[derive(Clone, Copy)]
enum Policy {
    Rate,
    Failure,
    Audit,
    Metrics,
}

fn layer_with(tokens: &Tokens, policies: &[Policy]) -> AuthLayer {
    let mut layer = AuthLayer::new(tokens.clone());
    for p in policies {
        layer =
            match p {
                Policy::Rate => layer
                    .with_rate_limits(RateLimits::new(Rate::per_minute(u32::MAX).expect("rate"))),
                Policy::Failure => layer
                    .with_failure_limits(FailureLimits::new(Rate::per_minute(20).expect("rate"))),
                Policy::Audit => layer.with_audit(AuditLog::spawn(NullSink, 1 << 16)),
                Policy::Metrics => {
                    let _ = metrics_recorder();
                    layer.with_metrics()
                }
            };
    }
    layer
}

fn metrics_recorder() -> &'static Option<keygate::metrics::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<keygate::metrics::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| keygate::metrics::install().ok())
}

fn policies(c: &mut Criterion) {
    use Policy::*;
    let rt = runtime();
    let _guard = rt.enter();
    let (tokens, auth) = setup(&rt);
    let mut g = c.benchmark_group("policies");
    g.bench_function("no_auth", |b| {
        let svc = baseline();
        b.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            let r = request(&auth);
            async move { svc.call(r).await.map(|r| r.status()) }
        })
    });
    let variants: [(&str, &[Policy]); 6] = [
        ("layer", &[]),
        ("rate", &[Rate]),
        ("failure", &[Failure]),
        ("audit", &[Audit]),
        ("metrics", &[Metrics]),
        ("all", &[Rate, Failure, Audit, Metrics]),
    ];
    for (name, set) in variants {
        g.bench_function(name, |b| {
            let svc = layer_with(&tokens, set).layer(baseline());
            b.to_async(&rt).iter(|| {
                let mut svc = svc.clone();
                let r = request(&auth);
                async move { svc.call(r).await.map(|r| r.status()) }
            })
        });
    }
    g.bench_function("all_drained", |b| {
        let svc = layer_with(&tokens, &[Rate, Failure, Audit, Metrics]).layer(baseline());
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let mut s = svc.clone();
                    let _ = black_box(s.call(request(&auth)).await);
                    if i % 64 == 63 {
                        tokio::task::yield_now().await;
                    }
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = policies
}
criterion_main!(benches);
