#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod audit;
pub mod client_ip;
pub mod clock;
pub mod denial;
pub mod error;
pub mod forward_auth;
pub mod header;
pub mod identity;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod middleware;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod permissions;
pub mod rate_limit;
pub mod record;
pub mod signature;
pub mod store;
pub mod token;
pub mod tokens;

#[cfg(feature = "management")]
pub mod accounts;
#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "ui")]
pub mod ui;

pub use denial::Denial;
pub use error::ConfigError;
pub use identity::{AuthMethod, Identity, Permission, Permissions, Roles};
pub use middleware::{
    AuthLayer, AuthService, GrpcRenderer, JsonRenderer, RateLimitHeaders, Rejection, RejectionKind,
    RenderRejection, RequirePermissionLayer, TokenSource,
};
pub use store::{MemoryStore, StoreError, TokenId, TokenRecord, TokenStore};
pub use token::{Pepper, PepperError, RawToken, TokenHash, TokenKind};
pub use tokens::{IssuedToken, NewToken, TokenError, Tokens};
