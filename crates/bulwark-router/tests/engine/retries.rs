//! Retries with backoff, the server's wait, and one deadline over all of it.

use super::support::*;

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

        ..Default::default()
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

#[tokio::test(start_paused = true)]
async fn a_503_asking_for_a_long_wait_fails_over_instead_of_waiting() {
    let epoch = Instant::now();
    let a = Scripted::new(epoch, |_| {
        let mut err = UpstreamError::new(ErrorClass::Transient, "scripted 503").with_status(503);
        err.retry_after = Some(Duration::from_secs(60));
        Reply::Fail {
            after: Duration::ZERO,
            err,
        }
    });
    let b = Scripted::new(epoch, |_| ok());
    let h = harness(
        epoch,
        vec![route("chat", vec![target("a"), target("b")])],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    );
    let served = h.chat().await.unwrap();
    assert_eq!(served.provider, "b");
    assert_eq!(a.caller_ms(), [0], "no 60 s wait on a failing target");
    assert_eq!(b.caller_ms(), [0]);
}

#[tokio::test(start_paused = true)]
async fn a_503_with_a_short_wait_is_retried_after_that_wait() {
    let epoch = Instant::now();
    let a = Scripted::new(epoch, |c| {
        if c.caller_n == 0 {
            let mut err =
                UpstreamError::new(ErrorClass::Transient, "scripted 503").with_status(503);
            err.retry_after = Some(Duration::from_secs(2));
            Reply::Fail {
                after: Duration::ZERO,
                err,
            }
        } else {
            ok()
        }
    });
    let b = Scripted::new(epoch, |_| ok());
    let h = harness(
        epoch,
        vec![route("chat", vec![target("a"), target("b")])],
        &[("a", &a), ("b", &b)],
        roomy_budget(),
        tuning(),
    );
    assert_eq!(h.chat().await.unwrap().provider, "a");
    assert_eq!(a.caller_ms(), [0, 2000]);
    assert!(b.caller_ms().is_empty());
}
