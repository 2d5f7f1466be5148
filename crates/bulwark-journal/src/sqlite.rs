//! The SQLite backend: schema and migrations, the writer's batch commit (append
//! records + fold the index in one transaction), recovery, and the read queries.
//!
//! Connections: the writer owns one (moved into `spawn_blocking` for each batch, so
//! only one batch is ever in flight); readers share one more behind a mutex (WAL lets
//! them read while the writer commits). A process holds `<path>.lock` exclusively
//! while it writes, so two gateways cannot interleave sequence numbers in one file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use crate::error::{JournalError, Result};
use crate::query::{ExportFilter, RequestSummary};
use crate::record::{IndexUpdate, PendingRecord, Record, Status};

/// Schema versions, applied in order; `PRAGMA user_version` says how many ran.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE records (
    seq        INTEGER PRIMARY KEY,
    at_ms      INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    crc        INTEGER NOT NULL
) STRICT;
CREATE INDEX records_by_request ON records (request_id, seq);
CREATE TABLE requests (
    id              TEXT PRIMARY KEY,
    begin_seq       INTEGER NOT NULL,
    last_seq        INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    received_at     INTEGER NOT NULL,
    finished_at     INTEGER,
    route           TEXT    NOT NULL,
    stream          INTEGER NOT NULL,
    provider        TEXT,
    model           TEXT,
    attempts        INTEGER NOT NULL,
    idempotency_key TEXT,
    node            TEXT    NOT NULL
) STRICT;
CREATE INDEX requests_by_status ON requests (status, received_at);
CREATE INDEX requests_by_time ON requests (received_at, id);
CREATE TABLE idempotency (
    key        TEXT PRIMARY KEY,
    body_hash  TEXT    NOT NULL,
    request_id TEXT,
    state      TEXT    NOT NULL,
    answer     TEXT,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX idempotency_by_request ON idempotency (request_id);
CREATE INDEX idempotency_by_time ON idempotency (created_at);
"#];

/// Opens (creating when missing) a journal file for writing and migrates it.
pub(crate) fn open_write(path: &Path) -> Result<(Connection, File)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(path))?;
    if let Err(err) = lock.try_lock() {
        return Err(JournalError::Invalid(format!(
            "{} is in use by another Bulwark process ({err})",
            path.display()
        )));
    }
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL in both sync and batched mode: see the crate docs (durability table).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    migrate(&mut conn)?;
    Ok((conn, lock))
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let done = usize::try_from(version).unwrap_or(usize::MAX);
    if done > MIGRATIONS.len() {
        return Err(JournalError::Invalid(format!(
            "journal schema version {version} is newer than this Bulwark understands ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if i == 0 {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('journal_id', ?1)",
                params![uuid::Uuid::new_v4().to_string()],
            )?;
        }
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// Opens an existing journal for reading only (CLI, readers, verify, backup).
pub(crate) fn open_read(path: &Path) -> Result<Connection> {
    if !path.exists() {
        return Err(JournalError::Invalid(format!(
            "no journal at {}",
            path.display()
        )));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// The writer's half: the connection, the lock, and the next sequence number.
pub(crate) struct SqliteWriter {
    conn: Connection,
    _lock: File,
    next_seq: i64,
    last_at: i64,
    last_purge_ms: i64,
    idempotency_ttl_ms: i64,
}

impl SqliteWriter {
    pub(crate) fn new(conn: Connection, lock: File, idempotency_ttl_ms: i64) -> Result<Self> {
        let (last_seq, last_at): (Option<i64>, Option<i64>) =
            conn.query_row("SELECT max(seq), max(at_ms) FROM records", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok(SqliteWriter {
            conn,
            _lock: lock,
            next_seq: last_seq.unwrap_or(0) + 1,
            last_at: last_at.unwrap_or(0),
            last_purge_ms: 0,
            idempotency_ttl_ms,
        })
    }

    /// Ids of requests left `in_flight` (recovery turns them into `interrupt` records).
    pub(crate) fn in_flight_ids(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM requests WHERE status = 'in_flight' ORDER BY begin_seq")?;
        let ids = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids)
    }

    /// Appends a batch in one transaction (one fsync). On error nothing was written
    /// and the sequence numbers are given back.
    pub(crate) fn commit(&mut self, batch: &[PendingRecord], now_ms: i64) -> Result<(i64, i64)> {
        let at_ms = now_ms.max(self.last_at);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut seq = self.next_seq;
        for pending in batch {
            let record = pending.seal(seq, at_ms);
            append(&tx, &record)?;
            fold(&tx, &record, &pending.index)?;
            seq += 1;
        }
        if now_ms - self.last_purge_ms > 60_000 {
            tx.execute(
                "DELETE FROM idempotency WHERE created_at < ?1",
                params![now_ms - self.idempotency_ttl_ms],
            )?;
        }
        tx.commit()?;
        if now_ms - self.last_purge_ms > 60_000 {
            self.last_purge_ms = now_ms;
        }
        let first = self.next_seq;
        self.next_seq = seq;
        self.last_at = at_ms;
        Ok((first, seq - 1))
    }
}

pub(crate) fn append(tx: &Transaction<'_>, r: &Record) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO records (seq, at_ms, kind, request_id, payload, crc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![r.seq, r.at_ms, r.kind, r.request_id, r.payload, r.crc])?;
    Ok(())
}

/// Applies one record's index change. The same function serves live writes and
/// restore, so the index is always a function of the log (`verify` checks it).
pub(crate) fn fold(tx: &Transaction<'_>, r: &Record, update: &IndexUpdate) -> Result<()> {
    match update {
        IndexUpdate::Begin {
            received_at,
            route,
            stream,
            idempotency_key,
            body_hash,
            node,
        } => {
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO requests (id, begin_seq, last_seq, status, received_at, route, stream, attempts, idempotency_key, node)
                     VALUES (?1, ?2, ?2, 'in_flight', ?3, ?4, ?5, 0, ?6, ?7) ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![r.request_id, r.seq, received_at, route, stream, idempotency_key, node])?;
            if let (1, Some(key)) = (inserted, idempotency_key) {
                tx.prepare_cached(
                    "INSERT INTO idempotency (key, body_hash, request_id, state, answer, created_at)
                     VALUES (?1, ?2, ?3, 'in_flight', NULL, ?4)
                     ON CONFLICT (key) DO UPDATE SET body_hash = excluded.body_hash,
                       request_id = excluded.request_id, state = 'in_flight', answer = NULL,
                       created_at = excluded.created_at",
                )?
                .execute(params![key, body_hash.as_deref().unwrap_or(""), r.request_id, received_at])?;
            }
        }
        IndexUpdate::Attempt { n } => {
            tx.prepare_cached(
                "UPDATE requests SET attempts = max(attempts, ?2), last_seq = max(last_seq, ?3) WHERE id = ?1",
            )?
            .execute(params![r.request_id, n, r.seq])?;
        }
        IndexUpdate::Complete {
            status,
            provider,
            model,
            answer,
        } => {
            let changed = tx
                .prepare_cached(
                    "UPDATE requests SET status = ?2, finished_at = ?3, provider = ?4, model = ?5,
                       last_seq = max(last_seq, ?6) WHERE id = ?1 AND status = 'in_flight'",
                )?
                .execute(params![
                    r.request_id,
                    status.as_str(),
                    r.at_ms,
                    provider,
                    model,
                    r.seq
                ])?;
            if changed == 1 {
                tx.prepare_cached(
                    "UPDATE idempotency SET state = ?2, answer = ?3 WHERE request_id = ?1 AND state = 'in_flight'",
                )?
                .execute(params![r.request_id, status.as_str(), answer])?;
            }
        }
        IndexUpdate::Interrupt => {
            let changed = tx
                .prepare_cached(
                    "UPDATE requests SET status = 'interrupted', finished_at = ?2, last_seq = max(last_seq, ?3)
                     WHERE id = ?1 AND status = 'in_flight'",
                )?
                .execute(params![r.request_id, r.at_ms, r.seq])?;
            if changed == 1 {
                tx.prepare_cached(
                    "UPDATE idempotency SET state = 'interrupted' WHERE request_id = ?1 AND state = 'in_flight'",
                )?
                .execute(params![r.request_id])?;
            }
        }
    }
    Ok(())
}

/// What the idempotency table says about a key.
#[derive(Debug, Clone)]
pub(crate) struct IdemRow {
    pub body_hash: String,
    pub state: String,
    pub answer: Option<String>,
    pub created_at: i64,
}

/// The readers' shared connection.
#[derive(Clone)]
pub(crate) struct SqliteReader {
    conn: Arc<Mutex<Connection>>,
    pub(crate) path: PathBuf,
}

impl SqliteReader {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        Ok(SqliteReader {
            conn: Arc::new(Mutex::new(open_read(path)?)),
            path: path.to_path_buf(),
        })
    }

    /// Runs `f` on the connection in the blocking pool.
    pub(crate) async fn with<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn
                .lock()
                .map_err(|_| JournalError::Invalid("journal reader poisoned".into()))?;
            f(&guard)
        })
        .await
        .map_err(JournalError::unavailable)?
    }

    pub(crate) async fn idempotency(&self, key: &str) -> Result<Option<IdemRow>> {
        let key = key.to_string();
        self.with(move |c| {
            Ok(c.prepare_cached(
                "SELECT body_hash, state, answer, created_at FROM idempotency WHERE key = ?1",
            )?
            .query_row(params![key], |r| {
                Ok(IdemRow {
                    body_hash: r.get(0)?,
                    state: r.get(1)?,
                    answer: r.get(2)?,
                    created_at: r.get(3)?,
                })
            })
            .optional()?)
        })
        .await
    }
}

const SUMMARY_COLUMNS: &str = "id, status, received_at, finished_at, route, stream, provider, model, attempts, begin_seq, last_seq, idempotency_key";

fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RequestSummary> {
    let status: String = r.get(1)?;
    Ok(RequestSummary {
        id: r.get(0)?,
        status: Status::parse(&status).unwrap_or(Status::InFlight),
        received_at: r.get(2)?,
        finished_at: r.get(3)?,
        route: r.get(4)?,
        stream: r.get(5)?,
        provider: r.get(6)?,
        model: r.get(7)?,
        attempts: r.get(8)?,
        begin_seq: r.get(9)?,
        last_seq: r.get(10)?,
        idempotency_key: r.get(11)?,
    })
}

/// One page of requests in `(received_at, id)` order after `after`, matching `filter`.
pub(crate) fn requests_page(
    c: &Connection,
    filter: &ExportFilter,
    after: Option<&(i64, String)>,
    limit: usize,
) -> Result<Vec<RequestSummary>> {
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM requests
         WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR received_at >= ?2)
           AND (?3 IS NULL OR received_at > ?3 OR (received_at = ?3 AND id > ?4))
         ORDER BY received_at, id LIMIT ?5"
    );
    let (after_at, after_id) = match after {
        Some((at, id)) => (Some(*at), id.as_str()),
        None => (None, ""),
    };
    let rows = c
        .prepare_cached(&sql)?
        .query_map(
            params![
                filter.status.map(Status::as_str),
                filter.since_ms(),
                after_at,
                after_id,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            summary_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// All records of one request, in order.
pub(crate) fn records_of(c: &Connection, request_id: &str) -> Result<Vec<Record>> {
    let rows = c
        .prepare_cached(
            "SELECT seq, at_ms, kind, request_id, payload, crc FROM records WHERE request_id = ?1 ORDER BY seq",
        )?
        .query_map(params![request_id], record_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Records with `seq > after`, in order, at most `limit`.
pub(crate) fn records_after(c: &Connection, after: i64, limit: usize) -> Result<Vec<Record>> {
    let rows = c
        .prepare_cached(
            "SELECT seq, at_ms, kind, request_id, payload, crc FROM records WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?
        .query_map(
            params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
            record_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub(crate) fn record_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        seq: r.get(0)?,
        at_ms: r.get(1)?,
        kind: r.get(2)?,
        request_id: r.get(3)?,
        payload: r.get(4)?,
        crc: r.get(5)?,
    })
}

/// `(count, first seq, last seq)` of the records table.
pub(crate) fn record_span(c: &Connection) -> Result<(i64, Option<i64>, Option<i64>)> {
    Ok(c.query_row(
        "SELECT count(*), min(seq), max(seq) FROM records",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?)
}

/// `at_ms` of one record.
pub(crate) fn record_time(c: &Connection, seq: i64) -> Result<Option<i64>> {
    Ok(c.query_row(
        "SELECT at_ms FROM records WHERE seq = ?1",
        params![seq],
        |r| r.get(0),
    )
    .optional()?)
}

/// `(count per status, oldest received_at, newest received_at)`.
pub(crate) type StatusCounts = (Vec<(String, u64)>, Option<i64>, Option<i64>);

/// Counts by status, oldest and newest `received_at`.
pub(crate) fn status_counts(c: &Connection) -> Result<StatusCounts> {
    let counts = c
        .prepare("SELECT status, count(*) FROM requests GROUP BY status ORDER BY status")?
        .query_map([], |r| {
            let n: i64 = r.get(1)?;
            Ok((r.get::<_, String>(0)?, u64::try_from(n).unwrap_or(0)))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let (oldest, newest) = c.query_row(
        "SELECT min(received_at), max(received_at) FROM requests",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((counts, oldest, newest))
}

/// The journal file plus its WAL, in bytes.
pub(crate) fn size_on_disk(path: &Path) -> u64 {
    let wal = {
        let mut name = path.as_os_str().to_owned();
        name.push("-wal");
        PathBuf::from(name)
    };
    [path.to_path_buf(), wal]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

pub(crate) fn list(
    c: &Connection,
    status: Option<Status>,
    limit: usize,
) -> Result<Vec<RequestSummary>> {
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM requests WHERE (?1 IS NULL OR status = ?1)
         ORDER BY received_at DESC, id DESC LIMIT ?2"
    );
    let rows = c
        .prepare_cached(&sql)?
        .query_map(
            params![
                status.map(Status::as_str),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            summary_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
