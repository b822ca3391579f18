//! Attacks on the client address: a client behind a correctly configured proxy (the peer
//! 127.0.0.1, trusted) tries to choose the address it is judged, limited and audited by.

use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use crate::support::{Answer, Server, admin_basic, request};

/// The proxy in front of the server.
const PROXY: &str = "127.0.0.1:40000";

async fn behind_proxy() -> Server {
    Server::with(|c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await
}

/// `GET /api/v1/me` with `auth`, arriving through the proxy with these headers.
async fn me_via_proxy(server: &Server, auth: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = request(Method::GET, "/api/v1/me", auth);
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    server.send_from(PROXY, req).await
}

/// Every audit event, read back through `GET /api/v1/audit` once the queue is flushed.
async fn audit_events(server: &Server) -> Vec<Value> {
    server.app.audit.shutdown().await;
    let a = server
        .send(
            Request::builder()
                .uri("/api/v1/audit?limit=1000")
                .header(header::AUTHORIZATION, admin_basic())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.json().as_array().unwrap().clone()
}

#[tokio::test]
async fn a_client_forwarded_header_cannot_choose_the_address() {
    let server = behind_proxy().await;
    let t = server
        .create(json!({"name": "partner", "allowed_ips": ["198.51.100.0/24"]}))
        .await;
    // The proxy appends the client's real address to X-Forwarded-For.
    let a = me_via_proxy(&server, &t.bearer(), &[("x-forwarded-for", "203.0.113.9")]).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::FORBIDDEN, "ip_not_allowed".into())
    );
    // The client adds a Forwarded header (passed through by the proxy) naming an allowed
    // address: it is not the configured header, so it is not read.
    for forged in ["for=198.51.100.7", "for=\"198.51.100.7:443\""] {
        let a = me_via_proxy(
            &server,
            &t.bearer(),
            &[("forwarded", forged), ("x-forwarded-for", "203.0.113.9")],
        )
        .await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::FORBIDDEN, "ip_not_allowed".into()),
            "{forged}"
        );
    }
    // The same for X-Real-IP, and an allowed address the client wrote left of its own.
    let a = me_via_proxy(
        &server,
        &t.bearer(),
        &[
            ("x-real-ip", "198.51.100.7"),
            ("x-forwarded-for", "198.51.100.7, 203.0.113.9"),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // The proxy's own word is believed.
    let a = me_via_proxy(&server, &t.bearer(), &[("x-forwarded-for", "198.51.100.7")]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
}

#[tokio::test]
async fn an_unreadable_hop_does_not_make_the_client_the_proxy() {
    let server = behind_proxy().await;
    // A token for jobs on the proxy's host itself.
    let t = server
        .create(json!({"name": "local", "allowed_ips": ["127.0.0.1/32"]}))
        .await;
    for xff in [
        // Garbage the client wrote, left of the address the proxy appended.
        "junk, 203.0.113.9",
        // Garbage right of the client: the client is unknown, not the proxy.
        "203.0.113.9, junk",
        "unknown",
        "203.0.113.9, ",
    ] {
        let a = me_via_proxy(&server, &t.bearer(), &[("x-forwarded-for", xff)]).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::FORBIDDEN, "ip_not_allowed".into()),
            "{xff:?}"
        );
    }
    // The proxy's own request (no header) is the proxy's.
    let a = me_via_proxy(&server, &t.bearer(), &[]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
}

#[tokio::test]
async fn forged_failures_do_not_lock_out_the_victim_address() {
    let server = behind_proxy().await;
    let victim = server.create(json!({"name": "victim"})).await;
    let attacker = "203.0.113.66";
    let bad = format!("Bearer pat_{}", "A".repeat(40));
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let a = me_via_proxy(
            &server,
            &bad,
            &[
                ("forwarded", "for=198.51.100.7"),
                ("x-forwarded-for", attacker),
            ],
        )
        .await;
        statuses.push(a.status);
    }
    // The failures count against the attacker's own address ...
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED);
    assert_eq!(statuses[29], StatusCode::TOO_MANY_REQUESTS);
    let a = me_via_proxy(&server, &victim.bearer(), &[("x-forwarded-for", attacker)]).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    // ... not against the address it named: the victim's token works from there.
    let a = me_via_proxy(
        &server,
        &victim.bearer(),
        &[("x-forwarded-for", "198.51.100.7")],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
}

#[tokio::test]
async fn an_unknown_client_is_limited_by_the_peer() {
    let server = behind_proxy().await;
    let bad = format!("Bearer pat_{}", "B".repeat(40));
    let mut last = StatusCode::OK;
    for _ in 0..21 {
        last = me_via_proxy(&server, &bad, &[("x-forwarded-for", "198.51.100.7, junk")])
            .await
            .status;
    }
    // Failures from clients that cannot be named are not free: they spend the peer's
    // budget (here the proxy's).
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_audit_client_ip_is_not_forgeable() {
    let server = behind_proxy().await;
    let t = server.create(json!({"name": "audited"})).await;
    let forged = [
        ("forwarded", "for=198.51.100.7"),
        ("x-real-ip", "198.51.100.8"),
        ("x-forwarded-for", "198.51.100.9, 203.0.113.9"),
    ];
    let a = me_via_proxy(&server, &t.bearer(), &forged).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    // From a peer that is not a trusted proxy, every forwarding header is ignored.
    let mut req = request(Method::GET, "/api/v1/me", &t.bearer());
    for (k, v) in forged {
        req.headers_mut().append(k, v.parse().unwrap());
    }
    let a = server.send_from("192.0.2.77:1234", req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let ips: Vec<_> = audit_events(&server)
        .await
        .into_iter()
        .filter(|e| e["event"] == "authenticate")
        .map(|e| e["client_ip"].clone())
        .collect();
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert!(ips.contains(&json!("203.0.113.9")), "{ips:?}");
    assert!(ips.contains(&json!("192.0.2.77")), "{ips:?}");
}
