//! Expiry warnings in the Redis store: [`TokenStore::claim_expiry_warnings`]
//! (crate::store::TokenStore::claim_expiry_warnings): the record keys are walked with
//! `SCAN`, and each batch is judged and claimed by one script (`claim_expiry.lua`), so each
//! record is claimed atomically, once.

use std::sync::LazyLock;

use redis::Script;
use time::OffsetDateTime;

use super::codec::{decode, micros};
use super::{RedisStore, glob_escape, redis_err};
use crate::store::{StoreError, TokenRecord};

/// ARGV: prefix, before, now, limit, then hex digests. Returns the digests claimed.
static CLAIM_EXPIRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("put.lua"),
        include_str!("claim_expiry.lua")
    ))
});

impl RedisStore {
    /// Claims at most `limit` records (the first found by the walk: Redis keeps no index
    /// by expiry, so a limited call does not pick the soonest ones first).
    pub(super) async fn claim_expiry(
        &self,
        before: OffsetDateTime,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let key_prefix = format!("{}tok:", self.inner.prefix);
        let pattern = format!("{}*", glob_escape(&key_prefix));
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut claimed: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            let hexes: Vec<&str> = keys
                .iter()
                .filter_map(|k| k.strip_prefix(&key_prefix))
                .collect();
            if !hexes.is_empty() {
                let mut inv = CLAIM_EXPIRY.prepare_invoke();
                inv.arg(&self.inner.prefix)
                    .arg(micros(before))
                    .arg(micros(now))
                    .arg(limit - claimed.len())
                    .arg(hexes);
                let got: Vec<String> = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
                claimed.extend(got);
            }
            cursor = next;
            if cursor == 0 || claimed.len() >= limit {
                break;
            }
        }
        let mut out = Vec::with_capacity(claimed.len());
        for hex in claimed {
            let flat: Vec<String> = redis::cmd("HGETALL")
                .arg(format!("{key_prefix}{hex}"))
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            // Purged in between: nothing left to warn of.
            if !flat.is_empty() {
                out.push(decode(flat)?.0);
            }
        }
        out.sort_by_key(|r| r.expires_at);
        Ok(out)
    }
}
