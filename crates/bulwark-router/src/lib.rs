//! The router: which target serves a request, and what to do when one fails.
//!
//! # Layout
//!
//! - [`Router`] owns the targets and routes built from configuration and resolves a
//!   caller's model name to a [`Route`] (a configured route, or `provider/model`).
//! - `engine`: the failover loop ([`Router::chat`], [`Router::chat_stream`]): order,
//!   skip, retry with backoff, fail over, hedge, give up; one deadline over all of it.
//! - `stream`: the committed stream after the streaming commit point.
//! - `target`: per-target live state (breaker, throttle, quota, TTFT samples, prober).
//! - `breaker`, `backoff`, `budget`, `sticky`: the policies, each testable alone with
//!   paused tokio time.
//!
//! The router knows no wire format: it sees neutral requests and events, and calls
//! upstreams through the [`Upstream`] trait (implemented by
//! `bulwark_providers::Provider`, and by scripted fakes in tests). Observers
//! (metrics, journal, alerts) subscribe to [`RouterEvent`]s; the request path never
//! waits for them.
//!
//! # Error classes
//!
//! | class | retried on the same target | fails over | breaker |
//! |---|---|---|---|
//! | transient (connect/reset, 408, 5xx, 529) | yes, backoff with full jitter | yes | counts |
//! | timeout (no first token / no answer) | no | yes | counts |
//! | throttled (429) | yes if the wait fits the deadline | yes; target skipped until its reset | no |
//! | quota / billing | no | yes; target unusable until a probe succeeds | no |
//! | credentials rejected (401/403) | no | yes | counts |
//! | caller's mistake (400, 404, 413, 422) | no | no | no |
//! | context window exceeded | no | only to a target declaring a larger `context_window` | no |
//! | content policy | no | only if the route sets `failover_on_content_policy` | no |
//! | unsupported feature | no | yes (no penalty) | no |
//! | protocol (malformed/truncated upstream answer) | yes | yes | counts |

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod chaos;
mod engine;
pub mod sticky;
mod stream;
pub mod target;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_core::config::{BreakerConfig, Config, HedgeAfter, RouteConfig};
use bulwark_core::{ChatRequest, ChatResponse, ErrorClass, UpstreamError};
use futures::future::BoxFuture;

pub use breaker::BreakerState;
pub use bulwark_providers::EventStream;
pub use engine::RequestOptions;
pub use target::TargetHealth;

use backoff::Backoff;
use breaker::BreakerSettings;
use budget::RetryBudget;
use sticky::StickySessions;
use target::ProbeSettings;

/// Something the router can send a request to.
pub trait Upstream: Send + Sync {
    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
    ) -> BoxFuture<'a, Result<ChatResponse, UpstreamError>>;

    fn chat_stream<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
    ) -> BoxFuture<'a, Result<EventStream, UpstreamError>>;

    /// The prompt tokens of `req` as the upstream counts them (Anthropic's
    /// `count_tokens`); upstreams without a counter answer "unsupported".
    fn count_tokens<'a>(
        &'a self,
        _req: &'a ChatRequest,
        _model: &'a str,
    ) -> BoxFuture<'a, Result<u64, UpstreamError>> {
        Box::pin(async {
            Err(UpstreamError::new(
                bulwark_core::ErrorClass::Unsupported,
                "this upstream cannot count tokens",
            ))
        })
    }
}

/// What happened, for observers (metrics, journal, alerts, status).
#[derive(Debug, Clone)]
pub enum RouterEvent {
    Attempt {
        route: String,
        provider: String,
        model: String,
        /// `None` on success.
        error: Option<ErrorClass>,
        /// The upstream's HTTP status when it failed with one.
        status: Option<u16>,
        latency: Duration,
        ttft: Option<Duration>,
    },
    Failover {
        route: String,
        from: String,
        to: String,
    },
    Hedge {
        route: String,
        from: String,
        to: String,
    },
    Breaker {
        provider: String,
        model: String,
        from: BreakerState,
        to: BreakerState,
    },
    Probe {
        provider: String,
        model: String,
        ok: bool,
    },
}

/// One finished upstream attempt, as reported to the request's [`AttemptSink`]
/// (the journal records these).
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub provider: String,
    pub model: String,
    pub started_at: std::time::SystemTime,
    /// Time from sending to the first content event, when it came.
    pub ttft: Option<Duration>,
    pub elapsed: Duration,
    /// `None` on success, and for a cancelled attempt.
    pub error: Option<UpstreamError>,
    /// Dropped before it finished: a hedge that lost, or a caller that went away.
    pub cancelled: bool,
}

/// Receives every attempt of one request as it finishes. Called on the request path:
/// it must not block (the journal's `record_attempt` only queues).
#[derive(Clone)]
pub struct AttemptSink(pub Arc<dyn Fn(AttemptReport) + Send + Sync>);

impl std::fmt::Debug for AttemptSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttemptSink")
    }
}

/// Timeouts of a route.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From sending the request to the first content event.
    pub first_token: Duration,
    /// Longest silence between two stream events once the stream began.
    pub idle: Duration,
    /// The whole request, across all attempts, backoffs and failovers.
    pub total: Duration,
}

/// A route's failover policy.
#[derive(Debug, Clone)]
pub struct RoutePolicy {
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeouts: Timeouts,
    pub hedge: Option<HedgeAfter>,
    pub resume_streams: bool,
    pub failover_on_content_policy: bool,
}

/// One target as a route sees it.
#[derive(Debug, Clone)]
pub struct RouteTarget {
    pub health: Arc<TargetHealth>,
    pub context_window: Option<u64>,
    pub accepts_prefill: bool,
    pub priority: u32,
    pub weight: u32,
}

/// A named list of targets and its policy.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub targets: Vec<RouteTarget>,
    pub policy: RoutePolicy,
}

/// A successful answer and who gave it.
#[derive(Debug)]
pub struct Served<T> {
    pub value: T,
    /// The configured name of the provider that served.
    pub provider: String,
    /// The upstream model the target names.
    pub model: String,
    /// Upstream attempts made, including hedges and the one that served.
    pub attempts: u32,
}

/// Every target failed, or the failure was the caller's to fix.
#[derive(Debug)]
pub struct Failure {
    /// The error to report (the most telling one, or the caller's mistake).
    pub error: UpstreamError,
    pub attempts: u32,
    /// The provider of the attempt that produced `error`, if any attempt was made.
    pub provider: Option<String>,
}

impl Failure {
    fn of(error: UpstreamError, attempts: u32, provider: &str) -> Self {
        Failure {
            error,
            attempts,
            provider: Some(provider.to_string()),
        }
    }

    fn internal(message: &str) -> Self {
        Failure {
            error: UpstreamError::protocol(message),
            attempts: 0,
            provider: None,
        }
    }
}

/// Why a model name could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "the model `{0}` does not exist: it is neither a configured route nor `provider/model` with a configured provider"
    )]
    UnknownModel(String),
    #[error(
        "`{model}` would be a new `provider/model` target, and {limit} are in use already, the most this gateway keeps: configure a route for it, or use a model name already in use"
    )]
    TooManyModels { model: String, limit: usize },
}

impl ResolveError {
    /// The caller-facing error: an unknown model is a 404 (`model_not_found`), one
    /// past the limit of `provider/model` targets a 400; both name the `model` field.
    pub fn to_gateway_error(&self) -> bulwark_core::GatewayError {
        use bulwark_core::{ErrorKind, GatewayError};
        let mut err = match self {
            ResolveError::UnknownModel(_) => {
                GatewayError::new(ErrorKind::NotFound, self.to_string())
                    .with_code("model_not_found")
            }
            ResolveError::TooManyModels { .. } => GatewayError::invalid(self.to_string()),
        };
        err.param = Some("model".into());
        err
    }
}

/// The most `provider/model` targets (beyond those of configured routes) the router
/// creates. Each keeps a breaker, health and metrics for good, and callers choose the
/// names: without a bound, a caller sending a new name per request would grow them
/// without end.
pub const MAX_PROVIDER_MODEL_TARGETS: usize = 1024;

/// Knobs that are not configuration (tests set them for determinism).
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Backoff jitter (1.0 full jitter; 0.0 always the ceiling).
    pub backoff_jitter: f64,
    /// Breaker open-time jitter (0.1 = ±10 %).
    pub breaker_jitter: f64,
    /// How often an out-of-service target is probed when no active check is configured.
    pub recovery_probe_interval: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            backoff_jitter: 1.0,
            breaker_jitter: 0.1,
            recovery_probe_interval: Duration::from_secs(5),
        }
    }
}

/// Builds targets and routes from configuration, and runs requests.
pub struct Router {
    upstreams: HashMap<String, Arc<dyn Upstream>>,
    routes: HashMap<String, Arc<Route>>,
    route_order: Vec<String>,
    /// One live state per (provider, model), shared by every route that uses it.
    targets: Mutex<HashMap<(String, String), Arc<TargetHealth>>>,
    /// How many of `targets` the configured routes made.
    configured_targets: usize,
    default_route: RouteConfig,
    config: Config,
    tuning: Tuning,
    budget: Arc<RetryBudget>,
    sticky: StickySessions,
    events: tokio::sync::broadcast::Sender<RouterEvent>,
    chaos: Arc<chaos::ChaosBoard>,
}

impl Router {
    /// Game-day faults injected by operators (`POST /admin/chaos`).
    pub fn chaos(&self) -> &Arc<chaos::ChaosBoard> {
        &self.chaos
    }

    /// A router over the configured providers.
    pub fn from_config(
        config: &Config,
        client: reqwest::Client,
    ) -> Result<Self, bulwark_providers::BuildError> {
        Router::from_config_tuned(config, client, Tuning::default())
    }

    /// [`Router::from_config`] with non-default [`Tuning`] (tests shorten the recovery
    /// probe interval and remove jitter).
    pub fn from_config_tuned(
        config: &Config,
        client: reqwest::Client,
        tuning: Tuning,
    ) -> Result<Self, bulwark_providers::BuildError> {
        Router::from_config_with_clients(config, &|_| client.clone(), tuning)
    }

    /// A router whose providers each use the HTTP client `client_for(provider name)`
    /// gives (the server gives each the connect timeout its routes ask for).
    pub fn from_config_with_clients(
        config: &Config,
        client_for: &dyn Fn(&str) -> reqwest::Client,
        tuning: Tuning,
    ) -> Result<Self, bulwark_providers::BuildError> {
        let mut upstreams: HashMap<String, Arc<dyn Upstream>> = HashMap::new();
        for p in &config.providers {
            upstreams.insert(
                p.name.clone(),
                Arc::new(bulwark_providers::Provider::new(p, client_for(&p.name))?),
            );
        }
        Ok(Router::with_upstreams(config, upstreams, tuning))
    }

    /// The connect timeout for `provider`: the shortest `timeouts.connect` among the
    /// routes that use it (the default, 5 s, when none does).
    pub fn connect_timeout(config: &Config, provider: &str) -> Duration {
        config
            .routes
            .iter()
            .filter(|r| r.targets.iter().any(|t| t.provider == provider))
            .map(|r| r.timeouts.connect.0)
            .min()
            .unwrap_or_else(|| bulwark_core::config::TimeoutsConfig::default().connect.0)
    }

    /// A router over given upstreams (keyed by provider name): tests use scripted ones.
    pub fn with_upstreams(
        config: &Config,
        upstreams: HashMap<String, Arc<dyn Upstream>>,
        tuning: Tuning,
    ) -> Self {
        let (events, _) = tokio::sync::broadcast::channel(1024);
        let mut router = Router {
            upstreams,
            routes: HashMap::new(),
            route_order: Vec::new(),
            targets: Mutex::new(HashMap::new()),
            configured_targets: 0,
            default_route: RouteConfig {
                model: String::new(),
                targets: Vec::new(),
                retry: Default::default(),
                timeouts: Default::default(),
                circuit_breaker: Default::default(),
                hedge: None,
                resume_streams: false,
                failover_on_content_policy: false,
            },
            config: config.clone(),
            tuning,
            budget: Arc::new(RetryBudget::new(
                config.retry_budget.ratio,
                config.retry_budget.min_per_second,
            )),
            sticky: StickySessions::new(100_000, Duration::from_secs(3600)),
            events,
            chaos: Arc::default(),
        };
        for r in &config.routes {
            let route = router.build_route(r, &r.model);
            router.route_order.push(r.model.clone());
            router.routes.insert(r.model.clone(), Arc::new(route));
        }
        router.configured_targets = router.targets.lock().map_or(0, |t| t.len());
        router
    }

    fn build_route(&self, r: &RouteConfig, name: &str) -> Route {
        let targets = r
            .targets
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                Some(RouteTarget {
                    health: self.target(&t.provider, &t.model, &r.circuit_breaker)?,
                    context_window: t.context_window,
                    accepts_prefill: t.accepts_prefill,
                    priority: t.priority.unwrap_or(i as u32),
                    weight: t.weight,
                })
            })
            .collect();
        Route {
            name: name.to_string(),
            targets,
            policy: RoutePolicy {
                max_attempts: r.retry.max_attempts.max(1),
                backoff: Backoff {
                    base: r.retry.base_delay.0,
                    max: r.retry.max_delay.0,
                    jitter: self.tuning.backoff_jitter,
                },
                timeouts: Timeouts {
                    first_token: r.timeouts.first_token.0,
                    idle: r.timeouts.idle.0,
                    total: r.timeouts.total.0,
                },
                hedge: r.hedge.as_ref().map(|h| h.after),
                resume_streams: r.resume_streams,
                failover_on_content_policy: r.failover_on_content_policy,
            },
        }
    }

    /// The shared live state of (provider, model), created on first use.
    fn target(
        &self,
        provider: &str,
        model: &str,
        breaker: &BreakerConfig,
    ) -> Option<Arc<TargetHealth>> {
        let upstream: Arc<dyn Upstream> = Arc::new(chaos::Chaotic {
            inner: Arc::clone(self.upstreams.get(provider)?),
            provider: provider.to_string(),
            model: model.to_string(),
            board: Arc::clone(&self.chaos),
        });
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let key = (provider.to_string(), model.to_string());
        if let Some(existing) = targets.get(&key) {
            return Some(Arc::clone(existing));
        }
        let check = self
            .config
            .providers
            .iter()
            .find(|p| p.name == provider)
            .and_then(|p| p.health_check.clone());
        let probe = match &check {
            Some(c) => ProbeSettings {
                interval: c.interval.0,
                timeout: c.timeout.0,
                always: c.model == model,
            },
            None => ProbeSettings {
                interval: self.tuning.recovery_probe_interval,
                timeout: Duration::from_secs(5),
                always: false,
            },
        };
        let health = Arc::new(TargetHealth::new(
            provider.to_string(),
            model.to_string(),
            upstream,
            BreakerSettings {
                consecutive_failures: breaker.consecutive_failures,
                failure_rate: breaker.failure_rate,
                min_calls: breaker.min_calls,
                window: breaker.window.0,
                open_for: breaker.open_for.0,
                max_open_for: breaker.max_open_for.0,
                slow_calls: breaker.slow_calls,
                half_open_probes: breaker.half_open_probes,
                jitter: self.tuning.breaker_jitter,
            },
            probe,
            self.events.clone(),
        ));
        targets.insert(key, Arc::clone(&health));
        Some(health)
    }

    /// Starts the active health checks configured on providers (call once, inside a
    /// tokio runtime).
    pub fn start_health_checks(&self) {
        for p in &self.config.providers {
            if let Some(check) = &p.health_check
                && let Some(health) = self.target(&p.name, &check.model, &BreakerConfig::default())
            {
                health.ensure_prober();
            }
        }
    }

    /// Subscribes to what the router does.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RouterEvent> {
        self.events.subscribe()
    }

    /// Route names in configuration order.
    /// Whether `name` is a configured provider.
    pub fn has_provider(&self, name: &str) -> bool {
        self.upstreams.contains_key(name)
    }

    pub fn route_names(&self) -> &[String] {
        &self.route_order
    }

    /// Every target's live state.
    pub fn targets(&self) -> Vec<Arc<TargetHealth>> {
        let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        targets.values().cloned().collect()
    }

    /// Whether [`Router::resolve`] would find `model`, without building anything (a
    /// `provider/model` route creates its target's state on first use).
    pub fn knows(&self, model: &str) -> bool {
        self.routes.contains_key(model)
            || model
                .split_once('/')
                .is_some_and(|(provider, upstream_model)| {
                    self.upstreams.contains_key(provider) && !upstream_model.is_empty()
                })
    }

    /// A configured route, or `provider/model` as a one-target route with default policy.
    pub fn resolve(&self, model: &str) -> Result<Arc<Route>, ResolveError> {
        if let Some(route) = self.routes.get(model) {
            return Ok(Arc::clone(route));
        }
        if let Some((provider, upstream_model)) = model.split_once('/')
            && self.upstreams.contains_key(provider)
            && !upstream_model.is_empty()
        {
            {
                let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
                let key = (provider.to_string(), upstream_model.to_string());
                if !targets.contains_key(&key)
                    && targets.len() >= self.configured_targets + MAX_PROVIDER_MODEL_TARGETS
                {
                    return Err(ResolveError::TooManyModels {
                        model: model.to_string(),
                        limit: MAX_PROVIDER_MODEL_TARGETS,
                    });
                }
            }
            let mut config = self.default_route.clone();
            config.targets = vec![bulwark_core::config::TargetConfig {
                provider: provider.to_string(),
                model: upstream_model.to_string(),
                context_window: None,
                accepts_prefill: false,
                priority: None,
                weight: 1,
            }];
            return Ok(Arc::new(self.build_route(&config, model)));
        }
        Err(ResolveError::UnknownModel(model.to_string()))
    }

    fn clone_for_resume(&self, sink: Option<AttemptSink>) -> stream::ResumeCtx {
        stream::ResumeCtx {
            budget: Arc::clone(&self.budget),
            events: self.events.clone(),
            sink,
        }
    }
}
