//! HMAC-SHA256 signatures of request bodies, in the `sha256=<hex>` form GitHub's webhooks
//! use: what a leak reporter sends in `X-Keygate-Signature` (see
//! [`LeakReports`](crate::axum::management::LeakReports)), and what keygate sends with each
//! expiry warning to a webhook (see [`ExpiryWebhook`](crate::tokens::ExpiryWebhook)).
//!
//! ```
//! use keygate::signature::{sign, verify};
//!
//! let header = sign(b"shared secret", b"{\"hello\":1}");
//! assert!(header.starts_with("sha256="));
//! assert!(verify(b"shared secret", b"{\"hello\":1}", &header));
//! assert!(!verify(b"another secret", b"{\"hello\":1}", &header));
//! ```
//!
//! # Security
//!
//! [`verify`] compares the 32-byte digests in constant time (`subtle`); a header of the
//! wrong shape is refused before any comparison, which tells nothing about the secret.

use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header carrying a signature: `X-Keygate-Signature: sha256=<64 hex digits>`.
pub const SIGNATURE_HEADER: &str = "x-keygate-signature";

/// HMAC-SHA256 of `message` under `key` (RFC 2104), with the `hmac` crate the pepper uses.
#[must_use]
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of every length")
    };
    hmac::Mac::update(&mut mac, message);
    hmac::Mac::finalize(mac).into_bytes().into()
}

/// The header value signing `body` with `secret`: `sha256=` and 64 lowercase hex digits.
#[must_use]
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mac = hmac_sha256(secret, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in mac {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn unhex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Whether `header` (`sha256=<hex>`, hex digits in either case) is the signature of `body`
/// under `secret`, compared in constant time.
#[must_use]
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return false;
    }
    let mut given = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let (Some(hi), Some(lo)) = (unhex(pair[0]), unhex(pair[1])) else {
            return false;
        };
        given[i] = (hi << 4) | lo;
    }
    hmac_sha256(secret, body).ct_eq(&given).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4231, test cases 1, 2 and 6 (a key longer than a block).
    #[test]
    fn rfc_4231_vectors() {
        assert_eq!(
            sign(&[0x0b; 20], b"Hi There"),
            "sha256=b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            sign(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "sha256=60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn verify_refuses_other_bodies_secrets_and_shapes() {
        let s = sign(b"k", b"body");
        assert!(verify(b"k", b"body", &s));
        assert!(verify(
            b"k",
            b"body",
            &s.to_uppercase().replace("SHA256=", "sha256=")
        ));
        assert!(!verify(b"k", b"body!", &s));
        assert!(!verify(b"j", b"body", &s));
        assert!(!verify(b"k", b"body", &s[..s.len() - 1]));
        assert!(!verify(b"k", b"body", s.trim_start_matches("sha256=")));
        assert!(!verify(b"k", b"body", "sha256=zz"));
    }
}
