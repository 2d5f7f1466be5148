//! Neutral stream events.
//!
//! Contract for every stream decoder (upstream → neutral):
//! - exactly one `Start` comes first;
//! - then any number of `TextDelta`, `ToolCallStart`, `ToolCallDelta`
//!   (a `ToolCallStart` for index `i` precedes every `ToolCallDelta` for `i`;
//!   tool-call indexes count from 0 in the order calls start);
//! - exactly one `Finish` comes last, carrying the accumulated usage.
//!
//! A stream that ends without the upstream's own end signal is an error, never
//! a `Finish`: a truncated answer must not look complete.

use serde::{Deserialize, Serialize};

use crate::{StopReason, Usage};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    Start {
        id: String,
        model: String,
    },
    TextDelta {
        text: String,
    },
    /// A fragment of the model's refusal message: OpenAI streams it in `delta.refusal`
    /// (structured outputs), apart from the content. Formats without such a field
    /// carry it as text; the answer's stop reason is then `Refusal`.
    RefusalDelta {
        text: String,
    },
    ToolCallStart {
        index: u32,
        id: String,
        name: String,
    },
    /// A fragment of the JSON arguments string of tool call `index`.
    ToolCallDelta {
        index: u32,
        arguments: String,
    },
    Finish {
        stop_reason: StopReason,
        stop_sequence: Option<String>,
        usage: Usage,
    },
    /// A fragment of the model's reasoning (Anthropic `thinking_delta`). A
    /// `ThinkingDelta` after anything but another `ThinkingDelta` begins a new
    /// reasoning block.
    ThinkingDelta {
        text: String,
    },
    /// The signature that ends the current reasoning block (Anthropic
    /// `signature_delta`).
    ThinkingSignature {
        signature: String,
    },
    /// A whole block of encrypted reasoning (Anthropic `redacted_thinking`).
    RedactedThinking {
        data: String,
    },
    /// The prompt's token counts, when the upstream reports them before the answer
    /// (Anthropic's `message_start`); only an Anthropic-format caller has a place
    /// for them there. `Finish` still carries the whole usage.
    PromptUsage {
        usage: Usage,
    },
}

impl StreamEvent {
    /// True for events that carry answer content (the streaming commit point is the
    /// first of these to reach the caller; see [`StreamEvent::is_reasoning`]).
    pub fn is_content(&self) -> bool {
        matches!(
            self,
            StreamEvent::TextDelta { .. }
                | StreamEvent::RefusalDelta { .. }
                | StreamEvent::ToolCallStart { .. }
                | StreamEvent::ToolCallDelta { .. }
                | StreamEvent::ThinkingDelta { .. }
                | StreamEvent::ThinkingSignature { .. }
                | StreamEvent::RedactedThinking { .. }
        )
    }

    /// True for the model's reasoning (content that only an Anthropic-format caller
    /// has a place for).
    pub fn is_reasoning(&self) -> bool {
        matches!(
            self,
            StreamEvent::ThinkingDelta { .. }
                | StreamEvent::ThinkingSignature { .. }
                | StreamEvent::RedactedThinking { .. }
        )
    }
}

/// One server-sent event, ready to write: `event:` line (optional) and `data:` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseFrame {
    pub event: Option<&'static str>,
    pub data: String,
}

impl SseFrame {
    pub fn data(data: impl Into<String>) -> Self {
        SseFrame {
            event: None,
            data: data.into(),
        }
    }

    pub fn named(event: &'static str, data: impl Into<String>) -> Self {
        SseFrame {
            event: Some(event),
            data: data.into(),
        }
    }

    /// The frame as it goes on the wire, ending with the blank line.
    pub fn to_wire(&self) -> String {
        let mut out = String::with_capacity(self.data.len() + 32);
        self.write_to(&mut out);
        out
    }

    /// Appends the frame's wire form to `out` (what [`SseFrame::to_wire`] returns).
    pub fn write_to(&self, out: &mut String) {
        if let Some(event) = self.event {
            out.push_str("event: ");
            out.push_str(event);
            out.push('\n');
        }
        for line in self.data.split('\n') {
            out.push_str("data: ");
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
}

/// Accumulates a stream of events into a complete response (used to answer a
/// non-streaming caller from a streamed upstream, and by the journal).
#[derive(Debug, Default)]
pub struct StreamAccumulator {
    pub id: String,
    pub model: String,
    text: String,
    blocks: Vec<crate::ContentBlock>,
    /// Per neutral tool-call index: its block's position in `blocks` (where the call
    /// started, so that the answer keeps the upstream's order of reasoning, text and
    /// calls) and its arguments so far (fragments may come interleaved).
    tool_calls: Vec<Option<(usize, String)>>,
    /// The reasoning block being read: its text and, once it ended, its signature.
    thinking: Option<(String, Option<String>)>,
    pub finish: Option<(StopReason, Option<String>, Usage)>,
}

impl StreamAccumulator {
    pub fn push(&mut self, event: &StreamEvent) {
        match event {
            StreamEvent::Start { id, model } => {
                self.id.clone_from(id);
                self.model.clone_from(model);
            }
            StreamEvent::TextDelta { text } | StreamEvent::RefusalDelta { text } => {
                self.flush_thinking();
                self.text.push_str(text)
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.flush_thinking();
                self.flush_text();
                let i = *index as usize;
                if self.tool_calls.len() <= i {
                    self.tool_calls.resize(i + 1, None);
                }
                // The input is filled in at the end, from the arguments' text.
                self.tool_calls[i] = Some((self.blocks.len(), String::new()));
                self.blocks.push(crate::ContentBlock::ToolUse {
                    id: id.clone(),
                    name: name.clone(),
                    input: serde_json::Value::Null,
                });
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if let Some(Some((_, args))) = self.tool_calls.get_mut(*index as usize) {
                    args.push_str(arguments);
                }
            }
            StreamEvent::Finish {
                stop_reason,
                stop_sequence,
                usage,
            } => self.finish = Some((*stop_reason, stop_sequence.clone(), *usage)),
            StreamEvent::ThinkingDelta { text } => {
                if !matches!(self.thinking, Some((_, None))) {
                    self.flush_thinking();
                    self.flush_text();
                    self.thinking = Some((String::new(), None));
                }
                if let Some((thinking, _)) = &mut self.thinking {
                    thinking.push_str(text);
                }
            }
            StreamEvent::ThinkingSignature { signature } => {
                match &mut self.thinking {
                    Some((_, sig @ None)) => *sig = Some(signature.clone()),
                    _ => {
                        self.flush_thinking();
                        self.flush_text();
                        self.thinking = Some((String::new(), Some(signature.clone())));
                    }
                }
                self.flush_thinking();
            }
            StreamEvent::RedactedThinking { data } => {
                self.flush_thinking();
                self.flush_text();
                self.blocks
                    .push(crate::ContentBlock::RedactedThinking { data: data.clone() });
            }
            StreamEvent::PromptUsage { .. } => {}
        }
    }

    fn flush_thinking(&mut self) {
        if let Some((thinking, signature)) = self.thinking.take() {
            self.blocks.push(crate::ContentBlock::Thinking {
                thinking,
                signature: signature.unwrap_or_default(),
            });
        }
    }

    fn flush_text(&mut self) {
        if !self.text.is_empty() {
            self.blocks.push(crate::ContentBlock::Text {
                text: std::mem::take(&mut self.text),
            });
        }
    }

    /// The complete response, or `None` when no `Finish` was seen.
    pub fn into_response(mut self) -> Option<crate::ChatResponse> {
        let (stop_reason, stop_sequence, usage) = self.finish.take()?;
        self.flush_thinking();
        self.flush_text();
        for (at, args) in std::mem::take(&mut self.tool_calls).into_iter().flatten() {
            if let Some(crate::ContentBlock::ToolUse { input, .. }) = self.blocks.get_mut(at) {
                *input = if args.trim().is_empty() {
                    serde_json::Value::Object(Default::default())
                } else {
                    serde_json::from_str(&args).unwrap_or(serde_json::Value::String(args))
                };
            }
        }
        Some(crate::ChatResponse {
            id: self.id,
            model: self.model,
            content: self.blocks,
            stop_reason,
            stop_sequence,
            usage,
        })
    }
}

impl crate::ChatResponse {
    /// The answer as the stream of events that would have produced it: `Start`, the
    /// text and tool calls in order, `Finish`. Used to replay a stored answer to a
    /// streaming caller.
    pub fn to_events(&self) -> Vec<StreamEvent> {
        let mut events = vec![StreamEvent::Start {
            id: self.id.clone(),
            model: self.model.clone(),
        }];
        let mut tool_index = 0u32;
        for block in &self.content {
            match block {
                // A refusal's text is its refusal message (as the streamed original
                // carried it, when that was OpenAI's).
                crate::ContentBlock::Text { text } if self.stop_reason == StopReason::Refusal => {
                    events.push(StreamEvent::RefusalDelta { text: text.clone() })
                }
                crate::ContentBlock::Text { text } => {
                    events.push(StreamEvent::TextDelta { text: text.clone() })
                }
                crate::ContentBlock::ToolUse { id, name, input } => {
                    events.push(StreamEvent::ToolCallStart {
                        index: tool_index,
                        id: id.clone(),
                        name: name.clone(),
                    });
                    events.push(StreamEvent::ToolCallDelta {
                        index: tool_index,
                        arguments: input.to_string(),
                    });
                    tool_index += 1;
                }
                crate::ContentBlock::Thinking {
                    thinking,
                    signature,
                } => {
                    events.push(StreamEvent::ThinkingDelta {
                        text: thinking.clone(),
                    });
                    // Reasoning from a provider that does not sign it has no signature.
                    if !signature.is_empty() {
                        events.push(StreamEvent::ThinkingSignature {
                            signature: signature.clone(),
                        });
                    }
                }
                crate::ContentBlock::RedactedThinking { data } => {
                    events.push(StreamEvent::RedactedThinking { data: data.clone() })
                }
                crate::ContentBlock::Image { .. } | crate::ContentBlock::ToolResult { .. } => {}
            }
        }
        events.push(StreamEvent::Finish {
            stop_reason: self.stop_reason,
            stop_sequence: self.stop_sequence.clone(),
            usage: self.usage,
        });
        events
    }
}

#[cfg(test)]
mod replay_tests {
    use super::*;
    use crate::{ChatResponse, ContentBlock, StopReason, Usage};

    #[test]
    fn events_of_a_response_accumulate_back_to_it() {
        let response = ChatResponse {
            id: "msg_1".into(),
            model: "m".into(),
            content: vec![
                ContentBlock::Thinking {
                    thinking: "The user wants Paris.".into(),
                    signature: "sig-1".into(),
                },
                ContentBlock::RedactedThinking {
                    data: "opaque".into(),
                },
                ContentBlock::Text {
                    text: "Let me look.".into(),
                },
                ContentBlock::ToolUse {
                    id: "call_1".into(),
                    name: "weather".into(),
                    input: serde_json::json!({"city": "Paris"}),
                },
                // Interleaved reasoning between calls keeps its place: Anthropic
                // refuses reasoning sent back out of order.
                ContentBlock::Thinking {
                    thinking: "And Lyon?".into(),
                    signature: "sig-2".into(),
                },
                ContentBlock::ToolUse {
                    id: "call_2".into(),
                    name: "weather".into(),
                    input: serde_json::json!({"city": "Lyon"}),
                },
                ContentBlock::Text {
                    text: "Both asked.".into(),
                },
            ],
            stop_reason: StopReason::ToolUse,
            stop_sequence: None,
            usage: Usage {
                input_tokens: 3,
                output_tokens: 5,
                ..Usage::default()
            },
        };
        let mut acc = StreamAccumulator::default();
        for event in response.to_events() {
            acc.push(&event);
        }
        assert_eq!(acc.into_response(), Some(response));
    }
}
