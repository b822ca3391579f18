//! Who is calling: HTTP Basic (an account's email and password) or a bearer token.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use http::header::AUTHORIZATION;
use tokio::sync::Semaphore;

use super::error::ApiError;
use crate::accounts::{Account, AccountStore, verify_password};
use crate::header::{Credentials, parse_authorization, parse_basic};
use crate::identity::{Identity, Permissions};
use crate::middleware::{Rejection, RejectionKind};
use crate::permissions::PermissionResolver;
use crate::tokens::Tokens;

/// The authenticated caller of a management route.
pub(crate) enum Caller {
    /// Signed in with email and password.
    Basic(Account),
    /// Presented a valid bearer token.
    Bearer(Identity),
}

impl Caller {
    /// The owner whose tokens the caller manages.
    pub(crate) fn owner(&self) -> &str {
        match self {
            Self::Basic(a) => &a.email,
            Self::Bearer(id) => id.owner(),
        }
    }

    /// What the caller may hand on to a token.
    pub(crate) fn permissions(&self) -> &Permissions {
        match self {
            Self::Basic(a) => &a.permissions,
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
    pub(crate) client_ip: Option<std::net::IpAddr>,
}

pub(crate) async fn authenticate(
    tokens: &Tokens,
    accounts: &dyn AccountStore,
    gate: &PasswordGate,
    request: RequestInfo<'_>,
    accept: Accept,
    resolver: Option<&dyn PermissionResolver>,
) -> Result<Caller, ApiError> {
    let headers = request.headers;
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
            // The same checks as behind the layer, allow-list and binding included.
            let mut id = tokens
                .authenticate_request(token, request.client_ip, headers)
                .await?;
            if let Some(resolver) = resolver {
                id = crate::permissions::effective(resolver, id)
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
            verify_basic(accounts, gate, &creds.user, creds.password)
                .await
                .map(Caller::Basic)
        }
    }
}

/// Checks email and password. An unknown email runs the same argon2 verification (against
/// a dummy hash) as a wrong password, and both get the same 401.
async fn verify_basic(
    accounts: &dyn AccountStore,
    gate: &PasswordGate,
    email: &str,
    password: zeroize::Zeroizing<String>,
) -> Result<Account, ApiError> {
    let account = accounts.find_account(email).await.map_err(|error| {
        tracing::warn!(%error, "account store lookup failed; answering 503");
        ApiError::store_unavailable()
    })?;
    let permit = match tokio::time::timeout(gate.wait, gate.permits.clone().acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            tracing::warn!("password verification queue full; answering 503");
            return Err(ApiError::busy());
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
        _ => {
            tracing::info!("basic authentication failed");
            Err(ApiError::invalid_credentials())
        }
    }
}
