//! The `GET /admin/status` document: what an on-call engineer asks first.
//!
//! Order of importance: is the gateway up, what is firing, which target serves each
//! route now (and did it fail over), how each target is doing, is the journal
//! durable and how much would a loss of this node lose (RPO exposure).
//!
//! Rates are `null` without calls. Percentiles are over the last 5 minutes of
//! successful calls (at most the last 1024). Times are RFC 3339 UTC strings, with an
//! `*_ago_seconds` beside them so a reader needs no clock. Errors are classes and
//! counts only, never messages.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::health::HealthBook;
use crate::journal::JournalState;
use crate::live::Live;
use crate::notify::webhook::rfc3339;
use crate::rules::Incident;
use crate::window::Measure;

/// Window of the percentiles in the status.
pub const PERCENTILE_WINDOW: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub gateway: GatewayStatus,
    /// Incidents firing now, most severe first.
    pub alerts: Vec<FiringAlert>,
    pub routes: Vec<RouteStatus>,
    /// `null` when the gateway runs without a journal.
    pub journal: Option<JournalReport>,
    /// Game-day faults injected through `POST /admin/chaos` and still in force.
    #[serde(default)]
    pub chaos: Vec<ChaosStatus>,
}

/// One active chaos rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosStatus {
    pub id: u64,
    pub provider: String,
    /// `null`: every model of the provider.
    pub model: Option<String>,
    /// The fault as injected (`{"kind": "down"}`, …).
    pub fault: serde_json::Value,
    pub remaining_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// Always `up` (a gateway that answers is up).
    pub status: String,
    pub version: String,
    /// This gateway's name in alerts.
    pub source: String,
    pub started_at: String,
    pub uptime_seconds: u64,
    pub generated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FiringAlert {
    pub rule: String,
    pub severity: String,
    /// `route/provider/model`, the parts that apply, or `gateway`.
    pub subject: String,
    pub summary: String,
    pub since: String,
    pub firing_for_seconds: u64,
    pub dedup_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRef {
    pub provider: String,
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub name: String,
    /// The target serving now; `null` when every target is unavailable.
    pub serving: Option<TargetRef>,
    /// Served by a target other than a primary (lowest priority value).
    pub failed_over: bool,
    pub last_failover: Option<FailoverStatus>,
    pub failovers_total: u64,
    /// In priority order.
    pub targets: Vec<TargetStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverStatus {
    /// Provider names.
    pub from: String,
    pub to: String,
    pub at: String,
    pub ago_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub provider: String,
    pub model: String,
    pub priority: u32,
    pub primary: bool,
    pub serving: bool,
    /// Breaker state: `closed`, `half_open` or `open`.
    pub state: String,
    pub state_for_seconds: u64,
    pub available: bool,
    pub quota_blocked: bool,
    pub throttled: bool,
    pub in_flight: u32,
    pub success_rate: SuccessRates,
    /// Calls counted in the rates, per window.
    pub calls: CallCounts,
    pub latency_ms: Option<PercentilesMs>,
    pub ttft_ms: Option<PercentilesMs>,
    /// Attempts by error class since start.
    pub errors: BTreeMap<String, u64>,
    pub last_error: Option<LastError>,
    pub last_success_ago_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuccessRates {
    pub last_100: Option<f64>,
    #[serde(rename = "1m")]
    pub m1: Option<f64>,
    #[serde(rename = "5m")]
    pub m5: Option<f64>,
    #[serde(rename = "60m")]
    pub m60: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCounts {
    pub last_100: u32,
    #[serde(rename = "1m")]
    pub m1: u64,
    #[serde(rename = "5m")]
    pub m5: u64,
    #[serde(rename = "60m")]
    pub m60: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PercentilesMs {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub samples: usize,
}

/// The last error: its class only (a message could hold a prompt or a secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    pub class: String,
    pub at: String,
    pub ago_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalReport {
    pub durability: String,
    pub writes_failing: bool,
    pub last_write_failure: Option<String>,
    pub rpo_exposure_seconds: Option<f64>,
    pub rpo_target_seconds: Option<f64>,
    pub last_backup: Option<String>,
    pub last_backup_ago_seconds: Option<u64>,
}

/// What the report says about the gateway itself.
#[derive(Debug, Clone)]
pub struct Meta<'a> {
    pub version: &'a str,
    pub source: &'a str,
    pub started: Instant,
    pub started_wall: SystemTime,
}

/// Everything a report is built from, read at one moment.
pub struct Snapshot<'a> {
    pub book: &'a HealthBook,
    pub live: &'a Live,
    pub journal: Option<&'a JournalState>,
    pub firing: &'a [Incident],
    pub now: Instant,
    pub now_wall: SystemTime,
}

impl Snapshot<'_> {
    fn wall(&self, at: Instant) -> SystemTime {
        let ago = self.now.saturating_duration_since(at);
        self.now_wall.checked_sub(ago).unwrap_or(self.now_wall)
    }

    fn ago(&self, at: Instant) -> u64 {
        self.now.saturating_duration_since(at).as_secs()
    }
}

fn ms(p: crate::window::Percentiles) -> PercentilesMs {
    PercentilesMs {
        p50: p.p50.as_millis() as u64,
        p95: p.p95.as_millis() as u64,
        p99: p.p99.as_millis() as u64,
        samples: p.count,
    }
}

fn wall_ago(now: SystemTime, then: SystemTime) -> u64 {
    now.duration_since(then).map_or(0, |d| d.as_secs())
}

pub fn build(meta: &Meta<'_>, s: &Snapshot<'_>) -> StatusReport {
    let gateway = GatewayStatus {
        status: "up".to_string(),
        version: meta.version.to_string(),
        source: meta.source.to_string(),
        started_at: rfc3339(meta.started_wall),
        uptime_seconds: s.now.saturating_duration_since(meta.started).as_secs(),
        generated_at: rfc3339(s.now_wall),
    };
    let alerts = s
        .firing
        .iter()
        .map(|i| FiringAlert {
            rule: i.rule.name().to_string(),
            severity: i.severity.label().to_string(),
            subject: i.subject.key(),
            summary: i.summary.clone(),
            since: rfc3339(i.since_wall),
            firing_for_seconds: s.ago(i.since),
            dedup_key: i.dedup_key.clone(),
        })
        .collect();
    let routes = s.live.routes.iter().map(|route| {
        let serving = s.live.serving(route, s.book);
        let stats = s.book.routes.get(&route.name);
        RouteStatus {
            name: route.name.clone(),
            serving: serving.map(|t| TargetRef {
                provider: t.provider.clone(),
                model: t.model.clone(),
            }),
            failed_over: serving.is_some_and(|t| !route.is_primary(&t.provider, &t.model)),
            last_failover: stats
                .and_then(|r| r.last_failover.as_ref())
                .map(|f| FailoverStatus {
                    from: f.from.clone(),
                    to: f.to.clone(),
                    at: rfc3339(s.wall(f.at)),
                    ago_seconds: s.ago(f.at),
                }),
            failovers_total: stats.map_or(0, |r| r.failovers),
            targets: route
                .targets
                .iter()
                .map(|t| {
                    let is_serving = serving.is_some_and(|x| x == t);
                    target(
                        s,
                        &t.provider,
                        &t.model,
                        t.priority,
                        route.is_primary(&t.provider, &t.model),
                        is_serving,
                    )
                })
                .collect(),
        }
    });
    let journal = s.journal.map(|j| JournalReport {
        durability: j.durability.clone(),
        writes_failing: j.writes_failing,
        last_write_failure: j.last_write_failure.map(rfc3339),
        rpo_exposure_seconds: j.rpo_exposure.map(|d| d.as_secs_f64()),
        rpo_target_seconds: j.rpo_target.map(|d| d.as_secs_f64()),
        last_backup: j.last_backup.map(rfc3339),
        last_backup_ago_seconds: j.last_backup.map(|t| wall_ago(s.now_wall, t)),
    });
    StatusReport {
        gateway,
        alerts,
        routes: routes.collect(),
        journal,
        chaos: Vec::new(),
    }
}

fn target(
    s: &Snapshot<'_>,
    provider: &str,
    model: &str,
    priority: u32,
    primary: bool,
    serving: bool,
) -> TargetStatus {
    let live = s.live.target(provider, model);
    let stats = s.book.target(provider, model);
    let counts = |w: u64| stats.map(|t| t.windows.counts(s.now, Duration::from_secs(w)));
    let (c1, c5, c60) = (counts(60), counts(300), counts(3600));
    TargetStatus {
        provider: provider.to_string(),
        model: model.to_string(),
        priority,
        primary,
        serving,
        state: live.map_or("closed", |l| l.state.label()).to_string(),
        state_for_seconds: live.map_or(0, |l| s.ago(l.state_since)),
        available: live.is_none_or(|l| l.available()),
        quota_blocked: live.is_some_and(|l| l.quota_blocked),
        throttled: live.is_some_and(|l| l.throttled),
        in_flight: live.map_or(0, |l| l.in_flight),
        success_rate: SuccessRates {
            last_100: stats.and_then(|t| t.last_100.ratio()),
            m1: c1.and_then(|c| c.ratio()),
            m5: c5.and_then(|c| c.ratio()),
            m60: c60.and_then(|c| c.ratio()),
        },
        calls: CallCounts {
            last_100: stats.map_or(0, |t| t.last_100.len()),
            m1: c1.map_or(0, |c| c.total()),
            m5: c5.map_or(0, |c| c.total()),
            m60: c60.map_or(0, |c| c.total()),
        },
        latency_ms: stats
            .and_then(|t| {
                t.samples
                    .percentiles(s.now, PERCENTILE_WINDOW, Measure::Latency)
            })
            .map(ms),
        ttft_ms: stats
            .and_then(|t| {
                t.samples
                    .percentiles(s.now, PERCENTILE_WINDOW, Measure::Ttft)
            })
            .map(ms),
        errors: stats.map_or_else(BTreeMap::new, |t| {
            t.errors
                .iter()
                .map(|(k, v)| ((*k).to_string(), *v))
                .collect()
        }),
        last_error: stats
            .and_then(|t| t.last_error)
            .map(|(class, at)| LastError {
                class: class.label().to_string(),
                at: rfc3339(s.wall(at)),
                ago_seconds: s.ago(at),
            }),
        last_success_ago_seconds: stats.and_then(|t| t.last_success).map(|at| s.ago(at)),
    }
}
