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

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(pairs: &[(&str, &str)]) -> Vec<String> {
        pairs
            .iter()
            .flat_map(|(k, v)| [(*k).to_owned(), (*v).to_owned()])
            .collect()
    }

    const HASH: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    /// A hash as the store has written it since the metadata field: every field set.
    #[test]
    fn decodes_a_stored_value_with_every_field() {
        let stored = flat(&[
            ("id", "7d3f1c2a-9b8e-4f6a-8c5d-1e2f3a4b5c6d"),
            ("hash", HASH),
            ("kind", "pat"),
            ("owner", "alice@example.com"),
            ("name", "deploy"),
            ("description", "ci deploys"),
            ("role", "deployer"),
            ("permissions", r#"["repo:read","repo:write"]"#),
            ("hint", "pat_AbCd1234"),
            ("created_by", "admin@example.com"),
            ("created_at", "1767225600000000"),
            ("expires_at", "1798761600000000"),
            ("last_used_at", "1767312000000000"),
            ("revoked_at", "1767398400000000"),
            ("replaced_by", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
            ("allowed_ips", r#"["10.0.0.0/8","2001:db8::/32"]"#),
            ("rate_limit", "120"),
            ("bound_to", "machine-42"),
            ("bound_at", "1767312000000000"),
            ("released_at", "1767315600000000"),
            ("metadata", r#"{"team":"payments"}"#),
            ("last_used_ip", "192.0.2.7"),
            ("last_used_agent", "curl/8.5.0"),
            ("expiry_warned_at", "1798156800000000"),
            ("seq", "17"),
        ]);
        let (r, seq) = decode(stored.clone()).expect("decodes");
        assert_eq!(seq, 17);
        assert_eq!(r.id.to_string(), "7d3f1c2a-9b8e-4f6a-8c5d-1e2f3a4b5c6d");
        assert_eq!(r.hash.to_hex(), HASH);
        assert_eq!(
            (r.kind.as_str(), r.owner.as_str(), r.name.as_str()),
            ("pat", "alice@example.com", "deploy")
        );
        assert_eq!(
            (r.hint.as_str(), r.created_by.as_str()),
            ("pat_AbCd1234", "admin@example.com")
        );
        assert!(r.permissions.allows("repo:write"));
        assert_eq!(r.created_at.unix_timestamp(), 1_767_225_600);
        assert_eq!(
            r.expires_at.map(|t| t.unix_timestamp()),
            Some(1_798_761_600)
        );
        assert_eq!(
            r.last_used_at.map(|t| t.unix_timestamp()),
            Some(1_767_312_000)
        );
        let x = r.extras();
        assert_eq!(x.description.as_deref(), Some("ci deploys"));
        assert_eq!(x.role.as_deref(), Some("deployer"));
        assert_eq!(
            x.revoked_at.map(|t| t.unix_timestamp()),
            Some(1_767_398_400)
        );
        assert_eq!(
            x.replaced_by.map(|id| id.to_string()).as_deref(),
            Some("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")
        );
        assert_eq!(x.allowed_ips.len(), 2);
        assert_eq!(x.rate_limit, Some(120));
        assert_eq!(x.bound_to.as_deref(), Some("machine-42"));
        assert_eq!(x.bound_at.map(|t| t.unix_timestamp()), Some(1_767_312_000));
        assert_eq!(
            x.released_at.map(|t| t.unix_timestamp()),
            Some(1_767_315_600)
        );
        assert_eq!(
            x.metadata.get("team").and_then(|v| v.as_str()),
            Some("payments")
        );
        assert_eq!(
            x.last_used_ip.map(|ip| ip.to_string()).as_deref(),
            Some("192.0.2.7")
        );
        assert_eq!(x.last_used_agent.as_deref(), Some("curl/8.5.0"));
        assert_eq!(
            x.expiry_warned_at.map(|t| t.unix_timestamp()),
            Some(1_798_156_800)
        );
        // Written back, the record gives the same fields.
        let mut again = fields(&r).expect("encodes");
        again.extend(["seq".to_owned(), "17".to_owned()]);
        let as_map = |f: Vec<String>| -> HashMap<String, String> {
            let mut it = f.into_iter();
            std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
        };
        assert_eq!(as_map(again), as_map(stored));
    }

    /// A value with only the fields every token has (absent options left out) decodes to a
    /// record with no extras.
    #[test]
    fn decodes_a_stored_value_without_options() {
        let stored = flat(&[
            ("id", "7d3f1c2a-9b8e-4f6a-8c5d-1e2f3a4b5c6d"),
            ("hash", HASH),
            ("kind", "pat"),
            ("owner", "alice"),
            ("name", "ci"),
            ("permissions", "[]"),
            ("hint", "pat_AbCd1234"),
            ("created_by", "alice"),
            ("created_at", "1767225600000000"),
            ("seq", "3"),
        ]);
        let (r, seq) = decode(stored).expect("decodes");
        assert_eq!(seq, 3);
        assert_eq!(r.owner, "alice");
        assert_eq!(r.expires_at, None);
        assert_eq!(r.extras(), &crate::record::TokenExtras::default());
        assert!(r.extras().metadata.is_empty());
    }
}
