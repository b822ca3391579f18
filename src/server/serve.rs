//! Listening: [`Server`], [`serve`] and the signal it stops on.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpListener;
use zeroize::Zeroizing;

use super::db::Database;
use super::listen::{self, HEADER_READ_TIMEOUT};
use super::retention::spawn_audit_retention;
use super::{AUDIT_PURGE_EVERY, App, BoxError, Config, LogFormat, build_app};
#[cfg(unix)]
use crate::audit::JsonLinesSink;
#[cfg(unix)]
use std::sync::Arc;

/// The file a generated admin password is written to in [`LogFormat::Json`], next to the
/// SQLite file (in the working directory with PostgreSQL).
pub const PASSWORD_FILE: &str = "keygate-admin-password";

/// The reference server, bound and announced, not yet serving: [`Server::bind`], then
/// [`Server::run_until`]. [`serve`] does both, stopping on [`shutdown_signal`].
///
/// ```no_run
/// # async fn run() -> Result<(), keygate::server::BoxError> {
/// use keygate::server::{self, Config, Server};
///
/// let config = Config::from_env()?;
/// server::init_logging(config.log_format)?;
/// // First: a signal that comes while the server starts is kept.
/// let signal = server::shutdown_signal();
/// let server = Server::bind(&config).await?;
/// println!("listening on {}", server.local_addr());
/// server.run_until(signal).await?;
/// # Ok(())
/// # }
/// ```
pub struct Server {
    app: App,
    listener: TcpListener,
    addr: SocketAddr,
    metrics: Option<(TcpListener, SocketAddr)>,
    drain_timeout: Duration,
    audit_retention: Option<Duration>,
    header_timeout: Duration,
}

/// The longest each last write on the way out may take: the last-used times, then the
/// queued audit events.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("metrics_addr", &self.metrics_addr())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Builds the app of `config` ([`build_app`]) and binds it: [`bind_app`](Self::bind_app).
    ///
    /// # Errors
    ///
    /// [`build_app`]'s errors, and [`bind_app`](Self::bind_app)'s.
    pub async fn bind(config: &Config) -> Result<Self, BoxError> {
        let app = build_app(config).await?;
        Self::bind_app(config, app).await
    }

    /// Listens on `config.addr` for `app` (built by [`build_app`] or
    /// [`assemble`](super::assemble), possibly with routes of your own added), and on
    /// `config.metrics_addr` for `GET /metrics` alone when it is set (and metrics are on),
    /// and announces it.
    ///
    /// In [`LogFormat::Text`] the announcement is printed for people: the address, the
    /// database (its password as `***`), the admin password when this start generated it
    /// (the only time it is shown) and a few commands to try. In [`LogFormat::Json`] it is
    /// log events (`address`, `database`, the audit file); a generated password is never
    /// logged there: it is written to [`PASSWORD_FILE`], created `0600` next to the SQLite
    /// file (in the working directory with PostgreSQL), and only that path is logged.
    ///
    /// # Errors
    ///
    /// An address that cannot be bound, or a password file that cannot be written.
    pub async fn bind_app(config: &Config, mut app: App) -> Result<Self, BoxError> {
        let listener = TcpListener::bind(&config.addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
        let addr = listener.local_addr()?;
        let metrics = match (&config.metrics_addr, &app.metrics) {
            (Some(at), Some(_)) => {
                let l = TcpListener::bind(at)
                    .await
                    .map_err(|e| format!("cannot listen for metrics on {at}: {e}"))?;
                let a = l.local_addr()?;
                Some((l, a))
            }
            _ => None,
        };
        let metrics_addr = metrics.as_ref().map(|(_, a)| *a);
        let password = app.generated_password.take();
        match config.log_format {
            LogFormat::Json => announce_json(config, addr, metrics_addr, password)?,
            LogFormat::Text => announce_text(config, addr, metrics_addr, password),
        }
        Ok(Self {
            app,
            listener,
            addr,
            metrics,
            drain_timeout: config.drain_timeout,
            audit_retention: config.audit_retention,
            header_timeout: HEADER_READ_TIMEOUT,
        })
    }

    /// How long a client may take to send a request's head (its request line and headers),
    /// counted from when the server starts waiting for it, an idle kept-alive connection
    /// included; past it the connection is closed (default [`HEADER_READ_TIMEOUT`], 30 s).
    /// Bounds what slow or silent clients (slowloris) can hold, on the metrics listener too.
    #[must_use]
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// The address the server listens on (useful with port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address `GET /metrics` is served on when it has a listener of its own
    /// (`metrics_addr`).
    #[must_use]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, a)| *a)
    }

    /// Serves until `signal` resolves. Meanwhile it writes last-used times every 10 s,
    /// purges ended tokens every hour, deletes the audit events older than
    /// `config.audit_retention` (`KEYGATE_AUDIT_RETENTION`) now and every hour, and on Unix
    /// reopens the JSON Lines audit file on SIGHUP (for logrotate's `create` mode).
    ///
    /// When `signal` resolves it stops taking connections and lets the requests
    /// in flight finish, for at most `config.drain_timeout` (`KEYGATE_DRAIN_TIMEOUT`, 30 s);
    /// past it, stops anyway (the requests still running are cut off when the runtime
    /// ends). Either way it then writes the last batch of last-used times and every queued
    /// audit event, each within [`FLUSH_TIMEOUT`], and returns.
    ///
    /// # Errors
    ///
    /// A failure of the listener.
    pub async fn run_until<F>(self, signal: F) -> Result<(), BoxError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Self {
            app,
            listener,
            metrics,
            drain_timeout,
            audit_retention,
            header_timeout,
            ..
        } = self;
        let maintenance = app
            .tokens
            .spawn_maintenance(Duration::from_secs(10), Duration::from_secs(3600));
        let mut chores = Vec::new();
        if let (Some(store), Some(keep)) = (app.audit_purge.clone(), audit_retention) {
            chores.push(spawn_audit_retention(store, keep, AUDIT_PURGE_EVERY));
        }
        #[cfg(unix)]
        if let Some(file) = app.audit_file.clone() {
            chores.push(reopen_on_hangup(file)?);
        }
        let (draining, drain_started) = tokio::sync::watch::channel(false);
        let stopping = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            // An error: the sender is gone with the server; nothing is left to stop.
            let _ = rx.wait_for(|started| *started).await;
        };
        let metrics_task = match (metrics, app.metrics.clone()) {
            (Some((l, _)), Some(handle)) => {
                let signal = stopping(drain_started.clone());
                Some(tokio::spawn(listen::serve(
                    l,
                    super::app::metrics_router(handle),
                    header_timeout,
                    signal,
                )))
            }
            _ => None,
        };
        let graceful = listen::serve(listener, app.router, header_timeout, async move {
            signal.await;
            let _ = draining.send(true);
        });
        let drain_signal = stopping(drain_started);
        let deadline = async move {
            drain_signal.await;
            tracing::info!(
                drain_timeout_s = drain_timeout.as_secs_f64(),
                "no longer accepting connections; letting the requests in flight finish"
            );
            tokio::time::sleep(drain_timeout).await;
        };
        tokio::select! {
            () = graceful => {}
            () = deadline => tracing::warn!(
                drain_timeout_s = drain_timeout.as_secs_f64(),
                "requests still in flight after the drain timeout; stopping anyway"
            ),
        }
        chores.extend(metrics_task);
        for task in chores {
            task.abort();
        }
        // Writes the last batch of last-used times, then every queued audit event.
        if tokio::time::timeout(FLUSH_TIMEOUT, maintenance.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("the last last-used times were not written in time");
        }
        if tokio::time::timeout(FLUSH_TIMEOUT, app.audit.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("some queued audit events were not written in time; they are lost");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Runs the server of `config` until [`shutdown_signal`]: [`Server::bind`], then
/// [`Server::run_until`].
///
/// # Errors
///
/// [`build_app`]'s errors, an address that cannot be bound, a password file that cannot be
/// written, or a failure of the listener.
pub async fn serve(config: &Config) -> Result<(), BoxError> {
    // Before anything else: a SIGTERM while the database opens, or right after the address
    // is announced, must stop the server gracefully, not kill it.
    let signal = shutdown_signal();
    Server::bind(config).await?.run_until(signal).await
}

/// The announcement for people: where, the generated password, commands to try.
fn announce_text(
    config: &Config,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    password: Option<Zeroizing<String>>,
) {
    let base = format!("http://{addr}");
    let email = &config.admin_email;
    println!(
        "keygate reference server on {base} (database: {})",
        config.describe_db()
    );
    if let Some(line) = pepper_line(config) {
        println!("{line}");
    }
    if let Some(p) = &password {
        println!();
        println!(
            "Generated password for {email} (shown once, store it now): {}",
            p.as_str()
        );
    }
    println!();
    let prefix = config.kinds.first().map_or("pat", |k| k.prefix());
    // The demo API is only shown when it is mounted; otherwise the rate-limited example
    // is a management route every server has.
    let limited = if config.demo { "apps" } else { "me" };
    let roles = &config.roles;
    let role = ["cicd"]
        .into_iter()
        .find(|r| roles.get(r).is_some())
        .or_else(|| roles.names().next())
        .map_or_else(String::new, |r| format!("\"role\":\"{r}\","));
    println!("Try it (curl asks for the password):");
    println!("  curl -u {email} -d 'description=My automation script' {base}/api/v1/tokens");
    println!("  export TOKEN={prefix}_...   # the \"token\" of the answer");
    println!("  curl -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/me");
    println!("  curl -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/tokens");
    if config.demo {
        println!("  curl -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/apps   # the demo API");
    }
    println!(
        "  curl -u {email} -H 'Content-Type: application/json' -d '{{\"name\":\"ci\",{role}\"expires_in\":86400}}' {base}/api/v1/tokens"
    );
    println!("  curl -u {email} -X POST -d 'grace_seconds=60' {base}/api/v1/tokens/<id>/rotate");
    println!("  curl -u {email} -X DELETE {base}/api/v1/tokens/<id>");
    println!(
        "  curl -i -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/{limited}   # RateLimit-* headers; 429 past {} a minute",
        config.rate_limit
    );
    println!("  curl -u {email} '{base}/api/v1/audit?limit=10'");
    println!("  curl {base}/api/v1/openapi.json");
    match metrics_addr {
        Some(at) => println!("  curl http://{at}/metrics   # metrics, on their own address"),
        None if config.metrics => println!("  curl {base}/metrics"),
        None => {}
    }
    println!("  open {base}/tokens   # the token page");
    if let Some(path) = &config.audit_log {
        println!(
            "Audit events: {} (JSON Lines) and the database",
            path.display()
        );
    }
    println!();
}

/// The banner's line on the pepper (never the pepper): whether one is set, how many
/// previous ones, whether unpeppered tokens are accepted.
fn pepper_line(config: &Config) -> Option<String> {
    config.pepper.as_ref()?;
    Some(format!(
        "Token digests: HMAC-SHA256 under the pepper ({} previous; tokens stored before it {})",
        config.previous_peppers.len(),
        if config.allow_unpeppered {
            "accepted and re-hashed on use"
        } else {
            "refused"
        }
    ))
}

/// The announcement as log events; a generated password goes to a file, never a line.
fn announce_json(
    config: &Config,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    password: Option<Zeroizing<String>>,
) -> Result<(), BoxError> {
    tracing::info!(
        address = %format!("http://{addr}"),
        database = %config.describe_db(),
        "keygate reference server listening"
    );
    if config.pepper.is_some() {
        tracing::info!(
            previous_peppers = config.previous_peppers.len(),
            allow_unpeppered = config.allow_unpeppered,
            "token digests are HMAC-SHA256 under the pepper"
        );
    }
    if let Some(at) = metrics_addr {
        tracing::info!(metrics_address = %format!("http://{at}/metrics"), "metrics listening");
    }
    if let Some(password) = password {
        let path = password_file(config);
        write_secret(&path, &password).map_err(|error| {
            format!(
                "cannot write the generated admin password to {}: {error}; set \
                 KEYGATE_ADMIN_PASSWORD, or reset it with the keygate command-line tool",
                path.display()
            )
        })?;
        tracing::info!(
            admin = %config.admin_email,
            password_file = %path.display(),
            "generated admin password written to this file (mode 0600): read it, then delete it"
        );
    }
    if let Some(path) = &config.audit_log {
        tracing::info!(audit_log = %path.display(), "audit events go to this file (JSON Lines) and the database");
    }
    Ok(())
}

/// Where [`PASSWORD_FILE`] goes: next to the SQLite file, else in the working directory.
fn password_file(config: &Config) -> PathBuf {
    let dir = match config.database() {
        Ok(Database::Sqlite(file)) => file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf),
        _ => None,
    };
    dir.unwrap_or_default().join(PASSWORD_FILE)
}

/// Writes `secret` to a new file at `path` that only its owner can read (`0600` on Unix):
/// an older file there is removed first, so neither its mode nor a link it may be is kept.
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Reopens `file` on every SIGHUP, until the task is aborted. The handler is installed
/// before this returns, so a SIGHUP sent afterwards never ends the process.
#[cfg(unix)]
fn reopen_on_hangup(file: Arc<JsonLinesSink>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match file.reopen() {
                Ok(()) => tracing::info!(audit_log = %file.path().display(), "audit log reopened"),
                Err(error) => tracing::warn!(
                    %error,
                    audit_log = %file.path().display(),
                    "cannot reopen the audit log; still writing to the file it had"
                ),
            }
        }
    }))
}

/// Resolves on Ctrl-C, or SIGTERM on Unix: the signal [`serve`] stops on.
///
/// Called within a Tokio runtime, it takes over both signals at once, not when the future
/// is first polled: a signal that comes before then (while the server opens its database,
/// binds, announces itself) is kept, and the future resolves at once, so the server still
/// stops gracefully instead of dying by the signal. Call it before
/// [`Server::bind`], as [`serve`] does. Outside a runtime, it takes them over when first
/// polled.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    let in_runtime = tokio::runtime::Handle::try_current().is_ok();
    #[cfg(unix)]
    let (interrupt, terminate) = if in_runtime {
        (
            Some(listen(unix::SignalKind::interrupt())),
            Some(listen(unix::SignalKind::terminate())),
        )
    } else {
        (None, None)
    };
    #[cfg(not(unix))]
    let _ = in_runtime;
    async move {
        #[cfg(unix)]
        {
            let interrupt = interrupt.unwrap_or_else(|| listen(unix::SignalKind::interrupt()));
            let terminate = terminate.unwrap_or_else(|| listen(unix::SignalKind::terminate()));
            tokio::select! {
                () = received(interrupt) => {}
                () = received(terminate) => {}
            }
        }
        #[cfg(not(unix))]
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down; flushing last-used times and the audit log");
    }
}

#[cfg(unix)]
use tokio::signal::unix;

/// Takes over `kind` now: from here on it is delivered to the stream, not acted on by the
/// operating system's default.
#[cfg(unix)]
fn listen(kind: unix::SignalKind) -> std::io::Result<unix::Signal> {
    unix::signal(kind)
}

/// Resolves when the signal comes; never when it could not be taken over (logged).
#[cfg(unix)]
async fn received(stream: std::io::Result<unix::Signal>) {
    match stream {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for a shutdown signal");
            std::future::pending::<()>().await;
        }
    }
}
