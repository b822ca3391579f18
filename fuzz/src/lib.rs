//! The checks behind keygate's fuzz targets, shared with `tests/core/fuzz_corpus.rs` (which
//! includes this file as a module and replays `fuzz/corpus/*/` through the same functions).
//!
//! Every function takes arbitrary bytes and panics only when keygate breaks one of its
//! promises: a parser panicking or accepting something outside its grammar, the management
//! API answering 5xx to a body, a client address a trusted-proxy rule says not to believe,
//! or a secret shown by a configuration error.
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
use keygate::{MemoryStore, NewToken, Permissions, Roles, TokenStore, Tokens};
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
///
/// The router is built once (building it per input cost most of each execution); the
/// store under it is emptied after every input, so inputs do not depend on each other and
/// memory does not grow with the number of executions.
pub struct ManagementHarness {
    rt: tokio::runtime::Runtime,
    store: MemoryStore,
    tokens: Tokens,
    app: Router,
    basic: HeaderValue,
}

impl Default for ManagementHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl ManagementHarness {
    /// A runtime, an account whose password hash is argon2id with the smallest parameters
    /// (the verifier takes them from the hash, so a sign-in costs microseconds), and the
    /// management router over an in-memory store.
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
        let store = MemoryStore::new();
        let tokens = Tokens::builder(store.clone())
            .roles(Roles::deployment_platform())
            .build()
            .expect("tokens");
        let app = Router::new().nest(
            "/api/v1",
            Management::new(tokens.clone(), accounts).router(),
        );
        Self {
            rt,
            store,
            tokens,
            app,
            basic,
        }
    }

    /// Sends `data` as the four bodies; panics on a 5xx or a malformed answer.
    pub fn body(&self, data: &[u8]) {
        self.rt.block_on(async {
            self.run(data).await;
            self.reset().await;
        });
    }

    /// Empties the store: every token revoked, then every record deleted.
    async fn reset(&self) {
        let now = self.tokens.now();
        for record in self.store.list_by_owner(OWNER).await.expect("list") {
            self.store.revoke(&record.id, now).await.expect("revoke");
        }
        let later = now + time::Duration::days(365 * 1000);
        self.store.purge_expired(later).await.expect("purge");
        assert!(self.store.is_empty(), "a record outlived its input");
    }

    async fn run(&self, data: &[u8]) {
        let target = self
            .tokens
            .issue(NewToken::new(OWNER, "target").role("viewer"))
            .await
            .expect("issue");
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
                let res = self.app.clone().oneshot(req).await.expect("infallible");
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
                    // Keep the name free for the next body of this input.
                    if path == "/api/v1/tokens" {
                        let id = v["id"].as_str().expect("id").parse().expect("uuid");
                        self.tokens.revoke(OWNER, id).await.expect("revoke");
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

/// The networks the client-address target may trust (a selector byte picks which).
const PROXY_NETS: [&str; 6] = [
    "10.0.0.0/8",
    "192.0.2.1/32",
    "2001:db8::/32",
    "::1/128",
    "0.0.0.0/0",
    "198.51.100.0/24",
];

/// The peers the client-address target connects from.
const PEERS: [&str; 8] = [
    "10.0.0.2:443",
    "192.0.2.1:80",
    "[2001:db8::5]:443",
    "[::1]:8080",
    "203.0.113.9:5000",
    "[::ffff:10.1.2.3]:443",
    "198.51.100.7:1",
    "[2001:db9::1]:443",
];

/// The header names an input's lines are sent as.
const FORWARDING_HEADERS: [&str; 5] = [
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "cf-connecting-ip",
    "x-client-ip",
];

/// `ClientIpSource::resolve` on arbitrary forwarding headers. The first byte picks the
/// header the proxies set, the second the peer (or none), the third the trusted networks;
/// the rest is lines, each a header whose name the line's first byte picks.
///
/// Checks what the module promises: an untrusted peer's headers are never read; a trusted
/// peer's client is the peer, unknown, or an address written in the configured header;
/// only that header is read; what stands left of the client in a list is never read; a
/// single-value header sent twice or holding a list is unreadable; addresses are canonical.
pub fn client_ip(data: &[u8]) {
    use keygate::client_ip::{ClientAddr, ClientIpHeader, ClientIpSource};
    use std::net::IpAddr;

    let [which, peer_byte, nets_byte, rest @ ..] = data else {
        return;
    };
    let header = match which % 5 {
        0 => ClientIpHeader::XForwardedFor,
        1 => ClientIpHeader::Forwarded,
        2 => ClientIpHeader::XRealIp,
        3 => ClientIpHeader::parse("CF-Connecting-IP").expect("header name"),
        _ => ClientIpHeader::single("x-client-ip").expect("header name"),
    };
    let list = matches!(
        header,
        ClientIpHeader::XForwardedFor | ClientIpHeader::Forwarded
    );
    let nets: Vec<ipnet::IpNet> = PROXY_NETS
        .iter()
        .enumerate()
        .filter(|(i, _)| nets_byte & (1 << i) != 0)
        .map(|(_, n)| n.parse().expect("net"))
        .collect();
    let source = ClientIpSource::new()
        .trust_proxies(nets.iter().copied())
        .with_header(header.clone());
    let trusted = |ip: IpAddr| nets.iter().any(|n| n.contains(&ip));

    let mut extensions = http::Extensions::new();
    let peer: Option<std::net::SocketAddr> =
        (peer_byte & 0x80 == 0).then(|| PEERS[usize::from(peer_byte % 8)].parse().expect("peer"));
    if let Some(p) = peer {
        if peer_byte & 0x40 == 0 {
            extensions.insert(ClientAddr(p));
        } else {
            extensions.insert(axum::extract::ConnectInfo(p));
        }
    }
    let peer_ip = peer.map(|p| canonical(p.ip()));

    let mut headers = http::HeaderMap::new();
    let mut configured = http::HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        let Some((&name, value)) = line.split_first() else {
            continue;
        };
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue;
        };
        let name = FORWARDING_HEADERS[usize::from(name % 5)];
        if name == header.name() {
            configured.append(name, value.clone());
        }
        headers.append(name, value);
    }

    let got = source.resolve(&extensions, &headers);
    assert_eq!(got.peer, peer_ip, "the peer is the connection's");
    assert_eq!(got.failure_key(), got.client.or(got.peer));
    for ip in [got.client, got.peer].into_iter().flatten() {
        if let IpAddr::V6(v6) = ip {
            assert!(v6.to_ipv4_mapped().is_none(), "{ip} is not canonical");
        }
    }
    let Some(peer_ip) = peer_ip else {
        assert_eq!(got.client, None, "a client without a peer");
        return;
    };
    if !trusted(peer_ip) {
        assert_eq!(
            got.client,
            Some(peer_ip),
            "an untrusted peer's header was read"
        );
        return;
    }
    // Only the configured header is read.
    assert_eq!(
        source.resolve(&extensions, &configured),
        got,
        "another header than {} changed the client",
        header.name()
    );
    let values: Vec<&HeaderValue> = configured.get_all(header.name()).iter().collect();
    if values.is_empty() {
        assert_eq!(
            got.client,
            Some(peer_ip),
            "no header: the proxy is the client"
        );
    }
    if let Some(client) = got.client
        && client != peer_ip
    {
        assert!(
            values.iter().any(|v| written_in(v.as_bytes(), client)),
            "{client} is not in the {} header",
            header.name()
        );
    }
    if !list {
        if values.len() > 1 || values.iter().any(|v| v.as_bytes().contains(&b',')) {
            assert_eq!(got.client, None, "a single-value header read as a list");
        }
        return;
    }
    // Left of an untrusted client (or of an unreadable hop) nothing is read: another
    // value sent first changes nothing.
    if !values.is_empty() && got.client.is_none_or(|c| !trusted(c)) {
        for first in ["6.6.6.6", "unknown", "for=6.6.6.6", "10.0.0.1", "garbage"] {
            let name = http::HeaderName::try_from(header.name()).expect("header name");
            let mut more = http::HeaderMap::new();
            more.append(name.clone(), HeaderValue::from_static(first));
            for v in &values {
                more.append(name.clone(), (*v).clone());
            }
            assert_eq!(
                source.resolve(&extensions, &more).client,
                got.client,
                "{first:?} left of the client was read"
            );
        }
    }
}

fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is written somewhere in `value`: a piece between separators that parses
/// as that address (bare, `v4:port`, or the inside of `[...]`).
fn written_in(value: &[u8], ip: std::net::IpAddr) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    text.split([',', ';', '=', '"', ' ', '\t', '[', ']'])
        .filter_map(|piece| {
            piece
                .parse::<std::net::IpAddr>()
                .ok()
                .or_else(|| piece.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        })
        .any(|found| canonical(found) == ip)
}

/// The secret the configuration target gives (as the admin password, inside the database
/// and Redis URLs and the peppers) and looks for in every error and `Debug` output.
const SECRET: &str = "Zk7SecretQ4";

/// The loader on arbitrary input: the first byte picks where the harness adds secrets
/// (flags, environment, file; valid or not), the rest is the TOML file, then after a NUL
/// the environment (`NAME=value` lines), then after another NUL the flags (`key=value`).
///
/// Checks: no panic; an error lists at least one
/// problem, each on one line of its display, each naming where it was given; no secret in
/// an error or in the configuration's `Debug`; a flag wins over the rest.
pub fn config(data: &[u8]) {
    use keygate::server::Config;

    let [select, rest @ ..] = data else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if text.contains(SECRET) {
        return;
    }
    let mut parts = text.splitn(3, '\0');
    let file = parts.next().unwrap_or_default();
    let pairs = |part: Option<&str>| -> Vec<(String, String)> {
        part.unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    let mut env = pairs(parts.next());
    let mut flags = pairs(parts.next());
    // A secret's file is read: only names in the working directory, never a device.
    let local = |v: &str| !v.contains(['/', '\\']);
    if env
        .iter()
        .chain(&flags)
        .any(|(k, v)| k.to_ascii_lowercase().ends_with("_file") && !local(v))
    {
        return;
    }
    // (Without `_file` or an escape, no key of the file can end in `_file`.)
    if (file.contains("_file") || file.contains('\\'))
        && let Ok(table) = toml::from_str::<toml::Table>(file)
        && table
            .iter()
            .any(|(k, v)| k.ends_with("_file") && !v.as_str().is_some_and(local))
    {
        return;
    }

    let password = format!("pw-{SECRET}");
    let (db, redis) = if select & 0x80 == 0 {
        (
            format!("postgres://keygate:{SECRET}@db.example/keygate"),
            format!("redis://:{SECRET}@redis.example:6379"),
        )
    } else {
        // Values that do not parse, holding the secret.
        (
            format!("postgres://keygate:{SECRET}@[db.example/keygate"),
            format!("{SECRET}@redis.example:6379"),
        )
    };
    // A pepper (base64) holding the secret: 44 characters, 33 bytes; with the high bit, one
    // that does not parse.
    let pepper = if select & 0x80 == 0 {
        format!("{SECRET}{}", "A".repeat(33))
    } else {
        format!("{SECRET}!")
    };
    let mut file = file.to_owned();
    if select & 0x01 != 0 {
        env.push(("KEYGATE_ADMIN_PASSWORD".into(), password.clone()));
        env.push(("KEYGATE_PEPPER".into(), pepper.clone()));
    }
    if select & 0x02 != 0 {
        flags.push(("admin_password".into(), password.clone()));
    }
    if select & 0x04 != 0 {
        env.push(("KEYGATE_DB".into(), db.clone()));
    }
    if select & 0x08 != 0 {
        flags.push(("db".into(), db.clone()));
    }
    if select & 0x10 != 0 {
        env.push(("KEYGATE_REDIS_URL".into(), redis.clone()));
    }
    if select & 0x20 != 0 {
        flags.push(("redis_url".into(), redis.clone()));
    }
    if select & 0x40 != 0 {
        file = format!(
            "admin_password = {password:?}\ndb = {db:?}\nredis_url = {redis:?}\n\
             previous_peppers = [{pepper:?}]\n{file}"
        );
    }
    let load = {
        let mut loader = Config::loader()
            .with_env(env)
            .with_file_text("keygate.toml", file);
        for (k, v) in flags {
            loader = loader.with_flag(k, v);
        }
        loader.load()
    };
    match load {
        Ok(config) => {
            let debug = format!("{config:?}");
            assert!(!debug.contains(SECRET), "a secret in the Debug: {debug}");
            assert!(!config.describe_db().contains(SECRET));
            assert!(!config.kinds.is_empty(), "no token kind");
            assert!(config.rate_limit > 0 && config.failure_limit > 0);
            assert!(!config.store_timeout.is_zero() && !config.drain_timeout.is_zero());
            if select & 0x02 != 0 {
                assert_eq!(
                    config.admin_password.as_deref().map(String::as_str),
                    Some(password.as_str()),
                    "the flag did not win"
                );
            }
        }
        Err(e) => {
            assert!(!e.problems().is_empty(), "an error without a problem");
            let shown = e.to_string();
            let debug = format!("{e:?}");
            assert!(!shown.contains(SECRET), "a secret in the error: {shown}");
            assert!(!debug.contains(SECRET), "a secret in the error's Debug");
            assert_eq!(
                shown.lines().count(),
                e.problems().len(),
                "one problem a line: {shown:?}"
            );
            for p in e.problems() {
                assert!(!p.source.trim().is_empty(), "a problem from nowhere: {p:?}");
                assert!(!p.message.trim().is_empty(), "a problem without a message");
            }
        }
    }
}
