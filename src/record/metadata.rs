//! A token's metadata: the owner's own JSON object, validated.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A token's metadata: a JSON object of at most [`MAX_BYTES`](Self::MAX_BYTES) bytes
/// (serialized compactly), nested at most [`MAX_DEPTH`](Self::MAX_DEPTH) levels deep.
/// The default is the empty object.
///
/// ```
/// use keygate::record::Metadata;
///
/// let m = Metadata::from_json(r#"{"team": "payments", "ticket": 42}"#).unwrap();
/// assert_eq!(m.get("team").and_then(|v| v.as_str()), Some("payments"));
/// assert!(Metadata::from_json("[1, 2]").is_err());
/// assert!(Metadata::from_json(&format!(r#"{{"k": "{}"}}"#, "x".repeat(2000))).is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Metadata(serde_json::Map<String, serde_json::Value>);

/// Why a value is not valid [`Metadata`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// Not JSON, or JSON but not an object.
    #[error("metadata must be a JSON object")]
    NotAnObject,
    /// Larger than [`Metadata::MAX_BYTES`] once serialized.
    #[error("metadata must be at most {} bytes of JSON", Metadata::MAX_BYTES)]
    TooLarge,
    /// Nested deeper than [`Metadata::MAX_DEPTH`].
    #[error("metadata must be nested at most {} levels deep", Metadata::MAX_DEPTH)]
    TooDeep,
}

impl Metadata {
    /// The largest metadata, in bytes of compact JSON.
    pub const MAX_BYTES: usize = 1024;
    /// The deepest nesting of objects and arrays (the top-level object is level 1).
    pub const MAX_DEPTH: usize = 8;

    /// The empty object.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates a JSON value: an object within the size and depth limits.
    ///
    /// # Errors
    ///
    /// [`MetadataError`] naming the rule broken.
    pub fn from_value(value: serde_json::Value) -> Result<Self, MetadataError> {
        let serde_json::Value::Object(map) = value else {
            return Err(MetadataError::NotAnObject);
        };
        Self::from_map(map)
    }

    /// Validates an object.
    ///
    /// # Errors
    ///
    /// [`MetadataError`] naming the rule broken.
    pub fn from_map(
        map: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, MetadataError> {
        fn depth(v: &serde_json::Value) -> usize {
            match v {
                serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
                serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
                _ => 0,
            }
        }
        let m = Self(map);
        if m.to_json().len() > Self::MAX_BYTES {
            return Err(MetadataError::TooLarge);
        }
        if m.0.values().map(depth).max().unwrap_or(0) + 1 > Self::MAX_DEPTH {
            return Err(MetadataError::TooDeep);
        }
        Ok(m)
    }

    /// Parses and validates JSON text. Text longer than a few times the limit is refused
    /// before it is parsed.
    ///
    /// # Errors
    ///
    /// [`MetadataError`] naming the rule broken.
    pub fn from_json(text: &str) -> Result<Self, MetadataError> {
        if text.len() > 4 * Self::MAX_BYTES {
            return Err(MetadataError::TooLarge);
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| MetadataError::NotAnObject)?;
        Self::from_value(value)
    }

    /// Compact JSON text (`{}` when empty).
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_owned())
    }

    /// The object.
    #[must_use]
    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }

    /// The value under `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.get(key)
    }

    /// True for the empty object.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metadata({})", self.to_json())
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Self::from_value(value).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<serde_json::Value> for Metadata {
    type Error = MetadataError;
    fn try_from(value: serde_json::Value) -> Result<Self, Self::Error> {
        Self::from_value(value)
    }
}
