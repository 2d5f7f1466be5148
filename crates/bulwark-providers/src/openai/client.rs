//! Calling the OpenAI Chat Completions API, and OpenAI-compatible servers (OpenRouter,
//! vLLM, Ollama, llama.cpp server): neutral request → wire body, wire response →
//! neutral, and the classification of upstream errors. The stream decoder lives in
//! `client_stream.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bulwark_core::{
    ChatRequest, ChatResponse, ContentBlock, ErrorClass, ImageSource, Message, ResponseFormat,
    Role, StopReason, ToolChoice, UpstreamError, Usage,
};
use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderValue};
use serde_json::Value;

use super::client_stream::Decoder;
use super::wire::{
    ChatCompletion, ChatCompletionRequest, CompletionUsage, ContentPart, FunctionCall,
    FunctionDefinition, ImageUrl, JsonSchemaWire, NamedFunction, RequestMessage,
    ResponseFormatWire, StreamOptions, ToolCall, ToolChoiceWire, ToolDefinition, UserContent,
};
use crate::{Adapter, StreamDecoder};

/// The adapter for `openai` (`compatible = false`) and `openai-compatible` providers.
pub struct OpenAiAdapter {
    compatible: bool,
    /// Streams ask for usage (`stream_options`) until the server refuses the field:
    /// some OpenAI-compatible servers (older Azure API versions, strict validators)
    /// answer 400 to a field Bulwark added, not the caller. Then it is left out.
    stream_options: AtomicBool,
}

impl OpenAiAdapter {
    pub fn new(compatible: bool) -> Self {
        OpenAiAdapter {
            compatible,
            stream_options: AtomicBool::new(true),
        }
    }

    /// The provider kind as the caller's config names it (used in `Unsupported` errors).
    fn kind(&self) -> &'static str {
        if self.compatible {
            "openai-compatible"
        } else {
            "openai"
        }
    }
}

impl Adapter for OpenAiAdapter {
    fn url(&self, base_url: &str, _model: &str, _stream: bool) -> String {
        format!("{base_url}/chat/completions")
    }

    fn auth_headers(&self, api_key: Option<&str>, headers: &mut HeaderMap) {
        // Local compatible servers (Ollama, llama.cpp) usually run without a key.
        let Some(key) = api_key.filter(|k| !k.is_empty()) else {
            return;
        };
        match HeaderValue::from_str(&format!("Bearer {key}")) {
            Ok(mut value) => {
                value.set_sensitive(true);
                headers.insert(AUTHORIZATION, value);
            }
            // The key itself is never logged; the upstream's 401 will say the rest.
            Err(_) => tracing::warn!(
                provider_kind = self.kind(),
                "API key contains characters not allowed in an HTTP header; sending none"
            ),
        }
    }

    fn encode_request(
        &self,
        req: &ChatRequest,
        model: &str,
        stream: bool,
    ) -> Result<Vec<u8>, UpstreamError> {
        let usage = stream && self.stream_options.load(Ordering::Relaxed);
        let mut body = build_request(req, model, stream, self.compatible, self.kind())?;
        if !usage {
            body.stream_options = None;
        }
        serde_json::to_vec(&body)
            .map_err(|e| UpstreamError::protocol(format!("could not encode request: {e}")))
    }

    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, UpstreamError> {
        let completion: ChatCompletion = serde_json::from_slice(body).map_err(|e| {
            UpstreamError::protocol(format!("upstream response is not a chat.completion: {e}"))
        })?;
        completion_to_response(completion)
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(Decoder::default())
    }

    /// Classifies a non-2xx response from OpenAI or a compatible server.
    ///
    /// | condition (first match wins) | class |
    /// |---|---|
    /// | type or code `insufficient_quota`, code `credit_balance_exhausted` / `billing_hard_limit_reached`, or status 402 | `Quota` |
    /// | code `context_length_exceeded`, or a 400 whose message says "maximum context length" (vLLM and others) | `ContextWindow` |
    /// | code `content_policy_violation` / `content_filter` | `ContentPolicy` |
    /// | code `server_is_overloaded`, type `server_error` / `service_unavailable_error` (even on a 429) | `Transient` |
    /// | 429 (`rate_limit_exceeded` and any other) | `Throttled`, wait from `retry-after-ms` / `retry-after`, else the exhausted `x-ratelimit-reset-*` |
    /// | 401, 403 | `Auth` |
    /// | 408, any other 5xx | `Transient` |
    /// | 400, 404, 413, 422 and other 4xx | `InvalidRequest` |
    ///
    /// The message is the provider's own (`error.message`, or a bare-string `error`,
    /// or vLLM's top-level `message`); `code` is `error.code`, else `error.type`.
    fn map_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> UpstreamError {
        let detail = ErrorInfo::parse(body);
        if refuses_stream_options(status, &detail) {
            // Bulwark's field, not the caller's: the next call goes without it.
            if self.stream_options.swap(false, Ordering::Relaxed) {
                tracing::warn!(
                    provider_kind = self.kind(),
                    "upstream refused stream_options: its streams are asked for without it, \
                     and their usage is reported as 0"
                );
            }
            return UpstreamError::new(
                ErrorClass::Transient,
                "upstream refused stream_options (which Bulwark adds to read the usage); \
                 its streams are asked for without it from now on",
            )
            .with_status(status);
        }
        // A 2xx with an error body: a relay that reports errors in-band once a request
        // is under way (OpenRouter), its numeric `code` standing for the status.
        let status = if (200..300).contains(&status) {
            detail.numeric_code
        } else {
            Some(status)
        };
        let class = classify(status, &detail);
        let message = detail.message.clone().unwrap_or_else(|| match status {
            Some(status) => format!("upstream answered HTTP {status}"),
            None => "upstream answered 2xx with neither an answer nor an error message".into(),
        });
        let mut err = UpstreamError::new(class, message);
        if let Some(status) = status {
            err = err.with_status(status);
        }
        if let Some(code) = detail.code.clone().or_else(|| detail.kind.clone()) {
            err = err.with_code(code);
        }
        if class == ErrorClass::Throttled || class == ErrorClass::Transient {
            let wait = crate::retry_after(headers).or_else(|| rate_limit_reset(headers));
            err = err.with_retry_after(wait);
        }
        err
    }
}

// ---------------------------------------------------------------------------
// Error classification (shared with the stream decoder's in-band errors)
// ---------------------------------------------------------------------------

/// The useful parts of an error body, whatever shape the server chose:
/// `{"error": {"message","type","param","code"}}` (OpenAI, most servers),
/// `{"error": "text"}` (Ollama), `{"object": "error", "message", "type", "code"}` (vLLM).
#[derive(Debug, Default, Clone)]
pub(crate) struct ErrorInfo {
    pub message: Option<String>,
    pub kind: Option<String>,
    pub code: Option<String>,
    /// A numeric `code`, which some compatible servers use for the HTTP status.
    pub numeric_code: Option<u16>,
    /// The request field at fault (`error.param`).
    pub param: Option<String>,
}

impl ErrorInfo {
    pub(crate) fn parse(body: &[u8]) -> Self {
        match serde_json::from_slice::<Value>(body) {
            Ok(value) => Self::from_value(&value),
            Err(_) => ErrorInfo::default(),
        }
    }

    /// Reads a parsed body; fields it cannot find stay `None`.
    pub(crate) fn from_value(value: &Value) -> Self {
        let source = match value.get("error") {
            Some(Value::String(text)) => {
                return ErrorInfo {
                    message: Some(text.clone()),
                    ..ErrorInfo::default()
                };
            }
            Some(inner @ Value::Object(_)) => inner,
            _ => value,
        };
        let text = |key: &str| {
            source
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let code_value = source.get("code");
        ErrorInfo {
            message: text("message"),
            kind: text("type"),
            code: code_value
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            numeric_code: code_value
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok()),
            param: text("param"),
        }
    }

    fn is(&self, names: &[&str]) -> bool {
        let hit = |v: &Option<String>| v.as_deref().is_some_and(|v| names.contains(&v));
        hit(&self.code) || hit(&self.kind)
    }
}

/// The class of an upstream error; `status` is `None` for an in-band stream error.
pub(crate) fn classify(status: Option<u16>, info: &ErrorInfo) -> ErrorClass {
    let status = status.or(info.numeric_code);
    let message = info.message.as_deref().unwrap_or("").to_ascii_lowercase();
    if info.is(&[
        "insufficient_quota",
        "credit_balance_exhausted",
        "billing_hard_limit_reached",
    ]) || status == Some(402)
    {
        return ErrorClass::Quota;
    }
    if info.is(&["context_length_exceeded"])
        || (matches!(status, Some(400) | None) && message.contains("maximum context length"))
    {
        return ErrorClass::ContextWindow;
    }
    if info.is(&["content_policy_violation", "content_filter"]) {
        return ErrorClass::ContentPolicy;
    }
    // Before the 429 rule: OpenAI has answered "engine overloaded" with a 429 of type
    // `server_error`, which is load, not this caller's rate limit.
    if info.is(&[
        "server_is_overloaded",
        "server_error",
        "service_unavailable_error",
    ]) {
        return ErrorClass::Transient;
    }
    if status == Some(429) || info.is(&["rate_limit_exceeded", "rate_limit_error"]) {
        return ErrorClass::Throttled;
    }
    if matches!(status, Some(401 | 403)) || info.is(&["invalid_api_key", "authentication_error"]) {
        return ErrorClass::Auth;
    }
    // A reasoning setting the model has none of (`reasoning_effort` to gpt-4o): what the
    // target cannot do, not the caller's mistake. Another provider answers without it.
    // An answer longer than this model can write (Claude Code asks 32k–64k tokens; some
    // OpenAI models stop at 16k): what the target cannot do, as a context window too
    // small is. Another target may take it.
    let length_setting = |s: &str| s == "max_tokens" || s == "max_completion_tokens";
    if status == Some(400)
        && info.param.as_deref().is_some_and(length_setting)
        && (message.contains("too large") || message.contains("supports at most"))
    {
        return ErrorClass::Unsupported;
    }
    // A value the model does take but the caller got wrong stays the caller's.
    let reasoning_setting = |s: &str| s.contains("reasoning_effort") || s.contains("verbosity");
    let unsupported = info.is(&["unsupported_parameter"])
        || message.starts_with("unsupported parameter")
        || message.starts_with("unrecognized request argument");
    if status == Some(400)
        && unsupported
        && (info.param.as_deref().is_some_and(reasoning_setting) || reasoning_setting(&message))
    {
        return ErrorClass::Unsupported;
    }
    match status {
        Some(408) | Some(500..=599) => ErrorClass::Transient,
        Some(400..=499) => ErrorClass::InvalidRequest,
        // An in-band error without a status: a request problem only if it says so.
        None if info.is(&["invalid_request_error"]) => ErrorClass::InvalidRequest,
        _ => ErrorClass::Transient,
    }
}

/// The wait OpenAI's `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` headers
/// give (Go durations such as `1s`, `6m0s`, `20ms`). When a `remaining` header says
/// which limit is exhausted, that one's reset; otherwise the longer of the two.
fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let limits = [
        (
            "x-ratelimit-reset-requests",
            "x-ratelimit-remaining-requests",
        ),
        ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens"),
    ];
    let mut any = None::<Duration>;
    let mut exhausted = None::<Duration>;
    for (reset, remaining) in limits {
        let Some(wait) = header(reset).and_then(parse_go_duration) else {
            continue;
        };
        any = Some(any.map_or(wait, |w| w.max(wait)));
        if header(remaining).is_some_and(|r| r.trim() == "0") {
            exhausted = Some(exhausted.map_or(wait, |w| w.max(wait)));
        }
    }
    exhausted.or(any)
}

/// Parses a Go `time.Duration` string (`1h2m3.5s`, `20ms`, `6m0s`); plain numbers are seconds.
pub(crate) fn parse_go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(secs) = text.parse::<f64>() {
        return crate::provider_wait(secs);
    }
    let mut total = 0.0_f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest.get(..number_len)?.parse().ok()?;
        rest = rest.get(number_len..)?;
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match rest.get(..unit_len)? {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = rest.get(unit_len..)?;
        total += number * scale;
    }
    crate::provider_wait(total)
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// How many stop sequences OpenAI's Chat Completions takes.
const OPENAI_MAX_STOP: usize = 4;

fn build_request<'a>(
    req: &'a ChatRequest,
    model: &'a str,
    stream: bool,
    compatible: bool,
    kind: &'static str,
) -> Result<ChatCompletionRequest<'a>, UpstreamError> {
    if req.top_k.is_some() && !compatible {
        return Err(UpstreamError::unsupported(kind, "top_k"));
    }
    // OpenAI takes "up to 4 sequences" (Anthropic takes more): a target that cannot
    // stop where the caller asked hands the request on, as for any feature it lacks.
    if req.stop.len() > OPENAI_MAX_STOP && !compatible {
        return Err(UpstreamError::unsupported(
            kind,
            &format!("more than {OPENAI_MAX_STOP} stop sequences"),
        ));
    }
    let mut messages: Vec<RequestMessage<'a>> = req
        .system
        .iter()
        .map(|piece| RequestMessage::System { content: piece })
        .collect();
    for message in &req.messages {
        encode_message(message, kind, &mut messages)?;
    }
    // OpenAI answers 400 to a strict tool whose schema its strict mode does not take
    // (an optional property, an open object): a target that cannot serve it, as for
    // any feature it lacks (Anthropic's strict tool use takes more schemas).
    if !compatible
        && let Some(tool) = req
            .tools
            .iter()
            .find(|t| t.strict && !crate::anthropic::serve::openai_strict_takes(&t.parameters))
    {
        return Err(UpstreamError::unsupported(
            kind,
            &format!(
                "strict tool `{}` (OpenAI's strict mode needs every object closed with additionalProperties: false and every property required)",
                tool.name
            ),
        ));
    }
    let tools: Vec<ToolDefinition<'a>> = req
        .tools
        .iter()
        .map(|tool| ToolDefinition {
            kind: "function",
            function: FunctionDefinition {
                name: &tool.name,
                description: tool.description.as_deref(),
                parameters: &tool.parameters,
                strict: tool.strict,
            },
        })
        .collect();
    let tool_choice = req.tool_choice.as_ref().map(|choice| match choice {
        ToolChoice::Auto => ToolChoiceWire::Mode("auto"),
        ToolChoice::None => ToolChoiceWire::Mode("none"),
        ToolChoice::Required => ToolChoiceWire::Mode("required"),
        ToolChoice::Tool { name } => ToolChoiceWire::Named {
            kind: "function",
            function: NamedFunction { name },
        },
    });
    let response_format = req.response_format.as_ref().map(|format| match format {
        ResponseFormat::Text => ResponseFormatWire::Text,
        ResponseFormat::JsonObject => ResponseFormatWire::JsonObject,
        ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        } => ResponseFormatWire::JsonSchema {
            json_schema: JsonSchemaWire {
                name,
                schema,
                strict: *strict,
            },
        },
    });
    // OpenAI rejects `parallel_tool_calls` on a request without tools; without tools
    // the setting means nothing, so leaving it out changes no answer.
    let parallel_tool_calls = req.parallel_tool_calls.filter(|_| !tools.is_empty());
    let (max_completion_tokens, max_tokens) = if compatible {
        (None, req.max_tokens)
    } else {
        (req.max_tokens, None)
    };
    Ok(ChatCompletionRequest {
        model,
        messages,
        tools,
        tool_choice,
        parallel_tool_calls,
        max_completion_tokens,
        max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        seed: req.seed,
        stop: req.stop.iter().map(String::as_str).collect(),
        response_format,
        user: req.user.as_deref(),
        prompt_cache_key: req.prompt_cache_key.as_deref().filter(|_| !compatible),
        reasoning_effort: req.reasoning_effort.as_deref().filter(|_| !compatible),
        verbosity: req.verbosity.as_deref().filter(|_| !compatible),
        stream,
        // Always ask for usage, so the final Finish carries real token counts.
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
    })
}

fn encode_message<'a>(
    message: &'a Message,
    kind: &'static str,
    out: &mut Vec<RequestMessage<'a>>,
) -> Result<(), UpstreamError> {
    match message.role {
        Role::User => encode_user_message(message, kind, out),
        Role::Assistant => {
            let mut text: Option<String> = None;
            let mut tool_calls = Vec::new();
            for block in &message.content {
                match block {
                    ContentBlock::Text { text: piece } => {
                        text.get_or_insert_with(String::new).push_str(piece);
                    }
                    ContentBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                        id: id.as_str().into(),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: name.as_str().into(),
                            arguments: arguments_string(input).into(),
                        },
                    }),
                    ContentBlock::Image { .. } => {
                        return Err(UpstreamError::unsupported(
                            kind,
                            "images in assistant messages",
                        ));
                    }
                    ContentBlock::ToolResult { .. } => {
                        return Err(UpstreamError::unsupported(
                            kind,
                            "tool results in assistant messages",
                        ));
                    }
                    // Anthropic's reasoning, signed for Anthropic: left out.
                    ContentBlock::Thinking { .. } | ContentBlock::RedactedThinking { .. } => {}
                }
            }
            if text.is_none() && tool_calls.is_empty() {
                text = Some(String::new());
            }
            out.push(RequestMessage::Assistant {
                content: text,
                tool_calls,
            });
            Ok(())
        }
    }
}

/// A user turn: each tool result becomes its own `tool` message (first, since OpenAI
/// wants them right after the assistant's `tool_calls`), the rest one `user` message.
fn encode_user_message<'a>(
    message: &'a Message,
    kind: &'static str,
    out: &mut Vec<RequestMessage<'a>>,
) -> Result<(), UpstreamError> {
    let mut parts = Vec::new();
    let mut tool_results = 0_usize;
    for block in &message.content {
        match block {
            ContentBlock::Text { text } => parts.push(ContentPart::Text { text }),
            ContentBlock::Thinking { .. } | ContentBlock::RedactedThinking { .. } => {}
            ContentBlock::Image { source, detail } => parts.push(ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: image_url(source),
                    detail: detail.as_deref(),
                },
            }),
            ContentBlock::ToolResult {
                tool_use_id,
                content,
                is_error: _,
            } => {
                // OpenAI has no error flag on tool results; the text carries the error.
                let mut text = String::new();
                for part in content {
                    match part {
                        ContentBlock::Text { text: piece } => {
                            // Separate blocks stay apart: "sunny" and "21 C" are not "sunny21 C".
                            if !text.is_empty() {
                                text.push('\n');
                            }
                            text.push_str(piece);
                        }
                        ContentBlock::Image { .. } => {
                            return Err(UpstreamError::unsupported(kind, "images in tool results"));
                        }
                        ContentBlock::ToolUse { .. }
                        | ContentBlock::ToolResult { .. }
                        | ContentBlock::Thinking { .. }
                        | ContentBlock::RedactedThinking { .. } => {
                            return Err(UpstreamError::unsupported(
                                kind,
                                "nested tool blocks in tool results",
                            ));
                        }
                    }
                }
                out.push(RequestMessage::Tool {
                    tool_call_id: tool_use_id,
                    content: text,
                });
                tool_results += 1;
            }
            ContentBlock::ToolUse { .. } => {
                return Err(UpstreamError::unsupported(
                    kind,
                    "tool calls in user messages",
                ));
            }
        }
    }
    if parts.is_empty() && tool_results > 0 {
        return Ok(());
    }
    let content = match parts.as_slice() {
        [ContentPart::Text { text }] => UserContent::Text(text),
        [] => UserContent::Text(""),
        _ => UserContent::Parts(parts),
    };
    out.push(RequestMessage::User { content });
    Ok(())
}

fn image_url(source: &ImageSource) -> std::borrow::Cow<'_, str> {
    match source {
        ImageSource::Url { url } => url.as_str().into(),
        ImageSource::Base64 { media_type, data } => {
            format!("data:{media_type};base64,{data}").into()
        }
    }
}

/// The JSON string OpenAI carries tool arguments in. A string input is arguments the
/// model produced that were not valid JSON; they go back exactly as they came.
pub(crate) fn arguments_string(input: &Value) -> String {
    match input {
        Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// Tool arguments as a JSON value: `{}` when empty, the raw string when not JSON.
pub(crate) fn parse_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return Value::Object(Default::default());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

pub(crate) fn stop_reason(finish_reason: Option<&str>) -> StopReason {
    match finish_reason {
        Some("stop") => StopReason::EndTurn,
        Some("length") => StopReason::MaxTokens,
        Some("tool_calls" | "function_call") => StopReason::ToolUse,
        Some("content_filter") => StopReason::ContentFilter,
        _ => StopReason::Other,
    }
}

pub(crate) fn usage_from_wire(usage: &CompletionUsage) -> Usage {
    Usage {
        input_tokens: usage.prompt_tokens,
        output_tokens: usage.completion_tokens,
        cache_read_input_tokens: usage.prompt_tokens_details.and_then(|d| d.cached_tokens),
        cache_creation_input_tokens: None,
    }
}

/// Message content as text: a string, or (some compatible servers) an array of parts.
fn content_text(content: &Value) -> Result<String, UpstreamError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                if let Some(piece) = part.get("text").and_then(Value::as_str) {
                    text.push_str(piece);
                }
            }
            Ok(text)
        }
        _ => Err(UpstreamError::protocol(
            "upstream message content is neither a string nor a list of parts",
        )),
    }
}

/// A 400 (or a validator's 422) naming `stream_options` as a field the server does
/// not take.
/// `stream_options` quoted anywhere else (a caller's schema of that name in an error
/// about the schema) is not a refusal of the field.
fn refuses_stream_options(status: u16, info: &ErrorInfo) -> bool {
    if !matches!(status, 400 | 422) {
        return false;
    }
    if info.param.as_deref() == Some("stream_options") {
        return true;
    }
    let message = info.message.as_deref().unwrap_or("").to_ascii_lowercase();
    [
        "unrecognized request argument supplied: stream_options",
        "unsupported parameter: 'stream_options'",
        "unknown field `stream_options`",
        "unknown field: stream_options",
    ]
    .iter()
    .any(|wording| message.contains(wording))
        // pydantic (vLLM, TGI-style FastAPI servers): the field's path, then the rule.
        || (message.contains("stream_options") && message.contains("extra inputs are not permitted"))
}

/// The finish reason OpenRouter (and servers modelled on it) give an answer that the
/// model failed partway through: what came before it is not a whole answer.
pub(crate) const ERROR_FINISH: &str = "error";

/// An answer that ended with finish reason `error`: a failed attempt, retried and
/// failed over like a cut stream, never a finished answer. `detail` is the choice's
/// own `error` object when the server sent one (OpenRouter: `code`, `message`).
pub(crate) fn ended_in_error(detail: Option<&Value>) -> UpstreamError {
    let info = detail.map(ErrorInfo::from_value).unwrap_or_default();
    let class = match classify(None, &info) {
        // Without a status, only an error that says it is the request's is one.
        ErrorClass::InvalidRequest if info.numeric_code.is_none() => ErrorClass::Transient,
        class => class,
    };
    let mut message =
        "upstream ended the answer with finish_reason \"error\": the model failed partway"
            .to_string();
    if let Some(text) = &info.message {
        message.push_str(": ");
        message.push_str(text);
    }
    let mut err = UpstreamError::new(class, message);
    if let Some(status) = info.numeric_code {
        err = err.with_status(status);
    }
    err
}

fn completion_to_response(completion: ChatCompletion) -> Result<ChatResponse, UpstreamError> {
    let Some(choice) = completion.choices.into_iter().next() else {
        return Err(UpstreamError::protocol("upstream response has no choices"));
    };
    match choice.finish_reason.as_deref() {
        Some(ERROR_FINISH) => return Err(ended_in_error(choice.error.as_ref())),
        // A whole answer always says why it ended; one that does not may be cut.
        None => {
            return Err(UpstreamError::protocol(
                "upstream answer has no finish_reason: it may be incomplete",
            ));
        }
        Some(_) => {}
    }
    let message = choice.message;
    let mut content = Vec::new();
    let mut stop = stop_reason(choice.finish_reason.as_deref());
    // Reasoning first, unsigned (see `ContentBlock::is_signed_thinking`).
    if let Some(thinking) = message
        .reasoning
        .or(message.reasoning_content)
        .filter(|t| !t.is_empty())
    {
        content.push(ContentBlock::Thinking {
            thinking,
            signature: String::new(),
        });
    }
    let text = match &message.content {
        Some(value) => content_text(value)?,
        None => String::new(),
    };
    if !text.is_empty() {
        content.push(ContentBlock::Text { text });
    }
    if let Some(refusal) = message.refusal.filter(|r| !r.is_empty()) {
        content.push(ContentBlock::Text { text: refusal });
        stop = StopReason::Refusal;
    }
    let calls = message.tool_calls.unwrap_or_default();
    for call in &calls {
        content.push(ContentBlock::ToolUse {
            id: call.id.to_string(),
            name: call.function.name.to_string(),
            input: parse_arguments(&call.function.arguments),
        });
    }
    // Some compatible servers say `stop` for an answer that is tool calls.
    if !calls.is_empty() && stop == StopReason::EndTurn {
        stop = StopReason::ToolUse;
    }
    Ok(ChatResponse {
        id: completion.id,
        model: completion.model,
        content,
        stop_reason: stop,
        stop_sequence: None,
        usage: completion
            .usage
            .as_ref()
            .map(usage_from_wire)
            .unwrap_or_default(),
    })
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
