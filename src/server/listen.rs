//! Accepting connections with bounded waits for slow or idle clients.
//!
//! `axum::serve` builds its HTTP/1 connections without a timer, so hyper's
//! `header_read_timeout` is silently off: a client that sends a request head one byte at a
//! time (slowloris), or opens a connection and sends nothing, holds a socket and a task for
//! as long as it likes, and enough of them exhaust the process's file descriptors. Here every
//! connection has a timer: the head of each request (the first one, and each next one on a
//! kept-alive connection) must arrive within the header timeout, or the connection is
//! closed.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::Service;

/// How long a client may take to send the head (request line and headers) of a request,
/// counted from when the server starts waiting for it, including the wait on an idle
/// kept-alive connection: past it the connection is closed. hyper's own default.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` (each request with the peer's `ConnectInfo<SocketAddr>`)
/// until `signal` resolves; then stops accepting, lets each connection finish the request
/// it is on, and returns when every connection has closed.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    signal: impl Future<Output = ()> + Send,
) {
    // Every connection holds a receiver: `closed` resolves once all of them are dropped.
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(signal);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut router = router.clone();
                async move { Ok::<_, Infallible>(router.call(req).await.unwrap_or_else(|e| match e {})) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(error) = served {
                        tracing::debug!(%error, "connection ended");
                    }
                    return;
                }
                _ = stopping.wait_for(|stop| *stop) => conn.as_mut().graceful_shutdown(),
            }
            if let Err(error) = conn.await {
                tracing::debug!(%error, "connection ended");
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(stopping);
    stop.closed().await;
}

/// An error of one connection (reset or aborted before it was taken), not of the listener.
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
