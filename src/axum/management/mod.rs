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
//! | `PATCH /tokens/{id}` | Basic, or Bearer with `tokens:write` | edits a live token in place (JSON: `name`, `description` and `expires_at` (`null` clears), `expires_in`, `allowed_ips`, `metadata`, `permissions` — only narrower ones); 200 with the token; applies from the next request (see below) |
//! | `GET /admin/tokens` | Basic or Bearer, with `tokens:admin` | every owner's tokens, oldest first, revoked ones included until purged; query `owner`, `kind`, `status` (`active`, `expired`, `revoked`, `replaced`), `expiring_before`, `last_used_before` (RFC 3339; a token never used counts from its creation), `limit` (default 100, at most 1000), `cursor`; answers `{"tokens": [...], "next_cursor": "..." \| null}` |
//! | `DELETE /admin/tokens/{id}` | Basic or Bearer, with `tokens:admin` | revokes any owner's token, with its successors; 204 |
//! | `GET /me` | Bearer | the caller's identity |
//! | `POST /admin/tokens/import` | Basic only (a bearer token gets 401 `basic_auth_required`: whoever imports a hash may know its secret), with `tokens:admin` | imports tokens another system issued by their SHA-256: a JSON array (or JSON Lines) of at most 1000 `{owner, name, hash, kind?, permissions?, role?, description?, expires_at?, created_at?, hint?}`; 200 with one result per entry (`id`, or `error` and `code`); permissions never beyond the importer's; a hash already stored is `duplicate`, never overwritten; each imported token is audited (`token.import`) before the answer |
//! | `GET /audit` | Basic or Bearer, with `audit:read` | audit events about the caller's own tokens and account (every owner's with `audit:read_all` too), newest first; query `token_id`, `since`, `until` (RFC 3339), `limit` (default 100, at most 1000); only with [`Management::with_audit_reader`] |
//! | `POST /leaks` | a reporter key (`X-Keygate-Reporter-Key`) or an HMAC-SHA256 signature of the body (`X-Keygate-Signature: sha256=<hex>`) | leak reports: each listed token that still authenticates is revoked at once, with its rotation successors; 200 with `[{"token_hint","found","revoked"}]`; only with [`Management::with_leak_reports`] |
//! | `GET /openapi.json` | none | the OpenAPI 3.1 document (feature `openapi`): [`Management::openapi`], or the one given to [`Management::with_openapi`] |
//!
//! Every error is JSON `{"error": "...", "code": "..."}`:
//!
//! | status | `code` | when |
//! | --- | --- | --- |
//! | 400 | `invalid_request` | an invalid field (name, description, role, permissions, `expires_in`, `expires_at`, `metadata`, `allowed_ips`, `grace_seconds`, `successors`), an unknown field or query parameter, an edit with nothing to change, a malformed admin `cursor`, a leak report that is not an array of entries, is empty, has too many entries or a field over 1 KiB, a malformed body or `Authorization` header |
//! | 401 | `missing_credentials` | no credentials (`WWW-Authenticate: Basic realm="keygate", charset="UTF-8"`, plus a Bearer challenge where a token is accepted; on `POST /leaks`: neither a reporter key nor a signature, no challenge) |
//! | 401 | `invalid_credentials` | unknown email or wrong password: the same answer, after the same argon2 work |
//! | 401 | `basic_auth_required` | a bearer token on `POST /tokens` or `POST /admin/tokens/import` |
//! | 401 | `sign_in_required` | a bearer token on `POST /tokens` with [`Management::with_host_sign_in`] |
//! | 401 | `missing_token`, `invalid_token` | bearer failures, exactly as [`AuthLayer`](crate::AuthLayer) renders them |
//! | 403 | `insufficient_scope` | the bearer token lacks `tokens:read` / `tokens:write`, the new token's permissions go beyond the caller's, an edit adds a permission, a bearer token acts on (revokes, rotates, releases, edits) a token less restricted than itself, widens an expiry or an allow-list, or rotates a token not of its own lineage (see below); the admin routes without `tokens:admin`; with [`Management::admin_only_token_management`], a create, edit, rotation, revocation or release without `tokens:admin` |
//! | 403 | `invalid_reporter` | `POST /leaks` with a wrong reporter key or signature |
//! | 403 | `cross_site_request` | a `POST`, `PUT`, `PATCH` or `DELETE` that a browser marks as sent by another site (see below) |
//! | 404 | `not_found` | unknown, someone else's or malformed token id |
//! | 409 | `name_taken`, `token_limit` | the owner has a live token with this name (at create, or a rename), or too many tokens that authenticate (live ones and rotated ones in grace) |
//! | 409 | `duplicate` | (as an import entry's `code`, in a 200) a token with this hash is already stored |
//! | 429 | `rate_limited` | too many failed sign-ins or bad tokens from this address, or from this address on this account ([`Management::with_failure_limits`]); `Retry-After` says when to try again |
//! | 413 | `payload_too_large` | body over the limit (default 16 KiB; 1 MiB or more than 1000 entries for an import) |
//! | 415 | `unsupported_media_type` | a body that is neither JSON nor a form (for an import: neither JSON nor JSON Lines) |
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
//! An edit (`PATCH /tokens/{id}`) never widens a token: new permissions must be a subset
//! of the token's (403 `insufficient_scope` otherwise; a 403 rather than a 400 because it
//! is a question of rights, like creating a token beyond one's account). Signed in with the
//! password, the owner may also rename it, change its description and metadata, set any
//! expiry within the kind's longest lifetime counted from now (a time already past ends
//! the token at once; or clear it, for a kind without one), and replace its allow-list. A bearer token may edit only tokens at least
//! as restricted as itself (itself included), and only narrow them: an expiry may move
//! earlier, never later nor away; an allow-list may shrink (each new network within one of
//! the old ones; a token without one may get one), never grow nor be removed; and it may
//! not rename (a token's rate budget and rotation lineage follow its name, so a token that
//! renamed itself would start a fresh budget) nor change the metadata (the application
//! reads it on the [`Identity`](crate::Identity), and may decide on it): both need the
//! account. A rename keeps
//! names unique among the owner's live tokens, frees the old name at once, and gives no
//! bearer token another token's lineage (two live tokens never share a name, so a bearer
//! token still rotates only itself). The change applies from the next request:
//! a [`CachedStore`](crate::store::cached::CachedStore) drops the token, and the store
//! announces the edit to other instances like a revocation. Audited as `token.update`,
//! with the names of the changed fields as its `reason` (`changed: name,permissions`).
//!
//! The admin routes and the admin-only switch ([`Management::admin_only_token_management`],
//! the server's `token_management = "admin_only"`) need
//! [`TOKENS_ADMIN`](crate::permissions::TOKENS_ADMIN), `tokens:admin` (`tokens:*` and `*`
//! hold it, so does the server's `admin` role): the account's when signed in with the
//! password, the token's effective permissions for a bearer token. An admin revocation is
//! audited as `token.revoke` under the token's owner, naming the administrator and the
//! token's `created_by` in its `reason`. The admin view's `next_cursor` is opaque (it
//! encodes the last token's creation time and id); pages follow `(created_at, id)`, so
//! paging visits every token once, tokens created meanwhile at the end.
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

mod admin;
mod audit;
mod auth;
mod body;
mod cross_site;
mod error;
mod handlers;
mod host;
mod import;
mod leaks;
#[cfg(feature = "openapi")]
pub(crate) mod openapi;
mod scope;
mod types;
mod update;

pub use admin::{AdminTokenPage, DEFAULT_ADMIN_LIMIT, MAX_ADMIN_LIMIT};
pub use error::ErrorBody;
pub use host::{HostAccount, HostError, HostSignIn};
pub use import::{
    IMPORT_BODY_LIMIT, ImportEntry, ImportResponse, ImportResult, MAX_IMPORT_ENTRIES,
};
pub use leaks::{
    DEFAULT_MAX_LEAK_ENTRIES, LeakReports, MAX_LEAK_FIELD_LEN, MIN_REPORTER_SECRET_LEN,
    REPORTER_KEY_HEADER,
};
#[cfg(feature = "openapi")]
pub use openapi::openapi;
pub use types::{CreateToken, IdentityView, RotateToken, TokenStatus, TokenView, UpdateToken};

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
    pub(crate) leaks: Option<leaks::LeakReports>,
    pub(crate) admin_only: bool,
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
    leaks: Option<LeakReports>,
    admin_only: bool,
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
            .field("leak_reports", &self.leaks)
            .field("admin_only_token_management", &self.admin_only)
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
            leaks: None,
            admin_only: false,
        }
    }

    /// Reserves token management to administrators (seed 003's switch): with `true`,
    /// creating, editing, rotating, revoking and releasing tokens need
    /// [`TOKENS_ADMIN`](crate::permissions::TOKENS_ADMIN) (`tokens:admin`; `tokens:*` and `*`
    /// hold it), held by the account signed in with its password or by the bearer token;
    /// anyone else gets 403 `insufficient_scope`. Listing one's own tokens, `GET /me` and
    /// releasing a seat are not affected. Off by default.
    pub fn admin_only_token_management(mut self, on: bool) -> Self {
        self.admin_only = on;
        self
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
            self.leaks.as_ref().map(LeakReports::max_entries),
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

    /// Records a `token.create`, `token.revoke`, `token.rotate`, `token.release` or `token.update` event
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

    /// Serves `POST /leaks`: reports of leaked tokens from a secret-scanning partner or
    /// your own scanner, authenticated as `reporters` says (a reporter key in
    /// `X-Keygate-Reporter-Key`, or an HMAC-SHA256 signature of the body in
    /// `X-Keygate-Signature`). Without it the route does not exist (404).
    ///
    /// The body is a JSON array of `{"token", "url", "source"}` (at most 100 entries by
    /// default). Each token that still authenticates (live, or replaced and in its grace)
    /// is revoked at once, with the tokens that replaced it by rotation
    /// ([`Tokens::revoke_leaked`]); the answer lists, in order,
    /// `{"token_hint", "found", "revoked"}` (the hint is the token's first 12 characters,
    /// never more). With [`with_audit`](Self::with_audit), every report of a known token
    /// is written as a `token.leaked` event (`url` and `source` in its `details`, never
    /// the token) before the answer leaves. A missing key and signature is 401
    /// `missing_credentials`, a wrong one 403 `invalid_reporter` (counted against the
    /// address by the [failure limits](Self::with_failure_limits)).
    pub fn with_leak_reports(mut self, reporters: LeakReports) -> Self {
        self.leaks = Some(reporters);
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
            leaks: self.leaks,
            admin_only: self.admin_only,
        });
        // The route table (each route is listed in [`Routes`] for the OpenAPI document too).
        let router = Router::new()
            .route(
                "/tokens",
                post(handlers::create_token).get(handlers::list_tokens),
            )
            .route(
                "/tokens/{id}",
                delete(handlers::revoke_token).patch(update::update_token),
            )
            .route("/tokens/{id}/rotate", post(handlers::rotate_token))
            .route("/tokens/{id}/release", post(handlers::release_token))
            .route("/admin/tokens", get(admin::list))
            .route("/admin/tokens/{id}", delete(admin::revoke))
            .route("/admin/tokens/import", post(import::import_tokens))
            .route("/me", get(handlers::me));
        let router = if shared.audit_reader.is_some() {
            router.route("/audit", get(audit::list))
        } else {
            router
        };
        let router = if shared.leaks.is_some() {
            router.route("/leaks", post(leaks::report))
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
    update::update_token,
    handlers::rotate_token,
    handlers::release_token,
    admin::list,
    admin::revoke,
    handlers::me,
    import::import_tokens,
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
