//! The audit log and the caches under attack: what an anonymous request can write into the
//! log, the path an event names, throttling of a stolen token replayed from the wrong place,
//! what the verification cache tells about a token, and a release audited as what it was.

use std::time::Duration;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};

use crate::support::{Server, admin_basic, request};

/// The events of `GET /api/v1/audit` (as the admin) that `pick` selects, waiting for the
/// background writer; empty when none shows up.
async fn audited(s: &Server, pick: impl Fn(&Value) -> bool) -> Vec<Value> {
    for _ in 0..100 {
        let a = s
            .send(request(
                Method::GET,
                "/api/v1/audit?limit=1000",
                &admin_basic(),
            ))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let events: Vec<Value> = a.json().as_array().unwrap().clone();
        let picked: Vec<Value> = events.into_iter().filter(|e| pick(e)).collect();
        if !picked.is_empty() {
            return picked;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Vec::new()
}

/// A request without credentials is audited (reason `missing`) and never throttled: its
/// `X-Request-Id` and its path are the sender's free text. An id of 64 KiB is not kept,
/// a path of 8 KiB is cut to 1 024 bytes, and a short, visible id is kept as sent.
#[tokio::test]
async fn anonymous_requests_cannot_write_huge_audit_rows() {
    let s = Server::start().await;
    let anonymous = |method: Method, path: &str, id: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("x-request-id", id)
            .body(Body::empty())
            .unwrap()
    };
    let huge = "r".repeat(64 * 1024);
    let a = s.send(anonymous(Method::GET, "/api/v1/apps", &huge)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let long_path = format!("/api/v1/apps/{}/restart", "p".repeat(8 * 1024));
    let a = s.send(anonymous(Method::POST, &long_path, "req-42")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    let events = audited(&s, |e| e["reason"] == "missing").await;
    let huge_id = events
        .iter()
        .find(|e| e["path"] == "/api/v1/apps")
        .expect("the anonymous request is audited");
    assert!(
        huge_id["request_id"].is_null(),
        "a 64 KiB request id was kept: {} bytes",
        huge_id["request_id"].as_str().map_or(0, str::len)
    );
    let long = events
        .iter()
        .find(|e| e["request_id"] == "req-42")
        .expect("a short request id is kept");
    let kept = long["path"].as_str().unwrap();
    assert_eq!(kept.len(), keygate::audit::MAX_PATH_LEN, "path kept");
    assert!(long_path.starts_with(kept));
}

/// Behind `Router::nest("/api/v1", …)` the layer's `authenticate` events name the path the
/// client requested (`/api/v1/apps`), as the management write events do, not the nested
/// router's view (`/apps`, which would also name the token page's `/tokens`).
#[tokio::test]
async fn audit_events_name_the_request_path() {
    let s = Server::start().await;
    let t = s.create(json!({ "name": "probe" })).await;
    let a = s
        .send(request(Method::GET, "/api/v1/apps", &t.bearer()))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let paths: Vec<String> = audited(&s, |e| e["event"] == "authenticate")
        .await
        .iter()
        .map(|e| e["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(paths, ["/api/v1/apps"], "audited paths");
}
