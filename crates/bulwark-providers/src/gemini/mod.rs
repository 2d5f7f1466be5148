//! Google Gemini API (`generateContent` / `streamGenerateContent`).

pub mod client;
pub mod serve;
pub mod wire;

pub use client::GeminiAdapter;
