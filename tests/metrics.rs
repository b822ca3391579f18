//! `/metrics` counters move with decisions, and no label holds a secret.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{TestStore, bearer, echo, get};
use keygate::{AuthLayer, NewToken, Tokens};
use tower::{Layer, ServiceExt};

#[tokio::test]
async fn verification_counters_move_and_hold_no_secret() {
    let handle = keygate::metrics::install().unwrap();
    let store = TestStore::default();
    let tokens = Tokens::new(store.clone());
    let t = tokens
        .issue(NewToken::new("alice", "secret-name"))
        .await
        .unwrap();
    let svc = AuthLayer::new(tokens)
        .with_metrics()
        .layer(echo(Arc::default()));
    for _ in 0..3 {
        svc.clone()
            .oneshot(get(Some(&bearer(&t.token))))
            .await
            .unwrap();
    }
    svc.clone().oneshot(get(None)).await.unwrap();
    store.set_down(true);
    svc.clone()
        .oneshot(get(Some(&bearer(&t.token))))
        .await
        .unwrap();
    let text = handle.render();
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle} in {text}"))
            .to_owned()
    };
    assert!(line(r#"keygate_verifications_total{outcome="allow",kind="pat"}"#).ends_with(" 3"));
    assert!(line(r#"keygate_verifications_total{outcome="missing",kind="none"}"#).ends_with(" 1"));
    assert!(line("keygate_store_errors_total").ends_with(" 1"));
    assert!(text.contains("keygate_verification_seconds_bucket"));
    assert!(!text.contains(&t.token.expose_secret()[4..]));
    assert!(!text.contains("secret-name"), "token names are not labels");
}
