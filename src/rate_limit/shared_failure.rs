//! [`FailureLimits`]' answers wherever the counts are kept, and [`SharedFailureLimiter`],
//! the backend that keeps them for several instances.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::Rate;
use super::failure::{Charged, FailureLimits, SignIn, client_key};
use crate::error::StoreError;

/// The rules a [`SharedFailureLimiter`] applies: those of the [`FailureLimits`] it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailurePolicy {
    /// Failures a client may make per period before it is blocked.
    pub client_rate: Rate,
    /// Failed sign-ins an account takes per period before its backoff starts.
    pub account_rate: Rate,
    /// How long a client's failed sign-in is held against it on that account.
    pub account_memory: Duration,
}

/// [`FailureLimits`]' counts kept outside the process (e.g. in Redis,
/// `keygate::store::redis::RedisFailureLimiter`), so that every instance pointing at it
/// gives a client, and an account, one budget together. It applies the rules of
/// [`FailureLimits`], on one clock for all instances, and each method is atomic.
///
/// The keys it is given are never secret: `client` is an IPv4 address, or an IPv6 /64
/// network written as its first address (`2001:db8:1:2::`); `account` is the hex of the
/// first 16 bytes of the SHA-256 of the lower-cased account name (fixed length, whatever
/// the name). A backend must let its state expire by itself (bounded under hostile input).
#[async_trait]
pub trait SharedFailureLimiter: Send + Sync + 'static {
    /// `Some(wait)` when `client` is blocked now.
    ///
    /// # Errors
    ///
    /// When the backend is unreachable: the caller refuses the request (503).
    async fn blocked(&self, client: &str) -> Result<Option<Duration>, StoreError>;

    /// Counts a failure from `client`; `Some(wait)` when it is now over its budget (it is
    /// then blocked for `wait`, at least a second).
    ///
    /// # Errors
    ///
    /// As [`blocked`](Self::blocked).
    async fn fail(
        &self,
        client: &str,
        policy: &FailurePolicy,
    ) -> Result<Option<Duration>, StoreError>;

    /// Before a password check for `account` from `client`, in one step: `Some(wait)` when
    /// the client is blocked, when the account is over its budget and the client failed
    /// on it within `account_memory`, or when this attempt puts the client over its
    /// budget; otherwise counts the attempt against the client and the account, remembers
    /// the pair for `account_memory`, and answers `None`. See
    /// [`FailureLimits::begin_sign_in`].
    ///
    /// # Errors
    ///
    /// As [`blocked`](Self::blocked).
    async fn begin_sign_in(
        &self,
        account: &str,
        client: &str,
        policy: &FailurePolicy,
    ) -> Result<Option<Duration>, StoreError>;

    /// Gives back the charge of a sign-in that did not fail, and forgets the pair.
    ///
    /// # Errors
    ///
    /// As [`blocked`](Self::blocked).
    async fn refund(
        &self,
        account: &str,
        client: &str,
        policy: &FailurePolicy,
    ) -> Result<(), StoreError>;
}

/// Why [`FailureLimits::begin_sign_in`] refused to let a password be checked.
#[derive(Debug)]
#[non_exhaustive]
pub enum SignInRefused {
    /// Too many failures: answer 429 with `Retry-After` of this wait.
    Wait(Duration),
    /// The shared backend cannot be reached: answer 503 (nothing is checked uncounted).
    Unavailable(StoreError),
}

/// The shared key of an address (see [`SharedFailureLimiter`]).
fn shared_client(ip: IpAddr) -> String {
    client_key(ip).to_string()
}

/// The shared key of an account name (see [`SharedFailureLimiter`]).
fn shared_account(account: &str) -> String {
    let mut h = Sha256::new();
    for c in account.chars().flat_map(char::to_lowercase) {
        let mut buf = [0; 4];
        h.update(c.encode_utf8(&mut buf).as_bytes());
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl FailureLimits {
    fn policy(&self) -> FailurePolicy {
        let (client_rate, account_rate, account_memory) = self.rates();
        FailurePolicy {
            client_rate,
            account_rate,
            account_memory,
        }
    }

    /// `Some(wait)` when `ip` is blocked right now.
    ///
    /// # Errors
    ///
    /// Only when shared and the backend cannot be reached (refuse the request: 503).
    pub async fn blocked(&self, ip: IpAddr) -> Result<Option<Duration>, StoreError> {
        match self.shared_backend() {
            None => Ok(self.blocked_local(ip)),
            Some(shared) => shared.blocked(&shared_client(ip)).await,
        }
    }

    /// Counts a failure from `ip`; `Some(wait)` when it is now over its budget.
    ///
    /// # Errors
    ///
    /// Only when shared and the backend cannot be reached (refuse the request: 503).
    pub async fn fail(&self, ip: IpAddr) -> Result<Option<Duration>, StoreError> {
        match self.shared_backend() {
            None => Ok(self.fail_local(ip)),
            Some(shared) => shared.fail(&shared_client(ip), &self.policy()).await,
        }
    }

    /// Before checking a password for `account` from `ip`: refused with
    /// [`SignInRefused::Wait`] (answer 429 with `Retry-After`, and check nothing) when the
    /// address is blocked, when this attempt is over its budget, or when the account is
    /// over its budget and this address has failed against it recently (see the type's
    /// docs). Otherwise the attempt is counted as a failure at once — so concurrent
    /// attempts cannot overrun the budget — and the returned [`SignIn`] gives it back with
    /// [`SignIn::refund`] when the password was right (or could not be checked).
    ///
    /// # Errors
    ///
    /// [`SignInRefused`] as above; [`SignInRefused::Unavailable`] when shared and the
    /// backend cannot be reached.
    pub async fn begin_sign_in(&self, account: &str, ip: IpAddr) -> Result<SignIn, SignInRefused> {
        let Some(shared) = self.shared_backend() else {
            return self
                .begin_sign_in_local(account, ip)
                .map_err(SignInRefused::Wait);
        };
        let (client, account) = (shared_client(ip), shared_account(account));
        match shared
            .begin_sign_in(&account, &client, &self.policy())
            .await
        {
            Ok(None) => Ok(SignIn {
                limits: self.clone(),
                charged: Charged::Shared { client, account },
            }),
            Ok(Some(wait)) => Err(SignInRefused::Wait(wait)),
            Err(e) => Err(SignInRefused::Unavailable(e)),
        }
    }
}

impl SignIn {
    /// The attempt did not fail (the password was right, or it could not be checked): its
    /// charge goes back to the address and the account, and the account forgets the
    /// address. When a shared backend cannot be reached the charge stays (logged): a
    /// refund never lets anything through.
    pub async fn refund(self) {
        match &self.charged {
            Charged::Local { client, account } => self.limits.refund_local(*client, *account),
            Charged::Shared { client, account } => {
                let Some(shared) = self.limits.shared_backend() else {
                    return;
                };
                if let Err(error) = shared.refund(account, client, &self.limits.policy()).await {
                    tracing::warn!(%error, "cannot give back a sign-in's failure charge");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_keys_hold_no_name_and_fold_case() {
        let a = shared_account("Admin@Example.com");
        assert_eq!(a, shared_account("admin@example.com"));
        assert_eq!(a.len(), 32);
        assert!(!a.contains("admin"));
        assert_eq!(shared_account(&"x".repeat(100_000)).len(), 32);
        assert_eq!(
            shared_client("2001:db8:1:2:ffff::9".parse().unwrap()),
            "2001:db8:1:2::"
        );
        assert_eq!(
            shared_client("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1"
        );
    }
}
