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
//! keygate's, to tell the cost of `Router::layer` itself from keygate's.
//! It runs on a single-threaded Tokio runtime, so the script can pin it to one CPU with
//! `taskset`. Before serving it issues 10 000 tokens (100 owners with 100 each) into a
//! `MemoryStore`, so lookups run against a store of realistic size, then one more token,
//! which it prints as the only line on stdout, `token: <token>`; the script reads it and
//! sends it to every request in both modes, so the layer is the only difference between
//! them. It serves `GET /hello` (a short text body) until killed; anything else it says
//! goes to stderr.

use axum::Router;
use axum::routing::get;
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
    if !matches!(mode.as_str(), "on" | "off" | "noop") {
        return Err(format!("expected `on`, `off` or `noop`, not {mode:?}").into());
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
        .issue(NewToken::new("load@example.com", "load-test"))
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
    match mode.as_str() {
        "on" => axum::serve(listener, app.layer(AuthLayer::new(tokens.clone()))).await?,
        // The cost of `Router::layer` itself, with a layer that does nothing.
        "noop" => axum::serve(listener, app.layer(tower::layer::util::Identity::new())).await?,
        _ => axum::serve(listener, app).await?,
    }
    Ok(())
}
