//! What an event keeps of the request: its id and its path, both bounded.

use super::{AuditEvent, Decision};

/// The longest `request_id` an event keeps: 128 characters. A longer `x-request-id`, or
/// one with anything but visible ASCII, is not kept at all (`request_id` is `None`).
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The longest `path` an event keeps, in bytes: 1 024. A longer path is cut at the last
/// character boundary before it.
pub const MAX_PATH_LEN: usize = 1024;

/// The longest `method` an event keeps, in bytes: 32. A method is a token of the client's
/// choosing (`GET`, or any run of letters up to the server's header limit); a longer one
/// is cut, so that an anonymous request cannot write a row of any size.
pub const MAX_METHOD_LEN: usize = 32;

/// `method` cut to [`MAX_METHOD_LEN`] bytes (a method is ASCII, so the cut is a character
/// boundary, and what is left is still a method).
pub(crate) fn kept_method(method: &http::Method) -> http::Method {
    let bytes = method.as_str().as_bytes();
    if bytes.len() <= MAX_METHOD_LEN {
        return method.clone();
    }
    http::Method::from_bytes(&bytes[..MAX_METHOD_LEN]).unwrap_or(http::Method::GET)
}

/// `method` cut to [`MAX_METHOD_LEN`] bytes at a character boundary, in place.
pub(crate) fn cut_method(method: &mut String) {
    method.truncate(method.floor_char_boundary(MAX_METHOD_LEN));
}

/// The request id an event keeps: the request's single `x-request-id` when it is 1 to
/// [`MAX_REQUEST_ID_LEN`] visible ASCII characters holding no token, `None` otherwise. The request's sender
/// chooses it, with or without credentials: bounding it bounds what an anonymous request
/// can put into the log. One allocation, of the kept id only.
pub(crate) fn request_id(headers: &http::HeaderMap) -> Option<String> {
    single_request_id(headers).and_then(kept_request_id)
}

/// The request's `x-request-id` when it has exactly one.
fn single_request_id(headers: &http::HeaderMap) -> Option<&http::HeaderValue> {
    let mut values = headers.get_all("x-request-id").iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    Some(value)
}

/// What an event keeps of a single `x-request-id` value (see [`request_id`]).
fn kept_request_id(value: &http::HeaderValue) -> Option<String> {
    kept_request_id_bytes(value.as_bytes())
}

/// [`kept_request_id`] of the value's bytes.
fn kept_request_id_bytes(bytes: &[u8]) -> Option<String> {
    let visible = !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes.iter().all(|b| b.is_ascii_graphic());
    // Visible ASCII is valid UTF-8.
    let id = std::str::from_utf8(bytes).ok().filter(|_| visible)?;
    (!holds_token(id)).then(|| id.to_owned())
}

/// Whether `id` carries a keygate token (with a valid checksum): the whole id, or the end
/// of one of its runs of letters, digits and `_` (`req-<token>`). A client that sends its
/// own token as its request id must not have it written to the log and the audit trail.
fn holds_token(id: &str) -> bool {
    id.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|run| (0..run.len()).any(|start| crate::token::looks_like_token(&run[start..])))
}

/// What a kept path shows in place of a token found in it.
pub const TOKEN_IN_PATH: &str = "[token]";

/// The path an event keeps: the request's path as the client sent it (with axum, from
/// [`OriginalUri`](axum::extract::OriginalUri) when a router nested the service, so
/// `/api/v1/apps` rather than `/apps`), without the query string, every token in it
/// replaced by [`TOKEN_IN_PATH`], cut to [`MAX_PATH_LEN`] bytes at a character boundary.
pub(crate) fn request_path(extensions: &http::Extensions, uri: &http::Uri) -> String {
    kept_path(original_uri(extensions, uri))
}

/// The URI the client sent: with axum, [`OriginalUri`](axum::extract::OriginalUri) when a
/// router nested the service.
fn original_uri<'a>(extensions: &'a http::Extensions, uri: &'a http::Uri) -> &'a http::Uri {
    #[cfg(feature = "axum")]
    let uri = extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(uri, |original| &original.0);
    #[cfg(not(feature = "axum"))]
    let _ = extensions;
    uri
}

/// What [`request_path`] keeps of the URI the client sent.
fn kept_path(uri: &http::Uri) -> String {
    kept_path_of(uri.path())
}

/// What [`request_path`] keeps of a path.
fn kept_path_of(path: &str) -> String {
    // Tokens are replaced before the cut, so that no token cut in half is kept either.
    let path = without_tokens(path);
    path[..path.floor_char_boundary(MAX_PATH_LEN)].to_owned()
}

/// What the `authenticate` event of a request needs from it, taken before the request
/// moves on to the inner service: bounded copies, never the request's own buffers. (With
/// hyper, the URI and every header value share the buffer of the whole request head, up
/// to hundreds of KiB chosen by the client: a queued event holding a clone of them would
/// hold all of it.) The path is copied when it fits in [`MAX_PATH_LEN`] (cleaned and cut
/// here otherwise), the request id when it fits in [`MAX_REQUEST_ID_LEN`]; short ones are
/// kept inline, without an allocation. What the event keeps of them (the path without
/// tokens, the visible request id) is worked out by the audit log's background writer
/// ([`RequestEvent::into_event`]), off the request's path.
pub(crate) struct RequestParts {
    method: http::Method,
    path: compact_str::CompactString,
    request_id: Option<compact_str::CompactString>,
}

impl RequestParts {
    /// The parts of a request with these `extensions`, `uri`, `method` and `headers`.
    pub(crate) fn of(
        method: &http::Method,
        extensions: &http::Extensions,
        uri: &http::Uri,
        headers: &http::HeaderMap,
    ) -> Self {
        let path = original_uri(extensions, uri).path();
        let path = if path.len() <= MAX_PATH_LEN {
            compact_str::CompactString::from(path)
        } else {
            compact_str::CompactString::from(kept_path_of(path))
        };
        let request_id = single_request_id(headers)
            .map(http::HeaderValue::as_bytes)
            .filter(|b| b.len() <= MAX_REQUEST_ID_LEN)
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(compact_str::CompactString::from);
        Self {
            method: kept_method(method),
            path,
            request_id,
        }
    }
}

/// The `authenticate` event of one request, as the layer hands it to the audit log: a
/// compact struct of reference-counted parts, turned into an [`AuditEvent`] (the same
/// fields the layer always wrote) by the log's background writer. Holds no token: the
/// request's `Authorization` value is not among its parts, and a token in the path or the
/// request id is dropped when the event is made. Has no `Debug`, so its parts (the path
/// and request id before they are cleaned) are never printed.
pub(crate) struct RequestEvent {
    pub(crate) timestamp: time::OffsetDateTime,
    pub(crate) record: Option<std::sync::Arc<crate::record::TokenRecord>>,
    pub(crate) parts: RequestParts,
    pub(crate) status_code: u16,
    /// `None`: allowed.
    pub(crate) reason: Option<&'static str>,
    pub(crate) client_ip: Option<std::net::IpAddr>,
}

impl RequestEvent {
    /// Whether the request was let through.
    pub(crate) fn decision(&self) -> Decision {
        if self.reason.is_some() {
            Decision::Deny
        } else {
            Decision::Allow
        }
    }

    /// The event as it is written.
    pub(crate) fn into_event(self) -> AuditEvent {
        let record = self.record.as_deref();
        AuditEvent {
            timestamp: self.timestamp,
            event: "authenticate".to_owned(),
            api_token_id: record.map(|r| r.id),
            api_token_name: record.map(|r| r.name.to_string()),
            owner: record.map(|r| r.owner.to_string()),
            method: self.parts.method.as_str().to_owned(),
            path: kept_path_of(&self.parts.path),
            status_code: self.status_code,
            rbac_decision: self.decision(),
            reason: self.reason.map(str::to_owned),
            client_ip: self.client_ip,
            request_id: self
                .parts
                .request_id
                .as_deref()
                .and_then(|id| kept_request_id_bytes(id.as_bytes())),
            details: None,
        }
    }
}

/// `path` with every keygate token (with a valid checksum) replaced by [`TOKEN_IN_PATH`]: a
/// client that pastes its token where an id belongs, or calls a URL that carries one, must
/// not have it written to the log and the audit trail. Each candidate is anchored on the
/// `_` after its prefix and needs the 49 base62 characters after it, so the work stays
/// linear in the path's length whatever it holds; a path without `_` is not copied.
fn without_tokens(path: &str) -> std::borrow::Cow<'_, str> {
    use crate::token::{CHECKSUM_LEN, MAX_PREFIX_LEN, SECRET_LEN, looks_like_token};
    let bytes = path.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut at = 0;
    while let Some(offset) = bytes[at..].iter().position(|&b| b == b'_') {
        let sep = at + offset;
        let end = sep + 1 + SECRET_LEN + CHECKSUM_LEN;
        let found = bytes
            .get(sep + 1..end)
            .filter(|tail| tail.iter().all(u8::is_ascii_alphanumeric))
            .and_then(|_| {
                (2..=MAX_PREFIX_LEN.min(sep - copied))
                    .map(|prefix| sep - prefix)
                    .find(|&start| path.get(start..end).is_some_and(looks_like_token))
            });
        match found {
            Some(start) => {
                let kept = out.get_or_insert_with(|| String::with_capacity(path.len()));
                kept.push_str(&path[copied..start]);
                kept.push_str(TOKEN_IN_PATH);
                copied = end;
                at = end;
            }
            None => at = sep + 1,
        }
    }
    match out {
        Some(mut kept) => {
            kept.push_str(&path[copied..]);
            std::borrow::Cow::Owned(kept)
        }
        None => std::borrow::Cow::Borrowed(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_and_paths_are_bounded() {
        let id = |v: &[u8]| {
            let mut h = http::HeaderMap::new();
            h.insert("x-request-id", http::HeaderValue::from_bytes(v).unwrap());
            request_id(&h)
        };
        assert_eq!(id(b"req-42").as_deref(), Some("req-42"));
        let longest = "a".repeat(MAX_REQUEST_ID_LEN);
        assert_eq!(id(longest.as_bytes()), Some(longest.clone()));
        assert_eq!(id(format!("{longest}a").as_bytes()), None);
        for bad in [&b""[..], b"two words", b"tab\there", b"caf\xc3\xa9"] {
            assert_eq!(id(bad), None, "{bad:?}");
        }
        // A token sent as the request id (whole, or at the end of a part of it) is not kept.
        let token = crate::TokenKind::pat().generate();
        let token = token.expose_secret();
        assert_eq!(id(token.as_bytes()), None);
        assert_eq!(id(format!("req-{token}").as_bytes()), None);
        assert_eq!(id(format!("req-x{token}").as_bytes()), None);
        assert_eq!(id(format!("{token}.1").as_bytes()), None);
        // ... while a token-shaped id whose checksum is wrong (nobody's token) is kept.
        let mut forged = token.to_owned();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(id(forged.as_bytes()).as_deref(), Some(forged.as_str()));
        let mut two = http::HeaderMap::new();
        two.append("x-request-id", http::HeaderValue::from_static("a"));
        two.append("x-request-id", http::HeaderValue::from_static("b"));
        assert_eq!(request_id(&two), None);
        assert_eq!(request_id(&http::HeaderMap::new()), None);

        let ext = http::Extensions::new();
        let uri: http::Uri = "/apps/x?token=secret".parse().unwrap();
        assert_eq!(request_path(&ext, &uri), "/apps/x");
        // A path of multi-byte characters is cut before the character that would cross
        // the bound.
        let long: http::Uri = format!("/{}", "%C3%A9".repeat(400)).parse().unwrap();
        assert_eq!(request_path(&ext, &long).len(), MAX_PATH_LEN);
        let wide: http::Uri = format!("/{}", "é".repeat(600)).parse().unwrap();
        let kept = request_path(&ext, &wide);
        assert_eq!(kept.len(), MAX_PATH_LEN - 1, "1 + 2 × 511 bytes");
        assert!(kept.ends_with('é'));
    }

    #[test]
    fn tokens_in_a_path_are_not_kept() {
        let ext = http::Extensions::new();
        let path = |p: &str| request_path(&ext, &p.parse().unwrap());
        let pat = crate::TokenKind::pat().generate();
        let pat = pat.expose_secret();
        let long = crate::TokenKind::new("deploy", "deploymenttoken1")
            .unwrap()
            .generate();
        let long = long.expose_secret();
        assert_eq!(path(&format!("/tokens/{pat}")), "/tokens/[token]");
        assert_eq!(path(&format!("/{pat}/rotate")), "/[token]/rotate");
        assert_eq!(
            path(&format!("/hooks/x-{pat}.json")),
            "/hooks/x-[token].json"
        );
        assert_eq!(path(&format!("/a_{pat}{long}b")), "/a_[token][token]b");
        assert_eq!(path(&format!("/{long}")), "/[token]");
        // A token that the cut would have halved is replaced first.
        let before = "a".repeat(MAX_PATH_LEN - 20);
        let kept = path(&format!("/{before}{pat}"));
        assert_eq!(kept, format!("/{before}[token]"));
        // Token-shaped text whose checksum is wrong is nobody's token, and is kept.
        let mut forged = pat.to_owned();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(path(&format!("/x/{forged}")), format!("/x/{forged}"));
        assert_eq!(path("/a_b/c__d_/_"), "/a_b/c__d_/_");
    }

    #[cfg(feature = "axum")]
    #[test]
    fn a_nested_request_is_audited_with_its_original_path() {
        let mut ext = http::Extensions::new();
        ext.insert(axum::extract::OriginalUri(
            "/api/v1/apps?x=1".parse().unwrap(),
        ));
        let nested: http::Uri = "/apps".parse().unwrap();
        assert_eq!(request_path(&ext, &nested), "/api/v1/apps");
    }
}
