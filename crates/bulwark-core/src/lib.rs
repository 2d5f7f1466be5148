//! Bulwark's neutral vocabulary: the request, response and stream-event types every
//! ingress format decodes into and every provider adapter encodes from, the error
//! classes that drive the router, and the configuration types.
//!
//! # Layout
//!
//! ```text
//! client ─▶ ingress (OpenAI / Anthropic wire) ─▶ ChatRequest ─▶ router ─▶ provider adapter ─▶ upstream
//!        ◀─ ingress encoder                   ◀─ ChatResponse | StreamEvent* ◀─ adapter decoder ◀─
//! ```
//!
//! The types here are designed for the three upstream families at once: content is a
//! list of typed blocks (Anthropic's model, which is the most expressive of the three),
//! the system prompt is separate from the turns (Anthropic `system`, Gemini
//! `systemInstruction`; OpenAI system messages are hoisted into it), and tool results
//! are blocks inside a user turn (OpenAI `tool` messages become such blocks).

pub mod chat;
pub mod config;
pub mod error;
pub mod stream;

pub use chat::*;
pub use error::*;
pub use stream::*;
