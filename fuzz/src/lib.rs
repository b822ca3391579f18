//! The checks behind keygate's fuzz targets, shared with `tests/core/fuzz_corpus.rs` (which
//! includes this file as a module and replays `fuzz/corpus/*/` through the same functions).
//!
//! Every function takes arbitrary bytes and panics only when keygate breaks one of its
//! promises: a parser panicking, accepting something outside its grammar, or the management
//! API answering 5xx to a body.
#![forbid(unsafe_code)]

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::Router;
use axum::body::Body;
use base64::Engine;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::accounts::{Account, AccountStore, MemoryAccounts};
use keygate::axum::management::Management;
use keygate::header::{Credentials, MAX_HEADER_LEN, parse_authorization, parse_basic};
use keygate::token::{self, HINT_LEN, MAX_TOKEN_LEN, TokenHash};
use keygate::{MemoryStore, NewToken, Permissions, Roles, Tokens};
use tower::ServiceExt;

fn is_token68(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

/// `parse_authorization` on arbitrary bytes; on success, the credential goes on to
/// `token::parse` (Bearer) or `parse_basic` (Basic).
pub fn authorization_header(data: &[u8]) {
    let Ok(credentials) = parse_authorization(data) else {
        return;
    };
    assert!(data.len() <= MAX_HEADER_LEN, "accepted an over-long value");
    assert!(
        HeaderValue::from_bytes(data).is_ok(),
        "accepted a value no HTTP header can carry"
    );
    match credentials {
        Credentials::Bearer(t) | Credentials::Basic(t) => {
            assert!(!t.is_empty(), "empty credential accepted");
            assert!(t.bytes().all(is_token68), "credential outside token68");
            assert!(
                !t.starts_with('='),
                "credential made of padding only accepted"
            );
            assert!(
                data.ends_with(t.as_bytes()),
                "the credential must be the end of the value"
            );
            if matches!(credentials, Credentials::Bearer(_)) {
                check_token(t);
            } else {
                check_basic(t);
            }
        }
        Credentials::Other => {
            assert!(
                data.iter().all(|&b| b == b' ' || b.is_ascii_graphic()),
                "another scheme with invisible bytes accepted"
            );
        }
    }
}

/// `token::parse` on arbitrary text.
pub fn token(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        check_token(s);
    }
}

fn check_token(s: &str) {
    let ok = token::looks_like_token(s);
    let Ok(parsed) = token::parse(s) else {
        assert!(!ok);
        return;
    };
    assert!(ok);
    assert!(s.len() <= MAX_TOKEN_LEN);
    assert!(s.starts_with(parsed.prefix()));
    assert_eq!(s.as_bytes()[parsed.prefix().len()], b'_');
    assert_eq!(parsed.hint().len(), HINT_LEN);
    assert!(s.starts_with(parsed.hint()));
    assert!(parsed.hash().ct_eq(&TokenHash::of(s)));
    assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
}

/// `parse_basic` on arbitrary text, and on the base64 encoding of arbitrary bytes (which
/// reaches the colon split and the control-character check).
pub fn basic(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        check_basic(s);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    match parse_basic(&encoded) {
        Ok(c) => {
            let joined = format!("{}:{}", c.user, c.password.as_str());
            assert_eq!(joined.as_bytes(), data, "user:password must be the input");
        }
        Err(_) => {
            let valid = std::str::from_utf8(data).is_ok_and(|t| {
                t.split_once(':')
                    .is_some_and(|(u, _)| !u.is_empty() && !t.chars().any(char::is_control))
            });
            assert!(!valid, "well-formed credentials refused");
        }
    }
}

fn check_basic(s: &str) {
    if let Ok(c) = parse_basic(s) {
        assert!(!c.user.is_empty());
        assert!(!c.user.contains(':'), "split at the first colon");
        assert!(!c.user.chars().any(char::is_control));
        assert!(!c.password.chars().any(char::is_control));
        assert!(format!("{c:?}").contains("[REDACTED]"));
    }
}

/// The account the management harness signs in as.
pub const OWNER: &str = "fuzz@example.com";
const PASSWORD: &str = "fuzz password";

/// Drives the management router (nested under `/api/v1`) on a current-thread runtime:
/// each input is sent as a JSON and as a form body to `POST /tokens` and to
/// `POST /tokens/{id}/rotate`, with valid Basic credentials.
pub struct ManagementHarness {
    rt: tokio::runtime::Runtime,
    accounts: MemoryAccounts,
    basic: HeaderValue,
}

impl Default for ManagementHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl ManagementHarness {
    /// A runtime and an account whose password hash is argon2id with the smallest
    /// parameters (the verifier takes them from the hash), so a sign-in costs microseconds.
    ///
    /// # Panics
    ///
    /// If the runtime cannot start.
    #[must_use]
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let params = Params::new(8, 1, 1, None).expect("argon2 params");
        let salt = SaltString::encode_b64(b"keygate-fuzz-salt").expect("salt");
        let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(PASSWORD.as_bytes(), &salt)
            .expect("hash")
            .to_string();
        let accounts = MemoryAccounts::new();
        rt.block_on(accounts.put_account(Account {
            email: OWNER.into(),
            password_hash: hash,
            permissions: Permissions::parse(["*"]).expect("permissions"),
            created_at: time_now(),
        }))
        .expect("account");
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{OWNER}:{PASSWORD}"));
        let basic = HeaderValue::try_from(format!("Basic {encoded}")).expect("header");
        Self {
            rt,
            accounts,
            basic,
        }
    }

    /// Sends `data` as the four bodies; panics on a 5xx or a malformed answer.
    pub fn body(&self, data: &[u8]) {
        self.rt.block_on(self.run(data));
    }

    async fn run(&self, data: &[u8]) {
        // Fresh tokens every time, so inputs do not depend on each other.
        let tokens = Tokens::builder(MemoryStore::new())
            .roles(Roles::deployment_platform())
            .build()
            .expect("tokens");
        let target = tokens
            .issue(NewToken::new(OWNER, "target").role("viewer"))
            .await
            .expect("issue");
        let app = Router::new().nest(
            "/api/v1",
            Management::new(tokens.clone(), self.accounts.clone()).router(),
        );
        let rotate = format!("/api/v1/tokens/{}/rotate", target.record.id);
        for path in ["/api/v1/tokens", rotate.as_str()] {
            for content_type in ["application/json", "application/x-www-form-urlencoded"] {
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(path)
                    .header(header::AUTHORIZATION, self.basic.clone())
                    .header(header::CONTENT_TYPE, content_type)
                    .body(Body::from(data.to_vec()))
                    .expect("request");
                let res = app.clone().oneshot(req).await.expect("infallible");
                let status = res.status();
                let bytes = res.into_body().collect().await.expect("body").to_bytes();
                let text = String::from_utf8_lossy(&bytes);
                assert!(
                    !status.is_server_error(),
                    "{path} as {content_type}: {status} {text}"
                );
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
                if status == StatusCode::CREATED {
                    let t = v["token"].as_str().expect("a token in a 201");
                    assert!(token::looks_like_token(t));
                    // Keep the store small and the name free for the next input.
                    if path == "/api/v1/tokens" {
                        let id = v["id"].as_str().expect("id").parse().expect("uuid");
                        tokens.revoke(OWNER, id).await.expect("revoke");
                    }
                } else {
                    assert!(
                        status.is_client_error(),
                        "{path}: unexpected {status} {text}"
                    );
                    assert!(v["code"].is_string(), "{path}: no code in {text}");
                    assert!(v["error"].is_string(), "{path}: no error in {text}");
                }
            }
        }
    }
}

fn time_now() -> time::OffsetDateTime {
    Tokens::new(MemoryStore::new()).now()
}
