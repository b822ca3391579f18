//! A `TokenStore` of one's own over a key-value table shaped like DynamoDB's: records as
//! JSON (feature `serde`) listed by key prefix, copied under their id and digest (an index),
//! every change one conditional write. The eight required methods; passes `run_core`.
//! `cargo run --example kv_store --features serde`

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use keygate::store::StoreError::{self, Duplicate, LimitReached, NameTaken, NotFound};
use keygate::store::{InsertRules, RotateOutcome, TokenId, TokenRecord, TokenStore};
use keygate::{NewToken, TokenHash, Tokens};
use time::OffsetDateTime;

type Res<T> = Result<T, StoreError>;
/// A key with a value to write or expect (`None`: deleted, or absent).
type Item = (String, Option<Vec<u8>>);

/// The table (a `BTreeMap` standing in for DynamoDB): get, scan by key prefix, and a
/// conditional batch write (TransactWriteItems): puts and deletes, made only if every
/// expected key still holds its expected value.
#[derive(Default)]
pub struct Kv(Mutex<BTreeMap<String, Vec<u8>>>);

impl Kv {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.lock().expect("kv").get(key).cloned()
    }
    fn scan(&self, prefix: &str) -> Vec<Vec<u8>> {
        let map = self.0.lock().expect("kv");
        let after = map.range(prefix.to_owned()..);
        let hits = after.take_while(|(k, _)| k.starts_with(prefix));
        hits.map(|(_, v)| v.clone()).collect()
    }
    fn commit(&self, expect: &[Item], writes: Vec<Item>) -> bool {
        let mut map = self.0.lock().expect("kv");
        let ok = expect.iter().all(|(k, v)| map.get(k) == v.as_ref());
        for (k, v) in writes.into_iter().filter(|_| ok) {
            map.remove(&k);
            map.extend(v.map(|v| (k, v)));
        }
        ok
    }
}

/// Each record at `o/<len>:<owner>/<id>`, copied at `i/<id>` and `h/<digest>`; per owner a
/// version at `vo/<len>:<owner>/`, replaced by every change to the owner's records.
#[derive(Default)]
pub struct KvStore(pub Kv);

/// The owner's prefix (its length keeps it off any other owner's).
fn owner_key(owner: &str) -> String {
    format!("o/{}:{owner}/", owner.len())
}
fn keys(r: &TokenRecord) -> [String; 3] {
    let (o, id, h) = (owner_key(&r.owner), r.id, r.hash.to_hex());
    [format!("{o}{id}"), format!("i/{id}"), format!("h/{h}")]
}
/// `Err(e)` when `refused`.
fn refuse(refused: bool, e: StoreError) -> Res<()> {
    if refused { Err(e) } else { Ok(()) }
}
fn decode(values: impl IntoIterator<Item = Vec<u8>>) -> Res<Vec<TokenRecord>> {
    let each = values.into_iter().map(|v| serde_json::from_slice(&v));
    each.collect::<Result<_, _>>().map_err(StoreError::backend)
}

impl KvStore {
    /// Runs `f` on the owner's records, adds `new`, writes what changed if the owner's
    /// version (and `new`'s keys) did not change meanwhile, else runs again: `f`'s checks hold.
    fn change<T>(
        &self,
        owner: &str,
        new: Option<&TokenRecord>,
        f: impl Fn(&mut Vec<TokenRecord>) -> Res<T>,
    ) -> Res<T> {
        let version = format!("v{}", owner_key(owner));
        loop {
            let mut expect = vec![(version.clone(), self.0.get(&version))];
            let before = decode(self.0.scan(&owner_key(owner)))?;
            let mut mine = before.clone();
            let out = f(&mut mine)?;
            for k in new.iter().flat_map(|n| keys(n)) {
                refuse(self.0.get(&k).is_some(), Duplicate)?;
                expect.push((k, None));
            }
            mine.extend(new.cloned());
            let mut writes = vec![(version.clone(), Some(TokenId::random().to_string().into()))];
            for r in mine.iter().filter(|r| !before.contains(r)) {
                let json = serde_json::to_vec(r).map_err(StoreError::backend)?;
                writes.extend(keys(r).map(|k| (k, Some(json.clone()))));
            }
            for gone in before.iter().filter(|b| !mine.iter().any(|r| r.id == b.id)) {
                writes.extend(keys(gone).map(|k| (k, None)));
            }
            if self.0.commit(&expect, writes) {
                return Ok(out);
            }
        }
    }
}

#[async_trait]
impl TokenStore for KvStore {
    async fn insert(&self, record: TokenRecord, rules: InsertRules) -> Res<()> {
        let taken = |r: &TokenRecord| r.is_live_at(rules.now) && r.name == record.name;
        self.change(&record.owner, Some(&record), |mine| {
            refuse(mine.iter().any(taken), NameTaken)?;
            refuse(rules.at_limit(&*mine, &record.kind), LimitReached)
        })
    }
    async fn find_by_hash(&self, hash: &TokenHash) -> Res<Option<Arc<TokenRecord>>> {
        let mut found = decode(self.0.get(&format!("h/{}", hash.to_hex())))?;
        Ok(found.pop().map(Arc::new))
    }
    async fn get(&self, id: &TokenId) -> Res<Option<TokenRecord>> {
        Ok(decode(self.0.get(&format!("i/{id}")))?.pop())
    }
    async fn list_by_owner(&self, owner: &str) -> Res<Vec<TokenRecord>> {
        let mut all = decode(self.0.scan(&owner_key(owner)))?;
        all.sort_by_key(|r| (r.created_at, r.id));
        Ok(all)
    }
    async fn revoke(&self, id: &TokenId, at: OffsetDateTime) -> Res<bool> {
        let Some(r) = self.get(id).await? else {
            return Ok(false);
        };
        self.change(&r.owner, None, |mine| {
            let r = mine.iter_mut().find(|r| r.id == *id);
            let r = r.filter(|r| r.extras().revoked_at.is_none());
            Ok(r.map(|r| r.extras_mut().revoked_at = Some(at)).is_some())
        })
    }
    async fn rotate(
        &self,
        old: &TokenId,
        new: TokenRecord,
        old_expires_at: OffsetDateTime,
        rules: InsertRules,
    ) -> Res<RotateOutcome> {
        let (now, end) = (rules.now, old_expires_at);
        let owner = self.get(old).await?.filter(|r| r.owner == new.owner);
        let owner = owner.ok_or(NotFound)?.owner;
        self.change(&owner, Some(&new), |mine| {
            let live = mine.iter().any(|r| r.id == *old && r.is_live_at(now));
            refuse(!live, NotFound)?;
            let mut ended = Vec::new();
            for r in mine.iter_mut() {
                if r.id == *old {
                    r.extras_mut().replaced_by = Some(new.id);
                    r.expires_at = Some(r.expires_at.map_or(end, |e| e.min(end)));
                } else if r.is_valid_at(now) && r.extras().replaced_by == Some(*old) {
                    r.expires_at = Some(now);
                    ended.push(r.id);
                }
            }
            let grows = end > now && ended.is_empty();
            refuse(grows && rules.at_limit(&*mine, &new.kind), LimitReached)?;
            Ok(RotateOutcome::new(ended))
        })
    }
    async fn record_use(&self, uses: &[(TokenId, OffsetDateTime)]) -> Res<()> {
        for (id, at) in uses {
            let Some(r) = self.get(id).await? else {
                continue;
            };
            self.change(&r.owner, None, |mine| {
                for r in mine.iter_mut().filter(|r| r.id == *id) {
                    r.last_used_at = r.last_used_at.max(Some(*at));
                }
                Ok(())
            })?;
        }
        Ok(())
    }
    async fn purge_expired(&self, now: OffsetDateTime) -> Res<u64> {
        let dead = |r: &TokenRecord| {
            r.extras().revoked_at.is_some_and(|t| t <= now)
                || r.expires_at.is_some_and(|t| t <= now)
        };
        let mut purged = 0;
        for r in decode(self.0.scan("o/"))?.iter().filter(|r| dead(r)) {
            purged += self.change(&r.owner, None, |mine| {
                let before = mine.len();
                mine.retain(|r| !dead(r));
                Ok((before - mine.len()) as u64)
            })?;
        }
        Ok(purged)
    }
}

/// Issues a token on a `KvStore` and verifies it.
#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tokens = Tokens::new(KvStore::default());
    let new = NewToken::new("alice@example.com", "ci");
    let issued = tokens.issue(new).await?;
    let identity = tokens.authenticate(issued.token.expose_secret()).await?;
    println!("verified a token of {}", identity.owner());
    Ok(())
}
