//! `Serialize` and `Deserialize` for [`TokenRecord`] and [`TokenExtras`] (feature `serde`),
//! for stores that keep a record as one document.
//!
//! The format is described on the `Serialize` implementation of [`TokenRecord`].

use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::serde::rfc3339;

use super::{MAX_USER_AGENT, Metadata, SharedStr, ShortStr, TokenExtras, TokenId, TokenRecord};
use crate::permissions::Permissions;
use crate::token::TokenHash;

/// The longest [`hint`](TokenRecord::hint) a record may have, in characters: the hint of a
/// token keygate issues is its first 12 characters; an imported token without one gets its
/// kind's prefix (at most 16 characters), `_` and `…`.
pub const MAX_HINT_CHARS: usize = 18;

/// The fields of a [`TokenRecord`], written and read by serde's derive (the record's
/// `extras` is private: this mirror, in a child module, may name it).
#[derive(Serialize, Deserialize)]
#[serde(remote = "TokenRecord")]
struct RecordDef {
    id: TokenId,
    hash: TokenHash,
    kind: SharedStr,
    owner: SharedStr,
    created_by: SharedStr,
    name: ShortStr,
    hint: ShortStr,
    permissions: Permissions,
    #[serde(with = "rfc3339")]
    created_at: OffsetDateTime,
    #[serde(
        with = "rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    expires_at: Option<OffsetDateTime>,
    #[serde(
        with = "rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    last_used_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    extras: Option<Box<TokenExtras>>,
}

/// The fields of a [`TokenExtras`], each left out when unset.
#[derive(Serialize, Deserialize)]
#[serde(remote = "TokenExtras")]
struct ExtrasDef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(
        with = "rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    revoked_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replaced_by: Option<TokenId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    allowed_ips: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bound_to: Option<String>,
    #[serde(
        with = "rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    bound_at: Option<OffsetDateTime>,
    #[serde(
        with = "rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    released_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    metadata: Metadata,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_used_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_used_agent: Option<String>,
    #[serde(
        with = "rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    expiry_warned_at: Option<OffsetDateTime>,
}

/// A record as one document (feature `serde`), for self-describing formats (JSON, CBOR, a
/// document database's attribute map).
///
/// The record is an object of its fields under their names; the fields most tokens leave
/// unset ([`TokenExtras`]) are an `extras` object within it, left out when every one is
/// unset, and each unset one is left out of it. The digest is 64 hex digits (it is not a
/// secret, and stays out of `Debug`), times are RFC 3339 text, ids hyphenated UUIDs,
/// permissions a list of strings, networks and addresses their usual text. When read,
/// missing optional fields are unset and unknown fields are ignored (a document written by
/// a later version still reads), and a value keygate never writes is an error of the
/// deserializer, never a panic: a digest of another length, a hint longer than
/// [`MAX_HINT_CHARS`], metadata over its limits, an invalid permission, a rate of zero, a
/// `User-Agent` longer than [`MAX_USER_AGENT`] bytes.
///
/// Writing fails for a time RFC 3339 cannot write (before the year 0 or after 9999).
impl Serialize for TokenRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RecordDef::serialize(self, s)
    }
}

/// A record from one document, validated: a digest of another length, a hint longer than
/// [`MAX_HINT_CHARS`], metadata over its limits and the other invalid values of
/// [`TokenExtras`] are errors.
impl<'de> Deserialize<'de> for TokenRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut record = RecordDef::deserialize(d)?;
        if record.hint.chars().count() > MAX_HINT_CHARS {
            return Err(D::Error::custom(format_args!(
                "a token hint must be at most {MAX_HINT_CHARS} characters"
            )));
        }
        record.compact();
        Ok(record)
    }
}

/// The fields most tokens leave unset, each left out when unset.
impl Serialize for TokenExtras {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ExtrasDef::serialize(self, s)
    }
}

/// The fields most tokens leave unset, validated: a rate of zero and a `User-Agent` longer
/// than [`MAX_USER_AGENT`] bytes are errors (metadata and permissions validate themselves).
impl<'de> Deserialize<'de> for TokenExtras {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let extras = ExtrasDef::deserialize(d)?;
        if extras.rate_limit == Some(0) {
            return Err(D::Error::custom("a token's rate limit must be at least 1"));
        }
        if extras
            .last_used_agent
            .as_ref()
            .is_some_and(|a| a.len() > MAX_USER_AGENT)
        {
            return Err(D::Error::custom(format_args!(
                "a last used User-Agent must be at most {MAX_USER_AGENT} bytes"
            )));
        }
        Ok(extras)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use time::macros::datetime;

    use super::*;

    /// A record with every field set, times with nanoseconds and an offset.
    fn full() -> TokenRecord {
        let t = datetime!(2026-03-04 05:06:07.123_456_789 +02:00);
        TokenRecord::builder(
            TokenId::random(),
            TokenHash::of("pat_example"),
            "pat",
            "alice@example.test",
            "ci «deploy» ✓",
            t,
        )
        .hint("pat_AbCdEfGh")
        .created_by("admin")
        .permissions(Permissions::parse(["things:read", "tokens:*"]).expect("valid"))
        .expires_at(t + time::Duration::days(30))
        .last_used_at(t + time::Duration::hours(1))
        .description("deploys")
        .role("viewer")
        .revoked_at(t + time::Duration::days(2))
        .replaced_by(TokenId::random())
        .allowed_ips(vec![
            "10.0.0.0/8".parse().expect("valid"),
            "2001:db8::/32".parse().expect("valid"),
        ])
        .rate_limit(42)
        .bound_to("machine-7")
        .bound_at(t + time::Duration::minutes(1))
        .released_at(t - time::Duration::days(1))
        .metadata(
            Metadata::from_json(r#"{"team": "payments", "n": [1, {"x": null}]}"#).expect("valid"),
        )
        .last_used_ip("2001:db8::7".parse::<IpAddr>().expect("valid"))
        .last_used_agent("curl/8.0")
        .expiry_warned_at(t + time::Duration::days(29))
        .build()
    }

    #[test]
    fn a_record_with_every_field_set_round_trips_through_json() {
        let record = full();
        let json = serde_json::to_value(&record).expect("serialize");
        let extras = json["extras"]
            .as_object()
            .expect("the extras are an object");
        assert_eq!(
            extras.len(),
            13,
            "every optional field is written: {extras:?}"
        );
        assert_eq!(
            json["hash"],
            json!(record.hash.to_hex()),
            "the digest is hex"
        );
        assert_eq!(
            json["created_at"],
            json!("2026-03-04T05:06:07.123456789+02:00")
        );
        let back: TokenRecord = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, record);
        assert_eq!(back.hash, record.hash);
        let text = serde_json::to_string(&record).expect("serialize");
        assert_eq!(
            serde_json::from_str::<TokenRecord>(&text).expect("read"),
            record
        );
    }

    #[test]
    fn a_bare_record_writes_no_extras_and_reads_back_compact() {
        let t = datetime!(2026-01-01 00:00 UTC);
        let record = TokenRecord::new(TokenId::random(), TokenHash::of("x"), "pat", "bob", "a", t);
        let json = serde_json::to_value(&record).expect("serialize");
        let keys: Vec<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert!(
            !keys.contains(&"extras") && !keys.contains(&"expires_at"),
            "{keys:?}"
        );
        // An `extras` object that sets nothing reads as no extras at all.
        let mut with_empty = json.clone();
        with_empty["extras"] = json!({"metadata": {}, "allowed_ips": []});
        let back: TokenRecord = serde_json::from_value(with_empty).expect("deserialize");
        assert_eq!(back, record);
        assert!(back.extras.is_none(), "an empty extras object is not kept");
        // Unknown fields (a later version's) are ignored.
        let mut later = json;
        later["colour"] = json!("blue");
        later["extras"] = json!({"role": "admin", "shade": 3});
        let back: TokenRecord = serde_json::from_value(later).expect("deserialize");
        assert_eq!(back.extras().role.as_deref(), Some("admin"));
    }

    #[test]
    fn the_digest_stays_out_of_debug() {
        let record = full();
        let debug = format!("{record:?}");
        assert!(!debug.contains(&record.hash.to_hex()), "{debug}");
        assert!(!debug.contains(&record.hash.to_hex()[..16]), "{debug}");
    }

    /// `full()` as JSON with `edit` applied, read back.
    fn read_edited(edit: impl FnOnce(&mut Value)) -> Result<TokenRecord, String> {
        let mut json = serde_json::to_value(full()).expect("serialize");
        edit(&mut json);
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    #[test]
    fn hostile_documents_are_errors_not_panics() {
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(&str, Edit, &str)> = vec![
            (
                "short digest",
                Box::new(|j| j["hash"] = json!("abcd")),
                "64 hex digits",
            ),
            (
                "long digest",
                Box::new(|j| j["hash"] = json!("a".repeat(66))),
                "64 hex digits",
            ),
            (
                "non-hex digest",
                Box::new(|j| j["hash"] = json!("g".repeat(64))),
                "64 hex digits",
            ),
            (
                "digest as bytes",
                Box::new(|j| j["hash"] = json!([1, 2, 3])),
                "invalid type",
            ),
            (
                "long hint",
                Box::new(|j| j["hint"] = json!("x".repeat(19))),
                "hint",
            ),
            (
                "large metadata",
                Box::new(|j| j["extras"]["metadata"] = json!({"k": "x".repeat(2000)})),
                "1024 bytes",
            ),
            (
                "deep metadata",
                Box::new(|j| j["extras"]["metadata"] = json!({"a": [[[[[[[[1]]]]]]]]})),
                "levels deep",
            ),
            (
                "array metadata",
                Box::new(|j| j["extras"]["metadata"] = json!([1])),
                "object",
            ),
            (
                "rate of zero",
                Box::new(|j| j["extras"]["rate_limit"] = json!(0)),
                "at least 1",
            ),
            (
                "negative rate",
                Box::new(|j| j["extras"]["rate_limit"] = json!(-1)),
                "invalid value",
            ),
            (
                "long agent",
                Box::new(|j| j["extras"]["last_used_agent"] = json!("a".repeat(257))),
                "256 bytes",
            ),
            (
                "bad permission",
                Box::new(|j| j["permissions"] = json!(["a b"])),
                "permission",
            ),
            (
                "bad time",
                Box::new(|j| j["created_at"] = json!("yesterday")),
                "year",
            ),
            ("bad id", Box::new(|j| j["id"] = json!(7)), "invalid type"),
            (
                "bad network",
                Box::new(|j| j["extras"]["allowed_ips"] = json!(["10.0.0.0/99"])),
                "IP address",
            ),
            (
                "missing owner",
                Box::new(|j| drop(j.as_object_mut().map(|o| o.remove("owner")))),
                "owner",
            ),
        ];
        for (what, edit, says) in cases {
            let err = read_edited(edit).expect_err(what);
            assert!(err.contains(says), "{what}: {err}");
        }
        // The untouched document reads, so each refusal above is the edit's.
        read_edited(|_| {}).expect("the full record reads");
        let long_ok =
            read_edited(|j| j["hint"] = json!("abcdefghijklmnop_…")).expect("18 characters");
        assert_eq!(long_ok.hint.chars().count(), MAX_HINT_CHARS);
    }
}
