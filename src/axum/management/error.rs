//! Error responses of the management API: always `{"error": "...", "code": "..."}`.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};

use crate::middleware::{JsonRenderer, Rejection, RenderRejection};
use crate::tokens::TokenError;

/// The body of every error response of the management API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A message for humans.
    pub error: String,
    /// A stable code for programs (`invalid_request`, `invalid_credentials`, `not_found`, …).
    pub code: String,
}

/// The `WWW-Authenticate` challenge of a Basic failure (RFC 7617).
pub(crate) const BASIC_CHALLENGE: &str = "Basic realm=\"keygate\", charset=\"UTF-8\"";
/// The bare Bearer challenge of the management API.
pub(crate) const BEARER_CHALLENGE: &str = "Bearer realm=\"keygate\"";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Challenge {
    None,
    Basic,
    BasicAndBearer,
}

/// The `code` of a management error, left in the response's extensions (for the audit).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorCode(pub(crate) &'static str);

/// A refused management request.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// An error of the management API itself.
    Plain {
        status: StatusCode,
        code: &'static str,
        message: Cow<'static, str>,
        challenge: Challenge,
        retry_after: Option<u64>,
    },
    /// A bearer-token refusal, rendered exactly as the layer renders it.
    Rejected(Rejection),
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::Plain {
            status,
            code,
            message: message.into(),
            challenge: Challenge::None,
            retry_after: None,
        }
    }

    fn with_challenge(mut self, c: Challenge) -> Self {
        if let Self::Plain { challenge, .. } = &mut self {
            *challenge = c;
        }
        self
    }

    fn with_retry_after(mut self, s: u64) -> Self {
        if let Self::Plain { retry_after, .. } = &mut self {
            *retry_after = Some(s);
        }
        self
    }

    pub(crate) fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub(crate) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Token not found")
    }

    pub(crate) fn invalid_credentials() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "Invalid email or password",
        )
        .with_challenge(Challenge::Basic)
    }

    pub(crate) fn missing_credentials(bearer_too: bool) -> Self {
        let (message, challenge) = if bearer_too {
            (
                "Missing credentials: use Basic authentication (email and password) or a bearer token",
                Challenge::BasicAndBearer,
            )
        } else {
            (
                "Missing credentials: creating a token requires Basic authentication (email and password)",
                Challenge::Basic,
            )
        };
        Self::new(StatusCode::UNAUTHORIZED, "missing_credentials", message)
            .with_challenge(challenge)
    }

    /// Nobody is signed in to the host application.
    pub(crate) fn host_sign_in_missing() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "missing_credentials",
            "Missing credentials: sign in to the application first",
        )
    }

    /// A bearer token on a route that needs the host application's sign-in.
    pub(crate) fn sign_in_required() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "sign_in_required",
            "Creating a token requires signing in to the application; a bearer token cannot create tokens",
        )
    }

    pub(crate) fn basic_required() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "basic_auth_required",
            "Creating a token requires Basic authentication (email and password); a bearer token cannot create tokens",
        )
        .with_challenge(Challenge::Basic)
    }

    pub(crate) fn store_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "Token store unavailable",
        )
        .with_retry_after(1)
    }

    /// A management write whose audit event could not be written.
    pub(crate) fn audit_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "Audit log unavailable; a new token was not handed out. Please try again later.",
        )
        .with_retry_after(1)
    }

    pub(crate) fn busy() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_busy",
            "Too many password checks in progress. Please try again later.",
        )
        .with_retry_after(1)
    }

    pub(crate) fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("Request body too large (limit: {limit} bytes)"),
        )
    }

    pub(crate) fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json or application/x-www-form-urlencoded",
        )
    }

    pub(crate) fn cross_site() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "cross_site_request",
            "Cross-site request refused: management writes must come from this server's own pages or from a client that is not a browser",
        )
    }

    pub(crate) fn insufficient_scope(message: String) -> Self {
        Self::new(StatusCode::FORBIDDEN, "insufficient_scope", message)
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        Self::Rejected(r)
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::InvalidName(m) => Self::bad_request(format!("Invalid name: {m}")),
            TokenError::InvalidDescription(m) => {
                Self::bad_request(format!("Invalid description: {m}"))
            }
            TokenError::InvalidOwner(m) => Self::bad_request(format!("Invalid owner: {m}")),
            TokenError::UnknownRole(r) => Self::bad_request(format!("Unknown role {r:?}")),
            TokenError::UnknownKind(k) => Self::bad_request(format!("Unknown token kind {k:?}")),
            TokenError::PermissionsExceedRole => {
                Self::bad_request("Invalid permissions: they go beyond the role's")
            }
            TokenError::PermissionsWiden => Self::insufficient_scope(
                "Invalid permissions: an edit may only remove permissions, never add one"
                    .to_owned(),
            ),
            TokenError::InvalidExpiry(m) => Self::bad_request(format!("Invalid expires_in: {m}")),
            TokenError::InvalidAllowedIps(m) => {
                Self::bad_request(format!("Invalid allowed_ips: {m}"))
            }
            TokenError::InvalidRateLimit(m) => {
                Self::bad_request(format!("Invalid rate_limit: {m}"))
            }
            TokenError::GraceTooLong { max_seconds } => Self::bad_request(format!(
                "Invalid grace_seconds: must be at most {max_seconds}"
            )),
            TokenError::ReleaseTooSoon { next_allowed_at } => {
                let at = next_allowed_at
                    .to_offset(time::UtcOffset::UTC)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                Self::new(
                    StatusCode::CONFLICT,
                    "release_too_soon",
                    format!(
                        "A binding may be released once every 24 hours; next release allowed at {at}"
                    ),
                )
            }
            TokenError::NotBindable => Self::new(
                StatusCode::CONFLICT,
                "not_bindable",
                "This kind of token is not bound to a machine",
            ),
            TokenError::NameTaken => Self::new(
                StatusCode::CONFLICT,
                "name_taken",
                "You already have a token with this name",
            ),
            TokenError::LimitReached => Self::new(
                StatusCode::CONFLICT,
                "token_limit",
                "The limit of live tokens is reached; revoke one first",
            ),
            TokenError::DuplicateHash => Self::new(
                StatusCode::CONFLICT,
                "duplicate",
                "A token with this hash already exists",
            ),
            TokenError::InvalidImport(m) => Self::bad_request(format!("Invalid entry: {m}")),
            TokenError::NotFound => Self::not_found(),
            TokenError::Store(error) => {
                tracing::warn!(%error, "token store failed; answering 503");
                Self::store_unavailable()
            }
        }
    }
}

pub(crate) fn renderer() -> JsonRenderer {
    JsonRenderer::new("keygate").unwrap_or_default()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Rejected(r) => {
                let mut res = renderer().render(&r);
                r.kind().tag(res.extensions_mut());
                res.map(axum::body::Body::from)
            }
            Self::Plain {
                status,
                code,
                message,
                challenge,
                retry_after,
            } => {
                let body = serde_json::to_string(&ErrorBody {
                    error: message.into_owned(),
                    code: code.to_owned(),
                })
                .unwrap_or_default();
                let mut res = Response::new(axum::body::Body::from(body));
                *res.status_mut() = status;
                res.extensions_mut().insert(ErrorCode(code));
                let h = res.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                if matches!(challenge, Challenge::Basic | Challenge::BasicAndBearer) {
                    h.append(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(BASIC_CHALLENGE),
                    );
                }
                if challenge == Challenge::BasicAndBearer {
                    h.append(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(BEARER_CHALLENGE),
                    );
                }
                if let Some(s) = retry_after {
                    h.insert(header::RETRY_AFTER, HeaderValue::from(s));
                }
                res
            }
        }
    }
}
