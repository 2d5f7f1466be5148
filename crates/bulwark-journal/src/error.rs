//! The journal's error type, and how the server should present it to a caller.

use bulwark_core::{ErrorKind, GatewayError};

pub type Result<T, E = JournalError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A write could not be made durable (commit failed, writer stopped). The server
    /// answers 503 and does not call a provider.
    #[error("journal unavailable: {0}")]
    Unavailable(String),
    /// The operation needs stored records but `durability: off` keeps none.
    #[error("the journal is off (durability: off)")]
    Off,
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(String),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Stored data failed a check (checksum, sequence, format).
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("configuration: {0}")]
    Config(String),
    /// A restore, backup or CLI precondition that does not hold.
    #[error("{0}")]
    Invalid(String),
}

impl From<tokio_postgres::Error> for JournalError {
    fn from(err: tokio_postgres::Error) -> Self {
        // The Display of a db error is terse; include the server's message and detail.
        match err.as_db_error() {
            Some(db) => JournalError::Postgres(format!("{}: {}", db.code().code(), db.message())),
            None => {
                let mut text = err.to_string();
                let mut source = std::error::Error::source(&err);
                while let Some(cause) = source {
                    text.push_str(": ");
                    text.push_str(&cause.to_string());
                    source = cause.source();
                }
                JournalError::Postgres(text)
            }
        }
    }
}

impl From<deadpool_postgres::PoolError> for JournalError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        JournalError::Postgres(format!("connection pool: {err}"))
    }
}

impl JournalError {
    /// The caller-facing error: 503 for anything that kept a record from being stored,
    /// without internals (paths, SQL) in the message.
    pub fn to_gateway_error(&self) -> GatewayError {
        GatewayError::new(
            ErrorKind::Unavailable,
            "the gateway cannot record requests right now; try again shortly",
        )
        .with_code("journal_unavailable")
    }

    pub(crate) fn unavailable(err: impl std::fmt::Display) -> Self {
        JournalError::Unavailable(err.to_string())
    }
}
