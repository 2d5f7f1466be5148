//! Behaviour tests of the journal: write path and durability modes, recovery,
//! idempotency, privacy, backups/restore/verify, and the same journal tests against
//! PostgreSQL when `BULWARK_TEST_POSTGRES_URL` is set.

mod backup;
mod idempotency;
mod postgres;
mod write_path;

use std::time::{Duration, SystemTime};

use bulwark_core::{ChatResponse, ContentBlock, StopReason, Usage};
use serde_json::json;

use crate::config::{Durability, JournalConfig};
use crate::types::{AttemptRecord, NewRequest, Outcome};

/// Which database a shared test runs against.
pub(crate) enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres { url: String, node: String },
}

impl Backend {
    pub(crate) fn sqlite() -> Self {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }

    pub(crate) fn config(&self, durability: Durability) -> JournalConfig {
        let mut cfg = match self {
            Backend::Sqlite(dir) => JournalConfig::sqlite(dir.path().join("journal.db")),
            Backend::Postgres { url, node } => JournalConfig {
                backend: crate::config::BackendKind::Postgres,
                url: Some(bulwark_core::config::Secret::new(url.clone())),
                node_id: Some(node.clone()),
                ..JournalConfig::default()
            },
        };
        cfg.durability = durability;
        cfg
    }

    /// The request's status as a brand-new connection sees it (what survives a crash).
    pub(crate) async fn fresh_status(&self, id: &str) -> Option<String> {
        match self {
            Backend::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("journal.db")).unwrap();
                conn.query_row("SELECT status FROM requests WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .ok()
            }
            Backend::Postgres { url, .. } => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client
                    .query_opt("SELECT status FROM journal_requests WHERE id = $1", &[&id])
                    .await
                    .unwrap()
                    .map(|r| r.get(0))
            }
        }
    }
}

pub(crate) fn new_request(id: &str, key: Option<&str>, hash: &str) -> NewRequest {
    NewRequest {
        id: id.to_string(),
        caller_request_id: None,
        drill: false,
        received_at: SystemTime::now(),
        caller_key_id: Some("key-1".into()),
        ingress: "openai".into(),
        route: "fast".into(),
        stream: false,
        request_body: json!({
            "model": "fast",
            "system": ["Be brief."],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "tell me the launch code"}]}],
        }),
        idempotency_key: key.map(str::to_string),
        body_hash: Some(hash.to_string()),
    }
}

pub(crate) fn answer(text: &str) -> ChatResponse {
    ChatResponse {
        id: "resp-1".into(),
        model: "m-1".into(),
        content: vec![
            ContentBlock::Text { text: text.into() },
            ContentBlock::ToolUse {
                id: "call_1".into(),
                name: "lookup".into(),
                input: json!({"q": "secret"}),
            },
        ],
        stop_reason: StopReason::ToolUse,
        stop_sequence: None,
        usage: Usage {
            input_tokens: 12,
            output_tokens: 7,
            ..Usage::default()
        },
    }
}

pub(crate) fn completed(text: &str) -> Outcome {
    Outcome::completed("mock-a", "m-1", answer(text), 2)
}

pub(crate) fn attempt(id: &str, n: u32, class: &str) -> AttemptRecord {
    let now = SystemTime::now();
    AttemptRecord {
        request_id: id.to_string(),
        n,
        provider: "mock-a".into(),
        model: "m-1".into(),
        started_at: now - Duration::from_millis(30),
        first_byte_at: Some(now - Duration::from_millis(10)),
        ended_at: Some(now),
        outcome_class: class.into(),
        status: if class == "ok" { Some(200) } else { Some(503) },
        error: (class != "ok").then(|| "overloaded".to_string()),
    }
}
