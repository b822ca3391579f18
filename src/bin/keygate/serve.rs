//! `keygate serve`: the reference server ([`keygate::server::serve`]).

use clap::Args;
use keygate::StoreError;
use keygate::server::{self, Config, OpenError};

use super::Failure;
use super::settings::SettingFlags;

/// `keygate serve` takes every setting as a flag.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub settings: SettingFlags<false>,
}

/// Runs the server until Ctrl-C or SIGTERM.
pub fn run(config: Config) -> Result<(), Failure> {
    // The log in the configured format (`KEYGATE_LOG_FORMAT`), filtered by `RUST_LOG`.
    server::init_logging(config.log_format)
        .map_err(|e| Failure::Usage(format!("cannot start the log: {e}")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::store("cannot start the async runtime", e))?;
    runtime.block_on(server::serve(&config)).map_err(|e| {
        // A database that cannot be opened is a store error (exit 3); the rest (an address
        // that cannot be bound, an audit file that cannot be opened) is the setting's (1).
        match e.downcast::<OpenError>() {
            Ok(open) if open.is_usage() => Failure::Usage(open.to_string()),
            Ok(open) => Failure::Store("cannot start the server".into(), Some(open)),
            Err(other) => match other.downcast::<StoreError>() {
                Ok(store) => Failure::Store("cannot start the server".into(), Some(store)),
                Err(other) => Failure::Usage(chain(other.as_ref())),
            },
        }
    })
}

/// An error and its sources, `: `-separated.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = format!("cannot start the server: {e}");
    let mut next = e.source();
    while let Some(e) = next {
        out.push_str(&format!(": {e}"));
        next = e.source();
    }
    out
}
