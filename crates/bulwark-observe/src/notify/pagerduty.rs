//! PagerDuty Events API v2 payloads (`POST {url}/v2/enqueue`, answered with 202).
//!
//! A trigger carries `routing_key`, `event_action: "trigger"`, the incident's
//! `dedup_key`, and `payload` with the required `summary` (at most 1024
//! characters), `source` and `severity`, plus `timestamp` (ISO 8601), `component`
//! (`provider/model`), `group` (the route), `class` (the rule) and
//! `custom_details`. A resolve carries `routing_key`, `event_action: "resolve"` and
//! the same `dedup_key`.
//!
//! Severity mapping (PagerDuty has `critical`, `error`, `warning`, `info`):
//! emergency → `critical`, critical → `error`, warning → `warning`, info → `info`.
//! Both `critical` and `error` are high urgency under PagerDuty's severity-based
//! urgency, so both page; the four levels stay distinct in PagerDuty.

use serde_json::{Value, json};

use crate::config::Severity;
use crate::notify::slack::truncate;
use crate::notify::webhook::rfc3339;
use crate::rules::{Action, AlertEvent};

/// PagerDuty's limit on `payload.summary`.
const SUMMARY_MAX: usize = 1024;

pub fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Emergency => "critical",
        Severity::Critical => "error",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

/// `{base}/v2/enqueue`.
pub fn enqueue_url(base: &str) -> String {
    format!("{}/v2/enqueue", base.trim_end_matches('/'))
}

pub fn payload(event: &AlertEvent, routing_key: &str, source: &str) -> Value {
    let i = &event.incident;
    match event.action {
        Action::Resolve => json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": i.dedup_key,
        }),
        Action::Trigger => {
            let mut details = i.details.clone();
            details.insert("severity".into(), json!(i.severity.label()));
            details.insert("started_at".into(), json!(rfc3339(i.since_wall)));
            let mut body = json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": i.dedup_key,
                "client": "Bulwark",
                "payload": {
                    "summary": truncate(&i.summary, SUMMARY_MAX),
                    "source": source,
                    "severity": severity(i.severity),
                    "timestamp": rfc3339(event.at),
                    "class": i.rule.name(),
                    "custom_details": details,
                },
            });
            if let (Some(provider), Some(model)) = (&i.subject.provider, &i.subject.model) {
                body["payload"]["component"] = json!(format!("{provider}/{model}"));
            }
            if let Some(route) = &i.subject.route {
                body["payload"]["group"] = json!(route);
            }
            body
        }
    }
}
