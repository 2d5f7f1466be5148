//! Tests of the OpenAI client side: request encoding, response decoding and error
//! mapping (the stream decoder's tests are in `client_stream_tests.rs`).

use std::time::Duration;

use bulwark_core::{
    ChatRequest, ContentBlock, ErrorClass, ImageSource, Message, ResponseFormat, Role, StopReason,
    Tool, ToolChoice, Usage,
};
use http::HeaderMap;
use serde_json::{Value, json};

use super::{OpenAiAdapter, parse_go_duration};
use crate::Adapter;

fn encode(adapter: &OpenAiAdapter, req: &ChatRequest, stream: bool) -> Value {
    let bytes = adapter.encode_request(req, "gpt-4o", stream).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn weather_tool() -> Tool {
    Tool {
        name: "get_weather".into(),
        description: Some("Weather for a city".into()),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}),
        strict: true,
    }
}

fn full_request() -> ChatRequest {
    ChatRequest {
        model: "route-name".into(),
        system: vec!["Be brief.".into(), "Answer in French.".into()],
        messages: vec![
            Message {
                role: Role::User,
                content: vec![
                    ContentBlock::Text {
                        text: "What is in these?".into(),
                    },
                    ContentBlock::Image {
                        source: ImageSource::Url {
                            url: "https://example.com/a.png".into(),
                        },
                        detail: None,
                    },
                    ContentBlock::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/jpeg".into(),
                            data: "QUJD".into(),
                        },
                        detail: None,
                    },
                ],
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentBlock::Text {
                        text: "Let me check.".into(),
                    },
                    ContentBlock::ToolUse {
                        id: "call_1".into(),
                        name: "get_weather".into(),
                        input: json!({"city": "Paris"}),
                    },
                ],
            },
            Message {
                role: Role::User,
                content: vec![
                    ContentBlock::Text {
                        text: "And hurry.".into(),
                    },
                    ContentBlock::ToolResult {
                        tool_use_id: "call_1".into(),
                        content: vec![
                            ContentBlock::Text {
                                text: "18C ".into(),
                            },
                            ContentBlock::Text {
                                text: "sunny".into(),
                            },
                        ],
                        is_error: false,
                    },
                ],
            },
        ],
        tools: vec![weather_tool()],
        tool_choice: Some(ToolChoice::Tool {
            name: "get_weather".into(),
        }),
        parallel_tool_calls: Some(false),
        max_tokens: Some(256),
        temperature: Some(0.5),
        top_p: Some(0.9),
        top_k: None,
        presence_penalty: Some(0.1),
        frequency_penalty: Some(-0.2),
        seed: Some(42),
        stop: vec!["END".into()],
        response_format: Some(ResponseFormat::JsonSchema {
            name: "answer".into(),
            schema: json!({"type": "object"}),
            strict: true,
        }),
        user: Some("user-7".into()),
        stream: true,
        include_usage: false,
        cache_control: Vec::new(),
        anthropic_beta: None,
        prompt_cache_key: Some("conversation-7".into()),
        // Anthropic's: never sent to this provider.
        thinking: Some(serde_json::json!({"type": "enabled", "budget_tokens": 2048})),
        context_management: Some(serde_json::json!({"edits": []})),
        effort: Some(serde_json::json!("high")),
        reasoning_effort: Some("low".into()),
        verbosity: Some("high".into()),
    }
}

#[test]
fn encodes_every_field_for_plain_openai() {
    let body = encode(&OpenAiAdapter::new(false), &full_request(), true);
    let expected = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}}
            ]},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            // Tool results go first, straight after the assistant's tool calls.
            {"role": "tool", "tool_call_id": "call_1", "content": "18C \nsunny"},
            {"role": "user", "content": "And hurry."}
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false},
            "strict": true
        }}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false,
        "max_completion_tokens": 256,
        "temperature": 0.5,
        "top_p": 0.9,
        "presence_penalty": 0.1,
        "frequency_penalty": -0.2,
        "seed": 42,
        "stop": ["END"],
        "response_format": {"type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}},
        "user": "user-7",
        "prompt_cache_key": "conversation-7",
        "reasoning_effort": "low",
        "verbosity": "high",
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    assert_eq!(body, expected);
}

#[test]
fn compatible_servers_get_max_tokens_and_top_k() {
    let mut req = full_request();
    req.top_k = Some(40);
    let body = encode(&OpenAiAdapter::new(true), &req, false);
    assert_eq!(body["max_tokens"], json!(256));
    assert!(body.get("max_completion_tokens").is_none());
    assert_eq!(body["top_k"], json!(40));
    // OpenAI-only fields a compatible server may refuse.
    for field in ["prompt_cache_key", "reasoning_effort", "verbosity"] {
        assert!(body.get(field).is_none(), "{field}");
    }
    assert!(body.get("stream").is_none());
    assert!(body.get("stream_options").is_none());
}

#[test]
fn plain_openai_rejects_top_k_as_unsupported() {
    let mut req = full_request();
    req.top_k = Some(40);
    let err = OpenAiAdapter::new(false)
        .encode_request(&req, "gpt-4o", false)
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Unsupported);
    assert!(err.message.contains("top_k"), "{}", err.message);
}

#[test]
fn more_stop_sequences_than_openai_takes_are_unsupported() {
    let mut req = full_request();
    req.stop = (1..=5).map(|i| format!("S{i}")).collect();
    let err = OpenAiAdapter::new(false)
        .encode_request(&req, "gpt-4o", false)
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Unsupported);
    assert!(err.message.contains("stop sequences"), "{}", err.message);
    // Four go; a compatible server gets all five.
    let body = encode(&OpenAiAdapter::new(true), &req, false);
    assert_eq!(body["stop"].as_array().unwrap().len(), 5);
    req.stop.truncate(4);
    assert!(
        OpenAiAdapter::new(false)
            .encode_request(&req, "gpt-4o", false)
            .is_ok()
    );
}

#[test]
fn a_strict_tool_openai_would_refuse_is_unsupported_not_sent() {
    let mut req = full_request();
    req.tools = vec![bulwark_core::Tool {
        name: "search".into(),
        description: None,
        // `limit` is optional: OpenAI's strict mode answers 400 to this schema.
        parameters: json!({"type": "object", "properties": {"q": {"type": "string"}, "limit": {"type": "integer"}},
                           "required": ["q"], "additionalProperties": false}),
        strict: true,
    }];
    let err = OpenAiAdapter::new(false)
        .encode_request(&req, "gpt-4o", false)
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Unsupported);
    assert!(
        err.message.contains("strict tool `search`"),
        "{}",
        err.message
    );
    // Every property required: it goes, strict.
    req.tools[0].parameters["required"] = json!(["q", "limit"]);
    let body = encode(&OpenAiAdapter::new(false), &req, false);
    assert_eq!(body["tools"][0]["function"]["strict"], true);
}

#[test]
fn images_in_tool_results_are_unsupported() {
    let mut req = ChatRequest::default();
    req.messages.push(Message {
        role: Role::User,
        content: vec![ContentBlock::ToolResult {
            tool_use_id: "call_1".into(),
            content: vec![ContentBlock::Image {
                source: ImageSource::Url {
                    url: "https://example.com/a.png".into(),
                },
                detail: None,
            }],
            is_error: false,
        }],
    });
    let err = OpenAiAdapter::new(true)
        .encode_request(&req, "m", false)
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Unsupported);
    assert!(err.message.contains("openai-compatible"));
}

#[test]
fn tool_only_turns_encode_without_empty_user_message_and_with_null_content() {
    let req = ChatRequest {
        messages: vec![
            Message::user_text("weather?"),
            Message {
                role: Role::Assistant,
                content: vec![ContentBlock::ToolUse {
                    id: "c1".into(),
                    name: "f".into(),
                    input: Value::String("{not json".into()),
                }],
            },
            Message {
                role: Role::User,
                content: vec![ContentBlock::ToolResult {
                    tool_use_id: "c1".into(),
                    content: vec![],
                    is_error: true,
                }],
            },
        ],
        // Without tools, parallel_tool_calls is left out (OpenAI rejects it there).
        parallel_tool_calls: Some(true),
        ..ChatRequest::default()
    };
    let body = encode(&OpenAiAdapter::new(false), &req, false);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": ""}
        ])
    );
    assert!(body.get("parallel_tool_calls").is_none());
}

#[test]
fn url_and_auth_headers() {
    let plain = OpenAiAdapter::new(false);
    assert_eq!(
        plain.url("https://api.openai.com/v1", "gpt-4o", true),
        "https://api.openai.com/v1/chat/completions"
    );
    let mut headers = HeaderMap::new();
    plain.auth_headers(Some("sk-test"), &mut headers);
    let auth = &headers["authorization"];
    assert_eq!(auth, "Bearer sk-test");
    assert!(auth.is_sensitive());

    let mut headers = HeaderMap::new();
    OpenAiAdapter::new(true).auth_headers(None, &mut headers);
    assert!(headers.is_empty());
    OpenAiAdapter::new(true).auth_headers(Some(""), &mut headers);
    assert!(headers.is_empty());
}

#[test]
fn decodes_text_and_tool_calls_with_cached_usage() {
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_x", "service_tier": "default",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": null, "message": {
            "role": "assistant", "content": "Checking.", "refusal": null, "annotations": [],
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
                {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{broken"}},
                {"id": "call_c", "type": "function", "function": {"name": "h", "arguments": ""}}
            ]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                  "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0}}
    });
    let resp = OpenAiAdapter::new(false)
        .decode_response(body.to_string().as_bytes())
        .unwrap();
    assert_eq!(resp.id, "chatcmpl-1");
    assert_eq!(resp.model, "gpt-4o-2024-08-06");
    assert_eq!(resp.stop_reason, StopReason::ToolUse);
    assert_eq!(
        resp.content,
        vec![
            ContentBlock::Text {
                text: "Checking.".into()
            },
            ContentBlock::ToolUse {
                id: "call_a".into(),
                name: "f".into(),
                input: json!({"x": 1})
            },
            ContentBlock::ToolUse {
                id: "call_b".into(),
                name: "g".into(),
                input: json!("{broken")
            },
            ContentBlock::ToolUse {
                id: "call_c".into(),
                name: "h".into(),
                input: json!({})
            },
        ]
    );
    assert_eq!(
        resp.usage,
        Usage {
            input_tokens: 100,
            output_tokens: 20,
            cache_read_input_tokens: Some(64),
            cache_creation_input_tokens: None
        }
    );
}

#[test]
fn decodes_refusal_and_finish_reasons() {
    let adapter = OpenAiAdapter::new(false);
    let refusal = json!({"id": "x", "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}}]});
    let resp = adapter
        .decode_response(refusal.to_string().as_bytes())
        .unwrap();
    assert_eq!(resp.stop_reason, StopReason::Refusal);
    assert_eq!(resp.text(), "I can't help with that.");

    for (finish, stop) in [
        ("stop", StopReason::EndTurn),
        ("length", StopReason::MaxTokens),
        ("content_filter", StopReason::ContentFilter),
        ("function_call", StopReason::ToolUse),
        ("something_new", StopReason::Other),
    ] {
        let body = json!({"choices": [{"finish_reason": finish,
            "message": {"role": "assistant", "content": "hi"}}]});
        let resp = adapter
            .decode_response(body.to_string().as_bytes())
            .unwrap();
        assert_eq!(resp.stop_reason, stop, "{finish}");
        assert_eq!(resp.usage, Usage::default());
    }
}

#[test]
fn malformed_responses_are_protocol_errors() {
    let adapter = OpenAiAdapter::new(false);
    for body in [
        &b"not json"[..],
        br#"{"choices": []}"#,
        br#"{"choices": [{"message": {"content": 5}}]}"#,
        br#"{"choices": "x"}"#,
    ] {
        let err = adapter.decode_response(body).unwrap_err();
        assert_eq!(
            err.class,
            ErrorClass::Protocol,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, value.parse().unwrap());
    }
    map
}

fn error_json(message: &str, kind: &str, code: Option<&str>) -> Vec<u8> {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        .to_string()
        .into_bytes()
}

#[test]
fn a_setting_the_model_cannot_take_is_unsupported_not_the_callers_mistake() {
    let adapter = OpenAiAdapter::new(false);
    let body = serde_json::to_vec(&json!({"error": {
        "message": "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
        "type": "invalid_request_error", "param": "reasoning_effort", "code": "unsupported_parameter"}}))
    .unwrap();
    let err = adapter.map_error(400, &HeaderMap::new(), &body);
    assert_eq!(err.class, ErrorClass::Unsupported);
    let unrecognized = serde_json::to_vec(&json!({"error": {
        "message": "Unrecognized request argument supplied: verbosity",
        "type": "invalid_request_error", "param": null, "code": null}}))
    .unwrap();
    assert_eq!(
        adapter
            .map_error(400, &HeaderMap::new(), &unrecognized)
            .class,
        ErrorClass::Unsupported
    );
    // An answer longer than the model can write: another target may take it.
    let too_long = serde_json::to_vec(&json!({"error": {
        "message": "max_tokens is too large: 64000. This model supports at most 16384 completion tokens, whereas you provided 64000.",
        "type": "invalid_request_error", "param": "max_tokens", "code": "invalid_value"}}))
    .unwrap();
    assert_eq!(
        adapter.map_error(400, &HeaderMap::new(), &too_long).class,
        ErrorClass::Unsupported
    );
    // A value the caller got wrong stays the caller's mistake.
    for (message, param, code) in [
        (
            "Invalid value for 'temperature'.",
            "temperature",
            "invalid_value",
        ),
        (
            "Invalid 'max_tokens': integer below minimum value.",
            "max_tokens",
            "integer_below_min_value",
        ),
        (
            "Invalid value: 'extreme'. Supported values are: 'low', 'medium' and 'high'.",
            "reasoning_effort",
            "invalid_value",
        ),
    ] {
        let other = serde_json::to_vec(&json!({"error": {
            "message": message, "type": "invalid_request_error", "param": param, "code": code}}))
        .unwrap();
        assert_eq!(
            adapter.map_error(400, &HeaderMap::new(), &other).class,
            ErrorClass::InvalidRequest,
            "{message}"
        );
    }
}

#[test]
fn maps_errors_per_the_class_table() {
    let adapter = OpenAiAdapter::new(false);
    let quota = error_json(
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
        Some("insufficient_quota"),
    );
    // Quota wins even when a retry-after is present: waiting does not refill credit.
    let err = adapter.map_error(429, &headers(&[("retry-after", "20")]), &quota);
    assert_eq!(err.class, ErrorClass::Quota);
    assert_eq!(err.status, Some(429));
    assert_eq!(err.code.as_deref(), Some("insufficient_quota"));
    assert!(err.message.starts_with("You exceeded your current quota"));

    let credits = error_json(
        "You have no credits remaining.",
        "insufficient_quota",
        Some("credit_balance_exhausted"),
    );
    assert_eq!(
        adapter.map_error(429, &HeaderMap::new(), &credits).class,
        ErrorClass::Quota
    );

    let rate = error_json(
        "Rate limit reached for gpt-4o on tokens per min (TPM).",
        "tokens",
        Some("rate_limit_exceeded"),
    );
    let err = adapter.map_error(429, &headers(&[("retry-after", "2")]), &rate);
    assert_eq!(err.class, ErrorClass::Throttled);
    assert_eq!(err.retry_after, Some(Duration::from_secs(2)));
    assert_eq!(err.code.as_deref(), Some("rate_limit_exceeded"));

    let err = adapter.map_error(
        429,
        &headers(&[("retry-after-ms", "1500"), ("retry-after", "2")]),
        &rate,
    );
    assert_eq!(err.retry_after, Some(Duration::from_millis(1500)));

    // No retry-after: the reset of the exhausted limit.
    let err = adapter.map_error(
        429,
        &headers(&[
            ("x-ratelimit-reset-requests", "120ms"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("x-ratelimit-remaining-tokens", "0"),
        ]),
        &rate,
    );
    assert_eq!(err.class, ErrorClass::Throttled);
    assert_eq!(err.retry_after, Some(Duration::from_secs(360)));

    let err = adapter.map_error(429, &HeaderMap::new(), &rate);
    assert_eq!(err.class, ErrorClass::Throttled);
    assert_eq!(err.retry_after, None);

    let context = error_json(
        "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
        "invalid_request_error",
        Some("context_length_exceeded"),
    );
    let err = adapter.map_error(400, &HeaderMap::new(), &context);
    assert_eq!(err.class, ErrorClass::ContextWindow);
    assert_eq!(err.code.as_deref(), Some("context_length_exceeded"));

    let overloaded = error_json(
        "That model is currently overloaded with other requests.",
        "server_error",
        None,
    );
    let err = adapter.map_error(503, &HeaderMap::new(), &overloaded);
    assert_eq!(err.class, ErrorClass::Transient);
    assert_eq!(err.code.as_deref(), Some("server_error"));
    // OpenAI has also answered "engine overloaded" with a 429 of type server_error.
    assert_eq!(
        adapter.map_error(429, &HeaderMap::new(), &overloaded).class,
        ErrorClass::Transient
    );

    let cases: &[(u16, Vec<u8>, ErrorClass)] = &[
        (
            401,
            error_json(
                "Incorrect API key provided",
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
            ErrorClass::Auth,
        ),
        (
            403,
            error_json(
                "Country, region, or territory not supported",
                "request_forbidden",
                Some("unsupported_country_region_territory"),
            ),
            ErrorClass::Auth,
        ),
        (
            404,
            error_json(
                "The model `gpt-9` does not exist",
                "invalid_request_error",
                Some("model_not_found"),
            ),
            ErrorClass::InvalidRequest,
        ),
        (
            400,
            error_json(
                "Your request was rejected as a result of our safety system.",
                "invalid_request_error",
                Some("content_policy_violation"),
            ),
            ErrorClass::ContentPolicy,
        ),
        (402, b"{}".to_vec(), ErrorClass::Quota),
        (408, b"".to_vec(), ErrorClass::Transient),
        (413, b"too big".to_vec(), ErrorClass::InvalidRequest),
        (422, b"{}".to_vec(), ErrorClass::InvalidRequest),
        (500, b"<html>oops</html>".to_vec(), ErrorClass::Transient),
        (502, b"".to_vec(), ErrorClass::Transient),
        (504, b"".to_vec(), ErrorClass::Transient),
        (
            400,
            // vLLM's older error shape.
            json!({"object": "error", "message": "This model's maximum context length is 4096 tokens.",
                   "type": "BadRequestError", "param": null, "code": 400})
            .to_string()
            .into_bytes(),
            ErrorClass::ContextWindow,
        ),
    ];
    for (status, body, class) in cases {
        let err = adapter.map_error(*status, &HeaderMap::new(), body);
        assert_eq!(err.class, *class, "status {status}");
        assert_eq!(err.status, Some(*status));
    }
}

#[test]
fn error_messages_come_from_the_body_or_a_generic_text() {
    let adapter = OpenAiAdapter::new(true);
    // Ollama's native shape.
    let err = adapter.map_error(
        404,
        &HeaderMap::new(),
        br#"{"error": "model 'llama9' not found"}"#,
    );
    assert_eq!(err.message, "model 'llama9' not found");
    let err = adapter.map_error(
        500,
        &headers(&[("authorization", "Bearer sk-secret")]),
        b"<html>",
    );
    assert_eq!(err.message, "upstream answered HTTP 500");
    assert!(!err.message.contains("sk-secret"));
}

#[test]
fn parses_go_durations() {
    assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
    assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
    assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
    assert_eq!(
        parse_go_duration("1h2m3.5s"),
        Some(Duration::from_secs_f64(3723.5))
    );
    assert_eq!(
        parse_go_duration("51.189s"),
        Some(Duration::from_secs_f64(51.189))
    );
    assert_eq!(parse_go_duration("7"), Some(Duration::from_secs(7)));
    // Too large to be a Duration: capped, not a panic.
    for huge in ["99999999999999999999s", "999999999999h", "1e300"] {
        assert_eq!(
            parse_go_duration(huge),
            Some(crate::MAX_PROVIDER_WAIT),
            "{huge}"
        );
    }
    assert_eq!(parse_go_duration(""), None);
    assert_eq!(parse_go_duration("soon"), None);
    assert_eq!(parse_go_duration("5x"), None);
    assert_eq!(parse_go_duration("-1s"), None);
}

#[test]
fn a_server_that_refuses_stream_options_is_asked_without_it_from_then_on() {
    // `stream_options` is Bulwark's field, not the caller's: the refusal is a failed
    // attempt to retry (without the field), not the caller's 400.
    let adapter = OpenAiAdapter::new(true);
    let req = ChatRequest {
        messages: vec![Message::user_text("hi")],
        ..ChatRequest::default()
    };
    assert_eq!(
        encode(&adapter, &req, true)["stream_options"],
        json!({"include_usage": true})
    );
    let refusal = json!({"error": {"message": "Unrecognized request argument supplied: stream_options",
        "type": "invalid_request_error", "param": null, "code": null}});
    let err = adapter.map_error(400, &HeaderMap::new(), refusal.to_string().as_bytes());
    assert_eq!(err.class, ErrorClass::Transient, "{err:?}");
    let body = encode(&adapter, &req, true);
    assert!(body.get("stream_options").is_none(), "{body}");
    assert_eq!(body["stream"], true);
    // Any other unknown field is still the caller's.
    let other = json!({"error": {"message": "Unrecognized request argument supplied: foo",
        "type": "invalid_request_error"}});
    let err = adapter.map_error(400, &HeaderMap::new(), other.to_string().as_bytes());
    assert_eq!(err.class, ErrorClass::InvalidRequest);
    // The name quoted in an error about something else (a caller's schema of that
    // name) neither turns the field off nor makes the caller's error transient.
    let fresh = OpenAiAdapter::new(false);
    let schema = json!({"error": {"message": "Invalid schema for response_format 'stream_options': \
        In context=(), 'additionalProperties' is required to be supplied and to be false.",
        "type": "invalid_request_error", "param": "response_format"}});
    let err = fresh.map_error(400, &HeaderMap::new(), schema.to_string().as_bytes());
    assert_eq!(err.class, ErrorClass::InvalidRequest);
    assert_eq!(
        encode(&fresh, &req, true)["stream_options"],
        json!({"include_usage": true})
    );
    // pydantic's wording (vLLM and other FastAPI servers) is a refusal of the field.
    let pydantic = json!({"object": "error", "message": "[{'type': 'extra_forbidden', 'loc': ('body', 'stream_options'), 'msg': 'Extra inputs are not permitted'}]"});
    let err = fresh.map_error(400, &HeaderMap::new(), pydantic.to_string().as_bytes());
    assert_eq!(err.class, ErrorClass::Transient);
}

#[test]
fn an_error_sent_with_status_200_is_classed_by_what_it_says() {
    let adapter = OpenAiAdapter::new(true);
    let map = |body: Value| adapter.map_error(200, &HeaderMap::new(), body.to_string().as_bytes());
    let err = map(json!({"error": {"code": "context_length_exceeded", "message": "too long"}}));
    assert_eq!(err.class, ErrorClass::ContextWindow);
    // OpenRouter's numeric code stands for the status.
    let err = map(json!({"error": {"code": 429, "message": "Rate limit exceeded"}}));
    assert_eq!(err.class, ErrorClass::Throttled);
    assert_eq!(err.status, Some(429));
    let err = map(json!({"error": {"code": 400, "message": "bad field"}}));
    assert_eq!(err.class, ErrorClass::InvalidRequest);
    assert_eq!(err.status, Some(400));
    // Neither an answer nor a named error: the upstream's failure, never a 200.
    let err = map(json!({"unexpected": true}));
    assert_eq!(err.class, ErrorClass::Transient);
    assert_eq!(err.status, None);
}

#[test]
fn whole_answers_without_a_stop_reason_are_no_answers() {
    // The OpenAI shape here; the Anthropic one is tested beside its decoder.
    let body = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Cut"}, "finish_reason": null}]});
    let err = OpenAiAdapter::new(true)
        .decode_response(body.to_string().as_bytes())
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Protocol);
}
