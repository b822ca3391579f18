//! The token management page (`keygate::ui`, feature `ui`) through its public router,
//! driven with `tower::ServiceExt::oneshot` (no ports): every asset with its content type,
//! every security header on every response (404s included), the asset paths under the
//! mount point, the API base and roles handed to the page, and the script's own rules (no
//! HTML sinks, no browser storage, no inline script or style).
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::Roles;
use keygate::ui::{CONTENT_SECURITY_POLICY, Page};
use tower::ServiceExt;

async fn get(app: &Router, uri: &str) -> (StatusCode, HeaderMap, String) {
    send(app, Method::GET, uri).await
}

async fn send(app: &Router, method: Method, uri: &str) -> (StatusCode, HeaderMap, String) {
    let res = app
        .clone()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

/// The reference server's layout: the page at `/tokens`, the API at `/api/v1`.
fn app() -> Router {
    Router::new().nest("/tokens", keygate::ui::router("/api/v1"))
}

fn assert_secure(headers: &HeaderMap, what: &str) {
    let expect = [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ];
    for (name, value) in expect {
        let got: Vec<_> = headers.get_all(name).iter().collect();
        assert_eq!(got.len(), 1, "{what}: one {name} header, got {got:?}");
        assert_eq!(got[0], value, "{what}: {name}");
    }
}

#[test]
fn the_policy_is_strict() {
    let directives: Vec<&str> = CONTENT_SECURITY_POLICY.split("; ").collect();
    for d in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(directives.contains(&d), "missing {d}");
    }
    for weak in ["unsafe-inline", "unsafe-eval", "data:", "*", "http:"] {
        assert!(!CONTENT_SECURITY_POLICY.contains(weak), "{weak}");
    }
}

#[tokio::test]
async fn every_asset_has_its_content_type_and_the_security_headers() {
    let app = app();
    for (uri, content_type, marker) in [
        ("/tokens", "text/html; charset=utf-8", "<!doctype html>"),
        (
            "/tokens/app.js",
            "text/javascript; charset=utf-8",
            "use strict",
        ),
        ("/tokens/app.css", "text/css; charset=utf-8", ":root"),
        ("/tokens/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let (status, headers, body) = get(&app, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(headers[header::CONTENT_TYPE], content_type, "{uri}");
        assert_secure(&headers, uri);
        assert!(body.contains(marker), "{uri}: {marker}");
    }
}

#[tokio::test]
async fn head_requests_get_the_headers_too() {
    let (status, headers, body) = send(&app(), Method::HEAD, "/tokens").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_secure(&headers, "HEAD /tokens");
    assert!(body.is_empty());
}

#[tokio::test]
async fn unknown_paths_and_methods_are_refused_with_the_security_headers() {
    let app = app();
    let (status, headers, _) = get(&app, "/tokens/nope.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_secure(&headers, "404");
    let (status, headers, _) = send(&app, Method::POST, "/tokens").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_secure(&headers, "405");
}

#[tokio::test]
async fn the_page_loads_its_assets_from_where_it_is_mounted() {
    let (_, _, html) = get(&app(), "/tokens").await;
    assert!(html.contains(r#"<script src="/tokens/app.js" defer></script>"#));
    assert!(html.contains(r#"<link rel="stylesheet" href="/tokens/app.css">"#));
    assert!(html.contains(r#"href="/tokens/favicon.svg""#));
    assert!(!html.contains('%'), "every placeholder filled");

    // Nested twice.
    let deep = Router::new().nest(
        "/admin",
        Router::new().nest("/keys", keygate::ui::router("/api")),
    );
    let (status, _, html) = get(&deep, "/admin/keys").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"src="/admin/keys/app.js""#));
    let (status, _, _) = get(&deep, "/admin/keys/app.js").await;
    assert_eq!(status, StatusCode::OK);

    // Merged at the root.
    let root = Router::new().merge(keygate::ui::router("/api/v1"));
    let (status, headers, html) = get(&root, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_secure(&headers, "merged");
    assert!(html.contains(r#"<script src="/app.js" defer></script>"#));
    let (status, _, _) = get(&root, "/app.css").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_page_gets_the_api_base_and_the_roles() {
    let (_, _, html) = get(&app(), "/tokens").await;
    assert!(html.contains(r#"data-api-base="/api/v1""#));
    assert!(html.contains(r#"data-roles="[]""#));

    let page = Page::new("/api/v1/").with_roles(&Roles::deployment_platform());
    let app = Router::new().nest("/tokens", page.router());
    let (_, _, html) = get(&app, "/tokens").await;
    assert!(
        html.contains(r#"data-api-base="/api/v1""#),
        "trailing / trimmed"
    );
    assert!(html.contains(
        r#"data-roles="[&quot;admin&quot;,&quot;cicd&quot;,&quot;deployer&quot;,&quot;ops&quot;,&quot;viewer&quot;]""#
    ));
}

#[tokio::test]
async fn the_api_base_cannot_break_out_of_its_attribute() {
    let app = Router::new().nest(
        "/t",
        keygate::ui::router(r#"/x"><script>alert(1)</script>"#),
    );
    let (_, _, html) = get(&app, "/t").await;
    assert!(!html.contains("<script>alert"));
    assert!(html.contains(r#"data-api-base="/x&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;""#));
}

#[tokio::test]
async fn the_page_has_no_inline_script_or_style() {
    let (_, _, html) = get(&app(), "/tokens").await;
    let lower = html.to_ascii_lowercase();
    assert_eq!(lower.matches("<script").count(), 1);
    assert!(lower.contains("<script src="));
    assert!(lower.contains("></script>"));
    assert!(!lower.contains("<style"));
    assert!(!lower.contains(" style="));
    assert!(!lower.contains("javascript:"));
    for handler in [" onclick=", " onload=", " onsubmit=", " onerror="] {
        assert!(!lower.contains(handler), "{handler}");
    }
}

#[tokio::test]
async fn every_input_has_a_label_and_status_is_announced() {
    let (_, _, html) = get(&app(), "/tokens").await;
    for id in [
        "email",
        "password",
        "name",
        "description",
        "role",
        "expires",
        "new-token-value",
        "grace",
    ] {
        assert!(html.contains(&format!(r#"id="{id}""#)), "{id}");
        assert!(
            html.contains(&format!(r#"<label for="{id}""#)),
            "label for {id}"
        );
    }
    assert!(html.contains(r#"role="status" aria-live="polite""#));
    assert!(html.contains("you won't see it again"));
    assert!(html.contains(r#"<html lang="en">"#));
}

#[tokio::test]
async fn the_script_keeps_secrets_in_memory_and_data_out_of_html() {
    let (_, _, js) = get(&app(), "/tokens/app.js").await;
    let code: String = js
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    for banned in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "localStorage",
        "sessionStorage",
        "indexedDB",
        "document.cookie",
        "eval(",
        "new Function",
        "console.",
    ] {
        assert!(!code.contains(banned), "app.js uses {banned}");
    }
    assert!(code.contains(r#"credentials: "omit""#));
    assert!(code.contains(r#"cache: "no-store""#));
    assert!(code.contains("textContent"));
}

#[tokio::test]
async fn the_page_shows_status_creator_metadata_and_edits_with_patch() {
    let app = app();
    let (_, _, html) = get(&app, "/tokens").await;
    for part in [
        r#"<th scope="col">Status</th>"#,
        r#"<th scope="col">Created by</th>"#,
        r#"<dialog id="edit""#,
        r#"id="edit-name""#,
        r#"id="edit-description""#,
        r#"id="edit-expires""#,
        r#"id="edit-metadata""#,
    ] {
        assert!(html.contains(part), "{part}");
    }
    let (_, _, js) = get(&app, "/tokens/app.js").await;
    for part in [
        r#"api("PATCH", "/tokens/" + encodeURIComponent(t.id), body)"#,
        "t.created_by",
        "metadataText(t.metadata)",
        r#"dataset.action = "edit""#,
    ] {
        assert!(js.contains(part), "{part}");
    }
}
