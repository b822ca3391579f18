//! The heap allocations of one verified request with every per-request policy on, counted
//! (not timed): a regression on the request's path shows here without a benchmark.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use keygate::audit::{AuditLog, MemoryAuditSink};
use keygate::client_ip::ClientAddr;
use keygate::rate_limit::{FailureLimits, Rate, RateLimits};
use keygate::{AuthLayer, MemoryStore, NewToken, TokenKind, Tokens};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// What one allowed request costs in allocations with rate limits, failure limits, an
/// allow-list, audit and metrics all on (17 before the audit event was queued as a compact
/// struct, made into an `AuditEvent` by the background writer, and the rate-limit header
/// values were taken from a table): among them the layer's future, the identity in the
/// request's extensions (three) and the response's header map (two). The metric handles
/// are kept, so they allocate nothing either.
const BUDGET: usize = 11;

#[tokio::test]
async fn one_request_with_every_policy_stays_within_its_allocation_budget() {
    let _serial = super::SERIAL.lock().await;
    let _ = super::handle();
    // A kind of its own, so that the counters the other tests of this binary read do not
    // move.
    // No background upkeep: its task's first turn (timers, a flush) would be counted if it
    // ran inside a measured request; the flush is done by hand below.
    let tokens = Tokens::builder(MemoryStore::new())
        .kind(TokenKind::new("alloc", "alloc").expect("kind"))
        .manual_maintenance()
        .build()
        .expect("tokens");
    let issued = tokens
        .issue(
            NewToken::new("alice", "deploy")
                .allowed_ips(["192.0.2.0/24".parse().expect("network")]),
        )
        .await
        .expect("issue");
    let sink = MemoryAuditSink::new();
    let audit = AuditLog::spawn(sink.clone(), 1024);
    let svc = AuthLayer::new(tokens.clone())
        .with_rate_limits(RateLimits::new(Rate::per_minute(1_000_000).expect("rate")))
        .with_failure_limits(FailureLimits::new(Rate::per_minute(20).expect("rate")))
        .with_audit(audit.clone())
        .with_metrics()
        .layer(tower::service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
        }));
    let auth = format!("Bearer {}", issued.token.expose_secret());
    let request = || {
        let mut r = Request::get("/things")
            .header(http::header::AUTHORIZATION, &auth)
            .header("x-request-id", "req-1")
            .body(Full::<Bytes>::default())
            .expect("request");
        r.extensions_mut()
            .insert(ClientAddr("192.0.2.7:4000".parse().expect("address")));
        r
    };
    // The first requests register the metric handles and size the limiters' maps; the
    // use they record is written, so that later requests skip the usage queue (as in a
    // server whose maintenance task flushes every few seconds).
    for _ in 0..3 {
        let res = svc.clone().call(request()).await.expect("response");
        assert_eq!(res.status(), 200);
    }
    tokens.flush_usage().await.expect("flush");
    let mut allocations = Vec::new();
    for _ in 0..5 {
        let req = request();
        let mut s = svc.clone();
        // Whatever the runtime has ready (the audit writer's batch) runs before the count.
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
        let region = Region::new(GLOBAL);
        let res = s.call(req).await.expect("response");
        let stats = region.change();
        assert_eq!(res.status(), 200);
        assert!(res.headers().contains_key("ratelimit-remaining"));
        drop(res);
        allocations.push(stats.allocations + stats.reallocations);
    }
    // The counting allocator sees every thread of the process: another test's runtime
    // shutting down now and then lands inside one count, so the request's cost is the
    // median of five.
    let mut sorted = allocations.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    assert!(
        median <= BUDGET,
        "one verified request with every policy allocated {allocations:?} times (budget {BUDGET})"
    );
    // And the events were all written, with the fields the layer always wrote.
    audit.shutdown().await;
    let events = sink.events();
    assert_eq!(events.len(), 8);
    let last = events.last().expect("event");
    assert_eq!(last.event, "authenticate");
    assert_eq!(last.method, "GET");
    assert_eq!(last.path, "/things");
    assert_eq!(last.request_id.as_deref(), Some("req-1"));
    assert_eq!(last.api_token_name.as_deref(), Some("deploy"));
    assert_eq!(last.owner.as_deref(), Some("alice"));
    assert!(last.reason.is_none());
}
