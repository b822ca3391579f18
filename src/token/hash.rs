//! [`TokenHash`]: the SHA-256 of a full token, the only form kept at rest.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::FormatError;

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

/// As 64 lower-case hex digits (a digest, not a secret; feature `serde`). Anything else is
/// refused when read: another length, or a character that is not a hex digit.
#[cfg(feature = "serde")]
impl serde::Serialize for TokenHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for TokenHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_hex(&text)
            .map_err(|_| serde::de::Error::custom("a token digest must be 64 hex digits"))
    }
}
