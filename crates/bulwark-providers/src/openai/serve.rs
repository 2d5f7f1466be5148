//! Speaking the OpenAI Chat Completions API (Bulwark's OpenAI ingress, and the mock
//! provider): neutral response → `chat.completion`, neutral events →
//! `chat.completion.chunk` SSE frames ending with `data: [DONE]`, gateway errors →
//! `{"error": {...}}`. Request decoding lives in `serve_request.rs`.
//!
//! Shapes follow what the official `openai` Python SDK (v1.x/v2.x) parses:
//! `ChatCompletion`, `ChatCompletionChunk` and the SSE loop in `openai/_streaming.py`
//! (which stops at `[DONE]` and raises `APIError` on a data line holding `error`).

use bulwark_core::{
    ChatResponse, ContentBlock, ErrorKind, GatewayError, SseFrame, StopReason, StreamEvent, Usage,
};
use serde_json::Value;

use super::client::arguments_string;
use super::wire::{
    ChatCompletion, ChatCompletionChunk, Choice, ChunkChoice, CompletionUsage, Delta, ErrorBody,
    ErrorDetail, FunctionCall, FunctionCallDelta, PromptTokensDetails, ResponseMessage, ToolCall,
    ToolCallDelta,
};

pub use super::serve_request::decode_request;

/// Encodes a `chat.completion` object. `id` is the full id (`chatcmpl-…`),
/// `created` the Unix time in seconds.
pub fn encode_response(resp: &ChatResponse, id: &str, created: u64) -> Vec<u8> {
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in &resp.content {
        match block {
            ContentBlock::Text { text: piece } => {
                text.get_or_insert_with(String::new).push_str(piece)
            }
            ContentBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id: id.clone().into(),
                kind: "function".into(),
                function: FunctionCall {
                    name: name.clone().into(),
                    arguments: arguments_string(input).into(),
                },
            }),
            // A response holds only text and tool calls; anything else (Anthropic's
            // reasoning included: OpenAI's answer has no field for it) has no place here.
            ContentBlock::Image { .. }
            | ContentBlock::ToolResult { .. }
            | ContentBlock::Thinking { .. }
            | ContentBlock::RedactedThinking { .. } => {}
        }
    }
    // A refusal is the model's refusal message, which OpenAI reports in `refusal`
    // (content `null`) with finish_reason `stop`.
    let (content, refusal) = if resp.stop_reason == StopReason::Refusal {
        (None, text)
    } else {
        (text, None)
    };
    let completion = ChatCompletion {
        id: id.to_string(),
        object: "chat.completion".to_string(),
        created,
        model: resp.model.clone(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".to_string(),
                content: content.map(Value::String),
                refusal,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                reasoning: None,
                reasoning_content: None,
            },
            logprobs: None,
            finish_reason: Some(finish_reason(resp.stop_reason).to_string()),
            error: None,
        }],
        usage: Some(usage_to_wire(&resp.usage)),
    };
    to_json(&completion)
}

/// OpenAI's `finish_reason` for a neutral stop reason.
pub(crate) fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::MaxTokens => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::ContentFilter => "content_filter",
        StopReason::EndTurn
        | StopReason::StopSequence
        | StopReason::Refusal
        | StopReason::Other => "stop",
    }
}

fn usage_to_wire(usage: &Usage) -> CompletionUsage {
    CompletionUsage {
        prompt_tokens: usage.input_tokens,
        completion_tokens: usage.output_tokens,
        total_tokens: usage.total(),
        prompt_tokens_details: usage
            .cache_read_input_tokens
            .map(|cached| PromptTokensDetails {
                cached_tokens: Some(cached),
            }),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Room for a typical chunk or short answer up front, not grown from 8 bytes.
    let mut out = Vec::with_capacity(256);
    // Serializing these plain structs cannot fail; an empty object keeps the types honest.
    match serde_json::to_writer(&mut out, value) {
        Ok(()) => out,
        Err(_) => b"{}".to_vec(),
    }
}

/// `value` as JSON text, without copying it out of the serializer's buffer.
fn json_text<T: serde::Serialize>(value: &T) -> String {
    utf8(to_json(value))
}

fn utf8(bytes: Vec<u8>) -> String {
    // serde_json writes UTF-8; the lossy branch only keeps the types honest.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Encodes neutral events as `chat.completion.chunk` SSE frames, ending with `[DONE]`.
pub struct StreamEncoder {
    /// The chunk every frame is written from: id, object, created and model are set
    /// once, the choice is filled in per event, so a frame costs no allocation beyond
    /// its text.
    chunk: ChatCompletionChunk,
    include_usage: bool,
    /// `[DONE]` or an in-band error went out; later events are dropped.
    ended: bool,
    /// A text chunk is all of `chunk` but its text, which is most frames of a stream:
    /// the JSON before the text (`{"id":…,"delta":{"content":`), made at `Start` from
    /// the same chunk, then the text, then [`StreamEncoder::text_tail`]: two copies
    /// and the text's escaping (the same bytes the serializer writes: a test compares
    /// them).
    text_head: Option<String>,
    /// `Start` came and its chunk (`role: assistant`) is not written yet. It goes out
    /// with the first thing after it, because its `content` depends on what that is:
    /// `""` before text (as OpenAI sends), absent before a tool call or a refusal, so
    /// that an SDK assembling the stream ends with `content: None` there, as it does
    /// from OpenAI. `Start` and the first content leave in one write anyway (the
    /// router commits at the first content), so nothing is later for it; when an
    /// Anthropic upstream reasons first (which an OpenAI caller is not shown), the
    /// role waits for the first text or call after the reasoning.
    role_pending: bool,
    /// Reasoning goes out as `delta.reasoning` (see [`StreamEncoder::with_reasoning`]).
    reasoning: bool,
}

impl StreamEncoder {
    pub fn new(id: String, created: u64, include_usage: bool) -> Self {
        StreamEncoder {
            chunk: ChatCompletionChunk {
                id,
                object: "chat.completion.chunk".to_string(),
                created,
                model: String::new(),
                choices: vec![ChunkChoice {
                    index: 0,
                    delta: Delta::default(),
                    logprobs: None,
                    finish_reason: None,
                }],
                usage: None,
            },
            include_usage,
            ended: false,
            text_head: None,
            role_pending: false,
            reasoning: false,
        }
    }

    /// An encoder that writes the model's reasoning as `delta.reasoning`, as vLLM,
    /// OpenRouter and Ollama stream it (the mock plays such a server with it). Bulwark's
    /// own OpenAI-format callers are sent no reasoning: OpenAI's format has no field
    /// for it.
    pub fn with_reasoning(mut self) -> Self {
        self.reasoning = true;
        self
    }

    pub fn encode(&mut self, event: &StreamEvent, out: &mut Vec<SseFrame>) {
        if self.ended {
            return;
        }
        match event {
            // OpenAI reports usage only in the last chunk; its chunks have no field for
            // Anthropic's reasoning.
            StreamEvent::ThinkingDelta { text } if self.reasoning && !text.is_empty() => {
                let delta = Delta {
                    role: self.take_role(),
                    reasoning: Some(text.clone()),
                    ..Delta::default()
                };
                out.push(self.choice_chunk(delta, None));
            }
            StreamEvent::PromptUsage { .. }
            | StreamEvent::ThinkingDelta { .. }
            | StreamEvent::ThinkingSignature { .. }
            | StreamEvent::RedactedThinking { .. } => {}
            StreamEvent::Start { model, .. } => {
                self.chunk.model.clone_from(model);
                self.text_head = Some(self.text_head());
                self.role_pending = true;
            }
            StreamEvent::TextDelta { text } => {
                if text.is_empty() {
                    return;
                }
                self.write_role_with_empty_content(out);
                match &self.text_head {
                    Some(head) => {
                        let tail = self.text_tail();
                        let mut data = String::with_capacity(head.len() + text.len() + 64);
                        data.push_str(head);
                        data.push_str(&json_text(text));
                        data.push_str(tail);
                        out.push(SseFrame::data(data));
                    }
                    None => {
                        let delta = Delta {
                            content: Some(text.clone()),
                            ..Delta::default()
                        };
                        out.push(self.choice_chunk(delta, None));
                    }
                }
            }
            StreamEvent::RefusalDelta { text } => {
                if !text.is_empty() {
                    let delta = Delta {
                        role: self.take_role(),
                        refusal: Some(text.clone()),
                        ..Delta::default()
                    };
                    out.push(self.choice_chunk(delta, None));
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                let call = ToolCallDelta {
                    index: Some(*index),
                    id: Some(id.clone()),
                    kind: Some("function".to_string()),
                    function: Some(FunctionCallDelta {
                        name: Some(name.clone()),
                        arguments: Some(String::new()),
                    }),
                };
                out.push(self.tool_chunk(call));
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                let call = ToolCallDelta {
                    index: Some(*index),
                    id: None,
                    kind: None,
                    function: Some(FunctionCallDelta {
                        name: None,
                        arguments: Some(arguments.clone()),
                    }),
                };
                out.push(self.tool_chunk(call));
            }
            StreamEvent::Finish {
                stop_reason, usage, ..
            } => {
                // An answer with no content still says who spoke, with empty text.
                self.write_role_with_empty_content(out);
                out.push(self.choice_chunk(Delta::default(), Some(finish_reason(*stop_reason))));
                if self.include_usage {
                    // The last chunk: no choices, the usage.
                    let choices = std::mem::take(&mut self.chunk.choices);
                    self.chunk.usage = Some(Some(usage_to_wire(usage)));
                    out.push(SseFrame::data(json_text(&self.chunk)));
                    self.chunk.choices = choices;
                }
                out.push(SseFrame::data("[DONE]"));
                self.ended = true;
            }
        }
    }

    /// A failure after the stream began: an in-band error chunk, and no `[DONE]`.
    pub fn encode_error(&mut self, err: &GatewayError, out: &mut Vec<SseFrame>) {
        if self.ended {
            return;
        }
        self.ended = true;
        out.push(SseFrame::data(utf8(error_body(err))));
    }

    fn choice_chunk(&mut self, delta: Delta, finish_reason: Option<&str>) -> SseFrame {
        // With include_usage on, OpenAI sends `"usage": null` on every chunk but the last.
        self.chunk.usage = self.include_usage.then_some(None);
        if let Some(choice) = self.chunk.choices.first_mut() {
            choice.delta = delta;
            choice.finish_reason = finish_reason.map(str::to_string);
        }
        SseFrame::data(json_text(&self.chunk))
    }

    /// The JSON of a text chunk before its text (see `text_head`), written with the
    /// chunk's own fields in the order the serializer writes them.
    fn text_head(&self) -> String {
        format!(
            r#"{{"id":{},"object":{},"created":{},"model":{},"choices":[{{"index":0,"delta":{{"content":"#,
            json_text(&self.chunk.id),
            json_text(&self.chunk.object),
            self.chunk.created,
            json_text(&self.chunk.model),
        )
    }

    /// The JSON of a text chunk after its text.
    fn text_tail(&self) -> &'static str {
        if self.include_usage {
            r#"},"logprobs":null,"finish_reason":null}],"usage":null}"#
        } else {
            r#"},"logprobs":null,"finish_reason":null}]}"#
        }
    }

    fn tool_chunk(&mut self, call: ToolCallDelta) -> SseFrame {
        // The first tool call carries the role, with no `content`: OpenAI's own first
        // chunk of a tool-only answer is the role and the call together.
        let delta = Delta {
            role: self.take_role(),
            tool_calls: Some(vec![call]),
            ..Delta::default()
        };
        self.choice_chunk(delta, None)
    }

    /// `Some("assistant")` once, if `Start`'s role has not been written yet.
    fn take_role(&mut self) -> Option<String> {
        std::mem::take(&mut self.role_pending).then(|| "assistant".to_string())
    }

    /// `Start`'s chunk as OpenAI writes it before text: the role and `content: ""`.
    fn write_role_with_empty_content(&mut self, out: &mut Vec<SseFrame>) {
        if let Some(role) = self.take_role() {
            let delta = Delta {
                role: Some(role),
                content: Some(String::new()),
                ..Delta::default()
            };
            out.push(self.choice_chunk(delta, None));
        }
    }
}

/// `{"error": {"message", "type", "param", "code"}}`, with the `type` OpenAI uses
/// for the status (`invalid_request_error` for 400/401/404, `insufficient_quota` or
/// `rate_limit_error` for 429, `server_error` for 5xx).
pub fn error_body(err: &GatewayError) -> Vec<u8> {
    let quota = matches!(
        err.code.as_deref(),
        Some("insufficient_quota" | "credit_balance_exhausted" | "billing_hard_limit_reached")
    );
    let kind = match err.kind {
        // OpenAI answers a bad or missing API key with `invalid_request_error` too
        // (code `invalid_api_key`), not a separate authentication type.
        ErrorKind::InvalidRequest
        | ErrorKind::Authentication
        | ErrorKind::NotFound
        | ErrorKind::RequestTooLarge
        | ErrorKind::RequestTimeout
        | ErrorKind::MethodNotAllowed
        | ErrorKind::Unprocessable
        | ErrorKind::UnsupportedMediaType
        | ErrorKind::Conflict => "invalid_request_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::RateLimited if quota => "insufficient_quota",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::Internal | ErrorKind::BadGateway => "server_error",
        ErrorKind::Unavailable => "service_unavailable_error",
        ErrorKind::Timeout => "timeout",
    };
    let code = err.code.clone().or_else(|| {
        (err.kind == ErrorKind::RateLimited).then(|| "rate_limit_exceeded".to_string())
    });
    to_json(&ErrorBody {
        error: ErrorDetail {
            message: err.message.clone(),
            kind: kind.to_string(),
            param: err.param.clone(),
            code,
        },
    })
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
