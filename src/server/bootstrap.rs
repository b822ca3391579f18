//! Accounts, as the server and the `keygate` command-line tool create them: the admin
//! account of a first start, accounts added by hand, and their emails and passwords.
//!
//! What a token created for an account holds is [`Account::grant`]'s rule, shared with the
//! management API.

use zeroize::Zeroizing;

use super::BoxError;
use crate::accounts::{Account, AccountStore, hash_password, verify_password};
use crate::error::StoreError;
use crate::identity::Permissions;

/// An email that cannot name an account.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0:?} is not a valid email")]
pub struct InvalidEmail(pub String);

/// `email` trimmed and lower-cased, if it reads `local@domain` without whitespace or control
/// characters, in at most 254 bytes.
///
/// # Errors
///
/// [`InvalidEmail`], holding the trimmed, lower-cased input.
pub fn normalise_email(email: &str) -> Result<String, InvalidEmail> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    if valid {
        Ok(email)
    } else {
        Err(InvalidEmail(email))
    }
}

/// A random password of 24 letters and digits, to show once.
#[must_use]
pub fn generate_password() -> Zeroizing<String> {
    use rand::distr::{Alphanumeric, SampleString};
    Zeroizing::new(Alphanumeric.sample_string(&mut rand::rng(), 24))
}

/// Why [`add_account`] did not add the account.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddAccountError {
    /// An account with this email exists already.
    #[error("the account {0} already exists")]
    Exists(String),
    /// argon2 refused the password (e.g. over its maximum length).
    #[error("cannot hash this password: {0}")]
    Hash(String),
    /// The account store could not be read.
    #[error("cannot read accounts")]
    Read(#[source] StoreError),
    /// The account store could not be written.
    #[error("cannot save the account")]
    Write(#[source] StoreError),
    /// The password hashing task stopped.
    #[error("password hashing stopped")]
    Stopped(#[source] tokio::task::JoinError),
}

/// Adds the account `email` (already normalised) with `password`, stored as an argon2id
/// hash (hashed on the blocking pool), and `permissions`.
///
/// # Errors
///
/// [`AddAccountError`]: the account exists, the password cannot be hashed, or the store
/// failed.
pub async fn add_account(
    accounts: &dyn AccountStore,
    email: &str,
    password: &str,
    permissions: Permissions,
) -> Result<Account, AddAccountError> {
    if accounts
        .find_account(email)
        .await
        .map_err(AddAccountError::Read)?
        .is_some()
    {
        return Err(AddAccountError::Exists(email.to_owned()));
    }
    let to_hash = Zeroizing::new(password.to_owned());
    let password_hash = tokio::task::spawn_blocking(move || hash_password(&to_hash))
        .await
        .map_err(AddAccountError::Stopped)?
        .map_err(|e| AddAccountError::Hash(e.to_string()))?;
    let account = Account {
        email: email.to_owned(),
        password_hash,
        permissions,
        created_at: time::OffsetDateTime::now_utc(),
    };
    accounts
        .put_account(account.clone())
        .await
        .map_err(AddAccountError::Write)?;
    Ok(account)
}

/// Creates the admin account `email` (every permission) when missing, with `password` or a
/// generated one, or updates its password when one is given and differs. Returns the
/// password when this call generated it: show it once.
///
/// # Errors
///
/// The account store failed, or argon2 refused the password.
pub async fn ensure_admin(
    accounts: &impl AccountStore,
    email: &str,
    password: Option<&Zeroizing<String>>,
) -> Result<Option<Zeroizing<String>>, BoxError> {
    let existing = accounts.find_account(email).await?;
    let (password, generated) = match (password, &existing) {
        (Some(p), Some(a)) if verify_password(p, Some(a)) => return Ok(None),
        (Some(p), _) => (p.clone(), false),
        (None, Some(_)) => return Ok(None),
        (None, None) => (generate_password(), true),
    };
    accounts
        .put_account(Account {
            email: email.to_owned(),
            password_hash: hash_password(&password).map_err(|e| e.to_string())?,
            permissions: Permissions::parse(["*"])?,
            created_at: existing.map_or_else(time::OffsetDateTime::now_utc, |a| a.created_at),
        })
        .await?;
    tracing::info!(%email, "admin account ready");
    Ok(generated.then_some(password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(normalise_email(" A@B.example ").unwrap(), "a@b.example");
        for bad in ["", "a", "@b", "a@", "a b@c", "a@b@c"] {
            assert!(normalise_email(bad).is_err(), "{bad:?}");
        }
        assert_eq!(generate_password().len(), 24);
    }
}
