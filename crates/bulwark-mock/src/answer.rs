//! The mock's deterministic answer to a decoded request, as a neutral
//! [`ChatResponse`] or as the [`StreamEvent`]s of the same answer.
//!
//! - tools offered, `tool_choice` not `none`, no tool result in the last user
//!   turn: one call to the first (or the forced) tool, arguments filled from its
//!   schema's `required` properties;
//! - a tool result in the last user turn: `"The tool said: {result text}"`;
//! - a JSON-schema response format (structured output): the JSON object of the
//!   schema's `required` properties, filled as tool arguments are, as one chunk;
//! - otherwise `"Hello from {name}. You said: {last user text}"`, or
//!   `"tok1 … tokN"` when the behaviour sets `reply_tokens`.
//!
//! With Anthropic's `thinking` on (Anthropic API), or a `reasoning_effort` other than
//! `none` or a model named `…-reasoner` (OpenAI API), the answer starts with a reasoning block, `"Thinking about:
//! {last user text}"`: on the Anthropic API signed by [`thinking_signature`], on the
//! OpenAI API streamed as `delta.reasoning`, as vLLM, OpenRouter and Ollama stream a
//! reasoning model's (a JSON answer leaves it out). Like Anthropic, the mock refuses a conversation whose
//! reasoning blocks do not carry the signature it gave them, or whose last
//! assistant turn calls a tool without starting with its reasoning
//! ([`check_thinking`]).
//!
//! Text is split into word tokens; each streamed chunk is one word with its
//! trailing space. Usage: input = words of all request text (at least 1),
//! output = content chunks of the answer.

use bulwark_core::{
    ChatRequest, ChatResponse, ContentBlock, ResponseFormat, Role, StopReason, StreamEvent,
    ToolChoice, Usage,
};
use serde_json::{Map, Value};

use crate::model::{Api, Behavior};

/// One answer, before it is encoded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    /// The reasoning that comes first, when the request asked for it.
    pub thinking: Option<String>,
    pub body: AnswerBody,
    pub usage: Usage,
    /// Stopped by the provider's safety system (the `blocked` fault).
    pub blocked: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AnswerBody {
    /// Word tokens, each but the last with its trailing space.
    Text(Vec<String>),
    ToolCall {
        id: String,
        name: String,
        /// The arguments JSON, in the fragments it is streamed in.
        fragments: Vec<String>,
    },
}

impl Answer {
    pub(crate) fn build(req: &ChatRequest, behavior: &Behavior, api: Api, seq: u64) -> Answer {
        let body = if let Some(result) = last_user_tool_result(req) {
            AnswerBody::Text(tokens(&format!("The tool said: {result}")))
        } else if let Some((name, schema)) = tool_to_call(req) {
            let args = arguments_for(schema).to_string();
            let prefix = match api {
                Api::Anthropic => "toolu",
                Api::OpenAi | Api::Gemini => "call",
            };
            AnswerBody::ToolCall {
                id: format!("{prefix}_{seq}"),
                name: name.to_string(),
                fragments: split_in_two(&args),
            }
        } else if let Some(ResponseFormat::JsonSchema { schema, .. }) = &req.response_format {
            AnswerBody::Text(vec![arguments_for(Some(schema)).to_string()])
        } else if let Some(n) = behavior.reply_tokens {
            AnswerBody::Text((1..=n).map(|i| numbered_token(i, n)).collect())
        } else {
            let said = last_user_text(req);
            AnswerBody::Text(tokens(&format!(
                "Hello from {}. You said: {said}",
                behavior.name
            )))
        };
        let output = match &body {
            AnswerBody::Text(tokens) => tokens.len(),
            AnswerBody::ToolCall { fragments, .. } => 1 + fragments.len(),
        };
        let reasons = match api {
            Api::Anthropic => req.thinking_on(),
            // A reasoning model behind an OpenAI-compatible server, asked to reason, or
            // one that always does (DeepSeek's `deepseek-reasoner`).
            Api::OpenAi => {
                req.reasoning_effort.as_deref().is_some_and(|e| e != "none")
                    || req.model.ends_with("-reasoner")
            }
            Api::Gemini => false,
        };
        let thinking = reasons.then(|| format!("Thinking about: {}", last_user_text(req)));
        Answer {
            thinking,
            blocked: false,
            body,
            usage: Usage {
                input_tokens: request_words(req).max(1),
                output_tokens: output as u64,
                cache_read_input_tokens: None,
                cache_creation_input_tokens: None,
            },
        }
    }

    /// What the `blocked` fault leaves of the answer: its first `after_chunks`
    /// text tokens (none of a tool call), stopped by the safety system.
    pub(crate) fn block(&mut self, after_chunks: u32) {
        let kept = match &self.body {
            AnswerBody::Text(tokens) => {
                tokens.iter().take(after_chunks as usize).cloned().collect()
            }
            AnswerBody::ToolCall { .. } => Vec::new(),
        };
        self.usage.output_tokens = kept.len() as u64;
        self.body = AnswerBody::Text(kept);
        self.blocked = true;
    }

    pub(crate) fn stop_reason(&self) -> StopReason {
        if self.blocked {
            return StopReason::ContentFilter;
        }
        match self.body {
            AnswerBody::Text(_) => StopReason::EndTurn,
            AnswerBody::ToolCall { .. } => StopReason::ToolUse,
        }
    }

    /// The whole answer, for a JSON reply.
    pub(crate) fn response(&self, id: &str, model: &str) -> ChatResponse {
        let content = match &self.body {
            // A blocked answer may have no text at all: then no block.
            AnswerBody::Text(tokens) if tokens.is_empty() => Vec::new(),
            AnswerBody::Text(tokens) => vec![ContentBlock::Text {
                text: tokens.concat(),
            }],
            AnswerBody::ToolCall {
                id,
                name,
                fragments,
            } => vec![ContentBlock::ToolUse {
                id: id.clone(),
                name: name.clone(),
                input: serde_json::from_str(&fragments.concat())
                    .unwrap_or_else(|_| Value::Object(Map::new())),
            }],
        };
        let reasoning = self.thinking.iter().map(|thinking| ContentBlock::Thinking {
            thinking: thinking.clone(),
            signature: thinking_signature(thinking),
        });
        ChatResponse {
            id: id.to_string(),
            model: model.to_string(),
            content: reasoning.chain(content).collect(),
            stop_reason: self.stop_reason(),
            stop_sequence: None,
            usage: self.usage,
        }
    }

    /// `Start`, the prompt's usage (which Anthropic sends first), one content event
    /// per chunk, `Finish`.
    pub(crate) fn events(&self, id: &str, model: &str) -> Vec<StreamEvent> {
        let mut events = vec![
            StreamEvent::Start {
                id: id.to_string(),
                model: model.to_string(),
            },
            StreamEvent::PromptUsage {
                usage: Usage {
                    output_tokens: 0,
                    ..self.usage
                },
            },
        ];
        if let Some(thinking) = &self.thinking {
            events.extend(
                split_in_two(thinking)
                    .into_iter()
                    .map(|text| StreamEvent::ThinkingDelta { text }),
            );
            events.push(StreamEvent::ThinkingSignature {
                signature: thinking_signature(thinking),
            });
        }
        match &self.body {
            AnswerBody::Text(tokens) => {
                events.extend(
                    tokens
                        .iter()
                        .map(|t| StreamEvent::TextDelta { text: t.clone() }),
                );
            }
            AnswerBody::ToolCall {
                id,
                name,
                fragments,
            } => {
                events.push(StreamEvent::ToolCallStart {
                    index: 0,
                    id: id.clone(),
                    name: name.clone(),
                });
                events.extend(fragments.iter().map(|f| StreamEvent::ToolCallDelta {
                    index: 0,
                    arguments: f.clone(),
                }));
            }
        }
        events.push(StreamEvent::Finish {
            stop_reason: self.stop_reason(),
            stop_sequence: None,
            usage: self.usage,
        });
        events
    }
}

/// The mock's signature of a reasoning block: FNV-1a of its text, so that a block
/// changed on its way back no longer matches.
pub(crate) fn thinking_signature(thinking: &str) -> String {
    let hash = thinking.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("mock-signature-{hash:016x}")
}

/// What Anthropic checks of the reasoning a caller sends back: each `thinking`
/// block's signature, and, with thinking on, that a last assistant turn calling a
/// tool starts with its reasoning (Anthropic's 400 otherwise).
pub(crate) fn check_thinking(req: &ChatRequest) -> Result<(), bulwark_core::GatewayError> {
    for (i, message) in req.messages.iter().enumerate() {
        for (j, block) in message.content.iter().enumerate() {
            if let ContentBlock::Thinking {
                thinking,
                signature,
            } = block
                && *signature != thinking_signature(thinking)
            {
                return Err(bulwark_core::GatewayError::invalid(format!(
                    "messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
                )));
            }
            let id = match block {
                ContentBlock::ToolUse { id, .. } => Some(("id", id)),
                ContentBlock::ToolResult { tool_use_id, .. } => Some(("tool_use_id", tool_use_id)),
                _ => None,
            };
            if let Some((field, id)) = id
                && (id.is_empty()
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            {
                return Err(bulwark_core::GatewayError::invalid(format!(
                    "messages.{i}.content.{j}.{field}: String should match pattern '^[a-zA-Z0-9_-]+$'"
                )));
            }
        }
    }
    let last_assistant = req.messages.iter().rfind(|m| m.role == Role::Assistant);
    if let Some(turn) = last_assistant
        && req.thinking_on()
        && turn
            .content
            .iter()
            .any(|b| matches!(b, ContentBlock::ToolUse { .. }))
        && !turn.content.first().is_some_and(ContentBlock::is_thinking)
    {
        return Err(bulwark_core::GatewayError::invalid(
            "Expected `thinking` or `redacted_thinking`, but found `tool_use`. When \
             `thinking` is enabled, a final `assistant` message must start with a thinking \
             block (preceeding the lastmost set of `tool_use` and `tool_result` blocks).",
        ));
    }
    // A prefill (a last assistant turn) may not end in whitespace.
    if let Some(last) = req.messages.last()
        && last.role == Role::Assistant
        && let Some(ContentBlock::Text { text }) = last.content.last()
        && text.ends_with(char::is_whitespace)
    {
        return Err(bulwark_core::GatewayError::invalid(
            "messages: final assistant content cannot end with trailing whitespace",
        ));
    }
    Ok(())
}

/// Word tokens of `text`, each but the last keeping one trailing space.
fn tokens(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let last = words.len().saturating_sub(1);
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i < last {
                format!("{w} ")
            } else {
                (*w).to_string()
            }
        })
        .collect()
}

fn numbered_token(i: u32, n: u32) -> String {
    if i < n {
        format!("tok{i} ")
    } else {
        format!("tok{i}")
    }
}

fn last_user_turn(req: &ChatRequest) -> Option<&[ContentBlock]> {
    req.messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_slice())
}

fn texts(blocks: &[ContentBlock]) -> Vec<&str> {
    blocks
        .iter()
        .filter_map(|b| match b {
            ContentBlock::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn last_user_text(req: &ChatRequest) -> String {
    last_user_turn(req).map(texts).unwrap_or_default().join(" ")
}

/// The text of the tool results in the last user turn, if it holds any.
fn last_user_tool_result(req: &ChatRequest) -> Option<String> {
    let results: Vec<String> = last_user_turn(req)?
        .iter()
        .filter_map(|b| match b {
            ContentBlock::ToolResult { content, .. } => Some(texts(content).join(" ")),
            _ => None,
        })
        .collect();
    (!results.is_empty()).then(|| results.join(" "))
}

/// The tool to call and its parameter schema, when the answer is a tool call.
fn tool_to_call(req: &ChatRequest) -> Option<(&str, Option<&Value>)> {
    let first = req.tools.first()?;
    match &req.tool_choice {
        Some(ToolChoice::None) => None,
        Some(ToolChoice::Tool { name }) => Some(
            req.tools
                .iter()
                .find(|t| &t.name == name)
                .map_or((name.as_str(), None), |t| {
                    (t.name.as_str(), Some(&t.parameters))
                }),
        ),
        Some(ToolChoice::Auto | ToolChoice::Required) | None => {
            Some((first.name.as_str(), Some(&first.parameters)))
        }
    }
}

/// An arguments object with each `required` property filled by its type.
fn arguments_for(schema: Option<&Value>) -> Value {
    match schema {
        Some(schema) => object_for(schema, schema, 0),
        None => Value::Object(Map::new()),
    }
}

/// How deep a value is filled: a schema that refers to itself ends here.
const MAX_DEPTH: usize = 8;

/// `schema`'s `required` properties, each filled by [`example_value`]; `root` is the
/// whole schema, against which `$ref`s resolve.
fn object_for(schema: &Value, root: &Value, depth: usize) -> Value {
    let mut args = Map::new();
    let properties = schema.get("properties");
    let required = schema.get("required").and_then(Value::as_array);
    for name in required.into_iter().flatten().filter_map(Value::as_str) {
        let prop = properties.and_then(|p| p.get(name));
        args.insert(name.to_string(), example_value(prop, root, depth + 1));
    }
    Value::Object(args)
}

/// A value `prop` accepts: an `enum`'s or `const`'s own, the first alternative of
/// an `anyOf`/`oneOf` that is not null, the schema a `$ref` names (`#/$defs/…`),
/// else by `type` (string `"example"`, number `1`, boolean `true`, object with its
/// required properties, array with one item when `minItems` asks for one).
fn example_value(prop: Option<&Value>, root: &Value, depth: usize) -> Value {
    let Some(prop) = prop else {
        return Value::String("example".into());
    };
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    if let Some(target) = prop
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| resolve(root, r))
    {
        return example_value(Some(target), root, depth + 1);
    }
    let alternatives = ["anyOf", "oneOf", "allOf"]
        .iter()
        .find_map(|k| prop.get(*k).and_then(Value::as_array));
    if let Some(alternatives) = alternatives {
        let not_null = alternatives
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) != Some("null"));
        return example_value(not_null.or(alternatives.first()), root, depth + 1);
    }
    if let Some(first) = prop
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    if let Some(value) = prop.get("const") {
        return value.clone();
    }
    // `type` may be a list (`["string", "null"]`): the first non-null one wins.
    let ty = match prop.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null"),
        _ => None,
    };
    match ty.map(str::to_ascii_lowercase).as_deref() {
        Some("number" | "integer") => Value::from(1),
        Some("boolean") => Value::Bool(true),
        Some("array") => {
            let wanted = prop.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            let item = example_value(prop.get("items"), root, depth + 1);
            Value::Array(if wanted > 0 { vec![item] } else { Vec::new() })
        }
        Some("object") => object_for(prop, root, depth),
        Some("null") => Value::Null,
        _ => Value::String("example".into()),
    }
}

/// The schema a local `$ref` (`#/$defs/Name`, `#/definitions/Name`) points at.
fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    reference
        .strip_prefix("#/")?
        .split('/')
        .try_fold(root, |node, key| node.get(key))
}

/// Two fragments (one if the text is a single character).
fn split_in_two(text: &str) -> Vec<String> {
    let mut mid = text.len() / 2;
    while mid > 0 && !text.is_char_boundary(mid) {
        mid -= 1;
    }
    if mid == 0 {
        return vec![text.to_string()];
    }
    vec![text[..mid].to_string(), text[mid..].to_string()]
}

pub(crate) fn request_words(req: &ChatRequest) -> u64 {
    fn block_words(block: &ContentBlock) -> usize {
        match block {
            ContentBlock::Text { text } => text.split_whitespace().count(),
            ContentBlock::ToolResult { content, .. } => content.iter().map(block_words).sum(),
            ContentBlock::Image { .. }
            | ContentBlock::ToolUse { .. }
            | ContentBlock::Thinking { .. }
            | ContentBlock::RedactedThinking { .. } => 0,
        }
    }
    let system: usize = req
        .system
        .iter()
        .map(|s| s.split_whitespace().count())
        .sum();
    let turns: usize = req
        .messages
        .iter()
        .flat_map(|m| m.content.iter())
        .map(block_words)
        .sum();
    (system + turns) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_core::{Message, Tool};
    use serde_json::json;

    fn request(text: &str) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            system: vec!["be brief".into()],
            messages: vec![Message::user_text(text)],
            ..ChatRequest::default()
        }
    }

    fn weather_tool() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: None,
            parameters: json!({
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "metric": {"type": ["boolean", "null"]},
                    "tags": {"type": "array"},
                    "opts": {"type": "object"},
                    "unit": {"type": "string", "enum": ["c", "f"]},
                    "optional": {"type": "string"}
                },
                "required": ["city", "days", "metric", "tags", "opts", "unit"]
            }),
            strict: false,
        }
    }

    #[test]
    fn plain_prompt_gets_the_echo_split_into_words() {
        let answer = Answer::build(
            &request("what  is\nup"),
            &Behavior::named("alpha"),
            Api::OpenAi,
            1,
        );
        let AnswerBody::Text(tokens) = &answer.body else {
            panic!("expected text");
        };
        assert_eq!(
            tokens,
            &[
                "Hello ", "from ", "alpha. ", "You ", "said: ", "what ", "is ", "up"
            ]
        );
        assert_eq!(answer.usage.input_tokens, 5);
        assert_eq!(answer.usage.output_tokens, 8);
        let resp = answer.response("id1", "m");
        assert_eq!(resp.text(), "Hello from alpha. You said: what is up");
        assert_eq!(resp.stop_reason, StopReason::EndTurn);
    }

    #[test]
    fn reply_tokens_gives_exactly_n_tokens() {
        let behavior = Behavior {
            reply_tokens: Some(3),
            ..Behavior::named("a")
        };
        let answer = Answer::build(&request("hi"), &behavior, Api::Gemini, 1);
        assert_eq!(answer.response("i", "m").text(), "tok1 tok2 tok3");
        assert_eq!(answer.usage.output_tokens, 3);
        let events = answer.events("i", "m");
        // Start, the prompt's usage, three tokens, Finish.
        assert_eq!(events.len(), 6);
        assert!(matches!(
            events[1],
            StreamEvent::PromptUsage { usage } if usage.input_tokens == answer.usage.input_tokens
        ));
        assert_eq!(
            events[4],
            StreamEvent::TextDelta {
                text: "tok3".into()
            }
        );
    }

    #[test]
    fn empty_request_still_counts_one_input_token() {
        let req = ChatRequest::default();
        let answer = Answer::build(&req, &Behavior::named("a"), Api::OpenAi, 1);
        assert_eq!(answer.usage.input_tokens, 1);
        assert_eq!(answer.response("i", "m").text(), "Hello from a. You said:");
    }

    #[test]
    fn tools_produce_one_call_with_arguments_from_the_schema() {
        let mut req = request("weather?");
        req.tools = vec![weather_tool()];
        let answer = Answer::build(&req, &Behavior::named("a"), Api::Anthropic, 7);
        let resp = answer.response("i", "m");
        assert_eq!(resp.stop_reason, StopReason::ToolUse);
        assert_eq!(
            resp.content,
            vec![ContentBlock::ToolUse {
                id: "toolu_7".into(),
                name: "get_weather".into(),
                input: json!({"city": "example", "days": 1, "metric": true,
                              "tags": [], "opts": {}, "unit": "c"}),
            }]
        );
        let events = answer.events("i", "m");
        let fragments: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ToolCallDelta { arguments, .. } => Some(arguments.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(fragments.len(), 2);
        let joined: Value = serde_json::from_str(&fragments.concat()).unwrap();
        assert_eq!(joined["days"], 1);
        assert!(matches!(
            events[2],
            StreamEvent::ToolCallStart { index: 0, ref id, .. } if id == "toolu_7"
        ));
        assert_eq!(answer.usage.output_tokens, 3);
    }

    #[test]
    fn a_json_schema_format_gets_a_json_answer_that_keeps_to_it() {
        let mut req = request("weather?");
        req.response_format = Some(ResponseFormat::JsonSchema {
            name: "w".into(),
            schema: serde_json::json!({"type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"]}),
            strict: true,
        });
        let answer = Answer::build(&req, &Behavior::default(), Api::Anthropic, 1);
        assert_eq!(
            answer.body,
            AnswerBody::Text(vec![r#"{"city":"example","days":1}"#.to_string()])
        );
        assert_eq!(answer.stop_reason(), StopReason::EndTurn);
    }

    #[test]
    fn nested_optional_and_referenced_properties_get_values_their_schema_takes() {
        // What pydantic writes for a model with an optional int, a nested model and a
        // list of at least one of them.
        let schema = serde_json::json!({
            "$defs": {"Place": {"type": "object", "title": "Place",
                                "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}},
                                "required": ["city", "zip"]}},
            "type": "object",
            "properties": {
                "days": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": null},
                "place": {"$ref": "#/$defs/Place"},
                "stops": {"type": "array", "items": {"$ref": "#/$defs/Place"}, "minItems": 1},
                "unit": {"const": "C"},
                "loop": {"$ref": "#"}
            },
            "required": ["days", "place", "stops", "unit", "loop"]
        });
        let value = arguments_for(Some(&schema));
        let place = serde_json::json!({"city": "example", "zip": 1});
        assert_eq!(value["days"], 1);
        assert_eq!(value["place"], place);
        assert_eq!(value["stops"], serde_json::json!([place]));
        assert_eq!(value["unit"], "C");
        // A schema that names itself stops filling at the depth limit.
        let mut depth = 0;
        let mut node = &value["loop"];
        while node.is_object() {
            node = &node["loop"];
            depth += 1;
        }
        assert!(depth <= MAX_DEPTH, "{depth}");
    }

    #[test]
    fn forced_tool_is_called_and_none_means_text() {
        let other = Tool {
            name: "other".into(),
            description: None,
            parameters: json!({"type": "object"}),
            strict: false,
        };
        let mut req = request("x");
        req.tools = vec![weather_tool(), other];
        req.tool_choice = Some(ToolChoice::Tool {
            name: "other".into(),
        });
        let answer = Answer::build(&req, &Behavior::named("a"), Api::OpenAi, 2);
        assert!(matches!(
            &answer.body,
            AnswerBody::ToolCall { id, name, .. } if id == "call_2" && name == "other"
        ));
        req.tool_choice = Some(ToolChoice::None);
        let answer = Answer::build(&req, &Behavior::named("a"), Api::OpenAi, 2);
        assert!(matches!(answer.body, AnswerBody::Text(_)));
    }

    #[test]
    fn a_tool_result_in_the_last_user_turn_is_echoed() {
        let mut req = request("weather?");
        req.tools = vec![weather_tool()];
        req.messages.push(Message {
            role: Role::Assistant,
            content: vec![ContentBlock::ToolUse {
                id: "call_1".into(),
                name: "get_weather".into(),
                input: json!({}),
            }],
        });
        req.messages.push(Message {
            role: Role::User,
            content: vec![ContentBlock::ToolResult {
                tool_use_id: "call_1".into(),
                content: vec![ContentBlock::Text {
                    text: "sunny, 21C".into(),
                }],
                is_error: false,
            }],
        });
        let answer = Answer::build(&req, &Behavior::named("a"), Api::OpenAi, 3);
        assert_eq!(
            answer.response("i", "m").text(),
            "The tool said: sunny, 21C"
        );
        // be brief (2) + weather? (1) + sunny, 21C (2)
        assert_eq!(answer.usage.input_tokens, 5);
    }

    #[test]
    fn split_in_two_respects_char_boundaries() {
        assert_eq!(split_in_two("{}"), vec!["{", "}"]);
        assert_eq!(split_in_two("é"), vec!["é"]);
        let parts = split_in_two("{\"a\":\"éé\"}");
        assert_eq!(parts.concat(), "{\"a\":\"éé\"}");
        assert_eq!(parts.len(), 2);
    }
}
