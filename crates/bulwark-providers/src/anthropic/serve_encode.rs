//! Writing Anthropic Messages responses (ingress and mock): the `message` object,
//! the streamed event sequence, and error bodies, in the shapes the official
//! `anthropic` SDK parses. Re-exported through `serve.rs`.

use std::collections::HashMap;

use bulwark_core::{
    ChatResponse, ContentBlock, ErrorKind, GatewayError, SseFrame, StopReason, StreamEvent, Usage,
};
use serde_json::Value;

use super::wire::{
    BlockDelta, DeltaUsage, ErrorBody, MessageDeltaBody, MessageResponse, ResponseBlock,
    StreamEventWire, UsageWire,
};

/// Encodes a `message` object with the given id (`msg_…`).
pub fn encode_response(resp: &ChatResponse, id: &str) -> Vec<u8> {
    let content = resp
        .content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Text { text } if text.is_empty() => None,
            ContentBlock::Text { text } => Some(ResponseBlock::Text { text: text.clone() }),
            // A tool's `input` is always an object here. Arguments another provider
            // wrote that are no JSON object (cut off by `max_tokens`, or malformed) are
            // kept as text for an OpenAI caller; this format has no place for them.
            ContentBlock::ToolUse { id, name, input } => Some(ResponseBlock::ToolUse {
                id: id.clone(),
                name: name.clone(),
                input: if input.is_object() {
                    input.clone()
                } else {
                    Value::Object(Default::default())
                },
            }),
            ContentBlock::Thinking {
                thinking,
                signature,
            } => Some(ResponseBlock::Thinking {
                thinking: thinking.clone(),
                signature: signature.clone(),
            }),
            ContentBlock::RedactedThinking { data } => {
                Some(ResponseBlock::RedactedThinking { data: data.clone() })
            }
            // An assistant answer carries no images or tool results.
            ContentBlock::Image { .. } | ContentBlock::ToolResult { .. } => None,
        })
        .collect();
    let message = MessageResponse {
        id: id.to_owned(),
        kind: "message".into(),
        role: "assistant".into(),
        model: resp.model.clone(),
        content,
        stop_reason: Some(stop_reason_to_wire(resp.stop_reason).to_owned()),
        stop_sequence: resp.stop_sequence.clone(),
        usage: usage_to_wire(&resp.usage),
    };
    to_json(&message).into_bytes()
}

/// Neutral stop reason → Anthropic's. Filters from other providers read as a
/// refusal; anything unnamed as a plain end of turn.
fn stop_reason_to_wire(reason: StopReason) -> &'static str {
    match reason {
        StopReason::EndTurn | StopReason::Other => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopSequence => "stop_sequence",
        StopReason::ToolUse => "tool_use",
        StopReason::ContentFilter | StopReason::Refusal => "refusal",
    }
}

/// Anthropic's `input_tokens` counts only the prompt tokens that were neither read
/// from nor written to the prompt cache; the neutral count has them all.
fn uncached_input_tokens(usage: &Usage) -> u64 {
    usage
        .input_tokens
        .saturating_sub(usage.cache_read_input_tokens.unwrap_or(0))
        .saturating_sub(usage.cache_creation_input_tokens.unwrap_or(0))
}

fn usage_to_wire(usage: &Usage) -> UsageWire {
    UsageWire {
        input_tokens: uncached_input_tokens(usage),
        output_tokens: usage.output_tokens,
        cache_creation_input_tokens: usage.cache_creation_input_tokens,
        cache_read_input_tokens: usage.cache_read_input_tokens,
    }
}

/// What the currently open content block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text,
    Tool,
    /// Reasoning; `signed` once its signature went out (what follows is a new block).
    Thinking {
        signed: bool,
    },
}

/// Encodes neutral events as the Messages streaming event sequence:
/// `message_start`, then per content block `content_block_start` /
/// `content_block_delta`… / `content_block_stop` (indexes from 0 across all
/// blocks, one block open at a time), then `message_delta` and `message_stop`.
/// Every frame's SSE `event:` name equals its JSON `type`.
pub struct StreamEncoder {
    id: String,
    started: bool,
    /// Set after `message_stop` or an error: nothing more is written.
    done: bool,
    next_block: u32,
    open: Option<(u32, OpenBlock)>,
    /// Neutral tool-call index → its content block index.
    tool_blocks: HashMap<u32, u32>,
    /// Tool calls that started while another call's block was open. An upstream
    /// may interleave parallel calls (OpenAI-style streams address each fragment by
    /// index), but Anthropic's blocks run one at a time, start, deltas, stop: a call
    /// cannot be known complete before the answer ends, so the later calls are held
    /// here, whole, and written out as blocks of their own at the end (or before text
    /// that follows them).
    held: Vec<HeldTool>,
    /// From `Start`, until `message_start` is written.
    model: Option<String>,
    /// From `PromptUsage`, until `message_start` is written.
    prompt_usage: Option<Usage>,
}

/// A tool call waiting for its block (see `StreamEncoder::held`).
#[derive(Debug)]
struct HeldTool {
    index: u32,
    id: String,
    name: String,
    arguments: String,
}

impl StreamEncoder {
    pub fn new(id: String) -> Self {
        StreamEncoder {
            id,
            started: false,
            done: false,
            next_block: 0,
            open: None,
            tool_blocks: HashMap::new(),
            held: Vec::new(),
            model: None,
            prompt_usage: None,
        }
    }

    pub fn encode(&mut self, event: &StreamEvent, out: &mut Vec<SseFrame>) {
        if self.done {
            return;
        }
        // `message_start` goes out with the event after `Start`: the prompt's counts
        // when the upstream gave them first (as Anthropic does), so that clients that
        // read input usage from `message_start` alone find it; else the answer's
        // first event.
        match event {
            StreamEvent::Start { model, .. } => {
                if !self.started && self.model.is_none() {
                    self.model = Some(model.clone());
                }
                return;
            }
            StreamEvent::PromptUsage { usage } => {
                if !self.started {
                    self.prompt_usage = Some(*usage);
                    self.start(out);
                }
                return;
            }
            _ => {}
        }
        // Robust to a missing Start: the SDK cannot parse anything before message_start.
        if !self.started {
            self.start(out);
        }
        match event {
            StreamEvent::Start { .. } | StreamEvent::PromptUsage { .. } => {}
            // Anthropic has no refusal message apart from the text; the stop reason
            // (`refusal`) says what it was.
            StreamEvent::TextDelta { text } | StreamEvent::RefusalDelta { text } => {
                if text.is_empty() {
                    return;
                }
                self.write_held(out);
                let index = match self.open {
                    Some((index, OpenBlock::Text)) => index,
                    _ => self.open_block(
                        OpenBlock::Text,
                        ResponseBlock::Text {
                            text: String::new(),
                        },
                        out,
                    ),
                };
                push(
                    out,
                    &StreamEventWire::ContentBlockDelta {
                        index,
                        delta: BlockDelta::TextDelta { text: text.clone() },
                    },
                );
            }
            StreamEvent::ThinkingDelta { text } => {
                if text.is_empty() {
                    return;
                }
                let index = self.thinking_block(out);
                push(
                    out,
                    &StreamEventWire::ContentBlockDelta {
                        index,
                        delta: BlockDelta::ThinkingDelta {
                            thinking: text.clone(),
                        },
                    },
                );
            }
            StreamEvent::ThinkingSignature { signature } => {
                let index = self.thinking_block(out);
                self.open = Some((index, OpenBlock::Thinking { signed: true }));
                push(
                    out,
                    &StreamEventWire::ContentBlockDelta {
                        index,
                        delta: BlockDelta::SignatureDelta {
                            signature: signature.clone(),
                        },
                    },
                );
            }
            StreamEvent::RedactedThinking { data } => {
                self.write_held(out);
                // Whole in its start, as Anthropic streams it.
                self.open_block(
                    OpenBlock::Thinking { signed: true },
                    ResponseBlock::RedactedThinking { data: data.clone() },
                    out,
                );
                self.close_block(out);
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                if matches!(self.open, Some((_, OpenBlock::Tool))) || !self.held.is_empty() {
                    self.held.push(HeldTool {
                        index: *index,
                        id: id.clone(),
                        name: name.clone(),
                        arguments: String::new(),
                    });
                    return;
                }
                let block = self.open_block(
                    OpenBlock::Tool,
                    ResponseBlock::ToolUse {
                        id: id.clone(),
                        name: name.clone(),
                        input: Value::Object(Default::default()),
                    },
                    out,
                );
                self.tool_blocks.insert(*index, block);
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if arguments.is_empty() {
                    return;
                }
                if let Some(held) = self.held.iter_mut().find(|h| h.index == *index) {
                    held.arguments.push_str(arguments);
                    return;
                }
                // The open block (a call's later fragments come after its block
                // closed only when text came between them).
                let Some(&block) = self.tool_blocks.get(index) else {
                    tracing::warn!(index, "tool-call delta before its start; dropped");
                    return;
                };
                push(
                    out,
                    &StreamEventWire::ContentBlockDelta {
                        index: block,
                        delta: BlockDelta::InputJsonDelta {
                            partial_json: arguments.clone(),
                        },
                    },
                );
            }
            StreamEvent::Finish {
                stop_reason,
                stop_sequence,
                usage,
            } => {
                self.write_held(out);
                self.close_block(out);
                push(
                    out,
                    &StreamEventWire::MessageDelta {
                        delta: MessageDeltaBody {
                            stop_reason: Some(stop_reason_to_wire(*stop_reason).to_owned()),
                            stop_sequence: stop_sequence.clone(),
                        },
                        usage: DeltaUsage {
                            output_tokens: usage.output_tokens,
                            input_tokens: Some(uncached_input_tokens(usage)),
                            cache_creation_input_tokens: usage.cache_creation_input_tokens,
                            cache_read_input_tokens: usage.cache_read_input_tokens,
                        },
                    },
                );
                push(out, &StreamEventWire::MessageStop);
                self.done = true;
            }
        }
    }

    /// A failure after the stream began: `event: error`, and no `message_stop`.
    pub fn encode_error(&mut self, err: &GatewayError, out: &mut Vec<SseFrame>) {
        if self.done {
            return;
        }
        // In a stream there is no status to pair the type with: an Anthropic
        // upstream's own in-band type (`overloaded_error`, on which clients such as
        // Claude Code retry) reaches the caller as it was.
        let kind = err
            .code
            .as_deref()
            .filter(|code| ERROR_TYPES.contains(code))
            .unwrap_or_else(|| error_type(err.kind));
        push(
            out,
            &StreamEventWire::Error {
                error: super::wire::ErrorObject {
                    kind: kind.to_owned(),
                    message: error_message(err),
                    details: None,
                },
            },
        );
        self.done = true;
    }

    fn start(&mut self, out: &mut Vec<SseFrame>) {
        self.started = true;
        // The prompt's counts if the upstream gave them up front; the whole usage is
        // sent again in message_delta either way.
        let usage = self
            .prompt_usage
            .take()
            .map(|usage| usage_to_wire(&usage))
            .unwrap_or_default();
        push(
            out,
            &StreamEventWire::MessageStart {
                message: MessageResponse {
                    id: self.id.clone(),
                    kind: "message".into(),
                    role: "assistant".into(),
                    model: self.model.take().unwrap_or_default(),
                    content: Vec::new(),
                    stop_reason: None,
                    stop_sequence: None,
                    usage,
                },
            },
        );
    }

    /// Writes the held tool calls, each a block of its own with its whole input
    /// (the last one stays open).
    fn write_held(&mut self, out: &mut Vec<SseFrame>) {
        for held in std::mem::take(&mut self.held) {
            let block = self.open_block(
                OpenBlock::Tool,
                ResponseBlock::ToolUse {
                    id: held.id,
                    name: held.name,
                    input: Value::Object(Default::default()),
                },
                out,
            );
            self.tool_blocks.insert(held.index, block);
            if !held.arguments.is_empty() {
                push(
                    out,
                    &StreamEventWire::ContentBlockDelta {
                        index: block,
                        delta: BlockDelta::InputJsonDelta {
                            partial_json: held.arguments,
                        },
                    },
                );
            }
        }
    }

    /// Closes the open block, starts a new one, returns its index.
    /// The open reasoning block that has no signature yet, or a new one.
    fn thinking_block(&mut self, out: &mut Vec<SseFrame>) -> u32 {
        self.write_held(out);
        match self.open {
            Some((index, OpenBlock::Thinking { signed: false })) => index,
            _ => self.open_block(
                OpenBlock::Thinking { signed: false },
                ResponseBlock::Thinking {
                    thinking: String::new(),
                    signature: String::new(),
                },
                out,
            ),
        }
    }

    fn open_block(
        &mut self,
        kind: OpenBlock,
        content_block: ResponseBlock,
        out: &mut Vec<SseFrame>,
    ) -> u32 {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        push(
            out,
            &StreamEventWire::ContentBlockStart {
                index,
                content_block,
            },
        );
        self.open = Some((index, kind));
        index
    }

    fn close_block(&mut self, out: &mut Vec<SseFrame>) {
        if let Some((index, _)) = self.open.take() {
            push(out, &StreamEventWire::ContentBlockStop { index });
        }
    }
}

fn push(out: &mut Vec<SseFrame>, event: &StreamEventWire) {
    out.push(SseFrame::named(event.name(), to_json(event)));
}

/// `{"type": "error", "error": {"type", "message"}}`
pub fn error_body(err: &GatewayError) -> Vec<u8> {
    let mut body = ErrorBody::new(error_type(err.kind), error_message(err));
    // Anthropic's `thread_unsupported_request` names what a thread cannot go with;
    // the SDKs' tool runners then resend the whole conversation without `thread`.
    // Here every request is one: an empty list.
    if err.code.as_deref() == Some(THREAD_UNSUPPORTED) {
        body.error.details = Some(serde_json::json!({
            "error_code": THREAD_UNSUPPORTED,
            "unsupported": [],
        }));
    }
    to_json(&body).into_bytes()
}

/// The `error_code` (and [`GatewayError::code`]) of a request with a `thread`.
pub(crate) const THREAD_UNSUPPORTED: &str = "thread_unsupported_request";

/// The Anthropic error type for a caller-facing error kind.
/// The error types of Anthropic's reference ("Errors").
const ERROR_TYPES: &[&str] = &[
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
    "timeout_error",
];

fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest
        | ErrorKind::Unprocessable
        | ErrorKind::UnsupportedMediaType
        | ErrorKind::Conflict
        | ErrorKind::RequestTimeout
        | ErrorKind::MethodNotAllowed => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::RequestTooLarge => "request_too_large",
        ErrorKind::RateLimited => "rate_limit_error",
        // Anthropic pairs `overloaded_error` with 529 only (the SDKs pick the error
        // class by status); a gateway with no target left answers 503, whatever the
        // targets' own failures were (an upstream key rejected is no overload).
        ErrorKind::Internal | ErrorKind::BadGateway | ErrorKind::Unavailable => "api_error",
        ErrorKind::Timeout => "timeout_error",
    }
}

/// Anthropic puts the field path in the message (`messages.0.content: …`).
fn error_message(err: &GatewayError) -> String {
    match &err.param {
        Some(param) if !err.message.starts_with(param.as_str()) => {
            format!("{param}: {}", err.message)
        }
        _ => err.message.clone(),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // These types hold only strings, numbers and JSON values: serialization cannot fail.
    serde_json::to_string(value).unwrap_or_else(|e| {
        tracing::error!(error = %e, "could not serialize an anthropic wire value");
        String::from("{}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Adapter;
    use crate::StreamDecoder;
    use crate::anthropic::client_stream::AnthropicStreamDecoder;
    use crate::anthropic::{AnthropicAdapter, DEFAULT_MAX_TOKENS};
    use serde_json::json;

    /// 12 prompt tokens of which 5 came from the cache: Anthropic's `input_tokens`
    /// is the 7 that did not.
    fn usage() -> Usage {
        Usage {
            input_tokens: 12,
            output_tokens: 34,
            cache_read_input_tokens: Some(5),
            cache_creation_input_tokens: None,
        }
    }

    fn text_then_two_tools() -> Vec<StreamEvent> {
        vec![
            StreamEvent::Start {
                id: "upstream-id".into(),
                model: "claude-sonnet-4-5".into(),
            },
            StreamEvent::TextDelta {
                text: "Let me ".into(),
            },
            StreamEvent::TextDelta {
                text: "check.".into(),
            },
            StreamEvent::ToolCallStart {
                index: 0,
                id: "toolu_a".into(),
                name: "get_weather".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"city\":".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "\"Paris\"}".into(),
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "toolu_b".into(),
                name: "get_time".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: "{}".into(),
            },
            StreamEvent::Finish {
                stop_reason: StopReason::ToolUse,
                stop_sequence: None,
                usage: usage(),
            },
        ]
    }

    fn encode_all(events: &[StreamEvent]) -> Vec<SseFrame> {
        let mut encoder = StreamEncoder::new("msg_bulwark".into());
        let mut frames = Vec::new();
        for event in events {
            encoder.encode(event, &mut frames);
        }
        frames
    }

    #[test]
    fn a_tool_input_that_is_no_json_object_is_an_empty_object() {
        // An OpenAI upstream cut off mid-arguments: the neutral input keeps the text.
        let resp = ChatResponse {
            id: "x".into(),
            model: "m".into(),
            content: vec![ContentBlock::ToolUse {
                id: "toolu_1".into(),
                name: "get_weather".into(),
                input: Value::String(r#"{"city": "Pa"#.into()),
            }],
            stop_reason: StopReason::MaxTokens,
            stop_sequence: None,
            usage: Usage::default(),
        };
        let body: Value = serde_json::from_slice(&encode_response(&resp, "msg_1")).unwrap();
        assert_eq!(body["content"][0]["input"], json!({}));
        assert_eq!(body["stop_reason"], "max_tokens");
    }

    #[test]
    fn text_then_two_tool_calls_produce_the_exact_event_sequence() {
        let frames = encode_all(&text_then_two_tools());
        let got: Vec<(&str, Value)> = frames
            .iter()
            .map(|f| (f.event.unwrap(), serde_json::from_str(&f.data).unwrap()))
            .collect();
        let expected = vec![
            (
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": "msg_bulwark", "type": "message", "role": "assistant",
                    "model": "claude-sonnet-4-5", "content": [],
                    "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0}
                }}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "Let me "}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "check."}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 1}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 2,
                "content_block": {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 2}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"output_tokens": 34, "input_tokens": 7, "cache_read_input_tokens": 5}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        assert_eq!(got.len(), expected.len());
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g, e, "frame {i}");
        }
        assert!(
            frames[0]
                .to_wire()
                .starts_with("event: message_start\ndata: {")
        );
    }

    #[test]
    fn encoded_stream_decodes_back_to_the_same_events() {
        let events = text_then_two_tools();
        let frames = encode_all(&events);
        let mut decoder = AnthropicStreamDecoder::default();
        let mut back = Vec::new();
        for frame in &frames {
            decoder.feed(frame.event, &frame.data, &mut back).unwrap();
        }
        decoder.finish(&mut back).unwrap();
        // The id is the encoder's own; everything else survives unchanged.
        let mut expected = events;
        expected[0] = StreamEvent::Start {
            id: "msg_bulwark".into(),
            model: "claude-sonnet-4-5".into(),
        };
        assert_eq!(back, expected);
    }

    #[test]
    fn finish_without_content_and_content_filter_read_as_refusal() {
        let frames = encode_all(&[
            StreamEvent::Start {
                id: "x".into(),
                model: "gemini-2.5".into(),
            },
            StreamEvent::Finish {
                stop_reason: StopReason::ContentFilter,
                stop_sequence: None,
                usage: Usage::default(),
            },
        ]);
        let names: Vec<_> = frames.iter().map(|f| f.event.unwrap()).collect();
        assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
        let delta: Value = serde_json::from_str(&frames[1].data).unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "refusal");
    }

    #[test]
    fn error_mid_stream_is_an_error_event_without_message_stop() {
        let mut encoder = StreamEncoder::new("msg_1".into());
        let mut frames = Vec::new();
        for event in &text_then_two_tools()[..3] {
            encoder.encode(event, &mut frames);
        }
        let err = GatewayError::new(ErrorKind::Unavailable, "upstream overloaded");
        encoder.encode_error(&err, &mut frames);
        encoder.encode(
            &StreamEvent::Finish {
                stop_reason: StopReason::EndTurn,
                stop_sequence: None,
                usage: Usage::default(),
            },
            &mut frames,
        );
        let last = frames.last().unwrap();
        assert_eq!(last.event, Some("error"));
        assert_eq!(
            serde_json::from_str::<Value>(&last.data).unwrap(),
            json!({"type": "error", "error": {"type": "api_error", "message": "upstream overloaded"}})
        );
        assert!(frames.iter().all(|f| f.event != Some("message_stop")));
        assert!(frames.iter().all(|f| f.event != Some("content_block_stop")));

        // The client decoder turns it back into a classified failure.
        let mut decoder = AnthropicStreamDecoder::default();
        let mut back = Vec::new();
        let mut result = Ok(());
        for frame in &frames {
            result = decoder.feed(frame.event, &frame.data, &mut back);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(
            result.unwrap_err().class,
            bulwark_core::ErrorClass::Transient
        );

        // An Anthropic upstream's own type goes through as it was; another
        // provider's code does not pass for one.
        for (code, kind) in [
            ("overloaded_error", "overloaded_error"),
            ("rate_limit_exceeded", "api_error"),
        ] {
            let mut encoder = StreamEncoder::new("msg_2".into());
            let mut frames = Vec::new();
            encoder.encode(&text_then_two_tools()[0], &mut frames);
            encoder.encode_error(&err.clone().with_code(code), &mut frames);
            let last: Value = serde_json::from_str(&frames.last().unwrap().data).unwrap();
            assert_eq!(last["error"]["type"], kind, "{code}");
        }
    }

    #[test]
    fn response_round_trips_through_the_client_decoder() {
        let resp = ChatResponse {
            id: "upstream".into(),
            model: "gpt-4o".into(),
            content: vec![
                ContentBlock::Text {
                    text: "Sure.".into(),
                },
                ContentBlock::ToolUse {
                    id: "call_1".into(),
                    name: "f".into(),
                    input: json!({"x": [1, 2]}),
                },
            ],
            stop_reason: StopReason::ToolUse,
            stop_sequence: None,
            usage: usage(),
        };
        let body = encode_response(&resp, "msg_abc");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "msg_abc", "type": "message", "role": "assistant", "model": "gpt-4o",
                "content": [
                    {"type": "text", "text": "Sure."},
                    {"type": "tool_use", "id": "call_1", "name": "f", "input": {"x": [1, 2]}}
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 7, "output_tokens": 34, "cache_read_input_tokens": 5}
            })
        );
        let back = AnthropicAdapter::new(DEFAULT_MAX_TOKENS)
            .decode_response(&body)
            .unwrap();
        assert_eq!(
            back,
            ChatResponse {
                id: "msg_abc".into(),
                ..resp
            }
        );
    }

    #[test]
    fn stop_reasons_encode_to_anthropic_values() {
        let cases = [
            (StopReason::EndTurn, "end_turn"),
            (StopReason::Other, "end_turn"),
            (StopReason::MaxTokens, "max_tokens"),
            (StopReason::StopSequence, "stop_sequence"),
            (StopReason::ToolUse, "tool_use"),
            (StopReason::ContentFilter, "refusal"),
            (StopReason::Refusal, "refusal"),
        ];
        for (neutral, wire) in cases {
            assert_eq!(stop_reason_to_wire(neutral), wire);
        }
    }

    #[test]
    fn error_bodies_use_anthropic_types() {
        let cases = [
            (ErrorKind::InvalidRequest, 400, "invalid_request_error"),
            (ErrorKind::Authentication, 401, "authentication_error"),
            (ErrorKind::PermissionDenied, 403, "permission_error"),
            (ErrorKind::NotFound, 404, "not_found_error"),
            (ErrorKind::RequestTooLarge, 413, "request_too_large"),
            (ErrorKind::Unprocessable, 422, "invalid_request_error"),
            (ErrorKind::RateLimited, 429, "rate_limit_error"),
            (ErrorKind::Internal, 500, "api_error"),
            (ErrorKind::BadGateway, 502, "api_error"),
            (ErrorKind::Unavailable, 503, "api_error"),
            (ErrorKind::Timeout, 504, "timeout_error"),
        ];
        for (kind, status, wire) in cases {
            let err = GatewayError::new(kind, "nope");
            assert_eq!(err.status_code(), status);
            let v: Value = serde_json::from_slice(&error_body(&err)).unwrap();
            assert_eq!(
                v,
                json!({"type": "error", "error": {"type": wire, "message": "nope"}})
            );
        }
        let err = GatewayError::invalid_param("messages.0.content", "must not be empty");
        let v: Value = serde_json::from_slice(&error_body(&err)).unwrap();
        assert_eq!(
            v["error"]["message"],
            "messages.0.content: must not be empty"
        );
    }

    #[test]
    fn request_round_trips_through_serve_decode_and_client_encode() {
        let body = json!({
            "model": "route",
            "max_tokens": 256,
            "system": [{"type": "text", "text": "S"}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "q"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "a"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"k": "v"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "r"}]},
                    {"type": "image", "source": {"type": "url", "url": "https://i/x.png"}}
                ]}
            ],
            "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "stop_sequences": ["x"],
            "temperature": 0.3,
            "top_p": 0.7,
            "top_k": 3,
            "metadata": {"user_id": "u"},
            "stream": true
        });
        let req = super::super::serve::decode_request(&serde_json::to_vec(&body).unwrap()).unwrap();
        let encoded = AnthropicAdapter::new(DEFAULT_MAX_TOKENS)
            .encode_request(&req, "route", true)
            .unwrap();
        let encoded: Value = serde_json::from_slice(&encoded).unwrap();
        assert_eq!(encoded, body);
    }

    /// Parallel tool calls whose fragments an upstream interleaves (OpenAI-style
    /// streams address each by index) still come out as Anthropic's blocks one at a
    /// time: every delta goes to the open block, no block gets a delta after its
    /// stop, and each call's input is whole.
    #[test]
    fn interleaved_tool_calls_become_blocks_one_at_a_time() {
        let call = |index: u32, id: &str, name: &str| StreamEvent::ToolCallStart {
            index,
            id: id.into(),
            name: name.into(),
        };
        let args = |index: u32, arguments: &str| StreamEvent::ToolCallDelta {
            index,
            arguments: arguments.into(),
        };
        let events = [
            StreamEvent::Start {
                id: "x".into(),
                model: "m".into(),
            },
            StreamEvent::TextDelta {
                text: "Two calls.".into(),
            },
            call(0, "call_a", "weather"),
            args(0, r#"{"city":"#),
            call(1, "call_b", "time"),
            args(1, r#"{"zone":"#),
            args(0, r#""Paris"}"#),
            args(1, r#""CET"}"#),
            call(2, "call_c", "noop"),
            StreamEvent::Finish {
                stop_reason: StopReason::ToolUse,
                stop_sequence: None,
                usage: Usage::default(),
            },
        ];
        let mut encoder = StreamEncoder::new("msg_1".into());
        let mut frames = Vec::new();
        for event in &events {
            encoder.encode(event, &mut frames);
        }
        let mut open: Option<u64> = None;
        let mut inputs: Vec<(String, String)> = Vec::new();
        for frame in &frames {
            let v: Value = serde_json::from_str(&frame.data).unwrap();
            match v["type"].as_str().unwrap() {
                "content_block_start" => {
                    assert_eq!(open, None, "a block started inside another: {v}");
                    let index = v["index"].as_u64().unwrap();
                    open = Some(index);
                    if v["content_block"]["type"] == "tool_use" {
                        // Blocks are numbered in order: the text is 0.
                        assert_eq!(index as usize, inputs.len() + 1, "{v}");
                        let name = v["content_block"]["name"].as_str().unwrap();
                        inputs.push((name.to_owned(), String::new()));
                    }
                }
                "content_block_delta" => {
                    assert_eq!(open, v["index"].as_u64(), "delta outside its block: {v}");
                    if let Some(part) = v["delta"]["partial_json"].as_str() {
                        inputs.last_mut().unwrap().1.push_str(part);
                    }
                }
                "content_block_stop" => {
                    assert_eq!(open, v["index"].as_u64(), "{v}");
                    open = None;
                }
                _ => {}
            }
        }
        let inputs: Vec<(String, Value)> = inputs
            .into_iter()
            .map(|(name, text)| {
                let input = if text.is_empty() {
                    json!({})
                } else {
                    serde_json::from_str(&text).unwrap()
                };
                (name, input)
            })
            .collect();
        assert_eq!(
            inputs,
            vec![
                ("weather".to_owned(), json!({"city": "Paris"})),
                ("time".to_owned(), json!({"zone": "CET"})),
                ("noop".to_owned(), json!({})),
            ]
        );
    }
}
