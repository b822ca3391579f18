//! Sign-in through the host application, walked through `examples/host_sign_in.rs`: the
//! app's own session cookie creates, lists and revokes tokens; no session is 401; a
//! cross-site write with the cookie is 403; failures are limited and audited; a token
//! made this way works on the app's protected routes.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../../examples/host_sign_in.rs"]
mod recipe;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keygate::audit::{AuditLog, MemoryAuditSink};
use keygate::{MemoryStore, Tokens};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

/// A request from the client at `peer`, with `headers`.
async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
    peer: &str,
) -> Answer {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = match body {
        Some(v) => {
            b = b.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let mut req = b.body(body).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

const PEER: &str = "192.0.2.20:40000";

#[tokio::test]
async fn the_apps_session_manages_tokens_that_work_on_its_api() {
    let sessions = recipe::Sessions::default();
    let sink = MemoryAuditSink::new();
    let audit = AuditLog::spawn(sink.clone(), 1_000);
    let app = recipe::app(
        Tokens::new(MemoryStore::new()),
        sessions.clone(),
        audit.clone(),
    )
    .unwrap();

    // Signing in through the app's own form sets its session cookie.
    let mut login = Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("user=alice"))
        .unwrap();
    login
        .extensions_mut()
        .insert(ConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
    let res = app.clone().oneshot(login).await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let set_cookie = res.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let same_origin = [
        ("cookie", cookie.as_str()),
        ("sec-fetch-site", "same-origin"),
    ];

    // The signed-in session creates a token (no password anywhere)…
    let created = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        &same_origin,
        Some(json!({"name": "laptop", "permissions": ["things:read"]})),
        PEER,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json);
    let token = created.json["token"].as_str().unwrap().to_owned();
    let id = created.json["id"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    // …never beyond what the app grants its users…
    let beyond = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        &same_origin,
        Some(json!({"name": "root", "permissions": ["*"]})),
        PEER,
    )
    .await;
    assert_eq!(beyond.status, StatusCode::FORBIDDEN, "{}", beyond.json);
    // …lists it…
    let listed = send(
        &app,
        Method::GET,
        "/api/v1/tokens",
        &same_origin,
        None,
        PEER,
    )
    .await;
    assert_eq!(listed.status, StatusCode::OK);
    let names: Vec<&str> = listed
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["laptop"]);

    // The token works on the app's protected API, as alice, reads only.
    let auth = [("authorization", bearer.as_str())];
    let things = send(&app, Method::GET, "/api/v1/things", &auth, None, PEER).await;
    assert_eq!(things.status, StatusCode::OK, "{}", things.json);
    assert_eq!(things.json["owner"], "alice");
    let write = send(&app, Method::POST, "/api/v1/things", &auth, None, PEER).await;
    assert_eq!(write.status, StatusCode::FORBIDDEN);
    // A bearer token cannot create tokens: that needs the app's sign-in.
    let minted = send(
        &app,
        Method::POST,
        "/api/v1/tokens",
        &auth,
        Some(json!({"name": "copy"})),
        PEER,
    )
    .await;
    assert_eq!(minted.status, StatusCode::UNAUTHORIZED);
    assert_eq!(minted.json["code"], "sign_in_required");

    // A page on another site posting with the cookie: refused before anything is created.
    for forged in [
        [
            ("cookie", cookie.as_str()),
            ("sec-fetch-site", "cross-site"),
        ],
        [
            ("cookie", cookie.as_str()),
            ("origin", "https://evil.example"),
        ],
    ] {
        let mut headers = forged.to_vec();
        headers.push(("host", "things.example"));
        let a = send(
            &app,
            Method::POST,
            "/api/v1/tokens",
            &headers,
            Some(json!({"name": "stolen"})),
            PEER,
        )
        .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.json);
        assert_eq!(a.json["code"], "cross_site_request");
        let revoke = send(
            &app,
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            &headers,
            None,
            PEER,
        )
        .await;
        assert_eq!(revoke.status, StatusCode::FORBIDDEN);
    }

    // The session revokes it; the token stops working at once.
    let revoked = send(
        &app,
        Method::DELETE,
        &format!("/api/v1/tokens/{id}"),
        &same_origin,
        None,
        PEER,
    )
    .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.json);
    let things = send(&app, Method::GET, "/api/v1/things", &auth, None, PEER).await;
    assert_eq!(things.status, StatusCode::UNAUTHORIZED);

    // No session (or an ended one): 401 without a Basic challenge, so no browser prompt;
    // Basic credentials are not a way in either.
    let stranger = "198.51.100.30:40000";
    for headers in [
        vec![],
        vec![("cookie", "sid=guessed")],
        vec![(
            "authorization",
            "Basic YWxpY2U6cGFzc3dvcmQ=", // alice:password
        )],
    ] {
        let a = send(
            &app,
            Method::GET,
            "/api/v1/tokens",
            &headers,
            None,
            stranger,
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(a.json["code"], "missing_credentials");
        assert!(!a.headers.contains_key(header::WWW_AUTHENTICATE));
    }
    sessions.sign_out(cookie.trim_start_matches("sid="));
    let ended = send(
        &app,
        Method::GET,
        "/api/v1/tokens",
        &same_origin,
        None,
        PEER,
    )
    .await;
    assert_eq!(ended.status, StatusCode::UNAUTHORIZED);

    // Guessing sessions is throttled like guessing passwords: past the budget (20 a
    // minute), 429 with Retry-After, even for a real session from that address.
    let guesser = "203.0.113.99:40000";
    let mut limited = None;
    for i in 0..25 {
        let cookie = format!("sid=guess{i}");
        let a = send(
            &app,
            Method::GET,
            "/api/v1/tokens",
            &[("cookie", &cookie)],
            None,
            guesser,
        )
        .await;
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(a);
            break;
        }
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    let limited = limited.expect("the guesser is throttled");
    assert!(limited.headers.contains_key(header::RETRY_AFTER));
    let bob = format!("sid={}", sessions.sign_in("bob"));
    let a = send(
        &app,
        Method::GET,
        "/api/v1/tokens",
        &[("cookie", &bob)],
        None,
        guesser,
    )
    .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);

    // The token page has no password form: it uses the app's session.
    let page = send(&app, Method::GET, "/tokens", &[], None, PEER).await;
    assert_eq!(page.status, StatusCode::OK);

    audit.shutdown().await;
    let events = sink.events();
    let host_denials: Vec<_> = events.iter().filter(|e| e.event == "auth.host").collect();
    assert!(
        host_denials
            .iter()
            .any(|e| e.reason.as_deref() == Some("missing_credentials")
                && e.status_code == 401
                && e.path == "/api/v1/tokens"),
        "{host_denials:?}"
    );
    assert!(
        host_denials
            .iter()
            .any(|e| e.reason.as_deref() == Some("rate_limited")
                && e.client_ip == Some("203.0.113.99".parse().unwrap()))
    );
    let created = events
        .iter()
        .find(|e| e.event == "token.create")
        .expect("the creation is audited");
    assert_eq!(created.owner.as_deref(), Some("alice"));
}

#[tokio::test]
async fn the_token_page_signs_in_through_the_app() {
    let app = recipe::app(
        Tokens::new(MemoryStore::new()),
        recipe::Sessions::default(),
        AuditLog::spawn(MemoryAuditSink::new(), 10),
    )
    .unwrap();
    let res = app
        .oneshot(Request::get("/tokens").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let html =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(html.contains(r#"data-sign-in="host""#), "{html}");
    // The password page, for comparison, says `password`.
    let plain = keygate::ui::router("/api/v1")
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let plain = plain.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&plain).contains(r#"data-sign-in="password""#));
}
