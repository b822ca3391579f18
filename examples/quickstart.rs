//! keygate in an axum app, on the in-memory store.
//!
//! ```sh
//! cargo run --example quickstart
//! curl -H "Authorization: Bearer <admin token>" http://127.0.0.1:3000/whoami
//! ```
//!
//! It issues two tokens at start (an admin and a viewer) and prints them once. Routes:
//! `GET /whoami` (any valid token), `GET /things` (`things:read`), `POST /things`
//! (`things:write`: the viewer gets 403 `insufficient_scope`).

use axum::routing::{get, post};
use axum::{Json, Router};
use keygate::{AuthLayer, Identity, MemoryStore, NewToken, RequirePermissionLayer, Roles, Tokens};

async fn whoami(identity: Identity) -> Json<Identity> {
    Json(identity)
}

async fn list_things() -> Json<Vec<&'static str>> {
    Json(vec!["teapot", "kettle"])
}

async fn create_thing(identity: Identity) -> (http::StatusCode, String) {
    (
        http::StatusCode::CREATED,
        format!("thing created by {}\n", identity.owner()),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let roles = Roles::new()
        .with_role("admin", ["*"])?
        .with_role("viewer", ["things:read"])?;
    let tokens = Tokens::builder(MemoryStore::new()).roles(roles).build()?;

    let admin = tokens
        .issue(NewToken::new("admin@example.com", "admin").role("admin"))
        .await?;
    let viewer = tokens
        .issue(NewToken::new("viewer@example.com", "viewer").role("viewer"))
        .await?;
    println!("admin token: {}", admin.token.expose_secret());
    println!("viewer token: {}", viewer.token.expose_secret());

    let app = Router::new()
        .route("/whoami", get(whoami))
        .route(
            "/things",
            get(list_things)
                .route_layer(RequirePermissionLayer::new("things:read"))
                .merge(post(create_thing).route_layer(RequirePermissionLayer::new("things:write"))),
        )
        .layer(AuthLayer::new(tokens.clone()));

    let addr = std::env::var("KEYGATE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr}");
    println!("try: curl -H \"Authorization: Bearer $TOKEN\" http://{addr}/whoami");
    // The manager writes last-used times and purges ended tokens in the background on its
    // own; on the way out, the uses still queued are written here.
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    tokens.flush_usage().await?;
    Ok(())
}
