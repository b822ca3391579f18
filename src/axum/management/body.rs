//! Request bodies and queries: JSON or forms, read within the body limit, each field
//! checked on its own so that an error names it.

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::types::{CreateToken, CreateTokenForm, RotateToken, RotateTokenForm};
use crate::record::{Metadata, MetadataError};

/// Refuses a body announced as too large before any password check, then reads at most
/// `limit` bytes.
pub(super) fn check_length(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match announced {
        Some(n) if n > limit as u64 => Err(ApiError::payload_too_large(limit)),
        _ => Ok(()),
    }
}

pub(super) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::payload_too_large(limit))
        }
        Err(_) => Err(ApiError::bad_request("Could not read the request body")),
    }
}

enum BodyFormat {
    Empty,
    Json,
    Form,
}

fn body_format(headers: &HeaderMap, body: &[u8]) -> Result<BodyFormat, ApiError> {
    let essence = headers.get(header::CONTENT_TYPE).map(|v| {
        v.to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    if body.is_empty() {
        return Ok(BodyFormat::Empty);
    }
    match essence.as_deref() {
        Some("application/json") => Ok(BodyFormat::Json),
        Some(t) if t.starts_with("application/") && t.ends_with("+json") => Ok(BodyFormat::Json),
        Some("application/x-www-form-urlencoded") => Ok(BodyFormat::Form),
        _ => Err(ApiError::unsupported_media_type()),
    }
}

/// A JSON object with only the `known` fields; each field is then read on its own, so that
/// an error names the field.
pub(super) fn json_object(
    body: &[u8],
    known: &[&str],
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(ApiError::bad_request(
            "Invalid JSON body: expected an object",
        ));
    };
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "Unknown field {unknown:?}; expected one of: {}",
            known.join(", ")
        )));
    }
    Ok(map)
}

fn json_field<T: DeserializeOwned>(
    map: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<T>, ApiError> {
    match map.remove(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(integral(v))
            .map(Some)
            .map_err(|e| ApiError::bad_request(format!("Invalid {key}: {e}"))),
    }
}

/// A number written with a fraction of zero (`60.0`) as the integer it is: JSON (and JSON
/// Schema's `integer`) does not tell `60.0` from `60`, and neither do the integer fields.
fn integral(v: serde_json::Value) -> serde_json::Value {
    match &v {
        serde_json::Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            // Within ±2^53 every integer is exact; beyond, the fields' own ranges refuse it.
            #[allow(clippy::cast_possible_truncation)]
            Some(f) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 => {
                serde_json::Value::from(f as i64)
            }
            _ => v,
        },
        _ => v,
    }
}

fn parse_form<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid form body: {e}")))
}

fn parse_seconds(field: &str, v: &str) -> Result<i64, ApiError> {
    v.trim().parse::<i64>().map_err(|_| {
        ApiError::bad_request(format!(
            "Invalid {field}: must be a whole number of seconds"
        ))
    })
}

pub(super) fn parse_create(headers: &HeaderMap, body: &[u8]) -> Result<CreateToken, ApiError> {
    match body_format(headers, body)? {
        BodyFormat::Empty => Ok(CreateToken::default()),
        BodyFormat::Json => {
            let mut m = json_object(
                body,
                &[
                    "name",
                    "description",
                    "role",
                    "permissions",
                    "expires_in",
                    "allowed_ips",
                    "rate_limit",
                    "metadata",
                ],
            )?;
            Ok(CreateToken {
                name: json_field(&mut m, "name")?,
                description: json_field(&mut m, "description")?,
                role: json_field(&mut m, "role")?,
                permissions: json_field(&mut m, "permissions")?,
                expires_in: json_field(&mut m, "expires_in")?,
                allowed_ips: json_field(&mut m, "allowed_ips")?,
                rate_limit: json_field(&mut m, "rate_limit")?,
                metadata: match m.remove("metadata") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(v) => Some(Metadata::from_value(v).map_err(metadata_error)?),
                },
            })
        }
        BodyFormat::Form => {
            let f: CreateTokenForm = parse_form(body)?;
            Ok(CreateToken {
                name: f.name,
                description: f.description,
                role: f.role,
                permissions: f.permissions.map(|p| {
                    p.split([',', ' '])
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                }),
                expires_in: f
                    .expires_in
                    .as_deref()
                    .map(|v| parse_seconds("expires_in", v))
                    .transpose()?,
                allowed_ips: f.allowed_ips.map(|p| {
                    p.split([',', ' '])
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                }),
                rate_limit: f
                    .rate_limit
                    .as_deref()
                    .map(|v| {
                        v.trim().parse::<u32>().map_err(|_| {
                            ApiError::bad_request(
                                "Invalid rate_limit: must be a whole number of requests per minute",
                            )
                        })
                    })
                    .transpose()?,
                // JSON text; an empty field (a form's blank input) is none.
                metadata: match f.metadata.as_deref().map(str::trim) {
                    None | Some("") => None,
                    Some(text) => Some(Metadata::from_json(text).map_err(metadata_error)?),
                },
            })
        }
    }
}

/// 400 naming the metadata rule broken.
pub(super) fn metadata_error(e: MetadataError) -> ApiError {
    let rule = e.to_string();
    ApiError::bad_request(format!(
        "Invalid metadata: {}",
        rule.strip_prefix("metadata ").unwrap_or(&rule)
    ))
}

/// CIDR strings (or single addresses) to networks; 400 naming the first bad one.
pub(super) fn parse_nets(list: &[String]) -> Result<Vec<ipnet::IpNet>, ApiError> {
    list.iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "Invalid allowed_ips: {s:?} is not an IP network in CIDR notation \
                         (e.g. 10.0.0.0/8 or 2001:db8::/32)"
                    ))
                })
        })
        .collect()
}

pub(super) fn parse_rotate(headers: &HeaderMap, body: &[u8]) -> Result<RotateToken, ApiError> {
    match body_format(headers, body)? {
        BodyFormat::Empty => Ok(RotateToken::default()),
        BodyFormat::Json => {
            let mut m = json_object(body, &["grace_seconds"])?;
            Ok(RotateToken {
                grace_seconds: json_field(&mut m, "grace_seconds")?,
            })
        }
        BodyFormat::Form => {
            let f: RotateTokenForm = parse_form(body)?;
            Ok(RotateToken {
                grace_seconds: f
                    .grace_seconds
                    .as_deref()
                    .map(|v| parse_seconds("grace_seconds", v))
                    .transpose()?,
            })
        }
    }
}

/// `successors=revoke` (the default) or `successors=keep`; 400 for anything else.
pub(super) fn keep_successors(query: Option<&str>) -> Result<bool, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("Invalid query: {e}")))?;
    let mut keep = false;
    for (key, value) in &pairs {
        match (key.as_str(), value.as_str()) {
            ("successors", "keep") => keep = true,
            ("successors", "revoke") => keep = false,
            ("successors", _) => {
                return Err(ApiError::bad_request(
                    "Invalid successors: must be revoke or keep",
                ));
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Unknown query parameter {key:?}; expected: successors"
                )));
            }
        }
    }
    Ok(keep)
}
