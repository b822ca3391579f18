//! Revoking (or releasing) tokens left unused past a cutoff: a SCAN of the record keys,
//! each batch judged in one script.

use std::sync::LazyLock;

use redis::Script;
use time::OffsetDateTime;

use super::codec::{invalid, micros};
use super::{RedisStore, StoreError, glob_escape, redis_err};
use crate::store::{InactiveOutcome, TokenId};

/// ARGV: prefix, cutoff, now, channel, number of release kinds n, the n kinds, then hex
/// digests to judge. Returns a flat list of `r`/`v` (released / revoked) and id pairs.
static EXPIRE_INACTIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("put.lua"),
        include_str!("expire_inactive.lua")
    ))
});

impl RedisStore {
    /// [`TokenStore::expire_inactive`](crate::TokenStore::expire_inactive).
    pub(super) async fn judge_inactive(
        &self,
        cutoff: OffsetDateTime,
        now: OffsetDateTime,
        kinds: &[String],
        release_kinds: &[String],
    ) -> Result<InactiveOutcome, StoreError> {
        if kinds.is_empty() {
            return Ok(InactiveOutcome::default());
        }
        // No index holds every record: walk the record keys with SCAN (not atomic as a
        // whole) and judge each batch in one script, which re-reads every record, so each
        // record is judged atomically.
        let mut conn = self.conn().await?;
        let key_prefix = format!("{}tok:", self.inner.prefix);
        let pattern = format!("{}*", glob_escape(&key_prefix));
        let mut out = InactiveOutcome::default();
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
                let mut inv = EXPIRE_INACTIVE.prepare_invoke();
                inv.arg(&self.inner.prefix)
                    .arg(micros(cutoff))
                    .arg(micros(now))
                    .arg(&self.inner.channel)
                    .arg(release_kinds.len())
                    .arg(release_kinds)
                    .arg(kinds.len())
                    .arg(kinds)
                    .arg(hexes);
                let flat: Vec<String> = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
                for pair in flat.chunks_exact(2) {
                    let id: TokenId = pair[1].parse().map_err(|_| invalid("bad id in Redis"))?;
                    if pair[0] == "r" {
                        out.released.push(id);
                    } else {
                        out.revoked.push(id);
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(out)
    }
}
