//! The pepper: a copy of the database cannot confirm a guessed token; rotating the pepper,
//! or turning one on, locks no one out and re-hashes each token on its first use; with
//! unpeppered records refused, an old token is refused; the pepper is never shown; and the
//! work a refusal takes does not depend on which digest matched.

use std::path::Path;

use http::{Method, StatusCode};
use keygate::{MemoryStore, NewToken, Pepper, TokenHash, TokenId, TokenStore, Tokens, server};
use serde_json::json;

use crate::common::TestStore;
use crate::support::{Server, request};

const P1: &str = "cGVwcGVyLW9uZS1wZXBwZXItb25lLXBlcHBlci1vbmUteHg=";
const P2: &str = "cGVwcGVyLXR3by1wZXBwZXItdHdvLXBlcHBlci10d28teHh4";

fn pepper(s: &str) -> Pepper {
    Pepper::parse(s).unwrap()
}

/// The digest the store keeps for the token with id `id`.
async fn stored_digest(app: &server::App, id: &str) -> TokenHash {
    let id: TokenId = id.parse().unwrap();
    app.tokens.store().get(&id).await.unwrap().unwrap().hash
}

/// Another server over the same database, with the settings changed by `f`.
async fn same_database(server: &Server, f: impl FnOnce(&mut server::Config)) -> server::App {
    let mut config = server.config.clone();
    f(&mut config);
    server::build_app(&config).await.unwrap()
}

async fn me(app: &server::App, token: &str) -> StatusCode {
    use tower::ServiceExt;
    let mut req = request(Method::GET, "/api/v1/me", &format!("Bearer {token}"));
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo::<std::net::SocketAddr>(
            crate::support::PEER.parse().unwrap(),
        ));
    app.router.clone().oneshot(req).await.unwrap().status()
}

/// Every byte of the SQLite database and its write-ahead log.
fn database_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(db).unwrap();
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    if let Ok(more) = std::fs::read(&wal) {
        bytes.extend(more);
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_dump_of_a_peppered_database_cannot_confirm_a_guess() {
    let server = Server::with(|c| c.pepper = Some(pepper(P1))).await;
    let created = server.create(json!({ "name": "ci" })).await;
    // The token works.
    let me_now = server
        .send(request(Method::GET, "/api/v1/me", &created.bearer()))
        .await;
    assert_eq!(me_now.status, StatusCode::OK, "{}", me_now.text);

    // The attacker holds the database file and a candidate token (here the real one, the
    // best guess there is): its SHA-256 is nowhere in the file, nor is any record under it.
    let guess = TokenHash::of(&created.token);
    let stored = stored_digest(&server.app, &created.id).await;
    assert_ne!(stored, guess, "the stored digest is not SHA-256(token)");
    assert_eq!(
        stored,
        pepper(P1).digest(&created.token),
        "the stored digest is HMAC-SHA256(pepper, token)"
    );
    let store = server.app.tokens.store();
    assert!(store.find_by_hash(&guess).await.unwrap().is_none());
    server.app.tokens.flush_usage().await.unwrap();
    let dump = database_bytes(&server.config.db);
    assert!(
        contains(&dump, stored.as_bytes()),
        "the dump does hold the peppered digest (the search works)"
    );
    assert!(
        !contains(&dump, guess.as_bytes()),
        "the SHA-256 of the token is nowhere in the database file"
    );
    assert!(!contains(&dump, created.token.as_bytes()));
}

#[tokio::test]
async fn rotating_the_pepper_keeps_tokens_working_and_rehashes_each_on_first_use() {
    let server = Server::with(|c| c.pepper = Some(pepper(P1))).await;
    let used = server.create(json!({ "name": "used" })).await;
    let idle = server.create(json!({ "name": "idle" })).await;

    // The operator moves P1 to previous_peppers and sets P2.
    let rotated = same_database(&server, |c| {
        c.pepper = Some(pepper(P2));
        c.previous_peppers = vec![pepper(P1)];
    })
    .await;
    assert_eq!(me(&rotated, &used.token).await, StatusCode::OK);
    rotated.tokens.flush_usage().await.unwrap();
    assert_eq!(
        stored_digest(&rotated, &used.id).await,
        pepper(P2).digest(&used.token),
        "a token used once is re-hashed to the new pepper"
    );
    assert_eq!(
        stored_digest(&rotated, &idle.id).await,
        pepper(P1).digest(&idle.token),
        "a token not used yet keeps its digest"
    );
    assert_eq!(me(&rotated, &used.token).await, StatusCode::OK);
    assert_eq!(me(&rotated, &idle.token).await, StatusCode::OK);
    rotated.tokens.flush_usage().await.unwrap();
    assert_eq!(
        stored_digest(&rotated, &idle.id).await,
        pepper(P2).digest(&idle.token)
    );
    // Once re-hashed, the old pepper is no longer needed for them.
    let only_new = same_database(&server, |c| c.pepper = Some(pepper(P2))).await;
    assert_eq!(me(&only_new, &used.token).await, StatusCode::OK);
    assert_eq!(me(&only_new, &idle.token).await, StatusCode::OK);
    // A revoked token stays refused whichever digest it is kept under.
    let gone = server.create(json!({ "name": "gone" })).await;
    let revoke = server
        .send(request(
            Method::DELETE,
            &format!("/api/v1/tokens/{}", gone.id),
            &crate::support::admin_basic(),
        ))
        .await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT, "{}", revoke.text);
    assert_eq!(me(&rotated, &gone.token).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_token_issued_before_the_pepper_keeps_working_and_is_rehashed() {
    let server = Server::start().await;
    let old = server.create(json!({ "name": "before" })).await;
    assert_eq!(
        stored_digest(&server.app, &old.id).await,
        TokenHash::of(&old.token)
    );
    let peppered = same_database(&server, |c| c.pepper = Some(pepper(P1))).await;
    assert_eq!(me(&peppered, &old.token).await, StatusCode::OK);
    peppered.tokens.flush_usage().await.unwrap();
    assert_eq!(
        stored_digest(&peppered, &old.id).await,
        pepper(P1).digest(&old.token),
        "re-hashed from SHA-256 to the pepper's HMAC on first use"
    );
    assert_eq!(me(&peppered, &old.token).await, StatusCode::OK);
}

#[tokio::test]
async fn with_unpeppered_records_refused_an_old_token_gets_401() {
    let server = Server::start().await;
    let old = server.create(json!({ "name": "before" })).await;
    let strict = same_database(&server, |c| {
        c.pepper = Some(pepper(P1));
        c.allow_unpeppered = false;
    })
    .await;
    assert_eq!(me(&strict, &old.token).await, StatusCode::UNAUTHORIZED);
    strict.tokens.flush_usage().await.unwrap();
    assert_eq!(
        stored_digest(&strict, &old.id).await,
        TokenHash::of(&old.token),
        "a refused token is not re-hashed"
    );
    // Without the pepper the token would still work: the refusal is the setting's.
    assert_eq!(me(&server.app, &old.token).await, StatusCode::OK);
}

#[tokio::test]
async fn the_pepper_never_appears_in_debug_errors_or_the_configuration() {
    let secret = "c2VjcmV0LXBlcHBlci12YWx1ZS1uZXZlci1wcmludGVkLXh4";
    let p = pepper(secret);
    let raw_hex: String = base64_bytes(secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let shown = [
        format!("{p:?}"),
        format!(
            "{:?}",
            Tokens::builder(MemoryStore::new())
                .pepper(p.clone())
                .build()
                .unwrap()
        ),
        format!(
            "{:?}",
            server::Config {
                pepper: Some(p.clone()),
                previous_peppers: vec![p.clone()],
                ..server::Config::default()
            }
        ),
        // A configuration mistake names the problem, not the pepper.
        Tokens::builder(MemoryStore::new())
            .pepper(p.clone())
            .previous_peppers([p.clone()])
            .build()
            .unwrap_err()
            .to_string(),
        server::Config::loader()
            .with_file(None)
            .with_env([("KEYGATE_PEPPER", &secret[..30])])
            .load()
            .unwrap_err()
            .to_string(),
    ];
    for text in shown {
        assert!(
            !text.contains(&secret[..20]) && !text.contains(&raw_hex[..20]),
            "the pepper shows in {text}"
        );
    }
}

fn base64_bytes(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// The timing rule: with a pepper, one previous pepper and unpeppered records allowed,
/// every well-formed token costs three lookups, whether it is unknown, revoked under the
/// current digest, or valid under an old one; no refusal is cut short by a match.
#[tokio::test]
async fn every_candidate_digest_is_looked_up_whichever_matches() {
    let store = TestStore::default();
    let before = Tokens::new(store.clone());
    let plain = before.issue(NewToken::new("alice", "plain")).await.unwrap();
    let old_pepper = Tokens::builder(store.clone())
        .pepper(pepper(P1))
        .build()
        .unwrap();
    let under_p1 = old_pepper
        .issue(NewToken::new("alice", "p1"))
        .await
        .unwrap();
    let tokens = Tokens::builder(store.clone())
        .pepper(pepper(P2))
        .previous_peppers([pepper(P1)])
        .build()
        .unwrap();
    let revoked = tokens
        .issue(NewToken::new("alice", "revoked"))
        .await
        .unwrap();
    tokens.revoke("alice", revoked.record.id).await.unwrap();
    let unknown = keygate::TokenKind::pat().generate();

    let lookups = |token: &keygate::RawToken| {
        let (store, tokens) = (store.clone(), tokens.clone());
        let token = token.expose_secret().to_owned();
        async move {
            let at = store.lookups();
            let answer = tokens.authenticate(&token).await;
            (store.lookups() - at, answer.is_ok())
        }
    };
    assert_eq!(lookups(&unknown).await, (3, false), "unknown");
    assert_eq!(lookups(&revoked.token).await, (3, false), "revoked");
    assert_eq!(lookups(&plain.token).await, (3, true), "unpeppered");
    assert_eq!(lookups(&under_p1.token).await, (3, true), "previous pepper");
    // Without a pepper, one lookup, as before.
    let at = store.lookups();
    assert!(before.authenticate(unknown.expose_secret()).await.is_err());
    assert_eq!(store.lookups() - at, 1);
    // find_by_token digests alike: it finds the records under every candidate.
    for t in [&plain, &under_p1, &revoked] {
        let found = tokens.find_by_token(t.token.expose_secret()).await.unwrap();
        assert_eq!(found.map(|r| r.id), Some(t.record.id));
    }
    assert!(
        tokens
            .find_by_token(unknown.expose_secret())
            .await
            .unwrap()
            .is_none()
    );
    assert!(tokens.find_by_token("not a token").await.unwrap().is_none());
}
