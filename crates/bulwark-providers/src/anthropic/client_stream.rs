//! Decoding a streamed Anthropic response (`message_start` … `message_stop`) into
//! neutral events.
//!
//! Anthropic numbers content blocks across the whole message (text, thinking,
//! server tools, client tools); the neutral stream numbers only tool calls, in the
//! order they start. The decoder keeps that mapping, the id and model from
//! `message_start`, and the usage, which arrives in two halves (input counts in
//! `message_start`, cumulative output counts in `message_delta`).

use std::collections::HashMap;

use bulwark_core::{StopReason, StreamEvent, UpstreamError, Usage};

use super::client::{stop_reason_from_wire, with_cache_in_input};
use super::client_error::classify_error_type;
use super::wire::{BlockDelta, ResponseBlock, StreamEventWire};
use crate::StreamDecoder;

/// What an Anthropic content block index stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    /// A client tool call, with its neutral tool-call index.
    Tool(u32),
    /// The model's reasoning: its text and signature arrive in deltas.
    Thinking,
    /// Server tools, anything newer: dropped (redacted thinking comes whole in its
    /// start and has nothing after it).
    Ignored,
}

#[derive(Debug, Default)]
pub struct AnthropicStreamDecoder {
    started: bool,
    /// Anthropic block index → meaning.
    blocks: HashMap<u32, Block>,
    next_tool_index: u32,
    /// Per neutral tool call: whether any of its arguments went out yet.
    tool_has_arguments: Vec<bool>,
    /// As Anthropic counts it (cache reads and writes apart from `input_tokens`),
    /// until the finish.
    usage: Usage,
    /// Set by `message_delta`: the answer is complete once this is known.
    stop: Option<(StopReason, Option<String>)>,
    finished: bool,
}

impl AnthropicStreamDecoder {
    fn push_arguments(&mut self, tool: u32, arguments: String, out: &mut Vec<StreamEvent>) {
        if let Some(seen) = self.tool_has_arguments.get_mut(tool as usize) {
            *seen = true;
        }
        out.push(StreamEvent::ToolCallDelta {
            index: tool,
            arguments,
        });
    }

    /// A tool called with no input streams no `input_json_delta` (or an empty one):
    /// its arguments are the empty object, which a caller must still receive as
    /// JSON text, not as nothing.
    fn close_tool(&mut self, tool: u32, out: &mut Vec<StreamEvent>) {
        if self.tool_has_arguments.get(tool as usize) == Some(&false) {
            self.push_arguments(tool, "{}".to_owned(), out);
        }
    }

    fn emit_finish(&mut self, out: &mut Vec<StreamEvent>) {
        for tool in 0..self.next_tool_index {
            self.close_tool(tool, out);
        }
        let (stop_reason, stop_sequence) = self.stop.take().unwrap_or((StopReason::Other, None));
        out.push(StreamEvent::Finish {
            stop_reason,
            stop_sequence,
            usage: with_cache_in_input(self.usage),
        });
        self.finished = true;
    }
}

impl StreamDecoder for AnthropicStreamDecoder {
    fn feed(
        &mut self,
        _event: Option<&str>,
        data: &str,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), UpstreamError> {
        // The SSE `event:` name always equals the JSON `type`; the JSON is authoritative.
        let event: StreamEventWire = serde_json::from_str(data).map_err(|e| {
            UpstreamError::protocol(format!("anthropic stream event is not valid: {e}"))
        })?;
        if self.finished {
            // Nothing may follow Finish; a stray trailing event changes nothing.
            return Ok(());
        }
        match event {
            StreamEventWire::Ping | StreamEventWire::Unknown => {}
            StreamEventWire::Error { error } => {
                let class = classify_error_type(&error.kind);
                let message = if error.message.is_empty() {
                    format!("anthropic stream failed ({})", error.kind)
                } else {
                    error.message
                };
                return Err(UpstreamError::new(class, message).with_code(error.kind));
            }
            StreamEventWire::MessageStart { message } => {
                if self.started {
                    return Err(UpstreamError::protocol(
                        "anthropic stream sent message_start twice",
                    ));
                }
                self.started = true;
                let usage = &message.usage;
                self.usage = Usage {
                    input_tokens: usage.input_tokens,
                    output_tokens: usage.output_tokens,
                    cache_read_input_tokens: usage.cache_read_input_tokens,
                    cache_creation_input_tokens: usage.cache_creation_input_tokens,
                };
                out.push(StreamEvent::Start {
                    id: message.id,
                    model: message.model,
                });
                // The prompt's counts come first with Anthropic; an Anthropic-format
                // caller gets them in its own message_start too.
                if self.usage.input_tokens > 0
                    || self.usage.cache_read_input_tokens.is_some()
                    || self.usage.cache_creation_input_tokens.is_some()
                {
                    out.push(StreamEvent::PromptUsage {
                        usage: with_cache_in_input(Usage {
                            output_tokens: 0,
                            ..self.usage
                        }),
                    });
                }
            }
            _ if !self.started => {
                return Err(UpstreamError::protocol(
                    "anthropic stream sent content before message_start",
                ));
            }
            StreamEventWire::ContentBlockStart {
                index,
                content_block,
            } => {
                let block = match content_block {
                    ResponseBlock::Text { text } => {
                        if !text.is_empty() {
                            out.push(StreamEvent::TextDelta { text });
                        }
                        Block::Text
                    }
                    ResponseBlock::ToolUse { id, name, input } => {
                        let tool = self.next_tool_index;
                        self.next_tool_index += 1;
                        self.tool_has_arguments.push(false);
                        out.push(StreamEvent::ToolCallStart {
                            index: tool,
                            id,
                            name,
                        });
                        // Anthropic starts with `{}` and streams the input as deltas;
                        // a server that sends the whole input up front is honoured.
                        let has_input = input.as_object().is_some_and(|m| !m.is_empty())
                            || !(input.is_object() || input.is_null());
                        if has_input {
                            self.push_arguments(tool, input.to_string(), out);
                        }
                        Block::Tool(tool)
                    }
                    ResponseBlock::Thinking {
                        thinking,
                        signature,
                    } => {
                        if !thinking.is_empty() {
                            out.push(StreamEvent::ThinkingDelta { text: thinking });
                        }
                        if !signature.is_empty() {
                            out.push(StreamEvent::ThinkingSignature { signature });
                        }
                        Block::Thinking
                    }
                    ResponseBlock::RedactedThinking { data } => {
                        out.push(StreamEvent::RedactedThinking { data });
                        Block::Ignored
                    }
                    ResponseBlock::Other => Block::Ignored,
                };
                if self.blocks.insert(index, block).is_some() {
                    return Err(UpstreamError::protocol(format!(
                        "anthropic stream started content block {index} twice"
                    )));
                }
            }
            StreamEventWire::ContentBlockDelta { index, delta } => {
                let Some(block) = self.blocks.get(&index).copied() else {
                    return Err(UpstreamError::protocol(format!(
                        "anthropic stream sent a delta for unknown content block {index}"
                    )));
                };
                match (block, delta) {
                    (Block::Ignored, _) | (_, BlockDelta::Other) => {}
                    (Block::Text, BlockDelta::TextDelta { text }) => {
                        if !text.is_empty() {
                            out.push(StreamEvent::TextDelta { text });
                        }
                    }
                    (Block::Tool(tool), BlockDelta::InputJsonDelta { partial_json }) => {
                        if !partial_json.is_empty() {
                            self.push_arguments(tool, partial_json, out);
                        }
                    }
                    (Block::Thinking, BlockDelta::ThinkingDelta { thinking }) => {
                        if !thinking.is_empty() {
                            out.push(StreamEvent::ThinkingDelta { text: thinking });
                        }
                    }
                    (Block::Thinking, BlockDelta::SignatureDelta { signature }) => {
                        out.push(StreamEvent::ThinkingSignature { signature });
                    }
                    (Block::Text | Block::Tool(_), BlockDelta::ThinkingDelta { .. }) => {
                        return Err(UpstreamError::protocol(format!(
                            "anthropic stream sent a thinking delta for content block {index}, \
                             which is not a thinking block"
                        )));
                    }
                    // Citations' signatures and the like: nothing to carry.
                    (_, BlockDelta::SignatureDelta { .. }) => {}
                    (Block::Text | Block::Thinking, BlockDelta::InputJsonDelta { .. })
                    | (Block::Tool(_) | Block::Thinking, BlockDelta::TextDelta { .. }) => {
                        return Err(UpstreamError::protocol(format!(
                            "anthropic stream sent a delta of the wrong kind for content block {index}"
                        )));
                    }
                }
            }
            StreamEventWire::ContentBlockStop { index } => {
                if let Some(Block::Tool(tool)) = self.blocks.get(&index).copied() {
                    self.close_tool(tool, out);
                }
            }
            StreamEventWire::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.stop_reason.as_deref() {
                    self.stop = Some((stop_reason_from_wire(Some(reason)), delta.stop_sequence));
                }
                // message_delta usage is cumulative.
                self.usage.output_tokens = usage.output_tokens;
                if let Some(input) = usage.input_tokens {
                    self.usage.input_tokens = input;
                }
                if usage.cache_read_input_tokens.is_some() {
                    self.usage.cache_read_input_tokens = usage.cache_read_input_tokens;
                }
                if usage.cache_creation_input_tokens.is_some() {
                    self.usage.cache_creation_input_tokens = usage.cache_creation_input_tokens;
                }
            }
            StreamEventWire::MessageStop if self.stop.is_none() => {
                // Every complete message says why it stopped (`message_delta`); a stop
                // without it may follow a cut answer.
                return Err(UpstreamError::protocol(
                    "anthropic stream stopped (message_stop) without a stop reason: the answer may be incomplete",
                ));
            }
            StreamEventWire::MessageStop => self.emit_finish(out),
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), UpstreamError> {
        if self.finished {
            return Ok(());
        }
        if self.started && self.stop.is_some() {
            // The stop reason was in; only message_stop went missing.
            self.emit_finish(out);
            return Ok(());
        }
        Err(UpstreamError::protocol(
            "stream ended before the answer was complete",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_core::ErrorClass;
    use serde_json::json;

    /// Feeds `(event, data)` pairs, then EOF; returns the events or the first error.
    fn run(frames: &[serde_json::Value], eof: bool) -> Result<Vec<StreamEvent>, UpstreamError> {
        let mut decoder = AnthropicStreamDecoder::default();
        let mut out = Vec::new();
        for frame in frames {
            let name = frame["type"].as_str().map(str::to_owned);
            decoder.feed(name.as_deref(), &frame.to_string(), &mut out)?;
        }
        if eof {
            decoder.finish(&mut out)?;
        }
        Ok(out)
    }

    fn message_start() -> serde_json::Value {
        json!({"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [],
            "model": "claude-sonnet-4-5", "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 3}
        }})
    }

    #[test]
    fn text_thinking_and_tool_blocks_decode_to_neutral_events() {
        let frames = [
            message_start(),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 4, "content_block": {"type": "redacted_thinking", "data": "enc"}}),
            json!({"type": "content_block_stop", "index": 4}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hello"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "citations_delta", "citation": {}}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "toolu_b", "name": "g", "input": {}}}),
            json!({"type": "content_block_stop", "index": 3}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 42}}),
            json!({"type": "message_stop"}),
        ];
        let events = run(&frames, true).unwrap();
        assert_eq!(
            events,
            vec![
                StreamEvent::Start {
                    id: "msg_1".into(),
                    model: "claude-sonnet-4-5".into()
                },
                // The prompt's counts, as message_start gave them (25 + 3 cached).
                StreamEvent::PromptUsage {
                    usage: Usage {
                        input_tokens: 28,
                        output_tokens: 0,
                        cache_read_input_tokens: Some(3),
                        cache_creation_input_tokens: None,
                    }
                },
                StreamEvent::ThinkingDelta { text: "hmm".into() },
                StreamEvent::ThinkingSignature {
                    signature: "s".into()
                },
                StreamEvent::RedactedThinking { data: "enc".into() },
                StreamEvent::TextDelta {
                    text: "Hello".into()
                },
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "toolu_a".into(),
                    name: "f".into()
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    arguments: "{\"a\":".into()
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    arguments: "1}".into()
                },
                StreamEvent::ToolCallStart {
                    index: 1,
                    id: "toolu_b".into(),
                    name: "g".into()
                },
                // A tool called with no input sent no delta: its arguments are `{}`.
                StreamEvent::ToolCallDelta {
                    index: 1,
                    arguments: "{}".into()
                },
                StreamEvent::Finish {
                    stop_reason: StopReason::ToolUse,
                    stop_sequence: None,
                    usage: Usage {
                        // 25 uncached + 3 read from the cache.
                        input_tokens: 28,
                        output_tokens: 42,
                        cache_read_input_tokens: Some(3),
                        cache_creation_input_tokens: None,
                    },
                },
            ]
        );
    }

    #[test]
    fn message_delta_input_tokens_override_the_start_count() {
        let frames = [
            message_start(),
            json!({"type": "message_delta", "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"},
                   "usage": {"output_tokens": 5, "input_tokens": 30, "cache_creation_input_tokens": 7}}),
            json!({"type": "message_stop"}),
        ];
        let events = run(&frames, true).unwrap();
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Finish {
                stop_reason: StopReason::StopSequence,
                stop_sequence: Some("END".into()),
                usage: Usage {
                    // 30 uncached + 3 read from + 7 written to the cache.
                    input_tokens: 40,
                    output_tokens: 5,
                    cache_read_input_tokens: Some(3),
                    cache_creation_input_tokens: Some(7),
                },
            })
        );
    }

    #[test]
    fn eof_after_stop_reason_finishes_but_earlier_eof_is_an_error() {
        let complete_but_cut = [
            message_start(),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 3}}),
        ];
        let events = run(&complete_but_cut, true).unwrap();
        assert!(matches!(
            events.last(),
            Some(StreamEvent::Finish {
                stop_reason: StopReason::EndTurn,
                ..
            })
        ));

        let truncated = [
            message_start(),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        ];
        let err = run(&truncated, true).unwrap_err();
        assert_eq!(err.class, ErrorClass::Protocol);
        assert_eq!(err.message, "stream ended before the answer was complete");
        assert_eq!(run(&[], true).unwrap_err().class, ErrorClass::Protocol);

        // message_stop with no message_delta before it: no stop reason, so the text
        // before it may be cut short, and it is no answer.
        let mut stopped_without_reason = truncated.to_vec();
        stopped_without_reason.push(json!({"type": "message_stop"}));
        let err = run(&stopped_without_reason, true).unwrap_err();
        assert_eq!(err.class, ErrorClass::Protocol);
        assert!(err.message.contains("without a stop reason"), "{err:?}");
    }

    #[test]
    fn error_events_are_classified() {
        let cases = [
            ("overloaded_error", ErrorClass::Transient),
            ("api_error", ErrorClass::Transient),
            ("rate_limit_error", ErrorClass::Throttled),
            ("invalid_request_error", ErrorClass::InvalidRequest),
            ("billing_error", ErrorClass::Quota),
            ("authentication_error", ErrorClass::Auth),
        ];
        for (kind, class) in cases {
            let frames = [
                message_start(),
                json!({"type": "error", "error": {"type": kind, "message": "Overloaded"}}),
            ];
            let err = run(&frames, false).unwrap_err();
            assert_eq!(err.class, class, "{kind}");
            assert_eq!(err.code.as_deref(), Some(kind));
            assert_eq!(err.message, "Overloaded");
        }
    }

    #[test]
    fn malformed_and_out_of_order_events_are_protocol_errors() {
        let bad: [&[serde_json::Value]; 4] = [
            &[
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ],
            &[
                message_start(),
                json!({"type": "content_block_delta", "index": 9, "delta": {"type": "text_delta", "text": "x"}}),
            ],
            &[
                message_start(),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}),
            ],
            &[message_start(), message_start()],
        ];
        for frames in bad {
            assert_eq!(
                run(frames, false).unwrap_err().class,
                ErrorClass::Protocol,
                "{frames:?}"
            );
        }
        let mut decoder = AnthropicStreamDecoder::default();
        let err = decoder
            .feed(Some("message_start"), "{not json", &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Protocol);
    }

    #[test]
    fn unknown_events_and_trailing_events_are_ignored() {
        let frames = [
            json!({"type": "ping"}),
            message_start(),
            json!({"type": "some_future_event", "data": 1}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 1}}),
            json!({"type": "message_stop"}),
            json!({"type": "ping"}),
        ];
        let events = run(&frames, true).unwrap();
        assert_eq!(events.len(), 3);
        assert!(matches!(events[1], StreamEvent::PromptUsage { .. }));
        assert!(matches!(events[2], StreamEvent::Finish { .. }));
    }

    #[test]
    fn tool_input_sent_whole_in_content_block_start_becomes_a_delta() {
        let frames = [
            message_start(),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {"x": 1}}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 1}}),
            json!({"type": "message_stop"}),
        ];
        let events = run(&frames, true).unwrap();
        assert_eq!(
            events[3],
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"x\":1}".into()
            }
        );
    }
}
