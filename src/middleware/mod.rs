//! The tower middleware: [`AuthLayer`] / [`AuthService`], and [`RequirePermissionLayer`]
//! for per-route permissions.
//!
//! The layer follows one path per request: read the token from its source
//! ([`TokenSource`]; `Authorization: Bearer` by default), marking the header sensitive (and
//! removing a query or WebSocket-protocol token from the request) → exactly one header,
//! RFC 6750 grammar (400 otherwise) → token format and checksum (401, no store
//! hit) → SHA-256 → store lookup by hash → constant-time compare → kind, revocation,
//! expiry (one uniform 401) → the access rule (403) → [`Identity`](crate::Identity) into
//! the request's extensions → the inner service. A store error refuses the request with
//! 503; nothing is ever let through by mistake. The decision (token id, owner, `allow` or
//! `deny` and the reason) is recorded on the current tracing span, if it declares those
//! fields.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::{ServiceBuilder, ServiceExt};
//! use keygate::{AuthLayer, Identity, MemoryStore, NewToken, Tokens};
//!
//! let tokens = Tokens::new(MemoryStore::new());
//! let issued = tokens.issue(NewToken::new("alice", "laptop")).await.unwrap();
//!
//! let svc = ServiceBuilder::new()
//!     .layer(AuthLayer::new(tokens))
//!     .service_fn(|req: Request<Full<Bytes>>| async move {
//!         let who = req.extensions().get::<Identity>().unwrap().owner().to_owned();
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(who))))
//!     });
//!
//! let ok = Request::get("/")
//!     .header("authorization", format!("Bearer {}", issued.token.expose_secret()))
//!     .body(Full::default())
//!     .unwrap();
//! assert_eq!(svc.clone().oneshot(ok).await.unwrap().status(), StatusCode::OK);
//!
//! let anonymous = Request::get("/").body(Full::default()).unwrap();
//! assert_eq!(svc.oneshot(anonymous).await.unwrap().status(), StatusCode::UNAUTHORIZED);
//! # });
//! ```

mod body;
mod future;
mod grpc;
pub(crate) mod layer;
mod pipeline;
mod rate_headers;
mod rejection;
mod require;
mod service;
mod source;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use grpc::GrpcRenderer;
pub use layer::AuthLayer;
pub use rate_headers::RateLimitHeaders;
pub use rejection::{JsonRenderer, Rejection, RejectionKind, RenderRejection};
pub use require::{RequireFuture, RequirePermission, RequirePermissionLayer};
pub use service::AuthService;
pub use source::TokenSource;
