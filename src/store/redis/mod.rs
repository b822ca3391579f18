//! [`RedisStore`]: tokens in Redis, with revocations published on a pub/sub channel
//! (feature `redis`).
//!
//! # Layout
//!
//! Every key starts with the store's prefix (default `keygate:`; set it per instance with
//! [`RedisOptions::with_prefix`], e.g. one random prefix per test):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `<prefix>tok:<hex SHA-256>` | hash | one record, its hash included (times as microseconds since the Unix epoch) |
//! | `<prefix>id:<uuid>` | string | the hex SHA-256 of the record with that id |
//! | `<prefix>owner:<owner>` | set | the hex SHA-256 of each of the owner's records |
//! | `<prefix>dead` | sorted set | records by the time they became purgeable (revoked or expired) |
//! | `<prefix>seq` | counter | insertion order, to list records created in the same microsecond stably |
//!
//! No key lists every record: the admin view across owners
//! ([`TokenStore::list_tokens`]) walks the record keys with `SCAN` for each page, so it
//! costs a pass over the whole store (fine for an occasional admin page, not for a hot path).
//! | `<prefix>rl:<key>` | string | the [`RedisRateLimiter`]'s GCRA arrival time (µs) per token lineage, expiring when the full limit is back |
//! | `<prefix>fail:…` | strings | the [`RedisFailureLimiter`]'s failure counts per client address and account (no secret; every key expires) |
//!
//! Only the SHA-256 of a token is kept, never the token.
//!
//! # How the guarantees are kept
//!
//! - **Unique names and the per-owner limit**: insert, rotate, revoke, record use and purge
//!   are each one Lua script, which Redis runs atomically: the insert script reads the
//!   owner's live records, checks the name and the limit and writes the record with no other
//!   command in between, whatever the number of clients.
//! - **Expiry and TTLs**: a record with an expiry gets a Redis TTL of its expiry plus a
//!   retention ([`RedisOptions::with_expired_retention`], default 7 days), never shorter,
//!   so an expired record is still found (as expired) and purged normally, and a store whose
//!   purge never runs still sheds expired records. Records without an expiry have no TTL.
//! - **Revocation fan-out**: the revoke and rotate scripts `PUBLISH` the hex SHA-256 of the
//!   changed token on [`RedisStore::revocation_channel`] (`<prefix>revocations`), from
//!   inside the script, so the message is sent exactly when the change is made. A
//!   [`CachedStore`](crate::store::cached::CachedStore) subscribed with
//!   [`listen_redis`](crate::store::cached::CachedStore::listen_redis) drops the entry on
//!   every instance.
//! - **Failures**: every command has a response timeout (default 2 s) and a connection
//!   timeout (default 2 s); errors become [`StoreError::Backend`] or
//!   [`StoreError::Timeout`], which the layer answers with 503. The connection is made on
//!   first use and re-made by itself after a failure.
//!
//! # Durability: read this before relying on Redis for revocations
//!
//! A write acknowledged by Redis is only as durable as its persistence settings. With
//! RDB snapshots only (the default `save` schedule) or with persistence off, a crash or
//! restart loses every write since the last snapshot: **tokens created in that window
//! disappear, and revocations made in that window are undone — revoked tokens work again**.
//! With AOF and `appendfsync everysec` up to about one second of writes can be lost; with
//! `appendfsync always` none. For revocations that must never roll back, run Redis with
//! `appendonly yes` and `appendfsync always`, or keep tokens in
//! [`PostgresStore`](crate::store::postgres::PostgresStore) and use Redis only for rate
//! limits and fan-out. Replicas are asynchronous: a failover can lose acknowledged writes
//! too (`WAIT` is not used).
//!
//! The scripts touch keys derived from their arguments, which Redis Cluster does not
//! allow: use a standalone Redis (or a primary with replicas), not a cluster.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keygate::StoreError> {
//! use keygate::store::redis::{RedisOptions, RedisStore};
//!
//! let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
//! let isolated = RedisOptions::new("redis://127.0.0.1:6379")
//!     .with_prefix("keygate-test-1:")
//!     .connect()
//!     .await?;
//! # let _ = (store, isolated);
//! # Ok(()) }
//! ```

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script};
use time::OffsetDateTime;

use super::{
    InactiveOutcome, InsertRules, ReleaseOutcome, RotateOutcome, StoreError, TokenId, TokenRecord,
    TokenStore,
};
use crate::token::TokenHash;

mod codec;
mod expiry;
mod failure_limit;
mod feed;
mod inactive;
mod options;
mod rate_limit;
mod rehash;
use codec::{decode, fields, from_micros, invalid, micros, update_fields};
pub use failure_limit::RedisFailureLimiter;
pub use feed::RedisFeed;
pub use options::RedisOptions;
pub use rate_limit::RedisRateLimiter;

// The scripts live in `*.lua` beside this file. `put.lua`, prepended to the scripts that
// write records, defines the liveness rule `valid_at(revoked_at, expires_at, now)`,
// `put(p, hex, fields, expire_at_ms, dead)`, which writes the hash, the id and owner
// indexes, the TTL and the purge index, and `exists(p, hex, id)`.

/// ARGV: prefix, hex, id, owner, name, kind, now, max (-1: none), per_kind (0/1),
/// expire_at_ms, dead, then field/value pairs. Returns 0 ok, 1 name taken, 2 limit,
/// 3 duplicate.
static INSERT: LazyLock<Script> =
    LazyLock::new(|| Script::new(concat!(include_str!("put.lua"), include_str!("insert.lua"))));

/// ARGV: prefix, old id, now, old_expires_at, retention_ms, channel, new hex, new id,
/// new expire_at_ms, new dead, max (-1: none), per_kind (0/1), then the new record's
/// field/value pairs (from 13). Returns `{code, ended ids...}`: 0 ok (with the ids of the
/// predecessors whose grace ended), 2 limit, 3 duplicate, 4 not found.
static ROTATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(concat!(include_str!("put.lua"), include_str!("rotate.lua"))));

/// ARGV: prefix, id, at, channel. Returns 1 when revoked now, 0 otherwise.
static REVOKE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("revoke.lua")));

/// ARGV: prefix, id. Returns the record's field/value pairs, or nothing.
static GET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("get.lua")));

/// ARGV: prefix, owner. Returns one field/value array per record.
static LIST: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("list.lua")));

/// ARGV: prefix, then id/time pairs.
static RECORD_USE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("record_use.lua")));
static RECORD_USAGE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("record_usage.lua")));

/// ARGV: prefix, now. Returns how many records were deleted.
static PURGE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("purge.lua")));

/// ARGV: prefix, id, fingerprint, now. Returns the fingerprint bound afterwards, or nil for
/// an unknown id.
static BIND: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("bind.lua")));

/// ARGV: prefix, id, now, min interval (µs), channel. Returns {code, next}: 0 released,
/// 1 not bound, 2 too soon (next: the first allowed time), 4 not found.
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("release.lua")));

/// ARGV: see `update.lua`. Returns `{'0', field/value pairs...}`, `{'1'}` name taken,
/// `{'4'}` not found.
static UPDATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(concat!(include_str!("put.lua"), include_str!("update.lua"))));

/// `s` with the glob characters of Redis `MATCH` patterns escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A [`TokenStore`] on Redis. Cheap to clone; clones share the connection. See the
/// [module docs](self) for the durability caveat.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    prefix: String,
    channel: String,
    client: Client,
    config: ConnectionManagerConfig,
    retention_ms: i64,
    conn: tokio::sync::OnceCell<ConnectionManager>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

fn redis_err(e: RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout
    } else {
        StoreError::backend(e)
    }
}

impl RedisStore {
    /// Connects to `url` with the default [`RedisOptions`].
    ///
    /// # Errors
    ///
    /// An invalid URL or an unreachable server.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        RedisOptions::new(url).connect().await
    }

    /// The key prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The pub/sub channel on which revocations and rotations are published
    /// (`<prefix>revocations`); each message is the hex SHA-256 of the changed token.
    #[must_use]
    pub fn revocation_channel(&self) -> &str {
        &self.inner.channel
    }

    /// The client, e.g. for [`CachedStore::listen_redis`](crate::store::cached::CachedStore::listen_redis).
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Asks Redis for a `PONG`, within the response timeout (e.g. for a readiness probe).
    ///
    /// # Errors
    ///
    /// Redis cannot be reached, or answers something else.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(invalid("unexpected answer to PING"))
        }
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        self.inner
            .conn
            .get_or_try_init(|| {
                ConnectionManager::new_with_config(
                    self.inner.client.clone(),
                    self.inner.config.clone(),
                )
            })
            .await
            .cloned()
            .map_err(redis_err)
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}{kind}:{rest}", self.inner.prefix)
    }

    /// The Redis TTL deadline (ms since the epoch) and the purge score of a record.
    fn ttl_and_dead(&self, r: &TokenRecord) -> (String, String) {
        let expire_at_ms = r
            .expires_at
            .map(|e| {
                (micros(e).div_euclid(1_000))
                    .saturating_add(self.inner.retention_ms)
                    .to_string()
            })
            .unwrap_or_default();
        let dead = match (r.extras().revoked_at, r.expires_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|t| micros(t).to_string())
        .unwrap_or_default();
        (expire_at_ms, dead)
    }
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn insert(&self, record: TokenRecord, rules: InsertRules) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let (expire_at_ms, dead) = self.ttl_and_dead(&record);
        let mut inv = INSERT.prepare_invoke();
        inv.arg(&self.inner.prefix)
            .arg(record.hash.to_hex())
            .arg(record.id.to_string())
            .arg(record.owner.as_str())
            .arg(record.name.as_str())
            .arg(record.kind.as_str())
            .arg(micros(rules.now))
            .arg(rules.max_live.map_or(-1, i64::from))
            .arg(u8::from(rules.per_kind))
            .arg(expire_at_ms)
            .arg(dead)
            .arg(fields(&record)?);
        let code: i64 = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        match code {
            0 => Ok(()),
            1 => Err(StoreError::NameTaken),
            2 => Err(StoreError::LimitReached),
            _ => Err(StoreError::Duplicate),
        }
    }

    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        let mut conn = self.conn().await?;
        let flat: Vec<String> = redis::cmd("HGETALL")
            .arg(self.key("tok", &hash.to_hex()))
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if flat.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(decode(flat)?.0)))
    }

    async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let mut inv = GET.prepare_invoke();
        inv.arg(&self.inner.prefix).arg(id.to_string());
        let flat: Vec<String> = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        if flat.is_empty() {
            return Ok(None);
        }
        decode(flat).map(|(r, _)| Some(r))
    }

    async fn list_by_owner(&self, owner: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let mut inv = LIST.prepare_invoke();
        inv.arg(&self.inner.prefix).arg(owner);
        let rows: Vec<Vec<String>> = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        let mut out = rows
            .into_iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|(r, seq)| (r.created_at, *seq));
        Ok(out.into_iter().map(|(r, _)| r).collect())
    }

    async fn revoke(&self, id: &TokenId, at: OffsetDateTime) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let mut inv = REVOKE.prepare_invoke();
        inv.arg(&self.inner.prefix)
            .arg(id.to_string())
            .arg(micros(at))
            .arg(&self.inner.channel);
        let done: i64 = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        Ok(done == 1)
    }

    async fn rotate(
        &self,
        old: &TokenId,
        new: TokenRecord,
        old_expires_at: OffsetDateTime,
        rules: InsertRules,
    ) -> Result<RotateOutcome, StoreError> {
        let mut conn = self.conn().await?;
        let (expire_at_ms, dead) = self.ttl_and_dead(&new);
        let mut inv = ROTATE.prepare_invoke();
        inv.arg(&self.inner.prefix)
            .arg(old.to_string())
            .arg(micros(rules.now))
            .arg(micros(old_expires_at))
            .arg(self.inner.retention_ms)
            .arg(&self.inner.channel)
            .arg(new.hash.to_hex())
            .arg(new.id.to_string())
            .arg(expire_at_ms)
            .arg(dead)
            .arg(rules.max_live.map_or(-1, i64::from))
            .arg(u8::from(rules.per_kind))
            .arg(fields(&new)?);
        let reply: Vec<String> = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        match reply.split_first() {
            Some((code, ended)) if code == "0" => Ok(RotateOutcome {
                ended: ended
                    .iter()
                    .map(|id| id.parse().map_err(|_| invalid("bad id in Redis")))
                    .collect::<Result<_, _>>()?,
            }),
            Some((code, _)) if code == "2" => Err(StoreError::LimitReached),
            Some((code, _)) if code == "3" => Err(StoreError::Duplicate),
            _ => Err(StoreError::NotFound),
        }
    }

    async fn record_use(&self, uses: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let mut inv = RECORD_USE.prepare_invoke();
        inv.arg(&self.inner.prefix);
        for (id, at) in uses {
            inv.arg(id.to_string()).arg(micros(*at));
        }
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        Ok(())
    }

    async fn record_usage(&self, uses: &[crate::store::TokenUse]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let mut inv = RECORD_USAGE.prepare_invoke();
        inv.arg(&self.inner.prefix);
        for u in uses {
            inv.arg(u.id.to_string())
                .arg(micros(u.at))
                .arg(u.client_ip.map(|ip| ip.to_string()).unwrap_or_default())
                .arg(u.user_agent.as_deref().unwrap_or(""));
        }
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        Ok(())
    }

    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        let mut inv = PURGE.prepare_invoke();
        inv.arg(&self.inner.prefix).arg(micros(now));
        let n: i64 = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn bind(
        &self,
        id: &TokenId,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn().await?;
        let mut inv = BIND.prepare_invoke();
        inv.arg(&self.inner.prefix)
            .arg(id.to_string())
            .arg(fingerprint)
            .arg(micros(now));
        inv.invoke_async(&mut conn).await.map_err(redis_err)
    }

    async fn release(
        &self,
        id: &TokenId,
        now: OffsetDateTime,
        min_interval: Duration,
    ) -> Result<ReleaseOutcome, StoreError> {
        let mut conn = self.conn().await?;
        let mut inv = RELEASE.prepare_invoke();
        inv.arg(&self.inner.prefix)
            .arg(id.to_string())
            .arg(micros(now))
            .arg(i64::try_from(min_interval.as_micros()).unwrap_or(i64::MAX / 2))
            .arg(&self.inner.channel);
        let (code, next): (String, String) =
            inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        match code.as_str() {
            "0" => Ok(ReleaseOutcome::Released),
            "1" => Ok(ReleaseOutcome::NotBound),
            "2" => Ok(ReleaseOutcome::TooSoon {
                next_allowed_at: from_micros(&next)?,
            }),
            _ => Err(StoreError::NotFound),
        }
    }

    async fn rehash(
        &self,
        id: &TokenId,
        from: &TokenHash,
        to: &TokenHash,
    ) -> Result<bool, StoreError> {
        self.try_rehash(id, from, to).await
    }

    async fn expire_inactive(
        &self,
        cutoff: OffsetDateTime,
        now: OffsetDateTime,
        kinds: &[String],
        release_kinds: &[String],
    ) -> Result<InactiveOutcome, StoreError> {
        self.judge_inactive(cutoff, now, kinds, release_kinds).await
    }

    async fn claim_expiry_warnings(
        &self,
        before: OffsetDateTime,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        self.claim_expiry(before, now, limit).await
    }

    async fn update(
        &self,
        id: &TokenId,
        update: &super::TokenUpdate,
        now: OffsetDateTime,
    ) -> Result<TokenRecord, StoreError> {
        let mut conn = self.conn().await?;
        let (del, set) = update_fields(update)?;
        let (expire_at_ms, dead) = match update.expires_at {
            None => ("-".to_owned(), "-".to_owned()),
            Some(None) => (String::new(), String::new()),
            Some(Some(e)) => (
                micros(e)
                    .div_euclid(1_000)
                    .saturating_add(self.inner.retention_ms)
                    .to_string(),
                micros(e).to_string(),
            ),
        };
        let mut inv = UPDATE.prepare_invoke();
        inv.arg(&self.inner.prefix)
            .arg(id.to_string())
            .arg(micros(now))
            .arg(&self.inner.channel)
            .arg(update.name.as_deref().unwrap_or(""))
            .arg(expire_at_ms)
            .arg(dead)
            .arg(del.len())
            .arg(del)
            .arg(set);
        let reply: Vec<String> = inv.invoke_async(&mut conn).await.map_err(redis_err)?;
        match reply.split_first() {
            Some((code, rest)) if code == "0" => decode(rest.to_vec()).map(|(r, _)| r),
            Some((code, _)) if code == "1" => Err(StoreError::NameTaken),
            _ => Err(StoreError::NotFound),
        }
    }

    async fn list_tokens(&self, query: &super::TokenQuery) -> Result<Vec<TokenRecord>, StoreError> {
        // No index holds every record: walk the record keys with SCAN and judge in Rust.
        let mut conn = self.conn().await?;
        let key_prefix = format!("{}tok:", self.inner.prefix);
        let pattern = format!("{}*", glob_escape(&key_prefix));
        let mut records = Vec::new();
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
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.cmd("HGETALL").arg(k);
                }
                let rows: Vec<Vec<String>> =
                    pipe.query_async(&mut conn).await.map_err(redis_err)?;
                for flat in rows.into_iter().filter(|f| !f.is_empty()) {
                    let (r, _) = decode(flat)?;
                    if query.matches(&r) {
                        records.push(r);
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(query.page(records))
    }
}
