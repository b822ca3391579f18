//! Legacy token formats: tokens another system issued, without keygate's checksum, that a
//! [`TokenKind`](super::TokenKind) accepts so that imported tokens keep working.

use std::fmt;

use super::MAX_TOKEN_LEN;

/// The characters of a legacy token's secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LegacyAlphabet {
    /// URL-safe base64 without padding: `[A-Za-z0-9_-]` (6 bits a character).
    Base64Url,
    /// Lowercase hexadecimal: `[0-9a-f]` (4 bits a character).
    Hex,
    /// Letters and digits: `[0-9A-Za-z]` (a little under 6 bits a character).
    Alphanumeric,
}

impl LegacyAlphabet {
    /// Whether `b` belongs to the alphabet.
    #[inline]
    #[must_use]
    pub fn contains(self, b: u8) -> bool {
        match self {
            Self::Base64Url => b.is_ascii_alphanumeric() || b == b'-' || b == b'_',
            Self::Hex => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            Self::Alphanumeric => b.is_ascii_alphanumeric(),
        }
    }

    /// Whole bits of entropy one uniformly drawn character carries (5 for alphanumeric).
    #[must_use]
    pub fn bits_per_char(self) -> usize {
        match self {
            Self::Base64Url => 6,
            Self::Hex => 4,
            Self::Alphanumeric => 5,
        }
    }

    /// The character class as a regular expression, for secret scanners.
    #[must_use]
    pub fn regex_class(self) -> &'static str {
        match self {
            Self::Base64Url => "[A-Za-z0-9_-]",
            Self::Hex => "[0-9a-f]",
            Self::Alphanumeric => "[0-9A-Za-z]",
        }
    }
}

impl fmt::Display for LegacyAlphabet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Base64Url => "base64url",
            Self::Hex => "hex",
            Self::Alphanumeric => "alphanumeric",
        })
    }
}

impl std::str::FromStr for LegacyAlphabet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "base64url" => Ok(Self::Base64Url),
            "hex" => Ok(Self::Hex),
            "alphanumeric" => Ok(Self::Alphanumeric),
            other => Err(format!(
                "unknown alphabet {other:?}: use base64url, hex or alphanumeric"
            )),
        }
    }
}

/// The shape of a token issued by another system: `<prefix>_` followed by exactly `len`
/// characters of `alphabet`, with no checksum. A kind given one with
/// [`TokenKind::with_legacy_format`](super::TokenKind::with_legacy_format) accepts such
/// tokens besides its own; they are verified by the same SHA-256 lookup.
///
/// Seed 003 (Rack Gateway): `rgw_` + 43 base64url characters (32 random bytes); seed 004
/// (Tokencraft): `dtk_` + 40 hex characters.
///
/// ```
/// use keygate::token::{LegacyAlphabet, LegacyFormat, TokenKind};
///
/// let rgw = TokenKind::new("rgw", "rgw")
///     .unwrap()
///     .with_legacy_format(LegacyFormat { len: 43, alphabet: LegacyAlphabet::Base64Url })
///     .unwrap();
/// assert!(rgw.accepts_legacy("rgw_kX7mN2pQ9rT4wY8zA1bC3dE5fG-_hJ6kL0mN2pQ4rS6"));
/// assert!(!rgw.accepts_legacy("rgw_kX7mN2pQ9rT4wY8zA1bC3dE5fG==")); // wrong length
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LegacyFormat {
    /// The exact number of characters after `<prefix>_`.
    pub len: usize,
    /// The characters they are drawn from.
    pub alphabet: LegacyAlphabet,
}

/// The fewest bits of entropy a legacy format must be able to hold: shorter secrets could
/// be guessed.
pub const MIN_LEGACY_BITS: usize = 128;

impl LegacyFormat {
    /// Whether `token` is `<prefix>_` followed by exactly this many characters of the
    /// alphabet. Never panics, whatever the input.
    #[must_use]
    pub fn matches(&self, prefix: &str, token: &str) -> bool {
        let b = token.as_bytes();
        let p = prefix.as_bytes();
        b.len() == p.len() + 1 + self.len
            && b.starts_with(p)
            && b[p.len()] == b'_'
            && b[p.len() + 1..].iter().all(|&c| self.alphabet.contains(c))
    }

    /// A regular expression matching this format's tokens of kind prefix `prefix`, for
    /// secret scanners (there is no checksum to confirm a match offline).
    #[must_use]
    pub fn regex(&self, prefix: &str) -> String {
        let class = self.alphabet.regex_class();
        match self.alphabet {
            // `\b` does not follow a final `-`: end on a character outside the alphabet.
            LegacyAlphabet::Base64Url => {
                format!(r"\b{prefix}_{class}{{{}}}(?:[^A-Za-z0-9_-]|$)", self.len)
            }
            LegacyAlphabet::Hex | LegacyAlphabet::Alphanumeric => {
                format!(r"\b{prefix}_{class}{{{}}}\b", self.len)
            }
        }
    }

    /// Checks the format for a kind with prefix `prefix`.
    pub(super) fn check(&self, prefix: &str) -> Result<(), String> {
        if self.len * self.alphabet.bits_per_char() < MIN_LEGACY_BITS {
            return Err(format!(
                "{} characters of {} hold fewer than {MIN_LEGACY_BITS} bits",
                self.len, self.alphabet
            ));
        }
        if prefix.len() + 1 + self.len > MAX_TOKEN_LEN {
            return Err(format!(
                "{prefix}_ and {} characters is longer than the longest token ({MAX_TOKEN_LEN} characters)",
                self.len
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_prefix_length_and_alphabet() {
        let f = LegacyFormat {
            len: 40,
            alphabet: LegacyAlphabet::Hex,
        };
        let good = format!("dtk_{}", "0123456789abcdef".repeat(3).get(..40).unwrap());
        assert!(f.matches("dtk", &good));
        assert!(!f.matches("dtk", &good[..good.len() - 1]));
        assert!(!f.matches("dtk", &format!("{good}0")));
        assert!(!f.matches("dtk", &good.replace('a', "A")));
        assert!(!f.matches("rgw", &good));
        assert!(!f.matches("dtk", &good.replacen('_', "-", 1)));
        assert!(!f.matches("dtk", ""));
        assert!(!f.matches("dtk", "dtk_é"));
    }

    #[test]
    fn weak_or_overlong_formats_are_refused() {
        let hex = |len| LegacyFormat {
            len,
            alphabet: LegacyAlphabet::Hex,
        };
        assert!(hex(31).check("dtk").is_err());
        assert!(hex(32).check("dtk").is_ok());
        assert!(hex(62).check("dtk").is_ok());
        assert!(hex(63).check("dtk").is_err());
    }

    #[test]
    fn scanner_patterns_end_where_the_alphabet_does() {
        let rgw = LegacyFormat {
            len: 43,
            alphabet: LegacyAlphabet::Base64Url,
        };
        assert_eq!(
            rgw.regex("rgw"),
            r"\brgw_[A-Za-z0-9_-]{43}(?:[^A-Za-z0-9_-]|$)"
        );
        let dtk = LegacyFormat {
            len: 40,
            alphabet: LegacyAlphabet::Hex,
        };
        assert_eq!(dtk.regex("dtk"), r"\bdtk_[0-9a-f]{40}\b");
    }

    #[test]
    fn alphabets_parse_by_name() {
        for a in [
            LegacyAlphabet::Base64Url,
            LegacyAlphabet::Hex,
            LegacyAlphabet::Alphanumeric,
        ] {
            assert_eq!(a.to_string().parse::<LegacyAlphabet>(), Ok(a));
        }
        assert!("base64".parse::<LegacyAlphabet>().is_err());
    }
}
