//! keygate in front of a gRPC service (tonic), on the in-memory store.
//!
//! ```sh
//! cargo run --example grpc
//! ```
//!
//! It serves the `keygate.example.Notes` service on a free port of 127.0.0.1, then calls it
//! with tonic's client four times, prints each answer and exits:
//!
//! | call | gRPC status |
//! | --- | --- |
//! | `Whoami` without a token | 16 `UNAUTHENTICATED` ("Missing API token") |
//! | `Whoami` with a wrong token | 16 `UNAUTHENTICATED` ("Invalid API token") |
//! | `Whoami` with the reader's token | OK, the token's owner |
//! | `Purge` with the reader's token | 7 `PERMISSION_DENIED` (it lacks `notes:purge`) |
//!
//! The token travels as gRPC metadata `authorization: Bearer <token>`, which is the HTTP/2
//! `authorization` header, so [`AuthLayer`] checks it like any other request; with
//! [`GrpcRenderer`] its refusals reach the client as gRPC statuses.
//!
//! A tonic service is one tower service answering every method under `/<package.Service>/`.
//! To ask more of one method, the example routes that method's path on its own and puts a
//! [`RequirePermissionLayer`] (with the same renderer) on that route alone, the way an axum
//! app guards one route: the handlers themselves never look at permissions.
//!
//! There is no `.proto` file and no build script: the two messages derive
//! `prost::Message`, and the service and the client call tonic's `server::Grpc` and
//! `client::Grpc` directly (what tonic's code generator would write from the service below).
//!
//! ```proto
//! package keygate.example;
//! message Empty {}
//! message Reply { string text = 1; }
//! service Notes {
//!   rpc Whoami(Empty) returns (Reply); // any valid token
//!   rpc Purge(Empty) returns (Reply);  // needs notes:purge
//! }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::PathAndQuery;
use keygate::middleware::GrpcRenderer;
use keygate::{
    AuthLayer, Identity, MemoryStore, NewToken, Permissions, RequirePermissionLayer, Tokens,
};
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::{Channel, Server, server::TcpIncoming};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tower::{ServiceBuilder, service_fn};

/// The request of both methods.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

/// The answer of both methods.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {
    /// A line of text for the caller.
    #[prost(string, tag = "1")]
    pub text: String,
}

/// The full path of `Whoami`.
pub const WHOAMI: &str = "/keygate.example.Notes/Whoami";
/// The full path of `Purge`.
pub const PURGE: &str = "/keygate.example.Notes/Purge";

/// The `Notes` service: one tower service for every method of `keygate.example.Notes`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Notes;

impl NamedService for Notes {
    const NAME: &'static str = "keygate.example.Notes";
}

type Response = http::Response<tonic::body::Body>;

impl<B> tower::Service<http::Request<B>> for Notes
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Reply, Empty>::default());
            Ok(match req.uri().path() {
                WHOAMI => grpc.unary(service_fn(whoami), req).await,
                PURGE => grpc.unary(service_fn(purge), req).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// `Whoami`: the owner of the token, from the [`Identity`] the layer put into the request.
async fn whoami(req: tonic::Request<Empty>) -> Result<tonic::Response<Reply>, Status> {
    let id = req
        .extensions()
        .get::<Identity>()
        .ok_or_else(|| Status::unauthenticated("no identity"))?;
    let text = format!("hello {} (token {:?})", id.owner(), id.token_name());
    Ok(tonic::Response::new(Reply { text }))
}

/// `Purge`: reached only with `notes:purge` (see [`app`]).
async fn purge(_: tonic::Request<Empty>) -> Result<tonic::Response<Reply>, Status> {
    Ok(tonic::Response::new(Reply {
        text: "all notes purged".into(),
    }))
}

/// The service behind keygate: every method needs a valid token, `Purge` also needs
/// `notes:purge`; refusals are gRPC statuses.
pub fn app(tokens: Tokens) -> Routes {
    let purge_only = ServiceBuilder::new()
        .layer(RequirePermissionLayer::new("notes:purge").with_renderer(GrpcRenderer))
        .service(Notes);
    let router = Routes::new(Notes)
        .into_axum_router()
        .route_service(PURGE, purge_only)
        .layer(AuthLayer::new(tokens).with_renderer(GrpcRenderer));
    Routes::from(router)
}

/// Serves `routes` over HTTP/2 on `listener` until the task is dropped.
///
/// # Errors
///
/// When the server fails.
pub async fn serve(
    routes: Routes,
    listener: tokio::net::TcpListener,
) -> Result<(), tonic::transport::Error> {
    Server::builder()
        .add_routes(routes)
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
}

/// Calls `method` (a full path such as [`WHOAMI`]) on `channel`, with `token` as
/// `authorization: Bearer <token>` metadata when there is one.
///
/// # Errors
///
/// The status the server answered with.
pub async fn call(
    channel: Channel,
    method: &'static str,
    token: Option<&str>,
) -> Result<String, Status> {
    let mut req = tonic::Request::new(Empty {});
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::invalid_argument("the token is not a header value"))?;
        req.metadata_mut().insert("authorization", value);
    }
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let codec = ProstCodec::<Empty, Reply>::default();
    let res = grpc
        .unary(req, PathAndQuery::from_static(method), codec)
        .await?;
    Ok(res.into_inner().text)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tokens = Tokens::new(MemoryStore::new());
    let reader = tokens
        .issue(
            NewToken::new("reader@example.com", "laptop")
                .permissions(Permissions::parse(["notes:read"])?),
        )
        .await?;
    let token = reader.token.expose_secret();
    println!("reader token (notes:read, not notes:purge): {token}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("serving keygate.example.Notes on http://{addr}");
    tokio::spawn(serve(app(tokens), listener));

    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let wrong = "pat_not-a-real-token";
    for (what, method, token) in [
        ("Whoami without a token", WHOAMI, None),
        ("Whoami with a wrong token", WHOAMI, Some(wrong)),
        ("Whoami with the reader's token", WHOAMI, Some(token)),
        ("Purge with the reader's token", PURGE, Some(token)),
    ] {
        match call(channel.clone(), method, token).await {
            Ok(text) => println!("{what}: OK, {text}"),
            Err(s) if s.code() == Code::Unavailable => return Err(s.into()),
            Err(s) => println!(
                "{what}: {} {:?}, {:?}",
                s.code() as i32,
                s.code(),
                s.message()
            ),
        }
    }
    Ok(())
}
