//! Speaking the Gemini API (used by the mock provider; the official `google-genai`
//! Python SDK must be able to talk to it): request decoding (in `serve_request.rs`),
//! `GenerateContentResponse` encoding, the `alt=sse` stream encoder and error bodies.

use std::time::Duration;

use bulwark_core::{
    ChatResponse, ContentBlock, ErrorKind, GatewayError, SseFrame, StopReason, StreamEvent, Usage,
};
use serde_json::{Map, Value, json};

use super::wire::{
    Candidate, CandidateContent, ErrorEnvelope, ErrorStatus, GenerateContentResponse,
    RETRY_INFO_TYPE, ResponseFunctionCall, ResponsePart, UsageMetadata,
};

pub use super::serve_request::decode_request;

/// Encodes a `GenerateContentResponse`.
pub fn encode_response(resp: &ChatResponse) -> Vec<u8> {
    let parts = resp
        .content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Text { text } => Some(ResponsePart {
                text: Some(text.clone()),
                ..ResponsePart::default()
            }),
            ContentBlock::ToolUse { id, name, input } => Some(ResponsePart {
                function_call: Some(ResponseFunctionCall {
                    id: Some(id.clone()),
                    name: name.clone(),
                    args: Some(input.clone()),
                }),
                ..ResponsePart::default()
            }),
            // Not part of an answer; Anthropic's reasoning has no Gemini form.
            ContentBlock::Image { .. }
            | ContentBlock::ToolResult { .. }
            | ContentBlock::Thinking { .. }
            | ContentBlock::RedactedThinking { .. } => None,
        })
        .collect();
    let body = GenerateContentResponse {
        candidates: vec![candidate(parts, Some(resp.stop_reason))],
        prompt_feedback: None,
        usage_metadata: Some(usage_to_wire(&resp.usage)),
        model_version: Some(resp.model.clone()),
        response_id: Some(resp.id.clone()),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

fn candidate(parts: Vec<ResponsePart>, stop: Option<StopReason>) -> Candidate {
    Candidate {
        content: Some(CandidateContent {
            role: Some("model".to_string()),
            parts,
        }),
        finish_reason: stop.map(|s| finish_reason(s).to_string()),
        index: Some(0),
    }
}

fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        // Gemini ends a turn with function calls with a plain STOP, and does not tell
        // a stop sequence from a natural end.
        StopReason::EndTurn
        | StopReason::ToolUse
        | StopReason::StopSequence
        | StopReason::Other => "STOP",
        StopReason::MaxTokens => "MAX_TOKENS",
        StopReason::ContentFilter | StopReason::Refusal => "SAFETY",
    }
}

fn usage_to_wire(usage: &Usage) -> UsageMetadata {
    UsageMetadata {
        prompt_token_count: Some(usage.input_tokens),
        cached_content_token_count: usage.cache_read_input_tokens,
        candidates_token_count: Some(usage.output_tokens),
        tool_use_prompt_token_count: None,
        thoughts_token_count: None,
        total_token_count: Some(usage.total()),
    }
}

/// A tool call whose arguments are still arriving.
#[derive(Debug)]
struct PendingCall {
    index: u32,
    id: String,
    name: String,
    arguments: String,
}

/// Encodes neutral events as `streamGenerateContent?alt=sse` frames (data only,
/// no terminator: the stream ends after the chunk with `finishReason`).
///
/// Text deltas go out at once, one chunk each. Gemini sends every function call whole,
/// so calls are buffered until `Finish` (which also keeps a late argument fragment from
/// being lost) and then sent one chunk per call, in index order; the last chunk carries
/// `finishReason` and `usageMetadata`.
pub struct StreamEncoder {
    id: String,
    model: String,
    calls: Vec<PendingCall>,
    closed: bool,
}

impl StreamEncoder {
    pub fn new() -> Self {
        StreamEncoder {
            id: String::new(),
            model: String::new(),
            calls: Vec::new(),
            closed: false,
        }
    }

    pub fn encode(&mut self, event: &StreamEvent, out: &mut Vec<SseFrame>) {
        if self.closed {
            return;
        }
        match event {
            StreamEvent::Start { id, model } => {
                self.id.clone_from(id);
                self.model.clone_from(model);
            }
            // Gemini reports usage with the answer's chunks; the last one has it all.
            // Anthropic's reasoning has no Gemini form.
            StreamEvent::PromptUsage { .. }
            | StreamEvent::ThinkingDelta { .. }
            | StreamEvent::ThinkingSignature { .. }
            | StreamEvent::RedactedThinking { .. } => {}
            StreamEvent::TextDelta { text } | StreamEvent::RefusalDelta { text } => {
                if !text.is_empty() {
                    let part = ResponsePart {
                        text: Some(text.clone()),
                        ..ResponsePart::default()
                    };
                    out.push(self.chunk(vec![part], None, None));
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.calls.retain(|c| c.index != *index);
                self.calls.push(PendingCall {
                    index: *index,
                    id: id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                });
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if let Some(call) = self.calls.iter_mut().find(|c| c.index == *index) {
                    call.arguments.push_str(arguments);
                }
            }
            StreamEvent::Finish {
                stop_reason, usage, ..
            } => {
                let mut calls = std::mem::take(&mut self.calls);
                calls.sort_by_key(|c| c.index);
                for call in calls {
                    let part = ResponsePart {
                        function_call: Some(ResponseFunctionCall {
                            id: Some(call.id),
                            args: Some(arguments_object(&call.name, &call.arguments)),
                            name: call.name,
                        }),
                        ..ResponsePart::default()
                    };
                    out.push(self.chunk(vec![part], None, None));
                }
                // Gemini's last chunk carries an empty text part with the finish reason.
                let part = ResponsePart {
                    text: Some(String::new()),
                    ..ResponsePart::default()
                };
                out.push(self.chunk(vec![part], Some(*stop_reason), Some(usage)));
                self.closed = true;
            }
        }
    }

    /// A failure after the stream began: an in-band `{"error": {...}}` chunk (the
    /// official SDK raises it as an `APIError`), after which nothing more is sent.
    pub fn encode_error(&mut self, err: &GatewayError, out: &mut Vec<SseFrame>) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.calls.clear();
        out.push(SseFrame::data(error_json(err)));
    }

    fn chunk(
        &self,
        parts: Vec<ResponsePart>,
        stop: Option<StopReason>,
        usage: Option<&Usage>,
    ) -> SseFrame {
        let body = GenerateContentResponse {
            candidates: vec![candidate(parts, stop)],
            prompt_feedback: None,
            usage_metadata: usage.map(usage_to_wire),
            model_version: (!self.model.is_empty()).then(|| self.model.clone()),
            response_id: (!self.id.is_empty()).then(|| self.id.clone()),
        };
        SseFrame::data(serde_json::to_string(&body).unwrap_or_default())
    }
}

impl Default for StreamEncoder {
    fn default() -> Self {
        Self::new()
    }
}

/// The JSON arguments of a finished call as the object Gemini's `args` must be.
fn arguments_object(name: &str, arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => {
            tracing::warn!(
                tool = name,
                "tool call arguments are not a JSON object; sent as {{}}"
            );
            Value::Object(Map::new())
        }
    }
}

/// `{"error": {"code", "message", "status"}}`, plus a `google.rpc.RetryInfo` detail
/// when the error says how long to wait (as Google's own 429s do).
pub fn error_body(err: &GatewayError) -> Vec<u8> {
    error_json(err).into_bytes()
}

fn error_json(err: &GatewayError) -> String {
    let details = match err.retry_after {
        Some(wait) => vec![json!({"@type": RETRY_INFO_TYPE, "retryDelay": format_duration(wait)})],
        None => Vec::new(),
    };
    let envelope = ErrorEnvelope {
        error: ErrorStatus {
            code: Some(err.status_code()),
            message: Some(err.message.clone()),
            status: Some(status_name(err.kind).to_string()),
            details,
        },
    };
    serde_json::to_string(&envelope).unwrap_or_default()
}

/// The canonical `google.rpc.Code` name Google pairs with each HTTP status.
fn status_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest
        | ErrorKind::RequestTooLarge
        | ErrorKind::RequestTimeout
        | ErrorKind::MethodNotAllowed
        | ErrorKind::Unprocessable
        | ErrorKind::UnsupportedMediaType
        | ErrorKind::Conflict => "INVALID_ARGUMENT",
        ErrorKind::Authentication => "UNAUTHENTICATED",
        ErrorKind::PermissionDenied => "PERMISSION_DENIED",
        ErrorKind::NotFound => "NOT_FOUND",
        ErrorKind::RateLimited => "RESOURCE_EXHAUSTED",
        ErrorKind::Internal | ErrorKind::BadGateway => "INTERNAL",
        ErrorKind::Unavailable => "UNAVAILABLE",
        ErrorKind::Timeout => "DEADLINE_EXCEEDED",
    }
}

/// A `google.protobuf.Duration` in JSON form: `"2s"`, `"0.5s"`.
fn format_duration(wait: Duration) -> String {
    let fraction = format!("{:09}", wait.subsec_nanos());
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{}s", wait.as_secs())
    } else {
        format!("{}.{fraction}s", wait.as_secs())
    }
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
