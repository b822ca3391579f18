//! [`Pepper`]: a server secret mixed into every stored digest (HMAC-SHA256), so that a copy
//! of the store alone cannot confirm a guessed token.

use std::fmt;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::TokenHash;

/// The fewest bytes a pepper may have: 256 bits, SHA-256's own strength.
pub const MIN_PEPPER_LEN: usize = 32;

/// The most bytes a pepper may have (longer keys buy nothing: HMAC hashes them first).
pub const MAX_PEPPER_LEN: usize = 1024;

/// A pepper that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PepperError {
    /// Fewer than [`MIN_PEPPER_LEN`] or more than [`MAX_PEPPER_LEN`] bytes.
    #[error(
        "a pepper must be {MIN_PEPPER_LEN} to {MAX_PEPPER_LEN} bytes (64 hex digits or 44 base64 characters for 32 bytes); this one is {0} bytes"
    )]
    Length(usize),
    /// Neither hex nor base64.
    #[error("a pepper must be written in hex or base64")]
    Encoding,
}

/// A server secret for HMAC-SHA256 token digests.
///
/// With a pepper, the store keeps `HMAC-SHA256(pepper, token)` instead of
/// `SHA-256(token)`: whoever holds a copy of the store but not the pepper cannot check a
/// guess against it. Give it to the manager with
/// [`TokensBuilder::pepper`](crate::tokens::TokensBuilder::pepper); older ones go to
/// [`TokensBuilder::previous_peppers`](crate::tokens::TokensBuilder::previous_peppers) while
/// tokens are re-hashed.
///
/// At least [`MIN_PEPPER_LEN`] (32) bytes; read from bytes, hex or base64. Its `Debug`
/// shows nothing of it, and its bytes are zeroized on drop. (The HMAC key schedule computed
/// from it once, for speed, lives as long as the pepper.)
///
/// ```
/// use keygate::Pepper;
///
/// let pepper = Pepper::parse("q3xM0kD8sT2vN6yB1wE5rU9iO4pA7lK3jH2gF6dS8aZ=").unwrap();
/// assert_eq!(format!("{pepper:?}"), "Pepper(<redacted>)");
/// assert!(Pepper::parse("too-short").is_err());
/// ```
#[derive(Clone)]
pub struct Pepper {
    /// The secret, kept for comparisons between peppers.
    key: Zeroizing<Vec<u8>>,
    /// The HMAC with the key already absorbed (inner and outer pad): cloned per digest.
    mac: Hmac<Sha256>,
}

impl Pepper {
    /// A pepper from raw bytes.
    ///
    /// # Errors
    ///
    /// [`PepperError::Length`] unless 32 to 1024 bytes.
    pub fn from_bytes(bytes: impl AsRef<[u8]>) -> Result<Self, PepperError> {
        let bytes = bytes.as_ref();
        if !(MIN_PEPPER_LEN..=MAX_PEPPER_LEN).contains(&bytes.len()) {
            return Err(PepperError::Length(bytes.len()));
        }
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(bytes)
            .map_err(|_| PepperError::Length(bytes.len()))?;
        Ok(Self {
            key: Zeroizing::new(bytes.to_vec()),
            mac,
        })
    }

    /// A pepper written in hex (upper or lower case).
    ///
    /// # Errors
    ///
    /// [`PepperError::Encoding`] for anything but an even number of hex digits;
    /// [`PepperError::Length`].
    pub fn from_hex(s: &str) -> Result<Self, PepperError> {
        let s = s.trim().as_bytes();
        if !s.len().is_multiple_of(2) {
            return Err(PepperError::Encoding);
        }
        let mut out = Zeroizing::new(Vec::with_capacity(s.len() / 2));
        for pair in s.chunks_exact(2) {
            let hi = (pair[0] as char)
                .to_digit(16)
                .ok_or(PepperError::Encoding)?;
            let lo = (pair[1] as char)
                .to_digit(16)
                .ok_or(PepperError::Encoding)?;
            out.push(u8::try_from(hi * 16 + lo).map_err(|_| PepperError::Encoding)?);
        }
        Self::from_bytes(&*out)
    }

    /// A pepper written in base64 (standard or URL-safe alphabet, padded or not).
    ///
    /// # Errors
    ///
    /// [`PepperError::Encoding`], [`PepperError::Length`].
    pub fn from_base64(s: &str) -> Result<Self, PepperError> {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
        let lenient = GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true);
        let s = s.trim();
        let decoded = GeneralPurpose::new(&base64::alphabet::STANDARD, lenient)
            .decode(s)
            .or_else(|_| GeneralPurpose::new(&base64::alphabet::URL_SAFE, lenient).decode(s))
            .or_else(|_| STANDARD.decode(s))
            .or_else(|_| URL_SAFE.decode(s))
            .map_err(|_| PepperError::Encoding)?;
        let decoded = Zeroizing::new(decoded);
        Self::from_bytes(&*decoded)
    }

    /// A pepper written in hex (an even number of hex digits, at least 64) or else in
    /// base64: what the server's `pepper` setting accepts.
    ///
    /// # Errors
    ///
    /// [`PepperError::Encoding`], [`PepperError::Length`].
    pub fn parse(s: &str) -> Result<Self, PepperError> {
        let t = s.trim();
        if t.len() >= 2 * MIN_PEPPER_LEN
            && t.len().is_multiple_of(2)
            && t.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Self::from_hex(t);
        }
        Self::from_base64(t)
    }

    /// A new random pepper of 32 bytes from the operating system's generator.
    #[must_use]
    pub fn generate() -> Self {
        use rand::TryRngCore;
        let mut bytes = Zeroizing::new([0u8; MIN_PEPPER_LEN]);
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes[..])
            .expect("the operating system's random number generator failed");
        Self::from_bytes(&bytes[..]).expect("32 bytes make a pepper")
    }

    /// `HMAC-SHA256(pepper, token)`: the digest a store keeps for `token` under this
    /// pepper.
    #[must_use]
    pub fn digest(&self, token: &str) -> TokenHash {
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        TokenHash::from_bytes(mac.finalize().into_bytes().into())
    }

    /// Whether two peppers are the same secret (in constant time).
    #[must_use]
    pub fn same_as(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.key.len() == other.key.len() && bool::from(self.key.ct_eq(&other.key))
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_base64_and_bytes_agree_and_the_digest_is_hmac_sha256() {
        let bytes = [7u8; 32];
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let a = Pepper::from_bytes(bytes).unwrap();
        let b = Pepper::parse(&hex).unwrap();
        let c = Pepper::parse(&b64).unwrap();
        let d = Pepper::parse(b64.trim_end_matches('=')).unwrap();
        assert!(a.same_as(&b) && a.same_as(&c) && a.same_as(&d));
        assert_eq!(a.digest("pat_x"), c.digest("pat_x"));
        assert_ne!(a.digest("pat_x"), TokenHash::of("pat_x"));
        // HMAC-SHA256 against a direct computation with the hmac crate.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&bytes).unwrap();
        mac.update(b"pat_x");
        assert_eq!(
            a.digest("pat_x").as_bytes(),
            &<[u8; 32]>::from(mac.finalize().into_bytes())
        );
    }

    #[test]
    fn short_and_garbled_peppers_are_refused_without_echoing_them() {
        assert_eq!(
            Pepper::from_bytes([1u8; 31]).unwrap_err(),
            PepperError::Length(31)
        );
        let e = Pepper::parse("not base64 at all!").unwrap_err();
        assert_eq!(e, PepperError::Encoding);
        assert!(!e.to_string().contains("not base64"));
        assert!(Pepper::from_hex("zz").is_err());
        let p = Pepper::generate();
        assert_eq!(format!("{p:?}"), "Pepper(<redacted>)");
        assert!(!p.same_as(&Pepper::generate()));
    }
}
