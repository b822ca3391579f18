//! `/metrics` counters move with decisions, no label holds a secret, and no sample tells a
//! refusal's reason apart from another's.

#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod allocations;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{TestStore, bearer, echo, get};
use keygate::clock::ManualClock;
use keygate::metrics::PrometheusHandle;
use keygate::{AuthLayer, MemoryStore, NewToken, RawToken, TokenKind, Tokens};
use tower::{Layer, ServiceExt};

/// The recorder is global: installed once for this binary.
fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| keygate::metrics::install().unwrap())
        .clone()
}

/// The tests read counters that any test of this binary moves: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn verification_counters_move_and_hold_no_secret() {
    let _serial = SERIAL.lock().await;
    let handle = handle();
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
    assert!(
        line(r#"keygate_verifications_total{outcome="missing_token",kind="none"}"#).ends_with(" 1")
    );
    assert!(line("keygate_store_errors_total").ends_with(" 1"));
    assert!(text.contains("keygate_verification_seconds_bucket"));
    assert!(!text.contains(&t.token.expose_secret()[4..]));
    assert!(!text.contains("secret-name"), "token names are not labels");
}

/// The counters of `/metrics` that move with a decision (not the durations' sums and
/// buckets), by sample name and labels.
fn counters(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| {
            l.starts_with("keygate_")
                && (l.starts_with("keygate_verifications_total")
                    || l.contains("_count")
                    || l.starts_with("keygate_store_errors_total")
                    || l.starts_with("keygate_rate_limited_total"))
        })
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// What presenting `token` changed in `/metrics`: the samples that moved, and by how much.
async fn moved_by<S, B>(handle: &PrometheusHandle, svc: &S, token: &str) -> BTreeMap<String, f64>
where
    S: tower::Service<
            http::Request<http_body_util::Full<bytes::Bytes>>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone,
{
    let before = counters(&handle.render());
    let res = svc
        .clone()
        .oneshot(get(Some(&format!("Bearer {token}"))))
        .await
        .unwrap();
    assert_eq!(res.status(), http::StatusCode::UNAUTHORIZED, "{token:.4}…");
    let after = counters(&handle.render());
    after
        .into_iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(&k).copied().unwrap_or(0.0);
            (d != 0.0).then_some((k, d))
        })
        .collect()
}

/// One character of the secret changed: what someone who half-copied a token presents.
fn wrong_secret(token: &RawToken) -> String {
    let mut s = token.expose_secret().to_owned();
    let i = token.prefix().len() + 10;
    let c = if &s[i..=i] == "A" { "B" } else { "A" };
    s.replace_range(i..=i, c);
    s
}

#[tokio::test]
async fn metrics_do_not_tell_a_revoked_or_expired_token_from_an_unknown_one() {
    let _serial = SERIAL.lock().await;
    let handle = handle();
    let clock = ManualClock::new(time::macros::datetime!(2026-01-01 0:00 UTC));
    let leak = TokenKind::new("leak", "lk").unwrap();
    let other = TokenKind::new("other", "ot").unwrap();
    let tokens = Tokens::builder(MemoryStore::new())
        .kind(leak.clone())
        .kind(other.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    let issue = |name: &str, kind: &str| {
        let tokens = tokens.clone();
        let new = NewToken::new("victim", name).kind(kind);
        async move { tokens.issue(new).await.unwrap() }
    };
    let revoked = issue("revoked", "leak").await;
    tokens.revoke("victim", revoked.record.id).await.unwrap();
    let expired = tokens
        .issue(
            NewToken::new("victim", "expired")
                .kind("leak")
                .expires_in(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    clock.advance(Duration::from_secs(120));
    let live = issue("live", "leak").await;
    let other_kind = issue("other-kind", "other").await;
    let svc = AuthLayer::new(tokens)
        .accept_kinds(["leak"])
        .unwrap()
        .with_metrics()
        .layer(echo(Arc::default()));

    let unknown = moved_by(&handle, &svc, leak.generate().expose_secret()).await;
    assert!(!unknown.is_empty(), "a refusal is counted");
    for (what, token) in [
        ("revoked", revoked.token.expose_secret().to_owned()),
        ("expired", expired.token.expose_secret().to_owned()),
        ("wrong secret", wrong_secret(&live.token)),
    ] {
        let moved = moved_by(&handle, &svc, &token).await;
        assert_eq!(moved, unknown, "a {what} token reads like an unknown one");
    }
    // A token of a kind the layer does not take reads like an unknown token of that kind.
    let unknown_other = moved_by(&handle, &svc, other.generate().expose_secret()).await;
    let wrong_kind = moved_by(&handle, &svc, other_kind.token.expose_secret()).await;
    assert_eq!(wrong_kind, unknown_other);
    let text = handle.render();
    for reason in ["unknown", "revoked", "expired", "wrong_kind", "malformed"] {
        assert!(
            !text.contains(&format!("outcome=\"{reason}\"")),
            "{reason} is on /metrics:\n{text}"
        );
    }
}
