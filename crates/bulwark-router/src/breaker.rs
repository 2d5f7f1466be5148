//! A circuit breaker per target: closed → open → half-open → closed.
//!
//! - **Closed**: all traffic passes. It opens after `consecutive_failures` transient
//!   failures in a row, or when at least `min_calls` calls in the last `window` failed
//!   at `failure_rate` or more, or after `slow_calls` slow first tokens in a row.
//! - **Open**: no caller traffic for `open_for × trips` (capped at `max_open_for`, with
//!   ±10 % jitter so a fleet does not probe in lockstep), where `trips` counts the
//!   openings since the breaker last closed.
//! - **Half-open**: after the open time, or as soon as an active probe succeeds,
//!   `half_open_probes` real calls are let through; if all succeed the breaker closes,
//!   if one fails it opens again (one more trip). Only these trials decide: a call
//!   let in before the breaker opened, ending now, says nothing of the target since.
//!
//! Only failures that say something about the target count (transient, timeout,
//! protocol); a caller's mistake or a throttle does not. Time comes from
//! `tokio::time::Instant`, so tests drive it with paused time.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// Breaker thresholds (see the module docs).
#[derive(Debug, Clone)]
pub struct BreakerSettings {
    pub consecutive_failures: u32,
    pub failure_rate: f64,
    pub min_calls: u32,
    pub window: Duration,
    pub open_for: Duration,
    pub max_open_for: Duration,
    pub slow_calls: u32,
    pub half_open_probes: u32,
    /// Fraction of jitter on the open time (0.1 = ±10 %; 0 in deterministic tests).
    pub jitter: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    /// 0 closed, 1 half-open, 2 open (the metric's encoding).
    pub fn as_gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

/// What the breaker says to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Allowed,
    /// Go ahead as one of the half-open trial calls; its outcome decides.
    Trial,
    /// Not now: the breaker is open (or its trial slots are taken).
    Rejected,
}

/// The outcome of one call, as far as the breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success {
        slow: bool,
    },
    Failure,
    /// Says nothing about the target's health (caller's mistake, throttling, cancelled).
    Ignored,
}

/// A state change, for logs, metrics and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, passed: u32 },
}

#[derive(Debug)]
struct Inner {
    state: State,
    consecutive_failures: u32,
    consecutive_slow: u32,
    /// (time, failed) of recent calls, oldest first, within `window`.
    recent: VecDeque<(Instant, bool)>,
    trips: u32,
    changed_at: Instant,
    opened_at: Option<Instant>,
    /// Set by [`CircuitBreaker::force_trial`] on an open breaker: the open state it
    /// interrupted (`until`, `changed_at`), for [`CircuitBreaker::undo_forced_trial`].
    forced_from: Option<(Instant, Instant)>,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

/// Calls remembered for the failure-rate window, at most (bounds memory under load).
const MAX_RECENT: usize = 4096;

impl CircuitBreaker {
    pub fn new(settings: BreakerSettings) -> Self {
        CircuitBreaker {
            settings,
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive_failures: 0,
                consecutive_slow: 0,
                recent: VecDeque::new(),
                trips: 0,
                changed_at: Instant::now(),
                opened_at: None,
                forced_from: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update; the counters
        // are still usable, and a breaker must never take the request path down.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state now (an expired open period reads as half-open). Only reads: the
    /// move to half-open happens in [`CircuitBreaker::try_acquire`], which reports it,
    /// so observers see every transition.
    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        match inner.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Closed, and no failure among its recent calls: failing over to it moves load to
    /// a provider that is coping, which the retry budget does not charge for.
    pub fn healthy(&self) -> bool {
        let inner = self.lock();
        matches!(inner.state, State::Closed)
            && inner.consecutive_failures == 0
            && !inner.recent.iter().any(|(_, failed)| *failed)
    }

    /// When the state last changed.
    pub fn changed_at(&self) -> Instant {
        self.lock().changed_at
    }

    /// When the breaker last opened (kept while it is open or half-open).
    pub fn opened_at(&self) -> Option<Instant> {
        self.lock().opened_at
    }

    /// Asks to make one call.
    pub fn try_acquire(&self) -> (Admission, Option<Transition>) {
        let mut inner = self.lock();
        let transition = self.refresh(&mut inner, Instant::now());
        let admission = match &mut inner.state {
            State::Closed => Admission::Allowed,
            State::Open { .. } => Admission::Rejected,
            State::HalfOpen { in_flight, passed } => {
                if *in_flight + *passed < self.settings.half_open_probes.max(1) {
                    *in_flight += 1;
                    Admission::Trial
                } else {
                    Admission::Rejected
                }
            }
        };
        (admission, transition)
    }

    /// Lets one call through even though the breaker is open: used when every target
    /// of a route is open and this one opened longest ago. It counts as a half-open
    /// trial, so it is refused while the trial slots are taken: in a total outage one
    /// call at a time tests the target, and everyone else gets a fast refusal instead
    /// of waiting on a dead upstream.
    pub fn force_trial(&self) -> (Admission, Option<Transition>) {
        let mut inner = self.lock();
        // Only a trial forced out of an open state may be undone, and only that one.
        inner.forced_from = None;
        let now = Instant::now();
        let from = public(&inner.state);
        match &mut inner.state {
            State::Closed => (Admission::Allowed, None),
            State::HalfOpen { in_flight, passed } => {
                if *in_flight + *passed < self.settings.half_open_probes.max(1) {
                    *in_flight += 1;
                    (Admission::Trial, None)
                } else {
                    (Admission::Rejected, None)
                }
            }
            State::Open { until } => {
                inner.forced_from = Some((*until, inner.changed_at));
                inner.state = State::HalfOpen {
                    in_flight: 1,
                    passed: 0,
                };
                inner.changed_at = now;
                (
                    Admission::Trial,
                    Some(Transition {
                        from,
                        to: BreakerState::HalfOpen,
                    }),
                )
            }
        }
    }

    /// Records the outcome of a call admitted with `admission`.
    pub fn record(&self, admission: Admission, outcome: Outcome) -> Option<Transition> {
        let mut inner = self.lock();
        let now = Instant::now();
        if admission == Admission::Trial
            && let State::HalfOpen { in_flight, .. } = &mut inner.state
        {
            *in_flight = in_flight.saturating_sub(1);
        }
        let trial = admission == Admission::Trial;
        match outcome {
            // A trial that says nothing leaves the decision to the next one, unless the
            // trials that passed already make up the number.
            Outcome::Ignored => match inner.state {
                State::HalfOpen {
                    in_flight: 0,
                    passed,
                } if trial && passed >= self.settings.half_open_probes.max(1) => {
                    Some(self.close(&mut inner, now))
                }
                _ => None,
            },
            Outcome::Success { slow } => {
                // Only a trial's answer decides the forced one's fate.
                if trial {
                    inner.forced_from = None;
                }
                self.on_success(&mut inner, now, slow, trial)
            }
            Outcome::Failure => {
                // As for a success: only a trial's answer decides the forced one's fate.
                if trial {
                    inner.forced_from = None;
                }
                self.on_failure(&mut inner, now, trial)
            }
        }
    }

    /// Puts back the open state a [`CircuitBreaker::force_trial`] interrupted, when
    /// that trial said nothing about the target's health (the request used a feature
    /// it lacks, or was the caller's mistake): such a request must not cut an open
    /// period short. Nothing happens if anything else moved the breaker since.
    pub fn undo_forced_trial(&self) -> Option<Transition> {
        let mut inner = self.lock();
        let (until, changed_at) = inner.forced_from.take()?;
        if !matches!(
            inner.state,
            State::HalfOpen {
                in_flight: 0,
                passed: 0
            }
        ) {
            return None;
        }
        inner.state = State::Open { until };
        inner.changed_at = changed_at;
        Some(Transition {
            from: BreakerState::HalfOpen,
            to: BreakerState::Open,
        })
    }

    /// An active health probe succeeded: an open breaker moves to half-open (it does
    /// not close; real calls decide that).
    pub fn probe_succeeded(&self) -> Option<Transition> {
        let mut inner = self.lock();
        inner.forced_from = None;
        if let State::Open { .. } = inner.state {
            inner.state = State::HalfOpen {
                in_flight: 0,
                passed: 0,
            };
            inner.changed_at = Instant::now();
            return Some(Transition {
                from: BreakerState::Open,
                to: BreakerState::HalfOpen,
            });
        }
        None
    }

    fn refresh(&self, inner: &mut Inner, now: Instant) -> Option<Transition> {
        if let State::Open { until } = inner.state
            && now >= until
        {
            inner.state = State::HalfOpen {
                in_flight: 0,
                passed: 0,
            };
            inner.changed_at = now;
            return Some(Transition {
                from: BreakerState::Open,
                to: BreakerState::HalfOpen,
            });
        }
        None
    }

    fn on_success(
        &self,
        inner: &mut Inner,
        now: Instant,
        slow: bool,
        trial: bool,
    ) -> Option<Transition> {
        inner.consecutive_failures = 0;
        inner.consecutive_slow = if slow { inner.consecutive_slow + 1 } else { 0 };
        self.remember(inner, now, false);
        match &mut inner.state {
            State::HalfOpen { passed, in_flight } => {
                // Only trials decide: a call let in before the breaker opened proves
                // nothing about the target now.
                if trial {
                    *passed += 1;
                }
                if *passed >= self.settings.half_open_probes.max(1) && *in_flight == 0 {
                    return Some(self.close(inner, now));
                }
                None
            }
            State::Closed => {
                if self.settings.slow_calls > 0
                    && inner.consecutive_slow >= self.settings.slow_calls
                {
                    return Some(self.open(inner, now));
                }
                None
            }
            State::Open { .. } => None,
        }
    }

    fn on_failure(&self, inner: &mut Inner, now: Instant, trial: bool) -> Option<Transition> {
        inner.consecutive_failures += 1;
        inner.consecutive_slow = 0;
        self.remember(inner, now, true);
        match inner.state {
            // Only trials decide here too: a call let in before the breaker opened
            // (a timeout that began in the outage, ending now) says nothing of the
            // target since, and must not put off its recovery.
            State::HalfOpen { .. } if trial => Some(self.open(inner, now)),
            State::HalfOpen { .. } => None,
            State::Open { .. } => None,
            State::Closed => {
                let by_count = self.settings.consecutive_failures > 0
                    && inner.consecutive_failures >= self.settings.consecutive_failures;
                let calls = inner.recent.len() as u32;
                let failed = inner.recent.iter().filter(|(_, f)| *f).count() as f64;
                let by_rate = self.settings.min_calls > 0
                    && calls >= self.settings.min_calls
                    && failed / f64::from(calls) >= self.settings.failure_rate;
                if by_count || by_rate {
                    Some(self.open(inner, now))
                } else {
                    None
                }
            }
        }
    }

    fn remember(&self, inner: &mut Inner, now: Instant, failed: bool) {
        inner.recent.push_back((now, failed));
        while let Some((at, _)) = inner.recent.front() {
            if now.duration_since(*at) > self.settings.window || inner.recent.len() > MAX_RECENT {
                inner.recent.pop_front();
            } else {
                break;
            }
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant) -> Transition {
        let from = public(&inner.state);
        inner.trips += 1;
        let base = self
            .settings
            .open_for
            .saturating_mul(inner.trips)
            .min(self.settings.max_open_for);
        let jitter = self.settings.jitter.clamp(0.0, 0.5);
        let factor = if jitter > 0.0 {
            rand::rng().random_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        inner.state = State::Open {
            until: now + base.mul_f64(factor),
        };
        inner.changed_at = now;
        if from == BreakerState::Closed {
            inner.opened_at = Some(now);
        }
        inner.consecutive_failures = 0;
        inner.consecutive_slow = 0;
        inner.recent.clear();
        Transition {
            from,
            to: BreakerState::Open,
        }
    }

    fn close(&self, inner: &mut Inner, now: Instant) -> Transition {
        inner.state = State::Closed;
        inner.trips = 0;
        inner.changed_at = now;
        inner.opened_at = None;
        inner.recent.clear();
        Transition {
            from: BreakerState::HalfOpen,
            to: BreakerState::Closed,
        }
    }
}

fn public(state: &State) -> BreakerState {
    match state {
        State::Closed => BreakerState::Closed,
        State::Open { .. } => BreakerState::Open,
        State::HalfOpen { .. } => BreakerState::HalfOpen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_calls: 20,
            window: Duration::from_secs(60),
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(300),
            slow_calls: 5,
            half_open_probes: 1,
            jitter: 0.0,
        }
    }

    fn call(b: &CircuitBreaker, outcome: Outcome) -> Admission {
        let (admission, _) = b.try_acquire();
        if admission != Admission::Rejected {
            b.record(admission, outcome);
        }
        admission
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_five_consecutive_failures_and_rejects_while_open() {
        let b = CircuitBreaker::new(settings());
        for _ in 0..4 {
            assert_eq!(call(&b, Outcome::Failure), Admission::Allowed);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(call(&b, Outcome::Failure), Admission::Allowed);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.try_acquire().0, Admission::Rejected);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(b.try_acquire().0, Admission::Rejected);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_consecutive_count() {
        let b = CircuitBreaker::new(settings());
        for _ in 0..4 {
            call(&b, Outcome::Failure);
        }
        call(&b, Outcome::Success { slow: false });
        for _ in 0..4 {
            call(&b, Outcome::Failure);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failure_rate_over_the_window_with_minimum_calls() {
        let b = CircuitBreaker::new(settings());
        // Alternate: never 5 in a row, but 50 % of 20 calls.
        for i in 0..19 {
            let outcome = if i % 2 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success { slow: false }
            };
            call(&b, outcome);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "19 calls is under min_calls"
        );
        call(&b, Outcome::Success { slow: false });
        assert_eq!(b.state(), BreakerState::Closed, "9 of 20 failed");
        call(&b, Outcome::Failure);
        assert_eq!(b.state(), BreakerState::Open, "11 of 21 failed");
    }

    #[tokio::test(start_paused = true)]
    async fn old_calls_leave_the_window() {
        let b = CircuitBreaker::new(settings());
        for _ in 0..10 {
            call(&b, Outcome::Failure);
            call(&b, Outcome::Success { slow: false });
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        for _ in 0..19 {
            call(&b, Outcome::Success { slow: false });
        }
        call(&b, Outcome::Failure);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_one_trial_through_and_closes_on_success() {
        let b = CircuitBreaker::new(settings());
        for _ in 0..5 {
            call(&b, Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        let (first, _) = b.try_acquire();
        assert_eq!(first, Admission::Trial);
        assert_eq!(
            b.try_acquire().0,
            Admission::Rejected,
            "one trial at a time"
        );
        let t = b.record(first, Outcome::Success { slow: false });
        assert_eq!(
            t,
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Closed
            })
        );
        assert_eq!(b.try_acquire().0, Admission::Allowed);
    }

    /// A call let in before the breaker opened that succeeds during a trial is no
    /// pass, and a trial that says nothing leaves the next caller a trial: the breaker
    /// cannot be left half-open with no way out.
    #[tokio::test(start_paused = true)]
    async fn a_trial_that_says_nothing_never_wedges_it_half_open() {
        let b = CircuitBreaker::new(settings());
        let (early, _) = b.try_acquire();
        for _ in 0..5 {
            call(&b, Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        let (trial, _) = b.try_acquire();
        assert_eq!(trial, Admission::Trial);
        b.record(early, Outcome::Success { slow: false });
        b.record(trial, Outcome::Ignored);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let (next, _) = b.try_acquire();
        assert_eq!(next, Admission::Trial);
        b.record(next, Outcome::Success { slow: false });
        assert_eq!(b.state(), BreakerState::Closed);
    }

    /// A call let in before the breaker opened, failing once it is half-open (a
    /// timeout that began in the outage), does not reopen it: the trials decide.
    #[tokio::test(start_paused = true)]
    async fn a_failure_from_before_the_opening_does_not_reopen_a_half_open_breaker() {
        let b = CircuitBreaker::new(settings());
        let (early, _) = b.try_acquire();
        assert_eq!(early, Admission::Allowed);
        for _ in 0..5 {
            call(&b, Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        let (trial, _) = b.try_acquire();
        assert_eq!(trial, Admission::Trial);
        assert_eq!(b.record(early, Outcome::Failure), None);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record(trial, Outcome::Success { slow: false });
        assert_eq!(b.state(), BreakerState::Closed);
        // A straggler failing while a forced trial is out leaves that trial undoable.
        for _ in 0..5 {
            call(&b, Outcome::Failure);
        }
        let (straggler, _) = (Admission::Allowed, ());
        tokio::time::advance(Duration::from_secs(1)).await;
        let (forced, _) = b.force_trial();
        assert_eq!(forced, Admission::Trial);
        b.record(straggler, Outcome::Failure);
        b.record(forced, Outcome::Ignored);
        assert!(b.undo_forced_trial().is_some());
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(600)).await;
        // A trial's own failure still reopens it.
        for _ in 0..5 {
            call(&b, Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        let (trial, _) = b.try_acquire();
        assert_eq!(trial, Admission::Trial);
        b.record(trial, Outcome::Failure);
        assert_eq!(b.state(), BreakerState::Open);
    }

    /// A forced trial that said nothing about the target puts back the open period
    /// it interrupted; one that answered decides as any trial does.
    #[tokio::test(start_paused = true)]
    async fn an_undone_forced_trial_leaves_the_open_period_as_it_was() {
        let b = CircuitBreaker::new(settings());
        let (early, _) = b.try_acquire();
        for _ in 0..5 {
            call(&b, Outcome::Failure);
        }
        let opened = b.opened_at();
        tokio::time::advance(Duration::from_secs(10)).await;
        let (trial, _) = b.force_trial();
        assert_eq!(trial, Admission::Trial);
        // A call let in before it opened, answering now, decides nothing.
        b.record(early, Outcome::Success { slow: false });
        b.record(trial, Outcome::Ignored);
        assert!(b.undo_forced_trial().is_some());
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.opened_at(), opened);
        // Still open until its own time: 20 s more.
        tokio::time::advance(Duration::from_secs(19)).await;
        assert_eq!(b.try_acquire().0, Admission::Rejected);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);

        let (trial, _) = b.force_trial();
        b.record(trial, Outcome::Success { slow: false });
        assert_eq!(b.undo_forced_trial(), None);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn open_time_grows_with_trips_and_is_capped() {
        let b = CircuitBreaker::new(BreakerSettings {
            max_open_for: Duration::from_secs(70),
            ..settings()
        });
        for _ in 0..5 {
            call(&b, Outcome::Failure);
        }
        let mut open_times = Vec::new();
        for _ in 0..3 {
            let start = Instant::now();
            while b.state() == BreakerState::Open {
                tokio::time::advance(Duration::from_secs(1)).await;
            }
            open_times.push(start.elapsed().as_secs());
            // The trial fails: open again, one more trip.
            assert_eq!(call(&b, Outcome::Failure), Admission::Trial);
        }
        assert_eq!(open_times, [30, 60, 70]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_forced_trial_opens_the_door_to_one_call_at_a_time() {
        let b = CircuitBreaker::new(settings());
        for _ in 0..5 {
            call(&b, Outcome::Failure);
        }
        let (first, t) = b.force_trial();
        assert_eq!(first, Admission::Trial);
        assert_eq!(t.map(|t| t.to), Some(BreakerState::HalfOpen));
        assert_eq!(
            b.force_trial().0,
            Admission::Rejected,
            "one trial in flight"
        );
        b.record(first, Outcome::Failure);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.force_trial().0, Admission::Trial);
    }

    #[tokio::test(start_paused = true)]
    async fn a_good_probe_half_opens_but_does_not_close() {
        let b = CircuitBreaker::new(settings());
        for _ in 0..5 {
            call(&b, Outcome::Failure);
        }
        assert!(b.probe_succeeded().is_some());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(call(&b, Outcome::Success { slow: false }), Admission::Trial);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_first_tokens_trip_it_and_ignored_outcomes_do_not() {
        let b = CircuitBreaker::new(settings());
        for _ in 0..10 {
            call(&b, Outcome::Ignored);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        for _ in 0..5 {
            call(&b, Outcome::Success { slow: true });
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_keeps_open_time_within_ten_percent() {
        for _ in 0..20 {
            let b = CircuitBreaker::new(BreakerSettings {
                jitter: 0.1,
                ..settings()
            });
            for _ in 0..5 {
                call(&b, Outcome::Failure);
            }
            tokio::time::advance(Duration::from_secs(26)).await;
            assert_eq!(b.state(), BreakerState::Open);
            tokio::time::advance(Duration::from_secs(7)).await;
            assert_eq!(b.state(), BreakerState::HalfOpen);
        }
    }
}
