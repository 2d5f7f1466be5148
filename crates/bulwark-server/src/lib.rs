//! The gateway's HTTP server: ingress formats, the request path, admin endpoints.
//!
//! # Layout
//!
//! ```text
//! TcpListener ─▶ axum app (app.rs)
//!    1. request id      generated per request, on every answer (x-request-id) and in
//!                       the handler's log lines; the caller's own is echoed
//!                       (x-client-request-id) and journaled beside it
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

mod admin;
pub mod app;
pub mod config;
mod conn;
mod ingress;
mod ledger;
pub use ledger::CALLER_WENT_AWAY;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bulwark_core::config::Config;
use bulwark_core::config::journal::Durability;
use bulwark_journal::{Backup, Journal};
use bulwark_observe::{JournalState, Observer};
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
    #[error("cannot open the journal {path}: {source}")]
    Journal {
        path: String,
        #[source]
        source: bulwark_journal::JournalError,
    },
    #[error("cannot set up backups: {0}")]
    Backup(#[from] bulwark_journal::JournalError),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Installs the process-wide TLS crypto provider (ring). Idempotent.
pub fn install_crypto_provider() {
    // An Err means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The HTTP client for upstream calls, with the default 5 s connect timeout.
pub fn upstream_client() -> Result<reqwest::Client, reqwest::Error> {
    upstream_client_with(Duration::from_secs(5))
}

/// The HTTP client for upstream calls with this connect timeout.
pub fn upstream_client_with(connect: Duration) -> Result<reqwest::Client, reqwest::Error> {
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(connect)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        // A provider API never redirects a POST; following one would resend the
        // caller's prompt (and, same-host, the key) somewhere else. A 3xx is an
        // upstream error like any other non-2xx.
        .redirect(reqwest::redirect::Policy::none())
        // Retries are the router's job (classes, budget, deadline); reqwest's own
        // protocol-level retry would hide attempts from it.
        .retry(reqwest::retry::never())
        .tls_backend_rustls()
        .build()
}

/// Builds the shared state from a validated configuration: the router, the journal
/// (recovering what a crash left unfinished), backups and the observer.
pub async fn build_state(config: &Config) -> Result<AppState, StartError> {
    build_state_tuned(config, Tuning::default()).await
}

/// [`build_state`] with non-default router [`Tuning`] (tests use it to shorten the
/// recovery probe interval and remove jitter).
pub async fn build_state_tuned(config: &Config, tuning: Tuning) -> Result<AppState, StartError> {
    let client = upstream_client()?;
    // One client (one connection pool) per distinct connect timeout.
    let mut by_timeout: std::collections::HashMap<Duration, reqwest::Client> =
        std::collections::HashMap::new();
    let mut per_provider = std::collections::HashMap::new();
    for p in &config.providers {
        let connect = Router::connect_timeout(config, &p.name);
        let client = match by_timeout.get(&connect) {
            Some(c) => c.clone(),
            None => {
                let c = upstream_client_with(connect)?;
                by_timeout.insert(connect, c.clone());
                c
            }
        };
        per_provider.insert(p.name.clone(), client);
    }
    let router = Arc::new(Router::from_config_with_clients(
        config,
        &|name| {
            per_provider
                .get(name)
                .cloned()
                .unwrap_or_else(|| client.clone())
        },
        tuning,
    )?);
    let (journal, recovery) =
        Journal::open(&config.journal)
            .await
            .map_err(|source| StartError::Journal {
                path: config.journal.describe(),
                source,
            })?;
    if recovery.interrupted > 0 {
        tracing::warn!(
            interrupted = recovery.interrupted,
            "journal: {} request(s) left unfinished by the previous run are now `interrupted` (list them: bulwark journal list --config <this config file> --status interrupted)",
            recovery.interrupted
        );
    }
    let backup = match &config.backup {
        Some(cfg) if config.journal.durability != Durability::Off => {
            Some(Arc::new(Backup::new(&config.journal, cfg)?))
        }
        _ => None,
    };
    let providers = config.providers.iter().map(|p| p.name.clone()).collect();
    let observer = Observer::new(
        Arc::clone(&router),
        providers,
        config.alerts.clone(),
        client,
    );
    let durability = match config.journal.rpo_bound() {
        Some(bound) if bound.is_zero() => format!("{} (RPO 0)", config.journal.durability.as_str()),
        Some(bound) => format!(
            "{} (RPO ≤ {})",
            config.journal.durability.as_str(),
            humantime::format_duration(bound)
        ),
        None => "off (nothing recorded)".to_string(),
    };
    let mut journal_state = JournalState::new(durability);
    journal_state.rpo_target = config.backup.as_ref().map(|b| b.interval.0);
    observer.set_journal_state(journal_state);
    Ok(AppState {
        router,
        journal,
        observer,
        backup,
        recovery: Arc::new(recovery),
        admin_token: config.admin_token.clone(),
        started: std::time::Instant::now(),
    })
}

/// Serves the gateway on `listener` until `shutdown` resolves, then drains
/// in-flight requests.
pub async fn run(
    listener: TcpListener,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    serve(listener, build_state(config).await?, shutdown).await
}

/// Serves an already built state (tests keep `state.router` to watch breakers and
/// router events). On shutdown: stops accepting, drains in-flight requests, ships the
/// journal's last records to the backup, and closes the journal.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    state.router.start_health_checks();
    let observer_task = state.observer.spawn(stopped());
    let backup_task = state
        .backup
        .as_ref()
        .map(|b| Arc::clone(b).spawn(stopped()));
    let journal_task = tokio::spawn(report_journal(state.clone(), stopped()));
    let journal = state.journal.clone();
    // On shutdown, requests in flight get as long as the longest deadline any of
    // them can have (a route's `total`; `PROVIDER/MODEL` requests get the default).
    let drain = state
        .router
        .route_names()
        .iter()
        .filter_map(|name| state.router.resolve(name).ok())
        .map(|route| route.policy.timeouts.total)
        .chain([bulwark_core::config::TimeoutsConfig::default().total.0])
        .max()
        .unwrap_or_default()
        .saturating_add(Duration::from_secs(5));
    let app = build_app(state);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "bulwark listening on http://{addr}");
    conn::accept_loop(listener, app, shutdown, drain).await;
    let _ = stop_tx.send(true);
    let _ = journal_task.await;
    if let Some(task) = backup_task {
        let _ = task.await;
    }
    let _ = observer_task.await;
    if let Err(err) = journal.close().await {
        tracing::error!(error = %err, "journal: close failed");
    }
    Ok(())
}

/// Feeds the journal's write health and the backup's RPO exposure to the observer
/// (metrics, status, alerts) once a second.
async fn report_journal(state: AppState, stopped: impl Future<Output = ()>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failures_seen = 0u64;
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            _ = tick.tick() => {}
        }
        let health = state.journal.health();
        if health.write_failures > failures_seen || health.failing {
            failures_seen = health.write_failures;
            state.observer.journal_write_failed();
        } else {
            state.observer.journal_write_succeeded();
        }
        if let Some(backup) = &state.backup {
            let status = backup.status().await;
            state.observer.set_rpo_exposure(status.rpo_exposure);
            if let Some(at) = status
                .last_success
                .as_deref()
                .and_then(|t| bulwark_journal::parse_time(t, std::time::SystemTime::now()).ok())
            {
                state.observer.backup_completed(at);
            }
        }
    }
}
