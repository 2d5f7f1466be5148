//! Anthropic Messages API.

pub mod client;
pub mod serve;
pub mod wire;

pub use client::{AnthropicAdapter, DEFAULT_MAX_TOKENS};
