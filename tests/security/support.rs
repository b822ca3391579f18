//! What every attack needs: a reference server on a scratch database, requests from a
//! chosen peer address, and answers read as JSON.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::server;

pub const ADMIN: &str = "admin@example.com";
pub const PASSWORD: &str = "correct horse battery staple";
/// The socket peer of requests that do not name one.
pub const PEER: &str = "192.0.2.10:50000";

/// A reference server on its own SQLite file; the directory lives as long as this.
pub struct Server {
    pub app: server::App,
    pub config: server::Config,
    _dir: tempfile::TempDir,
}

impl Server {
    /// The server with the defaults.
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    /// The server with the defaults changed by `f`.
    pub async fn with(f: impl FnOnce(&mut server::Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = server::Config {
            db: dir.path().join("keygate.db"),
            addr: "127.0.0.1:0".into(),
            admin_email: ADMIN.into(),
            admin_password: Some(zeroize::Zeroizing::new(PASSWORD.to_owned())),
            // Tests share two cores and fsync on every write: a generous bound keeps a slow
            // moment from turning into a 503 (the bound itself is tested on paused time).
            store_timeout: std::time::Duration::from_secs(60),
            demo: true,
            ..server::Config::default()
        };
        f(&mut config);
        let app = server::build_app(&config).await.unwrap();
        Self {
            app,
            config,
            _dir: dir,
        }
    }

    /// Sends `req` from the socket peer `peer` (unless the request names one already).
    pub async fn send_from(&self, peer: &str, mut req: Request<Body>) -> Answer {
        if req.extensions().get::<ConnectInfo<SocketAddr>>().is_none() {
            req.extensions_mut()
                .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        }
        let res = self.app.router.clone().oneshot(req).await.unwrap();
        Answer::read(res).await
    }

    /// Sends `req` from [`PEER`].
    pub async fn send(&self, req: Request<Body>) -> Answer {
        self.send_from(PEER, req).await
    }

    /// Creates a token as the admin (Basic) with this JSON body; panics unless 201.
    pub async fn create(&self, body: Value) -> Created {
        let a = self
            .send(json_request(
                Method::POST,
                "/api/v1/tokens",
                &admin_basic(),
                &body,
            ))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        let v = a.json();
        Created {
            id: v["id"].as_str().unwrap().to_owned(),
            token: v["token"].as_str().unwrap().to_owned(),
        }
    }
}

/// A token just created: its id and its secret.
pub struct Created {
    pub id: String,
    pub token: String,
}

impl Created {
    /// `Bearer <token>`.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }
}

/// A response, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub text: String,
}

impl Answer {
    pub async fn read(res: http::Response<Body>) -> Self {
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        Self {
            status: parts.status,
            headers: parts.headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    /// The `code` of an error body.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// `Basic <email:password>`.
pub use crate::common::basic;

/// The admin's Basic credentials.
pub fn admin_basic() -> String {
    basic(ADMIN, PASSWORD)
}

/// A request with an `Authorization` value and no body.
pub fn request(method: Method, path: &str, auth: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, auth)
        .body(Body::empty())
        .unwrap()
}

/// A request with an `Authorization` value and a JSON body.
pub fn json_request(method: Method, path: &str, auth: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, auth)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}
