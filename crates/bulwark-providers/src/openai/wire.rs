//! Wire structs of the OpenAI Chat Completions API (`POST /v1/chat/completions`),
//! checked against the API reference and the official `openai` Python SDK types
//! (`openai.types.chat.*`).
//!
//! - The request ([`ChatCompletionRequest`]) is serialize-only and borrows from the
//!   neutral request; it is what the client side sends. The serve side decodes requests
//!   by hand (see `serve_request.rs`) so that every error names its field.
//! - Responses, chunks and error bodies derive both directions: the client side decodes
//!   them (unknown fields ignored, optional fields defaulted, since OpenAI-compatible
//!   servers differ in what they send) and the serve side and the mock encode them.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Request (client → upstream)
// ---------------------------------------------------------------------------

/// The body of `POST {base_url}/chat/completions`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionRequest<'a> {
    pub model: &'a str,
    pub messages: Vec<RequestMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDefinition<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoiceWire<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// The current name of the output limit (plain OpenAI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// The legacy name, which most OpenAI-compatible servers still expect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Not an OpenAI parameter; vLLM, Ollama, OpenRouter and llama.cpp accept it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormatWire<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_cache_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
}

/// One message of the request, tagged by `role`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum RequestMessage<'a> {
    System {
        content: &'a str,
    },
    User {
        content: UserContent<'a>,
    },
    Assistant {
        /// `null` when the turn is only tool calls (what the SDK itself sends back).
        content: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: String,
    },
}

/// A user message's content: a plain string when it is one text, else parts.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum UserContent<'a> {
    Text(&'a str),
    Parts(Vec<ContentPart<'a>>),
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrl<'a> },
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageUrl<'a> {
    /// An `https:` URL or a `data:{media_type};base64,{data}` URL.
    pub url: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
}

/// A tool call in an assistant message (request side) or a response message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall<'a> {
    pub id: Cow<'a, str>,
    /// Always `"function"`.
    #[serde(rename = "type")]
    pub kind: Cow<'a, str>,
    pub function: FunctionCall<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall<'a> {
    pub name: Cow<'a, str>,
    /// The arguments object as a JSON string.
    pub arguments: Cow<'a, str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ToolDefinition<'a> {
    /// Always `"function"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionDefinition<'a>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FunctionDefinition<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub parameters: &'a Value,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
}

/// `"auto" | "none" | "required" | {"type": "function", "function": {"name"}}`
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ToolChoiceWire<'a> {
    Mode(&'static str),
    Named {
        #[serde(rename = "type")]
        kind: &'static str,
        function: NamedFunction<'a>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct NamedFunction<'a> {
    pub name: &'a str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormatWire<'a> {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaWire<'a> },
}

#[derive(Debug, Clone, Serialize)]
pub struct JsonSchemaWire<'a> {
    pub name: &'a str,
    pub schema: &'a Value,
    pub strict: bool,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct StreamOptions {
    pub include_usage: bool,
}

// ---------------------------------------------------------------------------
// Response (`chat.completion`)
// ---------------------------------------------------------------------------

/// A `chat.completion` object. Decoding is lenient: compatible servers omit fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    #[serde(default)]
    pub id: String,
    #[serde(default = "completion_object")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub choices: Vec<Choice>,
    /// Encoded as `null` when unknown, as OpenAI does.
    #[serde(default)]
    pub usage: Option<CompletionUsage>,
}

fn completion_object() -> String {
    "chat.completion".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub index: u32,
    pub message: ResponseMessage,
    /// Always `null` from Bulwark (log probabilities are not supported).
    #[serde(default)]
    pub logprobs: Option<Value>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Why the answer failed, with finish reason `error` (OpenRouter); read only.
    #[serde(default, skip_serializing)]
    pub error: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    #[serde(default = "assistant_role")]
    pub role: String,
    /// A string, or `null` when the answer is only tool calls. Some compatible servers
    /// send an array of text parts; that is accepted on decode.
    #[serde(default)]
    pub content: Option<Value>,
    /// The model's refusal message (structured outputs), `null` otherwise.
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall<'static>>>,
    /// The model's reasoning from an OpenAI-compatible server (`reasoning`, or
    /// DeepSeek's `reasoning_content`); read, never written.
    #[serde(default, skip_serializing)]
    pub reasoning: Option<String>,
    #[serde(default, skip_serializing)]
    pub reasoning_content: Option<String>,
}

fn assistant_role() -> String {
    "assistant".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CompletionUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
}

// ---------------------------------------------------------------------------
// Stream chunks (`chat.completion.chunk`)
// ---------------------------------------------------------------------------

/// One streamed chunk. `usage` is absent unless the request set
/// `stream_options.include_usage`; then it is `null` on every chunk but the last,
/// which has `choices: []` and the usage (`Some(None)` encodes as `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    #[serde(default)]
    pub id: String,
    #[serde(default = "chunk_object")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub choices: Vec<ChunkChoice>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_or_null"
    )]
    pub usage: Option<Option<CompletionUsage>>,
}

fn chunk_object() -> String {
    "chat.completion.chunk".to_string()
}

/// Reads `null` as the type's default (some compatible servers send `"choices": null`).
fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(de).map(Option::unwrap_or_default)
}

/// Keeps a present-but-`null` field apart from an absent one.
fn present_or_null<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default, deserialize_with = "null_as_default")]
    pub delta: Delta,
    #[serde(default)]
    pub logprobs: Option<Value>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// The model's reasoning, as vLLM, OpenRouter and Ollama stream it (OpenAI's own
    /// API streams none); written only by an encoder made `with_reasoning`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
}

/// A `chat.completion.chunk` as Bulwark's stream decoder reads it: only the fields it
/// uses, with the strings borrowed from the payload (when they hold no escapes), so a
/// chunk costs no allocation beyond its list of choices. [`ChatCompletionChunk`] is
/// the owned shape Bulwark serves.
#[derive(Debug, Deserialize)]
pub struct ChunkIn<'a> {
    /// Absent or `null` on some compatible servers' chunks.
    #[serde(default, borrow, deserialize_with = "optional_borrowed")]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "optional_borrowed")]
    pub model: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "null_as_default")]
    pub choices: Vec<ChoiceIn<'a>>,
    /// `null` on all but the last chunk when the usage was asked for.
    #[serde(default)]
    pub usage: Option<CompletionUsage>,
}

/// One choice of a [`ChunkIn`].
#[derive(Debug, Deserialize)]
pub struct ChoiceIn<'a> {
    #[serde(default)]
    pub index: u32,
    #[serde(default, borrow, deserialize_with = "null_as_default")]
    pub delta: DeltaIn<'a>,
    #[serde(default, borrow, deserialize_with = "optional_borrowed")]
    pub finish_reason: Option<Cow<'a, str>>,
    /// Why the answer failed, with finish reason `error` (OpenRouter).
    #[serde(default)]
    pub error: Option<Value>,
}

/// The delta of a [`ChoiceIn`].
#[derive(Debug, Default, Deserialize)]
pub struct DeltaIn<'a> {
    #[serde(default, borrow, deserialize_with = "optional_borrowed")]
    pub content: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "optional_borrowed")]
    pub refusal: Option<Cow<'a, str>>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// The model's reasoning from an OpenAI-compatible server: `reasoning` (vLLM 0.11
    /// on, OpenRouter, Ollama) or `reasoning_content` (DeepSeek, older vLLM).
    #[serde(default, borrow, deserialize_with = "optional_borrowed")]
    pub reasoning: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "optional_borrowed")]
    pub reasoning_content: Option<Cow<'a, str>>,
}

/// A fragment of a streamed tool call. `id`, `type` and `function.name` come only
/// on the first fragment of each call; `index` numbers the calls of the choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Required by OpenAI; some compatible servers omit it.
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// `{"error": {"message", "type", "param", "code"}}`: the body of every non-2xx
/// response, and the payload of an in-band stream error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `insufficient_quota`, `server_error`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The request parameter at fault, `null` when none.
    pub param: Option<String>,
    /// `context_length_exceeded`, `rate_limit_exceeded`, `invalid_api_key`, …
    pub code: Option<String>,
}

/// An optional string borrowed from the payload when it holds no escapes. serde
/// borrows a bare `Cow<str>` field, but not one inside an `Option`: without this every
/// such field of every chunk would be a fresh allocation.
fn optional_borrowed<'de: 'a, 'a, D>(deserializer: D) -> Result<Option<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'a>>::deserialize(deserializer)?.map(|b| b.0))
}
