//! Retry delays: exponential backoff with full jitter, and the server's own wait signal.
//!
//! `delay(n) = uniform(0, min(max_delay, base_delay · 2^n))` for the n-th retry (n from 0).
//! Full jitter spreads a crowd of clients that failed together across the whole window,
//! so they do not come back in lockstep. A `Retry-After` from the server replaces the
//! computed delay (it knows when it will have room); it is never shortened.

use std::time::Duration;

use rand::Rng;

/// Backoff parameters for one route.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    /// 1.0 draws the full jitter window; 0.0 always waits the ceiling (deterministic tests).
    pub jitter: f64,
}

impl Backoff {
    /// The ceiling of the n-th retry's delay.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(30));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay before the n-th retry, honouring the server's wait when it gave one.
    pub fn delay(&self, retry: u32, server_wait: Option<Duration>, rng: &mut impl Rng) -> Duration {
        if let Some(wait) = server_wait {
            return wait;
        }
        let ceiling = self.ceiling(retry);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let low = ceiling.mul_f64(1.0 - jitter);
        if ceiling <= low {
            return ceiling;
        }
        let span = (ceiling - low).as_nanos() as u64;
        low + Duration::from_nanos(rng.random_range(0..=span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(8),
            jitter: 1.0,
        }
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let b = backoff();
        let got: Vec<u64> = (0..7).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(got, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(8));
    }

    #[test]
    fn full_jitter_stays_inside_the_window_and_spreads() {
        let b = backoff();
        let mut rng = rand::rng();
        let draws: Vec<Duration> = (0..2000).map(|_| b.delay(2, None, &mut rng)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_secs(2)));
        let below_half = draws
            .iter()
            .filter(|d| **d < Duration::from_secs(1))
            .count();
        // Uniform over [0, 2s]: about half below 1 s.
        assert!((800..1200).contains(&below_half), "{below_half}");
    }

    #[test]
    fn server_wait_wins() {
        let b = backoff();
        let mut rng = rand::rng();
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(2)), &mut rng),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn zero_jitter_is_deterministic() {
        let b = Backoff {
            jitter: 0.0,
            ..backoff()
        };
        let mut rng = rand::rng();
        assert_eq!(b.delay(1, None, &mut rng), Duration::from_secs(1));
    }
}
