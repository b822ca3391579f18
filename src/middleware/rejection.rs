use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// The precise reason a request was refused. Outside, several kinds share one answer
/// (unknown, revoked, expired, wrong kind and malformed tokens all read `invalid_token`);
/// inside, this kind is put into the response's extensions and the audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// No `Authorization` header, or a scheme keygate does not handle.
    MissingToken,
    /// The header breaks the grammar, or there are several.
    InvalidRequest,
    /// Well-formed header, but not a keygate token (shape, prefix or checksum).
    MalformedToken,
    /// No token with this hash.
    UnknownToken,
    /// The token was revoked.
    Revoked,
    /// The token expired (or its rotation grace ended).
    Expired,
    /// A token of a kind this layer does not accept.
    WrongKind,
    /// The token lacks a required permission.
    InsufficientScope,
    /// The client address is outside the token's allow-list.
    IpNotAllowed,
    /// A token of a binding kind came without its client fingerprint header.
    BindingRequired,
    /// A token bound to another client fingerprint.
    BoundElsewhere,
    /// The token is over its rate limit.
    RateLimited,
    /// The request body is over the limit.
    PayloadTooLarge,
    /// The token store failed or timed out: fail closed.
    // Stays last: a new kind goes above it, and into `RejectionKind::ALL` (`KINDS` counts
    // the kinds by this one's position).
    StoreUnavailable,
}

/// How many kinds there are: [`RejectionKind::StoreUnavailable`] is the last.
const KINDS: usize = RejectionKind::StoreUnavailable as usize + 1;

// `RejectionKind::ALL` lists every kind at its own index, so the tables indexed by kind
// (`k as usize`) cover them all.
const _: () = {
    let mut i = 0;
    while i < KINDS {
        assert!(RejectionKind::ALL[i] as usize == i);
        i += 1;
    }
};

impl RejectionKind {
    /// Every kind, in declaration order (`ALL[k as usize] == k`), for tables indexed by
    /// kind. A kind left out or out of order fails to compile (the assertion above).
    const ALL: [Self; KINDS] = [
        Self::MissingToken,
        Self::InvalidRequest,
        Self::MalformedToken,
        Self::UnknownToken,
        Self::Revoked,
        Self::Expired,
        Self::WrongKind,
        Self::InsufficientScope,
        Self::IpNotAllowed,
        Self::BindingRequired,
        Self::BoundElsewhere,
        Self::RateLimited,
        Self::PayloadTooLarge,
        Self::StoreUnavailable,
    ];

    /// Puts this kind into a refusal's extensions. When they are empty (as a renderer
    /// usually leaves them), they become a clone of a map built once: cheaper than the first
    /// insert into an empty map, which allocates and sizes the map on the refusal's path.
    pub(crate) fn tag(self, extensions: &mut http::Extensions) {
        static MAPS: LazyLock<[http::Extensions; KINDS]> = LazyLock::new(|| {
            RejectionKind::ALL.map(|k| {
                let mut e = http::Extensions::new();
                e.insert(k);
                e
            })
        });
        if extensions.is_empty() {
            *extensions = MAPS[self as usize].clone();
        } else {
            extensions.insert(self);
        }
    }

    /// The `code` of the JSON body (coarse: what the client may know).
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidRequest => "invalid_request",
            Self::MalformedToken
            | Self::UnknownToken
            | Self::Revoked
            | Self::Expired
            | Self::WrongKind => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::BindingRequired => "binding_required",
            Self::BoundElsewhere => "bound_elsewhere",
            Self::RateLimited => "rate_limited",
            Self::PayloadTooLarge => "payload_too_large",
            Self::StoreUnavailable => "store_unavailable",
        }
    }

    /// The precise reason, for logs and audit events (`unknown`, `revoked`, …).
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingToken => "missing",
            Self::InvalidRequest => "invalid_request",
            Self::MalformedToken => "malformed",
            Self::UnknownToken => "unknown",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::WrongKind => "wrong_kind",
            Self::InsufficientScope => "insufficient_scope",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::BindingRequired => "binding_required",
            Self::BoundElsewhere => "bound_elsewhere",
            Self::RateLimited => "rate_limited",
            Self::PayloadTooLarge => "payload_too_large",
            Self::StoreUnavailable => "store_unavailable",
        }
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(self) -> StatusCode {
        match self {
            Self::MissingToken
            | Self::MalformedToken
            | Self::UnknownToken
            | Self::Revoked
            | Self::Expired
            | Self::WrongKind => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest => StatusCode::BAD_REQUEST,
            Self::InsufficientScope
            | Self::IpNotAllowed
            | Self::BindingRequired
            | Self::BoundElsewhere => StatusCode::FORBIDDEN,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The default JSON body, `{"error":"<message>","code":"<code>"}`.
    fn body(self) -> &'static str {
        match self {
            Self::MissingToken => r#"{"error":"Missing API token","code":"missing_token"}"#,
            Self::InvalidRequest => {
                r#"{"error":"Malformed Authorization header","code":"invalid_request"}"#
            }
            Self::MalformedToken
            | Self::UnknownToken
            | Self::Revoked
            | Self::Expired
            | Self::WrongKind => r#"{"error":"Invalid API token","code":"invalid_token"}"#,
            Self::InsufficientScope => {
                r#"{"error":"Insufficient permission","code":"insufficient_scope"}"#
            }
            Self::IpNotAllowed => {
                r#"{"error":"Client address not allowed for this token","code":"ip_not_allowed"}"#
            }
            Self::BindingRequired => {
                r#"{"error":"This token must be sent with its machine fingerprint header","code":"binding_required"}"#
            }
            Self::BoundElsewhere => {
                r#"{"error":"This token is bound to another machine","code":"bound_elsewhere"}"#
            }
            Self::RateLimited => {
                r#"{"error":"Rate limit exceeded. Please try again later.","code":"rate_limited"}"#
            }
            Self::PayloadTooLarge => {
                r#"{"error":"Request body too large","code":"payload_too_large"}"#
            }
            Self::StoreUnavailable => {
                r#"{"error":"Token store unavailable","code":"store_unavailable"}"#
            }
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::MissingToken => "Missing API token",
            Self::InvalidRequest => "Malformed Authorization header",
            Self::MalformedToken
            | Self::UnknownToken
            | Self::Revoked
            | Self::Expired
            | Self::WrongKind => "Invalid API token",
            Self::InsufficientScope => "Insufficient permission",
            Self::IpNotAllowed => "Client address not allowed for this token",
            Self::BindingRequired => "This token must be sent with its machine fingerprint header",
            Self::BoundElsewhere => "This token is bound to another machine",
            Self::RateLimited => "Rate limit exceeded. Please try again later.",
            Self::PayloadTooLarge => "Request body too large",
            Self::StoreUnavailable => "Token store unavailable",
        }
    }
}

/// A refused request: its kind plus what the response needs (the missing permission, the
/// retry delay). Turn it into a response with a [`RenderRejection`]; with the `axum`
/// feature it is also `IntoResponse` (default rendering), so handlers can return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    kind: RejectionKind,
    scope: Option<Arc<str>>,
    retry_after: Option<u64>,
}

impl Rejection {
    /// A rejection of `kind`.
    #[must_use]
    pub fn new(kind: RejectionKind) -> Self {
        Self {
            kind,
            scope: None,
            retry_after: None,
        }
    }

    /// 403 `insufficient_scope` naming the missing permission.
    #[must_use]
    pub fn insufficient_scope(permission: &str) -> Self {
        Self {
            scope: Some(Arc::from(permission)),
            ..Self::new(RejectionKind::InsufficientScope)
        }
    }

    /// Adds a `Retry-After` delay in seconds.
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The precise kind.
    #[must_use]
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The missing permission, for `insufficient_scope`.
    #[must_use]
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// The retry delay in seconds, if any.
    #[must_use]
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind.message())
    }
}

impl std::error::Error for Rejection {}

/// Turns a [`Rejection`] into a response. Replace the default ([`JsonRenderer`]) with
/// [`AuthLayer::with_renderer`](crate::AuthLayer::with_renderer) to change the body format.
pub trait RenderRejection: Send + Sync + 'static {
    /// The response for `rejection`. The layer adds the [`RejectionKind`] to its extensions.
    fn render(&self, rejection: &Rejection) -> Response<Bytes>;
}

/// The default renderer: JSON `{"error": "...", "code": "..."}` with the status and the
/// RFC 6750 `WWW-Authenticate` challenge of DESIGN's response table.
///
/// | kind | status | `WWW-Authenticate` |
/// | --- | --- | --- |
/// | missing token | 401 `missing_token` | `Bearer realm="…"` |
/// | malformed header | 400 `invalid_request` | `Bearer error="invalid_request"` |
/// | malformed, unknown, revoked, expired, wrong kind | 401 `invalid_token` | `Bearer error="invalid_token"` |
/// | missing permission | 403 `insufficient_scope` | `Bearer error="insufficient_scope", scope="…"` |
/// | address not allowed | 403 `ip_not_allowed` | — |
/// | binding kind without its fingerprint header | 403 `binding_required` | — |
/// | bound to another fingerprint | 403 `bound_elsewhere` | — |
/// | body too large | 413 `payload_too_large` | — |
/// | rate limited | 429 `rate_limited` + `Retry-After` | — |
/// | store down | 503 `store_unavailable` + `Retry-After` | — |
#[derive(Debug, Clone)]
pub struct JsonRenderer {
    /// The headers of each kind's refusal, indexed by kind, built once and cloned per
    /// refusal rather than hashed and inserted one by one.
    headers: Arc<[http::HeaderMap; KINDS]>,
}

impl JsonRenderer {
    /// A renderer whose bare challenge names `realm`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidRealm`](crate::ConfigError::InvalidRealm) unless the realm is
    /// printable ASCII without `"` or `\`.
    pub fn new(realm: &str) -> Result<Self, crate::ConfigError> {
        if realm.is_empty()
            || !realm
                .bytes()
                .all(|b| (b == b' ' || b.is_ascii_graphic()) && b != b'"' && b != b'\\')
        {
            return Err(crate::ConfigError::InvalidRealm);
        }
        let challenge = HeaderValue::try_from(format!("Bearer realm=\"{realm}\""))
            .map_err(|_| crate::ConfigError::InvalidRealm)?;
        Ok(Self::with_challenge(challenge))
    }

    fn with_challenge(bare: HeaderValue) -> Self {
        let headers = RejectionKind::ALL.map(|kind| {
            let mut h = http::HeaderMap::with_capacity(2);
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let challenge = match kind.code() {
                "missing_token" => Some(bare.clone()),
                "invalid_request" => {
                    Some(HeaderValue::from_static("Bearer error=\"invalid_request\""))
                }
                "invalid_token" => Some(HeaderValue::from_static("Bearer error=\"invalid_token\"")),
                "insufficient_scope" => Some(HeaderValue::from_static(
                    "Bearer error=\"insufficient_scope\"",
                )),
                _ => None,
            };
            if let Some(v) = challenge {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
            if kind == RejectionKind::StoreUnavailable {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            h
        });
        Self {
            headers: Arc::new(headers),
        }
    }
}

impl Default for JsonRenderer {
    fn default() -> Self {
        Self::with_challenge(HeaderValue::from_static("Bearer realm=\"api\""))
    }
}

impl RenderRejection for JsonRenderer {
    fn render(&self, rejection: &Rejection) -> Response<Bytes> {
        let kind = rejection.kind;
        let mut res = Response::new(Bytes::from_static(kind.body().as_bytes()));
        *res.status_mut() = kind.status();
        *res.headers_mut() = self.headers[kind as usize].clone();
        if let (RejectionKind::InsufficientScope, Some(scope)) = (kind, &rejection.scope) {
            let message = serde_json::Value::from(format!("Missing permission: {scope}"));
            *res.body_mut() = Bytes::from(format!(
                "{{\"error\":{message},\"code\":\"insufficient_scope\"}}"
            ));
            if let Ok(v) = HeaderValue::try_from(format!(
                "Bearer error=\"insufficient_scope\", scope=\"{scope}\""
            )) {
                res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if let Some(s) = rejection.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_challenges_match_the_table() {
        let r = JsonRenderer::default();
        let res = r.render(&Rejection::new(RejectionKind::Revoked));
        assert_eq!(res.status(), 401);
        assert_eq!(
            res.body().as_ref(),
            br#"{"error":"Invalid API token","code":"invalid_token"}"#
        );
        assert_eq!(
            res.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
        let res = r.render(&Rejection::insufficient_scope("things:write"));
        assert_eq!(res.status(), 403);
        assert_eq!(
            res.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"insufficient_scope\", scope=\"things:write\""
        );
        let res = r.render(&Rejection::new(RejectionKind::StoreUnavailable));
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn static_bodies_agree_with_messages_and_codes() {
        for k in RejectionKind::ALL {
            let v: serde_json::Value = serde_json::from_str(k.body()).unwrap();
            assert_eq!(v["error"], k.message());
            assert_eq!(v["code"], k.code());
        }
    }

    #[test]
    fn every_kind_tags_a_response_with_itself() {
        for (i, k) in RejectionKind::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i, "ALL is in declaration order");
            let mut e = http::Extensions::new();
            k.tag(&mut e);
            assert_eq!(e.get::<RejectionKind>(), Some(&k));
            assert_eq!(e.len(), 1);
        }
    }

    #[test]
    fn the_realm_names_the_bare_challenge_and_a_given_delay_replaces_the_default() {
        let r = JsonRenderer::new("my api").unwrap();
        let res = r.render(&Rejection::new(RejectionKind::MissingToken));
        assert_eq!(res.status(), 401);
        assert_eq!(
            res.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"my api\""
        );
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        let res = r.render(&Rejection::new(RejectionKind::StoreUnavailable).with_retry_after(30));
        let delays: Vec<_> = res.headers().get_all(header::RETRY_AFTER).iter().collect();
        assert_eq!(delays, ["30"]);
        assert!(!res.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    #[test]
    fn realm_is_validated() {
        assert!(JsonRenderer::new("my \"api\"").is_err());
        assert!(JsonRenderer::new("").is_err());
        assert!(JsonRenderer::new("my api").is_ok());
    }
}
