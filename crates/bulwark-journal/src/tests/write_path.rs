//! The write path: what is durable when each call returns, recovery, failures,
//! privacy on disk, and the read side (list, export, stats).

use std::time::Duration;

use super::{Backend, attempt, completed, new_request};
use crate::config::{Bodies, Durability};
use crate::journal::Journal;
use crate::query::ExportFilter;
use crate::record::Status;
use crate::types::Outcome;

/// Sync: once `begin`/`complete` return, a fresh connection sees the record.
pub(crate) async fn sync_records_are_durable_when_calls_return(backend: &Backend) {
    let (journal, _) = Journal::open(&backend.config(Durability::Sync))
        .await
        .unwrap();
    let id = format!("sync-{}", uuid::Uuid::new_v4());
    journal.begin(new_request(&id, None, "h")).await.unwrap();
    assert_eq!(
        backend.fresh_status(&id).await.as_deref(),
        Some("in_flight")
    );
    journal.record_attempt(attempt(&id, 1, "transient"));
    journal.record_attempt(attempt(&id, 2, "ok"));
    journal.complete(&id, completed("hello")).await.unwrap();
    assert_eq!(
        backend.fresh_status(&id).await.as_deref(),
        Some("completed")
    );
    journal.close().await.unwrap();
}

/// Batched: `complete` returns at once; the record is durable within the flush interval.
pub(crate) async fn batched_records_are_durable_within_the_flush_interval(backend: &Backend) {
    let mut cfg = backend.config(Durability::Batched);
    cfg.flush_interval = bulwark_core::config::HumanDuration::millis(1000);
    let (journal, _) = Journal::open(&cfg).await.unwrap();
    let id = format!("batched-{}", uuid::Uuid::new_v4());
    let started = std::time::Instant::now();
    journal.begin(new_request(&id, None, "h")).await.unwrap();
    journal.complete(&id, completed("hello")).await.unwrap();
    // Returned before any commit: the batch is still collecting.
    assert_eq!(backend.fresh_status(&id).await, None);
    loop {
        if backend.fresh_status(&id).await.as_deref() == Some("completed") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "not flushed in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Committed about one flush interval after the batch's first record.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    journal.close().await.unwrap();
}

/// Requests left in flight become interrupted on the next open, and are listed.
pub(crate) async fn recovery_marks_in_flight_requests_interrupted(backend: &Backend) {
    let cfg = backend.config(Durability::Sync);
    let (journal, _) = Journal::open(&cfg).await.unwrap();
    let open_id = format!("open-{}", uuid::Uuid::new_v4());
    let done_id = format!("done-{}", uuid::Uuid::new_v4());
    journal
        .begin(new_request(&open_id, None, "h"))
        .await
        .unwrap();
    journal
        .begin(new_request(&done_id, None, "h"))
        .await
        .unwrap();
    journal.complete(&done_id, completed("ok")).await.unwrap();
    journal.close().await.unwrap();
    drop(journal);

    let (journal, recovery) = Journal::open(&cfg).await.unwrap();
    assert!(recovery.interrupted_ids.contains(&open_id), "{recovery:?}");
    assert!(!recovery.interrupted_ids.contains(&done_id));
    assert_eq!(
        backend.fresh_status(&open_id).await.as_deref(),
        Some("interrupted")
    );
    let listed = journal.list(Some(Status::Interrupted), 1000).await.unwrap();
    assert!(listed.iter().any(|r| r.id == open_id));
    assert!(listed.iter().all(|r| r.status == Status::Interrupted));
    // A second restart has nothing left to interrupt for this node.
    journal.close().await.unwrap();
    drop(journal);
    let (journal, recovery) = Journal::open(&cfg).await.unwrap();
    assert_eq!(recovery.interrupted, 0);
    journal.close().await.unwrap();
}

/// Export writes one object per request with attempts, bodies and usage.
pub(crate) async fn export_has_one_line_per_request_with_attempts(backend: &Backend) {
    let (journal, _) = Journal::open(&backend.config(Durability::Sync))
        .await
        .unwrap();
    let id = format!("exp-{}", uuid::Uuid::new_v4());
    let started = std::time::SystemTime::now() - Duration::from_millis(5);
    journal.begin(new_request(&id, None, "h")).await.unwrap();
    journal.record_attempt(attempt(&id, 1, "transient"));
    journal.record_attempt(attempt(&id, 2, "ok"));
    journal
        .complete(&id, completed("the answer"))
        .await
        .unwrap();
    let failed = format!("fail-{}", uuid::Uuid::new_v4());
    journal
        .begin(new_request(&failed, None, "h"))
        .await
        .unwrap();
    journal
        .complete(&failed, Outcome::failed("all targets down", 3))
        .await
        .unwrap();

    let mut out = Vec::new();
    let filter = ExportFilter {
        since: Some(started),
        status: Some(Status::Completed),
    };
    let n = journal.export(&filter, &mut out).await.unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(n as usize, lines.len());
    let line = lines.iter().find(|l| l["id"] == id.as_str()).unwrap();
    assert!(lines.iter().all(|l| l["status"] == "completed"));
    assert_eq!(line["route"], "fast");
    assert_eq!(line["provider"], "mock-a");
    assert_eq!(line["model"], "m-1");
    assert_eq!(line["ingress"], "openai");
    assert_eq!(line["caller_key_id"], "key-1");
    assert_eq!(line["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(line["attempts"][0]["outcome_class"], "transient");
    assert_eq!(line["attempts"][1]["status"], 200);
    assert_eq!(
        line["request"]["messages"][0]["content"][0]["text"],
        "tell me the launch code"
    );
    assert_eq!(line["response"]["content"][0]["text"], "the answer");
    assert_eq!(line["usage"]["output_tokens"], 7);
    assert!(line["received_at"].as_str().unwrap().ends_with('Z'));
    assert!(line["finished_at"].as_str().is_some());

    let stats = journal.stats().await.unwrap();
    assert!(stats.by_status["completed"] >= 1);
    assert!(stats.by_status["failed"] >= 1);
    assert!(stats.records >= 6);
    assert!(stats.size_bytes > 0);
    journal.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_sync_records_are_durable_when_calls_return() {
    sync_records_are_durable_when_calls_return(&Backend::sqlite()).await;
}

#[tokio::test]
async fn sqlite_batched_records_are_durable_within_the_flush_interval() {
    batched_records_are_durable_within_the_flush_interval(&Backend::sqlite()).await;
}

#[tokio::test]
async fn sqlite_recovery_marks_in_flight_requests_interrupted() {
    recovery_marks_in_flight_requests_interrupted(&Backend::sqlite()).await;
}

#[tokio::test]
async fn sqlite_export_has_one_line_per_request_with_attempts() {
    export_has_one_line_per_request_with_attempts(&Backend::sqlite()).await;
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_sqlite_journal() {
    let backend = Backend::sqlite();
    let cfg = backend.config(Durability::Sync);
    let (journal, _) = Journal::open(&cfg).await.unwrap();
    let err = Journal::open(&cfg).await.unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    journal.close().await.unwrap();
    let (again, _) = Journal::open(&cfg).await.unwrap();
    again.close().await.unwrap();
}

#[tokio::test]
async fn a_failing_commit_is_an_error_and_a_health_flag_not_a_panic() {
    let backend = Backend::sqlite();
    let cfg = backend.config(Durability::Sync);
    let (journal, _) = Journal::open(&cfg).await.unwrap();
    journal
        .begin(new_request("before", None, "h"))
        .await
        .unwrap();
    // Inject a write failure (as a full disk would cause) from another connection.
    let conn = rusqlite::Connection::open(&cfg.path).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER fail BEFORE INSERT ON records BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END;",
    )
    .unwrap();
    let err = journal
        .begin(new_request("during", None, "h"))
        .await
        .unwrap_err();
    assert!(matches!(err, crate::JournalError::Unavailable(_)), "{err}");
    assert_eq!(err.to_gateway_error().status_code(), 503);
    let health = journal.health();
    assert!(health.failing);
    assert_eq!(health.write_failures, 1);
    assert!(health.last_error.unwrap().contains("disk full"));
    assert!(journal.complete("before", completed("x")).await.is_err());

    conn.execute_batch("DROP TRIGGER fail;").unwrap();
    journal.complete("before", completed("x")).await.unwrap();
    assert!(!journal.health().failing);
    assert_eq!(backend.fresh_status("during").await, None);
    assert_eq!(
        backend.fresh_status("before").await.as_deref(),
        Some("completed")
    );
    journal.close().await.unwrap();
    let report = crate::verify(&cfg.path).await.unwrap();
    assert!(report.ok, "{report:?}");
}

#[tokio::test]
async fn concurrent_sync_writers_share_commits_and_get_contiguous_seqs() {
    let backend = Backend::sqlite();
    let cfg = backend.config(Durability::Sync);
    let (journal, _) = Journal::open(&cfg).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("c{i}");
            journal.begin(new_request(&id, None, "h")).await.unwrap();
            journal.complete(&id, completed("ok")).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let health = journal.health();
    assert_eq!(health.records_written, 128);
    assert_eq!(health.last_seq, 128);
    // Group commit: fewer transactions than records under concurrency.
    assert!(health.commits < 128, "{health:?}");
    journal.close().await.unwrap();
    let report = crate::verify(&cfg.path).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(
        (report.first_seq, report.last_seq, report.requests),
        (Some(1), Some(128), 64)
    );
}

#[tokio::test]
async fn redacted_and_none_keep_no_text_on_disk() {
    for bodies in [Bodies::Redacted, Bodies::None] {
        let backend = Backend::sqlite();
        let mut cfg = backend.config(Durability::Sync);
        cfg.bodies = bodies;
        let (journal, _) = Journal::open(&cfg).await.unwrap();
        journal
            .begin(new_request("p1", Some("k"), "h"))
            .await
            .unwrap();
        journal
            .complete("p1", completed("the launch code is 0000"))
            .await
            .unwrap();
        let mut out = Vec::new();
        journal
            .export(&ExportFilter::default(), &mut out)
            .await
            .unwrap();
        journal.close().await.unwrap();
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let conn = rusqlite::Connection::open(&cfg.path).unwrap();
        let payloads: Vec<String> = conn
            .prepare("SELECT payload FROM records")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for p in &payloads {
            assert!(!p.contains("launch code"), "{bodies:?}: {p}");
            assert!(!p.contains("Be brief"), "{bodies:?}: {p}");
        }
        match bodies {
            Bodies::Redacted => {
                assert_eq!(line["request"]["messages"][0]["role"], "user");
                assert_eq!(
                    line["request"]["messages"][0]["content"][0]["text"],
                    "[redacted 23 chars]"
                );
                assert_eq!(
                    line["response"]["content"][0]["text"],
                    "[redacted 23 chars]"
                );
                assert_eq!(line["response"]["stop_reason"], "tool_use");
            }
            _ => {
                assert!(line["request"].is_null());
                assert!(line["response"].is_null());
            }
        }
        assert_eq!(line["usage"]["input_tokens"], 12);
    }
}

#[tokio::test]
async fn off_writes_nothing_and_reads_say_so() {
    let backend = Backend::sqlite();
    let cfg = backend.config(Durability::Off);
    let (journal, recovery) = Journal::open(&cfg).await.unwrap();
    assert!(!recovery.idempotency_enabled);
    journal.begin(new_request("o1", None, "h")).await.unwrap();
    journal.record_attempt(attempt("o1", 1, "ok"));
    journal.complete("o1", completed("x")).await.unwrap();
    assert!(!cfg.path.exists());
    assert!(matches!(
        journal.list(None, 10).await,
        Err(crate::JournalError::Off)
    ));
    assert_eq!(journal.health().rpo_bound, None);
}

#[tokio::test]
async fn a_read_only_handle_queries_while_the_writer_runs_and_refuses_writes() {
    let backend = Backend::sqlite();
    let cfg = backend.config(Durability::Sync);
    let (journal, _) = Journal::open(&cfg).await.unwrap();
    journal.begin(new_request("ro-1", None, "h")).await.unwrap();
    let reader = Journal::open_read_only(&cfg).await.unwrap();
    let listed = reader.list(None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, Status::InFlight);
    let err = reader
        .begin(new_request("ro-2", None, "h"))
        .await
        .unwrap_err();
    assert!(matches!(err, crate::JournalError::Unavailable(_)), "{err}");
    journal.complete("ro-1", completed("x")).await.unwrap();
    assert_eq!(
        reader
            .list(Some(Status::Completed), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    journal.close().await.unwrap();
}
