//! No raw token in any log line (captured at TRACE), `Debug` output or error message.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::{Arc, Mutex};

use common::{Capture, TestStore, bearer, echo, get};
use keygate::header::{parse_authorization, parse_basic};
use keygate::{AuthLayer, NewToken, Tokens};
use tower::{Layer, ServiceExt};

#[tokio::test]
async fn no_raw_token_in_logs_or_debug_output() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let _every = common::ask_every_dispatcher();

    let store = TestStore::default();
    let tokens = Tokens::new(store.clone());
    let mut secrets = Vec::new();
    let mut debug = Vec::new();

    let a = tokens.issue(NewToken::new("alice", "a")).await.unwrap();
    let b = tokens.issue(NewToken::new("alice", "b")).await.unwrap();
    secrets.push(a.token.expose_secret().to_owned());
    secrets.push(b.token.expose_secret().to_owned());
    debug.push(format!("{a:?} {b:?} {:?}", a.record));

    let seen_headers = Arc::new(Mutex::new(String::new()));
    let seen = seen_headers.clone();
    let inner = tower::service_fn(
        move |req: http::Request<http_body_util::Full<bytes::Bytes>>| {
            *seen.lock().unwrap() = format!("{:?} {:?}", req.headers(), req.extensions());
            async move {
                Ok::<_, std::convert::Infallible>(http::Response::<
                    http_body_util::Full<bytes::Bytes>,
                >::new(
                    http_body_util::Full::default()
                ))
            }
        },
    );
    let svc = AuthLayer::new(tokens.clone()).layer(inner);
    let res = svc
        .clone()
        .oneshot(get(Some(&bearer(&a.token))))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    debug.push(seen_headers.lock().unwrap().clone());

    let rotated = tokens.rotate("alice", a.record.id, None).await.unwrap();
    secrets.push(rotated.token.expose_secret().to_owned());
    debug.push(format!("{rotated:?}"));
    tokens.revoke("alice", b.record.id).await.unwrap();
    for t in [&a.token, &b.token, &rotated.token] {
        let res = svc.clone().oneshot(get(Some(&bearer(t)))).await.unwrap();
        debug.push(format!("{res:?}"));
        let id = tokens.authenticate(t.expose_secret()).await;
        debug.push(format!("{id:?}"));
    }
    store.set_down(true);
    let res = svc
        .clone()
        .oneshot(get(Some(&bearer(&rotated.token))))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let err = tokens
        .authenticate(rotated.token.expose_secret())
        .await
        .unwrap_err();
    debug.push(format!("{err:?} {err}"));
    store.set_down(false);
    let cred = format!("Bearer {}", rotated.token.expose_secret());
    debug.push(format!("{:?}", parse_authorization(cred.as_bytes())));
    let basic = parse_basic("YWxpY2U6aHVudGVyMg==").unwrap();
    debug.push(format!("{basic:?}"));
    let echo_svc = AuthLayer::new(tokens).layer(echo(Arc::default()));
    debug.push(format!("{echo_svc:?}"));

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("token issued"), "the capture works: {logs}");
    assert!(logs.contains("token store lookup failed"), "{logs}");
    for secret in &secrets {
        let body = &secret[4..];
        assert!(!logs.contains(body), "a raw token leaked into the logs");
        for d in &debug {
            assert!(
                !d.contains(body),
                "a raw token leaked into Debug output: {d}"
            );
        }
    }
    assert!(
        !debug.join(" ").contains("hunter2"),
        "a password leaked into Debug output"
    );
}
