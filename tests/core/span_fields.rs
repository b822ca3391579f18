//! The layer writes `token_id`, `owner` and the decision on the request's tracing span (as
//! tower-http's `TraceLayer` makes it), never the token.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use keygate::{AuthLayer, MemoryStore, NewToken, Tokens};
use tower::ServiceExt;
use tower_http::trace::TraceLayer;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Every value recorded on any span, as `name=value`.
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<String>>>);

impl Visit for Recorded {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{}={value:?}", field.name()));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{}={value}", field.name()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorded {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: Context<'_, S>,
    ) {
        attrs.record(&mut self.clone());
    }
    fn on_record(
        &self,
        _: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: Context<'_, S>,
    ) {
        values.record(&mut self.clone());
    }
}

fn app(tokens: Tokens) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(AuthLayer::new(tokens))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
                tracing::info_span!(
                    "request",
                    path = req.uri().path(),
                    token_id = tracing::field::Empty,
                    owner = tracing::field::Empty,
                    decision = tracing::field::Empty,
                    reason = tracing::field::Empty,
                )
            }),
        )
}

#[tokio::test]
async fn the_request_span_carries_the_token_id_owner_and_decision_but_never_the_token() {
    let recorded = Recorded::default();
    let subscriber = tracing_subscriber::registry().with(recorded.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let tokens = Tokens::new(MemoryStore::new());
    let issued = tokens.issue(NewToken::new("frank", "ci")).await.unwrap();
    let secret = issued.token.expose_secret().to_owned();
    let app = app(tokens.clone());

    let ok = Request::get("/")
        .header("authorization", format!("Bearer {secret}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.clone().oneshot(ok).await.unwrap().status(),
        StatusCode::OK
    );
    let seen = recorded.0.lock().unwrap().clone();
    assert!(
        seen.contains(&format!("token_id={}", issued.record.id)),
        "{seen:?}"
    );
    assert!(seen.contains(&"owner=frank".to_owned()), "{seen:?}");
    assert!(seen.contains(&"decision=allow".to_owned()), "{seen:?}");

    tokens.revoke("frank", issued.record.id).await.unwrap();
    let refused = Request::get("/")
        .header("authorization", format!("Bearer {secret}"))
        .body(Body::empty())
        .unwrap();
    let res = app.oneshot(refused).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let seen = recorded.0.lock().unwrap().clone();
    assert!(seen.contains(&"decision=deny".to_owned()), "{seen:?}");
    assert!(seen.contains(&"reason=revoked".to_owned()), "{seen:?}");
    assert!(
        seen.iter().all(|s| !s.contains(&secret)),
        "the token was recorded: {seen:?}"
    );
}
