//! Time bounds for every store a request waits on: [`TimeoutStore`] for tokens,
//! `TimeoutAccounts` for accounts (feature `management`), [`TimeoutResolver`] for the
//! permissions of token owners and [`TimeoutAuditReader`] for audit reads.
//!
//! A call that takes longer than its bound fails with [`StoreError::Timeout`], which the
//! layer and the management API answer with 503 `store_unavailable` (`Retry-After: 1`):
//! fail closed, never a pass and never a request held for as long as the store hangs.
//!
//! What keygate bounds by default, at [`DEFAULT_STORE_TIMEOUT`] (2 s):
//!
//! - the management API's account lookups (Basic sign-in), its permission resolver and its
//!   audit reader (`Management::with_store_timeout` changes the bound);
//! - `AccountPermissions`' account lookups (`AccountPermissions::with_timeout`).
//!
//! Token stores are bounded by wrapping them: [`TimeoutStore`], or
//! [`CachedStore::with_timeout`](super::cached::CachedStore::with_timeout) with a cache.
//! The reference server does both, on SQLite and on PostgreSQL. The fast path
//! ([`TokenStore::find_by_hash_now`]) is not bounded: it answers without waiting.
//!
//! A write that times out may still complete in the store; callers see 503 and may retry.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use keygate::store::timeout::{DEFAULT_STORE_TIMEOUT, TimeoutStore};
//! use keygate::{MemoryStore, NewToken, Tokens};
//!
//! let tokens = Tokens::new(TimeoutStore::new(MemoryStore::new(), DEFAULT_STORE_TIMEOUT));
//! let issued = tokens.issue(NewToken::new("alice", "ci")).await.unwrap();
//! assert!(tokens.authenticate(issued.token.expose_secret()).await.is_ok());
//! # });
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{
    InactiveOutcome, InsertRules, ReleaseOutcome, RotateOutcome, StoreError, TokenId, TokenRecord,
    TokenStore,
};
use crate::identity::Permissions;
use crate::permissions::PermissionResolver;
use crate::token::TokenHash;

/// The bound keygate puts on a store call by default: 2 s.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// `fut`, or [`StoreError::Timeout`] once `limit` has passed (no bound without a limit).
pub(crate) async fn bounded<T>(
    limit: Option<Duration>,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match limit {
        Some(d) => tokio::time::timeout(d, fut)
            .await
            .unwrap_or(Err(StoreError::Timeout)),
        None => fut.await,
    }
}

/// A [`TokenStore`] that fails every call to the store it wraps taking longer than its limit
/// with [`StoreError::Timeout`], which the layer answers with 503 `store_unavailable`
/// instead of holding the request. [`CachedStore::with_timeout`](super::cached::CachedStore::with_timeout) does the same with a cache.
///
/// A write that times out may still complete in the store.
#[derive(Debug, Clone)]
pub struct TimeoutStore<S> {
    inner: S,
    limit: Duration,
}

impl<S: TokenStore> TimeoutStore<S> {
    /// Bounds every call to `inner` by `limit`.
    #[must_use]
    pub fn new(inner: S, limit: Duration) -> Self {
        Self { inner, limit }
    }

    /// The wrapped store.
    #[must_use]
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

#[async_trait]
impl<S: TokenStore> TokenStore for TimeoutStore<S> {
    async fn insert(&self, record: TokenRecord, rules: InsertRules) -> Result<(), StoreError> {
        bounded(Some(self.limit), self.inner.insert(record, rules)).await
    }
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        bounded(Some(self.limit), self.inner.find_by_hash(hash)).await
    }
    fn find_by_hash_now(
        &self,
        hash: &TokenHash,
    ) -> Option<Result<Option<Arc<TokenRecord>>, StoreError>> {
        self.inner.find_by_hash_now(hash)
    }
    async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, StoreError> {
        bounded(Some(self.limit), self.inner.get(id)).await
    }
    async fn list_by_owner(&self, owner: &str) -> Result<Vec<TokenRecord>, StoreError> {
        bounded(Some(self.limit), self.inner.list_by_owner(owner)).await
    }
    async fn revoke(&self, id: &TokenId, at: OffsetDateTime) -> Result<bool, StoreError> {
        bounded(Some(self.limit), self.inner.revoke(id, at)).await
    }
    async fn rotate(
        &self,
        old: &TokenId,
        new: TokenRecord,
        old_expires_at: OffsetDateTime,
        rules: InsertRules,
    ) -> Result<RotateOutcome, StoreError> {
        bounded(
            Some(self.limit),
            self.inner.rotate(old, new, old_expires_at, rules),
        )
        .await
    }
    async fn record_use(&self, uses: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError> {
        bounded(Some(self.limit), self.inner.record_use(uses)).await
    }
    async fn record_usage(&self, uses: &[super::TokenUse]) -> Result<(), StoreError> {
        bounded(Some(self.limit), self.inner.record_usage(uses)).await
    }
    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        bounded(Some(self.limit), self.inner.purge_expired(now)).await
    }
    async fn bind(
        &self,
        id: &TokenId,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        bounded(Some(self.limit), self.inner.bind(id, fingerprint, now)).await
    }
    async fn release(
        &self,
        id: &TokenId,
        now: OffsetDateTime,
        min_interval: Duration,
    ) -> Result<ReleaseOutcome, StoreError> {
        bounded(Some(self.limit), self.inner.release(id, now, min_interval)).await
    }
    async fn expire_inactive(
        &self,
        cutoff: OffsetDateTime,
        now: OffsetDateTime,
        kinds: &[String],
        release_kinds: &[String],
    ) -> Result<InactiveOutcome, StoreError> {
        bounded(
            Some(self.limit),
            self.inner
                .expire_inactive(cutoff, now, kinds, release_kinds),
        )
        .await
    }

    async fn claim_expiry_warnings(
        &self,
        before: OffsetDateTime,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        bounded(
            Some(self.limit),
            self.inner.claim_expiry_warnings(before, now, limit),
        )
        .await
    }
    async fn update(
        &self,
        id: &TokenId,
        update: &super::TokenUpdate,
        now: OffsetDateTime,
    ) -> Result<TokenRecord, StoreError> {
        bounded(Some(self.limit), self.inner.update(id, update, now)).await
    }
    async fn list_tokens(&self, query: &super::TokenQuery) -> Result<Vec<TokenRecord>, StoreError> {
        bounded(Some(self.limit), self.inner.list_tokens(query)).await
    }
    async fn rehash(
        &self,
        id: &TokenId,
        from: &TokenHash,
        to: &TokenHash,
    ) -> Result<bool, StoreError> {
        bounded(Some(self.limit), self.inner.rehash(id, from, to)).await
    }
}

/// A [`PermissionResolver`] that fails every call to the resolver it wraps taking longer
/// than its limit with [`StoreError::Timeout`] (503 `store_unavailable` through the layer
/// and the management API).
#[derive(Debug, Clone)]
pub struct TimeoutResolver<R> {
    inner: R,
    limit: Duration,
}

impl<R: PermissionResolver> TimeoutResolver<R> {
    /// Bounds every call to `inner` by `limit`.
    #[must_use]
    pub fn new(inner: R, limit: Duration) -> Self {
        Self { inner, limit }
    }

    /// The wrapped resolver.
    #[must_use]
    pub fn inner(&self) -> &R {
        &self.inner
    }
}

#[async_trait]
impl<R: PermissionResolver> PermissionResolver for TimeoutResolver<R> {
    async fn owner_permissions(&self, owner: &str) -> Result<Option<Permissions>, StoreError> {
        bounded(Some(self.limit), self.inner.owner_permissions(owner)).await
    }
}

#[cfg(feature = "management")]
pub use accounts::TimeoutAccounts;

#[cfg(feature = "management")]
mod accounts {
    use std::time::Duration;

    use async_trait::async_trait;

    use super::bounded;
    use crate::accounts::{Account, AccountStore};
    use crate::store::StoreError;

    /// An [`AccountStore`] that fails every call to the store it wraps taking longer than
    /// its limit with [`StoreError::Timeout`] (503 `store_unavailable` through the
    /// management API). The management API wraps its account store in one by default.
    #[derive(Debug, Clone)]
    pub struct TimeoutAccounts<A> {
        inner: A,
        limit: Duration,
    }

    impl<A: AccountStore> TimeoutAccounts<A> {
        /// Bounds every call to `inner` by `limit`.
        #[must_use]
        pub fn new(inner: A, limit: Duration) -> Self {
            Self { inner, limit }
        }

        /// The wrapped store.
        #[must_use]
        pub fn inner(&self) -> &A {
            &self.inner
        }
    }

    #[async_trait]
    impl<A: AccountStore> AccountStore for TimeoutAccounts<A> {
        async fn put_account(&self, account: Account) -> Result<(), StoreError> {
            bounded(Some(self.limit), self.inner.put_account(account)).await
        }
        async fn find_account(&self, email: &str) -> Result<Option<Account>, StoreError> {
            bounded(Some(self.limit), self.inner.find_account(email)).await
        }
    }
}

/// An [`AuditReader`](crate::audit::AuditReader) that fails every read of the reader it
/// wraps taking longer than its limit with [`StoreError::Timeout`] (503
/// `store_unavailable` from `GET /audit`). The management API wraps its reader in one by
/// default.
#[derive(Debug, Clone)]
pub struct TimeoutAuditReader<R> {
    inner: R,
    limit: Duration,
}

impl<R: crate::audit::AuditReader> TimeoutAuditReader<R> {
    /// Bounds every read of `inner` by `limit`.
    #[must_use]
    pub fn new(inner: R, limit: Duration) -> Self {
        Self { inner, limit }
    }

    /// The wrapped reader.
    #[must_use]
    pub fn inner(&self) -> &R {
        &self.inner
    }
}

#[async_trait]
impl<R: crate::audit::AuditReader> crate::audit::AuditReader for TimeoutAuditReader<R> {
    async fn list_audit(
        &self,
        filter: &crate::audit::AuditFilter,
    ) -> Result<Vec<crate::audit::AuditEvent>, StoreError> {
        bounded(Some(self.limit), self.inner.list_audit(filter)).await
    }
}
