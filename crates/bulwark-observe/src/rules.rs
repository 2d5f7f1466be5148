//! The incident state machine: observations in, trigger and resolve events out.
//!
//! Each tick, [`crate::conditions`] turns the gateway's state into one
//! [`Observation`] per (rule, subject): the condition holds, is clear, or there is no
//! data to judge. [`Evaluator::step`] keeps one state per (rule, subject):
//!
//! ```text
//!            holds                 held for `for`
//!   ok ─────────────▶ pending ─────────────────────▶ firing ──(emit trigger)
//!    ▲  clear / no data  │                              │ clear, or subject gone
//!    └───────────────────┘◀─────────────────────────────┘ (emit resolve)
//! ```
//!
//! - One trigger per incident: a firing incident emits nothing more while it holds.
//! - "No data" keeps a firing incident firing (a dead target gets no calls, which is
//!   no proof it recovered) and drops a pending one (a fresh incident needs proof).
//! - The resolve carries the trigger's `dedup_key`. The key is stable for a subject —
//!   `{source}/{rule}/{subject}` — not per incident, so a gateway restarted during an
//!   incident re-triggers onto the same PagerDuty alert and later resolves it.
//!
//! Time is `tokio::time::Instant`; tests step it with paused time.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::config::Severity;

/// The rules, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleKind {
    Latency,
    SuccessRate,
    RouteUnavailable,
    BreakerOpen,
    Failover,
    QuotaExhausted,
    CredentialsRejected,
    JournalWriteFailure,
    RpoExposure,
}

impl RuleKind {
    /// The rule's name in configuration, metrics and payloads.
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::Latency => "latency",
            RuleKind::SuccessRate => "success_rate",
            RuleKind::RouteUnavailable => "route_unavailable",
            RuleKind::BreakerOpen => "breaker_open",
            RuleKind::Failover => "failover",
            RuleKind::QuotaExhausted => "quota_exhausted",
            RuleKind::CredentialsRejected => "credentials_rejected",
            RuleKind::JournalWriteFailure => "journal_write_failure",
            RuleKind::RpoExposure => "rpo_exposure",
        }
    }
}

/// What an alert is about. Empty for gateway-wide rules (journal, RPO).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Subject {
    pub route: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
}

impl Subject {
    pub fn route(route: &str) -> Self {
        Subject {
            route: Some(route.to_string()),
            ..Subject::default()
        }
    }

    pub fn target(provider: &str, model: &str) -> Self {
        Subject {
            route: None,
            provider: Some(provider.to_string()),
            model: Some(model.to_string()),
        }
    }

    /// `route/provider/model` with absent parts left out; `gateway` when all are.
    pub fn key(&self) -> String {
        let parts: Vec<&str> = [&self.route, &self.provider, &self.model]
            .into_iter()
            .filter_map(|p| p.as_deref())
            .collect();
        if parts.is_empty() {
            "gateway".to_string()
        } else {
            parts.join("/")
        }
    }
}

/// A rule's verdict on one subject this tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The condition holds: a one-line summary and the measurements behind it.
    Holds {
        summary: String,
        details: Map<String, Value>,
    },
    Clear,
    NoData,
}

/// One rule applied to one subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub rule: RuleKind,
    pub subject: Subject,
    pub condition: Condition,
    pub for_: Duration,
    pub severity: Severity,
}

/// A firing incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub rule: RuleKind,
    pub subject: Subject,
    pub severity: Severity,
    pub dedup_key: String,
    /// The summary and details when it fired (updated while it stays firing).
    pub summary: String,
    pub details: Map<String, Value>,
    pub since: Instant,
    pub since_wall: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Trigger,
    Resolve,
}

impl Action {
    pub fn label(self) -> &'static str {
        match self {
            Action::Trigger => "trigger",
            Action::Resolve => "resolve",
        }
    }
}

/// A trigger or a resolve, to be notified.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    pub action: Action,
    pub incident: Incident,
    /// When the event was decided (wall clock, for payload timestamps).
    pub at: SystemTime,
}

#[derive(Debug)]
enum State {
    Pending {
        since: Instant,
    },
    /// Boxed: an incident (its details a JSON map) is far larger than `Pending`.
    Firing(Box<Incident>),
}

/// Incident states by (rule, subject).
#[derive(Debug)]
pub struct Evaluator {
    source: String,
    states: HashMap<(RuleKind, Subject), State>,
}

impl Evaluator {
    /// `source` names this gateway in dedup keys.
    pub fn new(source: impl Into<String>) -> Self {
        Evaluator {
            source: source.into(),
            states: HashMap::new(),
        }
    }

    /// The stable dedup key of a subject's incidents (PagerDuty allows 255 characters).
    pub fn dedup_key(&self, rule: RuleKind, subject: &Subject) -> String {
        let key = format!("bulwark/{}/{}/{}", self.source, rule.name(), subject.key());
        if key.len() <= 255 {
            return key;
        }
        let mut cut = 200;
        while !key.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}#{:016x}", &key[..cut], fnv1a(key.as_bytes()))
    }

    /// Applies one tick's observations. Subjects not observed this tick (a rule
    /// disabled, a route removed) resolve if they were firing.
    pub fn step(&mut self, now: Instant, observations: Vec<Observation>) -> Vec<AlertEvent> {
        let wall = SystemTime::now();
        let mut events = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for mut obs in observations {
            let condition = std::mem::replace(&mut obs.condition, Condition::NoData);
            let key = (obs.rule, obs.subject.clone());
            seen.insert(key.clone());
            let state = self.states.remove(&key);
            let next = match (state, condition) {
                (None, Condition::Holds { summary, details }) => {
                    if obs.for_.is_zero() {
                        let incident = self.incident(&obs, summary, details, now, now, wall);
                        events.push(AlertEvent {
                            action: Action::Trigger,
                            incident: incident.clone(),
                            at: wall,
                        });
                        Some(State::Firing(Box::new(incident)))
                    } else {
                        Some(State::Pending { since: now })
                    }
                }
                (Some(State::Pending { since }), Condition::Holds { summary, details }) => {
                    if now.saturating_duration_since(since) >= obs.for_ {
                        let incident = self.incident(&obs, summary, details, since, now, wall);
                        events.push(AlertEvent {
                            action: Action::Trigger,
                            incident: incident.clone(),
                            at: wall,
                        });
                        Some(State::Firing(Box::new(incident)))
                    } else {
                        Some(State::Pending { since })
                    }
                }
                (Some(State::Firing(mut incident)), Condition::Holds { summary, details }) => {
                    incident.summary = summary;
                    incident.details = details;
                    Some(State::Firing(incident))
                }
                (Some(State::Firing(incident)), Condition::NoData) => Some(State::Firing(incident)),
                (Some(State::Firing(incident)), Condition::Clear) => {
                    events.push(AlertEvent {
                        action: Action::Resolve,
                        incident: *incident,
                        at: wall,
                    });
                    None
                }
                (Some(State::Pending { .. }) | None, Condition::Clear | Condition::NoData) => None,
            };
            if let Some(next) = next {
                self.states.insert(key, next);
            }
        }
        let gone: Vec<_> = self
            .states
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(State::Firing(incident)) = self.states.remove(&key) {
                events.push(AlertEvent {
                    action: Action::Resolve,
                    incident: *incident,
                    at: wall,
                });
            }
        }
        // Triggers and resolves in a stable order (emergencies first) for the channels.
        events.sort_by(|a, b| {
            b.incident
                .severity
                .cmp(&a.incident.severity)
                .then(a.incident.dedup_key.cmp(&b.incident.dedup_key))
        });
        events
    }

    fn incident(
        &self,
        obs: &Observation,
        summary: String,
        details: Map<String, Value>,
        since: Instant,
        now: Instant,
        wall: SystemTime,
    ) -> Incident {
        let held = now.saturating_duration_since(since);
        Incident {
            rule: obs.rule,
            subject: obs.subject.clone(),
            severity: obs.severity,
            dedup_key: self.dedup_key(obs.rule, &obs.subject),
            summary,
            details,
            since,
            since_wall: wall.checked_sub(held).unwrap_or(wall),
        }
    }

    /// Incidents firing now, most severe first.
    pub fn firing(&self) -> Vec<Incident> {
        let mut out: Vec<Incident> = self
            .states
            .values()
            .filter_map(|s| match s {
                State::Firing(i) => Some(Incident::clone(i)),
                State::Pending { .. } => None,
            })
            .collect();
        out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.since.cmp(&b.since)));
        out
    }
}

/// FNV-1a 64: a stable, dependency-free hash for shortening long keys.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(condition: Condition, for_: Duration) -> Observation {
        Observation {
            rule: RuleKind::SuccessRate,
            subject: Subject::target("openai", "gpt"),
            condition,
            for_,
            severity: Severity::Critical,
        }
    }

    fn holds() -> Condition {
        Condition::Holds {
            summary: "bad".into(),
            details: Map::new(),
        }
    }

    async fn tick(ev: &mut Evaluator, c: Condition, for_: Duration) -> Vec<AlertEvent> {
        tokio::time::advance(Duration::from_secs(1)).await;
        ev.step(Instant::now(), vec![obs(c, for_)])
    }

    #[tokio::test(start_paused = true)]
    async fn fires_once_after_for_and_resolves_with_the_same_key() {
        let minute = Duration::from_secs(60);
        let mut ev = Evaluator::new("gw1");
        let start = Instant::now();
        let mut triggers = Vec::new();
        let mut resolves = Vec::new();
        for _ in 0..120 {
            for e in tick(&mut ev, holds(), minute).await {
                match e.action {
                    Action::Trigger => triggers.push((Instant::now() - start, e)),
                    Action::Resolve => resolves.push(e),
                }
            }
        }
        assert_eq!(triggers.len(), 1, "one trigger per incident");
        // Pending from t=1s; fires once it held 60 s.
        assert_eq!(triggers[0].0, Duration::from_secs(61));
        let key = triggers[0].1.incident.dedup_key.clone();
        assert_eq!(key, "bulwark/gw1/success_rate/openai/gpt");
        assert_eq!(ev.firing().len(), 1);
        // No data keeps it firing; clear resolves it, once.
        assert!(tick(&mut ev, Condition::NoData, minute).await.is_empty());
        let out = tick(&mut ev, Condition::Clear, minute).await;
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].action, Action::Resolve);
        assert_eq!(out[0].incident.dedup_key, key);
        assert!(tick(&mut ev, Condition::Clear, minute).await.is_empty());
        assert!(ev.firing().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_blip_shorter_than_for_never_fires() {
        let mut ev = Evaluator::new("gw");
        let minute = Duration::from_secs(60);
        for _ in 0..59 {
            assert!(tick(&mut ev, holds(), minute).await.is_empty());
        }
        assert!(tick(&mut ev, Condition::Clear, minute).await.is_empty());
        // Pending restarts from scratch, and "no data" drops a pending incident too.
        for _ in 0..30 {
            assert!(tick(&mut ev, holds(), minute).await.is_empty());
        }
        assert!(tick(&mut ev, Condition::NoData, minute).await.is_empty());
        for _ in 0..60 {
            assert!(tick(&mut ev, holds(), minute).await.is_empty());
        }
        assert_eq!(tick(&mut ev, holds(), minute).await.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_for_fires_at_once_and_a_vanished_subject_resolves() {
        let mut ev = Evaluator::new("gw");
        let out = tick(&mut ev, holds(), Duration::ZERO).await;
        assert_eq!(out.len(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        let out = ev.step(Instant::now(), vec![]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].action, Action::Resolve);
    }

    #[test]
    fn long_keys_are_shortened_stably() {
        let ev = Evaluator::new("gw");
        let subject = Subject::route(&"r".repeat(400));
        let a = ev.dedup_key(RuleKind::Failover, &subject);
        assert!(a.len() <= 255);
        assert_eq!(a, ev.dedup_key(RuleKind::Failover, &subject));
        assert_ne!(
            a,
            ev.dedup_key(RuleKind::Failover, &Subject::route(&"r".repeat(401)))
        );
    }
}
