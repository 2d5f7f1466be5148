//! One journal record (the unit of the log, of shipping and of checksums), its JSON
//! payloads, its CRC-32C, and the index change (`IndexUpdate`) each record implies.

use serde::{Deserialize, Serialize};

use crate::error::{JournalError, Result};

/// A request's state in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InFlight,
    Completed,
    Failed,
    Interrupted,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::InFlight,
        Status::Completed,
        Status::Failed,
        Status::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::InFlight => "in_flight",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
        }
    }

    pub fn parse(raw: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Status::parse(s).ok_or_else(|| {
            format!("unknown status {s:?} (in_flight, completed, failed, interrupted)")
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    Begin,
    Attempt,
    Complete,
    Interrupt,
}

impl RecordKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RecordKind::Begin => "begin",
            RecordKind::Attempt => "attempt",
            RecordKind::Complete => "complete",
            RecordKind::Interrupt => "interrupt",
        }
    }

    pub(crate) fn parse(raw: &str) -> Result<RecordKind> {
        match raw {
            "begin" => Ok(RecordKind::Begin),
            "attempt" => Ok(RecordKind::Attempt),
            "complete" => Ok(RecordKind::Complete),
            "interrupt" => Ok(RecordKind::Interrupt),
            other => Err(JournalError::Corrupt(format!(
                "unknown record kind {other:?}"
            ))),
        }
    }
}

/// A stored record, exactly as in the `records` table and in shipped segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub seq: i64,
    pub at_ms: i64,
    pub kind: String,
    pub request_id: String,
    /// JSON text; shipped verbatim (as raw JSON) so the checksum still matches.
    pub payload: String,
    pub crc: u32,
}

impl Record {
    pub(crate) fn checksum_ok(&self) -> bool {
        record_crc(
            self.seq,
            self.at_ms,
            &self.kind,
            &self.request_id,
            &self.payload,
        ) == self.crc
    }
}

/// CRC-32C over a record's canonical content (see the crate docs for the layout).
pub(crate) fn record_crc(seq: i64, at_ms: i64, kind: &str, request_id: &str, payload: &str) -> u32 {
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    digest.update(&seq.to_be_bytes());
    digest.update(&at_ms.to_be_bytes());
    digest.update(&len_prefix(kind));
    digest.update(kind.as_bytes());
    digest.update(&len_prefix(request_id));
    digest.update(request_id.as_bytes());
    digest.update(payload.as_bytes());
    // CRC-32 values fit in the low 32 bits of the u64 the crate returns.
    (digest.finalize() & 0xFFFF_FFFF) as u32
}

/// CRC-32C of arbitrary bytes (segment trailers).
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    (crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) & 0xFFFF_FFFF) as u32
}

fn len_prefix(s: &str) -> [u8; 4] {
    u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes()
}

/// `begin` payload: everything known when the request was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct BeginPayload {
    pub received_at: i64,
    /// The caller's own id for the request (absent in records written before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_request_id: Option<String>,
    /// Drill traffic (absent, false, in records written before it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drill: bool,
    pub caller_key_id: Option<String>,
    pub ingress: String,
    pub route: String,
    pub stream: bool,
    pub idempotency_key: Option<String>,
    pub body_hash: Option<String>,
    pub node: String,
    /// What `bodies` was when this was written.
    pub bodies: String,
    pub request: serde_json::Value,
}

/// `attempt` payload: one upstream call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AttemptPayload {
    pub n: u32,
    pub provider: String,
    pub model: String,
    pub started_at: i64,
    pub first_byte_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub outcome_class: String,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// `complete` payload: the outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CompletePayload {
    pub status: Status,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub response: serde_json::Value,
    pub usage: Option<bulwark_core::Usage>,
    pub error: Option<String>,
    pub attempts: u32,
}

/// `interrupt` payload: why recovery closed the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct InterruptPayload {
    pub reason: String,
    pub node: String,
}

/// The change a record makes to the index (`requests`, `idempotency`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum IndexUpdate {
    Begin {
        received_at: i64,
        route: String,
        stream: bool,
        idempotency_key: Option<String>,
        body_hash: Option<String>,
        node: String,
    },
    Attempt {
        n: u32,
    },
    Complete {
        status: Status,
        provider: Option<String>,
        model: Option<String>,
        /// A `StoredAnswer` as JSON, for idempotent replay (None: nothing to replay).
        answer: Option<String>,
    },
    Interrupt,
}

/// A record before the writer numbers it.
#[derive(Debug, Clone)]
pub(crate) struct PendingRecord {
    pub kind: RecordKind,
    pub request_id: String,
    pub payload: String,
    pub index: IndexUpdate,
}

impl PendingRecord {
    pub(crate) fn seal(&self, seq: i64, at_ms: i64) -> Record {
        let kind = self.kind.as_str();
        Record {
            seq,
            at_ms,
            kind: kind.to_string(),
            request_id: self.request_id.clone(),
            payload: self.payload.clone(),
            crc: record_crc(seq, at_ms, kind, &self.request_id, &self.payload),
        }
    }
}

/// The index change of a stored record, decoded from its payload (restore, verify).
pub(crate) fn index_update_of(record: &Record) -> Result<IndexUpdate> {
    Ok(match RecordKind::parse(&record.kind)? {
        RecordKind::Begin => {
            let p: BeginPayload = serde_json::from_str(&record.payload)?;
            IndexUpdate::Begin {
                received_at: p.received_at,
                route: p.route,
                stream: p.stream,
                idempotency_key: p.idempotency_key,
                body_hash: p.body_hash,
                node: p.node,
            }
        }
        RecordKind::Attempt => {
            let p: AttemptPayload = serde_json::from_str(&record.payload)?;
            IndexUpdate::Attempt { n: p.n }
        }
        RecordKind::Complete => {
            let p: CompletePayload = serde_json::from_str(&record.payload)?;
            // A replayable answer exists only when the full response was journaled.
            let answer = match serde_json::from_value::<bulwark_core::ChatResponse>(p.response) {
                Ok(response) if p.status == Status::Completed => {
                    Some(serde_json::to_string(&crate::types::StoredAnswer {
                        request_id: record.request_id.clone(),
                        provider: p.provider.clone(),
                        model: p.model.clone(),
                        response,
                        usage: p.usage,
                        completed_at: record.at_ms,
                    })?)
                }
                _ => None,
            };
            IndexUpdate::Complete {
                status: p.status,
                provider: p.provider,
                model: p.model,
                answer,
            }
        }
        RecordKind::Interrupt => IndexUpdate::Interrupt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // CRC-32C("123456789") = 0xE3069283 (the catalogue's check value for CRC-32/ISCSI).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn any_change_to_a_record_breaks_its_checksum() {
        let rec = PendingRecord {
            kind: RecordKind::Attempt,
            request_id: "r1".into(),
            payload: r#"{"n":1}"#.into(),
            index: IndexUpdate::Attempt { n: 1 },
        }
        .seal(7, 1_000);
        assert!(rec.checksum_ok());
        for changed in [
            Record {
                seq: 8,
                ..rec.clone()
            },
            Record {
                at_ms: 1_001,
                ..rec.clone()
            },
            Record {
                kind: "begin".into(),
                ..rec.clone()
            },
            Record {
                request_id: "r2".into(),
                ..rec.clone()
            },
            Record {
                payload: r#"{"n":2}"#.into(),
                ..rec.clone()
            },
        ] {
            assert!(!changed.checksum_ok(), "{changed:?}");
        }
    }

    #[test]
    fn status_parses_its_own_labels() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("done".parse::<Status>().is_err());
    }
}
