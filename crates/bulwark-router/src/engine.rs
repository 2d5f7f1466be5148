//! The failover loop.
//!
//! Every attempt streams from the upstream, whatever the caller asked for: that gives
//! one time-to-first-token and one idle timeout for all requests, and lets a JSON
//! caller's answer fail over even when the upstream broke mid-answer (nothing reached
//! the caller yet). A streaming caller's attempt commits at its first content event that
//! the caller's format has a place for (reasoning is not one for an OpenAI caller).
//!
//! For each request:
//! 1. order the route's targets: priority, then weighted shuffle within a priority, with
//!    the session's sticky target first;
//! 2. skip targets that are throttled (until their reset), out of quota, or whose
//!    breaker rejects the call; a context-window failure keeps only targets that
//!    declare a larger window;
//! 3. on a target: up to `max_attempts` attempts; the error class decides (table in
//!    `bulwark_core::ErrorClass`): retry after full-jitter backoff or the server's
//!    wait when it fits the deadline, move to the next target, or give up;
//! 4. every attempt after a request's first spends the gateway's retry budget;
//! 5. when every target was skipped because its breaker is open, the one that opened
//!    longest ago gets a trial call rather than refusing outright — one at a time per
//!    target, so in a total outage the other callers get a fast refusal instead of
//!    queueing on a dead upstream;
//! 6. hedging (per route): if the attempt has no first byte after the hedge delay, the
//!    next target is tried at the same time; the first to produce content wins (for a
//!    JSON caller too: the race is to the first byte, not to the whole answer), the
//!    other is cancelled.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bulwark_core::config::HedgeAfter;
use bulwark_core::{
    ChatRequest, ChatResponse, ContentBlock, ErrorClass, Message, Role, StopReason,
    StreamAccumulator, StreamEvent, UpstreamError,
};
use futures::StreamExt;
use rand::Rng;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::breaker::{Admission, BreakerState, Outcome};
use crate::stream::{AttemptGuard, committed_stream};
use crate::target::TargetHealth;
use crate::{AttemptSink, EventStream, Failure, Route, RouteTarget, Router, RouterEvent, Served};

/// Per-request options from the caller.
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// The caller's own deadline (`x-bulwark-timeout`), capped by the route's total.
    pub timeout: Option<Duration>,
    /// `x-session-id`: keep to the same target while it is healthy.
    pub session: Option<String>,
    /// Told about every upstream attempt of this request.
    pub attempt_sink: Option<AttemptSink>,
    /// The caller's format has no place for the model's reasoning (OpenAI Chat
    /// Completions): its encoder writes nothing for it, so a stream commits at the
    /// first answer content or the end, not at the reasoning before them. Until
    /// then a failure still fails over, as nothing has reached the caller.
    pub reasoning_hidden: bool,
}

/// An attempt that reached its first content event.
pub(crate) struct Opened {
    pub head: Vec<StreamEvent>,
    pub rest: EventStream,
    pub ttft: Duration,
}

enum Mode {
    Json,
    /// `reasoning_hidden`: see [`RequestOptions::reasoning_hidden`].
    Stream {
        reasoning_hidden: bool,
    },
}

/// What an attempt produced.
enum Won {
    Json(ChatResponse),
    Stream(Opened, AttemptGuard),
}

impl Won {
    /// The provider's content filter stopped the answer, or the answer is a refusal,
    /// before anything of it reached the caller (a stream committed at its text
    /// has no `Finish` in hand yet).
    fn blocked(&self) -> bool {
        let blocked = |s: StopReason| matches!(s, StopReason::ContentFilter | StopReason::Refusal);
        match self {
            Won::Json(response) => blocked(response.stop_reason),
            Won::Stream(opened, _) => opened.head.iter().any(
                |e| matches!(e, StreamEvent::Finish { stop_reason, .. } if blocked(*stop_reason)),
            ),
        }
    }
}

/// How a request ends when no target served it: with the answer a content filter
/// stopped, when one did (with `failover_on_content_policy`, the next targets were
/// tried for a better one and none gave it), or with the failure.
fn or_blocked(
    blocked: Option<(Won, String, String)>,
    attempts: u32,
    failure: Failure,
) -> Result<(Won, String, String, u32), Failure> {
    match blocked {
        Some((won, provider, model)) => Ok((won, provider, model, attempts)),
        None => Err(failure),
    }
}

impl Router {
    /// A non-streaming request through the failover loop.
    pub async fn chat(
        &self,
        route: &Arc<Route>,
        req: &ChatRequest,
        opts: &RequestOptions,
    ) -> Result<Served<ChatResponse>, Failure> {
        match self.run(route, req, opts, Mode::Json).await? {
            (Won::Json(value), provider, model, attempts) => Ok(Served {
                value,
                provider,
                model,
                attempts,
            }),
            (Won::Stream(..), ..) => Err(Failure::internal("stream answer for a JSON request")),
        }
    }

    /// A streaming request through the failover loop. Resolves at the commit point; the
    /// returned stream starts with the events already read from the serving attempt.
    pub async fn chat_stream(
        &self,
        route: &Arc<Route>,
        req: &ChatRequest,
        opts: &RequestOptions,
    ) -> Result<Served<EventStream>, Failure> {
        let deadline = self.deadline(route, opts);
        let mode = Mode::Stream {
            reasoning_hidden: opts.reasoning_hidden,
        };
        match self.run(route, req, opts, mode).await? {
            (Won::Stream(opened, guard), provider, model, attempts) => {
                let stream = committed_stream(
                    self.clone_for_resume(opts.attempt_sink.clone()),
                    Arc::clone(route),
                    req.clone(),
                    opened,
                    guard,
                    deadline,
                );
                Ok(Served {
                    value: stream,
                    provider,
                    model,
                    attempts,
                })
            }
            (Won::Json(_), ..) => Err(Failure::internal("JSON answer for a stream request")),
        }
    }

    /// When a request on `route` with `opts` must be answered by: the route's total
    /// timeout, or the caller's `x-bulwark-timeout` when shorter.
    pub fn deadline(&self, route: &Route, opts: &RequestOptions) -> Instant {
        let total = opts.timeout.map_or(route.policy.timeouts.total, |t| {
            t.min(route.policy.timeouts.total)
        });
        // A `total` past what the clock can add (`100000000y` parses) waits a year:
        // far enough to mean "no deadline", and no overflow.
        let now = Instant::now();
        now.checked_add(total)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
    }

    /// The prompt tokens of `req` (Anthropic's `count_tokens`), from the route's first
    /// target in priority order that is in service and can count. One call per
    /// target and no retries: a count changes nothing and is cheap to ask again, and
    /// it is not traffic the breakers should judge a target by.
    pub async fn count_tokens(
        &self,
        route: &Route,
        req: &ChatRequest,
        opts: &RequestOptions,
    ) -> Result<Served<u64>, Failure> {
        let deadline = self.deadline(route, opts);
        let mut order: Vec<&RouteTarget> = route.targets.iter().collect();
        order.sort_by_key(|t| t.priority);
        let (mut last, mut attempts, mut skipped_unavailable) = (None, 0, false);
        for target in order {
            let health = &target.health;
            if health.breaker.state() == BreakerState::Open
                || health.throttled_until().is_some()
                || health.quota_blocked()
            {
                skipped_unavailable = true;
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            attempts += 1;
            // A count is one short answer: a target gets the first-token timeout for
            // it, and one that hangs hands over to the next.
            let until = now
                .checked_add(route.policy.timeouts.first_token)
                .map_or(deadline, |t| t.min(deadline));
            let call = health.upstream.count_tokens(req, &health.model);
            let err = match tokio::time::timeout_at(until, call).await {
                Ok(Ok(count)) => {
                    return Ok(Served {
                        value: count,
                        provider: health.provider.clone(),
                        model: health.model.clone(),
                        attempts,
                    });
                }
                Ok(Err(err)) if err.class.is_caller_fault() => {
                    return Err(Failure::of(err, attempts, &health.provider));
                }
                Ok(Err(err)) => err,
                Err(_) => UpstreamError::new(
                    ErrorClass::Timeout,
                    format!(
                        "no token count within {}",
                        humanize(until.saturating_duration_since(now))
                    ),
                ),
            };
            remember(&mut last, err, &health.provider);
        }
        let mut cannot_count = false;
        if only_unsupported(&last) {
            if skipped_unavailable {
                last = None;
            } else if let Some((err, _)) = &mut last {
                err.message = format!(
                    "no target of `{}` can count tokens: only Anthropic targets have a counter",
                    route.name
                );
                cannot_count = true;
            }
        }
        let mut failure = exhausted(route, last, attempts, None, false);
        if cannot_count {
            // No upstream was asked: none to name.
            failure.provider = None;
        }
        Err(failure)
    }

    async fn run(
        &self,
        route: &Arc<Route>,
        req: &ChatRequest,
        opts: &RequestOptions,
        mode: Mode,
    ) -> Result<(Won, String, String, u32), Failure> {
        let deadline = self.deadline(route, opts);
        self.budget.record_request();
        let policy = &route.policy;
        let order = self.order(route, opts.session.as_deref());
        let mut attempts = 0u32;
        let mut last: Option<(UpstreamError, String)> = None;
        let mut skipped_open: Vec<usize> = Vec::new();
        // Targets left out because they are out of service (open, out of quota): they
        // might have served, unlike one that answered "unsupported".
        let mut skipped_unavailable = 0u32;
        let mut throttled_until: Option<Instant> = None;
        // Smallest window a later target must exceed, after a context-window failure.
        let mut need_window: Option<u64> = None;
        let mut previous: Option<String> = None;
        // With `failover_on_content_policy`: the latest answer a content filter
        // stopped, given to the caller if no later target answers.
        let mut blocked: Option<(Won, String, String)> = None;

        let mut idx = 0;
        while idx < order.len() {
            let ti = order[idx];
            idx += 1;
            let target = &route.targets[ti];
            let health = &target.health;
            if let Some(min) = need_window
                && target.context_window.is_none_or(|w| w <= min)
            {
                continue;
            }
            if let Some(until) = health.throttled_until() {
                throttled_until = Some(throttled_until.map_or(until, |t: Instant| t.min(until)));
                continue;
            }
            if health.quota_blocked() {
                skipped_unavailable += 1;
                continue;
            }
            let (admission, transition) = health.breaker.try_acquire();
            health.on_transition(transition);
            if admission == Admission::Rejected {
                skipped_open.push(ti);
                skipped_unavailable += 1;
                continue;
            }
            let mut admission = Some(admission);
            let mut retry = 0u32;
            loop {
                if Instant::now() >= deadline {
                    // An admission not used goes back: a half-open trial slot kept
                    // would refuse every caller for good.
                    if let Some(a) = admission.take() {
                        health.on_transition(health.breaker.record(a, Outcome::Ignored));
                    }
                    break;
                }
                // Every extra attempt spends the budget. Once it is spent, a retry
                // gives way to the next target, and a first attempt on a healthy
                // target (a failover away from a failing one) still goes ahead, counted
                // so that later retries wait; failovers onto targets that are failing
                // too do not.
                if attempts > 0 && !self.budget.try_spend() {
                    if retry == 0 && health.breaker.healthy() {
                        self.budget.spend_anyway();
                    } else {
                        if let Some(a) = admission.take() {
                            health.breaker.record(a, Outcome::Ignored);
                        }
                        if retry > 0 {
                            info!(route = %route.name, provider = %health.provider, "retry budget spent; failing over instead of retrying");
                            break;
                        }
                        info!(route = %route.name, "retry budget spent; not trying further");
                        let failure = exhausted(route, last, attempts, throttled_until, true);
                        return or_blocked(blocked, attempts, failure);
                    }
                }
                let adm = match admission.take() {
                    Some(a) => a,
                    None => {
                        let (a, t) = health.breaker.try_acquire();
                        health.on_transition(t);
                        if a == Admission::Rejected {
                            break;
                        }
                        a
                    }
                };
                attempts += 1;
                if let Some(from) = previous.as_ref().filter(|p| **p != health.provider) {
                    let _ = self.events.send(RouterEvent::Failover {
                        route: route.name.clone(),
                        from: from.clone(),
                        to: health.provider.clone(),
                    });
                }
                previous = Some(health.provider.clone());
                let hedge_with = self.hedge_partner(route, &order[idx..], need_window);
                let outcome = self
                    .attempt_maybe_hedged(
                        route,
                        target,
                        hedge_with,
                        adm,
                        req,
                        &mode,
                        deadline,
                        opts.attempt_sink.as_ref(),
                        &mut attempts,
                    )
                    .await;
                let err = match outcome {
                    Ok((mut won, provider, model))
                        if policy.failover_on_content_policy && won.blocked() =>
                    {
                        let err = UpstreamError::new(
                            ErrorClass::ContentPolicy,
                            "the provider's content filter stopped the answer",
                        );
                        // The upstream answered, whoever gets the answer in the end:
                        // recorded now, as a JSON answer is (it frees a trial slot).
                        if let Won::Stream(opened, guard) = &mut won {
                            guard.finish(Ok(()), Some(opened.ttft));
                        }
                        blocked = Some((won, provider, model));
                        err
                    }
                    Ok((won, provider, model)) => {
                        if let Some(session) = &opts.session {
                            self.sticky
                                .remember(session, &route.name, &provider, &model);
                        }
                        return Ok((won, provider, model, attempts));
                    }
                    Err(err) => err,
                };
                warn!(
                    route = %route.name,
                    provider = %health.provider,
                    model = %health.model,
                    class = err.class.label(),
                    status = err.status,
                    error = %err.message,
                    "upstream attempt failed"
                );
                let class = err.class;
                match class {
                    ErrorClass::InvalidRequest => {
                        let failure = Failure::of(err, attempts, &health.provider);
                        return or_blocked(blocked, attempts, failure);
                    }
                    ErrorClass::ContentPolicy if !policy.failover_on_content_policy => {
                        return Err(Failure::of(err, attempts, &health.provider));
                    }
                    ErrorClass::ContextWindow => {
                        let window = target.context_window.unwrap_or(0);
                        need_window = Some(need_window.map_or(window, |w| w.max(window)));
                        remember(&mut last, err, &health.provider);
                        break;
                    }
                    ErrorClass::Quota => {
                        health.mark_quota_blocked();
                        remember(&mut last, err, &health.provider);
                        break;
                    }
                    ErrorClass::Throttled => {
                        let wait = err
                            .retry_after
                            .unwrap_or_else(|| policy.backoff.delay(retry, None, &mut rand::rng()));
                        let until = Instant::now() + wait;
                        if err.retry_after.is_some() {
                            health.mark_throttled(until);
                        }
                        retry += 1;
                        let fits = until + Duration::from_millis(50) < deadline;
                        remember(&mut last, err, &health.provider);
                        if retry < policy.max_attempts && fits {
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        if err_has_wait(&last) {
                            throttled_until = Some(throttled_until.map_or(until, |t| t.min(until)));
                        }
                        break;
                    }
                    ErrorClass::Transient | ErrorClass::Protocol => {
                        let wait = policy
                            .backoff
                            .delay(retry, err.retry_after, &mut rand::rng());
                        // A failing server that asks for a longer wait than our own
                        // backoff would ever take is better left for another target.
                        let wait_too_long = err.retry_after.is_some_and(|w| w > policy.backoff.max)
                            && idx < order.len();
                        retry += 1;
                        remember(&mut last, err, &health.provider);
                        if retry < policy.max_attempts
                            && !wait_too_long
                            && Instant::now() + wait < deadline
                            && health.breaker.state() == BreakerState::Closed
                        {
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        break;
                    }
                    // A target that did not answer in time is not tried again in this request.
                    ErrorClass::Timeout
                    | ErrorClass::Auth
                    | ErrorClass::Unsupported
                    | ErrorClass::ContentPolicy => {
                        remember(&mut last, err, &health.provider);
                        break;
                    }
                }
            }
        }

        // Every usable target had an open breaker: rather than refuse, try the one that
        // opened longest ago (it is the likeliest to have recovered). One forced trial
        // at a time per target: while one is out, the others are refused at once.
        // Targets that could not take the request at all do not count: when the only
        // ones that could are open, one of them still gets its trial.
        if only_unsupported(&last) && !skipped_open.is_empty() && Instant::now() < deadline {
            let mut oldest_first = skipped_open;
            oldest_first.sort_by_key(|ti| route.targets[*ti].health.breaker.opened_at());
            let forced = oldest_first.into_iter().find_map(|ti| {
                let target = &route.targets[ti];
                let (admission, transition) = target.health.breaker.force_trial();
                target.health.on_transition(transition);
                (admission != Admission::Rejected).then_some((target, admission))
            });
            if let Some((target, admission)) = forced {
                attempts += 1;
                match self
                    .attempt_maybe_hedged(
                        route,
                        target,
                        None,
                        admission,
                        req,
                        &mode,
                        deadline,
                        opts.attempt_sink.as_ref(),
                        &mut attempts,
                    )
                    .await
                {
                    Ok((won, provider, model)) => return Ok((won, provider, model, attempts)),
                    Err(err) => {
                        // A trial that said nothing about the target's health leaves
                        // its breaker open for the rest of its period.
                        if err.class.is_caller_fault() || err.class == ErrorClass::Unsupported {
                            target
                                .health
                                .on_transition(target.health.breaker.undo_forced_trial());
                        }
                        if err.class.is_caller_fault() {
                            return Err(Failure::of(err, attempts, &target.health.provider));
                        }
                        if err.class == ErrorClass::Unsupported {
                            skipped_unavailable = skipped_unavailable.saturating_sub(1);
                        }
                        remember(&mut last, err, &target.health.provider);
                    }
                }
            }
        }
        // When the targets that could serve were skipped (open, rate-limited, out of
        // quota), "unsupported" by the others would blame the caller for an outage:
        // the answer is then "unavailable" (503) or "rate-limited" (429).
        if last
            .as_ref()
            .is_some_and(|(e, _)| e.class == ErrorClass::Unsupported)
            && (skipped_unavailable > 0 || throttled_until.is_some())
        {
            last = None;
        }
        let failure = exhausted(route, last, attempts, throttled_until, false);
        or_blocked(blocked, attempts, failure)
    }

    /// The next target a hedge may go to, if the route hedges.
    fn hedge_partner<'r>(
        &self,
        route: &'r Route,
        rest: &[usize],
        need_window: Option<u64>,
    ) -> Option<&'r RouteTarget> {
        route.policy.hedge?;
        rest.iter().map(|i| &route.targets[*i]).find(|t| {
            need_window.is_none_or(|min| t.context_window.is_some_and(|w| w > min))
                && t.health.throttled_until().is_none()
                && !t.health.quota_blocked()
                && t.health.breaker.state() == BreakerState::Closed
        })
    }

    /// One attempt on `target`, hedged on `hedge_with` when the route hedges.
    #[allow(clippy::too_many_arguments)]
    async fn attempt_maybe_hedged(
        &self,
        route: &Route,
        target: &RouteTarget,
        hedge_with: Option<&RouteTarget>,
        admission: Admission,
        req: &ChatRequest,
        mode: &Mode,
        deadline: Instant,
        sink: Option<&AttemptSink>,
        attempts: &mut u32,
    ) -> Result<(Won, String, String), UpstreamError> {
        let (winner, opened, guard) = self
            .open_maybe_hedged(
                route, target, hedge_with, admission, req, deadline, sink, attempts,
            )
            .await?;
        let won = complete(route, opened, guard, mode, deadline).await?;
        Ok((
            won,
            winner.health.provider.clone(),
            winner.health.model.clone(),
        ))
    }

    /// Opens an attempt up to its first content event. With a hedge partner, if no
    /// content came after the hedge delay, the same request goes to the partner too;
    /// the first to produce content wins — for a JSON caller as well, whose answer is
    /// then read from the winner alone — and the other is dropped, which cancels its
    /// upstream call.
    #[allow(clippy::too_many_arguments)]
    async fn open_maybe_hedged<'r>(
        &self,
        route: &Route,
        target: &'r RouteTarget,
        hedge_with: Option<&'r RouteTarget>,
        admission: Admission,
        req: &ChatRequest,
        deadline: Instant,
        sink: Option<&AttemptSink>,
        attempts: &mut u32,
    ) -> Result<(&'r RouteTarget, Opened, AttemptGuard), UpstreamError> {
        let primary = self.open_attempt(route, target, admission, req, deadline, sink);
        let (Some(partner), Some(after)) = (hedge_with, route.policy.hedge) else {
            return primary.await.map(|(opened, guard)| (target, opened, guard));
        };
        let delay = match after {
            HedgeAfter::Fixed(d) => d,
            HedgeAfter::P95 => target
                .health
                .ttft_percentile(95.0)
                .unwrap_or(route.policy.timeouts.first_token / 2),
        };
        tokio::pin!(primary);
        tokio::select! {
            biased;
            res = &mut primary => {
                return res.map(|(opened, guard)| (target, opened, guard));
            }
            () = tokio::time::sleep(delay) => {}
        }
        let (adm, t) = partner.health.breaker.try_acquire();
        partner.health.on_transition(t);
        if adm == Admission::Rejected {
            return primary.await.map(|(opened, guard)| (target, opened, guard));
        }
        if !self.budget.try_spend() {
            // Give back the admission (a half-open trial slot must not leak).
            let t = partner.health.breaker.record(adm, Outcome::Ignored);
            partner.health.on_transition(t);
            return primary.await.map(|(opened, guard)| (target, opened, guard));
        }
        *attempts += 1;
        let _ = self.events.send(RouterEvent::Hedge {
            route: route.name.clone(),
            from: target.health.provider.clone(),
            to: partner.health.provider.clone(),
        });
        let hedge = self.open_attempt(route, partner, adm, req, deadline, sink);
        tokio::pin!(hedge);
        let mut primary_err = None;
        let mut hedge_err = None;
        loop {
            tokio::select! {
                res = &mut primary, if primary_err.is_none() => match res {
                    Ok((opened, guard)) => return Ok((target, opened, guard)),
                    Err(e) => primary_err = Some(e),
                },
                res = &mut hedge, if hedge_err.is_none() => match res {
                    Ok((opened, guard)) => return Ok((partner, opened, guard)),
                    Err(e) => hedge_err = Some(e),
                },
            }
            if let (Some(p), Some(_)) = (&primary_err, &hedge_err) {
                return Err(p.clone());
            }
        }
    }

    /// One attempt on one target up to its first content event, within the
    /// first-token timeout. A failure is recorded here; the returned guard records
    /// the outcome of the rest (dropped unfinished, it records nothing).
    async fn open_attempt(
        &self,
        route: &Route,
        target: &RouteTarget,
        admission: Admission,
        req: &ChatRequest,
        deadline: Instant,
        sink: Option<&AttemptSink>,
    ) -> Result<(Opened, AttemptGuard), UpstreamError> {
        let health = &target.health;
        let mut guard = AttemptGuard::new(
            Arc::clone(health),
            admission,
            self.events.clone(),
            route.name.clone(),
            route.policy.timeouts.first_token / 2,
            sink.cloned(),
        );
        match open_until_content(health, req, route.policy.timeouts.first_token, deadline).await {
            Ok(opened) => {
                health.record_ttft(opened.ttft);
                Ok((opened, guard))
            }
            Err(err) => {
                guard.finish(Err(&err), None);
                Err(err)
            }
        }
    }

    /// Targets in the order this request tries them.
    fn order(&self, route: &Route, session: Option<&str>) -> Vec<usize> {
        let mut rng = rand::rng();
        let mut keyed: Vec<(u32, f64, usize)> = route
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                // Weighted shuffle (Efraimidis–Spirakis): key = u^(1/w), larger first.
                let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
                let key = u.powf(1.0 / f64::from(t.weight.max(1)));
                (t.priority, -key, i)
            })
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let mut order: Vec<usize> = keyed.into_iter().map(|(_, _, i)| i).collect();
        if let Some(session) = session
            && let Some((provider, model)) = self.sticky.get(session, &route.name)
            && let Some(pos) = order.iter().position(|i| {
                let h = &route.targets[*i].health;
                h.provider == provider && h.model == model
            })
        {
            let sticky = route.targets[order[pos]].health.breaker.state() == BreakerState::Closed;
            if sticky {
                let i = order.remove(pos);
                order.insert(0, i);
            }
        }
        order
    }
}

/// Finishes an opened attempt: a stream is handed on at its commit point (its guard
/// records the outcome when it ends); a JSON answer is read to its end here.
async fn complete(
    route: &Route,
    mut opened: Opened,
    mut guard: AttemptGuard,
    mode: &Mode,
    deadline: Instant,
) -> Result<Won, UpstreamError> {
    match *mode {
        Mode::Stream { reasoning_hidden } => {
            // With `failover_on_content_policy`, a refusal message is held back as
            // well: it may end in the content filter's stop, and the next target may
            // answer instead.
            let hold_refusals = route.policy.failover_on_content_policy;
            let commits = |e: &StreamEvent| match e {
                StreamEvent::Finish { .. } => true,
                StreamEvent::RefusalDelta { .. } => !hold_refusals,
                e if e.is_reasoning() => !reasoning_hidden,
                e => e.is_content(),
            };
            match read_to_commit(&mut opened, commits, route.policy.timeouts.idle, deadline).await {
                Ok(()) => Ok(Won::Stream(opened, guard)),
                Err(err) => {
                    guard.finish(Err(&err), Some(opened.ttft));
                    Err(err)
                }
            }
        }
        Mode::Json => {
            let ttft = opened.ttft;
            match collect(opened, route.policy.timeouts.idle, deadline).await {
                Ok(response) => {
                    guard.finish(Ok(()), Some(ttft));
                    Ok(Won::Json(response))
                }
                Err(err) => {
                    guard.finish(Err(&err), Some(ttft));
                    Err(err)
                }
            }
        }
    }
}

/// Reads an opened stream on to its commit point: the first event that `commits`
/// (what the caller is sent and cannot be taken back), within the idle timeout
/// between events. Content before it that does not commit is reasoning an OpenAI
/// caller is not sent, or a refusal held back to see how the answer ends. The
/// first-token timeout is behind it: reasoning is the model's first output, and a
/// model may reason for longer than that timeout before it answers.
async fn read_to_commit(
    opened: &mut Opened,
    commits: impl Fn(&StreamEvent) -> bool,
    idle: Duration,
    deadline: Instant,
) -> Result<(), UpstreamError> {
    if opened.head.iter().any(&commits) {
        return Ok(());
    }
    let mut timer = IdleTimer::new(idle, deadline);
    loop {
        let event = timer.next(&mut opened.rest).await?;
        let commit = commits(&event);
        opened.head.push(event);
        if commit {
            return Ok(());
        }
    }
}

/// Opens a stream and reads it up to and including the first content event (or
/// `Finish`, for an empty answer), within the first-token timeout.
pub(crate) async fn open_until_content(
    health: &TargetHealth,
    req: &ChatRequest,
    first_token: Duration,
    deadline: Instant,
) -> Result<Opened, UpstreamError> {
    let started = Instant::now();
    let limit = first_token.min(deadline.saturating_duration_since(started));
    let work = async {
        let mut stream = health.upstream.chat_stream(req, &health.model).await?;
        let mut head = Vec::new();
        loop {
            match stream.next().await {
                Some(Ok(event)) => {
                    let commit = event.is_content() || matches!(event, StreamEvent::Finish { .. });
                    head.push(event);
                    if commit {
                        return Ok((head, stream));
                    }
                }
                Some(Err(err)) => return Err(err),
                None => {
                    return Err(UpstreamError::protocol(
                        "the upstream stream ended before any content",
                    ));
                }
            }
        }
    };
    let result = {
        // Counted while it waits, however the wait ends: a caller hanging up drops
        // this future mid-wait, and the count must not keep it.
        let _waiting = InFlight::enter(&health.in_flight);
        tokio::time::timeout(limit, work).await
    };
    match result {
        Ok(Ok((head, rest))) => Ok(Opened {
            head,
            rest,
            ttft: started.elapsed(),
        }),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(UpstreamError::new(
            ErrorClass::Timeout,
            format!(
                "no first token from the upstream within {}",
                humanize(limit)
            ),
        )),
    }
}

/// One attempt counted in its target's `in_flight`, until dropped.
struct InFlight<'a>(&'a std::sync::atomic::AtomicU32);

impl<'a> InFlight<'a> {
    fn enter(count: &'a std::sync::atomic::AtomicU32) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads the rest of an opened stream into a complete response.
async fn collect(
    opened: Opened,
    idle: Duration,
    deadline: Instant,
) -> Result<ChatResponse, UpstreamError> {
    let mut acc = StreamAccumulator::default();
    for event in &opened.head {
        acc.push(event);
    }
    let mut rest = opened.rest;
    if acc.finish.is_none() {
        // One timer for the whole answer, pushed back at every event: moving a timer's
        // deadline later is an atomic store, where a new timer per event would be
        // registered with (and removed from) the runtime's timer wheel each time.
        let mut timer = IdleTimer::new(idle, deadline);
        loop {
            let event = timer.next(&mut rest).await?;
            acc.push(&event);
            if acc.finish.is_some() {
                break;
            }
        }
    }
    acc.into_response()
        .ok_or_else(|| UpstreamError::protocol("the upstream answer had no end"))
}

/// The idle timeout between events, capped by the request's deadline, as one timer
/// re-armed at every event.
pub(crate) struct IdleTimer {
    idle: Duration,
    deadline: Instant,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimer {
    pub(crate) fn new(idle: Duration, deadline: Instant) -> Self {
        Self {
            idle,
            deadline,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Starts the wait for the next event; returns how long it may take.
    fn rearm(&mut self) -> Duration {
        let now = Instant::now();
        let wait = self.idle.min(self.deadline.saturating_duration_since(now));
        self.sleep.as_mut().reset(now + wait);
        wait
    }

    /// The next event of `rest` within the idle timeout: a stall, or the stream ending
    /// before its answer did, is an error.
    pub(crate) async fn next(
        &mut self,
        rest: &mut EventStream,
    ) -> Result<StreamEvent, UpstreamError> {
        let wait = self.rearm();
        tokio::select! {
            biased;
            item = rest.next() => match item {
                Some(item) => item,
                None => Err(UpstreamError::protocol(
                    "the upstream stream ended before the answer was complete",
                )),
            },
            // A wait cut short by the deadline is the deadline, not a stall.
            () = self.sleep.as_mut() => Err(if wait < self.idle {
                UpstreamError::new(
                    ErrorClass::Timeout,
                    "the request's deadline passed while the upstream was still answering",
                )
            } else {
                stall_error(wait)
            }),
        }
    }
}

pub(crate) fn stall_error(wait: Duration) -> UpstreamError {
    UpstreamError::new(
        ErrorClass::Timeout,
        format!("the upstream stream stalled for {}", humanize(wait)),
    )
}

pub(crate) fn humanize(d: Duration) -> String {
    if d.as_secs() >= 1 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// No attempt so far failed for any reason but a feature the target lacks.
fn only_unsupported(last: &Option<(UpstreamError, String)>) -> bool {
    last.as_ref()
        .is_none_or(|(e, _)| e.class == ErrorClass::Unsupported)
}

fn err_has_wait(last: &Option<(UpstreamError, String)>) -> bool {
    last.as_ref().is_some_and(|(e, _)| e.retry_after.is_some())
}

/// Keeps the most telling failure: one that says a feature is unsupported is only
/// reported when no target failed for another reason.
fn remember(last: &mut Option<(UpstreamError, String)>, err: UpstreamError, provider: &str) {
    let keep_previous = err.class == ErrorClass::Unsupported
        && last
            .as_ref()
            .is_some_and(|(prev, _)| prev.class != ErrorClass::Unsupported);
    if !keep_previous {
        *last = Some((err, provider.to_string()));
    }
}

fn exhausted(
    route: &Route,
    last: Option<(UpstreamError, String)>,
    attempts: u32,
    throttled_until: Option<Instant>,
    budget_spent: bool,
) -> Failure {
    let now = Instant::now();
    let throttle_wait = throttled_until.map(|t| t.saturating_duration_since(now));
    match last {
        Some((mut error, provider)) => {
            info!(route = %route.name, attempts, "no target could serve");
            if matches!(
                error.class,
                ErrorClass::Transient
                    | ErrorClass::Timeout
                    | ErrorClass::Protocol
                    | ErrorClass::Auth
            ) {
                error.retry_after = error.retry_after.or(Some(Duration::from_secs(1)));
            }
            if budget_spent {
                error.message = format!("{} (retry budget spent)", error.message);
            }
            Failure {
                error,
                attempts,
                provider: Some(provider),
            }
        }
        None => {
            let (class, message) = match throttle_wait {
                Some(_) => (
                    ErrorClass::Throttled,
                    "every target of the route is rate-limited; retry after the wait".to_string(),
                ),
                None => (
                    ErrorClass::Transient,
                    "every target of the route is unavailable (circuit open, out of quota, or past the deadline)"
                        .to_string(),
                ),
            };
            Failure {
                error: UpstreamError::new(class, message)
                    .with_retry_after(Some(throttle_wait.unwrap_or(Duration::from_secs(1)))),
                attempts,
                provider: None,
            }
        }
    }
}

/// The request to continue a broken stream on another target: the partial answer as
/// an assistant prefill.
pub(crate) fn prefill_request(req: &ChatRequest, partial: &str) -> ChatRequest {
    // Anthropic takes no prefill with reasoning on; the rest of the answer is text.
    let mut next = req.clone().without_thinking();
    next.messages.push(Message {
        role: Role::Assistant,
        content: vec![ContentBlock::Text {
            text: partial.to_string(),
        }],
    });
    next
}

#[cfg(test)]
mod wait_tests {
    use super::*;

    #[tokio::test]
    async fn an_attempt_dropped_mid_wait_leaves_no_count_behind() {
        let count = std::sync::atomic::AtomicU32::new(0);
        let wait = async {
            let _waiting = InFlight::enter(&count);
            futures::future::pending::<()>().await;
        };
        let gave_up = tokio::time::timeout(Duration::from_millis(1), wait).await;
        assert!(gave_up.is_err());
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }

    fn silent() -> EventStream {
        Box::pin(futures::stream::pending())
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_a_stall_until_the_deadline_cuts_the_wait_short() {
        let start = Instant::now();
        let mut timer = IdleTimer::new(Duration::from_secs(2), start + Duration::from_secs(3));
        let mut rest = silent();
        let stall = timer.next(&mut rest).await.unwrap_err();
        assert_eq!(stall.class, ErrorClass::Timeout);
        assert!(
            stall.message.contains("stalled for 2.0s"),
            "{}",
            stall.message
        );
        // One second of the deadline left, less than the idle timeout: what ends the
        // wait is the deadline, and the error says so.
        let late = timer.next(&mut rest).await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert_eq!(late.class, ErrorClass::Timeout);
        assert!(late.message.contains("deadline"), "{}", late.message);
        assert!(!late.message.contains("stalled"), "{}", late.message);
    }
}
