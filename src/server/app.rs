//! The keygate reference server: the token management API and a small protected demo API
//! on one embedded SQLite file, or on a shared PostgreSQL database for several instances.
//!
//! ```sh
//! cargo run --example server
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
//! | `RUST_LOG` | `info` | log filter |
//!
//! Routes (all under `/api/v1` but the index):
//!
//! | route | needs |
//! | --- | --- |
//! | `GET /` | nothing: a short index |
//! | `GET /metrics` | nothing: Prometheus text (unless `KEYGATE_METRICS=off`) |
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
//! Tokens are created with a `role` (one of Rack Gateway's `viewer`, `ops`, `deployer`,
//! `cicd`, `admin`) or explicit `permissions`; without either they get the account's own.
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
//! On PostgreSQL each instance verifies through a [`CachedStore`] whose listener hears every
//! revocation and rotation made by the other instances (`LISTEN`/`NOTIFY`), so a token
//! revoked on one instance is refused on all of them within milliseconds; if the listener
//! loses its connection the cache is bypassed until it is back.
//!
//! Every store call a request waits on (token lookups and bindings, account lookups,
//! permission resolution, the management API's reads and writes, audit reads) is bounded
//! by `KEYGATE_STORE_TIMEOUT` (2 s), on SQLite and PostgreSQL alike: a wedged database answers 503
//! `store_unavailable`, never holds requests and never lets one through.

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{Path, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use keygate::accounts::{Account, AccountStore, hash_password, verify_password};
use keygate::audit::AuditReader;
use keygate::audit::{AuditEvent, AuditLog, AuditSink, JsonLinesSink};
use keygate::axum::management::Management;
use keygate::client_ip::{ClientIpHeader, ClientIpSource};
use keygate::metrics::PrometheusHandle;
use keygate::permissions::AccountPermissions;
use keygate::rate_limit::{FailureLimits, Rate, RateLimits};
use keygate::store::TokenStore;
use keygate::store::cached::{CachedStore, RevocationListener};
use keygate::store::postgres::PostgresOptions;
use keygate::store::sqlite::SqliteStore;
use keygate::store::timeout::{DEFAULT_STORE_TIMEOUT, TimeoutStore};
use keygate::{AuthLayer, Identity, Permissions, RequirePermissionLayer, Roles, Tokens};
use serde_json::{Value, json};
use zeroize::Zeroizing;

type BoxError = Box<dyn Error + Send + Sync>;

/// The server's settings, read from the environment by [`Config::from_env`].
#[derive(Clone)]
pub struct Config {
    /// The SQLite file, or a `postgres://` URL.
    pub db: PathBuf,
    /// With PostgreSQL: the schema for keygate's tables (default `public`).
    pub db_schema: Option<String>,
    /// Where to listen.
    pub addr: String,
    /// The admin account's email.
    pub admin_email: String,
    /// The admin's password; `None`: keep the existing one, or generate one.
    pub admin_password: Option<Zeroizing<String>>,
    /// Requests a minute per token.
    pub rate_limit: u32,
    /// Failed authentications a minute per client address.
    pub failure_limit: u32,
    /// Proxies whose client-address header is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The one header the trusted proxies put the client's address in.
    pub client_ip_header: ClientIpHeader,
    /// The JSON Lines audit file, if any.
    pub audit_log: Option<PathBuf>,
    /// Serve `GET /metrics`.
    pub metrics: bool,
    /// The longest any store call a request waits on may take (then 503).
    pub store_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            db: "keygate.db".into(),
            db_schema: None,
            addr: "127.0.0.1:8080".into(),
            admin_email: "admin@example.com".into(),
            admin_password: None,
            rate_limit: 100,
            failure_limit: 20,
            trusted_proxies: Vec::new(),
            client_ip_header: ClientIpHeader::XForwardedFor,
            audit_log: None,
            metrics: true,
            store_timeout: DEFAULT_STORE_TIMEOUT,
        }
    }
}

impl Config {
    /// `KEYGATE_DB`, `KEYGATE_ADDR`, `KEYGATE_ADMIN_EMAIL`, `KEYGATE_ADMIN_PASSWORD`,
    /// `KEYGATE_RATE_LIMIT`, `KEYGATE_FAILURE_LIMIT`, `KEYGATE_TRUSTED_PROXIES`,
    /// `KEYGATE_CLIENT_IP_HEADER`, `KEYGATE_AUDIT_LOG`, `KEYGATE_METRICS`, `KEYGATE_STORE_TIMEOUT`.
    ///
    /// # Errors
    ///
    /// A limit that is not a positive whole number, a proxy that is not a CIDR, or a
    /// client-address header that is not a header name.
    pub fn from_env() -> Result<Self, BoxError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let d = Self::default();
        let count = |k: &str, default: u32| -> Result<u32, BoxError> {
            match var(k) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u32>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("{k} must be a positive whole number, not {v:?}").into()),
                },
            }
        };
        let trusted_proxies = var("KEYGATE_TRUSTED_PROXIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("KEYGATE_TRUSTED_PROXIES: {s:?} is not a CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client_ip_header = match var("KEYGATE_CLIENT_IP_HEADER") {
            None => d.client_ip_header,
            Some(v) => ClientIpHeader::parse(&v)
                .map_err(|_| format!("KEYGATE_CLIENT_IP_HEADER: {v:?} is not a header name"))?,
        };
        Ok(Self {
            db: var("KEYGATE_DB").map_or(d.db, Into::into),
            db_schema: var("KEYGATE_DB_SCHEMA"),
            addr: var("KEYGATE_ADDR").unwrap_or(d.addr),
            admin_email: var("KEYGATE_ADMIN_EMAIL").unwrap_or(d.admin_email),
            admin_password: var("KEYGATE_ADMIN_PASSWORD").map(Zeroizing::new),
            rate_limit: count("KEYGATE_RATE_LIMIT", d.rate_limit)?,
            failure_limit: count("KEYGATE_FAILURE_LIMIT", d.failure_limit)?,
            trusted_proxies,
            client_ip_header,
            audit_log: var("KEYGATE_AUDIT_LOG").map(Into::into),
            metrics: !var("KEYGATE_METRICS").is_some_and(|v| v.eq_ignore_ascii_case("off")),
            store_timeout: Duration::from_secs(count("KEYGATE_STORE_TIMEOUT", 2)?.into()),
        })
    }
}

/// The assembled server, not yet listening.
pub struct App {
    /// Every route.
    pub router: Router,
    /// The token manager (for the maintenance task).
    pub tokens: Tokens,
    /// The admin password, when it was generated by this start: show it once.
    pub generated_password: Option<Zeroizing<String>>,
    /// The audit queue: shut it down last, so every event is written.
    pub audit: AuditLog,
    /// With PostgreSQL: the listener that keeps this instance's verification cache in step
    /// with revocations made elsewhere. Keep it as long as the server runs.
    pub revocations: Option<RevocationListener>,
}

impl Config {
    /// The PostgreSQL URL, when `db` is one.
    fn postgres_url(&self) -> Option<&str> {
        self.db
            .to_str()
            .filter(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
    }

    /// The database for people to read: a file path, or a PostgreSQL URL with its
    /// password (user information or `password=`-like query parameters) replaced by `***`.
    pub fn describe_db(&self) -> String {
        match self.postgres_url() {
            Some(url) => keygate::store::redact_url(url),
            None => self.db.display().to_string(),
        }
    }
}

/// Writes each batch of audit events to the database and, when configured, to the JSON
/// Lines file.
struct AuditSinks<D> {
    db: D,
    file: Option<JsonLinesSink>,
}

#[async_trait]
impl<D: AuditSink> AuditSink for AuditSinks<D> {
    async fn write(&self, events: &[AuditEvent]) -> Result<(), BoxError> {
        let file = match &self.file {
            Some(f) => f.write(events).await,
            None => Ok(()),
        };
        self.db.write(events).await?;
        file
    }
}

/// The Prometheus recorder is global: installed once per process (tests build the app
/// several times).
fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match keygate::metrics::install() {
            Ok(h) => Some(h),
            Err(error) => {
                tracing::warn!(%error, "cannot install the metrics recorder; /metrics is off");
                None
            }
        })
        .clone()
}

/// Opens the store, makes sure the admin account exists, and assembles the routes. Binds
/// nothing, so tests can drive the router with `oneshot`.
pub async fn build_app(config: &Config) -> Result<App, BoxError> {
    if let Some(url) = config.postgres_url() {
        let mut options = PostgresOptions::new(url);
        if let Some(schema) = &config.db_schema {
            options = options.with_schema(schema.clone());
        }
        let store = options.connect().await?;
        // Verifications go through a cache that every other instance's revocations and
        // rotations reach within milliseconds; a slow database is a 503 after 2 s.
        let cached = CachedStore::new(store.clone()).with_timeout(config.store_timeout);
        let listener = cached.listen_postgres(store.pool().clone());
        let mut app = assemble(config, store, cached).await?;
        app.revocations = Some(listener);
        return Ok(app);
    }
    let store = SqliteStore::open(&config.db).await?;
    assemble(config, store.clone(), store).await
}

/// The routes over `store` (accounts and audit) and `token_store` (verification), on any
/// backend. Every store call a request waits on is bounded by `store_timeout` (then 503
/// `store_unavailable`): token calls here, account lookups, permission resolution and audit
/// reads by [`Management`] and [`AccountPermissions`] themselves.
pub async fn assemble<D, T>(config: &Config, store: D, token_store: T) -> Result<App, BoxError>
where
    D: AccountStore + AuditSink + AuditReader + Clone,
    T: TokenStore,
{
    let generated_password = ensure_admin(&store, config).await?;
    let file = config
        .audit_log
        .as_ref()
        .map(JsonLinesSink::open)
        .transpose()?;
    let audit = AuditLog::spawn(
        AuditSinks {
            db: store.clone(),
            file,
        },
        10_000,
    );
    // A wedged database (a lock held elsewhere, a stalled disk, a lost connection) is a 503
    // after 2 s instead of a request held for as long as it hangs.
    let tokens = Tokens::builder(TimeoutStore::new(token_store, config.store_timeout))
        .roles(Roles::deployment_platform())
        .audit(audit.clone())
        .build()?;
    let client_ip = ClientIpSource::new()
        .trust_proxies(config.trusted_proxies.iter().copied())
        .with_header(config.client_ip_header.clone());
    let owners = AccountPermissions::new(store.clone()).with_timeout(config.store_timeout);
    let metrics = if config.metrics {
        metrics_handle()
    } else {
        None
    };
    // One set of limits for the whole API: a token's budget is the same on every route.
    let rates = RateLimits::new(Rate::per_minute(config.rate_limit)?);
    let failures = FailureLimits::new(Rate::per_minute(config.failure_limit)?);
    let policies = |layer: AuthLayer| {
        let layer = layer
            .with_rate_limits(rates.clone())
            .with_failure_limits(failures.clone())
            .with_audit(audit.clone())
            .with_client_ip(client_ip.clone())
            .with_permission_resolver(owners.clone());
        if metrics.is_some() {
            layer.with_metrics()
        } else {
            layer
        }
    };

    // Bearer requests to the management API go through the same policies; Basic requests
    // and requests without credentials go on to its own authentication, which counts wrong
    // passwords against the same failure limits.
    let management = Management::new(tokens.clone(), store.clone())
        .with_store_timeout(config.store_timeout)
        .with_server_url("/api/v1")
        .with_audit(audit.clone())
        .with_audit_reader(store)
        .with_permission_resolver(owners.clone())
        .with_client_ip(client_ip.clone())
        .with_failure_limits(failures.clone())
        .router()
        .layer(policies(
            AuthLayer::new(tokens.clone())
                .with_realm("keygate")?
                .optional(),
        ));
    let demo = Router::new()
        .route(
            "/apps",
            get(list_apps).route_layer(RequirePermissionLayer::new("apps:read")?),
        )
        .route(
            "/apps/{app}/restart",
            post(restart).route_layer(RequirePermissionLayer::new("processes:restart")?),
        )
        .route(
            "/apps/{app}/builds",
            post(create_build).route_layer(RequirePermissionLayer::new("builds:create")?),
        )
        .route(
            "/apps/{app}/env",
            put(set_env).route_layer(RequirePermissionLayer::new("env:write")?),
        )
        .layer(policies(
            AuthLayer::new(tokens.clone()).with_realm("keygate")?,
        ));

    let mut router = Router::new()
        .route("/", get(index))
        .nest("/api/v1", management.merge(demo))
        .nest(
            "/tokens",
            keygate::ui::Page::new("/api/v1")
                .with_roles(tokens.roles())
                .router(),
        );
    if let Some(handle) = metrics {
        router = router.route("/metrics", get(move || std::future::ready(handle.render())));
    }
    let router = router.layer(axum::middleware::from_fn(log_request));
    Ok(App {
        router,
        tokens,
        generated_password,
        audit,
        revocations: None,
    })
}

/// Creates the admin account when missing (with the configured or a generated password),
/// or updates its password when one is configured and differs.
async fn ensure_admin(
    accounts: &impl AccountStore,
    config: &Config,
) -> Result<Option<Zeroizing<String>>, BoxError> {
    let existing = accounts.find_account(&config.admin_email).await?;
    let (password, generated) = match (&config.admin_password, &existing) {
        (Some(p), Some(a)) if verify_password(p, Some(a)) => return Ok(None),
        (Some(p), _) => (p.clone(), false),
        (None, Some(_)) => return Ok(None),
        (None, None) => (generate_password(), true),
    };
    accounts
        .put_account(Account {
            email: config.admin_email.clone(),
            password_hash: hash_password(&password).map_err(|e| e.to_string())?,
            permissions: Permissions::parse(["*"])?,
            created_at: existing.map_or_else(time::OffsetDateTime::now_utc, |a| a.created_at),
        })
        .await?;
    tracing::info!(email = %config.admin_email, "admin account ready");
    Ok(generated.then_some(password))
}

fn generate_password() -> Zeroizing<String> {
    use rand::distr::{Alphanumeric, SampleString};
    Zeroizing::new(Alphanumeric.sample_string(&mut rand::rng(), 24))
}

/// One structured line per request: method, path, status, latency, and the token id when a
/// token authenticated it (never the token).
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let res = next.run(req).await;
    let kind = res
        .extensions()
        .get::<keygate::RejectionKind>()
        .map(|k| k.reason());
    tracing::info!(
        %method,
        %path,
        status = res.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        rejection = kind.unwrap_or("-"),
        "request"
    );
    res
}

async fn index() -> Json<Value> {
    Json(json!({
        "service": "keygate reference server",
        "docs": "/api/v1/openapi.json",
        "routes": {
            "POST /api/v1/tokens": "create a token (Basic auth: email and password)",
            "GET /api/v1/tokens": "list your tokens (Basic, or a token with tokens:read)",
            "DELETE /api/v1/tokens/{id}": "revoke (Basic, or tokens:write)",
            "POST /api/v1/tokens/{id}/rotate": "rotate (Basic, or tokens:write)",
            "GET /api/v1/me": "who the token belongs to",
            "GET /api/v1/audit": "your audit events (needs audit:read; every owner's: audit:read_all); ?token_id=&since=&until=&limit=",
            "GET /tokens": "the token page",
            "GET /metrics": "Prometheus metrics (unless KEYGATE_METRICS=off)",
            "GET /api/v1/apps": "demo, needs apps:read",
            "POST /api/v1/apps/{app}/restart": "demo, needs processes:restart",
            "POST /api/v1/apps/{app}/builds": "demo, needs builds:create",
            "PUT /api/v1/apps/{app}/env": "demo, needs env:write",
        },
        "roles": ["viewer", "ops", "deployer", "cicd", "admin"],
    }))
}

async fn list_apps(id: Identity) -> Json<Value> {
    Json(json!({ "apps": ["billing", "web", "worker"], "seen_by": id.owner() }))
}

async fn restart(id: Identity, Path(app): Path<String>) -> Json<Value> {
    tracing::info!(token_id = %id.token_id(), %app, "restart requested");
    Json(json!({ "app": app, "action": "restart", "status": "scheduled" }))
}

async fn create_build(id: Identity, Path(app): Path<String>) -> (http::StatusCode, Json<Value>) {
    tracing::info!(token_id = %id.token_id(), %app, "build requested");
    (
        http::StatusCode::CREATED,
        Json(json!({ "app": app, "action": "build", "status": "queued" })),
    )
}

async fn set_env(id: Identity, Path(app): Path<String>) -> Json<Value> {
    tracing::info!(token_id = %id.token_id(), %app, "environment updated");
    Json(json!({ "app": app, "action": "env", "status": "updated" }))
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down; flushing last-used times and the audit log");
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let config = Config::from_env()?;
    let app = build_app(&config).await?;
    let listener = tokio::net::TcpListener::bind(&config.addr).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let email = &config.admin_email;

    println!(
        "keygate reference server on {base} (database: {})",
        config.describe_db()
    );
    if let Some(p) = &app.generated_password {
        println!();
        println!(
            "Generated password for {email} (shown once, store it now): {}",
            p.as_str()
        );
    }
    println!();
    println!("Try it (curl asks for the password):");
    println!("  curl -u {email} -d 'description=My automation script' {base}/api/v1/tokens");
    println!("  export TOKEN=pat_...   # the \"token\" of the answer");
    println!("  curl -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/me");
    println!("  curl -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/tokens");
    println!("  curl -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/apps");
    println!(
        "  curl -u {email} -H 'Content-Type: application/json' -d '{{\"name\":\"ci\",\"role\":\"cicd\",\"expires_in\":86400}}' {base}/api/v1/tokens"
    );
    println!("  curl -u {email} -X POST -d 'grace_seconds=60' {base}/api/v1/tokens/<id>/rotate");
    println!("  curl -u {email} -X DELETE {base}/api/v1/tokens/<id>");
    println!(
        "  curl -i -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/apps   # RateLimit-* headers; 429 past {} a minute",
        config.rate_limit
    );
    println!("  curl -u {email} '{base}/api/v1/audit?limit=10'");
    println!("  curl {base}/api/v1/openapi.json");
    if config.metrics {
        println!("  curl {base}/metrics");
    }
    println!("  open {base}/tokens   # the token page");
    if let Some(path) = &config.audit_log {
        println!(
            "Audit events: {} (JSON Lines) and the database",
            path.display()
        );
    }
    println!();
    drop(app.generated_password);

    let maintenance = app
        .tokens
        .spawn_maintenance(Duration::from_secs(10), Duration::from_secs(3600));
    axum::serve(
        listener,
        app.router
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    // Writes the last batch of last-used times, then every queued audit event.
    maintenance.shutdown().await;
    app.audit.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
