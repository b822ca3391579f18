use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::identity::{Identity, identity_of};
use crate::middleware::{JsonRenderer, Rejection, RejectionKind, RenderRejection};

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut res = JsonRenderer::default().render(&self);
        res.extensions_mut().insert(self.kind());
        res.map(axum::body::Body::from)
    }
}

/// Extracts the [`Identity`] put into the request by [`AuthLayer`](crate::AuthLayer); 401
/// `missing_token` when an [optional](crate::AuthLayer::optional) layer let a request
/// without a token through, and 500 `auth_layer_missing` when no layer covers the route (a
/// forgotten `.layer(...)`, logged once).
impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        identity_of(&parts.extensions, parts.uri.path())?
            .cloned()
            .ok_or(Rejection::new(RejectionKind::MissingToken))
    }
}

/// `Option<Identity>`: `None` when an [optional](crate::AuthLayer::optional) layer saw no
/// token; 500 `auth_layer_missing`, as for `Identity`, when no layer covers the route.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Identity {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(identity_of(&parts.extensions, parts.uri.path())?.cloned())
    }
}
