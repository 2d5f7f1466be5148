//! Tests of the OpenAI serve side: response, stream and error encoding, and request
//! decoding (accepted shapes and field-path errors).

use bulwark_core::{
    ChatRequest, ChatResponse, ContentBlock, ErrorKind, GatewayError, ImageSource, Message,
    ResponseFormat, Role, SseFrame, StopReason, StreamEvent, ToolChoice, Usage,
};
use serde_json::{Value, json};

use super::{StreamEncoder, decode_request, encode_response, error_body};
use crate::openai::wire::{ChatCompletionChunk, ChunkChoice, Delta};

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn tool_response() -> ChatResponse {
    ChatResponse {
        id: "upstream-id".into(),
        model: "gpt-4o-2024-08-06".into(),
        content: vec![ContentBlock::ToolUse {
            id: "call_1".into(),
            name: "get_weather".into(),
            input: json!({"city": "Paris"}),
        }],
        stop_reason: StopReason::ToolUse,
        stop_sequence: None,
        usage: Usage {
            input_tokens: 82,
            output_tokens: 17,
            cache_read_input_tokens: None,
            cache_creation_input_tokens: None,
        },
    }
}

#[test]
fn encodes_a_tool_call_response_exactly() {
    let body = parse(&encode_response(
        &tool_response(),
        "chatcmpl-abc",
        1_700_000_000,
    ));
    assert_eq!(
        body,
        json!({
            "id": "chatcmpl-abc",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o-2024-08-06",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": null,
                    "refusal": null,
                    "tool_calls": [{
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}
                    }]
                },
                "logprobs": null,
                "finish_reason": "tool_calls"
            }],
            "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}
        })
    );
}

#[test]
fn encodes_text_refusal_and_finish_reasons() {
    let mut resp = tool_response();
    resp.content = vec![
        ContentBlock::Text { text: "Hi ".into() },
        ContentBlock::Text {
            text: "there".into(),
        },
    ];
    resp.usage.cache_read_input_tokens = Some(40);
    for (stop, finish) in [
        (StopReason::EndTurn, "stop"),
        (StopReason::StopSequence, "stop"),
        (StopReason::Other, "stop"),
        (StopReason::MaxTokens, "length"),
        (StopReason::ContentFilter, "content_filter"),
    ] {
        resp.stop_reason = stop;
        let body = parse(&encode_response(&resp, "chatcmpl-1", 1));
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], json!(finish));
        assert_eq!(choice["message"]["content"], json!("Hi there"));
        assert_eq!(choice["message"]["refusal"], Value::Null);
        assert!(choice["message"].get("tool_calls").is_none());
        assert_eq!(
            body["usage"]["prompt_tokens_details"],
            json!({"cached_tokens": 40})
        );
    }
    resp.stop_reason = StopReason::Refusal;
    let body = parse(&encode_response(&resp, "chatcmpl-1", 1));
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], json!("stop"));
    assert_eq!(choice["message"]["content"], Value::Null);
    assert_eq!(choice["message"]["refusal"], json!("Hi there"));
}

fn frames_json(frames: &[SseFrame]) -> Vec<Value> {
    frames
        .iter()
        .map(|f| {
            assert_eq!(f.event, None);
            if f.data == "[DONE]" {
                json!("[DONE]")
            } else {
                parse(f.data.as_bytes())
            }
        })
        .collect()
}

fn tool_stream_events() -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start {
            id: "up".into(),
            model: "gpt-4o".into(),
        },
        StreamEvent::TextDelta {
            text: "Checking".into(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "call_1".into(),
            name: "get_weather".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "{\"city\":".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "\"Paris\"}".into(),
        },
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
            stop_sequence: None,
            usage: Usage {
                input_tokens: 10,
                output_tokens: 5,
                ..Usage::default()
            },
        },
    ]
}

#[test]
fn stream_encoder_emits_openai_chunk_sequence_with_usage() {
    let mut encoder = StreamEncoder::new("chatcmpl-s".into(), 7, true);
    let mut frames = Vec::new();
    for event in tool_stream_events() {
        encoder.encode(&event, &mut frames);
    }
    let chunk = |choices: Value, usage: Value| {
        json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 7,
               "model": "gpt-4o", "choices": choices, "usage": usage})
    };
    let choice = |delta: Value, finish: Value| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
    assert_eq!(
        frames_json(&frames),
        vec![
            chunk(
                choice(json!({"role": "assistant", "content": ""}), Value::Null),
                Value::Null
            ),
            chunk(
                choice(json!({"content": "Checking"}), Value::Null),
                Value::Null
            ),
            chunk(
                choice(
                    json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}]}),
                    Value::Null
                ),
                Value::Null
            ),
            chunk(
                choice(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
                    Value::Null
                ),
                Value::Null
            ),
            chunk(
                choice(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                    Value::Null
                ),
                Value::Null
            ),
            chunk(choice(json!({}), json!("tool_calls")), Value::Null),
            chunk(
                json!([]),
                json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})
            ),
            json!("[DONE]"),
        ]
    );
    // Nothing after the end.
    let mut more = Vec::new();
    encoder.encode(&StreamEvent::TextDelta { text: "x".into() }, &mut more);
    encoder.encode_error(&GatewayError::invalid("late"), &mut more);
    assert!(more.is_empty());
}

/// `Start`'s chunk takes its shape from what follows it, as OpenAI's does: `content:
/// ""` before text or an empty answer, no `content` (so `None` in the SDKs) with the
/// first tool call or refusal, the role written exactly once.
#[test]
fn the_role_chunk_matches_what_follows_it() {
    let start = StreamEvent::Start {
        id: "up".into(),
        model: "gpt-4o".into(),
    };
    let finish = StreamEvent::Finish {
        stop_reason: StopReason::ToolUse,
        stop_sequence: None,
        usage: Usage::default(),
    };
    let deltas = |events: &[StreamEvent]| {
        let mut encoder = StreamEncoder::new("chatcmpl-s".into(), 7, false);
        let mut frames = Vec::new();
        for event in events {
            encoder.encode(event, &mut frames);
        }
        frames_json(&frames)
            .into_iter()
            .filter(|c| c != "[DONE]")
            .map(|c| c["choices"][0]["delta"].clone())
            .collect::<Vec<_>>()
    };
    let call = StreamEvent::ToolCallStart {
        index: 0,
        id: "call_1".into(),
        name: "get_weather".into(),
    };
    let args = StreamEvent::ToolCallDelta {
        index: 0,
        arguments: "{}".into(),
    };
    assert_eq!(
        deltas(&[start.clone(), call, args, finish.clone()]),
        [
            json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                   "function": {"name": "get_weather", "arguments": ""}}]}),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            json!({}),
        ]
    );
    let refusal = |text: &str| StreamEvent::RefusalDelta { text: text.into() };
    assert_eq!(
        deltas(&[start.clone(), refusal("No"), refusal("."), finish.clone()]),
        [
            json!({"role": "assistant", "refusal": "No"}),
            json!({"refusal": "."}),
            json!({}),
        ]
    );
    let empty_text = StreamEvent::TextDelta { text: "".into() };
    assert_eq!(
        deltas(&[start, empty_text, finish]),
        [json!({"role": "assistant", "content": ""}), json!({})]
    );
}

#[test]
fn stream_encoder_without_include_usage_omits_usage_key() {
    let mut encoder = StreamEncoder::new("chatcmpl-s".into(), 7, false);
    let mut frames = Vec::new();
    for event in tool_stream_events() {
        encoder.encode(&event, &mut frames);
    }
    let chunks = frames_json(&frames);
    assert_eq!(chunks.len(), 7);
    for chunk in &chunks[..6] {
        assert!(chunk.get("usage").is_none(), "{chunk}");
    }
    assert_eq!(
        chunks[5]["choices"][0]["finish_reason"],
        json!("tool_calls")
    );
    assert_eq!(chunks[6], json!("[DONE]"));
}

#[test]
fn stream_error_is_an_error_chunk_without_done() {
    let mut encoder = StreamEncoder::new("chatcmpl-s".into(), 7, true);
    let mut frames = Vec::new();
    encoder.encode(
        &StreamEvent::Start {
            id: "u".into(),
            model: "m".into(),
        },
        &mut frames,
    );
    let mut err = GatewayError::new(ErrorKind::Unavailable, "all targets failed");
    err.code = Some("server_error".into());
    encoder.encode_error(&err, &mut frames);
    encoder.encode(
        &StreamEvent::Finish {
            stop_reason: StopReason::EndTurn,
            stop_sequence: None,
            usage: Usage::default(),
        },
        &mut frames,
    );
    // `Start`'s chunk waits for the first content, which never came.
    assert_eq!(frames.len(), 1);
    assert_eq!(
        parse(frames[0].data.as_bytes()),
        json!({"error": {"message": "all targets failed", "type": "service_unavailable_error",
                         "param": null, "code": "server_error"}})
    );
    assert!(frames.iter().all(|f| f.data != "[DONE]"));
}

#[test]
fn error_body_types_follow_openai() {
    let body = |err: GatewayError| parse(&error_body(&err))["error"].clone();
    let bad = body(
        GatewayError::invalid_param("messages", "Missing required parameter: 'messages'.")
            .with_code("missing_required_parameter"),
    );
    assert_eq!(
        bad,
        json!({"message": "Missing required parameter: 'messages'.", "type": "invalid_request_error",
               "param": "messages", "code": "missing_required_parameter"})
    );
    let auth = body(GatewayError::new(
        ErrorKind::Authentication,
        "Incorrect API key provided",
    ));
    assert_eq!(auth["type"], json!("invalid_request_error"));
    assert_eq!(auth["code"], Value::Null);
    let quota =
        body(GatewayError::new(ErrorKind::RateLimited, "quota").with_code("insufficient_quota"));
    assert_eq!(quota["type"], json!("insufficient_quota"));
    let rate = body(GatewayError::new(ErrorKind::RateLimited, "slow down"));
    assert_eq!(rate["type"], json!("rate_limit_error"));
    assert_eq!(rate["code"], json!("rate_limit_exceeded"));
    assert_eq!(
        body(GatewayError::new(ErrorKind::BadGateway, "x"))["type"],
        json!("server_error")
    );
    assert_eq!(
        body(GatewayError::new(ErrorKind::Internal, "x"))["type"],
        json!("server_error")
    );
    assert_eq!(
        body(GatewayError::new(ErrorKind::NotFound, "x"))["type"],
        json!("invalid_request_error")
    );
    assert_eq!(
        body(GatewayError::new(ErrorKind::Timeout, "x"))["type"],
        json!("timeout")
    );
    assert_eq!(
        body(GatewayError::new(ErrorKind::PermissionDenied, "x"))["type"],
        json!("permission_error")
    );
}

// ---------------------------------------------------------------------------
// Request decoding
// ---------------------------------------------------------------------------

fn decode(body: Value) -> Result<ChatRequest, GatewayError> {
    decode_request(body.to_string().as_bytes())
}

fn base() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
}

fn with(field: &str, value: Value) -> Value {
    let mut body = base();
    body[field] = value;
    body
}

#[track_caller]
fn assert_rejects(body: Value, param: &str) -> GatewayError {
    let err = decode(body).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert_eq!(err.status_code(), 400);
    assert_eq!(err.param.as_deref(), Some(param), "{}", err.message);
    err
}

#[test]
fn decodes_a_full_sdk_request() {
    let body = json!({
        "model": "my-route",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "system", "content": [{"type": "text", "text": "French."}, {"type": "text", "text": "Always."}]},
            {"role": "user", "name": "ann", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}
            ]},
            // The SDK's own response message, appended as is.
            {"role": "assistant", "content": null, "refusal": null, "annotations": [], "audio": null,
             "function_call": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}}
             ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "one"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "two"}]},
            {"role": "user", "content": "thanks"}
        ],
        "tools": [{"type": "function", "function": {"name": "f", "description": "F", "parameters": {"type": "object"}, "strict": true}},
                  {"type": "function", "function": {"name": "g"}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "max_completion_tokens": 100,
        "temperature": 0.2,
        "top_p": 1,
        "stop": "END",
        "seed": -5,
        "presence_penalty": 0.5,
        "frequency_penalty": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "description": "d", "schema": {"type": "object"}, "strict": true}},
        "user": "u-1",
        "stream": true,
        "stream_options": {"include_usage": true},
        "metadata": {"k": "v"}, "store": false, "service_tier": "auto", "n": 1, "logprobs": false,
        "prompt_cache_key": "conversation-7",
        "reasoning_effort": "minimal", "verbosity": "low",
        "modalities": ["text"], "top_logprobs": null, "functions": null
    });
    let req = decode(body).unwrap();
    assert_eq!(req.model, "my-route");
    // A tool's strict mode goes on to an OpenAI upstream (structured outputs need it).
    assert!(req.tools[0].strict);
    assert!(!req.tools[1].strict);
    assert_eq!(req.prompt_cache_key.as_deref(), Some("conversation-7"));
    assert_eq!(req.reasoning_effort.as_deref(), Some("minimal"));
    assert_eq!(req.verbosity.as_deref(), Some("low"));
    assert_eq!(
        req.system,
        vec!["Be brief.".to_string(), "French.\nAlways.".to_string()]
    );
    assert_eq!(
        req.messages,
        vec![
            Message {
                role: Role::User,
                content: vec![
                    ContentBlock::Text {
                        text: "What is this?".into()
                    },
                    ContentBlock::Image {
                        source: ImageSource::Url {
                            url: "https://example.com/a.png".into()
                        },
                        detail: Some("high".into()),
                    },
                    ContentBlock::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/png".into(),
                            data: "iVBO".into()
                        },
                        detail: None,
                    },
                ]
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentBlock::ToolUse {
                        id: "call_1".into(),
                        name: "f".into(),
                        input: json!({"a": 1})
                    },
                    ContentBlock::ToolUse {
                        id: "call_2".into(),
                        name: "g".into(),
                        input: json!({})
                    },
                ]
            },
            Message {
                role: Role::User,
                content: vec![
                    ContentBlock::ToolResult {
                        tool_use_id: "call_1".into(),
                        content: vec![ContentBlock::Text { text: "one".into() }],
                        is_error: false
                    },
                    ContentBlock::ToolResult {
                        tool_use_id: "call_2".into(),
                        content: vec![ContentBlock::Text { text: "two".into() }],
                        is_error: false
                    },
                ]
            },
            Message::user_text("thanks"),
        ]
    );
    assert_eq!(req.tools.len(), 2);
    assert_eq!(
        req.tools[1].parameters,
        json!({"type": "object", "properties": {}})
    );
    assert_eq!(req.tool_choice, Some(ToolChoice::Required));
    assert_eq!(req.parallel_tool_calls, Some(false));
    assert_eq!(req.max_tokens, Some(100));
    assert_eq!(req.temperature, Some(0.2));
    assert_eq!(req.top_p, Some(1.0));
    assert_eq!(req.stop, vec!["END".to_string()]);
    assert_eq!(req.seed, Some(-5));
    assert_eq!(req.frequency_penalty, Some(0.0));
    assert_eq!(
        req.response_format,
        Some(ResponseFormat::JsonSchema {
            name: "out".into(),
            schema: json!({"type": "object"}),
            strict: true
        })
    );
    assert_eq!(req.user.as_deref(), Some("u-1"));
    assert!(req.stream);
    assert!(req.include_usage);
}

#[test]
fn decodes_small_variants() {
    let req = decode(with("max_tokens", json!(50))).unwrap();
    assert_eq!(req.max_tokens, Some(50));
    assert!(!req.stream && !req.include_usage);
    let req = decode(with(
        "tool_choice",
        json!({"type": "function", "function": {"name": "f"}}),
    ))
    .unwrap();
    assert_eq!(req.tool_choice, Some(ToolChoice::Tool { name: "f".into() }));
    let req = decode(with("response_format", json!({"type": "json_object"}))).unwrap();
    assert_eq!(req.response_format, Some(ResponseFormat::JsonObject));
    let req = decode(with("stop", json!(["a", "b"]))).unwrap();
    assert_eq!(req.stop, vec!["a".to_string(), "b".to_string()]);
    let req = decode(with("safety_identifier", json!("sid"))).unwrap();
    assert_eq!(req.user.as_deref(), Some("sid"));
    let req = decode(with("top_k", json!(20))).unwrap();
    assert_eq!(req.top_k, Some(20));
    // Explicit nulls read as absent.
    let req = decode(with("temperature", Value::Null)).unwrap();
    assert_eq!(req.temperature, None);
    let mut body = base();
    body["messages"] = json!([{"role": "assistant", "content": "", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "oops"}}]}]);
    let req = decode(body).unwrap();
    assert_eq!(
        req.messages[0].content,
        vec![ContentBlock::ToolUse {
            id: "c".into(),
            name: "f".into(),
            input: json!("oops")
        }]
    );
}

#[test]
fn rejects_malformed_requests_naming_the_param() {
    let err = decode_request(b"{not json").unwrap_err();
    assert_eq!(err.status_code(), 400);
    assert_eq!(decode_request(b"[1]").unwrap_err().status_code(), 400);

    assert_rejects(json!({"model": "m"}), "messages");
    assert_rejects(
        json!({"messages": [{"role": "user", "content": "x"}]}),
        "model",
    );
    assert_rejects(json!({"model": "m", "messages": null}), "messages");
    assert_rejects(with("messages", json!([])), "messages");
    let err = assert_rejects(with("foo", json!(1)), "foo");
    assert_eq!(err.message, "Unrecognized request argument supplied: foo");
    assert_rejects(with("n", json!(2)), "n");
    assert_rejects(with("logprobs", json!(true)), "logprobs");
    assert_rejects(with("top_logprobs", json!(2)), "top_logprobs");
    assert_rejects(with("functions", json!([{"name": "f"}])), "functions");
    assert_rejects(with("function_call", json!("auto")), "function_call");
    assert_rejects(
        with("audio", json!({"voice": "alloy", "format": "wav"})),
        "audio",
    );
    assert_rejects(with("modalities", json!(["text", "audio"])), "modalities");
    assert_rejects(
        with("prediction", json!({"type": "content", "content": "x"})),
        "prediction",
    );
    assert_rejects(with("web_search_options", json!({})), "web_search_options");
    assert_rejects(with("service_tier", json!("flex")), "service_tier");
    assert_rejects(with("temperature", json!("hot")), "temperature");
    assert_rejects(with("temperature", json!(3)), "temperature");
    assert_rejects(with("max_tokens", json!(0)), "max_tokens");
    assert_rejects(with("max_tokens", json!(-1)), "max_tokens");
    assert_rejects(
        with("stream_options", json!({"include_usage": true})),
        "stream_options",
    );
    assert_rejects(with("stop", json!(["a", 1])), "stop[1]");
    assert_rejects(with("tool_choice", json!("any")), "tool_choice");
    assert_rejects(
        with("response_format", json!({"type": "xml"})),
        "response_format.type",
    );
    assert_rejects(
        with("response_format", json!({"type": "json_schema"})),
        "response_format.json_schema",
    );
    assert_rejects(
        with(
            "tools",
            json!([{"type": "custom", "custom": {"name": "x"}}]),
        ),
        "tools[0].type",
    );
    assert_rejects(
        with(
            "tools",
            json!([{"type": "function", "function": {"name": "f", "extra": 1}}]),
        ),
        "tools[0].function.extra",
    );
    assert_rejects(
        with("tools", json!([{"type": "function"}])),
        "tools[0].function",
    );

    let msgs = |messages: Value| with("messages", messages);
    assert_rejects(
        msgs(json!([{"role": "function", "name": "f", "content": "x"}])),
        "messages[0].role",
    );
    assert_rejects(
        msgs(json!([{"role": "robot", "content": "x"}])),
        "messages[0].role",
    );
    assert_rejects(msgs(json!([{"content": "x"}])), "messages[0].role");
    assert_rejects(msgs(json!([{"role": "user"}])), "messages[0].content");
    assert_rejects(msgs(json!(["hi"])), "messages[0]");
    assert_rejects(
        msgs(json!([{"role": "user", "content": 5}])),
        "messages[0].content",
    );
    assert_rejects(
        msgs(json!([{"role": "user", "content": "x", "cache_control": {}}])),
        "messages[0].cache_control",
    );
    assert_rejects(
        msgs(
            json!([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]),
        ),
        "messages[0].content[0].type",
    );
    assert_rejects(
        msgs(json!([{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}])),
        "messages[0].content[0].type",
    );
    assert_rejects(
        msgs(
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,xyz"}}]}]),
        ),
        "messages[0].content[0].image_url.url",
    );
    assert_rejects(
        msgs(json!([{"role": "tool", "content": "x"}])),
        "messages[0].tool_call_id",
    );
    assert_rejects(
        msgs(json!([{"role": "assistant", "content": null}])),
        "messages[0].content",
    );
    assert_rejects(
        msgs(
            json!([{"role": "assistant", "content": null, "function_call": {"name": "f", "arguments": "{}"}}]),
        ),
        "messages[0].function_call",
    );
    assert_rejects(
        msgs(
            json!([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
        ),
        "messages[0].content[0].type",
    );
    assert_rejects(
        msgs(
            json!([{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}]}]),
        ),
        "messages[0].tool_calls[0].function.arguments",
    );
}

#[test]
fn never_panics_on_truncated_or_odd_input() {
    let full = json!({
        "model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "é✓"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "r"}],
        "tools": [{"type": "function", "function": {"name": "f"}}], "stop": ["x"], "seed": 1
    })
    .to_string();
    let bytes = full.as_bytes();
    for cut in 0..bytes.len() {
        let _ = decode_request(&bytes[..cut]);
    }
    for odd in [
        "null",
        "0",
        "\"s\"",
        "{}",
        "{\"model\": 5}",
        "{\"model\": \"m\", \"messages\": {}}",
        "{\"model\": \"m\", \"messages\": [[]]}",
        "{\"model\": \"m\", \"messages\": [{\"role\": 1}]}",
        "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"seed\": 1e300}",
        "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": 99999999999}",
    ] {
        assert!(decode_request(odd.as_bytes()).is_err(), "{odd}");
    }
}

#[test]
fn a_text_frame_has_the_bytes_the_serializer_writes_for_the_same_chunk() {
    // The text fast path must write what serializing the chunk writes, byte for byte,
    // for any text (escapes, quotes, non-ASCII, control characters) and id or model.
    let texts = [
        "plain",
        "quote \" backslash \\ slash /",
        "new\nline\ttab\r\u{0}\u{1f}",
        "non-ASCII: é ü 日本 🚀",
        "</script>",
        " ",
    ];
    for include_usage in [true, false] {
        for (id, model) in [("chatcmpl-s", "gpt-4o"), ("id \"q\"\n", "mödel\\x")] {
            let mut encoder = StreamEncoder::new(id.into(), 1_700_000_000, include_usage);
            let mut frames = Vec::new();
            let start = StreamEvent::Start {
                id: "ignored".into(),
                model: model.into(),
            };
            encoder.encode(&start, &mut frames);
            for (n, &text) in texts.iter().enumerate() {
                frames.clear();
                encoder.encode(&StreamEvent::TextDelta { text: text.into() }, &mut frames);
                let expected = ChatCompletionChunk {
                    id: id.into(),
                    object: "chat.completion.chunk".into(),
                    created: 1_700_000_000,
                    model: model.into(),
                    choices: vec![ChunkChoice {
                        index: 0,
                        delta: Delta {
                            content: Some(text.into()),
                            ..Delta::default()
                        },
                        logprobs: None,
                        finish_reason: None,
                    }],
                    usage: include_usage.then_some(None),
                };
                // The first text comes after `Start`'s chunk (role, empty content).
                assert_eq!(frames.len(), if n == 0 { 2 } else { 1 });
                assert_eq!(
                    frames[frames.len() - 1].data,
                    serde_json::to_string(&expected).unwrap(),
                    "text {text:?}, usage {include_usage}"
                );
            }
        }
    }
}
