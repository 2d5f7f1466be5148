//! Helpers shared by the mock's integration tests: a client, request bodies in
//! each wire format, and SSE parsing.
#![allow(dead_code, clippy::unwrap_used)]

use bulwark_mock::{Api, MockServer};
use serde_json::{Value, json};

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The path a plain call of `api` goes to.
pub fn path(api: Api, model: &str, stream: bool) -> String {
    match api {
        Api::OpenAi => "/v1/chat/completions".into(),
        Api::Anthropic => "/v1/messages".into(),
        Api::Gemini if stream => format!("/v1beta/models/{model}:streamGenerateContent?alt=sse"),
        Api::Gemini => format!("/v1beta/models/{model}:generateContent"),
    }
}

/// A one-turn request body in `api`'s format.
pub fn body(api: Api, model: &str, text: &str, stream: bool) -> Value {
    match api {
        Api::OpenAi => json!({
            "model": model,
            "messages": [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": text}],
            "stream": stream,
        }),
        Api::Anthropic => json!({
            "model": model,
            "max_tokens": 256,
            "system": "be brief",
            "messages": [{"role": "user", "content": text}],
            "stream": stream,
        }),
        Api::Gemini => json!({
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "contents": [{"role": "user", "parts": [{"text": text}]}],
        }),
    }
}

pub async fn call(
    client: &reqwest::Client,
    mock: &MockServer,
    api: Api,
    model: &str,
    stream: bool,
) -> reqwest::Result<reqwest::Response> {
    post(
        client,
        mock,
        api,
        model,
        stream,
        body(api, model, "hi there", stream),
    )
    .await
}

pub async fn post(
    client: &reqwest::Client,
    mock: &MockServer,
    api: Api,
    model: &str,
    stream: bool,
    body: Value,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{}{}", mock.url(), path(api, model, stream)))
        .json(&body)
        .send()
        .await
}

/// One SSE frame: its `event:` name and its `data:` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub event: Option<String>,
    pub data: String,
}

pub fn frames(text: &str) -> Vec<Frame> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event = Some(name.trim().to_string());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
                }
            }
            Frame {
                event,
                data: data.join("\n"),
            }
        })
        .collect()
}

/// The answer text carried by a stream's frames.
pub fn stream_text(api: Api, frames: &[Frame]) -> String {
    let mut out = String::new();
    for frame in frames {
        let Ok(v) = serde_json::from_str::<Value>(&frame.data) else {
            continue;
        };
        match api {
            Api::OpenAi => {
                if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                    out.push_str(t);
                }
            }
            Api::Anthropic => {
                if v["type"] == "content_block_delta"
                    && let Some(t) = v["delta"]["text"].as_str()
                {
                    out.push_str(t);
                }
            }
            Api::Gemini => {
                for part in v["candidates"][0]["content"]["parts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if let Some(t) = part["text"].as_str() {
                        out.push_str(t);
                    }
                }
            }
        }
    }
    out
}

/// The answer text of a JSON reply.
pub fn json_text(api: Api, v: &Value) -> String {
    match api {
        Api::OpenAi => v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        Api::Anthropic => v["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["text"].as_str())
            .collect(),
        Api::Gemini => v["candidates"][0]["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["text"].as_str())
            .collect(),
    }
}

/// Whether the stream ended the way its format ends a complete answer.
pub fn ends_properly(api: Api, frames: &[Frame]) -> bool {
    let Some(last) = frames.last() else {
        return false;
    };
    match api {
        Api::OpenAi => last.data == "[DONE]",
        Api::Anthropic => last.event.as_deref() == Some("message_stop"),
        Api::Gemini => serde_json::from_str::<Value>(&last.data)
            .is_ok_and(|v| v["candidates"][0]["finishReason"].is_string()),
    }
}

pub const ALL: [Api; 3] = [Api::OpenAi, Api::Anthropic, Api::Gemini];
