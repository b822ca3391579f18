//! Sign-in through the host application: [`HostSignIn`], the identity an embedding app
//! establishes (its own session cookie, OIDC, mTLS), in place of keygate's Basic accounts.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::request::Parts;

use crate::accounts::Account;
use crate::identity::Permissions;

/// The error type a [`HostSignIn`] reports a failure with (its session store is down, …).
pub type HostError = Box<dyn std::error::Error + Send + Sync>;

/// An account the host application has signed in: the owner of the tokens it manages and
/// the permissions the application grants it (a token never holds more).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostAccount {
    /// The owner name of the account's tokens (an email, a user id): 1 to 100 printable
    /// characters, as for [`NewToken`](crate::NewToken).
    pub owner: String,
    /// What the account may do; its tokens hold at most these.
    pub permissions: Permissions,
}

impl HostAccount {
    /// `owner`, holding `permissions`.
    pub fn new(owner: impl Into<String>, permissions: Permissions) -> Self {
        Self {
            owner: owner.into(),
            permissions,
        }
    }
}

/// Who the host application says is calling, from the request's parts (its session
/// cookie, an OIDC token it checks, a client certificate its TLS layer put into the
/// extensions).
///
/// With [`Management::with_host_sign_in`](super::Management::with_host_sign_in), every
/// management route that takes Basic authentication takes this identity instead (bearer
/// tokens are accepted where they were). See the [module docs](super) for the rules.
///
/// ```
/// use async_trait::async_trait;
/// use http::request::Parts;
/// use keygate::Permissions;
/// use keygate::axum::management::{HostAccount, HostError, HostSignIn};
///
/// /// Trusts a header that the app's own authentication proxy sets (an example only).
/// struct ProxyUser;
///
/// #[async_trait]
/// impl HostSignIn for ProxyUser {
///     async fn account(&self, parts: &Parts) -> Result<Option<HostAccount>, HostError> {
///         let Some(user) = parts.headers.get("x-authenticated-user") else {
///             return Ok(None);
///         };
///         let permissions = Permissions::parse(["apps:read", "tokens:read", "tokens:write"])?;
///         Ok(Some(HostAccount::new(user.to_str()?, permissions)))
///     }
/// }
/// ```
#[async_trait]
pub trait HostSignIn: Send + Sync + 'static {
    /// The signed-in account; `None` when nobody is signed in (the request is answered
    /// 401 `missing_credentials`).
    ///
    /// # Errors
    ///
    /// When the application cannot tell (its session store failed): the request is
    /// answered 503 `store_unavailable`, never let through.
    async fn account(&self, parts: &Parts) -> Result<Option<HostAccount>, HostError>;
}

#[async_trait]
impl<T: HostSignIn + ?Sized> HostSignIn for Arc<T> {
    async fn account(&self, parts: &Parts) -> Result<Option<HostAccount>, HostError> {
        (**self).account(parts).await
    }
}

/// The configured sign-in with its time bound.
pub(crate) struct HostGate {
    pub(crate) sign_in: Arc<dyn HostSignIn>,
    pub(crate) timeout: Duration,
}

/// What the host said about one request.
pub(crate) enum HostOutcome {
    /// Signed in, as this account.
    SignedIn(Account),
    /// Nobody signed in, or not asked (the client was over its failure budget).
    Anonymous,
    /// The host failed or did not answer in time.
    Unavailable,
}

impl HostGate {
    /// Asks the host, bounded by the store timeout.
    pub(crate) async fn ask(&self, parts: &Parts, now: time::OffsetDateTime) -> HostOutcome {
        match tokio::time::timeout(self.timeout, self.sign_in.account(parts)).await {
            Ok(Ok(Some(host))) => HostOutcome::SignedIn(Account {
                email: host.owner,
                // Never checked: the host signed the account in.
                password_hash: String::new(),
                permissions: host.permissions,
                created_at: now,
            }),
            Ok(Ok(None)) => HostOutcome::Anonymous,
            Ok(Err(error)) => {
                tracing::warn!(%error, "host sign-in failed; answering 503");
                HostOutcome::Unavailable
            }
            Err(_) => {
                tracing::warn!("host sign-in did not answer in time; answering 503");
                HostOutcome::Unavailable
            }
        }
    }
}
