//! Decoding `streamGenerateContent?alt=sse`: every `data:` payload is a complete
//! `GenerateContentResponse` chunk. Text parts become `TextDelta`s; a `functionCall`
//! part always arrives whole, so it becomes a `ToolCallStart` and one `ToolCallDelta`
//! with the full JSON arguments. `usageMetadata` is cumulative (the last one wins).
//!
//! Gemini sends no terminator: the stream simply ends after the chunk that carries
//! `finishReason`. So `Finish` is emitted at EOF, and only if a `finishReason` was
//! seen; a stream that ends without one was cut short.

use bulwark_core::{StreamEvent, UpstreamError, Usage};
use serde_json::Value;

use super::client::{
    UNKNOWN_MODEL, blocked_prompt_error, generate_call_id, generate_response_id, malformed_answer,
    stop_reason, usage_from_wire,
};
use super::wire::GenerateContentResponse;
use crate::StreamDecoder;

pub struct GeminiStreamDecoder {
    started: bool,
    /// Tool calls started so far (the next call's index).
    calls: u32,
    /// Any text came.
    texted: bool,
    finish_reason: Option<String>,
    usage: Usage,
    done: bool,
}

impl GeminiStreamDecoder {
    pub fn new() -> Self {
        GeminiStreamDecoder {
            started: false,
            calls: 0,
            texted: false,
            finish_reason: None,
            usage: Usage::default(),
            done: false,
        }
    }
}

impl Default for GeminiStreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamDecoder for GeminiStreamDecoder {
    fn feed(
        &mut self,
        _event: Option<&str>,
        data: &str,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), UpstreamError> {
        if self.done {
            return Err(UpstreamError::protocol(
                "gemini stream continued after it was finished",
            ));
        }
        let value: Value = serde_json::from_str(data).map_err(|e| {
            UpstreamError::protocol(format!("gemini stream chunk is not valid JSON: {e}"))
        })?;
        if value.get("error").is_some() {
            return Err(super::errors::stream_error(&value));
        }
        let chunk: GenerateContentResponse = serde_json::from_value(value).map_err(|e| {
            UpstreamError::protocol(format!("gemini stream chunk has an unexpected shape: {e}"))
        })?;

        if !self.started {
            // Every chunk repeats the id and model; the first one is taken.
            self.started = true;
            out.push(StreamEvent::Start {
                id: chunk
                    .response_id
                    .clone()
                    .unwrap_or_else(generate_response_id),
                model: chunk
                    .model_version
                    .clone()
                    .unwrap_or_else(|| UNKNOWN_MODEL.to_string()),
            });
        }
        if let Some(usage) = chunk.usage_metadata {
            self.usage = usage_from_wire(usage);
        }
        let Some(candidate) = chunk.candidates.into_iter().next() else {
            if let Some(err) = chunk.prompt_feedback.and_then(blocked_prompt_error) {
                return Err(err);
            }
            // A usage-only chunk.
            return Ok(());
        };
        for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
            if part.thought == Some(true) {
                continue;
            }
            if let Some(call) = part.function_call {
                let index = self.calls;
                self.calls += 1;
                let args = call
                    .args
                    .unwrap_or_else(|| Value::Object(Default::default()));
                out.push(StreamEvent::ToolCallStart {
                    index,
                    id: call.id.unwrap_or_else(generate_call_id),
                    name: call.name,
                });
                out.push(StreamEvent::ToolCallDelta {
                    index,
                    arguments: args.to_string(),
                });
            } else if let Some(text) = part.text.filter(|t| !t.is_empty()) {
                self.texted = true;
                out.push(StreamEvent::TextDelta { text });
            }
        }
        if let Some(reason) = candidate.finish_reason {
            self.finish_reason = Some(reason);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), UpstreamError> {
        if self.done {
            return Ok(());
        }
        let Some(reason) = self.finish_reason.take() else {
            return Err(UpstreamError::protocol(
                "stream ended before the answer was complete",
            ));
        };
        self.done = true;
        if let Some(err) = malformed_answer(&reason, !self.texted && self.calls == 0) {
            return Err(err);
        }
        out.push(StreamEvent::Finish {
            stop_reason: stop_reason(Some(&reason), self.calls > 0),
            stop_sequence: None,
            usage: self.usage,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_core::{ErrorClass, StopReason};
    use serde_json::json;

    fn feed_all(chunks: &[Value]) -> (Vec<StreamEvent>, Result<(), UpstreamError>) {
        let mut decoder = GeminiStreamDecoder::new();
        let mut out = Vec::new();
        for chunk in chunks {
            if let Err(err) = decoder.feed(None, &chunk.to_string(), &mut out) {
                return (out, Err(err));
            }
        }
        let result = decoder.finish(&mut out);
        (out, result)
    }

    #[test]
    fn decodes_text_then_a_function_call() {
        let (events, result) = feed_all(&[
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Let me"}]}, "index": 0}],
                   "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
                   "modelVersion": "gemini-2.5-flash", "responseId": "r-1"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": " check."}]}, "index": 0}],
                   "modelVersion": "gemini-2.5-flash", "responseId": "r-1"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"}]},
                    "finishReason": "STOP", "index": 0}],
                   "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 6, "totalTokenCount": 15},
                   "modelVersion": "gemini-2.5-flash", "responseId": "r-1"}),
        ]);
        result.unwrap();
        assert_eq!(events.len(), 6, "{events:?}");
        assert_eq!(
            events[0],
            StreamEvent::Start {
                id: "r-1".into(),
                model: "gemini-2.5-flash".into()
            }
        );
        assert_eq!(
            events[1],
            StreamEvent::TextDelta {
                text: "Let me".into()
            }
        );
        assert_eq!(
            events[2],
            StreamEvent::TextDelta {
                text: " check.".into()
            }
        );
        let StreamEvent::ToolCallStart { index: 0, id, name } = &events[3] else {
            panic!("{:?}", events[3]);
        };
        assert!(id.starts_with("call_"));
        assert_eq!(name, "get_weather");
        assert_eq!(
            events[4],
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: r#"{"city":"Paris"}"#.into()
            }
        );
        assert_eq!(
            events[5],
            StreamEvent::Finish {
                stop_reason: StopReason::ToolUse,
                stop_sequence: None,
                usage: Usage {
                    input_tokens: 9,
                    output_tokens: 6,
                    ..Usage::default()
                }
            }
        );
    }

    #[test]
    fn an_empty_answer_ended_for_no_named_reason_is_a_failed_one() {
        for reason in ["OTHER", "FINISH_REASON_UNSPECIFIED", "SOMETHING_NEW"] {
            let (_, result) = feed_all(&[json!({
                "candidates": [{"content": {"parts": []}, "finishReason": reason}],
            })]);
            let err = result.unwrap_err();
            assert_eq!(err.class, ErrorClass::Protocol, "{reason}");
            // With text, the answer stands, with a plain stop.
            let (events, result) = feed_all(&[json!({
                "candidates": [{"content": {"parts": [{"text": "Hi"}]}, "finishReason": reason}],
            })]);
            result.unwrap();
            assert!(matches!(
                events.last(),
                Some(StreamEvent::Finish {
                    stop_reason: StopReason::Other,
                    ..
                })
            ));
        }
        // A named stop with nothing in it stays an (empty) answer.
        for (reason, stop) in [
            ("STOP", StopReason::EndTurn),
            ("SAFETY", StopReason::ContentFilter),
            ("LANGUAGE", StopReason::ContentFilter),
        ] {
            let (events, result) = feed_all(&[json!({
                "candidates": [{"content": {"parts": []}, "finishReason": reason}],
            })]);
            result.unwrap();
            assert!(
                matches!(events.last(), Some(StreamEvent::Finish { stop_reason, .. }) if *stop_reason == stop),
                "{reason}"
            );
        }
    }

    #[test]
    fn a_malformed_function_call_is_a_failed_answer_not_an_empty_one() {
        for reason in ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"] {
            let (_, result) = feed_all(&[json!({
                "candidates": [{"content": {"parts": [{"text": "Let me look"}]}, "finishReason": reason}],
                "responseId": "r-3"
            })]);
            let err = result.unwrap_err();
            assert_eq!(err.class, ErrorClass::Protocol);
            assert!(err.message.contains(reason), "{err:?}");
        }
    }

    #[test]
    fn eof_without_finish_reason_is_a_protocol_error() {
        let (events, result) = feed_all(&[json!({
            "candidates": [{"content": {"parts": [{"text": "Half an ans"}]}}],
            "responseId": "r-2"
        })]);
        assert_eq!(events.len(), 2);
        let err = result.unwrap_err();
        assert_eq!(err.class, ErrorClass::Protocol);

        let (events, result) = feed_all(&[]);
        assert!(events.is_empty());
        assert_eq!(result.unwrap_err().class, ErrorClass::Protocol);
    }

    #[test]
    fn an_error_chunk_is_classified() {
        let (events, result) = feed_all(&[
            json!({"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]}),
            json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}),
        ]);
        assert_eq!(events.len(), 2);
        let err = result.unwrap_err();
        assert_eq!(err.class, ErrorClass::Transient);
        assert_eq!(err.message, "The model is overloaded.");
        assert_eq!(err.status, Some(503));
    }

    #[test]
    fn garbage_and_blocked_prompts_are_errors() {
        let mut decoder = GeminiStreamDecoder::new();
        let mut out = Vec::new();
        let err = decoder.feed(None, "not json", &mut out).unwrap_err();
        assert_eq!(err.class, ErrorClass::Protocol);
        let err = decoder
            .feed(None, r#"{"candidates": "nope"}"#, &mut out)
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Protocol);

        let (_, result) =
            feed_all(&[json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})]);
        assert_eq!(result.unwrap_err().class, ErrorClass::ContentPolicy);
    }

    #[test]
    fn max_tokens_finish_keeps_the_last_usage() {
        let (events, result) = feed_all(&[
            json!({"candidates": [{"content": {"parts": [{"text": "a"}]}}],
                   "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1}}),
            json!({"candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS"}],
                   "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "thoughtsTokenCount": 5}}),
        ]);
        result.unwrap();
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Finish {
                stop_reason: StopReason::MaxTokens,
                stop_sequence: None,
                usage: Usage {
                    input_tokens: 3,
                    output_tokens: 7,
                    ..Usage::default()
                }
            })
        );
    }
}
