//! Drill scenarios: the step format read from YAML files, the built-in scenarios
//! written in that same format, and the resolution of a scenario against a
//! configuration into a [`Plan`] of concrete, timed actions.
//!
//! ```yaml
//! name: primary-outage-then-restart
//! description: The primary is down for 20 s, then the gateway is killed.
//! duration: 60s              # traffic runs this long (`--duration` wins)
//! route: chat                # `--route` wins; the config's first route otherwise
//! traffic: {callers: 4, interval: 250ms, stream_share: 0.5, max_tokens: 32}
//! steps:
//!   - at: 25%                # a time (`15s`) or a share of the duration (`25%`)
//!     chaos: {target: primary, fault: {kind: down}, duration: 20s}
//!   - at: 45s
//!     kill: true             # SIGKILL the gateway, restart it on the same journal
//!   - at: 50s
//!     kill: {then: restore, after: 2s, wait_for_backup: false}
//!   - at: 55s
//!     clear_chaos: true
//! ```
//!
//! A chaos `target` is `primary` (the route's first target), `secondary`, `all` (every
//! target of the route), or a configured `provider` / `provider/model`; `fault` is
//! exactly the body `POST /admin/chaos` takes. `kill.then: restart` starts a new
//! gateway on the same journal (RTO, and RPO against that journal); `then: restore`
//! rebuilds the journal from `backup.to` into a new file and starts a fresh gateway on
//! it (site loss). `wait_for_backup: true` first stops traffic and waits until the
//! backup has shipped everything, so the loss measures the restore path alone.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bulwark_core::config::{Config, HumanDuration, RouteConfig};
use bulwark_router::chaos::ChaosFault;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The built-in scenarios, with a one-line description each.
pub const BUILT_INS: [(&str, &str); 8] = [
    ("primary-down", "the route's primary target is hard down"),
    (
        "brownout",
        "the primary answers, but its first tokens come late (twice the route's first_token timeout)",
    ),
    ("429-storm", "the primary answers every call with 429"),
    (
        "flapping",
        "the primary goes down and comes back three times",
    ),
    ("all-down", "every target of the route is down"),
    (
        "kill-restart",
        "the gateway is killed with SIGKILL and restarted on the same journal",
    ),
    (
        "site-loss",
        "the gateway's machine is lost once its backup has caught up (traffic paused until the RPO exposure is 0, as in an evacuation): a fresh gateway starts on a journal restored from backup; nothing answered may be lost",
    ),
    (
        "site-loss-abrupt",
        "the gateway's machine is lost mid-traffic: a fresh gateway starts on a journal restored from backup; what was answered since the last shipment (at most backup.interval plus an upload) is lost",
    ),
];

/// A duration, or a share of the drill's duration (`25%`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Span {
    Fixed(Duration),
    Share(f64),
}

impl Span {
    pub fn resolve(self, total: Duration) -> Duration {
        match self {
            Span::Fixed(d) => d,
            Span::Share(share) => total.mul_f64(share),
        }
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let trimmed = raw.trim();
        if let Some(percent) = trimmed.strip_suffix('%') {
            let value: f64 = percent.trim().parse().map_err(|_| {
                serde::de::Error::custom(format!("{raw:?} is not a share like `25%`"))
            })?;
            if !(0.0..=100.0).contains(&value) {
                return Err(serde::de::Error::custom(format!(
                    "{raw:?}: a share must be between 0% and 100%"
                )));
            }
            return Ok(Span::Share(value / 100.0));
        }
        humantime::parse_duration(trimmed)
            .map(Span::Fixed)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{raw:?} is neither a duration like `15s` nor a share like `25%`: {e}"
                ))
            })
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Span::Fixed(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            Span::Share(share) => {
                s.serialize_str(&format!("{}%", (share * 100_000.0).round() / 1000.0))
            }
        }
    }
}

/// A scenario as written (a YAML file, or a built-in).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Defaults to the file's name without its extension.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub duration: Option<HumanDuration>,
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub traffic: TrafficSpec,
    pub steps: Vec<Step>,
}

/// The drill's own callers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrafficSpec {
    /// Callers, each sending a request every `interval` whether or not its earlier
    /// ones were answered (open loop: a slow outage is sampled as often as the
    /// healthy minutes around it).
    pub callers: u32,
    /// How often each caller sends a request.
    pub interval: HumanDuration,
    /// Share of requests that stream (the rest are plain JSON answers).
    pub stream_share: f64,
    /// `max_tokens` of each request, to keep a drill against paid providers cheap.
    pub max_tokens: u32,
}

impl Default for TrafficSpec {
    fn default() -> Self {
        TrafficSpec {
            callers: 4,
            interval: HumanDuration::millis(250),
            stream_share: 0.5,
            max_tokens: 32,
        }
    }
}

/// One step: at a time, exactly one action.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub at: Span,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chaos: Option<ChaosStep>,
    #[serde(
        default,
        deserialize_with = "kill_step",
        skip_serializing_if = "Option::is_none"
    )]
    pub kill: Option<KillStep>,
    /// Remove every chaos rule in force.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_chaos: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosStep {
    /// `primary`, `secondary`, `all`, `provider` or `provider/model`.
    pub target: String,
    pub fault: ChaosFault,
    pub duration: Span,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillStep {
    #[serde(default)]
    pub then: AfterKill,
    /// Time between the kill and the restart (a supervisor's delay, or the time it
    /// takes to decide to fail over to another site).
    #[serde(default = "zero")]
    pub after: HumanDuration,
    /// Stop traffic and wait until the backup shipped every record before the kill.
    #[serde(default)]
    pub wait_for_backup: bool,
}

fn zero() -> HumanDuration {
    HumanDuration::secs(0)
}

impl Default for KillStep {
    fn default() -> Self {
        KillStep {
            then: AfterKill::default(),
            after: zero(),
            wait_for_backup: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterKill {
    /// A new gateway on the same journal.
    #[default]
    Restart,
    /// A fresh gateway on a journal restored from `backup.to`.
    Restore,
}

/// `kill: true` or `kill: {then: …}`.
fn kill_step<'de, D: Deserializer<'de>>(d: D) -> Result<Option<KillStep>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    match value {
        serde_json::Value::Bool(true) => Ok(Some(KillStep::default())),
        serde_json::Value::Bool(false) | serde_json::Value::Null => Ok(None),
        other => serde_json::from_value(other)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// Where a scenario comes from.
pub enum Source {
    BuiltIn(&'static str),
    /// A YAML file, already decoded, and its path.
    File(Scenario, String),
}

/// Finds a scenario: a built-in name, or a YAML file (read and decoded here).
pub fn locate(raw: &str) -> anyhow::Result<Source> {
    if let Some((name, _)) = BUILT_INS.iter().find(|(n, _)| *n == raw) {
        return Ok(Source::BuiltIn(name));
    }
    let path = Path::new(raw);
    let looks_like_file = raw.ends_with(".yaml") || raw.ends_with(".yml") || raw.contains('/');
    if !looks_like_file && !path.exists() {
        let names: Vec<&str> = BUILT_INS.iter().map(|(n, _)| *n).collect();
        anyhow::bail!(
            "no scenario named {raw:?}: use one of {} or the path of a YAML scenario file",
            names.join(", ")
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the scenario file", path.display()))?;
    let mut scenario = parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if scenario.name.is_empty() {
        scenario.name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "custom".to_string());
    }
    Ok(Source::File(scenario, path.display().to_string()))
}

/// Decodes scenario YAML; an error names the field at fault (`steps[1].chaos.fault`).
pub fn parse(text: &str) -> Result<Scenario, String> {
    let tree: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    if tree.is_null() {
        return Err("the file is empty; it needs at least `steps:`".into());
    }
    serde_path_to_error::deserialize(tree).map_err(|e| {
        let field = e.path().to_string();
        if field == "." {
            e.into_inner().to_string()
        } else {
            format!("{field}: {}", e.into_inner())
        }
    })
}

fn share(percent: f64) -> Span {
    Span::Share(percent / 100.0)
}

fn chaos_step(at: f64, target: &str, fault: ChaosFault, duration: f64) -> Step {
    Step {
        at: share(at),
        chaos: Some(ChaosStep {
            target: target.to_string(),
            fault,
            duration: share(duration),
        }),
        kill: None,
        clear_chaos: false,
    }
}

fn kill_at(at: f64, then: AfterKill) -> Step {
    Step {
        at: share(at),
        chaos: None,
        kill: Some(KillStep {
            then,
            ..KillStep::default()
        }),
        clear_chaos: false,
    }
}

/// A built-in scenario, in the step model (times as shares of the duration, so
/// `--duration` scales them). The brownout's delay depends on the route's timeout.
pub fn built_in(name: &str, route: &RouteConfig) -> Option<Scenario> {
    let description = BUILT_INS.iter().find(|(n, _)| *n == name)?.1.to_string();
    let steps = match name {
        "primary-down" => vec![chaos_step(25.0, "primary", ChaosFault::Down, 40.0)],
        "brownout" => {
            let delay = (route.timeouts.first_token.0 * 2).max(Duration::from_secs(1));
            vec![chaos_step(
                25.0,
                "primary",
                ChaosFault::SlowFirstToken {
                    delay: HumanDuration(delay),
                },
                40.0,
            )]
        }
        "429-storm" => vec![chaos_step(
            25.0,
            "primary",
            ChaosFault::Throttle {
                retry_after: HumanDuration::secs(1),
            },
            40.0,
        )],
        "flapping" => [20.0, 40.0, 60.0]
            .into_iter()
            .map(|at| chaos_step(at, "primary", ChaosFault::Down, 10.0))
            .collect(),
        "all-down" => vec![chaos_step(25.0, "all", ChaosFault::Down, 40.0)],
        "kill-restart" => vec![kill_at(40.0, AfterKill::Restart)],
        "site-loss" => {
            let mut step = kill_at(40.0, AfterKill::Restore);
            if let Some(kill) = step.kill.as_mut() {
                kill.wait_for_backup = true;
            }
            vec![step]
        }
        "site-loss-abrupt" => vec![kill_at(40.0, AfterKill::Restore)],
        _ => return None,
    };
    Some(Scenario {
        name: name.to_string(),
        description,
        duration: None,
        route: None,
        traffic: TrafficSpec::default(),
        steps,
    })
}

/// A scenario resolved against a configuration: concrete times and targets.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub name: String,
    pub description: String,
    /// `built-in` or the scenario file's path.
    pub source: String,
    #[serde(serialize_with = "ser_ms")]
    pub duration: Duration,
    pub traffic: TrafficSpec,
    pub actions: Vec<Action>,
    /// The scenario as written.
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Action {
    #[serde(serialize_with = "ser_ms")]
    pub at: Duration,
    #[serde(flatten)]
    pub kind: ActionKind,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ActionKind {
    Chaos {
        /// `provider/model` or `provider`, as `POST /admin/chaos` takes them.
        targets: Vec<String>,
        fault: ChaosFault,
        #[serde(serialize_with = "ser_ms")]
        duration: Duration,
    },
    Kill {
        then: AfterKill,
        #[serde(serialize_with = "ser_ms")]
        after: Duration,
        wait_for_backup: bool,
    },
    ClearChaos,
}

fn ser_ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Resolves `scenario` on `route` of `config` for a drill of `duration`.
pub fn resolve(
    scenario: &Scenario,
    source: String,
    config: &Config,
    route: &RouteConfig,
    duration: Duration,
) -> Result<Plan, String> {
    if duration < Duration::from_secs(2) {
        return Err("the drill needs a duration of at least 2s".into());
    }
    if scenario.steps.is_empty() {
        return Err("steps: a scenario needs at least one step".into());
    }
    let traffic = &scenario.traffic;
    if traffic.callers == 0 || traffic.callers > 64 {
        return Err("traffic.callers must be between 1 and 64".into());
    }
    if !(0.0..=1.0).contains(&traffic.stream_share) {
        return Err("traffic.stream_share must be between 0 and 1".into());
    }
    let mut actions = Vec::new();
    for (i, step) in scenario.steps.iter().enumerate() {
        let field = |name: &str| format!("steps[{i}].{name}");
        let at = step.at.resolve(duration);
        if at >= duration {
            return Err(format!(
                "{}: {} is not before the end of the drill ({})",
                field("at"),
                humantime::format_duration(at),
                humantime::format_duration(duration)
            ));
        }
        let chosen = usize::from(step.chaos.is_some())
            + usize::from(step.kill.is_some())
            + usize::from(step.clear_chaos);
        if chosen != 1 {
            return Err(format!(
                "steps[{i}]: a step needs exactly one of `chaos`, `kill` or `clear_chaos`"
            ));
        }
        let kind = if let Some(chaos) = &step.chaos {
            let length = chaos.duration.resolve(duration);
            if length.is_zero() {
                return Err(format!("{}: must be more than 0s", field("chaos.duration")));
            }
            ActionKind::Chaos {
                targets: chaos_targets(&chaos.target, config, route)
                    .map_err(|e| format!("{}: {e}", field("chaos.target")))?,
                fault: chaos.fault.clone(),
                duration: length,
            }
        } else if let Some(kill) = &step.kill {
            if kill.then == AfterKill::Restore {
                check_restorable(config).map_err(|e| format!("{}: {e}", field("kill")))?;
            }
            if kill.wait_for_backup && config.backup.is_none() {
                return Err(format!(
                    "{}: wait_for_backup needs a `backup:` section in the configuration",
                    field("kill")
                ));
            }
            ActionKind::Kill {
                then: kill.then,
                after: kill.after.0,
                wait_for_backup: kill.wait_for_backup,
            }
        } else {
            ActionKind::ClearChaos
        };
        actions.push(Action { at, kind });
    }
    actions.sort_by_key(|a| a.at);
    Ok(Plan {
        name: scenario.name.clone(),
        description: scenario.description.clone(),
        source,
        duration,
        traffic: scenario.traffic.clone(),
        actions,
        steps: scenario.steps.clone(),
    })
}

/// A site-loss needs a backup to restore from, of a SQLite journal.
fn check_restorable(config: &Config) -> Result<(), String> {
    if config.backup.is_none() {
        return Err(
            "restoring needs a `backup:` section in the configuration (the drill restores from `backup.to`)"
                .into(),
        );
    }
    if config.journal.backend != bulwark_core::config::journal::BackendKind::Sqlite {
        return Err("restoring from backup works with a SQLite journal only".into());
    }
    if config.journal.durability == bulwark_core::config::journal::Durability::Off {
        return Err("`journal.durability: off` records nothing to back up or restore".into());
    }
    Ok(())
}

/// `primary`, `secondary`, `all`, `provider`, `provider/model` → chaos API targets.
fn chaos_targets(raw: &str, config: &Config, route: &RouteConfig) -> Result<Vec<String>, String> {
    let name = |i: usize| {
        route
            .targets
            .get(i)
            .map(|t| format!("{}/{}", t.provider, t.model))
    };
    match raw {
        "primary" => name(0)
            .map(|t| vec![t])
            .ok_or_else(|| "the route has no targets".to_string()),
        "secondary" => name(1).map(|t| vec![t]).ok_or_else(|| {
            format!(
                "route `{}` has no second target to call `secondary`",
                route.model
            )
        }),
        "all" => Ok(route
            .targets
            .iter()
            .map(|t| format!("{}/{}", t.provider, t.model))
            .collect()),
        other => {
            let provider = other.split_once('/').map_or(other, |(p, _)| p);
            if config.providers.iter().any(|p| p.name == provider) {
                Ok(vec![other.to_string()])
            } else {
                let known: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
                Err(format!(
                    "{other:?} is not `primary`, `secondary`, `all` or a configured provider ({})",
                    known.join(", ")
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        bulwark_server::config::parse(
            Path::new("test.yaml"),
            "providers:\n  - {name: a, kind: openai, api_key: k, base_url: \"http://127.0.0.1:1/v1\"}\n  - {name: b, kind: openai, api_key: k, base_url: \"http://127.0.0.1:2/v1\"}\nroutes:\n  - model: chat\n    timeouts: {first_token: 2s}\n    targets:\n      - {provider: a, model: m1}\n      - {provider: b, model: m2}\n",
            &|_| None,
        )
        .unwrap()
    }

    #[test]
    fn every_built_in_resolves_to_timed_actions_inside_the_drill() {
        let cfg = config();
        let route = &cfg.routes[0];
        for (name, _) in BUILT_INS {
            let scenario = built_in(name, route).unwrap();
            let result = resolve(
                &scenario,
                "built-in".into(),
                &cfg,
                route,
                Duration::from_secs(10),
            );
            if name.starts_with("site-loss") {
                // No `backup:` in this configuration.
                assert!(result.unwrap_err().contains("backup"), "{name}");
                continue;
            }
            let plan = result.unwrap();
            assert!(!plan.actions.is_empty(), "{name}");
            for action in &plan.actions {
                let end = match &action.kind {
                    ActionKind::Chaos { duration, .. } => action.at + *duration,
                    _ => action.at,
                };
                assert!(end <= Duration::from_secs(10), "{name}");
            }
        }
    }

    #[test]
    fn brownout_delays_first_tokens_past_the_route_timeout() {
        let cfg = config();
        let scenario = built_in("brownout", &cfg.routes[0]).unwrap();
        let fault = &scenario.steps[0].chaos.as_ref().unwrap().fault;
        assert_eq!(
            *fault,
            ChaosFault::SlowFirstToken {
                delay: HumanDuration::secs(4)
            }
        );
    }

    #[test]
    fn a_yaml_scenario_decodes_shares_durations_and_kill_shorthand() {
        let cfg = config();
        let scenario = parse(
            "name: mine\nduration: 20s\nsteps:\n  - at: 25%\n    chaos: {target: all, fault: {kind: down}, duration: 5s}\n  - at: 12s\n    kill: true\n  - at: 15s\n    clear_chaos: true\n",
        )
        .unwrap();
        let plan = resolve(
            &scenario,
            "mine.yaml".into(),
            &cfg,
            &cfg.routes[0],
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(plan.actions[0].at, Duration::from_secs(5));
        match &plan.actions[0].kind {
            ActionKind::Chaos {
                targets, duration, ..
            } => {
                assert_eq!(targets, &vec!["a/m1".to_string(), "b/m2".to_string()]);
                assert_eq!(*duration, Duration::from_secs(5));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            plan.actions[1].kind,
            ActionKind::Kill {
                then: AfterKill::Restart,
                ..
            }
        ));
        assert!(matches!(plan.actions[2].kind, ActionKind::ClearChaos));
    }

    #[test]
    fn scenario_errors_name_the_field() {
        let err = parse(
            "steps:\n  - at: 1s\n    chaos: {target: primary, fault: {kind: melt}, duration: 1s}\n",
        )
        .unwrap_err();
        assert!(err.starts_with("steps[0].chaos.fault"), "{err}");
        let err = parse("steps:\n  - at: soon\n    kill: true\n").unwrap_err();
        assert!(err.contains("steps[0].at"), "{err}");
        let cfg = config();
        let two = parse("steps:\n  - at: 1s\n    kill: true\n    clear_chaos: true\n").unwrap();
        let err = resolve(
            &two,
            String::new(),
            &cfg,
            &cfg.routes[0],
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(err.contains("exactly one"), "{err}");
        let unknown = parse(
            "steps:\n  - at: 1s\n    chaos: {target: zed, fault: {kind: down}, duration: 1s}\n",
        )
        .unwrap();
        let err = resolve(
            &unknown,
            String::new(),
            &cfg,
            &cfg.routes[0],
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(err.contains("steps[0].chaos.target"), "{err}");
        let late = parse("steps:\n  - at: 9s\n    kill: true\n").unwrap();
        assert!(
            resolve(
                &late,
                String::new(),
                &cfg,
                &cfg.routes[0],
                Duration::from_secs(5)
            )
            .is_err()
        );
    }
}
