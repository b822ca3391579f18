//! `POST /admin/tokens/import` through the management router: an administrator imports
//! tokens another system issued by their SHA-256; each entry answers on its own; the
//! imported tokens authenticate; the limits, the permission, the audit and the refusals
//! (a hash already stored, permissions beyond the importer's, cross-site posts).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
use keygate::audit::{AuditEvent, AuditLog, AuditSink, MemoryAuditSink};
use keygate::axum::management::Management;
use keygate::token::{LegacyAlphabet, LegacyFormat};
use keygate::{Permissions, Roles, TokenHash, TokenKind, Tokens};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::{TestStore, basic};

const ADMIN: &str = "admin@example.com";
const VIEWER: &str = "viewer@example.com";
/// Holds `tokens:admin` and `apps:read`, nothing else.
const IMPORTER: &str = "importer@example.com";
const PASSWORD: &str = "correct horse battery staple";
const PATH: &str = "/admin/tokens/import";

/// An audit sink that can be made to fail.
#[derive(Clone, Default)]
struct Sink {
    events: MemoryAuditSink,
    down: Arc<AtomicBool>,
}

#[async_trait]
impl AuditSink for Sink {
    async fn write(
        &self,
        events: &[AuditEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.down.load(Ordering::SeqCst) {
            return Err("disk full".into());
        }
        self.events.write(events).await
    }
}

struct World {
    app: Router,
    tokens: Tokens,
    store: TestStore,
    sink: Sink,
}

async fn world() -> World {
    let store = TestStore::default();
    let dtk = TokenKind::new("dtk", "dtk")
        .unwrap()
        .with_legacy_format(LegacyFormat {
            len: 40,
            alphabet: LegacyAlphabet::Hex,
        })
        .unwrap();
    let tokens = Tokens::builder(store.clone())
        .kind(TokenKind::pat())
        .kind(dtk)
        .roles(Roles::deployment_platform())
        .build()
        .unwrap();
    let accounts = MemoryAccounts::new();
    let hash = hash_password(PASSWORD).unwrap();
    for (email, permissions) in [
        (ADMIN, vec!["*"]),
        (VIEWER, vec!["apps:read", "tokens:read"]),
        (IMPORTER, vec!["tokens:admin", "apps:read"]),
    ] {
        accounts
            .put_account(Account {
                email: email.to_owned(),
                password_hash: hash.clone(),
                permissions: Permissions::parse(permissions).unwrap(),
                created_at: time::OffsetDateTime::now_utc(),
            })
            .await
            .unwrap();
    }
    let sink = Sink::default();
    let audit = AuditLog::spawn(sink.clone(), 1000);
    let app = Management::new(tokens.clone(), accounts)
        .with_audit(audit)
        .router();
    World {
        app,
        tokens,
        store,
        sink,
    }
}

async fn post(
    app: &Router,
    auth: &str,
    content_type: &str,
    body: String,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(PATH)
        .header(header::AUTHORIZATION, auth)
        .header(header::CONTENT_TYPE, content_type);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, crate::common::json_or_null(&bytes))
}

async fn import(app: &Router, auth: &str, entries: Value) -> (StatusCode, Value) {
    post(app, auth, "application/json", entries.to_string(), &[]).await
}

fn legacy_dtk() -> String {
    let bytes: [u8; 20] = rand::random();
    format!(
        "dtk_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[tokio::test]
async fn an_admin_imports_a_batch_and_each_entry_says_what_became_of_it() {
    let w = world().await;
    let keygate_token = TokenKind::pat().generate();
    let legacy = legacy_dtk();
    let other = legacy_dtk();
    let admin = basic(ADMIN, PASSWORD);
    let entries = json!([
        {
            "owner": "alice@example.com",
            "name": "laptop",
            "hash": keygate_token.hash().to_hex(),
            "role": "viewer",
            "description": "from the old portal",
            "expires_at": "2099-01-01T00:00:00Z",
        },
        {
            "owner": "alice@example.com",
            "name": "ci",
            "hash": TokenHash::of(&legacy).to_hex().to_uppercase(),
            "kind": "dtk",
            "permissions": ["apps:read"],
            "hint": "dtk_3f9a",
        },
        { "owner": "alice@example.com", "name": "laptop", "hash": TokenHash::of(&other).to_hex(), "kind": "dtk" },
        { "owner": "alice@example.com", "name": "dup", "hash": keygate_token.hash().to_hex() },
        { "owner": "alice@example.com", "name": "gone", "hash": TokenHash::of("x").to_hex(), "expires_at": "2001-01-01T00:00:00Z" },
        { "owner": "alice@example.com", "name": "kind", "hash": TokenHash::of("y").to_hex(), "kind": "nope" },
        { "owner": "alice@example.com", "name": "role", "hash": TokenHash::of("z").to_hex(), "role": "wizard" },
    ]);
    let (status, answer) = import(&w.app, &admin, entries).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["imported"], 2, "{answer}");
    assert_eq!(answer["failed"], 5);
    let results = answer["results"].as_array().unwrap();
    let codes: Vec<&str> = results
        .iter()
        .map(|r| r["code"].as_str().unwrap_or("ok"))
        .collect();
    assert_eq!(
        codes,
        [
            "ok",
            "ok",
            "name_taken",
            "duplicate",
            "invalid_request",
            "invalid_request",
            "invalid_request"
        ]
    );
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i);
    }
    assert!(results[4]["error"].as_str().unwrap().contains("passed"));
    assert!(results[5]["error"].as_str().unwrap().contains("nope"));
    assert!(results[6]["error"].as_str().unwrap().contains("wizard"));

    // Both imported tokens authenticate: the keygate one and the legacy one.
    let id = w
        .tokens
        .authenticate(keygate_token.expose_secret())
        .await
        .unwrap();
    assert_eq!(id.owner(), "alice@example.com");
    assert_eq!(
        id.token_id().to_string(),
        results[0]["id"].as_str().unwrap()
    );
    assert!(id.can("apps:read"));
    let legacy_id = w.tokens.authenticate(&legacy).await.unwrap();
    assert_eq!(legacy_id.kind(), "dtk");
    assert!(w.tokens.authenticate(&other).await.is_err());

    // They are listed with what was given, `created_by` the importing admin.
    let list = w.tokens.list("alice@example.com").await.unwrap();
    assert_eq!(list.len(), 2);
    let laptop = list.iter().find(|r| r.name == "laptop").unwrap();
    assert_eq!(laptop.created_by, ADMIN);
    assert_eq!(laptop.hint, "pat_…");
    assert_eq!(laptop.extras().role.as_deref(), Some("viewer"));
    assert_eq!(
        laptop.extras().description.as_deref(),
        Some("from the old portal")
    );
    assert_eq!(
        laptop.expires_at,
        Some(time::macros::datetime!(2099-01-01 0:00 UTC))
    );
    let ci = list.iter().find(|r| r.name == "ci").unwrap();
    assert_eq!(ci.hint, "dtk_3f9a");
    assert_eq!(
        ci.hash,
        TokenHash::of(&legacy),
        "the given digest, as given"
    );

    // Each imported token has its `token.import` event, written before the answer; the
    // refused entries are recorded too; no hash or token in any of them.
    let events = w.sink.events.events();
    let imports: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.event == "token.import" && e.rbac_decision == keygate::audit::Decision::Allow)
        .collect();
    assert_eq!(imports.len(), 2);
    assert_eq!(imports[0].api_token_name.as_deref(), Some("laptop"));
    assert_eq!(imports[0].owner.as_deref(), Some("alice@example.com"));
    // The refused entries are queued like other refusals: wait for them to be written.
    let mut events = events;
    for _ in 0..200 {
        if events.iter().filter(|e| e.event == "token.import").count() >= 7 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        events = w.sink.events.events();
    }
    let refused: Vec<(&str, u16)> = events
        .iter()
        .filter(|e| e.event == "token.import" && e.rbac_decision == keygate::audit::Decision::Deny)
        .map(|e| (e.reason.as_deref().unwrap(), e.status_code))
        .collect();
    assert!(refused.contains(&("name_taken", 409)), "{refused:?}");
    assert!(refused.contains(&("duplicate", 409)), "{refused:?}");
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&keygate_token.hash().to_hex()));
    assert!(!text.contains(&legacy));

    // An entry that is not what the schema says is a 400 naming it, and nothing of the
    // request is imported.
    let fresh = TokenKind::pat().generate();
    for (bad, says) in [
        (
            json!({ "owner": "bob@example.com", "name": "short", "hash": "abc" }),
            "hash",
        ),
        (
            json!({ "owner": "bob@example.com", "name": "x", "hash": TokenHash::of("a").to_hex(), "colour": "red" }),
            "colour",
        ),
        (
            json!({ "owner": "bob@example.com", "hash": TokenHash::of("a").to_hex() }),
            "name",
        ),
        (
            json!({ "owner": "bob@example.com", "name": "a\u{202e}b", "hash": TokenHash::of("a").to_hex() }),
            "name",
        ),
        (
            json!({ "owner": "bob@example.com", "name": "x", "hash": TokenHash::of("a").to_hex(), "permissions": ["Apps Read"] }),
            "permissions",
        ),
        (
            json!({ "owner": "bob@example.com", "name": "x", "hash": TokenHash::of("a").to_hex(), "expires_at": "tomorrow" }),
            "expires_at",
        ),
        (
            json!({ "owner": "bob@example.com", "name": "x", "hash": TokenHash::of("a").to_hex(), "hint": "far too long a hint" }),
            "hint",
        ),
        (json!("not an object"), "invalid entry"),
    ] {
        let batch = json!([{ "owner": "bob@example.com", "name": "ok", "hash": fresh.hash().to_hex() }, bad]);
        let (status, err) = import(&w.app, &admin, batch).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(err["code"], "invalid_request");
        let message = err["error"].as_str().unwrap();
        assert!(
            message.starts_with("Entry 1: ") && message.contains(says),
            "{message}"
        );
    }
    assert!(w.tokens.authenticate(fresh.expose_secret()).await.is_err());
    assert!(w.tokens.list("bob@example.com").await.unwrap().is_empty());

    // No body at all is an import of nothing.
    let (status, answer) = post(&w.app, &admin, "application/json", String::new(), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({ "imported": 0, "failed": 0, "results": [] }));
}

#[tokio::test]
async fn json_lines_limits_and_malformed_bodies() {
    let w = world().await;
    let admin = basic(ADMIN, PASSWORD);
    let token = TokenKind::pat().generate();
    let line = json!({ "owner": "bob@example.com", "name": "one", "hash": token.hash().to_hex() });
    let (status, err) = post(
        &w.app,
        &admin,
        "application/jsonl",
        format!("{line}\n{{ not json\n"),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .starts_with("Entry 1: invalid JSON")
    );
    assert!(w.tokens.authenticate(token.expose_secret()).await.is_err());
    let lines = format!(
        "{line}\n\n{}\n",
        json!({ "owner": "bob@example.com", "name": "two", "hash": TokenHash::of("b").to_hex() })
    );
    let (status, answer) = post(&w.app, &admin, "application/x-ndjson", lines, &[]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["imported"], 2);
    assert!(w.tokens.authenticate(token.expose_secret()).await.is_ok());

    // More than 1000 entries: 413, nothing imported.
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({ "owner": "carol@example.com", "name": format!("t{i}"), "hash": TokenHash::of(&i.to_string()).to_hex() }))
        .collect();
    let (status, err) = import(&w.app, &admin, Value::Array(many)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(err["code"], "payload_too_large");
    assert!(w.tokens.list("carol@example.com").await.unwrap().is_empty());

    let (status, err) = import(&w.app, &admin, json!({ "owner": "x" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["code"], "invalid_request");
    let (status, err) = post(&w.app, &admin, "text/csv", "a,b".into(), &[]).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(err["code"], "unsupported_media_type");
}

#[tokio::test]
async fn importing_needs_tokens_admin_and_never_grants_beyond_the_importer() {
    let w = world().await;
    let stolen = TokenKind::pat().generate();
    let entry = |perms: Value| json!([{ "owner": ADMIN, "name": "backdoor", "hash": stolen.hash().to_hex(), "permissions": perms }]);

    // Without `tokens:admin`: 403, whether signed in or with a token.
    let (status, err) = import(
        &w.app,
        &basic(VIEWER, PASSWORD),
        entry(json!(["apps:read"])),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["code"], "insufficient_scope");
    let viewer_token = w
        .tokens
        .issue(
            keygate::NewToken::new(VIEWER, "cli")
                .permissions(Permissions::parse(["tokens:read"]).unwrap()),
        )
        .await
        .unwrap();
    let (status, err) = import(
        &w.app,
        &format!("Bearer {}", viewer_token.token.expose_secret()),
        entry(json!(["apps:read"])),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["code"], "basic_auth_required");
    let (status, _) = import(&w.app, "Bearer pat_nonsense", entry(json!([]))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The attack: whoever imports a hash may know its token. A bearer token, even one
    // holding `tokens:admin`, cannot import at all (as it cannot create) ...
    let importer = w
        .tokens
        .issue(
            keygate::NewToken::new(IMPORTER, "migration")
                .permissions(Permissions::parse(["tokens:admin"]).unwrap()),
        )
        .await
        .unwrap();
    let bearer = format!("Bearer {}", importer.token.expose_secret());
    let (status, err) = import(&w.app, &bearer, entry(json!(["tokens:admin"]))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["code"], "basic_auth_required");
    // ... and an account holding `tokens:admin` (and `apps:read`) imports nothing beyond
    // its own permissions for the admin account: the entry is refused and the token it
    // knows does not work.
    let signed_in = basic(IMPORTER, PASSWORD);
    for perms in [json!(["*"]), json!(["tokens:admin", "apps:write"])] {
        let (status, answer) = import(&w.app, &signed_in, entry(perms)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["results"][0]["code"], "insufficient_scope");
    }
    let role = json!([{ "owner": ADMIN, "name": "backdoor", "hash": stolen.hash().to_hex(), "role": "admin" }]);
    let (_, answer) = import(&w.app, &signed_in, role).await;
    assert_eq!(answer["results"][0]["code"], "insufficient_scope");
    assert!(w.tokens.authenticate(stolen.expose_secret()).await.is_err());
    // Within its own permissions the import goes through.
    let (_, answer) = import(&w.app, &signed_in, entry(json!(["tokens:admin"]))).await;
    assert_eq!(answer["imported"], 1, "{answer}");

    // A browser's cross-site post is refused before anything is read.
    let other = TokenKind::pat().generate();
    let body = json!([{ "owner": ADMIN, "name": "csrf", "hash": other.hash().to_hex() }]);
    let (status, err) = post(
        &w.app,
        &basic(ADMIN, PASSWORD),
        "application/json",
        body.to_string(),
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["code"], "cross_site_request");
    assert!(w.tokens.authenticate(other.expose_secret()).await.is_err());
}

#[tokio::test]
async fn a_failing_store_or_audit_log_is_503_and_leaves_no_unaudited_token() {
    let w = world().await;
    let admin = basic(ADMIN, PASSWORD);
    let first = TokenKind::pat().generate();
    let second = TokenKind::pat().generate();
    let entries = json!([
        { "owner": "dave@example.com", "name": "a", "hash": first.hash().to_hex() },
        { "owner": "dave@example.com", "name": "b", "hash": second.hash().to_hex() },
    ]);

    w.sink.down.store(true, Ordering::SeqCst);
    let (status, err) = import(&w.app, &admin, entries.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["code"], "store_unavailable");
    assert!(err["error"].as_str().unwrap().contains("index 0"));
    assert!(
        w.tokens.authenticate(first.expose_secret()).await.is_err(),
        "revoked"
    );
    assert!(
        w.tokens.authenticate(second.expose_secret()).await.is_err(),
        "not attempted"
    );
    w.sink.down.store(false, Ordering::SeqCst);

    w.store.set_down(true);
    let (status, err) = import(&w.app, &admin, entries).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["code"], "store_unavailable");
    w.store.set_down(false);
}
