//! Idempotency keys: `claim` decides whether a request with an `Idempotency-Key` runs,
//! replays a stored answer, waits for a concurrent first, or is refused.
//!
//! Two layers:
//! - **In memory** (`Pending`): every key claimed in this process and not yet finished,
//!   with the body hash and a watch channel whose sender is dropped when the first
//!   request finishes (its `complete` committed, its `begin` failed, or its lease was
//!   dropped before `begin`). Concurrent duplicates in this process wait on it: no polling.
//! - **In the database** (`idempotency` table, written by the writer in the same
//!   transactions as `begin`/`complete`): key → body hash, request, state, stored answer.
//!   On SQLite (one process) it answers for keys from before a restart. On PostgreSQL
//!   `claim` also *reserves* the key there (an atomic upsert), so two nodes cannot both
//!   run it; a duplicate on another node polls every 100 ms until the first finishes.
//!
//! Rules, within `idempotency_ttl` of the first request:
//! - same key, same body, answered → `Completed` (no provider call);
//! - same key, same body, running → `InFlight` (wait, then claim again);
//! - same key, other body → `Mismatch` (the server answers 422);
//! - a first request that `failed` or was `interrupted` does not hold the key: the
//!   next claim is `New` (a retry after a 503 should run, not replay the 503).
//!
//! With `durability: off` nothing is stored, so idempotency is disabled: `claim` is
//! always `New` and duplicates run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::error::Result;
use crate::journal::Journal;
use crate::postgres::Reservation;
use crate::store::Reader;
use crate::types::StoredAnswer;

/// What to do with a request that carries an idempotency key.
#[derive(Debug)]
pub enum Claim {
    /// Run it. Keep the lease until `begin` was called with the same key (dropping it
    /// earlier gives the key back).
    New(ClaimLease),
    /// Answered before: send this without calling a provider.
    Completed(Box<StoredAnswer>),
    /// The first request with this key is running: `wait()` for it (bounded by the
    /// request's deadline), then act on the claim that returns.
    InFlight(InFlight),
    /// The key was used with another body (422).
    Mismatch,
}

/// Holds a claimed key until the request is begun.
#[derive(Debug)]
pub struct ClaimLease {
    pending: Option<Arc<Pending>>,
    key: String,
    token: u64,
    reservation: Option<Reservation>,
}

impl ClaimLease {
    /// A lease that holds nothing (idempotency disabled).
    pub(crate) fn inert(key: &str) -> Self {
        ClaimLease {
            pending: None,
            key: key.to_string(),
            token: 0,
            reservation: None,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for ClaimLease {
    fn drop(&mut self) {
        let Some(pending) = &self.pending else { return };
        if pending.abandon(&self.key, self.token)
            && let Some(reservation) = self.reservation.take()
        {
            reservation.release();
        }
    }
}

/// A wait for the first request with the same key.
#[derive(Debug)]
pub struct InFlight {
    journal: Journal,
    key: String,
    body_hash: String,
    local: Option<watch::Receiver<()>>,
}

impl InFlight {
    /// Resolves when the first request finished (or, for a first request on another
    /// node, at the next poll that sees it finished) with the claim that follows:
    /// `New`, `Completed` or `Mismatch`, never `InFlight`.
    pub async fn wait(self) -> Result<Claim> {
        let mut current = self;
        loop {
            match current.local.take() {
                // Only ever closed, never sent to: `changed` returns when the sender is dropped.
                Some(mut rx) => {
                    let _ = rx.changed().await;
                }
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
            match current
                .journal
                .claim(&current.key, &current.body_hash)
                .await?
            {
                Claim::InFlight(next) => current = next,
                settled => return Ok(settled),
            }
        }
    }
}

/// Keys claimed in this process and not finished.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    inner: Mutex<PendingInner>,
    next_token: AtomicU64,
}

#[derive(Debug, Default)]
struct PendingInner {
    by_key: HashMap<String, Entry>,
    key_of_request: HashMap<String, String>,
}

#[derive(Debug)]
struct Entry {
    body_hash: String,
    token: u64,
    request_id: Option<String>,
    _done: watch::Sender<()>,
}

pub(crate) enum LocalClaim {
    Reserved(u64),
    Wait(watch::Receiver<()>),
    Mismatch,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingInner> {
        // A panic while holding this lock cannot leave it inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn try_reserve(&self, key: &str, body_hash: &str) -> LocalClaim {
        let mut inner = self.lock();
        if let Some(entry) = inner.by_key.get(key) {
            if entry.body_hash != body_hash {
                return LocalClaim::Mismatch;
            }
            return LocalClaim::Wait(entry._done.subscribe());
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed) + 1;
        let (done, _) = watch::channel(());
        inner.by_key.insert(
            key.to_string(),
            Entry {
                body_hash: body_hash.to_string(),
                token,
                request_id: None,
                _done: done,
            },
        );
        LocalClaim::Reserved(token)
    }

    /// `begin` was called for `request_id` under `key`: the key now lives until that
    /// request's `complete` commits.
    pub(crate) fn attach(&self, key: &str, request_id: &str) {
        let mut inner = self.lock();
        let Some(entry) = inner.by_key.get_mut(key) else {
            return;
        };
        entry.request_id = Some(request_id.to_string());
        inner
            .key_of_request
            .insert(request_id.to_string(), key.to_string());
    }

    pub(crate) fn key_of(&self, request_id: &str) -> Option<String> {
        self.lock().key_of_request.get(request_id).cloned()
    }

    /// Finishes the key if it still belongs to `request_id` (wakes the waiters).
    pub(crate) fn release(&self, key: &str, request_id: &str) {
        let mut inner = self.lock();
        inner.key_of_request.remove(request_id);
        if inner
            .by_key
            .get(key)
            .is_some_and(|e| e.request_id.as_deref() == Some(request_id))
        {
            inner.by_key.remove(key);
        }
    }

    /// A lease dropped: give the key back if it was never begun. True if it was given back.
    fn abandon(&self, key: &str, token: u64) -> bool {
        let mut inner = self.lock();
        let unbegun = inner
            .by_key
            .get(key)
            .is_some_and(|e| e.token == token && e.request_id.is_none());
        if unbegun {
            inner.by_key.remove(key);
        }
        unbegun
    }
}

impl Journal {
    /// Decides what to do with a request carrying an idempotency key. `key` should be
    /// scoped to the caller (e.g. `"{caller_key_id}:{Idempotency-Key}"`); `body_hash`
    /// is [`crate::body_hash`] of the raw body.
    pub async fn claim(&self, key: &str, body_hash: &str) -> Result<Claim> {
        let Some(reader) = self.reader() else {
            return Ok(Claim::New(ClaimLease::inert(key)));
        };
        let pending = self.pending();
        let token = match pending.try_reserve(key, body_hash) {
            LocalClaim::Mismatch => return Ok(Claim::Mismatch),
            LocalClaim::Wait(rx) => {
                return Ok(Claim::InFlight(InFlight {
                    journal: self.clone(),
                    key: key.to_string(),
                    body_hash: body_hash.to_string(),
                    local: Some(rx),
                }));
            }
            LocalClaim::Reserved(token) => token,
        };
        let mut lease = ClaimLease {
            pending: Some(pending.clone()),
            key: key.to_string(),
            token,
            reservation: None,
        };
        let now = self.now_ms();
        let ttl = self.idempotency_ttl_ms();
        let row = match reader {
            Reader::Sqlite(r) => r.idempotency(key).await?,
            Reader::Postgres(r) => match r.reserve(key, body_hash, token, now, ttl).await? {
                Ok(reservation) => {
                    lease.reservation = Some(reservation);
                    return Ok(Claim::New(lease));
                }
                Err(row) => Some(row),
            },
        };
        let Some(row) = row else {
            return Ok(Claim::New(lease));
        };
        let remote = matches!(reader, Reader::Postgres(_));
        if row.created_at + ttl <= now && !remote {
            return Ok(Claim::New(lease));
        }
        if row.body_hash != body_hash {
            return Ok(Claim::Mismatch);
        }
        match row.state.as_str() {
            "completed" => match row
                .answer
                .as_deref()
                .map(serde_json::from_str::<StoredAnswer>)
            {
                Some(Ok(answer)) => Ok(Claim::Completed(Box::new(answer))),
                // Answered, but the answer is not kept (restored from a snapshot that
                // left answers out): running it again is the only way to answer.
                _ => Ok(Claim::New(lease)),
            },
            // Another node is running it (PostgreSQL): poll.
            "in_flight" | "reserved" if remote => {
                drop(lease);
                Ok(Claim::InFlight(InFlight {
                    journal: self.clone(),
                    key: key.to_string(),
                    body_hash: body_hash.to_string(),
                    local: None,
                }))
            }
            // SQLite: `in_flight` in the table but not in memory means its process lost
            // track of it (its `complete` failed); `failed`/`interrupted` release the key.
            _ if !remote => Ok(Claim::New(lease)),
            // PostgreSQL: the reservation upsert would have taken a released key; a
            // state seen here raced with another claim, so look again shortly.
            _ => {
                drop(lease);
                Ok(Claim::InFlight(InFlight {
                    journal: self.clone(),
                    key: key.to_string(),
                    body_hash: body_hash.to_string(),
                    local: None,
                }))
            }
        }
    }
}
