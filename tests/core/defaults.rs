//! What the quick start gives without another call: the background upkeep (last-used times
//! written, ended tokens purged, stopped with the manager), literal permissions without
//! `?`, and a route the layer does not cover named as such (500), not a bad token (401).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::StatusCode;
use keygate::{
    AuthLayer, Identity, MemoryStore, NewToken, RequirePermissionLayer, Roles, TokenStore, Tokens,
};

async fn whoami(id: Identity) -> String {
    id.owner().to_owned()
}

async fn maybe(id: Option<Identity>) -> String {
    id.map_or("anonymous".into(), |i| i.owner().to_owned())
}

async fn send(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect();
    crate::common::get_from(app, path, &headers).await
}

/// The README's quick start, as written there (roles, a builder, one layer), and nothing
/// else: its last-used times reach the store and its revoked tokens are deleted.
#[tokio::test(start_paused = true)]
async fn the_quick_start_alone_writes_last_used_at_and_purges() {
    let store = Arc::new(MemoryStore::new());
    let roles = Roles::new()
        .with_role("admin", ["*"])
        .unwrap()
        .with_role("viewer", ["things:read"])
        .unwrap();
    let tokens = Tokens::builder(store.clone()).roles(roles).build().unwrap();
    let issued = tokens
        .issue(NewToken::new("alice@example.com", "laptop").role("viewer"))
        .await
        .unwrap();
    let old = tokens
        .issue(NewToken::new("alice@example.com", "old laptop"))
        .await
        .unwrap();
    let app: Router = Router::new()
        .route("/whoami", get(whoami))
        .layer(AuthLayer::new(tokens.clone()));

    let (status, body) = send(&app, "/whoami", Some(issued.token.expose_secret())).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "alice@example.com")
    );
    tokens
        .revoke("alice@example.com", old.record.id)
        .await
        .unwrap();
    let record = store.get(&issued.record.id).await.unwrap().unwrap();
    assert!(record.last_used_at.is_none(), "uses are written in batches");

    tokio::time::sleep(Duration::from_secs(11)).await;
    let record = store.get(&issued.record.id).await.unwrap().unwrap();
    assert!(
        record.last_used_at.is_some(),
        "last_used_at written within 10 s"
    );
    assert!(
        store.get(&old.record.id).await.unwrap().is_some(),
        "purged hourly"
    );

    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(
        store.get(&old.record.id).await.unwrap().is_none(),
        "the revoked token was purged within the hour"
    );
    assert!(store.get(&issued.record.id).await.unwrap().is_some());
}

/// The upkeep holds no manager between turns: once the program drops the manager (and the
/// router holding it), nothing keeps it alive, and the uses still queued are written.
#[tokio::test(start_paused = true)]
async fn dropping_the_manager_stops_the_upkeep_and_writes_the_last_uses() {
    let store = Arc::new(MemoryStore::new());
    let tokens = Tokens::new(store.clone());
    let issued = tokens.issue(NewToken::new("bob", "ci")).await.unwrap();
    let app: Router = Router::new()
        .route("/whoami", get(whoami))
        .layer(AuthLayer::new(tokens.clone()));
    let (status, _) = send(&app, "/whoami", Some(issued.token.expose_secret())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tokens.pending_usage(), 1);
    drop((app, tokens));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let record = store.get(&issued.record.id).await.unwrap().unwrap();
    assert!(
        record.last_used_at.is_some(),
        "the queued use was written on drop"
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        Arc::strong_count(&store),
        1,
        "nothing holds the manager (and its store) any more"
    );
}

/// Opting out: nothing runs on its own, the use stays queued until the program writes it.
#[tokio::test(start_paused = true)]
async fn manual_maintenance_leaves_the_writing_to_the_program() {
    let store = Arc::new(MemoryStore::new());
    let tokens = Tokens::builder(store.clone())
        .manual_maintenance()
        .build()
        .unwrap();
    let issued = tokens.issue(NewToken::new("carol", "ci")).await.unwrap();
    let app: Router = Router::new()
        .route("/whoami", get(whoami))
        .layer(AuthLayer::new(tokens.clone()));
    send(&app, "/whoami", Some(issued.token.expose_secret())).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        store
            .get(&issued.record.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at
            .is_none()
    );
    assert_eq!(tokens.pending_usage(), 1);
    assert_eq!(tokens.flush_usage().await.unwrap(), 1);
    assert!(
        store
            .get(&issued.record.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at
            .is_some()
    );
}

#[tokio::test]
async fn a_route_without_the_layer_is_named_with_500_not_mistaken_for_a_bad_token() {
    let tokens = Tokens::new(MemoryStore::new());
    let issued = tokens.issue(NewToken::new("dave", "ci")).await.unwrap();
    let forgotten: Router = Router::new()
        .route("/whoami", get(whoami))
        .route("/maybe", get(maybe))
        .route(
            "/guarded",
            get(|| async { "ok" }).route_layer(RequirePermissionLayer::new("things:read")),
        );
    for path in ["/whoami", "/maybe", "/guarded"] {
        let (status, body) = send(&forgotten, path, Some(issued.token.expose_secret())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}: {body}");
        assert!(body.contains("auth_layer_missing"), "{path}: {body}");
        assert!(body.contains("AuthLayer"), "{path}: {body}");
    }

    // Under an optional layer, no token is no one, not a mistake.
    let optional: Router = Router::new()
        .route("/whoami", get(whoami))
        .route("/maybe", get(maybe))
        .layer(AuthLayer::new(tokens.clone()).optional());
    assert_eq!(
        send(&optional, "/maybe", None).await,
        (StatusCode::OK, "anonymous".to_owned())
    );
    let (status, body) = send(&optional, "/whoami", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("missing_token"));
    assert_eq!(
        send(&optional, "/maybe", Some(issued.token.expose_secret())).await,
        (StatusCode::OK, "dave".to_owned())
    );
}

#[test]
fn literal_permissions_and_realms_need_no_question_mark() {
    let tokens = Tokens::builder(MemoryStore::new())
        .manual_maintenance()
        .build()
        .unwrap();
    // Each of these is a plain value: no `Result` for a literal.
    let _: AuthLayer = AuthLayer::new(tokens.clone()).require("things:write");
    let _: AuthLayer = AuthLayer::new(tokens.clone()).read_write("things:write");
    let _: AuthLayer = AuthLayer::new(tokens.clone()).with_realm("things");
    let _: RequirePermissionLayer = RequirePermissionLayer::new("things:write");
    // Input read at run time keeps its `Result`.
    assert!(
        AuthLayer::new(tokens.clone())
            .try_require("no spaces allowed")
            .is_err()
    );
    assert!(AuthLayer::new(tokens.clone()).try_read_write("").is_err());
    assert!(
        AuthLayer::new(tokens)
            .try_with_realm("a \"quoted\" realm")
            .is_err()
    );
    assert!(RequirePermissionLayer::try_new("two words").is_err());
}

#[test]
#[should_panic(expected = "RequirePermissionLayer::new(\"things write\")")]
fn a_wrong_literal_permission_fails_loudly_naming_itself() {
    let _ = RequirePermissionLayer::new("things write");
}

#[test]
#[should_panic(expected = "AuthLayer::require(\"\")")]
fn an_empty_literal_permission_fails_loudly() {
    let tokens = Tokens::builder(MemoryStore::new())
        .manual_maintenance()
        .build()
        .unwrap();
    let _ = AuthLayer::new(tokens).require("");
}
