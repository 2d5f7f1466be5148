//! Round trips between the two halves of the OpenAI module: what the client side
//! encodes, the serve side decodes to the same neutral value, and back.

use bulwark_core::{
    ChatRequest, ChatResponse, ContentBlock, ErrorClass, ErrorKind, GatewayError, ImageSource,
    Message, ResponseFormat, Role, StopReason, StreamEvent, Tool, ToolChoice, UpstreamError, Usage,
};
use http::HeaderMap;
use serde_json::{Value, json};

use super::OpenAiAdapter;
use super::serve::{StreamEncoder, decode_request, encode_response, error_body};
use crate::Adapter;

fn canonical_request(stream: bool) -> ChatRequest {
    ChatRequest {
        model: "gpt-4o".into(),
        system: vec!["One.".into(), "Two.".into()],
        messages: vec![
            Message {
                role: Role::User,
                content: vec![
                    ContentBlock::Text {
                        text: "Look:".into(),
                    },
                    ContentBlock::Image {
                        source: ImageSource::Base64 {
                            media_type: "image/webp".into(),
                            data: "UklG".into(),
                        },
                        detail: None,
                    },
                    ContentBlock::Image {
                        source: ImageSource::Url {
                            url: "https://example.com/x.jpg".into(),
                        },
                        detail: Some("low".into()),
                    },
                ],
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentBlock::Text {
                        text: "Calling.".into(),
                    },
                    ContentBlock::ToolUse {
                        id: "call_1".into(),
                        name: "lookup".into(),
                        input: json!({"q": "x", "n": 2}),
                    },
                    ContentBlock::ToolUse {
                        id: "call_2".into(),
                        name: "lookup".into(),
                        input: json!({"q": "y"}),
                    },
                ],
            },
            Message {
                role: Role::User,
                content: vec![
                    ContentBlock::ToolResult {
                        tool_use_id: "call_1".into(),
                        content: vec![ContentBlock::Text { text: "X!".into() }],
                        is_error: false,
                    },
                    ContentBlock::ToolResult {
                        tool_use_id: "call_2".into(),
                        content: vec![ContentBlock::Text { text: "Y!".into() }],
                        is_error: false,
                    },
                ],
            },
            Message::user_text("Summarise."),
        ],
        tools: vec![Tool {
            name: "lookup".into(),
            description: None,
            parameters: json!({"type": "object", "properties": {"q": {"type": "string"}}}),
            strict: false,
        }],
        tool_choice: Some(ToolChoice::Auto),
        parallel_tool_calls: Some(true),
        max_tokens: Some(500),
        temperature: Some(1.5),
        top_p: Some(0.5),
        top_k: None,
        presence_penalty: Some(1.0),
        frequency_penalty: Some(-1.0),
        seed: Some(7),
        stop: vec!["###".into(), "END".into()],
        response_format: Some(ResponseFormat::JsonSchema {
            name: "r".into(),
            schema: json!({"type": "object", "properties": {}}),
            strict: false,
        }),
        user: Some("someone".into()),
        stream,
        // The client always asks for usage when streaming.
        include_usage: stream,
        cache_control: Vec::new(),
        anthropic_beta: None,
        prompt_cache_key: None,
        thinking: None,
        context_management: None,
        effort: None,
        reasoning_effort: None,
        verbosity: None,
    }
}

#[test]
fn serve_decode_inverts_client_encode() {
    for (compatible, stream) in [(false, false), (false, true), (true, false), (true, true)] {
        let mut req = canonical_request(stream);
        if compatible {
            req.top_k = Some(30);
        }
        let body = OpenAiAdapter::new(compatible)
            .encode_request(&req, "gpt-4o", stream)
            .unwrap();
        let back = decode_request(&body).unwrap();
        assert_eq!(back, req, "compatible={compatible} stream={stream}");
    }
}

#[test]
fn client_encode_inverts_serve_decode_for_an_sdk_body() {
    // What the openai SDK sends for a typical tool-using conversation.
    let sdk = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "w", "arguments": "{\"c\":\"Paris\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "w", "arguments": "{\"c\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_b", "content": "24C"},
            {"role": "user", "content": [{"type": "text", "text": "And this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/p.png"}}]}
        ],
        "tools": [{"type": "function", "function": {"name": "w", "description": "Weather",
            "parameters": {"type": "object", "properties": {"c": {"type": "string"}}, "required": ["c"]}}}],
        "tool_choice": {"type": "function", "function": {"name": "w"}},
        "parallel_tool_calls": true,
        "max_completion_tokens": 300,
        "temperature": 0.0,
        "stop": ["\n\n"],
        "seed": 3,
        "response_format": {"type": "json_object"},
        "user": "u",
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    let req = decode_request(sdk.to_string().as_bytes()).unwrap();
    let body = OpenAiAdapter::new(false)
        .encode_request(&req, "gpt-4o", true)
        .unwrap();
    let encoded: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(encoded, sdk);
}

#[test]
fn response_round_trips_through_encode_and_decode() {
    let adapter = OpenAiAdapter::new(false);
    let resp = ChatResponse {
        id: "chatcmpl-rt".into(),
        model: "gpt-4o-mini".into(),
        content: vec![
            ContentBlock::Text {
                text: "Here:".into(),
            },
            ContentBlock::ToolUse {
                id: "call_9".into(),
                name: "f".into(),
                input: json!({"deep": {"list": [1, 2.5, "three", null]}}),
            },
        ],
        stop_reason: StopReason::ToolUse,
        stop_sequence: None,
        usage: Usage {
            input_tokens: 11,
            output_tokens: 22,
            cache_read_input_tokens: Some(3),
            cache_creation_input_tokens: None,
        },
    };
    let back = adapter
        .decode_response(&encode_response(&resp, "chatcmpl-rt", 5))
        .unwrap();
    assert_eq!(back, resp);

    for stop in [
        StopReason::EndTurn,
        StopReason::MaxTokens,
        StopReason::ContentFilter,
        StopReason::Refusal,
    ] {
        let text_only = ChatResponse {
            content: vec![ContentBlock::Text {
                text: "words".into(),
            }],
            stop_reason: stop,
            ..resp.clone()
        };
        let back = adapter
            .decode_response(&encode_response(&text_only, "chatcmpl-rt", 5))
            .unwrap();
        assert_eq!(back, text_only, "{stop:?}");
    }
}

fn decode_frames(frames: &[bulwark_core::SseFrame]) -> Result<Vec<StreamEvent>, UpstreamError> {
    let mut decoder = OpenAiAdapter::new(false).stream_decoder();
    let mut out = Vec::new();
    for frame in frames {
        decoder.feed(frame.event, &frame.data, &mut out)?;
    }
    decoder.finish(&mut out)?;
    Ok(out)
}

#[test]
fn streamed_tool_call_round_trips_through_encoder_and_decoder() {
    let events = vec![
        StreamEvent::Start {
            id: "chatcmpl-st".into(),
            model: "gpt-4o".into(),
        },
        StreamEvent::TextDelta {
            text: "Let me see".into(),
        },
        StreamEvent::TextDelta { text: ".".into() },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "call_x".into(),
            name: "search".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "{\"qu".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "ery\":\"rust\"}".into(),
        },
        StreamEvent::ToolCallStart {
            index: 1,
            id: "call_y".into(),
            name: "fetch".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 1,
            arguments: "{}".into(),
        },
        StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
            stop_sequence: None,
            usage: Usage {
                input_tokens: 40,
                output_tokens: 12,
                cache_read_input_tokens: Some(8),
                cache_creation_input_tokens: None,
            },
        },
    ];
    let mut encoder = StreamEncoder::new("chatcmpl-st".into(), 9, true);
    let mut frames = Vec::new();
    for event in &events {
        encoder.encode(event, &mut frames);
    }
    assert_eq!(decode_frames(&frames).unwrap(), events);
}

#[test]
fn stream_error_round_trips_as_a_classified_error() {
    let mut encoder = StreamEncoder::new("chatcmpl-e".into(), 1, false);
    let mut frames = Vec::new();
    encoder.encode(
        &StreamEvent::Start {
            id: "chatcmpl-e".into(),
            model: "m".into(),
        },
        &mut frames,
    );
    encoder.encode(
        &StreamEvent::TextDelta {
            text: "partial".into(),
        },
        &mut frames,
    );
    encoder.encode_error(
        &GatewayError::new(ErrorKind::BadGateway, "upstream broke"),
        &mut frames,
    );
    let err = decode_frames(&frames).unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert_eq!(err.message, "upstream broke");
}

#[test]
fn error_bodies_map_back_to_their_class() {
    let adapter = OpenAiAdapter::new(false);
    let cases = [
        (
            GatewayError::new(ErrorKind::RateLimited, "You exceeded your current quota")
                .with_code("insufficient_quota"),
            ErrorClass::Quota,
        ),
        (
            GatewayError::new(ErrorKind::RateLimited, "slow down"),
            ErrorClass::Throttled,
        ),
        (
            GatewayError::invalid("too long").with_code("context_length_exceeded"),
            ErrorClass::ContextWindow,
        ),
        (
            GatewayError::invalid_param("messages", "Missing required parameter: 'messages'."),
            ErrorClass::InvalidRequest,
        ),
        (
            GatewayError::new(ErrorKind::Authentication, "bad key"),
            ErrorClass::Auth,
        ),
        (
            GatewayError::new(ErrorKind::Unavailable, "overloaded"),
            ErrorClass::Transient,
        ),
    ];
    for (err, class) in cases {
        let mapped = adapter.map_error(err.status_code(), &HeaderMap::new(), &error_body(&err));
        assert_eq!(mapped.class, class, "{err:?}");
        assert_eq!(mapped.message, err.message);
    }
}
