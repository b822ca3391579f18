//! Attacks on a token's lineage (the tokens a rotation chain makes): what a restricted
//! bearer token may mint by rotating, whether revoking a leaked token stops whoever rotated
//! it, and whether rotating resets a budget.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Server, admin_basic, json_request, request};

/// Creates a token as the admin; the whole 201 body.
async fn create(s: &Server, body: Value) -> Value {
    let a = s
        .send(json_request(
            Method::POST,
            "/api/v1/tokens",
            &admin_basic(),
            &body,
        ))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    a.json()
}

fn bearer(v: &Value) -> String {
    format!("Bearer {}", v["token"].as_str().unwrap())
}

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

/// Rotates `target` with the `Authorization` value `auth` and `grace_seconds`.
async fn rotate(
    s: &Server,
    target: &str,
    auth: &str,
    grace_seconds: u64,
) -> crate::support::Answer {
    s.send(json_request(
        Method::POST,
        &format!("/api/v1/tokens/{target}/rotate"),
        auth,
        &json!({ "grace_seconds": grace_seconds }),
    ))
    .await
}

/// A token confined to an address range and a short lifetime, holding `tokens:write`,
/// tries to rotate a sibling that has neither restriction, to receive a new secret usable
/// from anywhere, for ever.
#[tokio::test]
async fn restricted_token_cannot_mint_an_unrestricted_one_by_rotating_a_sibling() {
    let s = Server::start().await;
    // The restricted token: only from 192.0.2.0/24 (PEER), for 10 minutes.
    let confined = create(
        &s,
        json!({
            "name": "ci-inside",
            "permissions": ["tokens:write", "apps:read"],
            "allowed_ips": ["192.0.2.0/24"],
            "expires_in": 600,
        }),
    )
    .await;
    // Siblings with fewer permissions, each lacking one of the restrictions.
    let siblings = [
        json!({ "name": "laptop", "permissions": ["apps:read"] }),
        json!({ "name": "anywhere", "permissions": ["apps:read"], "expires_in": 300 }),
        json!({ "name": "for-ever", "permissions": ["apps:read"], "allowed_ips": ["192.0.2.0/25"] }),
        json!({ "name": "later", "permissions": ["apps:read"], "allowed_ips": ["192.0.2.0/25"], "expires_in": 6000 }),
        json!({ "name": "wider", "permissions": ["apps:read"], "allowed_ips": ["192.0.0.0/16"], "expires_in": 300 }),
    ];
    for body in siblings {
        let sibling = create(&s, body.clone()).await;
        let a = rotate(&s, id(&sibling), &bearer(&confined), 0).await;
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "rotating {body}: {}",
            a.text
        );
        assert_eq!(a.code(), "insufficient_scope");
        // Revoking it is refused the same way, and the sibling still works.
        let a = s
            .send(request(
                Method::DELETE,
                &format!("/api/v1/tokens/{}", id(&sibling)),
                &bearer(&confined),
            ))
            .await;
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "revoking {body}: {}",
            a.text
        );
        let a = s
            .send(request(Method::GET, "/api/v1/apps", &bearer(&sibling)))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{body}: {}", a.text);
    }
    // A sibling at least as restricted may be rotated: same range or narrower, sooner
    // expiry. Its successor keeps its expiry.
    let narrow = create(
        &s,
        json!({
            "name": "narrow",
            "permissions": ["apps:read"],
            "allowed_ips": ["192.0.2.0/28"],
            "expires_in": 300,
        }),
    )
    .await;
    let a = rotate(&s, id(&narrow), &bearer(&confined), 0).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let minted = a.json();
    assert_eq!(minted["expires_at"], narrow["expires_at"]);
    assert_eq!(minted["allowed_ips"], narrow["allowed_ips"]);
    let outside = s
        .send_from(
            "203.0.113.99:40000",
            request(Method::GET, "/api/v1/apps", &bearer(&minted)),
        )
        .await;
    assert_eq!(outside.status, StatusCode::FORBIDDEN, "{}", outside.text);
}

/// A token that holds `tokens:write` and expires in 10 minutes rotates itself again and
/// again, hoping each new token gets 10 more minutes.
#[tokio::test]
async fn a_bearer_token_cannot_extend_its_life_by_rotating_itself() {
    let s = Server::start().await;
    let first = create(
        &s,
        json!({ "name": "short", "permissions": ["tokens:write"], "expires_in": 600 }),
    )
    .await;
    let mut current = first.clone();
    for _ in 0..3 {
        let a = rotate(&s, id(&current), &bearer(&current), 0).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        current = a.json();
        assert_eq!(
            current["expires_at"], first["expires_at"],
            "a rotation by the token itself moved its expiry"
        );
    }
}
