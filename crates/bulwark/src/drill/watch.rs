//! Watching the gateway during a drill: `/admin/status` every 100 ms (breaker states
//! of the route's targets, the serving target, firing alerts, reachability), plus
//! the callers' answers as they come in, printed as one line per event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bulwark_observe::StatusReport;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::gateway::Admin;
use super::say;
use super::traffic::{Outcome, millis};

const POLL_EVERY: Duration = Duration::from_millis(100);

/// A breaker changed state (as seen by the poller).
#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    pub at_ms: u64,
    /// `provider/model`.
    pub target: String,
    pub from: String,
    pub to: String,
}

/// The primary's condition, recorded on every change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrimaryState {
    pub at_ms: u64,
    /// Breaker state, or `unreachable` when the gateway did not answer.
    pub state: String,
    pub available: bool,
    pub throttled: bool,
}

impl PrimaryState {
    /// Closed, available, not throttled.
    pub fn healthy(&self) -> bool {
        self.state == "closed" && self.available && !self.throttled
    }
}

/// The target the gateway says serves the route, recorded on every change.
#[derive(Debug, Clone, Serialize)]
pub struct ServingChange {
    pub at_ms: u64,
    /// `provider/model`; `None` when no target is available.
    pub target: Option<String>,
}

/// An alert seen firing.
#[derive(Debug, Clone, Serialize)]
pub struct AlertSeen {
    pub rule: String,
    pub severity: String,
    pub subject: String,
    pub summary: String,
    /// When the alert's condition began to hold (the gateway's `since`), in drill
    /// time; it fires once the condition held for the rule's `for`.
    pub condition_since_ms: Option<u64>,
    /// The first status poll that showed it firing (within 100 ms of the trigger).
    pub fired_ms: u64,
    pub resolved_ms: Option<u64>,
}

/// A stretch when `/admin/status` did not answer.
#[derive(Debug, Clone, Serialize)]
pub struct Unreachable {
    pub from_ms: u64,
    pub to_ms: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Observed {
    pub polls: u64,
    pub transitions: Vec<Transition>,
    pub primary: Vec<PrimaryState>,
    pub serving: Vec<ServingChange>,
    pub alerts: Vec<AlertSeen>,
    pub unreachable: Vec<Unreachable>,
    pub last: Option<StatusReport>,
}

/// What the watcher needs to know about the drill.
pub struct WatchPlan {
    pub route: String,
    /// `provider/model` of the route's primary.
    pub primary: String,
    pub primary_provider: String,
    pub started: Instant,
    pub started_wall: SystemTime,
}

pub struct Watcher {
    pub observed: Arc<Mutex<Observed>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Watcher {
    pub fn start(plan: WatchPlan, admin: Admin, outcomes: Arc<Mutex<Vec<Outcome>>>) -> Watcher {
        let observed: Arc<Mutex<Observed>> = Arc::default();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(poll(plan, admin, outcomes, Arc::clone(&observed), stop_rx));
        Watcher {
            observed,
            stop,
            task,
        }
    }

    pub async fn finish(self) -> Observed {
        self.stop.send_replace(true);
        let _ = self.task.await;
        std::mem::take(&mut *lock(&self.observed))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the callers' answers looked like last (for the live lines).
#[derive(Default)]
struct CallerView {
    seen: usize,
    provider: Option<String>,
    failing: bool,
}

async fn poll(
    plan: WatchPlan,
    admin: Admin,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    observed: Arc<Mutex<Observed>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut states: HashMap<String, String> = HashMap::new();
    let mut firing: HashMap<String, usize> = HashMap::new();
    let mut callers = CallerView::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        watch_callers(&plan, &outcomes, &mut callers);
        let result = admin.status().await;
        let at_ms = millis(plan.started.elapsed());
        let mut o = lock(&observed);
        o.polls += 1;
        let report = match result {
            Ok(report) => report,
            Err(_) => {
                if o.unreachable.last().is_none_or(|u| u.to_ms.is_some()) {
                    say(at_ms, "gateway status: unreachable");
                    o.unreachable.push(Unreachable {
                        from_ms: at_ms,
                        to_ms: None,
                    });
                }
                record_primary(
                    &mut o,
                    PrimaryState {
                        at_ms,
                        state: "unreachable".into(),
                        available: false,
                        throttled: false,
                    },
                );
                // A new gateway starts with fresh breakers and no alerts.
                states.clear();
                for (_, i) in firing.drain() {
                    if let Some(alert) = o.alerts.get_mut(i) {
                        alert.resolved_ms.get_or_insert(at_ms);
                    }
                }
                continue;
            }
        };
        if let Some(gap) = o.unreachable.last_mut().filter(|u| u.to_ms.is_none()) {
            gap.to_ms = Some(at_ms);
            say(at_ms, "gateway status: answering again");
        }
        let Some(route) = report.routes.iter().find(|r| r.name == plan.route) else {
            o.last = Some(report);
            continue;
        };
        for t in &route.targets {
            let name = format!("{}/{}", t.provider, t.model);
            let before = states.insert(name.clone(), t.state.clone());
            let from = before.unwrap_or_else(|| "closed".to_string());
            if from != t.state {
                say(at_ms, &format!("breaker {name}: {from} → {}", t.state));
                o.transitions.push(Transition {
                    at_ms,
                    target: name.clone(),
                    from,
                    to: t.state.clone(),
                });
            }
            if name == plan.primary {
                record_primary(
                    &mut o,
                    PrimaryState {
                        at_ms,
                        state: t.state.clone(),
                        available: t.available,
                        throttled: t.throttled,
                    },
                );
            }
        }
        let serving = route
            .serving
            .as_ref()
            .map(|t| format!("{}/{}", t.provider, t.model));
        if o.serving.last().is_none_or(|s| s.target != serving) {
            if !o.serving.is_empty() {
                say(
                    at_ms,
                    &format!(
                        "route {} now served by {}",
                        plan.route,
                        serving
                            .as_deref()
                            .unwrap_or("nothing (no target available)")
                    ),
                );
            }
            o.serving.push(ServingChange {
                at_ms,
                target: serving,
            });
        }
        let mut now_firing = HashMap::new();
        for alert in &report.alerts {
            let index = match firing.get(&alert.dedup_key) {
                Some(i) => *i,
                None => {
                    let condition_since_ms = humantime::parse_rfc3339_weak(&alert.since)
                        .ok()
                        .and_then(|t| t.duration_since(plan.started_wall).ok())
                        .map(millis);
                    say(
                        at_ms,
                        &format!(
                            "ALERT {} {}: {}",
                            alert.severity.to_uppercase(),
                            alert.rule,
                            alert.summary
                        ),
                    );
                    o.alerts.push(AlertSeen {
                        rule: alert.rule.clone(),
                        severity: alert.severity.clone(),
                        subject: alert.subject.clone(),
                        summary: alert.summary.clone(),
                        condition_since_ms,
                        fired_ms: at_ms,
                        resolved_ms: None,
                    });
                    o.alerts.len() - 1
                }
            };
            now_firing.insert(alert.dedup_key.clone(), index);
        }
        for (key, i) in &firing {
            if !now_firing.contains_key(key)
                && let Some(alert) = o.alerts.get_mut(*i)
            {
                alert.resolved_ms = Some(at_ms);
                say(at_ms, &format!("resolved: {}", alert.summary));
            }
        }
        firing = now_firing;
        o.last = Some(report);
    }
}

fn record_primary(o: &mut Observed, state: PrimaryState) {
    let changed = o.primary.last().is_none_or(|p| {
        p.state != state.state || p.available != state.available || p.throttled != state.throttled
    });
    if changed {
        o.primary.push(state);
    }
}

/// One line when answers move to another provider, when callers start failing, and
/// when answers come back.
fn watch_callers(plan: &WatchPlan, outcomes: &Mutex<Vec<Outcome>>, view: &mut CallerView) {
    let fresh: Vec<Outcome> = {
        let all = lock(outcomes);
        let fresh = all.get(view.seen..).map(<[Outcome]>::to_vec);
        view.seen = all.len();
        fresh.unwrap_or_default()
    };
    for o in fresh {
        if o.complete {
            if view.failing {
                view.failing = false;
                say(o.done_ms, "callers: answers again");
            }
            if o.provider != view.provider {
                let who = o.provider.as_deref().unwrap_or("?");
                let role = if who == plan.primary_provider {
                    "the primary"
                } else {
                    "not the primary"
                };
                say(o.done_ms, &format!("callers: answers from {who} ({role})"));
                view.provider.clone_from(&o.provider);
            }
        } else if !view.failing {
            view.failing = true;
            say(
                o.done_ms,
                &format!(
                    "callers: failures ({})",
                    o.failure.as_deref().unwrap_or("no complete answer")
                ),
            );
        }
    }
}
