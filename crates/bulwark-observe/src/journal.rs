//! What the server tells the observer about the journal and backups (the observer
//! does not depend on the journal crate): durability mode, whether writes are
//! failing, the backup's RPO exposure and target, and the last backup.

use std::time::{Duration, SystemTime};

/// The journal and backup state, as last reported by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalState {
    /// The configured durability, as the journal names it (`fsync`, `batched`, `off`…).
    pub durability: String,
    /// True from a failed journal write until a write succeeds again.
    pub writes_failing: bool,
    pub last_write_failure: Option<SystemTime>,
    /// How much acknowledged data a loss of this node would lose now: the age of the
    /// oldest record not yet in a backup (`rpo_exposure()` of the journal).
    pub rpo_exposure: Option<Duration>,
    /// The RPO the backups are configured to keep.
    pub rpo_target: Option<Duration>,
    pub last_backup: Option<SystemTime>,
}

impl JournalState {
    /// A journal with the given durability and nothing reported yet.
    pub fn new(durability: impl Into<String>) -> Self {
        JournalState {
            durability: durability.into(),
            writes_failing: false,
            last_write_failure: None,
            rpo_exposure: None,
            rpo_target: None,
            last_backup: None,
        }
    }
}
