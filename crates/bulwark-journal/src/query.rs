//! Read-side shapes: request summaries (`journal list`), the export line (`journal
//! export`: one JSON object per request, assembled from its records), and `Stats`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Value, json};

use crate::clock::{rfc3339, unix_ms};
use crate::record::{AttemptPayload, BeginPayload, CompletePayload, Record, RecordKind, Status};

/// One request as the index knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestSummary {
    pub id: String,
    pub status: Status,
    /// Unix milliseconds.
    pub received_at: i64,
    pub finished_at: Option<i64>,
    pub route: String,
    pub stream: bool,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub attempts: u32,
    pub begin_seq: i64,
    pub last_seq: i64,
    pub idempotency_key: Option<String>,
}

/// Which requests `export` writes.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// Requests received at or after this time.
    pub since: Option<SystemTime>,
    pub status: Option<Status>,
}

impl ExportFilter {
    pub(crate) fn since_ms(&self) -> Option<i64> {
        self.since.map(unix_ms)
    }
}

/// What `journal stats` prints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub backend: String,
    pub durability: String,
    pub bodies: String,
    pub requests: u64,
    pub by_status: BTreeMap<String, u64>,
    pub records: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    /// RFC 3339.
    pub oldest_request: Option<String>,
    pub newest_request: Option<String>,
    /// Database size (SQLite: file + WAL; PostgreSQL: the journal tables).
    pub size_bytes: u64,
    /// The promised bound: 0 for sync, the flush interval for batched.
    pub rpo_bound_ms: Option<u64>,
    /// Age of the oldest record not yet shipped to the backup (filled in by the caller
    /// that knows the backup target; 0 when everything is shipped).
    pub backup_rpo_exposure_ms: Option<u64>,
}

impl Stats {
    pub(crate) fn fill_counts(
        &mut self,
        counts: Vec<(String, u64)>,
        oldest: Option<i64>,
        newest: Option<i64>,
    ) {
        for s in Status::ALL {
            self.by_status.insert(s.as_str().to_string(), 0);
        }
        for (status, n) in counts {
            self.requests += n;
            self.by_status.insert(status, n);
        }
        self.oldest_request = oldest.map(rfc3339);
        self.newest_request = newest.map(rfc3339);
    }
}

/// The export object for one request, folded from its records.
pub(crate) fn export_line(summary: &RequestSummary, records: &[Record]) -> Value {
    let mut begin: Option<BeginPayload> = None;
    let mut complete: Option<CompletePayload> = None;
    let mut attempts = Vec::new();
    for record in records {
        match RecordKind::parse(&record.kind) {
            Ok(RecordKind::Begin) if begin.is_none() => {
                begin = serde_json::from_str(&record.payload).ok();
            }
            Ok(RecordKind::Attempt) => {
                if let Ok(a) = serde_json::from_str::<AttemptPayload>(&record.payload) {
                    attempts.push(json!({
                        "n": a.n,
                        "provider": a.provider,
                        "model": a.model,
                        "started_at": rfc3339(a.started_at),
                        "first_byte_at": a.first_byte_at.map(rfc3339),
                        "ended_at": a.ended_at.map(rfc3339),
                        "outcome_class": a.outcome_class,
                        "status": a.status,
                        "error": a.error,
                    }));
                }
            }
            Ok(RecordKind::Complete) if complete.is_none() => {
                complete = serde_json::from_str(&record.payload).ok();
            }
            _ => {}
        }
    }
    let (provider, model) = match &complete {
        Some(c) => (c.provider.clone(), c.model.clone()),
        None => (summary.provider.clone(), summary.model.clone()),
    };
    json!({
        "id": summary.id,
        "seq": summary.begin_seq,
        "status": summary.status,
        "received_at": rfc3339(summary.received_at),
        "finished_at": summary.finished_at.map(rfc3339),
        "caller_request_id": begin.as_ref().and_then(|b| b.caller_request_id.clone()),
        "drill": begin.as_ref().is_some_and(|b| b.drill),
        "caller_key_id": begin.as_ref().and_then(|b| b.caller_key_id.clone()),
        "ingress": begin.as_ref().map(|b| b.ingress.clone()),
        "route": summary.route,
        "stream": summary.stream,
        "idempotency_key": summary.idempotency_key,
        "provider": provider,
        "model": model,
        "attempts": attempts,
        "request": begin.as_ref().map(|b| b.request.clone()).unwrap_or(Value::Null),
        "response": complete.as_ref().map(|c| c.response.clone()).unwrap_or(Value::Null),
        "usage": complete.as_ref().and_then(|c| c.usage),
        "error": complete.as_ref().and_then(|c| c.error.clone()),
        "bodies": begin.as_ref().map(|b| b.bodies.clone()),
    })
}
