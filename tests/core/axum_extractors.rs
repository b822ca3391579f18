//! The layer and extractors inside an axum `Router`, driven with `oneshot`.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use keygate::{AuthLayer, Identity, MemoryStore, NewToken, Rejection, Roles, Tokens};
use tower::ServiceExt;

async fn whoami(id: Identity) -> axum::Json<Identity> {
    axum::Json(id)
}

async fn maybe(id: Option<Identity>) -> String {
    id.map_or("anonymous".into(), |i| i.owner().to_owned())
}

async fn write_thing(id: Identity) -> Result<&'static str, Rejection> {
    id.require("things:write")?;
    Ok("written")
}

async fn setup() -> (Tokens, String, String) {
    let roles = Roles::new()
        .with_role("viewer", ["things:read"])
        .unwrap()
        .with_role("admin", ["*"])
        .unwrap();
    let tokens = Tokens::builder(MemoryStore::new())
        .roles(roles)
        .build()
        .unwrap();
    let viewer = tokens
        .issue(NewToken::new("vera", "v").role("viewer"))
        .await
        .unwrap();
    let admin = tokens
        .issue(NewToken::new("ada", "a").role("admin"))
        .await
        .unwrap();
    (
        tokens,
        format!("Bearer {}", viewer.token.expose_secret()),
        format!("Bearer {}", admin.token.expose_secret()),
    )
}

async fn call(app: &Router, path: &str, auth: Option<&str>) -> (StatusCode, String) {
    let mut b = Request::get(path);
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    let res = app
        .clone()
        .oneshot(b.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn identity_extractor_and_permission_helper() {
    let (tokens, viewer, admin) = setup().await;
    let app = Router::new()
        .route("/whoami", get(whoami))
        .route("/write", get(write_thing))
        .layer(AuthLayer::new(tokens));

    let (status, body) = call(&app, "/whoami", Some(&viewer)).await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["owner"], "vera");
    assert_eq!(json["token_name"], "v");
    assert_eq!(json["kind"], "pat");
    assert_eq!(json["permissions"], serde_json::json!(["things:read"]));
    assert_eq!(json["auth_method"], "bearer");

    let (status, body) = call(&app, "/write", Some(&viewer)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("insufficient_scope") && body.contains("things:write"));
    assert_eq!(call(&app, "/write", Some(&admin)).await.0, StatusCode::OK);
    assert_eq!(
        call(&app, "/whoami", None).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_route_outside_the_layer_cannot_extract_an_identity() {
    // A forgotten layer is a server mistake (500, naming the layer), never a pass.
    let app = Router::new().route("/whoami", get(whoami));
    let (status, body) = call(&app, "/whoami", None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body,
        r#"{"error":"Server misconfiguration: keygate's AuthLayer does not cover this route","code":"auth_layer_missing"}"#
    );
}

#[tokio::test]
async fn optional_identity() {
    let (tokens, viewer, _) = setup().await;
    let app = Router::new()
        .route("/maybe", get(maybe))
        .layer(AuthLayer::new(tokens).optional());
    assert_eq!(
        call(&app, "/maybe", None).await,
        (StatusCode::OK, "anonymous".into())
    );
    assert_eq!(
        call(&app, "/maybe", Some(&viewer)).await,
        (StatusCode::OK, "vera".into())
    );
    assert_eq!(
        call(&app, "/maybe", Some("Bearer pat_nope")).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn route_layer_keeps_unknown_routes_404() {
    let (tokens, viewer, _) = setup().await;
    let app = Router::new()
        .route("/whoami", get(whoami))
        .route_layer(AuthLayer::new(tokens).read_write("things:write"));
    assert_eq!(call(&app, "/nowhere", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&app, "/whoami", Some(&viewer)).await.0, StatusCode::OK);
}
