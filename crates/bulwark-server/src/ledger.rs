//! One request's entries in the journal: `begin` before any provider is called, every
//! upstream attempt as it ends, and the outcome exactly once.
//!
//! A [`Ledger`] that is dropped before its outcome was written (the caller went away
//! mid-stream, the handler was cancelled) writes `failed` from a spawned task, so no
//! request stays `in_flight` while the gateway runs; only a crash leaves that, and
//! the next start turns it into `interrupted`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The journal's error for a request its caller left before the answer was complete:
/// not a failure of the route (`bulwark availability` leaves these out).
pub const CALLER_WENT_AWAY: &str = "the caller went away before the answer was complete";

use axum::http::HeaderMap;
use bulwark_core::GatewayError;
use bulwark_journal::{AttemptRecord, Journal, JournalError, NewRequest, Outcome};
use bulwark_router::{AttemptReport, AttemptSink};

/// The journal side of one request.
pub struct Ledger {
    journal: Journal,
    id: String,
    attempts: Arc<AtomicU32>,
    done: bool,
}

impl Ledger {
    /// Writes the `begin` record (in `sync` mode: waits for its commit). An error means
    /// the request must not run: answer 503.
    pub async fn begin(journal: &Journal, req: NewRequest) -> Result<Ledger, GatewayError> {
        let id = req.id.clone();
        match journal.begin(req).await {
            Ok(()) => Ok(Ledger {
                journal: journal.clone(),
                id,
                attempts: Arc::new(AtomicU32::new(0)),
                done: false,
            }),
            Err(err) => {
                tracing::error!(request_id = %id, error = %err, "journal: cannot record the request; refusing it");
                Err(err.to_gateway_error())
            }
        }
    }

    /// The router's per-request attempt sink: queues one attempt record per upstream
    /// call (never waits).
    pub fn sink(&self) -> AttemptSink {
        let journal = self.journal.clone();
        let id = self.id.clone();
        let counter = Arc::clone(&self.attempts);
        AttemptSink(Arc::new(move |report: AttemptReport| {
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            journal.record_attempt(attempt_record(&id, n, report));
        }))
    }

    pub fn durability(&self) -> bulwark_core::config::journal::Durability {
        self.journal.config().durability
    }

    /// Upstream attempts recorded so far.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Writes the outcome (in `sync` mode: waits for its commit; release the answer
    /// only after this returned `Ok`).
    pub async fn complete(&mut self, outcome: Outcome) -> Result<(), JournalError> {
        self.done = true;
        let result = self.journal.complete(&self.id, outcome).await;
        if let Err(err) = &result {
            tracing::error!(request_id = %self.id, error = %err, "journal: cannot record the outcome");
        }
        result
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let journal = self.journal.clone();
        let id = std::mem::take(&mut self.id);
        let attempts = self.attempts();
        handle.spawn(async move {
            let outcome = Outcome::failed(CALLER_WENT_AWAY, attempts);
            if let Err(err) = journal.complete(&id, outcome).await {
                tracing::error!(request_id = %id, error = %err, "journal: cannot record an abandoned request");
            }
        });
    }
}

fn attempt_record(id: &str, n: u32, report: AttemptReport) -> AttemptRecord {
    let ended_at = report.started_at + report.elapsed;
    let (outcome_class, status, error) = match (&report.error, report.cancelled) {
        (_, true) => ("cancelled".to_string(), None, None),
        (None, false) => ("ok".to_string(), None, None),
        (Some(err), false) => (
            err.class.label().to_string(),
            err.status,
            Some(err.message.clone()),
        ),
    };
    AttemptRecord {
        request_id: id.to_string(),
        n,
        provider: report.provider,
        model: report.model,
        started_at: report.started_at,
        first_byte_at: report.ttft.map(|t| report.started_at + t),
        ended_at: Some(ended_at),
        outcome_class,
        status,
        error,
    }
}

/// An id for the caller's credential (its `Authorization` bearer, `x-api-key` or
/// `x-goog-api-key`): the first 16 hex digits of its SHA-256, never the key itself.
pub fn caller_key_id(headers: &HeaderMap) -> Option<String> {
    let raw = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .or_else(|| headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()))
        .filter(|v| !v.is_empty())?;
    let hash = bulwark_journal::body_hash(raw.as_bytes());
    Some(format!("key_{}", &hash[..16]))
}

/// The caller's `Idempotency-Key`, checked: 1–255 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, GatewayError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match raw.to_str() {
        Ok(key)
            if !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key.to_string()))
        }
        _ => Err(GatewayError::invalid_param(
            "Idempotency-Key",
            "the Idempotency-Key header must be 1 to 255 visible ASCII characters (a UUID is a good choice)",
        )),
    }
}

/// Time left until `deadline`, zero when passed.
pub fn remaining(deadline: tokio::time::Instant) -> Duration {
    deadline.saturating_duration_since(tokio::time::Instant::now())
}
