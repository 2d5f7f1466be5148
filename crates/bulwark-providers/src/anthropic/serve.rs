//! Speaking the Anthropic Messages API (Bulwark's `/v1/messages` ingress and the
//! mock provider): decoding a request body into a neutral [`ChatRequest`].
//! The response side (message object, stream encoder, error body) lives in
//! `serve_encode.rs` and is re-exported here.
//!
//! Decoding walks the JSON by hand so every error names its field the way
//! Anthropic does (`messages.0.content.1.source.type: …`), rejects unknown fields
//! ("Extra inputs are not permitted") and names features Bulwark cannot carry
//! (extended thinking, server tools, documents, containers, MCP servers) instead of
//! silently dropping them.

use bulwark_core::{
    CacheBreakpoint, CachePoint, ChatRequest, ContentBlock, GatewayError, ImageSource, Message,
    ResponseFormat, Role, Tool, ToolChoice,
};
use serde_json::Value;

pub use super::serve_encode::{StreamEncoder, encode_response, error_body};
use super::serve_fields::{
    Object, array, boolean, extra, invalid, is_empty_array, is_empty_object, is_trivial, missing,
    number, object, only_keys, required, string, uint, unsupported,
};

/// Decodes a `POST /v1/messages` body.
pub fn decode_request(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    decode_value(parse_body(body)?)
}

fn parse_body(body: &[u8]) -> Result<Value, GatewayError> {
    serde_json::from_slice(body)
        .map_err(|e| GatewayError::invalid(format!("request body is not valid JSON: {e}")))
}

/// Decodes a parsed `POST /v1/messages` body.
fn decode_value(value: Value) -> Result<ChatRequest, GatewayError> {
    let Value::Object(obj) = value else {
        return Err(GatewayError::invalid("request body must be a JSON object"));
    };

    let mut req = ChatRequest::default();
    let (mut model, mut max_tokens, mut messages) = (None, None, None);
    for (key, val) in &obj {
        let path = key.as_str();
        match path {
            "model" => model = Some(string(val, path)?.to_owned()),
            "max_tokens" => match uint(val, path)? {
                0 => return Err(invalid(path, "Input should be greater than or equal to 1")),
                n => max_tokens = Some(n),
            },
            "messages" => messages = Some(decode_messages(val)?),
            // Absent-equivalent nulls are accepted for every optional field.
            _ if val.is_null() => {}
            "system" => req.system = decode_system(val)?,
            "tools" => req.tools = decode_tools(val)?,
            "tool_choice" => {
                let (choice, parallel) = decode_tool_choice(val)?;
                req.tool_choice = Some(choice);
                req.parallel_tool_calls = parallel;
            }
            "stop_sequences" => {
                req.stop = array(val, path)?
                    .iter()
                    .enumerate()
                    .map(|(i, s)| string(s, &format!("{path}.{i}")).map(str::to_owned))
                    .collect::<Result<_, _>>()?;
            }
            "temperature" => req.temperature = Some(number(val, path)?),
            "top_p" => req.top_p = Some(number(val, path)?),
            "top_k" => req.top_k = Some(uint(val, path)?),
            "metadata" => {
                let meta = object(val, path)?;
                only_keys(meta, path, &["user_id"])?;
                req.user = match meta.get("user_id") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(string(v, "metadata.user_id")?.to_owned()),
                };
            }
            "stream" => req.stream = boolean(val, path)?,
            // Read with the others below (`cache_breakpoints`).
            "cache_control" => {}
            "service_tier" => match string(val, path)? {
                "auto" | "standard_only" => {}
                other => {
                    return Err(invalid(
                        path,
                        format!("Input should be 'auto' or 'standard_only', got '{other}'"),
                    ));
                }
            },
            "thinking" => req.thinking = decode_thinking(val)?,
            "container" => return Err(unsupported(path, "containers")),
            "mcp_servers" if is_empty_array(val) => {}
            "mcp_servers" => return Err(unsupported(path, "MCP servers")),
            "output_config" => {
                (req.response_format, req.effort) = decode_output_config(val)?;
            }
            "speed" => match string(val, path)? {
                "standard" => {}
                other => return Err(unsupported(path, &format!("speed '{other}'"))),
            },
            "diagnostics" if is_empty_object(val) => {}
            "diagnostics" => return Err(unsupported(path, "diagnostics")),
            "inference_geo" => return Err(unsupported(path, "inference_geo")),
            // Context editing (a beta): Anthropic's own, checked there.
            "context_management" => {
                object(val, path)?;
                req.context_management = Some(val.clone());
            }
            // Conversations held by the provider between calls (the SDK's tool runner
            // asks for one by default): a gateway that may answer each turn from a
            // different provider cannot keep them. The whole conversation goes in
            // `messages` instead (the tool runner's `thread: false`).
            "thread" => {
                return Err(invalid(
                    path,
                    "server-held conversation threads are not supported by this gateway: \
                     send the whole conversation in `messages` (the SDK's tool runner does \
                     so with `thread: false`)",
                )
                .with_code(super::serve_encode::THREAD_UNSUPPORTED));
            }
            _ => return Err(extra(path)),
        }
    }
    req.model = model.ok_or_else(|| missing("model"))?;
    req.max_tokens = Some(max_tokens.ok_or_else(|| missing("max_tokens"))?);
    req.messages = messages.ok_or_else(|| missing("messages"))?;
    req.cache_control = cache_breakpoints(&obj)?;
    Ok(req)
}

/// Decodes a `POST /v1/messages/count_tokens` body: a Messages request without the
/// settings of the answer (`max_tokens`, sampling, `stream`, `metadata`), which the
/// counter refuses as Anthropic's does.
pub fn decode_count_request(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    let mut value = parse_body(body)?;
    let Value::Object(obj) = &mut value else {
        return Err(GatewayError::invalid("request body must be a JSON object"));
    };
    const ANSWER_SETTINGS: &[&str] = &[
        "max_tokens",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "metadata",
        "service_tier",
    ];
    if let Some(key) = ANSWER_SETTINGS.iter().find(|k| obj.contains_key(**k)) {
        return Err(extra(key));
    }
    // The Messages decoder wants an answer length; a count has none to give.
    obj.insert("max_tokens".into(), Value::from(1));
    decode_value(value)
}

/// `thinking`: `{"type": "enabled", "budget_tokens": N}`, `{"type": "adaptive"}`,
/// `{"type": "disabled"}`, or a kind added since. Kept as given, disabled included
/// (on models that think by default, leaving it out is not the same); Bulwark checks
/// its shape and a budget's type, Anthropic the rest.
fn decode_thinking(val: &Value) -> Result<Option<Value>, GatewayError> {
    let thinking = object(val, "thinking")?;
    let kind = string(required(thinking, "type", "thinking")?, "thinking.type")?;
    if kind == "enabled" {
        uint(
            required(thinking, "budget_tokens", "thinking")?,
            "thinking.budget_tokens",
        )?;
    }
    Ok(Some(val.clone()))
}

/// `output_config`: its `format` (structured output: `{"type": "json_schema",
/// "schema": …}`) becomes the neutral JSON-schema response format, which every
/// provider kind can be asked for; its `effort` is kept as given for Anthropic
/// upstreams (the others have no counterpart that every model takes).
fn decode_output_config(
    val: &Value,
) -> Result<(Option<ResponseFormat>, Option<Value>), GatewayError> {
    let config = object(val, "output_config")?;
    only_keys(config, "output_config", &["format", "effort"])?;
    let effort = match config.get("effort") {
        None | Some(Value::Null) => None,
        Some(effort) => Some(string(effort, "output_config.effort").map(|_| effort.clone())?),
    };
    let format = match config.get("format") {
        None | Some(Value::Null) => return Ok((None, effort)),
        Some(format) => object(format, "output_config.format")?,
    };
    only_keys(format, "output_config.format", &["type", "schema"])?;
    let kind = string(
        required(format, "type", "output_config.format")?,
        "output_config.format.type",
    )?;
    if kind != "json_schema" {
        return Err(invalid(
            "output_config.format.type",
            format!("Input should be 'json_schema', got '{kind}'"),
        ));
    }
    let schema = required(format, "schema", "output_config.format")?;
    object(schema, "output_config.format.schema")?;
    let format = ResponseFormat::JsonSchema {
        // OpenAI wants a name; Anthropic's format has none.
        name: "output".to_string(),
        schema: schema.clone(),
        // Anthropic's structured output always keeps to the schema; OpenAI does so
        // (`strict`) only for a schema whose objects are closed and list every
        // property as required, and answers 400 to `strict` on any other.
        strict: openai_strict_takes(schema),
    };
    Ok((Some(format), effort))
}

/// Whether OpenAI's strict structured output takes `schema`: every object in it has
/// `additionalProperties: false` and all its properties in `required`.
pub(crate) fn openai_strict_takes(schema: &Value) -> bool {
    match schema {
        Value::Array(items) => items.iter().all(openai_strict_takes),
        Value::Object(obj) => {
            let closed = match obj.get("properties").and_then(Value::as_object) {
                Some(props) => {
                    let required: Vec<&str> = obj
                        .get("required")
                        .and_then(Value::as_array)
                        .map(|r| r.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    obj.get("additionalProperties") == Some(&Value::Bool(false))
                        && props.keys().all(|k| required.contains(&k.as_str()))
                }
                None => {
                    obj.get("type").and_then(Value::as_str) != Some("object")
                        || obj.get("additionalProperties") == Some(&Value::Bool(false))
                }
            };
            // Property names are keys, not schemas: look into their schemas only.
            closed
                && obj.iter().all(|(key, value)| match key.as_str() {
                    "properties" | "$defs" | "definitions" => value
                        .as_object()
                        .is_none_or(|m| m.values().all(openai_strict_takes)),
                    "enum" | "const" | "default" | "examples" | "required" => true,
                    _ => openai_strict_takes(value),
                })
        }
        _ => true,
    }
}

/// Every `cache_control` of the request, by where it sits: the request's own, a
/// system block's, a tool's, a message content block's. The decoders above map
/// those arrays one to one, so an index here is the neutral request's index too.
fn cache_breakpoints(obj: &Object) -> Result<Vec<CacheBreakpoint>, GatewayError> {
    let mut found = Vec::new();
    let mut take = |control: Option<&Value>, at: CachePoint| {
        match control {
            None | Some(Value::Null) => {}
            Some(control @ Value::Object(_)) => found.push(CacheBreakpoint {
                at,
                control: control.clone(),
            }),
            Some(_) => {
                return Err(invalid(
                    &format!("{}cache_control", field_path(at)),
                    "Input should be a valid dictionary",
                ));
            }
        }
        Ok(())
    };
    take(obj.get("cache_control"), CachePoint::Request)?;
    let items = |key: &str| elements(obj.get(key));
    for (i, block) in items("system").enumerate() {
        take(block.get("cache_control"), CachePoint::System(i))?;
    }
    for (i, tool) in items("tools").enumerate() {
        take(tool.get("cache_control"), CachePoint::Tool(i))?;
    }
    for (i, message) in items("messages").enumerate() {
        for (j, block) in elements(message.get("content")).enumerate() {
            take(
                block.get("cache_control"),
                CachePoint::Block {
                    message: i,
                    block: j,
                },
            )?;
            for (k, part) in elements(block.get("content")).enumerate() {
                let at = CachePoint::Part {
                    message: i,
                    block: j,
                    part: k,
                };
                take(part.get("cache_control"), at)?;
            }
        }
    }
    Ok(found)
}

/// Where a breakpoint sits, as the request's field path up to `cache_control`
/// (made only for an error message).
fn field_path(at: CachePoint) -> String {
    match at {
        CachePoint::Request => String::new(),
        CachePoint::System(i) => format!("system.{i}."),
        CachePoint::Tool(i) => format!("tools.{i}."),
        CachePoint::Block { message, block } => format!("messages.{message}.content.{block}."),
        CachePoint::Part {
            message,
            block,
            part,
        } => format!("messages.{message}.content.{block}.content.{part}."),
    }
}

/// The elements of an array value; none when it is absent or not an array (the
/// decoders report those).
fn elements(value: Option<&Value>) -> impl Iterator<Item = &Value> {
    value.and_then(Value::as_array).into_iter().flatten()
}

fn decode_messages(val: &Value) -> Result<Vec<Message>, GatewayError> {
    let items = array(val, "messages")?;
    if items.is_empty() {
        return Err(invalid("messages", "at least one message is required"));
    }
    let last = items.len() - 1;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| decode_message(item, &format!("messages.{i}"), i == last))
        .collect()
}

fn decode_message(val: &Value, path: &str, last: bool) -> Result<Message, GatewayError> {
    let obj = object(val, path)?;
    only_keys(obj, path, &["role", "content"])?;
    let role_path = format!("{path}.role");
    let role = match string(required(obj, "role", path)?, &role_path)? {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        // Anthropic's mid-conversation system messages (a beta, on some models). Said
        // in the words Claude Code looks for ("role 'system'", "not supported"), so
        // that it resends the text as a user-turn reminder by itself.
        "system" => {
            return Err(invalid(
                &role_path,
                "role 'system' is not supported in messages by this gateway: put system \
                 text in the top-level `system` field, or in a user turn",
            ));
        }
        other => {
            return Err(invalid(
                &role_path,
                format!("Input should be 'user' or 'assistant', got '{other}'"),
            ));
        }
    };
    let content_path = format!("{path}.content");
    // A turn must say something (an empty one is a mistake to name here, not a turn
    // to drop on the way), except a final assistant turn: an empty prefill, as
    // Anthropic allows.
    let may_be_empty = last && role == Role::Assistant;
    let content = match required(obj, "content", path)? {
        Value::String(text) if text.is_empty() && !may_be_empty => {
            return Err(invalid(&content_path, "text content must be non-empty"));
        }
        Value::Array(blocks) if blocks.is_empty() && !may_be_empty => {
            return Err(invalid(
                &content_path,
                "a message needs at least one content block",
            ));
        }
        Value::String(text) => vec![ContentBlock::Text { text: text.clone() }],
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .map(|(i, b)| decode_block(b, &format!("{content_path}.{i}"), role))
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(invalid(
                &content_path,
                "Input should be a valid string or a list of content blocks",
            ));
        }
    };
    Ok(Message { role, content })
}

fn decode_block(val: &Value, path: &str, role: Role) -> Result<ContentBlock, GatewayError> {
    let obj = object(val, path)?;
    let type_path = format!("{path}.type");
    match string(required(obj, "type", path)?, &type_path)? {
        "text" => decode_text_block(obj, path),
        "image" => decode_image_block(obj, path),
        "tool_use" => {
            if role != Role::Assistant {
                return Err(invalid(
                    path,
                    "tool_use blocks are only allowed in assistant messages",
                ));
            }
            only_keys(obj, path, &["type", "id", "name", "input", "cache_control"])?;
            let id = string(required(obj, "id", path)?, &format!("{path}.id"))?;
            let name = string(required(obj, "name", path)?, &format!("{path}.name"))?;
            let input = required(obj, "input", path)?;
            object(input, &format!("{path}.input"))?;
            Ok(ContentBlock::ToolUse {
                id: id.to_owned(),
                name: name.to_owned(),
                input: input.clone(),
            })
        }
        "tool_result" => {
            if role != Role::User {
                return Err(invalid(
                    path,
                    "tool_result blocks are only allowed in user messages",
                ));
            }
            only_keys(
                obj,
                path,
                &[
                    "type",
                    "tool_use_id",
                    "content",
                    "is_error",
                    "cache_control",
                ],
            )?;
            let tool_use_id = string(
                required(obj, "tool_use_id", path)?,
                &format!("{path}.tool_use_id"),
            )?;
            let content_path = format!("{path}.content");
            let content = match obj.get("content") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(text)) if text.is_empty() => Vec::new(),
                Some(Value::String(text)) => vec![ContentBlock::Text { text: text.clone() }],
                Some(Value::Array(parts)) => parts
                    .iter()
                    .enumerate()
                    .map(|(i, part)| decode_tool_result_part(part, &format!("{content_path}.{i}")))
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(invalid(
                        &content_path,
                        "Input should be a valid string or a list of content blocks",
                    ));
                }
            };
            let is_error = match obj.get("is_error") {
                None | Some(Value::Null) => false,
                Some(v) => boolean(v, &format!("{path}.is_error"))?,
            };
            Ok(ContentBlock::ToolResult {
                tool_use_id: tool_use_id.to_owned(),
                content,
                is_error,
            })
        }
        // The model's reasoning, sent back as it was given (Anthropic checks the
        // signature); only Anthropic upstreams take it, the others leave it out.
        "thinking" | "redacted_thinking" if role != Role::Assistant => Err(invalid(
            path,
            "thinking blocks are only allowed in assistant messages",
        )),
        "thinking" => {
            only_keys(obj, path, &["type", "thinking", "signature"])?;
            let thinking = string(
                required(obj, "thinking", path)?,
                &format!("{path}.thinking"),
            )?;
            let signature = string(
                required(obj, "signature", path)?,
                &format!("{path}.signature"),
            )?;
            Ok(ContentBlock::Thinking {
                thinking: thinking.to_owned(),
                signature: signature.to_owned(),
            })
        }
        "redacted_thinking" => {
            only_keys(obj, path, &["type", "data"])?;
            let data = string(required(obj, "data", path)?, &format!("{path}.data"))?;
            Ok(ContentBlock::RedactedThinking {
                data: data.to_owned(),
            })
        }
        "document" => Err(invalid(
            path,
            "document blocks are not supported by this gateway",
        )),
        other => Err(invalid(
            path,
            format!("`{other}` content blocks are not supported by this gateway"),
        )),
    }
}

/// Content of a `tool_result`: text and image blocks.
fn decode_tool_result_part(val: &Value, path: &str) -> Result<ContentBlock, GatewayError> {
    let obj = object(val, path)?;
    let type_path = format!("{path}.type");
    match string(required(obj, "type", path)?, &type_path)? {
        "text" => decode_text_block(obj, path),
        "image" => decode_image_block(obj, path),
        other => Err(invalid(
            path,
            format!(
                "`{other}` blocks inside a tool_result are not supported by this gateway (text and image are)"
            ),
        )),
    }
}

fn decode_text_block(obj: &Object, path: &str) -> Result<ContentBlock, GatewayError> {
    // Citations on earlier turns are annotations of text we still pass on whole.
    only_keys(obj, path, &["type", "text", "cache_control", "citations"])?;
    let text = string(required(obj, "text", path)?, &format!("{path}.text"))?;
    Ok(ContentBlock::Text {
        text: text.to_owned(),
    })
}

fn decode_image_block(obj: &Object, path: &str) -> Result<ContentBlock, GatewayError> {
    only_keys(obj, path, &["type", "source", "cache_control"])?;
    let source_path = format!("{path}.source");
    let source = object(required(obj, "source", path)?, &source_path)?;
    let type_path = format!("{source_path}.type");
    let source = match string(required(source, "type", &source_path)?, &type_path)? {
        "base64" => {
            only_keys(source, &source_path, &["type", "media_type", "data"])?;
            ImageSource::Base64 {
                media_type: string(
                    required(source, "media_type", &source_path)?,
                    &format!("{source_path}.media_type"),
                )?
                .to_owned(),
                data: string(
                    required(source, "data", &source_path)?,
                    &format!("{source_path}.data"),
                )?
                .to_owned(),
            }
        }
        "url" => {
            only_keys(source, &source_path, &["type", "url"])?;
            ImageSource::Url {
                url: string(
                    required(source, "url", &source_path)?,
                    &format!("{source_path}.url"),
                )?
                .to_owned(),
            }
        }
        other => {
            return Err(invalid(
                &type_path,
                format!(
                    "image source type '{other}' is not supported by this gateway (base64 and url are)"
                ),
            ));
        }
    };
    Ok(ContentBlock::Image {
        source,
        detail: None,
    })
}

fn decode_system(val: &Value) -> Result<Vec<String>, GatewayError> {
    match val {
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .map(|(i, block)| {
                let path = format!("system.{i}");
                let obj = object(block, &path)?;
                let type_path = format!("{path}.type");
                if string(required(obj, "type", &path)?, &type_path)? != "text" {
                    return Err(invalid(&type_path, "Input should be 'text'"));
                }
                match decode_text_block(obj, &path)? {
                    ContentBlock::Text { text } => Ok(text),
                    _ => Err(invalid(&path, "Input should be a text block")),
                }
            })
            .collect(),
        _ => Err(invalid(
            "system",
            "Input should be a valid string or a list of text blocks",
        )),
    }
}

fn decode_tools(val: &Value) -> Result<Vec<Tool>, GatewayError> {
    array(val, "tools")?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("tools.{i}");
            let obj = object(item, &path)?;
            match obj.get("type") {
                None | Some(Value::Null) => {}
                Some(Value::String(t)) if t == "custom" => {}
                Some(Value::String(t)) => {
                    return Err(invalid(
                        &format!("{path}.type"),
                        format!(
                            "server tool '{t}' is not supported by this gateway; only custom tools (name, description, input_schema) are"
                        ),
                    ));
                }
                Some(_) => return Err(invalid(&format!("{path}.type"), "Input should be 'custom'")),
            }
            let strict = match obj.get("strict") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(invalid(&format!("{path}.strict"), "Input should be a valid boolean")),
            };
            for key in ["defer_loading", "input_examples", "allowed_callers"] {
                if obj.get(key).is_some_and(|v| !is_trivial(v)) {
                    return Err(unsupported(&format!("{path}.{key}"), &format!("tool `{key}`")));
                }
            }
            only_keys(
                obj,
                &path,
                &[
                    "type",
                    "name",
                    "description",
                    "input_schema",
                    "cache_control",
                    "eager_input_streaming",
                    "strict",
                    "defer_loading",
                    "input_examples",
                    "allowed_callers",
                ],
            )?;
            let name = string(required(obj, "name", &path)?, &format!("{path}.name"))?;
            let description = match obj.get("description") {
                None | Some(Value::Null) => None,
                Some(v) => Some(string(v, &format!("{path}.description"))?.to_owned()),
            };
            let schema = required(obj, "input_schema", &path)?;
            object(schema, &format!("{path}.input_schema"))?;
            Ok(Tool {
                name: name.to_owned(),
                description,
                parameters: schema.clone(),
                strict,
            })
        })
        .collect()
}

/// The choice, and `parallel_tool_calls` (`Some(false)` when parallel use is disabled).
fn decode_tool_choice(val: &Value) -> Result<(ToolChoice, Option<bool>), GatewayError> {
    let path = "tool_choice";
    let obj = object(val, path)?;
    let kind = string(required(obj, "type", path)?, "tool_choice.type")?;
    let allowed: &[&str] = match kind {
        "auto" | "any" => &["type", "disable_parallel_tool_use"],
        "tool" => &["type", "name", "disable_parallel_tool_use"],
        "none" => &["type"],
        other => {
            return Err(invalid(
                "tool_choice.type",
                format!("Input should be 'auto', 'any', 'tool' or 'none', got '{other}'"),
            ));
        }
    };
    only_keys(obj, path, allowed)?;
    let disable = match obj.get("disable_parallel_tool_use") {
        None | Some(Value::Null) => false,
        Some(v) => boolean(v, "tool_choice.disable_parallel_tool_use")?,
    };
    let choice = match kind {
        "auto" => ToolChoice::Auto,
        "any" => ToolChoice::Required,
        "none" => ToolChoice::None,
        _ => ToolChoice::Tool {
            name: string(required(obj, "name", path)?, "tool_choice.name")?.to_owned(),
        },
    };
    Ok((choice, disable.then_some(false)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_core::ErrorKind;
    use serde_json::json;

    fn decode(v: Value) -> Result<ChatRequest, GatewayError> {
        decode_request(&serde_json::to_vec(&v).unwrap())
    }

    fn decode_err(v: Value) -> GatewayError {
        let err = decode(v).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidRequest);
        assert_eq!(err.status_code(), 400);
        err
    }

    fn minimal() -> Value {
        json!({"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut v = minimal();
        v[key] = value;
        v
    }

    #[test]
    fn sdk_style_request_decodes_fully() {
        let req = decode(json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Calling."},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                     "content": [{"type": "text", "text": "boom"}]}
                ]}
            ],
            "tools": [{"type": "custom", "name": "f", "description": "F", "input_schema": {"type": "object"},
                       "cache_control": {"type": "ephemeral"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"],
            "temperature": 0.2,
            "top_p": 0.8,
            "top_k": 5,
            "metadata": {"user_id": "u1"},
            "service_tier": "auto",
            "thinking": {"type": "disabled"},
            "stream": true
        }))
        .unwrap();
        assert_eq!(
            req,
            ChatRequest {
                model: "claude-sonnet-4-5".into(),
                system: vec!["Be brief.".into()],
                messages: vec![
                    Message {
                        role: Role::User,
                        content: vec![
                            ContentBlock::Text {
                                text: "Look:".into()
                            },
                            ContentBlock::Image {
                                source: ImageSource::Base64 {
                                    media_type: "image/png".into(),
                                    data: "iVBOR".into()
                                },
                                detail: None,
                            },
                            ContentBlock::Image {
                                source: ImageSource::Url {
                                    url: "https://x/y.png".into()
                                },
                                detail: None,
                            },
                        ],
                    },
                    Message {
                        role: Role::Assistant,
                        content: vec![
                            ContentBlock::Text {
                                text: "Calling.".into()
                            },
                            ContentBlock::ToolUse {
                                id: "toolu_1".into(),
                                name: "f".into(),
                                input: json!({"a": 1})
                            },
                        ],
                    },
                    Message {
                        role: Role::User,
                        content: vec![
                            ContentBlock::ToolResult {
                                tool_use_id: "toolu_1".into(),
                                content: vec![ContentBlock::Text { text: "42".into() }],
                                is_error: false,
                            },
                            ContentBlock::ToolResult {
                                tool_use_id: "toolu_2".into(),
                                content: vec![ContentBlock::Text {
                                    text: "boom".into()
                                }],
                                is_error: true,
                            },
                        ],
                    },
                ],
                tools: vec![Tool {
                    name: "f".into(),
                    description: Some("F".into()),
                    parameters: json!({"type": "object"}),
                    strict: false,
                }],
                tool_choice: Some(ToolChoice::Required),
                parallel_tool_calls: Some(false),
                max_tokens: Some(1024),
                temperature: Some(0.2),
                top_p: Some(0.8),
                top_k: Some(5),
                stop: vec!["END".into()],
                user: Some("u1".into()),
                stream: true,
                // The prompt-cache breakpoints, where they were, for an Anthropic upstream.
                cache_control: vec![
                    CacheBreakpoint {
                        at: CachePoint::System(0),
                        control: json!({"type": "ephemeral"}),
                    },
                    CacheBreakpoint {
                        at: CachePoint::Tool(0),
                        control: json!({"type": "ephemeral"}),
                    },
                ],
                thinking: Some(json!({"type": "disabled"})),
                ..Default::default()
            }
        );
    }

    #[test]
    fn string_system_and_content_are_shorthand_for_text() {
        let req = decode(with("system", json!("You are terse."))).unwrap();
        assert_eq!(req.system, vec!["You are terse.".to_string()]);
        assert_eq!(req.messages, vec![Message::user_text("hi")]);
        assert!(!req.stream);
        assert_eq!(req.max_tokens, Some(100));
    }

    #[test]
    fn missing_required_fields_are_named() {
        for field in ["model", "max_tokens", "messages"] {
            let mut v = minimal();
            v.as_object_mut().unwrap().remove(field);
            let err = decode_err(v);
            assert_eq!(err.param.as_deref(), Some(field));
            assert_eq!(err.message, format!("{field}: Field required"));
        }
    }

    #[test]
    fn unknown_fields_are_rejected_like_anthropic_does() {
        let err = decode_err(with("frequency_penalty", json!(0.5)));
        assert_eq!(
            err.message,
            "frequency_penalty: Extra inputs are not permitted"
        );
        assert_eq!(err.param.as_deref(), Some("frequency_penalty"));

        let err = decode_err(with(
            "messages",
            json!([{"role": "user", "content": "hi", "name": "bob"}]),
        ));
        assert_eq!(
            err.message,
            "messages.0.name: Extra inputs are not permitted"
        );
    }

    #[test]
    fn structured_output_becomes_the_neutral_json_schema_format() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"], "additionalProperties": false});
        let req = decode(with(
            "output_config",
            json!({"format": {"type": "json_schema", "schema": schema}}),
        ))
        .unwrap();
        assert_eq!(
            req.response_format,
            Some(ResponseFormat::JsonSchema {
                name: "output".into(),
                schema: schema.clone(),
                strict: true,
            })
        );
        // A schema OpenAI's strict mode would refuse (an optional property, an open
        // object) goes on without `strict`.
        for (loose, strict) in [
            (
                json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                    "required": ["a"], "additionalProperties": false}),
                false,
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "object", "properties": {}}},
                    "required": ["a"], "additionalProperties": false}),
                false,
            ),
            (
                json!({"type": "object", "properties": {"a": {"anyOf": [{"type": "null"},
                    {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"],
                     "additionalProperties": false}]}},
                    "required": ["a"], "additionalProperties": false}),
                true,
            ),
        ] {
            let req = decode(with(
                "output_config",
                json!({"format": {"type": "json_schema", "schema": loose}}),
            ))
            .unwrap();
            let Some(ResponseFormat::JsonSchema { strict: got, .. }) = req.response_format else {
                panic!("no format");
            };
            assert_eq!(got, strict, "{loose}");
        }
        for nothing in [json!({}), json!({"format": null}), json!({"effort": null})] {
            assert_eq!(
                decode(with("output_config", nothing))
                    .unwrap()
                    .response_format,
                None
            );
        }
        let cases = [
            (
                json!({"format": {"type": "json_object"}}),
                "output_config.format.type",
            ),
            (
                json!({"format": {"type": "json_schema"}}),
                "output_config.format.schema",
            ),
            (
                json!({"format": {"type": "json_schema", "schema": "x"}}),
                "output_config.format.schema",
            ),
            (
                json!({"format": {"type": "json_schema", "schema": {}, "name": "x"}}),
                "output_config.format.name",
            ),
            (json!({"verbosity": "low"}), "output_config.verbosity"),
            (json!("json"), "output_config"),
        ];
        for (config, param) in cases {
            let err = decode_err(with("output_config", config.clone()));
            assert_eq!(err.param.as_deref(), Some(param), "{config}");
        }
    }

    /// Claude Code's defaults: reasoning, context editing and effort are kept as
    /// given, for Anthropic upstreams; reasoning blocks come back in assistant turns.
    #[test]
    fn thinking_context_management_and_effort_are_kept_as_given() {
        let thinking = json!({"type": "enabled", "budget_tokens": 2048});
        let editing = json!({"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]});
        let mut body = with("thinking", thinking.clone());
        body["context_management"] = editing.clone();
        body["output_config"] = json!({"effort": "high"});
        body["messages"] = json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Paris, then.", "signature": "sig-1"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}
        ]);
        let req = decode(body).unwrap();
        assert_eq!(req.thinking, Some(thinking));
        assert_eq!(req.context_management, Some(editing));
        assert_eq!(req.effort, Some(json!("high")));
        assert_eq!(req.response_format, None);
        assert_eq!(
            req.messages[1].content[..2],
            [
                ContentBlock::Thinking {
                    thinking: "Paris, then.".into(),
                    signature: "sig-1".into()
                },
                ContentBlock::RedactedThinking {
                    data: "opaque".into()
                },
            ]
        );
        let adaptive = json!({"type": "adaptive"});
        assert_eq!(
            decode(with("thinking", adaptive.clone())).unwrap().thinking,
            Some(adaptive)
        );
        // Kept as given: on models that think by default, absent is not disabled; and
        // a kind added since goes on for Anthropic to judge.
        for kept in [
            json!({"type": "disabled"}),
            json!({"type": "between_tools"}),
        ] {
            assert_eq!(
                decode(with("thinking", kept.clone())).unwrap().thinking,
                Some(kept)
            );
        }
        for (value, param) in [
            (json!({"type": "enabled"}), "thinking.budget_tokens"),
            (
                json!({"type": "enabled", "budget_tokens": "x"}),
                "thinking.budget_tokens",
            ),
            (json!({"type": 3}), "thinking.type"),
            (json!("on"), "thinking"),
        ] {
            let err = decode_err(with("thinking", value.clone()));
            assert_eq!(err.param.as_deref(), Some(param), "{value}");
        }
        let err = decode_err(with("output_config", json!({"effort": 3})));
        assert_eq!(err.param.as_deref(), Some("output_config.effort"));
        let err = decode_err(with("context_management", json!("all")));
        assert_eq!(err.param.as_deref(), Some("context_management"));
        let err = decode_err(with(
            "messages",
            json!([{"role": "assistant", "content": [{"type": "thinking", "thinking": "x"}]}]),
        ));
        assert_eq!(err.param.as_deref(), Some("messages.0.content.0.signature"));
    }

    #[test]
    fn a_token_count_is_a_request_without_the_answer_settings() {
        let body = json!({"model": "claude", "system": "Be brief.",
            "messages": [{"role": "user", "content": "hi"}],
            "thinking": {"type": "enabled", "budget_tokens": 1024}});
        let req = decode_count_request(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(req.model, "claude");
        assert_eq!(req.system, ["Be brief."]);
        assert!(req.thinking.is_some());
        for (key, value) in [
            ("max_tokens", json!(10)),
            ("stream", json!(true)),
            ("temperature", json!(0.5)),
            ("metadata", json!({"user_id": "u"})),
        ] {
            let mut body = body.clone();
            body[key] = value;
            let err = decode_count_request(&serde_json::to_vec(&body).unwrap()).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(key));
        }
        let err = decode_count_request(br#"{"model": "claude"}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages"));
        assert!(decode_count_request(b"[]").is_err());
    }

    #[test]
    fn unsupported_features_are_named() {
        let cases = [
            ("container", json!("container_1"), "container"),
            (
                "mcp_servers",
                json!([{"type": "url", "url": "https://m", "name": "m"}]),
                "mcp_servers",
            ),
            ("service_tier", json!("priority"), "service_tier"),
            ("speed", json!("fast"), "speed"),
            (
                "diagnostics",
                json!({"previous_message_id": "msg_1"}),
                "diagnostics",
            ),
            ("thread", json!({"type": "create"}), "thread"),
        ];
        for (key, value, param) in cases {
            let err = decode_err(with(key, value));
            assert_eq!(err.param.as_deref(), Some(param), "{key}");
            assert!(
                err.message.starts_with(&format!("{param}: ")),
                "{}",
                err.message
            );
        }
        // Asking for nothing is fine.
        decode(with("mcp_servers", json!([]))).unwrap();
        decode(with("container", Value::Null)).unwrap();
        decode(with("speed", json!("standard"))).unwrap();
    }

    #[test]
    fn bad_blocks_get_helpful_paths() {
        let cases = [
            (
                json!([{"role": "user", "content": [{"type": "document", "source": {}}]}]),
                "messages.0.content.0",
                "document",
            ),
            (
                json!([{"role": "user", "content": 5}]),
                "messages.0.content",
                "string",
            ),
            (
                json!([{"role": "system", "content": "x"}]),
                "messages.0.role",
                // Claude Code's own fallback (the text resent as a user-turn reminder)
                // needs both phrases.
                "role 'system' is not supported",
            ),
            (
                json!([{"role": "tool", "content": "x"}]),
                "messages.0.role",
                "'user' or 'assistant'",
            ),
            (
                json!([{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text"}]}]),
                "messages.1.content.0.text",
                "Field required",
            ),
            (
                json!([{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]),
                "messages.0.content.0.source.type",
                "file",
            ),
            (
                json!([{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}]}]),
                "messages.0.content.0",
                "assistant",
            ),
            (
                json!([{"role": "user", "content": [{"type": "thinking", "thinking": "x", "signature": "s"}]}]),
                "messages.0.content.0",
                "thinking",
            ),
            (json!([]), "messages", "at least one"),
            (json!("hi"), "messages", "list"),
        ];
        for (messages, param, needle) in cases {
            let err = decode_err(with("messages", messages));
            assert_eq!(err.param.as_deref(), Some(param), "{}", err.message);
            assert!(err.message.contains(needle), "{}", err.message);
        }
    }

    #[test]
    fn server_tools_and_bad_tool_choice_are_rejected() {
        let err = decode_err(with(
            "tools",
            json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]),
        ));
        assert_eq!(err.param.as_deref(), Some("tools.0.type"));
        assert!(
            err.message.contains("web_search_20250305"),
            "{}",
            err.message
        );

        let err = decode_err(with("tools", json!([{"name": "f"}])));
        assert_eq!(err.param.as_deref(), Some("tools.0.input_schema"));

        let err = decode_err(with("tool_choice", json!({"type": "tool"})));
        assert_eq!(err.param.as_deref(), Some("tool_choice.name"));

        let err = decode_err(with("tool_choice", json!({"type": "required"})));
        assert_eq!(err.param.as_deref(), Some("tool_choice.type"));

        let req = decode(with(
            "tool_choice",
            json!({"type": "tool", "name": "f", "disable_parallel_tool_use": false}),
        ))
        .unwrap();
        assert_eq!(req.tool_choice, Some(ToolChoice::Tool { name: "f".into() }));
        assert_eq!(req.parallel_tool_calls, None);
    }

    #[test]
    fn wrong_types_and_malformed_bodies_are_400s() {
        let err = decode_err(with("max_tokens", json!(-1)));
        assert_eq!(err.param.as_deref(), Some("max_tokens"));
        let err = decode_err(with("temperature", json!("hot")));
        assert_eq!(err.param.as_deref(), Some("temperature"));
        let err = decode_err(with("stop_sequences", json!(["a", 1])));
        assert_eq!(err.param.as_deref(), Some("stop_sequences.1"));
        let err = decode_err(with("metadata", json!({"user_id": "u", "x": 1})));
        assert_eq!(err.param.as_deref(), Some("metadata.x"));

        for body in [&b"{"[..], b"[]", b"null", b"", b"\xff\xfe"] {
            let err = decode_request(body).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidRequest);
        }
    }

    /// Prompt caching works through the gateway only if Anthropic gets the caller's
    /// breakpoints where the caller put them: every `cache_control` of an
    /// Anthropic-format request reaches an Anthropic upstream in place.
    #[test]
    fn cache_breakpoints_reach_an_anthropic_upstream_where_they_were() {
        use crate::Adapter;
        let ephemeral = json!({"type": "ephemeral"});
        let hour = json!({"type": "ephemeral", "ttl": "1h"});
        let req = decode(json!({
            "model": "claude", "max_tokens": 100,
            "cache_control": ephemeral,
            "system": [{"type": "text", "text": "Long rules.", "cache_control": hour},
                       {"type": "text", "text": "More."}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}},
                      {"name": "g", "input_schema": {"type": "object"}, "cache_control": ephemeral}],
            "messages": [
                {"role": "user", "content": "plain"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [
                    {"type": "text", "text": "first"},
                    {"type": "text", "text": "big document", "cache_control": ephemeral}
                ]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
                    {"type": "text", "text": "r1"},
                    {"type": "text", "text": "r2", "cache_control": hour}
                ]}]}
            ]
        }))
        .unwrap();
        let adapter = crate::anthropic::AnthropicAdapter::new(4096);
        let body: Value =
            serde_json::from_slice(&adapter.encode_request(&req, "claude-x", false).unwrap())
                .unwrap();
        assert_eq!(body["cache_control"], ephemeral);
        assert_eq!(body["system"][0]["cache_control"], hour);
        assert!(body["system"][1].get("cache_control").is_none());
        assert!(body["tools"][0].get("cache_control").is_none());
        assert_eq!(body["tools"][1]["cache_control"], ephemeral);
        assert!(
            body["messages"][2]["content"][0]
                .get("cache_control")
                .is_none()
        );
        assert_eq!(
            body["messages"][2]["content"][1]["cache_control"],
            ephemeral
        );
        // Inside a tool result too.
        let result = &body["messages"][4]["content"][0];
        assert!(result["content"][0].get("cache_control").is_none());
        assert_eq!(result["content"][1]["cache_control"], hour);
        // A breakpoint that is not an object is the caller's mistake, named.
        let err = decode(json!({
            "model": "claude", "max_tokens": 100,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": "yes"}]}]
        }))
        .unwrap_err();
        assert_eq!(
            err.param.as_deref(),
            Some("messages.0.content.0.cache_control"),
            "{err}"
        );
        // Every other place, named by its own path.
        let bad = json!("yes");
        let result = json!({"type": "tool_result", "tool_use_id": "t",
                            "content": [{"type": "text", "text": "r", "cache_control": bad}]});
        for (body, param) in [
            (json!({"cache_control": bad}), "cache_control"),
            (
                json!({"system": [{"type": "text", "text": "s", "cache_control": bad}]}),
                "system.0.cache_control",
            ),
            (
                json!({"tools": [{"name": "t", "input_schema": {"type": "object"}, "cache_control": bad}]}),
                "tools.0.cache_control",
            ),
            (
                json!({"messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "t", "input": {}}]},
                {"role": "user", "content": [result]}]}),
                "messages.2.content.0.content.0.cache_control",
            ),
        ] {
            let mut request = json!({"model": "claude", "max_tokens": 100,
                                     "messages": [{"role": "user", "content": "x"}]});
            for (key, value) in body.as_object().unwrap() {
                request[key] = value.clone();
            }
            let err = decode(request).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param), "{err}");
        }
    }

    #[test]
    fn no_room_to_answer_and_empty_turns_are_named() {
        let err = decode_err(with("max_tokens", json!(0)));
        assert_eq!(err.param.as_deref(), Some("max_tokens"));
        for content in [json!(""), json!([])] {
            let err = decode_err(with(
                "messages",
                json!([{"role": "user", "content": content}]),
            ));
            assert_eq!(err.param.as_deref(), Some("messages.0.content"), "{err}");
            // An empty final assistant turn is an empty prefill, which Anthropic allows.
            let prefill = json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": content}]);
            assert!(decode(with("messages", prefill)).is_ok());
        }
    }
}
