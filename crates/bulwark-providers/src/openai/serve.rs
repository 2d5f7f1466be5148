//! Speaking the OpenAI Chat Completions API (ingress and mock). Stub: to be written.

use bulwark_core::{ChatRequest, ChatResponse, GatewayError, SseFrame, StreamEvent};

/// Decodes a `POST /v1/chat/completions` body. Unknown fields and unsupported values
/// are a 400 naming the field (`param`).
pub fn decode_request(_body: &[u8]) -> Result<ChatRequest, GatewayError> {
    Err(GatewayError::invalid("stub"))
}

/// Encodes a `chat.completion` object. `id` is the full id (`chatcmpl-…`),
/// `created` the Unix time in seconds.
pub fn encode_response(_resp: &ChatResponse, _id: &str, _created: u64) -> Vec<u8> {
    Vec::new()
}

/// Encodes neutral events as `chat.completion.chunk` SSE frames, ending with `[DONE]`.
pub struct StreamEncoder;

impl StreamEncoder {
    pub fn new(_id: String, _created: u64, _include_usage: bool) -> Self {
        StreamEncoder
    }
    pub fn encode(&mut self, _event: &StreamEvent, _out: &mut Vec<SseFrame>) {}
    /// A failure after the stream began: an in-band error chunk, and no `[DONE]`.
    pub fn encode_error(&mut self, _err: &GatewayError, _out: &mut Vec<SseFrame>) {}
}

/// `{"error": {"message", "type", "param", "code"}}`
pub fn error_body(_err: &GatewayError) -> Vec<u8> {
    Vec::new()
}
