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

/// A manager whose kinds also accept legacy formats: Rack Gateway's (`rgw_` + 43 base64url)
/// and Tokencraft's (`dtk_` + 40 lowercase hex); `pat` has none.
fn legacy_manager(store: crate::common::TestStore) -> keygate::Tokens {
    use keygate::token::{LegacyAlphabet, LegacyFormat};
    let rgw = TokenKind::new("rgw", "rgw")
        .unwrap()
        .with_legacy_format(LegacyFormat {
            len: 43,
            alphabet: LegacyAlphabet::Base64Url,
        })
        .unwrap();
    let dtk = TokenKind::new("dtk", "dtk")
        .unwrap()
        .with_legacy_format(LegacyFormat {
            len: 40,
            alphabet: LegacyAlphabet::Hex,
        })
        .unwrap();
    keygate::Tokens::builder(store)
        .kind(TokenKind::pat())
        .kind(rgw)
        .kind(dtk)
        .build()
        .unwrap()
}

/// The legacy shapes, written out independently of the library.
fn legacy_shaped(s: &str) -> bool {
    let b64 = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    match s.split_at_checked(4) {
        Some(("rgw_", rest)) => rest.len() == 43 && rest.chars().all(b64),
        Some(("dtk_", rest)) => rest.len() == 40 && rest.chars().all(hex),
        _ => false,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Only a string of exactly a configured legacy shape is looked up (and, unknown, is
    /// refused as such); every near miss is refused as malformed without a store lookup.
    #[test]
    fn only_exact_legacy_shapes_reach_the_store(s in "(rgw|dtk|pat|rg)_[0-9A-Za-z_~+./-]{38,46}") {
        let store = crate::common::TestStore::default();
        let tokens = legacy_manager(store.clone());
        let denial = runtime().block_on(tokens.authenticate(&s)).unwrap_err();
        let shaped = legacy_shaped(&s);
        prop_assert_eq!(store.lookups(), usize::from(shaped), "{}", s);
        let expected = if shaped { keygate::Denial::Unknown } else { keygate::Denial::Malformed };
        prop_assert_eq!(denial, expected);
    }

    #[test]
    fn the_legacy_path_never_panics(s in "\\PC{0,120}") {
        let tokens = legacy_manager(crate::common::TestStore::default());
        let _ = runtime().block_on(tokens.authenticate(&s));
    }

    /// A kind with a legacy format still checks the checksum of its keygate tokens.
    #[test]
    fn keygate_tokens_of_a_legacy_kind_keep_their_checksum(pos in 0usize..53, c in "[0-9A-Za-z]") {
        let store = crate::common::TestStore::default();
        let tokens = legacy_manager(store.clone());
        let token = tokens.kind("rgw").unwrap().generate();
        let s = token.expose_secret();
        let pos = 4 + pos % (s.len() - 4);
        prop_assume!(&s[pos..=pos] != c.as_str());
        let mut changed = s.to_owned();
        changed.replace_range(pos..=pos, &c);
        let denial = runtime().block_on(tokens.authenticate(&changed)).unwrap_err();
        prop_assert_eq!(denial, keygate::Denial::Malformed);
        prop_assert_eq!(store.lookups(), 0);
    }
}
