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
//! `KEYGATE_ADMIN_EMAIL`, `KEYGATE_RATE_LIMIT`, ...): the table, the routes and the
//! policies are in the docs of `keygate::server`, which this program embeds. To mount the
//! same routes in a server of your own, call `keygate::server::build_app` and serve its
//! router.

use keygate::server::{self, BoxError, Config, LogFormat};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The log format first, so that even a configuration error is written in it.
    server::init_logging(LogFormat::from_env()?)?;
    let outcome = match Config::from_env() {
        Ok(config) => server::serve(&config).await,
        Err(error) => Err(error),
    };
    if let Err(error) = outcome {
        tracing::error!(%error, "the server stopped");
        std::process::exit(1);
    }
    Ok(())
}
