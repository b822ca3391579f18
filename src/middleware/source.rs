//! Where the layer reads the token: [`TokenSource`]. `Authorization: Bearer` by default; a
//! named header such as `X-API-Key`; and, opted into per route, a query parameter or an
//! entry of `Sec-WebSocket-Protocol` (what a browser's `WebSocket` can send). Never a
//! cookie: a cookie rides along with every cross-site request.
//!
//! Every source gets the same answers (a token that is not one is the uniform 401
//! `invalid_token`; a request carrying a token in two places is 400 `invalid_request`), a
//! header holding a token is marked sensitive, and a token in the query or in
//! `Sec-WebSocket-Protocol` is removed from the request before the inner service sees it.

use std::borrow::Cow;

use http::header::{AUTHORIZATION, Entry, SEC_WEBSOCKET_PROTOCOL};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};

use super::rejection::{Rejection, RejectionKind};
use crate::error::ConfigError;
use crate::header::{Credentials, parse_authorization};
use crate::token::MAX_TOKEN_LEN;

/// One place a request may carry its token. Set the layer's with
/// [`AuthLayer::token_sources`](crate::AuthLayer::token_sources).
///
/// ```
/// use keygate::{AuthLayer, MemoryStore, Tokens, middleware::TokenSource};
///
/// let tokens = Tokens::new(MemoryStore::new());
/// // `Authorization: Bearer …` or `X-API-Key: …` (a request with both is refused).
/// let api = AuthLayer::new(tokens.clone())
///     .token_sources([TokenSource::bearer(), TokenSource::header("x-api-key")]);
/// // A WebSocket route: `new WebSocket(url, ["chat", "bearer." + token])` in a browser.
/// let ws = AuthLayer::new(tokens).token_sources([TokenSource::websocket_protocol("bearer.")]);
/// # let _ = (api, ws);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSource(Source);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Bearer,
    Header(HeaderName),
    Query(Cow<'static, str>),
    WebSocket(Cow<'static, str>),
}

impl TokenSource {
    /// `Authorization: Bearer <token>` (RFC 6750), the default. One `Authorization` header
    /// at most (400 otherwise); another scheme (`Basic`) counts as no token.
    #[must_use]
    pub fn bearer() -> Self {
        Self(Source::Bearer)
    }

    /// A header holding the token alone, such as `X-API-Key`. Several such headers are 400
    /// `invalid_request`; an empty one counts as no token.
    ///
    /// # Panics
    ///
    /// On a name that is not a header name, or names a cookie or `Authorization` (use
    /// [`bearer`](Self::bearer)), with a message naming it; [`try_header`](Self::try_header)
    /// returns the error instead.
    #[must_use]
    pub fn header(name: &'static str) -> Self {
        Self::try_header(name).unwrap_or_else(|e| panic!("TokenSource::header({name:?}): {e}"))
    }

    /// [`header`](Self::header) for a name known only at run time.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidHeader`], or [`ConfigError::InvalidTokenSource`] for `Cookie`,
    /// `Set-Cookie` and `Authorization`.
    pub fn try_header(name: &str) -> Result<Self, ConfigError> {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError::InvalidHeader(name.to_owned()))?;
        match header.as_str() {
            "cookie" | "set-cookie" => Err(ConfigError::InvalidTokenSource(
                "a cookie is sent with cross-site requests; keygate never reads a token from one"
                    .to_owned(),
            )),
            "authorization" => Err(ConfigError::InvalidTokenSource(
                "read Authorization with TokenSource::bearer()".to_owned(),
            )),
            _ => Ok(Self(Source::Header(header))),
        }
    }

    /// The query parameter `name` (e.g. `access_token`), for clients that cannot set a
    /// header. The parameter is removed from the URI (and from axum's `OriginalUri`) before
    /// the inner service sees the request, so handlers and the layers inside never see the
    /// token; the layers *outside* this one see the request as it came, so a request log
    /// there must record the path, not the query. The name is matched as a form decoder
    /// reads it (`access%5Ftoken` is `access_token`); the value is taken as it is
    /// (keygate's tokens need no escaping). Twice in one query, however spelled, is 400
    /// `invalid_request`.
    ///
    /// Use it only on the routes that need it (a URL ends up in browser history and proxy
    /// logs): a layer of its own on those routes.
    ///
    /// # Panics
    ///
    /// On an empty name or one with other characters than `A–Z a–z 0–9 - . _ ~`;
    /// [`try_query`](Self::try_query) returns the error instead.
    #[must_use]
    pub fn query(name: &'static str) -> Self {
        Self::try_query(name).unwrap_or_else(|e| panic!("TokenSource::query({name:?}): {e}"))
    }

    /// [`query`](Self::query) for a name known only at run time.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidTokenSource`].
    pub fn try_query(name: &str) -> Result<Self, ConfigError> {
        let unreserved =
            |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if name.is_empty() || !name.bytes().all(unreserved) {
            return Err(ConfigError::InvalidTokenSource(format!(
                "query parameter name {name:?}: use A-Z a-z 0-9 - . _ ~"
            )));
        }
        Ok(Self(Source::Query(Cow::Owned(name.to_owned()))))
    }

    /// An entry `<prefix><token>` of `Sec-WebSocket-Protocol`, the one header a browser's
    /// `WebSocket` lets a page set: `new WebSocket(url, ["chat", "bearer." + token])`. The
    /// entry is removed from the header before the inner service sees it, which then
    /// negotiates among the other protocols as usual. Have the client offer a protocol of
    /// its own beside the token entry and the server pick it: browsers refuse a handshake
    /// that offered protocols and got none back. Two such entries are 400
    /// `invalid_request`.
    ///
    /// # Panics
    ///
    /// On an empty prefix or one that cannot start a protocol name (RFC 9110 `token`
    /// characters); [`try_websocket_protocol`](Self::try_websocket_protocol) returns the
    /// error instead.
    #[must_use]
    pub fn websocket_protocol(prefix: &'static str) -> Self {
        Self::try_websocket_protocol(prefix)
            .unwrap_or_else(|e| panic!("TokenSource::websocket_protocol({prefix:?}): {e}"))
    }

    /// [`websocket_protocol`](Self::websocket_protocol) for a prefix known only at run time.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidTokenSource`].
    pub fn try_websocket_protocol(prefix: &str) -> Result<Self, ConfigError> {
        let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if prefix.is_empty() || !prefix.bytes().all(tchar) {
            return Err(ConfigError::InvalidTokenSource(format!(
                "WebSocket protocol prefix {prefix:?}: use RFC 9110 token characters"
            )));
        }
        Ok(Self(Source::WebSocket(Cow::Owned(prefix.to_owned()))))
    }

    pub(crate) fn is_bearer(&self) -> bool {
        self.0 == Source::Bearer
    }
}

/// The presented token: a cheap (reference-counted) clone of what held it and where the
/// token lies in it. No copy of the secret is made.
pub(crate) struct TokenRef {
    holder: Holder,
    start: usize,
    end: usize,
}

enum Holder {
    Header(HeaderValue),
    /// The request's URI as it came, before the token was removed from its query.
    Query(Uri),
}

impl TokenRef {
    fn new(holder: Holder, token: &str) -> Self {
        let whole = holder.bytes();
        // Where `token` (a slice of `whole`) starts in it; an empty reference if it is not
        // one, which refuses.
        let start = token.as_ptr().addr().wrapping_sub(whole.as_ptr().addr());
        let end = start.wrapping_add(token.len());
        let (start, end) = if end <= whole.len() && start <= end {
            (start, end)
        } else {
            (0, 0)
        };
        Self { holder, start, end }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII was taken as a token, so the range falls on character boundaries.
        std::str::from_utf8(
            self.holder
                .bytes()
                .get(self.start..self.end)
                .unwrap_or_default(),
        )
        .unwrap_or_default()
    }

    /// The token of a header value: the value, held, and the token's place in it.
    pub(crate) fn of_header(value: &HeaderValue, token: &str) -> Self {
        Self::new(Holder::Header(value.clone()), token)
    }
}

impl Holder {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Header(v) => v.as_bytes(),
            Self::Query(u) => u.query().unwrap_or_default().as_bytes(),
        }
    }
}

/// Marks the `Authorization` value sensitive (so `Debug` and HTTP/2 header compression
/// leave it alone) and refuses a request with more than one.
pub(crate) fn mark_sensitive(headers: &mut HeaderMap) -> Result<(), Rejection> {
    mark_all_sensitive(headers, &AUTHORIZATION)
}

/// Marks every value of `name` sensitive; 400 when there are several.
fn mark_all_sensitive(headers: &mut HeaderMap, name: &HeaderName) -> Result<(), Rejection> {
    let Entry::Occupied(mut entry) = headers.entry(name) else {
        return Ok(());
    };
    let mut count = 0;
    for v in entry.iter_mut() {
        v.set_sensitive(true);
        count += 1;
    }
    if count > 1 {
        return Err(Rejection::new(RejectionKind::InvalidRequest));
    }
    Ok(())
}

/// The bearer token of the (single) `Authorization` value, borrowed from the request;
/// `None` without one, or for another scheme.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Rejection> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    match parse_authorization(value.as_bytes()) {
        Err(_) => Err(Rejection::new(RejectionKind::InvalidRequest)),
        Ok(Credentials::Other | Credentials::Basic(_)) => Ok(None),
        Ok(Credentials::Bearer(t)) => checked(t).map(Some),
    }
}

/// A token over the longest any kind accepts is refused before anything else reads it.
fn checked(token: &str) -> Result<&str, Rejection> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Rejection::new(RejectionKind::MalformedToken));
    }
    Ok(token)
}

/// A token as text: ASCII only (a keygate token is; anything else is malformed).
fn ascii(bytes: &[u8]) -> Result<&str, Rejection> {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.is_ascii() => checked(s),
        _ => Err(Rejection::new(RejectionKind::MalformedToken)),
    }
}

/// Reads the token from the layer's sources, marking and removing it as each source
/// requires. `Ok(None)`: no source holds one.
pub(crate) fn take<B>(
    sources: &[TokenSource],
    req: &mut Request<B>,
) -> Result<Option<TokenRef>, Rejection> {
    let mut found = None;
    for source in sources {
        let token = match &source.0 {
            Source::Bearer => {
                mark_sensitive(req.headers_mut())?;
                let headers = req.headers();
                bearer(headers)?.and_then(|t| {
                    let value = headers.get(AUTHORIZATION)?;
                    Some(TokenRef::of_header(value, t))
                })
            }
            Source::Header(name) => from_header(req.headers_mut(), name)?,
            Source::Query(name) => from_query(req, name)?,
            Source::WebSocket(prefix) => from_websocket(req.headers_mut(), prefix)?,
        };
        if token.is_some() {
            if found.is_some() {
                // A token in two places: which one counts is not for the client to pick.
                return Err(Rejection::new(RejectionKind::InvalidRequest));
            }
            found = token;
        }
    }
    Ok(found)
}

fn from_header(headers: &mut HeaderMap, name: &HeaderName) -> Result<Option<TokenRef>, Rejection> {
    mark_all_sensitive(headers, name)?;
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    if value.is_empty() {
        return Ok(None);
    }
    let token = ascii(value.as_bytes())?;
    Ok(Some(TokenRef::of_header(value, token)))
}

fn from_query<B>(req: &mut Request<B>, name: &str) -> Result<Option<TokenRef>, Rejection> {
    let Some(query) = req.uri().query() else {
        return Ok(None);
    };
    let mut value = None;
    let mut seen = 0;
    for pair in query.split('&') {
        let (key, v) = pair.split_once('=').unwrap_or((pair, ""));
        if names(key, name) {
            seen += 1;
            value = Some(v);
        }
    }
    if seen == 0 {
        return Ok(None);
    }
    if seen > 1 {
        return Err(Rejection::new(RejectionKind::InvalidRequest));
    }
    let original = req.uri().clone();
    let token = match value.filter(|v| !v.is_empty()) {
        Some(v) => Some(ascii(v.as_bytes())?.len()),
        None => None,
    };
    let stripped = without_param(&original, name)?;
    #[cfg(feature = "axum")]
    if let Some(outer) = req.extensions_mut().get_mut::<axum::extract::OriginalUri>() {
        outer.0 = without_param(&outer.0, name)?;
    }
    *req.uri_mut() = stripped;
    Ok(token.map(|_| {
        let text = original.query().unwrap_or_default();
        let at = find_value(text, name);
        let holder = Holder::Query(original.clone());
        TokenRef::new(holder, at)
    }))
}

/// Whether the query key `key` is `name` as a form decoder reads it (`%5F` for `_`, `%61`
/// for `a`, in either case), as the inner service's `Query` extractor would: a key spelled
/// with escapes is the same parameter, so it is taken (and removed) like the plain one.
/// `name` holds unreserved characters only, so `+` (a space) never matches.
fn names(key: &str, name: &str) -> bool {
    let (mut key, mut name) = (key.as_bytes(), name.as_bytes());
    while let Some((&want, rest)) = name.split_first() {
        let (got, after) = match key {
            [b'%', hi, lo, after @ ..] => match (hex(*hi), hex(*lo)) {
                (Some(hi), Some(lo)) => ((hi << 4) | lo, after),
                _ => (b'%', &key[1..]),
            },
            [b, after @ ..] => (*b, after),
            [] => return false,
        };
        if got != want {
            return false;
        }
        (key, name) = (after, rest);
    }
    key.is_empty()
}

/// The value of one hexadecimal digit.
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The value of the (single) parameter `name` in `query`, as a slice of it.
fn find_value<'q>(query: &'q str, name: &str) -> &'q str {
    query
        .split('&')
        .find_map(|pair| match pair.split_once('=') {
            Some((key, v)) if names(key, name) => Some(v),
            _ => None,
        })
        .unwrap_or_default()
}

/// `uri` without the query parameter `name` (every occurrence).
fn without_param(uri: &Uri, name: &str) -> Result<Uri, Rejection> {
    let Some(query) = uri.query() else {
        return Ok(uri.clone());
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !names(pair.split_once('=').map_or(*pair, |(k, _)| k), name))
        .collect();
    let path = uri.path();
    let rebuilt = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(rebuilt)
            .map_err(|_| Rejection::new(RejectionKind::InvalidRequest))?,
    );
    Uri::from_parts(parts).map_err(|_| Rejection::new(RejectionKind::InvalidRequest))
}

fn from_websocket(headers: &mut HeaderMap, prefix: &str) -> Result<Option<TokenRef>, Rejection> {
    let Entry::Occupied(mut entry) = headers.entry(SEC_WEBSOCKET_PROTOCOL) else {
        return Ok(None);
    };
    let mut found: Option<TokenRef> = None;
    let mut kept: Vec<&str> = Vec::new();
    let values: Vec<HeaderValue> = entry.iter_mut().map(|v| v.clone()).collect();
    for value in &values {
        let Ok(text) = value.to_str() else {
            return Err(Rejection::new(RejectionKind::InvalidRequest));
        };
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some(token) = item.strip_prefix(prefix) else {
                kept.push(item);
                continue;
            };
            if found.is_some() {
                return Err(Rejection::new(RejectionKind::InvalidRequest));
            }
            let token = checked(token)?;
            found = Some(TokenRef::of_header(value, token));
        }
    }
    if found.is_none() {
        return Ok(None);
    }
    // The inner service negotiates among the other protocols only.
    if kept.is_empty() {
        entry.remove();
    } else {
        let rest = HeaderValue::from_str(&kept.join(", "))
            .map_err(|_| Rejection::new(RejectionKind::InvalidRequest))?;
        entry.insert(rest);
    }
    Ok(found.filter(|t| !t.as_str().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    #[test]
    fn a_query_token_is_taken_and_removed_with_every_other_parameter_kept() {
        let sources = [TokenSource::query("access_token")];
        let mut req = request("/ws?room=1&access_token=pat_abc&x=y");
        let token = take(&sources, &mut req).unwrap().unwrap();
        assert_eq!(token.as_str(), "pat_abc");
        assert_eq!(req.uri(), "/ws?room=1&x=y");
        let mut req = request("/ws?access_token=pat_abc");
        assert_eq!(
            take(&sources, &mut req).unwrap().unwrap().as_str(),
            "pat_abc"
        );
        assert_eq!(req.uri(), "/ws");
        let mut twice = request("/ws?access_token=a&access_token=b");
        let refused = take(&sources, &mut twice).err().unwrap();
        assert_eq!(refused.kind(), RejectionKind::InvalidRequest);
    }

    #[test]
    fn a_websocket_entry_is_taken_and_the_other_protocols_are_kept() {
        let sources = [TokenSource::websocket_protocol("bearer.")];
        let mut req = request("/ws");
        req.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("chat, bearer.pat_x1"),
        );
        assert_eq!(
            take(&sources, &mut req).unwrap().unwrap().as_str(),
            "pat_x1"
        );
        assert_eq!(req.headers()[SEC_WEBSOCKET_PROTOCOL], "chat");
        let mut only = request("/ws");
        only.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("bearer.pat_x1"),
        );
        assert!(take(&sources, &mut only).unwrap().is_some());
        assert!(only.headers().get(SEC_WEBSOCKET_PROTOCOL).is_none());
    }

    #[test]
    fn cookies_and_authorization_by_name_are_refused_as_sources() {
        assert!(TokenSource::try_header("Cookie").is_err());
        assert!(TokenSource::try_header("set-cookie").is_err());
        assert!(TokenSource::try_header("authorization").is_err());
        assert!(TokenSource::try_header("x-api-key").is_ok());
        assert!(TokenSource::try_query("").is_err());
        assert!(TokenSource::try_query("a b").is_err());
        assert!(TokenSource::try_websocket_protocol("").is_err());
    }
}
