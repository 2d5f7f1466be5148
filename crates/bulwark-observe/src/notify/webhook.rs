//! The generic JSON webhook and its signature.
//!
//! Body (`Content-Type: application/json`):
//!
//! ```json
//! {"version": 1, "event": "trigger", "dedup_key": "bulwark/gw1/success_rate/openai/gpt-4o",
//!  "rule": "success_rate", "severity": "critical", "summary": "success rate of ...",
//!  "source": "gw1", "subject": {"route": null, "provider": "openai", "model": "gpt-4o"},
//!  "started_at": "2026-11-02T10:00:00.000Z", "timestamp": "2026-11-02T10:01:00.000Z",
//!  "details": {"success_ratio": 0.4}}
//! ```
//!
//! `event` is `trigger` or `resolve`; a resolve repeats the trigger's `dedup_key`,
//! and its `summary` is the last one measured while the incident fired.
//!
//! With a `secret`, every try carries two headers:
//! - `X-Bulwark-Timestamp`: Unix seconds when the try was sent;
//! - `X-Bulwark-Signature`: `sha256=` and the lowercase hex HMAC-SHA256, keyed with
//!   the secret, of `{timestamp}.{body}` (the timestamp header's value, a dot, the raw
//!   body bytes).
//!
//! A receiver recomputes the HMAC over the raw body, compares in constant time, and
//! rejects timestamps more than a few minutes old (replays).

use std::time::SystemTime;

use ring::hmac;
use serde_json::{Value, json};

use crate::rules::AlertEvent;

pub const SIGNATURE_HEADER: &str = "x-bulwark-signature";
pub const TIMESTAMP_HEADER: &str = "x-bulwark-timestamp";

/// RFC 3339 UTC with milliseconds (`2026-11-02T10:00:00.000Z`).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn payload(event: &AlertEvent, source: &str) -> Value {
    let i = &event.incident;
    json!({
        "version": 1,
        "event": event.action.label(),
        "dedup_key": i.dedup_key,
        "rule": i.rule.name(),
        "severity": i.severity.label(),
        "summary": i.summary,
        "source": source,
        "subject": {
            "route": i.subject.route,
            "provider": i.subject.provider,
            "model": i.subject.model,
        },
        "started_at": rfc3339(i.since_wall),
        "timestamp": rfc3339(event.at),
        "details": i.details,
    })
}

/// `sha256=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Checks a signature header as a receiver would (constant-time comparison).
pub fn verify(secret: &[u8], timestamp: u64, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Some(tag) = decode_hex(hex) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut message = timestamp.to_string().into_bytes();
    message.push(b'.');
    message.extend_from_slice(body);
    hmac::verify(&key, &message, &tag).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac_sha256_vector() {
        // RFC 4231 test case 2 (key "Jefe") pins the primitive; then our framing
        // "{timestamp}.{body}" must verify, and any change must not.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let tag = hmac::sign(&key, b"what do ya want for nothing?");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let sig = signature(b"s3cret", 1_700_000_000, br#"{"a":1}"#);
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(verify(b"s3cret", 1_700_000_000, br#"{"a":1}"#, &sig));
        assert!(!verify(b"s3cret", 1_700_000_001, br#"{"a":1}"#, &sig));
        assert!(!verify(b"other", 1_700_000_000, br#"{"a":1}"#, &sig));
        assert!(!verify(b"s3cret", 1_700_000_000, br#"{"a":2}"#, &sig));
    }
}
