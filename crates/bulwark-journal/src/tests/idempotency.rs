//! Idempotency: replay, concurrent duplicates, mismatches, released keys, TTL.

use std::time::Duration;

use super::{Backend, completed, new_request};
use crate::clock::Clock;
use crate::config::{Bodies, Durability};
use crate::idempotency::Claim;
use crate::journal::Journal;
use crate::types::Outcome;

fn key() -> String {
    format!("caller-1:{}", uuid::Uuid::new_v4())
}

/// Runs one request under `key` to completion with answer `text`.
async fn run_first(journal: &Journal, key: &str, id: &str, text: &str) {
    let Claim::New(lease) = journal.claim(key, "hash-a").await.unwrap() else {
        panic!("first claim must be New")
    };
    journal
        .begin(new_request(id, Some(key), "hash-a"))
        .await
        .unwrap();
    drop(lease);
    journal.complete(id, completed(text)).await.unwrap();
}

/// A completed key replays its answer; another body under it is a mismatch.
pub(crate) async fn completed_key_replays_and_other_body_mismatches(backend: &Backend) {
    let (journal, _) = Journal::open(&backend.config(Durability::Sync))
        .await
        .unwrap();
    let key = key();
    let id = format!("idem-{}", uuid::Uuid::new_v4());
    run_first(&journal, &key, &id, "stored answer").await;
    match journal.claim(&key, "hash-a").await.unwrap() {
        Claim::Completed(stored) => {
            assert_eq!(stored.request_id, id);
            assert_eq!(stored.response.text(), "stored answer");
            assert_eq!(stored.provider.as_deref(), Some("mock-a"));
        }
        other => panic!("expected Completed, got {other:?}"),
    }
    assert!(matches!(
        journal.claim(&key, "hash-b").await.unwrap(),
        Claim::Mismatch
    ));
    journal.close().await.unwrap();
}

/// A duplicate arriving while the first runs waits, then gets the first's answer.
pub(crate) async fn concurrent_duplicate_waits_for_the_first(backend: &Backend) {
    let (journal, _) = Journal::open(&backend.config(Durability::Sync))
        .await
        .unwrap();
    let key = key();
    let id = format!("idem-{}", uuid::Uuid::new_v4());
    let Claim::New(lease) = journal.claim(&key, "hash-a").await.unwrap() else {
        panic!("first claim must be New")
    };
    journal
        .begin(new_request(&id, Some(&key), "hash-a"))
        .await
        .unwrap();
    drop(lease);
    let Claim::InFlight(wait) = journal.claim(&key, "hash-a").await.unwrap() else {
        panic!("duplicate must wait")
    };
    assert!(matches!(
        journal.claim(&key, "hash-b").await.unwrap(),
        Claim::Mismatch
    ));
    let waiter = tokio::spawn(wait.wait());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !waiter.is_finished(),
        "the duplicate must wait for the first"
    );
    journal
        .complete(&id, completed("first answer"))
        .await
        .unwrap();
    let settled = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match settled {
        Claim::Completed(stored) => assert_eq!(stored.response.text(), "first answer"),
        other => panic!("expected Completed, got {other:?}"),
    }
    journal.close().await.unwrap();
}

/// A failed first request, or a lease dropped before `begin`, frees the key.
pub(crate) async fn failed_or_abandoned_claims_free_the_key(backend: &Backend) {
    let (journal, _) = Journal::open(&backend.config(Durability::Sync))
        .await
        .unwrap();
    let key = key();
    let Claim::New(lease) = journal.claim(&key, "hash-a").await.unwrap() else {
        panic!()
    };
    let Claim::InFlight(wait) = journal.claim(&key, "hash-a").await.unwrap() else {
        panic!()
    };
    drop(lease); // never begun: the waiter is released and may run it itself
    let Claim::New(lease) = tokio::time::timeout(Duration::from_secs(5), wait.wait())
        .await
        .unwrap()
        .unwrap()
    else {
        panic!("an abandoned claim must free the key")
    };
    let id = format!("idem-{}", uuid::Uuid::new_v4());
    journal
        .begin(new_request(&id, Some(&key), "hash-a"))
        .await
        .unwrap();
    drop(lease);
    journal
        .complete(&id, Outcome::failed("all targets down", 3))
        .await
        .unwrap();
    assert!(matches!(
        journal.claim(&key, "hash-a").await.unwrap(),
        Claim::New(_)
    ));
    journal.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_completed_key_replays_and_other_body_mismatches() {
    completed_key_replays_and_other_body_mismatches(&Backend::sqlite()).await;
}

#[tokio::test]
async fn sqlite_concurrent_duplicate_waits_for_the_first() {
    concurrent_duplicate_waits_for_the_first(&Backend::sqlite()).await;
}

#[tokio::test]
async fn sqlite_failed_or_abandoned_claims_free_the_key() {
    failed_or_abandoned_claims_free_the_key(&Backend::sqlite()).await;
}

#[tokio::test]
async fn stored_answers_expire_after_the_ttl() {
    let backend = Backend::sqlite();
    let clock = Clock::default();
    let (journal, _) = Journal::open_with_clock(&backend.config(Durability::Sync), clock.clone())
        .await
        .unwrap();
    let key = key();
    run_first(&journal, &key, "ttl-1", "old").await;
    clock.advance(Duration::from_secs(23 * 3600));
    assert!(matches!(
        journal.claim(&key, "hash-a").await.unwrap(),
        Claim::Completed(_)
    ));
    clock.advance(Duration::from_secs(3600));
    // Past 24 h the key is free again, even with another body.
    assert!(matches!(
        journal.claim(&key, "hash-b").await.unwrap(),
        Claim::New(_)
    ));
    journal.close().await.unwrap();
}

#[tokio::test]
async fn answers_replay_after_a_restart_and_in_batched_mode_only_once_flushed() {
    let backend = Backend::sqlite();
    let mut cfg = backend.config(Durability::Batched);
    cfg.flush_interval = bulwark_core::config::HumanDuration::millis(100);
    let (journal, _) = Journal::open(&cfg).await.unwrap();
    let key = key();
    run_first(&journal, &key, "b-1", "batched answer").await;
    // Completed but not yet committed: a duplicate waits for the flush, never re-runs.
    let claim = journal.claim(&key, "hash-a").await.unwrap();
    let settled = match claim {
        Claim::InFlight(wait) => wait.wait().await.unwrap(),
        other => other,
    };
    assert!(matches!(settled, Claim::Completed(_)), "{settled:?}");
    journal.close().await.unwrap();
    drop(journal);
    let (journal, _) = Journal::open(&cfg).await.unwrap();
    assert!(matches!(
        journal.claim(&key, "hash-a").await.unwrap(),
        Claim::Completed(_)
    ));
    journal.close().await.unwrap();
}

#[tokio::test]
async fn redacted_journals_still_replay_whole_answers() {
    let backend = Backend::sqlite();
    let mut cfg = backend.config(Durability::Sync);
    cfg.bodies = Bodies::Redacted;
    let (journal, _) = Journal::open(&cfg).await.unwrap();
    let key = key();
    run_first(&journal, &key, "r-1", "whole answer").await;
    let Claim::Completed(stored) = journal.claim(&key, "hash-a").await.unwrap() else {
        panic!()
    };
    assert_eq!(stored.response.text(), "whole answer");
    journal.close().await.unwrap();
}

#[tokio::test]
async fn off_disables_idempotency() {
    let backend = Backend::sqlite();
    let (journal, _) = Journal::open(&backend.config(Durability::Off))
        .await
        .unwrap();
    let key = key();
    run_first(&journal, &key, "off-1", "x").await;
    assert!(matches!(
        journal.claim(&key, "hash-a").await.unwrap(),
        Claim::New(_)
    ));
    assert!(matches!(
        journal.claim(&key, "hash-b").await.unwrap(),
        Claim::New(_)
    ));
}

#[test]
fn test_clock_moves_only_forward_by_what_tests_say() {
    let clock = Clock::default();
    let before = clock.now_ms();
    clock.advance(Duration::from_secs(10));
    assert!(clock.now_ms() - before >= 10_000);
}
