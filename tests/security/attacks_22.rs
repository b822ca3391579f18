//! Attack pass 22: the token sources (a query parameter the layer takes out of the request)
//! and the manager's automatic upkeep.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{OriginalUri, Query, RawQuery};
use axum::routing::get;
use http::{StatusCode, Uri};
use keygate::middleware::TokenSource;
use keygate::rate_limit::{Rate, RateLimits};
use keygate::{AuthLayer, Identity, MemoryStore, NewToken, TokenStore, Tokens};

/// What a handler can read of the query, as text: the URI, axum's `OriginalUri`, the raw
/// query and the parameters as its `Query` extractor decodes them.
async fn echo(
    id: Option<Identity>,
    uri: Uri,
    OriginalUri(original): OriginalUri,
    RawQuery(query): RawQuery,
    Query(params): Query<Vec<(String, String)>>,
) -> String {
    format!(
        "owner={} uri={uri} original={original} query={query:?} params={params:?}",
        id.map_or("-".to_owned(), |i| i.owner().to_owned())
    )
}

async fn send(app: &Router, uri: &str, authorization: Option<&str>) -> (StatusCode, String) {
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|a| ("authorization", *a))
        .collect();
    crate::common::get_from(app, uri, &headers).await
}

/// A query parameter name spelled with percent escapes (`access%5Ftoken`) is the same
/// parameter to the handler's `Query` extractor. Before the fix the layer matched names
/// byte for byte: `?access_token=<A>&access%5Ftoken=<B>` authenticated A and handed B to
/// the handler as `access_token` (and a bearer token beside `access%5Ftoken=<B>` did the
/// same), so a query token reached the inner service and "a token in two places is 400"
/// did not hold. Now the escaped spelling is taken, removed and counted like the plain one,
/// on the path without policies and on the one with them.
#[tokio::test]
async fn a_query_parameter_name_spelled_with_escapes_is_no_way_past_the_layer() {
    let tokens = Tokens::new(MemoryStore::new());
    let erin = tokens.issue(NewToken::new("erin", "ci")).await.unwrap();
    let erin = erin.token.expose_secret().to_owned();
    let mallory = tokens.issue(NewToken::new("mallory", "ci")).await.unwrap();
    let mallory = mallory.token.expose_secret().to_owned();
    let sources = [TokenSource::bearer(), TokenSource::query("access_token")];
    let plain = AuthLayer::new(tokens.clone()).token_sources(sources.clone());
    let limited = plain
        .clone()
        .with_rate_limits(RateLimits::new(Rate::per_minute(1000).unwrap()));
    for layer in [plain, limited] {
        let app: Router = Router::new().nest(
            "/api",
            Router::new().route("/ws", get(echo)).layer(layer.clone()),
        );
        // Two tokens, one of them in disguise: refused, not one taken and one passed on.
        for uri in [
            format!("/api/ws?access_token={erin}&access%5Ftoken={mallory}"),
            format!("/api/ws?access%5ftoken={mallory}&access_token={erin}"),
            format!("/api/ws?access_token={erin}&%61ccess_token={mallory}"),
        ] {
            let (status, body) = send(&app, &uri, None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(body.contains("invalid_request"), "{body}");
        }
        let bearer = format!("Bearer {erin}");
        let uri = format!("/api/ws?access%5Ftoken={mallory}");
        let (status, body) = send(&app, &uri, Some(&bearer)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

        // Alone, the escaped spelling is the token: taken, and gone from what the handler
        // reads, every other parameter kept.
        let uri = format!("/api/ws?room=7&access%5Ftoken={mallory}&x=1");
        let (status, body) = send(&app, &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.starts_with("owner=mallory "), "{body}");
        assert!(
            !body.contains(&mallory),
            "the token reached the handler: {body}"
        );
        assert!(!body.contains("token"), "{body}");
        assert!(body.contains("original=/api/ws?room=7&x=1"), "{body}");

        // A name that only decodes to something else is another parameter, left alone.
        let uri = format!("/api/ws?access%5Ftokens=1&access_token={erin}");
        let (status, body) = send(&app, &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("query=Some(\"access%5Ftokens=1\")"), "{body}");
    }

    // An optional layer lets a request without a token through: a disguised one is still
    // a token, verified and removed, not handed to the handler of an anonymous request.
    let optional = AuthLayer::new(tokens.clone())
        .token_sources([TokenSource::query("access_token")])
        .optional();
    let app: Router = Router::new().route("/ws", get(echo)).layer(optional);
    let (status, body) = send(&app, &format!("/ws?access%5Ftoken={mallory}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("owner=mallory "), "{body}");
    assert!(!body.contains(&mallory), "{body}");
    let bad = format!("/ws?access%5Ftoken={}", crate::common::spoiled(&mallory));
    let (status, body) = send(&app, &bad, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("invalid_token"), "{body}");
}

/// One verified request through the default layer, queuing a use.
async fn use_once(tokens: &Tokens, token: &str) {
    let app: Router = Router::new()
        .route("/", get(echo))
        .layer(AuthLayer::new(tokens.clone()));
    let (status, body) = send(&app, "/", Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn last_used_written(store: &MemoryStore, id: &keygate::TokenId) -> bool {
    store.get(id).await.unwrap().unwrap().last_used_at.is_some()
}

/// `Duration::MAX` reads as "never purge"; before the fix the automatic upkeep added it to
/// the clock, panicked at its start, and from then on no use was ever written (the task
/// from `spawn_maintenance` panicked the same way after its first turn). The interval is
/// now capped: the uses are still written every 10 s.
#[tokio::test(start_paused = true)]
async fn an_interval_of_duration_max_does_not_end_the_upkeep() {
    let store = Arc::new(MemoryStore::new());
    let tokens = Tokens::builder(store.clone())
        .maintenance_intervals(Duration::from_secs(10), Duration::MAX)
        .build()
        .unwrap();
    let issued = tokens.issue(NewToken::new("erin", "ci")).await.unwrap();
    use_once(&tokens, issued.token.expose_secret()).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(last_used_written(&store, &issued.record.id).await);
    assert_eq!(tokens.pending_usage(), 0);

    let store = Arc::new(MemoryStore::new());
    let tokens = Tokens::builder(store.clone())
        .manual_maintenance()
        .build()
        .unwrap();
    let issued = tokens.issue(NewToken::new("erin", "ci")).await.unwrap();
    let upkeep = tokens.spawn_maintenance(Duration::from_secs(10), Duration::MAX);
    tokio::time::sleep(Duration::from_secs(1)).await;
    use_once(&tokens, issued.token.expose_secret()).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(
        last_used_written(&store, &issued.record.id).await,
        "the task still runs after its first turn"
    );
    upkeep.shutdown().await;
}

/// A manager built in a runtime used only for setup, then served from another: before the
/// fix its upkeep died with the first runtime and was never started again, so no use was
/// ever written. Now the first use in the new runtime starts it there.
#[test]
fn a_manager_built_in_a_runtime_since_gone_keeps_its_upkeep() {
    let store = Arc::new(MemoryStore::new());
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (tokens, issued) = setup.block_on(async {
        let tokens = Tokens::new(store.clone());
        let issued = tokens.issue(NewToken::new("erin", "ci")).await.unwrap();
        (tokens, issued)
    });
    drop(setup);
    let serving = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    serving.block_on(async {
        use_once(&tokens, issued.token.expose_secret()).await;
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(
            last_used_written(&store, &issued.record.id).await,
            "the use was written by the upkeep of the serving runtime"
        );
        assert_eq!(tokens.pending_usage(), 0);
    });
}
