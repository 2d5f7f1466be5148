//! The `alerts:` section of the configuration: notification channels, rule
//! thresholds, the storm limit and delivery retries.
//!
//! Every field has a named default, so `alerts: {}` is valid and runs every rule with
//! its default against the log alone. A rule's `threshold`, `for` and `severity` can
//! be overridden per route (`routes: {chat: {...}}`) or per provider
//! (`providers: {openai: {...}}`); a route override wins over a provider override.
//!
//! This module depends only on serde and `bulwark_core::config` types so that it can
//! live in `bulwark-core` unchanged if the core `Config` is to hold it.
//!
//! ```yaml
//! alerts:
//!   slack: {webhook_url: "${SLACK_WEBHOOK_URL}"}
//!   pagerduty: {routing_key: "${PAGERDUTY_ROUTING_KEY}"}   # url overridable
//!   webhook: {url: "https://ops.example.com/hook", secret: "${HOOK_SECRET}"}
//!   rules:
//!     latency: {threshold: 5s, for: 1m, severity: warning}
//!     success_rate: {threshold: 0.9, for: 1m, severity: critical, providers: {vllm: {threshold: 0.8}}}
//!     breaker_open: {enabled: false}
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::{HumanDuration, Secret};
use serde::{Deserialize, Serialize};

/// How bad an alert is. Channels take alerts at or above their `min_severity`;
/// `emergency` goes to every configured channel and is never rate-limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
    Emergency,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
            Severity::Emergency => "emergency",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The whole `alerts:` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    #[serde(default)]
    pub slack: Option<SlackConfig>,
    #[serde(default)]
    pub pagerduty: Option<PagerDutyConfig>,
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    #[serde(default)]
    pub rules: RulesConfig,
    /// This gateway's name in alerts (PagerDuty `source`, part of every `dedup_key`).
    /// Defaults to the host name.
    #[serde(default)]
    pub source: Option<String>,
    /// How often rules are evaluated.
    #[serde(default = "default_evaluate_every")]
    pub evaluate_every: HumanDuration,
    /// Storm limit on trigger notifications, per channel.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            slack: None,
            pagerduty: None,
            webhook: None,
            rules: RulesConfig::default(),
            source: None,
            evaluate_every: default_evaluate_every(),
            rate_limit: RateLimitConfig::default(),
            delivery: DeliveryConfig::default(),
        }
    }
}

fn default_evaluate_every() -> HumanDuration {
    HumanDuration::secs(1)
}

/// A Slack incoming webhook. The URL holds a token, so it is a secret.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    pub webhook_url: Secret,
    #[serde(default = "severity_info")]
    pub min_severity: Severity,
}

/// PagerDuty Events API v2.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    pub routing_key: Secret,
    /// Base URL; events go to `{url}/v2/enqueue`.
    #[serde(default = "default_pagerduty_url")]
    pub url: String,
    /// Warnings do not page by default.
    #[serde(default = "severity_critical")]
    pub min_severity: Severity,
}

pub fn default_pagerduty_url() -> String {
    "https://events.pagerduty.com".to_string()
}

/// A generic JSON webhook, signed with HMAC-SHA256 when `secret` is set.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default = "severity_info")]
    pub min_severity: Severity,
}

fn severity_info() -> Severity {
    Severity::Info
}

fn severity_critical() -> Severity {
    Severity::Critical
}

/// At most `max` trigger notifications per channel in any `per` window.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(default = "default_rate_max")]
    pub max: u32,
    #[serde(default = "default_rate_per")]
    pub per: HumanDuration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            max: default_rate_max(),
            per: default_rate_per(),
        }
    }
}

fn default_rate_max() -> u32 {
    10
}

fn default_rate_per() -> HumanDuration {
    HumanDuration::secs(60)
}

/// Retries of one notification: exponential backoff from `backoff` to `max_backoff`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Tries per notification, the first included.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_backoff")]
    pub backoff: HumanDuration,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
    /// Per HTTP call.
    #[serde(default = "default_delivery_timeout")]
    pub timeout: HumanDuration,
    /// Notifications waiting per channel; beyond it new ones are dropped (and counted).
    #[serde(default = "default_queue")]
    pub queue: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            attempts: default_attempts(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
            timeout: default_delivery_timeout(),
            queue: default_queue(),
        }
    }
}

fn default_attempts() -> u32 {
    5
}

fn default_backoff() -> HumanDuration {
    HumanDuration::secs(1)
}

fn default_max_backoff() -> HumanDuration {
    HumanDuration::secs(60)
}

fn default_delivery_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}

fn default_queue() -> usize {
    256
}

/// A rule that takes no threshold: giving one is a configuration error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NoThreshold {}

impl<'de> Deserialize<'de> for NoThreshold {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "this rule takes no threshold (it fires on a state, not a measurement)",
        ))
    }
}

/// One rule's settings; unset fields take the rule's defaults (see [`RulesConfig`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, bound(deserialize = "T: Deserialize<'de>"))]
pub struct RuleConfig<T> {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub threshold: Option<T>,
    /// How long the condition must hold before the alert fires.
    #[serde(default, rename = "for")]
    pub for_: Option<HumanDuration>,
    #[serde(default)]
    pub severity: Option<Severity>,
    /// The measurement window (latency and success_rate only).
    #[serde(default)]
    pub window: Option<HumanDuration>,
    /// Fewer calls than this in the window is "no data" (latency and success_rate only).
    #[serde(default)]
    pub min_calls: Option<u32>,
    #[serde(default)]
    pub routes: BTreeMap<String, RuleOverride<T>>,
    #[serde(default)]
    pub providers: BTreeMap<String, RuleOverride<T>>,
}

impl<T> Default for RuleConfig<T> {
    fn default() -> Self {
        RuleConfig {
            enabled: None,
            threshold: None,
            for_: None,
            severity: None,
            window: None,
            min_calls: None,
            routes: BTreeMap::new(),
            providers: BTreeMap::new(),
        }
    }
}

/// A rule's settings for one route or provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, bound(deserialize = "T: Deserialize<'de>"))]
pub struct RuleOverride<T> {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub threshold: Option<T>,
    #[serde(default, rename = "for")]
    pub for_: Option<HumanDuration>,
    #[serde(default)]
    pub severity: Option<Severity>,
}

/// Every rule, by its name (also the `rule` label of `bulwark_alerts_total`).
///
/// | rule | fires when | threshold | for | severity |
/// |---|---|---|---|---|
/// | `latency` | p95 time to first token of a route's primary target over `window` (1m, ≥ 5 calls) is above the threshold | 5s | 1m | warning |
/// | `success_rate` | a target's success rate over `window` (1m, ≥ 10 calls) is below the threshold | 0.9 | 1m | critical |
/// | `route_unavailable` | every target of a route is unavailable (breaker open or quota blocked) | – | 0s | emergency |
/// | `breaker_open` | a target's breaker is open or half-open | – | 0s | warning |
/// | `failover` | a route is served by a target other than its primary | – | 0s | warning |
/// | `quota_exhausted` | a target is blocked on quota or billing | – | 0s | critical |
/// | `credentials_rejected` | a target's last auth failure is newer than its last success | – | 0s | critical |
/// | `journal_write_failure` | the journal reports failing writes | – | 0s | critical |
/// | `rpo_exposure` | backup RPO exposure is above the threshold (default: the journal's own target) | journal's | 1m | warning |
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    #[serde(default)]
    pub latency: RuleConfig<HumanDuration>,
    #[serde(default)]
    pub success_rate: RuleConfig<f64>,
    #[serde(default)]
    pub route_unavailable: RuleConfig<NoThreshold>,
    #[serde(default)]
    pub breaker_open: RuleConfig<NoThreshold>,
    #[serde(default)]
    pub failover: RuleConfig<NoThreshold>,
    #[serde(default)]
    pub quota_exhausted: RuleConfig<NoThreshold>,
    #[serde(default)]
    pub credentials_rejected: RuleConfig<NoThreshold>,
    #[serde(default)]
    pub journal_write_failure: RuleConfig<NoThreshold>,
    #[serde(default)]
    pub rpo_exposure: RuleConfig<HumanDuration>,
}

/// A rule's built-in defaults.
#[derive(Debug, Clone, Copy)]
pub struct RuleDefaults<T> {
    pub threshold: T,
    pub for_: Duration,
    pub severity: Severity,
    pub window: Duration,
    pub min_calls: u32,
}

impl<T> RuleDefaults<T> {
    pub const fn state(threshold: T, severity: Severity) -> Self {
        RuleDefaults {
            threshold,
            for_: Duration::ZERO,
            severity,
            window: Duration::ZERO,
            min_calls: 0,
        }
    }
}

pub const LATENCY_DEFAULTS: RuleDefaults<Duration> = RuleDefaults {
    threshold: Duration::from_secs(5),
    for_: Duration::from_secs(60),
    severity: Severity::Warning,
    window: Duration::from_secs(60),
    min_calls: 5,
};

pub const SUCCESS_RATE_DEFAULTS: RuleDefaults<f64> = RuleDefaults {
    threshold: 0.9,
    for_: Duration::from_secs(60),
    severity: Severity::Critical,
    window: Duration::from_secs(60),
    min_calls: 10,
};

/// `None`: the journal's own RPO target.
pub const RPO_DEFAULTS: RuleDefaults<Option<Duration>> = RuleDefaults {
    threshold: None,
    for_: Duration::from_secs(60),
    severity: Severity::Warning,
    window: Duration::ZERO,
    min_calls: 0,
};

/// A rule's effective settings for one subject.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolved<T> {
    pub enabled: bool,
    pub threshold: T,
    pub for_: Duration,
    pub severity: Severity,
    pub window: Duration,
    pub min_calls: u32,
}

impl<T: Clone> RuleConfig<T> {
    /// The settings for a subject: route override, then provider override, then the
    /// rule's own fields, then `defaults`. `convert` maps a configured threshold into
    /// the defaults' type.
    pub fn resolve<U: Clone>(
        &self,
        defaults: &RuleDefaults<U>,
        route: Option<&str>,
        provider: Option<&str>,
        convert: impl Fn(&T) -> U,
    ) -> Resolved<U> {
        let by_route = route.and_then(|r| self.routes.get(r));
        let by_provider = provider.and_then(|p| self.providers.get(p));
        let pick = |f: &dyn Fn(&RuleOverride<T>) -> bool| -> Option<&RuleOverride<T>> {
            by_route.filter(|o| f(o)).or(by_provider.filter(|o| f(o)))
        };
        let enabled = pick(&|o| o.enabled.is_some())
            .and_then(|o| o.enabled)
            .or(self.enabled)
            .unwrap_or(true);
        let threshold = pick(&|o| o.threshold.is_some())
            .and_then(|o| o.threshold.as_ref())
            .or(self.threshold.as_ref())
            .map(&convert)
            .unwrap_or_else(|| defaults.threshold.clone());
        let for_ = pick(&|o| o.for_.is_some())
            .and_then(|o| o.for_)
            .or(self.for_)
            .map(|d| d.0)
            .unwrap_or(defaults.for_);
        let severity = pick(&|o| o.severity.is_some())
            .and_then(|o| o.severity)
            .or(self.severity)
            .unwrap_or(defaults.severity);
        Resolved {
            enabled,
            threshold,
            for_,
            severity,
            window: self.window.map(|d| d.0).unwrap_or(defaults.window),
            min_calls: self.min_calls.unwrap_or(defaults.min_calls),
        }
    }
}

/// A problem found by [`AlertsConfig::validate`]: the field (under `alerts.`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("alerts.{field}: {message}")]
pub struct AlertsConfigError {
    pub field: String,
    pub message: String,
}

impl AlertsConfig {
    /// Cross-checks that serde cannot express. `routes` and `providers` are the
    /// configured names, so an override naming neither is caught.
    pub fn validate(
        &self,
        routes: &[String],
        providers: &[String],
    ) -> Result<(), AlertsConfigError> {
        let err = |field: String, message: &str| AlertsConfigError {
            field,
            message: message.to_string(),
        };
        if self.evaluate_every.0.is_zero() {
            return Err(err("evaluate_every".into(), "must be more than 0s"));
        }
        if self.rate_limit.max == 0 || self.rate_limit.per.0.is_zero() {
            return Err(err(
                "rate_limit".into(),
                "`max` and `per` must be more than 0",
            ));
        }
        if self.delivery.attempts == 0 || self.delivery.queue == 0 {
            return Err(err(
                "delivery".into(),
                "`attempts` and `queue` must be at least 1",
            ));
        }
        if self.delivery.timeout.0.is_zero() {
            return Err(err("delivery.timeout".into(), "must be more than 0s"));
        }
        for (field, url) in [
            (
                "slack.webhook_url",
                self.slack.as_ref().map(|s| s.webhook_url.expose()),
            ),
            (
                "pagerduty.url",
                self.pagerduty.as_ref().map(|p| p.url.as_str()),
            ),
            ("webhook.url", self.webhook.as_ref().map(|w| w.url.as_str())),
        ] {
            if let Some(url) = url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return Err(err(field.into(), "must be an http:// or https:// URL"));
            }
        }
        if let Some(pd) = &self.pagerduty
            && pd.routing_key.expose().trim().is_empty()
        {
            return Err(err(
                "pagerduty.routing_key".into(),
                "is empty: PagerDuty takes no event without one (write the integration key, e.g. `routing_key: ${PAGERDUTY_ROUTING_KEY}`)",
            ));
        }
        let r = &self.rules;
        check_overrides("latency", &r.latency, routes, providers)?;
        check_overrides("success_rate", &r.success_rate, routes, providers)?;
        check_overrides("route_unavailable", &r.route_unavailable, routes, providers)?;
        check_overrides("breaker_open", &r.breaker_open, routes, providers)?;
        check_overrides("failover", &r.failover, routes, providers)?;
        check_overrides("quota_exhausted", &r.quota_exhausted, routes, providers)?;
        check_overrides(
            "credentials_rejected",
            &r.credentials_rejected,
            routes,
            providers,
        )?;
        check_overrides(
            "journal_write_failure",
            &r.journal_write_failure,
            routes,
            providers,
        )?;
        check_overrides("rpo_exposure", &r.rpo_exposure, routes, providers)?;
        for (name, window, min_calls) in [
            (
                "route_unavailable",
                r.route_unavailable.window,
                r.route_unavailable.min_calls,
            ),
            (
                "breaker_open",
                r.breaker_open.window,
                r.breaker_open.min_calls,
            ),
            ("failover", r.failover.window, r.failover.min_calls),
            (
                "quota_exhausted",
                r.quota_exhausted.window,
                r.quota_exhausted.min_calls,
            ),
            (
                "credentials_rejected",
                r.credentials_rejected.window,
                r.credentials_rejected.min_calls,
            ),
            (
                "journal_write_failure",
                r.journal_write_failure.window,
                r.journal_write_failure.min_calls,
            ),
            (
                "rpo_exposure",
                r.rpo_exposure.window,
                r.rpo_exposure.min_calls,
            ),
        ] {
            if window.is_some() || min_calls.is_some() {
                return Err(err(
                    format!("rules.{name}"),
                    "`window` and `min_calls` apply to `latency` and `success_rate` only",
                ));
            }
        }
        for (name, window) in [
            ("latency", r.latency.window),
            ("success_rate", r.success_rate.window),
        ] {
            if window.is_some_and(|w| w.0.is_zero()) {
                return Err(err(format!("rules.{name}.window"), "must be more than 0s"));
            }
        }
        let rates = std::iter::once((
            "rules.success_rate.threshold".to_string(),
            r.success_rate.threshold,
        ))
        .chain(r.success_rate.routes.iter().map(|(n, o)| {
            (
                format!("rules.success_rate.routes.{n}.threshold"),
                o.threshold,
            )
        }))
        .chain(r.success_rate.providers.iter().map(|(n, o)| {
            (
                format!("rules.success_rate.providers.{n}.threshold"),
                o.threshold,
            )
        }));
        for (field, threshold) in rates {
            if threshold.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
                return Err(err(field, "a ratio between 0 and 1 (0.9 is 90 %)"));
            }
        }
        Ok(())
    }
}

fn check_overrides<T>(
    rule: &str,
    config: &RuleConfig<T>,
    routes: &[String],
    providers: &[String],
) -> Result<(), AlertsConfigError> {
    if let Some(name) = config.routes.keys().find(|n| !routes.contains(n)) {
        return Err(AlertsConfigError {
            field: format!("rules.{rule}.routes.{name}"),
            message: format!("no route is named `{name}`"),
        });
    }
    if let Some(name) = config.providers.keys().find(|n| !providers.contains(n)) {
        return Err(AlertsConfigError {
            field: format!("rules.{rule}.providers.{name}"),
            message: format!("no provider is named `{name}`"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_issue_example_decodes_and_fills_defaults() {
        let config: AlertsConfig = serde_json::from_value(json!({
            "slack": {"webhook_url": "https://hooks.slack.test/T/B/x"},
            "pagerduty": {"routing_key": "R0UT1NG"},
            "webhook": {"url": "https://ops.example.com/hook", "secret": "s3cret"},
            "rules": {
                "latency": {"threshold": "5s", "for": "1m", "severity": "warning"},
                "success_rate": {"threshold": 0.9, "for": "1m", "severity": "critical"}
            }
        }))
        .unwrap();
        let pd = config.pagerduty.as_ref().unwrap();
        assert_eq!(pd.url, "https://events.pagerduty.com");
        assert_eq!(pd.min_severity, Severity::Critical);
        assert_eq!(config.evaluate_every.0, Duration::from_secs(1));
        let latency =
            config
                .rules
                .latency
                .resolve(&LATENCY_DEFAULTS, Some("chat"), Some("openai"), |d| d.0);
        assert_eq!(latency.threshold, Duration::from_secs(5));
        assert_eq!(latency.for_, Duration::from_secs(60));
        assert!(format!("{config:?}").contains("Secret(***)"));
        config.validate(&[], &[]).unwrap();
    }

    #[test]
    fn unknown_fields_and_thresholds_on_state_rules_are_rejected() {
        let unknown = serde_json::from_value::<AlertsConfig>(json!({"slak": {}}));
        assert!(unknown.is_err());
        let state = serde_json::from_value::<AlertsConfig>(
            json!({"rules": {"breaker_open": {"threshold": 1}}}),
        );
        let msg = state.unwrap_err().to_string();
        assert!(msg.contains("takes no threshold"), "{msg}");
    }

    #[test]
    fn route_override_wins_over_provider_override_which_wins_over_the_rule() {
        let config: RulesConfig = serde_json::from_value(json!({
            "success_rate": {
                "threshold": 0.95,
                "severity": "warning",
                "routes": {"chat": {"threshold": 0.5}},
                "providers": {"vllm": {"threshold": 0.7, "for": "5m"}}
            }
        }))
        .unwrap();
        let rule = &config.success_rate;
        let r = rule.resolve(&SUCCESS_RATE_DEFAULTS, Some("chat"), Some("vllm"), |t| *t);
        assert_eq!((r.threshold, r.for_), (0.5, Duration::from_secs(300)));
        let p = rule.resolve(&SUCCESS_RATE_DEFAULTS, None, Some("vllm"), |t| *t);
        assert_eq!(p.threshold, 0.7);
        let d = rule.resolve(&SUCCESS_RATE_DEFAULTS, None, Some("openai"), |t| *t);
        assert_eq!(
            (d.threshold, d.severity, d.for_),
            (0.95, Severity::Warning, Duration::from_secs(60))
        );
        assert_eq!(d.min_calls, 10);
    }

    #[test]
    fn validate_names_the_field_at_fault() {
        let config: AlertsConfig = serde_json::from_value(json!({
            "rules": {"success_rate": {"providers": {"nope": {"threshold": 0.5}}}}
        }))
        .unwrap();
        let e = config
            .validate(&["chat".into()], &["openai".into()])
            .unwrap_err();
        assert_eq!(e.field, "rules.success_rate.providers.nope");
        let config: AlertsConfig =
            serde_json::from_value(json!({"rules": {"success_rate": {"threshold": 90}}})).unwrap();
        let e = config.validate(&[], &[]).unwrap_err();
        assert_eq!(e.field, "rules.success_rate.threshold");
        let config: AlertsConfig =
            serde_json::from_value(json!({"rules": {"failover": {"window": "1m"}}})).unwrap();
        assert_eq!(
            config.validate(&[], &[]).unwrap_err().field,
            "rules.failover"
        );
        let config: AlertsConfig =
            serde_json::from_value(json!({"webhook": {"url": "ftp://x"}})).unwrap();
        assert_eq!(config.validate(&[], &[]).unwrap_err().field, "webhook.url");
        let config: AlertsConfig =
            serde_json::from_value(json!({"pagerduty": {"routing_key": " "}})).unwrap();
        assert_eq!(
            config.validate(&[], &[]).unwrap_err().field,
            "pagerduty.routing_key"
        );
    }
}
