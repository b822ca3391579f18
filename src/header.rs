//! Parsing of the `Authorization` header (RFC 9110 §11, RFC 6750 §2.1, RFC 7617).
//!
//! Both parsers work on raw bytes, never allocate for a Bearer token, and never panic,
//! whatever the input.

use base64::Engine;
use zeroize::Zeroizing;

/// Longest `Authorization` value the parsers look at; longer values are malformed.
pub const MAX_HEADER_LEN: usize = 4096;

/// What an `Authorization` value holds.
#[derive(PartialEq, Eq)]
pub enum Credentials<'a> {
    /// `Bearer <token68>`; the token is only known to be token68, not yet a keygate token.
    Bearer(&'a str),
    /// `Basic <base64>`: the still-encoded credentials; decode with [`parse_basic`].
    Basic(&'a str),
    /// Another scheme (e.g. `Digest`): no credentials keygate understands.
    Other,
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bearer(_) => f.write_str("Bearer([REDACTED])"),
            Self::Basic(_) => f.write_str("Basic([REDACTED])"),
            Self::Other => f.write_str("Other"),
        }
    }
}

/// The `Authorization` value breaks the grammar: answered with 400 `invalid_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed Authorization header")]
pub struct MalformedHeader;

const TOKEN68: u8 = 1;
const TCHAR: u8 = 2;

/// Character classes of RFC 9110 `token68` and `tchar`, one lookup per byte.
const CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let alnum = c.is_ascii_alphanumeric();
        if alnum || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/') {
            t[b] |= TOKEN68;
        }
        if alnum
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            )
        {
            t[b] |= TCHAR;
        }
        b += 1;
    }
    t
};

fn is_token68(b: u8) -> bool {
    CLASSES[usize::from(b)] & TOKEN68 != 0
}

fn is_tchar(b: u8) -> bool {
    CLASSES[usize::from(b)] & TCHAR != 0
}

/// Splits `scheme 1*SP token68` and checks the token68 alphabet (with trailing `=`).
///
/// The scheme is matched case-insensitively; the credential is returned byte-exact.
///
/// # Errors
///
/// [`MalformedHeader`] for anything outside the grammar: empty value, a known scheme
/// without a credential, characters outside token68, inner whitespace, commas or
/// parameters, or a value over [`MAX_HEADER_LEN`]. An unknown scheme with any well-formed
/// value is [`Credentials::Other`].
pub fn parse_authorization(value: &[u8]) -> Result<Credentials<'_>, MalformedHeader> {
    if value.is_empty() || value.len() > MAX_HEADER_LEN {
        return Err(MalformedHeader);
    }
    let scheme_end = value.iter().position(|&b| b == b' ').unwrap_or(value.len());
    let scheme = &value[..scheme_end];
    if scheme.is_empty() || !scheme.iter().all(|&b| is_tchar(b)) {
        return Err(MalformedHeader);
    }
    let bearer = scheme.eq_ignore_ascii_case(b"bearer");
    let basic = scheme.eq_ignore_ascii_case(b"basic");
    let mut rest = &value[scheme_end..];
    while let [b' ', tail @ ..] = rest {
        rest = tail;
    }
    if !bearer && !basic {
        // Another scheme: only check that it is visible ASCII, then ignore it.
        return if value.iter().all(|&b| b == b' ' || b.is_ascii_graphic()) {
            Ok(Credentials::Other)
        } else {
            Err(MalformedHeader)
        };
    }
    // One pass: token68 characters, then only `=` padding.
    let mut i = 0;
    while i < rest.len() && is_token68(rest[i]) {
        i += 1;
    }
    if i == 0 || !rest[i..].iter().all(|&b| b == b'=') {
        return Err(MalformedHeader);
    }
    // All bytes are ASCII here, so this cannot fail.
    let cred = std::str::from_utf8(rest).map_err(|_| MalformedHeader)?;
    Ok(if bearer {
        Credentials::Bearer(cred)
    } else {
        Credentials::Basic(cred)
    })
}

/// Email (user-id) and password from HTTP Basic credentials. The password is zeroized on
/// drop and redacted in `Debug`.
pub struct BasicCredentials {
    /// The user-id: an email for keygate's management API.
    pub user: String,
    /// The password.
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("user", &self.user)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// Decodes the base64 part of `Basic …` (RFC 7617): strict standard base64, UTF-8, split at
/// the first colon (the password may contain colons), no control characters.
///
/// # Errors
///
/// [`MalformedHeader`] for invalid base64, invalid UTF-8, no colon, an empty user-id or
/// control characters.
pub fn parse_basic(encoded: &str) -> Result<BasicCredentials, MalformedHeader> {
    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|_| MalformedHeader)?,
    );
    let text = std::str::from_utf8(&raw).map_err(|_| MalformedHeader)?;
    let (user, password) = text.split_once(':').ok_or(MalformedHeader)?;
    if user.is_empty() || text.chars().any(char::is_control) {
        return Err(MalformedHeader);
    }
    Ok(BasicCredentials {
        user: user.to_owned(),
        password: Zeroizing::new(password.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_token_exact() {
        for s in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR   abc"] {
            assert_eq!(
                parse_authorization(s.as_bytes()),
                Ok(Credentials::Bearer("abc"))
            );
        }
        assert_eq!(
            parse_authorization(b"Bearer AbC=="),
            Ok(Credentials::Bearer("AbC=="))
        );
    }

    #[test]
    fn near_misses_are_malformed() {
        for s in [
            "",
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer a,Bearer b",
            "Bearer\ta",
            "Bearer a=b",
            "Bearer =",
            "Bearer a ",
            "Bearer \"a\"",
            " Bearer a",
            "Bearer é",
            "Basic",
        ] {
            assert_eq!(
                parse_authorization(s.as_bytes()),
                Err(MalformedHeader),
                "{s:?}"
            );
        }
        assert_eq!(
            parse_authorization(&[b'B', b'e', b'a', b'r', b'e', b'r', b' ', 0xff]),
            Err(MalformedHeader)
        );
        let long = format!("Bearer {}", "a".repeat(MAX_HEADER_LEN));
        assert_eq!(parse_authorization(long.as_bytes()), Err(MalformedHeader));
    }

    #[test]
    fn other_schemes_are_not_credentials() {
        assert_eq!(
            parse_authorization(b"Digest username=\"x\""),
            Ok(Credentials::Other)
        );
        assert_eq!(parse_authorization(b"Token abc"), Ok(Credentials::Other));
    }

    #[test]
    fn basic_follows_rfc_7617() {
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let c = parse_basic(&enc("admin@example.com:pa:ss")).unwrap();
        assert_eq!(c.user, "admin@example.com");
        assert_eq!(&*c.password, "pa:ss");
        assert_eq!(&*parse_basic(&enc("a:")).unwrap().password, "");
        assert_eq!(
            &*parse_basic(&enc("a:pässword")).unwrap().password,
            "pässword"
        );
        for bad in [
            enc("nocolon"),
            enc(":pw"),
            enc("a:b\u{0}c"),
            "%%%".into(),
            "YQ".into(),
        ] {
            assert!(parse_basic(&bad).is_err(), "{bad:?}");
        }
        assert!(!format!("{c:?}").contains("pa:ss"));
    }
}
