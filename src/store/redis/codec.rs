//! How the Redis store keeps a record: one hash of `field, value` strings per token, times
//! as microseconds since the Unix epoch, permissions and networks as JSON, absent options
//! (and an empty network list) left out.

use std::collections::HashMap;

use ipnet::IpNet;
use time::OffsetDateTime;

use crate::error::StoreError;
use crate::identity::Permissions;
use crate::record::{TokenId, TokenRecord};
use crate::store::codec::{self, Binder, Row};
use crate::token::TokenHash;

pub(super) fn invalid(what: &'static str) -> StoreError {
    StoreError::backend(std::io::Error::new(std::io::ErrorKind::InvalidData, what))
}

pub(super) fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000)).unwrap_or(i64::MAX)
}

pub(super) fn from_micros(s: &str) -> Result<OffsetDateTime, StoreError> {
    let us: i64 = s.parse().map_err(|_| invalid("bad timestamp in Redis"))?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .map_err(|_| invalid("timestamp out of range in Redis"))
}

/// A stored value that keygate never writes.
#[derive(Debug, thiserror::Error)]
#[error("bad {0} in Redis")]
struct Bad(&'static str);

fn bad(column: &'static str) -> StoreError {
    StoreError::backend(Bad(column))
}

/// A record's hash, read back as `field → value`.
struct Stored(HashMap<String, String>);

impl Stored {
    fn opt(&self, column: &'static str) -> Option<&str> {
        self.0.get(column).map(String::as_str)
    }

    fn req(&self, column: &'static str) -> Result<&str, StoreError> {
        self.opt(column)
            .ok_or_else(|| invalid("incomplete token record in Redis"))
    }
}

impl Row for Stored {
    fn id(&self, column: &'static str) -> Result<TokenId, StoreError> {
        self.req(column)?.parse().map_err(|_| bad(column))
    }

    fn opt_id(&self, column: &'static str) -> Result<Option<TokenId>, StoreError> {
        self.opt(column)
            .map(|s| s.parse().map_err(|_| bad(column)))
            .transpose()
    }

    fn hash(&self, column: &'static str) -> Result<TokenHash, StoreError> {
        TokenHash::from_hex(self.req(column)?).map_err(|_| bad(column))
    }

    fn text(&self, column: &'static str) -> Result<String, StoreError> {
        self.req(column).map(str::to_owned)
    }

    fn opt_text(&self, column: &'static str) -> Result<Option<String>, StoreError> {
        Ok(self.opt(column).map(str::to_owned))
    }

    fn time(&self, column: &'static str) -> Result<OffsetDateTime, StoreError> {
        from_micros(self.req(column)?)
    }

    fn opt_time(&self, column: &'static str) -> Result<Option<OffsetDateTime>, StoreError> {
        self.opt(column).map(from_micros).transpose()
    }

    fn permissions(&self, column: &'static str) -> Result<Permissions, StoreError> {
        serde_json::from_str(self.req(column)?).map_err(StoreError::backend)
    }

    fn networks(&self, column: &'static str) -> Result<Vec<IpNet>, StoreError> {
        self.opt(column)
            .map(|s| serde_json::from_str(s).map_err(|_| bad(column)))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    fn opt_u32(&self, column: &'static str) -> Result<Option<u32>, StoreError> {
        self.opt(column)
            .map(|s| s.parse().map_err(|_| bad(column)))
            .transpose()
    }
}

/// A record's `field, value` strings being written (absent options are left out).
struct Fields(Vec<String>);

impl Fields {
    fn push(mut self, column: &'static str, value: Option<String>) -> Result<Self, StoreError> {
        if let Some(value) = value {
            self.0.push(column.to_owned());
            self.0.push(value);
        }
        Ok(self)
    }
}

impl Binder for Fields {
    fn id(self, column: &'static str, v: TokenId) -> Result<Self, StoreError> {
        self.push(column, Some(v.to_string()))
    }

    fn opt_id(self, column: &'static str, v: Option<TokenId>) -> Result<Self, StoreError> {
        self.push(column, v.map(|id| id.to_string()))
    }

    fn hash(self, column: &'static str, v: &TokenHash) -> Result<Self, StoreError> {
        self.push(column, Some(v.to_hex()))
    }

    fn text(self, column: &'static str, v: &str) -> Result<Self, StoreError> {
        self.push(column, Some(v.to_owned()))
    }

    fn opt_text(self, column: &'static str, v: Option<&str>) -> Result<Self, StoreError> {
        self.push(column, v.map(str::to_owned))
    }

    fn time(self, column: &'static str, v: OffsetDateTime) -> Result<Self, StoreError> {
        self.push(column, Some(micros(v).to_string()))
    }

    fn opt_time(self, column: &'static str, v: Option<OffsetDateTime>) -> Result<Self, StoreError> {
        self.push(column, v.map(|t| micros(t).to_string()))
    }

    fn permissions(self, column: &'static str, v: &Permissions) -> Result<Self, StoreError> {
        let json = serde_json::to_string(v).map_err(StoreError::backend)?;
        self.push(column, Some(json))
    }

    fn networks(self, column: &'static str, v: &[IpNet]) -> Result<Self, StoreError> {
        let json = if v.is_empty() {
            None
        } else {
            Some(serde_json::to_string(v).map_err(StoreError::backend)?)
        };
        self.push(column, json)
    }

    fn opt_u32(self, column: &'static str, v: Option<u32>) -> Result<Self, StoreError> {
        self.push(column, v.map(|n| n.to_string()))
    }
}

/// The record's fields as `field, value` strings (absent options are left out).
pub(super) fn fields(r: &TokenRecord) -> Result<Vec<String>, StoreError> {
    codec::bind_record(Fields(Vec::with_capacity(40)), r).map(|f| f.0)
}

/// A record and its insertion number, from a flat `field, value` list.
pub(super) fn decode(flat: Vec<String>) -> Result<(TokenRecord, i64), StoreError> {
    let mut m: HashMap<String, String> = HashMap::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        m.insert(k, v);
    }
    let seq = m.remove("seq").and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((codec::decode(&Stored(m))?, seq))
}

/// What an edit in place does to a record's hash: the fields to delete and the
/// `field, value` pairs to set.
pub(super) fn update_fields(
    u: &crate::store::TokenUpdate,
) -> Result<(Vec<&'static str>, Vec<String>), StoreError> {
    let mut del = Vec::new();
    let mut set = Vec::new();
    let mut put = |field: &'static str, value: Option<String>| match value {
        Some(v) => {
            set.push(field.to_owned());
            set.push(v);
        }
        None => del.push(field),
    };
    if let Some(n) = &u.name {
        put("name", Some(n.clone()));
    }
    if let Some(d) = &u.description {
        put("description", d.clone());
    }
    if let Some(e) = u.expires_at {
        put("expires_at", e.map(|t| micros(t).to_string()));
    }
    if let Some(nets) = &u.allowed_ips {
        let json = if nets.is_empty() {
            None
        } else {
            Some(serde_json::to_string(nets).map_err(StoreError::backend)?)
        };
        put("allowed_ips", json);
    }
    if let Some(m) = &u.metadata {
        put("metadata", Some(m.to_json()));
    }
    if let Some(p) = &u.permissions {
        put(
            "permissions",
            Some(serde_json::to_string(p).map_err(StoreError::backend)?),
        );
    }
    Ok((del, set))
}
