//! Circuit breakers in the failover loop: opening, probes, half-open trials, the
//! all-open fallback, active health checks.

use super::support::*;

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
async fn every_breaker_transition_is_reported_even_when_the_state_was_only_read() {
    let epoch = Instant::now();
    // a is down (probes too) until 31 s.
    let a = Scripted::new(epoch, |c| {
        if c.at < Duration::from_secs(31) {
            fail(ErrorClass::Transient, 503)
        } else {
            ok()
        }
    });
    let b = Scripted::new(epoch, |_| ok());
    let mut r = route("chat", vec![target("a"), target("b")]);
    r.retry.max_attempts = 1;
    let h = harness(
        epoch,
        vec![r],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    );
    let transitions = h.watch_breakers();
    // Five requests, each a failure on a (at 0, 10, ..., 40 ms) and b's answer.
    for _ in 0..5 {
        h.chat().await.unwrap();
    }
    h.sleep_until_ms(31_000).await;
    // The open period ended at 30.04 s, when the prober only looked and stood down;
    // a status page, a hedge or a sticky lookup may look too ...
    assert_eq!(h.health("a").breaker.state(), BreakerState::HalfOpen);
    // ... then the trial closes it.
    assert_eq!(h.chat().await.unwrap().provider, "a");
    tokio::task::yield_now().await;
    use BreakerState::{Closed, HalfOpen, Open};
    let seen: Vec<_> = transitions
        .lock()
        .unwrap()
        .iter()
        .map(|t| (t.0, t.2, t.3))
        .collect();
    assert_eq!(
        seen,
        [
            (40, Closed, Open),
            (31_000, Open, HalfOpen),
            (31_010, HalfOpen, Closed)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn active_health_checks_find_a_dead_target_before_callers_do() {
    let epoch = Instant::now();
    // a dies at 10 s and comes back at 23 s.
    let a = Scripted::new(epoch, |c| {
        let down = Duration::from_secs(10)..Duration::from_secs(23);
        if down.contains(&c.at) {
            fail(ErrorClass::Transient, 503)
        } else {
            ok()
        }
    });
    let b = Scripted::new(epoch, |_| ok());
    let mut checked = provider("a");
    checked.health_check = Some(HealthCheckConfig {
        model: "a-model".into(),
        interval: HumanDuration::secs(2),
        timeout: HumanDuration::secs(1),
    });
    let h = harness_with(
        epoch,
        vec![checked, provider("b")],
        vec![route("chat", vec![target("a"), target("b")])],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    );
    let transitions = h.watch_breakers();
    h.router.start_health_checks();

    // Probes every 2 s (a good one takes 10 ms); five failed ones in a row open the
    // breaker at 18.04 s without a single caller call.
    h.sleep_until_ms(19_000).await;
    let served = h.chat().await.unwrap();
    assert_eq!((served.provider.as_str(), served.attempts), ("b", 1));
    // A good probe at 24.04 s half-opens it; the next caller's trial closes it.
    h.sleep_until_ms(25_000).await;
    assert_eq!(h.chat().await.unwrap().provider, "a");
    tokio::task::yield_now().await;
    assert_eq!(
        a.probe_ms(),
        [
            2000, 4010, 6020, 8030, 10_040, 12_040, 14_040, 16_040, 18_040, 20_040, 22_040, 24_040
        ]
    );
    assert_eq!(a.caller_ms(), [25_000]);
    use BreakerState::{Closed, HalfOpen, Open};
    let seen: Vec<_> = transitions
        .lock()
        .unwrap()
        .iter()
        .map(|t| (t.0, t.2, t.3))
        .collect();
    assert_eq!(
        seen,
        [
            (18_040, Closed, Open),
            (24_050, Open, HalfOpen),
            (25_010, HalfOpen, Closed)
        ]
    );
}

/// Routes `chat` = [a, b] (changed by `tune`) and `b-only` = [b], breakers opening
/// after 2 failures in a row; b fails its first two calls, then answers. Returns with
/// b's breaker opened at t = 0, through `b-only`.
async fn b_opened_first(
    a: impl Fn(&Ctx) -> Reply + Send + Sync + 'static,
    tune: impl FnOnce(&mut RouteConfig),
) -> (Harness, Arc<Scripted>, Arc<Scripted>) {
    let epoch = Instant::now();
    let a = Scripted::new(epoch, a);
    let b = Scripted::new(epoch, |c| {
        if c.caller_n < 2 {
            fail(ErrorClass::Transient, 503)
        } else {
            ok()
        }
    });
    let mut chat = route("chat", vec![target("a"), target("b")]);
    chat.circuit_breaker.consecutive_failures = 2;
    tune(&mut chat);
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
    let opts = RequestOptions::default();
    assert!(h.chat_on("b-only", &opts).await.is_err());
    assert!(h.chat_on("b-only", &opts).await.is_err());
    assert_eq!(h.health("b").breaker.state(), BreakerState::Open);
    (h, a, b)
}

#[tokio::test(start_paused = true)]
async fn when_every_target_is_open_the_one_opened_longest_ago_is_tried() {
    // b opens first (t = 0, through the route that only has b) ...
    let (h, a, b) = b_opened_first(
        |_| fail(ErrorClass::Transient, 503),
        |chat| chat.retry.max_attempts = 2,
    )
    .await;
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

/// Route `[a, b]` where only a takes the request: a fails its first two calls, which
/// open its breaker (the first request's failure must be a's, not b's "unsupported"),
/// then answers with `then`; b lacks a feature the request uses.
async fn only_a_takes_it_and_is_open(then: fn() -> Reply) -> Harness {
    let epoch = Instant::now();
    let a = Scripted::new(epoch, move |c| {
        if c.caller_n < 2 {
            fail(ErrorClass::Transient, 503)
        } else {
            then()
        }
    });
    let b = Scripted::new(epoch, |_| fail(ErrorClass::Unsupported, 400));
    let mut chat = route("chat", vec![target("a"), target("b")]);
    chat.retry.max_attempts = 2;
    chat.circuit_breaker.consecutive_failures = 2;
    let h = harness(
        epoch,
        vec![chat],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    );
    let failure = h.chat().await.unwrap_err();
    assert_eq!(h.health("a").breaker.state(), BreakerState::Open);
    assert_eq!(failure.error.class, ErrorClass::Transient);
    h
}

/// The others' "unsupported" does not stop the open target's trial.
#[tokio::test(start_paused = true)]
async fn an_open_target_that_alone_takes_the_request_still_gets_its_trial() {
    let h = only_a_takes_it_and_is_open(ok).await;
    h.sleep_until_ms(1000).await;
    let served = h.chat().await.unwrap();
    assert_eq!(served.provider, "a");
    assert_eq!(h.health("a").breaker.state(), BreakerState::Closed);
}

/// When no trial can go, the caller hears "unavailable" (503, retry), not a 400 that
/// blames the request.
#[tokio::test(start_paused = true)]
async fn with_its_only_capable_target_open_and_on_trial_a_request_is_unavailable_not_invalid() {
    let h = std::sync::Arc::new(only_a_takes_it_and_is_open(|| Reply::Hang).await);
    // One caller's trial of a hangs; the next caller cannot have one.
    let first = tokio::spawn({
        let h = h.clone();
        async move { h.chat().await.map(|s| s.provider) }
    });
    tokio::task::yield_now().await;
    let failure = h.chat().await.unwrap_err();
    assert_eq!(
        failure.error.class,
        ErrorClass::Transient,
        "{}",
        failure.error.message
    );
    assert!(failure.error.retry_after.is_some());
    first.abort();
}

/// When the open target's trial shows it cannot take the request either, the caller
/// hears that (a 400 it should not retry), and the trial, which said nothing about the
/// target's health, leaves its breaker open for the rest of its period.
#[tokio::test(start_paused = true)]
async fn a_request_no_target_takes_is_refused_and_leaves_the_open_breaker_open() {
    let h = only_a_takes_it_and_is_open(|| fail(ErrorClass::Unsupported, 400)).await;
    let opened = h.health("a").breaker.opened_at();
    h.sleep_until_ms(1000).await;
    let failure = h.chat().await.unwrap_err();
    assert_eq!(
        failure.error.class,
        ErrorClass::Unsupported,
        "{}",
        failure.error.message
    );
    assert_eq!(h.health("a").breaker.state(), BreakerState::Open);
    assert_eq!(h.health("a").breaker.opened_at(), opened);
}

/// A half-open trial slot taken just as the request's deadline passed goes back: kept,
/// it would refuse every caller of the target for good.
#[tokio::test(start_paused = true)]
async fn a_trial_slot_taken_at_the_deadline_is_given_back() {
    // The first-token wait on a ends exactly at the request's deadline.
    let (h, _a, b) = b_opened_first(
        |_| Reply::Hang,
        |chat| chat.timeouts.total = chat.timeouts.first_token,
    )
    .await;
    let opts = RequestOptions::default();
    // b's open period is over when the request on `chat` reaches it, at its deadline.
    h.sleep_until_ms(20_000).await;
    assert!(h.chat().await.is_err());
    assert_eq!(b.caller_ms(), [0, 0]);
    let served = h.chat_on("b-only", &opts).await.unwrap();
    assert_eq!(served.provider, "b");
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
