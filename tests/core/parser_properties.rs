//! Property tests: the parsers never panic on arbitrary input, and generated tokens
//! round-trip through the header parser and the token parser.

#![allow(clippy::unwrap_used)]

use keygate::header::{Credentials, parse_authorization, parse_basic};
use keygate::token::{SCANNER_REGEX, TokenKind, looks_like_token, parse};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn header_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_authorization(&bytes);
    }

    #[test]
    fn token_parser_never_panics(s in "\\PC{0,120}") {
        let _ = parse(&s);
        let _ = looks_like_token(&s);
    }

    #[test]
    fn token_shaped_strings_never_panic(s in "[a-z]{1,17}_[0-9A-Za-z]{40,55}") {
        let _ = parse(&s);
    }

    #[test]
    fn basic_parser_never_panics(s in "\\PC{0,200}") {
        let _ = parse_basic(&s);
    }

    #[test]
    fn generated_tokens_round_trip(prefix in "[a-z][a-z0-9]{1,15}", mask in any::<u8>()) {
        let kind = TokenKind::new("k", prefix.clone()).unwrap();
        let token = kind.generate();
        let secret = token.expose_secret();
        // Any mix of cases in the scheme name is accepted.
        let scheme: String = "bearer"
            .chars()
            .enumerate()
            .map(|(i, c)| if mask >> i & 1 == 1 { c.to_ascii_uppercase() } else { c })
            .collect();
        let header = format!("{scheme} {secret}");
        prop_assert_eq!(parse_authorization(header.as_bytes()), Ok(Credentials::Bearer(secret)));
        let parsed = parse(secret).unwrap();
        prop_assert_eq!(parsed.prefix(), prefix.as_str());
        prop_assert_eq!(parsed.hash(), token.hash());
        prop_assert!(secret.len() == prefix.len() + 1 + 49);
    }

    #[test]
    fn one_changed_character_is_refused(pos in 0usize..53, c in "[0-9A-Za-z]") {
        let token = TokenKind::pat().generate();
        let s = token.expose_secret();
        let pos = 4 + pos % (s.len() - 4);
        prop_assume!(&s[pos..=pos] != c.as_str());
        let mut changed = s.to_owned();
        changed.replace_range(pos..=pos, &c);
        // A CRC32 catches every single-character change.
        prop_assert!(parse(&changed).is_err());
    }
}

#[test]
fn the_published_scanner_regex_is_what_the_parser_accepts() {
    // The README publishes SCANNER_REGEX; check its shape against generated tokens without a
    // regex engine: prefix, underscore, 49 base62 characters.
    assert_eq!(SCANNER_REGEX, r"\b[a-z][a-z0-9]{1,15}_[0-9A-Za-z]{49}\b");
    for prefix in ["pat", "rgw", "dtk", "lic"] {
        let t = TokenKind::new(prefix, prefix).unwrap().generate();
        let (p, rest) = t.expose_secret().split_once('_').unwrap();
        assert_eq!(p, prefix);
        assert_eq!(rest.len(), 49);
        assert!(rest.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
