//! How the Redis store keeps a record: one hash of `field, value` strings per token, times
//! as microseconds since the Unix epoch, absent options left out.

use std::collections::HashMap;

use time::OffsetDateTime;

use crate::error::StoreError;
use crate::identity::Permissions;
use crate::record::{TokenId, TokenRecord};
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

/// The record's fields as `field, value` strings (absent options are left out).
pub(super) fn fields(r: &TokenRecord) -> Result<Vec<String>, StoreError> {
    let mut v = vec![
        "id".to_owned(),
        r.id.to_string(),
        "hash".to_owned(),
        r.hash.to_hex(),
        "kind".to_owned(),
        r.kind.clone(),
        "owner".to_owned(),
        r.owner.clone(),
        "name".to_owned(),
        r.name.clone(),
        "permissions".to_owned(),
        serde_json::to_string(&r.permissions).map_err(StoreError::backend)?,
        "hint".to_owned(),
        r.hint.clone(),
        "created_by".to_owned(),
        r.created_by.clone(),
        "created_at".to_owned(),
        micros(r.created_at).to_string(),
    ];
    let mut opt = |k: &str, val: Option<String>| {
        if let Some(val) = val {
            v.push(k.to_owned());
            v.push(val);
        }
    };
    opt("description", r.description.clone());
    opt("role", r.role.clone());
    opt("expires_at", r.expires_at.map(|t| micros(t).to_string()));
    opt(
        "last_used_at",
        r.last_used_at.map(|t| micros(t).to_string()),
    );
    opt("revoked_at", r.revoked_at.map(|t| micros(t).to_string()));
    opt("replaced_by", r.replaced_by.map(|t| t.to_string()));
    opt(
        "allowed_ips",
        if r.allowed_ips.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&r.allowed_ips).map_err(StoreError::backend)?)
        },
    );
    opt("rate_limit", r.rate_limit.map(|n| n.to_string()));
    opt("bound_to", r.bound_to.clone());
    opt("bound_at", r.bound_at.map(|t| micros(t).to_string()));
    opt("released_at", r.released_at.map(|t| micros(t).to_string()));
    Ok(v)
}

/// A record and its insertion number, from a flat `field, value` list.
pub(super) fn decode(flat: Vec<String>) -> Result<(TokenRecord, i64), StoreError> {
    let mut m: HashMap<String, String> = HashMap::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        m.insert(k, v);
    }
    let mut take = |k: &'static str| m.remove(k);
    let req = |v: Option<String>| v.ok_or_else(|| invalid("incomplete token record in Redis"));
    let id: TokenId = req(take("id"))?
        .parse()
        .map_err(|_| invalid("bad id in Redis"))?;
    let seq = take("seq").and_then(|s| s.parse().ok()).unwrap_or(0);
    let record = TokenRecord {
        id,
        hash: TokenHash::from_hex(&req(take("hash"))?).map_err(|_| invalid("bad hash in Redis"))?,
        kind: req(take("kind"))?,
        owner: req(take("owner"))?,
        name: req(take("name"))?,
        description: take("description"),
        role: take("role"),
        permissions: serde_json::from_str::<Permissions>(&req(take("permissions"))?)
            .map_err(StoreError::backend)?,
        hint: req(take("hint"))?,
        created_by: req(take("created_by"))?,
        created_at: from_micros(&req(take("created_at"))?)?,
        expires_at: take("expires_at").as_deref().map(from_micros).transpose()?,
        last_used_at: take("last_used_at")
            .as_deref()
            .map(from_micros)
            .transpose()?,
        revoked_at: take("revoked_at").as_deref().map(from_micros).transpose()?,
        replaced_by: take("replaced_by")
            .map(|s| s.parse().map_err(|_| invalid("bad replaced_by in Redis")))
            .transpose()?,
        allowed_ips: take("allowed_ips")
            .map(|s| serde_json::from_str(&s).map_err(|_| invalid("bad allowed_ips in Redis")))
            .transpose()?
            .unwrap_or_default(),
        rate_limit: take("rate_limit")
            .map(|s| s.parse().map_err(|_| invalid("bad rate_limit in Redis")))
            .transpose()?,
        bound_to: take("bound_to"),
        bound_at: take("bound_at").as_deref().map(from_micros).transpose()?,
        released_at: take("released_at")
            .as_deref()
            .map(from_micros)
            .transpose()?,
    };
    Ok((record, seq))
}
