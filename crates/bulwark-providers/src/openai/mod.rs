//! OpenAI Chat Completions (also OpenRouter, vLLM, Ollama, llama.cpp server as
//! `openai-compatible`).

pub mod client;
pub mod serve;
pub mod wire;

pub use client::OpenAiAdapter;
