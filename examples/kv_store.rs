//! A token store of one's own over a plain key-value table, the shape of DynamoDB: records
//! as JSON (feature `serde`), a key from digest (and id) to record, listing by key prefix,
//! and every change one conditional write. It implements the eight required methods of
//! `TokenStore` and passes `keygate::store::conformance::run_core`.
//!
//! ```sh
//! cargo run --example kv_store --features serde
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use keygate::store::{InsertRules, RotateOutcome, StoreError, TokenId, TokenRecord, TokenStore};
use keygate::{NewToken, TokenHash, Tokens};
use time::OffsetDateTime;

type Res<T> = Result<T, StoreError>;
/// A key and its new value (`None`: delete), or its expected value (`None`: absent).
type Item = (String, Option<Vec<u8>>);

/// The table (a `BTreeMap` standing in for DynamoDB): get, scan by key prefix, and a
/// conditional batch write (TransactWriteItems) that puts and deletes only if every
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
        after
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn commit(&self, expect: &[Item], writes: Vec<Item>) -> bool {
        let mut map = self.0.lock().expect("kv");
        let ok = expect.iter().all(|(k, v)| map.get(k) == v.as_ref());
        for (k, v) in writes.into_iter().filter(|_| ok) {
            let _ = if let Some(v) = v {
                map.insert(k, v)
            } else {
                map.remove(&k)
            };
        }
        ok
    }
}

/// Each record at `o/<owner>/<id>`, named by `i/<id>` and `h/<digest>`; per owner a
/// version at `vo/<owner>/`, replaced by every change to the owner's records.
#[derive(Default)]
pub struct KvStore(pub Kv);

/// The owner's prefix; its length keeps it off any other owner's.
fn owner_key(owner: &str) -> String {
    format!("o/{}:{owner}/", owner.len())
}
fn key(r: &TokenRecord) -> String {
    format!("{}{}", owner_key(&r.owner), r.id)
}
fn indexes(r: &TokenRecord) -> [String; 2] {
    [format!("i/{}", r.id), format!("h/{}", r.hash.to_hex())]
}
fn decode(values: Vec<Vec<u8>>) -> Res<Vec<TokenRecord>> {
    let each = values.iter().map(|v| serde_json::from_slice(v));
    each.collect::<Result<_, _>>().map_err(StoreError::backend)
}
fn dead(r: &TokenRecord, now: OffsetDateTime) -> bool {
    r.extras().revoked_at.is_some_and(|t| t <= now) || r.expires_at.is_some_and(|t| t <= now)
}

impl KvStore {
    fn at(&self, index: String) -> Res<Option<TokenRecord>> {
        let value = self
            .0
            .get(&index)
            .and_then(|k| self.0.get(&String::from_utf8_lossy(&k)));
        Ok(decode(value.into_iter().collect())?.pop())
    }

    /// Runs `f` on the owner's records, adds `new` (unless its id or digest is taken), and
    /// writes what changed in one conditional write, which holds only if no other change
    /// to the owner's records (nor a record with `new`'s id or digest) came in between:
    /// otherwise it runs again. `InsertRules` are checked in `f`, so they hold atomically.
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
            let mut writes = vec![(version.clone(), Some(TokenId::random().to_string().into()))];
            for (n, k) in new.into_iter().flat_map(|n| indexes(n).map(|k| (n, k))) {
                if self.0.get(&k).is_some() {
                    return Err(StoreError::Duplicate);
                }
                expect.push((k.clone(), None));
                writes.push((k, Some(key(n).into())));
            }
            mine.extend(new.cloned());
            for r in mine.iter().filter(|r| !before.contains(r)) {
                let json = serde_json::to_vec(r).map_err(StoreError::backend)?;
                writes.push((key(r), Some(json)));
            }
            for gone in before.iter().filter(|b| !mine.iter().any(|r| r.id == b.id)) {
                writes.extend(
                    indexes(gone)
                        .into_iter()
                        .chain([key(gone)])
                        .map(|k| (k, None)),
                );
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
        self.change(&record.owner.clone(), Some(&record), |mine| {
            if mine
                .iter()
                .any(|r| r.is_live_at(rules.now) && r.name == record.name)
            {
                return Err(StoreError::NameTaken);
            }
            match rules.at_limit(&*mine, &record.kind) {
                true => Err(StoreError::LimitReached),
                false => Ok(()),
            }
        })
    }
    async fn find_by_hash(&self, hash: &TokenHash) -> Res<Option<Arc<TokenRecord>>> {
        Ok(self.at(format!("h/{}", hash.to_hex()))?.map(Arc::new))
    }
    async fn get(&self, id: &TokenId) -> Res<Option<TokenRecord>> {
        self.at(format!("i/{id}"))
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
            let r = mine
                .iter_mut()
                .find(|r| r.id == *id && r.extras().revoked_at.is_none());
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
        let (now, max) = (rules.now, old_expires_at);
        let r = self.get(old).await?.filter(|r| r.owner == new.owner);
        self.change(&r.ok_or(StoreError::NotFound)?.owner, Some(&new), |mine| {
            if !mine.iter().any(|r| r.id == *old && r.is_live_at(now)) {
                return Err(StoreError::NotFound);
            }
            let grace = mine.iter_mut().filter(|r| r.is_valid_at(now));
            let mut ended = Vec::new();
            for r in grace.filter(|r| r.extras().replaced_by == Some(*old)) {
                r.expires_at = Some(now);
                ended.push(r.id);
            }
            if max > now && ended.is_empty() && rules.at_limit(&*mine, &new.kind) {
                return Err(StoreError::LimitReached);
            }
            for o in mine.iter_mut().filter(|r| r.id == *old) {
                o.extras_mut().replaced_by = Some(new.id);
                o.expires_at = Some(o.expires_at.map_or(max, |e| e.min(max)));
            }
            Ok(RotateOutcome::new(ended))
        })
    }
    async fn record_use(&self, uses: &[(TokenId, OffsetDateTime)]) -> Res<()> {
        for (id, at) in uses {
            let Some(r) = self.get(id).await? else {
                continue;
            };
            self.change(&r.owner, None, |mine| {
                let r = mine.iter_mut().find(|r| r.id == *id);
                let r = r.filter(|r| r.last_used_at.is_none_or(|t| t < *at));
                Ok(r.map(|r| r.last_used_at = Some(*at)))
            })?;
        }
        Ok(())
    }
    async fn purge_expired(&self, now: OffsetDateTime) -> Res<u64> {
        let mut purged = 0;
        for r in decode(self.0.scan("o/"))?.iter().filter(|r| dead(r, now)) {
            purged += self.change(&r.owner, None, |mine| {
                let before = mine.len();
                mine.retain(|r| !dead(r, now));
                Ok((before - mine.len()) as u64)
            })?;
        }
        Ok(purged)
    }
}

#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tokens = Tokens::new(KvStore::default());
    let issued = tokens
        .issue(NewToken::new("alice@example.com", "ci"))
        .await?;
    let identity = tokens.authenticate(issued.token.expose_secret()).await?;
    println!("verified a token of {}", identity.owner());
    Ok(())
}
