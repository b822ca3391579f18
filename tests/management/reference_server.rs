//! The reference server with every policy on, driven through `oneshot` on `build_app`'s
//! router (a `ConnectInfo` extension stands in for the socket), and effective permissions
//! (token ∩ owner) through the layer.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::accounts::{Account, AccountStore, MemoryAccounts};
use keygate::permissions::AccountPermissions;
use keygate::{AuthLayer, MemoryStore, NewToken, Permissions, StoreError, Tokens};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};

use keygate::server;

const ADMIN: &str = "admin@example.com";
const PASSWORD: &str = "correct horse battery staple";

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap()
    }
}

async fn call(
    app: &axum::Router,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(a) = auth {
        b = b.header(header::AUTHORIZATION, a);
    }
    let body = match body {
        Some(v) => {
            b = b.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let mut req = b.body(body).unwrap();
    req.extensions_mut().insert(ConnectInfo(
        "192.0.2.10:50000".parse::<SocketAddr>().unwrap(),
    ));
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn basic() -> String {
    crate::common::basic(ADMIN, PASSWORD)
}

/// The sum of the samples of `name` whose labels contain `labels`.
fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    let values: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_server_limits_audits_measures_and_serves_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let audit_file = dir.path().join("audit.jsonl");
    let config = server::Config {
        db: dir.path().join("keygate.db"),
        addr: "127.0.0.1:0".into(),
        admin_email: ADMIN.into(),
        admin_password: Some(zeroize::Zeroizing::new(PASSWORD.to_owned())),
        audit_log: Some(audit_file.clone()),
        // Behaviour, not the store bound, is under test: a loaded machine's fsync may
        // take longer than the 2 s default.
        store_timeout: std::time::Duration::from_secs(30),
        demo: true,
        ..server::Config::default()
    };
    assert_eq!(config.rate_limit, 100);
    let app = server::build_app(&config).await.unwrap();
    let r = &app.router;

    let created = call(
        r,
        Method::POST,
        "/api/v1/tokens",
        Some(&basic()),
        Some(json!({"name": "monitor", "role": "viewer"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let token = created.json()["token"].as_str().unwrap().to_owned();
    let token_id = created.json()["id"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {token}");

    // 100 requests a minute per token, with the three RateLimit headers on each and the
    // IETF draft's RateLimit-Policy and RateLimit beside them.
    for i in 0..100u32 {
        let a = call(r, Method::GET, "/api/v1/apps", Some(&auth), None).await;
        assert_eq!(a.status, StatusCode::OK, "request {i}: {}", a.text);
        assert_eq!(a.headers["ratelimit-limit"], "100");
        assert_eq!(
            a.headers["ratelimit-remaining"],
            (99 - i).to_string().as_str()
        );
        let reset = a.headers["ratelimit-reset"].to_str().unwrap();
        assert_eq!(a.headers["ratelimit-policy"], "\"token\";q=100;w=60");
        assert_eq!(
            a.headers["ratelimit"].to_str().unwrap(),
            format!("\"token\";r={};t={reset}", 99 - i)
        );
    }
    let a = call(r, Method::GET, "/api/v1/apps", Some(&auth), None).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text);
    assert!(
        a.headers["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"token\";r=0;t="),
        "{:?}",
        a.headers
    );
    assert_eq!(a.json()["code"], "rate_limited");
    let retry: u64 = a.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // The budget is the token's on every route: the management API refuses it too.
    let a = call(r, Method::GET, "/api/v1/me", Some(&auth), None).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);

    // Prometheus text, unauthenticated, with counters that moved.
    let m = call(r, Method::GET, "/metrics", None, None).await;
    assert_eq!(m.status, StatusCode::OK);
    let allowed = sample(
        &m.text,
        "keygate_verifications_total",
        "outcome=\"allow\",kind=\"pat\"",
    )
    .unwrap();
    assert!(allowed >= 100.0, "{}", m.text);
    assert!(sample(&m.text, "keygate_rate_limited_total", "").unwrap() >= 2.0);
    assert!(!m.text.contains(&token));

    // The token page.
    let page = call(r, Method::GET, "/tokens", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text.contains("/api/v1"));

    // The audit log: the viewer token lacks audit:read; the admin reads it back.
    let a = call(r, Method::GET, "/api/v1/audit", Some(&auth), None).await;
    assert_eq!(
        a.status,
        StatusCode::TOO_MANY_REQUESTS,
        "still rate limited"
    );
    let a = call(
        r,
        Method::GET,
        "/api/v1/audit?limit=abc",
        Some(&basic()),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    app.audit.shutdown().await;
    let text = std::fs::read_to_string(&audit_file).unwrap();
    assert!(!text.contains(&token), "the audit log holds the token");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let auth_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "authenticate")
        .collect();
    // One per bearer request: 100 allowed and 101st refused on /apps, 1 refused on /me,
    // 1 refused on /audit.
    assert_eq!(auth_lines.len(), 103, "{text}");
    for l in &auth_lines {
        assert_eq!(l["api_token_id"], token_id.as_str());
        assert_eq!(l["api_token_name"], "monitor");
        assert_eq!(l["client_ip"], "192.0.2.10");
        assert!(l["status_code"].is_u64());
        assert!(l["rbac_decision"] == "allow" || l["rbac_decision"] == "deny");
    }
    let denied: Vec<&&Value> = auth_lines
        .iter()
        .filter(|l| l["rbac_decision"] == "deny")
        .collect();
    assert_eq!(denied.len(), 3);
    assert!(
        denied
            .iter()
            .all(|l| l["status_code"] == 429 && l["reason"] == "rate_limited")
    );
    let create = lines.iter().find(|l| l["event"] == "token.create").unwrap();
    assert_eq!(create["owner"], ADMIN);
    assert_eq!(create["api_token_id"], token_id.as_str());
    assert_eq!(create["method"], "POST");
    assert_eq!(create["path"], "/api/v1/tokens");
    assert_eq!(create["status_code"], 201);
    assert_eq!(create["rbac_decision"], "allow");

    // The same events in the database, on GET /api/v1/audit.
    let a = call(
        r,
        Method::GET,
        &format!("/api/v1/audit?token_id={token_id}&limit=1000"),
        Some(&basic()),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let events = a.json();
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 104, "103 authenticate + 1 token.create");
    assert_eq!(events[0]["event"], "authenticate", "newest first");
    assert_eq!(events.last().unwrap()["event"], "token.create");
    let a = call(
        r,
        Method::GET,
        "/api/v1/audit?since=2999-01-01T00:00:00Z",
        Some(&basic()),
        None,
    )
    .await;
    assert_eq!(a.json(), json!([]));
}

#[test]
fn the_defaults_switch_every_policy_on() {
    let c = server::Config::default();
    assert_eq!((c.rate_limit, c.failure_limit, c.metrics), (100, 20, true));
    assert!(c.trusted_proxies.is_empty() && c.audit_log.is_none());
}

fn account(perms: &[&str]) -> Account {
    Account {
        email: "ops@example.com".into(),
        password_hash: String::new(),
        permissions: Permissions::parse(perms.iter().copied()).unwrap(),
        created_at: time::OffsetDateTime::now_utc(),
    }
}

/// An account store that can be switched off.
#[derive(Clone, Default)]
struct Flaky {
    inner: MemoryAccounts,
    down: Arc<AtomicBool>,
}

#[async_trait]
impl AccountStore for Flaky {
    async fn put_account(&self, account: Account) -> Result<(), StoreError> {
        self.inner.put_account(account).await
    }
    async fn find_account(&self, email: &str) -> Result<Option<Account>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::backend(std::io::Error::other("accounts down")));
        }
        self.inner.find_account(email).await
    }
}

#[tokio::test]
async fn demoting_an_owner_demotes_their_tokens_through_the_layer() {
    let accounts = Flaky::default();
    accounts
        .put_account(account(&["apps:read", "env:write"]))
        .await
        .unwrap();
    let tokens = Tokens::new(MemoryStore::new());
    let issued = tokens
        .issue(
            NewToken::new("ops@example.com", "deploy")
                .permissions(Permissions::parse(["env:write", "apps:read"]).unwrap()),
        )
        .await
        .unwrap();
    let ghost = tokens
        .issue(
            NewToken::new("gone@example.com", "old")
                .permissions(Permissions::parse(["env:write"]).unwrap()),
        )
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    // TTL 100 ms: a demotion is seen within it.
    let resolver = AccountPermissions::new(accounts.clone()).with_ttl(Duration::from_millis(100));
    let svc = AuthLayer::new(tokens)
        .require("env:write")
        .with_permission_resolver(resolver)
        .layer(common::echo(calls.clone()));
    let send = |token: &keygate::RawToken| {
        svc.clone()
            .oneshot(common::get(Some(&common::bearer(token))))
    };
    assert_eq!(send(&issued.token).await.unwrap().status(), StatusCode::OK);

    accounts.put_account(account(&["apps:read"])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let (status, _, body) = common::body_string(send(&issued.token).await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("insufficient_scope"));

    // An owner without an account holds nothing.
    let (status, _, _) = common::body_string(send(&ghost.token).await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The account store failing: 503, never let through.
    accounts.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(120)).await;
    let (status, _, body) = common::body_string(send(&issued.token).await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("store_unavailable"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// `owner_rate_limit` (`KEYGATE_OWNER_RATE_LIMIT`): the admin's two tokens share one budget
/// of three requests a minute on the reference server; the fourth, from either token, is
/// the usual 429 with `Retry-After`, and the headers showed the owner's budget throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_server_shares_an_owners_budget_between_their_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let config = server::Config {
        db: dir.path().join("keygate.db"),
        addr: "127.0.0.1:0".into(),
        admin_email: ADMIN.into(),
        admin_password: Some(zeroize::Zeroizing::new(PASSWORD.to_owned())),
        owner_rate_limit: Some(3),
        store_timeout: std::time::Duration::from_secs(30),
        ..server::Config::default()
    };
    let app = server::build_app(&config).await.unwrap();
    let r = &app.router;
    let mut bearers = Vec::new();
    for name in ["ci", "laptop"] {
        let created = call(
            r,
            Method::POST,
            "/api/v1/tokens",
            Some(&basic()),
            Some(json!({ "name": name })),
        )
        .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        bearers.push(format!(
            "Bearer {}",
            created.json()["token"].as_str().unwrap()
        ));
    }
    for i in 0..3 {
        let me = call(r, Method::GET, "/api/v1/me", Some(&bearers[i % 2]), None).await;
        assert_eq!(me.status, StatusCode::OK, "request {i}: {}", me.text);
        assert_eq!(me.headers["ratelimit-limit"], "3");
        assert_eq!(
            me.headers["ratelimit-remaining"],
            (2 - i).to_string().as_str()
        );
    }
    for bearer in &bearers {
        let refused = call(r, Method::GET, "/api/v1/me", Some(bearer), None).await;
        assert_eq!(
            refused.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            refused.text
        );
        assert_eq!(refused.json()["code"], "rate_limited");
        assert!(refused.headers.contains_key(header::RETRY_AFTER));
    }
}
