//! Configuration types, decoded from YAML by the server crate (which expands
//! `${VAR}` references, reports the failing field's path, and runs `validate`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub mod alerts;
pub mod journal;

use alerts::AlertsConfig;
use journal::{BackupConfig, JournalConfig};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the gateway listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Gateway-wide cap on retries and hedges, so an outage cannot multiply upstream load.
    #[serde(default)]
    pub retry_budget: RetryBudgetConfig,
    /// The durable request journal (`journal:`); SQLite at `./bulwark-data/journal.db`,
    /// `durability: sync` when absent.
    #[serde(default)]
    pub journal: JournalConfig,
    /// Backups of the journal to object storage (`backup:`); none when absent.
    #[serde(default)]
    pub backup: Option<BackupConfig>,
    /// Alert rules and notification channels (`alerts:`).
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Bearer token required on `/admin/*` when set (`/admin/chaos` is refused
    /// without one).
    #[serde(default)]
    pub admin_token: Option<Secret>,
    /// Continuity objectives DR drills are judged against (`bulwark drill`).
    #[serde(default)]
    pub objectives: ObjectivesConfig,
}

/// `objectives:` — what a DR drill must demonstrate to pass.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectivesConfig {
    /// Least share of caller requests answered during a drill (e.g. `0.999`).
    #[serde(default)]
    pub availability: Option<f64>,
    /// Longest time callers may go without answers (recovery time objective).
    #[serde(default)]
    pub rto: Option<HumanDuration>,
    /// Most answered work that may be lost, as time (recovery point objective; `0s`
    /// means no answer a caller received may be missing from the journal).
    #[serde(default)]
    pub rpo: Option<HumanDuration>,
}

impl Config {
    /// A configuration with these providers and routes and every other section at
    /// its default (what an empty section in the file gives).
    pub fn new(providers: Vec<ProviderConfig>, routes: Vec<RouteConfig>) -> Self {
        Config {
            listen: default_listen(),
            providers,
            routes,
            retry_budget: RetryBudgetConfig::default(),
            journal: JournalConfig::default(),
            backup: None,
            alerts: AlertsConfig::default(),
            admin_token: None,
            objectives: ObjectivesConfig::default(),
        }
    }
}

pub fn default_listen() -> String {
    "127.0.0.1:8080".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Anthropic,
    Openai,
    Gemini,
    OpenaiCompatible,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Openai => "openai",
            ProviderKind::Gemini => "gemini",
            ProviderKind::OpenaiCompatible => "openai-compatible",
        }
    }

    /// The public endpoint, in the form the provider's official SDK takes as base URL.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
            ProviderKind::OpenaiCompatible => None,
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The name routes and `provider/model` model names refer to.
    pub name: String,
    pub kind: ProviderKind,
    /// Usually `${SOME_ENV_VAR}`; never logged.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Defaults to the provider's public endpoint (required for `openai-compatible`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Extra headers sent on every upstream call (OpenRouter's `HTTP-Referer`, say).
    /// Values are treated as secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// `max_tokens` sent to providers that require it when the caller gave none.
    #[serde(default)]
    pub default_max_tokens: Option<u32>,
    /// Optional active health probe (a tiny real request on an interval).
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// The upstream model the probe asks (one output token).
    pub model: String,
    #[serde(default = "default_probe_interval")]
    pub interval: HumanDuration,
    #[serde(default = "default_probe_timeout")]
    pub timeout: HumanDuration,
}

fn default_probe_interval() -> HumanDuration {
    HumanDuration::secs(10)
}

fn default_probe_timeout() -> HumanDuration {
    HumanDuration::secs(5)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The model name clients use.
    pub model: String,
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    #[serde(default)]
    pub circuit_breaker: BreakerConfig,
    /// Off when absent.
    #[serde(default)]
    pub hedge: Option<HedgeConfig>,
    /// After a stream broke mid-answer, continue it on the next target that accepts an
    /// assistant prefill (off by default: the caller gets an in-band error instead).
    #[serde(default)]
    pub resume_streams: bool,
    /// Fail over on a content-policy refusal (off by default: the reason is passed back).
    #[serde(default)]
    pub failover_on_content_policy: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub provider: String,
    pub model: String,
    /// The model's context window in tokens; a request that overflowed a smaller
    /// window is routed only to targets that declare a larger one.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// Whether the target accepts a trailing assistant message as a prefill (needed to
    /// resume a broken stream on it).
    #[serde(default)]
    pub accepts_prefill: bool,
    /// Lower values are tried first; targets with the same priority share traffic by
    /// `weight`. Absent, a target's priority is its position in the list.
    #[serde(default)]
    pub priority: Option<u32>,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts on one target within one request (1 = no retry).
    pub max_attempts: u32,
    pub base_delay: HumanDuration,
    pub max_delay: HumanDuration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            base_delay: HumanDuration::millis(500),
            max_delay: HumanDuration::secs(8),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    pub connect: HumanDuration,
    pub first_token: HumanDuration,
    pub idle: HumanDuration,
    pub total: HumanDuration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            connect: HumanDuration::secs(5),
            first_token: HumanDuration::secs(15),
            idle: HumanDuration::secs(20),
            total: HumanDuration::secs(120),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    pub consecutive_failures: u32,
    pub failure_rate: f64,
    pub min_calls: u32,
    pub window: HumanDuration,
    pub open_for: HumanDuration,
    pub max_open_for: HumanDuration,
    /// Slow first tokens (over `timeouts.first_token / 2`) in a row that trip the breaker.
    pub slow_calls: u32,
    /// Calls let through while half-open; all must succeed to close.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_calls: 20,
            window: HumanDuration::secs(60),
            open_for: HumanDuration::secs(30),
            max_open_for: HumanDuration::secs(300),
            slow_calls: 5,
            half_open_probes: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeConfig {
    /// `p95` (the target's observed 95th percentile time to first token) or a duration.
    pub after: HedgeAfter,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeAfter {
    P95,
    Fixed(std::time::Duration),
}

impl<'de> Deserialize<'de> for HedgeAfter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        if raw.eq_ignore_ascii_case("p95") {
            return Ok(HedgeAfter::P95);
        }
        humantime::parse_duration(&raw)
            .map(HedgeAfter::Fixed)
            .map_err(|e| {
                serde::de::Error::custom(format!("expected `p95` or a duration like `2s`: {e}"))
            })
    }
}

impl Serialize for HedgeAfter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HedgeAfter::P95 => s.serialize_str("p95"),
            HedgeAfter::Fixed(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudgetConfig {
    /// Retries and hedges may add at most this share of caller requests.
    pub ratio: f64,
    /// Retries always allowed per second regardless of traffic (so a quiet gateway can still retry).
    pub min_per_second: f64,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: 0.2,
            min_per_second: 1.0,
        }
    }
}

/// A duration written for humans: `500ms`, `30s`, `5m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub std::time::Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> Self {
        HumanDuration(std::time::Duration::from_secs(s))
    }

    pub const fn millis(ms: u64) -> Self {
        HumanDuration(std::time::Duration::from_millis(ms))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(raw) => raw,
            // A bare number is the commonest slip: say which unit to add.
            serde_json::Value::Number(n) => {
                return Err(serde::de::Error::custom(format!(
                    "{n} has no unit: write \"{n}s\" for seconds or \"{n}ms\" for milliseconds"
                )));
            }
            // Named by its kind only: a map here is usually a mis-indented block, and
            // its values (keys, after `${VAR}` expansion) must not reach the message.
            other => {
                let kind = match other {
                    serde_json::Value::Object(_) => "a map",
                    serde_json::Value::Array(_) => "a list",
                    serde_json::Value::Bool(_) => "a boolean",
                    _ => "nothing",
                };
                return Err(serde::de::Error::custom(format!(
                    "{kind} is not a duration: write one like `500ms`, `30s` or `5m`"
                )));
            }
        };
        humantime::parse_duration(&raw)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{raw:?} is not a duration like `500ms`, `30s` or `5m`: {e}"
                ))
            })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

/// A credential or other secret value: its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
