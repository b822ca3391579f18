//! Who is calling: HTTP Basic (an account's email and password) or a bearer token.
//!
//! With [`Management::with_failure_limits`](super::Management::with_failure_limits),
//! guessing is throttled (see [`FailureLimits`](crate::rate_limit::FailureLimits)):
//!
//! - a client address over its failure budget (bad bearer tokens, real ones presented
//!   from outside their allow-list or machine, and wrong passwords alike: the budget it
//!   shares with the layer) gets 429 `rate_limited` with
//!   `Retry-After` before any store lookup or password hash, so one address cannot fill
//!   the password-check pool;
//! - a sign-in is counted against the address and the account when it starts (so
//!   concurrent guesses cannot overrun the budget), and given back when the password was
//!   right or could not be checked;
//! - an account over its own budget refuses (429) only the addresses that failed against
//!   it recently: a guesser spread over many addresses gets about one guess per address,
//!   while the owner signing in from an address that has not failed still gets in.
//!
//! With shared failure limits ([`FailureLimits::shared`](crate::rate_limit::FailureLimits::shared))
//! that cannot be reached, a bearer request and a sign-in get 503 `store_unavailable`
//! before any token lookup or password check.
//!
//! The client is the one the router's [`ClientIpSource`](crate::client_ip::ClientIpSource)
//! resolves; when it is unknown, the socket peer is counted. A bearer request without any
//! address is not counted; sign-ins without any address (a router served without
//! `ConnectInfo`, e.g. plain `axum::serve(listener, router)`) all share one budget, so
//! password guessing is never unlimited (a warning is logged once).
//!
//! With [`Management::with_host_sign_in`](super::Management::with_host_sign_in), a request
//! without a bearer token is the host application's: a client over its failure budget gets
//! 429 before the host is asked, a request nobody is signed in for gets 401
//! `missing_credentials` (no `WWW-Authenticate: Basic`, so no browser password prompt) and
//! counts as a failure, audited as `auth.host` (`reason` `missing_credentials`, or
//! `rate_limited`); a host that fails or does not answer in time gets 503.
//!
//! With [`Management::with_audit`](super::Management::with_audit), every failed sign-in
//! writes an `auth.basic` event: `rbac_decision` `deny`, `reason` `invalid_credentials`
//! (or `rate_limited` when refused by the limits). Its `owner` is the account's email
//! only when that account exists and the password was checked: an unknown email is an
//! attacker's free text and never reaches the log. The password never does either.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::HeaderMap;
use http::header::AUTHORIZATION;
use tokio::sync::Semaphore;

use super::Shared;
use super::error::ApiError;
use super::handlers::CallerIp;
use super::host::HostOutcome;
use crate::accounts::{Account, verify_password};
use crate::audit::{AuditEvent, Decision};
use crate::header::{Credentials, parse_authorization, parse_basic};
use crate::identity::{Identity, Permissions};
use crate::middleware::{Rejection, RejectionKind};
use crate::rate_limit::{FailureLimits, SignInRefused, ceil_secs};

/// The authenticated caller of a management route.
pub(crate) enum Caller {
    /// Signed in to an account: with email and password, or by the host application.
    Account(Account),
    /// Presented a valid bearer token.
    Bearer(Identity),
}

impl Caller {
    /// The owner whose tokens the caller manages.
    pub(crate) fn owner(&self) -> &str {
        match self {
            Self::Account(a) => &a.email,
            Self::Bearer(id) => id.owner(),
        }
    }

    /// What the caller may hand on to a token.
    pub(crate) fn permissions(&self) -> &Permissions {
        match self {
            Self::Account(a) => &a.permissions,
            Self::Bearer(id) => id.permissions(),
        }
    }
}

/// Which credentials a route takes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Accept {
    /// Email and password only (creating tokens).
    BasicOnly,
    /// Email and password, or a bearer token holding this permission.
    BasicOrBearer(&'static str),
    /// A bearer token only.
    BearerOnly,
}

/// Bounds the argon2 work: at most `permits` verifications at once, each on the blocking
/// pool; a request that cannot start one within `wait` is refused with 503.
pub(crate) struct PasswordGate {
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) wait: Duration,
}

/// What authentication needs from the request.
pub(crate) struct RequestInfo<'a> {
    pub(crate) headers: &'a HeaderMap,
    pub(crate) origin: &'a CallerIp,
}

/// The key every sign-in without any address counts against: one budget shared by all
/// of them, rather than none.
const NO_ADDRESS: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// The failure key of a sign-in: the client, else the peer, else [`NO_ADDRESS`].
pub(crate) fn sign_in_key(addrs: &crate::client_ip::Addresses) -> IpAddr {
    addrs.failure_key().unwrap_or_else(|| {
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "a management sign-in carries no client or peer address (serve the router \
                 with `into_make_service_with_connect_info`); sign-ins without an address \
                 share one failure budget"
            );
        }
        NO_ADDRESS
    })
}

/// Shared failure limits that cannot be reached: 503, nothing let through unchecked.
fn limits_down(error: crate::StoreError) -> ApiError {
    tracing::warn!(%error, "failure limits unavailable; answering 503");
    ApiError::store_unavailable()
}

fn rate_limited(wait: Duration) -> ApiError {
    Rejection::new(RejectionKind::RateLimited)
        .with_retry_after(ceil_secs(wait))
        .into()
}

/// True when the request's (single) `Authorization` value is a bearer token: host sign-in
/// is then not asked.
pub(crate) fn has_bearer(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    matches!(
        (
            values.next().map(|v| parse_authorization(v.as_bytes())),
            values.next()
        ),
        (Some(Ok(Credentials::Bearer(_))), None)
    )
}

/// The caller signed in by the host application (see [`Management::with_host_sign_in`]):
/// failure limits and `auth.host` audit events as for Basic sign-ins.
///
/// [`Management::with_host_sign_in`]: super::Management::with_host_sign_in
async fn host_caller(s: &Shared, request: &RequestInfo<'_>) -> Result<Caller, ApiError> {
    let origin = request.origin;
    let key = sign_in_key(&origin.addrs);
    if let Some(f) = &s.failures
        && let Some(wait) = f.blocked(key).await.map_err(limits_down)?
    {
        audit_failure(s, "auth.host", origin, None, 429, "rate_limited");
        return Err(rate_limited(wait));
    }
    match &origin.host {
        Some(HostOutcome::SignedIn(account)) => Ok(Caller::Account(account.clone())),
        Some(HostOutcome::Unavailable) => Err(ApiError::store_unavailable()),
        Some(HostOutcome::Anonymous) | None => {
            if let Some(f) = &s.failures
                && let Some(wait) = f.fail(key).await.map_err(limits_down)?
            {
                audit_failure(s, "auth.host", origin, None, 429, "rate_limited");
                return Err(rate_limited(wait));
            }
            audit_failure(s, "auth.host", origin, None, 401, "missing_credentials");
            Err(ApiError::host_sign_in_missing())
        }
    }
}

pub(crate) async fn authenticate(
    s: &Shared,
    request: RequestInfo<'_>,
    accept: Accept,
) -> Result<Caller, ApiError> {
    let headers = request.headers;
    if s.host.is_some() {
        if !has_bearer(headers) {
            if matches!(accept, Accept::BearerOnly) {
                return Err(Rejection::new(RejectionKind::MissingToken).into());
            }
            return host_caller(s, &request).await;
        }
        if matches!(accept, Accept::BasicOnly) {
            return Err(ApiError::sign_in_required());
        }
    }
    let limits = s.failures.as_ref().zip(request.origin.addrs.failure_key());
    let bearer_ok = !matches!(accept, Accept::BasicOnly);
    let basic_ok = !matches!(accept, Accept::BearerOnly);
    let missing = || -> ApiError {
        if basic_ok {
            ApiError::missing_credentials(bearer_ok)
        } else {
            Rejection::new(RejectionKind::MissingToken).into()
        }
    };
    let malformed = || -> ApiError {
        if bearer_ok {
            Rejection::new(RejectionKind::InvalidRequest).into()
        } else {
            ApiError::bad_request("Malformed Authorization header")
        }
    };
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(missing());
    };
    if values.next().is_some() {
        return Err(malformed());
    }
    match parse_authorization(value.as_bytes()) {
        Err(_) => Err(malformed()),
        Ok(Credentials::Other) => Err(missing()),
        Ok(Credentials::Bearer(_)) if !bearer_ok => Err(ApiError::basic_required()),
        Ok(Credentials::Bearer(token)) => {
            if let Some((f, ip)) = limits
                && let Some(wait) = f.blocked(ip).await.map_err(limits_down)?
            {
                return Err(rate_limited(wait));
            }
            // The same checks as behind the layer, allow-list and binding included.
            let verified = s
                .tokens
                .authenticate_request(token, request.origin.addrs.client, headers)
                .await;
            let mut id = match verified {
                Ok(id) => id,
                Err(denial) => {
                    let r = Rejection::from(denial);
                    if FailureLimits::counts(r.kind())
                        && let Some((f, ip)) = limits
                        && let Some(wait) = f.fail(ip).await.map_err(limits_down)?
                    {
                        return Err(rate_limited(wait));
                    }
                    return Err(r.into());
                }
            };
            if let Some(resolver) = s.resolver.as_deref() {
                let widen = s.tokens.resolver_may_widen(id.kind());
                id = crate::permissions::effective_for(resolver, id, widen)
                    .await
                    .map_err(|error| {
                        tracing::warn!(%error, "owner permissions unavailable; answering 503");
                        ApiError::store_unavailable()
                    })?;
            }
            if let Accept::BasicOrBearer(permission) = accept {
                id.require(permission)?;
            }
            Ok(Caller::Bearer(id))
        }
        Ok(Credentials::Basic(_)) if !basic_ok => Err(missing()),
        Ok(Credentials::Basic(encoded)) => {
            let creds = parse_basic(encoded)
                .map_err(|_| ApiError::bad_request("Malformed Basic credentials"))?;
            let sign_in_limits = s
                .failures
                .as_ref()
                .map(|f| (f, sign_in_key(&request.origin.addrs)));
            let attempt = match sign_in_limits {
                Some((f, ip)) => match f.begin_sign_in(&creds.user, ip).await {
                    Ok(attempt) => Some(attempt),
                    Err(SignInRefused::Wait(wait)) => {
                        audit_failure(s, "auth.basic", request.origin, None, 429, "rate_limited");
                        return Err(rate_limited(wait));
                    }
                    Err(SignInRefused::Unavailable(error)) => {
                        // No password is checked uncounted.
                        audit_failure(
                            s,
                            "auth.basic",
                            request.origin,
                            None,
                            503,
                            "store_unavailable",
                        );
                        return Err(limits_down(error));
                    }
                },
                None => None,
            };
            match verify_basic(s, &creds.user, creds.password).await {
                Ok(account) => {
                    if let Some(attempt) = attempt {
                        attempt.refund().await;
                    }
                    Ok(Caller::Account(account))
                }
                Err(Failure::Unchecked(e)) => {
                    if let Some(attempt) = attempt {
                        attempt.refund().await;
                    }
                    Err(e)
                }
                Err(Failure::Wrong { owner }) => {
                    // The attempt stays counted (dropped, not refunded).
                    drop(attempt);
                    audit_failure(
                        s,
                        "auth.basic",
                        request.origin,
                        owner,
                        401,
                        "invalid_credentials",
                    );
                    Err(ApiError::invalid_credentials())
                }
            }
        }
    }
}

/// Writes an `auth.basic` or `auth.host` denial (see the module docs).
fn audit_failure(
    s: &Shared,
    event: &str,
    origin: &CallerIp,
    owner: Option<String>,
    status_code: u16,
    reason: &str,
) {
    let Some(audit) = &s.audit else { return };
    // A refusal: budgeted per address (see `AuditLog::with_denial_budget`).
    audit.record_request(
        AuditEvent {
            timestamp: s.tokens.now(),
            event: event.into(),
            api_token_id: None,
            api_token_name: None,
            owner,
            method: origin.method.to_string(),
            path: origin.path.clone(),
            status_code,
            rbac_decision: Decision::Deny,
            reason: Some(reason.to_owned()),
            client_ip: origin.addrs.client,
            request_id: origin.request_id.clone(),
            details: None,
        },
        origin.addrs.failure_key(),
    );
}

/// Why a sign-in did not succeed.
enum Failure {
    /// Unknown email or wrong password; `owner`: the account's email when it exists.
    Wrong { owner: Option<String> },
    /// No password check could be made (store failure, busy pool).
    Unchecked(ApiError),
}

/// Checks email and password. An unknown email runs the same argon2 verification (against
/// a dummy hash) as a wrong password, and both get the same 401.
async fn verify_basic(
    s: &Shared,
    email: &str,
    password: zeroize::Zeroizing<String>,
) -> Result<Account, Failure> {
    let gate = &s.gate;
    let account = s.accounts.find_account(email).await.map_err(|error| {
        tracing::warn!(%error, "account store lookup failed; answering 503");
        Failure::Unchecked(ApiError::store_unavailable())
    })?;
    let permit = match tokio::time::timeout(gate.wait, gate.permits.clone().acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            tracing::warn!("password verification queue full; answering 503");
            return Err(Failure::Unchecked(ApiError::busy()));
        }
    };
    let candidate = account.clone();
    // The permit moves into the blocking task: it is released when the hash is done, even
    // if the client went away meanwhile.
    let ok = tokio::task::spawn_blocking(move || {
        let ok = verify_password(&password, candidate.as_ref());
        drop(permit);
        ok
    })
    .await
    .unwrap_or(false);
    match account {
        Some(account) if ok => Ok(account),
        account => {
            tracing::info!("basic authentication failed");
            Err(Failure::Wrong {
                owner: account.map(|a| a.email),
            })
        }
    }
}
