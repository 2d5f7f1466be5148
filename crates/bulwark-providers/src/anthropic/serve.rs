//! Speaking the Anthropic Messages API (ingress and mock). Stub: to be written.

use bulwark_core::{ChatRequest, ChatResponse, GatewayError, SseFrame, StreamEvent};

/// Decodes a `POST /v1/messages` body.
pub fn decode_request(_body: &[u8]) -> Result<ChatRequest, GatewayError> {
    Err(GatewayError::invalid("stub"))
}

/// Encodes a `message` object with the given id (`msg_…`).
pub fn encode_response(_resp: &ChatResponse, _id: &str) -> Vec<u8> {
    Vec::new()
}

/// Encodes neutral events as the Messages streaming event sequence.
pub struct StreamEncoder;

impl StreamEncoder {
    pub fn new(_id: String) -> Self {
        StreamEncoder
    }
    pub fn encode(&mut self, _event: &StreamEvent, _out: &mut Vec<SseFrame>) {}
    /// A failure after the stream began: `event: error`, and no `message_stop`.
    pub fn encode_error(&mut self, _err: &GatewayError, _out: &mut Vec<SseFrame>) {}
}

/// `{"type": "error", "error": {"type", "message"}}`
pub fn error_body(_err: &GatewayError) -> Vec<u8> {
    Vec::new()
}
