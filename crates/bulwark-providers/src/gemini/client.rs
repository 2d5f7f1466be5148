//! Calling the Gemini API: the [`Adapter`] (URL, `x-goog-api-key` auth, neutral request
//! → `GenerateContentRequest`, `GenerateContentResponse` → neutral response). The stream
//! decoder lives in `stream.rs`, the error classification in `errors.rs`.
//!
//! Encoding decisions:
//! - system pieces → `systemInstruction.parts[]`; roles user → `user`, assistant →
//!   `model`; consecutive turns of one role are merged (Gemini wants alternation).
//! - Base64 images → `inlineData`; image URLs are unsupported (Gemini only fetches
//!   `fileData` URIs of its own Files API / Cloud Storage).
//! - A `ToolUse` → `functionCall {id, name, args}` (the `id` field is documented for
//!   v1beta) and the documented placeholder [`FOREIGN_THOUGHT_SIGNATURE`]: Gemini 3
//!   rejects replayed calls without a signature, and the neutral request carries none
//!   (the history usually comes from OpenAI/Anthropic callers anyway). A `ToolResult` → `functionResponse
//!   {id, name, response}`: Gemini keys responses by function *name*, found from the
//!   earlier `ToolUse` with that id; `response` is `{"result": text}` or
//!   `{"error": text}`.
//! - Tools → one `Tool` with all `functionDeclarations`, schemas as
//!   `parametersJsonSchema` (full JSON Schema, passed through unchanged).
//! - JSON output → `responseMimeType: application/json` (+ `responseJsonSchema`).

use std::borrow::Cow;
use std::collections::HashMap;

use bulwark_core::{
    ChatRequest, ChatResponse, ContentBlock, ErrorClass, ImageSource, Message, ResponseFormat,
    Role, StopReason, ToolChoice, UpstreamError, Usage,
};
use http::HeaderMap;
use http::header::HeaderValue;
use serde_json::Value;

use super::wire::{
    self, Blob, Content, FOREIGN_THOUGHT_SIGNATURE, FunctionCall, FunctionCallingConfig,
    FunctionDeclaration, FunctionResponse, GenerateContentRequest, GenerateContentResponse,
    GenerationConfig, Part, Tool, ToolConfig,
};
use crate::{Adapter, StreamDecoder};

const KIND: &str = "gemini";

/// The model name used when an answer does not say which model served it.
pub(crate) const UNKNOWN_MODEL: &str = "gemini";

pub struct GeminiAdapter;

impl GeminiAdapter {
    pub fn new() -> Self {
        GeminiAdapter
    }
}

impl Default for GeminiAdapter {
    fn default() -> Self {
        Self::new()
    }
}

impl Adapter for GeminiAdapter {
    fn url(&self, base_url: &str, model: &str, stream: bool) -> String {
        let path = model_path(model);
        let version = wire::API_VERSION;
        if stream {
            format!("{base_url}/{version}/{path}:streamGenerateContent?alt=sse")
        } else {
            format!("{base_url}/{version}/{path}:generateContent")
        }
    }

    fn auth_headers(&self, api_key: Option<&str>, headers: &mut HeaderMap) {
        let Some(key) = api_key else { return };
        // A key that is not a valid header value is left out: the call then fails
        // with 401/403 (classified Auth), never with the key in an error message.
        if let Ok(mut value) = HeaderValue::from_str(key) {
            value.set_sensitive(true);
            headers.insert(wire::API_KEY_HEADER, value);
        }
    }

    fn encode_request(
        &self,
        req: &ChatRequest,
        _model: &str,
        _stream: bool,
    ) -> Result<Vec<u8>, UpstreamError> {
        // The model and the stream switch live in the URL, not the body.
        let body = build_request(req)?;
        serde_json::to_vec(&body)
            .map_err(|e| UpstreamError::protocol(format!("cannot encode gemini request: {e}")))
    }

    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, UpstreamError> {
        let resp: GenerateContentResponse = serde_json::from_slice(body).map_err(|e| {
            UpstreamError::protocol(format!("gemini response is not valid JSON: {e}"))
        })?;
        response_from_wire(resp)
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(super::stream::GeminiStreamDecoder::new())
    }

    fn map_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> UpstreamError {
        super::errors::map_error(status, headers, body)
    }
}

/// `models/{model}`; a name that already has a collection prefix (`models/x`,
/// `tunedModels/x`) is used as it is.
fn model_path(model: &str) -> Cow<'_, str> {
    if model.contains('/') {
        Cow::Borrowed(model)
    } else {
        Cow::Owned(format!("models/{model}"))
    }
}

// ---------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------

fn build_request(req: &ChatRequest) -> Result<GenerateContentRequest<'_>, UpstreamError> {
    // `req.user` is an opaque end-user id, pure metadata: Gemini has no field for it
    // and it does not change the answer, so it is accepted and not sent.
    // `parallel_tool_calls: false` has no Gemini switch: the provider keeps the
    // turn's first call (`Provider::chat`, `chat_stream`).

    let system_instruction = if req.system.is_empty() {
        None
    } else {
        Some(Content {
            role: None,
            parts: req.system.iter().map(|s| Part::text(s.as_str())).collect(),
        })
    };

    // Empty turns are dropped below (Gemini rejects them), unless that would change
    // the conversation.
    crate::check_not_emptied(KIND, req)?;
    let tool_names = tool_names_by_id(&req.messages);
    let mut contents: Vec<Content<'_>> = Vec::with_capacity(req.messages.len());
    for message in &req.messages {
        let role = match message.role {
            Role::User => "user",
            Role::Assistant => "model",
        };
        let mut parts = Vec::with_capacity(message.content.len());
        for block in &message.content {
            encode_block(block, message.role, &tool_names, &mut parts)?;
        }
        if parts.is_empty() {
            // Gemini rejects a turn without parts; an empty turn carries nothing.
            continue;
        }
        match contents.last_mut() {
            Some(last) if last.role.as_deref() == Some(role) => last.parts.extend(parts),
            _ => contents.push(Content {
                role: Some(Cow::Borrowed(role)),
                parts,
            }),
        }
    }

    let tools = if req.tools.is_empty() {
        Vec::new()
    } else {
        vec![Tool {
            function_declarations: req
                .tools
                .iter()
                .map(|tool| FunctionDeclaration {
                    name: Cow::Borrowed(tool.name.as_str()),
                    description: tool.description.as_deref().map(Cow::Borrowed),
                    parameters: None,
                    parameters_json_schema: (!tool.parameters.is_null())
                        .then_some(Cow::Borrowed(&tool.parameters)),
                    response: None,
                    response_json_schema: None,
                    behavior: None,
                })
                .collect(),
        }]
    };

    let tool_config = req.tool_choice.as_ref().map(|choice| {
        let (mode, allowed) = match choice {
            ToolChoice::Auto => ("AUTO", Vec::new()),
            ToolChoice::None => ("NONE", Vec::new()),
            ToolChoice::Required => ("ANY", Vec::new()),
            ToolChoice::Tool { name } => ("ANY", vec![Cow::Borrowed(name.as_str())]),
        };
        ToolConfig {
            function_calling_config: Some(FunctionCallingConfig {
                mode: Some(Cow::Borrowed(mode)),
                allowed_function_names: allowed,
            }),
        }
    });

    Ok(GenerateContentRequest {
        contents,
        system_instruction,
        tools,
        tool_config,
        generation_config: generation_config(req)?,
    })
}

/// Tool-use id → function name, over the whole conversation.
fn tool_names_by_id(messages: &[Message]) -> HashMap<&str, &str> {
    let mut names = HashMap::new();
    for message in messages {
        for block in &message.content {
            if let ContentBlock::ToolUse { id, name, .. } = block {
                names.insert(id.as_str(), name.as_str());
            }
        }
    }
    names
}

fn encode_block<'a>(
    block: &'a ContentBlock,
    role: Role,
    tool_names: &HashMap<&str, &'a str>,
    parts: &mut Vec<Part<'a>>,
) -> Result<(), UpstreamError> {
    match block {
        ContentBlock::Text { text } => {
            // Gemini rejects empty text parts; an empty text carries nothing.
            if !text.is_empty() {
                parts.push(Part::text(text.as_str()));
            }
        }
        ContentBlock::Image { source, .. } => parts.push(image_part(source)?),
        // Anthropic's reasoning, signed for Anthropic: Gemini cannot take it back.
        ContentBlock::Thinking { .. } | ContentBlock::RedactedThinking { .. } => {}
        ContentBlock::ToolUse { id, name, input } => {
            if role != Role::Assistant {
                return Err(UpstreamError::new(
                    ErrorClass::InvalidRequest,
                    format!(
                        "tool call `{id}` appears in a user turn; tool calls belong to assistant turns"
                    ),
                ));
            }
            let args = match input {
                Value::Object(_) => Cow::Borrowed(input),
                Value::Null => Cow::Owned(Value::Object(Default::default())),
                _ => {
                    return Err(UpstreamError::unsupported(
                        KIND,
                        "tool call arguments that are not a JSON object",
                    ));
                }
            };
            parts.push(Part {
                function_call: Some(FunctionCall {
                    id: Some(Cow::Borrowed(id.as_str())),
                    name: Cow::Borrowed(name.as_str()),
                    args: Some(args),
                }),
                thought_signature: Some(Cow::Borrowed(FOREIGN_THOUGHT_SIGNATURE)),
                ..Part::default()
            });
        }
        ContentBlock::ToolResult {
            tool_use_id,
            content,
            is_error,
        } => {
            let Some(name) = tool_names.get(tool_use_id.as_str()) else {
                return Err(UpstreamError::new(
                    ErrorClass::InvalidRequest,
                    format!(
                        "tool result `{tool_use_id}` does not answer any tool call earlier in the conversation (Gemini needs the called function's name)"
                    ),
                ));
            };
            let mut text = String::new();
            for inner in content {
                match inner {
                    ContentBlock::Text { text: piece } => {
                        // Separate blocks stay apart: "sunny" and "21 C" are not "sunny21 C".
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(piece);
                    }
                    ContentBlock::Image { .. } => {
                        return Err(UpstreamError::unsupported(KIND, "images in tool results"));
                    }
                    ContentBlock::ToolUse { .. }
                    | ContentBlock::ToolResult { .. }
                    | ContentBlock::Thinking { .. }
                    | ContentBlock::RedactedThinking { .. } => {
                        return Err(UpstreamError::new(
                            ErrorClass::InvalidRequest,
                            format!(
                                "tool result `{tool_use_id}` contains a tool call or tool result"
                            ),
                        ));
                    }
                }
            }
            let key = if *is_error { "error" } else { "result" };
            let mut response = serde_json::Map::new();
            response.insert(key.to_string(), Value::String(text));
            parts.push(Part {
                function_response: Some(FunctionResponse {
                    id: Some(Cow::Borrowed(tool_use_id.as_str())),
                    name: Cow::Borrowed(name),
                    response: Cow::Owned(Value::Object(response)),
                    parts: None,
                    will_continue: None,
                    scheduling: None,
                }),
                ..Part::default()
            });
        }
    }
    Ok(())
}

fn image_part(source: &ImageSource) -> Result<Part<'_>, UpstreamError> {
    match source {
        ImageSource::Base64 { media_type, data } => Ok(Part {
            inline_data: Some(Blob {
                mime_type: Cow::Borrowed(media_type.as_str()),
                data: Cow::Borrowed(data.as_str()),
            }),
            ..Part::default()
        }),
        ImageSource::Url { .. } => Err(UpstreamError::unsupported(
            KIND,
            "image URLs (send the image inline as base64)",
        )),
    }
}

fn generation_config(req: &ChatRequest) -> Result<Option<GenerationConfig<'_>>, UpstreamError> {
    let seed = match req.seed {
        // Gemini's seed is an int32.
        Some(seed) if i32::try_from(seed).is_err() => {
            return Err(UpstreamError::unsupported(
                KIND,
                "seed values outside the 32-bit integer range",
            ));
        }
        other => other,
    };
    let (response_mime_type, response_json_schema) = match &req.response_format {
        None | Some(ResponseFormat::Text) => (None, None),
        Some(ResponseFormat::JsonObject) => (Some(Cow::Borrowed("application/json")), None),
        // Gemini always holds the output to a given schema, so `strict` needs no field;
        // the schema's `name` has no place on the wire.
        Some(ResponseFormat::JsonSchema { schema, .. }) => (
            Some(Cow::Borrowed("application/json")),
            Some(Cow::Borrowed(schema)),
        ),
    };
    let config = GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k.map(serde_json::Number::from),
        max_output_tokens: req.max_tokens.map(serde_json::Number::from),
        stop_sequences: req.stop.iter().map(|s| Cow::Borrowed(s.as_str())).collect(),
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        seed,
        response_mime_type,
        response_json_schema,
        ..GenerationConfig::default()
    };
    Ok((config != GenerationConfig::default()).then_some(config))
}

// ---------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------

/// A fresh tool-call id for a `functionCall` that came without one.
pub(crate) fn generate_call_id() -> String {
    format!("call_{}", uuid::Uuid::new_v4().simple())
}

/// A fresh answer id for a response that came without `responseId`.
pub(crate) fn generate_response_id() -> String {
    format!("gemini-{}", uuid::Uuid::new_v4().simple())
}

fn response_from_wire(resp: GenerateContentResponse) -> Result<ChatResponse, UpstreamError> {
    let usage = resp.usage_metadata.map(usage_from_wire).unwrap_or_default();
    let id = resp.response_id.unwrap_or_else(generate_response_id);
    let model = resp
        .model_version
        .unwrap_or_else(|| UNKNOWN_MODEL.to_string());
    let Some(candidate) = resp.candidates.into_iter().next() else {
        return Err(match resp.prompt_feedback.and_then(blocked_prompt_error) {
            Some(err) => err,
            None => UpstreamError::protocol("gemini response has no candidates"),
        });
    };

    let mut content: Vec<ContentBlock> = Vec::new();
    let mut has_calls = false;
    for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
        if part.thought == Some(true) {
            continue;
        }
        if let Some(call) = part.function_call {
            has_calls = true;
            content.push(ContentBlock::ToolUse {
                id: call.id.unwrap_or_else(generate_call_id),
                name: call.name,
                input: call
                    .args
                    .unwrap_or_else(|| Value::Object(Default::default())),
            });
        } else if let Some(text) = part.text.filter(|t| !t.is_empty()) {
            match content.last_mut() {
                Some(ContentBlock::Text { text: last }) => last.push_str(&text),
                _ => content.push(ContentBlock::Text { text }),
            }
        }
    }

    let Some(reason) = candidate.finish_reason.as_deref() else {
        // A whole answer always says why it ended; one that does not may be cut.
        return Err(UpstreamError::protocol(
            "gemini answer has no finishReason: the answer may be incomplete",
        ));
    };
    if let Some(err) = malformed_answer(reason, content.is_empty()) {
        return Err(err);
    }
    Ok(ChatResponse {
        id,
        model,
        content,
        stop_reason: stop_reason(candidate.finish_reason.as_deref(), has_calls),
        // Gemini does not say which stop sequence matched.
        stop_sequence: None,
        usage,
    })
}

/// A `finishReason` that says the model's answer is broken rather than finished
/// (`MALFORMED_FUNCTION_CALL`: "the function call generated by the model is
/// invalid"; the answer then holds no call, only any text before it), or an answer
/// that is `empty` and ended for no reason Gemini names (`OTHER`, unspecified): a
/// failed attempt, retried and failed over like any malformed answer, never a
/// success.
pub(crate) fn malformed_answer(finish_reason: &str, empty: bool) -> Option<UpstreamError> {
    let named = matches!(finish_reason, "STOP" | "MAX_TOKENS")
        || stop_reason(Some(finish_reason), false) == StopReason::ContentFilter;
    let why = if matches!(
        finish_reason,
        "MALFORMED_FUNCTION_CALL"
            | "UNEXPECTED_TOOL_CALL"
            | "TOO_MANY_TOOL_CALLS"
            | "MALFORMED_RESPONSE"
    ) {
        "the model's output was malformed"
    } else if empty && !named {
        "no content, and no reason Gemini names"
    } else {
        return None;
    };
    Some(UpstreamError::protocol(format!(
        "gemini ended the answer with finishReason {finish_reason}: {why}"
    )))
}

/// `finishReason` → neutral stop reason. `STOP` with function calls is a tool-use stop.
pub(crate) fn stop_reason(finish_reason: Option<&str>, has_calls: bool) -> StopReason {
    match finish_reason {
        Some("STOP") if has_calls => StopReason::ToolUse,
        Some("STOP") => StopReason::EndTurn,
        Some("MAX_TOKENS") => StopReason::MaxTokens,
        Some(
            "SAFETY"
            | "RECITATION"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION"
            | "MODEL_ARMOR"
            // "flagged for using an unsupported language"
            | "LANGUAGE",
        ) => StopReason::ContentFilter,
        _ => StopReason::Other,
    }
}

/// Gemini counts thinking apart from the answer (`thoughtsTokenCount`) and tool-use
/// prompts apart from the prompt; both are billed, so both are counted in.
pub(crate) fn usage_from_wire(u: wire::UsageMetadata) -> Usage {
    Usage {
        input_tokens: u.prompt_token_count.unwrap_or(0)
            + u.tool_use_prompt_token_count.unwrap_or(0),
        output_tokens: u.candidates_token_count.unwrap_or(0) + u.thoughts_token_count.unwrap_or(0),
        cache_read_input_tokens: u.cached_content_token_count,
        cache_creation_input_tokens: None,
    }
}

/// The error for an answer whose prompt was blocked (`promptFeedback.blockReason`).
pub(crate) fn blocked_prompt_error(feedback: wire::PromptFeedback) -> Option<UpstreamError> {
    let reason = feedback.block_reason?;
    let message = match feedback.block_reason_message {
        Some(detail) => format!("gemini blocked the prompt ({reason}): {detail}"),
        None => format!("gemini blocked the prompt ({reason})"),
    };
    Some(UpstreamError::new(ErrorClass::ContentPolicy, message).with_code(reason))
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
