//! The two string types of a [`TokenRecord`](super::TokenRecord): [`SharedStr`] for the
//! values many records repeat (kind, owner, creator), [`ShortStr`] for the short values
//! each record has its own (name, hint).
//!
//! Both read as `&str` (they deref to it), compare with `&str`, `String` and each other,
//! display and (de)serialize as plain strings, and convert from `String` and `&str`, so
//! code written against `String` fields mostly keeps compiling.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An immutable string whose clones share one allocation, held by a one-word pointer.
///
/// A store keeps one `SharedStr` per distinct kind and owner, and gives it to every record
/// that names that kind or owner ([`MemoryStore`](crate::MemoryStore) does), so a million
/// tokens of ten thousand owners hold ten thousand owner strings, not a million.
/// Two shared strings can be compared by address first ([`ptr_eq`](Self::ptr_eq)).
///
/// ```
/// use keygate::record::SharedStr;
///
/// let owner = SharedStr::from("alice");
/// let again = owner.clone();
/// assert!(SharedStr::ptr_eq(&owner, &again));
/// assert_eq!(owner, "alice");
/// assert_eq!(owner.to_string(), "alice");
/// assert_eq!(serde_json::to_string(&owner).unwrap(), r#""alice""#);
/// ```
#[derive(Clone, Default, PartialOrd, Ord)]
pub struct SharedStr(arcstr::ArcStr);

impl SharedStr {
    /// The string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when both are the same allocation (then they are equal; unequal addresses
    /// say nothing: compare the strings).
    #[must_use]
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        arcstr::ArcStr::ptr_eq(&a.0, &b.0)
    }
}

impl PartialEq for SharedStr {
    fn eq(&self, other: &Self) -> bool {
        Self::ptr_eq(self, other) || self.as_str() == other.as_str()
    }
}

impl Eq for SharedStr {}

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        Self(arcstr::ArcStr::from(s))
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> Self {
        Self(arcstr::ArcStr::from(s))
    }
}

impl From<&String> for SharedStr {
    fn from(s: &String) -> Self {
        Self(arcstr::ArcStr::from(s.as_str()))
    }
}

impl From<&SharedStr> for SharedStr {
    fn from(s: &SharedStr) -> Self {
        s.clone()
    }
}

impl From<SharedStr> for String {
    fn from(s: SharedStr) -> Self {
        s.as_str().to_owned()
    }
}

/// An immutable string kept inside its holder when it is at most 24 bytes long (no
/// allocation), on the heap otherwise. A record's name and hint are usually that short.
///
/// ```
/// use keygate::record::ShortStr;
///
/// let name = ShortStr::from("ci-deploy");
/// assert_eq!(name, "ci-deploy");
/// assert_eq!(name.to_string(), "ci-deploy");
/// assert_eq!(serde_json::from_str::<ShortStr>(r#""ci-deploy""#).unwrap(), name);
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShortStr(compact_str::CompactString);

impl ShortStr {
    /// The string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the string is stored inside the value, with no allocation of its own.
    #[must_use]
    pub fn is_inline(&self) -> bool {
        !self.0.is_heap_allocated()
    }
}

impl From<&str> for ShortStr {
    fn from(s: &str) -> Self {
        Self(compact_str::CompactString::new(s))
    }
}

impl From<String> for ShortStr {
    fn from(s: String) -> Self {
        // Short strings move inline (the `String`'s buffer is freed); long ones keep it.
        Self(compact_str::CompactString::from(s))
    }
}

impl From<&String> for ShortStr {
    fn from(s: &String) -> Self {
        Self::from(s.as_str())
    }
}

impl From<&ShortStr> for ShortStr {
    fn from(s: &ShortStr) -> Self {
        s.clone()
    }
}

impl From<ShortStr> for String {
    fn from(s: ShortStr) -> Self {
        s.as_str().to_owned()
    }
}

/// The traits both types share, all in terms of the string they hold.
macro_rules! string_like {
    ($t:ty) => {
        impl Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                self.as_str()
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl Borrow<str> for $t {
            fn borrow(&self) -> &str {
                self.as_str()
            }
        }

        impl Hash for $t {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.as_str().hash(state);
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self.as_str(), f)
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }

        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<String> for $t {
            fn eq(&self, other: &String) -> bool {
                self.as_str() == other.as_str()
            }
        }

        impl PartialEq<$t> for str {
            fn eq(&self, other: &$t) -> bool {
                self == other.as_str()
            }
        }

        impl PartialEq<$t> for &str {
            fn eq(&self, other: &$t) -> bool {
                *self == other.as_str()
            }
        }

        impl PartialEq<$t> for String {
            fn eq(&self, other: &$t) -> bool {
                self.as_str() == other.as_str()
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map(Self::from)
            }
        }
    };
}

string_like!(SharedStr);
string_like!(ShortStr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_str_compares_displays_and_round_trips() {
        let a = SharedStr::from("alice");
        let b = SharedStr::from(String::from("alice"));
        assert!(
            !SharedStr::ptr_eq(&a, &b),
            "two conversions, two allocations"
        );
        assert_eq!(a, b);
        assert_eq!(a, "alice");
        assert_eq!("alice", a);
        assert_eq!(a, String::from("alice"));
        assert_eq!(String::from("alice"), a);
        let bob = SharedStr::from("bob");
        assert_ne!(a, bob);
        assert!(a < bob);
        assert_eq!(format!("{a}|{a:?}"), r#"alice|"alice""#);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#""alice""#);
        assert_eq!(serde_json::from_str::<SharedStr>(&json).unwrap(), a);
        let set: std::collections::HashSet<SharedStr> = [a.clone()].into();
        assert!(set.contains("alice"));
        assert_eq!(String::from(a), "alice");
    }

    #[test]
    fn shared_str_clones_share_one_allocation() {
        let a = SharedStr::from("pat");
        let b = a.clone();
        assert!(SharedStr::ptr_eq(&a, &b));
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr());
        assert_eq!(
            std::mem::size_of::<SharedStr>(),
            std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn short_str_is_inline_up_to_24_bytes_and_round_trips() {
        let short = ShortStr::from("pat_AbCdEfGh");
        assert!(short.is_inline());
        let long = ShortStr::from("x".repeat(25));
        assert!(!long.is_inline());
        assert_eq!(long, "x".repeat(25));
        assert_eq!(short, "pat_AbCdEfGh");
        assert_eq!("pat_AbCdEfGh", short);
        assert_eq!(
            format!("{short}|{short:?}"),
            r#"pat_AbCdEfGh|"pat_AbCdEfGh""#
        );
        let json = serde_json::to_string(&short).unwrap();
        assert_eq!(json, r#""pat_AbCdEfGh""#);
        assert_eq!(serde_json::from_str::<ShortStr>(&json).unwrap(), short);
        assert_eq!(ShortStr::default(), "");
        assert_eq!(std::mem::size_of::<ShortStr>(), 24);
    }
}
