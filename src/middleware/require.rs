use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::body::ResponseBody;
use super::layer::static_permission;
use super::rejection::{JsonRenderer, Rejection, RejectionKind, RenderRejection};
use crate::error::ConfigError;
use crate::identity::{Permission, identity_of};

/// Requires a permission of the [`Identity`](crate::Identity) that [`AuthLayer`](crate::AuthLayer) put into
/// the request: 403 `insufficient_scope` when it is missing, 401 when an optional layer saw
/// no token, 500 `auth_layer_missing` when no [`AuthLayer`](crate::AuthLayer) ran.
///
/// Put it inside the auth layer, e.g. on one axum route with `route_layer`:
///
/// ```
/// use keygate::RequirePermissionLayer;
/// let only_writers = RequirePermissionLayer::new("things:write");
/// # let _ = only_writers;
/// ```
#[derive(Clone)]
#[must_use]
pub struct RequirePermissionLayer {
    permission: Permission,
    renderer: Arc<dyn RenderRejection>,
}

impl std::fmt::Debug for RequirePermissionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequirePermissionLayer")
            .field("permission", &self.permission)
            .finish_non_exhaustive()
    }
}

impl RequirePermissionLayer {
    /// Requires `permission`, written in the code; use [`try_new`](Self::try_new) for one
    /// read at run time.
    ///
    /// # Panics
    ///
    /// When `permission` is not a valid permission, with a message naming it.
    pub fn new(permission: &'static str) -> Self {
        Self::with_permission(static_permission("RequirePermissionLayer::new", permission))
    }

    /// [`new`](Self::new) for a permission known only at run time.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidPermission`].
    pub fn try_new(permission: &str) -> Result<Self, ConfigError> {
        Ok(Self::with_permission(Permission::new(permission)?))
    }

    fn with_permission(permission: Permission) -> Self {
        Self {
            permission,
            renderer: Arc::new(JsonRenderer::default()),
        }
    }

    /// Replaces the response renderer.
    pub fn with_renderer(mut self, renderer: impl RenderRejection) -> Self {
        self.renderer = Arc::new(renderer);
        self
    }
}

impl<S> Layer<S> for RequirePermissionLayer {
    type Service = RequirePermission<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequirePermission {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service produced by [`RequirePermissionLayer`].
#[derive(Clone)]
pub struct RequirePermission<S> {
    inner: S,
    layer: RequirePermissionLayer,
}

impl<S> std::fmt::Debug for RequirePermission<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequirePermission")
            .field("permission", &self.layer.permission)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The future of [`RequirePermission`].
    pub struct RequireFuture<F, B> {
        #[pin]
        state: RequireState<F, B>,
    }
}

pin_project! {
    #[project = RequireProj]
    enum RequireState<F, B> {
        Inner { #[pin] future: F },
        Refused { response: Option<Response<ResponseBody<B>>> },
    }
}

impl<F, B> std::fmt::Debug for RequireFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for RequireFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            RequireProj::Inner { future } => future
                .poll(cx)
                .map(|r| r.map(|res| res.map(ResponseBody::inner))),
            RequireProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("RequireFuture polled after completion"))),
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequirePermission<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = RequireFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let wanted = self.layer.permission.as_str();
        let refusal = match identity_of(req.extensions(), req.uri().path()) {
            Err(missing_layer) => Some(missing_layer),
            Ok(None) => Some(Rejection::new(RejectionKind::MissingToken)),
            Ok(Some(id)) => id.require(wanted).err(),
        };
        match refusal {
            None => RequireFuture {
                state: RequireState::Inner {
                    future: self.inner.call(req),
                },
            },
            Some(r) => {
                let mut res = self.layer.renderer.render(&r);
                r.kind().tag(res.extensions_mut());
                RequireFuture {
                    state: RequireState::Refused {
                        response: Some(res.map(ResponseBody::rejection)),
                    },
                }
            }
        }
    }
}
