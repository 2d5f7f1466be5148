//! Which target serves: hedging, sticky sessions, weights, context windows, quota.

use super::support::*;

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

        ..Default::default()
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

/// A route `total` larger than the clock can add to now (`100000000y` parses) is "no
/// deadline", not a panic on every request.
#[tokio::test(start_paused = true)]
async fn a_total_past_what_the_clock_can_add_still_serves() {
    let epoch = Instant::now();
    let a = Scripted::new(epoch, |_| ok());
    let mut r = route("chat", vec![target("a")]);
    r.timeouts.total = bulwark_core::config::HumanDuration(Duration::from_secs(u64::MAX));
    let h = harness(epoch, vec![r], &[("a", &a)], roomy_budget(), tuning());
    let served = h
        .router
        .chat(&h.route("chat"), &request(), &RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(served.provider, "a");
}

/// A token count goes to the first target that can answer: one that hangs has the
/// first-token timeout and hands over; one that cannot count (or is open) is passed by.
#[tokio::test(start_paused = true)]
async fn a_token_count_passes_a_hung_counter_on_after_the_first_token_timeout() {
    let epoch = Instant::now();
    let hung = Scripted::new(epoch, |_| Reply::Hang);
    let cannot = Scripted::new(epoch, |_| fail(ErrorClass::Unsupported, 400));
    let counts = Scripted::new(epoch, |_| Reply::Answer {
        ttft: millis(5),
        tokens: 7,
        gap: Duration::ZERO,
    });
    let chat = route("chat", vec![target("a"), target("b"), target("c")]);
    let h = harness(
        epoch,
        vec![chat],
        &[("a", &hung), ("b", &cannot), ("c", &counts)],
        roomy_budget(),
        tuning(),
    );
    let route = h.route("chat");
    let served = h
        .router
        .count_tokens(&route, &request(), &RequestOptions::default())
        .await
        .unwrap();
    assert_eq!((served.value, served.provider.as_str()), (7, "c"));
    assert_eq!(served.attempts, 3);
    // The default first-token timeout (15 s), then c's 5 ms.
    assert_eq!(h.now_ms(), 15_005);
    // A count is not traffic the breakers judge a target by.
    assert_eq!(h.health("a").breaker.state(), BreakerState::Closed);
}

/// `knows` answers what `resolve` would find without building a target's state (what
/// `GET /v1/models/{id}` asks, for any name a caller sends).
#[tokio::test(start_paused = true)]
async fn knowing_a_model_builds_nothing() {
    let h = one_target_harness();
    let before = h.router.targets().len();
    for n in 0..100 {
        assert!(h.router.knows(&format!("a/junk-{n}")));
    }
    assert!(h.router.knows("chat"));
    assert!(!h.router.knows("nope") && !h.router.knows("a/") && !h.router.knows("zz/m"));
    assert_eq!(h.router.targets().len(), before);
}

/// Callers choose `provider/model` names, and each new one keeps a target's state for
/// good: past the limit, a new name is refused (naming the fix), while names in use
/// and configured routes go on working.
#[tokio::test(start_paused = true)]
async fn new_provider_model_names_stop_at_the_limit() {
    use bulwark_router::{MAX_PROVIDER_MODEL_TARGETS, ResolveError};
    let h = one_target_harness();
    for n in 0..MAX_PROVIDER_MODEL_TARGETS {
        h.router.resolve(&format!("a/m-{n}")).unwrap();
    }
    let err = h.router.resolve("a/one-too-many").unwrap_err();
    assert!(matches!(err, ResolveError::TooManyModels { .. }), "{err}");
    let caller = err.to_gateway_error();
    assert_eq!(
        (caller.status_code(), caller.param.as_deref()),
        (400, Some("model"))
    );
    assert!(
        caller.message.contains("configure a route"),
        "{}",
        caller.message
    );
    h.router.resolve("a/m-7").unwrap();
    h.router.resolve("chat").unwrap();
    assert_eq!(h.router.targets().len(), 1 + MAX_PROVIDER_MODEL_TARGETS);
}

// ---------------------------------------------------------------------------
// The streaming commit point and reasoning
// ---------------------------------------------------------------------------

/// `a` reasons for `think`, then answers (`then` = None) or breaks before its first
/// answer token; `b` answers.
fn a_reasons_b_answers(
    think: Duration,
    then: Option<UpstreamError>,
) -> (Arc<Scripted>, Arc<Scripted>, Harness) {
    let epoch = Instant::now();
    let a = Scripted::new(epoch, move |_| Reply::Reasons {
        ttft: millis(100),
        think,
        then: then.clone(),
    });
    let b = Scripted::new(epoch, |_| answer(millis(100)));
    let h = harness(
        epoch,
        vec![route("chat", vec![target("a"), target("b")])],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    );
    (a, b, h)
}

fn reasons_then_breaks() -> (Arc<Scripted>, Arc<Scripted>, Harness) {
    a_reasons_b_answers(
        millis(400),
        Some(UpstreamError::new(
            ErrorClass::Protocol,
            "the upstream stream ended before the answer was complete",
        )),
    )
}

async fn stream_with(h: &Harness, reasoning_hidden: bool) -> Served<EventStream> {
    let mut req = request();
    req.stream = true;
    let opts = RequestOptions {
        reasoning_hidden,
        ..Default::default()
    };
    h.router
        .chat_stream(&h.route("chat"), &req, &opts)
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_cannot_see_reasoning_is_failed_over_until_the_first_answer_token() {
    let (a, b, h) = reasons_then_breaks();
    let served = stream_with(&h, true).await;
    assert_eq!(
        served.provider, "b",
        "nothing had reached the caller from a"
    );
    assert!(!a.caller_ms().is_empty());
    assert_eq!(b.caller_ms().len(), 1);
    let events: Vec<_> = served.value.collect().await;
    assert!(events.iter().all(Result::is_ok), "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Ok(StreamEvent::TextDelta { .. })))
    );
    assert!(matches!(
        events.last(),
        Some(Ok(StreamEvent::Finish { .. }))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_sees_reasoning_is_committed_at_it() {
    let (_, b, h) = reasons_then_breaks();
    let served = stream_with(&h, false).await;
    assert_eq!(h.now_ms(), 100, "committed at the reasoning");
    assert_eq!(served.provider, "a");
    let events: Vec<_> = served.value.collect().await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Ok(StreamEvent::ThinkingDelta { .. })))
    );
    assert!(
        matches!(events.last(), Some(Err(e)) if e.class == ErrorClass::Protocol),
        "the break after the commit ends the stream as an error: {events:?}"
    );
    assert!(b.caller_ms().is_empty());
}

#[tokio::test(start_paused = true)]
async fn reasoning_longer_than_the_first_token_timeout_is_no_stall() {
    // First token timeout 15 s, idle 20 s: 16 s of reasoning before the answer.
    let (_, b, h) = a_reasons_b_answers(Duration::from_secs(16), None);
    let served = stream_with(&h, true).await;
    assert_eq!(served.provider, "a");
    assert_eq!(h.now_ms(), 16_100, "committed at the first answer token");
    assert!(b.caller_ms().is_empty());
    let events: Vec<_> = served.value.collect().await;
    assert!(events.iter().all(Result::is_ok), "{events:?}");
    assert!(matches!(
        events.last(),
        Some(Ok(StreamEvent::Finish { .. }))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_broken_stream_resumes_on_a_healthy_target_with_the_budget_spent() {
    // No retry budget at all: a move onto a healthy target still goes ahead, as in
    // the failover loop, so the caller's stream is resumed rather than cut.
    let epoch = Instant::now();
    let a = Scripted::new(epoch, |_| Reply::Breaks {
        tokens: 3,
        err: UpstreamError::new(ErrorClass::Transient, "upstream stream broke"),
    });
    let b = Scripted::new(epoch, |_| answer(millis(10)));
    let mut r = route("chat", vec![target("a"), target("b")]);
    r.resume_streams = true;
    r.targets[1].accepts_prefill = true;
    let spent = RetryBudgetConfig {
        ratio: 0.0,
        min_per_second: 0.0,
    };
    let h = harness(epoch, vec![r], &[("a", &a), ("b", &b)], spent, tuning());
    let served = stream_with(&h, false).await;
    assert_eq!(served.provider, "a");
    let events: Vec<_> = served.value.collect().await;
    assert!(events.iter().all(Result::is_ok), "{events:?}");
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            Ok(StreamEvent::TextDelta { text }) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(text.starts_with("t1 t2 t3 "), "{text}");
    assert!(text.len() > "t1 t2 t3 ".len(), "b went on: {text}");
    assert_eq!(b.caller_ms().len(), 1);
}
