//! Attacks on the recorded last use: a client tries to choose the address its token's
//! last use shows (a forged forwarding header), or to have a secret kept and shown.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Server, admin_basic, request};

/// The token's entry in `GET /api/v1/tokens`, after the queued uses are written.
async fn last_use(server: &Server, id: &str) -> Value {
    server.app.tokens.flush_usage().await.unwrap();
    let a = server
        .send(request(Method::GET, "/api/v1/tokens", &admin_basic()))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.json()
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .cloned()
        .unwrap()
}

/// `GET /api/v1/me` with the token, from `peer`, with these headers.
async fn me(server: &Server, bearer: &str, peer: &str, headers: &[(&str, &str)]) {
    let mut req = request(Method::GET, "/api/v1/me", bearer);
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let a = server.send_from(peer, req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
}

#[tokio::test]
async fn a_forged_forwarding_header_does_not_choose_the_recorded_address() {
    // No trusted proxy: the peer is the client, whatever the headers say.
    let server = Server::start().await;
    let t = server.create(json!({"name": "direct"})).await;
    me(
        &server,
        &t.bearer(),
        "198.51.100.20:50000",
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
            ("user-agent", "ci-runner/1.0"),
        ],
    )
    .await;
    let u = last_use(&server, &t.id).await;
    assert_eq!(u["last_used_ip"], "198.51.100.20", "{u}");
    assert_eq!(u["last_used_user_agent"], "ci-runner/1.0");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_recorded_and_only_it() {
    let server = Server::with(|c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let t = server.create(json!({"name": "proxied"})).await;
    // The proxy appends the real client; the client wrote an address of its choice left of
    // it and in a header the server does not read.
    me(
        &server,
        &t.bearer(),
        "127.0.0.1:40000",
        &[
            ("x-forwarded-for", "192.0.2.99, 203.0.113.9"),
            ("forwarded", "for=192.0.2.99"),
            ("user-agent", "ci-runner/1.0"),
        ],
    )
    .await;
    let u = last_use(&server, &t.id).await;
    assert_eq!(u["last_used_ip"], "203.0.113.9", "{u}");
    assert_eq!(u["last_used_user_agent"], "ci-runner/1.0");
}

#[tokio::test]
async fn a_token_sent_in_the_user_agent_is_not_kept() {
    let server = Server::start().await;
    let t = server.create(json!({"name": "leaky"})).await;
    let agent = format!("script/1.0 {}", t.token);
    me(
        &server,
        &t.bearer(),
        "198.51.100.20:50000",
        &[("user-agent", &agent)],
    )
    .await;
    let u = last_use(&server, &t.id).await;
    assert_eq!(u["last_used_user_agent"], Value::Null, "{u}");
    assert!(!u.to_string().contains(&t.token));
}
