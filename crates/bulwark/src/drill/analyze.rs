//! What callers experienced, computed from the drill's own records: success rate and
//! latency (overall and during the incident), the incident's timestamps (injection,
//! detection, failover, recovery), the RTO, and the per-bucket series of the chart.
//!
//! Definitions (times are milliseconds since the traffic started):
//! - **complete answer**: see [`super::traffic::Outcome::complete`];
//! - **incident window**: from the first fault (or kill) to the end of the last one
//!   (a kill ends when the new gateway listens);
//! - **detection**: the first status poll after the injection in which the primary
//!   is not healthy (breaker not `closed`, unavailable or throttled), or the gateway
//!   did not answer at all (kills); when no poll showed anything (a gateway back
//!   between two polls), the first caller failure after the injection;
//! - **failover**: the first complete answer from another provider than the
//!   primary's, ending after the injection;
//! - **recovery**: after the fault ended, the later of the first complete answer from
//!   the primary and the first poll showing the primary healthy again;
//! - **RTO**: the longest time callers got no answer: between two consecutive
//!   complete answers (to any caller), the whole stretch when a caller got a failure
//!   in it, otherwise the longest any request waited in it beyond the typical (median)
//!   answer time before the fault (a slow outage fails nobody, yet answers nobody; a
//!   provider that is always slow is not an outage); from the last answer to the end of the
//!   drill when answers never came back. 0 in a drill where nothing went wrong.

use std::collections::BTreeMap;

use serde::Serialize;

use super::traffic::Outcome;
use super::watch::Observed;

/// Success rate and latency of a set of requests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallerStats {
    pub sent: u64,
    pub answered: u64,
    /// `answered / sent`; `None` without requests.
    pub success_rate: Option<f64>,
    /// Latency of the complete answers, from sending to the last byte.
    pub latency_ms: Option<Percentiles>,
    /// Complete answers by provider (`x-bulwark-provider`).
    pub by_provider: BTreeMap<String, u64>,
    /// Requests without a complete answer, by reason.
    pub failures: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

pub fn caller_stats<'a>(outcomes: impl Iterator<Item = &'a Outcome>) -> CallerStats {
    let mut stats = CallerStats::default();
    let mut latencies = Vec::new();
    for o in outcomes {
        stats.sent += 1;
        if o.complete {
            stats.answered += 1;
            latencies.push(o.latency_ms());
            *stats
                .by_provider
                .entry(o.provider.clone().unwrap_or_else(|| "?".into()))
                .or_default() += 1;
        } else {
            *stats
                .failures
                .entry(o.failure.clone().unwrap_or_else(|| "incomplete".into()))
                .or_default() += 1;
        }
    }
    stats.success_rate = (stats.sent > 0).then(|| stats.answered as f64 / stats.sent as f64);
    stats.latency_ms = percentiles(&mut latencies);
    stats
}

/// Nearest-rank percentiles.
pub fn percentiles(values: &mut [u64]) -> Option<Percentiles> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = |p: f64| {
        let n = values.len();
        let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
        values[i]
    };
    Some(Percentiles {
        p50: rank(0.50),
        p95: rank(0.95),
        p99: rank(0.99),
        max: values[values.len() - 1],
    })
}

/// The longest stretch without answers in which callers saw failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rto {
    pub ms: u64,
    /// The last answer before the stretch (or the first request sent).
    pub from_ms: u64,
    /// The first answer after it (or the end of the drill).
    pub to_ms: u64,
    /// Answers came back before the end of the drill.
    pub recovered: bool,
}

/// `injection_ms`: when the fault began; the typical answer time is taken from the
/// answers to requests sent before it (all of them when there are none).
pub fn rto(outcomes: &[Outcome], injection_ms: Option<u64>) -> Rto {
    let none = Rto {
        ms: 0,
        from_ms: 0,
        to_ms: 0,
        recovered: true,
    };
    let mut answers: Vec<u64> = outcomes
        .iter()
        .filter(|o| o.complete)
        .map(|o| o.done_ms)
        .collect();
    let mut failures: Vec<u64> = outcomes
        .iter()
        .filter(|o| !o.complete)
        .map(|o| o.done_ms)
        .collect();
    if outcomes.is_empty() {
        return none;
    }
    answers.sort_unstable();
    failures.sort_unstable();
    // The typical answer time, before the fault: waiting that long is no outage. (From
    // every answer, a long slow outage would make its own slowness typical.)
    let latencies_before = |before: u64| -> Vec<u64> {
        outcomes
            .iter()
            .filter(|o| o.complete && o.sent_ms < before)
            .map(Outcome::latency_ms)
            .collect()
    };
    let mut latencies = injection_ms.map(latencies_before).unwrap_or_default();
    if latencies.is_empty() {
        latencies = latencies_before(u64::MAX);
    }
    let typical = percentiles(&mut latencies).map_or(0, |p| p.p50);
    let start = outcomes.iter().map(|o| o.sent_ms).min().unwrap_or(0);
    let end = outcomes.iter().map(|o| o.done_ms).max().unwrap_or(0);
    // Stretches between answers: [start, a1], [a1, a2], …, [an, end].
    let mut bounds = Vec::with_capacity(answers.len() + 2);
    bounds.push(start);
    bounds.extend(&answers);
    let mut best: Option<Rto> = None;
    for (i, from) in bounds.iter().enumerate() {
        let (to, recovered) = match bounds.get(i + 1) {
            Some(next) => (*next, true),
            None => (end, false),
        };
        // A failure strictly after the stretch began and no later than its end: the
        // whole stretch. Otherwise the longest wait in it of a request still
        // unanswered at its end.
        let first = failures.partition_point(|f| *f <= *from);
        let began = if failures.get(first).is_some_and(|f| *f <= to) {
            Some(*from)
        } else {
            outcomes
                .iter()
                .filter(|o| o.sent_ms < to && o.done_ms >= to)
                .map(|o| o.sent_ms.saturating_add(typical).max(*from))
                .min()
                .filter(|began| *began < to)
        };
        let Some(began) = began else { continue };
        let ms = to - began;
        if best.is_none_or(|b| ms > b.ms) {
            best = Some(Rto {
                ms,
                from_ms: began,
                to_ms: to,
                recovered,
            });
        }
    }
    best.unwrap_or(none)
}

/// The incident's timestamps.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    pub injection_ms: Option<u64>,
    pub fault_end_ms: Option<u64>,
    pub detection_ms: Option<u64>,
    /// What showed it: `breaker open`, `throttled`, `status unreachable`, ….
    pub detected_by: Option<String>,
    pub failover_ms: Option<u64>,
    pub failover_to: Option<String>,
    pub recovery_ms: Option<u64>,
}

pub fn timeline(
    outcomes: &[Outcome],
    observed: &Observed,
    primary_provider: &str,
    injection_ms: Option<u64>,
    fault_end_ms: Option<u64>,
) -> Timeline {
    let mut t = Timeline {
        injection_ms,
        fault_end_ms,
        ..Timeline::default()
    };
    let Some(injection) = injection_ms else {
        return t;
    };
    if let Some(sick) = observed
        .primary
        .iter()
        .find(|p| p.at_ms >= injection && !p.healthy())
    {
        t.detection_ms = Some(sick.at_ms);
        t.detected_by = Some(if sick.state == "unreachable" {
            "status unreachable".to_string()
        } else if sick.state != "closed" {
            format!("breaker {}", sick.state)
        } else if sick.throttled {
            "throttled".to_string()
        } else {
            "unavailable".to_string()
        });
    }
    if t.detection_ms.is_none()
        && let Some(failed) = outcomes
            .iter()
            .filter(|o| !o.complete && o.done_ms >= injection)
            .min_by_key(|o| o.done_ms)
    {
        // Nothing showed in the status (a gateway restarted between two polls):
        // callers noticed first.
        t.detection_ms = Some(failed.done_ms);
        t.detected_by = Some("caller failures".to_string());
    }
    let mut by_end: Vec<&Outcome> = outcomes.iter().filter(|o| o.complete).collect();
    by_end.sort_by_key(|o| o.done_ms);
    if let Some(first) = by_end.iter().find(|o| {
        o.done_ms >= injection && o.provider.as_deref().is_some_and(|p| p != primary_provider)
    }) {
        t.failover_ms = Some(first.done_ms);
        t.failover_to.clone_from(&first.provider);
    }
    let Some(end) = fault_end_ms else {
        return t;
    };
    let answer = by_end
        .iter()
        .find(|o| o.done_ms >= end && o.provider.as_deref() == Some(primary_provider))
        .map(|o| o.done_ms);
    let in_effect = observed.primary.iter().rev().find(|p| p.at_ms <= end);
    let healthy = if in_effect.is_some_and(|p| p.healthy()) {
        Some(end)
    } else {
        observed
            .primary
            .iter()
            .find(|p| p.at_ms > end && p.healthy())
            .map(|p| p.at_ms)
    };
    t.recovery_ms = match (answer, healthy) {
        (Some(a), Some(h)) => Some(a.max(h)),
        _ => None,
    };
    t
}

/// One bucket of the chart: requests sent in it and how they ended.
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    pub from_ms: u64,
    pub sent: u64,
    pub answered: u64,
    /// The provider of most complete answers, if any.
    pub provider: Option<String>,
}

/// Bucket width: a second for drills of a minute or more, else a 60th of the drill
/// (at least 100 ms).
pub fn bucket_width(duration_ms: u64) -> u64 {
    if duration_ms >= 60_000 {
        1000
    } else {
        ((duration_ms / 60) / 100 * 100).max(100)
    }
}

pub fn buckets(outcomes: &[Outcome], duration_ms: u64) -> Vec<Bucket> {
    let width = bucket_width(duration_ms);
    let n = duration_ms.div_ceil(width).max(1);
    let mut out: Vec<(Bucket, BTreeMap<String, u64>)> = (0..n)
        .map(|i| {
            (
                Bucket {
                    from_ms: i * width,
                    sent: 0,
                    answered: 0,
                    provider: None,
                },
                BTreeMap::new(),
            )
        })
        .collect();
    for o in outcomes {
        let i = usize::try_from(o.sent_ms / width)
            .unwrap_or(usize::MAX)
            .min(out.len() - 1);
        let (bucket, providers) = &mut out[i];
        bucket.sent += 1;
        if o.complete {
            bucket.answered += 1;
            *providers
                .entry(o.provider.clone().unwrap_or_else(|| "?".into()))
                .or_default() += 1;
        }
    }
    out.into_iter()
        .map(|(mut bucket, providers)| {
            bucket.provider = providers
                .into_iter()
                .max_by_key(|(_, n)| *n)
                .map(|(p, _)| p);
            bucket
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::watch::PrimaryState;

    fn outcome(sent: u64, done: u64, complete: bool, provider: &str) -> Outcome {
        Outcome {
            id: format!("r{sent}"),
            caller: 0,
            stream: false,
            generation: 0,
            sent_ms: sent,
            done_ms: done,
            status: Some(if complete { 200 } else { 503 }),
            complete,
            provider: Some(provider.to_string()),
            failure: (!complete).then(|| "status 503".to_string()),
            text: None,
        }
    }

    #[test]
    fn rto_is_the_longest_time_callers_got_no_answer() {
        // Healthy, and a provider that is always slow: nothing beyond the typical
        // answer time.
        let fine = vec![outcome(0, 100, true, "a"), outcome(500, 600, true, "a")];
        assert_eq!(rto(&fine, None).ms, 0);
        let slow = vec![
            outcome(0, 2500, true, "a"),
            outcome(250, 2750, true, "a"),
            outcome(500, 3000, true, "a"),
        ];
        assert_eq!(rto(&slow, None).ms, 0);
        // A slow outage fails nobody and answers nobody for 6 s (typical answer 50 ms).
        let brownout = vec![
            outcome(0, 50, true, "a"),
            outcome(60, 6060, true, "b"),
            outcome(6100, 6150, true, "b"),
            outcome(6200, 6250, true, "b"),
        ];
        let r = rto(&brownout, None);
        // A slow outage longer than the healthy time around it is still one: the
        // typical time comes from before the fault.
        let mut long: Vec<Outcome> = (0..4)
            .map(|i| outcome(i * 10, i * 10 + 50, true, "a"))
            .collect();
        long.extend((0..10).map(|i| outcome(100 + i * 10, 10_100 + i * 10, true, "b")));
        assert_eq!(rto(&long, Some(100)).ms, 9950);
        assert_eq!(
            (r.ms, r.from_ms, r.to_ms, r.recovered),
            (5950, 110, 6060, true)
        );
        let outage = vec![
            outcome(0, 100, true, "a"),
            outcome(200, 210, false, "a"),
            outcome(400, 410, false, "a"),
            outcome(600, 900, true, "b"),
            outcome(950, 960, false, "b"),
            outcome(1000, 1050, true, "b"),
        ];
        let r = rto(&outage, None);
        assert_eq!(
            (r.ms, r.from_ms, r.to_ms, r.recovered),
            (800, 100, 900, true)
        );
        let never = vec![outcome(0, 100, true, "a"), outcome(200, 300, false, "a")];
        let r = rto(&never, None);
        assert_eq!((r.ms, r.recovered), (200, false));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).collect();
        let p = percentiles(&mut v).unwrap();
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50, 95, 99, 100));
        assert!(percentiles(&mut []).is_none());
    }

    #[test]
    fn the_timeline_finds_detection_failover_and_recovery() {
        let outcomes = vec![
            outcome(0, 50, true, "a"),
            outcome(1000, 1100, true, "b"),
            outcome(3000, 3050, true, "b"),
            outcome(3200, 3260, true, "a"),
        ];
        let state = |at_ms, state: &str| PrimaryState {
            at_ms,
            state: state.to_string(),
            available: state == "closed",
            throttled: false,
        };
        let observed = Observed {
            primary: vec![
                state(0, "closed"),
                state(1050, "open"),
                state(3100, "closed"),
            ],
            ..Observed::default()
        };
        let t = timeline(&outcomes, &observed, "a", Some(1000), Some(3000));
        assert_eq!(t.detection_ms, Some(1050));
        assert_eq!(t.detected_by.as_deref(), Some("breaker open"));
        assert_eq!(t.failover_ms, Some(1100));
        assert_eq!(t.failover_to.as_deref(), Some("b"));
        assert_eq!(t.recovery_ms, Some(3260));
    }

    #[test]
    fn buckets_hold_the_rate_and_the_main_provider() {
        let outcomes = vec![
            outcome(0, 50, true, "a"),
            outcome(10, 60, true, "a"),
            outcome(120, 130, false, "a"),
            outcome(150, 230, true, "b"),
        ];
        let b = buckets(&outcomes, 200);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].sent, b[0].answered), (2, 2));
        assert_eq!(b[0].provider.as_deref(), Some("a"));
        assert_eq!((b[1].sent, b[1].answered), (2, 1));
        assert_eq!(b[1].provider.as_deref(), Some("b"));
    }
}
