//! Restore a SQLite journal from a backup target, and verify a journal file.
//!
//! Restore to time T: the newest snapshot taken at or before T (the newest of all
//! without T) is downloaded beside the destination as `<to>.partial`, then the records
//! after its last seq are replayed from the segments, in order, up to the first record
//! after T (`at_ms` never decreases along `seq`, so that is a cut of the log). Each
//! segment is checked (trailer checksum, record checksums, contiguity) before any of
//! it is applied; replay uses the same `fold` as the live writer. The file is synced
//! and renamed into place only when complete, then verified. A gateway started on it
//! carries on from the next seq (ship its backups to a new prefix: see `backup`).
//!
//! Verify: `PRAGMA integrity_check`, every record's CRC-32C, seqs contiguous from 1,
//! and the index (`requests`) equal to the fold of the log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use object_store::ObjectStoreExt;
use rusqlite::{Connection, params};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::backup::{BackupTarget, decode_segment, list_segments, list_snapshots};
use crate::clock::{rfc3339, unix_ms};
use crate::error::{JournalError, Result};
use crate::record::{IndexUpdate, Record, Status, index_update_of};
use crate::sqlite;

/// At most this many problems are listed (all are counted).
const MAX_LISTED: usize = 100;

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub snapshot_seq: i64,
    pub segments_applied: usize,
    pub records_applied: u64,
    pub last_seq: i64,
    /// RFC 3339 time of the last restored record.
    pub last_record_at: Option<String>,
    pub elapsed: Duration,
    pub verify: VerifyReport,
}

/// Rebuilds a journal at `to` (which must not exist) from `target`, up to `at`. A
/// rebuilt journal that fails verification is not put at `to` but at
/// `<to>.unverified` (the report's `verify.path` says where).
pub async fn restore(
    target: &BackupTarget,
    to: &Path,
    at: Option<SystemTime>,
) -> Result<RestoreReport> {
    let started = Instant::now();
    if to.exists() {
        return Err(JournalError::Invalid(format!(
            "{} exists; restore writes a new file (move the old one away first)",
            to.display()
        )));
    }
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    let at_ms = at.map(unix_ms);
    let store = target.store.as_ref();
    let snapshots = list_snapshots(store).await?;
    let Some(snapshot) = snapshots
        .iter()
        .rev()
        .find(|s| at_ms.is_none_or(|at| s.at_ms <= at))
        .cloned()
    else {
        return Err(JournalError::Invalid(match at {
            Some(at) => format!(
                "no snapshot in {} was taken at or before {}",
                target.url,
                rfc3339(unix_ms(at))
            ),
            None => format!("no snapshot in {}", target.url),
        }));
    };
    let partial = with_suffix(to, ".partial");
    let _ = tokio::fs::remove_file(&partial).await;
    let result = async {
        download(target, &snapshot.path, &partial).await?;
        let base = partial.clone();
        let snapshot_seq = tokio::task::spawn_blocking(move || snapshot_last_seq(&base))
            .await
            .map_err(JournalError::unavailable)??;
        let mut segments = Vec::new();
        for seg in list_segments(store).await? {
            if seg.last <= snapshot_seq {
                continue;
            }
            let bytes = store.get(&seg.path).await?.bytes().await?;
            let records = decode_segment(&bytes)
                .map_err(|e| JournalError::Corrupt(format!("{}: {e}", seg.path)))?;
            let past_at = at_ms.is_some_and(|at| records.last().is_some_and(|r| r.at_ms > at));
            segments.push(records);
            if past_at {
                break;
            }
        }
        let file = partial.clone();
        let applied =
            tokio::task::spawn_blocking(move || replay(&file, snapshot_seq, segments, at_ms))
                .await
                .map_err(JournalError::unavailable)??;
        Ok::<_, JournalError>((snapshot_seq, applied))
    }
    .await;
    let (snapshot_seq, (segments_applied, records_applied, last_seq, last_at)) = match result {
        Ok(done) => done,
        Err(err) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(err);
        }
    };
    // Verified before it takes the name a gateway would be started on: a journal
    // that fails (a record whose checksum does not match) is left beside it as
    // `.unverified`, for inspection, and nothing is written at `to`.
    let verify = verify(&partial).await?;
    let kept = if verify.ok {
        to.to_path_buf()
    } else {
        with_suffix(to, ".unverified")
    };
    tokio::fs::rename(&partial, &kept).await?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    let verify = VerifyReport {
        path: kept.display().to_string(),
        ..verify
    };
    Ok(RestoreReport {
        snapshot: snapshot.path.to_string(),
        snapshot_seq,
        segments_applied,
        records_applied,
        last_seq,
        last_record_at: last_at.map(rfc3339),
        elapsed: started.elapsed(),
        verify,
    })
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

async fn download(target: &BackupTarget, from: &object_store::path::Path, to: &Path) -> Result<()> {
    let mut stream = target.store.get(from).await?.into_stream();
    let mut file = tokio::fs::File::create(to).await?;
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk?).await?;
    }
    file.sync_all().await?;
    Ok(())
}

fn snapshot_last_seq(path: &Path) -> Result<i64> {
    let conn = Connection::open(path)?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(JournalError::Corrupt(format!(
            "snapshot fails its quick check: {check}"
        )));
    }
    let seq: Option<i64> = conn.query_row("SELECT max(seq) FROM records", [], |r| r.get(0))?;
    Ok(seq.unwrap_or(0))
}

/// Applies segment records after `after` (up to `at_ms`); returns
/// `(segments used, records applied, last seq, last record time)`.
fn replay(
    path: &Path,
    after: i64,
    segments: Vec<Vec<Record>>,
    at_ms: Option<i64>,
) -> Result<(usize, u64, i64, Option<i64>)> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    sqlite::migrate(&mut conn)?;
    let mut last = after;
    let mut last_at = conn.query_row("SELECT max(at_ms) FROM records", [], |r| {
        r.get::<_, Option<i64>>(0)
    })?;
    let mut used = 0;
    let mut applied = 0;
    'segments: for records in segments {
        let tx = conn.transaction()?;
        let mut any = false;
        for record in records {
            if record.seq <= last {
                continue;
            }
            if at_ms.is_some_and(|at| record.at_ms > at) {
                tx.commit()?;
                used += usize::from(any);
                break 'segments;
            }
            if record.seq != last + 1 {
                return Err(JournalError::Corrupt(format!(
                    "the backup has no record {} (next is {}): cannot restore past a gap",
                    last + 1,
                    record.seq
                )));
            }
            let update = index_update_of(&record)?;
            sqlite::append(&tx, &record)?;
            sqlite::fold(&tx, &record, &update)?;
            last = record.seq;
            last_at = Some(record.at_ms);
            applied += 1;
            any = true;
        }
        tx.commit()?;
        used += usize::from(any);
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    drop(conn);
    std::fs::File::open(path)?.sync_all()?;
    Ok((used, applied, last, last_at))
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub path: String,
    pub ok: bool,
    pub integrity_check: String,
    pub records: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub requests: u64,
    pub problem_count: u64,
    /// The first problems found (checksums, gaps, index mismatches).
    pub problems: Vec<String>,
}

impl VerifyReport {
    fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(text);
        }
    }
}

/// Checks a journal file (see the module docs). Problems are reported, not raised.
pub async fn verify(path: &Path) -> Result<VerifyReport> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || verify_blocking(&path))
        .await
        .map_err(JournalError::unavailable)?
}

#[derive(Debug, PartialEq)]
struct Folded {
    status: Status,
    begin_seq: i64,
    last_seq: i64,
    attempts: u32,
}

fn verify_blocking(path: &Path) -> Result<VerifyReport> {
    let conn = sqlite::open_read(path)?;
    let mut report = VerifyReport {
        path: path.display().to_string(),
        ..VerifyReport::default()
    };
    let checks: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    report.integrity_check = checks.join("; ");
    if report.integrity_check != "ok" {
        report.problem(format!("integrity_check: {}", report.integrity_check));
    }
    let mut folded: HashMap<String, Folded> = HashMap::new();
    let mut expected = 1;
    let mut stmt = conn
        .prepare("SELECT seq, at_ms, kind, request_id, payload, crc FROM records ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let record = sqlite::record_row(row)?;
        report.records += 1;
        report.first_seq.get_or_insert(record.seq);
        report.last_seq = Some(record.seq);
        if record.seq != expected {
            report.problem(format!(
                "records {expected}..{} are missing",
                record.seq - 1
            ));
        }
        expected = record.seq + 1;
        if !record.checksum_ok() {
            report.problem(format!(
                "record {} ({} of {}) fails its checksum",
                record.seq, record.kind, record.request_id
            ));
            continue;
        }
        match index_update_of(&record) {
            Ok(update) => fold_in_memory(&mut folded, &record, &update),
            Err(err) => report.problem(format!("record {}: {err}", record.seq)),
        }
    }
    drop(rows);
    let mut stmt =
        conn.prepare("SELECT id, status, begin_seq, last_seq, attempts FROM requests")?;
    let mut rows = stmt.query(params![])?;
    while let Some(row) = rows.next()? {
        report.requests += 1;
        let id: String = row.get(0)?;
        let status: String = row.get(1)?;
        let indexed = Folded {
            status: Status::parse(&status).unwrap_or(Status::InFlight),
            begin_seq: row.get(2)?,
            last_seq: row.get(3)?,
            attempts: row.get(4)?,
        };
        match folded.remove(&id) {
            Some(from_log) if from_log == indexed => {}
            Some(from_log) => report.problem(format!(
                "request {id}: index says {indexed:?}, the log says {from_log:?}"
            )),
            None => report.problem(format!("request {id} is indexed but has no begin record")),
        }
    }
    for id in folded.keys().take(MAX_LISTED) {
        report.problem(format!("request {id} has records but no index row"));
    }
    report.ok = report.problem_count == 0;
    Ok(report)
}

/// The same fold as `sqlite::fold`, over the `requests` columns verify compares.
fn fold_in_memory(index: &mut HashMap<String, Folded>, r: &Record, update: &IndexUpdate) {
    match update {
        IndexUpdate::Begin { .. } => {
            index.entry(r.request_id.clone()).or_insert(Folded {
                status: Status::InFlight,
                begin_seq: r.seq,
                last_seq: r.seq,
                attempts: 0,
            });
        }
        IndexUpdate::Attempt { n } => {
            if let Some(f) = index.get_mut(&r.request_id) {
                f.attempts = f.attempts.max(*n);
                f.last_seq = f.last_seq.max(r.seq);
            }
        }
        IndexUpdate::Complete { status, .. } => {
            if let Some(f) = index
                .get_mut(&r.request_id)
                .filter(|f| f.status == Status::InFlight)
            {
                f.status = *status;
                f.last_seq = f.last_seq.max(r.seq);
            }
        }
        IndexUpdate::Interrupt => {
            if let Some(f) = index
                .get_mut(&r.request_id)
                .filter(|f| f.status == Status::InFlight)
            {
                f.status = Status::Interrupted;
                f.last_seq = f.last_seq.max(r.seq);
            }
        }
    }
}
