//! Decoding a `generateContent` request body into a neutral [`ChatRequest`] (serve side,
//! used by the mock provider). The body is walked by hand so that every error names
//! its field (`contents[2].parts[0]`), as a 400 with `param` set.
//!
//! Accepted and ignored, because they change nothing the neutral request can carry:
//! `safetySettings` (no safety filtering in the mock), `labels`, `serviceTier`,
//! `store`, `model` (the URL names the model), per-part metadata, thought parts and
//! thought signatures, `thinkingConfig`, function *result* schemas. Refused with a 400:
//! unknown fields, built-in tools, `cachedContent`, more than one candidate, logprobs,
//! non-text output, non-image media.

use bulwark_core::{
    ChatRequest, ContentBlock, GatewayError, ImageSource, Message, ResponseFormat, Role, Tool,
    ToolChoice,
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::wire::{self, Content, FunctionDeclaration, GenerationConfig, Part, ToolConfig};

/// Decodes a `generateContent` body; `model` comes from the URL path.
pub fn decode_request(model: &str, body: &[u8], stream: bool) -> Result<ChatRequest, GatewayError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::invalid(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(GatewayError::invalid("request body must be a JSON object"));
    };

    let mut req = ChatRequest {
        model: model.strip_prefix("models/").unwrap_or(model).to_string(),
        stream,
        ..ChatRequest::default()
    };
    let mut contents = None;
    for (key, value) in fields {
        match key.as_str() {
            "contents" => contents = Some(value),
            "systemInstruction" | "system_instruction" => {
                req.system = decode_system(value, &key)?;
            }
            "tools" => req.tools = decode_tools(value, &key)?,
            "toolConfig" | "tool_config" => {
                let config: Option<ToolConfig> = from_value(value, &key)?;
                req.tool_choice = match config.and_then(|c| c.function_calling_config) {
                    Some(fc) => decode_tool_choice(fc, &key)?,
                    None => None,
                };
            }
            "generationConfig" | "generation_config" => {
                let config: Option<GenerationConfig> = from_value(value, &key)?;
                if let Some(config) = config {
                    apply_generation_config(config, &key, &mut req)?;
                }
            }
            "safetySettings" | "safety_settings" | "labels" | "serviceTier" | "service_tier"
            | "store" | "model" => {}
            "cachedContent" | "cached_content" => {
                return Err(GatewayError::invalid_param(
                    key,
                    "cached content is not supported by this server",
                ));
            }
            _ => {
                let message = format!("unknown field `{key}`");
                return Err(GatewayError::invalid_param(key, message));
            }
        }
    }
    let contents = match contents {
        Some(Value::Array(items)) if !items.is_empty() => items,
        _ => {
            return Err(GatewayError::invalid_param(
                "contents",
                "contents must be a non-empty array",
            ));
        }
    };
    req.messages = decode_contents(contents)?;
    Ok(req)
}

/// Deserializes one member, turning a type error into a 400 naming `param`.
fn from_value<T: DeserializeOwned>(value: Value, param: &str) -> Result<T, GatewayError> {
    serde_json::from_value(value)
        .map_err(|e| GatewayError::invalid_param(param, format!("{param}: {e}")))
}

fn decode_system(value: Value, param: &str) -> Result<Vec<String>, GatewayError> {
    let content: Option<Content> = from_value(value, param)?;
    let mut system = Vec::new();
    for (j, part) in content
        .map(|c| c.parts)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        match part.text {
            Some(text) if data_kinds(&part) == 1 => system.push(text.into_owned()),
            _ => {
                return Err(GatewayError::invalid_param(
                    format!("{param}.parts[{j}]"),
                    "system instruction parts must be text",
                ));
            }
        }
    }
    Ok(system)
}

/// How many of the mutually exclusive data fields a part sets.
fn data_kinds(part: &Part) -> usize {
    [
        part.text.is_some(),
        part.inline_data.is_some(),
        part.file_data.is_some(),
        part.function_call.is_some(),
        part.function_response.is_some(),
    ]
    .into_iter()
    .filter(|set| *set)
    .count()
}

fn decode_contents(items: Vec<Value>) -> Result<Vec<Message>, GatewayError> {
    let mut messages = Vec::with_capacity(items.len());
    // Calls not answered yet, in order: (function name, tool-use id).
    let mut open_calls: Vec<(String, String)> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let param = format!("contents[{i}]");
        let content: Content = from_value(item, &param)?;
        let role = match content.role.as_deref() {
            None | Some("user") => Role::User,
            Some("model") => Role::Assistant,
            Some(other) => {
                return Err(GatewayError::invalid_param(
                    format!("{param}.role"),
                    format!("role must be `user` or `model`, not `{other}`"),
                ));
            }
        };
        let mut blocks = Vec::with_capacity(content.parts.len());
        for (j, part) in content.parts.into_iter().enumerate() {
            let param = format!("{param}.parts[{j}]");
            if part.thought == Some(true) {
                continue;
            }
            if data_kinds(&part) != 1 {
                return Err(GatewayError::invalid_param(
                    param,
                    "a part must set exactly one of text, inlineData, fileData, functionCall, functionResponse",
                ));
            }
            blocks.push(decode_part(part, role, i, j, &param, &mut open_calls)?);
        }
        if !blocks.is_empty() {
            messages.push(Message {
                role,
                content: blocks,
            });
        }
    }
    Ok(messages)
}

fn decode_part(
    part: Part,
    role: Role,
    i: usize,
    j: usize,
    param: &str,
    open_calls: &mut Vec<(String, String)>,
) -> Result<ContentBlock, GatewayError> {
    if let Some(text) = part.text {
        return Ok(ContentBlock::Text {
            text: text.into_owned(),
        });
    }
    if let Some(blob) = part.inline_data {
        if !blob.mime_type.starts_with("image/") {
            return Err(GatewayError::invalid_param(
                format!("{param}.inlineData.mimeType"),
                format!("only image data is supported, not `{}`", blob.mime_type),
            ));
        }
        return Ok(ContentBlock::Image {
            source: ImageSource::Base64 {
                media_type: blob.mime_type.into_owned(),
                data: blob.data.into_owned(),
            },
            detail: None,
        });
    }
    if let Some(file) = part.file_data {
        if !file
            .mime_type
            .as_deref()
            .is_some_and(|m| m.starts_with("image/"))
        {
            return Err(GatewayError::invalid_param(
                format!("{param}.fileData.mimeType"),
                "only image files are supported",
            ));
        }
        return Ok(ContentBlock::Image {
            source: ImageSource::Url {
                url: file.file_uri.into_owned(),
            },
            detail: None,
        });
    }
    if let Some(call) = part.function_call {
        if role != Role::Assistant {
            return Err(GatewayError::invalid_param(
                param,
                "functionCall parts belong in `model` turns",
            ));
        }
        // Calls replayed without an id get one from their position, so the same
        // history always decodes to the same ids.
        let id = call
            .id
            .map(|id| id.into_owned())
            .unwrap_or_else(|| format!("call_{i}_{j}"));
        let input = match call.args.map(|a| a.into_owned()) {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(args @ Value::Object(_)) => args,
            Some(_) => {
                return Err(GatewayError::invalid_param(
                    format!("{param}.functionCall.args"),
                    "args must be a JSON object",
                ));
            }
        };
        open_calls.push((call.name.to_string(), id.clone()));
        return Ok(ContentBlock::ToolUse {
            id,
            name: call.name.into_owned(),
            input,
        });
    }
    if let Some(response) = part.function_response {
        let param = format!("{param}.functionResponse");
        if role != Role::User {
            return Err(GatewayError::invalid_param(
                param,
                "functionResponse parts belong in `user` turns",
            ));
        }
        if response
            .parts
            .as_ref()
            .is_some_and(|p| !p.is_null() && p != &json!([]))
        {
            return Err(GatewayError::invalid_param(
                format!("{param}.parts"),
                "multimodal function responses are not supported",
            ));
        }
        let tool_use_id = match response.id {
            Some(id) => {
                open_calls.retain(|(_, open)| open.as_str() != id.as_ref());
                id.into_owned()
            }
            None => {
                // Gemini keys responses by name: answer the oldest open call of it.
                let Some(at) = open_calls
                    .iter()
                    .position(|(name, _)| name.as_str() == response.name.as_ref())
                else {
                    return Err(GatewayError::invalid_param(
                        format!("{param}.name"),
                        format!(
                            "functionResponse `{}` does not answer any earlier functionCall",
                            response.name
                        ),
                    ));
                };
                open_calls.remove(at).1
            }
        };
        let Value::Object(fields) = response.response.into_owned() else {
            return Err(GatewayError::invalid_param(
                format!("{param}.response"),
                "response must be a JSON object",
            ));
        };
        let (text, is_error) = function_result_text(fields);
        return Ok(ContentBlock::ToolResult {
            tool_use_id,
            content: vec![ContentBlock::Text { text }],
            is_error,
        });
    }
    // data_kinds() == 1 was checked by the caller.
    Err(GatewayError::invalid_param(param, "empty part"))
}

/// `{"result": x}` / `{"output": x}` → x, `{"error": x}` → x as an error; any other
/// object is the result as a whole. Strings are taken as they are, other values as JSON.
fn function_result_text(mut fields: Map<String, Value>) -> (String, bool) {
    let as_text = |v: Value| match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    if fields.len() == 1 {
        for (key, is_error) in [("result", false), ("output", false), ("error", true)] {
            if let Some(value) = fields.remove(key) {
                return (as_text(value), is_error);
            }
        }
    }
    (Value::Object(fields).to_string(), false)
}

fn decode_tools(value: Value, param: &str) -> Result<Vec<Tool>, GatewayError> {
    let Value::Array(items) = value else {
        return Err(GatewayError::invalid_param(param, "tools must be an array"));
    };
    let mut tools = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let param = format!("{param}[{i}]");
        let other_tool = item.as_object().and_then(|map| {
            map.keys()
                .find(|k| *k != "functionDeclarations" && *k != "function_declarations")
        });
        if let Some(other) = other_tool {
            return Err(GatewayError::invalid_param(
                format!("{param}.{other}"),
                format!(
                    "the `{other}` tool is not supported by this server; only functionDeclarations"
                ),
            ));
        }
        let tool: wire::Tool = from_value(item, &param)?;
        for (j, decl) in tool.function_declarations.into_iter().enumerate() {
            tools.push(decode_declaration(
                decl,
                &format!("{param}.functionDeclarations[{j}]"),
            )?);
        }
    }
    Ok(tools)
}

fn decode_declaration(decl: FunctionDeclaration, param: &str) -> Result<Tool, GatewayError> {
    let parameters = match (decl.parameters, decl.parameters_json_schema) {
        (Some(_), Some(_)) => {
            return Err(GatewayError::invalid_param(
                param,
                "parameters and parametersJsonSchema are mutually exclusive",
            ));
        }
        (None, Some(schema)) => schema.into_owned(),
        (Some(schema), None) => openapi_to_json_schema(schema.into_owned()),
        (None, None) => json!({"type": "object", "properties": {}}),
    };
    Ok(Tool {
        name: decl.name.into_owned(),
        description: decl.description.map(|d| d.into_owned()),
        parameters,
        strict: false,
    })
}

/// Google's OpenAPI-subset schemas spell types in upper case (`OBJECT`, `STRING`);
/// JSON Schema wants them lower case. Everything else is left as it is.
fn openapi_to_json_schema(schema: Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("type", Value::String(t)) => Value::String(t.to_ascii_lowercase()),
                        (_, v) => openapi_to_json_schema(v),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(openapi_to_json_schema).collect())
        }
        other => other,
    }
}

fn decode_tool_choice(
    config: wire::FunctionCallingConfig,
    param: &str,
) -> Result<Option<ToolChoice>, GatewayError> {
    let param = format!("{param}.functionCallingConfig");
    let mut names = config.allowed_function_names;
    Ok(match config.mode.as_deref() {
        None | Some("MODE_UNSPECIFIED") => None,
        Some("AUTO") => Some(ToolChoice::Auto),
        Some("NONE") => Some(ToolChoice::None),
        Some("ANY") if names.is_empty() => Some(ToolChoice::Required),
        Some("ANY") if names.len() == 1 => Some(ToolChoice::Tool {
            name: names.swap_remove(0).into_owned(),
        }),
        Some("ANY") => {
            return Err(GatewayError::invalid_param(
                format!("{param}.allowedFunctionNames"),
                "restricting calls to several (but not all) functions is not supported",
            ));
        }
        Some(other) => {
            return Err(GatewayError::invalid_param(
                format!("{param}.mode"),
                format!("function calling mode `{other}` is not supported"),
            ));
        }
    })
}

fn apply_generation_config(
    config: GenerationConfig,
    param: &str,
    req: &mut ChatRequest,
) -> Result<(), GatewayError> {
    let field = |name: &str| format!("{param}.{name}");
    let count = |n: serde_json::Number, name: &str| -> Result<u32, GatewayError> {
        n.as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| {
                GatewayError::invalid_param(
                    field(name),
                    format!("{name} must be a non-negative integer"),
                )
            })
    };
    let candidates = config
        .candidate_count
        .map(|n| count(n, "candidateCount"))
        .transpose()?;
    if candidates.is_some_and(|n| n > 1) {
        return Err(GatewayError::invalid_param(
            field("candidateCount"),
            "only one candidate is supported",
        ));
    }
    if config.response_logprobs == Some(true) || config.logprobs.is_some_and(|v| !v.is_null()) {
        return Err(GatewayError::invalid_param(
            field("responseLogprobs"),
            "logprobs are not supported",
        ));
    }
    let modalities = config.response_modalities.unwrap_or_default();
    if modalities.iter().any(|m| !m.eq_ignore_ascii_case("TEXT")) {
        return Err(GatewayError::invalid_param(
            field("responseModalities"),
            "only TEXT output is supported",
        ));
    }
    req.temperature = config.temperature;
    req.top_p = config.top_p;
    req.top_k = config.top_k.map(|n| count(n, "topK")).transpose()?;
    req.max_tokens = config
        .max_output_tokens
        .map(|n| count(n, "maxOutputTokens"))
        .transpose()?;
    req.stop = config
        .stop_sequences
        .into_iter()
        .map(|s| s.into_owned())
        .collect();
    req.presence_penalty = config.presence_penalty;
    req.frequency_penalty = config.frequency_penalty;
    req.seed = config.seed;

    let schema = match (config.response_schema, config.response_json_schema) {
        (Some(_), Some(_)) => {
            return Err(GatewayError::invalid_param(
                field("responseJsonSchema"),
                "responseSchema and responseJsonSchema are mutually exclusive",
            ));
        }
        (Some(s), None) => Some(openapi_to_json_schema(s.into_owned())),
        (None, s) => s.map(|s| s.into_owned()),
    };
    req.response_format = match (config.response_mime_type.as_deref(), schema) {
        (Some("application/json"), Some(schema)) => Some(ResponseFormat::JsonSchema {
            name: "response".to_string(),
            schema,
            strict: true,
        }),
        (Some("application/json"), None) => Some(ResponseFormat::JsonObject),
        (_, Some(_)) => {
            return Err(GatewayError::invalid_param(
                field("responseMimeType"),
                "a response schema needs responseMimeType `application/json`",
            ));
        }
        (Some("text/plain"), None) => Some(ResponseFormat::Text),
        (None, None) => None,
        (Some(other), None) => {
            return Err(GatewayError::invalid_param(
                field("responseMimeType"),
                format!("response MIME type `{other}` is not supported"),
            ));
        }
    };
    Ok(())
}
