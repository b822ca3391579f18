//! The management surface: audit events that a flood cannot push out, a `/metrics` that
//! tells no refusal reason, an audit log that shows each owner only its own events, and
//! management writes that a foreign web page cannot make.

use http::{Method, StatusCode};
use keygate::Permissions;
use keygate::accounts::{Account, AccountStore, hash_password};
use keygate::store::sqlite::SqliteStore;
use serde_json::{Value, json};

use crate::support::{ADMIN, Server, basic, json_request, request};

const OTHER: &str = "bob@example.com";
const OTHER_PASSWORD: &str = "another horse battery staple";

/// Adds an account with `permissions` to the server's database.
async fn add_account(server: &Server, email: &str, password: &str, permissions: &[&str]) {
    let store = SqliteStore::open(&server.config.db).await.unwrap();
    store
        .put_account(Account {
            email: email.to_owned(),
            password_hash: hash_password(password).unwrap(),
            permissions: Permissions::parse(permissions.iter().copied()).unwrap(),
            created_at: time::OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
}

/// The events `auth` reads from `GET /api/v1/audit` with `query`.
async fn audit_as(server: &Server, auth: &str, query: &str) -> Vec<Value> {
    let a = server
        .send(request(
            Method::GET,
            &format!("/api/v1/audit?limit=1000{query}"),
            auth,
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.json().as_array().unwrap().clone()
}

#[tokio::test]
async fn an_account_with_audit_read_sees_only_its_own_events() {
    let server = Server::start().await;
    let admin_token = server.create(json!({ "name": "admins-own" })).await;
    let me = server
        .send(request(Method::GET, "/api/v1/me", &admin_token.bearer()))
        .await;
    assert_eq!(me.status, StatusCode::OK);
    add_account(
        &server,
        OTHER,
        OTHER_PASSWORD,
        &["audit:read", "tokens:read", "tokens:write"],
    )
    .await;
    let bob = basic(OTHER, OTHER_PASSWORD);
    let created = server
        .send(json_request(
            Method::POST,
            "/api/v1/tokens",
            &bob,
            &json!({ "name": "bobs-own" }),
        ))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let bobs_token = created.json()["id"].as_str().unwrap().to_owned();

    // The admin (`*`, which holds audit:read_all) sees its token's decisions; wait until
    // the queued request event is written.
    let admin = crate::support::admin_basic();
    let mut seen = false;
    for _ in 0..500 {
        let events = audit_as(&server, &admin, &format!("&token_id={}", admin_token.id)).await;
        if events.iter().any(|e| e["event"] == "authenticate") {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(seen, "the admin reads its token's events");
    let everyone = audit_as(&server, &admin, "").await;
    assert!(
        everyone.iter().any(|e| e["owner"] == OTHER),
        "admin reads every owner"
    );

    // Bob reads the log: only his own events, however he asks.
    let all = audit_as(&server, &bob, "").await;
    assert!(
        all.iter()
            .any(|e| e["event"] == "token.create" && e["api_token_id"] == bobs_token.as_str()),
        "bob sees his own events: {all:?}"
    );
    for e in &all {
        assert_eq!(e["owner"], OTHER, "bob read someone else's event: {e}");
    }
    let asked = audit_as(&server, &bob, &format!("&token_id={}", admin_token.id)).await;
    assert!(
        asked.is_empty(),
        "bob read the admin's token's events: {asked:?}"
    );
    assert!(
        !audit_as(&server, &bob, "")
            .await
            .iter()
            .any(|e| e["owner"] == ADMIN),
        "no event of the admin"
    );
}

/// The form a foreign page would post: `description=…` with the browser's cached Basic
/// credentials, plus the headers the browser adds.
fn form_post(path: &str, extra: &[(&str, &str)]) -> http::Request<axum::body::Body> {
    let mut b = http::Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(http::header::HOST, "keys.example.com")
        .header(http::header::AUTHORIZATION, crate::support::admin_basic())
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(axum::body::Body::from(
        "description=planted+by+evil.example",
    ))
    .unwrap()
}

async fn live_tokens(server: &Server) -> usize {
    let a = server
        .send(request(
            Method::GET,
            "/api/v1/tokens",
            &crate::support::admin_basic(),
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.json().as_array().unwrap().len()
}

#[tokio::test]
async fn a_foreign_page_cannot_post_a_form_with_the_browsers_basic_credentials() {
    let server = Server::start().await;
    for marks in [
        &[("origin", "https://evil.example")][..],
        &[("origin", "null")][..],
        &[("sec-fetch-site", "cross-site")][..],
        &[
            ("sec-fetch-site", "same-site"),
            ("origin", "https://x.keys.example.com"),
        ][..],
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ][..],
    ] {
        let a = server.send(form_post("/api/v1/tokens", marks)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{marks:?}: {}", a.text);
        assert_eq!(a.code(), "cross_site_request", "{marks:?}");
    }
    assert_eq!(live_tokens(&server).await, 0, "no token was created");

    // Revoking and rotating from another site are refused too; the token keeps working.
    let victim = server.create(json!({ "name": "victim" })).await;
    for (method, path) in [
        (Method::DELETE, format!("/api/v1/tokens/{}", victim.id)),
        (Method::POST, format!("/api/v1/tokens/{}/rotate", victim.id)),
    ] {
        let mut req = request(method, &path, &crate::support::admin_basic());
        req.headers_mut()
            .insert("sec-fetch-site", "cross-site".parse().unwrap());
        let a = server.send(req).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}: {}", a.text);
        assert_eq!(a.code(), "cross_site_request");
    }
    let me = server
        .send(request(Method::GET, "/api/v1/me", &victim.bearer()))
        .await;
    assert_eq!(
        me.status,
        StatusCode::OK,
        "the victim's token was not touched"
    );
}

#[tokio::test]
async fn same_origin_pages_and_clients_that_are_not_browsers_still_write() {
    let server = Server::start().await;
    for marks in [
        &[][..],
        &[
            ("sec-fetch-site", "same-origin"),
            ("origin", "https://keys.example.com"),
        ][..],
        &[("origin", "https://keys.example.com")][..],
        &[("sec-fetch-site", "none")][..],
    ] {
        let a = server.send(form_post("/api/v1/tokens", marks)).await;
        assert_eq!(a.status, StatusCode::CREATED, "{marks:?}: {}", a.text);
    }
    // Reads are not writes: a cross-site GET is answered as before.
    let mut req = request(
        Method::GET,
        "/api/v1/tokens",
        &crate::support::admin_basic(),
    );
    req.headers_mut()
        .insert("sec-fetch-site", "cross-site".parse().unwrap());
    assert_eq!(server.send(req).await.status, StatusCode::OK);
    assert_eq!(live_tokens(&server).await, 4);
}

/// What the audit sink does with a write.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SinkMode {
    Keep,
    Fail,
    Stall,
}

/// An audit sink whose background writer is wedged by the first batch of request events
/// (a flood fills the queue behind it), and which keeps, fails or stalls the other writes.
#[derive(Clone)]
struct FloodedSink {
    mode: std::sync::Arc<std::sync::Mutex<SinkMode>>,
    kept: keygate::audit::MemoryAuditSink,
}

impl FloodedSink {
    fn new() -> Self {
        Self {
            mode: std::sync::Arc::new(std::sync::Mutex::new(SinkMode::Keep)),
            kept: keygate::audit::MemoryAuditSink::new(),
        }
    }

    fn set(&self, mode: SinkMode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Whether an event `event` about `token_id` is in the sink.
    fn holds(&self, event: &str, token_id: &str) -> bool {
        self.kept.events().iter().any(|e| {
            e.event == event && e.api_token_id.map(|id| id.to_string()).as_deref() == Some(token_id)
        })
    }
}

#[async_trait::async_trait]
impl keygate::audit::AuditSink for FloodedSink {
    async fn write(
        &self,
        events: &[keygate::audit::AuditEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if events.iter().any(|e| e.event == "authenticate") {
            std::future::pending::<()>().await;
        }
        let mode = *self.mode.lock().unwrap();
        match mode {
            SinkMode::Keep => self.kept.write(events).await,
            SinkMode::Fail => Err("audit database is read-only".into()),
            SinkMode::Stall => std::future::pending().await,
        }
    }
}

/// A management router with an admin account, over a queue of 16 events already flooded
/// with request events.
async fn flooded_management(
    sink: &FloodedSink,
) -> (axum::Router, keygate::Tokens, keygate::audit::AuditLog) {
    use keygate::accounts::MemoryAccounts;
    let tokens = keygate::Tokens::new(keygate::MemoryStore::new());
    let accounts = MemoryAccounts::new();
    accounts
        .put_account(Account {
            email: ADMIN.into(),
            password_hash: hash_password(crate::support::PASSWORD).unwrap(),
            permissions: Permissions::parse(["*"]).unwrap(),
            created_at: time::OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    let audit = keygate::audit::AuditLog::spawn(sink.clone(), 16)
        .with_write_timeout(std::time::Duration::from_millis(200));
    for _ in 0..10_000 {
        audit.record(keygate::audit::AuditEvent {
            timestamp: time::OffsetDateTime::now_utc(),
            event: "authenticate".into(),
            api_token_id: None,
            api_token_name: None,
            owner: None,
            method: "GET".into(),
            path: "/api/v1/me".into(),
            status_code: 401,
            rbac_decision: keygate::audit::Decision::Deny,
            reason: Some("unknown".into()),
            client_ip: None,
            request_id: None,
            details: None,
        });
        tokio::task::yield_now().await;
    }
    assert!(audit.dropped() > 9_000, "the flood is shed and counted");
    let router = keygate::axum::management::Management::new(tokens.clone(), accounts)
        .with_audit(audit.clone())
        .router();
    (router, tokens, audit)
}

async fn send(
    router: &axum::Router,
    req: http::Request<axum::body::Body>,
) -> crate::support::Answer {
    use tower::ServiceExt;
    crate::support::Answer::read(router.clone().oneshot(req).await.unwrap()).await
}

fn admin_json(method: Method, path: &str, body: &Value) -> http::Request<axum::body::Body> {
    json_request(method, path, &crate::support::admin_basic(), body)
}

#[tokio::test]
async fn a_flood_of_request_events_cannot_push_out_management_writes() {
    let sink = FloodedSink::new();
    let (router, _, audit) = flooded_management(&sink).await;

    let created = send(
        &router,
        admin_json(Method::POST, "/tokens", &json!({ "name": "ci" })),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    assert!(sink.holds("token.create", &id), "written before the 201");

    let rotated = send(
        &router,
        admin_json(Method::POST, &format!("/tokens/{id}/rotate"), &json!({})),
    )
    .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.text);
    let new_id = rotated.json()["id"].as_str().unwrap().to_owned();
    assert!(
        sink.holds("token.rotate", &new_id),
        "written before the 201"
    );

    let revoked = send(
        &router,
        request(
            Method::DELETE,
            &format!("/tokens/{new_id}"),
            &crate::support::admin_basic(),
        ),
    )
    .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.text);
    assert!(
        sink.holds("token.revoke", &new_id),
        "written before the 204"
    );
    assert_eq!(audit.write_errors(), 0);
}

#[tokio::test]
async fn management_writes_that_cannot_be_audited_answer_503_and_leave_no_usable_token() {
    let sink = FloodedSink::new();
    let (router, tokens, audit) = flooded_management(&sink).await;
    let mut kept = Vec::new();
    for name in ["kept-1", "kept-2"] {
        let a = send(
            &router,
            admin_json(Method::POST, "/tokens", &json!({ "name": name })),
        )
        .await;
        assert_eq!(a.status, StatusCode::CREATED);
        let v = a.json();
        kept.push((
            v["id"].as_str().unwrap().to_owned(),
            v["token"].as_str().unwrap().to_owned(),
        ));
    }

    for (mode, (id, _)) in [SinkMode::Fail, SinkMode::Stall].into_iter().zip(&kept) {
        sink.set(mode);
        let errors = audit.write_errors();
        let a = send(
            &router,
            admin_json(
                Method::POST,
                "/tokens",
                &json!({ "name": format!("{mode:?}") }),
            ),
        )
        .await;
        assert_eq!(
            a.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{mode:?}: {}",
            a.text
        );
        assert_eq!(a.code(), "store_unavailable");
        assert!(!a.text.contains("\"token\""), "no secret handed out");
        assert_eq!(
            audit.write_errors(),
            errors + 1,
            "{mode:?}: the failure is counted"
        );

        let a = send(
            &router,
            admin_json(
                Method::POST,
                &format!("/tokens/{id}/rotate"),
                &json!({ "grace_seconds": 60 }),
            ),
        )
        .await;
        assert_eq!(
            a.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{mode:?}: {}",
            a.text
        );
        assert!(!a.text.contains("\"token\""), "no secret handed out");
    }
    // Every token made by an unaudited write is revoked; the rotated ones live on in their
    // grace.
    let mut live: Vec<String> = tokens
        .list(ADMIN)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.extras().revoked_at.is_none())
        .map(|r| r.id.to_string())
        .collect();
    live.sort();
    let mut expected: Vec<String> = kept.iter().map(|(id, _)| id.clone()).collect();
    expected.sort();
    assert_eq!(live, expected, "only the audited tokens are live");

    sink.set(SinkMode::Fail);
    let (id, token) = &kept[0];
    assert!(tokens.authenticate(token).await.is_ok());
    let a = send(
        &router,
        request(
            Method::DELETE,
            &format!("/tokens/{id}"),
            &crate::support::admin_basic(),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text);
    assert!(
        tokens.authenticate(token).await.is_err(),
        "a revocation stays done"
    );
    assert_eq!(
        sink.kept.events().len(),
        2,
        "only the writes that answered 2xx are on record"
    );
}
