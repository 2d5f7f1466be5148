//! Tests of the serve side, including round trips through the client side.

use super::*;
use crate::Adapter;
use crate::gemini::GeminiAdapter;
use bulwark_core::{
    ChatRequest, ErrorClass, ImageSource, Message, ResponseFormat, Role, Tool, ToolChoice,
};

fn decode(body: Value) -> Result<ChatRequest, GatewayError> {
    decode_request(
        "models/gemini-2.5-flash",
        body.to_string().as_bytes(),
        false,
    )
}

/// What `google-genai` 3.6 sends for a request with every supported feature (captured
/// from the SDK: note the snake_case members and the float `topK`).
fn sdk_request() -> Value {
    json!({
        "contents": [
            {"parts": [{"text": "weather?"}, {"inlineData": {"data": "iVBORw==", "mime_type": "image/png"}}], "role": "user"},
            {"parts": [{"functionCall": {"args": {"city": "Paris"}, "name": "get_weather"}}], "role": "model"},
            {"parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}], "role": "user"}
        ],
        "systemInstruction": {"parts": [{"text": "be nice"}], "role": "user"},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "tools": [{"functionDeclarations": [{
            "description": "d", "name": "get_weather",
            "parameters_json_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "response_json_schema": {"type": "string"}
        }]}],
        "toolConfig": {"functionCallingConfig": {"allowedFunctionNames": ["get_weather"], "mode": "ANY"}},
        "generationConfig": {
            "temperature": 0.5, "topP": 0.9, "topK": 40.0, "maxOutputTokens": 100, "stopSequences": ["END"],
            "presencePenalty": 0.1, "frequencyPenalty": 0.2, "seed": 7, "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}
        }
    })
}

#[test]
fn decodes_what_the_python_sdk_sends() {
    let req = decode(sdk_request()).unwrap();
    assert_eq!(req.model, "gemini-2.5-flash");
    assert_eq!(req.system, vec!["be nice".to_string()]);
    assert_eq!(
        req.messages,
        vec![
            Message {
                role: Role::User,
                content: vec![
                    ContentBlock::Text {
                        text: "weather?".into()
                    },
                    ContentBlock::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/png".into(),
                            data: "iVBORw==".into()
                        },
                        detail: None,
                    },
                ],
            },
            Message {
                role: Role::Assistant,
                content: vec![ContentBlock::ToolUse {
                    id: "call_1_0".into(),
                    name: "get_weather".into(),
                    input: json!({"city": "Paris"}),
                }],
            },
            Message {
                role: Role::User,
                content: vec![ContentBlock::ToolResult {
                    tool_use_id: "call_1_0".into(),
                    content: vec![ContentBlock::Text {
                        text: "sunny".into()
                    }],
                    is_error: false,
                }],
            },
        ]
    );
    assert_eq!(
        req.tools,
        vec![Tool {
            name: "get_weather".into(),
            description: Some("d".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            strict: false,
        }]
    );
    assert_eq!(
        req.tool_choice,
        Some(ToolChoice::Tool {
            name: "get_weather".into()
        })
    );
    assert_eq!(req.temperature, Some(0.5));
    assert_eq!(req.top_p, Some(0.9));
    assert_eq!(req.top_k, Some(40));
    assert_eq!(req.max_tokens, Some(100));
    assert_eq!(req.stop, vec!["END".to_string()]);
    assert_eq!(req.presence_penalty, Some(0.1));
    assert_eq!(req.frequency_penalty, Some(0.2));
    assert_eq!(req.seed, Some(7));
    assert_eq!(
        req.response_format,
        Some(ResponseFormat::JsonSchema {
            name: "response".into(),
            schema: json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}),
            strict: true,
        })
    );
}

#[test]
fn client_encoding_decodes_back_to_the_same_request() {
    let original = ChatRequest {
        model: "gemini-2.5-flash".into(),
        system: vec!["Be brief.".into()],
        messages: vec![
            Message::user_text("Weather in Paris and Rome?"),
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentBlock::ToolUse {
                        id: "toolu_a".into(),
                        name: "get_weather".into(),
                        input: json!({"city": "Paris"}),
                    },
                    ContentBlock::ToolUse {
                        id: "toolu_b".into(),
                        name: "get_weather".into(),
                        input: json!({"city": "Rome"}),
                    },
                ],
            },
            Message {
                role: Role::User,
                content: vec![
                    ContentBlock::ToolResult {
                        tool_use_id: "toolu_b".into(),
                        content: vec![ContentBlock::Text { text: "21".into() }],
                        is_error: false,
                    },
                    ContentBlock::ToolResult {
                        tool_use_id: "toolu_a".into(),
                        content: vec![ContentBlock::Text {
                            text: "timeout".into(),
                        }],
                        is_error: true,
                    },
                ],
            },
        ],
        tools: vec![Tool {
            name: "get_weather".into(),
            description: None,
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            strict: false,
        }],
        tool_choice: Some(ToolChoice::Auto),
        max_tokens: Some(64),
        temperature: Some(0.0),
        top_k: Some(3),
        stop: vec!["\n\n".into()],
        response_format: Some(ResponseFormat::JsonObject),
        ..ChatRequest::default()
    };
    let body = GeminiAdapter::new()
        .encode_request(&original, "gemini-2.5-flash", false)
        .unwrap();
    let decoded = decode_request("gemini-2.5-flash", &body, false).unwrap();
    assert_eq!(decoded, original);
}

#[test]
fn function_responses_without_ids_answer_the_oldest_open_call_of_that_name() {
    let req = decode(json!({"contents": [
        {"role": "user", "parts": [{"text": "go"}]},
        {"role": "model", "parts": [
            {"functionCall": {"name": "f", "args": {"n": 1}}, "thoughtSignature": "c2ln"},
            {"functionCall": {"name": "f", "args": {"n": 2}}},
            {"functionCall": {"id": "given", "name": "g"}}
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "f", "response": {"output": {"n": 1}}}},
            {"functionResponse": {"name": "f", "response": {"a": 1, "b": 2}}},
            {"function_response": {"name": "g", "response": {"error": "boom"}}}
        ]}
    ]}))
    .unwrap();
    let results: Vec<_> = req.messages[2]
        .content
        .iter()
        .map(|b| match b {
            ContentBlock::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => (tool_use_id.as_str(), content[0].clone(), *is_error),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        results,
        vec![
            (
                "call_1_0",
                ContentBlock::Text {
                    text: r#"{"n":1}"#.into()
                },
                false
            ),
            (
                "call_1_1",
                ContentBlock::Text {
                    text: r#"{"a":1,"b":2}"#.into()
                },
                false
            ),
            (
                "given",
                ContentBlock::Text {
                    text: "boom".into()
                },
                true
            ),
        ]
    );
}

#[test]
fn rejects_what_it_cannot_serve_naming_the_field() {
    let cases = [
        (
            json!({"contents": [{"parts": [{"text": "hi"}]}], "temperature": 1}),
            "temperature",
        ),
        (json!({"contents": []}), "contents"),
        (
            json!({"systemInstruction": {"parts": [{"text": "x"}]}}),
            "contents",
        ),
        (
            json!({"contents": [{"role": "system", "parts": [{"text": "hi"}]}]}),
            "contents[0].role",
        ),
        (
            json!({"contents": [{"parts": [{"text": "hi", "bogus": 1}]}]}),
            "contents[0]",
        ),
        (
            json!({"contents": [{"parts": [{"text": "hi", "inlineData": {"mimeType": "image/png", "data": ""}}]}]}),
            "contents[0].parts[0]",
        ),
        (
            json!({"contents": [{"parts": [{"inlineData": {"mimeType": "audio/wav", "data": "AA=="}}]}]}),
            "contents[0].parts[0].inlineData.mimeType",
        ),
        (
            json!({"contents": [{"parts": [{"functionResponse": {"name": "f", "response": {}}}]}]}),
            "contents[0].parts[0].functionResponse.name",
        ),
        (
            json!({"contents": [{"parts": [{"text": "hi"}]}], "tools": [{"googleSearch": {}}]}),
            "tools[0].googleSearch",
        ),
        (
            json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"candidateCount": 2}}),
            "generationConfig.candidateCount",
        ),
        (
            json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"topK": 1.5}}),
            "generationConfig.topK",
        ),
        (
            json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"speechConfig": {}}}),
            "generationConfig",
        ),
        (
            json!({"contents": [{"parts": [{"text": "hi"}]}], "cachedContent": "cachedContents/x"}),
            "cachedContent",
        ),
    ];
    for (body, param) in cases {
        let err = decode(body.clone()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidRequest, "{body}");
        assert_eq!(err.param.as_deref(), Some(param), "{body}: {}", err.message);
    }
    let err = decode_request("m", b"{not json", false).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    let err = decode_request("m", b"[1]", false).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
}

#[test]
fn openapi_schemas_become_json_schema() {
    let req = decode(json!({
        "contents": [{"parts": [{"text": "hi"}]}],
        "tools": [{"functionDeclarations": [{"name": "f", "parameters": {
            "type": "OBJECT", "properties": {"xs": {"type": "ARRAY", "items": {"type": "STRING"}}}}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "NONE"}},
        "generationConfig": {"responseMimeType": "text/plain", "thinkingConfig": {"thinkingBudget": 0}}
    }))
    .unwrap();
    assert_eq!(
        req.tools[0].parameters,
        json!({"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "string"}}}})
    );
    assert_eq!(req.tool_choice, Some(ToolChoice::None));
    assert_eq!(req.response_format, Some(ResponseFormat::Text));
}

fn answer() -> ChatResponse {
    ChatResponse {
        id: "resp-9".into(),
        model: "gemini-2.5-flash".into(),
        content: vec![
            ContentBlock::Text {
                text: "Checking.".into(),
            },
            ContentBlock::ToolUse {
                id: "call_x".into(),
                name: "get_weather".into(),
                input: json!({"city": "Paris"}),
            },
        ],
        stop_reason: StopReason::ToolUse,
        stop_sequence: None,
        usage: Usage {
            input_tokens: 12,
            output_tokens: 8,
            cache_read_input_tokens: None,
            cache_creation_input_tokens: None,
        },
    }
}

#[test]
fn encodes_a_generate_content_response() {
    let body: Value = serde_json::from_slice(&encode_response(&answer())).unwrap();
    assert_eq!(
        body,
        json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "Checking."},
                    {"functionCall": {"id": "call_x", "name": "get_weather", "args": {"city": "Paris"}}}
                ]},
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 8, "totalTokenCount": 20},
            "modelVersion": "gemini-2.5-flash",
            "responseId": "resp-9"
        })
    );
    let back = GeminiAdapter::new()
        .decode_response(&encode_response(&answer()))
        .unwrap();
    assert_eq!(back, answer());
}

fn run_encoder(events: &[StreamEvent]) -> Vec<SseFrame> {
    let mut encoder = StreamEncoder::new();
    let mut frames = Vec::new();
    for event in events {
        encoder.encode(event, &mut frames);
    }
    frames
}

fn run_decoder(frames: &[SseFrame]) -> (Vec<StreamEvent>, Result<(), bulwark_core::UpstreamError>) {
    let mut decoder = GeminiAdapter::new().stream_decoder();
    let mut events = Vec::new();
    for frame in frames {
        assert!(frame.event.is_none());
        if let Err(err) = decoder.feed(None, &frame.data, &mut events) {
            return (events, Err(err));
        }
    }
    let result = decoder.finish(&mut events);
    (events, result)
}

#[test]
fn stream_of_text_then_a_call_round_trips_through_the_client_decoder() {
    let usage = Usage {
        input_tokens: 5,
        output_tokens: 9,
        ..Usage::default()
    };
    let events = vec![
        StreamEvent::Start {
            id: "r-1".into(),
            model: "gemini-2.5-flash".into(),
        },
        StreamEvent::TextDelta {
            text: "Let me ".into(),
        },
        StreamEvent::TextDelta {
            text: "check.".into(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "call_1".into(),
            name: "get_weather".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: r#"{"city":"#.into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: r#""Paris"}"#.into(),
        },
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
            stop_sequence: None,
            usage,
        },
    ];
    let frames = run_encoder(&events);
    assert_eq!(frames.len(), 4, "{frames:?}");
    let first: Value = serde_json::from_str(&frames[0].data).unwrap();
    assert_eq!(
        first,
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Let me "}]}, "index": 0}],
               "modelVersion": "gemini-2.5-flash", "responseId": "r-1"})
    );
    let call: Value = serde_json::from_str(&frames[2].data).unwrap();
    assert_eq!(
        call["candidates"][0]["content"]["parts"][0]["functionCall"],
        json!({"id": "call_1", "name": "get_weather", "args": {"city": "Paris"}})
    );
    let last: Value = serde_json::from_str(&frames[3].data).unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        last["usageMetadata"],
        json!({"promptTokenCount": 5, "candidatesTokenCount": 9, "totalTokenCount": 14})
    );

    let (decoded, result) = run_decoder(&frames);
    result.unwrap();
    let expected = vec![
        events[0].clone(),
        events[1].clone(),
        events[2].clone(),
        events[3].clone(),
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: r#"{"city":"Paris"}"#.into(),
        },
        events[6].clone(),
    ];
    assert_eq!(decoded, expected);
}

#[test]
fn a_stream_error_is_in_band_and_ends_the_stream() {
    let mut encoder = StreamEncoder::new();
    let mut frames = Vec::new();
    encoder.encode(
        &StreamEvent::Start {
            id: "r".into(),
            model: "m".into(),
        },
        &mut frames,
    );
    encoder.encode(&StreamEvent::TextDelta { text: "Hal".into() }, &mut frames);
    let mut err = GatewayError::new(ErrorKind::RateLimited, "slow down");
    err.retry_after = Some(Duration::from_secs(2));
    encoder.encode_error(&err, &mut frames);
    encoder.encode(
        &StreamEvent::Finish {
            stop_reason: StopReason::EndTurn,
            stop_sequence: None,
            usage: Usage::default(),
        },
        &mut frames,
    );
    assert_eq!(frames.len(), 2);
    assert!(frames[1].data.starts_with(r#"{"error":"#));

    let (events, result) = run_decoder(&frames);
    assert_eq!(events.len(), 2);
    let err = result.unwrap_err();
    assert_eq!(err.class, ErrorClass::Throttled);
    assert_eq!(err.retry_after, Some(Duration::from_secs(2)));
    assert_eq!(err.message, "slow down");
}

#[test]
fn error_bodies_carry_googles_status_names() {
    let cases = [
        (ErrorKind::InvalidRequest, 400, "INVALID_ARGUMENT"),
        (ErrorKind::Authentication, 401, "UNAUTHENTICATED"),
        (ErrorKind::PermissionDenied, 403, "PERMISSION_DENIED"),
        (ErrorKind::NotFound, 404, "NOT_FOUND"),
        (ErrorKind::RateLimited, 429, "RESOURCE_EXHAUSTED"),
        (ErrorKind::Internal, 500, "INTERNAL"),
        (ErrorKind::Unavailable, 503, "UNAVAILABLE"),
        (ErrorKind::Timeout, 504, "DEADLINE_EXCEEDED"),
    ];
    for (kind, code, status) in cases {
        let body: Value =
            serde_json::from_slice(&error_body(&GatewayError::new(kind, "nope"))).unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": code, "message": "nope", "status": status}})
        );
    }

    // The mock's 429 with a wait classifies as the real one would.
    let mut err = GatewayError::new(ErrorKind::RateLimited, "Resource exhausted.");
    err.retry_after = Some(Duration::from_millis(1500));
    let body = error_body(&err);
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["error"]["details"][0]["retryDelay"], "1.5s");
    let mapped = GeminiAdapter::new().map_error(429, &http::HeaderMap::new(), &body);
    assert_eq!(mapped.class, ErrorClass::Throttled);
    assert_eq!(mapped.retry_after, Some(Duration::from_millis(1500)));
}

#[test]
fn an_sdk_function_calling_turn_resolves_the_response_to_the_call_id() {
    // Captured from `google-genai` automatic function calling against `encode_response`
    // output: the SDK replays the call with its id but answers it without one.
    let req = decode(json!({
        "contents": [
            {"parts": [{"text": "weather in Paris?"}], "role": "user"},
            {"parts": [{"text": "Checking."},
                       {"functionCall": {"id": "call_x", "args": {"city": "Paris"}, "name": "get_weather"}}],
             "role": "model"},
            {"parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "18C sunny in Paris"}}}],
             "role": "user"}
        ],
        "systemInstruction": {"parts": [{"text": "be brief"}], "role": "user"},
        "tools": [{"functionDeclarations": [{
            "description": "Get the weather.", "name": "get_weather",
            "parameters_json_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "response_json_schema": {"type": "string"}}]}],
        "generationConfig": {"thinkingConfig": {"thinking_budget": 0}}
    }))
    .unwrap();
    assert_eq!(
        req.messages[2].content,
        vec![ContentBlock::ToolResult {
            tool_use_id: "call_x".into(),
            content: vec![ContentBlock::Text {
                text: "18C sunny in Paris".into()
            }],
            is_error: false,
        }]
    );
    // And the client side can replay that history to a real Gemini.
    let body = GeminiAdapter::new()
        .encode_request(&req, "gemini-2.5-flash", false)
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body["contents"][2]["parts"][0]["functionResponse"],
        json!({"id": "call_x", "name": "get_weather", "response": {"result": "18C sunny in Paris"}})
    );
}
