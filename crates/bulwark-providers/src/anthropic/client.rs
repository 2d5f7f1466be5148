//! Calling the Anthropic Messages API: the [`Adapter`] (URL, headers, neutral request
//! → wire, wire response → neutral). The stream decoder lives in `client_stream.rs`,
//! the error classification in `client_error.rs`.

use std::borrow::Cow;

use bulwark_core::{
    CachePoint, ChatRequest, ChatResponse, ContentBlock, ImageSource, ResponseFormat, Role,
    StopReason, ToolChoice, UpstreamError, Usage,
};
use http::HeaderMap;
use http::header::HeaderValue;
use serde_json::{Map, Value};

use super::client_stream::AnthropicStreamDecoder;
use super::wire::{
    API_VERSION, ContentBlockParam, ImageSourceParam, MessageParam, MessageResponse,
    MessagesRequest, MetadataParam, OutputConfig, OutputFormat, ResponseBlock, TextBlockParam,
    ToolChoiceParam, ToolParam, UsageWire,
};
use crate::{Adapter, StreamDecoder};

/// `max_tokens` is required by Anthropic; used when neither the caller nor the
/// provider config sets one.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The provider kind as `UpstreamError::unsupported` names it.
const KIND: &str = "anthropic";

pub struct AnthropicAdapter {
    default_max_tokens: u32,
}

impl AnthropicAdapter {
    pub fn new(default_max_tokens: u32) -> Self {
        AnthropicAdapter { default_max_tokens }
    }
}

impl Adapter for AnthropicAdapter {
    fn url(&self, base_url: &str, _model: &str, _stream: bool) -> String {
        format!("{base_url}/v1/messages")
    }

    fn auth_headers(&self, api_key: Option<&str>, headers: &mut HeaderMap) {
        headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
        let Some(key) = api_key else { return };
        match HeaderValue::from_str(key) {
            Ok(mut value) => {
                value.set_sensitive(true);
                headers.insert("x-api-key", value);
            }
            // Never log the key itself.
            Err(_) => tracing::warn!("anthropic API key is not a valid header value; not sent"),
        }
    }

    fn encode_request(
        &self,
        req: &ChatRequest,
        model: &str,
        stream: bool,
    ) -> Result<Vec<u8>, UpstreamError> {
        let body = build_request(req, model, stream, self.default_max_tokens)?;
        serde_json::to_vec(&body)
            .map_err(|e| UpstreamError::protocol(format!("could not encode request: {e}")))
    }

    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, UpstreamError> {
        let msg: MessageResponse = serde_json::from_slice(body).map_err(|e| {
            UpstreamError::protocol(format!("anthropic response is not a message: {e}"))
        })?;
        if msg.stop_reason.is_none() {
            // A whole message always says why it ended; one that does not may be cut.
            return Err(UpstreamError::protocol(
                "anthropic message has no stop_reason: the answer may be incomplete",
            ));
        }
        Ok(ChatResponse {
            id: msg.id,
            model: msg.model,
            content: msg.content.into_iter().filter_map(response_block).collect(),
            stop_reason: stop_reason_from_wire(msg.stop_reason.as_deref()),
            stop_sequence: msg.stop_sequence,
            usage: usage_from_wire(&msg.usage),
        })
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(AnthropicStreamDecoder::default())
    }

    fn map_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> UpstreamError {
        super::client_error::map_error(status, headers, body)
    }
}

/// Neutral request → the wire body, or `Unsupported` naming what Anthropic cannot do.
fn build_request<'a>(
    req: &'a ChatRequest,
    model: &'a str,
    stream: bool,
    default_max_tokens: u32,
) -> Result<MessagesRequest<'a>, UpstreamError> {
    // A zero penalty is the OpenAI default and means "no penalty": nothing is lost.
    if req.presence_penalty.is_some_and(|p| p != 0.0) {
        return Err(UpstreamError::unsupported(KIND, "presence_penalty"));
    }
    if req.frequency_penalty.is_some_and(|p| p != 0.0) {
        return Err(UpstreamError::unsupported(KIND, "frequency_penalty"));
    }
    if req.seed.is_some() {
        return Err(UpstreamError::unsupported(KIND, "seed"));
    }
    let format = match &req.response_format {
        None | Some(ResponseFormat::Text) => None,
        // Anthropic has no "some JSON" mode, only a schema to keep to.
        Some(ResponseFormat::JsonObject) => {
            return Err(UpstreamError::unsupported(
                KIND,
                "response_format json_object",
            ));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => match structured_output(schema) {
            Some(schema) => Some(OutputFormat {
                kind: "json_schema",
                schema,
            }),
            // Anthropic would answer 400, which reads as the caller's mistake: skip to
            // a target that takes the schema as it is (OpenAI, Gemini).
            None => {
                return Err(UpstreamError::unsupported(
                    KIND,
                    "a structured-output JSON schema outside Anthropic's subset (every \
                     object with additionalProperties: false; no keywords such as minimum, \
                     pattern or default)",
                ));
            }
        },
    };

    let effort = req.effort.as_ref();
    // With reasoning on, Anthropic refuses a last assistant turn that calls a tool
    // without starting with its reasoning: what a turn answered by another provider
    // (which gives none) looks like after a failover. That turn is answered without
    // reasoning, as Anthropic allows, rather than refused for good.
    // `reasoning` false: reasoning asked for, and left out for this request. Only a
    // request with reasoning on walks its conversation for it.
    let unsigned_turn = || {
        req.messages
            .iter()
            .rfind(|m| m.role == Role::Assistant)
            .is_some_and(|turn| {
                turn.content
                    .iter()
                    .any(|b| matches!(b, ContentBlock::ToolUse { .. }))
                    && !turn
                        .content
                        .iter()
                        .find(|b| !b.is_unsigned_thinking())
                        .is_some_and(ContentBlock::is_signed_thinking)
            })
    };
    let reasoning = !(req.thinking_on() && unsigned_turn());
    let output_config =
        (format.is_some() || effort.is_some()).then_some(OutputConfig { format, effort });

    let disable_parallel = req.parallel_tool_calls == Some(false);
    let tool_choice = match &req.tool_choice {
        // Anthropic rejects tool_choice without tools; auto/none then mean nothing.
        Some(ToolChoice::Auto | ToolChoice::None) if req.tools.is_empty() => None,
        Some(ToolChoice::Auto) => Some(ToolChoiceParam::Auto {
            disable_parallel_tool_use: disable_parallel,
        }),
        Some(ToolChoice::Required) => Some(ToolChoiceParam::Any {
            disable_parallel_tool_use: disable_parallel,
        }),
        Some(ToolChoice::Tool { name }) => Some(ToolChoiceParam::Tool {
            name,
            disable_parallel_tool_use: disable_parallel,
        }),
        Some(ToolChoice::None) => Some(ToolChoiceParam::None),
        // parallel_tool_calls=false alone: say it through the default choice.
        None if disable_parallel && !req.tools.is_empty() => Some(ToolChoiceParam::Auto {
            disable_parallel_tool_use: true,
        }),
        None => None,
    };

    Ok(MessagesRequest {
        model,
        max_tokens: req.max_tokens.unwrap_or(default_max_tokens),
        messages: encode_messages(req)?,
        // Anthropic rejects empty text blocks.
        system: req
            .system
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .map(|(i, s)| TextBlockParam::new(s, req.cache_control_at(CachePoint::System(i))))
            .collect(),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stop_sequences: req.stop.iter().map(String::as_str).collect(),
        tools: req
            .tools
            .iter()
            .enumerate()
            .map(|(i, t)| ToolParam {
                name: &t.name,
                description: t.description.as_deref(),
                input_schema: input_schema(&t.parameters),
                cache_control: req.cache_control_at(CachePoint::Tool(i)),
                strict: t.strict,
            })
            .collect(),
        tool_choice,
        metadata: req.user.as_deref().map(|user_id| MetadataParam { user_id }),
        stream,
        cache_control: req.cache_control_at(CachePoint::Request),
        output_config,
        thinking: reasoning.then_some(req.thinking.as_ref()).flatten(),
        context_management: if reasoning {
            req.context_management.as_ref().map(Cow::Borrowed)
        } else {
            req.context_management_without_thinking().map(Cow::Owned)
        },
    })
}

/// What `POST /v1/messages/count_tokens` takes of a Messages request: the prompt,
/// not the settings of the answer (`max_tokens`, sampling, `stream`, `metadata`,
/// which it refuses).
const COUNT_TOKENS_FIELDS: &[&str] = &[
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "context_management",
    "output_config",
    "cache_control",
];

/// The body of a token count for `req`: the Messages request Anthropic would get,
/// cut to the fields the counter takes.
pub(crate) fn count_tokens_body(
    adapter: &dyn Adapter,
    req: &ChatRequest,
    model: &str,
) -> Result<Vec<u8>, UpstreamError> {
    let body = adapter.encode_request(req, model, false)?;
    let mut value: Value = serde_json::from_slice(&body)
        .map_err(|e| UpstreamError::protocol(format!("count_tokens body: {e}")))?;
    if let Value::Object(fields) = &mut value {
        fields.retain(|key, _| COUNT_TOKENS_FIELDS.contains(&key.as_str()));
    }
    serde_json::to_vec(&value)
        .map_err(|e| UpstreamError::protocol(format!("count_tokens body: {e}")))
}

/// `{"input_tokens": N}`.
pub(crate) fn decode_count(body: &[u8]) -> Result<u64, UpstreamError> {
    #[derive(serde::Deserialize)]
    struct Count {
        input_tokens: u64,
    }
    serde_json::from_slice::<Count>(body)
        .map(|c| c.input_tokens)
        .map_err(|e| UpstreamError::protocol(format!("anthropic token count is not valid: {e}")))
}

/// `schema` as Anthropic's structured output takes it, or `None` when it falls outside
/// the JSON Schema subset Anthropic's SDKs reduce a schema to before sending it
/// (`transform_schema`): every object closed with `additionalProperties: false`;
/// keywords only from `type` (JSON type names, alone or in a list), `properties`,
/// `required`, `items`, `anyOf`, `allOf`, `enum`, `const`, `$ref` with `$defs` or
/// `definitions`, `description`, `title`, a `format` from its list, and `minItems` of
/// 0 or 1. Rewritten on the way, as the SDKs do, where the meaning stays: the root's
/// `$schema` (it names the dialect) is dropped, `oneOf` becomes `anyOf`, and the
/// bounds zod writes for every integer (±(2^53 − 1)) are dropped.
fn structured_output(schema: &Value) -> Option<Value> {
    let mut root = schema.as_object()?.clone();
    // `shift_remove`: the schema's other keywords keep their order.
    root.shift_remove("$schema");
    subset(&Value::Object(root))
}

fn subset(schema: &Value) -> Option<Value> {
    const TYPES: [&str; 7] = [
        "object", "array", "string", "integer", "number", "boolean", "null",
    ];
    const FORMATS: [&str; 10] = [
        "date-time",
        "time",
        "date",
        "duration",
        "email",
        "hostname",
        "uri",
        "ipv4",
        "ipv6",
        "uuid",
    ];
    const SAFE_INTEGER: i64 = (1 << 53) - 1;
    let obj = schema.as_object()?;
    let types: Vec<&str> = match obj.get("type") {
        None => Vec::new(),
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(list)) => list.iter().map(Value::as_str).collect::<Option<_>>()?,
        Some(_) => return None,
    };
    if !types.iter().all(|t| TYPES.contains(t)) {
        return None;
    }
    let schemas = |value: &Value| -> Option<Value> {
        let list = value
            .as_array()?
            .iter()
            .map(subset)
            .collect::<Option<_>>()?;
        Some(Value::Array(list))
    };
    let mut out = Map::new();
    for (key, value) in obj {
        let (key, value) = match key.as_str() {
            "type" | "enum" | "const" | "required" => (key.as_str(), value.clone()),
            "description" | "title" | "$ref" if value.is_string() => (key.as_str(), value.clone()),
            "format" if value.as_str().is_some_and(|f| FORMATS.contains(&f)) => {
                (key.as_str(), value.clone())
            }
            "minItems" if value.as_u64().is_some_and(|n| n <= 1) => (key.as_str(), value.clone()),
            "additionalProperties" if value == &Value::Bool(false) => (key.as_str(), value.clone()),
            "items" => (key.as_str(), subset(value)?),
            "properties" | "$defs" | "definitions" => {
                let map = value
                    .as_object()?
                    .iter()
                    .map(|(name, s)| Some((name.clone(), subset(s)?)))
                    .collect::<Option<_>>()?;
                (key.as_str(), Value::Object(map))
            }
            "anyOf" | "allOf" => (key.as_str(), schemas(value)?),
            "oneOf" if !obj.contains_key("anyOf") => ("anyOf", schemas(value)?),
            "minimum" if value.as_i64() == Some(-SAFE_INTEGER) => continue,
            "maximum" if value.as_i64() == Some(SAFE_INTEGER) => continue,
            _ => return None,
        };
        out.insert(key.to_string(), value);
    }
    if types.contains(&"object") && out.get("additionalProperties") != Some(&Value::Bool(false)) {
        return None;
    }
    Some(Value::Object(out))
}

/// Anthropic requires an object schema with `"type": "object"`; OpenAI callers may
/// send no parameters at all.
fn input_schema(parameters: &Value) -> Cow<'_, Value> {
    match parameters {
        Value::Object(map) if map.contains_key("type") => Cow::Borrowed(parameters),
        Value::Object(map) if !map.is_empty() => {
            let mut map = map.clone();
            map.insert("type".into(), Value::String("object".into()));
            Cow::Owned(Value::Object(map))
        }
        _ => Cow::Owned(serde_json::json!({"type": "object", "properties": {}})),
    }
}

/// Encodes the turns, dropping empty text blocks and empty turns (Anthropic rejects
/// both), merging consecutive turns of the same role (Anthropic requires
/// alternation), and putting tool results first in each user turn (Anthropic
/// requires them to lead the turn that answers a tool call).
/// A conversation that dropping would change is refused first
/// ([`crate::check_not_emptied`]).
fn encode_messages(req: &ChatRequest) -> Result<Vec<MessageParam<'_>>, UpstreamError> {
    crate::check_not_emptied(KIND, req)?;
    let mut out: Vec<MessageParam<'_>> = Vec::with_capacity(req.messages.len());
    for (i, msg) in req.messages.iter().enumerate() {
        let mut blocks = Vec::with_capacity(msg.content.len());
        for (j, block) in msg.content.iter().enumerate() {
            let cache = |part: Option<usize>| {
                req.cache_control_at(match part {
                    None => CachePoint::Block {
                        message: i,
                        block: j,
                    },
                    Some(part) => CachePoint::Part {
                        message: i,
                        block: j,
                        part,
                    },
                })
            };
            if let Some(encoded) = encode_block(block, cache)? {
                blocks.push(encoded);
            }
        }
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.role == msg.role => last.content.extend(blocks),
            _ => out.push(MessageParam {
                role: msg.role,
                content: blocks,
            }),
        }
    }
    for turn in out.iter_mut().filter(|m| m.role == Role::User) {
        // Stable: keeps the relative order of results and of the other blocks.
        turn.content
            .sort_by_key(|b| !matches!(b, ContentBlockParam::ToolResult { .. }));
    }
    Ok(out)
}

/// One block; `cache` gives the caller's `cache_control` for the block (`None`) or
/// for a part inside it (`Some(part)`: a tool result's content).
fn encode_block<'a>(
    block: &'a ContentBlock,
    cache: impl Fn(Option<usize>) -> Option<&'a Value>,
) -> Result<Option<ContentBlockParam<'a>>, UpstreamError> {
    let cache_control = cache(None);
    Ok(match block {
        ContentBlock::Text { text } if text.is_empty() => None,
        ContentBlock::Text { text } => Some(ContentBlockParam::Text {
            text,
            cache_control,
        }),
        ContentBlock::Image { source, .. } => Some(ContentBlockParam::Image {
            source: image_source(source),
            cache_control,
        }),
        ContentBlock::ToolUse { id, name, input } => Some(ContentBlockParam::ToolUse {
            id: tool_id(id),
            name,
            input,
            cache_control,
        }),
        // Reasoning without a signature is another provider's (an OpenAI-compatible
        // server's), which Anthropic refuses: it is left out, as for other providers.
        block if block.is_unsigned_thinking() => None,
        // Anthropic checks the signature; a caller sends back what it was given.
        ContentBlock::Thinking {
            thinking,
            signature,
        } => Some(ContentBlockParam::Thinking {
            thinking,
            signature,
        }),
        ContentBlock::RedactedThinking { data } => {
            Some(ContentBlockParam::RedactedThinking { data })
        }
        ContentBlock::ToolResult {
            tool_use_id,
            content,
            is_error,
        } => {
            let mut inner = Vec::with_capacity(content.len());
            for (k, part) in content.iter().enumerate() {
                match part {
                    ContentBlock::Text { text } if text.is_empty() => {}
                    ContentBlock::Text { text } => inner.push(ContentBlockParam::Text {
                        text,
                        cache_control: cache(Some(k)),
                    }),
                    ContentBlock::Image { source, .. } => inner.push(ContentBlockParam::Image {
                        source: image_source(source),
                        cache_control: cache(Some(k)),
                    }),
                    ContentBlock::ToolUse { .. }
                    | ContentBlock::ToolResult { .. }
                    | ContentBlock::Thinking { .. }
                    | ContentBlock::RedactedThinking { .. } => {
                        return Err(UpstreamError::unsupported(
                            KIND,
                            "tool calls, tool results or reasoning nested inside a tool result",
                        ));
                    }
                }
            }
            Some(ContentBlockParam::ToolResult {
                tool_use_id: tool_id(tool_use_id),
                content: inner,
                is_error: *is_error,
                cache_control,
            })
        }
    })
}

fn image_source(source: &ImageSource) -> ImageSourceParam<'_> {
    match source {
        ImageSource::Url { url } => ImageSourceParam::Url { url },
        ImageSource::Base64 { media_type, data } => ImageSourceParam::Base64 { media_type, data },
    }
}

fn response_block(block: ResponseBlock) -> Option<ContentBlock> {
    match block {
        ResponseBlock::Text { text } => Some(ContentBlock::Text { text }),
        ResponseBlock::ToolUse { id, name, input } => {
            let input = if input.is_null() {
                Value::Object(Default::default())
            } else {
                input
            };
            Some(ContentBlock::ToolUse { id, name, input })
        }
        ResponseBlock::Thinking {
            thinking,
            signature,
        } => Some(ContentBlock::Thinking {
            thinking,
            signature,
        }),
        ResponseBlock::RedactedThinking { data } => Some(ContentBlock::RedactedThinking { data }),
        ResponseBlock::Other => None,
    }
}

/// A tool call's id as Anthropic takes it (`^[a-zA-Z0-9_-]+$`). Other providers' ids
/// can hold more (`functions.get_weather:0` from vLLM-style servers), and Anthropic
/// answers those with a 400: each other character becomes `_`, and a hash of the
/// whole id keeps two ids that differ only there apart. The same id always maps to
/// the same text, so a call and its result still match.
fn tool_id(id: &str) -> Cow<'_, str> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !id.is_empty() && id.chars().all(valid) {
        return Cow::Borrowed(id);
    }
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let kept: String = id.chars().map(|c| if valid(c) { c } else { '_' }).collect();
    Cow::Owned(format!("{kept}_{hash:016x}"))
}

/// Anthropic's `stop_reason` → neutral.
pub(crate) fn stop_reason_from_wire(reason: Option<&str>) -> StopReason {
    match reason {
        Some("end_turn") => StopReason::EndTurn,
        Some("max_tokens" | "model_context_window_exceeded") => StopReason::MaxTokens,
        Some("stop_sequence") => StopReason::StopSequence,
        Some("tool_use") => StopReason::ToolUse,
        // Anthropic's safety classifiers stopped the answer (any text before it is
        // kept): a content filter's stop, as OpenAI and Gemini call theirs.
        Some("refusal") => StopReason::ContentFilter,
        // pause_turn (a long server-tool turn paused) and anything newer.
        _ => StopReason::Other,
    }
}

pub(crate) fn usage_from_wire(usage: &UsageWire) -> Usage {
    with_cache_in_input(Usage {
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cache_read_input_tokens: usage.cache_read_input_tokens,
        cache_creation_input_tokens: usage.cache_creation_input_tokens,
    })
}

/// Anthropic's `input_tokens` leaves out the tokens read from and written to the
/// prompt cache; the neutral count (OpenAI's and Gemini's) includes them.
pub(crate) fn with_cache_in_input(anthropic: Usage) -> Usage {
    Usage {
        input_tokens: anthropic
            .input_tokens
            .saturating_add(anthropic.cache_read_input_tokens.unwrap_or(0))
            .saturating_add(anthropic.cache_creation_input_tokens.unwrap_or(0)),
        ..anthropic
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_core::{ErrorClass, Message, Tool};
    use serde_json::json;

    fn adapter() -> AnthropicAdapter {
        AnthropicAdapter::new(DEFAULT_MAX_TOKENS)
    }

    fn encode(req: &ChatRequest) -> Value {
        let bytes = adapter()
            .encode_request(req, "claude-sonnet-4-5", false)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn a_token_count_sends_the_prompt_and_none_of_the_answer_settings() {
        let req = ChatRequest {
            system: vec!["Be brief.".into()],
            messages: vec![Message::user_text("hi")],
            tools: vec![weather_tool()],
            max_tokens: Some(1),
            temperature: Some(0.3),
            stop: vec!["END".into()],
            user: Some("u".into()),
            thinking: Some(json!({"type": "adaptive"})),
            ..ChatRequest::default()
        };
        let body = count_tokens_body(&adapter(), &req, "claude-sonnet-4-5").unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        let mut keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["messages", "model", "system", "thinking", "tools"]);
        assert_eq!(body["model"], "claude-sonnet-4-5");
        assert_eq!(decode_count(br#"{"input_tokens": 42}"#).unwrap(), 42);
        assert_eq!(decode_count(b"{}").unwrap_err().class, ErrorClass::Protocol);
    }

    #[test]
    fn reasoning_context_editing_and_effort_go_on_as_given() {
        let mut req = ChatRequest {
            messages: vec![
                Message::user_text("weather?"),
                Message {
                    role: Role::Assistant,
                    content: vec![
                        ContentBlock::Thinking {
                            thinking: "Paris.".into(),
                            signature: "sig-1".into(),
                        },
                        ContentBlock::RedactedThinking {
                            data: "opaque".into(),
                        },
                        ContentBlock::ToolUse {
                            id: "toolu_1".into(),
                            name: "get_weather".into(),
                            input: json!({"city": "Paris"}),
                        },
                    ],
                },
            ],
            thinking: Some(json!({"type": "enabled", "budget_tokens": 2048})),
            context_management: Some(json!({"edits": [{"type": "clear_thinking_20251015"}]})),
            effort: Some(json!("high")),
            ..ChatRequest::default()
        };
        let body = encode(&req);
        assert_eq!(
            body["thinking"],
            json!({"type": "enabled", "budget_tokens": 2048})
        );
        assert_eq!(
            body["context_management"],
            json!({"edits": [{"type": "clear_thinking_20251015"}]})
        );
        assert_eq!(body["output_config"], json!({"effort": "high"}));
        assert_eq!(
            body["messages"][1]["content"],
            json!([
                {"type": "thinking", "thinking": "Paris.", "signature": "sig-1"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ])
        );
        // With a schema too, both go in the one output_config.
        req.response_format = Some(ResponseFormat::JsonSchema {
            name: "output".into(),
            schema: json!({"type": "object", "properties": {}, "additionalProperties": false}),
            strict: true,
        });
        let body = encode(&req);
        assert_eq!(body["output_config"]["effort"], "high");
        assert_eq!(body["output_config"]["format"]["type"], "json_schema");
        req.effort = None;
        assert!(encode(&req)["output_config"].get("effort").is_none());

        // A tool-calling turn without reasoning (another provider answered it, after a
        // failover): Anthropic would refuse reasoning now, so this turn goes without.
        req.messages[1].content.drain(..2);
        let body = encode(&req);
        assert!(body.get("thinking").is_none(), "{body}");
        assert!(body.get("context_management").is_none(), "{body}");
        // Reasoning an OpenAI-compatible server streamed carries no signature, which
        // Anthropic refuses: the block is left out, and the turn is still one without
        // reasoning.
        req.messages[1].content.insert(
            0,
            ContentBlock::Thinking {
                thinking: "vLLM's reasoning".into(),
                signature: String::new(),
            },
        );
        let body = encode(&req);
        assert!(body.get("thinking").is_none(), "{body}");
        assert_eq!(
            body["messages"][1]["content"],
            json!([{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}])
        );
        req.messages[1].content.remove(0);
        // Edits that do not need reasoning stay.
        req.context_management = Some(json!({"edits": [
            {"type": "clear_thinking_20251015", "keep": "all"},
            {"type": "clear_tool_uses_20250919"}
        ]}));
        assert_eq!(
            encode(&req)["context_management"],
            json!({"edits": [{"type": "clear_tool_uses_20250919"}]})
        );
        // Disabled reasoning is sent as given: absent is not disabled on every model.
        req.thinking = Some(json!({"type": "disabled"}));
        assert_eq!(encode(&req)["thinking"], json!({"type": "disabled"}));
    }

    fn weather_tool() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: Some("Weather by city".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            strict: false,
        }
    }

    #[test]
    fn url_and_headers_follow_the_reference() {
        let a = adapter();
        assert_eq!(
            a.url("https://api.anthropic.com", "m", true),
            "https://api.anthropic.com/v1/messages"
        );
        let mut headers = HeaderMap::new();
        a.auth_headers(Some("sk-ant-123"), &mut headers);
        assert_eq!(headers["anthropic-version"], "2023-06-01");
        assert_eq!(headers["x-api-key"], "sk-ant-123");
        assert!(headers["x-api-key"].is_sensitive());
        assert!(!headers.contains_key("authorization"));
    }

    #[test]
    fn minimal_request_has_required_fields_only() {
        let req = ChatRequest {
            model: "route-name".into(),
            messages: vec![Message::user_text("hi")],
            ..Default::default()
        };
        assert_eq!(
            encode(&req),
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 4096,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
            })
        );
        let small = AnthropicAdapter::new(100)
            .encode_request(&req, "m", true)
            .unwrap();
        let small: Value = serde_json::from_slice(&small).unwrap();
        assert_eq!(small["max_tokens"], 100);
        assert_eq!(small["stream"], true);
    }

    #[test]
    fn full_request_encodes_every_field() {
        let req = ChatRequest {
            model: "route".into(),
            system: vec!["Be brief.".into(), String::new(), "Be kind.".into()],
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![
                        ContentBlock::Text {
                            text: "What is this?".into(),
                        },
                        ContentBlock::Image {
                            source: ImageSource::Base64 {
                                media_type: "image/png".into(),
                                data: "iVBOR".into(),
                            },
                            detail: None,
                        },
                        ContentBlock::Image {
                            source: ImageSource::Url {
                                url: "https://example.com/a.jpg".into(),
                            },
                            detail: None,
                        },
                    ],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![
                        ContentBlock::Text {
                            text: String::new(),
                        },
                        ContentBlock::ToolUse {
                            id: "toolu_1".into(),
                            name: "get_weather".into(),
                            input: json!({"city": "Paris"}),
                        },
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![ContentBlock::ToolResult {
                        tool_use_id: "toolu_1".into(),
                        content: vec![ContentBlock::Text {
                            text: "sunny".into(),
                        }],
                        is_error: false,
                    }],
                },
            ],
            tools: vec![weather_tool()],
            tool_choice: Some(ToolChoice::Tool {
                name: "get_weather".into(),
            }),
            parallel_tool_calls: Some(false),
            max_tokens: Some(512),
            temperature: Some(0.5),
            top_p: Some(0.9),
            top_k: Some(40),
            presence_penalty: Some(0.0),
            stop: vec!["END".into()],
            response_format: Some(ResponseFormat::Text),
            user: Some("user-42".into()),
            ..Default::default()
        };
        assert_eq!(
            encode(&req),
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 512,
                "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]}
                    ]}
                ],
                "temperature": 0.5,
                "top_p": 0.9,
                "top_k": 40,
                "stop_sequences": ["END"],
                "tools": [{
                    "name": "get_weather",
                    "description": "Weather by city",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}
                }],
                "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
                "metadata": {"user_id": "user-42"}
            })
        );
    }

    #[test]
    fn consecutive_same_role_turns_are_merged_with_tool_results_first() {
        let req = ChatRequest {
            messages: vec![
                Message::user_text("first"),
                Message::user_text("second"),
                Message {
                    role: Role::Assistant,
                    content: vec![ContentBlock::ToolUse {
                        id: "a".into(),
                        name: "f".into(),
                        input: json!({}),
                    }],
                },
                Message::user_text("also this"),
                Message {
                    role: Role::User,
                    content: vec![ContentBlock::ToolResult {
                        tool_use_id: "a".into(),
                        content: vec![],
                        is_error: true,
                    }],
                },
                Message {
                    role: Role::User,
                    content: vec![ContentBlock::Text {
                        text: String::new(),
                    }],
                },
            ],
            ..Default::default()
        };
        let v = encode(&req);
        assert_eq!(
            v["messages"],
            json!([
                {"role": "user", "content": [
                    {"type": "text", "text": "first"},
                    {"type": "text", "text": "second"}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "a", "name": "f", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "a", "is_error": true},
                    {"type": "text", "text": "also this"}
                ]}
            ])
        );
    }

    #[test]
    fn tool_choice_variants_and_parallel_flag() {
        let base = ChatRequest {
            messages: vec![Message::user_text("x")],
            tools: vec![weather_tool()],
            ..Default::default()
        };
        let cases = [
            (Some(ToolChoice::Auto), None, json!({"type": "auto"})),
            (Some(ToolChoice::Required), None, json!({"type": "any"})),
            (
                Some(ToolChoice::Required),
                Some(false),
                json!({"type": "any", "disable_parallel_tool_use": true}),
            ),
            (Some(ToolChoice::None), Some(false), json!({"type": "none"})),
            (
                None,
                Some(false),
                json!({"type": "auto", "disable_parallel_tool_use": true}),
            ),
            (Some(ToolChoice::Auto), Some(true), json!({"type": "auto"})),
        ];
        for (choice, parallel, expected) in cases {
            let req = ChatRequest {
                tool_choice: choice,
                parallel_tool_calls: parallel,
                ..base.clone()
            };
            assert_eq!(encode(&req)["tool_choice"], expected);
        }
        let no_tools = ChatRequest {
            messages: vec![Message::user_text("x")],
            tool_choice: Some(ToolChoice::None),
            parallel_tool_calls: Some(false),
            ..Default::default()
        };
        assert!(encode(&no_tools).get("tool_choice").is_none());
    }

    #[test]
    fn tools_without_schema_get_an_empty_object_schema() {
        let req = ChatRequest {
            messages: vec![Message::user_text("x")],
            tools: vec![
                Tool {
                    name: "noop".into(),
                    description: None,
                    parameters: Value::Null,
                    strict: false,
                },
                Tool {
                    name: "typed".into(),
                    description: None,
                    parameters: json!({"properties": {"a": {"type": "integer"}}}),
                    strict: false,
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            encode(&req)["tools"],
            json!([
                {"name": "noop", "input_schema": {"type": "object", "properties": {}}},
                {"name": "typed", "input_schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}
            ])
        );
    }

    #[test]
    fn a_json_schema_response_format_is_anthropic_structured_output() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"], "additionalProperties": false});
        let req = ChatRequest {
            messages: vec![Message::user_text("x")],
            response_format: Some(ResponseFormat::JsonSchema {
                name: "weather".into(),
                schema: schema.clone(),
                strict: false,
            }),
            ..Default::default()
        };
        assert_eq!(
            encode(&req)["output_config"],
            json!({"format": {"type": "json_schema", "schema": schema}})
        );
        let plain = ChatRequest {
            messages: vec![Message::user_text("x")],
            ..Default::default()
        };
        assert!(encode(&plain).get("output_config").is_none());
    }

    #[test]
    fn a_schema_outside_anthropics_subset_skips_the_target() {
        let schema_req = |schema: Value| ChatRequest {
            messages: vec![Message::user_text("x")],
            response_format: Some(ResponseFormat::JsonSchema {
                name: "w".into(),
                schema,
                strict: true,
            }),
            ..Default::default()
        };
        let sent = |schema: Value| -> Result<Value, UpstreamError> {
            let bytes = adapter().encode_request(&schema_req(schema), "m", false)?;
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            Ok(body["output_config"]["format"]["schema"].clone())
        };
        // Taken as they are.
        let as_is = [
            json!({"type": "object", "properties": {"a": {"type": "string", "format": "date"}},
                   "required": ["a"], "additionalProperties": false}),
            // What the SDK's transform makes of a pydantic model with a nested one.
            json!({"$defs": {"In": {"type": "object", "properties": {"n": {"type": "integer"}},
                                    "additionalProperties": false, "title": "In"}},
                   "type": "object", "title": "Out", "additionalProperties": false,
                   "properties": {"in": {"$ref": "#/$defs/In"},
                                  "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                                  "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                                  "kind": {"enum": ["a", "b"]}}}),
            // zod's `.nullable()`, and older generators' `definitions`.
            json!({"type": "object", "additionalProperties": false,
                   "properties": {"age": {"type": ["number", "null"]}, "p": {"$ref": "#/definitions/P"}},
                   "definitions": {"P": {"type": "object", "properties": {}, "additionalProperties": false}}}),
        ];
        for schema in as_is {
            assert_eq!(sent(schema.clone()).unwrap(), schema);
        }
        // Rewritten where the meaning stays, as the SDKs do.
        let rewritten = [
            (
                // zod via the OpenAI helper: the dialect, and its bounds for any integer.
                json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                       "properties": {"n": {"type": "integer", "minimum": -9007199254740991_i64,
                                            "maximum": 9007199254740991_i64}},
                       "required": ["n"], "additionalProperties": false}),
                json!({"type": "object", "properties": {"n": {"type": "integer"}},
                       "required": ["n"], "additionalProperties": false}),
            ),
            (
                json!({"oneOf": [{"type": "string"}, {"type": "integer"}]}),
                json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
            ),
        ];
        for (schema, expected) in rewritten {
            assert_eq!(sent(schema).unwrap(), expected);
        }
        let skipped = [
            // Not closed: Anthropic answers 400 "must be explicitly set to false".
            json!({"type": "object", "properties": {"a": {"type": "string"}}}),
            json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}},
                   "additionalProperties": false}),
            json!({"type": "object", "additionalProperties": false,
                   "properties": {"in": {"type": "object", "properties": {}}}}),
            json!({"type": ["object", "null"], "properties": {}}),
            json!({"type": "object", "additionalProperties": false,
                   "properties": {"s": {"type": "string", "pattern": "^a"}}}),
            json!({"type": "object", "additionalProperties": false,
                   "properties": {"s": {"type": "string", "default": "x"}}}),
            json!({"type": "object", "additionalProperties": false,
                   "properties": {"s": {"type": "string", "$schema": "x"}}}),
            json!({"type": "tuple"}),
        ];
        for schema in skipped {
            let err = sent(schema.clone()).unwrap_err();
            assert_eq!(err.class, ErrorClass::Unsupported, "{schema}");
            assert!(
                err.message.contains("additionalProperties"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn features_anthropic_lacks_are_unsupported() {
        let base = ChatRequest {
            messages: vec![Message::user_text("x")],
            ..Default::default()
        };
        let cases: [(ChatRequest, &str); 4] = [
            (
                ChatRequest {
                    presence_penalty: Some(0.5),
                    ..base.clone()
                },
                "presence_penalty",
            ),
            (
                ChatRequest {
                    frequency_penalty: Some(-1.0),
                    ..base.clone()
                },
                "frequency_penalty",
            ),
            (
                ChatRequest {
                    seed: Some(7),
                    ..base.clone()
                },
                "seed",
            ),
            (
                ChatRequest {
                    response_format: Some(ResponseFormat::JsonObject),
                    ..base.clone()
                },
                "json_object",
            ),
        ];
        for (req, feature) in cases {
            let err = adapter().encode_request(&req, "m", false).unwrap_err();
            assert_eq!(err.class, ErrorClass::Unsupported);
            assert!(err.message.contains(feature), "{}", err.message);
            assert!(err.message.contains("anthropic"), "{}", err.message);
        }
    }

    #[test]
    fn response_decodes_thinking_text_and_tool_use_and_skips_server_tools() {
        let body = json!({
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [
                {"type": "thinking", "thinking": "let me see", "signature": "sig"},
                {"type": "text", "text": "Checking.", "citations": null},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            "usage": {
                "input_tokens": 10, "output_tokens": 20,
                "cache_read_input_tokens": 5, "cache_creation_input_tokens": 0,
                "service_tier": "standard"
            }
        });
        let resp = adapter()
            .decode_response(&serde_json::to_vec(&body).unwrap())
            .unwrap();
        assert_eq!(
            resp,
            ChatResponse {
                id: "msg_01".into(),
                model: "claude-sonnet-4-5-20250929".into(),
                content: vec![
                    ContentBlock::Thinking {
                        thinking: "let me see".into(),
                        signature: "sig".into()
                    },
                    ContentBlock::Text {
                        text: "Checking.".into()
                    },
                    ContentBlock::ToolUse {
                        id: "toolu_1".into(),
                        name: "get_weather".into(),
                        input: json!({"city": "Paris"}),
                    },
                ],
                stop_reason: StopReason::ToolUse,
                stop_sequence: None,
                usage: Usage {
                    // Anthropic counts cached prompt tokens apart; the neutral count includes them.
                    input_tokens: 15,
                    output_tokens: 20,
                    cache_read_input_tokens: Some(5),
                    cache_creation_input_tokens: Some(0),
                },
            }
        );
    }

    #[test]
    fn tool_ids_anthropic_refuses_are_rewritten_the_same_way_each_time() {
        assert_eq!(tool_id("toolu_01A-b"), "toolu_01A-b");
        let odd = tool_id("functions.get_weather:0");
        assert!(odd.starts_with("functions_get_weather_0_"), "{odd}");
        assert!(
            odd.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        );
        assert_eq!(odd, tool_id("functions.get_weather:0"));
        assert_ne!(odd, tool_id("functions:get_weather.0"));
        assert!(!tool_id("").is_empty());
    }

    #[test]
    fn a_whole_message_without_a_stop_reason_is_no_answer() {
        let body = json!({"id": "m", "type": "message", "role": "assistant", "model": "c",
            "content": [{"type": "text", "text": "Cut"}], "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": 1, "output_tokens": 1}});
        let err = adapter()
            .decode_response(&serde_json::to_vec(&body).unwrap())
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Protocol);
        assert!(err.message.contains("stop_reason"), "{err:?}");
    }

    #[test]
    fn stop_reasons_map_to_neutral() {
        let cases = [
            ("end_turn", StopReason::EndTurn),
            ("max_tokens", StopReason::MaxTokens),
            ("stop_sequence", StopReason::StopSequence),
            ("tool_use", StopReason::ToolUse),
            ("pause_turn", StopReason::Other),
            ("refusal", StopReason::ContentFilter),
            ("model_context_window_exceeded", StopReason::MaxTokens),
            ("something_new", StopReason::Other),
        ];
        for (wire, neutral) in cases {
            assert_eq!(stop_reason_from_wire(Some(wire)), neutral, "{wire}");
        }
        let body = json!({
            "id": "m", "type": "message", "role": "assistant", "model": "c",
            "content": [{"type": "text", "text": "a"}],
            "stop_reason": "stop_sequence", "stop_sequence": "END",
            "usage": {"input_tokens": 1, "output_tokens": 1}
        });
        let resp = adapter()
            .decode_response(&serde_json::to_vec(&body).unwrap())
            .unwrap();
        assert_eq!(resp.stop_reason, StopReason::StopSequence);
        assert_eq!(resp.stop_sequence.as_deref(), Some("END"));
    }

    #[test]
    fn malformed_response_is_a_protocol_error() {
        for body in [&b"not json"[..], b"{\"type\":\"message\"}", b"[]"] {
            let err = adapter().decode_response(body).unwrap_err();
            assert_eq!(err.class, ErrorClass::Protocol);
        }
    }

    #[test]
    fn absurd_usage_counts_saturate_instead_of_overflowing() {
        let usage = usage_from_wire(&UsageWire {
            input_tokens: u64::MAX,
            output_tokens: 7,
            cache_read_input_tokens: Some(5),
            cache_creation_input_tokens: Some(5),
        });
        assert_eq!(usage.input_tokens, u64::MAX);
        assert_eq!(usage.total(), u64::MAX);
    }
}
