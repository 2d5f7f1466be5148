//! Accepting and serving connections by hand (hyper-util's HTTP/1 + HTTP/2
//! auto builder) instead of `axum::serve`, for two things axum cannot do:
//!
//! - the `reset` fault: a handler asks, through the [`ConnHandle`] in its request
//!   extensions, for its connection to be dropped without a response; the socket
//!   is closed with `SO_LINGER 0`, so the peer gets an RST;
//! - shutdown that ends every connection, including ones parked on a `hang`:
//!   connection tasks live in a `JoinSet` that is aborted when the server stops.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// A handle on the connection a request came in on.
#[derive(Clone, Default)]
pub(crate) struct ConnHandle {
    abort: Arc<Notify>,
}

impl ConnHandle {
    /// Drops the connection, with an RST, without answering anything on it.
    pub(crate) fn reset(&self) {
        self.abort.notify_one();
    }
}

/// Accepts connections until `shutdown` resolves, then ends them all.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, app.clone()));
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %err, "bulwark-mock: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(stream: TcpStream, app: Router) {
    let _ = stream.set_nodelay(true);
    let linger = LingerHandle::of(&stream);
    let handle = ConnHandle::default();
    let request_handle = handle.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(request_handle.clone());
        app.clone().oneshot(req)
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    let mut connection = Box::pin(builder.serve_connection(TokioIo::new(stream), service));
    let reset = tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "bulwark-mock: connection ended with an error");
            }
            false
        }
        () = handle.abort.notified() => true,
    };
    if reset {
        linger.set_zero();
    }
    // Our descriptor goes first; the duplicate's close below is the last one,
    // which sends the RST when linger is zero.
    drop(connection);
    drop(linger);
}

/// A duplicate of the connection's socket descriptor, so `SO_LINGER` can be set
/// after hyper has taken the stream.
struct LingerHandle(Option<socket2::Socket>);

impl LingerHandle {
    #[cfg(unix)]
    fn of(stream: &TcpStream) -> Self {
        use std::os::fd::AsFd;
        let dup = stream.as_fd().try_clone_to_owned().ok();
        LingerHandle(dup.map(socket2::Socket::from))
    }

    #[cfg(not(unix))]
    fn of(_stream: &TcpStream) -> Self {
        LingerHandle(None)
    }

    fn set_zero(&self) {
        if let Some(socket) = &self.0
            && let Err(err) = socket.set_linger(Some(Duration::ZERO))
        {
            tracing::debug!(error = %err, "bulwark-mock: cannot set SO_LINGER");
        }
    }
}
