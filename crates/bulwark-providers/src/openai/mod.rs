//! OpenAI Chat Completions (also OpenRouter, vLLM, Ollama, llama.cpp server as
//! `openai-compatible`).
//!
//! - `wire.rs`: the API's request, response, chunk and error structs;
//! - `client.rs`: the [`OpenAiAdapter`] (encode, decode, `map_error`);
//!   `client_stream.rs`: its stream decoder;
//! - `serve.rs`: speaking the API (response, stream and error encoding);
//!   `serve_request.rs`: request decoding, `serve_fields.rs`: its path-aware JSON
//!   reads and field-naming errors.

pub mod client;
mod client_stream;
pub mod serve;
mod serve_fields;
mod serve_request;
pub mod wire;

pub use client::OpenAiAdapter;

#[cfg(test)]
mod round_trip_tests;
