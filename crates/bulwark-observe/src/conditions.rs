//! Each rule's condition, judged on the gateway's state: one [`Observation`] per
//! (rule, subject) per tick, fed to the [`crate::rules::Evaluator`].
//!
//! Subjects: `latency` looks at each route's primary targets; `success_rate`,
//! `breaker_open`, `quota_exhausted` and `credentials_rejected` at every target of a
//! configured route (once, however many routes share it); `route_unavailable` and
//! `failover` at each configured route; the journal rules at the gateway. Ad-hoc
//! `provider/model` targets that no route names do not alert (their names are
//! caller input).
//!
//! Overrides: a route override applies to a route's subjects, and to a target in
//! the first route (configuration order) that has an override for that rule; a
//! provider override applies to its targets.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::config::{
    LATENCY_DEFAULTS, NoThreshold, RPO_DEFAULTS, Resolved, RuleConfig, RuleDefaults, RulesConfig,
    SUCCESS_RATE_DEFAULTS, Severity,
};
use crate::health::{HealthBook, TargetStats};
use crate::journal::JournalState;
use crate::live::{Live, LiveRoute};
use crate::rules::{Condition, Observation, RuleKind, Subject};
use crate::window::Measure;

/// Everything a tick judges.
pub struct Inputs<'a> {
    pub rules: &'a RulesConfig,
    pub book: &'a HealthBook,
    pub live: &'a Live,
    pub journal: Option<&'a JournalState>,
    pub now: Instant,
}

const STATE_DEFAULTS: [(RuleKind, RuleDefaults<()>); 6] = [
    (
        RuleKind::RouteUnavailable,
        RuleDefaults::state((), Severity::Emergency),
    ),
    (
        RuleKind::BreakerOpen,
        RuleDefaults::state((), Severity::Warning),
    ),
    (
        RuleKind::Failover,
        RuleDefaults::state((), Severity::Warning),
    ),
    (
        RuleKind::QuotaExhausted,
        RuleDefaults::state((), Severity::Critical),
    ),
    (
        RuleKind::CredentialsRejected,
        RuleDefaults::state((), Severity::Critical),
    ),
    (
        RuleKind::JournalWriteFailure,
        RuleDefaults::state((), Severity::Critical),
    ),
];

fn state_defaults(rule: RuleKind) -> RuleDefaults<()> {
    STATE_DEFAULTS
        .iter()
        .find(|(r, _)| *r == rule)
        .map_or(RuleDefaults::state((), Severity::Warning), |(_, d)| *d)
}

fn state_rule(rules: &RulesConfig, rule: RuleKind) -> &RuleConfig<NoThreshold> {
    match rule {
        RuleKind::RouteUnavailable => &rules.route_unavailable,
        RuleKind::BreakerOpen => &rules.breaker_open,
        RuleKind::Failover => &rules.failover,
        RuleKind::QuotaExhausted => &rules.quota_exhausted,
        RuleKind::CredentialsRejected => &rules.credentials_rejected,
        _ => &rules.journal_write_failure,
    }
}

fn resolve_state(
    rules: &RulesConfig,
    rule: RuleKind,
    route: Option<&str>,
    provider: Option<&str>,
) -> Resolved<()> {
    state_rule(rules, rule).resolve(&state_defaults(rule), route, provider, |_| ())
}

fn holds(summary: String, details: Value) -> Condition {
    let details = match details {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    Condition::Holds { summary, details }
}

fn observation<T>(
    rule: RuleKind,
    subject: Subject,
    condition: Condition,
    r: &Resolved<T>,
) -> Observation {
    Observation {
        rule,
        subject,
        condition,
        for_: r.for_,
        severity: r.severity,
    }
}

/// A short human duration: `850ms`, `7.2s`, `42s`, `1m30s`, `25m`, `2h5m`, `30h`.
pub fn short(d: Duration) -> String {
    let ms = d.as_millis();
    let secs = d.as_secs();
    if ms < 1000 {
        format!("{ms}ms")
    } else if secs < 10 && ms % 1000 >= 50 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        let (m, s) = (secs / 60, secs % 60);
        if m < 10 && s != 0 {
            format!("{m}m{s}s")
        } else {
            format!("{m}m")
        }
    } else {
        let (h, m) = (secs / 3600, secs % 3600 / 60);
        if h < 10 && m != 0 {
            format!("{h}h{m}m")
        } else {
            format!("{h}h")
        }
    }
}

/// Every observation for this tick.
pub fn observe(inp: &Inputs<'_>) -> Vec<Observation> {
    let mut out = Vec::new();
    latency(inp, &mut out);
    target_rules(inp, &mut out);
    route_rules(inp, &mut out);
    journal_rules(inp, &mut out);
    out
}

/// Targets of configured routes, once each.
fn route_targets(live: &Live) -> BTreeSet<(String, String)> {
    live.routes
        .iter()
        .flat_map(|r| {
            r.targets
                .iter()
                .map(|t| (t.provider.clone(), t.model.clone()))
        })
        .collect()
}

/// The first route holding the target that has an override for the rule.
fn override_route<'l, T>(
    cfg: &RuleConfig<T>,
    live: &'l Live,
    provider: &str,
    model: &str,
) -> Option<&'l str> {
    live.routes
        .iter()
        .filter(|r| cfg.routes.contains_key(&r.name))
        .find(|r| {
            r.targets
                .iter()
                .any(|t| t.provider == provider && t.model == model)
        })
        .map(|r| r.name.as_str())
}

fn latency(inp: &Inputs<'_>, out: &mut Vec<Observation>) {
    for route in &inp.live.routes {
        for t in route.primaries() {
            let r = inp.rules.latency.resolve(
                &LATENCY_DEFAULTS,
                Some(&route.name),
                Some(&t.provider),
                |d| d.0,
            );
            if !r.enabled {
                continue;
            }
            let subject = Subject {
                route: Some(route.name.clone()),
                provider: Some(t.provider.clone()),
                model: Some(t.model.clone()),
            };
            let stats = inp.book.target(&t.provider, &t.model);
            let (p95, n) = stats.map_or((None, 0), |s| {
                s.samples
                    .percentile(inp.now, r.window, Measure::TtftOrLatency, 95.0)
            });
            let condition = match p95 {
                None => Condition::NoData,
                Some(p95) if p95 > r.threshold && n >= r.min_calls as usize => holds(
                    format!(
                        "p95 time to first token of {}/{} (primary of route {}) is {}, above {} over the last {} ({n} calls)",
                        t.provider,
                        t.model,
                        route.name,
                        short(p95),
                        short(r.threshold),
                        short(r.window),
                    ),
                    json!({
                        "p95_seconds": p95.as_secs_f64(),
                        "threshold_seconds": r.threshold.as_secs_f64(),
                        "window_seconds": r.window.as_secs(),
                        "calls": n,
                    }),
                ),
                Some(p95) if p95 > r.threshold => Condition::NoData,
                Some(_) => Condition::Clear,
            };
            out.push(observation(RuleKind::Latency, subject, condition, &r));
        }
    }
}

fn success_rate(
    inp: &Inputs<'_>,
    provider: &str,
    model: &str,
    stats: Option<&TargetStats>,
) -> Option<Observation> {
    let cfg = &inp.rules.success_rate;
    let route = override_route(cfg, inp.live, provider, model);
    let r = cfg.resolve(&SUCCESS_RATE_DEFAULTS, route, Some(provider), |t| *t);
    if !r.enabled {
        return None;
    }
    let condition = match stats {
        None => Condition::NoData,
        Some(s) => {
            let counts = s.windows.counts(inp.now, r.window);
            match counts.ratio() {
                Some(ratio) if counts.total() >= u64::from(r.min_calls) => {
                    if ratio < r.threshold {
                        holds(
                            format!(
                                "success rate of {provider}/{model} is {:.0}%, below {:.0}% over the last {} ({} of {} calls failed)",
                                ratio * 100.0,
                                r.threshold * 100.0,
                                short(r.window),
                                counts.failed,
                                counts.total(),
                            ),
                            json!({
                                "success_ratio": ratio,
                                "threshold": r.threshold,
                                "window_seconds": r.window.as_secs(),
                                "calls": counts.total(),
                                "failed": counts.failed,
                                "errors": s.errors,
                            }),
                        )
                    } else {
                        Condition::Clear
                    }
                }
                // Too few calls to judge: a target whose last call worked is not
                // failing; one whose last call failed may be dead and unused.
                _ if s.last_call_ok() => Condition::Clear,
                _ => Condition::NoData,
            }
        }
    };
    Some(observation(
        RuleKind::SuccessRate,
        Subject::target(provider, model),
        condition,
        &r,
    ))
}

fn target_rules(inp: &Inputs<'_>, out: &mut Vec<Observation>) {
    for (provider, model) in route_targets(inp.live) {
        let stats = inp.book.target(&provider, &model);
        let live = inp.live.target(&provider, &model);
        out.extend(success_rate(inp, &provider, &model, stats));
        let subject = || Subject::target(&provider, &model);

        let cfg = &inp.rules.breaker_open;
        let r = resolve_state(
            inp.rules,
            RuleKind::BreakerOpen,
            override_route(cfg, inp.live, &provider, &model),
            Some(&provider),
        );
        if r.enabled {
            let state = live.map(|l| l.state);
            let opened = stats.is_some_and(|s| s.opened_since_tick);
            let condition = match (state, opened) {
                (Some(state), _) if state != bulwark_router::BreakerState::Closed => holds(
                    format!(
                        "circuit breaker of {provider}/{model} is {}",
                        state.label().replace('_', "-")
                    ),
                    json!({"state": state.label()}),
                ),
                (_, true) => holds(
                    format!("circuit breaker of {provider}/{model} opened"),
                    json!({"state": "open"}),
                ),
                _ => Condition::Clear,
            };
            out.push(observation(RuleKind::BreakerOpen, subject(), condition, &r));
        }

        let cfg = &inp.rules.quota_exhausted;
        let r = resolve_state(
            inp.rules,
            RuleKind::QuotaExhausted,
            override_route(cfg, inp.live, &provider, &model),
            Some(&provider),
        );
        if r.enabled {
            let blocked =
                live.is_some_and(|l| l.quota_blocked) || stats.is_some_and(|s| s.quota_since_tick);
            let condition = if blocked {
                holds(
                    format!(
                        "{provider}/{model} is out of quota or credit; it is probed until it recovers"
                    ),
                    json!({"quota_blocked": true}),
                )
            } else {
                Condition::Clear
            };
            out.push(observation(
                RuleKind::QuotaExhausted,
                subject(),
                condition,
                &r,
            ));
        }

        let cfg = &inp.rules.credentials_rejected;
        let r = resolve_state(
            inp.rules,
            RuleKind::CredentialsRejected,
            override_route(cfg, inp.live, &provider, &model),
            Some(&provider),
        );
        if r.enabled {
            let condition = match stats.and_then(|s| s.last_auth_failure) {
                Some(_) => holds(
                    format!(
                        "{provider} rejected Bulwark's credentials for {model}; check the provider's API key"
                    ),
                    json!({"error_class": "auth"}),
                ),
                None => Condition::Clear,
            };
            out.push(observation(
                RuleKind::CredentialsRejected,
                subject(),
                condition,
                &r,
            ));
        }
    }
}

fn describe_unavailable(inp: &Inputs<'_>, route: &LiveRoute) -> Option<Vec<String>> {
    let mut reasons = Vec::new();
    for t in &route.targets {
        let live = inp.live.target(&t.provider, &t.model)?;
        if live.available() {
            return None;
        }
        let why = if live.quota_blocked {
            "out of quota"
        } else {
            "breaker open"
        };
        reasons.push(format!("{}/{} ({why})", t.provider, t.model));
    }
    (!reasons.is_empty()).then_some(reasons)
}

fn route_rules(inp: &Inputs<'_>, out: &mut Vec<Observation>) {
    for route in &inp.live.routes {
        let r = resolve_state(
            inp.rules,
            RuleKind::RouteUnavailable,
            Some(&route.name),
            None,
        );
        if r.enabled && !route.targets.is_empty() {
            let condition = match describe_unavailable(inp, route) {
                Some(reasons) => holds(
                    format!(
                        "every target of route {} is unavailable: {}; requests to it fail",
                        route.name,
                        reasons.join(", ")
                    ),
                    json!({"targets": reasons}),
                ),
                None => Condition::Clear,
            };
            out.push(observation(
                RuleKind::RouteUnavailable,
                Subject::route(&route.name),
                condition,
                &r,
            ));
        }

        let r = resolve_state(inp.rules, RuleKind::Failover, Some(&route.name), None);
        if r.enabled {
            let condition = match inp.live.serving(route, inp.book) {
                None => Condition::NoData,
                Some(t) if route.is_primary(&t.provider, &t.model) => Condition::Clear,
                Some(t) => {
                    let primary: Vec<String> = route
                        .primaries()
                        .map(|p| format!("{}/{}", p.provider, p.model))
                        .collect();
                    holds(
                        format!(
                            "route {} failed over: served by {}/{} instead of {}",
                            route.name,
                            t.provider,
                            t.model,
                            primary.join(" or ")
                        ),
                        json!({"serving": format!("{}/{}", t.provider, t.model), "primary": primary}),
                    )
                }
            };
            out.push(observation(
                RuleKind::Failover,
                Subject::route(&route.name),
                condition,
                &r,
            ));
        }
    }
}

fn journal_rules(inp: &Inputs<'_>, out: &mut Vec<Observation>) {
    let Some(journal) = inp.journal else { return };
    let r = resolve_state(inp.rules, RuleKind::JournalWriteFailure, None, None);
    if r.enabled {
        let condition = if journal.writes_failing {
            holds(
                "journal writes are failing: requests are not being recorded durably".to_string(),
                json!({"durability": journal.durability}),
            )
        } else {
            Condition::Clear
        };
        out.push(observation(
            RuleKind::JournalWriteFailure,
            Subject::default(),
            condition,
            &r,
        ));
    }
    let r = inp
        .rules
        .rpo_exposure
        .resolve(&RPO_DEFAULTS, None, None, |d| Some(d.0));
    let threshold = r.threshold.or(journal.rpo_target);
    if r.enabled
        && let Some(threshold) = threshold
    {
        let condition = match journal.rpo_exposure {
            None => Condition::NoData,
            Some(exposure) if exposure > threshold => holds(
                format!(
                    "backup RPO exposure is {}, above its target of {}",
                    short(exposure),
                    short(threshold)
                ),
                json!({
                    "rpo_exposure_seconds": exposure.as_secs_f64(),
                    "rpo_target_seconds": threshold.as_secs_f64(),
                }),
            ),
            Some(_) => Condition::Clear,
        };
        out.push(observation(
            RuleKind::RpoExposure,
            Subject::default(),
            condition,
            &r,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::short;
    use std::time::Duration;

    #[test]
    fn short_durations_read_well() {
        let cases = [
            (850, "850ms"),
            (7_200, "7.2s"),
            (5_000, "5s"),
            (42_000, "42s"),
            (90_000, "1m30s"),
            (1_500_000, "25m"),
            (7_500_000, "2h5m"),
            (108_000_000, "30h"),
        ];
        for (ms, want) in cases {
            assert_eq!(short(Duration::from_millis(ms)), want);
        }
    }
}
