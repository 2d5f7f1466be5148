//! The privacy filter applied to request and response bodies before they are encoded
//! into a record (`journal.bodies`).
//!
//! `redacted` keeps the JSON structure — keys, arrays, numbers, booleans and the
//! strings that only name things (`type`, `role`, `model`, `id`, `name`, stop reasons,
//! media types) — and replaces every other string (message text, system prompts,
//! answer text, tool descriptions, image data, URLs) with `"[redacted N chars]"`. Tool
//! arguments (`input`, `arguments`) are replaced whole, whatever their shape, with
//! `"[redacted N chars]"` where N is the length of their JSON text. So a redacted
//! journal still shows who asked which model how many messages with which tools, how
//! long they were, and how the answer ended, but not what was said.

use serde_json::Value;

use crate::config::Bodies;

/// Strings under these keys name things and are kept by `redacted`.
const STRUCTURAL_KEYS: &[&str] = &[
    "type",
    "role",
    "model",
    "id",
    "name",
    "tool_use_id",
    "tool_call_id",
    "stop_reason",
    "finish_reason",
    "media_type",
    "kind",
    "object",
    "tool_choice",
    "format",
];

/// Values under these keys are tool arguments: replaced whole by `redacted`.
const ARGUMENT_KEYS: &[&str] = &["input", "arguments", "args", "partial_json"];

/// Applies the `bodies` setting to one body.
pub fn filter_body(bodies: Bodies, body: Value) -> Value {
    match bodies {
        Bodies::Full => body,
        Bodies::None => Value::Null,
        Bodies::Redacted => redact(body, None),
    }
}

fn redact(value: Value, key: Option<&str>) -> Value {
    match value {
        Value::String(s) => {
            if key.is_some_and(|k| STRUCTURAL_KEYS.contains(&k)) {
                Value::String(s)
            } else {
                placeholder(s.chars().count())
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(|v| redact(v, key)).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = if ARGUMENT_KEYS.contains(&k.as_str()) && !v.is_null() {
                        let len = match &v {
                            Value::String(s) => s.chars().count(),
                            other => other.to_string().chars().count(),
                        };
                        placeholder(len)
                    } else {
                        redact(v, Some(&k))
                    };
                    (k, v)
                })
                .collect(),
        ),
        other => other,
    }
}

fn placeholder(chars: usize) -> Value {
    Value::String(format!("[redacted {chars} chars]"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample_request() -> Value {
        json!({
            "model": "fast",
            "system": ["You are terse."],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "What is the secret plan?"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "plan"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "is_error": false,
                     "content": [{"type": "text", "text": "42"}]},
                    {"type": "image", "source": {"kind": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
                ]}
            ],
            "tools": [{"name": "lookup", "description": "Looks things up", "parameters": {"type": "object"}}],
            "max_tokens": 100,
            "stream": true
        })
    }

    #[test]
    fn redacted_keeps_structure_and_names_but_no_text() {
        let out = filter_body(Bodies::Redacted, sample_request());
        assert_eq!(out["model"], "fast");
        assert_eq!(out["system"][0], "[redacted 14 chars]");
        assert_eq!(out["messages"][0]["role"], "user");
        assert_eq!(out["messages"][0]["content"][0]["type"], "text");
        assert_eq!(
            out["messages"][0]["content"][0]["text"],
            "[redacted 24 chars]"
        );
        let call = &out["messages"][1]["content"][0];
        assert_eq!(call["name"], "lookup");
        assert_eq!(call["id"], "call_1");
        assert_eq!(call["input"], "[redacted 12 chars]");
        let result = &out["messages"][2]["content"][0];
        assert_eq!(result["tool_use_id"], "call_1");
        assert_eq!(result["content"][0]["text"], "[redacted 2 chars]");
        let image = &out["messages"][2]["content"][1]["source"];
        assert_eq!(image["media_type"], "image/png");
        assert_eq!(image["data"], "[redacted 12 chars]");
        assert_eq!(out["tools"][0]["description"], "[redacted 15 chars]");
        assert_eq!(out["max_tokens"], 100);
        assert_eq!(out["stream"], true);
        let text = out.to_string();
        for secret in [
            "secret plan",
            "terse",
            "plan\"",
            "42",
            "iVBOR",
            "Looks things",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }

    #[test]
    fn redacted_answer_keeps_stop_reason_and_usage() {
        let answer = json!({
            "id": "msg_1", "model": "m",
            "content": [{"type": "text", "text": "The plan is X."},
                        {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": "b"}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 3, "output_tokens": 5}
        });
        let out = filter_body(Bodies::Redacted, answer);
        assert_eq!(out["content"][0]["text"], "[redacted 14 chars]");
        assert_eq!(out["content"][1]["input"], "[redacted 9 chars]");
        assert_eq!(out["stop_reason"], "tool_use");
        assert_eq!(out["usage"]["output_tokens"], 5);
    }

    #[test]
    fn full_keeps_everything_and_none_keeps_nothing() {
        assert_eq!(
            filter_body(Bodies::Full, sample_request()),
            sample_request()
        );
        assert_eq!(filter_body(Bodies::None, sample_request()), Value::Null);
    }
}
