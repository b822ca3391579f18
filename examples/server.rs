//! The keygate reference server: the token management API, the token page, metrics and a
//! small protected demo API, on one embedded SQLite file (`keygate.db` in the working
//! directory) or on a PostgreSQL database shared by several instances.
//!
//! ```sh
//! cargo run --example server
//! KEYGATE_DB=postgres://keygate@db.internal/keygate KEYGATE_ADDR=0.0.0.0:8080 cargo run --example server
//! ```
//!
//! Every setting comes from the environment (`KEYGATE_DB`, `KEYGATE_ADDR`,
//! `KEYGATE_ADMIN_EMAIL`, `KEYGATE_RATE_LIMIT`, ...) or the TOML file `KEYGATE_CONFIG`
//! names: the table, the routes and the policies are in the docs of `keygate::server`,
//! which this program embeds. Unlike `keygate serve`, it mounts the demo API unless
//! `KEYGATE_DEMO=0`. To mount the same routes in a server of your own, call
//! `keygate::server::build_app` and serve its router.

use std::process::ExitCode;

use keygate::server::{self, Config};

#[tokio::main]
async fn main() -> ExitCode {
    // The demo API is on here unless switched off; every bad setting is one line.
    let defaults = Config {
        demo: true,
        ..Config::default()
    };
    let config = match Config::loader().with_defaults(defaults).load() {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(error) = server::serve(&config).await {
        eprintln!("cannot serve: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
