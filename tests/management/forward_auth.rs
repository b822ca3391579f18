//! `GET /api/v1/verify` driven as nginx's `auth_request` drives it: a subrequest with the
//! client's `Authorization` and `X-Original-Method` / `X-Original-URI`, sent from a trusted
//! proxy over a real TCP connection (hyper client, `ConnectInfo` from the listener).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use keygate::server;
use serde_json::{Value, json};

const ADMIN: &str = "admin@example.com";
const PASSWORD: &str = "correct horse battery staple";
const CLIENT: &str = "203.0.113.7";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

/// One request over a fresh TCP connection to `addr`.
async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = sender.send_request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        json: crate::common::json_or_null(&bytes),
    }
}

/// The subrequest nginx makes for `method uri` sent by the client at `client` with `auth`.
fn check(auth: &str, method: &str, uri: &str, client: &str) -> Request<Full<Bytes>> {
    Request::get("/api/v1/verify")
        .header(header::HOST, "keygate")
        .header(header::AUTHORIZATION, auth)
        .header("x-original-method", method)
        .header("x-original-uri", uri)
        .header("x-forwarded-for", client)
        .body(Full::default())
        .unwrap()
}

async fn create(addr: SocketAddr, body: Value) -> (String, String) {
    let req = Request::post("/api/v1/tokens")
        .header(header::HOST, "keygate")
        .header(header::AUTHORIZATION, crate::common::basic(ADMIN, PASSWORD))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let a = send(addr, req).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.json);
    (
        format!("Bearer {}", a.json["token"].as_str().unwrap()),
        a.json["id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_gets_the_layers_verdict_on_the_original_request() {
    let dir = tempfile::tempdir().unwrap();
    let audit_file = dir.path().join("audit.jsonl");
    let config = server::Config {
        db: dir.path().join("keygate.db"),
        addr: "127.0.0.1:0".into(),
        admin_email: ADMIN.into(),
        admin_password: Some(zeroize::Zeroizing::new(PASSWORD.to_owned())),
        audit_log: Some(audit_file.clone()),
        // nginx on this host is the trusted proxy that sets X-Forwarded-For.
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        rate_limit: 4,
        verify_write_permission: Some("builds:create".into()),
        store_timeout: std::time::Duration::from_secs(30),
        ..server::Config::default()
    };
    let app = server::build_app(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    let served = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let (viewer, viewer_id) = create(addr, json!({"name": "viewer", "role": "viewer"})).await;
    let (deployer, _) = create(addr, json!({"name": "deployer", "role": "deployer"})).await;
    let (office, _) = create(
        addr,
        json!({"name": "office", "role": "viewer", "allowed_ips": ["203.0.113.0/24"]}),
    )
    .await;

    // A read with a valid token: 200 and who it is, for the upstream.
    let a = send(addr, check(&viewer, "GET", "/apps?page=2", CLIENT)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.headers["x-keygate-owner"], ADMIN);
    assert_eq!(a.headers["x-keygate-token-id"], viewer_id.as_str());
    let permissions = a.headers["x-keygate-permissions"].to_str().unwrap();
    assert!(
        permissions.split(',').any(|p| p == "apps:read"),
        "{permissions}"
    );
    assert!(!permissions.split(',').any(|p| p == "builds:create"));
    assert_eq!(a.headers["ratelimit-limit"], "4");
    assert_eq!(a.headers["ratelimit-remaining"], "3");

    // A write without the permission: the layer's 403, naming it.
    let a = send(addr, check(&viewer, "POST", "/apps/web/builds", CLIENT)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.json);
    assert_eq!(a.json["code"], "insufficient_scope");
    assert_eq!(
        a.headers[header::WWW_AUTHENTICATE],
        r#"Bearer error="insufficient_scope", scope="builds:create""#
    );
    assert!(!a.headers.contains_key("x-keygate-owner"));
    // The same write with it: 200.
    let a = send(addr, check(&deployer, "POST", "/apps/web/builds", CLIENT)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);

    // A bad token: the layer's 401, challenge and body included.
    let bad = crate::common::spoiled(&viewer);
    let a = send(addr, check(&bad, "GET", "/apps", CLIENT)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        a.json,
        json!({"error": "Invalid API token", "code": "invalid_token"})
    );
    assert_eq!(
        a.headers[header::WWW_AUTHENTICATE],
        r#"Bearer error="invalid_token""#
    );
    let mut anonymous = check("", "GET", "/apps", CLIENT);
    anonymous.headers_mut().remove(header::AUTHORIZATION);
    let a = send(addr, anonymous).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json["code"], "missing_token");

    // The client address comes from the trusted proxy's X-Forwarded-For: the allow-listed
    // token passes for the office client and not for another one.
    let a = send(addr, check(&office, "GET", "/apps", CLIENT)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let a = send(addr, check(&office, "GET", "/apps", "198.51.100.9")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json["code"], "ip_not_allowed");

    // The token's rate limit holds on the verdicts too: the viewer's fifth request is 429.
    let _ = send(addr, check(&viewer, "GET", "/apps", CLIENT)).await;
    let _ = send(addr, check(&viewer, "GET", "/apps", CLIENT)).await;
    let a = send(addr, check(&viewer, "GET", "/apps", CLIENT)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.json);
    assert_eq!(a.json["code"], "rate_limited");
    assert!(a.headers.contains_key(header::RETRY_AFTER));

    // Headers that do not describe a request, or describe two: 400, never a verdict.
    for (name, value) in [
        ("x-original-uri", "http://elsewhere/apps"),
        ("x-original-method", "GET /apps"),
        ("x-forwarded-method", "GET"),
    ] {
        let mut req = check(&deployer, "POST", "/apps/web/builds", CLIENT);
        req.headers_mut()
            .insert(name, http::HeaderValue::from_str(value).unwrap());
        if name == "x-forwarded-method" {
            req.headers_mut()
                .insert("x-forwarded-uri", http::HeaderValue::from_static("/apps"));
        }
        let a = send(addr, req).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{name}: {}", a.json);
        assert_eq!(a.json["code"], "invalid_request");
        assert!(!a.headers.contains_key("x-keygate-owner"));
    }
    let mut twice = check(&deployer, "POST", "/apps/web/builds", CLIENT);
    twice
        .headers_mut()
        .append("x-original-method", http::HeaderValue::from_static("GET"));
    assert_eq!(send(addr, twice).await.status, StatusCode::BAD_REQUEST);

    // The audit log has the original request's method and path, and the client behind
    // the proxy.
    served.abort();
    app.audit.shutdown().await;
    let text = std::fs::read_to_string(&audit_file).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let denied = events
        .iter()
        .find(|e| e["event"] == "authenticate" && e["reason"] == "insufficient_scope")
        .expect("the refused write is audited");
    assert_eq!(denied["method"], "POST");
    assert_eq!(denied["path"], "/apps/web/builds");
    assert_eq!(denied["client_ip"], CLIENT);
    assert_eq!(denied["api_token_id"], viewer_id.as_str());
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "ip_not_allowed" && e["client_ip"] == "198.51.100.9"),
        "{text}"
    );
}
