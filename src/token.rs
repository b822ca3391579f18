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
use std::sync::Arc;

use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::ConfigError;

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

/// A type of token with its own prefix, e.g. personal access tokens (`pat`) or licence
/// tokens (`lic`). Kinds are not interchangeable: a layer accepts only the kinds it is
/// configured with, and every other kind is refused as `invalid_token`.
///
/// Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenKind {
    inner: Arc<KindInner>,
}

#[derive(PartialEq, Eq, Hash)]
struct KindInner {
    name: String,
    prefix: String,
    max_live_per_owner: Option<Option<u32>>,
    max_lifetime: Option<std::time::Duration>,
    binding: Option<http::HeaderName>,
}

impl TokenKind {
    /// A kind named `name` whose tokens start with `<prefix>_`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidPrefix`] unless `prefix` is 2–16 characters of `[a-z0-9]`
    /// starting with a letter; [`ConfigError::InvalidName`] if `name` is empty, longer than
    /// 64 bytes or not printable ASCII.
    pub fn new(name: impl Into<String>, prefix: impl Into<String>) -> Result<Self, ConfigError> {
        let name = name.into();
        let prefix = prefix.into();
        if !valid_prefix(prefix.as_bytes()) {
            return Err(ConfigError::InvalidPrefix(prefix));
        }
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::InvalidName(name));
        }
        Ok(Self {
            inner: Arc::new(KindInner {
                name,
                prefix,
                max_live_per_owner: None,
                max_lifetime: None,
                binding: None,
            }),
        })
    }

    /// The default personal-access-token kind: name `pat`, prefix `pat`.
    #[must_use]
    pub fn pat() -> Self {
        Self::new("pat", "pat").expect("static kind is valid")
    }

    /// Caps the number of live tokens of this kind per owner (`None`: unlimited). Without
    /// this call the manager's per-owner limit applies, counted across all kinds that have no
    /// cap of their own.
    #[must_use]
    pub fn with_max_live_per_owner(self, max: Option<u32>) -> Self {
        self.map(|k| k.max_live_per_owner = Some(max))
    }

    /// Requires every token of this kind to expire within `max` of its creation; a request
    /// for a longer or unlimited lifetime is refused.
    #[must_use]
    pub fn with_max_lifetime(self, max: std::time::Duration) -> Self {
        self.map(|k| k.max_lifetime = Some(max))
    }

    /// Binds each token of this kind to one client on first use (a seat): the
    /// client sends its fingerprint (e.g. a machine id) in the header `header_name`. The
    /// first request binds the token to that fingerprint; later requests with another
    /// fingerprint get 403 `bound_elsewhere`, and requests without the header 403
    /// `binding_required`. The owner frees the seat with
    /// [`Tokens::release_binding`](crate::Tokens::release_binding) (once per 24 h); with
    /// [`TokensBuilder::revoke_after_inactivity`](crate::tokens::TokensBuilder::revoke_after_inactivity)
    /// an idle seat is released (not revoked). A fingerprint is 1–128 visible ASCII
    /// characters; it is not a secret and is stored as sent.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidHeader`] for a name that is not a valid HTTP header name.
    pub fn with_binding(self, header_name: &str) -> Result<Self, ConfigError> {
        let name = http::HeaderName::from_bytes(header_name.as_bytes())
            .map_err(|_| ConfigError::InvalidHeader(header_name.to_owned()))?;
        Ok(self.map(|k| k.binding = Some(name)))
    }

    /// The header carrying the client fingerprint, for kinds with a binding.
    #[must_use]
    pub fn binding_header(&self) -> Option<&http::HeaderName> {
        self.inner.binding.as_ref()
    }

    fn map(self, f: impl FnOnce(&mut KindInner)) -> Self {
        let mut inner = KindInner {
            name: self.inner.name.clone(),
            prefix: self.inner.prefix.clone(),
            max_live_per_owner: self.inner.max_live_per_owner,
            max_lifetime: self.inner.max_lifetime,
            binding: self.inner.binding.clone(),
        };
        f(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The kind's name, as stored with each token.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The kind's prefix (without the `_`).
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The per-owner cap set with [`with_max_live_per_owner`](Self::with_max_live_per_owner):
    /// `None` when the kind has no cap of its own, `Some(None)` when it is unlimited.
    #[must_use]
    pub fn max_live_per_owner(&self) -> Option<Option<u32>> {
        self.inner.max_live_per_owner
    }

    /// The longest lifetime a token of this kind may have, if limited.
    #[must_use]
    pub fn max_lifetime(&self) -> Option<std::time::Duration> {
        self.inner.max_lifetime
    }

    /// Generates a new token of this kind from the operating system's CSPRNG.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide random bytes (keygate never falls back to a
    /// weaker source).
    #[must_use]
    pub fn generate(&self) -> RawToken {
        let prefix = self.prefix();
        let mut s = Zeroizing::new(String::with_capacity(
            prefix.len() + 1 + SECRET_LEN + CHECKSUM_LEN,
        ));
        s.push_str(prefix);
        s.push('_');
        let mut filled = 0;
        let mut buf = Zeroizing::new([0u8; 64]);
        while filled < SECRET_LEN {
            OsRng
                .try_fill_bytes(&mut buf[..])
                .expect("the operating system's random number generator failed");
            for &b in buf.iter() {
                // Rejection sampling: 248 = 4 * 62, so `b % 62` is uniform below it.
                if b < 248 && filled < SECRET_LEN {
                    s.push(BASE62[usize::from(b % 62)] as char);
                    filled += 1;
                }
            }
        }
        let crc = crc32fast::hash(s.as_bytes());
        s.push_str(&encode_checksum(crc));
        RawToken { value: s }
    }
}

impl fmt::Debug for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKind")
            .field("name", &self.inner.name)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

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

/// The longest message that SHA-256 pads into a single 64-byte block.
const ONE_BLOCK: usize = 55;

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const SHA256_INIT: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// SHA-256 of a full token: the only form in which a token is kept at rest.
///
/// Compared in constant time with [`ct_eq`](Self::ct_eq). Its `Debug` shows only the first
/// four bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl std::hash::Hash for TokenHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The digest is uniform: its first 8 bytes are as good a key as all 32.
        state.write_u64(self.prefix_u64());
    }
}

/// The map hasher for [`TokenHash`] keys. A `TokenHash` feeds it one `u64` taken from the
/// digest, which is already uniform, so that number is the bucket hash, with no hashing
/// work. Where an attacker chooses the digests (the cache of unknown tokens), the maps are
/// bounded: papaya doubles a table only when it is half full, so colliding digests lengthen
/// probes in a small map and cannot make it grow.
pub(crate) type DigestHasher = std::hash::BuildHasherDefault<U64Hasher>;

/// The hasher behind [`DigestHasher`]: the last `u64` written is the hash.
#[derive(Default)]
pub(crate) struct U64Hasher(u64);

impl std::hash::Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl TokenHash {
    /// Hashes a full token.
    #[must_use]
    pub fn of(token: &str) -> Self {
        let bytes = token.as_bytes();
        if bytes.len() > ONE_BLOCK {
            return Self(Sha256::digest(bytes).into());
        }
        // A token of at most 55 bytes (every token of a prefix up to 5 characters) is one
        // padded block: compressed directly, without the buffering of the streaming API.
        // FIPS 180-4, 5.1.1: the message, the bit 1, zeros, the bit length as 64 bits.
        let mut block = [sha2::digest::generic_array::GenericArray::default()];
        block[0][..bytes.len()].copy_from_slice(bytes);
        block[0][bytes.len()] = 0x80;
        block[0][56..].copy_from_slice(&(bytes.len() as u64 * 8).to_be_bytes());
        let mut state = SHA256_INIT;
        sha2::compress256(&mut state, &block);
        let mut digest = [0u8; 32];
        for (out, word) in digest.chunks_exact_mut(4).zip(state) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        Self(digest)
    }

    /// Wraps 32 bytes read back from a store.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes of the digest.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, as text-only stores keep it.
    #[must_use]
    pub fn to_hex(&self) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// Parses 64 hex digits.
    ///
    /// # Errors
    ///
    /// [`FormatError::Shape`] on any other input.
    pub fn from_hex(s: &str) -> Result<Self, FormatError> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(FormatError::Shape);
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16).ok_or(FormatError::Shape)?;
            let lo = (pair[1] as char).to_digit(16).ok_or(FormatError::Shape)?;
            out[i] = u8::try_from(hi * 16 + lo).map_err(|_| FormatError::Shape)?;
        }
        Ok(Self(out))
    }

    /// Constant-time equality, for comparing a computed digest with a stored one: the
    /// differences of all four 64-bit words are folded together without a branch, then
    /// judged once with `subtle`.
    #[must_use]
    pub fn ct_eq(&self, other: &Self) -> bool {
        let mut diff = 0u64;
        for (a, b) in self.0.chunks_exact(8).zip(other.0.chunks_exact(8)) {
            diff |= word(a) ^ word(b);
        }
        diff.ct_eq(&0).into()
    }

    /// The first 8 bytes as a number: the digest is uniform, so this is a good map hash.
    fn prefix_u64(&self) -> u64 {
        word(&self.0[..8])
    }
}

/// Eight bytes of a digest as a number.
fn word(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);
    u64::from_le_bytes(b)
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TokenHash({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

#[cfg(test)]
mod tests {
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
