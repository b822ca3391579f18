//! The reference server (feature `server`): the token management API, the token page and
//! (when asked for) a small protected demo API, on one embedded SQLite file, or on a shared
//! PostgreSQL database for several instances.
//!
//! ```sh
//! cargo install --path . --features server && keygate serve
//! cargo run --example server        # the same server, with the demo API on
//! ```
//!
//! `keygate serve` (the installed binary, `cargo install --path . --features server`) and
//! the example are a few lines around this module: read the [`Config`], start the log in
//! its format ([`init_logging`]), then [`serve`] ([`Server`] splits it into binding and
//! running, for a port of your own choosing or a signal of your own). [`build_app`]
//! assembles the same routes without listening, for tests and for programs that mount them
//! in their own server; [`assemble`] does it over any store. [`Database`] opens the store
//! named by `KEYGATE_DB` (the `keygate` command-line tool opens it the same way), and
//! [`bootstrap`] holds the account rules both share.
//!
//! ```no_run
//! # async fn run() -> Result<(), keygate::server::BoxError> {
//! use keygate::server::{self, Config};
//!
//! // The whole server, as `keygate serve` runs it (the environment and KEYGATE_CONFIG):
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
//! # Configuration
//!
//! Each setting is read from its command-line flag (`keygate serve --rate-limit 50`), else
//! its environment variable, else the TOML file named by `--config` or `KEYGATE_CONFIG`
//! (the key in the first column: `rate_limit = 50`), else its default
//! ([`ConfigLoader`]). The secrets may instead be read from a file, its trailing line
//! break removed (`KEYGATE_ADMIN_PASSWORD_FILE`, `KEYGATE_DB_FILE`, `KEYGATE_REDIS_URL_FILE`,
//! `KEYGATE_LEAK_REPORTER_KEY_FILE`, `KEYGATE_LEAK_SIGNING_SECRET_FILE`,
//! `KEYGATE_EXPIRY_WEBHOOK_SECRET_FILE`, `KEYGATE_PEPPER_FILE`,
//! `KEYGATE_PREVIOUS_PEPPERS_FILE`; `admin_password_file`, `db_file`, `pepper_file`, …;
//! `--admin-password-file`, `--db-file`, `--pepper-file`, …), e.g. a container secret; a
//! secret and
//! its file at the same level is an error. Every bad value is reported at start, one line
//! each naming the variable, key or flag and the value (never a secret's), and nothing
//! starts ([`InvalidConfig`]); so is an unknown key in the file. `keygate serve --help`
//! lists every setting with its variable and default; `keygate.example.toml` is a
//! commented file.
//!
//! | key | variable | default | meaning |
//! | --- | --- | --- | --- |
//! | `db` | `KEYGATE_DB` (`KEYGATE_DB_FILE`) | `keygate.db` | the SQLite file (created `0600` when missing: it holds password hashes), or a `postgres://` URL shared by several instances (printed with its password as `***`) |
//! | `db_schema` | `KEYGATE_DB_SCHEMA` | `public` | with PostgreSQL: the schema to keep keygate's tables in |
//! | `addr` | `KEYGATE_ADDR` | `127.0.0.1:8080` | where to listen (`host:port`) |
//! | `admin_email` | `KEYGATE_ADMIN_EMAIL` | `admin@example.com` | the admin account |
//! | `admin_password` | `KEYGATE_ADMIN_PASSWORD` (`KEYGATE_ADMIN_PASSWORD_FILE`) | — | its password; when unset and the admin does not exist yet, one is generated and printed once (an existing admin keeps its password) |
//! | `rate_limit` | `KEYGATE_RATE_LIMIT` | `100` | requests a minute per token (429 with `Retry-After` past it); a token's own `rate_limit` can only lower it |
//! | `owner_rate_limit` | `KEYGATE_OWNER_RATE_LIMIT` | `off` | requests a minute per account, shared by all of its tokens, checked besides each token's own `rate_limit` (429 with `Retry-After` past either; the `RateLimit-*` headers report the tighter); with `redis_url`, shared by every instance too |
//! | `failure_limit` | `KEYGATE_FAILURE_LIMIT` | `20` | failed authentications (bad tokens, wrong passwords) a minute per client address, and failed sign-ins a minute per account before its backoff starts |
//! | `audit_denial_limit` | `KEYGATE_AUDIT_DENIAL_LIMIT` | `60` | refused requests (no credentials, bad tokens, 429s, refused management writes) a minute per client address written to the audit trail, all at once; the rest are shed and counted (`keygate_audit_shed_total`), and one `audit.shed` event (reason `shed:<n>`) says how many once the address is written again ([`AuditBudget`](crate::rate_limit::AuditBudget)). Allowed requests and management writes are always written |
//! | `trusted_proxies` | `KEYGATE_TRUSTED_PROXIES` | — | comma-separated CIDRs (a list in the file) of the proxies whose client-address header is believed |
//! | `client_ip_header` | `KEYGATE_CLIENT_IP_HEADER` | `x-forwarded-for` | the one header those proxies put the client's address in: `x-forwarded-for`, `forwarded` (RFC 7239 `for=`), `x-real-ip`, or any header name holding one address (e.g. `cf-connecting-ip`); every other forwarding header is ignored |
//! | `audit_log` | `KEYGATE_AUDIT_LOG` | — | append audit events to this file as JSON Lines, created `0600` (they always go to the database too); on SIGHUP the file is reopened (a new `0600` file after logrotate's `create`) |
//! | `metrics` | `KEYGATE_METRICS` | `on` | `off`: no `GET /metrics` |
//! | `store_timeout` | `KEYGATE_STORE_TIMEOUT` | `2` | seconds any store call a request waits on may take; then 503 `store_unavailable` |
//! | `demo` | `KEYGATE_DEMO` | `off` | `on` (or `1`, `true`): mount the demo API (`/api/v1/apps...`); `cargo run --example server` turns it on unless `KEYGATE_DEMO=0` |
//! | `redis_url` | `KEYGATE_REDIS_URL` (`KEYGATE_REDIS_URL_FILE`) | — | a `redis://` URL: per-token rate limits and failure limits are kept there, shared by every instance pointing at it (needs the `redis` feature; printed with its password as `***`) |
//! | `redis_prefix` | `KEYGATE_REDIS_PREFIX` | `keygate:` | the prefix of every Redis key (several deployments can share one Redis) |
//! | `audit_retention` | `KEYGATE_AUDIT_RETENTION` | `90d` | how long the database keeps audit events: `90d`, `12h`, `30m`, or seconds; `off` keeps them forever. Older ones are deleted at the start and every hour, [`AUDIT_PURGE_BATCH`](crate::audit::AUDIT_PURGE_BATCH) at a time through the time index |
//! | `metrics_addr` | `KEYGATE_METRICS_ADDR` | — | serve `GET /metrics` on this address only (e.g. `127.0.0.1:9090`, reachable by the scraper but not the public), and not on `KEYGATE_ADDR` |
//! | `log_format` | `KEYGATE_LOG_FORMAT` | `text` | `json`: every line the server writes is one JSON object (the start banner too, as events naming the address and the database); a generated admin password is then written to [`PASSWORD_FILE`] (`0600`, next to the SQLite file or in the working directory) and only that path is logged |
//! | `drain_timeout` | `KEYGATE_DRAIN_TIMEOUT` | `30` | on SIGTERM or Ctrl-C: seconds the requests in flight may take to finish (no new connection is accepted); then the server stops anyway. The last-used times and the queued audit events are written either way, each within [`FLUSH_TIMEOUT`] |
//! | `verify_write_permission` | `KEYGATE_VERIFY_WRITE_PERMISSION` | — | `GET /api/v1/verify` (forward authentication): the permission the original request needs when its method is not `GET`, `HEAD` or `OPTIONS`; unset: any valid token passes |
//! | `verify_source` | `KEYGATE_VERIFY_SOURCE` | `detect` | `GET /api/v1/verify`: where the original method and URI are read: `nginx` (`X-Original-*`), `traefik` (`X-Forwarded-Method`/`-Uri`), `direct` or `envoy` (the check's own method and path; forwarding headers ignored), `detect` (whichever pair is sent). Name your proxy: behind Envoy, `detect` would believe `X-Original-*` headers a client adds |
//! | `migrate` | `KEYGATE_MIGRATE` | `on` | `off`: run no migration (the schema is applied with your own tool from `migrations/`); the server then checks that keygate's tables are there and refuses to start, naming the missing one, if not. SQLite: the file must exist |
//! | `redis_ca_file` | `KEYGATE_REDIS_CA_FILE` | — | with a `rediss://` Redis URL: the PEM file of the CA its certificate is checked against (a private CA), instead of the system's certificate store |
//! | `leak_reporter_key` | `KEYGATE_LEAK_REPORTER_KEY` (`KEYGATE_LEAK_REPORTER_KEY_FILE`) | — | the key a secret scanner sends in `X-Keygate-Reporter-Key` to `POST /api/v1/leaks` (at least 16 visible ASCII characters); with it or `leak_signing_secret` the route is served, without either it is not (404) |
//! | `leak_signing_secret` | `KEYGATE_LEAK_SIGNING_SECRET` (`KEYGATE_LEAK_SIGNING_SECRET_FILE`) | — | the HMAC-SHA256 secret a scanner signs `POST /api/v1/leaks` bodies with (`X-Keygate-Signature: sha256=<hex>`, at least 16 bytes) |
//! | `expiry_warning_days` | `KEYGATE_EXPIRY_WARNING_DAYS` | `7` | the maintenance task writes one `token.expiring` audit event per token this many days before it expires (`0`: none) |
//! | `expiry_webhook_url` | `KEYGATE_EXPIRY_WEBHOOK_URL` | — | POST each `token.expiring` event there as JSON, signed (`X-Keygate-Signature`, over `X-Keygate-Timestamp` and the body), retried with backoff ([`ExpiryWebhook`](crate::tokens::ExpiryWebhook)); `http://` only: put a TLS-terminating proxy in front for `https` |
//! | `expiry_webhook_secret` | `KEYGATE_EXPIRY_WEBHOOK_SECRET` (`KEYGATE_EXPIRY_WEBHOOK_SECRET_FILE`) | — | the HMAC-SHA256 secret of those calls (required with `expiry_webhook_url`, at least 16 bytes) |
//! | `pepper` | `KEYGATE_PEPPER` (`KEYGATE_PEPPER_FILE`) | — | a server secret of at least 32 bytes, hex or base64 (`openssl rand -base64 32`): tokens are stored as HMAC-SHA256 under it instead of SHA-256, so a copy of the database alone cannot confirm a guessed token; never printed; the `keygate token` commands need it too (SECURITY.md, *The pepper*) |
//! | `previous_peppers` | `KEYGATE_PREVIOUS_PEPPERS` (`KEYGATE_PREVIOUS_PEPPERS_FILE`) | — | comma-separated (a list in the file) peppers used before `pepper`, newest first: their tokens keep working and are re-hashed to the current pepper on use (within the 10 s usage flush) |
//! | `allow_unpeppered` | `KEYGATE_ALLOW_UNPEPPERED` | `on` | with a pepper: still accept tokens stored under the plain SHA-256 (issued before the pepper was set, or imported), re-hashing each on use; `off` refuses them once they have all been re-hashed |
//! | `[roles]` | — | [`Roles::deployment_platform`] | the file only: `name = ["permission", ...]` for each role; replaces the default roles |
//! | `[kinds.<name>]` | — | `pat` | the file only: token kinds, `prefix` (default: the name), `max_live_per_owner` (a number or `"unlimited"`), `max_lifetime` (seconds), `binding_header`, `inactivity_expiry` (seconds without use, then revoked by the hourly purge; a bound token's seat is released instead), `legacy_length` with `legacy_alphabet` (`base64url`, `hex` or `alphanumeric`: also accept imported tokens of another system's format, see [`TokenKind::with_legacy_format`](crate::TokenKind::with_legacy_format)); the first is the default kind |
//! | — | `KEYGATE_CONFIG` | — | the TOML file (`--config`) |
//! | — | `RUST_LOG` | `info` | log filter |
//!
//! On/off settings take `on`/`off`, `true`/`false`, `yes`/`no` or `1`/`0`; an empty
//! variable is the same as an unset one.
//!
//! Routes (all under `/api/v1` but the index):
//!
//! | route | needs |
//! | --- | --- |
//! | `GET /` | nothing: a short index |
//! | `GET /metrics` | nothing: Prometheus text (unless `KEYGATE_METRICS=off`; on `KEYGATE_METRICS_ADDR` instead when set) |
//! | `GET /healthz` | nothing: 200 `ok` while the process answers |
//! | `GET /readyz` | nothing: 200 `ready` when the database answers within the store bound, the revocation listener (PostgreSQL) is connected and Redis (with `KEYGATE_REDIS_URL`) answers, else 503 `not ready` |
//! | `GET /tokens` | nothing: the token page (it signs in with email and password) |
//! | `POST /api/v1/tokens` | Basic (email + password): create a token |
//! | `GET /api/v1/tokens` | Basic, or a token with `tokens:read` |
//! | `DELETE /api/v1/tokens/{id}`, `POST /api/v1/tokens/{id}/rotate` | Basic, or a token with `tokens:write` holding every permission of the token it acts on |
//! | `PATCH /api/v1/tokens/{id}` | as `DELETE`: edit name, description, expiry, `allowed_ips`, metadata, and permissions to narrower ones only (a token only narrows) |
//! | `GET /api/v1/admin/tokens`, `DELETE /api/v1/admin/tokens/{id}` | `tokens:admin` (the `admin` role): every owner's tokens (filters and a cursor), revoking any of them |
//! | `GET /api/v1/me` | a token |
//! | `POST /api/v1/admin/tokens/import` | `tokens:admin`, signed in with the password (a bearer token gets 401; the `admin` role holds `*`): import tokens another system issued, by their SHA-256 |
//! | `/api/v1/verify` (any method; `/api/v1/verify/…` too) | a token: forward authentication for nginx `auth_request`, Traefik `ForwardAuth`, Envoy `ext_authz` ([`crate::forward_auth`]); 200 with `X-Keygate-Owner`, `X-Keygate-Token-Id`, `X-Keygate-Permissions`, else the layer's refusal; see `docs/forward-auth.md` |
//! | `GET /api/v1/audit` | `audit:read` (Basic or a token): the caller's own audit events (every owner's with `audit:read_all`), `?token_id=&since=&until=&limit=` |
//! | `POST /api/v1/leaks` | the leak reporter key (`X-Keygate-Reporter-Key`) or a body signed with the leak signing secret (`X-Keygate-Signature`): revokes each reported token that still authenticates; only with `KEYGATE_LEAK_REPORTER_KEY` or `KEYGATE_LEAK_SIGNING_SECRET` (see [`LeakReports`](crate::axum::management::LeakReports)) |
//! | `GET /api/v1/openapi.json` | nothing: the OpenAPI 3.1 document |
//! | `GET /api/v1/apps` | `apps:read` (roles `viewer`, `ops`, `deployer`, `cicd`, `admin`); this and the three below only with `KEYGATE_DEMO=on` |
//! | `POST /api/v1/apps/{app}/restart` | `processes:restart` (`ops`, `deployer`, `admin`) |
//! | `POST /api/v1/apps/{app}/builds` | `builds:create` (`deployer`, `cicd`, `admin`) |
//! | `PUT /api/v1/apps/{app}/env` | `env:write` (`deployer`, `admin`) |
//!
//! Tokens are created with a `role` (by default one of [`Roles::deployment_platform`]'s
//! `viewer`, `ops`, `deployer`, `cicd`, `admin`; or the file's `[roles]`) or explicit
//! `permissions`; without either they get the account's own.
//! A token never does more than its account may do now: its permissions are cut down to
//! the account's current ones on every request (answers kept 5 s).
//!
//! Every bearer request under `/api/v1` goes through the same policies: 100 requests a
//! minute per token (`RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`, and the IETF
//! draft's `RateLimit-Policy` and `RateLimit` ([`RateLimitHeaders::Both`](crate::RateLimitHeaders::Both)) on allowed
//! responses), failure limits per client address (the socket peer, or the forwarded client
//! behind a trusted proxy), one audit event per decision and the `keygate_*` metrics.
//! Management writes add `token.create`, `token.revoke`, `token.rotate` and `token.release`
//! events, written to the database before the answer (503 when they cannot be, and a token
//! just created is then revoked).
//! Wrong passwords count against the same failure limit as bad tokens, plus a per-account
//! backoff, and each writes an `auth.basic` event.
//!
//! Each request gets one log line (`request`): its id (the request's `X-Request-Id` when it
//! is 1 to 128 visible ASCII characters, else a new UUID, echoed in the response and kept
//! in the audit events), method, path, status, `latency_us`, the `token_id` when a token
//! authenticated it (never the token) and the precise `rejection` reason of a refusal.
//!
//! On PostgreSQL each instance verifies through a [`CachedStore`](crate::store::cached::CachedStore) whose listener hears every
//! revocation and rotation made by the other instances (`LISTEN`/`NOTIFY`), so a token
//! revoked on one instance is refused on all of them within milliseconds; if the listener
//! loses its connection the cache is bypassed until it is back. Revocations travel this way
//! only, with or without Redis.
//!
//! Without `KEYGATE_REDIS_URL`, each instance keeps its own rate and failure limits: N
//! instances give a token N times its rate and a guesser N budgets. With it, every instance
//! counts in one Redis (one Lua script per check, on Redis's clock; keys expire by
//! themselves and hold no token, password or account name). When Redis cannot be reached,
//! bearer requests and sign-ins get 503 `store_unavailable` (never a free pass) and
//! `/readyz` answers 503. See `docs/deploy.md` for a deployment.
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
mod listen;
mod logging;
mod openapi;
mod retention;
mod serve;

#[cfg(doc)]
use crate::Roles;

pub use app::{App, assemble, build_app};
pub use config::{Config, ConfigLoader, ConfigProblem, InvalidConfig, Setting};
pub use db::{Database, OpenError, OpenOptions, OpenedStore};
pub use listen::HEADER_READ_TIMEOUT;
pub use logging::{LogFormat, UnknownLogFormat, init_logging, log_subscriber};
pub use retention::{
    AUDIT_PURGE_EVERY, DEFAULT_AUDIT_RETENTION, InvalidRetention, parse_retention,
};
pub use serve::{FLUSH_TIMEOUT, PASSWORD_FILE, Server, serve, shutdown_signal};

/// The errors the server's setup returns: the first failure, with its sources.
pub type BoxError = Box<dyn Error + Send + Sync>;
