//! A `TokenStore` of one's own over a key-value table (`cargo run --example kv_store`): each
//! record as JSON (feature `serde`) under its owner's prefix, copied under its id and digest;
//! each change reads the owner's records, applies `keygate::store::rules` and writes what
//! changed at once (a mutex here; in DynamoDB a `TransactWriteItems` on the owner's version).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use keygate::store::{InsertRules, RotateOutcome, StoreError, TokenId, TokenRecord, TokenStore};
use keygate::{NewToken, TokenHash, Tokens, store::rules};
use time::OffsetDateTime;

type Res<T> = Result<T, StoreError>;
type Table = BTreeMap<String, Vec<u8>>;

/// The store: one table.
#[derive(Default)]
pub struct KvStore(Mutex<Table>);

/// The owner's key prefix (its length keeps it off any other owner's).
fn owner_key(owner: &str) -> String {
    format!("o/{}:{owner}/", owner.len())
}

/// A record's keys: under its owner, by id, by digest.
fn keys(r: &TokenRecord) -> [String; 3] {
    let (o, id, h) = (owner_key(&r.owner), r.id, r.hash.to_hex());
    [format!("{o}{id}"), format!("i/{id}"), format!("h/{h}")]
}

fn decode(value: &[u8]) -> Res<TokenRecord> {
    serde_json::from_slice(value).map_err(StoreError::backend)
}

fn read(table: &Table, key: &str) -> Res<Option<TokenRecord>> {
    table.get(key).map(|v| decode(v)).transpose()
}

fn scan(table: &Table, prefix: &str) -> Res<Vec<TokenRecord>> {
    let from = table.range(prefix.to_owned()..);
    let hits = from.take_while(|(k, _)| k.starts_with(prefix));
    hits.map(|(_, v)| decode(v)).collect()
}

impl KvStore {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One change to `owner`'s records: `f` edits them, `new` (not yet stored, else
    /// [`StoreError::Duplicate`]) joins them, and what changed is written.
    fn change<T>(
        &self,
        owner: &str,
        new: Option<&TokenRecord>,
        f: impl FnOnce(&mut Vec<TokenRecord>) -> Res<T>,
    ) -> Res<T> {
        let mut table = self.table();
        if new.is_some_and(|n| keys(n)[1..].iter().any(|k| table.contains_key(k))) {
            return Err(StoreError::Duplicate);
        }
        let before = scan(&table, &owner_key(owner))?;
        let mut mine = before.clone();
        let out = f(&mut mine)?;
        mine.extend(new.cloned());
        for gone in before.iter().filter(|b| !mine.iter().any(|r| r.id == b.id)) {
            keys(gone).iter().for_each(|k| drop(table.remove(k)));
        }
        for r in mine.iter().filter(|r| !before.contains(r)) {
            let json = serde_json::to_vec(r).map_err(StoreError::backend)?;
            table.extend(keys(r).map(|k| (k, json.clone())));
        }
        Ok(out)
    }

    fn owner_of(&self, id: &TokenId) -> Res<Option<String>> {
        Ok(read(&self.table(), &format!("i/{id}"))?.map(|r| r.owner.to_string()))
    }
}

#[async_trait]
impl TokenStore for KvStore {
    async fn insert(&self, record: TokenRecord, rules: InsertRules) -> Res<()> {
        self.change(&record.owner, Some(&record), |mine| {
            rules.check(mine, &record)
        })
    }
    async fn find_by_hash(&self, hash: &TokenHash) -> Res<Option<Arc<TokenRecord>>> {
        Ok(read(&self.table(), &format!("h/{}", hash.to_hex()))?.map(Arc::new))
    }
    async fn get(&self, id: &TokenId) -> Res<Option<TokenRecord>> {
        read(&self.table(), &format!("i/{id}"))
    }
    async fn list_by_owner(&self, owner: &str) -> Res<Vec<TokenRecord>> {
        let mut all = scan(&self.table(), &owner_key(owner))?;
        all.sort_by_key(|r| (r.created_at, r.id));
        Ok(all)
    }
    async fn revoke(&self, id: &TokenId, at: OffsetDateTime) -> Res<bool> {
        let Some(owner) = self.owner_of(id)? else {
            return Ok(false);
        };
        self.change(&owner, None, |mine| Ok(rules::revoke(mine, id, at)))
    }
    async fn rotate(
        &self,
        old: &TokenId,
        new: TokenRecord,
        ends: OffsetDateTime,
        rules: InsertRules,
    ) -> Res<RotateOutcome> {
        let owner = self.owner_of(old)?.filter(|o| *o == *new.owner);
        let owner = owner.ok_or(StoreError::NotFound)?;
        self.change(&owner, Some(&new), |m| {
            rules::rotate(m, old, &new, ends, rules)
        })
    }
    async fn record_use(&self, uses: &[(TokenId, OffsetDateTime)]) -> Res<()> {
        for (id, at) in uses {
            if let Some(owner) = self.owner_of(id)? {
                self.change(&owner, None, |mine| Ok(rules::record_use(mine, id, *at)))?;
            }
        }
        Ok(())
    }
    async fn purge_expired(&self, now: OffsetDateTime) -> Res<u64> {
        let all = scan(&self.table(), "o/")?;
        let ended = all.iter().filter(|r| rules::ended(r, now));
        let owners: BTreeSet<&str> = ended.map(|r| &*r.owner).collect();
        let mut purged = 0;
        for owner in owners {
            purged += self.change(owner, None, |mine| Ok(rules::purge(mine, now)))?;
        }
        Ok(purged)
    }
}

/// Issues a token on a `KvStore` and verifies it.
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
