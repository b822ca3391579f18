use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::denial::Denial;

/// The challenge a refusal's `WWW-Authenticate` header carries (RFC 6750).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Challenge {
    /// No `WWW-Authenticate` header.
    None,
    /// The bare challenge naming the realm.
    Realm,
    /// `Bearer error="…"` with this error code.
    Error(&'static str),
}

/// The table of rejection kinds: one row per kind, with every fact about it. A new kind is
/// one row here (plus its [`Denial`] and the place that raises it).
///
/// Columns: the kind (with its docs) and the [`Denial`] it renders, the HTTP status, the
/// public `code`, the default message, the challenge, and whether it counts against the
/// client's failure budget ([`FailureLimits`](crate::rate_limit::FailureLimits)).
macro_rules! rejection_kinds {
    ($(
        $(#[$doc:meta])*
        $kind:ident = $denial:ident, $status:ident, $code:literal, $message:literal,
            $challenge:expr, failure: $failure:literal;
    )*) => {
        /// The precise reason a request was refused. Outside, several kinds share one answer
        /// (unknown, revoked, expired, wrong kind and malformed tokens all read
        /// `invalid_token`); inside, this kind is put into the response's extensions and the
        /// audit event. It is the HTTP side of a [`Denial`] (`RejectionKind::from(denial)`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum RejectionKind {
            $($(#[$doc])* $kind,)*
        }

        impl RejectionKind {
            /// Every kind, in declaration order (`ALL[k as usize] == k`), for tables indexed
            /// by kind.
            const ALL: [Self; KINDS] = [$(Self::$kind,)*];

            /// The row of the table for this kind.
            const fn facts(self) -> Facts {
                match self {
                    $(Self::$kind => Facts {
                        denial: Denial::$denial,
                        status: StatusCode::$status,
                        code: $code,
                        message: $message,
                        body: concat!(r#"{"error":""#, $message, r#"","code":""#, $code, r#""}"#),
                        challenge: $challenge,
                        failure: $failure,
                    },)*
                }
            }
        }

        /// How many kinds there are.
        const KINDS: usize = [$(stringify!($kind),)*].len();

        impl From<Denial> for RejectionKind {
            fn from(denial: Denial) -> Self {
                match denial {
                    $(Denial::$denial => Self::$kind,)*
                }
            }
        }
    };
}

/// One row of the kinds' table.
struct Facts {
    denial: Denial,
    status: StatusCode,
    code: &'static str,
    message: &'static str,
    body: &'static str,
    challenge: Challenge,
    failure: bool,
}

const INVALID_TOKEN: Challenge = Challenge::Error("invalid_token");

rejection_kinds! {
    /// No `Authorization` header, or a scheme keygate does not handle.
    MissingToken = Missing, UNAUTHORIZED, "missing_token", "Missing API token",
        Challenge::Realm, failure: false;
    /// The header breaks the grammar, or there are several.
    InvalidRequest = InvalidRequest, BAD_REQUEST, "invalid_request",
        "Malformed Authorization header", Challenge::Error("invalid_request"), failure: false;
    /// Well-formed header, but not a keygate token (shape, prefix or checksum).
    MalformedToken = Malformed, UNAUTHORIZED, "invalid_token", "Invalid API token",
        INVALID_TOKEN, failure: true;
    /// No token with this hash.
    UnknownToken = Unknown, UNAUTHORIZED, "invalid_token", "Invalid API token",
        INVALID_TOKEN, failure: true;
    /// The token was revoked.
    Revoked = Revoked, UNAUTHORIZED, "invalid_token", "Invalid API token",
        INVALID_TOKEN, failure: true;
    /// The token expired (or its rotation grace ended).
    Expired = Expired, UNAUTHORIZED, "invalid_token", "Invalid API token",
        INVALID_TOKEN, failure: true;
    /// A token of a kind this layer does not accept.
    WrongKind = WrongKind, UNAUTHORIZED, "invalid_token", "Invalid API token",
        INVALID_TOKEN, failure: true;
    /// The token lacks a required permission.
    InsufficientScope = InsufficientScope, FORBIDDEN, "insufficient_scope",
        "Insufficient permission", Challenge::Error("insufficient_scope"), failure: false;
    /// The client address is outside the token's allow-list.
    IpNotAllowed = IpNotAllowed, FORBIDDEN, "ip_not_allowed",
        "Client address not allowed for this token", Challenge::None, failure: true;
    /// A token of a binding kind came without its client fingerprint header.
    BindingRequired = BindingRequired, FORBIDDEN, "binding_required",
        "This token must be sent with its machine fingerprint header", Challenge::None,
        failure: true;
    /// A token bound to another client fingerprint.
    BoundElsewhere = BoundElsewhere, FORBIDDEN, "bound_elsewhere",
        "This token is bound to another machine", Challenge::None, failure: true;
    /// The token is over its rate limit.
    RateLimited = RateLimited, TOO_MANY_REQUESTS, "rate_limited",
        "Rate limit exceeded. Please try again later.", Challenge::None, failure: false;
    /// The request body is over the limit.
    PayloadTooLarge = PayloadTooLarge, PAYLOAD_TOO_LARGE, "payload_too_large",
        "Request body too large", Challenge::None, failure: false;
    /// The token store failed or timed out: fail closed.
    StoreUnavailable = StoreUnavailable, SERVICE_UNAVAILABLE, "store_unavailable",
        "Token store unavailable", Challenge::None, failure: false;
    /// An [`Identity`](crate::Identity) was asked for on a route that
    /// [`AuthLayer`](crate::AuthLayer) does not cover: a mistake in the program (a
    /// forgotten `.layer(...)`), answered 500 rather than 401 so it is not mistaken for a
    /// bad token.
    MissingLayer = MissingLayer, INTERNAL_SERVER_ERROR, "auth_layer_missing",
        "Server misconfiguration: keygate's AuthLayer does not cover this route",
        Challenge::None, failure: false;
}

// `RejectionKind::ALL` lists every kind at its own index, so the tables indexed by kind
// (`k as usize`) cover them all.
const _: () = {
    let mut i = 0;
    while i < KINDS {
        assert!(RejectionKind::ALL[i] as usize == i);
        i += 1;
    }
};

impl From<RejectionKind> for Denial {
    fn from(kind: RejectionKind) -> Self {
        kind.facts().denial
    }
}

impl RejectionKind {
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
        self.facts().code
    }

    /// The precise reason, for logs and audit events (`unknown`, `revoked`, …).
    #[must_use]
    pub fn reason(self) -> &'static str {
        self.facts().denial.reason()
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(self) -> StatusCode {
        self.facts().status
    }

    /// True when a refusal of this kind counts against the client's failure budget: every
    /// refusal of a presented token (guessing, a stolen token replayed from elsewhere), not
    /// a missing token, a missing permission, a limit or an outage.
    #[must_use]
    pub fn counts_as_failure(self) -> bool {
        self.facts().failure
    }

    /// The default JSON body, `{"error":"<message>","code":"<code>"}`.
    fn body(self) -> &'static str {
        self.facts().body
    }

    fn message(self) -> &'static str {
        self.facts().message
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

    /// 403 `insufficient_scope` naming the missing permission. A string that is not a valid
    /// [`Permission`](crate::Permission) (a handler passing request input, say) is not
    /// named: it would go into the `WWW-Authenticate` header's quoted `scope` as it is.
    #[must_use]
    pub fn insufficient_scope(permission: &str) -> Self {
        let named = crate::Permission::new(permission).is_ok();
        Self {
            scope: named.then(|| Arc::from(permission)),
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

impl From<Denial> for Rejection {
    fn from(denial: Denial) -> Self {
        Self::new(denial.into())
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
            let challenge = match kind.facts().challenge {
                Challenge::None => None,
                Challenge::Realm => Some(bare.clone()),
                Challenge::Error(code) => {
                    HeaderValue::try_from(format!("Bearer error=\"{code}\"")).ok()
                }
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
    fn a_scope_that_is_no_permission_never_reaches_the_challenge() {
        let r = JsonRenderer::default();
        let res = r.render(&Rejection::insufficient_scope("x\", error=\"injected"));
        let challenge = res.headers()[http::header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert_eq!(challenge, "Bearer error=\"insufficient_scope\"");
        assert!(!String::from_utf8_lossy(res.body()).contains("injected"));
    }

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
