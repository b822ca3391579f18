//! A token management page for the browser (feature `ui`).
//!
//! One HTML page with its stylesheet and script, embedded in the binary (no front-end build
//! step), served by an axum [`Router`]. The page talks only to the
//! [management API](crate::axum::management) at the `api_base` it is given: the user signs in
//! with email and password, lists their tokens (name, role and permissions, hint, status,
//! created, expires, last used), creates one (shown once, with a copy button), rotates one
//! (with an optional grace period) and revokes one, each after a confirmation.
//!
//! Mount it beside the management API with one line:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use axum::Router;
//! use keygate::accounts::MemoryAccounts;
//! use keygate::axum::management::Management;
//! use keygate::{MemoryStore, Roles, Tokens};
//! use tower::ServiceExt;
//!
//! let tokens = Tokens::builder(MemoryStore::new())
//!     .roles(Roles::deployment_platform())
//!     .build()
//!     .unwrap();
//! let app: Router = Router::new()
//!     .nest("/api/v1", Management::new(tokens, MemoryAccounts::new()).router())
//!     .nest("/tokens", keygate::ui::router("/api/v1"));
//!
//! let page = app
//!     .oneshot(http::Request::get("/tokens").body(axum::body::Body::empty()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(page.status(), 200);
//! assert_eq!(page.headers()["cache-control"], "no-store");
//! assert!(page.headers()["content-security-policy"]
//!     .to_str()
//!     .unwrap()
//!     .starts_with("default-src 'none'"));
//! # });
//! ```
//!
//! [`Page`] offers the role names as a list in the create form:
//! `Page::new("/api/v1").with_roles(tokens.roles()).router()`.
//!
//! # Routes (relative to where the router is mounted)
//!
//! | route | content type |
//! | --- | --- |
//! | `/` | `text/html; charset=utf-8` |
//! | `/app.js` | `text/javascript; charset=utf-8` |
//! | `/app.css` | `text/css; charset=utf-8` |
//! | `/favicon.svg` | `image/svg+xml` |
//!
//! The page finds its assets through the path it is nested at (axum's
//! [`NestedPath`]), so it works under `nest("/tokens", …)` as well
//! as `merge(…)` at the root. Nest it at a literal path, not one with `{parameters}`.
//!
//! # Security
//!
//! Every response of this router, the 404s included, carries:
//!
//! | header | value |
//! | --- | --- |
//! | `Content-Security-Policy` | [`CONTENT_SECURITY_POLICY`]: only this origin's script, style, images and connections; no inline script or style, no framing, no `<base>`, no form submission, Trusted Types required for DOM sinks |
//! | `X-Frame-Options` | `DENY` |
//! | `Referrer-Policy` | `no-referrer` |
//! | `X-Content-Type-Options` | `nosniff` |
//! | `Cache-Control` | `no-store` |
//! | `Cross-Origin-Opener-Policy` | `same-origin` |
//! | `Cross-Origin-Resource-Policy` | `same-origin` |
//!
//! With [`Page::with_host_sign_in`] the page has no password form and sends the
//! application's session cookie instead (same origin only); the management API's
//! cross-site refusal still stands between that cookie and other sites' forms.
//!
//! The page keeps the email and password in a variable of the tab, and nowhere else: not in
//! `localStorage`, `sessionStorage`, a cookie or the browser's HTTP authentication cache
//! (its requests use `credentials: "omit"` and send the `Authorization` header
//! themselves). Reloading or closing the tab forgets them. A new token is shown once and
//! wiped from the page when the user dismisses it. Everything the API returns is put into
//! the page as text (`textContent`), never as HTML.
//!
//! Because of `connect-src 'self'`, `api_base` must be a path on the same origin as the page
//! (e.g. `/api/v1`). Serve both over TLS: the page sends the password with every request.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{NestedPath, Request};
use axum::response::Response;
use axum::routing::get;
use http::header::{self, HeaderName, HeaderValue};
use http::{StatusCode, header::CONTENT_TYPE};

use crate::identity::Roles;

/// The `Content-Security-Policy` of every response of the page's router.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'; require-trusted-types-for 'script'; \
     trusted-types 'none'";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const FAVICON_SVG: &[u8] = include_bytes!("assets/favicon.svg");

/// Builds the page's [`Router`]. See the [module docs](self).
#[derive(Debug, Clone)]
#[must_use]
pub struct Page {
    api_base: String,
    roles: Vec<String>,
    host_sign_in: bool,
}

impl Page {
    /// The page, calling the management API at `api_base`: a path on the page's own origin
    /// where the [management router](crate::axum::management::Management::router) is
    /// nested, such as `/api/v1`. A trailing `/` is ignored.
    pub fn new(api_base: impl Into<String>) -> Self {
        let mut api_base = api_base.into();
        while api_base.ends_with('/') {
            api_base.pop();
        }
        Self {
            api_base,
            roles: Vec::new(),
            host_sign_in: false,
        }
    }

    /// Offers these role names in the create form (e.g. `tokens.roles()`). Without roles
    /// the form has a free text field for the role.
    pub fn with_roles(mut self, roles: &Roles) -> Self {
        self.roles = roles.names().map(str::to_owned).collect();
        self
    }

    /// For a management API that signs callers in through the host application
    /// ([`Management::with_host_sign_in`](crate::axum::management::Management::with_host_sign_in)):
    /// the page has no password form; its requests carry the browser's cookies for this
    /// origin (`credentials: "same-origin"`), so the application's own session signs them
    /// in. Without a session the page asks the user to sign in to the application.
    pub fn with_host_sign_in(mut self) -> Self {
        self.host_sign_in = true;
        self
    }

    /// The router: state-free, ready to `nest` (e.g. at `/tokens`) or `merge`.
    pub fn router(self) -> Router {
        let roles = serde_json::to_string(&self.roles).unwrap_or_else(|_| "[]".to_owned());
        let fill: Arc<Fill> = Arc::new(Fill {
            api_base: escape_attribute(&self.api_base),
            roles: escape_attribute(&roles),
            sign_in: if self.host_sign_in {
                "host"
            } else {
                "password"
            }
            .to_owned(),
        });
        Router::new()
            .route(
                "/",
                get(move |req: Request| {
                    let fill = Arc::clone(&fill);
                    async move { index(&fill, &req) }
                }),
            )
            .route(
                "/app.js",
                get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
            )
            .route(
                "/app.css",
                get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
            )
            .route(
                "/favicon.svg",
                get(|| async { asset("image/svg+xml", FAVICON_SVG) }),
            )
            .fallback(|| async { not_found() })
            .layer(axum::middleware::map_response(secure))
    }
}

/// The values of the page's placeholders, escaped for attributes.
struct Fill {
    api_base: String,
    roles: String,
    /// `password` or `host`.
    sign_in: String,
}

/// The page calling the management API at `api_base` (e.g. `/api/v1`), with the default
/// settings: `Page::new(api_base).router()`. See the [module docs](self).
pub fn router(api_base: &str) -> Router {
    Page::new(api_base).router()
}

fn index(fill: &Fill, req: &Request) -> Response {
    let prefix = req
        .extensions()
        .get::<NestedPath>()
        .map_or("", |p| p.as_str().trim_end_matches('/'));
    let base = escape_attribute(prefix);
    let html = render(INDEX_HTML, |name| match name {
        "BASE" => Some(&base),
        "API_BASE" => Some(&fill.api_base),
        "ROLES" => Some(&fill.roles),
        "SIGN_IN" => Some(&fill.sign_in),
        _ => None,
    });
    asset("text/html; charset=utf-8", html)
}

/// Replaces each `%NAME%` of `template` (NAME in `[A-Z_]`) that `value` knows, in one pass:
/// a value is never scanned for placeholders itself.
fn render<'a>(template: &str, value: impl Fn(&str) -> Option<&'a String>) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        match value(name) {
            Some(v) if after[name_len..].starts_with('%') => {
                out.push_str(v);
                rest = &after[name_len + 1..];
            }
            _ => {
                out.push('%');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn asset(content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut res = Response::new(body.into());
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

fn not_found() -> Response {
    let mut res = asset("text/plain; charset=utf-8", "Not found\n");
    *res.status_mut() = StatusCode::NOT_FOUND;
    res
}

/// Adds the security headers to every response (see the module docs).
async fn secure(mut res: Response) -> Response {
    const HEADERS: [(HeaderName, &str); 7] = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ];
    let headers = res.headers_mut();
    for (name, value) in HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    res
}

/// Escapes text for a double-quoted HTML attribute value.
fn escape_attribute(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_attribute_text() {
        assert_eq!(
            escape_attribute(r#"/a"b'<c>&d"#),
            "/a&quot;b&#39;&lt;c&gt;&amp;d"
        );
    }

    #[test]
    fn renders_placeholders_once() {
        let a = "%B%".to_owned();
        let out = render("x%A%y%B%z%%C%100%", |n| match n {
            "A" => Some(&a),
            _ => None,
        });
        assert_eq!(out, "x%B%y%B%z%%C%100%");
    }

    #[test]
    fn trims_the_api_base() {
        assert_eq!(Page::new("/api/v1//").api_base, "/api/v1");
    }

    #[test]
    fn template_has_every_placeholder() {
        for p in ["%API_BASE%", "%ROLES%", "%BASE%", "%SIGN_IN%"] {
            assert!(INDEX_HTML.contains(p), "{p}");
        }
    }
}
