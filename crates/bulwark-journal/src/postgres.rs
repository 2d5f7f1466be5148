//! The PostgreSQL backend, for several gateway nodes sharing one journal. Same log,
//! index and fold as SQLite (see the crate docs), in tables prefixed `journal_`:
//!
//! - sequence numbers come from the row `journal_seq(id = 1)`, updated in the batch's
//!   own transaction: its row lock orders the nodes' commits, and a rolled-back batch
//!   gives its numbers back, so `seq` stays contiguous across nodes;
//! - every session runs with `synchronous_commit = on`: a commit returns after the WAL
//!   is flushed on the server (and on synchronous standbys, where configured);
//! - idempotency keys are reserved in `journal_idempotency` by an atomic upsert, so two
//!   nodes cannot both run a key (see the idempotency module);
//! - recovery on open interrupts only requests begun by this node (`node` column).
//!
//! Backups of a PostgreSQL journal are PostgreSQL's business (`pg_basebackup`, WAL
//! archiving); `bulwark journal export` gives a logical copy.

use std::str::FromStr;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{JournalError, Result};
use crate::query::{ExportFilter, RequestSummary, Stats};
use crate::record::{IndexUpdate, PendingRecord, Record, Status};
use crate::sqlite::IdemRow;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS journal_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS journal_seq (id INT PRIMARY KEY, next BIGINT NOT NULL, last_at BIGINT NOT NULL);
INSERT INTO journal_seq (id, next, last_at) VALUES (1, 1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS journal_records (
    seq BIGINT PRIMARY KEY, at_ms BIGINT NOT NULL, kind TEXT NOT NULL,
    request_id TEXT NOT NULL, payload TEXT NOT NULL, crc BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS journal_records_by_request ON journal_records (request_id, seq);
CREATE TABLE IF NOT EXISTS journal_requests (
    id TEXT PRIMARY KEY, begin_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL,
    status TEXT NOT NULL, received_at BIGINT NOT NULL, finished_at BIGINT,
    route TEXT NOT NULL, stream BOOLEAN NOT NULL, provider TEXT, model TEXT,
    attempts INT NOT NULL, idempotency_key TEXT, node TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS journal_requests_by_status ON journal_requests (status, received_at);
CREATE INDEX IF NOT EXISTS journal_requests_by_time ON journal_requests (received_at, id);
CREATE TABLE IF NOT EXISTS journal_idempotency (
    key TEXT PRIMARY KEY, body_hash TEXT NOT NULL, request_id TEXT, state TEXT NOT NULL,
    answer TEXT, created_at BIGINT NOT NULL, owner TEXT, token TEXT);
CREATE INDEX IF NOT EXISTS journal_idempotency_by_request ON journal_idempotency (request_id);
"#;

/// Serialises schema creation across nodes starting together.
const MIGRATION_LOCK: i64 = 0x6275_6c77_6172_6b01;

/// A reserved key on another task's behalf: given back when the lease is dropped unbegun.
#[derive(Debug)]
pub(crate) struct Reservation {
    pool: Pool,
    key: String,
    token: String,
}

impl Reservation {
    pub(crate) fn release(self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            let result = async {
                let client = self.pool.get().await?;
                client
                    .execute(
                        "DELETE FROM journal_idempotency WHERE key = $1 AND token = $2 AND state = 'reserved'",
                        &[&self.key, &self.token],
                    )
                    .await?;
                Ok::<_, JournalError>(())
            }
            .await;
            if let Err(err) = result {
                tracing::warn!(error = %err, "could not give back an idempotency reservation; it expires in 60 s");
            }
        });
    }
}

fn tls() -> Result<MakeRustlsConnect> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|e| JournalError::Config(format!("TLS for PostgreSQL: {e}")))?
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Connects the writer and the readers' pool, creating the tables when missing.
pub(crate) async fn open(url: &str, node: &str) -> Result<(PgWriter, PgReader)> {
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|e| JournalError::Config(format!("journal.url: {e}")))?;
    let tls = tls()?;
    let mut client = connect(&config, &tls).await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(SCHEMA).await?;
    tx.execute(
        "INSERT INTO journal_meta (key, value) VALUES ('journal_id', $1) ON CONFLICT (key) DO NOTHING",
        &[&uuid::Uuid::new_v4().to_string()],
    )
    .await?;
    tx.commit().await?;
    let statements = Statements::prepare(&client).await?;
    let pool = pool(config.clone(), tls.clone())?;
    let writer = PgWriter {
        client,
        statements,
        config,
        tls,
    };
    let reader = PgReader {
        pool,
        instance: format!("{node}/{}", uuid::Uuid::new_v4()),
    };
    Ok((writer, reader))
}

/// The readers' pool alone, for a read-only journal (no schema changes, no writer).
pub(crate) fn open_reader(url: &str, node: &str) -> Result<PgReader> {
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|e| JournalError::Config(format!("journal.url: {e}")))?;
    Ok(PgReader {
        pool: pool(config, tls()?)?,
        instance: format!("{node}/{}", uuid::Uuid::new_v4()),
    })
}

fn pool(config: tokio_postgres::Config, tls: MakeRustlsConnect) -> Result<Pool> {
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(8)
        .build()
        .map_err(|e| JournalError::Postgres(format!("connection pool: {e}")))
}

async fn connect(config: &tokio_postgres::Config, tls: &MakeRustlsConnect) -> Result<Client> {
    let (client, connection) = config.connect(tls.clone()).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(error = %err, "journal PostgreSQL connection closed");
        }
    });
    client.batch_execute("SET synchronous_commit = on").await?;
    Ok(client)
}

struct Statements {
    reserve: Statement,
    insert_record: Statement,
    begin: Statement,
    begin_key: Statement,
    attempt: Statement,
    complete: Statement,
    complete_key: Statement,
    interrupt: Statement,
    interrupt_key: Statement,
}

impl Statements {
    async fn prepare(c: &Client) -> Result<Self> {
        Ok(Statements {
            reserve: c.prepare(
                "UPDATE journal_seq SET next = next + $1, last_at = GREATEST(last_at, $2) WHERE id = 1 RETURNING next - $1, last_at",
            ).await?,
            insert_record: c.prepare(
                "INSERT INTO journal_records (seq, at_ms, kind, request_id, payload, crc) VALUES ($1, $2, $3, $4, $5, $6)",
            ).await?,
            begin: c.prepare(
                "INSERT INTO journal_requests (id, begin_seq, last_seq, status, received_at, route, stream, attempts, idempotency_key, node)
                 VALUES ($1, $2, $2, 'in_flight', $3, $4, $5, 0, $6, $7) ON CONFLICT (id) DO NOTHING",
            ).await?,
            begin_key: c.prepare(
                "INSERT INTO journal_idempotency (key, body_hash, request_id, state, answer, created_at, owner, token)
                 VALUES ($1, $2, $3, 'in_flight', NULL, $4, $5, NULL)
                 ON CONFLICT (key) DO UPDATE SET body_hash = EXCLUDED.body_hash, request_id = EXCLUDED.request_id,
                   state = 'in_flight', answer = NULL, created_at = EXCLUDED.created_at, owner = EXCLUDED.owner",
            ).await?,
            attempt: c.prepare(
                "UPDATE journal_requests SET attempts = GREATEST(attempts, $2), last_seq = GREATEST(last_seq, $3) WHERE id = $1",
            ).await?,
            complete: c.prepare(
                "UPDATE journal_requests SET status = $2, finished_at = $3, provider = $4, model = $5,
                   last_seq = GREATEST(last_seq, $6) WHERE id = $1 AND status = 'in_flight'",
            ).await?,
            complete_key: c.prepare(
                "UPDATE journal_idempotency SET state = $2, answer = $3 WHERE request_id = $1 AND state = 'in_flight'",
            ).await?,
            interrupt: c.prepare(
                "UPDATE journal_requests SET status = 'interrupted', finished_at = $2, last_seq = GREATEST(last_seq, $3)
                 WHERE id = $1 AND status = 'in_flight'",
            ).await?,
            interrupt_key: c.prepare(
                "UPDATE journal_idempotency SET state = 'interrupted' WHERE request_id = $1 AND state = 'in_flight'",
            ).await?,
        })
    }
}

pub(crate) struct PgWriter {
    client: Client,
    statements: Statements,
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

impl PgWriter {
    /// This node's requests left `in_flight`; also drops its leftover reservations.
    pub(crate) async fn in_flight_ids(&self, node: &str) -> Result<Vec<String>> {
        self.client
            .execute(
                "DELETE FROM journal_idempotency WHERE state = 'reserved' AND owner LIKE $1 || '/%'",
                &[&node],
            )
            .await?;
        let rows = self
            .client
            .query(
                "SELECT id FROM journal_requests WHERE status = 'in_flight' AND node = $1 ORDER BY begin_seq",
                &[&node],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(crate) async fn commit(
        &mut self,
        batch: &[PendingRecord],
        now_ms: i64,
    ) -> Result<(i64, i64)> {
        if self.client.is_closed() {
            self.client = connect(&self.config, &self.tls).await?;
            self.statements = Statements::prepare(&self.client).await?;
        }
        let s = &self.statements;
        let tx = self.client.transaction().await?;
        let count = i64::try_from(batch.len()).unwrap_or(i64::MAX);
        let row = tx.query_one(&s.reserve, &[&count, &now_ms]).await?;
        let (first, at_ms): (i64, i64) = (row.get(0), row.get(1));
        for (i, pending) in batch.iter().enumerate() {
            let record = pending.seal(first + i64::try_from(i).unwrap_or(0), at_ms);
            tx.execute(
                &s.insert_record,
                &[
                    &record.seq,
                    &record.at_ms,
                    &record.kind,
                    &record.request_id,
                    &record.payload,
                    &i64::from(record.crc),
                ],
            )
            .await?;
            fold(&tx, s, &record, &pending.index).await?;
        }
        tx.commit().await?;
        Ok((first, first + count - 1))
    }
}

async fn fold(
    tx: &tokio_postgres::Transaction<'_>,
    s: &Statements,
    r: &Record,
    update: &IndexUpdate,
) -> Result<()> {
    match update {
        IndexUpdate::Begin {
            received_at,
            route,
            stream,
            idempotency_key,
            body_hash,
            node,
        } => {
            let params: [&(dyn ToSql + Sync); 7] = [
                &r.request_id,
                &r.seq,
                received_at,
                route,
                stream,
                idempotency_key,
                node,
            ];
            let inserted = tx.execute(&s.begin, &params).await?;
            if let (1, Some(key)) = (inserted, idempotency_key) {
                let hash = body_hash.clone().unwrap_or_default();
                tx.execute(
                    &s.begin_key,
                    &[key, &hash, &r.request_id, received_at, node],
                )
                .await?;
            }
        }
        IndexUpdate::Attempt { n } => {
            let n = i32::try_from(*n).unwrap_or(i32::MAX);
            tx.execute(&s.attempt, &[&r.request_id, &n, &r.seq]).await?;
        }
        IndexUpdate::Complete {
            status,
            provider,
            model,
            answer,
        } => {
            let status = status.as_str();
            let changed = tx
                .execute(
                    &s.complete,
                    &[&r.request_id, &status, &r.at_ms, provider, model, &r.seq],
                )
                .await?;
            if changed == 1 {
                tx.execute(&s.complete_key, &[&r.request_id, &status, answer])
                    .await?;
            }
        }
        IndexUpdate::Interrupt => {
            let changed = tx
                .execute(&s.interrupt, &[&r.request_id, &r.at_ms, &r.seq])
                .await?;
            if changed == 1 {
                tx.execute(&s.interrupt_key, &[&r.request_id]).await?;
            }
        }
    }
    Ok(())
}

/// Read access (and idempotency reservations) through a small pool.
#[derive(Clone)]
pub(crate) struct PgReader {
    pool: Pool,
    /// `node/uuid`: owner of this process's reservations.
    instance: String,
}

const SUMMARY_COLUMNS: &str = "id, status, received_at, finished_at, route, stream, provider, model, attempts, begin_seq, last_seq, idempotency_key";

fn summary(row: &tokio_postgres::Row) -> RequestSummary {
    let status: String = row.get(1);
    let attempts: i32 = row.get(8);
    RequestSummary {
        id: row.get(0),
        status: Status::parse(&status).unwrap_or(Status::InFlight),
        received_at: row.get(2),
        finished_at: row.get(3),
        route: row.get(4),
        stream: row.get(5),
        provider: row.get(6),
        model: row.get(7),
        attempts: u32::try_from(attempts).unwrap_or(0),
        begin_seq: row.get(9),
        last_seq: row.get(10),
        idempotency_key: row.get(11),
    }
}

impl PgReader {
    /// Reserves `key` for this process, or returns what holds it.
    pub(crate) async fn reserve(
        &self,
        key: &str,
        body_hash: &str,
        token: u64,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<std::result::Result<Reservation, IdemRow>> {
        let client = self.pool.get().await?;
        let token = format!("{}#{token}", self.instance);
        let reserved = client
            .query_opt(
                "INSERT INTO journal_idempotency (key, body_hash, request_id, state, answer, created_at, owner, token)
                 VALUES ($1, $2, NULL, 'reserved', NULL, $3, $4, $5)
                 ON CONFLICT (key) DO UPDATE SET body_hash = EXCLUDED.body_hash, request_id = NULL,
                   state = 'reserved', answer = NULL, created_at = EXCLUDED.created_at,
                   owner = EXCLUDED.owner, token = EXCLUDED.token
                 WHERE journal_idempotency.state IN ('failed', 'interrupted')
                    OR journal_idempotency.created_at <= $6
                    OR (journal_idempotency.state = 'reserved' AND journal_idempotency.created_at <= $7)
                 RETURNING token",
                &[&key, &body_hash, &now_ms, &self.instance, &token, &(now_ms - ttl_ms), &(now_ms - 60_000)],
            )
            .await?;
        if reserved.is_some() {
            return Ok(Ok(Reservation {
                pool: self.pool.clone(),
                key: key.to_string(),
                token,
            }));
        }
        let row = client
            .query_opt(
                "SELECT body_hash, state, answer, created_at FROM journal_idempotency WHERE key = $1",
                &[&key],
            )
            .await?;
        Ok(Err(match row {
            Some(r) => IdemRow {
                body_hash: r.get(0),
                state: r.get(1),
                answer: r.get(2),
                created_at: r.get(3),
            },
            // Given back between the two statements: look again at the next poll.
            None => IdemRow {
                body_hash: body_hash.to_string(),
                state: "reserved".into(),
                answer: None,
                created_at: now_ms,
            },
        }))
    }

    pub(crate) async fn list(
        &self,
        status: Option<Status>,
        limit: usize,
    ) -> Result<Vec<RequestSummary>> {
        let client = self.pool.get().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let status = status.map(Status::as_str);
        let rows = client
            .query(
                &format!(
                    "SELECT {SUMMARY_COLUMNS} FROM journal_requests WHERE ($1::TEXT IS NULL OR status = $1)
                     ORDER BY received_at DESC, id DESC LIMIT $2"
                ),
                &[&status, &limit],
            )
            .await?;
        Ok(rows.iter().map(summary).collect())
    }

    pub(crate) async fn export_page(
        &self,
        filter: &ExportFilter,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<(RequestSummary, Vec<Record>)>> {
        let client = self.pool.get().await?;
        let (after_at, after_id) = match after {
            Some((at, id)) => (Some(at), id),
            None => (None, String::new()),
        };
        let rows = client
            .query(
                &format!(
                    "SELECT {SUMMARY_COLUMNS} FROM journal_requests
                     WHERE ($1::TEXT IS NULL OR status = $1) AND ($2::BIGINT IS NULL OR received_at >= $2)
                       AND ($3::BIGINT IS NULL OR received_at > $3 OR (received_at = $3 AND id > $4))
                     ORDER BY received_at, id LIMIT $5"
                ),
                &[
                    &filter.status.map(Status::as_str),
                    &filter.since_ms(),
                    &after_at,
                    &after_id,
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )
            .await?;
        let summaries: Vec<RequestSummary> = rows.iter().map(summary).collect();
        let ids: Vec<&str> = summaries.iter().map(|s| s.id.as_str()).collect();
        let records = client
            .query(
                "SELECT seq, at_ms, kind, request_id, payload, crc FROM journal_records
                 WHERE request_id = ANY($1) ORDER BY seq",
                &[&ids],
            )
            .await?;
        let mut by_request: std::collections::HashMap<String, Vec<Record>> = Default::default();
        for row in &records {
            let crc: i64 = row.get(5);
            let record = Record {
                seq: row.get(0),
                at_ms: row.get(1),
                kind: row.get(2),
                request_id: row.get(3),
                payload: row.get(4),
                crc: u32::try_from(crc).unwrap_or(0),
            };
            by_request
                .entry(record.request_id.clone())
                .or_default()
                .push(record);
        }
        Ok(summaries
            .into_iter()
            .map(|s| {
                let records = by_request.remove(&s.id).unwrap_or_default();
                (s, records)
            })
            .collect())
    }

    pub(crate) async fn stats(&self) -> Result<Stats> {
        let client = self.pool.get().await?;
        let mut stats = Stats {
            backend: "postgres".into(),
            ..Stats::default()
        };
        let counts = client
            .query(
                "SELECT status, count(*) FROM journal_requests GROUP BY status ORDER BY status",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                let n: i64 = r.get(1);
                (r.get::<_, String>(0), u64::try_from(n).unwrap_or(0))
            })
            .collect();
        let span = client
            .query_one(
                "SELECT min(received_at), max(received_at) FROM journal_requests",
                &[],
            )
            .await?;
        stats.fill_counts(counts, span.get(0), span.get(1));
        let records = client
            .query_one(
                "SELECT count(*), min(seq), max(seq),
                   (SELECT sum(pg_total_relation_size(t::regclass))::BIGINT FROM unnest(
                      ARRAY['journal_records', 'journal_requests', 'journal_idempotency']) AS t)
                 FROM journal_records",
                &[],
            )
            .await?;
        let n: i64 = records.get(0);
        stats.records = u64::try_from(n).unwrap_or(0);
        stats.first_seq = records.get(1);
        stats.last_seq = records.get(2);
        let size: Option<i64> = records.get(3);
        stats.size_bytes = size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
        Ok(stats)
    }
}
