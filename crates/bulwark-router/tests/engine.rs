//! The failover loop under paused tokio time, against scripted in-process upstreams:
//! backoff spacing, server waits and the deadline, breaker timing with recovery
//! probes, all-open fallback, hedging, sticky sessions, weighted balancing,
//! context-window routing and quota blocks. Jitter is off (`Tuning`), so every
//! time asserted here is exact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_core::config::{
    Config, HedgeAfter, HedgeConfig, HumanDuration, ProviderConfig, ProviderKind,
    RetryBudgetConfig, RetryConfig, RouteConfig, TargetConfig, TimeoutsConfig, default_listen,
};
use bulwark_core::{
    ChatRequest, ChatResponse, ContentBlock, ErrorClass, Message, StopReason, StreamEvent,
    UpstreamError, Usage,
};
use bulwark_router::{
    BreakerState, EventStream, Failure, RequestOptions, Route, Router, RouterEvent, Served,
    TargetHealth, Tuning, Upstream,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::time::Instant;

// ---------------------------------------------------------------------------
// A scripted upstream
// ---------------------------------------------------------------------------

/// What one upstream call does.
#[derive(Debug, Clone)]
enum Reply {
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
}

/// What the script sees of a call.
struct Ctx {
    /// Caller calls made before this one (probes not counted).
    caller_n: usize,
    /// Time since the test began.
    at: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Call {
    at: Duration,
    probe: bool,
}

type Script = Box<dyn Fn(&Ctx) -> Reply + Send + Sync>;

struct Scripted {
    epoch: Instant,
    script: Script,
    calls: Mutex<Vec<Call>>,
    /// Calls dropped before they finished (a hedge loser, a timed-out attempt).
    cancelled: Arc<AtomicU32>,
}

impl Scripted {
    fn new(epoch: Instant, script: impl Fn(&Ctx) -> Reply + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Scripted {
            epoch,
            script: Box::new(script),
            calls: Mutex::new(Vec::new()),
            cancelled: Arc::new(AtomicU32::new(0)),
        })
    }

    fn record(&self, probe: bool) -> Reply {
        let at = self.epoch.elapsed();
        let mut calls = self.calls.lock().unwrap();
        let caller_n = calls.iter().filter(|c| !c.probe).count();
        calls.push(Call { at, probe });
        drop(calls);
        (self.script)(&Ctx { caller_n, at })
    }

    /// When caller calls (not probes) arrived, in ms since the test began.
    fn caller_ms(&self) -> Vec<u64> {
        self.times(false)
    }

    fn probe_ms(&self) -> Vec<u64> {
        self.times(true)
    }

    fn times(&self, probe: bool) -> Vec<u64> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.probe == probe)
            .map(|c| ms(c.at))
            .collect()
    }

    fn cancelled(&self) -> u32 {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// Counts a call as cancelled if it is dropped before it finished.
struct Live {
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

fn usage(tokens: u32) -> Usage {
    Usage {
        input_tokens: 5,
        output_tokens: u64::from(tokens),
        ..Usage::default()
    }
}

fn answer_stream(
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

impl Upstream for Scripted {
    fn chat<'a>(
        &'a self,
        _req: &'a ChatRequest,
        model: &'a str,
    ) -> BoxFuture<'a, Result<ChatResponse, UpstreamError>> {
        let reply = self.record(true);
        Box::pin(async move {
            match reply {
                Reply::Fail { after, err } => {
                    tokio::time::sleep(after).await;
                    Err(err)
                }
                Reply::Hang => futures::future::pending().await,
                Reply::Answer { ttft, tokens, .. } => {
                    tokio::time::sleep(ttft).await;
                    Ok(ChatResponse {
                        id: "scripted".into(),
                        model: model.to_string(),
                        content: vec![ContentBlock::Text { text: "ok".into() }],
                        stop_reason: StopReason::EndTurn,
                        stop_sequence: None,
                        usage: usage(tokens),
                    })
                }
            }
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
            }
        })
    }
}

fn ok() -> Reply {
    answer(Duration::from_millis(10))
}

fn answer(ttft: Duration) -> Reply {
    Reply::Answer {
        ttft,
        tokens: 3,
        gap: Duration::ZERO,
    }
}

fn fail(class: ErrorClass, status: u16) -> Reply {
    Reply::Fail {
        after: Duration::ZERO,
        err: UpstreamError::new(class, format!("scripted {status}")).with_status(status),
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------
// A router over scripted upstreams
// ---------------------------------------------------------------------------

fn provider(name: &str) -> ProviderConfig {
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

fn target(name: &str) -> TargetConfig {
    TargetConfig {
        provider: name.to_string(),
        model: format!("{name}-model"),
        context_window: None,
        accepts_prefill: false,
        priority: None,
        weight: 1,
    }
}

fn route(model: &str, targets: Vec<TargetConfig>) -> RouteConfig {
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
fn roomy_budget() -> RetryBudgetConfig {
    RetryBudgetConfig {
        ratio: 0.2,
        min_per_second: 1000.0,
    }
}

fn tuning() -> Tuning {
    Tuning {
        backoff_jitter: 0.0,
        breaker_jitter: 0.0,
        recovery_probe_interval: Duration::from_secs(5),
    }
}

struct Harness {
    router: Router,
    epoch: Instant,
}

fn harness(
    epoch: Instant,
    routes: Vec<RouteConfig>,
    upstreams: &[(&str, &Arc<Scripted>)],
    budget: RetryBudgetConfig,
    tuning: Tuning,
) -> Harness {
    let config = Config {
        listen: default_listen(),
        providers: upstreams.iter().map(|(n, _)| provider(n)).collect(),
        routes,
        retry_budget: budget,
    };
    let map: HashMap<String, Arc<dyn Upstream>> = upstreams
        .iter()
        .map(|(n, u)| (n.to_string(), Arc::clone(*u) as Arc<dyn Upstream>))
        .collect();
    Harness {
        router: Router::with_upstreams(&config, map, tuning),
        epoch,
    }
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "chat".into(),
        messages: vec![Message::user_text("hi")],
        ..ChatRequest::default()
    }
}

impl Harness {
    fn route(&self, name: &str) -> Arc<Route> {
        self.router.resolve(name).unwrap()
    }

    async fn chat(&self) -> Result<Served<ChatResponse>, Failure> {
        self.chat_on("chat", &RequestOptions::default()).await
    }

    async fn chat_on(
        &self,
        route: &str,
        opts: &RequestOptions,
    ) -> Result<Served<ChatResponse>, Failure> {
        self.router.chat(&self.route(route), &request(), opts).await
    }

    fn health(&self, provider: &str) -> Arc<TargetHealth> {
        self.router
            .targets()
            .into_iter()
            .find(|t| t.provider == provider)
            .unwrap()
    }

    fn now_ms(&self) -> u64 {
        ms(self.epoch.elapsed())
    }

    async fn sleep_until_ms(&self, at: u64) {
        tokio::time::sleep_until(self.epoch + millis(at)).await;
    }

    /// Breaker transitions as (ms, provider, from, to), recorded as they happen.
    fn watch_breakers(&self) -> Arc<Mutex<Vec<(u64, String, BreakerState, BreakerState)>>> {
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

// ---------------------------------------------------------------------------
// Retries, waits and the deadline
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn transient_failures_back_off_exponentially_then_fail_over() {
    let epoch = Instant::now();
    let a = Scripted::new(epoch, |_| fail(ErrorClass::Transient, 503));
    let b = Scripted::new(epoch, |_| ok());
    let mut r = route("chat", vec![target("a"), target("b")]);
    r.retry = RetryConfig {
        max_attempts: 4,
        base_delay: HumanDuration::millis(500),
        max_delay: HumanDuration::secs(8),
    };
    let h = harness(
        epoch,
        vec![r],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    );
    let served = h.chat().await.unwrap();
    assert_eq!(served.provider, "b");
    assert_eq!(served.attempts, 5);
    // Without jitter each wait is the ceiling: 500 ms, 1 s, 2 s.
    assert_eq!(a.caller_ms(), [0, 500, 1500, 3500]);
    assert_eq!(b.caller_ms(), [3500]);
}

#[tokio::test(start_paused = true)]
async fn full_jitter_spreads_retries_over_the_whole_window() {
    let epoch = Instant::now();
    // Every other call fails, so each request is one failure and one retry.
    let a = Scripted::new(epoch, |c| {
        if c.caller_n % 2 == 0 {
            fail(ErrorClass::Transient, 500)
        } else {
            ok()
        }
    });
    let mut r = route("chat", vec![target("a")]);
    // Half the calls fail: keep the breaker out of this one.
    r.circuit_breaker.consecutive_failures = 1000;
    r.circuit_breaker.min_calls = 100_000;
    let jittered = Tuning {
        backoff_jitter: 1.0,
        ..tuning()
    };
    let h = harness(epoch, vec![r], &[("a", &a)], roomy_budget(), jittered);
    for _ in 0..200 {
        assert_eq!(h.chat().await.unwrap().provider, "a");
    }
    let times = a.caller_ms();
    let waits: Vec<u64> = times.chunks(2).map(|p| p[1] - p[0]).collect();
    assert_eq!(waits.len(), 200);
    // uniform(0, 500 ms): inside the window, and spread across it.
    assert!(waits.iter().all(|w| *w <= 500), "{waits:?}");
    assert!(waits.iter().filter(|w| **w < 125).count() > 20, "{waits:?}");
    assert!(waits.iter().filter(|w| **w > 375).count() > 20, "{waits:?}");
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_when_it_fits_the_deadline() {
    let epoch = Instant::now();
    let a = Scripted::new(epoch, |c| {
        if c.caller_n == 0 {
            Reply::Fail {
                after: Duration::ZERO,
                err: UpstreamError::new(ErrorClass::Throttled, "slow down")
                    .with_status(429)
                    .with_retry_after(Some(Duration::from_secs(2))),
            }
        } else {
            ok()
        }
    });
    let b = Scripted::new(epoch, |_| ok());
    let r = route("chat", vec![target("a"), target("b")]);
    let h = harness(
        epoch,
        vec![r],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    );
    let served = h.chat().await.unwrap();
    assert_eq!(served.provider, "a");
    assert_eq!(
        a.caller_ms(),
        [0, 2000],
        "the retry waits exactly Retry-After"
    );
    assert!(b.caller_ms().is_empty());
}

#[tokio::test(start_paused = true)]
async fn retry_after_past_the_deadline_fails_over_at_once_and_skips_the_target_until_reset() {
    let epoch = Instant::now();
    let a = Scripted::new(epoch, |c| {
        if c.caller_n == 0 {
            Reply::Fail {
                after: Duration::ZERO,
                err: UpstreamError::new(ErrorClass::Throttled, "slow down")
                    .with_status(429)
                    .with_retry_after(Some(Duration::from_secs(30))),
            }
        } else {
            ok()
        }
    });
    let b = Scripted::new(epoch, |_| ok());
    let mut r = route("chat", vec![target("a"), target("b")]);
    r.timeouts.total = HumanDuration::secs(10);
    let h = harness(
        epoch,
        vec![r],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    );

    let served = h.chat().await.unwrap();
    assert_eq!(served.provider, "b");
    assert_eq!(b.caller_ms(), [0], "no wait before failing over");
    // Until its reset the throttled target gets no traffic at all.
    h.sleep_until_ms(5_000).await;
    assert_eq!(h.chat().await.unwrap().provider, "b");
    h.sleep_until_ms(29_000).await;
    assert_eq!(h.chat().await.unwrap().provider, "b");
    assert_eq!(a.caller_ms(), [0]);
    h.sleep_until_ms(30_001).await;
    assert_eq!(h.chat().await.unwrap().provider, "a");
    assert_eq!(a.caller_ms(), [0, 30_001]);
}

#[tokio::test(start_paused = true)]
async fn one_deadline_covers_attempts_backoffs_and_failovers() {
    let epoch = Instant::now();
    let a = Scripted::new(epoch, |_| fail(ErrorClass::Transient, 503));
    let b = Scripted::new(epoch, |_| Reply::Hang);
    let mut r = route("chat", vec![target("a"), target("b")]);
    r.retry = RetryConfig {
        max_attempts: 3,
        base_delay: HumanDuration::secs(2),
        max_delay: HumanDuration::secs(8),
    };
    r.timeouts.first_token = HumanDuration::secs(2);
    r.timeouts.total = HumanDuration::secs(10);
    let h = harness(
        epoch,
        vec![r],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    );

    // The caller's own deadline (x-bulwark-timeout) of 3 s: a at 0, a again after the
    // 2 s backoff, the next 4 s backoff does not fit so b at 2 s; b's first-token
    // timeout is cut to the 1 s left.
    let opts = RequestOptions {
        timeout: Some(Duration::from_secs(3)),
        session: None,
    };
    let failure = h.chat_on("chat", &opts).await.unwrap_err();
    assert_eq!(h.now_ms(), 3000);
    assert_eq!(failure.error.class, ErrorClass::Timeout);
    assert_eq!(failure.attempts, 3);
    assert_eq!(a.caller_ms(), [0, 2000]);
    assert_eq!(b.caller_ms(), [2000]);
    assert_eq!(
        b.cancelled(),
        1,
        "the hanging attempt is dropped at the deadline"
    );

    // Without a caller deadline the route's total (10 s) bounds the same sequence.
    let start = h.now_ms();
    let failure = h.chat().await.unwrap_err();
    assert!(h.now_ms() - start <= 10_000, "{}", h.now_ms() - start);
    assert!(failure.error.retry_after.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_target_that_timed_out_is_not_retried_in_the_same_request() {
    let epoch = Instant::now();
    let a = Scripted::new(epoch, |_| Reply::Hang);
    let b = Scripted::new(epoch, |_| ok());
    let mut r = route("chat", vec![target("a"), target("b")]);
    r.timeouts.first_token = HumanDuration::secs(1);
    let h = harness(
        epoch,
        vec![r],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    );
    let served = h.chat().await.unwrap();
    assert_eq!(served.provider, "b");
    assert_eq!(a.caller_ms(), [0]);
    assert_eq!(b.caller_ms(), [1000]);
    assert_eq!(h.now_ms(), 1010);
}

// ---------------------------------------------------------------------------
// Circuit breaker
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn breaker_opens_on_consecutive_failures_sees_only_probes_while_open_and_closes_after_recovery()
 {
    let epoch = Instant::now();
    // a is down until t = 50 s (probes too); b is healthy.
    let a = Scripted::new(epoch, |c| {
        if c.at < Duration::from_secs(50) {
            fail(ErrorClass::Transient, 503)
        } else {
            ok()
        }
    });
    let b = Scripted::new(epoch, |_| ok());
    let mut r = route("chat", vec![target("a"), target("b")]);
    r.retry.max_attempts = 1;
    // Defaults: 5 consecutive failures, open 30 s × trips, one half-open trial.
    let probing = Tuning {
        recovery_probe_interval: Duration::from_secs(7),
        ..tuning()
    };
    let h = harness(
        epoch,
        vec![r],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        probing,
    );
    let transitions = h.watch_breakers();

    let mut served_by = Vec::new();
    for k in 0..=60u64 {
        h.sleep_until_ms(500 + k * 1000).await;
        served_by.push(h.chat().await.unwrap().provider);
        if k == 40 {
            assert_eq!(h.health("a").breaker.state(), BreakerState::Open);
        }
    }
    tokio::task::yield_now().await;

    // Caller traffic reaches a only while its breaker is closed or half-open:
    // 5 failures open it at 4.5 s; the half-open trial at 34.5 s fails (open again,
    // now for 60 s); a good probe at 53.5 s half-opens it (when its answer is in,
    // 10 ms later); the next request's trial at 54.5 s closes it.
    let mut expected_callers = vec![500, 1500, 2500, 3500, 4500, 34_500];
    expected_callers.extend((54..=60).map(|s| s * 1000 + 500));
    assert_eq!(a.caller_ms(), expected_callers);
    // Probes every 7 s from the opening while it is out of service.
    assert_eq!(
        a.probe_ms(),
        [11_500, 18_500, 25_500, 32_500, 39_500, 46_500, 53_500]
    );
    use BreakerState::{Closed, HalfOpen, Open};
    let a_transitions: Vec<_> = transitions
        .lock()
        .unwrap()
        .iter()
        .filter(|t| t.1 == "a")
        .map(|t| (t.0, t.2, t.3))
        .collect();
    assert_eq!(
        a_transitions,
        [
            (4500, Closed, Open),
            (34_500, Open, HalfOpen),
            (34_500, HalfOpen, Open),
            (53_510, Open, HalfOpen),
            (54_510, HalfOpen, Closed),
        ]
    );
    // Every request was answered: by b while a was out, by a once it closed.
    assert!(served_by[..54].iter().all(|p| p == "b"), "{served_by:?}");
    assert!(served_by[54..].iter().all(|p| p == "a"), "{served_by:?}");
    assert!(b.probe_ms().is_empty());
}

#[tokio::test(start_paused = true)]
async fn when_every_target_is_open_the_one_opened_longest_ago_is_tried() {
    let epoch = Instant::now();
    let a = Scripted::new(epoch, |_| fail(ErrorClass::Transient, 503));
    // b fails its first two calls, then would answer.
    let b = Scripted::new(epoch, |c| {
        if c.caller_n < 2 {
            fail(ErrorClass::Transient, 503)
        } else {
            ok()
        }
    });
    let mut chat = route("chat", vec![target("a"), target("b")]);
    chat.retry.max_attempts = 2;
    chat.circuit_breaker.consecutive_failures = 2;
    let mut b_only = route("b-only", vec![target("b")]);
    b_only.retry.max_attempts = 1;
    b_only.circuit_breaker.consecutive_failures = 2;
    let h = harness(
        epoch,
        vec![chat, b_only],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    );
    // b opens first (t = 0, through the route that only has b) ...
    let opts = RequestOptions::default();
    assert!(h.chat_on("b-only", &opts).await.is_err());
    assert!(h.chat_on("b-only", &opts).await.is_err());
    assert_eq!(h.health("b").breaker.state(), BreakerState::Open);
    // ... then a (t = 1 s and, after one backoff, 1.5 s), which the route lists first.
    h.sleep_until_ms(1000).await;
    assert!(h.chat().await.is_err());
    assert_eq!(h.health("a").breaker.state(), BreakerState::Open);
    assert_eq!(a.caller_ms(), [1000, 1500]);

    // Both open: rather than refuse, the one that opened longest ago (b) gets a trial.
    h.sleep_until_ms(2000).await;
    let served = h.chat().await.unwrap();
    assert_eq!(served.provider, "b");
    assert_eq!(served.attempts, 1);
    assert_eq!(b.caller_ms(), [0, 0, 2000]);
    assert_eq!(a.caller_ms(), [1000, 1500]);
    assert_eq!(h.health("b").breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn in_a_total_outage_one_forced_trial_at_a_time_and_everyone_else_is_refused_at_once() {
    let epoch = Instant::now();
    // Both fail fast twice (opening their breakers), then hang.
    let script = |c: &Ctx| {
        if c.caller_n < 2 {
            fail(ErrorClass::Transient, 503)
        } else {
            Reply::Hang
        }
    };
    let a = Scripted::new(epoch, script);
    let b = Scripted::new(epoch, script);
    let mut r = route("chat", vec![target("a"), target("b")]);
    r.retry.max_attempts = 2;
    r.circuit_breaker.consecutive_failures = 2;
    r.timeouts.first_token = HumanDuration::secs(5);
    let h = Arc::new(harness(
        epoch,
        vec![r],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    ));
    assert!(h.chat().await.is_err());
    assert_eq!(h.health("a").breaker.state(), BreakerState::Open);
    assert_eq!(h.health("b").breaker.state(), BreakerState::Open);

    // a opened at 0.5 s, b (after a's retry and its own) at 1 s.
    h.sleep_until_ms(2000).await;
    let mut callers = Vec::new();
    for _ in 0..10 {
        let h = Arc::clone(&h);
        callers.push(tokio::spawn(async move {
            let failure = h.chat().await.unwrap_err();
            (h.now_ms(), failure.attempts, failure.error.retry_after)
        }));
    }
    let mut finished = Vec::new();
    for c in callers {
        finished.push(c.await.unwrap());
    }
    finished.sort();
    // a (opened first) and b each get one trial, which hangs to the first-token
    // timeout; the other eight are refused at once, with a wait to retry after.
    let waited: Vec<_> = finished.iter().filter(|f| f.0 == 7000).collect();
    let refused: Vec<_> = finished.iter().filter(|f| f.0 == 2000).collect();
    assert_eq!(waited.len(), 2, "{finished:?}");
    assert_eq!(refused.len(), 8, "{finished:?}");
    assert!(refused.iter().all(|f| f.1 == 0 && f.2.is_some()));
    assert_eq!(a.caller_ms(), [0, 500, 2000]);
    assert_eq!(b.caller_ms(), [500, 1000, 2000]);
}

// ---------------------------------------------------------------------------
// Hedging
// ---------------------------------------------------------------------------

fn hedged(after: HedgeAfter) -> RouteConfig {
    let mut r = route("chat", vec![target("a"), target("b")]);
    r.hedge = Some(HedgeConfig { after });
    r
}

#[tokio::test(start_paused = true)]
async fn a_hedge_goes_out_after_the_delay_and_the_first_byte_wins_on_a_stream() {
    let epoch = Instant::now();
    let a = Scripted::new(epoch, |_| answer(millis(1000)));
    let b = Scripted::new(epoch, |_| answer(millis(100)));
    let h = harness(
        epoch,
        vec![hedged(HedgeAfter::Fixed(millis(200)))],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    );
    let mut req = request();
    req.stream = true;
    let served = h
        .router
        .chat_stream(&h.route("chat"), &req, &RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(h.now_ms(), 300, "committed at b's first byte");
    assert_eq!(served.provider, "b");
    assert_eq!(served.attempts, 2);
    assert_eq!(a.caller_ms(), [0]);
    assert_eq!(b.caller_ms(), [200]);
    assert_eq!(a.cancelled(), 1, "the loser is cancelled");
    let events: Vec<_> = served.value.collect().await;
    assert!(matches!(
        events.last(),
        Some(Ok(StreamEvent::Finish { .. }))
    ));
}

#[tokio::test(start_paused = true)]
async fn for_a_json_caller_too_the_first_byte_wins_not_the_first_to_finish() {
    let epoch = Instant::now();
    // a: first byte at 300 ms, then slow (done at 1.1 s); b (sent at 200 ms): first
    // byte at 400 ms, done at once. a produced the first byte, so a wins.
    let a = Scripted::new(epoch, |_| Reply::Answer {
        ttft: millis(300),
        tokens: 5,
        gap: millis(200),
    });
    let b = Scripted::new(epoch, |_| answer(millis(200)));
    let h = harness(
        epoch,
        vec![hedged(HedgeAfter::Fixed(millis(200)))],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    );
    let served = h.chat().await.unwrap();
    assert_eq!(served.provider, "a");
    assert_eq!(served.value.text(), "t1 t2 t3 t4 t5 ");
    assert_eq!(h.now_ms(), 1100);
    assert_eq!(b.caller_ms(), [200]);
    assert_eq!(
        b.cancelled(),
        1,
        "the loser is cancelled at the winner's first byte"
    );
    assert_eq!(a.cancelled(), 0);
}

#[tokio::test(start_paused = true)]
async fn hedges_spend_the_retry_budget() {
    let epoch = Instant::now();
    let a = Scripted::new(epoch, |_| answer(millis(1000)));
    let b = Scripted::new(epoch, |_| answer(millis(100)));
    let empty = RetryBudgetConfig {
        ratio: 0.0,
        min_per_second: 0.0,
    };
    let h = harness(
        epoch,
        vec![hedged(HedgeAfter::Fixed(millis(200)))],
        &[("a", &a), ("b", &b)],
        empty,
        tuning(),
    );
    let served = h.chat().await.unwrap();
    assert_eq!(served.provider, "a");
    assert_eq!(served.attempts, 1);
    assert!(b.caller_ms().is_empty(), "no budget, no hedge");
    assert_eq!(h.now_ms(), 1000);
}

#[tokio::test(start_paused = true)]
async fn a_p95_hedge_fires_at_the_observed_95th_percentile_time_to_first_token() {
    let epoch = Instant::now();
    let a = Scripted::new(epoch, |c| {
        if c.caller_n < 20 {
            answer(millis(100))
        } else {
            answer(millis(2000))
        }
    });
    let b = Scripted::new(epoch, |_| answer(millis(50)));
    let h = harness(
        epoch,
        vec![hedged(HedgeAfter::P95)],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    );
    for _ in 0..20 {
        assert_eq!(h.chat().await.unwrap().provider, "a");
    }
    assert!(b.caller_ms().is_empty(), "no hedge while a is on time");
    let start = h.now_ms();
    let served = h.chat().await.unwrap();
    assert_eq!(served.provider, "b");
    assert_eq!(b.caller_ms(), [start + 100], "hedged at a's p95 (100 ms)");
    assert_eq!(h.now_ms() - start, 150);
}

// ---------------------------------------------------------------------------
// Target choice
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_session_keeps_to_its_target_while_it_is_healthy() {
    let epoch = Instant::now();
    let down = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
    let script = |i: usize| {
        let down = Arc::clone(&down);
        move |_: &Ctx| {
            if down[i].load(Ordering::SeqCst) {
                fail(ErrorClass::Transient, 503)
            } else {
                ok()
            }
        }
    };
    let a = Scripted::new(epoch, script(0));
    let b = Scripted::new(epoch, script(1));
    let mut r = route("chat", vec![target("a"), target("b")]);
    r.targets[0].priority = Some(0);
    r.targets[1].priority = Some(0);
    r.retry.max_attempts = 1;
    let h = harness(
        epoch,
        vec![r],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    );
    let session = RequestOptions {
        timeout: None,
        session: Some("s1".into()),
    };

    let first = h.chat_on("chat", &session).await.unwrap().provider;
    for _ in 0..30 {
        assert_eq!(h.chat_on("chat", &session).await.unwrap().provider, first);
    }
    // Without a session, the two share the traffic.
    let mut anonymous = HashMap::<String, u32>::new();
    for _ in 0..40 {
        let p = h.chat().await.unwrap().provider;
        *anonymous.entry(p).or_default() += 1;
    }
    assert_eq!(anonymous.len(), 2, "{anonymous:?}");

    // The session's target fails: the session moves to the other and stays there,
    // even after the first one is back.
    let (i, other) = if first == "a" { (0, "b") } else { (1, "a") };
    down[i].store(true, Ordering::SeqCst);
    assert_eq!(h.chat_on("chat", &session).await.unwrap().provider, other);
    down[i].store(false, Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(h.chat_on("chat", &session).await.unwrap().provider, other);
    }
}

#[tokio::test(start_paused = true)]
async fn targets_of_equal_priority_share_traffic_by_weight() {
    let epoch = Instant::now();
    let a = Scripted::new(epoch, |_| ok());
    let b = Scripted::new(epoch, |_| ok());
    let c = Scripted::new(epoch, |_| ok());
    let mut r = route("chat", vec![target("a"), target("b"), target("c")]);
    r.targets[0].priority = Some(1);
    r.targets[0].weight = 3;
    r.targets[1].priority = Some(1);
    r.targets[1].weight = 1;
    // A lower priority value goes first... but c is the backup here.
    r.targets[2].priority = Some(2);
    let h = harness(
        epoch,
        vec![r],
        &[("a", &a), ("b", &b), ("c", &c)],
        roomy_budget(),
        tuning(),
    );
    for _ in 0..400 {
        h.chat().await.unwrap();
    }
    let (na, nb) = (a.caller_ms().len(), b.caller_ms().len());
    assert_eq!(na + nb, 400);
    // Expected 300 / 100 (σ ≈ 8.7).
    assert!((260..=340).contains(&na), "a served {na}, b {nb}");
    assert!(c.caller_ms().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_context_window_overflow_goes_only_to_a_larger_declared_window() {
    let epoch = Instant::now();
    let too_long = || Reply::Fail {
        after: Duration::ZERO,
        err: UpstreamError::new(ErrorClass::ContextWindow, "prompt is too long").with_status(400),
    };
    let a = Scripted::new(epoch, move |_| too_long());
    let b = Scripted::new(epoch, |_| ok());
    let c = Scripted::new(epoch, |_| ok());
    let mut big = route("chat", vec![target("a"), target("b"), target("c")]);
    big.targets[0].context_window = Some(8_000);
    big.targets[1].context_window = Some(8_000);
    big.targets[2].context_window = Some(200_000);
    let mut small = route("small", vec![target("a"), target("b")]);
    small.targets[0].context_window = Some(8_000);
    let h = harness(
        epoch,
        vec![big, small],
        &[("a", &a), ("b", &b), ("c", &c)],
        roomy_budget(),
        tuning(),
    );
    let served = h.chat().await.unwrap();
    assert_eq!(served.provider, "c");
    assert_eq!(served.attempts, 2);
    assert_eq!(a.caller_ms().len(), 1, "never retried on the same model");
    assert!(b.caller_ms().is_empty(), "b's window is no larger");

    // No target declares a larger window: a clean context-window error, one attempt.
    let failure = h
        .chat_on("small", &RequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(failure.error.class, ErrorClass::ContextWindow);
    assert_eq!(failure.attempts, 1);
    assert_eq!(failure.error.message, "prompt is too long");
    assert!(b.caller_ms().is_empty());
}

#[tokio::test(start_paused = true)]
async fn quota_makes_a_target_unusable_until_a_probe_clears_it() {
    let epoch = Instant::now();
    let out_of_quota = || Reply::Fail {
        after: Duration::ZERO,
        err: UpstreamError::new(ErrorClass::Quota, "insufficient_quota")
            .with_status(429)
            .with_code("insufficient_quota"),
    };
    // Out of quota until the operator tops it up at t = 17 s.
    let a = Scripted::new(epoch, move |c| {
        if c.at < Duration::from_secs(17) {
            out_of_quota()
        } else {
            ok()
        }
    });
    let b = Scripted::new(epoch, |_| ok());
    let r = route("chat", vec![target("a"), target("b")]);
    let h = harness(
        epoch,
        vec![r],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    );

    h.sleep_until_ms(500).await;
    let served = h.chat().await.unwrap();
    assert_eq!(served.provider, "b");
    assert_eq!(a.caller_ms(), [500], "no retry on quota");
    let mut served_by = Vec::new();
    for s in 1..=25u64 {
        h.sleep_until_ms(s * 1000).await;
        served_by.push(h.chat().await.unwrap().provider);
    }
    // Probes every 5 s from the mark; the one at 20.5 s succeeds and clears it.
    assert_eq!(a.probe_ms(), [5500, 10_500, 15_500, 20_500]);
    let mut expected = vec![500];
    expected.extend((21..=25).map(|s| s * 1000));
    assert_eq!(a.caller_ms(), expected);
    assert!(served_by[..20].iter().all(|p| p == "b"), "{served_by:?}");
    assert!(served_by[20..].iter().all(|p| p == "a"), "{served_by:?}");
    assert_eq!(
        h.health("a").breaker.state(),
        BreakerState::Closed,
        "quota is not a health failure"
    );
}
