//! A full incident, end to end, in real time against local receivers: the primary
//! fails, the route fails over, Slack, PagerDuty and the webhook each hear about it
//! exactly once; the primary recovers, each hears the resolve exactly once with the
//! trigger's `dedup_key`; `bulwark status` shows the serving target move and come
//! back; `/metrics` parses and agrees with the traffic sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bulwark_core::ErrorClass;
use bulwark_core::config::Secret;
use bulwark_observe::notify::webhook;
use bulwark_observe::render;
use bulwark_observe::{AlertsConfig, JournalState};
use common::{Received, Receiver, eventually, prom};
use serde_json::{Value, json};

const SECRET: &str = "hook-s3cret";
const ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdef012345";

fn alerts(addr: std::net::SocketAddr) -> AlertsConfig {
    serde_json::from_value(json!({
        "source": "test-gw",
        "slack": {"webhook_url": format!("http://{addr}/slack/T000/B000/XXXX")},
        "pagerduty": {"routing_key": ROUTING_KEY, "url": format!("http://{addr}/pd")},
        "webhook": {"url": format!("http://{addr}/hook"), "secret": SECRET},
        "evaluate_every": "25ms",
        "delivery": {"attempts": 3, "backoff": "20ms", "max_backoff": "100ms", "timeout": "2s"},
        "rules": {
            "success_rate": {"threshold": 0.9, "for": "0s", "min_calls": 2},
            "latency": {"enabled": false}
        }
    }))
    .unwrap()
}

/// Checks one PagerDuty Events API v2 body against the documented shape.
fn check_pagerduty(body: &Value) {
    let obj = body.as_object().unwrap();
    assert_eq!(obj["routing_key"], ROUTING_KEY);
    let key = obj["dedup_key"].as_str().unwrap();
    assert!(!key.is_empty() && key.len() <= 255);
    match obj["event_action"].as_str().unwrap() {
        "trigger" => {
            let allowed = [
                "routing_key",
                "event_action",
                "dedup_key",
                "payload",
                "client",
                "client_url",
                "images",
                "links",
            ];
            assert!(obj.keys().all(|k| allowed.contains(&k.as_str())), "{body}");
            let p = obj["payload"].as_object().unwrap();
            let allowed = [
                "summary",
                "source",
                "severity",
                "timestamp",
                "component",
                "group",
                "class",
                "custom_details",
            ];
            assert!(p.keys().all(|k| allowed.contains(&k.as_str())), "{body}");
            let summary = p["summary"].as_str().unwrap();
            assert!(!summary.is_empty() && summary.chars().count() <= 1024);
            assert_eq!(p["source"], "test-gw");
            assert!(
                ["critical", "error", "warning", "info"].contains(&p["severity"].as_str().unwrap())
            );
            let ts = p["timestamp"].as_str().unwrap();
            humantime::parse_rfc3339(ts).unwrap();
            assert!(p["custom_details"].is_object());
        }
        "resolve" => {
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            assert_eq!(keys.len(), 3, "{body}");
        }
        other => panic!("unexpected event_action {other}"),
    }
}

/// Checks one Slack incoming-webhook body: `text`, and blocks within Slack's limits.
fn check_slack(body: &Value) {
    assert!(!body["text"].as_str().unwrap().is_empty());
    let blocks = body["blocks"].as_array().unwrap();
    assert!(!blocks.is_empty() && blocks.len() <= 50);
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= 150);
    assert_eq!(blocks[1]["type"], "section");
    assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
    assert!(blocks[1]["text"]["text"].as_str().unwrap().chars().count() <= 3000);
    assert_eq!(blocks[2]["type"], "context");
    assert_eq!(blocks[2]["elements"][0]["type"], "mrkdwn");
}

/// Verifies the webhook's HMAC and returns its body.
fn check_webhook(r: &Received) -> Value {
    let ts: u64 = r.headers[webhook::TIMESTAMP_HEADER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let sig = r.headers[webhook::SIGNATURE_HEADER].to_str().unwrap();
    assert!(
        webhook::verify(SECRET.as_bytes(), ts, &r.body, sig),
        "bad signature"
    );
    let body = r.json();
    assert_eq!(body["version"], 1);
    assert_eq!(body["source"], "test-gw");
    humantime::parse_rfc3339(body["started_at"].as_str().unwrap()).unwrap();
    body
}

/// (dedup_key → [actions in order]) from a channel's bodies.
fn by_key(bodies: &[Value], key: &str, action: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for b in bodies {
        out.entry(b[key].as_str().unwrap().to_string())
            .or_default()
            .push(b[action].as_str().unwrap().to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_pages_once_and_resolves_once_on_every_channel() {
    common::install_tls();
    let (receiver, addr) = Receiver::start().await;
    let config = common::config(2, "300ms");
    let gw = common::gateway(&config, alerts(addr), Duration::from_millis(50));
    let sidecar = gw.observer.spawn(std::future::pending());
    gw.observer.set_journal_state(JournalState {
        rpo_target: Some(Duration::from_secs(60)),
        ..JournalState::new("fsync")
    });
    gw.observer.set_rpo_exposure(Duration::from_secs(4));

    // The status endpoint, behind an admin token, as the server would mount it.
    let app = bulwark_observe::http::routes(gw.observer.clone(), Some(Secret::new("adm1n")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let status = || async {
        render::fetch_status(&client, &base, Some("adm1n"))
            .await
            .unwrap()
    };

    // Healthy: the primary serves.
    for _ in 0..5 {
        assert_eq!(gw.request().await.as_deref(), Some("primary"));
    }
    eventually(
        Duration::from_secs(5),
        "status sees the primary serving",
        || gw.observer.status().routes[0].targets[0].calls.last_100 == 5,
    )
    .await;
    let before = status().await;
    let route = &before.routes[0];
    assert_eq!(route.serving.as_ref().unwrap().provider, "primary");
    assert!(!route.failed_over);
    let text = render::render(&before);
    assert!(text.contains("route chat: serving primary/m1\n"), "{text}");
    assert!(
        text.contains("journal: durability fsync, writes ok, RPO exposure 4s (target 1m)"),
        "{text}"
    );
    let refused = render::fetch_status(&client, &base, Some("wrong")).await;
    assert!(matches!(
        refused,
        Err(render::StatusError::Unauthorized { status: 401, .. })
    ));

    // Outage: two failed attempts open the breaker; the backup serves everything.
    gw.primary.fail(ErrorClass::Transient);
    for _ in 0..6 {
        assert_eq!(gw.request().await.as_deref(), Some("backup"));
    }
    eventually(
        Duration::from_secs(5),
        "the route is shown failed over",
        || {
            let s = gw.observer.status();
            s.routes[0].failed_over && s.alerts.len() >= 3
        },
    )
    .await;
    let during = status().await;
    assert_eq!(
        during.routes[0].serving.as_ref().unwrap().provider,
        "backup"
    );
    let primary = &during.routes[0].targets[0];
    assert_eq!(primary.last_error.as_ref().unwrap().class, "transient");
    let json = serde_json::to_string(&during).unwrap();
    assert!(
        !json.contains("sk-secret"),
        "an error message leaked into the status"
    );
    let text = render::render(&during);
    assert!(
        text.contains(
            "route chat: serving backup/m2 (FAILED OVER); last failover primary -> backup"
        ),
        "{text}"
    );
    let rules: Vec<&str> = during.alerts.iter().map(|a| a.rule.as_str()).collect();
    for rule in ["success_rate", "breaker_open", "failover"] {
        assert!(rules.contains(&rule), "{rules:?}");
    }

    // PagerDuty (critical and above) gets the success-rate trigger; Slack and the
    // webhook get every alert.
    eventually(Duration::from_secs(5), "notifications delivered", || {
        receiver.on("/pd/v2/enqueue").len() == 1
            && receiver.on("/hook").len() == 3
            && receiver.on("/slack/T000/B000/XXXX").len() == 3
    })
    .await;

    // Recovery: probes half-open the breaker, caller traffic closes it.
    gw.primary.heal();
    eventually(Duration::from_secs(5), "the primary is probed back", || {
        gw.observer.status().routes[0].targets[0].state != "open"
    })
    .await;
    for _ in 0..30 {
        gw.request().await;
    }
    assert_eq!(gw.request().await.as_deref(), Some("primary"));
    eventually(Duration::from_secs(5), "every incident resolved", || {
        receiver.on("/pd/v2/enqueue").len() == 2
            && receiver.on("/hook").len() == 6
            && receiver.on("/slack/T000/B000/XXXX").len() == 6
    })
    .await;
    let after = status().await;
    assert_eq!(
        after.routes[0].serving.as_ref().unwrap().provider,
        "primary"
    );
    assert!(!after.routes[0].failed_over);
    assert!(after.alerts.is_empty(), "{:?}", after.alerts);

    // Nothing more arrives: one trigger and one resolve per incident.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pd: Vec<Value> = receiver
        .on("/pd/v2/enqueue")
        .iter()
        .map(Received::json)
        .collect();
    pd.iter().for_each(check_pagerduty);
    let pd_keys = by_key(&pd, "dedup_key", "event_action");
    assert_eq!(pd_keys.len(), 1);
    assert_eq!(
        pd_keys.get("bulwark/test-gw/success_rate/primary/m1"),
        Some(&vec!["trigger".to_string(), "resolve".to_string()])
    );
    assert_eq!(pd[0]["payload"]["severity"], "error");
    assert_eq!(pd[0]["payload"]["component"], "primary/m1");
    assert_eq!(pd[0]["payload"]["class"], "success_rate");

    let hooks: Vec<Value> = receiver.on("/hook").iter().map(check_webhook).collect();
    let hook_keys = by_key(&hooks, "dedup_key", "event");
    assert_eq!(hook_keys.len(), 3, "{hook_keys:?}");
    for (key, actions) in &hook_keys {
        assert_eq!(
            actions,
            &vec!["trigger".to_string(), "resolve".to_string()],
            "{key}"
        );
    }
    assert!(hook_keys.contains_key("bulwark/test-gw/failover/chat"));
    assert!(hook_keys.contains_key("bulwark/test-gw/breaker_open/primary/m1"));

    let slack: Vec<Value> = receiver
        .on("/slack/T000/B000/XXXX")
        .iter()
        .map(Received::json)
        .collect();
    slack.iter().for_each(check_slack);
    let resolved = slack
        .iter()
        .filter(|b| b["text"].as_str().unwrap().starts_with("[RESOLVED]"))
        .count();
    assert_eq!(resolved, 3);
    assert_eq!(receiver.count(), 2 + 6 + 6);

    // /metrics parses and agrees with the traffic.
    let text = gw.observer.metrics_text();
    let m = prom::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let served_primary = gw.primary.calls.load(std::sync::atomic::Ordering::SeqCst);
    let requests = m.sum("bulwark_requests_total", &[("route", "chat")]);
    assert_eq!(requests, 5.0 + 6.0 + 31.0);
    assert_eq!(
        m.value(
            "bulwark_requests_total",
            &[("route", "chat"), ("outcome", "success")]
        ),
        requests
    );
    assert_eq!(
        m.value(
            "bulwark_upstream_attempts_total",
            &[("provider", "primary"), ("outcome", "transient")]
        ),
        2.0
    );
    assert_eq!(
        m.value(
            "bulwark_failovers_total",
            &[("route", "chat"), ("from", "primary"), ("to", "backup")]
        ),
        2.0
    );
    let attempts = m.sum("bulwark_upstream_attempts_total", &[]);
    assert_eq!(
        attempts,
        m.sum("bulwark_upstream_latency_seconds_count", &[])
    );
    let backup_ok = m.value(
        "bulwark_upstream_attempts_total",
        &[("provider", "backup"), ("outcome", "success")],
    );
    let primary_ok = m.value(
        "bulwark_upstream_attempts_total",
        &[("provider", "primary"), ("outcome", "success")],
    );
    assert_eq!(primary_ok + backup_ok, requests);
    // Probes are not attempts: the primary saw its caller attempts plus probes.
    assert!(f64::from(served_primary) >= primary_ok + 2.0);
    assert_eq!(
        m.value(
            "bulwark_alerts_total",
            &[("rule", "success_rate"), ("severity", "critical")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "bulwark_alerts_total",
            &[("rule", "failover"), ("severity", "warning")]
        ),
        1.0
    );
    assert_eq!(
        m.value("bulwark_provider_state", &[("provider", "primary")]),
        0.0
    );
    assert_eq!(m.value("bulwark_journal_rpo_seconds", &[]), 4.0);
    assert_eq!(m.sum("bulwark_alert_delivery_failures_total", &[]), 0.0);
    assert_eq!(m.types["bulwark_upstream_latency_seconds"], "histogram");
    assert_eq!(m.types["bulwark_time_to_first_token_seconds"], "histogram");
    sidecar.abort();
}
