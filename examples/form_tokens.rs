//! Seed 000, Recurse Center's personal access tokens, as a keygate recipe.
//!
//! ```sh
//! cargo run --example form_tokens
//! ```
//!
//! - `POST /api/v1/tokens` with Basic authentication (email and password) and a form body
//!   `description=…` creates a token and shows it once; a bearer token cannot create one.
//! - `GET /api/v1/tokens` lists `id`, `description` and `last_used_at` (never the token).
//! - `DELETE /api/v1/tokens/{id}` deletes one; `POST /api/v1/tokens/{id}/rotate` replaces it.
//! - `GET /api/v1/profiles/me` answers to `Authorization: Bearer <token>`.
//!
//! The account comes from `RC_EMAIL` / `RC_PASSWORD` (a password is generated and printed
//! when unset); the address from `KEYGATE_ADDR` (default `127.0.0.1:3100`).

use axum::routing::get;
use axum::{Json, Router};
use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
use keygate::axum::management::Management;
use keygate::{AuthLayer, Identity, MemoryStore, Permissions, Tokens};
use serde_json::{Value, json};

/// What an account may do, and so what the tokens it creates may do.
pub const ACCOUNT_PERMISSIONS: [&str; 1] = ["profiles:read"];

/// The token manager: `pat_` tokens in memory, at most 100 live tokens per account.
pub fn tokens() -> Tokens {
    Tokens::new(MemoryStore::new())
}

/// Adds an account that signs in with `email` and `password` (kept as an argon2 hash).
///
/// # Errors
///
/// When the password cannot be hashed or the account store fails.
pub async fn add_account(
    accounts: &MemoryAccounts,
    email: &str,
    password: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    accounts
        .put_account(Account {
            email: email.to_owned(),
            password_hash: hash_password(password).map_err(|e| e.to_string())?,
            permissions: Permissions::parse(ACCOUNT_PERMISSIONS)?,
            created_at: time::OffsetDateTime::now_utc(),
        })
        .await?;
    Ok(())
}

/// The app: the management API and the profile route, both under `/api/v1`.
pub fn app(tokens: Tokens, accounts: MemoryAccounts) -> Router {
    let profile = Router::new()
        .route("/profiles/me", get(my_profile))
        .layer(AuthLayer::new(tokens.clone()));
    let api = Management::new(tokens, accounts)
        .with_server_url("/api/v1")
        .router()
        .merge(profile);
    Router::new().nest("/api/v1", api)
}

async fn my_profile(id: Identity) -> Json<Value> {
    Json(json!({ "email": id.owner(), "authenticated_with": id.token_name() }))
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let email = std::env::var("RC_EMAIL").unwrap_or_else(|_| "you@example.com".into());
    let password = match std::env::var("RC_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            let p = generated_password();
            println!("account {email}, generated password: {p}");
            p
        }
    };
    let accounts = MemoryAccounts::new();
    add_account(&accounts, &email, &password).await?;
    let tokens = tokens();
    let maintenance = tokens.spawn_maintenance(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(3600),
    );

    let addr = std::env::var("KEYGATE_ADDR").unwrap_or_else(|_| "127.0.0.1:3100".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("Recurse Center tokens on http://{addr}");
    println!("create (Basic only):");
    println!(
        "  curl -u '{email}:<password>' -d 'description=My+automation+script' http://{addr}/api/v1/tokens"
    );
    println!("use:    curl -H 'Authorization: Bearer <token>' http://{addr}/api/v1/profiles/me");
    println!("list:   curl -u '{email}:<password>' http://{addr}/api/v1/tokens");
    println!("delete: curl -u '{email}:<password>' -X DELETE http://{addr}/api/v1/tokens/<id>");
    axum::serve(listener, app(tokens, accounts))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    maintenance.shutdown().await;
    Ok(())
}

#[allow(dead_code)]
fn generated_password() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}
