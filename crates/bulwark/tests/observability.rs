//! Issue 5, "What it must show", through the real binary: a mock outage of the
//! primary drives a full incident to local Slack, PagerDuty and webhook receivers
//! (one trigger and one resolve per incident, same `dedup_key`); `/metrics` parses as
//! Prometheus text and agrees with the traffic; `bulwark status` shows the serving
//! target move to the secondary and back; the admin endpoints want the admin token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "durability/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "../../bulwark-observe/tests/common/prom.rs"]
mod prom;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use bulwark_mock::{FaultRule, MockServer};
use serde_json::{Value, json};
use support::{BIN, Gateway};

type Got = Arc<Mutex<Vec<(String, Value)>>>;

async fn receivers() -> (Got, std::net::SocketAddr) {
    async fn receive(State(got): State<Got>, uri: Uri, body: Bytes) -> StatusCode {
        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        got.lock().unwrap().push((uri.path().to_string(), value));
        StatusCode::ACCEPTED
    }
    let got: Got = Arc::default();
    let app = axum::Router::new()
        .fallback(receive)
        .with_state(Arc::clone(&got));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (got, addr)
}

fn on(got: &Got, path: &str) -> Vec<Value> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == path)
        .map(|(_, v)| v.clone())
        .collect()
}

async fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn status_cli(gateway: &Gateway, token: Option<&str>) -> (bool, String) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["status", "--url", &gateway.url("")]);
    if let Some(token) = token {
        cmd.args(["--admin-token", token]);
    }
    let out = cmd.env_remove("BULWARK_ADMIN_TOKEN").output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn serving_line(text: &str) -> String {
    text.lines()
        .find(|l| l.starts_with("route chat:"))
        .unwrap_or_default()
        .to_string()
}

fn counter(exp: &prom::Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    exp.samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_pages_once_resolves_once_and_status_and_metrics_follow() {
    let (got, hooks) = receivers().await;
    let primary = MockServer::start("primary").await.unwrap();
    let secondary = MockServer::start("secondary").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bulwark.yaml");
    std::fs::write(
        &config,
        format!(
            r#"listen: 127.0.0.1:0
admin_token: adm1n-t0ken
journal: {{path: "{journal}"}}
providers:
  - {{name: primary, kind: openai, api_key: sk-primary-secret, base_url: "{p}/v1"}}
  - {{name: secondary, kind: anthropic, api_key: sk-secondary-secret, base_url: "{s}"}}
routes:
  - model: chat
    circuit_breaker: {{consecutive_failures: 2, open_for: 1s}}
    retry: {{max_attempts: 1}}
    targets:
      - {{provider: primary, model: gpt-test}}
      - {{provider: secondary, model: claude-test}}
alerts:
  source: e2e-gateway
  evaluate_every: 50ms
  slack: {{webhook_url: "http://{hooks}/slack"}}
  pagerduty: {{routing_key: "0123456789abcdef0123456789abcdef", url: "http://{hooks}/pd"}}
  webhook: {{url: "http://{hooks}/hook", secret: hook-secret}}
  rules:
    success_rate: {{threshold: 0.9, for: 0s, min_calls: 2}}
    latency: {{enabled: false}}
"#,
            journal = dir.path().join("journal.db").display(),
            p = primary.url(),
            s = secondary.url(),
        ),
    )
    .unwrap();
    let gateway = Gateway::start(&config).await;
    let client = support::client();
    let url = gateway.url("/v1/chat/completions");
    let sent = std::cell::Cell::new(0usize);
    let ok = std::cell::Cell::new(0usize);
    let ask = async |n: usize| {
        for i in 0..n {
            let id = format!("q{}-{i}", sent.get());
            let r = support::send(&client, &url, &id, i % 2 == 1, &[])
                .await
                .unwrap();
            sent.set(sent.get() + 1);
            if r.complete_text.is_some() {
                ok.set(ok.get() + 1);
            }
        }
    };

    // Healthy: the primary serves.
    ask(4).await;
    let (good, text) = status_cli(&gateway, Some("adm1n-t0ken"));
    assert!(good, "{text}");
    let line = serving_line(&text);
    assert!(
        line.contains("serving primary/gpt-test") && !line.contains("FAILED OVER"),
        "{text}"
    );

    // The admin endpoints want the token.
    let (good, text) = status_cli(&gateway, None);
    assert!(!good, "status without the token must fail: {text}");
    let unauth = client
        .get(gateway.url("/admin/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);

    // Outage: the primary answers 500 until cleared; callers still get answers.
    primary.push_fault(
        serde_json::from_value::<FaultRule>(json!({"fault": {"kind": "status", "status": 500}}))
            .unwrap(),
    );
    ask(6).await;
    assert_eq!(
        ok.get(),
        sent.get(),
        "every request must be answered through the outage"
    );
    let (_, text) = status_cli(&gateway, Some("adm1n-t0ken"));
    let line = serving_line(&text);
    assert!(
        line.contains("serving secondary/claude-test") && line.contains("FAILED OVER"),
        "{text}"
    );
    assert!(!text.contains("sk-primary-secret") && !text.contains("sk-secondary-secret"));
    eventually(Duration::from_secs(10), "a PagerDuty trigger", || {
        on(&got, "/pd/v2/enqueue")
            .iter()
            .any(|b| b["event_action"] == "trigger")
    })
    .await;
    eventually(Duration::from_secs(5), "Slack and webhook", || {
        !on(&got, "/slack").is_empty() && !on(&got, "/hook").is_empty()
    })
    .await;

    // Recovery: cleared; after `open_for` a trial call closes the breaker.
    primary.clear_faults();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Enough good calls to lift the primary's 1-minute success rate back over 90 %.
    ask(16).await;
    let (_, text) = status_cli(&gateway, Some("adm1n-t0ken"));
    let line = serving_line(&text);
    assert!(
        line.contains("serving primary/gpt-test") && !line.contains("FAILED OVER"),
        "{text}"
    );
    eventually(
        Duration::from_secs(10),
        "every PagerDuty incident resolved",
        || {
            let pd = on(&got, "/pd/v2/enqueue");
            let triggers: Vec<_> = pd
                .iter()
                .filter(|b| b["event_action"] == "trigger")
                .collect();
            !triggers.is_empty()
                && triggers.iter().all(|t| {
                    pd.iter()
                        .any(|b| b["event_action"] == "resolve" && b["dedup_key"] == t["dedup_key"])
                })
        },
    )
    .await;
    // Let any stray duplicate arrive before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // One trigger and one resolve per incident, keyed the same.
    let pd = on(&got, "/pd/v2/enqueue");
    println!(
        "incident: {} PagerDuty events over {} incidents, {} Slack messages, {} webhook calls",
        pd.len(),
        pd.iter().filter(|b| b["event_action"] == "trigger").count(),
        on(&got, "/slack").len(),
        on(&got, "/hook").len()
    );
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for b in &pd {
        assert_eq!(b["routing_key"], "0123456789abcdef0123456789abcdef");
        per_key
            .entry(b["dedup_key"].as_str().unwrap().to_string())
            .or_default()
            .push(b["event_action"].as_str().unwrap().to_string());
        if b["event_action"] == "trigger" {
            let payload = &b["payload"];
            assert!(payload["summary"].as_str().is_some_and(|s| !s.is_empty()));
            assert_eq!(payload["source"], "e2e-gateway");
            assert!(matches!(
                payload["severity"].as_str().unwrap(),
                "critical" | "error" | "warning" | "info"
            ));
        }
    }
    for (key, actions) in &per_key {
        assert_eq!(actions, &["trigger", "resolve"], "incident {key}");
    }
    let slack = on(&got, "/slack");
    assert!(
        slack
            .iter()
            .all(|b| b["text"].as_str().is_some_and(|t| !t.is_empty()))
    );
    let hooks = on(&got, "/hook");
    assert_eq!(
        hooks.len(),
        slack.len(),
        "webhook and Slack hear every event once"
    );

    // Metrics agree with the traffic.
    let unauth = client.get(gateway.url("/metrics")).send().await.unwrap();
    assert_eq!(
        unauth.status(),
        200,
        "Prometheus scrapes /metrics without the admin token"
    );
    let text = unauth.text().await.unwrap();
    let exp = prom::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        counter(
            &exp,
            "bulwark_requests_total",
            &[("route", "chat"), ("outcome", "success")]
        ),
        sent.get() as f64,
        "{text}"
    );
    assert_eq!(
        counter(&exp, "bulwark_requests_total", &[]),
        sent.get() as f64
    );
    let primary_calls = primary.calls().len() as f64;
    let secondary_calls = secondary.calls().len() as f64;
    assert_eq!(
        counter(
            &exp,
            "bulwark_upstream_attempts_total",
            &[("provider", "primary")]
        ),
        primary_calls,
        "{text}"
    );
    assert_eq!(
        counter(
            &exp,
            "bulwark_upstream_attempts_total",
            &[("provider", "secondary")]
        ),
        secondary_calls
    );
    assert!(
        counter(
            &exp,
            "bulwark_failovers_total",
            &[("route", "chat"), ("from", "primary"), ("to", "secondary")]
        ) >= 1.0
    );
    assert_eq!(
        counter(&exp, "bulwark_provider_state", &[("provider", "primary")]),
        0.0
    );
    assert!(counter(&exp, "bulwark_alerts_total", &[]) >= per_key.len() as f64);
    assert!(!text.contains("sk-primary-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_api_breaks_a_target_without_calling_it_and_shows_in_status() {
    let primary = MockServer::start("primary").await.unwrap();
    let secondary = MockServer::start("secondary").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, token: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "listen: 127.0.0.1:0\n{token}\njournal: {{path: \"{j}\"}}\nproviders:\n  - {{name: primary, kind: openai, api_key: k1, base_url: \"{p}/v1\"}}\n  - {{name: secondary, kind: openai, api_key: k2, base_url: \"{s}/v1\"}}\nroutes:\n  - model: chat\n    circuit_breaker: {{open_for: 1s}}\n    targets:\n      - {{provider: primary, model: gpt-a}}\n      - {{provider: secondary, model: gpt-b}}\n",
                j = dir.path().join(format!("{name}.db")).display(),
                p = primary.url(),
                s = secondary.url(),
            ),
        )
        .unwrap();
        path
    };
    let client = support::client();
    let chaos = json!({"target": "primary", "fault": {"kind": "down"}, "duration": "30s"});

    // Without an admin token configured, chaos is refused outright.
    let open = Gateway::start(&write("open.yaml", "")).await;
    let r = client
        .post(open.url("/admin/chaos"))
        .json(&chaos)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    drop(open);

    let gateway = Gateway::start(&write("guarded.yaml", "admin_token: s3cret")).await;
    let r = client
        .post(gateway.url("/admin/chaos"))
        .json(&chaos)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the token is required");
    let bad = client
        .post(gateway.url("/admin/chaos"))
        .bearer_auth("s3cret")
        .json(&json!({"target": "nobody", "fault": {"kind": "down"}, "duration": "30s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 404);
    let r = client
        .post(gateway.url("/admin/chaos"))
        .bearer_auth("s3cret")
        .json(&chaos)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let rule: Value = r.json().await.unwrap();
    let id = rule["id"].as_u64().unwrap();

    let url = gateway.url("/v1/chat/completions");
    for i in 0..6 {
        let r = support::send(&client, &url, &format!("chaos-{i}"), i % 2 == 0, &[])
            .await
            .unwrap();
        assert!(r.complete_text.is_some(), "answered by the secondary");
    }
    assert_eq!(
        primary.calls().len(),
        0,
        "chaos must not call the broken target"
    );
    assert_eq!(secondary.calls().len(), 6);
    let (ok, text) = status_cli(&gateway, Some("s3cret"));
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("CHAOS ACTIVE (#{id}): primary/*")),
        "{text}"
    );
    assert!(
        serving_line(&text).contains("serving secondary/gpt-b"),
        "{text}"
    );

    // Cleared: after the breaker's open_for, the primary serves again.
    let r = client
        .delete(gateway.url(&format!("/admin/chaos/{id}")))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = support::send(&client, &url, "after-chaos", false, &[])
        .await
        .unwrap();
    assert!(r.complete_text.is_some());
    assert_eq!(primary.calls().len(), 1);
    let (_, text) = status_cli(&gateway, Some("s3cret"));
    assert!(!text.contains("CHAOS ACTIVE"), "{text}");
}
