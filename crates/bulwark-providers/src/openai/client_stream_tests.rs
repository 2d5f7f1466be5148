//! Tests of the OpenAI stream decoder: chunk sequences from OpenAI and from
//! compatible servers, terminators, truncation and in-band errors.

use bulwark_core::{ErrorClass, StopReason, StreamEvent, Usage};

use super::super::OpenAiAdapter;
use crate::{Adapter, StreamDecoder};

fn feed_all(lines: &[&str]) -> (Vec<StreamEvent>, Result<(), bulwark_core::UpstreamError>) {
    let mut decoder = OpenAiAdapter::new(false).stream_decoder();
    let mut out = Vec::new();
    for line in lines {
        if let Err(err) = decoder.feed(None, line, &mut out) {
            return (out, Err(err));
        }
    }
    let end = decoder.finish(&mut out);
    (out, end)
}

#[test]
fn streams_text_with_role_only_first_chunk_and_usage_chunk() {
    let (events, end) = feed_all(&[
        r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null}"#,
        r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}],"usage":null}"#,
        r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
        r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":0}}}"#,
        "[DONE]",
    ]);
    end.unwrap();
    assert_eq!(
        events,
        vec![
            StreamEvent::Start {
                id: "chatcmpl-9".into(),
                model: "gpt-4o".into()
            },
            StreamEvent::TextDelta { text: "Hel".into() },
            StreamEvent::TextDelta { text: "lo".into() },
            StreamEvent::Finish {
                stop_reason: StopReason::EndTurn,
                stop_sequence: None,
                usage: Usage {
                    input_tokens: 9,
                    output_tokens: 2,
                    cache_read_input_tokens: Some(0),
                    cache_creation_input_tokens: None
                }
            },
        ]
    );
}

#[test]
fn streams_split_tool_calls_mapping_upstream_indexes_to_ordinals() {
    let (events, end) = feed_all(&[
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":3,"id":"call_a","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":3,"function":{"arguments":"{\"x\":"}}]}}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":7,"id":"call_b","type":"function","function":{"name":"g","arguments":"{}"}}]}}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":3,"function":{"arguments":"1}"}}]}}]}"#,
        // Usage in the same chunk as the finish reason (some compatible servers).
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":7}}"#,
        "[DONE]",
    ]);
    end.unwrap();
    assert_eq!(
        events,
        vec![
            StreamEvent::Start {
                id: "c".into(),
                model: "m".into()
            },
            StreamEvent::ToolCallStart {
                index: 0,
                id: "call_a".into(),
                name: "f".into()
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"x\":".into()
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "call_b".into(),
                name: "g".into()
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: "{}".into()
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "1}".into()
            },
            StreamEvent::Finish {
                stop_reason: StopReason::ToolUse,
                stop_sequence: None,
                usage: Usage {
                    input_tokens: 5,
                    output_tokens: 7,
                    ..Usage::default()
                }
            },
        ]
    );
}

#[test]
fn tool_fragments_without_index_continue_the_last_call() {
    let (events, end) = feed_all(&[
        r#"{"id":"c","model":"m","choices":[{"delta":{"tool_calls":[{"id":"t1","function":{"name":"f","arguments":"{\"a\""}}]}}]}"#,
        r#"{"id":"c","model":"m","choices":[{"delta":{"tool_calls":[{"function":{"arguments":":1}"}}]}}]}"#,
        r#"{"id":"c","model":"m","choices":[{"delta":{"tool_calls":[{"id":"t2","function":{"name":"g","arguments":"{}"}}]},"finish_reason":"stop"}]}"#,
        "[DONE]",
    ]);
    end.unwrap();
    let starts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCallStart { index, id, .. } => Some((*index, id.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(starts, vec![(0, "t1".to_string()), (1, "t2".to_string())]);
    assert!(events.contains(&StreamEvent::ToolCallDelta {
        index: 0,
        arguments: ":1}".into()
    }));
    // `stop` with tool calls is read as a tool-use stop.
    assert!(matches!(
        events.last(),
        Some(StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
            ..
        })
    ));
}

#[test]
fn refusal_deltas_stay_refusals_and_end_in_a_refusal_stop() {
    let (events, end) = feed_all(&[
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"role":"assistant","refusal":"I can't"}}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"refusal":" help."},"finish_reason":"stop"}]}"#,
        "[DONE]",
    ]);
    end.unwrap();
    assert_eq!(
        events[1],
        StreamEvent::RefusalDelta {
            text: "I can't".into()
        }
    );
    assert!(matches!(
        events.last(),
        Some(StreamEvent::Finish {
            stop_reason: StopReason::Refusal,
            ..
        })
    ));
}

#[test]
fn missing_terminator_after_finish_reason_still_finishes() {
    let (events, end) = feed_all(&[
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"length"}]}"#,
    ]);
    end.unwrap();
    assert!(matches!(
        events.last(),
        Some(StreamEvent::Finish {
            stop_reason: StopReason::MaxTokens,
            ..
        })
    ));
}

#[test]
fn truncated_streams_are_protocol_errors() {
    let (events, end) =
        feed_all(&[r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}"#]);
    let err = end.unwrap_err();
    assert_eq!(err.class, ErrorClass::Protocol);
    assert_eq!(err.message, "stream ended before the answer was complete");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, StreamEvent::Finish { .. }))
    );

    let (_, end) = feed_all(&[]);
    assert_eq!(end.unwrap_err().class, ErrorClass::Protocol);
    let (_, end) = feed_all(&["[DONE]"]);
    assert_eq!(end.unwrap_err().class, ErrorClass::Protocol);
    let (_, end) = feed_all(&["{not json"]);
    assert_eq!(end.unwrap_err().class, ErrorClass::Protocol);
    let (_, end) = feed_all(&[r#"{"choices": 5}"#]);
    assert_eq!(end.unwrap_err().class, ErrorClass::Protocol);
    // A tool call fragment with no name for a call never started.
    let (_, end) = feed_all(&[
        r#"{"id":"c","model":"m","choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}"#,
    ]);
    assert_eq!(end.unwrap_err().class, ErrorClass::Protocol);
}

#[test]
fn in_band_errors_are_classified() {
    let (events, end) = feed_all(&[
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}"#,
        r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#,
    ]);
    let err = end.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert_eq!(
        err.message,
        "The server had an error while processing your request."
    );
    assert_eq!(events.len(), 2);

    let (_, end) = feed_all(&[
        r#"{"error":{"message":"Rate limit reached","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
    ]);
    assert_eq!(end.unwrap_err().class, ErrorClass::Throttled);
    let (_, end) = feed_all(&[
        r#"{"error":{"message":"too long","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
    ]);
    assert_eq!(end.unwrap_err().class, ErrorClass::ContextWindow);
    let (_, end) = feed_all(&[
        r#"{"object":"error","message":"bad input","type":"BadRequestError","param":null,"code":400}"#,
    ]);
    let err = end.unwrap_err();
    assert_eq!(err.class, ErrorClass::InvalidRequest);
    assert_eq!(err.status, Some(400));
}

#[test]
fn tolerates_null_choices_and_an_empty_prelude_chunk() {
    let (events, end) = feed_all(&[
        r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":null}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}"#,
        r#"{"id":"c","model":"m","choices":null,"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
        "[DONE]",
    ]);
    end.unwrap();
    assert_eq!(
        events[0],
        StreamEvent::Start {
            id: "c".into(),
            model: "m".into()
        }
    );
    assert_eq!(events.len(), 3);
}

#[test]
fn data_after_done_is_ignored() {
    let (events, end) = feed_all(&[
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}"#,
        "[DONE]",
        "garbage after the end",
    ]);
    end.unwrap();
    assert_eq!(events.len(), 3);
}

#[test]
fn finishes_at_the_usage_chunk_without_waiting_for_done() {
    let mut decoder = OpenAiAdapter::new(false).stream_decoder();
    let mut out = Vec::new();
    for line in [
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    ] {
        decoder.feed(None, line, &mut out).unwrap();
    }
    assert!(
        !out.iter().any(|e| matches!(e, StreamEvent::Finish { .. })),
        "the usage chunk is still to come"
    );
    decoder
        .feed(
            None,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
            &mut out,
        )
        .unwrap();
    match out.last() {
        Some(StreamEvent::Finish { usage, .. }) => assert_eq!(usage.output_tokens, 1),
        other => panic!("expected Finish at the usage chunk, got {other:?}"),
    }
    // A late [DONE] changes nothing.
    let before = out.len();
    decoder.feed(None, "[DONE]", &mut out).unwrap();
    decoder.finish(&mut out).unwrap();
    assert_eq!(out.len(), before);
}

#[test]
fn an_error_spelled_with_escapes_is_still_an_error() {
    // `\u0065rror` is the key `error`: the typed fast path must not skip it.
    let (_, end) = feed_all(&[
        r#"{"\u0065rror":{"message":"boom","type":"server_error","param":null,"code":null}}"#,
    ]);
    let err = end.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert_eq!(err.message, "boom");
    let (_, end) = feed_all(&[
        r#"{"object":"\u0065rror","message":"bad input","type":"BadRequestError","code":400}"#,
    ]);
    assert_eq!(end.unwrap_err().class, ErrorClass::InvalidRequest);
}

#[test]
fn text_that_mentions_error_is_just_text() {
    let (events, end) = feed_all(&[
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"no error here"}}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":" caf\u00e9"},"finish_reason":"stop"}]}"#,
        "[DONE]",
    ]);
    end.unwrap();
    assert_eq!(
        &events[1..3],
        &[
            StreamEvent::TextDelta {
                text: "no error here".into()
            },
            StreamEvent::TextDelta {
                text: " café".into()
            },
        ]
    );
}

#[test]
fn a_repeated_field_keeps_its_last_value() {
    // What a JSON object with a key twice means is the last value (as before the
    // typed fast path, which rejects duplicates and hands such chunks to the `Value` path).
    let (events, end) = feed_all(&[
        r#"{"id":"first","id":"second","model":"m","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}"#,
        "[DONE]",
    ]);
    end.unwrap();
    assert_eq!(
        events[0],
        StreamEvent::Start {
            id: "second".into(),
            model: "m".into()
        }
    );
}

/// Feeds `lines` to a decoder, and to one that forgets its learned text frame before
/// every chunk (so it parses each chunk whole): both must give the same events and
/// the same end. Returns whether the first used its text frame.
fn same_as_whole_parse(lines: &[&str]) -> bool {
    let mut fast = super::Decoder::default();
    let mut whole = super::Decoder::default();
    let (mut fast_out, mut whole_out) = (Vec::new(), Vec::new());
    for line in lines {
        whole.text_frame = None;
        let w = whole.feed(None, line, &mut whole_out);
        let f = fast.feed(None, line, &mut fast_out);
        assert_eq!(
            f.as_ref().map_err(ToString::to_string),
            w.as_ref().map_err(ToString::to_string),
            "at {line}"
        );
        assert_eq!(fast_out, whole_out, "at {line}");
        if w.is_err() {
            return fast.text_frame.is_some();
        }
    }
    let (f, w) = (fast.finish(&mut fast_out), whole.finish(&mut whole_out));
    assert_eq!(f.map_err(|e| e.to_string()), w.map_err(|e| e.to_string()));
    assert_eq!(fast_out, whole_out);
    fast.text_frame.is_some()
}

fn text_chunk(text_literal: &str) -> String {
    format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{{"index":0,"delta":{{"content":{text_literal}}},"logprobs":null,"finish_reason":null}}]}}"#
    )
}

#[test]
fn a_chunk_framed_like_the_first_text_chunk_decodes_as_the_whole_parse_would() {
    let role = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#;
    let finish = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}"#;
    let usage = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":5,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
    let texts = [
        r#""Hello ""#,
        r#""quote \" and \\ backslash""#,
        r#""\u0065rror, error, \ud83d\ude80""#,
        r#""},\"logprobs\":null,\"finish_reason\":\"stop\"}]}""#,
        r#""""#,
        r#""new\nline""#,
    ];
    let mut lines = vec![role.to_string()];
    lines.extend(texts.iter().map(|t| text_chunk(t)));
    lines.extend([finish.to_string(), usage.to_string(), "[DONE]".to_string()]);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert!(same_as_whole_parse(&lines), "a text frame was learned");
    // ... and it is the frame of this stream's text chunks, so they took it.
    let mut decoder = super::Decoder::default();
    let mut out = Vec::new();
    decoder.feed(None, role, &mut out).unwrap();
    decoder.feed(None, lines[1], &mut out).unwrap();
    let frame = decoder
        .text_frame
        .as_ref()
        .expect("learned from the first text chunk");
    assert_eq!(
        frame.text(&text_chunk(r#""probe \"q\"""#)).as_deref(),
        Some("probe \"q\"")
    );
    assert_eq!(frame.text(finish), None);

    // Chunks that share the frame's head and tail but are not one string between
    // them, or hold what a text chunk may not: the whole parse decides, and agrees.
    let odd = [
        text_chunk(r#""a","content":"b""#),
        text_chunk(r#""a" "#),
        text_chunk("\"raw\ncontrol\""),
        text_chunk(r#""unterminated"#),
        text_chunk(r#"null"#),
        text_chunk(r#"7"#),
        r#"{"error":{"message":"overloaded","type":"server_error"}}"#.to_string(),
    ];
    for bad in &odd {
        let first = text_chunk(r#""first""#);
        same_as_whole_parse(&[role, &first, bad, finish, "[DONE]"]);
    }

    // Text and a finish reason in one chunk: a different tail, so the whole parse.
    let last = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{"content":"end"},"logprobs":null,"finish_reason":"length"}]}"#;
    same_as_whole_parse(&[role, &text_chunk(r#""x""#), last, "[DONE]"]);

    // The key and the text in an object the typed parse ignores, the choice's own
    // text spaced: the frame would put later texts in the wrong place, so it is not
    // learned.
    let decoy = |text: &str| {
        format!(
            r#"{{"id":"c","extra":{{"delta":{{"content":"{text}"}}}},"choices":[{{"index":0,"delta": {{"content":"A"}}}}]}}"#
        )
    };
    assert!(!same_as_whole_parse(&[
        &decoy("A"),
        &decoy("B"),
        finish,
        "[DONE]"
    ]));

    // Spaced JSON, a key met twice, per-chunk padding: never learned, or never matched.
    let spaced = r#"{"id": "c", "choices": [{"index": 0, "delta": {"content": "x"}}]}"#;
    assert!(!same_as_whole_parse(&[spaced, spaced, finish, "[DONE]"]));
    let padded = |pad: &str| {
        format!(
            r#"{{"id":"c","choices":[{{"index":0,"delta":{{"content":"x"}}}}],"obfuscation":"{pad}"}}"#
        )
    };
    same_as_whole_parse(&[
        &padded("a1"),
        &padded("b22"),
        &padded("c"),
        finish,
        "[DONE]",
    ]);
}

#[test]
fn a_stream_whose_chunks_carry_no_choice_is_a_protocol_error_not_an_empty_answer() {
    let (_, end) = feed_all(&[r#"{"id":"x","object":"chat.completion.chunk"}"#, "[DONE]"]);
    let err = end.unwrap_err();
    assert_eq!(err.class, bulwark_core::ErrorClass::Protocol);
    // An empty answer is still an answer: a role chunk, then the finish.
    let (events, end) = feed_all(&[
        r#"{"id":"x","model":"m","choices":[{"index":0,"delta":{"role":"assistant"}}]}"#,
        r#"{"id":"x","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        "[DONE]",
    ]);
    end.unwrap();
    assert!(matches!(events.last(), Some(StreamEvent::Finish { .. })));
}

#[test]
fn a_refusal_streams_to_an_openai_caller_as_refusal_deltas() {
    use crate::openai::serve::StreamEncoder;
    let (events, end) = feed_all(&[
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":null,"refusal":""}}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"refusal":"I can't"}}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        "[DONE]",
    ]);
    end.unwrap();
    let mut encoder = StreamEncoder::new("chatcmpl-1".into(), 1, false);
    let mut frames = Vec::new();
    for event in &events {
        encoder.encode(event, &mut frames);
    }
    let chunks: Vec<serde_json::Value> = frames
        .iter()
        .filter(|f| f.data != "[DONE]")
        .map(|f| serde_json::from_str(&f.data).unwrap())
        .collect();
    let refusal: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["refusal"].as_str())
        .collect();
    assert_eq!(refusal, "I can't");
    assert!(
        chunks.iter().all(|c| c["choices"][0]["delta"]["content"]
            .as_str()
            .unwrap_or("")
            .is_empty()),
        "{chunks:?}"
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[test]
fn done_without_a_finish_reason_is_no_answer() {
    // Text, then the terminator, and nothing ever said why the answer ended: it may
    // have been cut short, so it is not passed on as complete.
    let (events, end) = feed_all(&[
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Half an"},"finish_reason":null}]}"#,
        "[DONE]",
    ]);
    let err = end.unwrap_err();
    assert_eq!(err.class, ErrorClass::Protocol);
    assert!(err.message.contains("without a finish reason"), "{err:?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, StreamEvent::Finish { .. }))
    );
}

#[test]
fn calls_sent_at_one_index_with_their_own_ids_stay_apart() {
    // Some compatible servers number every call 0; a new id with a name is a new call.
    let (events, end) = feed_all(&[
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":\"Paris\"}"}}]}}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_b","type":"function","function":{"name":"get_time","arguments":""}}]}}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"tz\":\"UTC\"}"}}]}}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        "[DONE]",
    ]);
    end.unwrap();
    assert_eq!(
        events[1..5],
        [
            StreamEvent::ToolCallStart {
                index: 0,
                id: "call_a".into(),
                name: "get_weather".into()
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: r#"{"city":"Paris"}"#.into()
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "call_b".into(),
                name: "get_time".into()
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                arguments: r#"{"tz":"UTC"}"#.into()
            },
        ]
    );
}

#[test]
fn an_answer_that_finished_in_error_is_a_failed_attempt() {
    // OpenRouter ends an answer the model failed partway through with finish reason
    // `error`, sometimes with no top-level error object: the text before it is not a
    // whole answer, whatever the terminator after it says.
    let (events, end) = feed_all(&[
        r#"{"id":"gen-1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Half an"},"finish_reason":null}]}"#,
        r#"{"id":"gen-1","model":"m","choices":[{"index":0,"delta":{"content":""},"finish_reason":"error","error":{"code":502,"message":"Provider disconnected"}}]}"#,
        "[DONE]",
    ]);
    let err = end.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert!(err.message.contains("finish_reason \"error\""), "{err:?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, StreamEvent::Finish { .. }))
    );
    // The same in a whole (non-streamed) answer.
    let err = OpenAiAdapter::new(true)
        .decode_response(
            br#"{"id":"gen-2","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Half an"},"finish_reason":"error"}]}"#,
        )
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
}

#[test]
fn reasoning_from_compatible_servers_is_the_models_thinking() {
    // vLLM 0.11 on, OpenRouter and Ollama write `reasoning`; DeepSeek and older vLLM
    // `reasoning_content`; a server writing both names writes the text once.
    let (events, end) = feed_all(&[
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning":"Let me "},"finish_reason":null}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"reasoning_content":"think."},"finish_reason":null}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"reasoning":"Both.","reasoning_content":"Both."},"finish_reason":null}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"Four."},"finish_reason":null}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"Done."},"finish_reason":null}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        "[DONE]",
    ]);
    end.unwrap();
    assert_eq!(
        events[1..6],
        [
            StreamEvent::ThinkingDelta {
                text: "Let me ".into()
            },
            StreamEvent::ThinkingDelta {
                text: "think.".into()
            },
            StreamEvent::ThinkingDelta {
                text: "Both.".into()
            },
            StreamEvent::TextDelta {
                text: "Four.".into()
            },
            StreamEvent::TextDelta {
                text: "Done.".into()
            },
        ]
    );
}

#[test]
fn a_failed_answers_own_error_is_in_the_message_and_null_ids_are_absent_ones() {
    let (_, end) = feed_all(&[
        r#"{"id":null,"model":null,"choices":[{"index":0,"delta":{"content":"Half"},"finish_reason":null}]}"#,
        r#"{"id":null,"model":null,"choices":[{"index":0,"delta":{},"finish_reason":"error","error":{"code":502,"message":"model crashed"}}]}"#,
    ]);
    let err = end.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert!(err.message.ends_with(": model crashed"), "{err:?}");
    assert_eq!(err.status, Some(502));
}
