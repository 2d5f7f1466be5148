//! The committed stream: what a streaming caller reads after the commit point.
//!
//! It replays the events read before the commit (`Start`, the first content), then
//! passes the rest through with the idle timeout between events and the request
//! deadline over all. A failure after the commit ends the stream with that error
//! (the ingress writes it as the format's in-band error), never with a `Finish`.
//! With `resume_streams` on the route, a text answer that broke is continued on the
//! next target that accepts an assistant prefill; if that fails too, the caller sees
//! the original failure, not the prefill's.

use std::sync::Arc;
use std::time::Duration;

use bulwark_core::{ChatRequest, ErrorClass, StreamEvent, UpstreamError};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::breaker::{Admission, BreakerState, Outcome};
use crate::budget::RetryBudget;
use crate::engine::{IdleTimer, Opened, open_until_content, prefill_request};
use crate::target::TargetHealth;
use crate::{AttemptReport, AttemptSink, EventStream, Route, RouterEvent};

/// Records one attempt's outcome in its target's breaker and publishes it, exactly
/// once. Dropped unfinished (the caller went away) it records nothing against the target.
pub(crate) struct AttemptGuard {
    health: Arc<TargetHealth>,
    admission: Admission,
    events: tokio::sync::broadcast::Sender<RouterEvent>,
    route: String,
    slow_after: Duration,
    started: Instant,
    started_at: std::time::SystemTime,
    sink: Option<AttemptSink>,
    done: bool,
}

impl AttemptGuard {
    pub(crate) fn new(
        health: Arc<TargetHealth>,
        admission: Admission,
        events: tokio::sync::broadcast::Sender<RouterEvent>,
        route: String,
        slow_after: Duration,
        sink: Option<AttemptSink>,
    ) -> Self {
        AttemptGuard {
            health,
            admission,
            events,
            route,
            slow_after,
            started: Instant::now(),
            started_at: std::time::SystemTime::now(),
            sink,
            done: false,
        }
    }

    fn report(&self, error: Option<&UpstreamError>, ttft: Option<Duration>, cancelled: bool) {
        if let Some(sink) = &self.sink {
            (sink.0)(AttemptReport {
                provider: self.health.provider.clone(),
                model: self.health.model.clone(),
                started_at: self.started_at,
                ttft,
                elapsed: self.started.elapsed(),
                error: error.cloned(),
                cancelled,
            });
        }
    }

    pub(crate) fn finish(&mut self, result: Result<(), &UpstreamError>, ttft: Option<Duration>) {
        if self.done {
            return;
        }
        self.done = true;
        let outcome = match result {
            Ok(()) => Outcome::Success {
                slow: ttft.is_some_and(|t| t > self.slow_after),
            },
            Err(e) => match e.class {
                ErrorClass::Transient
                | ErrorClass::Timeout
                | ErrorClass::Protocol
                | ErrorClass::Auth => Outcome::Failure,
                ErrorClass::Throttled
                | ErrorClass::Quota
                | ErrorClass::InvalidRequest
                | ErrorClass::ContextWindow
                | ErrorClass::ContentPolicy
                | ErrorClass::Unsupported => Outcome::Ignored,
            },
        };
        let transition = self.health.breaker.record(self.admission, outcome);
        self.health.on_transition(transition);
        let _ = self.events.send(RouterEvent::Attempt {
            route: self.route.clone(),
            provider: self.health.provider.clone(),
            model: self.health.model.clone(),
            error: result.err().map(|e| e.class),
            status: result.err().and_then(|e| e.status),
            latency: self.started.elapsed(),
            ttft,
        });
        self.report(result.err(), ttft, false);
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            let transition = self.health.breaker.record(self.admission, Outcome::Ignored);
            self.health.on_transition(transition);
            self.report(None, None, true);
        }
    }
}

/// What a committed stream needs from the router to resume on another target.
#[derive(Clone)]
pub(crate) struct ResumeCtx {
    pub budget: Arc<RetryBudget>,
    pub events: tokio::sync::broadcast::Sender<RouterEvent>,
    pub sink: Option<AttemptSink>,
}

struct State {
    ctx: ResumeCtx,
    route: Arc<Route>,
    req: ChatRequest,
    head: std::vec::IntoIter<StreamEvent>,
    rest: Option<EventStream>,
    guard: AttemptGuard,
    ttft: Duration,
    deadline: Instant,
    /// Text streamed so far, for a prefill.
    text: String,
    tool_started: bool,
    /// Providers this stream already used (not resumed on again).
    used: Vec<(String, String)>,
    /// The next upstream `Start` is swallowed (a resumed continuation).
    skip_start: bool,
    /// The prefill left out the whitespace that ends the caller's text (Anthropic
    /// refuses a prefill ending in it): the continuation's leading whitespace, which
    /// the caller already has, is dropped.
    trim_lead: bool,
    /// The idle timeout between events (and the deadline over all).
    timer: IdleTimer,
}

pub(crate) fn committed_stream(
    ctx: ResumeCtx,
    route: Arc<Route>,
    req: ChatRequest,
    opened: Opened,
    guard: AttemptGuard,
    deadline: Instant,
) -> EventStream {
    let used = vec![(guard.health.provider.clone(), guard.health.model.clone())];
    let timer = IdleTimer::new(route.policy.timeouts.idle, deadline);
    let state = State {
        ctx,
        route,
        req,
        head: opened.head.into_iter(),
        rest: Some(opened.rest),
        guard,
        ttft: opened.ttft,
        deadline,
        text: String::new(),
        tool_started: false,
        used,
        skip_start: false,
        trim_lead: false,
        timer,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            let next = match st.head.next() {
                Some(event) => Ok(event),
                None => {
                    let mut rest = st.rest.take()?;
                    let next = st.timer.next(&mut rest).await;
                    if next.is_ok() {
                        st.rest = Some(rest);
                    }
                    next
                }
            };
            match next {
                Ok(StreamEvent::Start { .. }) if st.skip_start => {
                    st.skip_start = false;
                }
                Ok(StreamEvent::TextDelta { text }) if st.trim_lead => {
                    let rest = text.trim_start();
                    if !rest.is_empty() {
                        st.trim_lead = false;
                        st.text.push_str(rest);
                        let event = StreamEvent::TextDelta {
                            text: rest.to_string(),
                        };
                        return Some((Ok(event), st));
                    }
                }
                Ok(event) => {
                    match &event {
                        StreamEvent::TextDelta { text } | StreamEvent::RefusalDelta { text } => {
                            st.text.push_str(text)
                        }
                        StreamEvent::ToolCallStart { .. } | StreamEvent::ToolCallDelta { .. } => {
                            st.tool_started = true;
                        }
                        StreamEvent::Finish { .. } => {
                            let ttft = st.ttft;
                            st.guard.finish(Ok(()), Some(ttft));
                            st.rest = None;
                        }
                        // Reasoning is not the answer's text: a resumed answer
                        // continues the text alone.
                        StreamEvent::Start { .. }
                        | StreamEvent::PromptUsage { .. }
                        | StreamEvent::ThinkingDelta { .. }
                        | StreamEvent::ThinkingSignature { .. }
                        | StreamEvent::RedactedThinking { .. } => {}
                    }
                    return Some((Ok(event), st));
                }
                Err(err) => {
                    let ttft = st.ttft;
                    st.guard.finish(Err(&err), Some(ttft));
                    if st.route.policy.resume_streams
                        && !st.tool_started
                        && !st.text.trim_end().is_empty()
                        && resume(&mut st).await.is_some()
                    {
                        continue;
                    }
                    st.rest = None;
                    return Some((Err(err), st));
                }
            }
        }
    }))
}

/// Tries to continue the answer on another target with the partial text as prefill.
async fn resume(st: &mut State) -> Option<()> {
    let candidates: Vec<_> = st
        .route
        .targets
        .iter()
        .filter(|t| t.accepts_prefill)
        .filter(|t| {
            !st.used
                .iter()
                .any(|(p, m)| *p == t.health.provider && *m == t.health.model)
        })
        .filter(|t| {
            t.health.throttled_until().is_none()
                && !t.health.quota_blocked()
                && t.health.breaker.state() != BreakerState::Open
        })
        .map(|t| Arc::clone(&t.health))
        .collect();
    for health in candidates {
        if Instant::now() >= st.deadline {
            return None;
        }
        // As in the failover loop: with the budget spent, a move onto a healthy
        // target still goes ahead (counted, so later retries wait); onto one that is
        // failing too, it does not.
        if !st.ctx.budget.try_spend() {
            if !health.breaker.healthy() {
                info!(route = %st.route.name, provider = %health.provider, "retry budget spent; not resuming on a target that is failing");
                continue;
            }
            st.ctx.budget.spend_anyway();
        }
        let (admission, transition) = health.breaker.try_acquire();
        health.on_transition(transition);
        if admission == Admission::Rejected {
            continue;
        }
        st.used
            .push((health.provider.clone(), health.model.clone()));
        let prefill = st.text.trim_end();
        let request = prefill_request(&st.req, prefill);
        let trimmed = prefill.len() < st.text.len();
        let mut guard = AttemptGuard::new(
            Arc::clone(&health),
            admission,
            st.ctx.events.clone(),
            st.route.name.clone(),
            st.route.policy.timeouts.first_token / 2,
            st.ctx.sink.clone(),
        );
        match open_until_content(
            &health,
            &request,
            st.route.policy.timeouts.first_token,
            st.deadline,
        )
        .await
        {
            Ok(opened) => {
                info!(route = %st.route.name, provider = %health.provider, "resumed a broken stream with a prefill");
                let _ = st.ctx.events.send(RouterEvent::Failover {
                    route: st.route.name.clone(),
                    from: st.guard.health.provider.clone(),
                    to: health.provider.clone(),
                });
                st.ttft = opened.ttft;
                st.head = opened.head.into_iter();
                st.rest = Some(opened.rest);
                st.skip_start = true;
                st.trim_lead = trimmed;
                st.guard = guard;
                return Some(());
            }
            Err(err) => {
                // The caller will see the original failure, never the prefill's.
                warn!(route = %st.route.name, provider = %health.provider, error = %err.message, "resume with prefill failed");
                guard.finish(Err(&err), None);
            }
        }
    }
    None
}
