//! axum integration (feature `axum`): [`Identity`](crate::Identity) as an extractor,
//! `Option<Identity>` for optional authentication, and [`Rejection`](crate::Rejection) as a
//! response. The token management router is [`management`] (feature `management`).
//!
//! ```
//! use axum::{Router, routing::get, Json};
//! use keygate::{AuthLayer, Identity, MemoryStore, Rejection, Tokens};
//!
//! async fn whoami(id: Identity) -> Json<Identity> {
//!     Json(id)
//! }
//!
//! async fn delete_thing(id: Identity) -> Result<&'static str, Rejection> {
//!     id.require("things:write")?;
//!     Ok("deleted")
//! }
//!
//! let tokens = Tokens::new(MemoryStore::new());
//! let app: Router = Router::new()
//!     .route("/whoami", get(whoami))
//!     .route("/things/delete", get(delete_thing))
//!     .layer(AuthLayer::new(tokens));
//! # let _ = app;
//! ```

mod extract;
#[cfg(feature = "management")]
pub mod management;
