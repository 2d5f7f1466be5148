//! Slack incoming webhook payloads.
//!
//! `POST` to the webhook URL with `{"text": ..., "blocks": [...]}`: `text` is the
//! notification and fallback line; `blocks` holds a `header` (plain text, at most
//! 150 characters), a `section` with the summary (mrkdwn, at most 3000 characters)
//! and a `context` line with the source, subject, dedup key and start time. Slack
//! treats `&`, `<` and `>` as markup, so values are escaped before they go in.

use serde_json::{Value, json};

use crate::notify::webhook::rfc3339;
use crate::rules::{Action, AlertEvent};

/// Slack's limits for a header and a section text.
const HEADER_MAX: usize = 150;
const SECTION_MAX: usize = 3000;

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters, with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The message for one trigger or resolve.
pub fn payload(event: &AlertEvent, source: &str) -> Value {
    let i = &event.incident;
    // A resolve says it is over, and what it was (the summary is the last one
    // measured while it fired).
    let (tag, verb, summary) = match event.action {
        Action::Trigger => (
            i.severity.label().to_uppercase(),
            "firing",
            i.summary.clone(),
        ),
        Action::Resolve => (
            "RESOLVED".to_string(),
            "resolved",
            format!("back to normal; while it fired: {}", i.summary),
        ),
    };
    let text = truncate(
        &format!("[{tag}] {}: {} ({source})", i.rule.name(), escape(&summary)),
        SECTION_MAX,
    );
    let header = truncate(
        &format!("{tag} · {} {verb} · {}", i.rule.name(), i.subject.key()),
        HEADER_MAX,
    );
    let context = format!(
        "source `{}` · subject `{}` · since {} · dedup `{}`",
        escape(source),
        escape(&i.subject.key()),
        rfc3339(i.since_wall),
        escape(&i.dedup_key),
    );
    json!({
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": header}},
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate(&escape(&summary), SECTION_MAX)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(&context, SECTION_MAX)}]},
        ],
    })
}
