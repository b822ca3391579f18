//! Attacks on password sign-in (HTTP Basic on the management API): guessing from one
//! address, locking the owner out with a flood, and guessing spread over many addresses.

use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use serde_json::Value;

use crate::support::{ADMIN, Answer, PASSWORD, Server, admin_basic, basic, request};

/// `GET /api/v1/tokens` as `email` / `password` from the socket peer `peer`.
async fn sign_in(server: &Server, peer: &str, email: &str, password: &str) -> Answer {
    server
        .send_from(
            peer,
            request(Method::GET, "/api/v1/tokens", &basic(email, password)),
        )
        .await
}

fn peer(i: u32) -> String {
    format!("{}:4000", std::net::Ipv4Addr::from(0xcb00_7100 + i))
}

/// Every audit event, read back through `GET /api/v1/audit` once the queue is flushed.
async fn audit_events(server: &Server) -> Vec<Value> {
    server.app.audit.shutdown().await;
    let a = server
        .send_from(
            "192.0.2.200:1",
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
async fn password_guessing_from_one_address_is_throttled_and_audited() {
    let server = Server::start().await;
    let limit = server.config.failure_limit as usize;
    let attacker = "198.51.100.66:5000";
    let mut statuses = Vec::new();
    let mut retry_after = Vec::new();
    let started = std::time::Instant::now();
    for i in 0..300 {
        let a = sign_in(&server, attacker, ADMIN, &format!("guess {i}")).await;
        statuses.push(a.status);
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(a.code(), "rate_limited");
            retry_after.push(a.headers.get(header::RETRY_AFTER).cloned());
        }
    }
    assert!(
        statuses[..limit]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    // The budget refills one failure per `60 / limit` seconds: on a slow machine a guess
    // or two more may be checked during the flood, never more than the refill allows.
    let refills = (started.elapsed().as_secs() / (60 / limit as u64)) as usize + 1;
    let checked_late = statuses[limit..]
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert!(
        checked_late <= refills,
        "{checked_late} > {refills}: {statuses:?}"
    );
    assert!(
        statuses[limit..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS || *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(refused, 300 - limit - checked_late);
    assert!(retry_after.iter().all(|v| {
        v.as_ref()
            .is_some_and(|v| v.to_str().unwrap().parse::<u64>().unwrap() >= 1)
    }));
    // Refused before the password is looked at: even the right one.
    let a = sign_in(&server, attacker, ADMIN, PASSWORD).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    // Failures are audited, up to the address's denial budget; never with the password;
    // the owner is named only when the account exists and the password was checked.
    let a = sign_in(&server, "198.51.100.67:5000", "nobody@example.com", "x").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let events: Vec<_> = audit_events(&server)
        .await
        .into_iter()
        .filter(|e| e["event"] == "auth.basic")
        .collect();
    let count = |reason: &str, ip: &str| {
        events
            .iter()
            .filter(|e| {
                e["rbac_decision"] == "deny" && e["reason"] == reason && e["client_ip"] == ip
            })
            .count()
    };
    // The first refusals of the address are all written (the failure limit is within its
    // denial budget); past the budget the rest are shed and counted, so every attempt is
    // either a row or in the count, and the rows stay bounded.
    let checked = count("invalid_credentials", "198.51.100.66");
    let throttled = count("rate_limited", "198.51.100.66");
    let shed = server.app.audit.shed() as usize;
    assert!(
        (limit..=limit + checked_late).contains(&checked),
        "{checked} wrong passwords audited"
    );
    // (`shed` counts every event of the server shed, not only these.)
    assert!(
        throttled + checked + shed >= refused + 1 + limit + checked_late,
        "{throttled} + {checked} rows and {shed} shed for {} attempts",
        refused + 1 + limit + checked_late
    );
    assert!(shed > 0, "301 refusals from one address, none shed");
    let budget = keygate::rate_limit::DEFAULT_AUDIT_BUDGET as usize;
    let refilled = started.elapsed().as_secs() as usize + 1;
    assert!(
        checked + throttled <= budget + refilled,
        "{} rows for one address",
        checked + throttled
    );
    assert_eq!(count("invalid_credentials", "198.51.100.67"), 1);
    let owners: Vec<_> = events
        .iter()
        .filter(|e| e["reason"] == "invalid_credentials")
        .map(|e| e["owner"].clone())
        .collect();
    assert!(owners.contains(&Value::from(ADMIN)));
    assert!(
        owners.contains(&Value::Null),
        "the unknown email is not logged"
    );
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains("guess 1") && !text.contains("nobody@example.com"));
    assert!(events.iter().all(|e| e["path"] == "/api/v1/tokens"));
}

#[tokio::test]
async fn a_guessing_flood_does_not_lock_the_owner_out() {
    let server = Server::start().await;
    for i in 0..60 {
        sign_in(&server, "198.51.100.66:5000", ADMIN, &format!("guess {i}")).await;
    }
    let a = sign_in(&server, "198.51.100.66:5000", ADMIN, "one more").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    // The account is over its budget, but the owner's address has not failed on it.
    let a = sign_in(&server, "192.0.2.44:6000", ADMIN, PASSWORD).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    // Nor does a flood of bad bearer tokens from that address.
    for _ in 0..40 {
        server
            .send_from(
                "198.51.100.66:5000",
                request(
                    Method::GET,
                    "/api/v1/me",
                    "Bearer pat_AAAAAAAAAAAAAAAAAAAAAAAA",
                ),
            )
            .await;
    }
    let a = sign_in(&server, "192.0.2.44:6000", ADMIN, PASSWORD).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
}

#[tokio::test]
async fn guesses_spread_over_many_addresses_hit_the_account_backoff() {
    // A small budget refills slowly (one failure per 12 s), so the account is still over
    // it when the second round starts, however slow the password checks are.
    let server = Server::with(|c| c.failure_limit = 5).await;
    let limit = server.config.failure_limit;
    // One guess from each of `limit` addresses: the account is now over its budget.
    for i in 0..limit {
        let a = sign_in(&server, &peer(i), ADMIN, &format!("guess {i}")).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{i}");
    }
    // A second guess from any of them is refused before the password check, although
    // each address is far below its own budget.
    for i in 0..limit {
        let a = sign_in(&server, &peer(i), ADMIN, "again").await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited".into()),
            "{i}"
        );
        assert!(a.headers.contains_key(header::RETRY_AFTER));
    }
    // The owner, from an address that has not failed, still gets in; so does another
    // account from the guessers' addresses.
    let a = sign_in(&server, &peer(1000), ADMIN, PASSWORD).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let a = sign_in(&server, &peer(0), "someone@example.com", "x").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

/// Attack on an integrator: `server::build_app`'s router is now a library API, documented
/// for mounting in a server of one's own. Served without `into_make_service_with_connect_info`
/// (plain `axum::serve(listener, router)`), no request carries a peer address. Password
/// guessing must still be throttled, not silently unlimited.
#[tokio::test]
async fn guessing_through_a_router_served_without_peer_addresses_is_still_throttled() {
    use tower::ServiceExt;

    let server = Server::with(|c| c.failure_limit = 3).await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        // No `ConnectInfo`: the router as `axum::serve(listener, router)` would drive it.
        let res = server
            .app
            .router
            .clone()
            .oneshot(request(
                Method::GET,
                "/api/v1/tokens",
                &basic(ADMIN, &format!("guess {i}")),
            ))
            .await
            .unwrap();
        statuses.push(res.status());
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "every guess was checked: {statuses:?}"
    );
}
