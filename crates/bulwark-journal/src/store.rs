//! The backend seam: the writer's store and the readers' handle, each an enum over
//! SQLite and PostgreSQL so the journal, writer and queries are written once.

use crate::error::{JournalError, Result};
use crate::postgres::{PgReader, PgWriter};
use crate::query::{ExportFilter, RequestSummary, Stats};
use crate::record::{PendingRecord, Record, Status};
use crate::sqlite::{self, SqliteReader, SqliteWriter};

pub(crate) enum WriterStore {
    /// `None` once a blocking commit panicked: the connection is gone with it.
    Sqlite(Option<Box<SqliteWriter>>),
    Postgres(Box<PgWriter>),
}

impl WriterStore {
    /// Commits a batch; returns the batch back (for acknowledgements) with the
    /// `(first, last)` sequence numbers it got.
    pub(crate) async fn commit(
        &mut self,
        batch: Vec<PendingRecord>,
        now_ms: i64,
    ) -> (Vec<PendingRecord>, Result<(i64, i64)>) {
        match self {
            WriterStore::Sqlite(slot) => {
                let Some(mut writer) = slot.take() else {
                    return (
                        batch,
                        Err(JournalError::Unavailable(
                            "the journal writer was lost after a crash in a commit".into(),
                        )),
                    );
                };
                let joined = tokio::task::spawn_blocking(move || {
                    let result = writer.commit(&batch, now_ms);
                    (writer, batch, result)
                })
                .await;
                match joined {
                    Ok((writer, batch, result)) => {
                        *slot = Some(writer);
                        (batch, result)
                    }
                    Err(err) => (Vec::new(), Err(JournalError::unavailable(err))),
                }
            }
            WriterStore::Postgres(writer) => {
                let result = writer.commit(&batch, now_ms).await;
                (batch, result)
            }
        }
    }
}

/// Read access for queries and idempotency look-ups.
#[derive(Clone)]
pub(crate) enum Reader {
    Sqlite(SqliteReader),
    Postgres(PgReader),
}

impl Reader {
    pub(crate) async fn list(
        &self,
        status: Option<Status>,
        limit: usize,
    ) -> Result<Vec<RequestSummary>> {
        match self {
            Reader::Sqlite(r) => r.with(move |c| sqlite::list(c, status, limit)).await,
            Reader::Postgres(r) => r.list(status, limit).await,
        }
    }

    /// One page of requests with their records, for export.
    pub(crate) async fn export_page(
        &self,
        filter: &ExportFilter,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<(RequestSummary, Vec<Record>)>> {
        match self {
            Reader::Sqlite(r) => {
                let filter = filter.clone();
                r.with(move |c| {
                    let page = sqlite::requests_page(c, &filter, after.as_ref(), limit)?;
                    page.into_iter()
                        .map(|s| {
                            let records = sqlite::records_of(c, &s.id)?;
                            Ok((s, records))
                        })
                        .collect()
                })
                .await
            }
            Reader::Postgres(r) => r.export_page(filter, after, limit).await,
        }
    }

    pub(crate) async fn stats(&self) -> Result<Stats> {
        match self {
            Reader::Sqlite(r) => {
                let path = r.path.clone();
                r.with(move |c| {
                    let mut stats = Stats {
                        backend: "sqlite".into(),
                        ..Stats::default()
                    };
                    let (counts, oldest, newest) = sqlite::status_counts(c)?;
                    stats.fill_counts(counts, oldest, newest);
                    let (records, first, last) = sqlite::record_span(c)?;
                    stats.records = u64::try_from(records).unwrap_or(0);
                    stats.first_seq = first;
                    stats.last_seq = last;
                    stats.size_bytes = sqlite::size_on_disk(&path);
                    Ok(stats)
                })
                .await
            }
            Reader::Postgres(r) => r.stats().await,
        }
    }
}
