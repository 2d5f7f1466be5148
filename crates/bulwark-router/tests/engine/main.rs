//! The failover loop under paused tokio time, against scripted in-process upstreams:
//! backoff spacing, server waits and the deadline, breaker timing with recovery
//! probes, all-open fallback, hedging, sticky sessions, weighted balancing,
//! context-window routing and quota blocks. Jitter is off (`Tuning`), so every
//! time asserted here is exact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod breaker;
mod retries;
mod routing;
mod support;
