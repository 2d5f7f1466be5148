//! The neutral chat request and response.

use serde::{Deserialize, Serialize};

/// One chat request, independent of the wire format it arrived in.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model the caller named: a route, or `provider/model`.
    pub model: String,
    /// System prompt pieces, in order. Each becomes one system block/part/message upstream.
    pub system: Vec<String>,
    /// The conversation turns. Roles alternate loosely; adapters merge where they must.
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// `Some(false)` asks the model for at most one tool call per turn.
    pub parallel_tool_calls: Option<bool>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Vec<String>,
    pub response_format: Option<ResponseFormat>,
    /// An opaque end-user id (OpenAI `user`, Anthropic `metadata.user_id`).
    pub user: Option<String>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`: only changes the OpenAI egress encoding.
    pub include_usage: bool,
    /// The prompt-cache breakpoints (Anthropic `cache_control`) an Anthropic-format
    /// caller set. Anthropic caches a prompt only up to the breakpoints it is given,
    /// so they go on to Anthropic upstreams where they were; the other providers
    /// cache on their own and have no use for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_control: Vec<CacheBreakpoint>,
    /// The `anthropic-beta` header of an Anthropic-format caller (comma-separated
    /// beta names): sent on to Anthropic upstreams, which some betas need (a longer
    /// context window, more output); meaningless to the other providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic_beta: Option<String>,
    /// OpenAI's `prompt_cache_key`: requests sharing it are routed to the same prompt
    /// cache. Sent on to OpenAI upstreams (not to OpenAI-compatible servers, which may
    /// refuse a field they do not know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache_key: Option<String>,
    /// OpenAI's `reasoning_effort` (`minimal` … `high`), for its reasoning models: sent
    /// on to OpenAI upstreams as given. The other providers answer without it, as
    /// OpenAI's upstreams answer without Anthropic's `thinking`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    /// OpenAI's `verbosity` (`low`, `medium`, `high`): sent on to OpenAI upstreams only,
    /// like `reasoning_effort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<String>,
    /// Anthropic's `thinking` (`{"type": "enabled", "budget_tokens": …}`,
    /// `{"type": "adaptive"}`, `{"type": "disabled"}`, or a newer kind), as the caller
    /// gave it (leaving it out is not the same as disabling it on models that think by
    /// default). Sent on to Anthropic upstreams. The other providers are asked for
    /// the answer without it: how a model reasons is not the answer's shape, and
    /// their switches for it (OpenAI's `reasoning_effort`) are refused by the models
    /// that have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<serde_json::Value>,
    /// Anthropic's `context_management` (context editing, a beta), as given: sent on
    /// to Anthropic upstreams only, like `thinking`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_management: Option<serde_json::Value>,
    /// Anthropic's `output_config.effort`, as given: sent on to Anthropic upstreams
    /// only, like `thinking`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<serde_json::Value>,
}

/// One `cache_control` of a request: where it sat, and its value as given
/// (`{"type": "ephemeral"}`, with a `ttl` or not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheBreakpoint {
    pub at: CachePoint,
    pub control: serde_json::Value,
}

/// Where a [`CacheBreakpoint`] sits, by index into the neutral request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CachePoint {
    /// The request's own top-level `cache_control`.
    Request,
    /// `system[index]`.
    System(usize),
    /// `tools[index]`.
    Tool(usize),
    /// `messages[message].content[block]`.
    Block { message: usize, block: usize },
    /// `messages[message].content[block].content[part]`: a block inside a tool result.
    Part {
        message: usize,
        block: usize,
        part: usize,
    },
}

impl ChatRequest {
    /// Whether the caller asked Anthropic for reasoning (`thinking` other than
    /// `disabled`).
    pub fn thinking_on(&self) -> bool {
        self.thinking.as_ref().is_some_and(|thinking| {
            thinking.get("type").and_then(serde_json::Value::as_str) != Some("disabled")
        })
    }

    /// `context_management` for a request sent without reasoning: its edits that
    /// clear reasoning (`clear_thinking_*`, which need reasoning on) left out, the
    /// others (`clear_tool_uses_*`) kept; `None` when no edit is left.
    pub fn context_management_without_thinking(&self) -> Option<serde_json::Value> {
        let mut management = self.context_management.clone()?;
        if let Some(edits) = management
            .get_mut("edits")
            .and_then(serde_json::Value::as_array_mut)
        {
            edits.retain(|edit| {
                !edit
                    .get("type")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|kind| kind.starts_with("clear_thinking"))
            });
            if edits.is_empty() {
                return None;
            }
        }
        Some(management)
    }

    /// The same request to be answered without reasoning (a prefill, which Anthropic
    /// takes only with reasoning off): `thinking` left out unless it was off already,
    /// and the edits that need it with it.
    pub fn without_thinking(mut self) -> Self {
        if self.thinking_on() {
            self.context_management = self.context_management_without_thinking();
            self.thinking = None;
        }
        self
    }

    /// The `cache_control` value set at `at`, if any.
    pub fn cache_control_at(&self, at: CachePoint) -> Option<&serde_json::Value> {
        self.cache_control
            .iter()
            .find(|b| b.at == at)
            .map(|b| &b.control)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<ContentBlock>,
}

impl Message {
    pub fn user_text(text: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: vec![ContentBlock::Text { text: text.into() }],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
        /// OpenAI's `detail` (`low`, `high`, `auto`): how finely an OpenAI model looks,
        /// and so how many tokens the image costs. Only OpenAI upstreams take it; the
        /// others leave it out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A tool call made by the assistant. `input` is the parsed JSON arguments object.
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    /// The result of a tool call, sent back in a user turn.
    ToolResult {
        tool_use_id: String,
        content: Vec<ContentBlock>,
        is_error: bool,
    },
    /// The model's reasoning (Anthropic extended thinking), with the signature that
    /// lets Anthropic check it when the caller sends it back in a later turn. Only
    /// Anthropic upstreams produce it or take it back; the others leave it out.
    Thinking {
        thinking: String,
        signature: String,
    },
    /// Reasoning Anthropic encrypted (`redacted_thinking`), carried as given.
    RedactedThinking {
        data: String,
    },
}

impl ContentBlock {
    /// Anthropic's reasoning blocks, which only Anthropic upstreams take back.
    pub fn is_thinking(&self) -> bool {
        matches!(
            self,
            ContentBlock::Thinking { .. } | ContentBlock::RedactedThinking { .. }
        )
    }

    /// Reasoning Anthropic wrote and signed: a reasoning block with a signature, or an
    /// encrypted one. Reasoning an OpenAI-compatible server streamed (vLLM, OpenRouter)
    /// carries no signature, and Anthropic refuses it.
    pub fn is_signed_thinking(&self) -> bool {
        self.is_thinking() && !self.is_unsigned_thinking()
    }

    /// Reasoning with no signature (see [`ContentBlock::is_signed_thinking`]).
    pub fn is_unsigned_thinking(&self) -> bool {
        matches!(self, ContentBlock::Thinking { signature, .. } if signature.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageSource {
    /// A remote image the provider fetches itself.
    Url { url: String },
    /// Inline bytes, base64-encoded (no `data:` prefix).
    Base64 { media_type: String, data: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
    /// Strict tool use: the provider guarantees arguments that match the schema
    /// (what structured-output clients rely on). Sent to OpenAI, OpenAI-compatible
    /// and Anthropic upstreams; Gemini has no such switch.
    #[serde(default)]
    pub strict: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    Auto,
    None,
    /// The model must call some tool (OpenAI `required`, Anthropic `any`, Gemini `ANY`).
    Required,
    /// The model must call this tool.
    Tool {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: serde_json::Value,
        strict: bool,
    },
}

/// One complete (non-streamed) answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The upstream's own id for the answer (egress encoders may use their own).
    pub id: String,
    /// The model that actually served, as the upstream named it.
    pub model: String,
    /// Text and ToolUse blocks, in the order the model produced them.
    pub content: Vec<ContentBlock>,
    pub stop_reason: StopReason,
    /// The stop sequence that matched, when the upstream says which.
    pub stop_sequence: Option<String>,
    pub usage: Usage,
}

impl ChatResponse {
    /// All text blocks joined.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for block in &self.content {
            if let ContentBlock::Text { text } = block {
                out.push_str(text);
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    /// The provider's safety system stopped the answer (OpenAI `content_filter`,
    /// Anthropic `refusal`, Gemini `SAFETY` and its kin); any text before it stays.
    ContentFilter,
    /// The answer is the model's refusal message (OpenAI's `refusal` field).
    Refusal,
    /// Anything else the upstream said; encoded as the format's plain stop.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Every prompt token, those read from or written to the provider's prompt cache
    /// included, as OpenAI's `prompt_tokens` and Gemini's `promptTokenCount` count
    /// them. Anthropic reports cache reads and writes apart from its
    /// `input_tokens`; its adapter adds them in when reading and takes them out
    /// when writing.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of `input_tokens`, those served from the provider's prompt cache.
    pub cache_read_input_tokens: Option<u64>,
    /// Of `input_tokens`, those written to the provider's prompt cache (Anthropic).
    pub cache_creation_input_tokens: Option<u64>,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn without_thinking_leaves_out_reasoning_and_what_needs_it_only() {
        let req = ChatRequest {
            thinking: Some(json!({"type": "adaptive"})),
            context_management: Some(json!({"edits": [
                {"type": "clear_thinking_20251015"}, {"type": "clear_tool_uses_20250919"}
            ]})),
            effort: Some(json!("high")),
            ..ChatRequest::default()
        };
        assert!(req.thinking_on());
        let plain = req.without_thinking();
        assert_eq!(plain.thinking, None);
        assert_eq!(
            plain.context_management,
            Some(json!({"edits": [{"type": "clear_tool_uses_20250919"}]}))
        );
        assert_eq!(plain.effort, Some(json!("high")));
        // Off already: kept as given (absent is not disabled on every model).
        let off = ChatRequest {
            thinking: Some(json!({"type": "disabled"})),
            ..ChatRequest::default()
        };
        assert!(!off.thinking_on());
        assert_eq!(off.clone().without_thinking(), off);
    }
}
