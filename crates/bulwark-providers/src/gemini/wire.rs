//! Wire structs of the Gemini API (Generative Language API `v1beta`:
//! `models/{model}:generateContent` and `models/{model}:streamGenerateContent?alt=sse`),
//! checked against the API reference and the official Python SDK (`google.genai.types`
//! and the request converters in `google.genai.models`).
//!
//! - Request structs (`GenerateContentRequest` and below) serialize in camelCase and
//!   hold `Cow`s: the client side borrows from the neutral request. The serve side
//!   (mock) deserializes the same structs, one piece at a time so that every error can
//!   name its field (see `serve.rs`). They accept the snake_case spellings too
//!   (serde aliases), because the official Python SDK sends some nested fields that
//!   way (`inlineData: {mime_type, data}`, `parameters_json_schema`), and they reject
//!   unknown fields, as the real API does.
//! - Response, stream-chunk and error structs serialize and deserialize: the client
//!   reads them from Google, the serve side writes them. They ignore unknown fields
//!   and keep enum values (`finishReason`, `blockReason`) as strings, because Google
//!   adds new ones over time.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The API version in request paths.
pub const API_VERSION: &str = "v1beta";

/// The header that carries the API key (never a `key=` query parameter: URLs get logged).
pub const API_KEY_HEADER: &str = "x-goog-api-key";

/// The documented placeholder `thoughtSignature` for function calls the model did not
/// produce in this conversation (history from another model or provider). Gemini 3
/// models answer 400 when a replayed `functionCall` part has no signature; the neutral
/// request carries none, so every replayed call gets this one.
pub const FOREIGN_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

// ---------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------

/// The body of `generateContent` / `streamGenerateContent` (client side; the serve
/// side checks the top-level keys itself and decodes the members below).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest<'a> {
    pub contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<Content<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation_config: Option<GenerationConfig<'a>>,
}

/// One turn: `role` is `user` or `model` (absent in `systemInstruction` and in
/// single-turn requests).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Content<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Cow<'a, str>>,
    #[serde(default)]
    pub parts: Vec<Part<'a>>,
}

/// A part holds exactly one kind of data (`text`, `inlineData`, `fileData`,
/// `functionCall`, `functionResponse`) plus optional metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Part<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Cow<'a, str>>,
    #[serde(
        default,
        alias = "inline_data",
        skip_serializing_if = "Option::is_none"
    )]
    pub inline_data: Option<Blob<'a>>,
    #[serde(default, alias = "file_data", skip_serializing_if = "Option::is_none")]
    pub file_data: Option<FileData<'a>>,
    #[serde(
        default,
        alias = "function_call",
        skip_serializing_if = "Option::is_none"
    )]
    pub function_call: Option<FunctionCall<'a>>,
    #[serde(
        default,
        alias = "function_response",
        skip_serializing_if = "Option::is_none"
    )]
    pub function_response: Option<FunctionResponse<'a>>,
    /// True for the model's own reasoning ("thought summary") parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought: Option<bool>,
    /// Opaque, base64 (see [`FOREIGN_THOUGHT_SIGNATURE`]).
    #[serde(
        default,
        alias = "thought_signature",
        skip_serializing_if = "Option::is_none"
    )]
    pub thought_signature: Option<Cow<'a, str>>,
    // Metadata the SDK may send that changes nothing the mock does; accepted, ignored.
    #[serde(default, alias = "part_metadata", skip_serializing)]
    pub part_metadata: Option<Value>,
    #[serde(default, alias = "media_resolution", skip_serializing)]
    pub media_resolution: Option<Value>,
    #[serde(default, alias = "video_metadata", skip_serializing)]
    pub video_metadata: Option<Value>,
}

impl<'a> Part<'a> {
    pub fn text(text: impl Into<Cow<'a, str>>) -> Self {
        Part {
            text: Some(text.into()),
            ..Part::default()
        }
    }
}

/// Inline bytes: `{"mimeType": "image/png", "data": "<base64>"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob<'a> {
    #[serde(alias = "mime_type")]
    pub mime_type: Cow<'a, str>,
    pub data: Cow<'a, str>,
}

/// A file by URI (Files API or Cloud Storage): `{"mimeType", "fileUri"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileData<'a> {
    #[serde(default, alias = "mime_type", skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<Cow<'a, str>>,
    #[serde(alias = "file_uri")]
    pub file_uri: Cow<'a, str>,
}

/// `{"id"?, "name", "args"}`: a call the model made (replayed in `model` turns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCall<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Cow<'a, str>>,
    pub name: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Cow<'a, Value>>,
}

/// `{"id"?, "name", "response": {...}}`: a function's result, in a `user` turn.
/// `response` must be a JSON object; by convention `{"result": ...}` or `{"error": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionResponse<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Cow<'a, str>>,
    pub name: Cow<'a, str>,
    pub response: Cow<'a, Value>,
    /// Multimodal function responses (not supported by the neutral request).
    #[serde(default, skip_serializing)]
    pub parts: Option<Value>,
    // Only meaningful for NON_BLOCKING calls in the Live API; accepted, ignored.
    #[serde(default, alias = "will_continue", skip_serializing)]
    pub will_continue: Option<Value>,
    #[serde(default, skip_serializing)]
    pub scheduling: Option<Value>,
}

/// One tool. Bulwark only uses `functionDeclarations`; the built-in tools (Google
/// Search, code execution, ...) are rejected by the serve side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tool<'a> {
    #[serde(
        default,
        alias = "function_declarations",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub function_declarations: Vec<FunctionDeclaration<'a>>,
}

/// A function the model may call.
///
/// Bulwark sends the arguments schema as `parametersJsonSchema`, which takes full JSON
/// Schema (documented for `v1beta`), rather than `parameters`, which takes Google's
/// OpenAPI-3.0 subset (upper-case `type`, no `additionalProperties`, ...): callers'
/// schemas come from OpenAI/Anthropic clients and pass through unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunctionDeclaration<'a> {
    pub name: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Cow<'a, str>>,
    /// OpenAPI-subset schema (serve side only; the client sends `parametersJsonSchema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Cow<'a, Value>>,
    #[serde(
        default,
        alias = "parameters_json_schema",
        skip_serializing_if = "Option::is_none"
    )]
    pub parameters_json_schema: Option<Cow<'a, Value>>,
    // Schemas of the function's *result* (the SDK derives them from Python return
    // types). Nothing in the neutral request uses them; accepted, ignored.
    #[serde(default, skip_serializing)]
    pub response: Option<Value>,
    #[serde(default, alias = "response_json_schema", skip_serializing)]
    pub response_json_schema: Option<Value>,
    #[serde(default, skip_serializing)]
    pub behavior: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolConfig<'a> {
    #[serde(
        default,
        alias = "function_calling_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub function_calling_config: Option<FunctionCallingConfig<'a>>,
}

/// `mode`: `AUTO`, `ANY` (must call one of `allowedFunctionNames`, or any tool),
/// `NONE`, `VALIDATED`, `MODE_UNSPECIFIED`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunctionCallingConfig<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Cow<'a, str>>,
    #[serde(
        default,
        alias = "allowed_function_names",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allowed_function_names: Vec<Cow<'a, str>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerationConfig<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, alias = "top_p", skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// A number: the Python SDK sends `topK` as a float (`40.0`).
    #[serde(default, alias = "top_k", skip_serializing_if = "Option::is_none")]
    pub top_k: Option<serde_json::Number>,
    #[serde(
        default,
        alias = "candidate_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub candidate_count: Option<serde_json::Number>,
    #[serde(
        default,
        alias = "max_output_tokens",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_output_tokens: Option<serde_json::Number>,
    #[serde(
        default,
        alias = "stop_sequences",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub stop_sequences: Vec<Cow<'a, str>>,
    #[serde(
        default,
        alias = "presence_penalty",
        skip_serializing_if = "Option::is_none"
    )]
    pub presence_penalty: Option<f64>,
    #[serde(
        default,
        alias = "frequency_penalty",
        skip_serializing_if = "Option::is_none"
    )]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(
        default,
        alias = "response_mime_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_mime_type: Option<Cow<'a, str>>,
    /// OpenAPI-subset schema (serve side only; the client sends `responseJsonSchema`).
    #[serde(
        default,
        alias = "response_schema",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_schema: Option<Cow<'a, Value>>,
    #[serde(
        default,
        alias = "response_json_schema",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_json_schema: Option<Cow<'a, Value>>,
    // Serve side: refused when set to something the neutral request cannot carry.
    #[serde(default, alias = "response_logprobs", skip_serializing)]
    pub response_logprobs: Option<bool>,
    #[serde(default, skip_serializing)]
    pub logprobs: Option<Value>,
    #[serde(default, alias = "response_modalities", skip_serializing)]
    pub response_modalities: Option<Vec<String>>,
    // Serve side: model-tuning knobs with no neutral equivalent that do not change the
    // shape of the answer; accepted, ignored by the mock.
    #[serde(default, alias = "thinking_config", skip_serializing)]
    pub thinking_config: Option<Value>,
    #[serde(default, alias = "media_resolution", skip_serializing)]
    pub media_resolution: Option<Value>,
    #[serde(default, alias = "enable_enhanced_civic_answers", skip_serializing)]
    pub enable_enhanced_civic_answers: Option<Value>,
}

// ---------------------------------------------------------------------------
// Response and stream chunks
// ---------------------------------------------------------------------------

/// A `generateContent` answer; with `alt=sse`, every `data:` line is one of these.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_feedback: Option<PromptFeedback>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_metadata: Option<UsageMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<CandidateContent>,
    /// `STOP`, `MAX_TOKENS`, `SAFETY`, `RECITATION`, `MALFORMED_FUNCTION_CALL`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default)]
    pub parts: Vec<ResponsePart>,
}

/// A part of an answer. Kinds Bulwark does not use (inline images, executable code)
/// are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponsePart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<ResponseFunctionCall>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseFunctionCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
}

/// Token counts. In a stream every chunk carries the counts so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_content_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_prompt_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thoughts_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_token_count: Option<u64>,
}

/// Set when the prompt itself was blocked (then there are no candidates).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    /// `SAFETY`, `OTHER`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `IMAGE_SAFETY`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_reason_message: Option<String>,
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// `{"error": {"code": 429, "message": "...", "status": "RESOURCE_EXHAUSTED", "details": [...]}}`
/// (the body of a non-2xx answer, and an in-band stream error chunk).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The canonical `google.rpc.Code` name: `INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `google.rpc` detail messages, each tagged by `@type`: `RetryInfo`
    /// (`retryDelay`), `QuotaFailure` (`violations[].quotaId`), `ErrorInfo` (`reason`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Value>,
}

/// `@type` of the detail that says how long to wait.
pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";
/// `@type` of the detail that names the exhausted quotas.
pub const QUOTA_FAILURE_TYPE: &str = "type.googleapis.com/google.rpc.QuotaFailure";
/// `@type` of the detail that gives a machine-readable `reason` (`API_KEY_INVALID`).
pub const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";
