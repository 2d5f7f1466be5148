//! A scripted in-process upstream and a router over such upstreams, with paused
//! tokio time and no jitter.

pub use std::collections::HashMap;
pub use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
pub use std::sync::{Arc, Mutex};
pub use std::time::Duration;

pub use bulwark_core::config::{
    Config, HealthCheckConfig, HedgeAfter, HedgeConfig, HumanDuration, ProviderConfig,
    ProviderKind, RetryBudgetConfig, RetryConfig, RouteConfig, TargetConfig, TimeoutsConfig,
};
pub use bulwark_core::{
    ChatRequest, ChatResponse, ContentBlock, ErrorClass, Message, StopReason, StreamEvent,
    UpstreamError, Usage,
};
pub use bulwark_router::{
    BreakerState, EventStream, Failure, RequestOptions, Route, Router, RouterEvent, Served,
    TargetHealth, Tuning, Upstream,
};
pub use futures::StreamExt;
pub use futures::future::BoxFuture;
pub use tokio::time::Instant;

// ---------------------------------------------------------------------------
// A scripted upstream
// ---------------------------------------------------------------------------

/// What one upstream call does.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Fails before any byte, `after` the call.
    Fail { after: Duration, err: UpstreamError },
    /// Never answers.
    Hang,
    /// `Start` at once, the first token after `ttft`, the others `gap` apart, then `Finish`.
    Answer {
        ttft: Duration,
        tokens: u32,
        gap: Duration,
    },
    /// `Start` at once, reasoning after `ttft`, then after `think` one token and
    /// `Finish`, or `then`'s error mid-stream.
    Reasons {
        ttft: Duration,
        think: Duration,
        then: Option<UpstreamError>,
    },
    /// `Start`, `tokens` text tokens at once, then `err` mid-stream.
    Breaks { tokens: u32, err: UpstreamError },
}

/// What the script sees of a call.
pub struct Ctx {
    /// Caller calls made before this one (probes not counted).
    pub caller_n: usize,
    /// Time since the test began.
    pub at: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    at: Duration,
    probe: bool,
}

pub type Script = Box<dyn Fn(&Ctx) -> Reply + Send + Sync>;

pub struct Scripted {
    epoch: Instant,
    script: Script,
    calls: Mutex<Vec<Call>>,
    /// Calls dropped before they finished (a hedge loser, a timed-out attempt).
    cancelled: Arc<AtomicU32>,
}

impl Scripted {
    pub fn new(
        epoch: Instant,
        script: impl Fn(&Ctx) -> Reply + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Scripted {
            epoch,
            script: Box::new(script),
            calls: Mutex::new(Vec::new()),
            cancelled: Arc::new(AtomicU32::new(0)),
        })
    }

    pub fn record(&self, probe: bool) -> Reply {
        let at = self.epoch.elapsed();
        let mut calls = self.calls.lock().unwrap();
        let caller_n = calls.iter().filter(|c| !c.probe).count();
        calls.push(Call { at, probe });
        drop(calls);
        (self.script)(&Ctx { caller_n, at })
    }

    /// When caller calls (not probes) arrived, in ms since the test began.
    pub fn caller_ms(&self) -> Vec<u64> {
        self.times(false)
    }

    pub fn probe_ms(&self) -> Vec<u64> {
        self.times(true)
    }

    pub fn times(&self, probe: bool) -> Vec<u64> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.probe == probe)
            .map(|c| ms(c.at))
            .collect()
    }

    pub fn cancelled(&self) -> u32 {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// Counts a call as cancelled if it is dropped before it finished.
pub struct Live {
    cancelled: Arc<AtomicU32>,
    done: bool,
}

impl Drop for Live {
    fn drop(&mut self) {
        if !self.done {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

pub fn usage(tokens: u32) -> Usage {
    Usage {
        input_tokens: 5,
        output_tokens: u64::from(tokens),
        ..Usage::default()
    }
}

pub fn answer_stream(
    model: String,
    ttft: Duration,
    tokens: u32,
    gap: Duration,
    live: Live,
) -> EventStream {
    Box::pin(futures::stream::unfold(
        (0u32, live),
        move |(i, mut live)| {
            let model = model.clone();
            async move {
                let event = if i == 0 {
                    StreamEvent::Start {
                        id: "scripted".into(),
                        model,
                    }
                } else if i <= tokens {
                    tokio::time::sleep(if i == 1 { ttft } else { gap }).await;
                    StreamEvent::TextDelta {
                        text: format!("t{i} "),
                    }
                } else if i == tokens + 1 {
                    live.done = true;
                    StreamEvent::Finish {
                        stop_reason: StopReason::EndTurn,
                        stop_sequence: None,
                        usage: usage(tokens),
                    }
                } else {
                    return None;
                };
                Some((Ok(event), (i + 1, live)))
            }
        },
    ))
}

/// A reply that ends in one piece: its error after `after`, never for `Hang`, or
/// its `ttft` slept and its token count.
async fn settle(reply: Reply) -> Result<u32, UpstreamError> {
    match reply {
        Reply::Fail { after, err } => {
            tokio::time::sleep(after).await;
            Err(err)
        }
        Reply::Hang => futures::future::pending().await,
        Reply::Answer { ttft, tokens, .. } => {
            tokio::time::sleep(ttft).await;
            Ok(tokens)
        }
        Reply::Reasons { ttft, think, then } => {
            tokio::time::sleep(ttft + think).await;
            then.map_or(Ok(1), Err)
        }
        Reply::Breaks { err, .. } => Err(err),
    }
}

/// The stream of a [`Reply::Reasons`].
fn reasoning_stream(
    model: String,
    ttft: Duration,
    think: Duration,
    then: Option<UpstreamError>,
    live: Live,
) -> EventStream {
    Box::pin(futures::stream::unfold(
        (0u32, live, then),
        move |(i, mut live, then)| {
            let model = model.clone();
            async move {
                let item = match (i, &then) {
                    (0, _) => Ok(StreamEvent::Start {
                        id: "scripted".into(),
                        model,
                    }),
                    (1, _) => {
                        tokio::time::sleep(ttft).await;
                        Ok(StreamEvent::ThinkingDelta { text: "hmm".into() })
                    }
                    (2, Some(err)) => {
                        tokio::time::sleep(think).await;
                        live.done = true;
                        Err(err.clone())
                    }
                    (2, None) => {
                        tokio::time::sleep(think).await;
                        Ok(StreamEvent::TextDelta { text: "t1 ".into() })
                    }
                    (3, None) => {
                        live.done = true;
                        Ok(StreamEvent::Finish {
                            stop_reason: StopReason::EndTurn,
                            stop_sequence: None,
                            usage: usage(1),
                        })
                    }
                    _ => return None,
                };
                Some((item, (i + 1, live, then)))
            }
        },
    ))
}

impl Upstream for Scripted {
    fn chat<'a>(
        &'a self,
        _req: &'a ChatRequest,
        model: &'a str,
    ) -> BoxFuture<'a, Result<ChatResponse, UpstreamError>> {
        let reply = self.record(true);
        Box::pin(async move {
            let tokens = settle(reply).await?;
            Ok(ChatResponse {
                id: "scripted".into(),
                model: model.to_string(),
                content: vec![ContentBlock::Text { text: "ok".into() }],
                stop_reason: StopReason::EndTurn,
                stop_sequence: None,
                usage: usage(tokens),
            })
        })
    }

    fn chat_stream<'a>(
        &'a self,
        _req: &'a ChatRequest,
        model: &'a str,
    ) -> BoxFuture<'a, Result<EventStream, UpstreamError>> {
        let reply = self.record(false);
        let cancelled = Arc::clone(&self.cancelled);
        Box::pin(async move {
            let mut live = Live {
                cancelled,
                done: false,
            };
            match reply {
                Reply::Fail { after, err } => {
                    tokio::time::sleep(after).await;
                    live.done = true;
                    Err(err)
                }
                Reply::Hang => futures::future::pending().await,
                Reply::Answer { ttft, tokens, gap } => {
                    Ok(answer_stream(model.to_string(), ttft, tokens, gap, live))
                }
                Reply::Reasons { ttft, think, then } => {
                    Ok(reasoning_stream(model.to_string(), ttft, think, then, live))
                }
                Reply::Breaks { tokens, err } => {
                    live.done = true;
                    let start = Ok(StreamEvent::Start {
                        id: "scripted".into(),
                        model: model.to_string(),
                    });
                    let text = (1..=tokens).map(|i| {
                        Ok(StreamEvent::TextDelta {
                            text: format!("t{i} "),
                        })
                    });
                    let events: Vec<_> = std::iter::once(start)
                        .chain(text)
                        .chain(std::iter::once(Err(err)))
                        .collect();
                    Ok(Box::pin(futures::stream::iter(events)) as EventStream)
                }
            }
        })
    }

    /// A count of `tokens`, after `ttft`.
    fn count_tokens<'a>(
        &'a self,
        _req: &'a ChatRequest,
        _model: &'a str,
    ) -> BoxFuture<'a, Result<u64, UpstreamError>> {
        let reply = self.record(false);
        Box::pin(async move { settle(reply).await.map(u64::from) })
    }
}

pub fn ok() -> Reply {
    answer(Duration::from_millis(10))
}

pub fn answer(ttft: Duration) -> Reply {
    Reply::Answer {
        ttft,
        tokens: 3,
        gap: Duration::ZERO,
    }
}

pub fn fail(class: ErrorClass, status: u16) -> Reply {
    Reply::Fail {
        after: Duration::ZERO,
        err: UpstreamError::new(class, format!("scripted {status}")).with_status(status),
    }
}

pub fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

pub fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------
// A router over scripted upstreams
// ---------------------------------------------------------------------------

pub fn provider(name: &str) -> ProviderConfig {
    ProviderConfig {
        name: name.to_string(),
        kind: ProviderKind::OpenaiCompatible,
        api_key: None,
        base_url: Some("http://scripted.invalid/v1".into()),
        headers: Default::default(),
        default_max_tokens: None,
        health_check: None,
    }
}

pub fn target(name: &str) -> TargetConfig {
    TargetConfig {
        provider: name.to_string(),
        model: format!("{name}-model"),
        context_window: None,
        accepts_prefill: false,
        priority: None,
        weight: 1,
    }
}

pub fn route(model: &str, targets: Vec<TargetConfig>) -> RouteConfig {
    RouteConfig {
        model: model.to_string(),
        targets,
        retry: RetryConfig::default(),
        timeouts: TimeoutsConfig::default(),
        circuit_breaker: Default::default(),
        hedge: None,
        resume_streams: false,
        failover_on_content_policy: false,
    }
}

/// A budget that never gets in the way (tests of other things).
pub fn roomy_budget() -> RetryBudgetConfig {
    RetryBudgetConfig {
        ratio: 0.2,
        min_per_second: 1000.0,
    }
}

pub fn tuning() -> Tuning {
    Tuning {
        backoff_jitter: 0.0,
        breaker_jitter: 0.0,
        recovery_probe_interval: Duration::from_secs(5),
    }
}

pub struct Harness {
    pub router: Router,
    pub epoch: Instant,
}

/// Route `chat` with the one target `a`, which answers every call.
pub fn one_target_harness() -> Harness {
    let epoch = Instant::now();
    let a = Scripted::new(epoch, |_| ok());
    harness(
        epoch,
        vec![route("chat", vec![target("a")])],
        &[("a", &a)],
        roomy_budget(),
        tuning(),
    )
}

pub fn harness(
    epoch: Instant,
    routes: Vec<RouteConfig>,
    upstreams: &[(&str, &Arc<Scripted>)],
    budget: RetryBudgetConfig,
    tuning: Tuning,
) -> Harness {
    let providers = upstreams.iter().map(|(n, _)| provider(n)).collect();
    harness_with(epoch, providers, routes, upstreams, budget, tuning)
}

pub fn harness_with(
    epoch: Instant,
    providers: Vec<ProviderConfig>,
    routes: Vec<RouteConfig>,
    upstreams: &[(&str, &Arc<Scripted>)],
    budget: RetryBudgetConfig,
    tuning: Tuning,
) -> Harness {
    let mut config = Config::new(providers, routes);
    config.retry_budget = budget;
    let map: HashMap<String, Arc<dyn Upstream>> = upstreams
        .iter()
        .map(|(n, u)| (n.to_string(), Arc::clone(*u) as Arc<dyn Upstream>))
        .collect();
    Harness {
        router: Router::with_upstreams(&config, map, tuning),
        epoch,
    }
}

pub fn request() -> ChatRequest {
    ChatRequest {
        model: "chat".into(),
        messages: vec![Message::user_text("hi")],
        ..ChatRequest::default()
    }
}

/// Breaker transitions seen: (ms, provider, from, to).
pub type Transitions = Arc<Mutex<Vec<(u64, String, BreakerState, BreakerState)>>>;

impl Harness {
    pub fn route(&self, name: &str) -> Arc<Route> {
        self.router.resolve(name).unwrap()
    }

    pub async fn chat(&self) -> Result<Served<ChatResponse>, Failure> {
        self.chat_on("chat", &RequestOptions::default()).await
    }

    pub async fn chat_on(
        &self,
        route: &str,
        opts: &RequestOptions,
    ) -> Result<Served<ChatResponse>, Failure> {
        self.router.chat(&self.route(route), &request(), opts).await
    }

    pub fn health(&self, provider: &str) -> Arc<TargetHealth> {
        self.router
            .targets()
            .into_iter()
            .find(|t| t.provider == provider)
            .unwrap()
    }

    pub fn now_ms(&self) -> u64 {
        ms(self.epoch.elapsed())
    }

    pub async fn sleep_until_ms(&self, at: u64) {
        tokio::time::sleep_until(self.epoch + millis(at)).await;
    }

    /// Breaker transitions as (ms, provider, from, to), recorded as they happen.
    pub fn watch_breakers(&self) -> Transitions {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut events = self.router.subscribe();
        let epoch = self.epoch;
        let out = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                if let RouterEvent::Breaker {
                    provider, from, to, ..
                } = event
                {
                    out.lock()
                        .unwrap()
                        .push((ms(epoch.elapsed()), provider, from, to));
                }
            }
        });
        seen
    }
}
