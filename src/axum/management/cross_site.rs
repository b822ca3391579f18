//! Refuses state-changing requests that a browser marks as coming from another site.
//!
//! The management API answers `WWW-Authenticate: Basic`, so a browser that signed in once
//! keeps sending the credentials, and any page could otherwise make it post a form to
//! `POST /tokens`. A `POST`, `PUT`, `PATCH` or `DELETE` is refused with 403
//! `cross_site_request` when:
//!
//! - it carries `Sec-Fetch-Site` (every current browser sends it) with a value other than
//!   `same-origin` or `none`: `same-site` and `cross-site` are refused, since a sibling
//!   subdomain is another origin;
//! - it carries no `Sec-Fetch-Site` (an older browser) but an `Origin` whose host and port
//!   (the scheme's default port when it names none) are not those the request was sent to
//!   (its `Host`, or the URI's authority under HTTP/2), or the opaque `Origin: null`. The
//!   scheme cannot be compared (TLS often ends at a proxy).
//!
//! `Sec-Fetch-Site` is the browser's own verdict on the whole request (redirects included),
//! so when it says `same-origin` the request is let through even if a proxy in front
//! rewrote `Host`. Origins named with
//! [`Management::with_trusted_origin`](super::Management::with_trusted_origin) are let
//! through whatever `Sec-Fetch-Site` says (a separate admin front end, or a proxy that
//! rewrites `Host` for older browsers). Requests without either header (curl, SDKs,
//! servers) are not browsers and are not affected; nor are `GET`, `HEAD` and `OPTIONS`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Method, Uri, header};

use super::Shared;
use super::error::ApiError;
use crate::error::ConfigError;

const SEC_FETCH_SITE: header::HeaderName = header::HeaderName::from_static("sec-fetch-site");

/// An origin reduced to what decides sameness: `https` or not, the host in lower case and
/// the port (the scheme's default when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    https: bool,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` (a trailing `/` is accepted, nothing else after the
    /// authority).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let uri: Uri = s.parse().ok()?;
        let https = match uri.scheme()? {
            x if *x == Scheme::HTTPS => true,
            x if *x == Scheme::HTTP => false,
            _ => return None,
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return None;
        }
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        Some(Self::from_authority(https, authority))
    }

    fn from_authority(https: bool, authority: &Authority) -> Self {
        Self {
            https,
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
        }
    }

    /// Parses a trusted origin for a builder.
    pub(crate) fn trusted(s: &str) -> Result<Self, ConfigError> {
        Self::parse(s.trim()).ok_or_else(|| ConfigError::InvalidOrigin(s.to_owned()))
    }
}

/// True for the methods that change state.
fn changes_state(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Whether a browser marked this request as made by another site.
fn is_cross_site(headers: &HeaderMap, uri: &Uri, trusted: &[Origin]) -> bool {
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let origin = match (origins.next(), origins.next()) {
        (None, _) => None,
        // Several Origin headers, or one that is not an origin (`null`): foreign.
        (Some(o), None) => Some(o.to_str().ok().and_then(Origin::parse)),
        (Some(_), Some(_)) => Some(None),
    };
    if let Some(Some(o)) = &origin
        && trusted.contains(o)
    {
        return false;
    }
    let mut sites = headers.get_all(SEC_FETCH_SITE).iter().peekable();
    if sites.peek().is_some() {
        return !sites.all(|v| v == "same-origin" || v == "none");
    }
    match origin {
        None => false,
        Some(None) => true,
        Some(Some(o)) => {
            let target = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.parse::<Authority>().ok())
                .or_else(|| uri.authority().cloned());
            target.is_none_or(|a| Origin::from_authority(o.https, &a) != o)
        }
    }
}

/// The middleware: 403 `cross_site_request` before anything else (no password check, no
/// body read).
pub(crate) async fn refuse(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if changes_state(req.method()) && is_cross_site(req.headers(), req.uri(), &s.trusted_origins) {
        return ApiError::cross_site().into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn cross(pairs: &[(&str, &str)]) -> bool {
        let trusted = [Origin::trusted("https://admin.example.com").unwrap()];
        is_cross_site(&headers(pairs), &Uri::from_static("/tokens"), &trusted)
    }

    #[test]
    fn browsers_marks_decide_and_the_rest_pass() {
        assert!(!cross(&[]), "curl and SDKs send neither header");
        assert!(!cross(&[("sec-fetch-site", "same-origin")]));
        assert!(!cross(&[("sec-fetch-site", "none")]));
        assert!(cross(&[("sec-fetch-site", "same-site")]));
        assert!(cross(&[("sec-fetch-site", "cross-site")]));
        assert!(cross(&[("sec-fetch-site", "garbage")]));
        assert!(cross(&[
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-site", "cross-site")
        ]));
        let host = ("host", "keys.example.com");
        assert!(!cross(&[host, ("origin", "https://keys.example.com")]));
        assert!(!cross(&[host, ("origin", "http://keys.example.com")]));
        assert!(!cross(&[
            ("host", "keys.example.com:443"),
            ("origin", "https://KEYS.example.com")
        ]));
        assert!(!cross(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080")
        ]));
        assert!(cross(&[host, ("origin", "https://evil.example")]));
        assert!(cross(&[host, ("origin", "https://keys.example.com:8443")]));
        assert!(cross(&[host, ("origin", "http://keys.example.com:443")]));
        assert!(cross(&[host, ("origin", "null")]));
        assert!(cross(&[("origin", "https://keys.example.com")]), "no host");
        assert!(cross(&[
            host,
            ("origin", "https://keys.example.com"),
            ("origin", "https://evil.example")
        ]));
        // A trusted origin passes both checks.
        assert!(!cross(&[host, ("origin", "https://admin.example.com")]));
        assert!(!cross(&[
            ("origin", "https://admin.example.com"),
            ("sec-fetch-site", "same-site")
        ]));
        assert!(cross(&[
            ("origin", "https://admin.example.com.evil.example"),
            ("sec-fetch-site", "cross-site")
        ]));
    }

    #[test]
    fn trusted_origins_are_parsed_strictly() {
        assert_eq!(
            Origin::trusted("https://Admin.example.com/").unwrap(),
            Origin::trusted("https://admin.example.com:443").unwrap()
        );
        for bad in [
            "admin.example.com",
            "ftp://admin.example.com",
            "https://admin.example.com/path",
            "https://user@admin.example.com",
            "https://admin.example.com?x=1",
            "",
        ] {
            assert!(Origin::trusted(bad).is_err(), "{bad}");
        }
        assert!(changes_state(&Method::DELETE) && !changes_state(&Method::GET));
    }
}
