//! Bounded-memory windows over a target's calls.
//!
//! - [`LastCalls`]: the outcome of the last 100 calls, as bits of one `u128`.
//! - [`OutcomeWindows`]: successes and failures in 10-second buckets for the last
//!   hour (360 buckets, ~3 KB), so the 1-, 5- and 60-minute success rates cost a sum
//!   over at most 360 counters whatever the traffic. A window of D covers the current
//!   (partial) bucket and the D/10s − 1 before it: between D − 10 s and D of history.
//! - [`Samples`]: the latency and time to first token of the last 1024 successful
//!   calls with their times, for exact p50/p95/p99 over a recent window. A ring of
//!   raw samples rather than a sketch: percentiles are exact, sorting 1024 numbers
//!   takes microseconds (done once per tick and per status request, never per call),
//!   and memory is fixed (~40 KB per target). Under heavy traffic the window is "the
//!   last 1024 calls" when that is shorter than the asked window, which is the more
//!   recent view anyway.
//!
//! Times are `tokio::time::Instant`, so tests drive them with paused time.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Outcomes of the last 100 calls.
#[derive(Debug, Clone, Default)]
pub struct LastCalls {
    /// Bit i is the (i+1)-th most recent call; 1 = success.
    bits: u128,
    len: u32,
}

const LAST_CALLS: u32 = 100;

impl LastCalls {
    pub fn record(&mut self, ok: bool) {
        let mask = (1u128 << LAST_CALLS) - 1;
        self.bits = ((self.bits << 1) | u128::from(ok)) & mask;
        self.len = (self.len + 1).min(LAST_CALLS);
    }

    /// Success ratio, `None` before the first call.
    pub fn ratio(&self) -> Option<f64> {
        (self.len > 0).then(|| f64::from(self.bits.count_ones()) / f64::from(self.len))
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Width of one bucket of [`OutcomeWindows`].
pub const BUCKET: Duration = Duration::from_secs(10);
/// Buckets kept: one hour.
const BUCKETS: usize = 360;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Absolute bucket number since the epoch; a slot holding an older number is stale.
    index: u64,
    ok: u32,
    failed: u32,
}

/// Success and failure counts over the last hour in 10-second buckets.
#[derive(Debug, Clone)]
pub struct OutcomeWindows {
    epoch: Instant,
    buckets: Vec<Bucket>,
}

/// Calls in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub ok: u64,
    pub failed: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.ok + self.failed
    }

    /// Success ratio, `None` without calls.
    pub fn ratio(&self) -> Option<f64> {
        (self.total() > 0).then(|| self.ok as f64 / self.total() as f64)
    }
}

impl OutcomeWindows {
    pub fn new(epoch: Instant) -> Self {
        OutcomeWindows {
            epoch,
            buckets: vec![Bucket::default(); BUCKETS],
        }
    }

    fn index(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.epoch);
        // Index 0 is reserved for "never written", so counting starts at 1.
        since.as_nanos().div_euclid(BUCKET.as_nanos()) as u64 + 1
    }

    pub fn record(&mut self, at: Instant, ok: bool) {
        let index = self.index(at);
        let slot = &mut self.buckets[(index % BUCKETS as u64) as usize];
        if slot.index != index {
            *slot = Bucket {
                index,
                ok: 0,
                failed: 0,
            };
        }
        if ok {
            slot.ok = slot.ok.saturating_add(1);
        } else {
            slot.failed = slot.failed.saturating_add(1);
        }
    }

    /// Calls in the `window` ending at `now` (capped at one hour).
    pub fn counts(&self, now: Instant, window: Duration) -> Counts {
        let newest = self.index(now);
        let span = window
            .as_nanos()
            .div_ceil(BUCKET.as_nanos())
            .clamp(1, BUCKETS as u128) as u64;
        let oldest = newest.saturating_sub(span - 1).max(1);
        self.buckets
            .iter()
            .filter(|b| b.index >= oldest && b.index <= newest)
            .fold(Counts::default(), |acc, b| Counts {
                ok: acc.ok + u64::from(b.ok),
                failed: acc.failed + u64::from(b.failed),
            })
    }
}

/// Recent successful calls kept for percentiles.
const SAMPLES: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    latency: Duration,
    ttft: Option<Duration>,
}

/// p50, p95, p99 of one measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub count: usize,
}

/// Latency and TTFT of the last [`SAMPLES`] successful calls.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    ring: VecDeque<Sample>,
}

/// Which duration of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Latency,
    Ttft,
    /// TTFT when the call has one, else the whole latency.
    TtftOrLatency,
}

impl Samples {
    pub fn record(&mut self, at: Instant, latency: Duration, ttft: Option<Duration>) {
        if self.ring.len() == SAMPLES {
            self.ring.pop_front();
        }
        self.ring.push_back(Sample { at, latency, ttft });
    }

    /// The measure of every sample newer than `now - window`, sorted.
    fn sorted(&self, now: Instant, window: Duration, measure: Measure) -> Vec<Duration> {
        let since = now.checked_sub(window);
        let mut values: Vec<Duration> = self
            .ring
            .iter()
            .rev()
            .take_while(|s| since.is_none_or(|t| s.at > t))
            .filter_map(|s| match measure {
                Measure::Latency => Some(s.latency),
                Measure::Ttft => s.ttft,
                Measure::TtftOrLatency => Some(s.ttft.unwrap_or(s.latency)),
            })
            .collect();
        values.sort_unstable();
        values
    }

    /// Nearest-rank percentiles over the window; `None` without samples.
    pub fn percentiles(
        &self,
        now: Instant,
        window: Duration,
        measure: Measure,
    ) -> Option<Percentiles> {
        let values = self.sorted(now, window, measure);
        Some(Percentiles {
            p50: nearest_rank(&values, 50.0)?,
            p95: nearest_rank(&values, 95.0)?,
            p99: nearest_rank(&values, 99.0)?,
            count: values.len(),
        })
    }

    /// One percentile and the number of samples it is over.
    pub fn percentile(
        &self,
        now: Instant,
        window: Duration,
        measure: Measure,
        p: f64,
    ) -> (Option<Duration>, usize) {
        let values = self.sorted(now, window, measure);
        (nearest_rank(&values, p), values.len())
    }
}

/// The smallest value with at least p % of the values at or below it.
fn nearest_rank(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_calls_keep_only_the_last_hundred() {
        let mut calls = LastCalls::default();
        assert_eq!(calls.ratio(), None);
        for _ in 0..100 {
            calls.record(false);
        }
        for _ in 0..50 {
            calls.record(true);
        }
        assert_eq!(calls.len(), 100);
        assert_eq!(calls.ratio(), Some(0.5));
        for _ in 0..100 {
            calls.record(true);
        }
        assert_eq!(calls.ratio(), Some(1.0));
    }

    #[tokio::test(start_paused = true)]
    async fn windows_forget_calls_older_than_the_window() {
        let epoch = Instant::now();
        let mut w = OutcomeWindows::new(epoch);
        w.record(epoch, false);
        w.record(epoch, true);
        tokio::time::advance(Duration::from_secs(30)).await;
        w.record(Instant::now(), true);
        let now = Instant::now();
        assert_eq!(
            w.counts(now, Duration::from_secs(60)),
            Counts { ok: 2, failed: 1 }
        );
        assert_eq!(
            w.counts(now, Duration::from_secs(10)),
            Counts { ok: 1, failed: 0 }
        );
        tokio::time::advance(Duration::from_secs(4 * 60)).await;
        let now = Instant::now();
        assert_eq!(w.counts(now, Duration::from_secs(60)).total(), 0);
        assert_eq!(w.counts(now, Duration::from_secs(300)).total(), 3);
        // A slot reused an hour later does not carry the old counts.
        tokio::time::advance(Duration::from_secs(3600)).await;
        w.record(Instant::now(), true);
        assert_eq!(
            w.counts(Instant::now(), Duration::from_secs(3600)),
            Counts { ok: 1, failed: 0 }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn percentiles_are_nearest_rank_over_the_window() {
        let mut s = Samples::default();
        let start = Instant::now();
        for ms in 1..=100u64 {
            s.record(
                start,
                Duration::from_millis(ms * 10),
                Some(Duration::from_millis(ms)),
            );
        }
        let now = Instant::now();
        let p = s
            .percentiles(now, Duration::from_secs(60), Measure::Ttft)
            .unwrap();
        assert_eq!(
            (p.p50, p.p95, p.p99, p.count),
            (
                Duration::from_millis(50),
                Duration::from_millis(95),
                Duration::from_millis(99),
                100
            )
        );
        let l = s
            .percentiles(now, Duration::from_secs(60), Measure::Latency)
            .unwrap();
        assert_eq!(l.p95, Duration::from_millis(950));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            s.percentiles(Instant::now(), Duration::from_secs(60), Measure::Ttft)
                .is_none()
        );
        s.record(Instant::now(), Duration::from_secs(7), None);
        let (p95, n) = s.percentile(
            Instant::now(),
            Duration::from_secs(60),
            Measure::TtftOrLatency,
            95.0,
        );
        assert_eq!((p95, n), (Some(Duration::from_secs(7)), 1));
    }
}
