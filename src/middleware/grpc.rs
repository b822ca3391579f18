//! [`GrpcRenderer`]: refusals as gRPC statuses, for services behind [`AuthLayer`](crate::AuthLayer)
//! that speak gRPC (tonic or any other server on `http` 1).

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};

use super::rejection::{Rejection, RejectionKind, RenderRejection};

/// The `grpc-status` header of a trailers-only response.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The `grpc-message` header of a trailers-only response.
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Renders refusals as gRPC "trailers-only" responses: HTTP 200, `content-type:
/// application/grpc`, the status in `grpc-status` and the message (percent-encoded, as the
/// gRPC protocol says) in `grpc-message`, and an empty body. A gRPC client (tonic's, or
/// any other) then reads the refusal as an ordinary error status.
///
/// ```
/// use keygate::{AuthLayer, MemoryStore, Tokens};
/// use keygate::middleware::GrpcRenderer;
///
/// let layer = AuthLayer::new(Tokens::new(MemoryStore::new())).with_renderer(GrpcRenderer);
/// # let _ = layer;
/// ```
///
/// The status follows the refusal's HTTP status, so every kind has one:
///
/// | kind | HTTP | gRPC status |
/// | --- | --- | --- |
/// | missing token; malformed, unknown, revoked, expired, wrong kind | 401 | 16 `UNAUTHENTICATED` |
/// | malformed `Authorization` header | 400 | 3 `INVALID_ARGUMENT` |
/// | missing permission, address not allowed, binding required, bound elsewhere | 403 | 7 `PERMISSION_DENIED` |
/// | rate limited (with `Retry-After`), body too large | 429, 413 | 8 `RESOURCE_EXHAUSTED` |
/// | store down | 503 | 14 `UNAVAILABLE` |
/// | any other server-side failure | 5xx | 13 `INTERNAL` |
/// | any other refusal | 4xx | 2 `UNKNOWN` |
///
/// The message is the same coarse one the JSON renderer writes: an unknown, revoked,
/// expired or wrong-kind token all read `Invalid API token`; a missing permission names
/// the permission. A rejection's `Retry-After` delay is kept as a header.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcRenderer;

impl GrpcRenderer {
    /// The gRPC status code (`grpc-status`) a refusal of `kind` carries.
    #[must_use]
    pub fn code(kind: RejectionKind) -> i32 {
        code_for_status(kind.status())
    }
}

/// The gRPC status code of a refusal with this HTTP status.
fn code_for_status(status: StatusCode) -> i32 {
    match status {
        StatusCode::BAD_REQUEST => 3,
        StatusCode::UNAUTHORIZED => 16,
        StatusCode::FORBIDDEN => 7,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => 8,
        StatusCode::SERVICE_UNAVAILABLE => 14,
        s if s.is_server_error() => 13,
        _ => 2,
    }
}

impl RenderRejection for GrpcRenderer {
    fn render(&self, rejection: &Rejection) -> Response<Bytes> {
        let message = match (rejection.kind(), rejection.scope()) {
            (RejectionKind::InsufficientScope, Some(scope)) => {
                format!("Missing permission: {scope}")
            }
            _ => rejection.to_string(),
        };
        let mut res = Response::new(Bytes::new());
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(GRPC_STATUS, HeaderValue::from(Self::code(rejection.kind())));
        if let Ok(v) = HeaderValue::try_from(percent_encode(&message)) {
            headers.insert(GRPC_MESSAGE, v);
        }
        if let Some(s) = rejection.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

/// Percent-encodes `message` for `grpc-message`: every byte outside printable ASCII
/// (`0x20..=0x7E`), and `%` itself, becomes `%XX`.
fn percent_encode(message: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7E).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(r: &Rejection) -> Response<Bytes> {
        GrpcRenderer.render(r)
    }

    fn status(res: &Response<Bytes>) -> &str {
        res.headers()[GRPC_STATUS].to_str().unwrap()
    }

    fn message(res: &Response<Bytes>) -> &str {
        res.headers()[GRPC_MESSAGE].to_str().unwrap()
    }

    #[test]
    fn every_kind_maps_to_its_grpc_status() {
        use RejectionKind as K;
        let table = [
            (K::MissingToken, 16),
            (K::InvalidRequest, 3),
            (K::MalformedToken, 16),
            (K::UnknownToken, 16),
            (K::Revoked, 16),
            (K::Expired, 16),
            (K::WrongKind, 16),
            (K::InsufficientScope, 7),
            (K::IpNotAllowed, 7),
            (K::BindingRequired, 7),
            (K::BoundElsewhere, 7),
            (K::RateLimited, 8),
            (K::PayloadTooLarge, 8),
            (K::StoreUnavailable, 14),
            (K::MissingLayer, 13),
        ];
        for (kind, code) in table {
            let res = render(&Rejection::new(kind));
            assert_eq!(res.status(), 200, "{kind:?}: trailers-only is HTTP 200");
            assert_eq!(res.headers()[header::CONTENT_TYPE], "application/grpc");
            assert_eq!(status(&res), code.to_string(), "{kind:?}");
            assert!(res.body().is_empty(), "{kind:?}");
            assert!(!res.headers().contains_key(header::WWW_AUTHENTICATE));
        }
    }

    #[test]
    fn the_precise_cause_of_an_invalid_token_never_shows() {
        use RejectionKind as K;
        for kind in [
            K::MalformedToken,
            K::UnknownToken,
            K::Revoked,
            K::Expired,
            K::WrongKind,
        ] {
            let res = render(&Rejection::new(kind));
            assert_eq!(message(&res), "Invalid API token", "{kind:?}");
        }
        let res = render(&Rejection::new(K::MissingToken));
        assert_eq!(message(&res), "Missing API token");
    }

    #[test]
    fn a_missing_permission_is_named_and_a_delay_is_kept() {
        let res = render(&Rejection::insufficient_scope("notes:write"));
        assert_eq!(status(&res), "7");
        assert_eq!(message(&res), "Missing permission: notes:write");

        let res = render(&Rejection::new(RejectionKind::RateLimited).with_retry_after(42));
        assert_eq!(status(&res), "8");
        assert_eq!(res.headers()[header::RETRY_AFTER], "42");
        assert_eq!(
            message(&res),
            "Rate limit exceeded. Please try again later."
        );

        let res = render(&Rejection::new(RejectionKind::StoreUnavailable));
        assert!(!res.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn a_kind_without_its_own_row_follows_its_http_status() {
        // E.g. a server misconfiguration (500) is INTERNAL, never UNAUTHENTICATED or OK.
        assert_eq!(code_for_status(StatusCode::INTERNAL_SERVER_ERROR), 13);
        assert_eq!(code_for_status(StatusCode::BAD_GATEWAY), 13);
        assert_eq!(code_for_status(StatusCode::SERVICE_UNAVAILABLE), 14);
        assert_eq!(code_for_status(StatusCode::CONFLICT), 2);
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("plain text ok"), "plain text ok");
        assert_eq!(percent_encode("100% sure"), "100%25 sure");
        assert_eq!(percent_encode("caf\u{e9}\n"), "caf%C3%A9%0A");
    }
}
