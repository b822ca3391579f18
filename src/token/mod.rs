//! Token format: kinds and prefixes, generation, checksum, parsing, [`RawToken`] and
//! [`TokenHash`].
//!
//! A token reads `<prefix>_<secret><checksum>`:
//!
//! - `prefix`: 2–16 characters `[a-z][a-z0-9]+`, naming the [`TokenKind`] (`pat`, `rgw`, …);
//! - `secret`: 43 characters of base62 (`[0-9A-Za-z]`) drawn from the operating system's
//!   CSPRNG, 62⁴³ ≈ 2²⁵⁶ possible values;
//! - `checksum`: 6 base62 characters holding the CRC32 of `<prefix>_<secret>`, so typos and
//!   garbage are rejected without a store lookup, and secret scanners can tell a real token
//!   from a random string.
//!
//! The whole token matches [`SCANNER_REGEX`]. Stores keep only the SHA-256 of the full token
//! ([`TokenHash`]) and a display hint: its first 12 characters.
//!
//! A kind may also accept tokens another system issued, by exact prefix, length and
//! alphabet and without a checksum ([`TokenKind::with_legacy_format`], [`LegacyFormat`]),
//! so that imported tokens keep working. [`parse`] and [`looks_like_token`] know only
//! keygate's own format: legacy tokens are recognised by the manager, per kind.
//!
//! ```
//! use keygate::token::{looks_like_token, TokenKind};
//!
//! let kind = TokenKind::new("pat", "pat").unwrap();
//! let token = kind.generate();
//! assert!(looks_like_token(token.expose_secret()));
//! assert!(token.expose_secret().starts_with("pat_"));
//! // The secret never shows up in Debug output.
//! assert!(!format!("{token:?}").contains(&token.expose_secret()[4..]));
//! ```

use std::fmt;

use zeroize::Zeroizing;

/// The base62 alphabet used for secrets and checksums, in value order.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Number of base62 characters of randomness in a token (62⁴³ > 2²⁵⁶).
pub const SECRET_LEN: usize = 43;
/// Number of base62 characters of checksum at the end of a token.
pub const CHECKSUM_LEN: usize = 6;
/// Number of characters of a token kept as a display hint.
pub const HINT_LEN: usize = 12;
/// Longest prefix a [`TokenKind`] may have.
pub const MAX_PREFIX_LEN: usize = 16;
/// Longest possible token (prefix, `_`, secret and checksum).
pub const MAX_TOKEN_LEN: usize = MAX_PREFIX_LEN + 1 + SECRET_LEN + CHECKSUM_LEN;

/// A regular expression that matches every keygate token (any kind), for secret scanners.
///
/// To match only one kind, replace the prefix group with that kind's prefix, e.g.
/// `\bpat_[0-9A-Za-z]{49}\b`. A match can be confirmed offline with [`looks_like_token`],
/// which also verifies the checksum.
pub const SCANNER_REGEX: &str = r"\b[a-z][a-z0-9]{1,15}_[0-9A-Za-z]{49}\b";

mod hash;
mod kind;
mod legacy;
mod pepper;

pub(crate) use hash::DigestHasher;
pub use hash::TokenHash;
pub use kind::TokenKind;
pub use legacy::{LegacyAlphabet, LegacyFormat, MIN_LEGACY_BITS};
pub use pepper::{MAX_PEPPER_LEN, MIN_PEPPER_LEN, Pepper, PepperError};

fn valid_prefix(p: &[u8]) -> bool {
    (2..=MAX_PREFIX_LEN).contains(&p.len())
        && p[0].is_ascii_lowercase()
        && p.iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn encode_checksum(mut crc: u32) -> String {
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

/// Value of each base62 character, 0xff for anything else.
const BASE62_VALUES: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 62 {
        t[BASE62[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// `0-9`, `A-Z` or `a-z`, without a branch.
#[inline]
fn is_base62(b: u8) -> bool {
    (b.wrapping_sub(b'0') < 10) | (b.wrapping_sub(b'A') < 26) | (b.wrapping_sub(b'a') < 26)
}

/// Why a string is not a well-formed keygate token. The layer reports all of these as
/// `invalid_token`; the detail is for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Wrong overall length or no `_` separator.
    #[error("not a keygate token")]
    Shape,
    /// The prefix is not a valid kind prefix.
    #[error("invalid token prefix")]
    Prefix,
    /// A character outside the base62 alphabet.
    #[error("invalid character in token")]
    Alphabet,
    /// The checksum does not match: a typo or a made-up string.
    #[error("token checksum mismatch")]
    Checksum,
}

/// The parts of a well-formed token, borrowed from the presented string.
#[derive(Clone, Copy)]
pub struct ParsedToken<'a> {
    full: &'a str,
    prefix_len: usize,
}

impl<'a> ParsedToken<'a> {
    /// The prefix naming the token's kind.
    #[must_use]
    pub fn prefix(&self) -> &'a str {
        &self.full[..self.prefix_len]
    }

    /// The SHA-256 of the full token, as stores keep it.
    #[must_use]
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(self.full)
    }

    /// The display hint: the first 12 characters.
    #[must_use]
    pub fn hint(&self) -> &'a str {
        &self.full[..HINT_LEN]
    }
}

impl fmt::Debug for ParsedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedToken")
            .field("prefix", &self.prefix())
            .finish_non_exhaustive()
    }
}

/// Checks a presented token's shape, alphabet and checksum without touching any store.
/// Never panics, whatever the input.
///
/// # Errors
///
/// A [`FormatError`] naming the first problem found.
pub fn parse(token: &str) -> Result<ParsedToken<'_>, FormatError> {
    let bytes = token.as_bytes();
    let tail = SECRET_LEN + CHECKSUM_LEN;
    if bytes.len() < 2 + 1 + tail || bytes.len() > MAX_TOKEN_LEN {
        return Err(FormatError::Shape);
    }
    let sep = bytes.len() - tail - 1;
    if bytes[sep] != b'_' {
        return Err(FormatError::Shape);
    }
    if !valid_prefix(&bytes[..sep]) {
        return Err(FormatError::Prefix);
    }
    // One branch-free pass over the alphabet, in range comparisons the compiler turns into
    // vector instructions.
    let body = &bytes[sep + 1..];
    if !body.iter().fold(true, |ok, &b| ok & is_base62(b)) {
        return Err(FormatError::Alphabet);
    }
    let checksum = body[SECRET_LEN..].iter().fold(0u64, |acc, &b| {
        acc * 62 + u64::from(BASE62_VALUES[usize::from(b)])
    });
    if u64::from(crc32fast::hash(&bytes[..bytes.len() - CHECKSUM_LEN])) != checksum {
        return Err(FormatError::Checksum);
    }
    Ok(ParsedToken {
        full: token,
        prefix_len: sep,
    })
}

/// True when `s` is a well-formed keygate token of any kind with a valid checksum. Meant for
/// secret scanners and pre-commit hooks: it needs no store and no key.
#[must_use]
pub fn looks_like_token(s: &str) -> bool {
    parse(s).is_ok()
}

/// A token in clear: shown to its owner once, at creation or rotation, and never stored.
///
/// It has no `Display`, `Serialize` or `PartialEq`; its `Debug` output is redacted; its memory
/// is zeroized on drop. Read it with [`expose_secret`](Self::expose_secret).
pub struct RawToken {
    value: Zeroizing<String>,
}

impl RawToken {
    /// The token in clear. Call this only to hand the token to its owner.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.value
    }

    /// The SHA-256 of the token, as stores keep it.
    #[must_use]
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.value)
    }

    /// The display hint: the token's first 12 characters (prefix and the start of the
    /// secret).
    #[must_use]
    pub fn hint(&self) -> String {
        self.value[..HINT_LEN].to_owned()
    }

    /// The prefix naming the token's kind.
    #[must_use]
    pub fn prefix(&self) -> &str {
        let end = self.value.len() - SECRET_LEN - CHECKSUM_LEN - 1;
        &self.value[..end]
    }
}

impl fmt::Debug for RawToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawToken({}_[REDACTED])", self.prefix())
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn generated_tokens_parse_and_have_the_documented_shape() {
        let kind = TokenKind::new("licence", "lic").unwrap();
        for _ in 0..200 {
            let t = kind.generate();
            let s = t.expose_secret();
            assert_eq!(s.len(), 3 + 1 + SECRET_LEN + CHECKSUM_LEN);
            let p = parse(s).unwrap();
            assert_eq!(p.prefix(), "lic");
            assert_eq!(p.hint(), &s[..12]);
            assert_eq!(t.hint(), &s[..12]);
            assert_eq!(p.hash(), t.hash());
            assert_eq!(t.prefix(), "lic");
        }
    }

    #[test]
    fn token_hash_is_sha256_at_every_length() {
        // Both sides of the single-block path (55 bytes and under, and longer), against
        // the streaming digest and a published vector.
        for len in 0..=130 {
            let text: String = (0..len)
                .map(|i| char::from(b'!' + (i * 7 % 90) as u8))
                .collect();
            let expected: [u8; 32] = Sha256::digest(text.as_bytes()).into();
            assert_eq!(TokenHash::of(&text).as_bytes(), &expected, "length {len}");
        }
        assert_eq!(
            TokenHash::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let t = TokenKind::pat().generate();
        let expected: [u8; 32] = Sha256::digest(t.expose_secret().as_bytes()).into();
        assert_eq!(t.hash().as_bytes(), &expected);
    }

    #[test]
    fn tokens_are_unique() {
        let kind = TokenKind::pat();
        let set: std::collections::HashSet<String> = (0..10_000)
            .map(|_| kind.generate().expose_secret().to_owned())
            .collect();
        assert_eq!(set.len(), 10_000);
    }

    #[test]
    fn every_single_character_change_is_caught_by_the_checksum_or_alphabet() {
        let t = TokenKind::pat().generate();
        let s = t.expose_secret().to_owned();
        for i in 4..s.len() {
            for c in ["0", "z", "Q"] {
                let mut m = s.clone();
                if &m[i..=i] == c {
                    continue;
                }
                m.replace_range(i..=i, c);
                assert!(parse(&m).is_err(), "change at {i} to {c} went unnoticed");
            }
        }
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for p in ["", "a", "Pat", "1ab", "pa_t", "abcdefghijklmnopq", "pät"] {
            assert!(TokenKind::new("x", p).is_err(), "{p:?}");
        }
        assert!(TokenKind::new("x", "ab").is_ok());
        assert!(TokenKind::new("", "ab").is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let t = TokenKind::pat().generate();
        let dbg = format!("{t:?}");
        assert_eq!(dbg, "RawToken(pat_[REDACTED])");
        let h = format!("{:?}", t.hash());
        assert!(h.len() < 30);
    }

    #[test]
    fn hash_hex_round_trip() {
        let h = TokenHash::of("x");
        assert_eq!(TokenHash::from_hex(&h.to_hex()).unwrap(), h);
        assert!(TokenHash::from_hex("zz").is_err());
        assert!(h.ct_eq(&TokenHash::of("x")));
        assert!(!h.ct_eq(&TokenHash::of("y")));
    }

    #[test]
    fn digests_differing_in_any_one_bit_are_unequal() {
        let h = TokenHash::of("x");
        for byte in 0..32 {
            for bit in 0..8 {
                let mut b = *h.as_bytes();
                b[byte] ^= 1 << bit;
                assert!(!h.ct_eq(&TokenHash::from_bytes(b)), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn checksum_encoding_is_fixed_width() {
        assert_eq!(encode_checksum(0), "000000");
        assert_eq!(encode_checksum(u32::MAX).len(), 6);
    }
}
