//! Attacks on a token's lineage (the tokens a rotation chain makes): what a restricted
//! bearer token may mint by rotating (only its own lineage, never a sibling), whether
//! revoking a leaked token stops whoever rotated it, and whether rotating resets a budget.

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
    // Even a sibling at least as restricted (same range or narrower, sooner expiry) is not
    // rotated by a bearer token: rotation hands out a secret, and a bearer token rotates
    // only its own lineage. Revoking it is allowed.
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
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    assert_eq!(a.code(), "insufficient_scope");
    let a = s
        .send(request(
            Method::DELETE,
            &format!("/api/v1/tokens/{}", id(&narrow)),
            &bearer(&confined),
        ))
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    // The confined token rotates itself: its successor keeps its expiry and its range.
    let a = rotate(&s, id(&confined), &bearer(&confined), 0).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let minted = a.json();
    assert_eq!(minted["expires_at"], confined["expires_at"]);
    assert_eq!(minted["allowed_ips"], confined["allowed_ips"]);
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

/// The leak playbook: revoke the leaked token by its id. The thief, holding `tokens:write`,
/// has already rotated the leaked token (twice, without grace), and hopes the successor
/// they hold survives the owner's revocation of the id the owner knows.
#[tokio::test]
async fn revoking_a_leaked_token_after_the_thief_rotated_it_stops_the_thief() {
    let s = Server::start().await;
    let leaked = create(&s, json!({ "name": "deploy" })).await;
    let a = rotate(&s, id(&leaked), &bearer(&leaked), 0).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let first = a.json();
    let a = rotate(&s, id(&first), &bearer(&first), 0).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let thief = a.json();
    // The owner revokes the leaked token by its id.
    let revoke = s
        .send(request(
            Method::DELETE,
            &format!("/api/v1/tokens/{}", id(&leaked)),
            &admin_basic(),
        ))
        .await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT, "{}", revoke.text);
    let still = s
        .send(request(Method::GET, "/api/v1/apps", &bearer(&thief)))
        .await;
    assert_eq!(
        still.status,
        StatusCode::UNAUTHORIZED,
        "the owner's revoke answered 204 and the thief's successor still works"
    );
    // The owner's list no longer shows the lineage.
    let list = s
        .send(request(Method::GET, "/api/v1/tokens", &admin_basic()))
        .await;
    assert_eq!(list.json().as_array().unwrap().len(), 0, "{}", list.text);
    // Each successor's revocation is in the audit log.
    let mut revoked: Vec<String> = Vec::new();
    for _ in 0..100 {
        let a = s
            .send(request(
                Method::GET,
                "/api/v1/audit?limit=100",
                &admin_basic(),
            ))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let events: Vec<Value> = serde_json::from_str(&a.text).unwrap();
        revoked = events
            .iter()
            .filter(|e| e["event"] == "token.revoke" && e["reason"] == "successor")
            .filter(|e| e["rbac_decision"] == "allow")
            .map(|e| e["api_token_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        if revoked.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    revoked.sort();
    let mut expected = vec![id(&first).to_owned(), id(&thief).to_owned()];
    expected.sort();
    assert_eq!(revoked, expected, "audited successor revocations");
}

/// Ending a planned rotation's grace early revokes the old token only when asked to
/// (`?successors=keep`); an unknown value is refused rather than read as the default.
#[tokio::test]
async fn ending_a_grace_early_keeps_the_new_token_only_when_asked() {
    let s = Server::start().await;
    let old = create(&s, json!({ "name": "planned" })).await;
    let a = rotate(&s, id(&old), &admin_basic(), 3600).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let new = a.json();
    let path = format!("/api/v1/tokens/{}?successors=maybe", id(&old));
    let a = s.send(request(Method::DELETE, &path, &admin_basic())).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    let path = format!("/api/v1/tokens/{}?successors=keep", id(&old));
    let a = s.send(request(Method::DELETE, &path, &admin_basic())).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    let get = |auth: String| s.send(request(Method::GET, "/api/v1/apps", &auth));
    assert_eq!(get(bearer(&old)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get(bearer(&new)).await.status, StatusCode::OK);
}

/// A token's rate limit was kept per token id, and a rotation makes a new id: a token that
/// holds `tokens:write` rotates itself when its budget runs low, hoping for a full one.
#[tokio::test]
async fn self_rotation_does_not_reset_the_rate_limit() {
    let s = Server::with(|c| c.rate_limit = 3).await;
    let t = create(&s, json!({ "name": "bot" })).await;
    for _ in 0..2 {
        let a = s
            .send(request(Method::GET, "/api/v1/apps", &bearer(&t)))
            .await;
        assert_eq!(a.status, StatusCode::OK);
    }
    // The third request of the minute: a rotation of itself.
    let r = rotate(&s, id(&t), &bearer(&t), 0).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let fresh = bearer(&r.json());
    // The lineage has used its 3 requests this minute.
    let a = s.send(request(Method::GET, "/api/v1/apps", &fresh)).await;
    assert_eq!(
        a.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the 4th request of the minute passed (RateLimit-Remaining {:?})",
        a.headers.get("ratelimit-remaining")
    );
    // Another of the owner's tokens has a budget of its own.
    let other = create(&s, json!({ "name": "other" })).await;
    let a = s
        .send(request(Method::GET, "/api/v1/apps", &bearer(&other)))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
}

/// The leak playbook again, but the thief tries to rotate a *sibling* instead of the leaked
/// token, hoping for a new secret that is not a successor of the leaked one and so survives
/// the owner's revocation of it. A bearer token rotates only its own lineage: the sibling's
/// rotation is refused (and audited), its own rotation is allowed, and the owner's
/// revocation of the leaked token's id (successors included) ends everything the thief got.
#[tokio::test]
async fn revoking_a_leaked_token_stops_a_thief_who_rotated_a_sibling() {
    let s = Server::start().await;
    let body = |name: &str| json!({ "name": name, "permissions": ["tokens:write", "apps:read"] });
    let leaked = create(&s, body("deploy")).await;
    let sibling = create(&s, body("backup")).await;
    let a = rotate(&s, id(&sibling), &bearer(&leaked), 0).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    assert_eq!(a.code(), "insufficient_scope");
    assert!(
        a.json().get("token").is_none(),
        "a refused rotation handed out a secret: {}",
        a.text
    );
    // The thief rotates the leaked token itself (allowed: its own lineage), then tries the
    // sibling again with the successor.
    let a = rotate(&s, id(&leaked), &bearer(&leaked), 0).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let thief = a.json();
    let a = rotate(&s, id(&sibling), &bearer(&thief), 0).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    // The sibling was not rotated: its holder keeps working.
    let a = s
        .send(request(Method::GET, "/api/v1/apps", &bearer(&sibling)))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    // The owner, signed in with the password, may still rotate any of its tokens.
    let a = rotate(&s, id(&sibling), &admin_basic(), 0).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    // The owner revokes the leaked token by its id.
    let revoke = s
        .send(request(
            Method::DELETE,
            &format!("/api/v1/tokens/{}", id(&leaked)),
            &admin_basic(),
        ))
        .await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT, "{}", revoke.text);
    let still = s
        .send(request(Method::GET, "/api/v1/apps", &bearer(&thief)))
        .await;
    assert_eq!(
        still.status,
        StatusCode::UNAUTHORIZED,
        "the owner revoked the leaked token and the thief's successor still works"
    );
    // Each refused rotation is in the audit log.
    let mut refused = 0;
    for _ in 0..100 {
        let a = s
            .send(request(
                Method::GET,
                "/api/v1/audit?limit=100",
                &admin_basic(),
            ))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let events: Vec<Value> = serde_json::from_str(&a.text).unwrap();
        refused = events
            .iter()
            .filter(|e| e["event"] == "token.rotate" && e["rbac_decision"] == "deny")
            .filter(|e| e["reason"] == "insufficient_scope")
            .count();
        if refused >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(refused, 2, "audited refused rotations");
}
