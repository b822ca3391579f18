//! What an event keeps of the request: its id and its path, both bounded.

/// The longest `request_id` an event keeps: 128 characters. A longer `x-request-id`, or
/// one with anything but visible ASCII, is not kept at all (`request_id` is `None`).
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The longest `path` an event keeps, in bytes: 1 024. A longer path is cut at the last
/// character boundary before it.
pub const MAX_PATH_LEN: usize = 1024;

/// The request id an event keeps: the request's single `x-request-id` when it is 1 to
/// [`MAX_REQUEST_ID_LEN`] visible ASCII characters holding no token, `None` otherwise. The request's sender
/// chooses it, with or without credentials: bounding it bounds what an anonymous request
/// can put into the log. One allocation, of the kept id only.
pub(crate) fn request_id(headers: &http::HeaderMap) -> Option<String> {
    let mut values = headers.get_all("x-request-id").iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let bytes = value.as_bytes();
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

/// The path an event keeps: the request's path as the client sent it (with axum, from
/// [`OriginalUri`](axum::extract::OriginalUri) when a router nested the service, so
/// `/api/v1/apps` rather than `/apps`), without the query string, cut to
/// [`MAX_PATH_LEN`] bytes at a character boundary.
pub(crate) fn request_path(extensions: &http::Extensions, uri: &http::Uri) -> String {
    #[cfg(feature = "axum")]
    let uri = extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(uri, |original| &original.0);
    #[cfg(not(feature = "axum"))]
    let _ = extensions;
    let path = uri.path();
    path[..path.floor_char_boundary(MAX_PATH_LEN)].to_owned()
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
