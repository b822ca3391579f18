//! The server that `scripts/load.sh` measures: how many requests a second a server loses
//! when keygate's `AuthLayer` is on.
//!
//! ```sh
//! cargo run --release --example load_target -- on  127.0.0.1:3900   # with the layer
//! cargo run --release --example load_target -- off 127.0.0.1:3900   # the same router without it
//! ```
//!
//! Arguments: `on` or `off` (default `on`), then the address (default `127.0.0.1:3900`).
//! `noop` puts a layer that does nothing (`tower::layer::util::Identity`) where `on` puts
//! keygate's, to tell the cost of `Router::layer` itself from keygate's. `all` puts
//! keygate's layer with every per-request policy on: a rate limit per token (high enough
//! never to refuse the load), failure limits per client address, an allow-list on the token
//! (loopback), audit events written as JSON Lines (to `/dev/null`, or to the file named by
//! `LOAD_AUDIT_FILE`), and the Prometheus metrics. Every mode reads the client address
//! from the connection, as a real server does.
//! It runs on a single-threaded Tokio runtime, so the script can pin it to one CPU with
//! `taskset`. Before serving it issues 10 000 tokens (100 owners with 100 each) into a
//! `MemoryStore`, so lookups run against a store of realistic size, then one more token,
//! which it prints as the only line on stdout, `token: <token>`; the script reads it and
//! sends it to every request in both modes, so the layer is the only difference between
//! them. It serves `GET /hello` (a short text body) until killed; anything else it says
//! goes to stderr.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use keygate::audit::{AuditLog, JsonLinesSink};
use keygate::rate_limit::{FailureLimits, Rate, RateLimits};
use keygate::{AuthLayer, MemoryStore, NewToken, Tokens};

const OWNERS: usize = 100;
const TOKENS_PER_OWNER: usize = 100;

async fn hello() -> &'static str {
    "hello\n"
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "on".into());
    if !matches!(mode.as_str(), "on" | "off" | "noop" | "all") {
        return Err(format!("expected `on`, `off`, `noop` or `all`, not {mode:?}").into());
    }
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3900".into());

    let store = MemoryStore::new();
    let tokens = Tokens::new(store.clone());
    for owner in 0..OWNERS {
        for n in 0..TOKENS_PER_OWNER {
            tokens
                .issue(NewToken::new(
                    format!("user-{owner}@example.com"),
                    format!("key-{n}"),
                ))
                .await?;
        }
    }
    let issued = tokens
        .issue(
            NewToken::new("load@example.com", "load-test")
                .allowed_ips(["127.0.0.0/8".parse()?, "::1/128".parse()?]),
        )
        .await?;

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let app = Router::new().route("/hello", get(hello));
    // Last-used times are flushed in the background, as in a real deployment; every second,
    // so that the measured runs see a server's steady state (a token's use is queued once a
    // minute, not on every request as in the seconds before the first flush).
    let _maintenance = tokens.spawn_maintenance(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(3600),
    );
    println!("token: {}", issued.token.expose_secret());
    eprintln!(
        "load_target: auth {mode}, {} tokens in the store, serving GET /hello on http://{addr}",
        store.len(),
    );
    let app = match mode.as_str() {
        "on" => app.layer(AuthLayer::new(tokens.clone())),
        "all" => app.layer(every_policy(&tokens)?),
        // The cost of `Router::layer` itself, with a layer that does nothing.
        "noop" => app.layer(tower::layer::util::Identity::new()),
        _ => app,
    };
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

/// keygate's layer with every per-request policy on.
fn every_policy(tokens: &Tokens) -> Result<AuthLayer, Box<dyn std::error::Error>> {
    let audit_file = std::env::var("LOAD_AUDIT_FILE").unwrap_or_else(|_| "/dev/null".into());
    let audit = AuditLog::spawn(JsonLinesSink::open(&audit_file)?, 10_000);
    // The recorder that `/metrics` would render; nothing renders it here.
    let _handle = keygate::metrics::install()?;
    Ok(AuthLayer::new(tokens.clone())
        .with_rate_limits(RateLimits::new(Rate::per_minute(u32::MAX)?))
        .with_failure_limits(FailureLimits::new(Rate::per_minute(20)?))
        .with_audit(audit)
        .with_metrics())
}
