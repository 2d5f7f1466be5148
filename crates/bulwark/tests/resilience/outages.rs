//! Item 15 of issue 3 (a long outage and the recovery) and the extra cases: three
//! targets failing differently, all targets down, the retry budget under a storm,
//! concurrent requests during an outage.

use std::sync::Arc;
use std::time::Duration;

use bulwark_router::{BreakerState, Tuning};
use futures::StreamExt;
use serde_json::json;

use super::support::*;

/// 15. Primary down for 60 s then healthy, one request every 4 s → every request
/// answered; while the breaker is open the primary sees only probes; traffic returns
/// within 30 s of recovery. Scaled 10×: down 6 s, a request every 400 ms, back within
/// 3 s; breaker open 3 s × trips; recovery probes every 500 ms (`Tuning`, 5 s by
/// default); backoff 50 ms base.
#[tokio::test]
async fn a_primary_outage_is_ridden_out_and_traffic_returns_after_recovery() {
    let tuning = Tuning {
        recovery_probe_interval: Duration::from_millis(500),
        ..Tuning::default()
    };
    let routes = route(
        "chat",
        &[P, S],
        &[
            TIMEOUTS,
            "circuit_breaker: {open_for: 3s, max_open_for: 30s}",
            "retry: {max_attempts: 3, base_delay: 50ms, max_delay: 800ms}",
        ],
    );
    let g = Arc::new(Gw::start_with(&routes, "", tuning).await);
    let transitions = g.watch_breakers();
    let outage = g
        .primary
        .push_fault(fault(json!({"fault": {"kind": "status", "status": 503}})));
    let start = tokio::time::Instant::now();
    let start_ms = g.t0.elapsed().as_millis() as u64;
    let mut requests = Vec::new();
    let mut recovered_ms = 0;
    for k in 0..25u64 {
        tokio::time::sleep_until(start + Duration::from_millis(k * 400)).await;
        if k == 15 {
            g.primary.remove_fault(outage);
            recovered_ms = g.t0.elapsed().as_millis() as u64;
        }
        let g = Arc::clone(&g);
        requests.push(tokio::spawn(async move { g.openai(&chat(false)).await }));
    }
    let mut served = Vec::new();
    for r in requests {
        let r = r.await.unwrap();
        assert_eq!(r.status, 200, "every request is answered: {}", r.body);
        served.push((r.sent_ms, r.header("x-bulwark-provider").to_string()));
    }

    // Open periods of the primary's breaker, from the router's events.
    let transitions: Vec<_> = transitions
        .lock()
        .unwrap()
        .iter()
        .filter(|t| t.1 == "primary")
        .map(|t| (t.0, t.2, t.3))
        .collect();
    let mut open = Vec::new();
    for (i, (at, _, to)) in transitions.iter().enumerate() {
        if *to == BreakerState::Open {
            let until = transitions.get(i + 1).map_or(u64::MAX, |t| t.0);
            open.push((*at, until));
        }
    }
    assert!(!open.is_empty(), "{transitions:?}");
    // No caller traffic reached the primary while its breaker was open.
    let callers: Vec<u64> = caller_calls(&g.primary).iter().map(|c| c.at_ms).collect();
    for at in &callers {
        assert!(
            !open
                .iter()
                .any(|(from, to)| at > &(from + 20) && *at + 20 < *to),
            "caller call at {at} ms while open {open:?}"
        );
    }
    let probes = probe_calls(&g.primary);
    assert!(!probes.is_empty());
    let back = served
        .iter()
        .find(|(at, p)| *at >= recovered_ms && p == "primary")
        .map(|(at, _)| at - recovered_ms)
        .unwrap();
    assert!(back <= 3000, "traffic back {back} ms after recovery");
    assert!(
        served[20..].iter().all(|(_, p)| p == "primary"),
        "{served:?}"
    );
    eprintln!(
        "item 15: outage {}..{} ms; breaker {transitions:?}; open periods {open:?}; {} probes; primary caller calls at {callers:?}; traffic back {back} ms after recovery",
        start_ms,
        recovered_ms,
        probes.len()
    );
}

/// Three targets where the first two fail in different ways: the primary 503s
/// (retried, then its breaker opens), the secondary is out of quota (no retry, then
/// skipped), the tertiary answers.
#[tokio::test]
async fn three_targets_where_the_first_two_fail_in_different_ways() {
    let g = Gw::start(&route("chat", &[P, S, T], &scaled())).await;
    g.primary
        .push_fault(fault(json!({"fault": {"kind": "status", "status": 503}})));
    g.secondary.push_fault(fault(json!({
        "fault": {"kind": "status", "status": 429, "code": "insufficient_quota",
                  "message": "You exceeded your current quota, please check your plan and billing details."}
    })));
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let r = g.openai(&chat(false)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-bulwark-provider"), "tertiary");
        assert_eq!(r.json()["model"], "gemini-test");
        attempts.push(r.header("x-bulwark-attempts").to_string());
    }
    assert_eq!(attempts, ["5", "3", "1"]);
    assert_eq!(caller_calls(&g.primary).len(), 5);
    assert_eq!(
        caller_calls(&g.secondary).len(),
        1,
        "quota: no retry, then skipped"
    );
    assert_eq!(caller_calls(&g.tertiary).len(), 3);
}

/// All targets down → a fast, clean 503 with `Retry-After`; no queue: once every
/// breaker is open, one trial at a time goes upstream and everyone else is refused at
/// once (here the dead upstreams hang, so a trial waits the 1 s first-token timeout).
#[tokio::test]
async fn all_targets_down_gets_a_fast_clean_503_with_retry_after_and_no_queue() {
    let settings = [
        TIMEOUTS,
        "circuit_breaker: {consecutive_failures: 3, open_for: 30s}",
        "retry: {max_attempts: 3, base_delay: 50ms, max_delay: 200ms}",
    ];
    let g = Gw::start(&route("chat", &[P, S], &settings)).await;
    for mock in [&g.primary, &g.secondary] {
        mock.push_fault(fault(json!({"fault": {"kind": "status", "status": 503}})));
    }
    let r = g.openai(&chat(false)).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert!(r.json()["error"]["message"].is_string());
    assert_eq!(r.header("x-bulwark-attempts"), "6");
    assert!(r.ms() < 1000, "{}", r.ms());
    assert_eq!(g.breaker("primary"), BreakerState::Open);
    assert_eq!(g.breaker("secondary"), BreakerState::Open);

    // Now the upstreams hang. 20 callers at once.
    for mock in [&g.primary, &g.secondary] {
        mock.clear_faults();
        mock.push_fault(fault(json!({"fault": {"kind": "hang"}})));
    }
    let before = g.primary.calls().len() + g.secondary.calls().len();
    let burst: Vec<Resp> = futures::stream::iter(0..20)
        .map(|i| {
            let g = &g;
            async move {
                if i % 2 == 0 {
                    g.openai(&chat(false)).await
                } else {
                    g.anthropic(&anthropic_chat(false)).await
                }
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let upstream = g.primary.calls().len() + g.secondary.calls().len() - before;
    let fast: Vec<u64> = burst
        .iter()
        .filter(|r| r.ms() < 300)
        .map(Resp::ms)
        .collect();
    for r in &burst {
        assert!(matches!(r.status, 503 | 504), "{} {}", r.status, r.body);
        assert!(!r.header("retry-after").is_empty(), "{}", r.body);
        let json = r.json();
        assert!(json["error"]["message"].is_string(), "{json}");
    }
    eprintln!(
        "all down: first 503 in {} ms; burst of 20: {} refused in <300 ms (max {:?} ms), {} upstream calls",
        r.ms(),
        fast.len(),
        fast.iter().max(),
        upstream
    );
    assert!(upstream <= 2, "{upstream} upstream calls for 20 callers");
    assert!(fast.len() >= 18, "{fast:?}");
    assert!(burst.iter().all(|r| r.ms() < 2000));
}

/// The retry budget under a storm: every target fails half the time (alternate calls
/// 503), 200 callers, 20 at a time; upstream attempts stay ≤ 1.2 × caller requests
/// (default budget: 20 % plus 1/s). The breakers are set out of reach so the budget
/// alone is measured; backoff 10 ms base so the storm is quick.
#[tokio::test]
async fn the_retry_budget_holds_under_a_storm() {
    let settings = [
        TIMEOUTS,
        "circuit_breaker: {consecutive_failures: 100000, min_calls: 100000}",
        "retry: {max_attempts: 3, base_delay: 10ms, max_delay: 50ms}",
    ];
    let g = Gw::start(&route("chat", &[P, S], &settings)).await;
    for mock in [&g.primary, &g.secondary] {
        for _ in 0..400 {
            mock.push_fault(fault(
                json!({"fault": {"kind": "status", "status": 503}, "times": 1}),
            ));
            mock.push_fault(fault(
                json!({"fault": {"kind": "slow_first_token", "delay_ms": 0}, "times": 1}),
            ));
        }
    }
    let callers = 200;
    let results: Vec<Resp> = futures::stream::iter(0..callers)
        .map(|_| {
            let g = &g;
            async move { g.openai(&chat(false)).await }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let answered = results.iter().filter(|r| r.status == 200).count();
    for r in results.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(!r.header("retry-after").is_empty());
    }
    let upstream = g.primary.calls().len() + g.secondary.calls().len();
    eprintln!(
        "storm: {callers} callers, {answered} answered, {upstream} upstream attempts ({:.2}×)",
        upstream as f64 / callers as f64
    );
    assert!(
        upstream as f64 <= 1.2 * callers as f64,
        "{upstream} upstream attempts for {callers} callers"
    );
    assert!(answered >= callers / 2, "{answered}");
}

/// Concurrent requests during an outage: once the primary's breaker is open, a burst
/// of 30 callers all reach the fallback and the primary sees none of them.
#[tokio::test]
async fn concurrent_requests_during_an_outage_all_reach_the_fallback() {
    let g = Gw::start(&route(
        "chat",
        &[P, S],
        &[TIMEOUTS, "circuit_breaker: {open_for: 30s}"],
    ))
    .await;
    g.primary
        .push_fault(fault(json!({"fault": {"kind": "status", "status": 503}})));
    while g.breaker("primary") != BreakerState::Open {
        assert_eq!(g.openai(&chat(false)).await.status, 200);
    }
    let before = caller_calls(&g.primary).len();
    let burst: Vec<Resp> = futures::stream::iter(0..30)
        .map(|_| {
            let g = &g;
            async move { g.openai(&chat(false)).await }
        })
        .buffer_unordered(30)
        .collect()
        .await;
    assert!(burst.iter().all(|r| r.status == 200
        && r.header("x-bulwark-provider") == "secondary"
        && r.header("x-bulwark-attempts") == "1"));
    assert_eq!(caller_calls(&g.primary).len(), before);
    let slowest = burst.iter().map(Resp::ms).max().unwrap();
    eprintln!(
        "outage burst: 30/30 answered by the fallback, slowest {slowest} ms, primary untouched"
    );
}

/// A burst at the very onset of an outage, before the breaker has seen a failure,
/// on a fresh, quiet gateway (whose retry budget is only its floor): every caller is
/// answered by the fallback, because failing over onto a healthy target is free, and
/// the primary sees at most one call per caller plus its retries within the budget.
#[tokio::test]
async fn a_burst_at_the_onset_of_an_outage_gets_answers_or_clean_errors() {
    let g = primary_then_secondary().await;
    g.primary
        .push_fault(fault(json!({"fault": {"kind": "status", "status": 503}})));
    let burst: Vec<Resp> = futures::stream::iter(0..20)
        .map(|_| {
            let g = &g;
            async move { g.openai(&chat(false)).await }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let answered = burst.iter().filter(|r| r.status == 200).count();
    for r in burst.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(!r.header("retry-after").is_empty());
    }
    let primary = caller_calls(&g.primary).len();
    let upstream = primary + caller_calls(&g.secondary).len();
    eprintln!(
        "onset burst: {answered}/20 answered, primary saw {primary} calls, {upstream} upstream in all, slowest {} ms",
        burst.iter().map(Resp::ms).max().unwrap()
    );
    assert_eq!(
        answered, 20,
        "failover onto a healthy fallback must not be refused"
    );
    assert!(primary <= 20 + 10, "{primary}");
    // Each caller reaches the fallback at most once: load moved, not multiplied.
    assert!(upstream - primary <= 20, "{upstream}");
}
