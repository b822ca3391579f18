//! Re-hashing a record to the current pepper's digest, in one script.

use std::sync::LazyLock;

use redis::Script;

use super::{RedisStore, StoreError, redis_err};
use crate::store::TokenId;
use crate::token::TokenHash;

/// ARGV: prefix, id, from (hex), to (hex), channel. Returns 1 moved, 0 not (unknown id or
/// digest no longer `from`), -1 `to` taken.
static REHASH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("rehash.lua")));

impl RedisStore {
    /// [`TokenStore::rehash`](crate::TokenStore::rehash): the record's key is renamed (its
    /// TTL kept), the id, owner and purge indexes follow, and both digests are published
    /// on the revocation channel so that other instances drop what they cache under either
    /// (the record under the old one, an "unknown" under the new one).
    pub(super) async fn try_rehash(
        &self,
        id: &TokenId,
        from: &TokenHash,
        to: &TokenHash,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let mut inv = REHASH.prepare_invoke();
        inv.arg(&self.inner.prefix)
            .arg(id.to_string())
            .arg(from.to_hex())
            .arg(to.to_hex())
            .arg(&self.inner.channel);
        let done: i64 = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        match done {
            1 => Ok(true),
            -1 => Err(StoreError::Duplicate),
            _ => Ok(false),
        }
    }
}
