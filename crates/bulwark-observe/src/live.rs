//! A consistent read of what the router knows right now: each target's breaker,
//! in-flight count and quota block, and each configured route's targets in priority
//! order. Read once per tick and per status request; cheap (atomics and short locks).
//!
//! Also the two judgements status and alerts share: which targets are a route's
//! primaries, and which target serves a route now.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use bulwark_router::{BreakerState, Router};
use tokio::time::Instant;

use crate::health::HealthBook;

/// One target as the router sees it now.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveTarget {
    pub provider: String,
    pub model: String,
    pub state: BreakerState,
    pub state_since: Instant,
    pub in_flight: u32,
    pub quota_blocked: bool,
    pub throttled: bool,
}

impl LiveTarget {
    /// Can take caller traffic: breaker not open, not blocked on quota. A half-open
    /// breaker admits trial calls, so it counts as available.
    pub fn available(&self) -> bool {
        self.state != BreakerState::Open && !self.quota_blocked
    }
}

/// One target of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRouteTarget {
    pub provider: String,
    pub model: String,
    pub priority: u32,
}

/// A configured route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRoute {
    pub name: String,
    /// Sorted by priority (stable: configuration order breaks ties).
    pub targets: Vec<LiveRouteTarget>,
}

impl LiveRoute {
    /// The targets with the best (lowest) priority: a balanced route has several.
    pub fn primaries(&self) -> impl Iterator<Item = &LiveRouteTarget> {
        let best = self.targets.first().map(|t| t.priority);
        self.targets
            .iter()
            .filter(move |t| Some(t.priority) == best)
    }

    pub fn is_primary(&self, provider: &str, model: &str) -> bool {
        self.primaries()
            .any(|t| t.provider == provider && t.model == model)
    }
}

/// The router's state now.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub targets: BTreeMap<(String, String), LiveTarget>,
    pub routes: Vec<LiveRoute>,
}

impl Live {
    pub fn read(router: &Router) -> Live {
        let targets = router
            .targets()
            .into_iter()
            .map(|h| {
                let target = LiveTarget {
                    provider: h.provider.clone(),
                    model: h.model.clone(),
                    state: h.breaker.state(),
                    state_since: h.breaker.changed_at(),
                    in_flight: h.in_flight.load(Ordering::Relaxed),
                    quota_blocked: h.quota_blocked(),
                    throttled: h.throttled_until().is_some(),
                };
                ((h.provider.clone(), h.model.clone()), target)
            })
            .collect();
        let routes = router
            .route_names()
            .iter()
            .filter_map(|name| router.resolve(name).ok())
            .map(|route| {
                let mut targets: Vec<LiveRouteTarget> = route
                    .targets
                    .iter()
                    .map(|t| LiveRouteTarget {
                        provider: t.health.provider.clone(),
                        model: t.health.model.clone(),
                        priority: t.priority,
                    })
                    .collect();
                targets.sort_by_key(|t| t.priority);
                LiveRoute {
                    name: route.name.clone(),
                    targets,
                }
            })
            .collect();
        Live { targets, routes }
    }

    pub fn target(&self, provider: &str, model: &str) -> Option<&LiveTarget> {
        self.targets.get(&(provider.to_string(), model.to_string()))
    }

    fn available(&self, t: &LiveRouteTarget) -> bool {
        self.target(&t.provider, &t.model)
            .is_none_or(LiveTarget::available)
    }

    /// The target serving `route` now: the one that last answered it, while it is
    /// still available; otherwise the first available target in priority order (the
    /// one the next request would try first). `None` when every target is unavailable.
    pub fn serving<'r>(
        &self,
        route: &'r LiveRoute,
        book: &HealthBook,
    ) -> Option<&'r LiveRouteTarget> {
        let last = book
            .routes
            .get(&route.name)
            .and_then(|r| r.last_served.as_ref());
        if let Some((provider, model, _)) = last
            && let Some(t) = route
                .targets
                .iter()
                .find(|t| &t.provider == provider && &t.model == model)
            && self.available(t)
        {
            return Some(t);
        }
        route.targets.iter().find(|t| self.available(t))
    }

    /// The worst breaker state among each provider's targets.
    pub fn provider_states(&self) -> BTreeMap<String, BreakerState> {
        let mut out: BTreeMap<String, BreakerState> = BTreeMap::new();
        for t in self.targets.values() {
            let worst = out
                .entry(t.provider.clone())
                .or_insert(BreakerState::Closed);
            if t.state.as_gauge() > worst.as_gauge() {
                *worst = t.state;
            }
        }
        out
    }
}
