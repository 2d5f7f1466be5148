//! Accepting and serving callers' connections (hyper-util's HTTP/1 + HTTP/2 auto
//! builder) instead of `axum::serve`, which gives hyper no timer: without one,
//! hyper's limit on how long a request's headers may take to arrive is off, and a
//! client sending a header line now and then holds its connection (and shutdown)
//! for ever.
//!
//! - A connection must start its first request within [`HEADER_READ_TIMEOUT`] of
//!   being accepted (a silent socket, a partial HTTP/2 preface), or it is closed.
//! - HTTP/1: each request's headers must be in within [`HEADER_READ_TIMEOUT`] of
//!   when the connection began waiting for them (hyper's own check), which also
//!   closes a keep-alive connection left idle that long.
//! - HTTP/2: a ping every 30 s; a peer that does not answer one within 20 s is gone.
//! - On shutdown every connection is told to finish: idle ones close at once, those
//!   with a request in flight close once it is answered. What is still open after
//!   the drain period (the longest request deadline, from the caller) is closed.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// How long a caller may take to start a connection's first request, and to send
/// a request's headers (hyper's default, which it applies only when it has a timer).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until `shutdown` resolves, then lets each finish what it is
/// answering, for at most `drain`, and closes what is left.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
    drain: Duration,
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
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            drain = ?drain,
            "connections still open after the drain period: closing them"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

async fn serve_connection(stream: TcpStream, app: Router, mut stop: watch::Receiver<bool>) {
    // Answers are many small writes (SSE frames): Nagle's algorithm would hold them
    // back for the peer's delayed ACK (~40 ms a frame).
    let _ = stream.set_nodelay(true);
    let started = Arc::new(AtomicBool::new(false));
    let service = {
        let started = Arc::clone(&started);
        hyper::service::service_fn(move |req: Request<Incoming>| {
            started.store(true, Ordering::Relaxed);
            app.clone().oneshot(req)
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let first_request = tokio::time::sleep(HEADER_READ_TIMEOUT);
    let mut first_request = std::pin::pin!(first_request);
    let mut waiting_for_first = true;
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            () = first_request.as_mut(), if waiting_for_first => {
                if !started.load(Ordering::Relaxed) {
                    tracing::debug!("no request on the connection in time: closing it");
                    return;
                }
                waiting_for_first = false;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Shutdown waits for a request in flight, but not past the drain period.
    #[tokio::test(start_paused = true)]
    async fn shutdown_closes_what_the_drain_period_did_not_finish() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/never",
            axum::routing::get(futures::future::pending::<String>),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let drain = Duration::from_secs(125);
        let server = tokio::spawn(accept_loop(
            listener,
            app,
            async {
                let _ = stopped.await;
            },
            drain,
        ));
        let mut caller = TcpStream::connect(addr).await.unwrap();
        caller
            .write_all(b"GET /never HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // Let the request reach its handler before the shutdown.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let began = tokio::time::Instant::now();
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(600), server)
            .await
            .expect("the server outlived its drain period")
            .unwrap();
        assert!(began.elapsed() >= drain, "{:?}", began.elapsed());
        let mut rest = Vec::new();
        let _ = caller.read_to_end(&mut rest).await;
    }
}
