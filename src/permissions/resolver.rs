//! The owner's current permissions: [`PermissionResolver`], [`effective`] and
//! [`effective_for`].

use std::sync::Arc;

use async_trait::async_trait;

use super::Permissions;
use crate::error::StoreError;
use crate::identity::Identity;

/// Tells the current permissions of a token owner.
#[async_trait]
pub trait PermissionResolver: Send + Sync + 'static {
    /// The owner's current permissions; `None` when the owner is unknown (its tokens then
    /// hold no permissions).
    ///
    /// # Errors
    ///
    /// Backend failures; the request is then refused with 503 `store_unavailable`.
    async fn owner_permissions(&self, owner: &str) -> Result<Option<Permissions>, StoreError>;
}

#[async_trait]
impl<T: PermissionResolver + ?Sized> PermissionResolver for Arc<T> {
    async fn owner_permissions(&self, owner: &str) -> Result<Option<Permissions>, StoreError> {
        (**self).owner_permissions(owner).await
    }
}

/// `identity` with its permissions cut down to what its owner holds now (none for an
/// unknown owner).
///
/// # Errors
///
/// When the resolver fails.
pub async fn effective(
    resolver: &dyn PermissionResolver,
    identity: Identity,
) -> Result<Identity, StoreError> {
    effective_for(resolver, identity, false).await
}

/// [`effective`], or, when `may_widen` (the token's kind opted in with
/// [`TokenKind::with_resolver_may_widen`](crate::TokenKind::with_resolver_may_widen)),
/// `identity` with exactly its owner's current permissions: the resolver's answer then
/// replaces the token's own permissions and may widen them. An unknown owner's token holds
/// none either way.
///
/// # Errors
///
/// When the resolver fails.
pub async fn effective_for(
    resolver: &dyn PermissionResolver,
    identity: Identity,
    may_widen: bool,
) -> Result<Identity, StoreError> {
    let owner = resolver.owner_permissions(identity.owner()).await?;
    let permissions = match owner {
        Some(p) if may_widen => p,
        Some(p) => identity.permissions().intersect(&p),
        None => Permissions::none(),
    };
    Ok(identity.with_permissions(permissions))
}

#[cfg(feature = "management")]
pub use accounts::AccountPermissions;

#[cfg(feature = "management")]
mod accounts {
    use std::collections::HashMap;
    use std::sync::{Arc, PoisonError, RwLock};
    use std::time::{Duration, Instant};

    use async_trait::async_trait;

    use super::PermissionResolver;
    use crate::accounts::AccountStore;
    use crate::error::StoreError;
    use crate::identity::Permissions;
    use crate::store::timeout::{DEFAULT_STORE_TIMEOUT, bounded};

    /// The default time an owner's permissions are kept: 5 s.
    const DEFAULT_TTL: Duration = Duration::from_secs(5);
    /// The most owners kept; past it the cache starts over.
    const MAX_ENTRIES: usize = 100_000;

    /// An answer and when it was fetched.
    type Kept = (Instant, Option<Permissions>);

    /// A [`PermissionResolver`] over an [`AccountStore`]: an owner is the email of an
    /// account, and holds that account's permissions. Each answer (an unknown owner too) is
    /// kept for the TTL (default 5 s; zero: no cache); errors are never kept. A lookup
    /// that takes longer than the timeout (default 2 s) fails with
    /// [`StoreError::Timeout`]. Cheap to clone; clones share the cache.
    #[derive(Clone)]
    pub struct AccountPermissions {
        accounts: Arc<dyn AccountStore>,
        ttl: Duration,
        timeout: Duration,
        cache: Arc<RwLock<HashMap<String, Kept>>>,
    }

    impl std::fmt::Debug for AccountPermissions {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("AccountPermissions")
                .field("ttl", &self.ttl)
                .field("timeout", &self.timeout)
                .finish_non_exhaustive()
        }
    }

    impl AccountPermissions {
        /// Resolves owners through `accounts`, keeping answers for 5 s, each lookup
        /// bounded by 2 s.
        #[must_use]
        pub fn new(accounts: impl AccountStore) -> Self {
            Self {
                accounts: Arc::new(accounts),
                ttl: DEFAULT_TTL,
                timeout: DEFAULT_STORE_TIMEOUT,
                cache: Arc::default(),
            }
        }

        /// The longest an account lookup may take before it fails with
        /// [`StoreError::Timeout`] (503 `store_unavailable`); default 2 s.
        #[must_use]
        pub fn with_timeout(mut self, limit: Duration) -> Self {
            self.timeout = limit;
            self
        }

        /// How long an answer is kept: the longest a demotion takes to reach the tokens.
        #[must_use]
        pub fn with_ttl(mut self, ttl: Duration) -> Self {
            self.ttl = ttl;
            self
        }

        /// The time answers are kept.
        #[must_use]
        pub fn ttl(&self) -> Duration {
            self.ttl
        }

        /// Forgets every kept answer (e.g. right after changing an account here).
        pub fn clear(&self) {
            self.cache
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }

    #[async_trait]
    impl PermissionResolver for AccountPermissions {
        async fn owner_permissions(&self, owner: &str) -> Result<Option<Permissions>, StoreError> {
            let key = owner.to_lowercase();
            if !self.ttl.is_zero() {
                let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
                if let Some((at, p)) = cache.get(&key)
                    && at.elapsed() < self.ttl
                {
                    return Ok(p.clone());
                }
            }
            let found = bounded(Some(self.timeout), self.accounts.find_account(&key))
                .await?
                .map(|a| a.permissions);
            if !self.ttl.is_zero() {
                let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
                if cache.len() >= MAX_ENTRIES {
                    cache.clear();
                }
                cache.insert(key, (Instant::now(), found.clone()));
            }
            Ok(found)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::accounts::{Account, MemoryAccounts};

        fn account(email: &str, perms: &[&str]) -> Account {
            Account {
                email: email.into(),
                password_hash: String::new(),
                permissions: Permissions::parse(perms.iter().copied()).unwrap(),
                created_at: time::OffsetDateTime::now_utc(),
            }
        }

        #[tokio::test]
        async fn answers_are_kept_for_the_ttl_only() {
            let accounts = MemoryAccounts::new();
            accounts
                .put_account(account("a@example.com", &["apps:read", "env:write"]))
                .await
                .unwrap();
            let r = AccountPermissions::new(accounts.clone()).with_ttl(Duration::from_millis(50));
            let p = r.owner_permissions("A@example.com").await.unwrap().unwrap();
            assert!(p.allows("env:write"));
            accounts
                .put_account(account("a@example.com", &["apps:read"]))
                .await
                .unwrap();
            let p = r.owner_permissions("a@example.com").await.unwrap().unwrap();
            assert!(p.allows("env:write"), "still the kept answer");
            tokio::time::sleep(Duration::from_millis(60)).await;
            let p = r.owner_permissions("a@example.com").await.unwrap().unwrap();
            assert!(!p.allows("env:write"), "the demotion after the TTL");
            assert!(r.owner_permissions("nobody").await.unwrap().is_none());
        }
    }
}
