use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::identity::Identity;
use crate::middleware::{JsonRenderer, Rejection, RejectionKind, RenderRejection};

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut res = JsonRenderer::default().render(&self);
        res.extensions_mut().insert(self.kind());
        res.map(axum::body::Body::from)
    }
}

/// Extracts the [`Identity`] put into the request by [`AuthLayer`](crate::AuthLayer); 401
/// `missing_token` when there is none (the route is not behind the layer, or the layer is
/// optional and no token was sent).
impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Identity>()
            .cloned()
            .ok_or(Rejection::new(RejectionKind::MissingToken))
    }
}

/// `Option<Identity>`: `None` when the request carries no identity.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Identity {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Identity>().cloned())
    }
}
