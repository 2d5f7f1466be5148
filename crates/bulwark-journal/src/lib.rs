//! The durable request journal: every accepted request, every upstream attempt and
//! every outcome, written by one group-committing writer; idempotency on top of it;
//! snapshots and record shipping to object storage; restore and verify.
//!
//! # Layout
//!
//! ```text
//!  request path (server)                      one writer task                       storage
//!  ─────────────────────                      ───────────────                       ───────
//!  claim(key, hash) ─▶ Pending map (memory) + idempotency table lookup
//!  begin(NewRequest) ──┐                                                          ┌─ SQLite (WAL) file
//!  record_attempt(..) ─┼─▶ bounded queue ─▶ drain a batch ─▶ one transaction ─────┤   or PostgreSQL
//!  complete(id, ..) ───┘    (privacy filter      assign seq + at_ms, CRC-32C,     └─ (synchronous_commit)
//!        ▲                   + JSON encoding     append records, fold index,
//!        └── ack after commit (sync)             commit = one fsync
//!            or after enqueue (batched)
//!
//!  backup task ─▶ SQLite online backup ─▶ snapshots/<seq>-<ms>.db ─┐
//!              └▶ records > shipped seq ─▶ segments/<first>-<last>.jsonl ─┴▶ object store
//!  restore: newest snapshot ≤ at + segments after it (≤ at) ─▶ new file ─▶ verify
//! ```
//!
//! # The record log (the journal proper)
//!
//! The journal is an append-only log of *records*. A request produces one `begin`
//! record, zero or more `attempt` records and one terminal record (`complete`, or
//! `interrupt` written by recovery). Records are never updated or deleted, so a record
//! that was shipped to a backup never changes afterwards, and its checksum holds forever.
//!
//! ```text
//! records
//! ┌──────────┬────────┬──────────┬────────────┬─────────────────────┬─────────┐
//! │ seq i64  │ at_ms  │ kind     │ request_id │ payload (JSON text) │ crc u32 │
//! └──────────┴────────┴──────────┴────────────┴─────────────────────┴─────────┘
//! crc = CRC-32C( seq as 8 bytes BE ‖ at_ms as 8 bytes BE
//!              ‖ len(kind) u32 BE ‖ kind ‖ len(request_id) u32 BE ‖ request_id ‖ payload )
//! ```
//!
//! - `seq` is 1, 2, 3, … with no gaps. Only the writer assigns it, in commit order,
//!   inside the transaction that appends the record (SQLite: a counter in the single
//!   writer; PostgreSQL: a counter row updated in the same transaction, whose row lock
//!   orders the commits of several nodes). A rolled-back batch gives its numbers back,
//!   so a gap in a committed journal means a lost record, and `verify` reports it.
//! - `at_ms` is Unix time in milliseconds and never decreases along `seq` (the writer
//!   takes `max(now, previous)`), so "records up to time T" is a prefix of the log:
//!   point-in-time restore stops at the first record after T.
//! - `payload` is the record's content as JSON, already passed through the privacy
//!   filter (`bodies: full | redacted | none`): what is not in the payload is not on
//!   disk. The checksum covers the exact stored text, so no canonical JSON form is
//!   needed: the bytes written are the bytes checked, locally and in shipped segments.
//! - CRC-32C (Castagnoli) rather than CRC-32 (IEEE): better error detection for the
//!   same cost, hardware-accelerated on x86-64 and ARM, and the checksum vector's
//!   disk buffers use. It comes from `crc-fast`, which object_store already builds.
//!   It guards against torn or altered rows, not against an attacker (use the object
//!   store's own integrity features for that).
//!
//! # The index (derived state)
//!
//! `requests` (one row per request: status, times, route, provider, model, attempt
//! count, the seq of its first and latest record) and `idempotency` (key → request,
//! body hash, state, stored answer) are a fold of the log, updated in the same
//! transaction as the records they come from by one function (`fold`), which restore
//! also uses when it replays shipped records. `verify` recomputes the fold from the
//! log and compares. Request and response bodies live only in records, never twice.
//!
//! Status moves `in_flight → completed | failed | interrupted`; the first terminal
//! record wins and later ones are kept in the log but change nothing.
//!
//! # Write path and durability
//!
//! Callers encode records themselves (JSON, privacy filter) and put them on a bounded
//! queue; one writer task takes the first queued record, drains whatever else is
//! queued (up to 512), and commits the batch in one transaction: group commit, so
//! under load one fsync serves many requests.
//!
//! | `durability` | `begin` / `complete` return | a crash loses | SQLite |
//! |---|---|---|---|
//! | `sync` | after the commit holding the record | nothing a caller was answered with (RPO 0): the server releases the answer, or a stream's final event, only after `complete` returned | WAL, `synchronous=FULL` |
//! | `batched` | after enqueue; the writer commits every `flush_interval` | at most `flush_interval` of records (RPO ≤ interval) | WAL, `synchronous=FULL` (one fsync per flush, so NORMAL would buy nothing and would weaken the bound on power loss) |
//! | `off` | at once; nothing is written | everything; idempotency is disabled (every `claim` is `New`) | no file |
//!
//! `record_attempt` never waits: it is queued (and, if the queue is full, dropped and
//! counted). When a commit fails (disk full, database gone), each waiting `begin` /
//! `complete` gets [`JournalError::Unavailable`] (the server answers 503 and does not
//! call a provider), [`JournalHealth::failing`] is set until a commit succeeds, and
//! [`JournalHealth::write_failures`] counts the failed batches, for alerts.
//!
//! # Recovery
//!
//! [`Journal::open`] appends an `interrupt` record for every request left `in_flight`
//! (on PostgreSQL: only those begun by this node) before it accepts writes, and says
//! how many in [`Recovery`]. A SQLite journal is held by one process at a time (an
//! exclusive lock on `<path>.lock`); readers (the CLI) may open it at any time.
//!
//! # Idempotency
//!
//! See [`Claim`]. In brief: `claim(key, body_hash)` within the TTL answers `Completed`
//! with the stored answer, `InFlight` (a future resolving when the first finishes),
//! `Mismatch` (same key, other body: 422), or `New` (go ahead; a `failed` or
//! `interrupted` first attempt does not hold the key). Answers kept for replay are full
//! whatever `bodies` says, in the `idempotency` table only, and are deleted when the
//! TTL ends; snapshots of a journal with `bodies` other than `full` leave them out.
//!
//! # Backups
//!
//! See [`backup`] for the object layout, shipping, retention and the RPO exposure,
//! and [`mod@restore`] for restore and verify.

pub mod backup;
mod clock;
pub mod config;
mod error;
mod idempotency;
mod journal;
mod postgres;
pub mod privacy;
mod query;
mod record;
pub mod restore;
mod sqlite;
mod store;
mod types;
mod writer;

#[cfg(test)]
mod tests;

pub use backup::{Backup, BackupRun, BackupStatus, BackupTarget};
pub use clock::{parse_time, rfc3339};
pub use config::{BackendKind, BackupConfig, Bodies, Durability, JournalConfig};
pub use error::{JournalError, Result};
pub use idempotency::{Claim, ClaimLease, InFlight};
pub use journal::{Journal, JournalHealth, Recovery};
pub use query::{ExportFilter, RequestSummary, Stats};
pub use record::Status;
pub use restore::{RestoreReport, VerifyReport, restore, verify};
pub use types::{AttemptRecord, NewRequest, Outcome, OutcomeStatus, StoredAnswer, body_hash};
