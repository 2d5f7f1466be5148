//! The single writer: takes commands off the queue, forms batches (group commit),
//! commits each in one transaction, then acknowledges waiters and releases
//! idempotency keys. Nothing else writes records.
//!
//! Batching: in `sync` mode the writer commits as soon as it has something, taking
//! along everything that queued up while the previous commit's fsync ran, so the batch
//! size adapts to the load and no one waits for a timer. In `batched` mode it collects
//! for up to `flush_interval` after the first record of a batch (or until a `Flush` or
//! 512 records), then commits.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::Durability;
use crate::error::{JournalError, Result};
use crate::idempotency::Pending;
use crate::record::PendingRecord;
use crate::store::WriterStore;

/// Most records in one transaction.
pub(crate) const MAX_BATCH: usize = 512;
/// Queue capacity: `begin`/`complete` wait for room (backpressure); attempts are dropped.
pub(crate) const QUEUE_CAPACITY: usize = 16_384;

pub(crate) type Ack = oneshot::Sender<Result<()>>;

pub(crate) enum Command {
    Write(Box<WriteOp>),
    /// Commit everything queued before it, then answer.
    Flush(Ack),
    /// Commit everything queued before it, close the store (releasing its lock), answer, stop.
    Shutdown(Ack),
}

pub(crate) struct WriteOp {
    pub record: PendingRecord,
    /// Answered after the commit holding the record (sync durability).
    pub ack: Option<Ack>,
    /// An idempotency key to release from the in-memory map after the commit.
    pub release: Option<Release>,
}

pub(crate) struct Release {
    pub key: String,
    pub request_id: String,
    /// Release after a successful commit too (a `complete`), or only when the commit
    /// failed (a `begin`: the request will not run, so duplicates must not wait for it).
    pub on_success: bool,
}

/// Counters the server exports as metrics and alert inputs.
#[derive(Debug, Default)]
pub(crate) struct HealthState {
    pub write_failures: AtomicU64,
    pub failing: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    pub last_seq: AtomicI64,
    pub commits: AtomicU64,
    pub records: AtomicU64,
    pub dropped_attempts: AtomicU64,
    pub stopped: AtomicBool,
}

pub(crate) struct WriterContext {
    pub durability: Durability,
    pub flush_interval: Duration,
    pub pending: Arc<Pending>,
    pub health: Arc<HealthState>,
    pub clock: Clock,
}

pub(crate) async fn run(
    mut rx: mpsc::Receiver<Command>,
    mut store: WriterStore,
    ctx: WriterContext,
) {
    loop {
        let Some(first) = rx.recv().await else { break };
        let mut batch = vec![first];
        collect(&mut rx, &mut batch, &ctx).await;

        let mut records = Vec::new();
        let mut after = Vec::new();
        let mut flushes = Vec::new();
        let mut shutdown = None;
        for command in batch {
            match command {
                Command::Write(op) => {
                    let op = *op;
                    records.push(op.record);
                    after.push((op.ack, op.release));
                }
                Command::Flush(ack) => flushes.push(ack),
                Command::Shutdown(ack) => shutdown = Some(ack),
            }
        }
        let outcome = if records.is_empty() {
            Ok(())
        } else {
            let count = records.len() as u64;
            let (_, result) = store.commit(records, ctx.clock.now_ms()).await;
            note_commit(&ctx, &result, count);
            result.map(|_| ())
        };
        for (ack, release) in after {
            if let Some(release) = release
                && (release.on_success || outcome.is_err())
            {
                ctx.pending.release(&release.key, &release.request_id);
            }
            if let Some(ack) = ack {
                let _ = ack.send(clone_result(&outcome));
            }
        }
        for ack in flushes {
            let _ = ack.send(clone_result(&outcome));
        }
        if let Some(ack) = shutdown {
            ctx.health.stopped.store(true, Ordering::SeqCst);
            drop(store);
            rx.close();
            let _ = ack.send(clone_result(&outcome));
            return;
        }
    }
    ctx.health.stopped.store(true, Ordering::SeqCst);
}

/// Adds to `batch` what belongs in the same transaction.
async fn collect(rx: &mut mpsc::Receiver<Command>, batch: &mut Vec<Command>, ctx: &WriterContext) {
    let urgent = |c: &Command| !matches!(c, Command::Write(op) if op.ack.is_none());
    match ctx.durability {
        Durability::Batched if !batch.iter().any(urgent) => {
            let deadline = Instant::now() + ctx.flush_interval;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(command)) => {
                        let stop = urgent(&command);
                        batch.push(command);
                        if stop {
                            break;
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        _ => {
            while batch.len() < MAX_BATCH && !matches!(batch.last(), Some(Command::Shutdown(_))) {
                match rx.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
        }
    }
}

fn note_commit(ctx: &WriterContext, result: &Result<(i64, i64)>, count: u64) {
    match result {
        Ok((_, last)) => {
            ctx.health.last_seq.store(*last, Ordering::Relaxed);
            ctx.health.commits.fetch_add(1, Ordering::Relaxed);
            ctx.health.records.fetch_add(count, Ordering::Relaxed);
            if ctx.health.failing.swap(false, Ordering::Relaxed) {
                tracing::info!("journal writes succeed again");
            }
        }
        Err(err) => {
            ctx.health.write_failures.fetch_add(1, Ordering::Relaxed);
            ctx.health.failing.store(true, Ordering::Relaxed);
            if let Ok(mut last) = ctx.health.last_error.lock() {
                *last = Some(err.to_string());
            }
            tracing::error!(error = %err, records = count, "journal commit failed");
        }
    }
}

fn clone_result(r: &Result<()>) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(JournalError::Unavailable(msg)) => Err(JournalError::Unavailable(msg.clone())),
        Err(other) => Err(JournalError::Unavailable(other.to_string())),
    }
}
