//! Two reference-server instances on one PostgreSQL database: a token created on one works
//! on the other, and a token revoked on one is refused on the other in under a second.
//!
//! Needs PostgreSQL at `KEYGATE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); without it the test prints why and skips,
//! unless `CI` is set, where it fails.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use base64::Engine;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use keygate::server;

const ADMIN: &str = "admin@example.com";
const PASSWORD: &str = "correct horse battery staple";

fn url() -> String {
    common::postgres_url()
}

async fn call(
    router: &axum::Router,
    method: Method,
    path: &str,
    auth: &str,
    body: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", auth);
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let mut req = b.body(Body::from(body.unwrap_or("").to_owned())).unwrap();
    req.extensions_mut().insert(ConnectInfo(
        "127.0.0.1:40000".parse::<SocketAddr>().unwrap(),
    ));
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_tokens_and_revocations() {
    let schema = format!("kg_two_servers_{}", std::process::id());
    let config = |port: u16| server::Config {
        db: url().into(),
        db_schema: Some(schema.clone()),
        addr: format!("127.0.0.1:{port}"),
        admin_password: Some(zeroize::Zeroizing::new(PASSWORD.to_owned())),
        // Behaviour, not the store bound, is under test: a loaded machine's fsync may
        // take longer than the 2 s default.
        store_timeout: std::time::Duration::from_secs(30),
        ..server::Config::default()
    };
    let Some(a) = common::available(
        "PostgreSQL",
        &url(),
        "two_instances_share_tokens_and_revocations",
        server::build_app(&config(8081)).await,
    ) else {
        return;
    };
    let b = server::build_app(&config(8082)).await.unwrap();
    for app in [&a, &b] {
        let listener = app
            .revocations
            .as_ref()
            .expect("a revocation listener on Postgres");
        assert!(listener.wait_connected(Duration::from_secs(5)).await);
    }
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN}:{PASSWORD}"))
    );

    // Created on A, used on B.
    let (status, created) = call(
        &a.router,
        Method::POST,
        "/api/v1/tokens",
        &basic,
        Some(r#"{"name":"shared","role":"viewer"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let bearer = format!("Bearer {}", created["token"].as_str().unwrap());
    let id = created["id"].as_str().unwrap().to_owned();
    for (name, app) in [("B", &b), ("A", &a), ("B again (cached)", &b)] {
        let (status, me) = call(&app.router, Method::GET, "/api/v1/me", &bearer, None).await;
        assert_eq!(status, StatusCode::OK, "on {name}: {me}");
        assert_eq!(me["token_name"], "shared");
    }

    // Revoked on A, refused on B within a second.
    let (status, _) = call(
        &a.router,
        Method::DELETE,
        &format!("/api/v1/tokens/{id}"),
        &basic,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let revoked_at = Instant::now();
    let delay = loop {
        let (status, _) = call(&b.router, Method::GET, "/api/v1/me", &bearer, None).await;
        if status == StatusCode::UNAUTHORIZED {
            break revoked_at.elapsed();
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "instance B still accepts the token a second after A revoked it"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    eprintln!("revoked on A, refused on B after {delay:?}");
    assert!(delay < Duration::from_secs(1));

    // Clean up the schema.
    drop((a, b));
    drop_schema_named(&schema).await;
}

/// Attack on an integrator who mounts the reference server in a program of their own and
/// keeps only `app.router` (the rest of `App` dropped): a token revoked on instance A must
/// still be refused on B within a second, not served from B's cache for its whole TTL
/// because B's revocation listener went away with the `App`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_kept_as_its_router_alone_still_hears_revocations() {
    let schema = format!("kg_router_only_{}", std::process::id());
    let config = || server::Config {
        db: url().into(),
        db_schema: Some(schema.clone()),
        admin_password: Some(zeroize::Zeroizing::new(PASSWORD.to_owned())),
        store_timeout: std::time::Duration::from_secs(30),
        ..server::Config::default()
    };
    let Some(a) = common::available(
        "PostgreSQL",
        &url(),
        "an_instance_kept_as_its_router_alone_still_hears_revocations",
        server::build_app(&config()).await,
    ) else {
        return;
    };
    let b = server::build_app(&config()).await.unwrap();
    for app in [&a, &b] {
        let listener = app.revocations.as_ref().expect("a listener on Postgres");
        assert!(listener.wait_connected(Duration::from_secs(5)).await);
    }
    /// What a program that mounts the routes in its own server keeps.
    fn router_only(app: server::App) -> axum::Router {
        app.router
    }
    let b = router_only(b);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN}:{PASSWORD}"))
    );
    let (status, created) = call(
        &a.router,
        Method::POST,
        "/api/v1/tokens",
        &basic,
        Some(r#"{"name":"router-only","role":"viewer"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let bearer = format!("Bearer {}", created["token"].as_str().unwrap());
    let id = created["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let (status, me) = call(&b, Method::GET, "/api/v1/me", &bearer, None).await;
        assert_eq!(status, StatusCode::OK, "{me}");
    }
    let (status, _) = call(
        &a.router,
        Method::DELETE,
        &format!("/api/v1/tokens/{id}"),
        &basic,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let revoked_at = Instant::now();
    loop {
        let (status, _) = call(&b, Method::GET, "/api/v1/me", &bearer, None).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "the router-only instance still accepts the token a second after A revoked it"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop((a, b));
    drop_schema_named(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_on_postgres_is_ready_once_its_listener_is_connected() {
    let schema = format!("kg_ready_{}", std::process::id());
    let config = server::Config {
        db: url().into(),
        db_schema: Some(schema.clone()),
        admin_password: Some(zeroize::Zeroizing::new(PASSWORD.to_owned())),
        store_timeout: std::time::Duration::from_secs(30),
        ..server::Config::default()
    };
    let Some(app) = common::available(
        "PostgreSQL",
        &url(),
        "an_instance_on_postgres_is_ready_once_its_listener_is_connected",
        server::build_app(&config).await,
    ) else {
        return;
    };
    let listener = app.revocations.clone().expect("a revocation listener");
    assert!(listener.wait_connected(Duration::from_secs(5)).await);
    for (path, body) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        let res = app.router.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(String::from_utf8_lossy(&bytes).trim(), body, "{path}");
    }
    drop(app);
    drop_schema_named(&schema).await;
}

/// Drops the schema a test's servers kept their tables in.
async fn drop_schema_named(schema: &str) {
    let pool = sqlx::PgPool::connect(&url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await
    .unwrap();
}

/// A TCP relay in front of PostgreSQL that the test can cut, as if the database stopped:
/// every open connection is reset and new ones are refused until it is restored.
struct Relay {
    addr: SocketAddr,
    upstream: String,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut relay = Self {
            addr,
            upstream: upstream.to_owned(),
            running: None,
        };
        relay.serve(listener);
        relay
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let upstream = self.upstream.clone();
        self.running = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
            // Dropping the task drops the JoinSet, which aborts every connection.
        }));
    }

    /// The database "stops": open connections are cut, new ones refused.
    fn cut(&mut self) {
        if let Some(task) = self.running.take() {
            task.abort();
        }
    }

    /// The database is back, on the same address.
    async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

#[tokio::test]
async fn readiness_answers_503_while_the_database_is_stopped_and_recovers() {
    let schema = format!("kg_ready_stop_{}", std::process::id());
    let upstream = url::Url::parse(&url()).unwrap();
    let target = format!(
        "{}:{}",
        upstream.host_str().unwrap_or("127.0.0.1"),
        upstream.port().unwrap_or(5432)
    );
    let mut relay = Relay::start(&target).await;
    let mut through = upstream.clone();
    through.set_port(Some(relay.addr.port())).unwrap();
    let config = server::Config {
        db: through.to_string().into(),
        db_schema: Some(schema.clone()),
        admin_password: Some(zeroize::Zeroizing::new(PASSWORD.to_owned())),
        store_timeout: Duration::from_secs(1),
        ..server::Config::default()
    };
    let Some(app) = common::available(
        "PostgreSQL",
        &url(),
        "readiness_answers_503_while_the_database_is_stopped_and_recovers",
        server::build_app(&config).await,
    ) else {
        return;
    };
    let probe = |path: &'static str| {
        let router = app.router.clone();
        async move {
            let req = Request::builder().uri(path).body(Body::empty()).unwrap();
            let res = router.oneshot(req).await.unwrap();
            let status = res.status();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&bytes).trim().to_owned())
        }
    };
    let listener = app.revocations.clone().expect("a revocation listener");
    assert!(listener.wait_connected(Duration::from_secs(5)).await);
    assert_eq!(probe("/readyz").await, (StatusCode::OK, "ready".into()));

    relay.cut();
    let started = Instant::now();
    let (status, body) = probe("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body, "not ready", "the probe says nothing about why");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the probe answered only after {:?}",
        started.elapsed()
    );
    // Alive all the same: an orchestrator must not restart the process for a database outage.
    assert_eq!(probe("/healthz").await.0, StatusCode::OK);

    relay.restore().await;
    // The pool reconnects and the listener hears revocations again: ready within seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = probe("/readyz").await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still not ready 20 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(app);
    drop(relay);
    drop_schema_named(&schema).await;
}
