//! Side-cars that only observe: per-target health, Prometheus metrics, the status
//! document and alerting. Nothing here is on a request's path except
//! [`Observer::record_request`], one counter increment.
//!
//! # Layout
//!
//! ```text
//!  Router ──RouterEvent (broadcast)──▶ side-car task (Observer::spawn)
//!                                        │ every event: HealthBook::apply + metrics
//!                                        │ every tick:  Live::read(router) ─▶ conditions ─▶ rules::Evaluator
//!                                        │                                   ─▶ AlertManager ─▶ log
//!                                        │                                                    ─▶ queue ─▶ slack task
//!                                        │                                                    ─▶ queue ─▶ pagerduty task
//!                                        │                                                    ─▶ queue ─▶ webhook task
//!  server ── record_request ─▶ metrics   │
//!  server ── journal inputs  ─▶ Observer │
//!  GET /metrics       ─▶ Metrics::render (per-gateway recorder, never global)
//!  GET /admin/status  ─▶ status::build (HealthBook + Live + journal + firing alerts)
//! ```
//!
//! - [`config`]: the `alerts:` configuration section.
//! - [`window`]: bounded windows (last 100 calls, 10 s buckets over an hour, a ring
//!   of samples for percentiles).
//! - [`health`]: per-target and per-route state folded from router events.
//! - [`live`]: what the router knows now (breakers, in-flight), serving target.
//! - [`metrics`]: metric names, labels and the recorder.
//! - [`conditions`], [`rules`]: rule conditions and the incident state machine.
//! - [`alerts`], [`notify`]: routing to channels, storm limit, delivery with retries.
//! - [`status`], [`render`]: the status document and its human view.
//! - [`http`]: axum handlers for `/metrics` and `/admin/status`.
//!
//! The request path never waits on this crate: events are read from a broadcast
//! channel (a side-car that falls behind loses events and counts them, it never
//! slows the sender), notifications are queued with `try_send`, and delivery runs
//! on its own tasks.

pub mod alerts;
pub mod conditions;
pub mod config;
pub mod health;
pub mod http;
pub mod journal;
pub mod live;
pub mod metrics;
pub mod notify;
pub mod render;
pub mod rules;
pub mod status;
pub mod window;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bulwark_router::{Router, RouterEvent};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

pub use config::{AlertsConfig, Severity};
pub use journal::JournalState;
pub use metrics::{Metrics, RequestOutcome};
pub use status::StatusReport;

use alerts::AlertManager;
use conditions::Inputs;
use health::HealthBook;
use live::Live;
use rules::{Evaluator, Incident};

/// How often histogram buckets are drained.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// How long shutdown waits for queued notifications (a resolve, say) to go out.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// Window of `bulwark_provider_success_ratio`.
const PROVIDER_RATIO_WINDOW: Duration = Duration::from_secs(300);

/// State shared by the side-car and the handlers.
struct Shared {
    book: HealthBook,
    journal: Option<JournalState>,
    firing: Vec<Incident>,
}

/// One gateway's observer. Build with [`Observer::new`], start with
/// [`Observer::spawn`], share as `Arc<Observer>`.
pub struct Observer {
    router: Arc<Router>,
    metrics: Arc<Metrics>,
    config: AlertsConfig,
    client: reqwest::Client,
    source: String,
    version: String,
    started: Instant,
    started_wall: SystemTime,
    routes: HashSet<String>,
    providers: Vec<String>,
    shared: Mutex<Shared>,
    /// Subscribed at construction so no event between `new` and `spawn` is missed.
    events: Mutex<Option<broadcast::Receiver<RouterEvent>>>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Observer {
    /// An observer of `router`. `providers` are the configured provider names (for
    /// label bounds and per-provider gauges); `client` posts notifications (its TLS
    /// provider must be installed, as the server does at start).
    pub fn new(
        router: Arc<Router>,
        providers: Vec<String>,
        config: AlertsConfig,
        client: reqwest::Client,
    ) -> Arc<Observer> {
        let source = config.source.clone().unwrap_or_else(host_name);
        let events = router.subscribe();
        let now = Instant::now();
        let configured_targets: Vec<(String, String)> = router
            .route_names()
            .iter()
            .filter_map(|name| router.resolve(name).ok())
            .flat_map(|route| {
                route
                    .targets
                    .iter()
                    .map(|t| (t.health.provider.clone(), t.health.model.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let book = HealthBook::new(now)
            .with_configured(configured_targets, router.route_names().iter().cloned());
        Arc::new(Observer {
            routes: router.route_names().iter().cloned().collect(),
            router,
            metrics: Metrics::new(),
            config,
            client,
            source,
            version: env!("CARGO_PKG_VERSION").to_string(),
            started: now,
            started_wall: SystemTime::now(),
            providers,
            shared: Mutex::new(Shared {
                book,
                journal: None,
                firing: Vec::new(),
            }),
            events: Mutex::new(Some(events)),
        })
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This gateway's name in alerts.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A bounded `route` label: a configured route's name; `provider/*` for an
    /// ad-hoc `provider/model`; otherwise `unknown` (a model name is caller input).
    pub fn route_label(&self, route: &str) -> String {
        if self.routes.contains(route) {
            return route.to_string();
        }
        match route.split_once('/') {
            Some((provider, _)) if self.providers.iter().any(|p| p == provider) => {
                format!("{provider}/*")
            }
            _ => "unknown".to_string(),
        }
    }

    /// Counts one finished caller request (`bulwark_requests_total`). Call once per
    /// request, after the response (or the stream) ended; `route` is the model name
    /// the caller asked for.
    pub fn record_request(&self, route: &str, outcome: RequestOutcome) {
        self.metrics.request(self.route_label(route), outcome);
    }

    /// The Prometheus text for `GET /metrics`.
    pub fn metrics_text(&self) -> String {
        self.metrics.render()
    }

    /// The document for `GET /admin/status`.
    pub fn status(&self) -> StatusReport {
        let live = Live::read(&self.router);
        let shared = self.shared();
        let meta = status::Meta {
            version: &self.version,
            source: &self.source,
            started: self.started,
            started_wall: self.started_wall,
        };
        let mut report = status::build(
            &meta,
            &status::Snapshot {
                book: &shared.book,
                live: &live,
                journal: shared.journal.as_ref(),
                firing: &shared.firing,
                now: Instant::now(),
                now_wall: SystemTime::now(),
            },
        );
        report.chaos = self
            .router
            .chaos()
            .active()
            .into_iter()
            .map(|r| status::ChaosStatus {
                id: r.id,
                remaining_seconds: r.remaining().as_secs(),
                fault: serde_json::to_value(&r.fault).unwrap_or_default(),
                provider: r.provider,
                model: r.model,
            })
            .collect();
        report
    }

    /// Replaces the journal state (at start, and whenever the server learns more).
    pub fn set_journal_state(&self, state: JournalState) {
        if let Some(exposure) = state.rpo_exposure {
            self.metrics.journal_rpo(exposure);
        }
        self.shared().journal = Some(state);
    }

    /// Feeds `bulwark_journal_rpo_seconds` and the `rpo_exposure` rule (call it
    /// periodically with the journal's `rpo_exposure()`).
    pub fn set_rpo_exposure(&self, exposure: Duration) {
        self.metrics.journal_rpo(exposure);
        let mut shared = self.shared();
        let journal = shared
            .journal
            .get_or_insert_with(|| JournalState::new("unknown"));
        journal.rpo_exposure = Some(exposure);
    }

    /// A journal write failed.
    pub fn journal_write_failed(&self) {
        let mut shared = self.shared();
        let journal = shared
            .journal
            .get_or_insert_with(|| JournalState::new("unknown"));
        journal.writes_failing = true;
        journal.last_write_failure = Some(SystemTime::now());
    }

    /// A journal write succeeded (cheap; call after failures until one succeeds, or
    /// after every commit).
    pub fn journal_write_succeeded(&self) {
        let mut shared = self.shared();
        if let Some(journal) = shared.journal.as_mut() {
            journal.writes_failing = false;
        }
    }

    /// A backup completed at `at`.
    pub fn backup_completed(&self, at: SystemTime) {
        let mut shared = self.shared();
        let journal = shared
            .journal
            .get_or_insert_with(|| JournalState::new("unknown"));
        journal.last_backup = Some(at);
    }

    /// Starts the side-car: consumes router events, evaluates rules every
    /// `evaluate_every`, delivers alerts. Runs until `shutdown` completes, then waits
    /// up to 5 s for queued notifications. Call once, inside a tokio runtime; a second
    /// call returns a task that ends at once.
    pub fn spawn(
        self: &Arc<Self>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner()).take();
        let observer = Arc::clone(self);
        tokio::spawn(async move {
            let Some(events) = events else {
                warn!("observer side-car already started");
                return;
            };
            observer.run(events, shutdown).await;
        })
    }

    async fn run(
        self: Arc<Self>,
        mut events: broadcast::Receiver<RouterEvent>,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let (mut manager, tasks) =
            AlertManager::start(&self.config, &self.source, &self.client, &self.metrics);
        let mut evaluator = Evaluator::new(self.source.clone());
        let mut tick = tokio::time::interval(self.config.evaluate_every.0);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_upkeep = Instant::now();
        tokio::pin!(shutdown);
        loop {
            // Ticks before events: a flood of events must not starve evaluation.
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                _ = tick.tick() => {
                    self.evaluate(&mut evaluator, &mut manager);
                    if last_upkeep.elapsed() >= UPKEEP_EVERY {
                        self.metrics.upkeep();
                        last_upkeep = Instant::now();
                    }
                }
                event = events.recv() => match event {
                    Ok(event) => self.on_event(&event),
                    Err(RecvError::Lagged(missed)) => {
                        self.metrics.events_lagged(missed);
                        warn!(missed, "observer fell behind the router's events");
                    }
                    Err(RecvError::Closed) => break,
                },
            }
        }
        drop(manager);
        let deadline = Instant::now() + SHUTDOWN_DRAIN;
        for task in tasks {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                debug!("alert delivery still busy at shutdown; abandoning it");
            }
        }
    }

    fn on_event(&self, event: &RouterEvent) {
        let now = Instant::now();
        self.shared().book.apply(event, now);
        match event {
            RouterEvent::Attempt {
                provider,
                error,
                latency,
                ttft,
                ..
            } => self.metrics.attempt(provider, *error, *latency, *ttft),
            RouterEvent::Failover { route, from, to } => {
                self.metrics.failover(self.route_label(route), from, to);
            }
            RouterEvent::Hedge { .. } | RouterEvent::Breaker { .. } | RouterEvent::Probe { .. } => {
            }
        }
    }

    /// One tick: gauges, rule conditions, incidents, notifications.
    fn evaluate(&self, evaluator: &mut Evaluator, manager: &mut AlertManager) {
        let now = Instant::now();
        let live = Live::read(&self.router);
        let (observations, ratios) = {
            let mut shared = self.shared();
            let observations = conditions::observe(&Inputs {
                rules: &self.config.rules,
                book: &shared.book,
                live: &live,
                journal: shared.journal.as_ref(),
                now,
            });
            shared.book.clear_latches();
            (observations, provider_ratios(&shared.book, now))
        };
        let states = live.provider_states();
        for provider in &self.providers {
            let state = states.get(provider).map_or(0, |s| s.as_gauge());
            self.metrics.provider_state(provider, state);
            self.metrics
                .provider_success_ratio(provider, ratios.get(provider).copied().flatten());
        }
        let events = evaluator.step(now, observations);
        manager.handle(now, &events);
        self.shared().firing = evaluator.firing();
    }
}

/// Success ratio per provider over [`PROVIDER_RATIO_WINDOW`], all its targets.
fn provider_ratios(book: &HealthBook, now: Instant) -> BTreeMap<String, Option<f64>> {
    let mut sums: BTreeMap<String, window::Counts> = BTreeMap::new();
    for t in book.targets.values() {
        let c = t.windows.counts(now, PROVIDER_RATIO_WINDOW);
        let sum = sums.entry(t.provider.clone()).or_default();
        sum.ok += c.ok;
        sum.failed += c.failed;
    }
    sums.into_iter().map(|(p, c)| (p, c.ratio())).collect()
}

/// The host name (`HOSTNAME`, then `/etc/hostname`), else `bulwark`.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "bulwark".to_string())
}
