//! Listening: [`serve`] and the signal it stops on.

use std::net::SocketAddr;
use std::time::Duration;

use super::{BoxError, Config, build_app};

/// Runs the server of `config` until [`shutdown_signal`]: builds the app ([`build_app`]),
/// listens on `config.addr`, prints where, the admin password when this start generated it
/// (the only time it is shown) and a few commands to try, then serves. On the signal it
/// stops taking connections, finishes the requests in flight, writes the last batch of
/// last-used times and every queued audit event.
///
/// # Errors
///
/// [`build_app`]'s errors, an address that cannot be bound, or a failure of the listener.
pub async fn serve(config: &Config) -> Result<(), BoxError> {
    let app = build_app(config).await?;
    let listener = tokio::net::TcpListener::bind(&config.addr).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let email = &config.admin_email;

    println!(
        "keygate reference server on {base} (database: {})",
        config.describe_db()
    );
    if let Some(p) = &app.generated_password {
        println!();
        println!(
            "Generated password for {email} (shown once, store it now): {}",
            p.as_str()
        );
    }
    println!();
    let prefix = app.tokens.kinds().first().map_or("pat", |k| k.prefix());
    // The demo API is only shown when it is mounted; otherwise the rate-limited example
    // is a management route every server has.
    let limited = if config.demo { "apps" } else { "me" };
    let roles = app.tokens.roles();
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
    if config.metrics {
        println!("  curl {base}/metrics");
    }
    println!("  open {base}/tokens   # the token page");
    if let Some(path) = &config.audit_log {
        println!(
            "Audit events: {} (JSON Lines) and the database",
            path.display()
        );
    }
    println!();
    drop(app.generated_password);

    let maintenance = app
        .tokens
        .spawn_maintenance(Duration::from_secs(10), Duration::from_secs(3600));
    axum::serve(
        listener,
        app.router
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    // Writes the last batch of last-used times, then every queued audit event.
    maintenance.shutdown().await;
    app.audit.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C, or SIGTERM on Unix: the signal [`serve`] stops on.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down; flushing last-used times and the audit log");
}
