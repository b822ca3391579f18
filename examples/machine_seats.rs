//! Seed 002, RapidPipeline's authentication tokens, as a keygate recipe.
//!
//! ```sh
//! cargo run --example machine_seats
//! ```
//!
//! Two types of token that are not interchangeable, each with its own management:
//!
//! - API tokens (`rpd_…`) for the API and CLI, managed at `/auth/tokens`; no limit on their
//!   number. `POST /api/v1/optimize` takes only these.
//! - Licence tokens (`lic_…`) for the integration plugins, managed at `/seats/tokens`; at
//!   most [`SEATS`] per account. `POST /licence/check` takes only these. A licence token is a
//!   seat: the first machine that uses it (header `X-Machine-Id`) holds it, any other one
//!   gets 403 `bound_elsewhere`. The owner releases the seat with
//!   `POST /seats/tokens/{id}/release`, at most once every 24 hours (409
//!   `release_too_soon`); after two weeks without use the seat is released on its own.
//!
//! Both lists show each token's status and last use; revocation (`DELETE …/tokens/{id}`) is
//! terminal and frees a slot. Sign in with Basic: the account comes from `RPD_EMAIL` /
//! `RPD_PASSWORD` (a password is generated and printed when unset); the address from
//! `KEYGATE_ADDR` (default `127.0.0.1:3102`).

use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
use keygate::axum::management::Management;
use keygate::clock::Clock;
use keygate::tokens::Maintenance;
use keygate::{AuthLayer, ConfigError, Identity, MemoryStore, Permissions, TokenKind, Tokens};
use serde_json::{Value, json};

/// The header in which an integration plugin sends its machine id.
pub const MACHINE_HEADER: &str = "x-machine-id";
/// Licence tokens (seats) per account, per the licence terms.
pub const SEATS: u32 = 2;
/// A seat unused for this long is released.
pub const SEAT_IDLE: Duration = Duration::from_secs(14 * 24 * 3600);

/// The manager of API tokens: `rpd_…`, unlimited in number, never expiring on their own.
///
/// # Errors
///
/// Never with this configuration; the builder checks it.
pub fn api_tokens(clock: impl Clock) -> Result<Tokens, ConfigError> {
    Tokens::builder(MemoryStore::new())
        .clock(clock)
        .kind(TokenKind::new("api", "rpd")?)
        .max_tokens_per_owner(None)
        .build()
}

/// The manager of licence tokens: `lic_…`, [`SEATS`] per account, each bound to one machine
/// and released after [`SEAT_IDLE`] without use.
///
/// The inactivity expiry is the licence kind's own
/// ([`TokenKind::with_inactivity_expiry`]), so one manager could hold both kinds (the test
/// `one_manager_expires_each_kind_on_its_own_clock` does). The recipe keeps a manager per
/// kind because the management API creates tokens of its manager's first kind and lists
/// all of an owner's tokens: two managers give the two separate lists RapidPipeline shows.
///
/// # Errors
///
/// Never with this configuration; the builder checks it.
pub fn licence_tokens(clock: impl Clock) -> Result<Tokens, ConfigError> {
    let licence = TokenKind::new("licence", "lic")?
        .with_binding(MACHINE_HEADER)?
        .with_max_live_per_owner(Some(SEATS));
    Tokens::builder(MemoryStore::new())
        .clock(clock)
        .kind(licence.with_inactivity_expiry(Some(SEAT_IDLE)))
        .build()
}

/// Adds an account (a Pro subscriber) that signs in with `email` and `password`.
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
            permissions: Permissions::parse(["optimize:run", "licence:use"])?,
            created_at: time::OffsetDateTime::now_utc(),
        })
        .await?;
    Ok(())
}

/// The app: both managements, the API (API tokens only) and the licence check (licence
/// tokens only).
pub fn app(api: Tokens, licences: Tokens, accounts: MemoryAccounts) -> Router {
    let optimize = Router::new()
        .route("/api/v1/optimize", post(optimize))
        .layer(AuthLayer::new(api.clone()));
    let check = Router::new()
        .route("/licence/check", post(licence_check))
        .layer(AuthLayer::new(licences.clone()));
    Router::new()
        .nest("/auth", Management::new(api, accounts.clone()).router())
        .nest("/seats", Management::new(licences, accounts).router())
        .merge(optimize)
        .merge(check)
}

/// Starts the background tasks: last-used times, purge, and the release of idle seats
/// (checked every hour).
pub fn start_maintenance(api: &Tokens, licences: &Tokens) -> [Maintenance; 2] {
    let hour = Duration::from_secs(3600);
    [
        api.spawn_maintenance(Duration::from_secs(10), hour),
        licences.spawn_maintenance(Duration::from_secs(10), hour),
    ]
}

async fn optimize(id: Identity) -> Json<Value> {
    Json(json!({ "job": "queued", "token": id.token_name() }))
}

/// The layer has checked the seat: this machine holds it (it was bound on first use).
async fn licence_check(id: Identity, headers: http::HeaderMap) -> Json<Value> {
    let machine = headers
        .get(MACHINE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    Json(json!({ "seat": "active", "token": id.token_name(), "machine": machine }))
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let email = std::env::var("RPD_EMAIL").unwrap_or_else(|_| "studio@example.com".into());
    let password = match std::env::var("RPD_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            use rand::Rng;
            let p: String = rand::rng()
                .sample_iter(rand::distr::Alphanumeric)
                .take(24)
                .map(char::from)
                .collect();
            println!("account {email}, generated password: {p}");
            p
        }
    };
    let accounts = MemoryAccounts::new();
    add_account(&accounts, &email, &password).await?;
    let api = api_tokens(keygate::clock::SystemClock)?;
    let licences = licence_tokens(keygate::clock::SystemClock)?;
    let tasks = start_maintenance(&api, &licences);

    let addr = std::env::var("KEYGATE_ADDR").unwrap_or_else(|_| "127.0.0.1:3102".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("RapidPipeline tokens on http://{addr}");
    println!("API token:     curl -u '{email}:<password>' -d 'name=CLI' http://{addr}/auth/tokens");
    println!(
        "use it:        curl -X POST -H 'Authorization: Bearer <rpd_…>' http://{addr}/api/v1/optimize"
    );
    println!(
        "licence token: curl -u '{email}:<password>' -d 'name=Blender+seat' http://{addr}/seats/tokens"
    );
    println!(
        "take the seat: curl -X POST -H 'Authorization: Bearer <lic_…>' -H 'X-Machine-Id: workstation-1' \\"
    );
    println!("                 http://{addr}/licence/check");
    println!("status:        curl -u '{email}:<password>' http://{addr}/seats/tokens");
    println!(
        "release seat:  curl -u '{email}:<password>' -X POST http://{addr}/seats/tokens/<id>/release"
    );
    println!(
        "revoke:        curl -u '{email}:<password>' -X DELETE http://{addr}/seats/tokens/<id>"
    );
    axum::serve(listener, app(api, licences, accounts))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    for task in tasks {
        task.shutdown().await;
    }
    Ok(())
}
