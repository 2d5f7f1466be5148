//! Backups: round trips through object storage, point-in-time restore, verify
//! catching corruption, retention, refusing to fork a backup history, segments.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};

use super::{Backend, completed, new_request};
use crate::backup::{
    Backup, BackupTarget, decode_segment, encode_segment, list_segments, list_snapshots,
};
use crate::config::{BackupConfig, Bodies, Durability, JournalConfig};
use crate::idempotency::Claim;
use crate::journal::Journal;
use crate::record::{IndexUpdate, PendingRecord, RecordKind};
use crate::restore::{restore, verify};

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The journal's last sequence number and a wall-clock time strictly after it was
/// written and strictly before anything written next: a point-in-time restore
/// target. (Restore reads wall-clock record times, so this waits in real time.)
async fn cut_after(journal: &Journal) -> (i64, SystemTime) {
    let seq = journal.health().last_seq;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    (seq, cut)
}

async fn write_requests(journal: &Journal, prefix: &str, n: usize) {
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let key = format!("k-{id}");
        let Claim::New(lease) = journal.claim(&key, "h").await.unwrap() else {
            panic!()
        };
        journal
            .begin(new_request(&id, Some(&key), "h"))
            .await
            .unwrap();
        drop(lease);
        journal.record_attempt(super::attempt(&id, 1, "ok"));
        journal
            .complete(&id, completed(&format!("answer {id}")))
            .await
            .unwrap();
    }
}

/// A `sync` SQLite journal and a `file://` backup store in a directory of its own
/// (`store`, inside `dir`, where restores can be written too).
struct Setup {
    /// Owns the journal's directory.
    _backend: Backend,
    dir: tempfile::TempDir,
    cfg: JournalConfig,
    backup_cfg: BackupConfig,
    store: std::path::PathBuf,
}

fn setup() -> Setup {
    let backend = Backend::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let cfg = backend.config(Durability::Sync);
    let store = dir.path().join("b");
    let backup_cfg = BackupConfig::new(format!("file://{}", store.display()));
    Setup {
        _backend: backend,
        dir,
        cfg,
        backup_cfg,
        store,
    }
}

impl Setup {
    /// A snapshot is due at every run.
    fn snapshot_every_run(mut self) -> Self {
        self.backup_cfg.snapshot_interval = bulwark_core::config::HumanDuration::millis(1);
        self
    }
}

/// Full round trip: snapshot, more records shipped as segments, restore, verify, and
/// a gateway on the restored journal answers replays and carries on.
pub(crate) async fn round_trip(cfg: &JournalConfig, backup_cfg: &BackupConfig, restore_to: &Path) {
    install_crypto();
    let (journal, _) = Journal::open(cfg).await.unwrap();
    let backup = Backup::new(cfg, backup_cfg).unwrap();
    write_requests(&journal, "before", 5).await;
    let first = backup.run_once().await.unwrap();
    assert!(first.snapshot.is_some());
    write_requests(&journal, "after", 7).await;
    // One in flight at backup time: restored as in flight, interrupted on open.
    journal
        .begin(new_request("open-1", None, "h"))
        .await
        .unwrap();
    assert!(backup.rpo_exposure().await.unwrap() > Duration::ZERO);
    let second = backup.run_once().await.unwrap();
    assert!(second.snapshot.is_none());
    assert_eq!(second.segments.len(), 1);
    assert_eq!(second.records_shipped, 7 * 3 + 1);
    assert_eq!(backup.rpo_exposure().await.unwrap(), Duration::ZERO);
    let last_seq = journal.health().last_seq;
    journal.close().await.unwrap();
    drop(journal);

    let started = Instant::now();
    let target = BackupTarget::open(backup_cfg).unwrap();
    let report = restore(&target, restore_to, None).await.unwrap();
    assert!(report.verify.ok, "{report:?}");
    assert_eq!(
        report.last_seq,
        last_seq,
        "records lost: {}",
        last_seq - report.last_seq
    );
    assert_eq!(report.verify.requests, 13);

    let mut restored_cfg = cfg.clone();
    restored_cfg.path = restore_to.to_path_buf();
    let (restored, recovery) = Journal::open(&restored_cfg).await.unwrap();
    let rto = started.elapsed();
    println!(
        "backup round trip to {}: RPO {} records lost, RTO {:?} (restore + open), {} segments",
        backup_cfg.to,
        last_seq - report.last_seq,
        rto,
        report.segments_applied
    );
    assert_eq!(recovery.interrupted_ids, vec!["open-1".to_string()]);
    let Claim::Completed(stored) = restored.claim("k-after-6", "h").await.unwrap() else {
        panic!("answers shipped in segments replay after restore")
    };
    assert_eq!(stored.response.text(), "answer after-6");
    restored
        .begin(new_request("carry-on", None, "h"))
        .await
        .unwrap();
    restored.complete("carry-on", completed("x")).await.unwrap();
    assert_eq!(restored.health().last_seq, last_seq + 3);
    restored.close().await.unwrap();
    assert!(verify(restore_to).await.unwrap().ok);
}

#[tokio::test]
async fn backup_and_restore_round_trip_through_a_local_directory() {
    let backend = Backend::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let cfg = backend.config(Durability::Sync);
    let backup_cfg = BackupConfig::new(format!("file://{}/backups", dir.path().display()));
    round_trip(&cfg, &backup_cfg, &dir.path().join("restored/journal.db")).await;
}

#[tokio::test]
async fn backup_and_restore_round_trip_through_s3_when_a_server_is_configured() {
    let Ok(endpoint) = std::env::var("BULWARK_TEST_S3_ENDPOINT") else {
        println!(
            "skipped: set BULWARK_TEST_S3_ENDPOINT (e.g. http://127.0.0.1:5000 for moto_server) to run the S3 round trip"
        );
        return;
    };
    assert!(
        std::env::var("AWS_ACCESS_KEY_ID").is_ok()
            && std::env::var("AWS_SECRET_ACCESS_KEY").is_ok(),
        "BULWARK_TEST_S3_ENDPOINT is set: also set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (moto accepts any, e.g. test/test)"
    );
    install_crypto();
    let bucket = std::env::var("BULWARK_TEST_S3_BUCKET").unwrap_or_else(|_| "bulwark-test".into());
    ensure_bucket(&endpoint, &bucket).await;
    let backend = Backend::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let cfg = backend.config(Durability::Sync);
    let mut backup_cfg = BackupConfig::new(format!("s3://{bucket}/run-{}", uuid::Uuid::new_v4()));
    backup_cfg.endpoint = Some(endpoint);
    backup_cfg.region = Some("us-east-1".into());
    backup_cfg.allow_http = true;
    round_trip(&cfg, &backup_cfg, &dir.path().join("restored.db")).await;
}

/// moto starts empty: create the bucket (an S3 `CreateBucket` is a plain PUT on it).
async fn ensure_bucket(endpoint: &str, bucket: &str) {
    let client = reqwest::Client::new();
    let response = client
        .put(format!("{}/{bucket}", endpoint.trim_end_matches('/')))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success() || response.status().as_u16() == 409,
        "{}",
        response.status()
    );
}

#[tokio::test]
async fn restore_at_a_time_stops_at_the_first_later_record() {
    let s = setup();
    let (dir, cfg, backup_cfg) = (&s.dir, &s.cfg, &s.backup_cfg);
    let (journal, _) = Journal::open(cfg).await.unwrap();
    let backup = Backup::new(cfg, backup_cfg).unwrap();
    write_requests(&journal, "early", 2).await;
    backup.run_once().await.unwrap();
    write_requests(&journal, "middle", 2).await;
    backup.ship().await.unwrap();
    let (seq_at_cut, cut) = cut_after(&journal).await;
    write_requests(&journal, "late", 2).await;
    backup.ship().await.unwrap();
    journal.close().await.unwrap();

    let target = BackupTarget::open(backup_cfg).unwrap();
    let to = dir.path().join("pitr.db");
    let report = restore(&target, &to, Some(cut)).await.unwrap();
    assert!(report.verify.ok, "{report:?}");
    assert_eq!(report.last_seq, seq_at_cut);
    assert_eq!(report.verify.requests, 4);
    // A restore never overwrites.
    assert!(restore(&target, &to, None).await.is_err());
    // Before the first snapshot there is nothing to restore from.
    let long_ago = SystemTime::now() - Duration::from_secs(3600);
    assert!(
        restore(&target, &dir.path().join("x.db"), Some(long_ago))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn verify_finds_altered_and_missing_records() {
    let backend = Backend::sqlite();
    let cfg = backend.config(Durability::Sync);
    let (journal, _) = Journal::open(&cfg).await.unwrap();
    write_requests(&journal, "v", 3).await;
    journal.close().await.unwrap();
    assert!(verify(&cfg.path).await.unwrap().ok);

    let conn = rusqlite::Connection::open(&cfg.path).unwrap();
    conn.execute(
        "UPDATE records SET payload = replace(payload, 'answer v-1', 'answer v-X') WHERE kind = 'complete'",
        [],
    )
    .unwrap();
    let report = verify(&cfg.path).await.unwrap();
    assert!(!report.ok);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("fails its checksum")),
        "{report:?}"
    );

    conn.execute("DELETE FROM records WHERE seq = 2", [])
        .unwrap();
    let report = verify(&cfg.path).await.unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("records 2..2 are missing")),
        "{report:?}"
    );

    conn.execute(
        "UPDATE requests SET status = 'completed' WHERE id = 'v-0'",
        [],
    )
    .unwrap();
    conn.execute("UPDATE requests SET status = 'failed' WHERE id = 'v-2'", [])
        .unwrap();
    let report = verify(&cfg.path).await.unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("request v-2: index says")),
        "{report:?}"
    );
}

#[tokio::test]
async fn retention_keeps_the_base_snapshot_and_what_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::sqlite();
    let cfg = backend.config(Durability::Sync);
    let mut backup_cfg = BackupConfig::new(format!("file://{}/r", dir.path().display()));
    backup_cfg.retention = bulwark_core::config::HumanDuration::secs(7 * 86_400);
    let (journal, _) = Journal::open(&cfg).await.unwrap();
    let backup = Backup::new(&cfg, &backup_cfg).unwrap();
    let store = backup.target().store.clone();
    let day = 86_400_000;
    let now = 100 * day;
    // Snapshots 10, 9, 8 and 1 day old (seq 10, 20, 30, 90); segments around them.
    for (seq, age) in [(10, 10), (20, 9), (30, 8), (90, 1)] {
        let path = crate::backup::snapshot_path(seq, now - age * day);
        store
            .put(&path, PutPayload::from(Bytes::from_static(b"x")))
            .await
            .unwrap();
    }
    for (first, last) in [(1, 10), (11, 20), (21, 30), (31, 60), (61, 90), (91, 95)] {
        let path = crate::backup::segment_path(first, last);
        store
            .put(&path, PutPayload::from(Bytes::from_static(b"x")))
            .await
            .unwrap();
    }
    let deleted = backup.apply_retention(now).await.unwrap();
    let snapshots: Vec<i64> = list_snapshots(store.as_ref())
        .await
        .unwrap()
        .iter()
        .map(|s| s.seq)
        .collect();
    let segments: Vec<i64> = list_segments(store.as_ref())
        .await
        .unwrap()
        .iter()
        .map(|s| s.first)
        .collect();
    // 8 days old is the base for restoring to 7 days ago; 9 and 10 go.
    assert_eq!(snapshots, vec![30, 90]);
    assert_eq!(segments, vec![31, 61, 91]);
    assert_eq!(deleted.len(), 5);
    journal.close().await.unwrap();
}

#[tokio::test]
async fn shipping_refuses_to_fork_a_restored_journals_history() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::sqlite();
    let cfg = backend.config(Durability::Sync);
    let backup_cfg = BackupConfig::new(format!("file://{}/f", dir.path().display()));
    let (journal, _) = Journal::open(&cfg).await.unwrap();
    write_requests(&journal, "a", 2).await;
    Backup::new(&cfg, &backup_cfg)
        .unwrap()
        .run_once()
        .await
        .unwrap();
    journal.close().await.unwrap();
    drop(journal);
    // Another journal (say, restored to an earlier point) writes more than was shipped.
    let other = Backend::sqlite();
    let other_cfg = other.config(Durability::Sync);
    let (journal, _) = Journal::open(&other_cfg).await.unwrap();
    write_requests(&journal, "b", 3).await;
    journal.close().await.unwrap();
    let backup = Backup::new(&other_cfg, &backup_cfg).unwrap();
    backup.run_once().await.unwrap(); // seq 1..6 come from a snapshot: not comparable
    drop(backup);
    let (journal, _) = Journal::open(&cfg).await.unwrap();
    write_requests(&journal, "c", 5).await;
    journal.close().await.unwrap();
    let err = Backup::new(&cfg, &backup_cfg)
        .unwrap()
        .run_once()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("new prefix"), "{err}");
}

#[tokio::test]
async fn snapshots_of_redacted_journals_leave_replay_answers_out() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::sqlite();
    let mut cfg = backend.config(Durability::Sync);
    cfg.bodies = Bodies::Redacted;
    let backup_cfg = BackupConfig::new(format!("file://{}/p", dir.path().display()));
    let (journal, _) = Journal::open(&cfg).await.unwrap();
    write_requests(&journal, "p", 2).await;
    let run = Backup::new(&cfg, &backup_cfg)
        .unwrap()
        .run_once()
        .await
        .unwrap();
    journal.close().await.unwrap();
    let snapshot = dir.path().join("p").join(run.snapshot.unwrap());
    let bytes = std::fs::read(&snapshot).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains("answer p-1"),
        "a replay answer leaked into the snapshot"
    );
    assert!(text.contains("[redacted"));
}

#[test]
fn segments_round_trip_and_reject_truncation_and_edits() {
    let records: Vec<_> = (1..=3)
        .map(|seq| {
            PendingRecord {
                kind: RecordKind::Attempt,
                request_id: format!("r{seq}"),
                payload: format!(r#"{{"n":{seq},"text":"a \"quoted\" é"}}"#),
                index: IndexUpdate::Attempt { n: 1 },
            }
            .seal(seq, 1_000 + seq)
        })
        .collect();
    let bytes = encode_segment(&records).unwrap();
    assert_eq!(decode_segment(&bytes).unwrap(), records);
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with(r#"{"segment":{"first":1,"last":3,"count":3"#)
    );
    // Drop the second record line: the trailer checksum no longer matches.
    let lines: Vec<&str> = text.lines().collect();
    let truncated = format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3]);
    assert!(decode_segment(truncated.as_bytes()).is_err());
    let edited = text.replace("quoted", "QUOTED");
    assert!(decode_segment(edited.as_bytes()).is_err());
    assert!(decode_segment(b"").is_err());
}

/// Segments stay continuous across snapshots: a restore to a time before the newest
/// snapshot starts from an older one and must still find every record up to then,
/// including those written just before the newer snapshot was taken.
#[tokio::test]
async fn restore_between_two_snapshots_finds_every_record_up_to_its_time() {
    let s = setup().snapshot_every_run();
    let (dir, cfg, backup_cfg) = (&s.dir, &s.cfg, &s.backup_cfg);
    let (journal, _) = Journal::open(cfg).await.unwrap();
    let backup = Backup::new(cfg, backup_cfg).unwrap();
    write_requests(&journal, "first", 2).await;
    backup.run_once().await.unwrap();
    write_requests(&journal, "shipped", 2).await;
    backup.ship().await.unwrap();
    // Written after the last segment, then a new snapshot is due.
    write_requests(&journal, "unshipped", 2).await;
    let (seq_at_cut, cut) = cut_after(&journal).await;
    let second = backup.run_once().await.unwrap();
    assert!(second.snapshot.is_some());
    write_requests(&journal, "late", 1).await;
    backup.run_once().await.unwrap();
    journal.close().await.unwrap();

    let target = BackupTarget::open(backup_cfg).unwrap();
    let report = restore(&target, &dir.path().join("pitr.db"), Some(cut))
        .await
        .unwrap();
    assert!(report.verify.ok, "{report:?}");
    assert_eq!(report.last_seq, seq_at_cut, "{report:?}");
    assert_eq!(report.verify.requests, 6);
    // And the newest state, from the newest snapshot and what followed it.
    let report = restore(&target, &dir.path().join("now.db"), None)
        .await
        .unwrap();
    assert!(report.verify.ok, "{report:?}");
    assert_eq!(report.verify.requests, 7);
}

/// A rebuilt journal that fails verification is not put where a gateway would be
/// started on it: it is left beside it as `.unverified`.
#[tokio::test]
async fn a_restore_that_fails_verification_writes_nothing_at_its_destination() {
    let s = setup();
    let (dir, cfg, backup_cfg) = (&s.dir, &s.cfg, &s.backup_cfg);
    let (journal, _) = Journal::open(cfg).await.unwrap();
    write_requests(&journal, "v", 3).await;
    journal.close().await.unwrap();
    drop(journal);
    // Bit rot in the live journal, which the snapshot then carries.
    let conn = rusqlite::Connection::open(&cfg.path).unwrap();
    conn.execute(
        "UPDATE records SET payload = replace(payload, 'answer v-1', 'answer v-X') WHERE kind = 'complete'",
        [],
    )
    .unwrap();
    drop(conn);
    let backup = Backup::new(cfg, backup_cfg).unwrap();
    backup.snapshot().await.unwrap();

    let target = BackupTarget::open(backup_cfg).unwrap();
    let to = dir.path().join("restored.db");
    let report = restore(&target, &to, None).await.unwrap();
    assert!(!report.verify.ok, "{report:?}");
    assert!(
        !to.exists(),
        "a journal that failed verification is at {}",
        to.display()
    );
    let unverified = dir.path().join("restored.db.unverified");
    assert!(unverified.exists());
    assert_eq!(report.verify.path, unverified.display().to_string());
}

/// A store that cannot be read has confirmed nothing: the exposure is the age of the
/// oldest record not known to be shipped, not an absurd number (it fed a gauge and
/// a status line that could not print it).
#[tokio::test]
async fn an_unreadable_store_exposes_every_unshipped_record_by_its_age() {
    let s = setup();
    let (cfg, backup_cfg, store) = (&s.cfg, &s.backup_cfg, &s.store);
    let (journal, _) = Journal::open(cfg).await.unwrap();
    write_requests(&journal, "e", 2).await;
    let backup = Backup::new(cfg, backup_cfg).unwrap();
    // A file where the store's directory was: reading the store fails.
    std::fs::remove_dir_all(store).unwrap();
    std::fs::write(store, b"x").unwrap();
    assert!(backup.run_once().await.is_err());
    tokio::time::sleep(Duration::from_millis(30)).await;
    let status = backup.status().await;
    assert!(status.last_error.is_some(), "{status:?}");
    assert!(
        status.rpo_exposure >= Duration::from_millis(30)
            && status.rpo_exposure < Duration::from_secs(60),
        "{status:?}"
    );
    journal.close().await.unwrap();
}

/// Two ways the segments could still have skipped what only a snapshot held: a
/// restart before the run that ships it finished, and a first snapshot of an empty
/// journal. Either way a restore to a time before the newer snapshot must find
/// every record up to that time.
#[tokio::test]
async fn segments_stay_unbroken_across_a_restart_and_after_an_empty_first_snapshot() {
    let s = setup().snapshot_every_run();
    let (dir, cfg, backup_cfg) = (&s.dir, &s.cfg, &s.backup_cfg);
    let (journal, _) = Journal::open(cfg).await.unwrap();
    let backup = Backup::new(cfg, backup_cfg).unwrap();
    // The first snapshot, of a journal with nothing in it yet.
    backup.run_once().await.unwrap();
    write_requests(&journal, "early", 2).await;
    let (early_seq, cut_early) = cut_after(&journal).await;
    // A due run: what the empty snapshot lacks must reach a segment first.
    backup.run_once().await.unwrap();
    write_requests(&journal, "middle", 2).await;
    let (middle_seq, cut_middle) = cut_after(&journal).await;
    // A snapshot taken, then the process stops before shipping what it holds.
    backup.snapshot().await.unwrap();
    drop(backup);
    let restarted = Backup::new(cfg, backup_cfg).unwrap();
    restarted.ship().await.unwrap();
    journal.close().await.unwrap();

    let target = BackupTarget::open(backup_cfg).unwrap();
    for (name, cut, seq, requests) in [
        ("early.db", cut_early, early_seq, 2),
        ("middle.db", cut_middle, middle_seq, 4),
    ] {
        let report = restore(&target, &dir.path().join(name), Some(cut))
            .await
            .unwrap();
        assert!(report.verify.ok, "{name}: {report:?}");
        assert_eq!(report.last_seq, seq, "{name}: {report:?}");
        assert_eq!(report.verify.requests, requests, "{name}");
    }
}
