//! Calling the openai API (stub: to be written).

use bulwark_core::{ChatRequest, ChatResponse, StreamEvent, UpstreamError};
use http::HeaderMap;

use crate::{Adapter, StreamDecoder};

pub struct OpenAiAdapter;

impl OpenAiAdapter {
    pub fn new(compatible: bool) -> Self {
        let _ = compatible;
        Self
    }
}

impl Adapter for OpenAiAdapter {
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
        Err(UpstreamError::unsupported("openai", "everything"))
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
