//! The suite on a store that implements none of the optional methods, and the core suite
//! on a store whose optional methods must not be called.

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::store::{
    InactiveOutcome, InsertRules, MemoryStore, ReleaseOutcome, RotateOutcome, StoreError, TokenId,
    TokenQuery, TokenRecord, TokenStore, TokenUpdate, TokenUse,
};
use crate::token::TokenHash;

/// A [`MemoryStore`] behind the required methods only: `bind`, `release` and
/// `expire_inactive` answer [`StoreError::Unsupported`] (the trait's defaults).
struct RequiredOnly(MemoryStore);

#[async_trait]
impl TokenStore for RequiredOnly {
    async fn insert(&self, record: TokenRecord, rules: InsertRules) -> Result<(), StoreError> {
        self.0.insert(record, rules).await
    }
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        self.0.find_by_hash(hash).await
    }
    async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, StoreError> {
        self.0.get(id).await
    }
    async fn list_by_owner(&self, owner: &str) -> Result<Vec<TokenRecord>, StoreError> {
        self.0.list_by_owner(owner).await
    }
    async fn revoke(&self, id: &TokenId, at: OffsetDateTime) -> Result<bool, StoreError> {
        self.0.revoke(id, at).await
    }
    async fn rotate(
        &self,
        old: &TokenId,
        new: TokenRecord,
        old_expires_at: OffsetDateTime,
        rules: InsertRules,
    ) -> Result<RotateOutcome, StoreError> {
        self.0.rotate(old, new, old_expires_at, rules).await
    }
    async fn record_use(&self, uses: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError> {
        self.0.record_use(uses).await
    }
    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.0.purge_expired(now).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_without_the_optional_methods_passes_and_fails_closed() {
    let store = Arc::new(RequiredOnly(MemoryStore::new()));
    let probe: Arc<dyn TokenStore> = store.clone();
    let supported = super::optional::probe(&probe).await;
    assert!(!supported.bind && !supported.release && !supported.expire_inactive);
    assert!(!super::rehash::probe(&probe).await);
    super::run(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_memory_store_implements_every_optional_method() {
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let supported = super::optional::probe(&store).await;
    assert!(supported.bind && supported.release && supported.expire_inactive);
    assert!(super::rehash::probe(&store).await);
}

/// A [`MemoryStore`] behind the required methods, whose optional methods panic: the core
/// suite must pass without calling one.
struct NoOptionalCalls(RequiredOnly);

/// Panics naming the optional method the core suite called.
fn called(method: &str) -> ! {
    panic!("run_core called the optional method {method}")
}

#[async_trait]
impl TokenStore for NoOptionalCalls {
    async fn insert(&self, record: TokenRecord, rules: InsertRules) -> Result<(), StoreError> {
        self.0.insert(record, rules).await
    }
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        self.0.find_by_hash(hash).await
    }
    fn find_by_hash_now(
        &self,
        _: &TokenHash,
    ) -> Option<Result<Option<Arc<TokenRecord>>, StoreError>> {
        called("find_by_hash_now")
    }
    async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, StoreError> {
        self.0.get(id).await
    }
    async fn list_by_owner(&self, owner: &str) -> Result<Vec<TokenRecord>, StoreError> {
        self.0.list_by_owner(owner).await
    }
    async fn revoke(&self, id: &TokenId, at: OffsetDateTime) -> Result<bool, StoreError> {
        self.0.revoke(id, at).await
    }
    async fn rotate(
        &self,
        old: &TokenId,
        new: TokenRecord,
        old_expires_at: OffsetDateTime,
        rules: InsertRules,
    ) -> Result<RotateOutcome, StoreError> {
        self.0.rotate(old, new, old_expires_at, rules).await
    }
    async fn record_use(&self, uses: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError> {
        self.0.record_use(uses).await
    }
    async fn record_usage(&self, _: &[TokenUse]) -> Result<(), StoreError> {
        called("record_usage")
    }
    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.0.purge_expired(now).await
    }
    async fn bind(
        &self,
        _: &TokenId,
        _: &str,
        _: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        called("bind")
    }
    async fn release(
        &self,
        _: &TokenId,
        _: OffsetDateTime,
        _: std::time::Duration,
    ) -> Result<ReleaseOutcome, StoreError> {
        called("release")
    }
    async fn expire_inactive(
        &self,
        _: OffsetDateTime,
        _: OffsetDateTime,
        _: &[String],
        _: &[String],
    ) -> Result<InactiveOutcome, StoreError> {
        called("expire_inactive")
    }
    async fn update(
        &self,
        _: &TokenId,
        _: &TokenUpdate,
        _: OffsetDateTime,
    ) -> Result<TokenRecord, StoreError> {
        called("update")
    }
    async fn list_tokens(&self, _: &TokenQuery) -> Result<Vec<TokenRecord>, StoreError> {
        called("list_tokens")
    }
    async fn claim_expiry_warnings(
        &self,
        _: OffsetDateTime,
        _: OffsetDateTime,
        _: u32,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        called("claim_expiry_warnings")
    }
    async fn rehash(&self, _: &TokenId, _: &TokenHash, _: &TokenHash) -> Result<bool, StoreError> {
        called("rehash")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_core_suite_calls_no_optional_method() {
    super::run_core(NoOptionalCalls(RequiredOnly(MemoryStore::new()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[should_panic(expected = "run_core called the optional method")]
async fn the_whole_suite_calls_the_optional_methods() {
    // The check above can fail: `run` calls them, and the store says so.
    super::run(NoOptionalCalls(RequiredOnly(MemoryStore::new()))).await;
}
