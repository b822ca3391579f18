//! Attack pass 20: the admin view, edits, imports and leak reports added since the last
//! pass.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
use keygate::axum::management::Management;
use keygate::permissions::AccountPermissions;
use keygate::token::{LegacyAlphabet, LegacyFormat};
use keygate::{AuthLayer, MemoryStore, NewToken, Permissions, TokenKind, Tokens};
use sha2::{Digest, Sha256};
use tower::{Layer, ServiceExt};

use crate::common::{body_string, echo, req};

const PASSWORD: &str = "correct horse battery staple";

async fn account(accounts: &MemoryAccounts, email: &str, permissions: &[&str]) {
    accounts
        .put_account(Account {
            email: email.to_owned(),
            password_hash: hash_password(PASSWORD).unwrap(),
            permissions: Permissions::parse(permissions.iter().copied()).unwrap(),
            created_at: time::OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
}

/// An automation token holding only `tokens:admin` imports, for another owner, the SHA-256
/// of a token it made up, of a kind whose resolver may widen, with no permissions at all
/// (so the importer's-permissions check has nothing to compare). The planted token then
/// acts with the victim's whole rights (`billing:write`), which the importer never held:
/// "never a permission beyond the importer's" does not hold for widening kinds.
#[tokio::test]
async fn an_import_into_a_widening_kind_grants_no_more_than_the_importer_holds() {
    let acct = TokenKind::new("account", "acct")
        .unwrap()
        .with_resolver_may_widen()
        .with_legacy_format(LegacyFormat {
            len: 40,
            alphabet: LegacyAlphabet::Hex,
        })
        .unwrap();
    let tokens = Tokens::builder(MemoryStore::new())
        .kind(TokenKind::pat())
        .kind(acct)
        .build()
        .unwrap();
    let accounts = MemoryAccounts::new();
    account(&accounts, "ops@example.com", &["tokens:admin"]).await;
    account(
        &accounts,
        "victim@example.com",
        &["billing:write", "api:read"],
    )
    .await;

    // The importer: a narrow automation token, `tokens:admin` and nothing else.
    let importer = tokens
        .issue(
            NewToken::new("ops@example.com", "importer")
                .permissions(Permissions::parse(["tokens:admin"]).unwrap()),
        )
        .await
        .unwrap();
    let app = Management::new(tokens.clone(), accounts.clone()).router();

    let planted = format!("acct_{}", "0123456789abcdef0123456789abcdef01234567");
    let hash = format!("{:x}", Sha256::digest(planted.as_bytes()));
    let body = serde_json::json!([{
        "owner": "victim@example.com",
        "name": "planted",
        "hash": hash,
        "kind": "account",
    }]);
    let res = app
        .oneshot(
            Request::builder()
                .method(Method::POST)
                .uri("/admin/tokens/import")
                .header(
                    header::AUTHORIZATION,
                    crate::common::bearer(&importer.token),
                )
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    let (status, _, text) = body_string(res).await;
    eprintln!("import: {status} {text}");

    // The planted token on the victim's API, under the account resolver.
    let svc = AuthLayer::new(tokens)
        .require("billing:write")
        .with_permission_resolver(AccountPermissions::new(accounts).with_ttl(Duration::ZERO))
        .layer(echo(Arc::new(AtomicUsize::new(0))));
    let res = svc
        .oneshot(req(Method::POST, Some(&format!("Bearer {planted}"))))
        .await
        .unwrap();
    let (status, _, body) = body_string(res).await;
    assert_ne!(
        status,
        StatusCode::OK,
        "a token imported by a `tokens:admin`-only caller acts as the victim with \
         billing:write: {body}"
    );
}

/// With the admin-only switch on, a non-admin account releases its seat's machine binding
/// (`POST /tokens/{id}/release`), so another machine can take the seat: the one management
/// route the switch does not reach (create, edit, rotate and revoke are refused with 403).
#[tokio::test]
async fn the_admin_only_switch_covers_releasing_a_seat() {
    let seat = TokenKind::new("seat", "seat")
        .unwrap()
        .with_binding("x-machine-id")
        .unwrap();
    let tokens = Tokens::builder(MemoryStore::new())
        .kind(seat)
        .build()
        .unwrap();
    let accounts = MemoryAccounts::new();
    account(&accounts, "alice@example.com", &["apps:*", "tokens:write"]).await;
    let issued = tokens
        .issue(NewToken::new("alice@example.com", "laptop"))
        .await
        .unwrap();
    // The seat is taken by the first machine.
    let mut headers = http::HeaderMap::new();
    headers.insert("x-machine-id", "machine-a".parse().unwrap());
    tokens
        .authenticate_request(
            issued.token.expose_secret(),
            Some("192.0.2.1".parse().unwrap()),
            &headers,
        )
        .await
        .unwrap();

    let app = Management::new(tokens, accounts)
        .admin_only_token_management(true)
        .router();
    let res = app
        .oneshot(
            Request::builder()
                .method(Method::POST)
                .uri(format!("/tokens/{}/release", issued.record.id))
                .header(
                    header::AUTHORIZATION,
                    crate::common::basic("alice@example.com", PASSWORD),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let (status, _, body) = body_string(res).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a non-admin released a seat under admin-only management: {body}"
    );
}

/// A leaked automation token with `tokens:admin`, short-lived (an hour) and held to an
/// allow-list, imports the hash of a secret it generated for its own owner, with the same
/// permissions: no expiry, no allow-list, and outside its lineage. Revoking the leaked
/// token (lineage included) leaves the minted one working, from any address, for ever.
/// SECURITY.md: "The only secrets a leaked token can mint are its own successors ... it
/// cannot create a token"; every other bearer action is held to `may_manage`'s "at least
/// as restricted as itself", which the import skips.
#[tokio::test]
async fn a_leaked_admin_token_cannot_mint_an_unrestricted_token_by_importing() {
    use crate::support::{ADMIN, Server, admin_basic, json_request, request};

    let server = Server::start().await;
    let leaked = server
        .create(serde_json::json!({
            "name": "automation",
            "permissions": ["tokens:admin"],
            "expires_in": 3600,
            "allowed_ips": ["192.0.2.0/24"],
        }))
        .await;

    // From inside the allow-list (the default peer is 192.0.2.10).
    let minted = TokenKind::pat().generate();
    let hash = format!("{:x}", Sha256::digest(minted.expose_secret().as_bytes()));
    let a = server
        .send(json_request(
            Method::POST,
            "/api/v1/admin/tokens/import",
            &leaked.bearer(),
            &serde_json::json!([{
                "owner": ADMIN,
                "name": "minted",
                "hash": hash,
                "permissions": ["tokens:admin"],
            }]),
        ))
        .await;
    eprintln!("import: {} {}", a.status, a.text);

    // The owner notices and revokes the leaked token with its whole lineage.
    let a = server
        .send(request(
            Method::DELETE,
            &format!("/api/v1/tokens/{}", leaked.id),
            &admin_basic(),
        ))
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);

    // The minted token, from an address the leaked one was never allowed.
    let a = server
        .send_from(
            "203.0.113.7:40000",
            request(
                Method::GET,
                "/api/v1/admin/tokens",
                &format!("Bearer {}", minted.expose_secret()),
            ),
        )
        .await;
    assert_ne!(
        a.status,
        StatusCode::OK,
        "a token minted by the leaked one outlives its revocation, its expiry and its \
         allow-list: {}",
        a.text
    );
}

/// A token's metadata reaches the host application on the `Identity`
/// (`Identity::metadata`, "the owner's own data about the token"), so a host may key a
/// decision on it (`{"tenant": "a"}`). A leaked bearer token with `tokens:write` rewrites
/// its own metadata with `PATCH`: every other bearer edit only narrows, this one is free.
#[tokio::test]
async fn a_bearer_token_cannot_rewrite_the_metadata_the_host_reads() {
    use crate::support::{Server, json_request};

    let server = Server::start().await;
    let leaked = server
        .create(serde_json::json!({
            "name": "ci",
            "permissions": ["tokens:write", "apps:read"],
            "metadata": {"tenant": "a"},
        }))
        .await;
    let a = server
        .send(json_request(
            Method::PATCH,
            &format!("/api/v1/tokens/{}", leaked.id),
            &leaked.bearer(),
            &serde_json::json!({"metadata": {"tenant": "b"}}),
        ))
        .await;
    assert_eq!(
        a.status,
        StatusCode::FORBIDDEN,
        "the leaked token moved itself to another tenant: {}",
        a.text
    );
}
