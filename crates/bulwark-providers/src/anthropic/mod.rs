//! Anthropic Messages API.
//!
//! - `wire`: the API's request, response, stream-event and error structs;
//! - `client`, `client_stream`, `client_error`: calling Anthropic (the [`crate::Adapter`],
//!   the stream decoder, the error classification);
//! - `serve`, `serve_fields`, `serve_encode`: speaking the API to callers (request
//!   decoding and its field accessors; response, stream and error encoding).

pub mod client;
mod client_error;
pub(crate) mod client_stream;
pub mod serve;
mod serve_encode;
mod serve_fields;
pub mod wire;

pub use client::{AnthropicAdapter, DEFAULT_MAX_TOKENS};
