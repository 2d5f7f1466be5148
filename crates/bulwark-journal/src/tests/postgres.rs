//! The shared journal tests against a real PostgreSQL server, when
//! `BULWARK_TEST_POSTGRES_URL` names one (e.g. `postgres://bulwark@127.0.0.1:5432/bulwark_test`);
//! skipped with a notice otherwise. Each test gets its own schema.

use std::time::Duration;

use super::{Backend, idempotency, new_request, write_path};
use crate::config::Durability;
use crate::idempotency::Claim;
use crate::journal::Journal;

/// A fresh schema on the test server, or None (with a notice) when none is configured.
async fn backend(test: &str) -> Option<Backend> {
    let Ok(url) = std::env::var("BULWARK_TEST_POSTGRES_URL") else {
        println!(
            "skipped {test}: set BULWARK_TEST_POSTGRES_URL to run the PostgreSQL journal tests"
        );
        return None;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let schema = format!("bw_{}", uuid::Uuid::new_v4().simple());
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(Backend::Postgres {
        url: format!("{url}{sep}options=-csearch_path%3D{schema}"),
        node: format!("node-{}", uuid::Uuid::new_v4().simple()),
    })
}

#[tokio::test]
async fn postgres_sync_records_are_durable_when_calls_return() {
    let Some(b) = backend("postgres_sync").await else {
        return;
    };
    write_path::sync_records_are_durable_when_calls_return(&b).await;
}

#[tokio::test]
async fn postgres_batched_records_are_durable_within_the_flush_interval() {
    let Some(b) = backend("postgres_batched").await else {
        return;
    };
    write_path::batched_records_are_durable_within_the_flush_interval(&b).await;
}

#[tokio::test]
async fn postgres_recovery_marks_in_flight_requests_interrupted() {
    let Some(b) = backend("postgres_recovery").await else {
        return;
    };
    write_path::recovery_marks_in_flight_requests_interrupted(&b).await;
}

#[tokio::test]
async fn postgres_export_has_one_line_per_request_with_attempts() {
    let Some(b) = backend("postgres_export").await else {
        return;
    };
    write_path::export_has_one_line_per_request_with_attempts(&b).await;
}

#[tokio::test]
async fn postgres_completed_key_replays_and_other_body_mismatches() {
    let Some(b) = backend("postgres_idempotency_replay").await else {
        return;
    };
    idempotency::completed_key_replays_and_other_body_mismatches(&b).await;
}

#[tokio::test]
async fn postgres_concurrent_duplicate_waits_for_the_first() {
    let Some(b) = backend("postgres_idempotency_wait").await else {
        return;
    };
    idempotency::concurrent_duplicate_waits_for_the_first(&b).await;
}

#[tokio::test]
async fn postgres_failed_or_abandoned_claims_free_the_key() {
    let Some(b) = backend("postgres_idempotency_release").await else {
        return;
    };
    idempotency::failed_or_abandoned_claims_free_the_key(&b).await;
}

/// Two gateway nodes on one database: one key runs once; the other node's duplicate
/// waits (polling) and gets the answer; seqs stay contiguous across both writers.
#[tokio::test]
async fn postgres_two_nodes_share_keys_and_one_contiguous_log() {
    let Some(b) = backend("postgres_two_nodes").await else {
        return;
    };
    let mut cfg_a = b.config(Durability::Sync);
    cfg_a.node_id = Some("node-a".into());
    let mut cfg_b = cfg_a.clone();
    cfg_b.node_id = Some("node-b".into());
    let (a, _) = Journal::open(&cfg_a).await.unwrap();
    let (node_b, _) = Journal::open(&cfg_b).await.unwrap();

    let Claim::New(lease) = a.claim("k", "h").await.unwrap() else {
        panic!()
    };
    a.begin(new_request("two-1", Some("k"), "h")).await.unwrap();
    drop(lease);
    let Claim::InFlight(wait) = node_b.claim("k", "h").await.unwrap() else {
        panic!("the other node must see the key in flight")
    };
    assert!(matches!(
        node_b.claim("k", "other").await.unwrap(),
        Claim::Mismatch
    ));
    let waiter = tokio::spawn(wait.wait());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!waiter.is_finished());
    a.complete("two-1", super::completed("from a"))
        .await
        .unwrap();
    let settled = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Claim::Completed(stored) = settled else {
        panic!("{settled:?}")
    };
    assert_eq!(stored.response.text(), "from a");

    let mut tasks = Vec::new();
    for i in 0..20 {
        let j = if i % 2 == 0 {
            a.clone()
        } else {
            node_b.clone()
        };
        tasks.push(tokio::spawn(async move {
            let id = format!("two-c{i}");
            j.begin(new_request(&id, None, "h")).await.unwrap();
            j.complete(&id, super::completed("x")).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // A node that restarts interrupts only its own unfinished requests.
    node_b
        .begin(new_request("two-open-b", None, "h"))
        .await
        .unwrap();
    a.begin(new_request("two-open-a", None, "h")).await.unwrap();
    a.close().await.unwrap();
    drop(a);
    let (a, recovery) = Journal::open(&cfg_a).await.unwrap();
    assert_eq!(recovery.interrupted_ids, vec!["two-open-a".to_string()]);
    assert_eq!(
        b.fresh_status("two-open-b").await.as_deref(),
        Some("in_flight")
    );

    let Backend::Postgres { url, .. } = &b else {
        unreachable!()
    };
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*), min(seq), max(seq) FROM journal_records",
            &[],
        )
        .await
        .unwrap();
    let (count, min, max): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (min, max),
        (1, count),
        "seqs must be contiguous across nodes"
    );
    let rows = client
        .query(
            "SELECT seq, at_ms, kind, request_id, payload, crc FROM journal_records",
            &[],
        )
        .await
        .unwrap();
    for r in rows {
        let crc: i64 = r.get(5);
        let record = crate::record::Record {
            seq: r.get(0),
            at_ms: r.get(1),
            kind: r.get(2),
            request_id: r.get(3),
            payload: r.get(4),
            crc: u32::try_from(crc).unwrap(),
        };
        assert!(record.checksum_ok(), "{record:?}");
    }
    a.close().await.unwrap();
    node_b.close().await.unwrap();
}
