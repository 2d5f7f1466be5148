//! The gateway's HTTP server: ingress formats, the request path, admin endpoints.
//!
//! # Layout
//!
//! ```text
//! TcpListener ─▶ axum app (app.rs)
//!    1. request id      x-request-id taken from the caller when sane, else generated;
//!                       echoed on every answer, carried in the handler's log lines
//!    2. body limit      oversized bodies get 413 in the caller's wire format
//!    3. ingress         /v1/chat/completions (OpenAI) · /v1/messages (Anthropic):
//!                       wire JSON → ChatRequest (bulwark_providers::<fmt>::serve)
//!    4. router          resolve the model to a route, run the failover loop
//!                       (bulwark_router), commit point for streams
//!    5. egress          ChatResponse / StreamEvent* → the caller's wire format,
//!                       with x-bulwark-provider and x-bulwark-attempts
//! ```
//!
//! [`run`] serves until the shutdown future resolves; tests bind `127.0.0.1:0` and call
//! the same function the binary calls.

pub mod app;
pub mod config;
mod ingress;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use bulwark_core::config::Config;
use bulwark_router::{Router, Tuning};
use tokio::net::TcpListener;

pub use app::{AppState, build_app};

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build the upstream HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot set up a provider: {0}")]
    Provider(#[from] bulwark_providers::BuildError),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Installs the process-wide TLS crypto provider (ring). Idempotent.
pub fn install_crypto_provider() {
    // An Err means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The HTTP client used for every upstream call.
pub fn upstream_client() -> Result<reqwest::Client, reqwest::Error> {
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .tls_backend_rustls()
        .build()
}

/// Builds the shared state from a validated configuration.
pub fn build_state(config: &Config) -> Result<AppState, StartError> {
    build_state_tuned(config, Tuning::default())
}

/// [`build_state`] with non-default router [`Tuning`] (tests use it to shorten the
/// recovery probe interval and remove jitter).
pub fn build_state_tuned(config: &Config, tuning: Tuning) -> Result<AppState, StartError> {
    let router = Router::from_config_tuned(config, upstream_client()?, tuning)?;
    Ok(AppState::new(Arc::new(router)))
}

/// Serves the gateway on `listener` until `shutdown` resolves, then drains
/// in-flight requests.
pub async fn run(
    listener: TcpListener,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    serve(listener, build_state(config)?, shutdown).await
}

/// Serves an already built state (tests keep `state.router` to watch breakers and
/// router events).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    state.router.start_health_checks();
    let app = build_app(state);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "bulwark listening on http://{addr}");
    // Answers are many small writes (SSE frames): Nagle's algorithm would hold them
    // back for the peer's delayed ACK (~40 ms a frame).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
