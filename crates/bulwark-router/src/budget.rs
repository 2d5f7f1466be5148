//! The retry budget: retries and hedges across the gateway stay under a share of
//! caller requests, so an outage cannot multiply the load on upstreams.
//!
//! Over a sliding window of ten one-second buckets, an extra attempt is allowed while
//! `extra < max(ratio × requests, min_per_second × 10)`. The floor lets a quiet gateway
//! still retry; the ratio bounds a busy one: with the default 0.2, upstream attempts
//! stay under 1.2 × caller requests whatever fails. Every attempt after a request's
//! first counts — a retry, a hedge, a failover onto a target that is failing too — so
//! a storm cannot multiply upstream load. A target skipped because its breaker is open
//! costs nothing. A failover onto a *healthy* target (breaker closed, no failure among
//! its recent calls) spends the budget like any extra attempt while there is some, but
//! is not refused when it is spent: it moves load off a failing provider rather than
//! adding to one, so a burst at the onset of an outage reaches the fallback even on a
//! quiet gateway, while retries and failovers onto failing targets stay bounded.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const BUCKETS: usize = 10;
const BUCKET: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: f64,
    inner: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    /// Index of the bucket `start` falls in, counted from the budget's creation.
    head: u64,
    requests: [u64; BUCKETS],
    retries: [u64; BUCKETS],
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_second: f64) -> Self {
        RetryBudget {
            ratio: ratio.max(0.0),
            min_per_second: min_per_second.max(0.0),
            inner: Mutex::new(Window {
                start: Instant::now(),
                head: 0,
                requests: [0; BUCKETS],
                retries: [0; BUCKETS],
            }),
        }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now_bucket = Instant::now().duration_since(w.start).as_secs() / BUCKET.as_secs();
        while w.head < now_bucket {
            w.head += 1;
            let slot = (w.head % BUCKETS as u64) as usize;
            w.requests[slot] = 0;
            w.retries[slot] = 0;
            if now_bucket - w.head >= BUCKETS as u64 {
                // Skip ahead: everything older than the window is gone anyway.
                w.requests = [0; BUCKETS];
                w.retries = [0; BUCKETS];
                w.head = now_bucket;
            }
        }
        w
    }

    /// A caller request arrived.
    pub fn record_request(&self) {
        let mut w = self.window();
        let slot = (w.head % BUCKETS as u64) as usize;
        w.requests[slot] += 1;
    }

    /// Counts an extra attempt made although the budget was spent (a failover onto a
    /// healthy target): later retries wait until the ratio allows them again.
    pub fn spend_anyway(&self) {
        let mut w = self.window();
        let slot = (w.head % BUCKETS as u64) as usize;
        w.retries[slot] += 1;
    }

    /// Takes one retry (or hedge) from the budget; false when it is spent.
    pub fn try_spend(&self) -> bool {
        let mut w = self.window();
        let requests: u64 = w.requests.iter().sum();
        let retries: u64 = w.retries.iter().sum();
        let allowed = (self.ratio * requests as f64).max(self.min_per_second * BUCKETS as f64);
        if (retries as f64) < allowed {
            let slot = (w.head % BUCKETS as u64) as usize;
            w.retries[slot] += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_capped_at_the_ratio_plus_floor() {
        let budget = RetryBudget::new(0.2, 0.0);
        for _ in 0..100 {
            budget.record_request();
        }
        let granted = (0..100).filter(|_| budget.try_spend()).count();
        assert_eq!(granted, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_allows_retries_on_a_quiet_gateway() {
        let budget = RetryBudget::new(0.2, 1.0);
        budget.record_request();
        let granted = (0..100).filter(|_| budget.try_spend()).count();
        assert_eq!(granted, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_refills_as_the_window_slides() {
        let budget = RetryBudget::new(0.5, 0.0);
        for _ in 0..10 {
            budget.record_request();
        }
        assert_eq!((0..10).filter(|_| budget.try_spend()).count(), 5);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!budget.try_spend(), "old requests no longer fund retries");
        for _ in 0..4 {
            budget.record_request();
        }
        assert_eq!((0..10).filter(|_| budget.try_spend()).count(), 2);
    }
}
