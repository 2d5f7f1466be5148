//! Decoding a `POST /v1/chat/completions` body into a neutral [`ChatRequest`], the way
//! the OpenAI API validates it: an unknown field, a wrong type, a missing field or a
//! value Bulwark cannot honour is a 400 whose `param` is the field's path
//! (`messages[2].content[0].image_url`), never a panic and never a silent drop.
//!
//! Decoding walks a `serde_json::Value` by hand rather than deriving `Deserialize`,
//! because serde's errors carry no field path and this API's callers need one.
//!
//! Accepted and ignored (they do not change the answer): `metadata`, `store`,
//! `service_tier` `auto`/`default`, `n: 1`, `logprobs: false`,
//! `modalities: ["text"]`, `stream_options.include_obfuscation`, a message's `name`,
//! an image's `detail`, a JSON schema's `description`, and on
//! assistant messages the `refusal`/`audio`/`function_call`/`annotations` fields the
//! SDK echoes back when a caller appends a response message to the conversation.
//! `prompt_cache_key`, `reasoning_effort` and `verbosity` are kept and sent on to
//! OpenAI upstreams (not to OpenAI-compatible servers, which may refuse a field they
//! do not know; the other providers answer without them).
//! A tool's `strict` is kept and sent on to OpenAI and OpenAI-compatible upstreams
//! (other providers have no such switch).
//! Accepted beyond OpenAI's own list: `top_k` (as vLLM and OpenRouter accept it), and
//! `safety_identifier` is taken as `user` when `user` is absent.

use bulwark_core::{
    ChatRequest, ContentBlock, GatewayError, ImageSource, Message, ResponseFormat, Role, Tool,
    ToolChoice,
};
use serde_json::{Map, Value};

use super::client::parse_arguments;
use super::serve_fields::{
    Obj, Result, invalid_type, invalid_value, missing, type_name, unknown_param, unsupported_param,
    unsupported_value,
};

/// Top-level fields decoded or harmlessly ignored.
const ACCEPTED: &[&str] = &[
    "model",
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
    "response_format",
    "user",
    "safety_identifier",
    "stream",
    "stream_options",
    "metadata",
    "store",
    "prompt_cache_key",
    "reasoning_effort",
    "verbosity",
    "service_tier",
    "n",
    "logprobs",
    "modalities",
];

/// Real OpenAI parameters Bulwark cannot honour: a 400 naming them unless `null`.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "functions",
        "the legacy `functions` parameter is not supported; use `tools`",
    ),
    (
        "function_call",
        "the legacy `function_call` parameter is not supported; use `tool_choice`",
    ),
    ("top_logprobs", "log probabilities are not supported"),
    ("logit_bias", "`logit_bias` is not supported"),
    ("audio", "audio output is not supported"),
    ("prediction", "predicted outputs are not supported"),
    ("web_search_options", "web search is not supported"),
    (
        "prompt_cache_retention",
        "`prompt_cache_retention` is not supported",
    ),
];

/// Decodes a `POST /v1/chat/completions` body. Unknown fields and unsupported values
/// are a 400 naming the field (`param`).
pub fn decode_request(body: &[u8]) -> Result<ChatRequest> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid(format!(
            "We could not parse the JSON body of your request ({e}). \
             The API expects a JSON object."
        ))
    })?;
    let Value::Object(map) = &value else {
        return Err(GatewayError::invalid(format!(
            "The request body must be a JSON object, but got {}.",
            type_name(&value)
        )));
    };
    let top = Obj {
        map,
        path: String::new(),
    };
    for (key, field) in map {
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(name, _)| name == key) {
            if !field.is_null() {
                return Err(unsupported_param(key, why));
            }
        } else if !ACCEPTED.contains(&key.as_str()) {
            return Err(unknown_param(key));
        }
    }
    check_ignored_fields(&top)?;

    let model = top.req_str("model")?;
    if model.is_empty() {
        return Err(invalid_value("model", "'model' must not be empty."));
    }
    let (system, messages) = decode_messages(&top)?;
    let stream = top.bool("stream")?.unwrap_or(false);
    let include_usage = match top.obj("stream_options")? {
        None => false,
        Some(_) if !stream => {
            return Err(invalid_value(
                "stream_options",
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            ));
        }
        Some(options) => {
            options.check_keys(&["include_usage", "include_obfuscation"])?;
            options.bool("include_obfuscation")?;
            options.bool("include_usage")?.unwrap_or(false)
        }
    };
    let max_tokens = top.positive_u32("max_tokens")?;
    let max_completion_tokens = top.positive_u32("max_completion_tokens")?;
    if let (Some(a), Some(b)) = (max_tokens, max_completion_tokens)
        && a != b
    {
        return Err(invalid_value(
            "max_tokens",
            "'max_tokens' and 'max_completion_tokens' disagree; send only one of them.",
        ));
    }
    let user = match top.str("user")? {
        Some(user) => Some(user.to_string()),
        None => top.str("safety_identifier")?.map(str::to_string),
    };
    Ok(ChatRequest {
        model: model.to_string(),
        system,
        messages,
        tools: decode_tools(&top)?,
        tool_choice: decode_tool_choice(&top)?,
        parallel_tool_calls: top.bool("parallel_tool_calls")?,
        max_tokens: max_completion_tokens.or(max_tokens),
        temperature: top.ranged_f64("temperature", 0.0, 2.0)?,
        top_p: top.ranged_f64("top_p", 0.0, 1.0)?,
        top_k: top.u32("top_k")?,
        presence_penalty: top.ranged_f64("presence_penalty", -2.0, 2.0)?,
        frequency_penalty: top.ranged_f64("frequency_penalty", -2.0, 2.0)?,
        seed: top.i64("seed")?,
        stop: decode_stop(&top)?,
        response_format: decode_response_format(&top)?,
        user,
        stream,
        include_usage,
        cache_control: Vec::new(),
        anthropic_beta: None,
        thinking: None,
        context_management: None,
        effort: None,
        prompt_cache_key: top.str("prompt_cache_key")?.map(str::to_string),
        reasoning_effort: top.str("reasoning_effort")?.map(str::to_string),
        verbosity: top.str("verbosity")?.map(str::to_string),
    })
}

/// Fields that are accepted only with the values that change nothing.
fn check_ignored_fields(top: &Obj<'_>) -> Result<()> {
    top.obj("metadata")?;
    top.bool("store")?;
    if let Some(tier) = top.str("service_tier")?
        && !matches!(tier, "auto" | "default")
    {
        return Err(unsupported_value(
            "service_tier",
            &format!("service_tier '{tier}' is not supported; use 'auto' or 'default'."),
        ));
    }
    if let Some(n) = top.get("n") {
        match n.as_u64() {
            Some(1) => {}
            Some(0) => return Err(invalid_value("n", "'n' must be at least 1.")),
            Some(_) => {
                return Err(unsupported_value(
                    "n",
                    "Only one choice per request is supported ('n' must be 1).",
                ));
            }
            None => return Err(invalid_type("n", "an integer", n)),
        }
    }
    if top.bool("logprobs")? == Some(true) {
        return Err(unsupported_value(
            "logprobs",
            "Log probabilities are not supported ('logprobs' must be false).",
        ));
    }
    if let Some(modalities) = top.arr("modalities")? {
        let only_text = modalities.iter().all(|m| m.as_str() == Some("text"));
        if !only_text || modalities.is_empty() {
            return Err(unsupported_value(
                "modalities",
                "Only text output is supported ('modalities' must be [\"text\"]).",
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

fn decode_messages(top: &Obj<'_>) -> Result<(Vec<String>, Vec<Message>)> {
    let Some(items) = top.arr("messages")? else {
        return Err(missing("messages"));
    };
    if items.is_empty() {
        return Err(invalid_value(
            "messages",
            "'messages' must contain at least one message.",
        ));
    }
    let mut system = Vec::new();
    let mut messages: Vec<Message> = Vec::new();
    // Consecutive `tool` messages become one user turn of tool results (Anthropic
    // requires all results for one assistant turn in the next user turn).
    let mut last_was_tool = false;
    for (i, item) in items.iter().enumerate() {
        let path = format!("messages[{i}]");
        let msg = Obj::of(item, &path)?;
        let role = msg.req_str("role")?;
        let is_tool = role == "tool";
        match role {
            "system" | "developer" => {
                msg.check_keys(&["role", "content", "name"])?;
                system.push(text_only_content(&msg, "content")?);
            }
            "user" => {
                msg.check_keys(&["role", "content", "name"])?;
                messages.push(Message {
                    role: Role::User,
                    content: user_content(&msg)?,
                });
            }
            "assistant" => messages.push(assistant_message(&msg)?),
            "tool" => {
                msg.check_keys(&["role", "content", "tool_call_id"])?;
                let result = ContentBlock::ToolResult {
                    tool_use_id: msg.req_str("tool_call_id")?.to_string(),
                    content: vec![ContentBlock::Text {
                        text: text_only_content(&msg, "content")?,
                    }],
                    is_error: false,
                };
                match messages.last_mut() {
                    Some(last) if last_was_tool => last.content.push(result),
                    _ => messages.push(Message {
                        role: Role::User,
                        content: vec![result],
                    }),
                }
            }
            "function" => {
                return Err(unsupported_value(
                    &msg.child("role"),
                    "The legacy 'function' role is not supported; use 'tool' messages.",
                ));
            }
            other => {
                return Err(invalid_value(
                    &msg.child("role"),
                    &format!(
                        "Invalid value: '{other}'. Supported values are: 'system', \
                         'developer', 'user', 'assistant' and 'tool'."
                    ),
                ));
            }
        }
        last_was_tool = is_tool;
    }
    Ok((system, messages))
}

/// Content that may only be text: a string, or an array of `text` parts (joined).
fn text_only_content(msg: &Obj<'_>, key: &str) -> Result<String> {
    let path = msg.child(key);
    match msg.get(key) {
        None => Err(missing(&path)),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let part = Obj::of(part, &format!("{path}[{j}]"))?;
                match part.req_str("type")? {
                    "text" => {
                        part.check_keys(&["type", "text"])?;
                        texts.push(part.req_str("text")?);
                    }
                    other => {
                        return Err(invalid_value(
                            &part.child("type"),
                            &format!(
                                "Content part type '{other}' is not allowed here; only 'text' is."
                            ),
                        ));
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        Some(other) => Err(invalid_type(&path, "a string or an array", other)),
    }
}

fn user_content(msg: &Obj<'_>) -> Result<Vec<ContentBlock>> {
    let path = msg.child("content");
    let parts = match msg.get("content") {
        None => return Err(missing(&path)),
        Some(Value::String(text)) => return Ok(vec![ContentBlock::Text { text: text.clone() }]),
        Some(Value::Array(parts)) => parts,
        Some(other) => return Err(invalid_type(&path, "a string or an array", other)),
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let part = Obj::of(part, &format!("{path}[{j}]"))?;
        match part.req_str("type")? {
            "text" => {
                part.check_keys(&["type", "text"])?;
                blocks.push(ContentBlock::Text {
                    text: part.req_str("text")?.to_string(),
                });
            }
            "image_url" => {
                part.check_keys(&["type", "image_url"])?;
                let Some(image) = part.obj("image_url")? else {
                    return Err(missing(&part.child("image_url")));
                };
                image.check_keys(&["url", "detail"])?;
                let detail = image.str("detail")?.map(str::to_string);
                let source = image_source(image.req_str("url")?, &image.child("url"))?;
                blocks.push(ContentBlock::Image { source, detail });
            }
            kind @ ("input_audio" | "file") => {
                return Err(unsupported_value(
                    &part.child("type"),
                    &format!(
                        "Content part type '{kind}' is not supported; only text and images are."
                    ),
                ));
            }
            other => {
                return Err(invalid_value(
                    &part.child("type"),
                    &format!("Invalid content part type '{other}'."),
                ));
            }
        }
    }
    Ok(blocks)
}

/// An image URL: `data:{media_type};base64,{data}` becomes inline bytes.
fn image_source(url: &str, path: &str) -> Result<ImageSource> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Ok(ImageSource::Url {
            url: url.to_string(),
        });
    };
    let Some((meta, data)) = rest.split_once(',') else {
        return Err(invalid_value(
            path,
            "The image data URL has no ',' before its data.",
        ));
    };
    let Some(media_type) = meta.strip_suffix(";base64") else {
        return Err(invalid_value(
            path,
            "Image data URLs must be base64-encoded ('data:<media type>;base64,<data>').",
        ));
    };
    Ok(ImageSource::Base64 {
        media_type: media_type.to_string(),
        data: data.to_string(),
    })
}

fn assistant_message(msg: &Obj<'_>) -> Result<Message> {
    msg.check_keys(&[
        "role",
        "content",
        "name",
        "tool_calls",
        "refusal",
        "audio",
        "function_call",
        "annotations",
    ])?;
    if msg.get("audio").is_some() {
        return Err(unsupported_param(
            &msg.child("audio"),
            "audio is not supported",
        ));
    }
    if msg.get("function_call").is_some() {
        return Err(unsupported_param(
            &msg.child("function_call"),
            "the legacy `function_call` is not supported; use `tool_calls`",
        ));
    }
    let mut blocks = Vec::new();
    let path = msg.child("content");
    match msg.get("content") {
        None => {}
        Some(Value::String(text)) => blocks.push(ContentBlock::Text { text: text.clone() }),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let part = Obj::of(part, &format!("{path}[{j}]"))?;
                let key = match part.req_str("type")? {
                    "text" => "text",
                    "refusal" => "refusal",
                    other => {
                        return Err(invalid_value(
                            &part.child("type"),
                            &format!(
                                "Content part type '{other}' is not allowed in assistant \
                                 messages; only 'text' and 'refusal' are."
                            ),
                        ));
                    }
                };
                part.check_keys(&["type", key])?;
                blocks.push(ContentBlock::Text {
                    text: part.req_str(key)?.to_string(),
                });
            }
        }
        Some(other) => return Err(invalid_type(&path, "a string or an array", other)),
    }
    if let Some(refusal) = msg.str("refusal")? {
        blocks.push(ContentBlock::Text {
            text: refusal.to_string(),
        });
    }
    let mut calls = Vec::new();
    for (j, call) in msg.arr("tool_calls")?.into_iter().flatten().enumerate() {
        let call = Obj::of(call, &format!("{}[{j}]", msg.child("tool_calls")))?;
        match call.req_str("type")? {
            "function" => {}
            other => {
                return Err(unsupported_value(
                    &call.child("type"),
                    &format!("Tool call type '{other}' is not supported; only 'function' is."),
                ));
            }
        }
        call.check_keys(&["id", "type", "function"])?;
        let Some(function) = call.obj("function")? else {
            return Err(missing(&call.child("function")));
        };
        function.check_keys(&["name", "arguments"])?;
        calls.push(ContentBlock::ToolUse {
            id: call.req_str("id")?.to_string(),
            name: function.req_str("name")?.to_string(),
            input: parse_arguments(function.req_str("arguments")?),
        });
    }
    if !calls.is_empty() {
        // `content: ""` beside tool calls is a common way to say "no text".
        blocks.retain(|b| !matches!(b, ContentBlock::Text { text } if text.is_empty()));
        blocks.extend(calls);
    } else if blocks.is_empty() {
        return Err(missing(&path));
    }
    Ok(Message {
        role: Role::Assistant,
        content: blocks,
    })
}

// ---------------------------------------------------------------------------
// Tools, tool choice, stop, response format
// ---------------------------------------------------------------------------

fn decode_tools(top: &Obj<'_>) -> Result<Vec<Tool>> {
    let mut tools = Vec::new();
    for (i, item) in top.arr("tools")?.into_iter().flatten().enumerate() {
        let tool = Obj::of(item, &format!("tools[{i}]"))?;
        match tool.req_str("type")? {
            "function" => {}
            other => {
                return Err(unsupported_value(
                    &tool.child("type"),
                    &format!("Tool type '{other}' is not supported; only 'function' is."),
                ));
            }
        }
        tool.check_keys(&["type", "function"])?;
        let Some(function) = tool.obj("function")? else {
            return Err(missing(&tool.child("function")));
        };
        function.check_keys(&["name", "description", "parameters", "strict"])?;
        let strict = function.bool("strict")?.unwrap_or(false);
        let name = function.req_str("name")?;
        if name.is_empty() {
            return Err(invalid_value(
                &function.child("name"),
                "A function name must not be empty.",
            ));
        }
        let parameters = match function.get("parameters") {
            None => serde_json::json!({"type": "object", "properties": {}}),
            Some(value @ Value::Object(_)) => value.clone(),
            Some(other) => {
                return Err(invalid_type(
                    &function.child("parameters"),
                    "an object",
                    other,
                ));
            }
        };
        tools.push(Tool {
            name: name.to_string(),
            description: function.str("description")?.map(str::to_string),
            parameters,
            strict,
        });
    }
    Ok(tools)
}

fn decode_tool_choice(top: &Obj<'_>) -> Result<Option<ToolChoice>> {
    let Some(value) = top.get("tool_choice") else {
        return Ok(None);
    };
    if let Value::String(mode) = value {
        return match mode.as_str() {
            "auto" => Ok(Some(ToolChoice::Auto)),
            "none" => Ok(Some(ToolChoice::None)),
            "required" => Ok(Some(ToolChoice::Required)),
            other => Err(invalid_value(
                "tool_choice",
                &format!(
                    "Invalid value: '{other}'. Supported values are: 'none', 'auto' and 'required'."
                ),
            )),
        };
    }
    let choice = Obj::of(value, "tool_choice")?;
    match choice.req_str("type")? {
        "function" => {}
        other => {
            return Err(unsupported_value(
                "tool_choice.type",
                &format!("tool_choice type '{other}' is not supported; only 'function' is."),
            ));
        }
    }
    choice.check_keys(&["type", "function"])?;
    let Some(function) = choice.obj("function")? else {
        return Err(missing("tool_choice.function"));
    };
    function.check_keys(&["name"])?;
    Ok(Some(ToolChoice::Tool {
        name: function.req_str("name")?.to_string(),
    }))
}

fn decode_stop(top: &Obj<'_>) -> Result<Vec<String>> {
    match top.get("stop") {
        None => Ok(Vec::new()),
        Some(Value::String(stop)) => Ok(vec![stop.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(stop) => Ok(stop.clone()),
                other => Err(invalid_type(&format!("stop[{i}]"), "a string", other)),
            })
            .collect(),
        Some(other) => Err(invalid_type("stop", "a string or an array", other)),
    }
}

fn decode_response_format(top: &Obj<'_>) -> Result<Option<ResponseFormat>> {
    let Some(format) = top.obj("response_format")? else {
        return Ok(None);
    };
    match format.req_str("type")? {
        "text" => {
            format.check_keys(&["type"])?;
            Ok(Some(ResponseFormat::Text))
        }
        "json_object" => {
            format.check_keys(&["type"])?;
            Ok(Some(ResponseFormat::JsonObject))
        }
        "json_schema" => {
            format.check_keys(&["type", "json_schema"])?;
            let Some(spec) = format.obj("json_schema")? else {
                return Err(missing("response_format.json_schema"));
            };
            spec.check_keys(&["name", "description", "schema", "strict"])?;
            spec.str("description")?;
            let schema = match spec.get("schema") {
                None => Value::Object(Map::new()),
                Some(value @ Value::Object(_)) => value.clone(),
                Some(other) => return Err(invalid_type(&spec.child("schema"), "an object", other)),
            };
            Ok(Some(ResponseFormat::JsonSchema {
                name: spec.req_str("name")?.to_string(),
                schema,
                strict: spec.bool("strict")?.unwrap_or(false),
            }))
        }
        other => Err(invalid_value(
            "response_format.type",
            &format!(
                "Invalid value: '{other}'. Supported values are: 'text', 'json_object' and 'json_schema'."
            ),
        )),
    }
}
