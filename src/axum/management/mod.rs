//! The token management HTTP API (feature `management`): an axum [`Router`] to mount anywhere
//! (the reference server nests it under `/api/v1`).
//!
//! | route | auth | does |
//! | --- | --- | --- |
//! | `POST /tokens` | Basic only (email + password); a bearer token gets 401 | create; 201 with the token, shown once |
//! | `GET /tokens` | Basic, or Bearer with `tokens:read` | the owner's tokens, without secrets or hashes |
//! | `DELETE /tokens/{id}` | Basic, or Bearer with `tokens:write` | revoke, with the tokens that replaced it by rotation (whoever held it may hold them); `?successors=keep` revokes it alone (ends a grace early); 204 |
//! | `POST /tokens/{id}/rotate` | Basic, or Bearer with `tokens:write` rotating itself (its own lineage) | new secret, same name, permissions and restrictions (a bearer token's rotation keeps the expiry, a Basic one the lifetime); optional `grace_seconds` (at most [`max_rotation_grace`](crate::tokens::TokensBuilder::max_rotation_grace), 24 h by default; the old token counts against the limit while in grace; rotating again ends the earlier grace); 201 |
//! | `POST /tokens/{id}/release` | Basic, or Bearer with `tokens:write` | frees a bound token's machine seat (once per 24 h; 409 `release_too_soon`); 204 |
//! | `GET /me` | Bearer | the caller's identity |
//! | `GET /audit` | Basic or Bearer, with `audit:read` | audit events about the caller's own tokens and account (every owner's with `audit:read_all` too), newest first; query `token_id`, `since`, `until` (RFC 3339), `limit` (default 100, at most 1000); only with [`Management::with_audit_reader`] |
//! | `GET /openapi.json` | none | the OpenAPI 3.1 document (feature `openapi`): [`Management::openapi`], or the one given to [`Management::with_openapi`] |
//!
//! Every error is JSON `{"error": "...", "code": "..."}`:
//!
//! | status | `code` | when |
//! | --- | --- | --- |
//! | 400 | `invalid_request` | an invalid field (name, description, role, permissions, `expires_in`, `grace_seconds`, `successors`), an unknown field or query parameter, a malformed body or `Authorization` header |
//! | 401 | `missing_credentials` | no credentials (`WWW-Authenticate: Basic realm="keygate", charset="UTF-8"`, plus a Bearer challenge where a token is accepted) |
//! | 401 | `invalid_credentials` | unknown email or wrong password: the same answer, after the same argon2 work |
//! | 401 | `basic_auth_required` | a bearer token on `POST /tokens` |
//! | 401 | `sign_in_required` | a bearer token on `POST /tokens` with [`Management::with_host_sign_in`] |
//! | 401 | `missing_token`, `invalid_token` | bearer failures, exactly as [`AuthLayer`](crate::AuthLayer) renders them |
//! | 403 | `insufficient_scope` | the bearer token lacks `tokens:read` / `tokens:write`, the new token's permissions go beyond the caller's, a bearer token acts on (revokes, rotates, releases) a token less restricted than itself, or rotates a token not of its own lineage (see below) |
//! | 403 | `cross_site_request` | a `POST`, `PUT`, `PATCH` or `DELETE` that a browser marks as sent by another site (see below) |
//! | 404 | `not_found` | unknown, someone else's or malformed token id |
//! | 409 | `name_taken`, `token_limit` | the owner has a live token with this name, or too many tokens that authenticate (live ones and rotated ones in grace) |
//! | 429 | `rate_limited` | too many failed sign-ins or bad tokens from this address, or from this address on this account ([`Management::with_failure_limits`]); `Retry-After` says when to try again |
//! | 413 | `payload_too_large` | body over the limit (default 16 KiB) |
//! | 415 | `unsupported_media_type` | a body that is neither JSON nor a form |
//! | 503 | `store_unavailable`, `server_busy` | the store failed or did not answer in time (never 500) or, with [`Management::with_audit`], the audit event of a write could not be written (see below); or no password check could start in time |
//!
//! With [`Management::with_host_sign_in`], "Basic" in the table reads "signed in by the
//! host application" ([`HostSignIn`]): the app's session, OIDC or mTLS identity names the
//! owner and the permissions it grants, Basic credentials are no longer checked, and a
//! request nobody is signed in for gets 401 `missing_credentials` without a Basic
//! challenge. The cross-site refusal below matters even more there: a session cookie is
//! exactly what a forged cross-site form carries.
//!
//! A token created without `role` or `permissions` gets the account's own permissions
//! (a form with `description=…` only); a token never gets more than its account holds.
//! The body of `POST /tokens` and of `POST /tokens/{id}/rotate` is optional (every field
//! has a default); a JSON field may be `null`, the same as left out.
//!
//! A bearer token manages only what it could have been: it may revoke, rotate or release
//! the owner's tokens (itself included) that are at least as restricted as itself, never a
//! less restricted one, so that no token can mint a credential it could not use itself:
//!
//! - every permission of the target is one the bearer token holds;
//! - the target is of the same kind and, for a kind with a binding, bound to the same
//!   machine;
//! - when the bearer token has `allowed_ips`, the target has them too, each within one of
//!   the bearer token's networks;
//! - when the bearer token expires, the target expires no later;
//! - when the bearer token has its own `rate_limit`, the target has one no higher.
//!
//! Otherwise the answer is 403 `insufficient_scope`, whose message names the first
//! restriction the target lacks. Rotating hands out a secret, so a bearer token rotates
//! only its own lineage (itself, or the token it replaced or that replaced it: the same
//! name); rotating a sibling is 403 `insufficient_scope` too, even one at least as
//! restricted, so that whoever holds a leaked token can mint nothing that revoking it
//! (successors included) would not end. A rotation by a bearer token keeps the old token's
//! `expires_at` ([`Tokens::rotate_keeping_expiry`]), so rotating never extends a lineage's
//! life. Signed in with the account's password, the owner manages all its tokens, and a
//! rotation gives the new token the old one's lifetime counted from the rotation (the
//! account could create such a token anyway).
//!
//! With [`Management::with_audit`], every write that took effect is in the audit sink
//! before its 2xx leaves; when the sink fails or stalls (2 s by default) the write is
//! answered 503 `store_unavailable` and a token it created is revoked first.
//!
//! Password checks (argon2, tens of milliseconds of CPU each) run on the blocking pool
//! behind a semaphore, by default `max(1, cores / 2)` at once, so a flood of Basic requests
//! cannot take the cores that verify bearer tokens; a request that waits longer than the
//! configured wait (default 1 s) is answered 503 `server_busy` with `Retry-After: 1`.
//!
//! Browsers keep Basic credentials once given, so any web page could make a signed-in
//! browser post a form here. A state-changing request (`POST`, `PUT`, `PATCH`, `DELETE`)
//! is refused with 403 `cross_site_request`, before any password check, when its
//! `Sec-Fetch-Site` is neither `same-origin` nor `none` or, from a browser that sends no
//! `Sec-Fetch-Site`, when its `Origin` is not the host the request was sent to. Requests
//! with neither header (curl, SDKs) are not affected. Front ends on another origin are
//! named with [`Management::with_trusted_origin`].
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use axum::Router;
//! use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
//! use keygate::axum::management::Management;
//! use keygate::{MemoryStore, Permissions, Roles, Tokens};
//!
//! let tokens = Tokens::builder(MemoryStore::new())
//!     .roles(Roles::deployment_platform())
//!     .build()
//!     .unwrap();
//! let accounts = MemoryAccounts::new();
//! accounts
//!     .put_account(Account {
//!         email: "admin@example.com".into(),
//!         password_hash: hash_password("correct horse").unwrap(),
//!         permissions: Permissions::parse(["*"]).unwrap(),
//!         created_at: time::OffsetDateTime::now_utc(),
//!     })
//!     .await
//!     .unwrap();
//! let app: Router = Router::new().nest(
//!     "/api/v1",
//!     Management::new(tokens, accounts).with_server_url("/api/v1").router(),
//! );
//! # let _ = app;
//! # });
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{delete, get, post};
use http::Request;
use http::header::AUTHORIZATION;
use tokio::sync::Semaphore;

use crate::accounts::AccountStore;
use crate::audit::{AuditLog, AuditReader};
use crate::client_ip::ClientIpSource;
use crate::error::ConfigError;
use crate::permissions::PermissionResolver;
use crate::rate_limit::FailureLimits;
use crate::store::timeout::{
    DEFAULT_STORE_TIMEOUT, TimeoutAccounts, TimeoutAuditReader, TimeoutResolver,
};
use crate::tokens::Tokens;

mod audit;
mod auth;
mod body;
mod cross_site;
mod error;
mod handlers;
mod host;
#[cfg(feature = "openapi")]
pub(crate) mod openapi;
mod scope;
mod types;

pub use error::ErrorBody;
pub use host::{HostAccount, HostError, HostSignIn};
#[cfg(feature = "openapi")]
pub use openapi::openapi;
pub use types::{CreateToken, IdentityView, RotateToken, TokenStatus, TokenView};

/// Default request body limit: 16 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024;
/// Default longest wait for a password check to start.
pub const DEFAULT_BASIC_AUTH_WAIT: Duration = Duration::from_secs(1);

/// The default number of concurrent password checks: half the available cores, at least 1.
#[must_use]
pub fn default_basic_auth_concurrency() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (cores / 2).max(1)
}

pub(crate) struct Shared {
    pub(crate) tokens: Tokens,
    pub(crate) accounts: Arc<dyn AccountStore>,
    pub(crate) gate: auth::PasswordGate,
    pub(crate) body_limit: usize,
    #[cfg(feature = "openapi")]
    pub(crate) openapi: bytes::Bytes,
    pub(crate) audit: Option<AuditLog>,
    pub(crate) audit_reader: Option<Arc<dyn AuditReader>>,
    pub(crate) resolver: Option<Arc<dyn PermissionResolver>>,
    pub(crate) client_ip: ClientIpSource,
    pub(crate) failures: Option<FailureLimits>,
    pub(crate) trusted_origins: Vec<cross_site::Origin>,
    pub(crate) host: Option<host::HostGate>,
}

/// Builds the management [`Router`]. See the [module docs](self).
#[must_use]
pub struct Management {
    tokens: Tokens,
    accounts: Arc<dyn AccountStore>,
    body_limit: usize,
    permits: usize,
    wait: Duration,
    server_url: Option<String>,
    #[cfg(feature = "openapi")]
    document: Option<serde_json::Value>,
    audit: Option<AuditLog>,
    audit_reader: Option<Arc<dyn AuditReader>>,
    resolver: Option<Arc<dyn PermissionResolver>>,
    client_ip: ClientIpSource,
    failures: Option<FailureLimits>,
    trusted_origins: Vec<cross_site::Origin>,
    store_timeout: Duration,
    host: Option<Arc<dyn HostSignIn>>,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management")
            .field("tokens", &self.tokens)
            .field("body_limit", &self.body_limit)
            .field("basic_auth_concurrency", &self.permits)
            .field("basic_auth_wait", &self.wait)
            .field("server_url", &self.server_url)
            .field("trusted_origins", &self.trusted_origins)
            .field("store_timeout", &self.store_timeout)
            .field("host_sign_in", &self.host.is_some())
            .finish_non_exhaustive()
    }
}

impl Management {
    /// The API over `tokens`, with accounts (Basic authentication) from `accounts`. The
    /// owner of an account's tokens is its email.
    pub fn new(tokens: Tokens, accounts: impl AccountStore) -> Self {
        Self {
            tokens,
            accounts: Arc::new(accounts),
            body_limit: DEFAULT_BODY_LIMIT,
            permits: default_basic_auth_concurrency(),
            wait: DEFAULT_BASIC_AUTH_WAIT,
            server_url: None,
            #[cfg(feature = "openapi")]
            document: None,
            audit: None,
            audit_reader: None,
            resolver: None,
            client_ip: ClientIpSource::new(),
            failures: None,
            trusted_origins: Vec::new(),
            store_timeout: DEFAULT_STORE_TIMEOUT,
            host: None,
        }
    }

    /// The longest an account lookup, a permission resolution or an audit read may take
    /// before the request is answered 503 `store_unavailable` (default 2 s,
    /// [`DEFAULT_STORE_TIMEOUT`]). Token store calls are bounded by the store the
    /// [`Tokens`] manager was built over (see [`crate::store::timeout`]).
    pub fn with_store_timeout(mut self, limit: Duration) -> Self {
        self.store_timeout = limit;
        self
    }

    /// The largest accepted request body, in bytes (default 16 KiB); larger bodies get 413.
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// How many password checks may run at once (default
    /// [`default_basic_auth_concurrency`]; at least 1).
    pub fn with_basic_auth_concurrency(mut self, permits: usize) -> Self {
        self.permits = permits.max(1);
        self
    }

    /// How long a Basic request may wait for a password check to start before it is
    /// answered 503 `server_busy` (default 1 s).
    pub fn with_basic_auth_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The URL the router is mounted at (e.g. `/api/v1`), listed under `servers` in the
    /// OpenAPI document.
    pub fn with_server_url(mut self, url: impl Into<String>) -> Self {
        self.server_url = Some(url.into());
        self
    }

    /// The OpenAPI 3.1 document of this router as configured so far, as JSON: its routes
    /// (with `GET /audit` when it has an [audit reader](Self::with_audit_reader)), paths
    /// relative to where it is mounted, the [server URL](Self::with_server_url) under
    /// `servers`, and the token manager's limits in the request schemas (its roles, the
    /// permissions each role bounds, the longest lifetime and rotation grace). It is what
    /// `GET /openapi.json` serves, unless [`with_openapi`](Self::with_openapi) gave another.
    ///
    /// It is JSON rather than [`utoipa::openapi::OpenApi`] because some of it (`if`/`then`
    /// rules) has no place in utoipa's types; `serde_json::from_value` turns it into one,
    /// without those rules, to [`nest`](utoipa::openapi::OpenApi::nest) it elsewhere.
    #[cfg(feature = "openapi")]
    #[must_use]
    pub fn openapi(&self) -> serde_json::Value {
        openapi::document(
            &self.tokens,
            self.audit_reader.is_some(),
            self.server_url.as_deref(),
        )
    }

    /// Serves `doc` at `GET /openapi.json` instead of [`openapi`](Self::openapi): e.g. one
    /// document for a whole service that mounts this router among routes of its own, built
    /// from [`openapi`](Self::openapi) (the reference server does, with absolute paths).
    /// Takes anything that serialises to JSON: a [`utoipa::openapi::OpenApi`] or a
    /// [`serde_json::Value`].
    #[cfg(feature = "openapi")]
    pub fn with_openapi(mut self, doc: impl serde::Serialize) -> Self {
        self.document = Some(serde_json::to_value(doc).unwrap_or_default());
        self
    }

    /// Records a `token.create`, `token.revoke`, `token.rotate` or `token.release` event
    /// for every write: allowed, with the acting owner and the token; or refused, with the
    /// error code as the reason.
    ///
    /// A write that took effect is written to the sink before the answer leaves
    /// ([`AuditLog::write_now`], bounded by the log's write timeout, 2 s by default), so
    /// a flood of request events in the queue cannot push it out. If it cannot be written
    /// the answer is 503 `store_unavailable`: a token just created, or the new token of a
    /// rotation, is revoked first (its secret is never shown), while a revocation or a
    /// released binding stays done. Refused attempts are queued with
    /// [`AuditLog::record`] like request events.
    pub fn with_audit(mut self, audit: AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Serves `GET /audit` from `reader` (e.g. the SQLite or Postgres store the
    /// [`AuditLog`] writes to). Callers need the permission `audit:read`, and see only the
    /// events whose `owner` they are; reading every owner's events needs `audit:read_all`
    /// as well (`audit:*` and `*` hold both).
    pub fn with_audit_reader(mut self, reader: impl AuditReader) -> Self {
        self.audit_reader = Some(Arc::new(reader));
        self
    }

    /// Cuts bearer callers' permissions down to what their owner holds now, as
    /// [`AuthLayer::with_permission_resolver`](crate::AuthLayer::with_permission_resolver)
    /// does (see [`crate::permissions`]).
    pub fn with_permission_resolver(mut self, resolver: impl PermissionResolver) -> Self {
        self.resolver = Some(Arc::new(resolver));
        self
    }

    /// How to find the client's address (default: the socket peer): for audit events,
    /// allow-listed bearer tokens and the failure limits.
    pub fn with_client_ip(mut self, source: ClientIpSource) -> Self {
        self.client_ip = source;
        self
    }

    /// Throttles guessing (see [`FailureLimits`]): wrong passwords and bad bearer tokens
    /// count against the client address, and wrong passwords against the account too; a
    /// client over its budget gets 429 `rate_limited` with `Retry-After` before any
    /// password is checked. Pass the same limits as the [`AuthLayer`](crate::AuthLayer)
    /// in front, so that both share one budget per address.
    pub fn with_failure_limits(mut self, limits: FailureLimits) -> Self {
        self.failures = Some(limits);
        self
    }

    /// Lets state-changing requests from the web origin `origin` through, as if they came
    /// from the server's own pages (`https://admin.example.com`: a front end served from
    /// another origin, or the public origin when a proxy in front rewrites `Host`). Call it
    /// once per origin. See the [module docs](self) for the cross-site rule.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidOrigin`] unless `origin` reads `http(s)://host[:port]`.
    pub fn with_trusted_origin(mut self, origin: &str) -> Result<Self, ConfigError> {
        self.trusted_origins
            .push(cross_site::Origin::trusted(origin)?);
        Ok(self)
    }

    /// Signs callers in through the host application instead of keygate's accounts: every
    /// route that takes Basic authentication (creating, listing, revoking, rotating,
    /// releasing tokens, reading the audit log) takes the account `sign_in` returns for
    /// the request, and Basic credentials are no longer checked; bearer tokens are accepted
    /// where they were. The account store passed to [`new`](Self::new) is then unused (a
    /// [`MemoryAccounts`](crate::accounts::MemoryAccounts) will do).
    ///
    /// What still applies: the cross-site refusal (a session cookie is what a forged
    /// cross-site form would carry), the failure limits (a request nobody is signed in
    /// for counts as a failure; a client over its budget gets 429 before the host is
    /// asked), the audit (`auth.host` denials, and every write), and the store timeout
    /// (a host that does not answer in time, or fails, gets 503). See the
    /// [module docs](self).
    pub fn with_host_sign_in(mut self, sign_in: impl HostSignIn) -> Self {
        self.host = Some(Arc::new(sign_in));
        self
    }

    /// The router: state-free, ready to `nest` anywhere.
    pub fn router(#[allow(unused_mut)] mut self) -> Router {
        #[cfg(feature = "openapi")]
        let doc = {
            let doc = self.document.take().unwrap_or_else(|| self.openapi());
            bytes::Bytes::from(serde_json::to_vec(&doc).unwrap_or_else(|_| b"{}".to_vec()))
        };
        let shared = Arc::new(Shared {
            tokens: self.tokens,
            // Every wait on a store is bounded: a hung database answers 503, never holds the
            // request.
            accounts: Arc::new(TimeoutAccounts::new(self.accounts, self.store_timeout)),
            gate: auth::PasswordGate {
                permits: Arc::new(Semaphore::new(self.permits)),
                wait: self.wait,
            },
            body_limit: self.body_limit,
            #[cfg(feature = "openapi")]
            openapi: doc,
            audit: self.audit,
            audit_reader: self.audit_reader.map(|r| {
                Arc::new(TimeoutAuditReader::new(r, self.store_timeout)) as Arc<dyn AuditReader>
            }),
            resolver: self.resolver.map(|r| {
                Arc::new(TimeoutResolver::new(r, self.store_timeout)) as Arc<dyn PermissionResolver>
            }),
            client_ip: self.client_ip,
            failures: self.failures,
            trusted_origins: self.trusted_origins,
            host: self.host.map(|sign_in| host::HostGate {
                sign_in,
                timeout: self.store_timeout,
            }),
        });
        // The route table (each route is listed in [`Routes`] for the OpenAPI document too).
        let router = Router::new()
            .route(
                "/tokens",
                post(handlers::create_token).get(handlers::list_tokens),
            )
            .route("/tokens/{id}", delete(handlers::revoke_token))
            .route("/tokens/{id}/rotate", post(handlers::rotate_token))
            .route("/tokens/{id}/release", post(handlers::release_token))
            .route("/me", get(handlers::me));
        let router = if shared.audit_reader.is_some() {
            router.route("/audit", get(audit::list))
        } else {
            router
        };
        #[cfg(feature = "openapi")]
        let router = router.route("/openapi.json", get(handlers::openapi_json));
        router
            .fallback(handlers::not_found)
            .method_not_allowed_fallback(handlers::method_not_allowed)
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                cross_site::refuse,
            ))
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                audit::record,
            ))
            .layer(axum::middleware::map_request(mark_sensitive))
            .with_state(shared)
    }
}

/// The OpenAPI half of the route table in [`Management::router`]: a route is added to both
/// at once, here beside it (`/audit` is served only with an audit reader, so it is added
/// to the document with it, in [`openapi::document`]).
#[cfg(feature = "openapi")]
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    handlers::create_token,
    handlers::list_tokens,
    handlers::revoke_token,
    handlers::rotate_token,
    handlers::release_token,
    handlers::me,
    handlers::openapi_json,
))]
pub(crate) struct Routes;

/// Marks `Authorization` values sensitive before anything (a tracing layer, a handler's
/// `Debug`) can print them.
async fn mark_sensitive<B>(mut req: Request<B>) -> Request<B> {
    if let http::header::Entry::Occupied(mut e) = req.headers_mut().entry(AUTHORIZATION) {
        for v in e.iter_mut() {
            v.set_sensitive(true);
        }
    }
    req
}

/// The management router with the defaults: `Management::new(tokens, accounts).router()`.
pub fn router(tokens: Tokens, accounts: impl AccountStore) -> Router {
    Management::new(tokens, accounts).router()
}
