//! Forward authentication: one endpoint that tells a reverse proxy (nginx `auth_request`,
//! Traefik `ForwardAuth`, Envoy `ext_authz` in HTTP mode) whether a request may pass, for
//! services not written in Rust.
//!
//! [`ForwardAuth`] is a tower [`Service`] built from an [`AuthLayer`]: it runs exactly that
//! layer's pipeline (access rule, rate limits, failure limits, audit, client address,
//! permission resolver, metrics) on the request the proxy describes, and answers
//!
//! - **200** with `X-Keygate-Owner`, `X-Keygate-Token-Id` and `X-Keygate-Permissions`
//!   (comma-separated) for a request the layer admits, plus the layer's `RateLimit-*`
//!   headers;
//! - otherwise **exactly the layer's refusal**: 401, 403, 429 or 503 with its
//!   `WWW-Authenticate`, `Retry-After` and JSON body;
//! - **400** `invalid_request` when the headers describing the original request are not a
//!   method and an origin-form URI (see below).
//!
//! # The original request
//!
//! The access rule (e.g. [`AuthLayer::read_write`]), the audit event's `method` and `path`
//! judge the request the client sent to the proxy, not the proxy's check. Where they come
//! from is an [`OriginalRequest`]:
//!
//! | source | method | URI |
//! | --- | --- | --- |
//! | [`OriginalRequest::Nginx`] | `X-Original-Method` | `X-Original-URI` |
//! | [`OriginalRequest::Traefik`] | `X-Forwarded-Method` | `X-Forwarded-Uri` |
//! | [`OriginalRequest::Direct`] (Envoy) | the check's own method | the check's own URI (mount with `nest_service` so the prefix is cut) |
//! | [`OriginalRequest::Detect`] (default) | whichever of the two header pairs is present; with neither, as `Direct` | |
//!
//! A header sent more than once, an empty or invalid method, a URI that is not an
//! origin-form path in visible ASCII (`/path?query`: no scheme, no host, no `*`, no raw
//! spaces or UTF-8), a header of a pair without
//! the other, and (with `Detect`) both pairs at once are refused with 400: a client that
//! adds `X-Forwarded-Method: GET` to a `DELETE` sent through nginx does not get a read's
//! verdict. A source that names a pair requires both of its headers.
//!
//! # Response headers
//!
//! The token id (a UUID) and the permissions (`[a-z0-9_.:*-]`) are plain ASCII. An owner
//! may hold any printable Unicode (see [`NewToken`](crate::NewToken)), so
//! `X-Keygate-Owner` is percent-encoded: every byte of its UTF-8 form outside visible ASCII
//! (`!`..`~`), and `%` itself, is written `%XX`. `alice@example.com` is sent as it is;
//! `Zoë Smith` as `Zo%C3%AB%20Smith`. No value can carry CR, LF or another header.
//! The proxy must set these headers on the upstream request from this answer, replacing
//! whatever the client sent under the same names (nginx `proxy_set_header`, Traefik
//! `authResponseHeaders` do).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use http::{Request, StatusCode};
//! use http_body_util::Empty;
//! use bytes::Bytes;
//! use tower::ServiceExt;
//! use keygate::forward_auth::ForwardAuth;
//! use keygate::{AuthLayer, MemoryStore, NewToken, Permissions, Tokens};
//!
//! let tokens = Tokens::new(MemoryStore::new());
//! let reader = tokens.issue(NewToken::new("alice", "ci")).await.unwrap();
//! let verify = ForwardAuth::new(&AuthLayer::new(tokens).read_write("api:write"));
//!
//! // nginx asks about `DELETE /things/1` on the client's behalf.
//! let ask = |auth: Option<String>, method: &str| {
//!     let mut req = Request::get("/verify");
//!     if let Some(auth) = auth {
//!         req = req.header("authorization", auth);
//!     }
//!     req.header("x-original-method", method)
//!         .header("x-original-uri", "/things/1")
//!         .body(Empty::<Bytes>::new())
//!         .unwrap()
//! };
//! let bearer = format!("Bearer {}", reader.token.expose_secret());
//! let read = verify.clone().oneshot(ask(Some(bearer.clone()), "GET")).await.unwrap();
//! assert_eq!(read.status(), StatusCode::OK);
//! assert_eq!(read.headers()["x-keygate-owner"], "alice");
//! let write = verify.clone().oneshot(ask(Some(bearer), "DELETE")).await.unwrap();
//! assert_eq!(write.status(), StatusCode::FORBIDDEN);
//! let anonymous = verify.oneshot(ask(None, "GET")).await.unwrap();
//! assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
//! # });
//! ```

use std::convert::Infallible;
use std::future::Ready;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use tower::{Layer, Service};

use crate::audit::{AuditEvent, Decision};
use crate::identity::Identity;
use crate::middleware::layer::Config;
use crate::middleware::{
    AuthLayer, AuthService, Rejection, RejectionKind, ResponseBody, ResponseFuture,
};

/// `X-Keygate-Owner`: the token's owner, percent-encoded (see the [module docs](self)).
pub const OWNER_HEADER: HeaderName = HeaderName::from_static("x-keygate-owner");
/// `X-Keygate-Token-Id`: the token's id.
pub const TOKEN_ID_HEADER: HeaderName = HeaderName::from_static("x-keygate-token-id");
/// `X-Keygate-Permissions`: the caller's effective permissions, comma-separated.
pub const PERMISSIONS_HEADER: HeaderName = HeaderName::from_static("x-keygate-permissions");

const X_ORIGINAL_METHOD: &str = "x-original-method";
const X_ORIGINAL_URI: &str = "x-original-uri";
const X_FORWARDED_METHOD: &str = "x-forwarded-method";
const X_FORWARDED_URI: &str = "x-forwarded-uri";

/// Where [`ForwardAuth`] reads the method and URI of the request it judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OriginalRequest {
    /// `X-Original-Method` / `X-Original-URI` (nginx) or `X-Forwarded-Method` /
    /// `X-Forwarded-Uri` (Traefik), whichever pair is present (both: 400); with neither,
    /// the check's own method and URI. The default.
    #[default]
    Detect,
    /// `X-Original-Method` and `X-Original-URI`, both required.
    Nginx,
    /// `X-Forwarded-Method` and `X-Forwarded-Uri`, both required.
    Traefik,
    /// The check's own method and URI (Envoy `ext_authz`, which sends the original method
    /// and the original path after its `path_prefix`); forwarding headers are ignored.
    Direct,
}

/// Why the original request could not be read: the answer is 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BadOriginal(&'static str);

/// The single value of `name`; more than one is an error, none is `None`.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h HeaderValue>, BadOriginal> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(BadOriginal(match name {
            X_ORIGINAL_METHOD => "X-Original-Method sent more than once",
            X_ORIGINAL_URI => "X-Original-URI sent more than once",
            X_FORWARDED_METHOD => "X-Forwarded-Method sent more than once",
            _ => "X-Forwarded-Uri sent more than once",
        }));
    }
    Ok(first)
}

/// A method token, as RFC 9110 defines it.
fn method(value: &HeaderValue, name: &'static str) -> Result<Method, BadOriginal> {
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return Err(BadOriginal(name));
    }
    Method::from_bytes(bytes).map_err(|_| BadOriginal(name))
}

/// An origin-form request target: `/path[?query]` in visible ASCII (anything else is
/// percent-encoded by a client that follows RFC 3986), nothing else.
fn origin_form(value: &HeaderValue, name: &'static str) -> Result<Uri, BadOriginal> {
    let bytes = value.as_bytes();
    if bytes.first() != Some(&b'/')
        || bytes.starts_with(b"//")
        || !bytes.iter().all(u8::is_ascii_graphic)
    {
        return Err(BadOriginal(name));
    }
    let uri =
        Uri::from_maybe_shared(Bytes::copy_from_slice(bytes)).map_err(|_| BadOriginal(name))?;
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(BadOriginal(name));
    }
    Ok(uri)
}

/// The method and URI of one header pair, `None` when neither header is present.
fn pair(
    headers: &HeaderMap,
    (method_name, uri_name): (&str, &str),
    (method_error, uri_error, partial): (&'static str, &'static str, &'static str),
) -> Result<Option<(Method, Uri)>, BadOriginal> {
    match (single(headers, method_name)?, single(headers, uri_name)?) {
        (None, None) => Ok(None),
        (Some(m), Some(u)) => Ok(Some((method(m, method_error)?, origin_form(u, uri_error)?))),
        _ => Err(BadOriginal(partial)),
    }
}

fn nginx(headers: &HeaderMap) -> Result<Option<(Method, Uri)>, BadOriginal> {
    pair(
        headers,
        (X_ORIGINAL_METHOD, X_ORIGINAL_URI),
        (
            "Invalid X-Original-Method header",
            "Invalid X-Original-URI header: it must be a path such as /things?page=2",
            "X-Original-Method and X-Original-URI must be sent together",
        ),
    )
}

fn traefik(headers: &HeaderMap) -> Result<Option<(Method, Uri)>, BadOriginal> {
    pair(
        headers,
        (X_FORWARDED_METHOD, X_FORWARDED_URI),
        (
            "Invalid X-Forwarded-Method header",
            "Invalid X-Forwarded-Uri header: it must be a path such as /things?page=2",
            "X-Forwarded-Method and X-Forwarded-Uri must be sent together",
        ),
    )
}

impl OriginalRequest {
    /// The method and URI the request describes; `None`: the request's own.
    fn read(self, headers: &HeaderMap) -> Result<Option<(Method, Uri)>, BadOriginal> {
        let required = |found: Option<(Method, Uri)>, missing: &'static str| {
            found.map(Some).ok_or(BadOriginal(missing))
        };
        match self {
            Self::Direct => Ok(None),
            Self::Nginx => required(
                nginx(headers)?,
                "X-Original-Method and X-Original-URI are required",
            ),
            Self::Traefik => required(
                traefik(headers)?,
                "X-Forwarded-Method and X-Forwarded-Uri are required",
            ),
            Self::Detect => match (nginx(headers)?, traefik(headers)?) {
                (Some(_), Some(_)) => Err(BadOriginal(
                    "Both X-Original-* and X-Forwarded-Method/-Uri were sent; send one pair",
                )),
                (found, None) | (None, found) => Ok(found),
            },
        }
    }
}

/// Percent-encodes every byte outside visible ASCII, and `%` (see the module docs).
fn encode_owner(owner: &str) -> HeaderValue {
    let mut out = String::with_capacity(owner.len());
    for &b in owner.as_bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // Only visible ASCII is left, which every header value accepts.
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The layer's inner service: turns the admitted [`Identity`] into the verdict's headers.
#[derive(Clone)]
struct Verdict {
    config: Arc<Config>,
}

impl<B> Service<Request<B>> for Verdict {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(id) = req.extensions().get::<Identity>() else {
            // An `optional()` layer lets a request without credentials through: a verdict
            // never says yes without a token.
            let r = Rejection::new(RejectionKind::MissingToken);
            return std::future::ready(Ok(self.config.reject(&r).map(Full::new)));
        };
        let mut res = Response::new(Full::default());
        let headers = res.headers_mut();
        headers.insert(OWNER_HEADER, encode_owner(id.owner()));
        if let Ok(v) = HeaderValue::try_from(id.token_id().to_string()) {
            headers.insert(TOKEN_ID_HEADER, v);
        }
        let permissions: Vec<&str> = id.permissions().iter().map(|p| p.as_str()).collect();
        if let Ok(v) = HeaderValue::try_from(permissions.join(",")) {
            headers.insert(PERMISSIONS_HEADER, v);
        }
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        std::future::ready(Ok(res))
    }
}

/// The forward-authentication endpoint: a [`Service`] answering whether the request a
/// proxy describes may pass. See the [module docs](self).
///
/// Cheap to clone. Mount it with axum's `route_service` (any method: nginx's check keeps
/// the client's method) or, for Envoy, `nest_service`.
#[derive(Clone)]
#[must_use]
pub struct ForwardAuth {
    auth: AuthService<Verdict>,
    config: Arc<Config>,
    source: OriginalRequest,
}

impl std::fmt::Debug for ForwardAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardAuth")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl ForwardAuth {
    /// The endpoint running `layer`'s pipeline, with the [`OriginalRequest::Detect`] source.
    pub fn new(layer: &AuthLayer) -> Self {
        let config = layer.config().clone();
        Self {
            auth: layer.layer(Verdict {
                config: config.clone(),
            }),
            config,
            source: OriginalRequest::default(),
        }
    }

    /// Where the original method and URI are read from (default
    /// [`OriginalRequest::Detect`]). Name the proxy in front when you know it: a client
    /// can then never supply the other proxy's headers.
    pub fn with_original_request(mut self, source: OriginalRequest) -> Self {
        self.source = source;
        self
    }

    /// The 400 for a request whose original method or URI cannot be read, audited like
    /// the layer's own refusals.
    fn refuse<B>(&self, req: &Request<B>, bad: BadOriginal) -> Response<ResponseBody<Full<Bytes>>> {
        let body = serde_json::json!({ "error": bad.0, "code": "invalid_request" });
        let mut res = Response::new(Bytes::from(body.to_string()));
        *res.status_mut() = StatusCode::BAD_REQUEST;
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        RejectionKind::InvalidRequest.tag(res.extensions_mut());
        if let Some(audit) = &self.config.audit {
            let addrs = self
                .config
                .client_ip
                .resolve(req.extensions(), req.headers());
            audit.record_request(
                AuditEvent {
                    timestamp: self.config.tokens.now(),
                    event: "authenticate".into(),
                    api_token_id: None,
                    api_token_name: None,
                    owner: None,
                    method: req.method().to_string(),
                    path: crate::audit::request_path(req.extensions(), req.uri()),
                    status_code: 400,
                    rbac_decision: Decision::Deny,
                    reason: Some(RejectionKind::InvalidRequest.reason().to_owned()),
                    client_ip: addrs.client,
                    request_id: crate::audit::request_id(req.headers()),
                    details: None,
                },
                addrs.failure_key(),
            );
        }
        res.map(ResponseBody::rejection)
    }
}

impl<B> Service<Request<B>> for ForwardAuth
where
    B: Send + 'static,
{
    type Response = Response<ResponseBody<Full<Bytes>>>;
    type Error = Infallible;
    type Future =
        ResponseFuture<Ready<Result<Response<Full<Bytes>>, Infallible>>, Full<Bytes>, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request<B>>::poll_ready(&mut self.auth, cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match self.source.read(req.headers()) {
            Err(bad) => {
                let res = self.refuse(&req, bad);
                ResponseFuture::ready(res)
            }
            Ok(original) => {
                if let Some((method, uri)) = original {
                    *req.method_mut() = method;
                    *req.uri_mut() = uri;
                }
                // The audit event's path is the original request's, not where the check
                // was mounted.
                #[cfg(feature = "axum")]
                {
                    let uri = req.uri().clone();
                    req.extensions_mut().insert(axum::extract::OriginalUri(uri));
                }
                self.auth.call(req)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn owners_are_encoded_into_plain_header_values() {
        assert_eq!(encode_owner("alice@example.com"), "alice@example.com");
        assert_eq!(encode_owner("Zoë Smith"), "Zo%C3%AB%20Smith");
        assert_eq!(encode_owner("100%"), "100%25");
        assert_eq!(encode_owner("a,b;c"), "a,b;c");
    }

    #[test]
    fn the_original_request_is_read_strictly() {
        let detect = OriginalRequest::Detect;
        let nginx = headers(&[
            ("x-original-method", b"DELETE"),
            ("x-original-uri", b"/a?b=1"),
        ]);
        let (m, u) = detect.read(&nginx).unwrap().unwrap();
        assert_eq!((m, u.to_string()), (Method::DELETE, "/a?b=1".to_owned()));
        let traefik = headers(&[("x-forwarded-method", b"POST"), ("x-forwarded-uri", b"/x")]);
        assert_eq!(detect.read(&traefik).unwrap().unwrap().0, Method::POST);
        assert_eq!(detect.read(&HeaderMap::new()), Ok(None));
        assert_eq!(OriginalRequest::Direct.read(&nginx), Ok(None));
        // Nginx ignores the other pair; Traefik requires its own.
        assert_eq!(
            OriginalRequest::Nginx.read(&nginx).unwrap().unwrap().0,
            Method::DELETE
        );
        assert!(OriginalRequest::Traefik.read(&nginx).is_err());
        for bad in [
            headers(&[
                ("x-original-method", b"GET"),
                ("x-original-uri", b"http://evil/x"),
            ]),
            headers(&[
                ("x-original-method", b"GET"),
                ("x-original-uri", b"//evil/x"),
            ]),
            headers(&[("x-original-method", b"GET"), ("x-original-uri", b"*")]),
            headers(&[("x-original-method", b"GET"), ("x-original-uri", b"x")]),
            headers(&[
                ("x-original-method", b"GET"),
                ("x-original-uri", b"/caf\xc3\xa9"),
            ]),
            headers(&[("x-original-method", b"G T"), ("x-original-uri", b"/")]),
            headers(&[("x-original-method", b""), ("x-original-uri", b"/")]),
            headers(&[("x-original-uri", b"/")]),
            headers(&[
                ("x-original-method", b"GET"),
                ("x-original-method", b"DELETE"),
                ("x-original-uri", b"/"),
            ]),
            headers(&[
                ("x-original-method", b"DELETE"),
                ("x-original-uri", b"/"),
                ("x-forwarded-method", b"GET"),
                ("x-forwarded-uri", b"/"),
            ]),
        ] {
            assert!(detect.read(&bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_verdict_needs_a_token_and_names_any_owner_safely() {
        use crate::{MemoryStore, NewToken, Tokens};
        use http_body_util::Empty;
        use tower::ServiceExt;

        let tokens = Tokens::new(MemoryStore::new());
        let issued = tokens
            .issue(NewToken::new("Zoë\r\nX-Keygate-Owner: admin", "ci"))
            .await;
        // Control characters never make it into an owner.
        assert!(issued.is_err());
        let issued = tokens
            .issue(NewToken::new("Zoë Smith", "ci"))
            .await
            .unwrap();
        // An optional layer lets anonymous requests through; the verdict does not.
        let verify = ForwardAuth::new(&AuthLayer::new(tokens).optional());
        let ask = |auth: Option<String>| {
            let mut b = Request::get("/verify")
                .header("x-forwarded-method", "PUT")
                .header("x-forwarded-uri", "/x");
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            b.body(Empty::<Bytes>::new()).unwrap()
        };
        let res = verify.clone().oneshot(ask(None)).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(res.headers().get(OWNER_HEADER).is_none());
        let bearer = format!("Bearer {}", issued.token.expose_secret());
        let res = verify.oneshot(ask(Some(bearer))).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[OWNER_HEADER], "Zo%C3%AB%20Smith");
    }
}
