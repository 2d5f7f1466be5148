//! Calling the anthropic API (stub: to be written).

use bulwark_core::{ChatRequest, ChatResponse, StreamEvent, UpstreamError};
use http::HeaderMap;

use crate::{Adapter, StreamDecoder};

pub const DEFAULT_MAX_TOKENS: u32 = 4096;

pub struct AnthropicAdapter;

impl AnthropicAdapter {
    pub fn new(default_max_tokens: u32) -> Self {
        let _ = default_max_tokens;
        Self
    }
}

impl Adapter for AnthropicAdapter {
    fn url(&self, base_url: &str, _model: &str, _stream: bool) -> String {
        base_url.to_string()
    }
    fn auth_headers(&self, _api_key: Option<&str>, _headers: &mut HeaderMap) {}
    fn encode_request(
        &self,
        _req: &ChatRequest,
        _model: &str,
        _stream: bool,
    ) -> Result<Vec<u8>, UpstreamError> {
        Err(UpstreamError::unsupported("anthropic", "everything"))
    }
    fn decode_response(&self, _body: &[u8]) -> Result<ChatResponse, UpstreamError> {
        Err(UpstreamError::protocol("stub"))
    }
    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(Decoder)
    }
    fn map_error(&self, status: u16, _headers: &HeaderMap, _body: &[u8]) -> UpstreamError {
        UpstreamError::protocol("stub").with_status(status)
    }
}

struct Decoder;

impl StreamDecoder for Decoder {
    fn feed(
        &mut self,
        _event: Option<&str>,
        _data: &str,
        _out: &mut Vec<StreamEvent>,
    ) -> Result<(), UpstreamError> {
        Err(UpstreamError::protocol("stub"))
    }
    fn finish(&mut self, _out: &mut Vec<StreamEvent>) -> Result<(), UpstreamError> {
        Err(UpstreamError::protocol("stub"))
    }
}
