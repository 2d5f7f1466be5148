//! The `Journal` handle the server holds: open + recovery, the three write calls
//! (`begin`, `record_attempt`, `complete`), queries, and health.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::clock::{Clock, duration_ms, unix_ms};
use crate::config::{BackendKind, Durability, JournalConfig};
use crate::error::{JournalError, Result};
use crate::idempotency::Pending;
use crate::privacy::filter_body;
use crate::query::{ExportFilter, RequestSummary, Stats, export_line};
use crate::record::{
    AttemptPayload, BeginPayload, CompletePayload, IndexUpdate, InterruptPayload, PendingRecord,
    RecordKind, Status,
};
use crate::store::{Reader, WriterStore};
use crate::types::{AttemptRecord, NewRequest, Outcome, OutcomeStatus, StoredAnswer};
use crate::writer::{self, Command, HealthState, Release, WriteOp, WriterContext};
use crate::{postgres, sqlite};

/// The journal. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("backend", &self.inner.cfg.backend)
            .field("durability", &self.inner.cfg.durability)
            .finish_non_exhaustive()
    }
}

struct Inner {
    cfg: JournalConfig,
    node: String,
    tx: Option<mpsc::Sender<Command>>,
    reader: Option<Reader>,
    pending: Arc<Pending>,
    health: Arc<HealthState>,
    clock: Clock,
}

/// What `open` found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Recovery {
    /// Requests left `in_flight` by a previous run, now `interrupted`.
    pub interrupted: u64,
    /// Their ids (at most the first 1000).
    pub interrupted_ids: Vec<String>,
    /// The last sequence number in the journal after recovery.
    pub last_seq: i64,
    /// False with `durability: off`.
    pub idempotency_enabled: bool,
}

/// Health of the write path, for metrics, `/status` and alerts.
#[derive(Debug, Clone, Serialize)]
pub struct JournalHealth {
    pub durability: Durability,
    /// The recovery point the mode promises (0 sync, flush interval batched; None off).
    pub rpo_bound: Option<Duration>,
    /// Batches whose commit failed, since start (alert on increase).
    pub write_failures: u64,
    /// The latest commit failed (cleared by the next success).
    pub failing: bool,
    pub last_error: Option<String>,
    pub last_seq: i64,
    pub commits: u64,
    pub records_written: u64,
    /// Attempt records dropped because the queue was full.
    pub dropped_attempts: u64,
    /// Commands waiting for the writer.
    pub queue_depth: usize,
}

impl Journal {
    /// Opens (creating when missing) the journal, marks what a previous run left
    /// `in_flight` as `interrupted`, and starts the writer.
    pub async fn open(cfg: &JournalConfig) -> Result<(Journal, Recovery)> {
        Self::open_with_clock(cfg, Clock::default()).await
    }

    pub(crate) async fn open_with_clock(
        cfg: &JournalConfig,
        clock: Clock,
    ) -> Result<(Journal, Recovery)> {
        cfg.validate().map_err(JournalError::Config)?;
        let node = cfg.node();
        let health = Arc::new(HealthState::default());
        let pending = Arc::new(Pending::default());
        if cfg.durability == Durability::Off {
            let inner = Inner {
                cfg: cfg.clone(),
                node,
                tx: None,
                reader: None,
                pending,
                health,
                clock,
            };
            return Ok((
                Journal {
                    inner: Arc::new(inner),
                },
                Recovery::default(),
            ));
        }
        let ttl_ms = duration_ms(cfg.idempotency_ttl.0);
        let (mut store, reader, stale) = match cfg.backend {
            BackendKind::Sqlite => {
                let path = cfg.path.clone();
                let (writer, stale) = tokio::task::spawn_blocking(move || {
                    let (conn, lock) = sqlite::open_write(&path)?;
                    let writer = sqlite::SqliteWriter::new(conn, lock, ttl_ms)?;
                    let stale = writer.in_flight_ids()?;
                    Ok::<_, JournalError>((writer, stale))
                })
                .await
                .map_err(JournalError::unavailable)??;
                let reader = sqlite::SqliteReader::open(&cfg.path)?;
                (
                    WriterStore::Sqlite(Some(Box::new(writer))),
                    Reader::Sqlite(reader),
                    stale,
                )
            }
            BackendKind::Postgres => {
                let url = cfg
                    .url
                    .as_ref()
                    .ok_or_else(|| JournalError::Config("journal.url is required".into()))?;
                let (writer, reader) = postgres::open(url.expose(), &node).await?;
                let stale = writer.in_flight_ids(&node).await?;
                (
                    WriterStore::Postgres(Box::new(writer)),
                    Reader::Postgres(reader),
                    stale,
                )
            }
        };
        // Recovery: one interrupt record per request a previous run left open.
        let mut last_seq = 0;
        let interrupts: Vec<PendingRecord> = stale
            .iter()
            .map(|id| {
                let payload = serde_json::to_string(&InterruptPayload {
                    reason: "recovery".into(),
                    node: node.clone(),
                })?;
                Ok(PendingRecord {
                    kind: RecordKind::Interrupt,
                    request_id: id.clone(),
                    payload,
                    index: IndexUpdate::Interrupt,
                })
            })
            .collect::<Result<_>>()?;
        for chunk in interrupts.chunks(writer::MAX_BATCH) {
            let (_, result) = store.commit(chunk.to_vec(), clock.now_ms()).await;
            last_seq = result?.1;
        }
        if last_seq == 0 {
            let (_, result) = store.commit(Vec::new(), clock.now_ms()).await;
            last_seq = result?.1;
        }
        health.last_seq.store(last_seq, Ordering::Relaxed);
        let recovery = Recovery {
            interrupted: stale.len() as u64,
            interrupted_ids: stale.into_iter().take(1000).collect(),
            last_seq,
            idempotency_enabled: true,
        };
        if recovery.interrupted > 0 {
            tracing::warn!(
                count = recovery.interrupted,
                "journal recovery: requests left in flight by the previous run are now interrupted"
            );
        }
        let (tx, rx) = mpsc::channel(writer::QUEUE_CAPACITY);
        let ctx = WriterContext {
            durability: cfg.durability,
            flush_interval: cfg.flush_interval.0,
            pending: pending.clone(),
            health: health.clone(),
            clock: clock.clone(),
        };
        tokio::spawn(writer::run(rx, store, ctx));
        let inner = Inner {
            cfg: cfg.clone(),
            node,
            tx: Some(tx),
            reader: Some(reader),
            pending,
            health,
            clock,
        };
        Ok((
            Journal {
                inner: Arc::new(inner),
            },
            recovery,
        ))
    }

    /// Opens an existing journal for queries only (the CLI, while a gateway holds it):
    /// no writer, no recovery; writes fail.
    pub async fn open_read_only(cfg: &JournalConfig) -> Result<Journal> {
        cfg.validate().map_err(JournalError::Config)?;
        let node = cfg.node();
        let reader = match (cfg.durability, cfg.backend) {
            (Durability::Off, _) => None,
            (_, BackendKind::Sqlite) => {
                Some(Reader::Sqlite(sqlite::SqliteReader::open(&cfg.path)?))
            }
            (_, BackendKind::Postgres) => {
                let url = cfg
                    .url
                    .as_ref()
                    .ok_or_else(|| JournalError::Config("journal.url is required".into()))?;
                Some(Reader::Postgres(postgres::open_reader(
                    url.expose(),
                    &node,
                )?))
            }
        };
        let inner = Inner {
            cfg: cfg.clone(),
            node,
            tx: None,
            reader,
            pending: Arc::new(Pending::default()),
            health: Arc::new(HealthState::default()),
            clock: Clock::default(),
        };
        Ok(Journal {
            inner: Arc::new(inner),
        })
    }

    fn no_writer(&self) -> Result<()> {
        match self.inner.cfg.durability {
            Durability::Off => Ok(()),
            _ => Err(JournalError::Unavailable(
                "this journal handle is read-only".into(),
            )),
        }
    }

    /// Records an accepted request, before any provider is called. With `sync`
    /// durability it returns after the commit that holds it; an error means the
    /// request must not run (answer 503: [`JournalError::to_gateway_error`]).
    pub async fn begin(&self, req: NewRequest) -> Result<()> {
        let Some(tx) = &self.inner.tx else {
            return self.no_writer();
        };
        let bodies = self.inner.cfg.bodies;
        let key = req.idempotency_key.clone();
        let received_at = unix_ms(req.received_at);
        let payload = BeginPayload {
            received_at,
            caller_request_id: req.caller_request_id,
            drill: req.drill,
            caller_key_id: req.caller_key_id,
            ingress: req.ingress,
            route: req.route.clone(),
            stream: req.stream,
            idempotency_key: key.clone(),
            body_hash: req.body_hash.clone(),
            node: self.inner.node.clone(),
            bodies: bodies.as_str().to_string(),
            request: filter_body(bodies, req.request_body),
        };
        let record = PendingRecord {
            kind: RecordKind::Begin,
            request_id: req.id.clone(),
            payload: serde_json::to_string(&payload)?,
            index: IndexUpdate::Begin {
                received_at,
                route: req.route,
                stream: req.stream,
                idempotency_key: key.clone(),
                body_hash: req.body_hash,
                node: self.inner.node.clone(),
            },
        };
        let release = key.map(|key| {
            self.inner.pending.attach(&key, &req.id);
            Release {
                key,
                request_id: req.id.clone(),
                on_success: false,
            }
        });
        self.submit(tx, record, release).await
    }

    /// Records one upstream attempt. Never waits: queued, or dropped (and counted in
    /// [`JournalHealth::dropped_attempts`]) when the queue is full.
    pub fn record_attempt(&self, attempt: AttemptRecord) {
        let Some(tx) = &self.inner.tx else { return };
        let payload = AttemptPayload {
            n: attempt.n,
            provider: attempt.provider,
            model: attempt.model,
            started_at: unix_ms(attempt.started_at),
            first_byte_at: attempt.first_byte_at.map(unix_ms),
            ended_at: attempt.ended_at.map(unix_ms),
            outcome_class: attempt.outcome_class,
            status: attempt.status,
            error: attempt.error,
        };
        let Ok(payload) = serde_json::to_string(&payload) else {
            return;
        };
        let op = WriteOp {
            record: PendingRecord {
                kind: RecordKind::Attempt,
                request_id: attempt.request_id,
                payload,
                index: IndexUpdate::Attempt { n: attempt.n },
            },
            ack: None,
            release: None,
        };
        if tx.try_send(Command::Write(Box::new(op))).is_err() {
            self.inner
                .health
                .dropped_attempts
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records how a request ended. With `sync` durability it returns after the
    /// commit (release the answer, or a stream's final event, only then: RPO 0); with
    /// `batched`, after enqueue.
    pub async fn complete(&self, id: &str, outcome: Outcome) -> Result<()> {
        let Some(tx) = &self.inner.tx else {
            return self.no_writer();
        };
        let bodies = self.inner.cfg.bodies;
        let key = self.inner.pending.key_of(id);
        let status = match outcome.status {
            OutcomeStatus::Completed => Status::Completed,
            OutcomeStatus::Failed => Status::Failed,
        };
        // The replayable answer is kept whole whatever `bodies` says (see crate docs).
        let answer = match (&key, &outcome.response, status) {
            (Some(_), Some(response), Status::Completed) => {
                Some(serde_json::to_string(&StoredAnswer {
                    request_id: id.to_string(),
                    provider: outcome.provider.clone(),
                    model: outcome.model.clone(),
                    response: response.clone(),
                    usage: outcome.usage,
                    completed_at: self.inner.clock.now_ms(),
                })?)
            }
            _ => None,
        };
        let response = match outcome.response {
            Some(r) => filter_body(bodies, serde_json::to_value(r)?),
            None => serde_json::Value::Null,
        };
        let payload = CompletePayload {
            status,
            provider: outcome.provider.clone(),
            model: outcome.model.clone(),
            response,
            usage: outcome.usage,
            error: outcome.error,
            attempts: outcome.attempts,
        };
        let record = PendingRecord {
            kind: RecordKind::Complete,
            request_id: id.to_string(),
            payload: serde_json::to_string(&payload)?,
            index: IndexUpdate::Complete {
                status,
                provider: outcome.provider,
                model: outcome.model,
                answer,
            },
        };
        let release = key.map(|key| Release {
            key,
            request_id: id.to_string(),
            on_success: true,
        });
        self.submit(tx, record, release).await
    }

    async fn submit(
        &self,
        tx: &mpsc::Sender<Command>,
        record: PendingRecord,
        release: Option<Release>,
    ) -> Result<()> {
        let sync = self.inner.cfg.durability == Durability::Sync;
        let (ack, done) = if sync {
            let (ack, done) = oneshot::channel();
            (Some(ack), Some(done))
        } else {
            (None, None)
        };
        let op = WriteOp {
            record,
            ack,
            release,
        };
        if let Err(mpsc::error::SendError(Command::Write(op))) =
            tx.send(Command::Write(Box::new(op))).await
        {
            if let Some(release) = op.release {
                self.inner
                    .pending
                    .release(&release.key, &release.request_id);
            }
            return Err(JournalError::Unavailable(
                "the journal writer has stopped".into(),
            ));
        }
        match done {
            Some(done) => done
                .await
                .map_err(|_| JournalError::Unavailable("the journal writer has stopped".into()))?,
            None => Ok(()),
        }
    }

    /// Commits everything queued so far (whatever the durability mode).
    pub async fn flush(&self) -> Result<()> {
        self.control(Command::Flush).await
    }

    /// Commits everything queued, stops the writer and releases the database (its
    /// lock, for SQLite). Later writes fail with `Unavailable`.
    pub async fn close(&self) -> Result<()> {
        self.control(Command::Shutdown).await
    }

    async fn control(&self, make: fn(writer::Ack) -> Command) -> Result<()> {
        let Some(tx) = &self.inner.tx else {
            return Ok(());
        };
        let (ack, done) = oneshot::channel();
        if tx.send(make(ack)).await.is_err() {
            return Ok(()); // already stopped: nothing is queued
        }
        done.await.unwrap_or(Ok(()))
    }

    /// Requests, newest first, optionally of one status.
    pub async fn list(&self, status: Option<Status>, limit: usize) -> Result<Vec<RequestSummary>> {
        self.reader_or_off()?.list(status, limit).await
    }

    /// Writes one JSON object per matching request (oldest first) to `out`, each on
    /// its own line; returns how many.
    pub async fn export(
        &self,
        filter: &ExportFilter,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64> {
        let reader = self.reader_or_off()?;
        let mut after: Option<(i64, String)> = None;
        let mut written = 0;
        loop {
            let page = reader.export_page(filter, after.clone(), 200).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some((last.received_at, last.id.clone()));
            for (summary, records) in &page {
                serde_json::to_writer(&mut *out, &export_line(summary, records))?;
                out.write_all(b"\n")?;
                written += 1;
            }
        }
        out.flush()?;
        Ok(written)
    }

    /// Counts by status, time span, records and size.
    pub async fn stats(&self) -> Result<Stats> {
        let mut stats = self.reader_or_off()?.stats().await?;
        stats.durability = self.inner.cfg.durability.as_str().into();
        stats.bodies = self.inner.cfg.bodies.as_str().into();
        stats.rpo_bound_ms = self
            .inner
            .cfg
            .rpo_bound()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Ok(stats)
    }

    pub fn health(&self) -> JournalHealth {
        let h = &self.inner.health;
        JournalHealth {
            durability: self.inner.cfg.durability,
            rpo_bound: self.inner.cfg.rpo_bound(),
            write_failures: h.write_failures.load(Ordering::Relaxed),
            failing: h.failing.load(Ordering::Relaxed),
            last_error: h.last_error.lock().ok().and_then(|e| e.clone()),
            last_seq: h.last_seq.load(Ordering::Relaxed),
            commits: h.commits.load(Ordering::Relaxed),
            records_written: h.records.load(Ordering::Relaxed),
            dropped_attempts: h.dropped_attempts.load(Ordering::Relaxed),
            queue_depth: self
                .inner
                .tx
                .as_ref()
                .map(|tx| tx.max_capacity() - tx.capacity())
                .unwrap_or(0),
        }
    }

    pub fn config(&self) -> &JournalConfig {
        &self.inner.cfg
    }

    fn reader_or_off(&self) -> Result<&Reader> {
        self.inner.reader.as_ref().ok_or(JournalError::Off)
    }

    pub(crate) fn reader(&self) -> Option<&Reader> {
        self.inner.reader.as_ref()
    }

    pub(crate) fn pending(&self) -> &Arc<Pending> {
        &self.inner.pending
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    pub(crate) fn idempotency_ttl_ms(&self) -> i64 {
        duration_ms(self.inner.cfg.idempotency_ttl.0)
    }
}
