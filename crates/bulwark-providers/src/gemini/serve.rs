//! Speaking the Gemini API (mock only). Stub: to be written.

use bulwark_core::{ChatRequest, ChatResponse, GatewayError, SseFrame, StreamEvent};

/// Decodes a `generateContent` body; `model` comes from the URL path.
pub fn decode_request(
    _model: &str,
    _body: &[u8],
    _stream: bool,
) -> Result<ChatRequest, GatewayError> {
    Err(GatewayError::invalid("stub"))
}

/// Encodes a `GenerateContentResponse`.
pub fn encode_response(_resp: &ChatResponse) -> Vec<u8> {
    Vec::new()
}

/// Encodes neutral events as `streamGenerateContent?alt=sse` frames (data only,
/// no terminator: the stream ends after the chunk with `finishReason`).
pub struct StreamEncoder;

impl StreamEncoder {
    pub fn new() -> Self {
        StreamEncoder
    }
    pub fn encode(&mut self, _event: &StreamEvent, _out: &mut Vec<SseFrame>) {}
    pub fn encode_error(&mut self, _err: &GatewayError, _out: &mut Vec<SseFrame>) {}
}

impl Default for StreamEncoder {
    fn default() -> Self {
        Self::new()
    }
}

/// `{"error": {"code", "message", "status"}}`
pub fn error_body(_err: &GatewayError) -> Vec<u8> {
    Vec::new()
}
