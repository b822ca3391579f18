//! keygate behind tower-http's `TraceLayer`: each request's span, and so each log line of
//! the request, carries the token's id, its owner and the decision (never the token).
//!
//! ```sh
//! cargo run --example tracing
//! curl -H "Authorization: Bearer <token>" http://127.0.0.1:3000/whoami
//! ```
//!
//! prints, for that request, a line such as
//! `INFO request{method=GET path=/whoami token_id=3f0c… owner=alice@example.com decision=allow}: finished processing request latency=0 ms status=200`.
//!
//! The span declares the fields empty (`tracing::field::Empty`) and the layer fills them in
//! once it has decided; a span that does not declare them is left alone. The span records
//! the path, not the URI: a layer outside keygate's sees the request as it came, and a
//! token sent in the query (`TokenSource::query`) would otherwise be logged.

use axum::body::Body;
use axum::routing::get;
use axum::{Json, Router};
use http::Request;
use keygate::{AuthLayer, Identity, MemoryStore, NewToken, Tokens};
use tower_http::trace::TraceLayer;
use tracing::field::Empty;

async fn whoami(identity: Identity) -> Json<Identity> {
    Json(identity)
}

/// The request's span, with the fields keygate fills in.
fn span(request: &Request<Body>) -> tracing::Span {
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = request.uri().path(),
        token_id = Empty,
        owner = Empty,
        decision = Empty,
        reason = Empty,
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("info,tower_http=debug")
        .init();
    let tokens = Tokens::new(MemoryStore::new());
    let issued = tokens
        .issue(NewToken::new("alice@example.com", "laptop"))
        .await?;
    println!("token: {}", issued.token.expose_secret());

    let app = Router::new()
        .route("/whoami", get(whoami))
        .layer(AuthLayer::new(tokens.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(span));

    let addr = std::env::var("KEYGATE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("try: curl -H \"Authorization: Bearer $TOKEN\" http://{addr}/whoami (Ctrl-C stops)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    tokens.flush_usage().await?;
    Ok(())
}
