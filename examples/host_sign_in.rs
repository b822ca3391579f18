//! An axum app with its own (toy, cookie-based) sessions, letting its signed-in users
//! manage API tokens without a keygate password.
//!
//! ```sh
//! cargo run --example host_sign_in
//! ```
//!
//! - `GET /` shows a sign-in form; `POST /login` with the form `user=alice` signs in (a toy: no password) and sets the
//!   `sid` cookie (`HttpOnly; SameSite=Lax`); `POST /logout` ends the session.
//! - The management API under `/api/v1` and the token page at `/tokens` take that session
//!   ([`HostSignIn`]): a signed-in user creates, lists, rotates and revokes their tokens.
//!   State-changing requests from other sites are refused (403 `cross_site_request`), and
//!   requests without a session count against the failure limit and are audited
//!   (`auth.host`).
//! - `GET /api/v1/things` is the app's own API, protected by the tokens.
//!
//! The address comes from `KEYGATE_ADDR` (default `127.0.0.1:3105`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::request::Parts;
use keygate::accounts::MemoryAccounts;
use keygate::audit::AuditLog;
use keygate::axum::management::{HostAccount, HostError, HostSignIn, Management};
use keygate::rate_limit::{FailureLimits, Rate};
use keygate::{AuthLayer, ConfigError, Identity, MemoryStore, Permissions, Tokens};
use serde::Deserialize;
use serde_json::{Value, json};

/// The app's sessions: session id → user name. A real app keeps them in its database.
#[derive(Clone, Default)]
pub struct Sessions {
    by_id: Arc<Mutex<HashMap<String, String>>>,
}

impl Sessions {
    /// Signs `user` in; the session id to put in the `sid` cookie.
    pub fn sign_in(&self, user: &str) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        if let Ok(mut map) = self.by_id.lock() {
            map.insert(id.clone(), user.to_owned());
        }
        id
    }

    /// Ends the session `id`.
    pub fn sign_out(&self, id: &str) {
        if let Ok(mut map) = self.by_id.lock() {
            map.remove(id);
        }
    }

    /// The user of the request's `sid` cookie, if that session exists.
    fn user(&self, headers: &HeaderMap) -> Option<String> {
        let id = session_id(headers)?;
        self.by_id.lock().ok()?.get(id).cloned()
    }
}

/// The `sid` cookie's value.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("sid="))
}

/// What every user of this app may do; their tokens hold at most this.
pub const USER_PERMISSIONS: [&str; 4] =
    ["things:read", "things:write", "tokens:read", "tokens:write"];

#[async_trait]
impl HostSignIn for Sessions {
    async fn account(&self, parts: &Parts) -> Result<Option<HostAccount>, HostError> {
        let Some(user) = self.user(&parts.headers) else {
            return Ok(None);
        };
        Ok(Some(HostAccount::new(
            user,
            Permissions::parse(USER_PERMISSIONS)?,
        )))
    }
}

/// The app: login and logout, the management API and the token page on the session, and
/// the app's own token-protected API. `audit` receives the management events and the
/// decisions of the token-protected API.
///
/// # Errors
///
/// Never with these settings.
pub fn app(tokens: Tokens, sessions: Sessions, audit: AuditLog) -> Result<Router, ConfigError> {
    let failures = FailureLimits::new(Rate::per_minute(20)?);
    let management = Management::new(tokens.clone(), MemoryAccounts::new())
        .with_host_sign_in(sessions.clone())
        .with_failure_limits(failures.clone())
        .with_audit(audit.clone())
        .router();
    let things = Router::new()
        .route("/things", get(list_things).post(create_thing))
        .layer(
            AuthLayer::new(tokens)
                .read_write("things:write")
                .with_failure_limits(failures)
                .with_audit(audit),
        );
    let pages = Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .with_state(sessions);
    Ok(pages.nest("/api/v1", management.merge(things)).nest(
        "/tokens",
        keygate::ui::Page::new("/api/v1")
            .with_host_sign_in()
            .router(),
    ))
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

async fn login(State(sessions): State<Sessions>, Form(form): Form<Login>) -> Response {
    let user = form.user.trim();
    if user.is_empty() {
        return (StatusCode::BAD_REQUEST, "user required\n").into_response();
    }
    let id = sessions.sign_in(user);
    let cookie = format!("sid={id}; Path=/; HttpOnly; SameSite=Lax");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/tokens".to_owned()),
        ],
    )
        .into_response()
}

async fn logout(State(sessions): State<Sessions>, headers: HeaderMap) -> StatusCode {
    if let Some(id) = session_id(&headers) {
        sessions.sign_out(id);
    }
    StatusCode::NO_CONTENT
}

async fn list_things(id: Identity) -> Json<Value> {
    Json(json!({ "things": ["lamp", "desk"], "owner": id.owner() }))
}

async fn create_thing(id: Identity) -> (StatusCode, Json<Value>) {
    (
        StatusCode::CREATED,
        Json(json!({ "created": "chair", "owner": id.owner() })),
    )
}

/// Audit events to the log.
fn audit_log() -> AuditLog {
    AuditLog::spawn(keygate::audit::TracingSink, 1_000)
}

async fn home() -> axum::response::Html<&'static str> {
    axum::response::Html(
        "<!doctype html><title>Things</title><form method=post action=/login>\
         <label>User <input name=user></label> <button>Sign in</button></form>\
         <p><a href=/tokens>Your API tokens</a></p>",
    )
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let addr = std::env::var("KEYGATE_ADDR").unwrap_or_else(|_| "127.0.0.1:3105".into());
    let router = app(
        Tokens::new(MemoryStore::new()),
        Sessions::default(),
        audit_log(),
    )?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr}");
    println!("open http://{addr}/ to sign in, then http://{addr}/tokens");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await?;
    Ok(())
}
