//! Prometheus metrics: names, labels, buckets, and the per-gateway recorder.
//!
//! Each gateway owns a `PrometheusRecorder` built with `build_recorder()` and never
//! installed as the process-global recorder: every record goes through
//! `metrics::with_local_recorder(&self.recorder, ..)`. Two gateways in one test
//! process therefore keep separate counters, and a library that records into the
//! global recorder cannot pollute `/metrics`. Upkeep (draining histogram buckets) is
//! ours to run; the side-car does it every few seconds and [`Metrics::render`] before
//! each scrape.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `bulwark_requests_total` | counter | `route`, `outcome` | caller requests by [`RequestOutcome`] |
//! | `bulwark_upstream_attempts_total` | counter | `provider`, `outcome` | upstream attempts; `outcome` is `success` or the error class label (`transient`, `timeout`, `throttled`, `quota`, `auth`, `invalid_request`, `context_window`, `content_policy`, `unsupported`, `protocol`) |
//! | `bulwark_failovers_total` | counter | `route`, `from`, `to` | a route moved to another provider (`from`/`to` are provider names) |
//! | `bulwark_provider_state` | gauge | `provider` | 0 closed, 1 half-open, 2 open: the worst breaker among the provider's targets |
//! | `bulwark_provider_success_ratio` | gauge | `provider` | successes / (successes + failures counting against the target) over the last 5 minutes, all the provider's targets; NaN without calls |
//! | `bulwark_upstream_latency_seconds` | histogram | `provider`, `outcome` (`success`/`error`) | one attempt, from its start to its end (for a stream: its last event) |
//! | `bulwark_time_to_first_token_seconds` | histogram | `provider` | successful attempts, request sent to first content |
//! | `bulwark_journal_rpo_seconds` | gauge | – | data not yet in a backup, in seconds (fed by the journal) |
//! | `bulwark_alerts_total` | counter | `rule`, `severity` | incidents triggered |
//! | `bulwark_alert_delivery_failures_total` | counter | `channel` | failed delivery tries (each retry counts) |
//! | `bulwark_alert_notifications_dropped_total` | counter | `channel` | notifications given up (retries spent, 4xx, or queue full) |
//! | `bulwark_alerts_suppressed_total` | counter | `channel` | triggers held back by the storm limit |
//! | `bulwark_observer_events_lagged_total` | counter | – | router events the side-car missed (it fell behind the broadcast buffer) |
//!
//! Label values are bounded: route labels are configured route names (an ad-hoc
//! `provider/model` becomes `provider/*`, anything else `unknown`), provider labels
//! are configured provider names, outcomes come from fixed enums.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_core::{ErrorClass, ErrorKind, GatewayError};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

pub const REQUESTS_TOTAL: &str = "bulwark_requests_total";
pub const UPSTREAM_ATTEMPTS_TOTAL: &str = "bulwark_upstream_attempts_total";
pub const FAILOVERS_TOTAL: &str = "bulwark_failovers_total";
pub const PROVIDER_STATE: &str = "bulwark_provider_state";
pub const PROVIDER_SUCCESS_RATIO: &str = "bulwark_provider_success_ratio";
pub const UPSTREAM_LATENCY_SECONDS: &str = "bulwark_upstream_latency_seconds";
pub const TIME_TO_FIRST_TOKEN_SECONDS: &str = "bulwark_time_to_first_token_seconds";
pub const JOURNAL_RPO_SECONDS: &str = "bulwark_journal_rpo_seconds";
pub const ALERTS_TOTAL: &str = "bulwark_alerts_total";
pub const ALERT_DELIVERY_FAILURES_TOTAL: &str = "bulwark_alert_delivery_failures_total";
pub const ALERT_NOTIFICATIONS_DROPPED_TOTAL: &str = "bulwark_alert_notifications_dropped_total";
pub const ALERTS_SUPPRESSED_TOTAL: &str = "bulwark_alerts_suppressed_total";
pub const EVENTS_LAGGED_TOTAL: &str = "bulwark_observer_events_lagged_total";

/// Upper bounds of the latency buckets, in seconds (a whole answer: up to minutes).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];
/// Upper bounds of the time-to-first-token buckets, in seconds.
pub const TTFT_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0,
];

/// How a caller's request ended (`outcome` of `bulwark_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// Answered (2xx), including an answer served after a failover.
    Success,
    /// The caller's mistake: malformed request, unknown model, auth to Bulwark (4xx).
    ClientError,
    /// 429 to the caller: every target throttled or out of quota, or Bulwark's own limit.
    RateLimited,
    /// No target could serve (502/503).
    FailedUpstream,
    /// The request's deadline passed (504, 408).
    Timeout,
    /// The caller went away before the answer was complete.
    Cancelled,
    /// A bug in Bulwark (500).
    Internal,
}

impl RequestOutcome {
    pub fn label(self) -> &'static str {
        match self {
            RequestOutcome::Success => "success",
            RequestOutcome::ClientError => "client_error",
            RequestOutcome::RateLimited => "rate_limited",
            RequestOutcome::FailedUpstream => "failed_upstream",
            RequestOutcome::Timeout => "timeout",
            RequestOutcome::Cancelled => "cancelled",
            RequestOutcome::Internal => "internal",
        }
    }

    /// From the HTTP status written to the caller (499 = the caller closed).
    pub fn from_status(status: u16) -> Self {
        match status {
            200..=399 => RequestOutcome::Success,
            408 | 504 => RequestOutcome::Timeout,
            429 => RequestOutcome::RateLimited,
            499 => RequestOutcome::Cancelled,
            400..=498 => RequestOutcome::ClientError,
            500 => RequestOutcome::Internal,
            _ => RequestOutcome::FailedUpstream,
        }
    }

    /// From the error the ingress wrote back.
    pub fn from_error(err: &GatewayError) -> Self {
        match err.kind {
            ErrorKind::InvalidRequest
            | ErrorKind::Authentication
            | ErrorKind::PermissionDenied
            | ErrorKind::NotFound
            | ErrorKind::RequestTooLarge
            | ErrorKind::RequestTimeout
            | ErrorKind::MethodNotAllowed
            | ErrorKind::Unprocessable
            | ErrorKind::UnsupportedMediaType
            | ErrorKind::Conflict => RequestOutcome::ClientError,
            ErrorKind::RateLimited => RequestOutcome::RateLimited,
            ErrorKind::Internal => RequestOutcome::Internal,
            ErrorKind::BadGateway | ErrorKind::Unavailable => RequestOutcome::FailedUpstream,
            ErrorKind::Timeout => RequestOutcome::Timeout,
        }
    }
}

/// The per-gateway recorder and its render handle.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Handles of the series every request updates, made once per label set:
    /// building a metric's key (labels, hash, registry lookup) costs more than the
    /// update itself, and these run several times per request.
    hot: Mutex<Hot>,
}

/// See [`Metrics::hot`]. Label sets are bounded: routes and providers come from the
/// configuration (unknown routes are labelled `unknown`), outcomes are enums.
#[derive(Default)]
struct Hot {
    requests: HashMap<String, Vec<(RequestOutcome, Counter)>>,
    providers: HashMap<String, ProviderSeries>,
}

/// A series exists once it was first updated (a handle made early would render as
/// an empty series).
#[derive(Default)]
struct ProviderSeries {
    attempts: Vec<(&'static str, Counter)>,
    latency_success: Option<Histogram>,
    latency_error: Option<Histogram>,
    ttft: Option<Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh recorder with our buckets, every metric described.
    pub fn new() -> Arc<Self> {
        let recorder = build_recorder();
        let handle = recorder.handle();
        let metrics = Metrics {
            recorder,
            handle,
            hot: Mutex::new(Hot::default()),
        };
        metrics.describe();
        Arc::new(metrics)
    }

    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    fn describe(&self) {
        self.with(|| {
            metrics::describe_counter!(REQUESTS_TOTAL, "Caller requests by route and outcome.");
            metrics::describe_counter!(
                UPSTREAM_ATTEMPTS_TOTAL,
                "Upstream attempts by provider and outcome (success or error class)."
            );
            metrics::describe_counter!(FAILOVERS_TOTAL, "Route failovers from one provider to another.");
            metrics::describe_gauge!(
                PROVIDER_STATE,
                "Worst circuit breaker state of the provider's targets: 0 closed, 1 half-open, 2 open."
            );
            metrics::describe_gauge!(
                PROVIDER_SUCCESS_RATIO,
                "Upstream success ratio of the provider over the last 5 minutes (NaN without calls)."
            );
            metrics::describe_histogram!(
                UPSTREAM_LATENCY_SECONDS,
                metrics::Unit::Seconds,
                "Duration of upstream attempts."
            );
            metrics::describe_histogram!(
                TIME_TO_FIRST_TOKEN_SECONDS,
                metrics::Unit::Seconds,
                "Time from sending an upstream request to its first content."
            );
            metrics::describe_gauge!(
                JOURNAL_RPO_SECONDS,
                metrics::Unit::Seconds,
                "Age of the oldest journal data not yet in a backup."
            );
            metrics::describe_counter!(ALERTS_TOTAL, "Alert incidents triggered, by rule and severity.");
            metrics::describe_counter!(
                ALERT_DELIVERY_FAILURES_TOTAL,
                "Failed alert delivery tries, by channel (each retry counts)."
            );
            metrics::describe_counter!(
                ALERT_NOTIFICATIONS_DROPPED_TOTAL,
                "Alert notifications given up, by channel."
            );
            metrics::describe_counter!(
                ALERTS_SUPPRESSED_TOTAL,
                "Alert triggers held back by the storm limit, by channel."
            );
            metrics::describe_counter!(
                EVENTS_LAGGED_TOTAL,
                "Router events the observer missed because it fell behind."
            );
        });
    }

    /// The Prometheus text exposition (`text/plain; version=0.0.4`).
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }

    /// Drains histogram buckets so memory does not grow between scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    pub fn request(&self, route: String, outcome: RequestOutcome) {
        let mut hot = self.hot.lock().unwrap_or_else(|e| e.into_inner());
        if !hot.requests.contains_key(&route) {
            hot.requests.insert(route.clone(), Vec::new());
        }
        let Some(series) = hot.requests.get_mut(&route) else {
            return;
        };
        if let Some((_, counter)) = series.iter().find(|(o, _)| *o == outcome) {
            counter.increment(1);
            return;
        }
        let counter = self.with(
            || metrics::counter!(REQUESTS_TOTAL, "route" => route, "outcome" => outcome.label()),
        );
        counter.increment(1);
        series.push((outcome, counter));
    }

    pub fn attempt(
        &self,
        provider: &str,
        error: Option<ErrorClass>,
        latency: Duration,
        ttft: Option<Duration>,
    ) {
        let outcome = error.map_or("success", ErrorClass::label);
        let mut hot = self.hot.lock().unwrap_or_else(|e| e.into_inner());
        if !hot.providers.contains_key(provider) {
            hot.providers
                .insert(provider.to_string(), ProviderSeries::default());
        }
        let Some(series) = hot.providers.get_mut(provider) else {
            return;
        };
        let counter = match series.attempts.iter().position(|(o, _)| *o == outcome) {
            Some(i) => &series.attempts[i].1,
            None => {
                let counter = self.with(|| {
                    metrics::counter!(UPSTREAM_ATTEMPTS_TOTAL, "provider" => provider.to_string(), "outcome" => outcome)
                });
                series.attempts.push((outcome, counter));
                &series.attempts[series.attempts.len() - 1].1
            }
        };
        counter.increment(1);
        let (slot, result) = if error.is_none() {
            (&mut series.latency_success, "success")
        } else {
            (&mut series.latency_error, "error")
        };
        slot.get_or_insert_with(|| {
            self.with(|| {
                metrics::histogram!(UPSTREAM_LATENCY_SECONDS, "provider" => provider.to_string(), "outcome" => result)
            })
        })
        .record(latency.as_secs_f64());
        if error.is_none()
            && let Some(ttft) = ttft
        {
            series
                .ttft
                .get_or_insert_with(|| {
                    self.with(|| {
                        metrics::histogram!(TIME_TO_FIRST_TOKEN_SECONDS, "provider" => provider.to_string())
                    })
                })
                .record(ttft.as_secs_f64());
        }
    }

    pub fn failover(&self, route: String, from: &str, to: &str) {
        self.with(|| {
            metrics::counter!(FAILOVERS_TOTAL, "route" => route, "from" => from.to_string(), "to" => to.to_string())
                .increment(1);
        });
    }

    pub fn provider_state(&self, provider: &str, gauge: u8) {
        self.with(|| {
            metrics::gauge!(PROVIDER_STATE, "provider" => provider.to_string())
                .set(f64::from(gauge));
        });
    }

    pub fn provider_success_ratio(&self, provider: &str, ratio: Option<f64>) {
        self.with(|| {
            metrics::gauge!(PROVIDER_SUCCESS_RATIO, "provider" => provider.to_string())
                .set(ratio.unwrap_or(f64::NAN));
        });
    }

    pub fn journal_rpo(&self, exposure: Duration) {
        self.with(|| metrics::gauge!(JOURNAL_RPO_SECONDS).set(exposure.as_secs_f64()));
    }

    pub fn alert(&self, rule: &'static str, severity: &'static str) {
        self.with(|| {
            metrics::counter!(ALERTS_TOTAL, "rule" => rule, "severity" => severity).increment(1)
        });
    }

    pub fn delivery_failure(&self, channel: &'static str) {
        self.with(|| {
            metrics::counter!(ALERT_DELIVERY_FAILURES_TOTAL, "channel" => channel).increment(1)
        });
    }

    pub fn notification_dropped(&self, channel: &'static str) {
        self.with(|| {
            metrics::counter!(ALERT_NOTIFICATIONS_DROPPED_TOTAL, "channel" => channel).increment(1)
        });
    }

    pub fn alert_suppressed(&self, channel: &'static str) {
        self.with(|| metrics::counter!(ALERTS_SUPPRESSED_TOTAL, "channel" => channel).increment(1));
    }

    pub fn events_lagged(&self, n: u64) {
        self.with(|| metrics::counter!(EVENTS_LAGGED_TOTAL).increment(n));
    }
}

fn build_recorder() -> PrometheusRecorder {
    // Default buckets too, so a histogram added later renders as a histogram, never
    // as a summary.
    let mut builder = match PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "default histogram buckets rejected");
            PrometheusBuilder::new()
        }
    };
    for (name, buckets) in [
        (UPSTREAM_LATENCY_SECONDS, LATENCY_BUCKETS),
        (TIME_TO_FIRST_TOKEN_SECONDS, TTFT_BUCKETS),
    ] {
        // The only error is an empty bucket list; ours are non-empty constants.
        builder = match builder.set_buckets_for_metric(Matcher::Full(name.into()), buckets) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, metric = name, "histogram buckets rejected");
                PrometheusBuilder::new()
            }
        };
    }
    builder.build_recorder()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_gateways_keep_separate_counters() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.request("chat".into(), RequestOutcome::Success);
        a.request("chat".into(), RequestOutcome::Success);
        b.request("chat".into(), RequestOutcome::Timeout);
        let text_a = a.render();
        let text_b = b.render();
        assert!(
            text_a.contains(r#"bulwark_requests_total{route="chat",outcome="success"} 2"#),
            "{text_a}"
        );
        assert!(!text_a.contains("timeout"));
        assert!(
            text_b.contains(r#"bulwark_requests_total{route="chat",outcome="timeout"} 1"#),
            "{text_b}"
        );
    }

    #[test]
    fn histograms_render_as_histograms_with_our_buckets() {
        let m = Metrics::new();
        m.attempt(
            "openai",
            None,
            Duration::from_millis(1500),
            Some(Duration::from_millis(300)),
        );
        let text = m.render();
        assert!(
            text.contains("# TYPE bulwark_upstream_latency_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE bulwark_time_to_first_token_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"bulwark_time_to_first_token_seconds_bucket{provider="openai",le="0.35"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"bulwark_time_to_first_token_seconds_bucket{provider="openai",le="0.2"} 0"#
            ),
            "{text}"
        );
    }

    #[test]
    fn outcomes_map_from_status_and_error() {
        assert_eq!(RequestOutcome::from_status(200), RequestOutcome::Success);
        assert_eq!(
            RequestOutcome::from_status(404),
            RequestOutcome::ClientError
        );
        assert_eq!(
            RequestOutcome::from_status(503),
            RequestOutcome::FailedUpstream
        );
        assert_eq!(RequestOutcome::from_status(504), RequestOutcome::Timeout);
        let err = GatewayError::new(ErrorKind::Unavailable, "x");
        assert_eq!(
            RequestOutcome::from_error(&err),
            RequestOutcome::FailedUpstream
        );
    }
}
