//! What the server hands the journal (`NewRequest`, `AttemptRecord`, `Outcome`) and
//! what it gets back for a replayed idempotent request (`StoredAnswer`).

use std::time::SystemTime;

use bulwark_core::{ChatResponse, Usage};
use serde::{Deserialize, Serialize};

/// A request accepted by the gateway, recorded before any provider is called.
///
/// Provider credentials never reach the journal: the server passes the caller's
/// request (whose `Authorization` header is not part of the body) and the id of the
/// caller's key, never a key.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// The gateway's request id (unique; the journal's primary key).
    pub id: String,
    /// The caller's own id for the request (`x-client-request-id` / `x-request-id`),
    /// kept beside it: callers may send one id twice.
    pub caller_request_id: Option<String>,
    /// Sent by `bulwark drill` (proved with the gateway's admin token): its failures
    /// are made on purpose, and `bulwark availability` leaves it out.
    pub drill: bool,
    pub received_at: SystemTime,
    /// Which caller key was used (an id, never the key itself).
    pub caller_key_id: Option<String>,
    /// The ingress format: `openai` or `anthropic`.
    pub ingress: String,
    /// The model name the caller asked for (a route or `provider/model`).
    pub route: String,
    pub stream: bool,
    /// The request as JSON (the neutral `ChatRequest`, or the caller's body).
    pub request_body: serde_json::Value,
    /// The caller-scoped key the request was `claim`ed under (see [`crate::Claim`]).
    pub idempotency_key: Option<String>,
    /// [`body_hash`] of the caller's body.
    pub body_hash: Option<String>,
}

/// One upstream call made for a request.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub request_id: String,
    /// 1 for the first attempt of the request, counting retries, failovers and hedges.
    pub n: u32,
    pub provider: String,
    pub model: String,
    pub started_at: SystemTime,
    pub first_byte_at: Option<SystemTime>,
    pub ended_at: Option<SystemTime>,
    /// `ok`, or an error class label (`ErrorClass::label`), or `cancelled` (a hedge
    /// that lost, a caller who went away).
    pub outcome_class: String,
    /// The upstream's HTTP status, when it answered.
    pub status: Option<u16>,
    /// The upstream's error message (never a credential).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    Completed,
    Failed,
}

/// How a request ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: OutcomeStatus,
    /// The provider and model that served (or last failed).
    pub provider: Option<String>,
    pub model: Option<String>,
    /// The answer. For a stream, the assembled answer (text and tool-use blocks in
    /// order, stop reason, usage), which is also what an idempotent replay sends.
    pub response: Option<ChatResponse>,
    pub usage: Option<Usage>,
    /// Why it failed (the caller-facing message).
    pub error: Option<String>,
    /// How many upstream attempts were made.
    pub attempts: u32,
}

impl Outcome {
    pub fn completed(provider: &str, model: &str, response: ChatResponse, attempts: u32) -> Self {
        Outcome {
            status: OutcomeStatus::Completed,
            provider: Some(provider.to_string()),
            model: Some(model.to_string()),
            usage: Some(response.usage),
            response: Some(response),
            error: None,
            attempts,
        }
    }

    pub fn failed(error: impl Into<String>, attempts: u32) -> Self {
        Outcome {
            status: OutcomeStatus::Failed,
            provider: None,
            model: None,
            response: None,
            usage: None,
            error: Some(error.into()),
            attempts,
        }
    }
}

/// A completed answer kept for an idempotency key, replayed without calling a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAnswer {
    /// The request that produced it (send it back as the response's request id).
    pub request_id: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub response: ChatResponse,
    pub usage: Option<Usage>,
    /// Unix milliseconds.
    pub completed_at: i64,
}

/// The hash to pass as `body_hash`: SHA-256 of the caller's raw body, hex.
pub fn body_hash(body: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let mut out = String::with_capacity(64);
    for byte in digest.as_ref() {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0F)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_hash_is_sha256_hex() {
        assert_eq!(
            body_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
