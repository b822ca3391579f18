//! Editing a token in place (`PATCH /tokens/{id}`), the admin view across owners
//! (`GET /admin/tokens`, `DELETE /admin/tokens/{id}`) and the admin-only switch, through the
//! management router (`oneshot`, no ports), with a verification cache in front of the store.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
use keygate::audit::{AuditLog, MemoryAuditSink};
use keygate::axum::management::Management;
use keygate::clock::{Clock, ManualClock};
use keygate::store::cached::CachedStore;
use keygate::{MemoryStore, Permissions, Roles, Tokens};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::basic;

const ADMIN: &str = "admin@example.com";
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const PASSWORD: &str = "correct horse battery staple";

struct Fx {
    app: Router,
    clock: ManualClock,
    sink: MemoryAuditSink,
}

async fn fixture_with(admin_only: bool) -> Fx {
    let clock = ManualClock::new(time::macros::datetime!(2026-06-01 12:00 UTC));
    // A long-lived cache: a narrowed token must not wait for its TTL.
    let store = CachedStore::new(MemoryStore::new()).with_ttl(Duration::from_secs(3600));
    let tokens = Tokens::builder(store)
        .roles(Roles::deployment_platform())
        .clock(clock.clone())
        .build()
        .unwrap();
    let accounts = MemoryAccounts::new();
    let hash = hash_password(PASSWORD).unwrap();
    for (email, perms) in [
        (ADMIN, vec!["*"]),
        (ALICE, vec!["apps:*", "tokens:read", "tokens:write"]),
        (BOB, vec!["apps:*", "tokens:read", "tokens:write"]),
    ] {
        accounts
            .put_account(Account {
                email: email.into(),
                password_hash: hash.clone(),
                permissions: Permissions::parse(perms).unwrap(),
                created_at: clock.now(),
            })
            .await
            .unwrap();
    }
    let sink = MemoryAuditSink::new();
    let app = Management::new(tokens, accounts)
        .with_audit(AuditLog::spawn(sink.clone(), 1024))
        .admin_only_token_management(admin_only)
        .router();
    Fx { app, clock, sink }
}

async fn fixture() -> Fx {
    fixture_with(false).await
}

impl Fx {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        auth: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, auth);
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let mut req = req.body(body).unwrap();
        // Every request comes from 10.1.2.3.
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                [10, 1, 2, 3],
                5000,
            ))));
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Creates a token for `who` (Basic) and returns (id, secret).
    async fn create(&self, who: &str, body: Value) -> (String, String) {
        let (st, v) = self
            .call(Method::POST, "/tokens", &basic(who, PASSWORD), Some(body))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        (
            v["id"].as_str().unwrap().to_owned(),
            v["token"].as_str().unwrap().to_owned(),
        )
    }

    async fn patch(&self, id: &str, auth: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, &format!("/tokens/{id}"), auth, Some(body))
            .await
    }
}

fn alice() -> String {
    basic(ALICE, PASSWORD)
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test]
async fn patch_changes_each_field_and_the_owner_sees_it() {
    let fx = fixture().await;
    let (id, _) = fx
        .create(
            ALICE,
            json!({"name": "ci", "description": "old", "permissions": ["apps:read", "apps:write"]}),
        )
        .await;
    let (st, v) = fx
        .patch(
            &id,
            &alice(),
            json!({
                "name": "ci-main",
                "description": "deploys main",
                "expires_in": 3600,
                "allowed_ips": ["10.0.0.0/8"],
                "metadata": {"team": "payments", "ticket": 42},
                "permissions": ["apps:read"],
            }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "ci-main");
    assert_eq!(v["description"], "deploys main");
    assert_eq!(v["expires_at"], "2026-06-01T13:00:00Z");
    assert_eq!(v["allowed_ips"], json!(["10.0.0.0/8"]));
    assert_eq!(v["metadata"], json!({"team": "payments", "ticket": 42}));
    assert_eq!(v["permissions"], json!(["apps:read"]));
    assert_eq!(v["status"], "active");
    assert_eq!(v["created_by"], ALICE);
    // Clearing: description and expiry; an absolute expiry.
    let (st, v) = fx
        .patch(
            &id,
            &alice(),
            json!({"description": null, "expires_at": null}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["description"], Value::Null);
    assert_eq!(v["expires_at"], Value::Null);
    assert_eq!(v["name"], "ci-main", "fields left out are kept");
    let (st, v) = fx
        .patch(&id, &alice(), json!({"expires_at": "2026-07-01T00:00:00Z"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["expires_at"], "2026-07-01T00:00:00Z");
    // The list shows the edit.
    let (_, list) = fx.call(Method::GET, "/tokens", &alice(), None).await;
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert_eq!(row["name"], "ci-main");
    assert_eq!(row["metadata"]["team"], "payments");
    // Audited, with the field names.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let events = fx.sink.events();
    let update = events
        .iter()
        .find(|e| e.event == "token.update")
        .expect("a token.update event");
    assert_eq!(
        update.reason.as_deref(),
        Some("changed: name,description,expires_at,allowed_ips,metadata,permissions")
    );
    assert_eq!(update.owner.as_deref(), Some(ALICE));
}

#[tokio::test]
async fn patch_refuses_what_it_must() {
    let fx = fixture().await;
    let (id, _) = fx
        .create(ALICE, json!({"name": "ci", "permissions": ["apps:read"]}))
        .await;
    let (bob_id, _) = fx.create(BOB, json!({"name": "bob-ci"})).await;
    let code = |v: &Value| v["code"].as_str().unwrap_or("").to_owned();
    let (st, v) = fx
        .patch(
            &id,
            &alice(),
            json!({"permissions": ["apps:read", "apps:write"]}),
        )
        .await;
    assert_eq!(
        (st, code(&v).as_str()),
        (StatusCode::FORBIDDEN, "insufficient_scope"),
        "widening"
    );
    let (st, _) = fx.patch(&bob_id, &alice(), json!({"name": "mine"})).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "another owner's token");
    let (st, _) = fx.patch("not-a-uuid", &alice(), json!({"name": "x"})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    for bad in [
        json!({"colour": "red"}),
        json!({}),
        json!({"name": ""}),
        json!({"name": "a\u{202e}b"}),
        json!({"expires_in": 0}),
        json!({"expires_at": "2026-07-01T00:00:00Z", "expires_in": 60}),
        json!({"metadata": [1, 2]}),
        json!({"allowed_ips": ["ten"]}),
    ] {
        let (st, v) = fx.patch(&id, &alice(), bad.clone()).await;
        assert_eq!(
            (st, code(&v).as_str()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{bad}"
        );
    }
    // An expiry already past ends the token now: it stays listed, expired, and no longer
    // takes edits.
    let (short, _) = fx.create(ALICE, json!({"name": "short"})).await;
    let (st, v) = fx
        .patch(
            &short,
            &alice(),
            json!({"expires_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "expired");
    assert_eq!(
        v["expires_at"], "2026-06-01T12:00:00Z",
        "ended now, not in the past"
    );
    let (st, _) = fx.patch(&short, &alice(), json!({"name": "again"})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Beyond the longest lifetime (100 years here).
    let (st, v) = fx
        .patch(&id, &alice(), json!({"expires_at": "2999-01-01T00:00:00Z"}))
        .await;
    assert_eq!(
        (st, code(&v).as_str()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    // A revoked token cannot be edited.
    let (st, _) = fx
        .call(Method::DELETE, &format!("/tokens/{id}"), &alice(), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = fx.patch(&id, &alice(), json!({"name": "again"})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn renames_keep_names_unique_and_free_the_old_one() {
    let fx = fixture().await;
    let (a, _) = fx.create(ALICE, json!({"name": "a"})).await;
    fx.create(ALICE, json!({"name": "b"})).await;
    let (st, v) = fx.patch(&a, &alice(), json!({"name": "b"})).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("name_taken"))
    );
    let (st, _) = fx.patch(&a, &alice(), json!({"name": "c"})).await;
    assert_eq!(st, StatusCode::OK);
    fx.create(ALICE, json!({"name": "a"})).await;
}

#[tokio::test]
async fn a_bearer_token_only_narrows_and_a_narrowing_applies_at_once() {
    let fx = fixture().await;
    let (broad, _) = fx
        .create(
            ALICE,
            json!({"name": "broad", "permissions": ["apps:read", "apps:write", "tokens:read", "tokens:write"]}),
        )
        .await;
    let (me, secret) = fx
        .create(
            ALICE,
            json!({"name": "me2", "permissions": ["tokens:read", "tokens:write"], "expires_in": 3600}),
        )
        .await;
    let auth = bearer(&secret);
    // Less restricted than the caller: refused.
    let (st, v) = fx.patch(&broad, &auth, json!({"description": "x"})).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("insufficient_scope")),
        "{v}"
    );
    let (st, v) = fx.patch(&me, &auth, json!({"expires_in": 7200})).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("insufficient_scope")),
        "a later expiry"
    );
    let (st, _) = fx.patch(&me, &auth, json!({"expires_at": null})).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "clearing the expiry");
    let (st, v) = fx.patch(&me, &auth, json!({"expires_in": 600})).await;
    assert_eq!(st, StatusCode::OK, "an earlier expiry: {v}");
    let (st, v) = fx
        .patch(&me, &auth, json!({"allowed_ips": ["192.0.2.0/24"]}))
        .await;
    assert_eq!(
        st,
        StatusCode::OK,
        "an allow-list where there was none narrows: {v}"
    );
    // The token now has an allow-list the client (10.1.2.3) is outside of: it is refused
    // before it could widen anything.
    let (st, v) = fx.patch(&me, &auth, json!({"allowed_ips": []})).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("ip_not_allowed"))
    );
    // An allow-list only shrinks.
    let (fenced, secret) = fx
        .create(
            ALICE,
            json!({"name": "fenced", "permissions": ["tokens:read", "tokens:write"], "allowed_ips": ["10.0.0.0/8"]}),
        )
        .await;
    let auth = bearer(&secret);
    for wider in [
        json!([]),
        json!(["0.0.0.0/0"]),
        json!(["10.0.0.0/8", "192.0.2.0/24"]),
    ] {
        let (st, v) = fx
            .patch(&fenced, &auth, json!({"allowed_ips": wider.clone()}))
            .await;
        assert_eq!(
            (st, v["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("insufficient_scope")),
            "{wider}: {v}"
        );
    }
    let (st, v) = fx
        .patch(&fenced, &auth, json!({"allowed_ips": ["10.1.0.0/16"]}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["allowed_ips"], json!(["10.1.0.0/16"]));

    // Narrowing permissions applies on the next request, through the cache.
    let (_, secret) = fx
        .create(
            ALICE,
            json!({"name": "reader", "permissions": ["tokens:read", "tokens:write"]}),
        )
        .await;
    let auth = bearer(&secret);
    let (st, _) = fx.call(Method::GET, "/tokens", &auth, None).await;
    assert_eq!(st, StatusCode::OK, "cached now");
    let (_, me_view) = fx.call(Method::GET, "/me", &auth, None).await;
    let reader = me_view["token_id"].as_str().unwrap().to_owned();
    let (st, v) = fx
        .patch(&reader, &auth, json!({"permissions": ["tokens:write"]}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = fx.call(Method::GET, "/tokens", &auth, None).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("insufficient_scope")),
        "the removed permission is refused at once"
    );
}

#[tokio::test]
async fn attack_a_rename_does_not_adopt_another_tokens_lineage() {
    let fx = fixture().await;
    let perms = json!(["tokens:read", "tokens:write"]);
    let (attacker, secret) = fx
        .create(ALICE, json!({"name": "leaked", "permissions": perms}))
        .await;
    let (victim, _) = fx
        .create(ALICE, json!({"name": "deploy", "permissions": perms}))
        .await;
    let auth = bearer(&secret);
    // A bearer token renames nothing: not itself (a new name would be a fresh rate budget
    // and another lineage), not a sibling.
    for (id, name) in [
        (&attacker, "deploy"),
        (&attacker, "fresh"),
        (&victim, "leaked"),
    ] {
        let (st, v) = fx.patch(id, &auth, json!({"name": name})).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("insufficient_scope")),
            "{name}: {v}"
        );
    }
    // The owner renames the sibling away and the leaked token into the freed name...
    let (st, _) = fx.patch(&victim, &alice(), json!({"name": "parked"})).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = fx
        .patch(&attacker, &alice(), json!({"name": "deploy"}))
        .await;
    assert_eq!(st, StatusCode::OK);
    // ...and the leaked token still may not rotate the sibling (a new secret).
    let (st, v) = fx
        .call(
            Method::POST,
            &format!("/tokens/{victim}/rotate"),
            &auth,
            None,
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("insufficient_scope")),
        "{v}"
    );
    // Live tokens never share a name.
    let (st, _) = fx.patch(&victim, &alice(), json!({"name": "deploy"})).await;
    assert_eq!(st, StatusCode::CONFLICT);
}

#[tokio::test]
async fn the_admin_view_lists_every_owner_filters_and_pages() {
    let fx = fixture().await;
    let admin = basic(ADMIN, PASSWORD);
    let (a1, _) = fx
        .create(ALICE, json!({"name": "a1", "expires_in": 600}))
        .await;
    fx.clock.advance(Duration::from_secs(1));
    let (b1, bob_secret) = fx.create(BOB, json!({"name": "b1"})).await;
    fx.clock.advance(Duration::from_secs(1));
    let (a2, _) = fx.create(ALICE, json!({"name": "a2"})).await;
    // Not for non-admins.
    for who in [alice(), bearer(&bob_secret)] {
        let (st, v) = fx.call(Method::GET, "/admin/tokens", &who, None).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    }
    let ids = |v: &Value| -> Vec<String> {
        v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (st, v) = fx.call(Method::GET, "/admin/tokens", &admin, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        ids(&v),
        [a1.clone(), b1.clone(), a2.clone()],
        "every owner, oldest first"
    );
    assert_eq!(v["next_cursor"], Value::Null);
    assert_eq!(v["tokens"][1]["owner"], BOB);
    assert_eq!(v["tokens"][1]["created_by"], BOB);
    assert_eq!(v["tokens"][1]["kind"], "pat");
    let q = |query: &str| format!("/admin/tokens?{query}");
    let (_, v) = fx
        .call(Method::GET, &q(&format!("owner={BOB}")), &admin, None)
        .await;
    assert_eq!(ids(&v), vec![b1.clone()]);
    let (_, v) = fx
        .call(
            Method::GET,
            &q("kind=pat&expiring_before=2026-06-01T12:30:00Z"),
            &admin,
            None,
        )
        .await;
    assert_eq!(ids(&v), vec![a1.clone()]);
    let (_, v) = fx.call(Method::GET, &q("kind=rgw"), &admin, None).await;
    assert_eq!(ids(&v), Vec::<String>::new());
    let (_, v) = fx
        .call(
            Method::GET,
            &q("last_used_before=2026-06-01T12:00:01Z"),
            &admin,
            None,
        )
        .await;
    assert_eq!(ids(&v), vec![a1.clone()], "never used: judged on creation");
    // Admin revokes Bob's token: it stops working and stays listed as revoked.
    let (st, _) = fx
        .call(Method::DELETE, &format!("/admin/tokens/{b1}"), &admin, None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = fx
        .call(Method::GET, "/me", &bearer(&bob_secret), None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (_, v) = fx
        .call(Method::GET, &q("status=revoked"), &admin, None)
        .await;
    assert_eq!(ids(&v), vec![b1.clone()]);
    assert_eq!(v["tokens"][0]["status"], "revoked");
    assert!(v["tokens"][0]["revoked_at"].is_string());
    let (st, _) = fx
        .call(
            Method::DELETE,
            &format!("/admin/tokens/{b1}"),
            &alice(),
            None,
        )
        .await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "a non-admin cannot revoke through the admin view"
    );
    fx.clock.advance(Duration::from_secs(601));
    let (_, v) = fx
        .call(Method::GET, &q("status=expired"), &admin, None)
        .await;
    assert_eq!(ids(&v), vec![a1.clone()]);
    let (_, v) = fx
        .call(Method::GET, &q("status=active"), &admin, None)
        .await;
    assert_eq!(ids(&v), vec![a2.clone()]);
    // Bad queries.
    for bad in [
        "limit=0",
        "limit=1001",
        "status=gone",
        "cursor=%%%",
        "cursor=Zm9v",
        "colour=red",
        "expiring_before=soon",
    ] {
        let (st, v) = fx.call(Method::GET, &q(bad), &admin, None).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{bad}"
        );
    }
    // Audited with the administrator.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let events = fx.sink.events();
    let revoke = events
        .iter()
        .find(|e| e.event == "token.revoke" && e.owner.as_deref() == Some(BOB))
        .expect("the admin revocation is audited");
    assert!(revoke.reason.as_deref().unwrap().contains(ADMIN));
}

#[tokio::test]
async fn paging_visits_every_token_once_while_tokens_are_added() {
    let fx = fixture().await;
    let admin = basic(ADMIN, PASSWORD);
    let mut created = HashSet::new();
    for i in 0..7 {
        let who = if i % 2 == 0 { ALICE } else { BOB };
        let (id, _) = fx.create(who, json!({"name": format!("t{i}")})).await;
        created.insert(id);
        if i % 3 == 0 {
            fx.clock.advance(Duration::from_secs(1));
        }
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut added = 0;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/admin/tokens?limit=3&cursor={c}"),
            None => "/admin/tokens?limit=3".to_owned(),
        };
        let (st, v) = fx.call(Method::GET, &uri, &admin, None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let page = v["tokens"].as_array().unwrap();
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        // Tokens created while paging come after every earlier one.
        if added < 2 {
            fx.clock.advance(Duration::from_secs(1));
            let (id, _) = fx
                .create(ALICE, json!({"name": format!("late{added}")}))
                .await;
            created.insert(id);
            added += 1;
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no token twice");
    assert_eq!(
        unique, created,
        "every token, those added while paging included"
    );
}

#[tokio::test]
async fn the_admin_only_switch_reserves_token_management_to_admins() {
    let fx = fixture_with(true).await;
    let (st, v) = fx
        .call(
            Method::POST,
            "/tokens",
            &alice(),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("insufficient_scope")),
        "{v}"
    );
    // The admin still manages tokens, and an owner still lists theirs.
    let (id, _) = fx.create(ADMIN, json!({"name": "a"})).await;
    let (st, _) = fx.call(Method::GET, "/tokens", &alice(), None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = fx
        .patch(&id, &basic(ADMIN, PASSWORD), json!({"description": "ok"}))
        .await;
    assert_eq!(st, StatusCode::OK);
    // A non-admin cannot revoke, rotate or edit, even its own (made before the switch, here
    // by a manager without it: the admin's token stands in).
    for (method, uri, body) in [
        (Method::DELETE, format!("/tokens/{id}"), None),
        (Method::POST, format!("/tokens/{id}/rotate"), None),
        (
            Method::PATCH,
            format!("/tokens/{id}"),
            Some(json!({"name": "y"})),
        ),
    ] {
        let (st, v) = fx.call(method.clone(), &uri, &alice(), body).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{method} {uri}: {v}");
    }
    let (st, _) = fx
        .call(
            Method::DELETE,
            &format!("/tokens/{id}"),
            &basic(ADMIN, PASSWORD),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}
