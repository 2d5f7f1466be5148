//! Alert delivery never touches the request path: with a slow receiver, a dead one
//! and a flaky one, requests take as long as without alerts, the side-car keeps up
//! with router events, notifications are retried, and failures are counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bulwark_core::ErrorClass;
use bulwark_observe::AlertsConfig;
use common::{Receiver, eventually, prom};
use serde_json::json;

fn alerts(
    slow: std::net::SocketAddr,
    dead: std::net::SocketAddr,
    flaky: std::net::SocketAddr,
) -> AlertsConfig {
    serde_json::from_value(json!({
        "source": "gw",
        "webhook": {"url": format!("http://{slow}/hook")},
        "pagerduty": {"routing_key": "k", "url": format!("http://{dead}"), "min_severity": "info"},
        "slack": {"webhook_url": format!("http://{flaky}/slack")},
        "evaluate_every": "20ms",
        "delivery": {"attempts": 3, "backoff": "50ms", "max_backoff": "200ms", "timeout": "300ms"},
        "rules": {
            "success_rate": {"for": "0s", "min_calls": 2},
            "latency": {"enabled": false}
        }
    }))
    .unwrap()
}

/// The p-th percentile (nearest rank) of a set of durations.
fn pct(d: &[Duration], p: usize) -> Duration {
    let mut d = d.to_vec();
    d.sort();
    d[(d.len() * p / 100).min(d.len() - 1)]
}

async fn timed_requests(gw: &common::Gateway, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        gw.request().await;
        out.push(start.elapsed());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_dead_and_flaky_receivers_do_not_slow_requests_and_are_retried() {
    common::install_tls();
    let (slow, slow_addr) = Receiver::start().await;
    *slow.delay.lock().unwrap() = Duration::from_secs(5);
    let dead_addr = common::dead_addr().await;
    let (flaky, flaky_addr) = Receiver::start().await;
    flaky.fail_first.store(2, Ordering::SeqCst);

    // Baseline: the same gateway shape without any alert channel.
    let quiet = common::gateway(
        &common::config(2, "60s"),
        AlertsConfig::default(),
        Duration::from_secs(60),
    );
    let _quiet_sidecar = quiet.observer.spawn(std::future::pending());
    quiet.primary.fail(ErrorClass::Transient);
    let baseline = timed_requests(&quiet, 200).await;

    let gw = common::gateway(
        &common::config(2, "60s"),
        alerts(slow_addr, dead_addr, flaky_addr),
        Duration::from_secs(60),
    );
    let sidecar = gw.observer.spawn(std::future::pending());
    gw.primary.fail(ErrorClass::Transient);
    // The first requests open incidents (success rate, breaker, failover) whose
    // notifications now sit on a slow, a dead and a flaky receiver.
    timed_requests(&gw, 5).await;
    eventually(Duration::from_secs(5), "incidents fired", || {
        gw.observer.status().alerts.len() >= 3
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "the slow receiver is holding a call",
        || slow.count() >= 1,
    )
    .await;
    let during = timed_requests(&gw, 200).await;
    // A request that waited on a delivery would take at least the 300 ms delivery
    // timeout (the slow receiver answers after 5 s); the median stays where it is
    // without any alert channel.
    let (p50, p99) = (pct(&during, 50), pct(&during, 99));
    let (base50, base99) = (pct(&baseline, 50), pct(&baseline, 99));
    assert!(
        p99 < Duration::from_millis(250) && p50 < base50 + Duration::from_millis(5),
        "requests slowed by alert delivery: p50 {p50:?} p99 {p99:?}, without alerts p50 {base50:?} p99 {base99:?}"
    );

    // The side-car kept up with every attempt while deliveries were stuck.
    eventually(Duration::from_millis(500), "events consumed", || {
        let s = gw.observer.status();
        let t = &s.routes[0].targets;
        t[1].calls.m1 == 205
    })
    .await;

    // Flaky: two 503s, then delivered on the third try.
    eventually(
        Duration::from_secs(5),
        "flaky receiver got a message on its third try",
        || flaky.answered.load(Ordering::SeqCst) >= 3,
    )
    .await;
    // Dead: every try of every notification fails and is counted.
    eventually(
        Duration::from_secs(10),
        "dead receiver's notifications given up",
        || {
            let m = prom::parse(&gw.observer.metrics_text()).unwrap();
            m.value(
                "bulwark_alert_notifications_dropped_total",
                &[("channel", "pagerduty")],
            ) >= 3.0
        },
    )
    .await;
    let m = prom::parse(&gw.observer.metrics_text()).unwrap();
    let pd_failures = m.value(
        "bulwark_alert_delivery_failures_total",
        &[("channel", "pagerduty")],
    );
    let pd_dropped = m.value(
        "bulwark_alert_notifications_dropped_total",
        &[("channel", "pagerduty")],
    );
    assert_eq!(
        pd_failures,
        pd_dropped * 3.0,
        "three tries per notification"
    );
    assert!(
        m.value(
            "bulwark_alert_delivery_failures_total",
            &[("channel", "slack")]
        ) >= 2.0
    );
    // The slow receiver: timed out and retried.
    eventually(Duration::from_secs(5), "slow receiver retried", || {
        slow.count() >= 2
    })
    .await;
    assert!(
        m.value(
            "bulwark_alert_delivery_failures_total",
            &[("channel", "webhook")]
        ) >= 1.0
            || slow.count() >= 2
    );
    sidecar.abort();
}
