//! Accounts that sign in with email and password (HTTP Basic) to manage their tokens
//! (feature `management`).
//!
//! Passwords are kept only as argon2id hashes (PHC strings). Verification of an unknown
//! email runs against a fixed dummy hash, so an unknown email and a wrong password take the
//! same time and get the same answer.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use async_trait::async_trait;
use time::OffsetDateTime;

use crate::error::StoreError;
use crate::identity::{Permission, Permissions};
use crate::tokens::NewToken;

/// An account that owns tokens. Its email is the `owner` of its tokens.
#[derive(Clone, PartialEq)]
pub struct Account {
    /// Email, stored lower-cased; the owner name of the account's tokens.
    pub email: String,
    /// argon2id PHC string; never the password.
    pub password_hash: String,
    /// What the account may do; its tokens can hold at most these permissions.
    pub permissions: Permissions,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("email", &self.email)
            .field("permissions", &self.permissions)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// What a token created for an account holds, by the one rule the management API, the
/// command-line tool and the server share: explicit permissions, else its role's, else the
/// account's own; never more than the account holds. See [`Account::grant`].
#[derive(Clone, Debug)]
pub struct TokenGrant {
    permissions: Permissions,
    role: Option<String>,
    explicit: bool,
}

impl TokenGrant {
    /// The permissions the token will hold.
    #[must_use]
    pub fn permissions(&self) -> &Permissions {
        &self.permissions
    }

    /// `new` with the grant's role and permissions: the role is recorded on the token, and
    /// the permissions are set unless they are the role's own (the manager fills those in).
    pub fn apply(self, mut new: NewToken) -> NewToken {
        let role_only = self.role.is_some() && !self.explicit;
        if let Some(role) = self.role {
            new = new.role(role);
        }
        if !role_only {
            new = new.permissions(self.permissions);
        }
        new
    }
}

/// A token asked for more than its account holds.
#[derive(Clone, Debug, thiserror::Error)]
#[error("missing permission: {missing} (a token cannot hold more than its account)")]
pub struct GrantExceedsAccount {
    /// The first permission the account does not hold.
    pub missing: Permission,
    /// Every permission the token asked for.
    pub wanted: Permissions,
}

impl Account {
    /// What a token created for this account holds: `explicit` permissions when given,
    /// else those of `role` (its name and permissions), else the account's own.
    ///
    /// # Errors
    ///
    /// [`GrantExceedsAccount`] when those go beyond the account's permissions.
    pub fn grant(
        &self,
        role: Option<(String, Permissions)>,
        explicit: Option<Permissions>,
    ) -> Result<TokenGrant, GrantExceedsAccount> {
        let is_explicit = explicit.is_some();
        let (role, role_permissions) = match role {
            Some((name, p)) => (Some(name), Some(p)),
            None => (None, None),
        };
        let permissions = explicit
            .or(role_permissions)
            .unwrap_or_else(|| self.permissions.clone());
        let missing = permissions
            .iter()
            .find(|p| !self.permissions.allows(p.as_str()))
            .cloned();
        if let Some(missing) = missing {
            return Err(GrantExceedsAccount {
                missing,
                wanted: permissions,
            });
        }
        Ok(TokenGrant {
            permissions,
            role,
            explicit: is_explicit,
        })
    }
}

/// Where accounts are kept. SQL stores implement it beside [`TokenStore`](crate::TokenStore)
/// on the same database; [`MemoryAccounts`] keeps them in memory.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Inserts the account, or replaces the one with the same (lower-cased) email.
    ///
    /// # Errors
    ///
    /// Backend failures.
    async fn put_account(&self, account: Account) -> Result<(), StoreError>;

    /// The account with this email (compared lower-cased), if any.
    ///
    /// # Errors
    ///
    /// Backend failures.
    async fn find_account(&self, email: &str) -> Result<Option<Account>, StoreError>;
}

#[async_trait]
impl<T: AccountStore + ?Sized> AccountStore for Arc<T> {
    async fn put_account(&self, account: Account) -> Result<(), StoreError> {
        (**self).put_account(account).await
    }
    async fn find_account(&self, email: &str) -> Result<Option<Account>, StoreError> {
        (**self).find_account(email).await
    }
}

/// Accounts in memory. Clones share the same data.
#[derive(Clone, Default)]
pub struct MemoryAccounts {
    accounts: Arc<RwLock<HashMap<String, Account>>>,
}

impl std::fmt::Debug for MemoryAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryAccounts").finish_non_exhaustive()
    }
}

impl MemoryAccounts {
    /// No accounts.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl AccountStore for MemoryAccounts {
    async fn put_account(&self, mut account: Account) -> Result<(), StoreError> {
        account.email = account.email.to_lowercase();
        self.accounts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(account.email.clone(), account);
        Ok(())
    }

    async fn find_account(&self, email: &str) -> Result<Option<Account>, StoreError> {
        Ok(self
            .accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&email.to_lowercase())
            .cloned())
    }
}

/// Hashes a password with argon2id (the `argon2` crate's defaults: 19 MiB, t=2, p=1).
///
/// # Errors
///
/// When argon2 refuses the input (e.g. a password over its maximum length).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password("keygate dummy password for unknown accounts")
            .expect("hashing a short constant cannot fail")
    })
}

/// Checks `password` against `account`'s hash; with no account, checks it against a dummy
/// hash and returns `false`, so both cases cost one argon2 verification. CPU-heavy (tens of
/// milliseconds): call it from `spawn_blocking` with bounded concurrency.
#[must_use]
pub fn verify_password(password: &str, account: Option<&Account>) -> bool {
    let (phc, known) = match account {
        Some(a) => (a.password_hash.as_str(), true),
        None => (dummy_hash(), false),
    };
    let ok = PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false);
    ok && known
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_verify_only_against_their_hash() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let acc = Account {
            email: "Admin@Example.com".into(),
            password_hash: hash,
            permissions: Permissions::parse(["*"]).unwrap(),
            created_at: OffsetDateTime::now_utc(),
        };
        assert!(verify_password("correct horse", Some(&acc)));
        assert!(!verify_password("wrong", Some(&acc)));
        assert!(!verify_password(
            "keygate dummy password for unknown accounts",
            None
        ));
        let store = MemoryAccounts::new();
        store.put_account(acc.clone()).await.unwrap();
        let found = store
            .find_account("admin@EXAMPLE.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.email, "admin@example.com");
        assert!(!format!("{found:?}").contains("argon2"));
    }
}
