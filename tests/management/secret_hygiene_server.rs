//! A full flow through the reference server with logs at TRACE, audit to a file and metrics
//! on: no raw token, token hash or password in any captured byte (logs, audit lines,
//! `/metrics`, response bodies and headers).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use base64::Engine;
use http::{Method, Request};
use http_body_util::BodyExt;
use keygate::TokenHash;
use tower::ServiceExt;

use crate::common::Capture;
use keygate::server;

const ADMIN: &str = "admin@example.com";
const PASSWORD: &str = "hunter2-correct-horse-battery";

struct Client {
    router: axum::Router,
    seen: Vec<String>,
}

impl Client {
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        auth: Option<String>,
        body: Option<&str>,
    ) -> String {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let mut req = b.body(Body::from(body.unwrap_or("").to_owned())).unwrap();
        req.extensions_mut().insert(ConnectInfo(
            "192.0.2.44:50000".parse::<SocketAddr>().unwrap(),
        ));
        let res = self.router.clone().oneshot(req).await.unwrap();
        let head = format!("{} {:?}", res.status(), res.headers());
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        self.seen.push(head);
        text
    }
}

fn basic() -> String {
    crate::common::basic(ADMIN, PASSWORD)
}

#[tokio::test]
async fn no_secret_in_logs_audit_metrics_or_responses() {
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let _every = crate::common::ask_every_dispatcher();

    let config = server::Config {
        db: dir
            .path()
            .join("keygate.db")
            .to_string_lossy()
            .into_owned()
            .into(),
        admin_password: Some(zeroize::Zeroizing::new(PASSWORD.to_owned())),
        audit_log: Some(audit_path.clone()),
        // Behaviour, not the store bound, is under test: a loaded machine's fsync may
        // take longer than the 2 s default.
        store_timeout: std::time::Duration::from_secs(30),
        demo: true,
        ..server::Config::default()
    };
    let app = server::build_app(&config).await.unwrap();
    let mut c = Client {
        router: app.router.clone(),
        seen: Vec::new(),
    };
    let mut bodies = Vec::new();
    let mut tokens = Vec::new();

    let created = c
        .send(
            Method::POST,
            "/api/v1/tokens",
            Some(basic()),
            Some(r#"{"name":"ci","role":"viewer"}"#),
        )
        .await;
    let v: serde_json::Value = serde_json::from_str(&created).unwrap();
    let token = v["token"].as_str().unwrap().to_owned();
    let id = v["id"].as_str().unwrap().to_owned();
    tokens.push(token.clone());
    let bearer = format!("Bearer {token}");
    for path in ["/api/v1/me", "/api/v1/apps", "/api/v1/tokens"] {
        bodies.push(c.send(Method::GET, path, Some(bearer.clone()), None).await);
    }
    bodies.push(
        c.send(
            Method::POST,
            "/api/v1/apps/web/restart",
            Some(bearer.clone()),
            None,
        )
        .await,
    );
    let rotated = c
        .send(
            Method::POST,
            &format!("/api/v1/tokens/{id}/rotate"),
            Some(basic()),
            Some(r#"{"grace_seconds":0}"#),
        )
        .await;
    let v: serde_json::Value = serde_json::from_str(&rotated).unwrap();
    let new_token = v["token"].as_str().unwrap().to_owned();
    let new_id = v["id"].as_str().unwrap().to_owned();
    tokens.push(new_token.clone());
    bodies.push(
        c.send(Method::GET, "/api/v1/me", Some(bearer.clone()), None)
            .await,
    );
    bodies.push(
        c.send(
            Method::DELETE,
            &format!("/api/v1/tokens/{new_id}"),
            Some(basic()),
            None,
        )
        .await,
    );
    bodies.push(
        c.send(
            Method::GET,
            "/api/v1/me",
            Some(format!("Bearer {new_token}")),
            None,
        )
        .await,
    );
    let wrong = base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN}:{PASSWORD}x"));
    bodies.push(
        c.send(
            Method::GET,
            "/api/v1/tokens",
            Some(format!("Basic {wrong}")),
            None,
        )
        .await,
    );
    bodies.push(
        c.send(
            Method::GET,
            "/api/v1/me",
            Some(format!("Bearer {token} extra")),
            None,
        )
        .await,
    );
    let metrics = c.send(Method::GET, "/metrics", None, None).await;
    bodies.push(
        c.send(Method::GET, "/api/v1/audit", Some(basic()), None)
            .await,
    );

    app.tokens.flush_usage().await.unwrap();
    app.audit.shutdown().await;
    let audit = std::fs::read_to_string(&audit_path).unwrap();
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();

    assert!(
        audit.lines().count() >= 8,
        "the audit file has a line per decision: {audit}"
    );
    assert!(metrics.contains("keygate_verifications_total"), "{metrics}");
    assert!(!logs.is_empty(), "logs were captured");

    let mut haystacks: Vec<(&str, String)> = vec![
        ("logs", logs),
        ("audit", audit),
        ("metrics", metrics),
        ("headers", c.seen.join("\n")),
    ];
    haystacks.extend(bodies.into_iter().map(|b| ("body", b)));
    for t in &tokens {
        let secret = &t[4..];
        let hash = TokenHash::of(t).to_hex();
        for (what, text) in &haystacks {
            assert!(!text.contains(secret), "a raw token leaked into {what}");
            assert!(!text.contains(&hash), "a token hash leaked into {what}");
        }
    }
    for (what, text) in &haystacks {
        assert!(!text.contains(PASSWORD), "the password leaked into {what}");
    }
}
