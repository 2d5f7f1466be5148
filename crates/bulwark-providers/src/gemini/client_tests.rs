//! Tests of request encoding and response decoding.

use super::*;
use bulwark_core::Tool as NeutralTool;
use serde_json::json;

fn adapter() -> GeminiAdapter {
    GeminiAdapter::new()
}

fn encode(req: &ChatRequest) -> Value {
    let bytes = adapter()
        .encode_request(req, "gemini-2.5-flash", false)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn url_takes_model_with_or_without_prefix_and_never_carries_the_key() {
    let a = adapter();
    let base = "https://generativelanguage.googleapis.com";
    assert_eq!(
        a.url(base, "gemini-2.5-flash", false),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        a.url(base, "models/gemini-2.5-flash", true),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    let mut headers = HeaderMap::new();
    a.auth_headers(Some("sekret"), &mut headers);
    assert_eq!(headers["x-goog-api-key"], "sekret");
    assert!(headers["x-goog-api-key"].is_sensitive());
    let mut none = HeaderMap::new();
    a.auth_headers(None, &mut none);
    assert!(none.is_empty());
}

fn full_request() -> ChatRequest {
    ChatRequest {
        model: "route".into(),
        system: vec!["Be brief.".into(), "Use metric units.".into()],
        messages: vec![
            Message {
                role: Role::User,
                content: vec![
                    ContentBlock::Text {
                        text: "What is the weather here?".into(),
                    },
                    ContentBlock::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/png".into(),
                            data: "iVBORw0KGgo=".into(),
                        },
                        detail: None,
                    },
                ],
            },
            Message::user_text("In Paris, please."),
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentBlock::Text {
                        text: "Checking.".into(),
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
                        text: "18°C, sunny".into(),
                    }],
                    is_error: false,
                }],
            },
        ],
        tools: vec![NeutralTool {
            name: "get_weather".into(),
            description: Some("Current weather".into()),
            parameters: json!({
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": false
            }),
            strict: false,
        }],
        tool_choice: Some(ToolChoice::Tool {
            name: "get_weather".into(),
        }),
        parallel_tool_calls: Some(true),
        max_tokens: Some(256),
        temperature: Some(0.2),
        top_p: Some(0.9),
        top_k: Some(40),
        presence_penalty: Some(0.1),
        frequency_penalty: Some(0.3),
        seed: Some(7),
        stop: vec!["END".into()],
        response_format: None,
        user: Some("user-42".into()),
        stream: false,
        include_usage: false,
        cache_control: Vec::new(),
        anthropic_beta: None,
        prompt_cache_key: None,
        // Anthropic's: never sent to this provider.
        thinking: Some(serde_json::json!({"type": "enabled", "budget_tokens": 2048})),
        context_management: Some(serde_json::json!({"edits": []})),
        effort: Some(serde_json::json!("high")),
        reasoning_effort: Some("low".into()),
        verbosity: Some("high".into()),
    }
}

#[test]
fn encodes_a_full_request() {
    let body = encode(&full_request());
    assert_eq!(
        body,
        json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "What is the weather here?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                    {"text": "In Paris, please."}
                ]},
                {"role": "model", "parts": [
                    {"text": "Checking."},
                    {"functionCall": {"id": "toolu_1", "name": "get_weather", "args": {"city": "Paris"}},
                     "thoughtSignature": "skip_thought_signature_validator"}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"id": "toolu_1", "name": "get_weather",
                                          "response": {"result": "18°C, sunny"}}}
                ]}
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use metric units."}]},
            "tools": [{"functionDeclarations": [{
                "name": "get_weather",
                "description": "Current weather",
                "parametersJsonSchema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                    "additionalProperties": false
                }
            }]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "generationConfig": {
                "temperature": 0.2,
                "topP": 0.9,
                "topK": 40,
                "maxOutputTokens": 256,
                "stopSequences": ["END"],
                "presencePenalty": 0.1,
                "frequencyPenalty": 0.3,
                "seed": 7
            }
        })
    );
}

#[test]
fn error_results_json_output_and_tool_choice_modes() {
    let mut req = full_request();
    if let ContentBlock::ToolResult { is_error, .. } = &mut req.messages[3].content[0] {
        *is_error = true;
    }
    req.response_format = Some(ResponseFormat::JsonSchema {
        name: "weather".into(),
        schema: json!({"type": "object"}),
        strict: true,
    });
    req.tool_choice = Some(ToolChoice::Required);
    let body = encode(&req);
    assert_eq!(
        body["contents"][2]["parts"][0]["functionResponse"]["response"],
        json!({"error": "18°C, sunny"})
    );
    assert_eq!(
        body["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert_eq!(
        body["generationConfig"]["responseJsonSchema"],
        json!({"type": "object"})
    );
    assert_eq!(
        body["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );

    req.response_format = Some(ResponseFormat::JsonObject);
    req.tool_choice = Some(ToolChoice::None);
    let body = encode(&req);
    assert_eq!(
        body["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert!(body["generationConfig"].get("responseJsonSchema").is_none());
    assert_eq!(
        body["toolConfig"],
        json!({"functionCallingConfig": {"mode": "NONE"}})
    );
}

#[test]
fn minimal_request_has_no_optional_sections() {
    let req = ChatRequest {
        messages: vec![Message::user_text("hi")],
        ..ChatRequest::default()
    };
    assert_eq!(
        encode(&req),
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    );
}

#[test]
fn refuses_what_gemini_cannot_express() {
    let a = adapter();
    // `parallel_tool_calls: false` has no Gemini switch: the request goes as it would
    // without it (the provider keeps the turn's first call).
    let mut req = full_request();
    req.parallel_tool_calls = Some(false);
    let mut without = full_request();
    without.parallel_tool_calls = None;
    assert_eq!(encode(&req), encode(&without));

    let mut req = full_request();
    req.messages[0].content[1] = ContentBlock::Image {
        source: ImageSource::Url {
            url: "https://example.com/a.png".into(),
        },
        detail: None,
    };
    let err = a.encode_request(&req, "m", false).unwrap_err();
    assert_eq!(err.class, ErrorClass::Unsupported);
    assert!(err.message.contains("image URLs"));

    let mut req = full_request();
    req.seed = Some(i64::from(i32::MAX) + 1);
    assert_eq!(
        a.encode_request(&req, "m", false).unwrap_err().class,
        ErrorClass::Unsupported
    );
}

#[test]
fn a_tool_result_without_its_call_is_an_invalid_request() {
    let mut req = full_request();
    if let ContentBlock::ToolResult { tool_use_id, .. } = &mut req.messages[3].content[0] {
        *tool_use_id = "toolu_unknown".into();
    }
    let err = adapter().encode_request(&req, "m", false).unwrap_err();
    assert_eq!(err.class, ErrorClass::InvalidRequest);
    assert!(err.message.contains("toolu_unknown"));
}

#[test]
fn decodes_text_and_function_calls() {
    let body = json!({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "thinking about it", "thought": true},
                {"text": "Let me "},
                {"text": "check."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"id": "fc-2", "name": "get_time", "args": {}}}
            ]},
            "finishReason": "STOP",
            "index": 0,
            "safetyRatings": []
        }],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 5,
            "thoughtsTokenCount": 7,
            "cachedContentTokenCount": 4,
            "totalTokenCount": 22
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "resp-1",
        "someNewField": {"ignored": true}
    });
    let resp = adapter()
        .decode_response(body.to_string().as_bytes())
        .unwrap();
    assert_eq!(resp.id, "resp-1");
    assert_eq!(resp.model, "gemini-2.5-flash");
    assert_eq!(resp.stop_reason, StopReason::ToolUse);
    assert_eq!(resp.content.len(), 3);
    assert_eq!(
        resp.content[0],
        ContentBlock::Text {
            text: "Let me check.".into()
        }
    );
    let ContentBlock::ToolUse { id, name, input } = &resp.content[1] else {
        panic!("expected a tool call, got {:?}", resp.content[1]);
    };
    assert!(id.starts_with("call_") && id.len() == 5 + 32, "{id}");
    assert_eq!(name, "get_weather");
    assert_eq!(input, &json!({"city": "Paris"}));
    assert!(matches!(&resp.content[2], ContentBlock::ToolUse { id, .. } if id == "fc-2"));
    assert_eq!(
        resp.usage,
        Usage {
            input_tokens: 10,
            output_tokens: 12,
            cache_read_input_tokens: Some(4),
            cache_creation_input_tokens: None,
        }
    );
}

#[test]
fn maps_finish_reasons() {
    assert_eq!(stop_reason(Some("STOP"), false), StopReason::EndTurn);
    assert_eq!(stop_reason(Some("MAX_TOKENS"), true), StopReason::MaxTokens);
    for reason in [
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
    ] {
        assert_eq!(stop_reason(Some(reason), false), StopReason::ContentFilter);
    }
    assert_eq!(
        stop_reason(Some("MALFORMED_FUNCTION_CALL"), false),
        StopReason::Other
    );
    assert_eq!(stop_reason(None, false), StopReason::Other);
}

#[test]
fn missing_ids_and_model_are_filled_in() {
    let body = json!({"candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "MAX_TOKENS"}]});
    let resp = adapter()
        .decode_response(body.to_string().as_bytes())
        .unwrap();
    assert!(resp.id.starts_with("gemini-"));
    assert_eq!(resp.model, "gemini");
    assert_eq!(resp.stop_reason, StopReason::MaxTokens);
    assert_eq!(resp.usage, Usage::default());
}

#[test]
fn a_blocked_prompt_is_a_content_policy_error() {
    let body = json!({
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
        "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
        "modelVersion": "gemini-2.5-flash"
    });
    let err = adapter()
        .decode_response(body.to_string().as_bytes())
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::ContentPolicy);
    assert_eq!(err.code.as_deref(), Some("SAFETY"));

    let err = adapter()
        .decode_response(b"{\"candidates\": []}")
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Protocol);
    let err = adapter().decode_response(b"<html>").unwrap_err();
    assert_eq!(err.class, ErrorClass::Protocol);
}

#[test]
fn a_whole_answer_without_a_finish_reason_is_no_answer() {
    // Streamed, an answer that ends without `finishReason` fails over; whole (a
    // stream request answered with one JSON document, or a probe) it is the same.
    let body = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Cut"}]}}]});
    let err = adapter()
        .decode_response(body.to_string().as_bytes())
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Protocol);
    assert!(err.message.contains("finishReason"), "{err:?}");
}
