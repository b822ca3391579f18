//! Seed 003, Rack Gateway's API tokens, as a keygate recipe.
//!
//! ```sh
//! cargo run --example roles_and_audit
//! ```
//!
//! - Tokens read `rgw_…`; the store keeps only their SHA-256.
//! - Roles `viewer`, `ops`, `deployer`, `cicd`, `admin` ([`Roles::rack_gateway`]) are
//!   shortcuts: each token stores the explicit permissions of its role.
//! - Token management is for admins: an admin signs in with Basic at `/api/v1/tokens` to get
//!   an admin token, then creates, lists and deletes anyone's tokens at
//!   `/api/v1/admin/users/{owner}/api-tokens` with it (`tokens:write`, held only by
//!   `admin`). Each token records `created_by`, `created_at` and `last_used_at`.
//! - The rack routes (`/apps`, `/apps/{app}/builds`, …) need the permission of the action;
//!   every use is written to the audit log (JSON Lines at `KEYGATE_AUDIT_LOG`, default
//!   `rack-gateway-audit.jsonl`) with the RBAC decision.
//! - The token is read from the `Authorization` header only, never from a cookie.
//! - Tokens Rack Gateway issued before the switch (`rgw_` + 43 base64url characters, no
//!   checksum) keep working: an admin imports their SHA-256 with
//!   `POST /api/v1/admin/tokens/import` (`tokens:admin`, which `admin`'s `*` holds); new
//!   tokens have keygate's format and checksum.
//! - A token may carry an IP allow-list (`"allowed_ips": ["203.0.113.0/24"]` at creation):
//!   from any other address it gets 403 `ip_not_allowed`.
//!
//! The admin comes from `RGW_ADMIN_EMAIL` / `RGW_ADMIN_PASSWORD` (a password is generated and
//! printed when unset); the address from `KEYGATE_ADDR` (default `127.0.0.1:3103`).

use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use http::StatusCode;
use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
use keygate::audit::{AuditLog, JsonLinesSink};
use keygate::axum::management::Management;
use keygate::token::{LegacyAlphabet, LegacyFormat};
use keygate::{
    AuthLayer, ConfigError, Identity, MemoryStore, NewToken, Roles, TokenId, TokenKind,
    TokenRecord, TokenStore, Tokens,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// The token manager: `rgw_` tokens in memory with Rack Gateway's roles.
///
/// # Errors
///
/// Never with this configuration; the builder checks it.
pub fn tokens() -> Result<Tokens, ConfigError> {
    tokens_in(MemoryStore::new())
}

/// The token manager over `store`: kind `rgw`, which also accepts Rack Gateway's own
/// format (`rgw_` and 43 base64url characters, 32 random bytes) for imported tokens.
///
/// # Errors
///
/// Never with this configuration; the builder checks it.
pub fn tokens_in(store: impl TokenStore) -> Result<Tokens, ConfigError> {
    let rgw = TokenKind::new("rgw", "rgw")?.with_legacy_format(LegacyFormat {
        len: 43,
        alphabet: LegacyAlphabet::Base64Url,
    })?;
    Tokens::builder(store)
        .kind(rgw)
        .roles(Roles::deployment_platform())
        .build()
}

/// Adds a user who signs in with `email` and `password` and holds the permissions of `role`.
///
/// # Errors
///
/// An unknown role, a password that cannot be hashed, or a failing account store.
pub async fn add_user(
    accounts: &MemoryAccounts,
    email: &str,
    password: &str,
    role: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let permissions = Roles::deployment_platform()
        .get(role)
        .cloned()
        .ok_or_else(|| format!("unknown role {role}"))?;
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

/// The app: sign-in management, the admin token API and the rack routes, all audited.
///
/// # Errors
///
/// Never with these permission names.
pub fn app(
    tokens: Tokens,
    accounts: MemoryAccounts,
    audit: AuditLog,
) -> Result<Router, ConfigError> {
    let auth = AuthLayer::new(tokens.clone())
        .accept_kinds(["rgw"])?
        .with_audit(audit);
    let needs = |permission: &'static str| auth.clone().require(permission);
    let admin = Router::new()
        .route(
            "/api/v1/admin/users/{owner}/api-tokens",
            post(create_token).get(list_tokens),
        )
        .route(
            "/api/v1/admin/users/{owner}/api-tokens/{id}",
            delete(delete_token),
        )
        .route_layer(needs("tokens:write"))
        .with_state(tokens.clone());
    let rack = Router::new()
        .route("/apps", get(list_apps).route_layer(needs("apps:read")))
        .route(
            "/apps/{app}/builds",
            post(create_build).route_layer(needs("builds:create")),
        )
        .route(
            "/apps/{app}/processes/{process}/restart",
            post(restart).route_layer(needs("processes:restart")),
        )
        .route(
            "/apps/{app}/env",
            get(read_env).route_layer(needs("env:read")),
        );
    Ok(Router::new()
        .nest("/api/v1", Management::new(tokens, accounts).router())
        .merge(admin)
        .merge(rack))
}

/// `POST /api/v1/admin/users/{owner}/api-tokens`.
#[derive(Deserialize)]
struct CreateToken {
    name: String,
    role: String,
    /// Networks the token may be used from (CIDR); left out: any address.
    #[serde(default)]
    allowed_ips: Vec<ipnet::IpNet>,
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn view(r: &TokenRecord) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "role": r.extras().role,
        "permissions": r.permissions,
        "hint": r.hint,
        "allowed_ips": r.extras().allowed_ips,
        "created_by": r.created_by,
        "created_at": rfc3339(r.created_at),
        "last_used_at": r.last_used_at.map(rfc3339),
    })
}

fn failed(e: keygate::TokenError) -> (StatusCode, Json<Value>) {
    let status = match e {
        keygate::TokenError::NotFound => StatusCode::NOT_FOUND,
        keygate::TokenError::NameTaken | keygate::TokenError::LimitReached => StatusCode::CONFLICT,
        keygate::TokenError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, Json(json!({ "error": e.to_string() })))
}

async fn create_token(
    State(tokens): State<Tokens>,
    admin: Identity,
    Path(owner): Path<String>,
    Json(req): Json<CreateToken>,
) -> Result<(StatusCode, Json<Value>), (StatusCode, Json<Value>)> {
    let new = NewToken::new(owner, req.name)
        .role(req.role)
        .allowed_ips(req.allowed_ips)
        .created_by(admin.owner());
    let issued = tokens.issue(new).await.map_err(failed)?;
    let mut body = view(&issued.record);
    body["token"] = json!(issued.token.expose_secret());
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list_tokens(
    State(tokens): State<Tokens>,
    Path(owner): Path<String>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let now = tokens.now();
    let records = tokens.list(&owner).await.map_err(failed)?;
    Ok(Json(
        records
            .iter()
            .filter(|r| r.is_live_at(now))
            .map(view)
            .collect(),
    ))
}

async fn delete_token(
    State(tokens): State<Tokens>,
    Path((owner, id)): Path<(String, String)>,
) -> Result<StatusCode, (StatusCode, Json<Value>)> {
    let id: TokenId = id
        .parse()
        .map_err(|_| failed(keygate::TokenError::NotFound))?;
    tokens.revoke(&owner, id).await.map_err(failed)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_apps() -> Json<Value> {
    Json(json!(["myapp"]))
}

async fn create_build(id: Identity, Path(app): Path<String>) -> Json<Value> {
    Json(json!({ "app": app, "build": "B1", "by": id.token_name() }))
}

async fn restart(Path((app, process)): Path<(String, String)>) -> Json<Value> {
    Json(json!({ "app": app, "restarted": process }))
}

async fn read_env() -> Json<Value> {
    Json(json!({ "RAILS_ENV": "production" }))
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let email = std::env::var("RGW_ADMIN_EMAIL").unwrap_or_else(|_| "admin@example.com".into());
    let password = match std::env::var("RGW_ADMIN_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            use rand::Rng;
            let p: String = rand::rng()
                .sample_iter(rand::distr::Alphanumeric)
                .take(24)
                .map(char::from)
                .collect();
            println!("admin {email}, generated password: {p}");
            p
        }
    };
    let accounts = MemoryAccounts::new();
    add_user(&accounts, &email, &password, "admin").await?;
    let tokens = tokens()?;
    let audit_path =
        std::env::var("KEYGATE_AUDIT_LOG").unwrap_or_else(|_| "rack-gateway-audit.jsonl".into());
    let audit = AuditLog::spawn(JsonLinesSink::open(&audit_path)?, 10_000);
    let maintenance = tokens.spawn_maintenance(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(3600),
    );

    let addr = std::env::var("KEYGATE_ADDR").unwrap_or_else(|_| "127.0.0.1:3103".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("Rack Gateway API tokens on http://{addr}, audit log in {audit_path}");
    println!("admin token: curl -u '{email}:<password>' -H 'Content-Type: application/json' \\");
    println!(
        "               -d '{{\"name\":\"admin-automation\",\"role\":\"admin\"}}' http://{addr}/api/v1/tokens"
    );
    println!(
        "CI token:    curl -H 'Authorization: Bearer <admin token>' -H 'Content-Type: application/json' \\"
    );
    println!("               -d '{{\"name\":\"GitHub Actions\",\"role\":\"cicd\"}}' \\");
    println!("               http://{addr}/api/v1/admin/users/ci@example.com/api-tokens");
    println!(
        "deploy:      curl -X POST -H 'Authorization: Bearer <CI token>' http://{addr}/apps/myapp/builds"
    );
    let app = app(tokens, accounts, audit.clone())?;
    // The peer address is what IP allow-lists are checked against.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    maintenance.shutdown().await;
    audit.shutdown().await;
    Ok(())
}
