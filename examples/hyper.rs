//! keygate's layer on a bare hyper service, no axum.
//!
//! ```sh
//! cargo run --example hyper
//! curl -H "Authorization: Bearer <token>" http://127.0.0.1:3001/
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use keygate::{AuthLayer, Identity, MemoryStore, NewToken, Tokens};
use tower::ServiceBuilder;

async fn hello(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // The layer only lets requests with a valid token through, so the identity is there.
    let owner = req
        .extensions()
        .get::<Identity>()
        .map_or("nobody", |id| id.owner())
        .to_owned();
    Ok(Response::new(Full::from(format!("hello, {owner}\n"))))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tokens = Tokens::new(MemoryStore::new());
    let issued = tokens.issue(NewToken::new("alice", "demo")).await?;
    println!("token: {}", issued.token.expose_secret());

    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(tokens))
        .service_fn(hello);

    let addr = std::env::var("KEYGATE_ADDR").unwrap_or_else(|_| "127.0.0.1:3001".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {error}");
            }
        });
    }
}
