//! The drill report: one document (`PATH.json`), its Markdown rendering (`PATH.md`),
//! the pass/fail verdict against the configuration's `objectives`, and the redacted
//! configuration summary it carries (no API key, token, routing key, webhook URL or
//! password is ever copied into a report).

use std::fmt::Write as _;

use bulwark_core::config::{Config, ObjectivesConfig};
use serde::Serialize;
use serde_json::Value;

use super::analyze::{Bucket, CallerStats, Rto, Timeline};
use super::reconcile::{JournalCheck, MetricsCheck, Rpo};
use super::scenario::{AfterKill, Plan};
use super::watch::{AlertSeen, ServingChange, Transition};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bulwark_version: String,
    pub scenario: Plan,
    pub config: ConfigInfo,
    pub route: RouteInfo,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    pub timeline: Timeline,
    pub kills: Vec<KillRecord>,
    /// What the drill did, in order.
    pub events: Vec<Event>,
    /// Every request of the drill.
    pub callers: CallerStats,
    /// Requests sent during the incident window.
    pub incident: CallerStats,
    pub rto: Rto,
    /// `null` when the journal is off (nothing to check against).
    pub rpo: Option<Rpo>,
    pub alerts: Vec<AlertReport>,
    pub breaker_transitions: Vec<Transition>,
    pub serving: Vec<ServingChange>,
    pub counts: Counts,
    pub counters: Counters,
    pub objectives: Vec<ObjectiveResult>,
    /// No objective failed.
    pub passed: bool,
    pub bucket_ms: u64,
    pub series: Vec<Bucket>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigInfo {
    pub path: String,
    /// The configuration as loaded, secrets redacted.
    pub summary: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteInfo {
    pub name: String,
    /// `provider/model`.
    pub primary: String,
    pub targets: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KillRecord {
    pub at_ms: u64,
    pub then: AfterKill,
    /// Traffic stopped and the backup shipped everything before the kill.
    pub waited_for_backup_ms: Option<u64>,
    pub restore_ms: Option<u64>,
    /// What `bulwark restore` printed.
    pub restore_output: Option<String>,
    /// The restored journal, kept for inspection (`bulwark verify PATH`).
    pub restored_journal: Option<String>,
    /// The new gateway listened.
    pub back_ms: u64,
    pub first_answer_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at_ms: u64,
    pub what: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertReport {
    #[serde(flatten)]
    pub seen: AlertSeen,
    /// From the injection to the alert firing (negative: it fired before).
    pub after_injection_ms: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DrillCounts {
    pub sent: u64,
    /// Got an HTTP status.
    pub reached_gateway: u64,
    pub answered: u64,
    pub error_status: u64,
    /// Status 200, but the answer broke off.
    pub broken_answer: u64,
    pub no_response: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    pub drill: DrillCounts,
    pub journals: Vec<JournalCheck>,
    pub metrics: Vec<MetricsCheck>,
    /// Every journal and metrics check agrees with the drill's own count.
    pub agree: bool,
}

/// Deltas of the gateway counters over the drill (summed over gateways).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// `bulwark_requests_total{route}` by outcome.
    pub requests: std::collections::BTreeMap<String, f64>,
    /// `bulwark_upstream_attempts_total` by provider/outcome.
    pub upstream_attempts: std::collections::BTreeMap<String, f64>,
    /// `bulwark_failovers_total{route}` by from/to.
    pub failovers: std::collections::BTreeMap<String, f64>,
    /// `bulwark_alerts_total` by rule/severity.
    pub alerts: std::collections::BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectiveResult {
    pub name: String,
    pub objective: String,
    pub measured: String,
    pub pass: bool,
}

/// Judges the drill against `objectives`.
pub fn judge(
    objectives: &ObjectivesConfig,
    callers: &CallerStats,
    rto: &Rto,
    rpo: Option<&Rpo>,
) -> Vec<ObjectiveResult> {
    let mut out = Vec::new();
    if let Some(target) = objectives.availability {
        let measured = callers.success_rate.unwrap_or(0.0);
        out.push(ObjectiveResult {
            name: "availability".into(),
            objective: format!("≥ {}", percent(target)),
            measured: percent(measured),
            pass: measured >= target,
        });
    }
    if let Some(target) = objectives.rto {
        let target_ms = ms_of(target.0);
        out.push(ObjectiveResult {
            name: "rto".into(),
            objective: format!("≤ {}", secs(target_ms)),
            measured: if rto.recovered {
                secs(rto.ms)
            } else {
                format!("{} (answers never came back)", secs(rto.ms))
            },
            pass: rto.recovered && rto.ms <= target_ms,
        });
    }
    if let Some(target) = objectives.rpo {
        let target_ms = ms_of(target.0);
        let (measured, pass) = match rpo {
            None => ("not measurable (journal off)".to_string(), false),
            Some(r) => (
                format!("{} ({} answer(s) lost)", secs(r.ms), r.records_lost),
                r.ms <= target_ms && (target_ms > 0 || r.records_lost == 0),
            ),
        };
        out.push(ObjectiveResult {
            name: "rpo".into(),
            objective: format!("≤ {}", secs(target_ms)),
            measured,
            pass,
        });
    }
    out
}

fn ms_of(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub fn percent(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

pub fn secs(ms: u64) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}

pub fn at(ms: Option<u64>) -> String {
    ms.map_or_else(
        || "-".to_string(),
        |ms| format!("{:.2}s", ms as f64 / 1000.0),
    )
}

/// `ms` after `from`, as `+1.23s`.
pub fn after(ms: Option<u64>, from: Option<u64>) -> String {
    match (ms, from) {
        (Some(ms), Some(from)) => {
            let d = ms as i64 - from as i64;
            format!(
                "{}{:.2}s",
                if d < 0 { "-" } else { "+" },
                d.unsigned_abs() as f64 / 1000.0
            )
        }
        _ => "-".to_string(),
    }
}

/// The configuration with every secret replaced by `***`, URLs stripped of
/// credentials and queries, and webhook paths (which often are the secret) dropped.
pub fn redacted_config(config: &Config) -> Value {
    let mut value = serde_json::to_value(config).unwrap_or(Value::Null);
    redact(&mut value, "");
    value
}

const SECRET_KEYS: [&str; 8] = [
    "api_key",
    "admin_token",
    "routing_key",
    "secret",
    "webhook_url",
    "password",
    "token",
    "headers",
];

fn redact(value: &mut Value, key: &str) {
    if SECRET_KEYS.contains(&key) {
        match value {
            Value::Null => {}
            Value::Object(map) => {
                for v in map.values_mut() {
                    *v = Value::String("***".into());
                }
            }
            other => *other = Value::String("***".into()),
        }
        return;
    }
    match value {
        Value::String(s) if matches!(key, "url" | "base_url" | "to" | "endpoint") => {
            *s = redact_url(s, key == "url");
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                redact(v, k);
            }
        }
        Value::Array(items) => {
            for item in items {
                redact(item, key);
            }
        }
        _ => {}
    }
}

fn redact_url(raw: &str, drop_path: bool) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "***".to_string();
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    if drop_path && url.path() != "/" {
        url.set_path("/***");
    }
    url.to_string()
}

/// The report in Markdown; `chart` is the SVG's file name (beside the report).
pub fn markdown(r: &Report, chart: &str) -> String {
    let mut md = String::new();
    let verdict = if r.objectives.is_empty() {
        "no objectives configured"
    } else if r.passed {
        "PASS"
    } else {
        "FAIL"
    };
    let _ = writeln!(md, "# DR drill `{}`: {verdict}\n", r.scenario.name);
    if !r.scenario.description.is_empty() {
        let _ = writeln!(md, "{}\n", r.scenario.description);
    }
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(
        md,
        "| scenario | `{}` ({}) |",
        r.scenario.name, r.scenario.source
    );
    let _ = writeln!(md, "| configuration | `{}` |", r.config.path);
    let _ = writeln!(md, "| Bulwark | {} |", r.bulwark_version);
    let _ = writeln!(
        md,
        "| route | `{}`: {} (primary `{}`) |",
        r.route.name,
        r.route.targets.join(" → "),
        r.route.primary
    );
    let _ = writeln!(
        md,
        "| started / finished | {} / {} |",
        r.started_at, r.finished_at
    );
    let _ = writeln!(
        md,
        "| traffic | {} callers, one request per {} each, {} streaming |",
        r.scenario.traffic.callers,
        humantime::format_duration(r.scenario.traffic.interval.0),
        percent(r.scenario.traffic.stream_share)
    );
    let _ = writeln!(md, "\n![success rate and serving provider]({chart})\n");

    let _ = writeln!(md, "## Objectives\n");
    if r.objectives.is_empty() {
        let _ = writeln!(
            md,
            "No `objectives:` in the configuration; nothing to pass or fail.\n"
        );
    } else {
        let _ = writeln!(
            md,
            "| objective | target | measured | result |\n|---|---|---|---|"
        );
        for o in &r.objectives {
            let _ = writeln!(
                md,
                "| {} | {} | {} | **{}** |",
                o.name,
                o.objective,
                o.measured,
                if o.pass { "PASS" } else { "FAIL" }
            );
        }
        let _ = writeln!(md);
    }

    let t = &r.timeline;
    let _ = writeln!(
        md,
        "## Timeline\n\n| event | at | after injection |\n|---|---|---|"
    );
    let _ = writeln!(md, "| injection | {} | |", at(t.injection_ms));
    let _ = writeln!(
        md,
        "| detection ({}) | {} | {} |",
        t.detected_by.as_deref().unwrap_or("not seen"),
        at(t.detection_ms),
        after(t.detection_ms, t.injection_ms)
    );
    let _ = writeln!(
        md,
        "| failover (first answer from {}) | {} | {} |",
        t.failover_to.as_deref().unwrap_or("another provider"),
        at(t.failover_ms),
        after(t.failover_ms, t.injection_ms)
    );
    let _ = writeln!(
        md,
        "| fault ended | {} | {} |",
        at(t.fault_end_ms),
        after(t.fault_end_ms, t.injection_ms)
    );
    let _ = writeln!(
        md,
        "| recovery (primary answering, breaker closed) | {} | {} |",
        at(t.recovery_ms),
        after(t.recovery_ms, t.injection_ms)
    );
    for k in &r.kills {
        let _ = writeln!(
            md,
            "| gateway killed (SIGKILL), then {} | {} | |",
            match k.then {
                AfterKill::Restart => "restart",
                AfterKill::Restore => "restore from backup",
            },
            at(Some(k.at_ms))
        );
        if let Some(ms) = k.restore_ms {
            let _ = writeln!(
                md,
                "| journal restored ({}) | | took {} |",
                k.restored_journal.as_deref().unwrap_or("-"),
                secs(ms)
            );
        }
        let _ = writeln!(
            md,
            "| new gateway listening | {} | {} |",
            at(Some(k.back_ms)),
            after(Some(k.back_ms), Some(k.at_ms))
        );
        let _ = writeln!(
            md,
            "| first answer after the kill | {} | {} |",
            at(k.first_answer_ms),
            after(k.first_answer_ms, Some(k.at_ms))
        );
    }
    let _ = writeln!(md);

    let _ = writeln!(md, "## What callers experienced\n");
    let _ = writeln!(
        md,
        "| | requests | answered | success rate | p50 | p95 | p99 |\n|---|---|---|---|---|---|---|"
    );
    for (name, s) in [
        ("whole drill", &r.callers),
        ("during the incident", &r.incident),
    ] {
        let lat = |f: fn(&super::analyze::Percentiles) -> u64| {
            s.latency_ms
                .as_ref()
                .map_or("-".to_string(), |p| format!("{} ms", f(p)))
        };
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            s.sent,
            s.answered,
            s.success_rate.map_or("-".to_string(), percent),
            lat(|p| p.p50),
            lat(|p| p.p95),
            lat(|p| p.p99)
        );
    }
    let _ = writeln!(
        md,
        "\nAnswers by provider: {}",
        join_counts(&r.callers.by_provider)
    );
    if !r.callers.failures.is_empty() {
        let _ = writeln!(md, "\nFailures: {}", join_counts(&r.callers.failures));
    }
    let _ = writeln!(
        md,
        "\n**RTO** {}{} (the longest time callers got no answer: {} → {}).",
        secs(r.rto.ms),
        if r.rto.recovered {
            ""
        } else {
            ", answers never came back"
        },
        at(Some(r.rto.from_ms)),
        at(Some(r.rto.to_ms))
    );
    match &r.rpo {
        Some(rpo) => {
            let _ = writeln!(
                md,
                "\n**RPO** {} answer(s) lost of {} received ({}); oldest lost answer {} old at the loss. Checked against `{}`{}.",
                rpo.records_lost,
                rpo.answers_checked,
                if rpo.records_lost == 0 {
                    "none"
                } else {
                    "see below"
                },
                secs(rpo.ms),
                rpo.journal.display(),
                if rpo.texts_compared {
                    ", texts compared"
                } else {
                    " (statuses only: journal bodies are not kept in full)"
                }
            );
            if !rpo.lost.is_empty() {
                let _ = writeln!(md, "\nLost: {}", rpo.lost.join(", "));
            }
        }
        None => {
            let _ = writeln!(md, "\n**RPO** not measurable: the journal is off.");
        }
    }

    let _ = writeln!(md, "\n## Alerts\n");
    if r.alerts.is_empty() {
        let _ = writeln!(md, "No alert fired.");
    } else {
        let _ = writeln!(
            md,
            "| rule | severity | subject | fired at | after injection | resolved |\n|---|---|---|---|---|---|"
        );
        for a in &r.alerts {
            let since = a.after_injection_ms.map_or("-".to_string(), |d| {
                format!(
                    "{}{:.2}s",
                    if d < 0 { "-" } else { "+" },
                    d.unsigned_abs() as f64 / 1000.0
                )
            });
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {since} | {} |",
                a.seen.rule,
                a.seen.severity,
                a.seen.subject,
                at(Some(a.seen.fired_ms)),
                at(a.seen.resolved_ms)
            );
        }
    }
    if !r.breaker_transitions.is_empty() {
        let _ = writeln!(
            md,
            "\nBreaker transitions ({}):\n",
            r.breaker_transitions.len()
        );
        for t in &r.breaker_transitions {
            let _ = writeln!(
                md,
                "- {} `{}` {} → {}",
                at(Some(t.at_ms)),
                t.target,
                t.from,
                t.to
            );
        }
    }

    let _ = writeln!(
        md,
        "\n## Do the numbers agree? {}\n",
        if r.counts.agree { "yes" } else { "**NO**" }
    );
    let d = &r.counts.drill;
    let _ = writeln!(
        md,
        "Drill (callers): {} sent, {} reached a gateway, {} answered, {} error statuses, {} broken answers, {} without response.\n",
        d.sent, d.reached_gateway, d.answered, d.error_status, d.broken_answer, d.no_response
    );
    for j in &r.counts.journals {
        let _ = writeln!(
            md,
            "Journal `{}` (gateways {:?}): {}; disagreements: {}.",
            j.path.display(),
            j.generations,
            join_counts(&j.by_status),
            j.mismatch_count
        );
        for (class, by) in &j.matrix {
            let _ = writeln!(md, "- callers {class}: journal {}", join_counts(by));
        }
        for m in &j.mismatches {
            let _ = writeln!(md, "- disagreement: {m}");
        }
        let _ = writeln!(md);
    }
    for m in &r.counts.metrics {
        let bounds = m.bounds.map_or(String::new(), |(lo, hi)| {
            format!(" (the drill allows {lo}..={hi} while the counters were readable)")
        });
        let _ = writeln!(
            md,
            "Metrics of gateway {} (scraped {}): `bulwark_requests_total` {}; the drill's statuses map to {}{bounds}: {}.",
            m.generation,
            m.scraped,
            join_counts(&m.metrics),
            join_counts(&m.drill),
            if m.agree { "agree" } else { "DISAGREE" }
        );
    }
    let c = &r.counters;
    let _ = writeln!(
        md,
        "\nCounter deltas: upstream attempts {}; failovers {}; alerts {}.",
        join_floats(&c.upstream_attempts),
        join_floats(&c.failovers),
        join_floats(&c.alerts)
    );

    if !r.notes.is_empty() {
        let _ = writeln!(md, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    let _ = writeln!(md, "\n## What the drill did\n");
    for e in &r.events {
        let _ = writeln!(md, "- {} {}", at(Some(e.at_ms)), e.what);
    }
    let _ = writeln!(
        md,
        "\n## Configuration (secrets redacted)\n\n```json\n{}\n```",
        serde_json::to_string_pretty(&r.config.summary).unwrap_or_default()
    );
    md
}

fn join_counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_string();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn join_floats(map: &std::collections::BTreeMap<String, f64>) -> String {
    if map.is_empty() {
        return "none".to_string();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The closing lines on stdout.
pub fn summary(r: &Report) -> Vec<String> {
    let t = &r.timeline;
    let mut lines = vec![
        format!(
            "callers: {} requests, {} answered ({}); during the incident {}, p95 {}",
            r.callers.sent,
            r.callers.answered,
            r.callers.success_rate.map_or("-".to_string(), percent),
            r.incident.success_rate.map_or("-".to_string(), percent),
            r.incident
                .latency_ms
                .map_or("-".to_string(), |p| format!("{} ms", p.p95)),
        ),
        format!(
            "timeline: injection {}, detection {} ({}), failover {}, recovery {}",
            at(t.injection_ms),
            after(t.detection_ms, t.injection_ms),
            t.detected_by.as_deref().unwrap_or("not seen"),
            after(t.failover_ms, t.injection_ms),
            after(t.recovery_ms, t.injection_ms),
        ),
        format!(
            "RTO {}{}; RPO {}",
            secs(r.rto.ms),
            if r.rto.recovered {
                ""
            } else {
                " (answers never came back)"
            },
            r.rpo
                .as_ref()
                .map_or("not measurable (journal off)".to_string(), |p| format!(
                    "{} answer(s) lost of {}, {}",
                    p.records_lost,
                    p.answers_checked,
                    secs(p.ms)
                )),
        ),
        format!(
            "alerts: {}",
            if r.alerts.is_empty() {
                "none".to_string()
            } else {
                r.alerts
                    .iter()
                    .map(|a| {
                        format!(
                            "{} {}",
                            a.seen.rule,
                            a.after_injection_ms
                                .map_or("-".to_string(), |d| format!("{:+.2}s", d as f64 / 1000.0))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        format!(
            "numbers agree (callers / journal / metrics): {}",
            if r.counts.agree {
                "yes"
            } else {
                "NO (see the report)"
            }
        ),
    ];
    for o in &r.objectives {
        lines.push(format!(
            "{} {}: {} (objective {})",
            if o.pass { "PASS" } else { "FAIL" },
            o.name,
            o.measured,
            o.objective
        ));
    }
    if r.objectives.is_empty() {
        lines.push("no objectives in the configuration: nothing to pass or fail".to_string());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_summary_carries_no_secret() {
        let cfg = bulwark_server::config::parse(
            std::path::Path::new("t.yaml"),
            "admin_token: tok-SECRET\njournal: {backend: postgres, url: \"postgres://u:pw-SECRET@db.example.com/j\"}\nproviders:\n  - {name: a, kind: openai, api_key: sk-SECRET, base_url: \"https://api.example.com/v1\", headers: {X-Key: h-SECRET}}\nroutes:\n  - model: chat\n    targets: [{provider: a, model: m}]\nalerts:\n  slack: {webhook_url: \"https://hooks.slack.com/services/T/B/w-SECRET\"}\n  webhook: {url: \"https://hooks.example.com/p-SECRET\", secret: s-SECRET}\n",
            &|_| None,
        )
        .unwrap();
        let text = redacted_config(&cfg).to_string();
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("api.example.com"), "{text}");
    }
}
