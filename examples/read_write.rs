//! Seed 004, Tokencraft's API tokens, as a keygate recipe.
//!
//! ```sh
//! cargo run --example read_write
//! ```
//!
//! - Tokens read `dtk_…` and go in `Authorization: Bearer`.
//! - `GET` works with any valid token; `POST`, `PATCH` and `DELETE` need the `api:write`
//!   permission, which only tokens of PRO accounts hold (a FREE account's token gets 403).
//!   A token holds its account's plan as it is now: after an upgrade to PRO the tokens
//!   already issued may write (the `dtk` kind lets the permission resolver widen them).
//! - The settings page (`/settings/tokens`, Basic sign-in) lists the tokens with their first
//!   12 characters (`hint`) and revokes them at once.
//! - An invalid token gets 401 `{"error":"Invalid API token","code":"invalid_token"}`.
//! - 100 requests a minute per token, with `RateLimit-Limit`, `RateLimit-Remaining`,
//!   `RateLimit-Reset`; the 101st gets 429.
//! - Tokens Tokencraft issued before the switch (`dtk_` + 40 hex characters, no checksum)
//!   keep working once imported by their SHA-256 ([`Tokens::import`]); new tokens have
//!   keygate's format and checksum.
//!
//! Accounts `pro@example.com` and `free@example.com` get the password from
//! `TOKENCRAFT_PASSWORD` (generated and printed when unset); the address comes from
//! `KEYGATE_ADDR` (default `127.0.0.1:3104`).

use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
use keygate::axum::management::Management;
use keygate::permissions::AccountPermissions;
use keygate::rate_limit::{Rate, RateLimits};
use keygate::token::{LegacyAlphabet, LegacyFormat};
use keygate::tokens::ImportToken;
use keygate::{
    AuthLayer, ConfigError, Identity, MemoryStore, Permissions, TokenHash, TokenId, TokenKind,
    TokenStore, Tokens,
};
use serde_json::{Value, json};

/// The permission that write methods need.
pub const WRITE: &str = "api:write";
/// Requests a minute per token.
pub const REQUESTS_PER_MINUTE: u32 = 100;

/// The token manager: `dtk_` tokens in memory. A token's permissions follow its account's
/// plan, upgrades included ([`TokenKind::with_resolver_may_widen`]).
///
/// # Errors
///
/// Never with this configuration; the builder checks it.
pub fn tokens() -> Result<Tokens, ConfigError> {
    tokens_in(MemoryStore::new())
}

/// The token manager over `store`: kind `dtk`, which also accepts Tokencraft's own
/// format, `dtk_` and exactly 40 lowercase hex characters, for imported tokens.
///
/// # Errors
///
/// Never with this configuration; the builder checks it.
pub fn tokens_in(store: impl TokenStore) -> Result<Tokens, ConfigError> {
    let dtk = TokenKind::new("dtk", "dtk")?
        .with_resolver_may_widen()
        .with_legacy_format(LegacyFormat {
            len: 40,
            alphabet: LegacyAlphabet::Hex,
        })?;
    Tokens::builder(store).kind(dtk).build()
}

/// Imports a token Tokencraft issued before the switch, by the SHA-256 (hex) it kept, for
/// `owner`; its holder goes on using it. The token reads what the owner's plan allows.
///
/// # Errors
///
/// An invalid hash, a taken name, a hash already imported, or a store failure.
pub async fn import_legacy(
    tokens: &Tokens,
    owner: &str,
    name: &str,
    sha256_hex: &str,
    pro: bool,
) -> Result<TokenId, Box<dyn std::error::Error>> {
    let hash = TokenHash::from_hex(sha256_hex)?;
    let permissions = if pro {
        Permissions::parse(["api:read", WRITE])?
    } else {
        Permissions::parse(["api:read"])?
    };
    let record = tokens
        .import(
            ImportToken::new(owner, name, hash)
                .permissions(permissions)
                .created_by("tokencraft-migration"),
        )
        .await?;
    Ok(record.id)
}

/// Adds an account on the PRO plan (its tokens may write) or the FREE plan (read only).
///
/// # Errors
///
/// When the password cannot be hashed or the account store fails.
pub async fn add_account(
    accounts: &MemoryAccounts,
    email: &str,
    password: &str,
    pro: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let permissions = if pro {
        Permissions::parse(["api:read", WRITE])?
    } else {
        Permissions::parse(["api:read"])?
    };
    accounts
        .put_account(Account {
            email: email.to_owned(),
            password_hash: hash_password(password).map_err(|e| e.to_string())?,
            permissions,
            created_at: time::OffsetDateTime::now_utc(),
        })
        .await?;
    Ok(())
}

/// The app: the API under `/api/v1` and the settings page's token routes under `/settings`.
///
/// # Errors
///
/// Never with these settings.
pub fn app(tokens: Tokens, accounts: MemoryAccounts) -> Result<Router, ConfigError> {
    // The plan is read on every request (the accounts are in memory: no cache needed).
    let plan = AccountPermissions::new(accounts.clone()).with_ttl(Duration::ZERO);
    let auth = AuthLayer::new(tokens.clone())
        .read_write(WRITE)
        .with_rate_limits(RateLimits::new(Rate::per_minute(REQUESTS_PER_MINUTE)?))
        .with_permission_resolver(plan);
    let api = Router::new()
        .route("/workspaces", get(list_workspaces).post(create_workspace))
        .route(
            "/workspaces/{id}",
            get(get_workspace)
                .patch(update_workspace)
                .delete(delete_workspace),
        )
        .route("/tokensets/{id}/modes/{mode}/export", get(export_tokenset))
        .layer(auth);
    Ok(Router::new()
        .nest("/api/v1", api)
        .nest("/settings", Management::new(tokens, accounts).router()))
}

async fn list_workspaces(id: Identity) -> Json<Value> {
    Json(json!([{ "id": "ws_1", "name": "Design system", "owner": id.owner() }]))
}

async fn get_workspace(Path(ws): Path<String>) -> Json<Value> {
    Json(json!({ "id": ws, "name": "Design system" }))
}

async fn create_workspace() -> (StatusCode, Json<Value>) {
    (
        StatusCode::CREATED,
        Json(json!({ "id": "ws_2", "name": "New workspace" })),
    )
}

async fn update_workspace(Path(ws): Path<String>) -> Json<Value> {
    Json(json!({ "id": ws, "updated": true }))
}

async fn delete_workspace() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn export_tokenset(Path((set, mode)): Path<(String, String)>) -> String {
    format!("/* tokenset {set}, mode {mode} */\n:root {{ --color-primary: #0055ff; }}\n")
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let password = match std::env::var("TOKENCRAFT_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            use rand::Rng;
            let p: String = rand::rng()
                .sample_iter(rand::distr::Alphanumeric)
                .take(24)
                .map(char::from)
                .collect();
            println!("accounts pro@example.com and free@example.com, generated password: {p}");
            p
        }
    };
    let accounts = MemoryAccounts::new();
    add_account(&accounts, "pro@example.com", &password, true).await?;
    add_account(&accounts, "free@example.com", &password, false).await?;
    let tokens = tokens()?;
    let maintenance = tokens.spawn_maintenance(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(3600),
    );

    let addr = std::env::var("KEYGATE_ADDR").unwrap_or_else(|_| "127.0.0.1:3104".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("Tokencraft API tokens on http://{addr}");
    println!(
        "new token: curl -u 'pro@example.com:<password>' -H 'Content-Type: application/json' \\"
    );
    println!("             -d '{{\"name\":\"CI sync\"}}' http://{addr}/settings/tokens");
    println!(
        "read:      curl -i -H 'Authorization: Bearer <token>' http://{addr}/api/v1/workspaces"
    );
    println!(
        "write:     curl -i -X POST -H 'Authorization: Bearer <token>' http://{addr}/api/v1/workspaces"
    );
    println!("list:      curl -u 'pro@example.com:<password>' http://{addr}/settings/tokens");
    println!(
        "revoke:    curl -u 'pro@example.com:<password>' -X DELETE http://{addr}/settings/tokens/<id>"
    );
    axum::serve(listener, app(tokens, accounts)?)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    maintenance.shutdown().await;
    Ok(())
}
