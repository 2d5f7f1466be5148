//! Google Gemini API (`generateContent` / `streamGenerateContent`).
//!
//! - `wire`: the request, response, stream-chunk and error structs;
//! - `client`: the [`GeminiAdapter`] (URL, auth, request encoding, response decoding);
//! - `stream`: the `alt=sse` stream decoder;
//! - `errors`: `map_error` and the classification of in-band stream errors;
//! - `serve` (+ `serve_request`): speaking the format, for the mock provider.

pub mod client;
mod errors;
pub mod serve;
mod serve_request;
pub mod stream;
pub mod wire;

pub use client::GeminiAdapter;
