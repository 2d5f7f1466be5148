//! Issue 4, "What it must show": the journal through the real binary — crashes
//! (`kill -9`), backup and restore with measured RPO/RTO, idempotency.
//!
//! Numbers are printed: `cargo test -p bulwark --test durability -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backup;
mod crash;
mod idempotency;
mod support;
