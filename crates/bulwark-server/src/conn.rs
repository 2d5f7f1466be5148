//! Accepting and serving callers' connections (hyper-util's HTTP/1 + HTTP/2 auto
//! builder) instead of `axum::serve`, which gives hyper no timer: without one,
//! hyper's limit on how long a request's headers may take to arrive is off, and a
//! client sending a header line now and then holds its connection (and shutdown)
//! for ever.
//!
//! - A request's headers must be in within [`HEADER_READ_TIMEOUT`] of its first
//!   byte, or the connection is closed (hyper's own check, HTTP/1).
//! - On shutdown every connection is told to finish: idle ones close at once, those
//!   with a request in flight close once it is answered; the loop returns when the
//!   last one has.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How long a caller may take to send a request's headers (hyper's default, which
/// it applies only when it has a timer).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until `shutdown` resolves, then lets each finish what it is
/// answering and waits for all of them.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, app.clone(), stop_rx.clone()));
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(stream: TcpStream, app: Router, mut stop: watch::Receiver<bool>) {
    // Answers are many small writes (SSE frames): Nagle's algorithm would hold them
    // back for the peer's delayed ACK (~40 ms a frame).
    let _ = stream.set_nodelay(true);
    let service =
        hyper::service::service_fn(move |req: Request<Incoming>| app.clone().oneshot(req));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            changed = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
