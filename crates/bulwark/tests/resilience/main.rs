//! Issue 3, "What it must show": one test per fault against the mock providers,
//! through the real gateway on loopback. Each asserts what the caller got and what the
//! mocks saw (how many attempts, how far apart, from the mocks' `at_ms`).
//!
//! Time is scaled down so the suite stays short: route timeouts first token 1 s, idle
//! 1 s, total 10 s (the defaults are 15 s, 20 s, 120 s) and breaker open 2 s
//! (30 s). Each test says how its numbers map to the issue's. Backoff keeps the
//! default 500 ms base / 8 s cap unless a test says otherwise, and `Retry-After` is
//! real (it is in whole seconds).
//!
//! Measured numbers are printed (`cargo test -p bulwark --test resilience -- --nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod faults;
mod outages;
mod support;
