//! Where the token comes from: `Authorization: Bearer` (default), a named header, a query
//! parameter and a WebSocket protocol entry; the same answers for each; a query or
//! WebSocket token never reaches the inner service.

#![allow(clippy::unwrap_used)]

use crate::common::get_from;
use axum::Router;
use axum::extract::{OriginalUri, RawQuery};
use axum::routing::get;
use http::{HeaderMap, StatusCode, Uri};
use keygate::middleware::TokenSource;
use keygate::rate_limit::{Rate, RateLimits};
use keygate::{AuthLayer, Identity, MemoryStore, NewToken, Tokens};

/// Everything the inner service can see of the request, as text.
async fn echo(
    id: Identity,
    uri: Uri,
    OriginalUri(original): OriginalUri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> String {
    let headers: Vec<String> = headers
        .iter()
        .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    format!(
        "owner={} uri={uri} original={original} query={query:?} headers={headers:?}",
        id.owner()
    )
}

async fn setup() -> (Tokens, String) {
    let tokens = Tokens::new(MemoryStore::new());
    let issued = tokens.issue(NewToken::new("erin", "ci")).await.unwrap();
    let token = issued.token.expose_secret().to_owned();
    (tokens, token)
}

/// The layers to test each source with: without policies (the fast path) and with one
/// (the path with policies), which read the sources alike.
fn layers(tokens: &Tokens, sources: Vec<TokenSource>) -> [AuthLayer; 2] {
    let plain = AuthLayer::new(tokens.clone()).token_sources(sources.clone());
    let limited = plain
        .clone()
        .with_rate_limits(RateLimits::new(Rate::per_minute(1000).unwrap()));
    [plain, limited]
}

#[tokio::test]
async fn an_api_key_header_works_beside_bearer_with_the_same_answers() {
    let (tokens, token) = setup().await;
    let bad = crate::common::spoiled(&token);
    for layer in layers(
        &tokens,
        vec![TokenSource::bearer(), TokenSource::header("x-api-key")],
    ) {
        let app: Router = Router::new().route("/", get(echo)).layer(layer);
        let (status, body) = get_from(&app, "/", &[("x-api-key", &token)]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("owner=erin"));
        let bearer = format!("Bearer {token}");
        let (status, _) = get_from(&app, "/", &[("authorization", &bearer)]).await;
        assert_eq!(status, StatusCode::OK);

        // A wrong key reads exactly like a wrong bearer token.
        let from_key = get_from(&app, "/", &[("x-api-key", &bad)]).await;
        let bad_bearer = format!("Bearer {bad}");
        let from_bearer = get_from(&app, "/", &[("authorization", &bad_bearer)]).await;
        assert_eq!(from_key.0, StatusCode::UNAUTHORIZED);
        assert_eq!(from_key, from_bearer);

        // Two places at once, or two keys, are refused: the client does not pick.
        let both = [
            ("x-api-key", token.as_str()),
            ("authorization", bearer.as_str()),
        ];
        assert_eq!(get_from(&app, "/", &both).await.0, StatusCode::BAD_REQUEST);
        let twice = [("x-api-key", token.as_str()), ("x-api-key", token.as_str())];
        assert_eq!(get_from(&app, "/", &twice).await.0, StatusCode::BAD_REQUEST);
        let (status, body) = get_from(&app, "/", &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("missing_token"));
    }
    // The default layer reads `Authorization` only.
    let app: Router = Router::new()
        .route("/", get(echo))
        .layer(AuthLayer::new(tokens));
    let (status, body) = get_from(&app, "/", &[("x-api-key", &token)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("missing_token"));
}

#[tokio::test]
async fn the_api_key_header_is_marked_sensitive_for_the_inner_service() {
    let (tokens, token) = setup().await;
    let app: Router = Router::new()
        .route(
            "/",
            get(|headers: HeaderMap| async move {
                headers.get("x-api-key").unwrap().is_sensitive().to_string()
            }),
        )
        .layer(AuthLayer::new(tokens).token_sources([TokenSource::header("x-api-key")]));
    let (status, body) = get_from(&app, "/", &[("x-api-key", &token)]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "true"));
}

#[tokio::test]
async fn a_query_parameter_token_never_reaches_the_inner_service() {
    let (tokens, token) = setup().await;
    for layer in layers(&tokens, vec![TokenSource::query("access_token")]) {
        // `OriginalUri` is set by the outer router before the layer runs: it is cleaned too.
        let app: Router = Router::new().nest(
            "/api",
            Router::new().route("/ws", get(echo)).layer(layer.clone()),
        );
        let uri = format!("/api/ws?room=7&access_token={token}&x=1");
        let (status, body) = get_from(&app, &uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("owner=erin"), "{body}");
        assert!(
            !body.contains(&token),
            "the token reached the handler: {body}"
        );
        assert!(!body.contains("access_token"), "{body}");
        assert!(body.contains("query=Some(\"room=7&x=1\")"), "{body}");
        assert!(body.contains("original=/api/ws?room=7&x=1"), "{body}");

        let bad = format!("/api/ws?access_token={}", crate::common::spoiled(&token));
        let (status, body) = get_from(&app, &bad, &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("invalid_token"));
        let twice = format!("/api/ws?access_token={token}&access_token={token}");
        assert_eq!(get_from(&app, &twice, &[]).await.0, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn a_websocket_protocol_token_is_taken_out_of_the_offered_protocols() {
    let (tokens, token) = setup().await;
    for layer in layers(&tokens, vec![TokenSource::websocket_protocol("bearer.")]) {
        let app: Router = Router::new().route("/ws", get(echo)).layer(layer);
        let offered = format!("chat, bearer.{token}");
        let (status, body) = get_from(&app, "/ws", &[("sec-websocket-protocol", &offered)]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("sec-websocket-protocol: chat\""), "{body}");
        assert!(!body.contains(&token), "{body}");
        let wrong = format!("chat, bearer.{}", crate::common::spoiled(&token));
        assert_eq!(
            get_from(&app, "/ws", &[("sec-websocket-protocol", &wrong)])
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get_from(&app, "/ws", &[("sec-websocket-protocol", "chat")])
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }
}

#[test]
fn a_cookie_is_never_a_token_source() {
    assert!(TokenSource::try_header("cookie").is_err());
    let refused = std::panic::catch_unwind(|| TokenSource::header("Cookie"));
    assert!(refused.is_err());
}
