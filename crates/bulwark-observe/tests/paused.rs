//! Rules under paused tokio time, through the whole observer: a real router over
//! in-process upstreams, the side-car ticking every second. `for:` holds an alert
//! back, an incident fires once however long it lasts, and resolves once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bulwark_core::ErrorClass;
use bulwark_observe::AlertsConfig;
use common::prom;
use serde_json::json;
use tokio::time::Instant;

fn alerts(rules: serde_json::Value) -> AlertsConfig {
    serde_json::from_value(json!({"source": "gw", "evaluate_every": "1s", "rules": rules})).unwrap()
}

fn firing(gw: &common::Gateway, rule: &str) -> bool {
    gw.observer.status().alerts.iter().any(|a| a.rule == rule)
}

#[tokio::test(start_paused = true)]
async fn success_rate_waits_for_its_for_duration_fires_once_and_resolves() {
    common::install_tls();
    // The breaker never opens, so the failing primary keeps being tried.
    let gw = common::gateway(
        &common::config(1_000_000, "30s"),
        alerts(
            json!({"success_rate": {"for": "1m", "min_calls": 2}, "latency": {"enabled": false}}),
        ),
        Duration::from_secs(3600),
    );
    let _sidecar = gw.observer.spawn(std::future::pending());
    gw.primary.fail(ErrorClass::Transient);
    let start = Instant::now();
    let mut fired_at = None;
    for _ in 0..150 {
        gw.request().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if fired_at.is_none() && firing(&gw, "success_rate") {
            fired_at = Some(start.elapsed());
        }
    }
    let fired_at = fired_at.expect("the success-rate alert fired");
    // Pending from the first tick with two calls, firing one minute later.
    assert!(
        fired_at >= Duration::from_secs(60) && fired_at <= Duration::from_secs(64),
        "fired after {fired_at:?}"
    );
    gw.primary.heal();
    let healed = Instant::now();
    let mut resolved_at = None;
    for _ in 0..120 {
        gw.request().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if resolved_at.is_none() && !firing(&gw, "success_rate") {
            resolved_at = Some(healed.elapsed());
        }
    }
    // Resolves once the 1-minute window holds 90 % successes: within a minute.
    let resolved_at = resolved_at.expect("resolved");
    assert!(
        resolved_at <= Duration::from_secs(70),
        "resolved after {resolved_at:?}"
    );
    let m = prom::parse(&gw.observer.metrics_text()).unwrap();
    assert_eq!(
        m.value(
            "bulwark_alerts_total",
            &[("rule", "success_rate"), ("severity", "critical")]
        ),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn slow_primary_raises_a_latency_warning_after_for() {
    common::install_tls();
    let gw = common::gateway(
        &common::config(5, "30s"),
        alerts(json!({"latency": {"threshold": "5s", "for": "1m"}})),
        Duration::from_secs(3600),
    );
    let _sidecar = gw.observer.spawn(std::future::pending());
    *gw.primary.ttft.lock().unwrap() = Duration::from_secs(6);
    let start = Instant::now();
    let mut fired_at = None;
    while start.elapsed() < Duration::from_secs(200) {
        assert_eq!(gw.request().await.as_deref(), Some("primary"));
        if fired_at.is_none() && firing(&gw, "latency") {
            fired_at = Some(start.elapsed());
        }
    }
    // Five 6 s calls (30 s) make the p95 judgeable; then the `for` of one minute.
    let fired_at = fired_at.expect("latency alert fired");
    assert!(
        fired_at >= Duration::from_secs(90) && fired_at <= Duration::from_secs(100),
        "fired after {fired_at:?}"
    );
    let alert = gw
        .observer
        .status()
        .alerts
        .into_iter()
        .find(|a| a.rule == "latency")
        .unwrap();
    assert_eq!(alert.severity, "warning");
    assert_eq!(alert.subject, "chat/primary/m1");
    assert!(
        alert.summary.contains("6.0s") || alert.summary.contains("6s"),
        "{}",
        alert.summary
    );
    let m = prom::parse(&gw.observer.metrics_text()).unwrap();
    assert_eq!(
        m.value(
            "bulwark_alerts_total",
            &[("rule", "latency"), ("severity", "warning")]
        ),
        1.0
    );
    assert!(
        m.value(
            "bulwark_time_to_first_token_seconds_bucket",
            &[("provider", "primary"), ("le", "5")]
        ) == 0.0
    );
}
