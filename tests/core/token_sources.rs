//! Where the token comes from: `Authorization: Bearer` (default), a named header, a query
//! parameter and a WebSocket protocol entry; the same answers for each; a query or
//! WebSocket token never reaches the inner service.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, RawQuery};
use axum::routing::get;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use keygate::middleware::TokenSource;
use keygate::rate_limit::{Rate, RateLimits};
use keygate::{AuthLayer, Identity, MemoryStore, NewToken, Tokens};
use tower::ServiceExt;

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

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, String) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get_with(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).unwrap()
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
    let bad = spoiled(&token);
    for layer in layers(
        &tokens,
        vec![TokenSource::bearer(), TokenSource::header("x-api-key")],
    ) {
        let app: Router = Router::new().route("/", get(echo)).layer(layer);
        let (status, body) = send(&app, get_with("/", &[("x-api-key", &token)])).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("owner=erin"));
        let bearer = format!("Bearer {token}");
        let (status, _) = send(&app, get_with("/", &[("authorization", &bearer)])).await;
        assert_eq!(status, StatusCode::OK);

        // A wrong key reads exactly like a wrong bearer token.
        let from_key = send(&app, get_with("/", &[("x-api-key", &bad)])).await;
        let bad_bearer = format!("Bearer {bad}");
        let from_bearer = send(&app, get_with("/", &[("authorization", &bad_bearer)])).await;
        assert_eq!(from_key.0, StatusCode::UNAUTHORIZED);
        assert_eq!(from_key, from_bearer);

        // Two places at once, or two keys, are refused: the client does not pick.
        let both = get_with("/", &[("x-api-key", &token), ("authorization", &bearer)]);
        assert_eq!(send(&app, both).await.0, StatusCode::BAD_REQUEST);
        let twice = get_with("/", &[("x-api-key", &token), ("x-api-key", &token)]);
        assert_eq!(send(&app, twice).await.0, StatusCode::BAD_REQUEST);
        let (status, body) = send(&app, get_with("/", &[])).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("missing_token"));
    }
    // The default layer reads `Authorization` only.
    let app: Router = Router::new()
        .route("/", get(echo))
        .layer(AuthLayer::new(tokens));
    let (status, body) = send(&app, get_with("/", &[("x-api-key", &token)])).await;
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
    let (status, body) = send(&app, get_with("/", &[("x-api-key", &token)])).await;
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
        let (status, body) = send(&app, get_with(&uri, &[])).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("owner=erin"), "{body}");
        assert!(
            !body.contains(&token),
            "the token reached the handler: {body}"
        );
        assert!(!body.contains("access_token"), "{body}");
        assert!(body.contains("query=Some(\"room=7&x=1\")"), "{body}");
        assert!(body.contains("original=/api/ws?room=7&x=1"), "{body}");

        let bad = format!("/api/ws?access_token={}", spoiled(&token));
        let (status, body) = send(&app, get_with(&bad, &[])).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("invalid_token"));
        let twice = format!("/api/ws?access_token={token}&access_token={token}");
        assert_eq!(
            send(&app, get_with(&twice, &[])).await.0,
            StatusCode::BAD_REQUEST
        );
    }
}

#[tokio::test]
async fn a_websocket_protocol_token_is_taken_out_of_the_offered_protocols() {
    let (tokens, token) = setup().await;
    for layer in layers(&tokens, vec![TokenSource::websocket_protocol("bearer.")]) {
        let app: Router = Router::new().route("/ws", get(echo)).layer(layer);
        let offered = format!("chat, bearer.{token}");
        let req = get_with("/ws", &[("sec-websocket-protocol", &offered)]);
        let (status, body) = send(&app, req).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("sec-websocket-protocol: chat\""), "{body}");
        assert!(!body.contains(&token), "{body}");
        let wrong = format!("chat, bearer.{}", spoiled(&token));
        let req = get_with("/ws", &[("sec-websocket-protocol", &wrong)]);
        assert_eq!(send(&app, req).await.0, StatusCode::UNAUTHORIZED);
        let req = get_with("/ws", &[("sec-websocket-protocol", "chat")]);
        assert_eq!(send(&app, req).await.0, StatusCode::UNAUTHORIZED);
    }
}

#[test]
fn a_cookie_is_never_a_token_source() {
    assert!(TokenSource::try_header("cookie").is_err());
    let refused = std::panic::catch_unwind(|| TokenSource::header("Cookie"));
    assert!(refused.is_err());
}

/// `token` with its last character changed: the same shape, another token.
fn spoiled(token: &str) -> String {
    let last = if token.ends_with('x') { 'y' } else { 'x' };
    format!("{}{last}", &token[..token.len() - 1])
}
