//! Per-target and per-route health, built from the router's events.
//!
//! [`HealthBook::apply`] folds one [`RouterEvent`] into the book; the side-car calls it
//! for every event it receives. What the router itself knows live (breaker state,
//! in-flight calls, quota block) is read from its `TargetHealth` when a status or an
//! evaluation needs it, not copied here.
//!
//! What counts against a target: transient, timeout, throttled, quota, auth and
//! protocol failures. A caller's mistake (invalid request, context window, content
//! policy) and an unsupported feature say nothing about the target and are left out
//! of every success rate (still counted by class).
//!
//! Nothing here stores an error message (which may echo a prompt or a credential):
//! only the error class and when it happened.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bulwark_core::ErrorClass;
use bulwark_router::{BreakerState, RouterEvent};
use tokio::time::Instant;
use tracing::warn;

use crate::window::{LastCalls, OutcomeWindows, Samples};

/// Ad-hoc targets and routes tracked at most (`provider/model` names are caller
/// input). Configured targets and routes are always tracked, on top of these.
pub const MAX_TRACKED: usize = 512;

/// Whether a failure of this class says something about the target.
pub fn counts_against_target(class: ErrorClass) -> bool {
    match class {
        ErrorClass::Transient
        | ErrorClass::Timeout
        | ErrorClass::Throttled
        | ErrorClass::Quota
        | ErrorClass::Auth
        | ErrorClass::Protocol => true,
        ErrorClass::InvalidRequest
        | ErrorClass::ContextWindow
        | ErrorClass::ContentPolicy
        | ErrorClass::Unsupported => false,
    }
}

/// What is known of one (provider, model).
#[derive(Debug, Clone)]
pub struct TargetStats {
    pub provider: String,
    pub model: String,
    pub last_100: LastCalls,
    pub windows: OutcomeWindows,
    pub samples: Samples,
    /// Attempts that ended in each error class, since start.
    pub errors: BTreeMap<&'static str, u64>,
    pub attempts: u64,
    pub last_error: Option<(ErrorClass, Instant)>,
    pub last_success: Option<Instant>,
    /// The last event about it (which ad-hoc target to forget when the book is full).
    pub last_seen: Instant,
    pub last_auth_failure: Option<Instant>,
    pub last_probe: Option<(bool, Instant)>,
    /// The last breaker transition seen in events.
    pub breaker: Option<(BreakerState, Instant)>,
    /// Latches for edges shorter than one evaluation tick: set by events, cleared by
    /// the evaluator after it looked.
    pub opened_since_tick: bool,
    pub quota_since_tick: bool,
}

impl TargetStats {
    fn new(provider: &str, model: &str, epoch: Instant) -> Self {
        TargetStats {
            provider: provider.to_string(),
            model: model.to_string(),
            last_100: LastCalls::default(),
            windows: OutcomeWindows::new(epoch),
            samples: Samples::default(),
            errors: BTreeMap::new(),
            attempts: 0,
            last_error: None,
            last_success: None,
            last_seen: epoch,
            last_auth_failure: None,
            last_probe: None,
            breaker: None,
            opened_since_tick: false,
            quota_since_tick: false,
        }
    }

    /// Whether the most recent attempt that counts for health succeeded.
    pub fn last_call_ok(&self) -> bool {
        match (self.last_success, self.last_error) {
            (Some(ok), Some((class, err))) => ok >= err || !counts_against_target(class),
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// A route's change of provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverRecord {
    pub from: String,
    pub to: String,
    pub at: Instant,
}

/// What is known of one route.
#[derive(Debug, Clone, Default)]
pub struct RouteStats {
    pub last_failover: Option<FailoverRecord>,
    /// (provider, model, when) of the last successful attempt.
    pub last_served: Option<(String, String, Instant)>,
    pub failovers: u64,
}

/// All targets and routes seen.
#[derive(Debug)]
pub struct HealthBook {
    epoch: Instant,
    pub targets: HashMap<(String, String), TargetStats>,
    pub routes: HashMap<String, RouteStats>,
    /// Configured (provider, model) targets and routes: never displaced by ad-hoc
    /// names, however many callers invent.
    configured_targets: HashSet<(String, String)>,
    configured_routes: HashSet<String>,
    overflow_warned: bool,
}

impl HealthBook {
    pub fn new(epoch: Instant) -> Self {
        HealthBook {
            epoch,
            targets: HashMap::new(),
            routes: HashMap::new(),
            configured_targets: HashSet::new(),
            configured_routes: HashSet::new(),
            overflow_warned: false,
        }
    }

    /// Marks the configured targets and routes, which are tracked whatever else is.
    pub fn with_configured(
        mut self,
        targets: impl IntoIterator<Item = (String, String)>,
        routes: impl IntoIterator<Item = String>,
    ) -> Self {
        self.configured_targets.extend(targets);
        self.configured_routes.extend(routes);
        self
    }

    pub fn target(&self, provider: &str, model: &str) -> Option<&TargetStats> {
        self.targets.get(&(provider.to_string(), model.to_string()))
    }

    fn target_mut(&mut self, provider: &str, model: &str) -> Option<&mut TargetStats> {
        let key = (provider.to_string(), model.to_string());
        if !self.targets.contains_key(&key) {
            let ad_hoc = self
                .targets
                .keys()
                .filter(|k| !self.configured_targets.contains(*k))
                .count();
            if !self.configured_targets.contains(&key) && ad_hoc >= MAX_TRACKED {
                // Full of ad-hoc names: the one heard of longest ago makes room.
                let oldest = self
                    .targets
                    .iter()
                    .filter(|(k, _)| !self.configured_targets.contains(*k))
                    .min_by_key(|(_, stats)| stats.last_seen)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.warn_overflow();
                    self.targets.remove(&oldest);
                }
            }
            let stats = TargetStats::new(provider, model, self.epoch);
            self.targets.insert(key.clone(), stats);
        }
        self.targets.get_mut(&key)
    }

    fn route_mut(&mut self, route: &str) -> Option<&mut RouteStats> {
        if !self.routes.contains_key(route) {
            let ad_hoc = self
                .routes
                .len()
                .saturating_sub(self.configured_routes.len());
            if !self.configured_routes.contains(route) && ad_hoc >= MAX_TRACKED {
                self.warn_overflow();
                return None;
            }
            self.routes.insert(route.to_string(), RouteStats::default());
        }
        self.routes.get_mut(route)
    }

    fn warn_overflow(&mut self) {
        if !self.overflow_warned {
            self.overflow_warned = true;
            warn!(
                limit = MAX_TRACKED,
                "health tracker full of ad-hoc provider/model names: the least recently used are forgotten (configured targets and routes are always tracked)"
            );
        }
    }

    /// Folds one router event in.
    pub fn apply(&mut self, event: &RouterEvent, now: Instant) {
        match event {
            RouterEvent::Attempt {
                route,
                provider,
                model,
                error,
                latency,
                ttft,
                ..
            } => {
                self.attempt(provider, model, *error, *latency, *ttft, now);
                if error.is_none()
                    && let Some(r) = self.route_mut(route)
                {
                    r.last_served = Some((provider.clone(), model.clone(), now));
                }
            }
            RouterEvent::Failover { route, from, to } => {
                if let Some(r) = self.route_mut(route) {
                    r.failovers += 1;
                    r.last_failover = Some(FailoverRecord {
                        from: from.clone(),
                        to: to.clone(),
                        at: now,
                    });
                }
            }
            RouterEvent::Hedge { .. } => {}
            RouterEvent::Breaker {
                provider,
                model,
                to,
                ..
            } => {
                if let Some(t) = self.target_mut(provider, model) {
                    t.last_seen = now;
                    t.breaker = Some((*to, now));
                    if *to == BreakerState::Open {
                        t.opened_since_tick = true;
                    }
                }
            }
            RouterEvent::Probe {
                provider,
                model,
                ok,
            } => {
                if let Some(t) = self.target_mut(provider, model) {
                    t.last_seen = now;
                    t.last_probe = Some((*ok, now));
                    if *ok {
                        // A good probe proves the credentials work again.
                        t.last_auth_failure = None;
                    }
                }
            }
        }
    }

    fn attempt(
        &mut self,
        provider: &str,
        model: &str,
        error: Option<ErrorClass>,
        latency: Duration,
        ttft: Option<Duration>,
        now: Instant,
    ) {
        let Some(t) = self.target_mut(provider, model) else {
            return;
        };
        t.last_seen = now;
        t.attempts += 1;
        match error {
            None => {
                t.last_100.record(true);
                t.windows.record(now, true);
                t.samples.record(now, latency, ttft);
                t.last_success = Some(now);
                t.last_auth_failure = None;
            }
            Some(class) => {
                *t.errors.entry(class.label()).or_insert(0) += 1;
                t.last_error = Some((class, now));
                if counts_against_target(class) {
                    t.last_100.record(false);
                    t.windows.record(now, false);
                }
                match class {
                    ErrorClass::Auth => t.last_auth_failure = Some(now),
                    ErrorClass::Quota => t.quota_since_tick = true,
                    _ => {}
                }
            }
        }
    }

    /// Clears the edge latches (after an evaluation looked at them).
    pub fn clear_latches(&mut self) {
        for t in self.targets.values_mut() {
            t.opened_since_tick = false;
            t.quota_since_tick = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(route: &str, provider: &str, error: Option<ErrorClass>) -> RouterEvent {
        RouterEvent::Attempt {
            route: route.into(),
            provider: provider.into(),
            model: "m".into(),
            error,
            status: None,
            latency: Duration::from_millis(200),
            ttft: error.is_none().then(|| Duration::from_millis(50)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_feed_rates_errors_and_serving_target() {
        let now = Instant::now();
        let mut book = HealthBook::new(now);
        book.apply(&attempt("chat", "a", Some(ErrorClass::Transient)), now);
        book.apply(&attempt("chat", "a", Some(ErrorClass::InvalidRequest)), now);
        book.apply(&attempt("chat", "b", None), now);
        let a = book.target("a", "m").unwrap();
        assert_eq!(a.attempts, 2);
        assert_eq!(a.errors.get("transient"), Some(&1));
        assert_eq!(a.errors.get("invalid_request"), Some(&1));
        // The caller's mistake does not count against the target.
        assert_eq!(a.last_100.len(), 1);
        assert_eq!(a.last_100.ratio(), Some(0.0));
        let served = book
            .routes
            .get("chat")
            .unwrap()
            .last_served
            .clone()
            .unwrap();
        assert_eq!((served.0.as_str(), served.1.as_str()), ("b", "m"));
    }

    #[tokio::test(start_paused = true)]
    async fn auth_failure_stays_until_a_success_or_good_probe() {
        let now = Instant::now();
        let mut book = HealthBook::new(now);
        book.apply(&attempt("chat", "a", Some(ErrorClass::Auth)), now);
        assert!(book.target("a", "m").unwrap().last_auth_failure.is_some());
        book.apply(
            &RouterEvent::Probe {
                provider: "a".into(),
                model: "m".into(),
                ok: true,
            },
            now,
        );
        assert!(book.target("a", "m").unwrap().last_auth_failure.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_book_is_bounded() {
        let now = Instant::now();
        let mut book = HealthBook::new(now);
        for i in 0..(MAX_TRACKED + 10) {
            book.apply(&attempt(&format!("p{i}/m"), &format!("p{i}"), None), now);
        }
        assert_eq!(book.targets.len(), MAX_TRACKED);
        assert_eq!(book.routes.len(), MAX_TRACKED);
    }

    /// Callers can name any `provider/model`: however many they invent, the
    /// configured targets and routes keep their stats (and so their alerts), and the
    /// ad-hoc names heard of longest ago make room for new ones.
    #[tokio::test(start_paused = true)]
    async fn ad_hoc_names_never_displace_configured_targets() {
        let start = Instant::now();
        let mut book = HealthBook::new(start).with_configured(
            [("primary".to_string(), "m".to_string())],
            ["chat".to_string()],
        );
        for i in 0..(MAX_TRACKED + 10) {
            let now = start + Duration::from_millis(i as u64);
            book.apply(&attempt(&format!("p{i}/m"), &format!("p{i}"), None), now);
        }
        let later = start + Duration::from_secs(10);
        book.apply(&attempt("chat", "primary", None), later);
        let primary = book
            .target("primary", "m")
            .expect("a configured target is tracked");
        assert_eq!(primary.attempts, 1);
        assert!(book.routes.contains_key("chat"));
        assert_eq!(book.targets.len(), MAX_TRACKED + 1);
        // The newest ad-hoc name is there; the oldest ones went.
        let newest = format!("p{}", MAX_TRACKED + 9);
        assert!(book.target(&newest, "m").is_some());
        assert!(book.target("p0", "m").is_none());
    }
}
