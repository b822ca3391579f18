//! Seed 001, Apache Iggy's personal access tokens (PATs), as a keygate recipe.
//!
//! ```sh
//! cargo run --example personal_tokens
//! ```
//!
//! - `POST /api/v1/tokens` (Basic: the user's email and password) with JSON
//!   `{"name": "...", "expires_in": <seconds>}` creates a PAT; the name is unique per user
//!   (409 `name_taken`), the expiry is optional and comes back as the absolute `expires_at`;
//!   a user holds at most 100 live PATs (409 `token_limit`). Iggy's own create body,
//!   `{"name": "...", "expiry": <seconds>}` (`CreatePersonalAccessToken`), is accepted too:
//!   `expiry` is read as `expires_in` ([`iggy_expiry`]); `"expiry": null` means no expiry.
//! - `GET /api/v1/tokens` lists them; `DELETE /api/v1/tokens/{id}` deletes one.
//! - `POST /personal-access-tokens/login` with `{"token": "..."}` logs in with a PAT and
//!   returns the user.
//! - A background task deletes expired tokens every [`CLEANER_INTERVAL`] (Iggy's
//!   `[personal_access_token.cleaner] interval = 60`).
//!
//! The user comes from `IGGY_EMAIL` / `IGGY_PASSWORD` (a password is generated and printed
//! when unset); the address from `KEYGATE_ADDR` (default `127.0.0.1:3101`).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
use keygate::axum::management::{DEFAULT_BODY_LIMIT, Management};
use keygate::clock::Clock;
use keygate::tokens::Maintenance;
use keygate::{MemoryStore, Permissions, Rejection, Tokens};
use serde::Deserialize;
use serde_json::{Value, json};

/// How often expired tokens are deleted.
pub const CLEANER_INTERVAL: Duration = Duration::from_secs(60);
/// At most this many live PATs per user.
pub const MAX_TOKENS_PER_USER: u32 = 100;

/// The token manager on `clock`: `pat_` tokens in memory, at most 100 live ones per user.
///
/// # Errors
///
/// Never with this configuration; the builder checks it.
pub fn tokens(clock: impl Clock) -> Result<Tokens, keygate::ConfigError> {
    Tokens::builder(MemoryStore::new())
        .clock(clock)
        .max_tokens_per_owner(Some(MAX_TOKENS_PER_USER))
        .build()
}

/// Adds a user that signs in with `email` and `password`.
///
/// # Errors
///
/// When the password cannot be hashed or the account store fails.
pub async fn add_user(
    accounts: &MemoryAccounts,
    email: &str,
    password: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    accounts
        .put_account(Account {
            email: email.to_owned(),
            password_hash: hash_password(password).map_err(|e| e.to_string())?,
            permissions: Permissions::parse(["streams:read", "streams:write"])?,
            created_at: time::OffsetDateTime::now_utc(),
        })
        .await?;
    Ok(())
}

/// The app: PAT management under `/api/v1` and the PAT login.
pub fn app(tokens: Tokens, accounts: MemoryAccounts) -> Router {
    let login = Router::new()
        .route("/personal-access-tokens/login", post(login_with_pat))
        .with_state(tokens.clone());
    let management = Management::new(tokens, accounts)
        .router()
        .layer(axum::middleware::map_request(iggy_expiry));
    Router::new().nest("/api/v1", management).merge(login)
}

/// Reads Iggy's `CreatePersonalAccessToken` body: a JSON create request with `expiry`
/// (seconds from creation, or `null` for none) and no `expires_in` gets `expires_in` instead,
/// so the management API checks it as its own (a positive number of seconds, else 400).
/// Every other request passes untouched; a body over the management API's limit is refused
/// with its 413.
///
/// # Errors
///
/// 413 `payload_too_large` for a body over [`DEFAULT_BODY_LIMIT`].
pub async fn iggy_expiry(req: Request) -> Result<Request, Response> {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if req.method() != Method::POST || !req.uri().path().ends_with("/tokens") || !json {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, DEFAULT_BODY_LIMIT)
        .await
        .map_err(|_| {
            let error = format!("Request body too large (limit: {DEFAULT_BODY_LIMIT} bytes)");
            let body = json!({ "error": error, "code": "payload_too_large" });
            (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response()
        })?;
    let bytes = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut m)) if m.contains_key("expiry") && !m.contains_key("expires_in") => {
            match m.remove("expiry") {
                Some(Value::Null) | None => {}
                Some(seconds) => {
                    m.insert("expires_in".to_owned(), seconds);
                }
            }
            Value::Object(m).to_string().into()
        }
        // Anything else (no `expiry`, both fields, not JSON): the management API judges it.
        _ => bytes,
    };
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Starts the cleaner: flushes last-used times and deletes expired tokens every
/// [`CLEANER_INTERVAL`].
pub fn start_cleaner(tokens: &Tokens) -> Maintenance {
    tokens.spawn_maintenance(Duration::from_secs(10), CLEANER_INTERVAL)
}

/// `LoginWithPersonalAccessToken`.
#[derive(Deserialize)]
struct LoginWithPat {
    token: String,
}

async fn login_with_pat(
    State(tokens): State<Tokens>,
    Json(login): Json<LoginWithPat>,
) -> Result<Json<Value>, Rejection> {
    let id = tokens.authenticate(&login.token).await?;
    Ok(Json(
        json!({ "user_id": id.owner(), "token_name": id.token_name() }),
    ))
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let email = std::env::var("IGGY_EMAIL").unwrap_or_else(|_| "iggy@example.com".into());
    let password = match std::env::var("IGGY_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            use rand::Rng;
            let p: String = rand::rng()
                .sample_iter(rand::distr::Alphanumeric)
                .take(24)
                .map(char::from)
                .collect();
            println!("user {email}, generated password: {p}");
            p
        }
    };
    let accounts = MemoryAccounts::new();
    add_user(&accounts, &email, &password).await?;
    let tokens = tokens(keygate::clock::SystemClock)?;
    let cleaner = start_cleaner(&tokens);

    let addr = std::env::var("KEYGATE_ADDR").unwrap_or_else(|_| "127.0.0.1:3101".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("Iggy personal access tokens on http://{addr}");
    println!("create: curl -u '{email}:<password>' -H 'Content-Type: application/json' \\");
    println!("          -d '{{\"name\":\"ci\",\"expiry\":3600}}' http://{addr}/api/v1/tokens");
    println!("list:   curl -u '{email}:<password>' http://{addr}/api/v1/tokens");
    println!("login:  curl -H 'Content-Type: application/json' -d '{{\"token\":\"<token>\"}}' \\");
    println!("          http://{addr}/personal-access-tokens/login");
    println!("delete: curl -u '{email}:<password>' -X DELETE http://{addr}/api/v1/tokens/<id>");
    axum::serve(listener, app(tokens, accounts))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    cleaner.shutdown().await;
    Ok(())
}
