//! Wire structs of the Anthropic Messages API (`POST /v1/messages`, version
//! `2023-06-01`), checked against the API reference and the official Python SDK
//! (`anthropic.types`).
//!
//! - Request structs (`MessagesRequest` and below) are borrowed and serialize only:
//!   the client side builds them from a neutral request. The serve side decodes
//!   requests by hand (see `serve.rs`) so that every error can name its field.
//! - Response, stream-event and error structs serialize and deserialize: the client
//!   reads them from Anthropic, the serve side (ingress, mock) writes them. Unknown
//!   fields are ignored and unknown block/delta/event types decode to an `Other`
//!   variant, because Anthropic adds new ones over time.

use std::borrow::Cow;

use bulwark_core::Role;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The API version Bulwark speaks (`anthropic-version` header).
pub const API_VERSION: &str = "2023-06-01";

// ---------------------------------------------------------------------------
// Request (encode side)
// ---------------------------------------------------------------------------

/// The body of `POST /v1/messages`.
#[derive(Debug, Serialize)]
pub struct MessagesRequest<'a> {
    pub model: &'a str,
    pub max_tokens: u32,
    pub messages: Vec<MessageParam<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub system: Vec<TextBlockParam<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolParam<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoiceParam<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataParam<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Prompt caching for the whole request (see `ChatRequest::cache_control`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<&'a Value>,
    /// Structured output and effort.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_config: Option<OutputConfig<'a>>,
    /// Extended thinking, as the caller gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<&'a Value>,
    /// Context editing (a beta), as the caller gave it (less the edits that need
    /// reasoning, when it goes without).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_management: Option<Cow<'a, Value>>,
}

/// `{"format": {"type": "json_schema", "schema": …}, "effort": …}`.
#[derive(Debug, Serialize)]
pub struct OutputConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<OutputFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effort: Option<&'a Value>,
}

#[derive(Debug, Serialize)]
pub struct OutputFormat {
    /// Always `json_schema`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub schema: Value,
}

/// One conversation turn. `content` is always the block-array form.
#[derive(Debug, Serialize)]
pub struct MessageParam<'a> {
    pub role: Role,
    pub content: Vec<ContentBlockParam<'a>>,
}

/// `{"type": "text", "text": ...}` (system prompt pieces).
#[derive(Debug, Serialize)]
pub struct TextBlockParam<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<&'a Value>,
}

impl<'a> TextBlockParam<'a> {
    pub fn new(text: &'a str, cache_control: Option<&'a Value>) -> Self {
        TextBlockParam {
            kind: "text",
            text,
            cache_control,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlockParam<'a> {
    Text {
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    Image {
        source: ImageSourceParam<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    ToolUse {
        id: Cow<'a, str>,
        name: &'a str,
        input: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    ToolResult {
        tool_use_id: Cow<'a, str>,
        /// Text and image blocks only. Optional in the API: omitted when empty.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        content: Vec<ContentBlockParam<'a>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
    },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSourceParam<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

/// A custom (client) tool.
#[derive(Debug, Serialize)]
pub struct ToolParam<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub input_schema: Cow<'a, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<&'a Value>,
    /// Strict tool use: arguments that always match the schema.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoiceParam<'a> {
    Auto {
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        disable_parallel_tool_use: bool,
    },
    Any {
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        disable_parallel_tool_use: bool,
    },
    Tool {
        name: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        disable_parallel_tool_use: bool,
    },
    None,
}

#[derive(Debug, Serialize)]
pub struct MetadataParam<'a> {
    pub user_id: &'a str,
}

// ---------------------------------------------------------------------------
// Response (both directions)
// ---------------------------------------------------------------------------

/// A `message` object: the non-streaming response, and the `message` of a
/// `message_start` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageResponse {
    pub id: String,
    /// Always `"message"`.
    #[serde(rename = "type", default = "message_type")]
    pub kind: String,
    /// Always `"assistant"`.
    #[serde(default = "assistant_role")]
    pub role: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub content: Vec<ResponseBlock>,
    /// `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, `pause_turn`, `refusal`,
    /// `model_context_window_exceeded`; `null` in `message_start`. Kept as a string so
    /// a new reason never fails decoding.
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
    #[serde(default)]
    pub usage: UsageWire,
}

fn message_type() -> String {
    "message".to_string()
}

fn assistant_role() -> String {
    "assistant".to_string()
}

/// A response content block. Text, client tool calls and the model's reasoning
/// carry meaning for Bulwark; server-tool blocks and newer kinds decode to `Other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// `{"type": "thinking", "thinking", "signature"}`; in `content_block_start`
    /// both are empty and arrive in deltas.
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    RedactedThinking {
        #[serde(default)]
        data: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UsageWire {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
}

// ---------------------------------------------------------------------------
// Stream events (both directions)
// ---------------------------------------------------------------------------

/// One streamed event. The SSE `event:` name always equals `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEventWire {
    MessageStart {
        message: MessageResponse,
    },
    ContentBlockStart {
        index: u32,
        content_block: ResponseBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: DeltaUsage,
    },
    MessageStop,
    Ping,
    Error {
        error: ErrorObject,
    },
    /// An event type added after this code was written: ignored.
    #[serde(other)]
    Unknown,
}

impl StreamEventWire {
    /// The SSE `event:` name of this event (equal to its JSON `type`).
    pub fn name(&self) -> &'static str {
        match self {
            StreamEventWire::MessageStart { .. } => "message_start",
            StreamEventWire::ContentBlockStart { .. } => "content_block_start",
            StreamEventWire::ContentBlockDelta { .. } => "content_block_delta",
            StreamEventWire::ContentBlockStop { .. } => "content_block_stop",
            StreamEventWire::MessageDelta { .. } => "message_delta",
            StreamEventWire::MessageStop => "message_stop",
            StreamEventWire::Ping => "ping",
            StreamEventWire::Error { .. } => "error",
            StreamEventWire::Unknown => "unknown",
        }
    }
}

/// The `delta` of a `content_block_delta` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    SignatureDelta {
        signature: String,
    },
    /// `citations_delta` and anything newer.
    #[serde(other)]
    Other,
}

/// The `delta` of a `message_delta` event.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MessageDeltaBody {
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
}

/// The `usage` of a `message_delta` event: cumulative counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeltaUsage {
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
}

// ---------------------------------------------------------------------------
// Errors (both directions)
// ---------------------------------------------------------------------------

/// `{"type": "error", "error": {"type", "message"}, "request_id"?}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Always `"error"`.
    #[serde(rename = "type", default = "error_literal")]
    pub kind: String,
    pub error: ErrorObject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ErrorBody {
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody {
            kind: error_literal(),
            error: ErrorObject {
                kind: error_type.into(),
                message: message.into(),
                details: None,
            },
            request_id: None,
        }
    }
}

fn error_literal() -> String {
    "error".to_string()
}

/// `{"type": "overloaded_error", "message": "Overloaded"}`. Types in the reference:
/// `invalid_request_error` (400 and other 4xx), `authentication_error` (401),
/// `billing_error` (402), `permission_error` (403), `not_found_error` (404),
/// `request_too_large` (413), `rate_limit_error` (429), `api_error` (500),
/// `timeout_error` (504), `overloaded_error` (529).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub message: String,
    /// A machine-readable reason beside the type (`{"error_code": …}`), which some
    /// SDK helpers act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_blocks_deltas_and_events_decode_to_fallbacks() {
        let block: ResponseBlock = serde_json::from_value(
            json!({"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}),
        )
        .unwrap();
        assert_eq!(block, ResponseBlock::Other);
        let delta: BlockDelta =
            serde_json::from_value(json!({"type": "citations_delta", "citation": {}})).unwrap();
        assert_eq!(delta, BlockDelta::Other);
        let event: StreamEventWire =
            serde_json::from_value(json!({"type": "brand_new_event", "x": 1})).unwrap();
        assert_eq!(event, StreamEventWire::Unknown);
    }

    #[test]
    fn tool_choice_and_tool_result_serialize_in_reference_shape() {
        let v = serde_json::to_value(ToolChoiceParam::Tool {
            name: "f",
            disable_parallel_tool_use: true,
        })
        .unwrap();
        assert_eq!(
            v,
            json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            serde_json::to_value(ToolChoiceParam::None).unwrap(),
            json!({"type": "none"})
        );
        let v = serde_json::to_value(ContentBlockParam::ToolResult {
            tool_use_id: "t".into(),
            content: vec![],
            is_error: false,
            cache_control: None,
        })
        .unwrap();
        assert_eq!(v, json!({"type": "tool_result", "tool_use_id": "t"}));
    }

    #[test]
    fn error_body_round_trips() {
        let body = ErrorBody::new("overloaded_error", "Overloaded");
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        );
        let back: ErrorBody = serde_json::from_value(v).unwrap();
        assert_eq!(back, body);
    }
}
