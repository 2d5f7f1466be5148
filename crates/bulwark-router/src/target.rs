//! What the router knows about one target (a provider and an upstream model): its
//! circuit breaker, throttle and quota marks, recent time-to-first-token samples, and
//! the recovery prober that watches it while it is out of service.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_core::{ChatRequest, ErrorClass, Message};
use futures::future::BoxFuture;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::breaker::{BreakerSettings, BreakerState, CircuitBreaker, Transition};
use crate::{EventStream, RouterEvent, Upstream};

/// The text of a health probe request (recognisable in upstream logs).
pub const PROBE_TEXT: &str = "bulwark health probe: reply with one word";

/// Samples of time to first token kept for percentiles.
const TTFT_SAMPLES: usize = 100;

/// Live state of one target, shared by every route that uses it.
pub struct TargetHealth {
    pub provider: String,
    pub model: String,
    pub upstream: Arc<dyn Upstream>,
    pub breaker: CircuitBreaker,
    throttled_until: Mutex<Option<Instant>>,
    quota_blocked: AtomicBool,
    ttft: Mutex<VecDeque<Duration>>,
    pub in_flight: AtomicU32,
    prober_running: AtomicBool,
    probe: ProbeSettings,
    events: tokio::sync::broadcast::Sender<RouterEvent>,
}

/// How the target is probed while it is out of service (and, when `always`, all the time).
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub interval: Duration,
    pub timeout: Duration,
    /// Active health checks configured: probe on the interval even while healthy.
    pub always: bool,
}

impl std::fmt::Debug for TargetHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetHealth")
            .field("provider", &self.provider)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl TargetHealth {
    pub fn new(
        provider: String,
        model: String,
        upstream: Arc<dyn Upstream>,
        breaker: BreakerSettings,
        probe: ProbeSettings,
        events: tokio::sync::broadcast::Sender<RouterEvent>,
    ) -> Self {
        TargetHealth {
            provider,
            model,
            upstream,
            breaker: CircuitBreaker::new(breaker),
            throttled_until: Mutex::new(None),
            quota_blocked: AtomicBool::new(false),
            ttft: Mutex::new(VecDeque::with_capacity(TTFT_SAMPLES)),
            in_flight: AtomicU32::new(0),
            prober_running: AtomicBool::new(false),
            probe,
            events,
        }
    }

    /// The time until which the provider asked not to be called, if still ahead.
    pub fn throttled_until(&self) -> Option<Instant> {
        let guard = self
            .throttled_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        guard.filter(|t| *t > Instant::now())
    }

    pub fn mark_throttled(&self, until: Instant) {
        let mut guard = self
            .throttled_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if guard.is_none_or(|t| t < until) {
            *guard = Some(until);
        }
    }

    pub fn quota_blocked(&self) -> bool {
        self.quota_blocked.load(Ordering::Relaxed)
    }

    /// Quota or billing exhausted: unusable until a probe (or an operator) clears it.
    pub fn mark_quota_blocked(self: &Arc<Self>) {
        if !self.quota_blocked.swap(true, Ordering::Relaxed) {
            warn!(provider = %self.provider, model = %self.model, "target out of quota; probing until it recovers");
            self.ensure_prober();
        }
    }

    /// Clears the quota mark (an operator's action, or a good probe).
    pub fn clear_quota_block(&self) {
        self.quota_blocked.store(false, Ordering::Relaxed);
    }

    pub fn record_ttft(&self, ttft: Duration) {
        let mut samples = self.ttft.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == TTFT_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(ttft);
    }

    /// A percentile (0–100) of the recent times to first token.
    pub fn ttft_percentile(&self, p: f64) -> Option<Duration> {
        let samples = self.ttft.lock().unwrap_or_else(|e| e.into_inner());
        if samples.is_empty() {
            return None;
        }
        let mut sorted: Vec<Duration> = samples.iter().copied().collect();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted.get(rank.min(sorted.len() - 1)).copied()
    }

    /// Publishes a breaker transition and starts the prober when the breaker opened.
    pub fn on_transition(self: &Arc<Self>, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        info!(
            provider = %self.provider,
            model = %self.model,
            from = t.from.label(),
            to = t.to.label(),
            "circuit breaker"
        );
        let _ = self.events.send(RouterEvent::Breaker {
            provider: self.provider.clone(),
            model: self.model.clone(),
            from: t.from,
            to: t.to,
        });
        if t.to == BreakerState::Open {
            self.ensure_prober();
        }
    }

    /// Starts the background prober unless it runs already. It probes every
    /// `interval` while the target is out of service (or always, with active checks).
    pub fn ensure_prober(self: &Arc<Self>) {
        if self.prober_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.prober_running.store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(self);
        handle.spawn(async move {
            loop {
                let Some(interval) = weak.upgrade().map(|t| t.probe.interval) else {
                    return;
                };
                tokio::time::sleep(interval).await;
                let Some(target) = weak.upgrade() else { return };
                let out_of_service =
                    target.breaker.state() == BreakerState::Open || target.quota_blocked();
                if !out_of_service && !target.probe.always {
                    target.prober_running.store(false, Ordering::Release);
                    return;
                }
                target.probe_once().await;
            }
        });
    }

    /// Sends one probe and applies its result.
    pub async fn probe_once(self: &Arc<Self>) -> bool {
        let request = probe_request();
        let result = tokio::time::timeout(
            self.probe.timeout,
            self.upstream.chat(&request, &self.model),
        )
        .await;
        let ok = matches!(result, Ok(Ok(_)));
        let class = match &result {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.class),
            Err(_) => Some(ErrorClass::Timeout),
        };
        let _ = self.events.send(RouterEvent::Probe {
            provider: self.provider.clone(),
            model: self.model.clone(),
            ok,
        });
        if ok {
            self.clear_quota_block();
            let transition = self.breaker.probe_succeeded();
            self.on_transition(transition);
        } else if matches!(
            class,
            Some(ErrorClass::Transient | ErrorClass::Timeout | ErrorClass::Protocol)
        ) && self.breaker.state() == BreakerState::Closed
        {
            // An active check that fails counts against a closed breaker, so a dead
            // target can be found before callers find it.
            let transition = self.breaker.record(
                crate::breaker::Admission::Allowed,
                crate::breaker::Outcome::Failure,
            );
            self.on_transition(transition);
        }
        ok
    }
}

/// The cheapest real request: one short user turn, one output token.
pub fn probe_request() -> ChatRequest {
    ChatRequest {
        model: String::new(),
        messages: vec![Message::user_text(PROBE_TEXT)],
        max_tokens: Some(1),
        ..ChatRequest::default()
    }
}

/// Adapts a configured provider to the router's [`Upstream`] trait.
impl Upstream for bulwark_providers::Provider {
    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
    ) -> BoxFuture<'a, Result<bulwark_core::ChatResponse, bulwark_core::UpstreamError>> {
        Box::pin(bulwark_providers::Provider::chat(self, req, model))
    }

    fn chat_stream<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
    ) -> BoxFuture<'a, Result<EventStream, bulwark_core::UpstreamError>> {
        Box::pin(bulwark_providers::Provider::chat_stream(self, req, model))
    }

    fn count_tokens<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
    ) -> BoxFuture<'a, Result<u64, bulwark_core::UpstreamError>> {
        Box::pin(bulwark_providers::Provider::count_tokens(self, req, model))
    }
}
