//! The reference server (feature `server`): the token management API and a small
//! protected demo API on one embedded SQLite file, or on a shared PostgreSQL database for
//! several instances (with the `postgres` feature).
//!
//! ```sh
//! cargo run --example server
//! ```
//!
//! The example is a few lines around this module: read [`Config::from_env`], then
//! [`serve`]. [`build_app`] assembles the same routes without listening, for tests and for
//! programs that mount them in their own server; [`assemble`] does it over any store.
//! [`Database`] opens the store named by `KEYGATE_DB` (the `keygate` command-line tool opens
//! it the same way), and [`bootstrap`] holds the account rules both share.
//!
//! ```no_run
//! # async fn run() -> Result<(), keygate::server::BoxError> {
//! use keygate::server::{self, Config};
//!
//! // The whole server, as `cargo run --example server` runs it:
//! server::serve(&Config::from_env()?).await?;
//!
//! // Or its routes, under a prefix of a server of your own:
//! let app = server::build_app(&Config::from_env()?).await?;
//! let router: axum::Router = axum::Router::new().nest("/auth", app.router);
//! # let _ = router;
//! # Ok(())
//! # }
//! ```
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `KEYGATE_DB` | `keygate.db` | the SQLite file (created `0600` when missing: it holds password hashes), or a `postgres://` URL shared by several instances (printed with its password as `***`) |
//! | `KEYGATE_DB_SCHEMA` | — | with PostgreSQL: the schema to keep keygate's tables in (default `public`) |
//! | `KEYGATE_ADDR` | `127.0.0.1:8080` | where to listen |
//! | `KEYGATE_ADMIN_EMAIL` | `admin@example.com` | the admin account |
//! | `KEYGATE_ADMIN_PASSWORD` | — | its password; when unset and the admin does not exist yet, one is generated and printed once (an existing admin keeps its password) |
//! | `KEYGATE_RATE_LIMIT` | `100` | requests a minute per token (429 with `Retry-After` past it); a token's own `rate_limit` can only lower it |
//! | `KEYGATE_FAILURE_LIMIT` | `20` | failed authentications (bad tokens, wrong passwords) a minute per client address, and failed sign-ins a minute per account before its backoff starts |
//! | `KEYGATE_TRUSTED_PROXIES` | — | comma-separated CIDRs of the proxies whose client-address header is believed |
//! | `KEYGATE_CLIENT_IP_HEADER` | `x-forwarded-for` | the one header those proxies put the client's address in: `x-forwarded-for`, `forwarded` (RFC 7239 `for=`), `x-real-ip`, or any header name holding one address (e.g. `cf-connecting-ip`); every other forwarding header is ignored |
//! | `KEYGATE_AUDIT_LOG` | — | append audit events to this file as JSON Lines, created `0600` (they always go to the database too) |
//! | `KEYGATE_METRICS` | on | `off`: no `GET /metrics` |
//! | `KEYGATE_STORE_TIMEOUT` | `2` | seconds any store call a request waits on may take; then 503 `store_unavailable` |
//! | `KEYGATE_MIGRATE` | `on` | `off`: run no migration (the schema is applied with your own tool from `migrations/`); the server then checks that keygate's tables are there and refuses to start, naming the missing one, if not. SQLite: the file must exist |
//! | `KEYGATE_REDIS_CA_FILE` | — | with a `rediss://` Redis URL: the PEM file of the CA its certificate is checked against (a private CA), instead of the system's certificate store |
//! | `RUST_LOG` | `info` | log filter |
//!
//! Routes (all under `/api/v1` but the index):
//!
//! | route | needs |
//! | --- | --- |
//! | `GET /` | nothing: a short index |
//! | `GET /metrics` | nothing: Prometheus text (unless `KEYGATE_METRICS=off`) |
//! | `GET /healthz` | nothing: 200 `ok` while the process answers |
//! | `GET /readyz` | nothing: 200 `ready` when the database answers within the store bound and the revocation listener (PostgreSQL) is connected, else 503 `not ready` |
//! | `GET /tokens` | nothing: the token page (it signs in with email and password) |
//! | `POST /api/v1/tokens` | Basic (email + password): create a token |
//! | `GET /api/v1/tokens` | Basic, or a token with `tokens:read` |
//! | `DELETE /api/v1/tokens/{id}`, `POST /api/v1/tokens/{id}/rotate` | Basic, or a token with `tokens:write` holding every permission of the token it acts on |
//! | `GET /api/v1/me` | a token |
//! | `GET /api/v1/audit` | `audit:read` (Basic or a token): the caller's own audit events (every owner's with `audit:read_all`), `?token_id=&since=&until=&limit=` |
//! | `GET /api/v1/openapi.json` | nothing: the OpenAPI 3.1 document |
//! | `GET /api/v1/apps` | `apps:read` (roles `viewer`, `ops`, `deployer`, `cicd`, `admin`) |
//! | `POST /api/v1/apps/{app}/restart` | `processes:restart` (`ops`, `deployer`, `admin`) |
//! | `POST /api/v1/apps/{app}/builds` | `builds:create` (`deployer`, `cicd`, `admin`) |
//! | `PUT /api/v1/apps/{app}/env` | `env:write` (`deployer`, `admin`) |
//!
//! Tokens are created with a `role` (one of [`Roles::deployment_platform`]'s `viewer`, `ops`,
//! `deployer`, `cicd`, `admin`) or explicit `permissions`; without either they get the account's own.
//! A token never does more than its account may do now: its permissions are cut down to
//! the account's current ones on every request (answers kept 5 s).
//!
//! Every bearer request under `/api/v1` goes through the same policies: 100 requests a
//! minute per token (`RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` on allowed
//! responses), failure limits per client address (the socket peer, or the forwarded client
//! behind a trusted proxy), one audit event per decision and the `keygate_*` metrics.
//! Management writes add `token.create`, `token.revoke`, `token.rotate` and `token.release`
//! events, written to the database before the answer (503 when they cannot be, and a token
//! just created is then revoked).
//! Wrong passwords count against the same failure limit as bad tokens, plus a per-account
//! backoff, and each writes an `auth.basic` event.
//!
//! On PostgreSQL each instance verifies through a [`CachedStore`](crate::store::cached::CachedStore) whose listener hears every
//! revocation and rotation made by the other instances (`LISTEN`/`NOTIFY`), so a token
//! revoked on one instance is refused on all of them within milliseconds; if the listener
//! loses its connection the cache is bypassed until it is back.
//!
//! Every store call a request waits on (token lookups and bindings, account lookups,
//! permission resolution, the management API's reads and writes, audit reads) is bounded
//! by `KEYGATE_STORE_TIMEOUT` (2 s), on SQLite and PostgreSQL alike: a wedged database answers 503
//! `store_unavailable`, never holds requests and never lets one through.

use std::error::Error;

mod app;
pub mod bootstrap;
mod config;
mod db;
mod serve;

#[cfg(doc)]
use crate::Roles;

pub use app::{App, assemble, build_app};
pub use config::Config;
pub use db::{Database, OpenError, OpenOptions, OpenedStore};
pub use serve::{serve, shutdown_signal};

/// The errors the server's setup returns: the first failure, with its sources.
pub type BoxError = Box<dyn Error + Send + Sync>;
