//! Hostile requests through `AuthLayer` (over a small counting service) and through the
//! management router nested under `/api/v1`, driven with `tower::ServiceExt::oneshot`.
//!
//! Each case asserts its exact status and error `code`, that nothing answers 5xx, and that
//! the inner service never runs for a refused request (and, for garbage, that the store is
//! never asked).
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use base64::Engine;
use bytes::Bytes;
use common::{TestStore, basic, echo};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
use keygate::axum::management::Management;
use keygate::{
    AuthLayer, NewToken, Permissions, RawToken, RejectionKind, Roles, TokenKind, Tokens,
};
use serde_json::Value;
use tower::{Layer, ServiceExt};

// ---------------------------------------------------------------------------------------
// Through the layer
// ---------------------------------------------------------------------------------------

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
    kind: Option<RejectionKind>,
}

impl Reply {
    fn code(&self) -> String {
        let v: Value = serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text));
        v["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// An `AuthLayer` accepting only `pat` tokens, over a service that counts its calls.
struct LayerFixture {
    store: TestStore,
    tokens: Tokens,
    calls: Arc<AtomicUsize>,
    layer: AuthLayer,
    /// A live `pat` token.
    valid: RawToken,
    /// A live token of the other kind (`rgw`), refused by this layer.
    other_kind: RawToken,
}

async fn layer_fixture() -> LayerFixture {
    let store = TestStore::default();
    let tokens = Tokens::builder(store.clone())
        .kind(TokenKind::pat())
        .kind(TokenKind::new("gateway", "rgw").unwrap())
        .build()
        .unwrap();
    let valid = tokens
        .issue(NewToken::new("alice", "laptop"))
        .await
        .unwrap()
        .token;
    let other_kind = tokens
        .issue(NewToken::new("alice", "gateway").kind("gateway"))
        .await
        .unwrap()
        .token;
    let layer = AuthLayer::new(tokens.clone())
        .accept_kinds(["pat"])
        .unwrap();
    LayerFixture {
        store,
        tokens,
        calls: Arc::default(),
        layer,
        valid,
        other_kind,
    }
}

impl LayerFixture {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let svc = self.layer.clone().layer(echo(self.calls.clone()));
        let res = svc.oneshot(req).await.unwrap();
        let kind = res.extensions().get::<RejectionKind>().copied();
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
            kind,
        }
    }

    /// Sends a GET with these raw `Authorization` values.
    async fn with_auth(&self, values: &[HeaderValue]) -> Reply {
        let mut req = Request::get("/things").body(Full::default()).unwrap();
        for v in values {
            req.headers_mut().append(header::AUTHORIZATION, v.clone());
        }
        self.send(req).await
    }

    /// Asserts a refusal: status, code, rejection kind, a JSON body, no call of the inner
    /// service (the fixture never lets a token through before these), and `lookups` store
    /// lookups so far.
    #[track_caller]
    fn refused(
        &self,
        what: &str,
        r: &Reply,
        status: StatusCode,
        code: &str,
        kind: RejectionKind,
        lookups: usize,
    ) {
        assert!(
            !r.status.is_server_error(),
            "{what}: {} {}",
            r.status,
            r.text
        );
        assert_eq!(r.status, status, "{what}: {}", r.text);
        assert_eq!(r.code(), code, "{what}");
        assert_eq!(r.kind, Some(kind), "{what}");
        assert_eq!(
            r.headers[header::CONTENT_TYPE],
            "application/json",
            "{what}"
        );
        assert_eq!(self.calls(), 0, "{what}: the handler ran");
        assert_eq!(self.store.lookups(), lookups, "{what}: store lookups");
    }
}

fn hv(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes)
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(bytes)))
}

#[test]
fn http_refuses_cr_lf_nul_and_other_controls_in_header_values() {
    // What a client or proxy cannot even put into a request: every control byte but HTAB,
    // and DEL. (hyper refuses them on the wire for the same reason.)
    for b in (0u8..0x20).chain([0x7f]) {
        let value = [b"Bearer a".as_slice(), &[b], b"b"].concat();
        if b == b'\t' {
            assert!(HeaderValue::from_bytes(&value).is_ok());
        } else {
            assert!(HeaderValue::from_bytes(&value).is_err(), "byte {b:#04x}");
        }
    }
    assert!(HeaderValue::from_bytes(b"Bearer a\r\nX-Injected: 1").is_err());
    assert!(HeaderValue::from_str("Bearer a\0").is_err());
    assert!(
        Request::get("/")
            .header(header::AUTHORIZATION, "Bearer a\r\nb")
            .body(())
            .is_err()
    );
    // obs-text (0x80..=0xFF) is allowed by `http`: the layer has to refuse it itself.
    assert!(HeaderValue::from_bytes(b"Bearer \xff\xfe").is_ok());
}

#[tokio::test]
async fn malformed_authorization_values_get_400_invalid_request_without_a_lookup() {
    let f = layer_fixture().await;
    let tok = f.valid.expose_secret().to_owned();
    let big = |scheme: &str| {
        let mut v = format!("{scheme} ").into_bytes();
        v.resize(64 * 1024, b'a');
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("64 KiB Bearer value", big("Bearer")),
        ("64 KiB Basic value", big("Basic")),
        ("64 KiB value of another scheme", big("Digest")),
        ("64 KiB of spaces before a valid token", {
            let mut v = b"Bearer".to_vec();
            v.resize(64 * 1024 - tok.len(), b' ');
            v.extend_from_slice(tok.as_bytes());
            v
        }),
        ("64 KiB value ending in a valid token", {
            let mut v = b"Bearer ".to_vec();
            v.resize(64 * 1024 - tok.len(), b'=');
            v.extend_from_slice(tok.as_bytes());
            v
        }),
        (
            "UTF-8 in the token",
            format!("Bearer {}é", &tok[..20]).into_bytes(),
        ),
        ("non-UTF-8 token", b"Bearer \xff\xfe\xfd".to_vec()),
        (
            "non-UTF-8 after a valid token",
            [format!("Bearer {tok}").as_bytes(), b"\xff"].concat(),
        ),
        (
            "non-ASCII scheme",
            format!("B\u{e9}arer {tok}").into_bytes(),
        ),
        ("obs-text in another scheme", b"Digest \x80".to_vec()),
        (
            "tab instead of the space",
            format!("Bearer\t{tok}").into_bytes(),
        ),
        (
            "tab after the token",
            format!("Bearer {tok}\t").into_bytes(),
        ),
        (
            "tab inside the token",
            format!("Bearer {}\t{}", &tok[..9], &tok[9..]).into_bytes(),
        ),
        ("trailing space", format!("Bearer {tok} ").into_bytes()),
        ("leading space", format!(" Bearer {tok}").into_bytes()),
        (
            "two credentials",
            format!("Bearer {tok} {tok}").into_bytes(),
        ),
        (
            "proxy-merged list",
            format!("Bearer {tok}, Bearer {tok}").into_bytes(),
        ),
        (
            "comma list without space",
            format!("Bearer {tok},Bearer {tok}").into_bytes(),
        ),
        ("Bearer with no token", b"Bearer".to_vec()),
        ("Bearer and a space", b"Bearer ".to_vec()),
        ("Bearer and spaces", b"Bearer     ".to_vec()),
        ("padding only", b"Bearer ===".to_vec()),
        ("quoted token", format!("Bearer \"{tok}\"").into_bytes()),
        (
            "auth-param instead of token68",
            b"Bearer token=abc".to_vec(),
        ),
        (
            "Basic with invalid base64 characters",
            b"Basic %%%".to_vec(),
        ),
        ("Basic with no credential", b"Basic".to_vec()),
        ("empty value", b"".to_vec()),
    ];
    for (what, value) in cases {
        let r = f.with_auth(&[hv(&value)]).await;
        f.refused(
            what,
            &r,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            RejectionKind::InvalidRequest,
            0,
        );
        assert_eq!(
            r.headers[header::WWW_AUTHENTICATE],
            r#"Bearer error="invalid_request""#,
            "{what}"
        );
        // Nothing of the presented bytes comes back.
        assert!(!r.text.contains(&tok[4..]), "{what}");
    }
}

#[tokio::test]
async fn several_authorization_headers_get_400_in_every_order() {
    let f = layer_fixture().await;
    let valid = hv(format!("Bearer {}", f.valid.expose_secret()).as_bytes());
    let basic = hv(b"Basic YWxpY2U6cHc=");
    let garbage = hv(b"Bearer x");
    for (what, values) in [
        (
            "the same valid token twice",
            vec![valid.clone(), valid.clone()],
        ),
        ("valid then garbage", vec![valid.clone(), garbage.clone()]),
        ("garbage then valid", vec![garbage.clone(), valid.clone()]),
        ("Basic then Bearer", vec![basic.clone(), valid.clone()]),
        ("Bearer then Basic", vec![valid.clone(), basic]),
        ("1,000 copies of a valid token", vec![valid.clone(); 1000]),
    ] {
        let r = f.with_auth(&values).await;
        f.refused(
            what,
            &r,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            RejectionKind::InvalidRequest,
            0,
        );
    }
}

#[tokio::test]
async fn well_formed_but_unacceptable_tokens_get_401_invalid_token() {
    let f = layer_fixture().await;
    let tok = f.valid.expose_secret().to_owned();
    let unknown = TokenKind::pat().generate();
    let foreign = TokenKind::new("tokencraft", "dtk").unwrap().generate();
    let mut typo = tok.clone().into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).unwrap();

    // Refused before the store: shape, prefix or checksum.
    for (what, value) in [
        ("checksum typo", format!("Bearer {typo}")),
        (
            "unknown prefix with a valid checksum",
            format!("Bearer {}", foreign.expose_secret()),
        ),
        ("padding after a valid token", format!("Bearer {tok}==")),
        ("upper-case token", format!("Bearer {}", tok.to_uppercase())),
        ("token68 but not a token", "Bearer abc.def~ghi+/".to_owned()),
        (
            "over the longest token",
            format!("Bearer {}", "a".repeat(200)),
        ),
        ("prefix only", "Bearer pat_".to_owned()),
    ] {
        let r = f.with_auth(&[hv(value.as_bytes())]).await;
        f.refused(
            what,
            &r,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            RejectionKind::MalformedToken,
            0,
        );
        assert_eq!(
            r.headers[header::WWW_AUTHENTICATE],
            r#"Bearer error="invalid_token""#,
            "{what}"
        );
    }
    // A valid checksum, but no such token: one lookup.
    let r = f
        .with_auth(&[hv(format!("Bearer {}", unknown.expose_secret()).as_bytes())])
        .await;
    f.refused(
        "unknown token",
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        RejectionKind::UnknownToken,
        1,
    );
    // A live token of a kind this layer does not accept.
    let r = f
        .with_auth(&[hv(
            format!("Bearer {}", f.other_kind.expose_secret()).as_bytes()
        )])
        .await;
    f.refused(
        "token of the wrong kind",
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        RejectionKind::WrongKind,
        2,
    );
    // The same body for all of them.
    assert_eq!(
        r.text,
        r#"{"error":"Invalid API token","code":"invalid_token"}"#
    );
    // Several spaces before an unknown token are allowed by the grammar: it is looked up.
    let r = f
        .with_auth(&[hv(
            format!("Bearer      {}", unknown.expose_secret()).as_bytes()
        )])
        .await;
    f.refused(
        "unknown token after several spaces",
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        RejectionKind::UnknownToken,
        3,
    );
    // Revoked: one more lookup, the same answer.
    let id = f.tokens.list("alice").await.unwrap()[0].id;
    f.tokens.revoke("alice", id).await.unwrap();
    let r = f.with_auth(&[hv(format!("Bearer {tok}").as_bytes())]).await;
    f.refused(
        "revoked token",
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        RejectionKind::Revoked,
        4,
    );
}

#[tokio::test]
async fn no_usable_credentials_get_401_missing_token() {
    let f = layer_fixture().await;
    let tok = f.valid.expose_secret().to_owned();
    let enc = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    // Basic on a bearer route is not a credential keygate takes, however broken its
    // content: the layer never decodes it.
    for (what, value) in [
        (
            "Basic without a colon",
            format!("Basic {}", enc(b"nocolon")),
        ),
        ("Basic with bad base64 padding", "Basic YQ".to_owned()),
        (
            "Basic with non-UTF-8 credentials",
            format!("Basic {}", enc(b"a:\xff")),
        ),
        (
            "Basic with a NUL in the password",
            format!("Basic {}", enc(b"a:b\0c")),
        ),
        ("another scheme", format!("Token {tok}")),
        (
            "Digest",
            r#"Digest username="alice", realm="api""#.to_owned(),
        ),
    ] {
        let r = f.with_auth(&[hv(value.as_bytes())]).await;
        f.refused(
            what,
            &r,
            StatusCode::UNAUTHORIZED,
            "missing_token",
            RejectionKind::MissingToken,
            0,
        );
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], r#"Bearer realm="api""#);
    }
    // The token in the query string is not looked at (RFC 6750 §5.3).
    let req = Request::get(format!("/things?access_token={tok}"))
        .body(Full::default())
        .unwrap();
    let r = f.send(req).await;
    f.refused(
        "token in the query string",
        &r,
        StatusCode::UNAUTHORIZED,
        "missing_token",
        RejectionKind::MissingToken,
        0,
    );
    // 1,000 other headers change nothing.
    let mut req = Request::get("/things").body(Full::default()).unwrap();
    for i in 0..1000 {
        req.headers_mut().append(
            HeaderName::from_bytes(format!("x-junk-{i}").as_bytes()).unwrap(),
            HeaderValue::from_static("Bearer x"),
        );
    }
    let r = f.send(req).await;
    f.refused(
        "1,000 headers and no Authorization",
        &r,
        StatusCode::UNAUTHORIZED,
        "missing_token",
        RejectionKind::MissingToken,
        0,
    );
}

#[tokio::test]
async fn what_the_grammar_allows_still_works() {
    // The control group: the hostile cases above fail for their own reason, not because
    // the fixture is broken.
    let f = layer_fixture().await;
    let tok = f.valid.expose_secret().to_owned();
    for value in [
        format!("Bearer {tok}"),
        format!("bEaReR {tok}"),
        format!("Bearer      {tok}"),
    ] {
        let r = f.with_auth(&[hv(value.as_bytes())]).await;
        assert_eq!(r.status, StatusCode::OK, "{value:.12}: {}", r.text);
        assert_eq!(r.text, "alice");
    }
    let mut req = Request::get("/things").body(Full::default()).unwrap();
    for i in 0..1000 {
        req.headers_mut().append(
            HeaderName::from_bytes(format!("x-junk-{i}").as_bytes()).unwrap(),
            HeaderValue::from_static("junk"),
        );
    }
    req.headers_mut().insert(
        header::AUTHORIZATION,
        hv(format!("Bearer {tok}").as_bytes()),
    );
    assert_eq!(f.send(req).await.status, StatusCode::OK);
    assert_eq!(f.calls(), 4);
}

// ---------------------------------------------------------------------------------------
// Through the management router
// ---------------------------------------------------------------------------------------

const ADMIN: &str = "admin@example.com";
const PASSWORD: &str = "correct horse battery staple";

fn password_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password(PASSWORD).unwrap())
        .clone()
}

struct Api {
    app: Router,
    tokens: Tokens,
    /// A live token with every permission (`*`), and its id.
    token: String,
    id: String,
}

async fn api() -> Api {
    let tokens = Tokens::builder(keygate::MemoryStore::new())
        .roles(Roles::deployment_platform())
        .build()
        .unwrap();
    let accounts = MemoryAccounts::new();
    accounts
        .put_account(Account {
            email: ADMIN.into(),
            password_hash: password_hash(),
            permissions: Permissions::parse(["*"]).unwrap(),
            created_at: tokens.now(),
        })
        .await
        .unwrap();
    let app = Router::new().nest(
        "/api/v1",
        Management::new(tokens.clone(), accounts).router(),
    );
    let issued = tokens
        .issue(NewToken::new(ADMIN, "root").permissions(Permissions::parse(["*"]).unwrap()))
        .await
        .unwrap();
    Api {
        app,
        tokens,
        token: issued.token.expose_secret().to_owned(),
        id: issued.record.id.to_string(),
    }
}

struct ApiReply {
    status: StatusCode,
    text: String,
}

impl ApiReply {
    /// Asserts an error answer of exactly this status and code, in the `{"error","code"}`
    /// shape.
    #[track_caller]
    fn error(&self, what: &str, status: StatusCode, code: &str) {
        assert!(
            !self.status.is_server_error(),
            "{what}: {} {}",
            self.status,
            self.text
        );
        assert_eq!(self.status, status, "{what}: {}", self.text);
        let v: Value = serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", self.text));
        assert_eq!(v["code"], code, "{what}: {}", self.text);
        assert!(v["error"].is_string(), "{what}: {}", self.text);
        assert_eq!(v.as_object().unwrap().len(), 2, "{what}: {}", self.text);
    }
}

impl Api {
    async fn send(&self, req: Request<Body>) -> ApiReply {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        ApiReply {
            status,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn with_auth(&self, method: Method, path: &str, values: &[HeaderValue]) -> ApiReply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        for v in values {
            req.headers_mut().append(header::AUTHORIZATION, v.clone());
        }
        self.send(req).await
    }

    async fn post(&self, path: &str, content_type: &str, body: impl Into<Body>) -> ApiReply {
        let req = Request::post(path)
            .header(header::AUTHORIZATION, basic(ADMIN, PASSWORD))
            .header(header::CONTENT_TYPE, content_type)
            .body(body.into())
            .unwrap();
        self.send(req).await
    }

    async fn live_tokens(&self) -> usize {
        let now = self.tokens.now();
        self.tokens
            .list(ADMIN)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.is_live_at(now))
            .count()
    }
}

#[tokio::test]
async fn management_hostile_authorization_headers() {
    let a = api().await;
    let enc = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let mut big = b"Bearer ".to_vec();
    big.resize(64 * 1024, b'a');
    let mut big_basic = b"Basic ".to_vec();
    big_basic.resize(64 * 1024, b'A');
    let valid_bearer = hv(format!("Bearer {}", a.token).as_bytes());
    let admin = hv(basic(ADMIN, PASSWORD).as_bytes());
    let unknown = TokenKind::pat().generate();
    let foreign = TokenKind::new("tokencraft", "dtk").unwrap().generate();
    let list = "/api/v1/tokens";
    let bad = StatusCode::BAD_REQUEST;
    let unauthorized = StatusCode::UNAUTHORIZED;

    // Where a bearer token is accepted (GET /tokens), header failures render like the layer.
    let cases: Vec<(&str, Vec<HeaderValue>, StatusCode, &str)> = vec![
        ("64 KiB Bearer", vec![hv(&big)], bad, "invalid_request"),
        ("64 KiB Basic", vec![hv(&big_basic)], bad, "invalid_request"),
        (
            "non-UTF-8 Bearer",
            vec![hv(b"Bearer \xff\xfe")],
            bad,
            "invalid_request",
        ),
        (
            "UTF-8 Bearer",
            vec![hv("Bearer pät".as_bytes())],
            bad,
            "invalid_request",
        ),
        (
            "tab after the scheme",
            vec![hv(format!("Bearer\t{}", a.token).as_bytes())],
            bad,
            "invalid_request",
        ),
        (
            "Bearer with no token",
            vec![hv(b"Bearer")],
            bad,
            "invalid_request",
        ),
        (
            "Bearer and spaces",
            vec![hv(b"Bearer   ")],
            bad,
            "invalid_request",
        ),
        (
            "two Authorization headers",
            vec![valid_bearer.clone(), admin.clone()],
            bad,
            "invalid_request",
        ),
        (
            "1,000 Authorization headers",
            vec![valid_bearer.clone(); 1000],
            bad,
            "invalid_request",
        ),
        (
            "Basic without a colon",
            vec![hv(format!("Basic {}", enc(b"nocolon")).as_bytes())],
            bad,
            "invalid_request",
        ),
        (
            "Basic with bad base64 padding",
            vec![hv(b"Basic YQ")],
            bad,
            "invalid_request",
        ),
        (
            "Basic with invalid base64 characters",
            vec![hv(b"Basic %%%")],
            bad,
            "invalid_request",
        ),
        (
            "Basic with non-UTF-8 credentials",
            vec![hv(format!("Basic {}", enc(b"a:\xff")).as_bytes())],
            bad,
            "invalid_request",
        ),
        (
            "Basic with a NUL in the password",
            vec![hv(format!("Basic {}", enc(b"a:b\0c")).as_bytes())],
            bad,
            "invalid_request",
        ),
        (
            "Basic with an empty email",
            vec![hv(format!("Basic {}", enc(b":pw")).as_bytes())],
            bad,
            "invalid_request",
        ),
        (
            "unknown token with a valid checksum",
            vec![hv(format!("Bearer {}", unknown.expose_secret()).as_bytes())],
            unauthorized,
            "invalid_token",
        ),
        (
            "token of a kind the server does not know",
            vec![hv(format!("Bearer {}", foreign.expose_secret()).as_bytes())],
            unauthorized,
            "invalid_token",
        ),
        (
            "Basic with a 3,000-byte password",
            vec![hv(basic(ADMIN, &"p".repeat(3000)).as_bytes())],
            unauthorized,
            "invalid_credentials",
        ),
        (
            "another scheme",
            vec![hv(b"Digest username=\"a\"")],
            unauthorized,
            "missing_credentials",
        ),
    ];
    for (what, values, status, code) in cases {
        a.with_auth(Method::GET, list, &values)
            .await
            .error(what, status, code);
    }
    // POST /tokens takes Basic only.
    for (what, values, status, code) in [
        (
            "a valid bearer token",
            vec![valid_bearer.clone()],
            unauthorized,
            "basic_auth_required",
        ),
        (
            "Bearer garbage",
            vec![hv(b"Bearer x")],
            unauthorized,
            "basic_auth_required",
        ),
        (
            "Bearer with no token",
            vec![hv(b"Bearer")],
            bad,
            "invalid_request",
        ),
        ("64 KiB Basic", vec![hv(&big_basic)], bad, "invalid_request"),
        (
            "two Basic headers",
            vec![admin.clone(), admin.clone()],
            bad,
            "invalid_request",
        ),
        (
            "Basic without a colon",
            vec![hv(format!("Basic {}", enc(b"nocolon")).as_bytes())],
            bad,
            "invalid_request",
        ),
        (
            "no credentials",
            vec![],
            unauthorized,
            "missing_credentials",
        ),
    ] {
        a.with_auth(Method::POST, list, &values)
            .await
            .error(what, status, code);
    }
    // GET /me takes a bearer token only.
    for (what, values, status, code) in [
        ("Basic", vec![admin.clone()], unauthorized, "missing_token"),
        (
            "unknown token",
            vec![hv(format!("Bearer {}", unknown.expose_secret()).as_bytes())],
            unauthorized,
            "invalid_token",
        ),
        (
            "two bearer tokens",
            vec![valid_bearer.clone(), valid_bearer.clone()],
            bad,
            "invalid_request",
        ),
    ] {
        a.with_auth(Method::GET, "/api/v1/me", &values)
            .await
            .error(what, status, code);
    }
    assert_eq!(a.live_tokens().await, 1, "nothing was created");
}

#[tokio::test]
async fn management_hostile_bodies() {
    let a = api().await;
    let json = "application/json";
    let form = "application/x-www-form-urlencoded";
    let create = "/api/v1/tokens";
    let rotate = format!("/api/v1/tokens/{}/rotate", a.id);
    let bad = StatusCode::BAD_REQUEST;
    let too_large = StatusCode::PAYLOAD_TOO_LARGE;
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let nested_object =
        |depth: usize| format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    let big_json = format!(r#"{{"description":"{}"}}"#, "x".repeat(1024 * 1024));
    let big_form = format!("description={}", "x".repeat(1024 * 1024));

    let cases: Vec<BodyCase> = vec![
        // Over the body limit (16 KiB), announced by Content-Length (Body::from sets it).
        (
            "1 MiB JSON",
            create,
            json,
            big_json.clone().into(),
            too_large,
            "payload_too_large",
        ),
        (
            "1 MiB form",
            create,
            form,
            big_form.clone().into(),
            too_large,
            "payload_too_large",
        ),
        (
            "1 MiB JSON to rotate",
            &rotate,
            json,
            big_json.clone().into(),
            too_large,
            "payload_too_large",
        ),
        // Deeply nested JSON, within the size limit.
        (
            "8,000 nested arrays",
            create,
            json,
            nested(8000).into(),
            bad,
            "invalid_request",
        ),
        (
            "2,000 nested objects",
            create,
            json,
            nested_object(2000).into(),
            bad,
            "invalid_request",
        ),
        (
            "nested arrays as the name",
            create,
            json,
            format!(r#"{{"name":{}}}"#, nested(5000)).into(),
            bad,
            "invalid_request",
        ),
        (
            "nested arrays to rotate",
            &rotate,
            json,
            nested(8000).into(),
            bad,
            "invalid_request",
        ),
        (
            "nested grace_seconds",
            &rotate,
            json,
            format!(r#"{{"grace_seconds":{}}}"#, nested(5000)).into(),
            bad,
            "invalid_request",
        ),
        // Unknown fields.
        (
            "unknown JSON field",
            create,
            json,
            r#"{"name":"a","colour":"blue"}"#.into(),
            bad,
            "invalid_request",
        ),
        (
            "unknown form field",
            create,
            form,
            "description=x&colour=blue".into(),
            bad,
            "invalid_request",
        ),
        (
            "unknown rotate field",
            &rotate,
            json,
            r#"{"grace":5}"#.into(),
            bad,
            "invalid_request",
        ),
        (
            "unknown rotate form field",
            &rotate,
            form,
            "grace=5".into(),
            bad,
            "invalid_request",
        ),
        (
            "a JSON array, not an object",
            create,
            json,
            r#"["name"]"#.into(),
            bad,
            "invalid_request",
        ),
        (
            "truncated JSON",
            create,
            json,
            r#"{"name": "#.into(),
            bad,
            "invalid_request",
        ),
        (
            "non-UTF-8 JSON",
            create,
            json,
            b"{\"name\":\"\xff\"}".to_vec(),
            bad,
            "invalid_request",
        ),
        (
            "NUL in a name",
            create,
            json,
            r#"{"name":"a\u0000b"}"#.into(),
            bad,
            "invalid_request",
        ),
        (
            "percent-encoded NUL in a form name",
            create,
            form,
            "name=a%00b".into(),
            bad,
            "invalid_request",
        ),
        // expires_in.
        (
            "negative expires_in",
            create,
            json,
            r#"{"expires_in":-1}"#.into(),
            bad,
            "invalid_request",
        ),
        (
            "zero expires_in",
            create,
            json,
            r#"{"expires_in":0}"#.into(),
            bad,
            "invalid_request",
        ),
        (
            "i64::MIN expires_in",
            create,
            json,
            format!(r#"{{"expires_in":{}}}"#, i64::MIN).into(),
            bad,
            "invalid_request",
        ),
        (
            "i64::MAX expires_in",
            create,
            json,
            format!(r#"{{"expires_in":{}}}"#, i64::MAX).into(),
            bad,
            "invalid_request",
        ),
        (
            "expires_in over u64",
            create,
            json,
            r#"{"expires_in":18446744073709551616}"#.into(),
            bad,
            "invalid_request",
        ),
        (
            "400-digit expires_in",
            create,
            json,
            format!(r#"{{"expires_in":{}}}"#, "9".repeat(400)).into(),
            bad,
            "invalid_request",
        ),
        (
            "100 years and a second",
            create,
            json,
            r#"{"expires_in":3162240001}"#.into(),
            bad,
            "invalid_request",
        ),
        (
            "fractional expires_in",
            create,
            json,
            r#"{"expires_in":1.5}"#.into(),
            bad,
            "invalid_request",
        ),
        (
            "exponent expires_in with a fraction",
            create,
            json,
            r#"{"expires_in":1.5e0}"#.into(),
            bad,
            "invalid_request",
        ),
        (
            "string expires_in",
            create,
            json,
            r#"{"expires_in":"3600"}"#.into(),
            bad,
            "invalid_request",
        ),
        (
            "boolean expires_in",
            create,
            json,
            r#"{"expires_in":true}"#.into(),
            bad,
            "invalid_request",
        ),
        (
            "negative form expires_in",
            create,
            form,
            "expires_in=-5".into(),
            bad,
            "invalid_request",
        ),
        (
            "huge form expires_in",
            create,
            form,
            "expires_in=99999999999999999999".into(),
            bad,
            "invalid_request",
        ),
        (
            "fractional form expires_in",
            create,
            form,
            "expires_in=1.5".into(),
            bad,
            "invalid_request",
        ),
        (
            "empty form expires_in",
            create,
            form,
            "expires_in=".into(),
            bad,
            "invalid_request",
        ),
        // grace_seconds.
        (
            "negative grace_seconds",
            &rotate,
            json,
            r#"{"grace_seconds":-1}"#.into(),
            bad,
            "invalid_request",
        ),
        (
            "i64::MAX grace_seconds",
            &rotate,
            json,
            format!(r#"{{"grace_seconds":{}}}"#, i64::MAX).into(),
            bad,
            "invalid_request",
        ),
        (
            "fractional grace_seconds",
            &rotate,
            json,
            r#"{"grace_seconds":0.5}"#.into(),
            bad,
            "invalid_request",
        ),
        (
            "huge form grace_seconds",
            &rotate,
            form,
            "grace_seconds=99999999999999999999".into(),
            bad,
            "invalid_request",
        ),
        (
            "negative form grace_seconds",
            &rotate,
            form,
            "grace_seconds=-1".into(),
            bad,
            "invalid_request",
        ),
    ];
    for (what, path, content_type, body, status, code) in cases {
        a.post(path, content_type, body)
            .await
            .error(what, status, code);
    }
    // A body over the limit without a Content-Length is cut off while it is read.
    let streamed = Body::new(Chunked(vec![Bytes::from(vec![b'['; 1024]); 64].into_iter()));
    a.post(create, json, streamed)
        .await
        .error("64 KiB streamed", too_large, "payload_too_large");
    assert_eq!(a.live_tokens().await, 1, "nothing was created or rotated");

    // The limits themselves are accepted: 100 years, and `+60` as a form number.
    let r = a
        .post(
            create,
            json,
            r#"{"name":"century","expires_in":3162240000}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = a.post(create, form, "name=plus&expires_in=%2B60").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = a
        .post(
            create,
            json,
            r#"{"name":"nulls","expires_in":null,"role":null}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // JSON does not tell `1e3` or `1000.0` from `1000` (nor does JSON Schema's `integer`,
    // which the OpenAPI document states): a whole number is a whole number.
    let r = a
        .post(create, json, r#"{"name":"exponent","expires_in":1e3}"#)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

/// What is sent, where, as what, and the answer expected.
type BodyCase<'a> = (&'a str, &'a str, &'a str, Vec<u8>, StatusCode, &'a str);

/// A body of unknown length (like a chunked upload).
struct Chunked(std::vec::IntoIter<Bytes>);

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.next().map(|b| Ok(http_body::Frame::data(b))))
    }
}
