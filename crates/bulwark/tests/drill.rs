//! `bulwark drill` end to end: every built-in scenario (and a YAML one) runs through
//! the built binary against in-process mock providers, with short durations, and the
//! JSON report is checked for the scenario's facts and for numbers that agree with
//! the journal and the metrics.

// Test helpers outside `#[test]` functions: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use bulwark_mock::{Behavior, MockServer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_bulwark");

/// Two mock providers (OpenAI wire format), a little latency so that some requests
/// are in flight when a gateway is killed.
struct Mocks {
    primary: MockServer,
    secondary: MockServer,
}

impl Mocks {
    async fn start() -> Mocks {
        let primary = MockServer::start("mock-primary").await.unwrap();
        let secondary = MockServer::start("mock-secondary").await.unwrap();
        for (mock, name) in [(&primary, "mock-primary"), (&secondary, "mock-secondary")] {
            mock.set_behavior(Behavior {
                latency_ms: 15,
                token_delay_ms: 3,
                reply_tokens: Some(8),
                ..Behavior::named(name)
            });
        }
        Mocks { primary, secondary }
    }
}

/// A configuration for route `chat` = primary → secondary with the issue's timeouts
/// scaled down (first token 1 s, breaker open 1 s), a `sync` journal in `dir`, quick
/// alerts, and `extra` top-level YAML (objectives, backup).
fn write_config(dir: &Path, mocks: &Mocks, extra: &str) -> PathBuf {
    let yaml = format!(
        r#"listen: 127.0.0.1:0
journal: {{path: "{journal}", durability: sync}}
providers:
  - {{name: primary, kind: openai, api_key: sk-primary-do-not-leak, base_url: "{p}/v1"}}
  - {{name: secondary, kind: openai, api_key: sk-secondary-do-not-leak, base_url: "{s}/v1"}}
routes:
  - model: chat
    timeouts: {{connect: 1s, first_token: 1s, idle: 2s, total: 10s}}
    retry: {{max_attempts: 2, base_delay: 50ms, max_delay: 200ms}}
    circuit_breaker: {{open_for: 1s, consecutive_failures: 3}}
    targets:
      - {{provider: primary, model: p-model}}
      - {{provider: secondary, model: s-model}}
alerts:
  evaluate_every: 250ms
  rules:
    success_rate: {{for: 1s, min_calls: 4}}
{extra}
"#,
        journal = dir.join("journal.db").display(),
        p = mocks.primary.url(),
        s = mocks.secondary.url(),
    );
    let path = dir.join("bulwark.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

struct Drill {
    code: i32,
    stdout: String,
    report: Value,
    markdown: String,
    svg: String,
}

/// Runs `bulwark drill` and reads its report.
async fn drill(config: &Path, scenario: &str, duration: &str) -> Drill {
    let base = config.parent().unwrap().join("report");
    let output = tokio::process::Command::new(BIN)
        .args(["drill", "--config"])
        .arg(config)
        .args(["--scenario", scenario, "--duration", duration, "--report"])
        .arg(&base)
        .env("NO_COLOR", "1")
        .env("BULWARK_LOG", "error")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let read = |ext: &str| {
        std::fs::read_to_string(base.with_extension(ext)).unwrap_or_else(|e| {
            panic!("no {ext} report ({e}); stdout:\n{stdout}\nstderr:\n{stderr}")
        })
    };
    let report: Value = serde_json::from_str(&read("json")).unwrap();
    Drill {
        code: output.status.code().unwrap_or(-1),
        markdown: read("md"),
        svg: read("svg"),
        stdout,
        report,
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The callers' count, the journal and `bulwark_requests_total` tell the same story.
fn assert_numbers_agree(d: &Drill) {
    let r = &d.report;
    let counts = &r["counts"];
    assert_eq!(counts["agree"], true, "{counts:#}\n{}", d.stdout);
    let drill = &counts["drill"];
    assert!(u(&drill["sent"]) > 40, "{drill}");
    assert_eq!(
        u(&drill["sent"]),
        u(&drill["answered"])
            + u(&drill["error_status"])
            + u(&drill["broken_answer"])
            + u(&drill["no_response"])
    );
    // Every answer a caller received is `completed` in the journal of the gateway
    // that gave it, with the same text.
    let answered_in_journals: u64 = counts["journals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["matrix"]["answered"]["completed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(answered_in_journals, u(&drill["answered"]), "{counts:#}");
    // The report's measured rate is the callers' count.
    assert_eq!(u(&r["callers"]["answered"]), u(&drill["answered"]));
    // No API key or token reaches the report.
    for text in [&d.markdown, &r.to_string()] {
        assert!(
            !text.contains("do-not-leak"),
            "a secret leaked into the report"
        );
    }
    assert!(d.svg.starts_with("<svg") && d.svg.trim_end().ends_with("</svg>"));
}

/// Without a kill, the counts are exact: journal total and metrics total equal the
/// requests that reached the gateway, success equals answers.
fn assert_exact_counts(r: &Value) {
    let drill = &r["counts"]["drill"];
    let journal = &r["counts"]["journals"][0]["by_status"];
    let journal_total: u64 = journal.as_object().unwrap().values().map(u).sum();
    assert_eq!(journal_total, u(&drill["reached_gateway"]), "{journal}");
    assert_eq!(
        journal["completed"].as_u64().unwrap_or(0),
        u(&drill["answered"])
    );
    let metrics = &r["counts"]["metrics"][0]["metrics"];
    let metrics_total: u64 = metrics.as_object().unwrap().values().map(u).sum();
    assert_eq!(metrics_total, u(&drill["reached_gateway"]), "{metrics}");
    assert_eq!(r["rpo"]["records_lost"], 0);
}

fn ms(r: &Value, key: &str) -> u64 {
    u(&r["timeline"][key])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_down_fails_over_and_callers_keep_getting_answers() {
    let mocks = Mocks::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &mocks,
        "objectives: {availability: 0.95, rto: 5s, rpo: 0s}",
    );
    let d = drill(&config, "primary-down", "6s").await;
    let r = &d.report;
    assert_eq!(d.code, 0, "{}", d.stdout);
    assert_eq!(r["passed"], true);
    let injection = ms(r, "injection_ms");
    assert!(ms(r, "detection_ms") >= injection, "{:#}", r["timeline"]);
    assert_eq!(r["timeline"]["detected_by"], "breaker open");
    assert!(ms(r, "failover_ms") >= injection);
    assert_eq!(r["timeline"]["failover_to"], "secondary");
    assert!(ms(r, "recovery_ms") >= ms(r, "fault_end_ms"));
    assert!(
        f(&r["callers"]["success_rate"]) >= 0.95,
        "{:#}",
        r["callers"]
    );
    assert!(u(&r["incident"]["by_provider"]["secondary"]) > 0);
    assert!(
        r["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "breaker_open" && a["after_injection_ms"].as_i64().unwrap() >= 0),
        "{:#}",
        r["alerts"]
    );
    assert!(
        r["counters"]["failovers"]["primary/secondary"]
            .as_f64()
            .unwrap()
            >= 1.0
    );
    assert_numbers_agree(&d);
    assert_exact_counts(r);
    assert!(d.stdout.contains("PASS availability"), "{}", d.stdout);
    assert!(d.markdown.contains("# DR drill `primary-down`: PASS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brownout_trips_the_first_token_timeout_and_fails_over() {
    let mocks = Mocks::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mocks, "");
    let d = drill(&config, "brownout", "6s").await;
    let r = &d.report;
    assert_eq!(d.code, 0, "{}", d.stdout);
    assert!(ms(r, "failover_ms") >= ms(r, "injection_ms"));
    assert!(
        u(&r["incident"]["by_provider"]["secondary"]) > 0,
        "{:#}",
        r["incident"]
    );
    assert!(
        r["timeline"]["detection_ms"].is_u64(),
        "{:#}",
        r["timeline"]
    );
    assert_numbers_agree(&d);
    assert_exact_counts(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_on_the_primary_leaves_answers_coming() {
    let mocks = Mocks::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mocks, "");
    let d = drill(&config, "429-storm", "6s").await;
    let r = &d.report;
    assert_eq!(d.code, 0, "{}", d.stdout);
    let incident = &r["incident"];
    assert!(f(&incident["success_rate"]) >= 0.9, "{incident:#}");
    assert!(u(&incident["by_provider"]["secondary"]) > 0, "{incident:#}");
    assert_eq!(
        r["timeline"]["detected_by"], "throttled",
        "{:#}",
        r["timeline"]
    );
    assert!(
        r["counters"]["upstream_attempts"]["primary/throttled"]
            .as_f64()
            .unwrap()
            >= 1.0
    );
    assert_numbers_agree(&d);
    assert_exact_counts(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_primary_opens_its_breaker_again_and_again() {
    let mocks = Mocks::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mocks, "");
    // 8 s: each outage and each gap between them lasts 0.8 s, so a breaker that opened
    // early in an outage (open_for 1 s) tries again well inside the next gap, where the
    // watch's 100 ms polls see it close. With 6 s (0.6 s phases) the retry landed on
    // the start of the next outage whenever the opening came 200 ms late (a loaded
    // machine), and the re-opening fell between two polls.
    let d = drill(&config, "flapping", "8s").await;
    let r = &d.report;
    assert_eq!(d.code, 0, "{}", d.stdout);
    let transitions = r["breaker_transitions"].as_array().unwrap();
    let openings = transitions
        .iter()
        .filter(|t| t["target"] == "primary/p-model" && t["to"] == "open")
        .count();
    assert!(transitions.len() >= 4, "{transitions:#?}");
    assert!(openings >= 2, "{transitions:#?}");
    assert!(f(&r["callers"]["success_rate"]) >= 0.9);
    assert_numbers_agree(&d);
    assert_exact_counts(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_down_costs_answers_for_a_measured_time_and_fails_the_objective() {
    let mocks = Mocks::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mocks, "objectives: {availability: 0.99}");
    let d = drill(&config, "all-down", "6s").await;
    let r = &d.report;
    assert_eq!(d.code, 1, "a failed objective exits non-zero\n{}", d.stdout);
    assert_eq!(r["passed"], false);
    assert!(d.stdout.contains("FAIL availability"), "{}", d.stdout);
    assert!(f(&r["callers"]["success_rate"]) < 1.0);
    let rto = &r["rto"];
    assert!(u(&rto["ms"]) > 1000, "{rto}");
    assert_eq!(rto["recovered"], true, "{rto}");
    // The outage is inside the fault window (2.4 s here) plus the breakers' open time.
    assert!(u(&rto["ms"]) < 5000, "{rto}");
    assert!(u(&r["counts"]["drill"]["error_status"]) > 0);
    assert_numbers_agree(&d);
    assert_exact_counts(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_restart_measures_the_rto_and_loses_no_answer_with_sync_durability() {
    let mocks = Mocks::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mocks, "objectives: {rpo: 0s, rto: 5s}");
    let d = drill(&config, "kill-restart", "6s").await;
    let r = &d.report;
    assert_eq!(d.code, 0, "{}", d.stdout);
    let rpo = &r["rpo"];
    assert_eq!(rpo["records_lost"], 0, "{rpo:#}");
    assert!(u(&rpo["answers_checked"]) > 40);
    let rto = &r["rto"];
    assert!(u(&rto["ms"]) > 0 && u(&rto["ms"]) < 5000, "{rto}");
    let kill = &r["kills"][0];
    assert!(u(&kill["back_ms"]) > u(&kill["at_ms"]));
    assert!(u(&kill["first_answer_ms"]) >= u(&kill["back_ms"]));
    let detected_by = r["timeline"]["detected_by"].as_str().unwrap();
    assert!(
        ["status unreachable", "caller failures"].contains(&detected_by),
        "{detected_by}"
    );
    // One journal, two gateways; metrics of the killed one within the drill's bounds.
    assert_eq!(r["counts"]["journals"].as_array().unwrap().len(), 1);
    assert_eq!(r["counts"]["metrics"].as_array().unwrap().len(), 2);
    assert_numbers_agree(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abrupt_site_loss_restores_from_backup_and_loses_at_most_a_backup_interval() {
    let mocks = Mocks::start().await;
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let config = write_config(
        dir.path(),
        &mocks,
        &format!(
            "backup: {{to: \"file://{}\", interval: 200ms}}",
            backup.display()
        ),
    );
    let d = drill(&config, "site-loss-abrupt", "6s").await;
    let r = &d.report;
    assert_eq!(d.code, 0, "{}", d.stdout);
    let kill = &r["kills"][0];
    assert_eq!(kill["then"], "restore");
    assert!(u(&kill["restore_ms"]) > 0);
    let restored = PathBuf::from(kill["restored_journal"].as_str().unwrap());
    assert!(restored.exists());
    let rto = &r["rto"];
    assert!(u(&rto["ms"]) > 0 && u(&rto["ms"]) < 10_000, "{rto}");
    // Shipping is periodic: what was answered in the last interval (plus the upload)
    // before the loss may be in no backup yet, never anything older.
    let rpo = &r["rpo"];
    assert_eq!(rpo["journal"].as_str().unwrap(), restored.to_str().unwrap());
    assert!(u(&rpo["ms"]) <= 200 + 300, "{rpo:#}");
    // The original journal (what the lost site had) and the restored one.
    assert_eq!(r["counts"]["journals"].as_array().unwrap().len(), 2);
    assert_numbers_agree(&d);
    assert!(d.markdown.contains("restored"), "{}", d.markdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yaml_scenario_cuts_the_primarys_streams_and_callers_never_get_a_truncated_success() {
    let mocks = Mocks::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mocks, "");
    let scenario = dir.path().join("stream-cuts.yaml");
    std::fs::write(
        &scenario,
        "name: stream-cuts\ndescription: the primary's streams break after two events\ntraffic: {stream_share: 1.0}\nsteps:\n  - at: 20%\n    chaos: {target: primary, fault: {kind: cut_stream, after_events: 2}, duration: 50%}\n",
    )
    .unwrap();
    let d = drill(&config, scenario.to_str().unwrap(), "4s").await;
    let r = &d.report;
    assert_eq!(r["scenario"]["name"], "stream-cuts", "{}", d.stdout);
    assert!(u(&r["callers"]["sent"]) > 10, "{:#}", r["callers"]);
    // A stream cut after the first token is past the commit point: those callers get an
    // in-band error, counted as failures, never as complete answers.
    assert!(
        !r["callers"]["failures"].as_object().unwrap().is_empty(),
        "{:#}",
        r["callers"]
    );
    assert_numbers_agree(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_loss_after_the_backup_shipped_reports_rpo_zero() {
    let mocks = Mocks::start().await;
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let config = write_config(
        dir.path(),
        &mocks,
        &format!(
            "backup: {{to: \"file://{}\", interval: 200ms}}\nobjectives: {{rpo: 0s}}",
            backup.display()
        ),
    );
    let d = drill(&config, "site-loss", "5s").await;
    let r = &d.report;
    assert_eq!(d.code, 0, "{}", d.stdout);
    assert_eq!(r["scenario"]["name"], "site-loss");
    assert!(r["kills"][0]["waited_for_backup_ms"].is_u64());
    assert_eq!(r["rpo"]["records_lost"], 0, "{:#}", r["rpo"]);
    assert!(u(&r["rpo"]["answers_checked"]) > 20);
    assert_numbers_agree(&d);
}

#[tokio::test]
async fn configuration_and_scenario_mistakes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let out = std::process::Command::new(BIN)
        .args(["drill", "--scenario", "primary-down", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a drill that cannot run exits 2"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.yaml"), "{err}");

    let mocks = Mocks::start().await;
    let config = write_config(dir.path(), &mocks, "");
    let out = std::process::Command::new(BIN)
        .args(["drill", "--scenario", "meteor", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a drill that cannot run exits 2"
    );
    assert!(
        err.contains("primary-down") && err.contains("site-loss"),
        "{err}"
    );

    // site-loss needs a backup to restore from.
    let out = std::process::Command::new(BIN)
        .args(["drill", "--scenario", "site-loss", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a drill that cannot run exits 2"
    );
    assert!(err.contains("backup"), "{err}");
}
