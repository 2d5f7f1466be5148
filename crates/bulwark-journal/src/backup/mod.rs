//! Backups of a SQLite journal to object storage: consistent snapshots plus
//! continuous shipping of new records, retention, and the current RPO exposure.
//!
//! # Object layout (under the `backup.to` prefix)
//!
//! ```text
//! snapshots/<seq:020>-<unix_ms:013>.db        a whole journal, consistent at record <seq>
//! segments/<first:020>-<last:020>.jsonl       records first..=last, one JSON object a line,
//!                                             then a trailer line:
//!   {"seq":41,"at_ms":…,"kind":"begin","request_id":"…","payload":{…},"crc":123}
//!   …
//!   {"segment":{"first":41,"last":57,"count":17,"crc32c":456}}
//! ```
//!
//! Zero-padded numbers make the lexical order of a listing the numeric order. Each
//! record line carries the record's own CRC-32C (payload embedded verbatim, so the
//! checksum still matches); the trailer's CRC-32C covers every byte before it, so a
//! truncated or altered segment is refused as a whole.
//!
//! # Snapshots
//!
//! The SQLite online backup API copies the live journal (all pages in one step, so
//! under one read transaction: consistent, and the writer is not blocked in WAL mode)
//! to a temporary file beside it; the copy is switched out of WAL mode (one
//! self-contained file) and, when `bodies` is not `full`, the idempotency answers
//! (kept whole for replay) are removed and the file vacuumed, so a backup never holds
//! more than the journal's privacy setting allows. A snapshot is taken on the first
//! run and then every `snapshot_interval`.
//!
//! # Shipping
//!
//! Every `interval`, records after the last shipped seq are written as one segment
//! (up to 10,000 records each). The shipped seq is not kept locally: it is read back
//! from the store's listing on start (the newest snapshot's seq or segment's last,
//! whichever is higher), so a lost local state cannot cause a gap or a duplicate.
//! On start the record at the shipped seq is compared with the local one (its
//! CRC-32C); if they differ, or the local journal is behind the store, the journal was
//! restored to an earlier point or replaced, and shipping to this prefix would fork
//! its history: shipping stops with an error (point `backup.to` at a new prefix).
//!
//! # RPO exposure
//!
//! [`Backup::rpo_exposure`] is the age of the oldest record not yet shipped, 0 when
//! everything is shipped: what losing the machine now would lose. (The newest
//! unshipped record would read near 0 under steady traffic however large the backlog.)
//! It stays under `interval` plus the upload time while shipping works.
//!
//! # Retention
//!
//! Snapshots taken within `retention` are kept, plus the newest one before it (the
//! base a restore to the oldest point within `retention` starts from), and always the
//! newest. Segments whose last record is covered by the oldest kept snapshot are
//! deleted; all later segments are kept, since restore to any time replays them.

pub mod target;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::io::AsyncWriteExt;

pub use target::BackupTarget;

use crate::clock::{Clock, duration_ms, rfc3339};
use crate::config::{BackendKind, BackupConfig, Bodies, JournalConfig};
use crate::error::{JournalError, Result};
use crate::record::{Record, crc32c};
use crate::sqlite::{self, SqliteReader};

/// Records per segment, at most.
const SEGMENT_RECORDS: usize = 10_000;

/// A snapshot or segment name, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotName {
    pub seq: i64,
    pub at_ms: i64,
    pub path: ObjectPath,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentName {
    pub first: i64,
    pub last: i64,
    pub path: ObjectPath,
}

pub(crate) fn snapshot_path(seq: i64, at_ms: i64) -> ObjectPath {
    ObjectPath::from(format!("snapshots/{seq:020}-{at_ms:013}.db"))
}

pub(crate) fn segment_path(first: i64, last: i64) -> ObjectPath {
    ObjectPath::from(format!("segments/{first:020}-{last:020}.jsonl"))
}

fn parse_pair(path: &ObjectPath, dir: &str, ext: &str) -> Option<(i64, i64)> {
    let name = path.as_ref().strip_prefix(dir)?.strip_suffix(ext)?;
    let (a, b) = name.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

pub(crate) async fn list_snapshots(store: &dyn ObjectStore) -> Result<Vec<SnapshotName>> {
    let prefix = ObjectPath::from("snapshots");
    let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
    let mut out: Vec<SnapshotName> = metas
        .into_iter()
        .filter_map(|m| {
            let (seq, at_ms) = parse_pair(&m.location, "snapshots/", ".db")?;
            Some(SnapshotName {
                seq,
                at_ms,
                path: m.location,
            })
        })
        .collect();
    out.sort_by_key(|s| (s.seq, s.at_ms));
    Ok(out)
}

pub(crate) async fn list_segments(store: &dyn ObjectStore) -> Result<Vec<SegmentName>> {
    let prefix = ObjectPath::from("segments");
    let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
    let mut out: Vec<SegmentName> = metas
        .into_iter()
        .filter_map(|m| {
            let (first, last) = parse_pair(&m.location, "segments/", ".jsonl")?;
            Some(SegmentName {
                first,
                last,
                path: m.location,
            })
        })
        .collect();
    out.sort_by_key(|s| (s.first, s.last));
    Ok(out)
}

/// One record line of a segment.
#[derive(Serialize, Deserialize)]
struct SegmentLine<'a> {
    seq: i64,
    at_ms: i64,
    kind: std::borrow::Cow<'a, str>,
    request_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    payload: &'a RawValue,
    crc: u32,
}

#[derive(Serialize, Deserialize)]
struct Trailer {
    segment: TrailerBody,
}

#[derive(Serialize, Deserialize)]
struct TrailerBody {
    first: i64,
    last: i64,
    count: u64,
    crc32c: u32,
}

/// Encodes records as a segment (record lines, then the trailer).
pub(crate) fn encode_segment(records: &[Record]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for r in records {
        let payload: Box<RawValue> = RawValue::from_string(r.payload.clone())?;
        serde_json::to_writer(
            &mut out,
            &SegmentLine {
                seq: r.seq,
                at_ms: r.at_ms,
                kind: r.kind.as_str().into(),
                request_id: r.request_id.as_str().into(),
                payload: &payload,
                crc: r.crc,
            },
        )?;
        out.push(b'\n');
    }
    let (first, last) = match (records.first(), records.last()) {
        (Some(f), Some(l)) => (f.seq, l.seq),
        _ => (0, 0),
    };
    let trailer = Trailer {
        segment: TrailerBody {
            first,
            last,
            count: records.len() as u64,
            crc32c: crc32c(&out),
        },
    };
    serde_json::to_writer(&mut out, &trailer)?;
    out.push(b'\n');
    Ok(out)
}

/// Decodes and checks a segment: trailer checksum and count, every record's checksum,
/// contiguous seqs from the trailer's `first` to `last`.
pub(crate) fn decode_segment(bytes: &[u8]) -> Result<Vec<Record>> {
    let body_end = bytes[..bytes.len().saturating_sub(1)]
        .iter()
        .rposition(|b| *b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let trailer: Trailer = serde_json::from_slice(&bytes[body_end..])
        .map_err(|e| JournalError::Corrupt(format!("segment trailer: {e}")))?;
    let body = &bytes[..body_end];
    if crc32c(body) != trailer.segment.crc32c {
        return Err(JournalError::Corrupt("segment checksum mismatch".into()));
    }
    let mut records = Vec::new();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let l: SegmentLine<'_> = serde_json::from_slice(line)?;
        let record = Record {
            seq: l.seq,
            at_ms: l.at_ms,
            kind: l.kind.into_owned(),
            request_id: l.request_id.into_owned(),
            payload: l.payload.get().to_string(),
            crc: l.crc,
        };
        if !record.checksum_ok() {
            return Err(JournalError::Corrupt(format!(
                "record {} fails its checksum",
                record.seq
            )));
        }
        let expected = trailer.segment.first + records.len() as i64;
        if record.seq != expected {
            return Err(JournalError::Corrupt(format!(
                "segment record {} where {expected} was expected",
                record.seq
            )));
        }
        records.push(record);
    }
    if records.len() as u64 != trailer.segment.count
        || records.last().map(|r| r.seq).unwrap_or(0) != trailer.segment.last
    {
        return Err(JournalError::Corrupt("segment is missing records".into()));
    }
    Ok(records)
}

/// What one backup run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupRun {
    pub snapshot: Option<String>,
    pub segments: Vec<String>,
    pub records_shipped: u64,
    pub deleted: Vec<String>,
    pub shipped_seq: i64,
}

/// Backup state for status pages and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct BackupStatus {
    pub target: String,
    pub shipped_seq: i64,
    /// Age of the oldest unshipped record (0: all shipped).
    pub rpo_exposure: Duration,
    pub last_success: Option<String>,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// Snapshots and ships one SQLite journal to one target.
pub struct Backup {
    target: BackupTarget,
    journal_path: PathBuf,
    cfg: BackupConfig,
    scrub_answers: bool,
    reader: tokio::sync::OnceCell<SqliteReader>,
    /// -1 until read back from the store.
    shipped_seq: AtomicI64,
    last_snapshot_ms: AtomicI64,
    last_success_ms: AtomicI64,
    failures: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
    clock: Clock,
}

impl Backup {
    pub fn new(journal: &JournalConfig, cfg: &BackupConfig) -> Result<Self> {
        if journal.backend != BackendKind::Sqlite {
            return Err(JournalError::Config(
                "backup: applies to the SQLite journal; back up PostgreSQL with its own tools (pg_basebackup, WAL archiving)".into(),
            ));
        }
        cfg.validate().map_err(JournalError::Config)?;
        Ok(Backup {
            target: BackupTarget::open(cfg)?,
            journal_path: journal.path.clone(),
            cfg: cfg.clone(),
            scrub_answers: journal.bodies != Bodies::Full,
            reader: tokio::sync::OnceCell::new(),
            shipped_seq: AtomicI64::new(-1),
            last_snapshot_ms: AtomicI64::new(-1),
            last_success_ms: AtomicI64::new(-1),
            failures: AtomicU64::new(0),
            last_error: std::sync::Mutex::new(None),
            clock: Clock::default(),
        })
    }

    pub fn target(&self) -> &BackupTarget {
        &self.target
    }

    async fn reader(&self) -> Result<&SqliteReader> {
        self.reader
            .get_or_try_init(|| async { SqliteReader::open(&self.journal_path) })
            .await
    }

    /// Snapshot if due, ship new records, apply retention after a snapshot.
    pub async fn run_once(&self) -> Result<BackupRun> {
        let result = self.run_once_inner().await;
        match &result {
            Ok(_) => self
                .last_success_ms
                .store(self.clock.now_ms(), Ordering::Relaxed),
            Err(err) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(err.to_string());
                }
            }
        }
        result
    }

    async fn run_once_inner(&self) -> Result<BackupRun> {
        let mut run = BackupRun::default();
        let shipped = self.shipped_seq().await?;
        let now = self.clock.now_ms();
        let last_snapshot = self.last_snapshot_ms.load(Ordering::Relaxed);
        let due =
            last_snapshot < 0 || now - last_snapshot >= duration_ms(self.cfg.snapshot_interval.0);
        let mut segments = Vec::new();
        let mut records = 0;
        if due {
            // Segments stay continuous across snapshots: a restore to a time before
            // this snapshot starts from an older one and replays segments, so the
            // records since the last segment must be in one, not only in the snapshot.
            if last_snapshot >= 0 {
                let (written, count) = self.ship().await?;
                segments.extend(written);
                records += count;
            }
            run.snapshot = Some(self.snapshot().await?.to_string());
            run.deleted = self.apply_retention(now).await?;
        }
        let (written, count) = self.ship().await?;
        segments.extend(written);
        run.segments = segments.iter().map(ToString::to_string).collect();
        run.records_shipped = records + count;
        run.shipped_seq = self.shipped_seq.load(Ordering::Relaxed).max(shipped);
        Ok(run)
    }

    /// The last seq in the store, read back once; checks the local journal continues it.
    async fn shipped_seq(&self) -> Result<i64> {
        let known = self.shipped_seq.load(Ordering::Relaxed);
        if known >= 0 {
            return Ok(known);
        }
        let store = self.target.store.as_ref();
        let snapshots = list_snapshots(store).await?;
        let segments = list_segments(store).await?;
        let from_snapshot = snapshots.last().map(|s| s.seq).unwrap_or(0);
        let from_segment = segments.last().map(|s| s.last);
        // Shipping resumes after the last segment, even when a snapshot is newer:
        // segments must run on unbroken (a point-in-time restore replays them from an
        // older snapshot), and the run that ships what a snapshot holds may not have
        // finished before the restart. Records shipped twice are harmless (restore
        // skips what it has). With no segment yet, the first snapshot is the start.
        let shipped = from_segment.unwrap_or(from_snapshot);
        let held = from_snapshot.max(from_segment.unwrap_or(0));
        if let Some(last) = snapshots.last() {
            self.last_snapshot_ms.store(last.at_ms, Ordering::Relaxed);
        }
        let reader = self.reader().await?;
        let (_, _, local_last) = reader.with(sqlite::record_span).await?;
        if held > local_last.unwrap_or(0) {
            return Err(JournalError::Invalid(format!(
                "{} holds records up to {held} but this journal ends at {}: it was restored to an earlier point or replaced; point backup.to at a new prefix",
                self.target.url,
                local_last.unwrap_or(0)
            )));
        }
        if let Some(seg) = segments.last().filter(|s| s.last == shipped && shipped > 0) {
            let bytes = store.get(&seg.path).await?.bytes().await?;
            let theirs = decode_segment(&bytes)?;
            let ours = reader
                .with(move |c| sqlite::records_after(c, shipped - 1, 1))
                .await?;
            if theirs.last() != ours.first() {
                return Err(JournalError::Invalid(format!(
                    "record {shipped} in {} differs from this journal's: shipping here would fork its history; point backup.to at a new prefix",
                    self.target.url
                )));
            }
        }
        self.shipped_seq.store(shipped, Ordering::Relaxed);
        Ok(shipped)
    }

    /// Takes and uploads a snapshot; returns its path in the store.
    pub async fn snapshot(&self) -> Result<ObjectPath> {
        self.shipped_seq().await?;
        let first = self.last_snapshot_ms.load(Ordering::Relaxed) < 0;
        let source = self.journal_path.clone();
        let tmp = temp_path(&self.journal_path);
        let scrub = self.scrub_answers;
        let tmp_for_copy = tmp.clone();
        let seq = tokio::task::spawn_blocking(move || copy_snapshot(&source, &tmp_for_copy, scrub))
            .await
            .map_err(JournalError::unavailable)?;
        let result = async {
            let seq = seq?;
            let now = self.clock.now_ms();
            let path = snapshot_path(seq, now);
            upload_file(self.target.store.clone(), &path, &tmp).await?;
            self.last_snapshot_ms.store(now, Ordering::Relaxed);
            // The first snapshot is where the segments start. After it, the records a
            // snapshot holds are shipped in segments too (the few written while it
            // was taken included), so that segments stay continuous.
            if first {
                self.shipped_seq.fetch_max(seq, Ordering::Relaxed);
            }
            Ok(path)
        }
        .await;
        let _ = tokio::fs::remove_file(&tmp).await;
        result
    }

    /// Ships every record after the shipped seq; returns the segments written and the
    /// number of records.
    pub async fn ship(&self) -> Result<(Vec<ObjectPath>, u64)> {
        let mut shipped = self.shipped_seq().await?;
        let reader = self.reader().await?;
        let mut written = Vec::new();
        let mut count = 0;
        loop {
            let after = shipped;
            let records = reader
                .with(move |c| sqlite::records_after(c, after, SEGMENT_RECORDS))
                .await?;
            let (Some(first), Some(last)) = (records.first(), records.last()) else {
                break;
            };
            if first.seq != shipped + 1 {
                return Err(JournalError::Corrupt(format!(
                    "the journal has no record {} (next is {}): cannot ship a gap",
                    shipped + 1,
                    first.seq
                )));
            }
            // Shipping a damaged record would make every restore past it fail: stop
            // here instead (the RPO exposure grows and alerts; `verify` says where).
            if let Some(bad) = records.iter().find(|r| !r.checksum_ok()) {
                return Err(JournalError::Corrupt(format!(
                    "record {} fails its checksum: not shipped (run `bulwark verify`)",
                    bad.seq
                )));
            }
            let path = segment_path(first.seq, last.seq);
            let bytes = encode_segment(&records)?;
            self.target
                .store
                .put(&path, PutPayload::from(Bytes::from(bytes)))
                .await?;
            shipped = last.seq;
            count += records.len() as u64;
            self.shipped_seq.store(shipped, Ordering::Relaxed);
            written.push(path);
        }
        Ok((written, count))
    }

    /// Deletes what retention no longer needs (see the module docs); returns the paths.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<Vec<String>> {
        let store = self.target.store.as_ref();
        let snapshots = list_snapshots(store).await?;
        let Some(newest) = snapshots.last() else {
            return Ok(Vec::new());
        };
        let cutoff = now_ms - duration_ms(self.cfg.retention.0);
        let base = snapshots.iter().rev().find(|s| s.at_ms < cutoff);
        let keep = |s: &SnapshotName| s.at_ms >= cutoff || Some(s) == base || s == newest;
        let oldest_kept = snapshots
            .iter()
            .filter(|s| keep(s))
            .map(|s| s.seq)
            .min()
            .unwrap_or(newest.seq);
        let mut deleted = Vec::new();
        for s in snapshots.iter().filter(|s| !keep(s)) {
            store.delete(&s.path).await?;
            deleted.push(s.path.to_string());
        }
        for seg in list_segments(store).await? {
            if seg.last <= oldest_kept {
                store.delete(&seg.path).await?;
                deleted.push(seg.path.to_string());
            }
        }
        Ok(deleted)
    }

    /// Age of the oldest record not yet shipped (0 when all are).
    pub async fn rpo_exposure(&self) -> Result<Duration> {
        let shipped = self.shipped_seq().await?;
        self.exposure_after(shipped).await
    }

    /// The age of the first record after `shipped` (0 when there is none).
    async fn exposure_after(&self, shipped: i64) -> Result<Duration> {
        let reader = self.reader().await?;
        let at = reader
            .with(move |c| sqlite::record_time(c, shipped + 1))
            .await?;
        Ok(match at {
            Some(at) => Duration::from_millis(u64::try_from(self.clock.now_ms() - at).unwrap_or(0)),
            None => Duration::ZERO,
        })
    }

    pub async fn status(&self) -> BackupStatus {
        let rpo = self.rpo_exposure().await;
        let last_success = self.last_success_ms.load(Ordering::Relaxed);
        // A store that cannot be read (not reachable, misconfigured) has confirmed
        // nothing beyond what this process shipped to it: everything after that is
        // exposed, from its oldest record on.
        let exposure = match &rpo {
            Ok(exposure) => *exposure,
            Err(_) => {
                let shipped = self.shipped_seq.load(Ordering::Relaxed).max(0);
                self.exposure_after(shipped).await.unwrap_or(Duration::ZERO)
            }
        };
        BackupStatus {
            target: self.target.url.clone(),
            shipped_seq: self.shipped_seq.load(Ordering::Relaxed),
            rpo_exposure: exposure,
            last_success: (last_success >= 0).then(|| rfc3339(last_success)),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: match rpo {
                Err(err) => Some(err.to_string()),
                Ok(_) => self.last_error.lock().ok().and_then(|e| e.clone()),
            },
        }
    }

    /// Runs `run_once` every `interval` until `shutdown` resolves, then ships once more.
    pub fn spawn<F>(self: Arc<Self>, shutdown: F) -> tokio::task::JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(self.cfg.interval.0);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {
                        if let Err(err) = self.run_once().await {
                            tracing::error!(error = %err, target = %self.target.url, "journal backup failed");
                        }
                    }
                    () = &mut shutdown => {
                        if let Err(err) = self.ship().await {
                            tracing::error!(error = %err, "final journal shipment failed");
                        }
                        return;
                    }
                }
            }
        })
    }
}

fn temp_path(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(format!(".snapshot-{}.tmp", uuid::Uuid::new_v4()));
    PathBuf::from(name)
}

/// Copies the journal with the online backup API; returns the last seq in the copy.
fn copy_snapshot(source: &Path, dest: &Path, scrub_answers: bool) -> Result<i64> {
    let src = sqlite::open_read(source)?;
    let mut dst = rusqlite::Connection::open(dest)?;
    {
        let backup = rusqlite::backup::Backup::new(&src, &mut dst)?;
        loop {
            // -1: every page in one step, so the copy is one consistent read.
            match backup.step(-1)? {
                rusqlite::backup::StepResult::Done => break,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    dst.pragma_update(None, "journal_mode", "DELETE")?;
    if scrub_answers {
        dst.execute("UPDATE idempotency SET answer = NULL", [])?;
        dst.execute_batch("VACUUM")?;
    }
    let seq: Option<i64> = dst.query_row("SELECT max(seq) FROM records", [], |r| r.get(0))?;
    Ok(seq.unwrap_or(0))
}

async fn upload_file(store: Arc<dyn ObjectStore>, path: &ObjectPath, file: &Path) -> Result<()> {
    let mut reader = tokio::fs::File::open(file).await?;
    let mut writer = object_store::buffered::BufWriter::new(store, path.clone());
    tokio::io::copy(&mut reader, &mut writer).await?;
    writer.shutdown().await?;
    Ok(())
}
