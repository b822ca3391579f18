//! The keygate reference server: the token management API, the token page, metrics and a
//! small protected demo API, on one embedded SQLite file (`keygate.db` in the working
//! directory) or on a PostgreSQL database shared by several instances.
//!
//! ```sh
//! cargo run --example server
//! KEYGATE_DB=postgres://keygate@db.internal/keygate KEYGATE_ADDR=0.0.0.0:8080 cargo run --example server
//! KEYGATE_LOG_FORMAT=json cargo run --example server   # one JSON object a line
//! ```
//!
//! Every setting comes from the environment (`KEYGATE_DB`, `KEYGATE_ADDR`,
//! `KEYGATE_ADMIN_EMAIL`, `KEYGATE_RATE_LIMIT`, ...) or the TOML file `KEYGATE_CONFIG`
//! names: the table, the routes and the policies are in the docs of `keygate::server`,
//! which this program embeds. Unlike `keygate serve`, it mounts the demo API unless
//! `KEYGATE_DEMO=0`. To mount the same routes in a server of your own, call
//! `keygate::server::build_app` and serve its router.

use std::process::ExitCode;

use keygate::server::{self, Config, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    // The demo API is on here unless switched off.
    let defaults = Config {
        demo: true,
        ..Config::default()
    };
    let loaded = Config::loader().with_defaults(defaults).load();
    // The log first, in the configured format (or, when the configuration is bad, the one
    // KEYGATE_LOG_FORMAT names), so that even a bad setting is reported in it.
    let format = match &loaded {
        Ok(config) => config.log_format,
        Err(_) => LogFormat::from_env().unwrap_or_default(),
    };
    if let Err(error) = server::init_logging(format) {
        eprintln!("cannot start the log: {error}");
        return ExitCode::FAILURE;
    }
    let config = match loaded {
        Ok(config) => config,
        Err(invalid) => {
            for problem in invalid.problems() {
                tracing::error!(setting = %problem.source, "{}", problem.message);
            }
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = server::serve(&config).await {
        tracing::error!(%error, "the server stopped");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
