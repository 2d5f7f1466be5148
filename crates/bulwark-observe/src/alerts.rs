//! From trigger/resolve events to notifications on each channel.
//!
//! - **Log**: every trigger and resolve, always (`warn`/`error` for triggers by
//!   severity, `info` for resolves), never rate-limited.
//! - **Slack, PagerDuty, webhook**: a trigger goes to each channel whose
//!   `min_severity` it reaches (emergencies reach every channel), unless the channel
//!   sent `rate_limit.max` triggers in the last `rate_limit.per` (the storm limit;
//!   emergencies are exempt). A held-back trigger is logged and counted in
//!   `bulwark_alerts_suppressed_total{channel}`. A resolve goes exactly to the
//!   channels that were sent the trigger, so PagerDuty never gets a resolve for an
//!   alert it never opened and always gets one for an alert it did.
//! - `bulwark_alerts_total{rule,severity}` counts triggers (incidents), once each.
//!
//! Nothing here waits: notifications are queued with `try_send` to the channel tasks
//! of [`crate::notify`].

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use bulwark_core::config::Secret;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::config::{AlertsConfig, RateLimitConfig, Severity};
use crate::metrics::Metrics;
use crate::notify::{self, Delivery, Retry, pagerduty, slack, webhook};
use crate::rules::{Action, AlertEvent};

enum Kind {
    Slack { url: Secret },
    PagerDuty { url: Secret, routing_key: Secret },
    Webhook { url: Secret, secret: Option<Secret> },
}

struct Channel {
    name: &'static str,
    kind: Kind,
    min_severity: Severity,
    tx: mpsc::Sender<Delivery>,
    /// When recent triggers were sent, for the storm limit.
    recent: VecDeque<Instant>,
    /// Dedup keys whose trigger this channel was sent (and no resolve yet).
    open: HashSet<String>,
}

/// Routes alert events to the log and the configured channels.
pub struct AlertManager {
    source: String,
    metrics: Arc<Metrics>,
    limit: RateLimitConfig,
    channels: Vec<Channel>,
}

impl std::fmt::Debug for AlertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertManager")
            .field("source", &self.source)
            .field(
                "channels",
                &self.channels.iter().map(|c| c.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl AlertManager {
    /// Starts one delivery task per configured channel (call inside a runtime).
    pub fn start(
        config: &AlertsConfig,
        source: &str,
        client: &reqwest::Client,
        metrics: &Arc<Metrics>,
    ) -> (AlertManager, Vec<JoinHandle<()>>) {
        let retry = Retry::from(&config.delivery);
        let mut channels = Vec::new();
        let mut tasks = Vec::new();
        let mut add = |name: &'static str, kind: Kind, min_severity: Severity| {
            let (tx, task) = notify::spawn_channel(
                name,
                client.clone(),
                retry,
                config.delivery.queue,
                Arc::clone(metrics),
            );
            tasks.push(task);
            channels.push(Channel {
                name,
                kind,
                min_severity,
                tx,
                recent: VecDeque::new(),
                open: HashSet::new(),
            });
        };
        if let Some(s) = &config.slack {
            add(
                "slack",
                Kind::Slack {
                    url: s.webhook_url.clone(),
                },
                s.min_severity,
            );
        }
        if let Some(p) = &config.pagerduty {
            add(
                "pagerduty",
                Kind::PagerDuty {
                    url: Secret::new(pagerduty::enqueue_url(&p.url)),
                    routing_key: p.routing_key.clone(),
                },
                p.min_severity,
            );
        }
        if let Some(w) = &config.webhook {
            add(
                "webhook",
                Kind::Webhook {
                    url: Secret::new(w.url.clone()),
                    secret: w.secret.clone(),
                },
                w.min_severity,
            );
        }
        let manager = AlertManager {
            source: source.to_string(),
            metrics: Arc::clone(metrics),
            limit: config.rate_limit.clone(),
            channels,
        };
        (manager, tasks)
    }

    /// Logs, counts and queues one tick's events.
    pub fn handle(&mut self, now: Instant, events: &[AlertEvent]) {
        for event in events {
            log(event);
            if event.action == Action::Trigger {
                self.metrics
                    .alert(event.incident.rule.name(), event.incident.severity.label());
            }
            for i in 0..self.channels.len() {
                self.send_to_channel(i, now, event);
            }
        }
    }

    fn send_to_channel(&mut self, i: usize, now: Instant, event: &AlertEvent) {
        let limit = self.limit.clone();
        let source = self.source.clone();
        let Some(channel) = self.channels.get_mut(i) else {
            return;
        };
        let incident = &event.incident;
        match event.action {
            Action::Trigger => {
                if incident.severity < channel.min_severity {
                    return;
                }
                if incident.severity != Severity::Emergency {
                    while channel
                        .recent
                        .front()
                        .is_some_and(|t| now.saturating_duration_since(*t) >= limit.per.0)
                    {
                        channel.recent.pop_front();
                    }
                    if channel.recent.len() >= limit.max as usize {
                        self.metrics.alert_suppressed(channel.name);
                        warn!(
                            channel = channel.name,
                            rule = incident.rule.name(),
                            dedup_key = %incident.dedup_key,
                            "alert held back by the storm limit"
                        );
                        return;
                    }
                    channel.recent.push_back(now);
                }
                channel.open.insert(incident.dedup_key.clone());
            }
            Action::Resolve => {
                if !channel.open.remove(&incident.dedup_key) {
                    return;
                }
            }
        }
        let delivery = build(channel, event, &source);
        match channel.tx.try_send(delivery) {
            Ok(()) => {}
            Err(TrySendError::Full(d) | TrySendError::Closed(d)) => {
                self.metrics.notification_dropped(d.channel);
                warn!(channel = d.channel, what = %d.what, "alert queue full; notification dropped");
            }
        }
    }
}

fn build(channel: &Channel, event: &AlertEvent, source: &str) -> Delivery {
    let what = format!("{} {}", event.action.label(), event.incident.dedup_key);
    let (url, body, sign_with) = match &channel.kind {
        Kind::Slack { url } => (url.clone(), slack::payload(event, source), None),
        Kind::PagerDuty { url, routing_key } => (
            url.clone(),
            pagerduty::payload(event, routing_key.expose(), source),
            None,
        ),
        Kind::Webhook { url, secret } => {
            (url.clone(), webhook::payload(event, source), secret.clone())
        }
    };
    Delivery {
        channel: channel.name,
        url,
        body: body.to_string().into_bytes(),
        sign_with,
        what,
    }
}

fn log(event: &AlertEvent) {
    let i = &event.incident;
    let subject = i.subject.key();
    match (event.action, i.severity) {
        (Action::Resolve, _) => info!(
            alert = "resolve",
            rule = i.rule.name(),
            subject = %subject,
            dedup_key = %i.dedup_key,
            "alert resolved: {}",
            i.summary
        ),
        (Action::Trigger, Severity::Critical | Severity::Emergency) => error!(
            alert = "trigger",
            rule = i.rule.name(),
            severity = i.severity.label(),
            subject = %subject,
            dedup_key = %i.dedup_key,
            "alert: {}",
            i.summary
        ),
        (Action::Trigger, _) => warn!(
            alert = "trigger",
            rule = i.rule.name(),
            severity = i.severity.label(),
            subject = %subject,
            dedup_key = %i.dedup_key,
            "alert: {}",
            i.summary
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use bulwark_core::config::HumanDuration;
    use serde_json::{Map, Value};

    use super::*;
    use crate::rules::{Incident, RuleKind, Subject};

    fn manager(max: u32, min_severity: Severity) -> (AlertManager, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(100);
        let manager = AlertManager {
            source: "gw".into(),
            metrics: Metrics::new(),
            limit: RateLimitConfig {
                max,
                per: HumanDuration::secs(60),
            },
            channels: vec![Channel {
                name: "webhook",
                kind: Kind::Webhook {
                    url: Secret::new("http://127.0.0.1:9/hook"),
                    secret: None,
                },
                min_severity,
                tx,
                recent: VecDeque::new(),
                open: HashSet::new(),
            }],
        };
        (manager, rx)
    }

    fn event(action: Action, n: usize, severity: Severity) -> AlertEvent {
        AlertEvent {
            action,
            incident: Incident {
                rule: RuleKind::BreakerOpen,
                subject: Subject::target("p", &format!("m{n}")),
                severity,
                dedup_key: format!("key{n}"),
                summary: "s".into(),
                details: Map::new(),
                since: Instant::now(),
                since_wall: SystemTime::now(),
            },
            at: SystemTime::now(),
        }
    }

    /// A Slack resolve says the incident is over, not the firing text again.
    #[test]
    fn a_slack_resolve_says_it_is_over() {
        let mut fired = event(Action::Trigger, 1, Severity::Critical);
        fired.incident.summary = "success rate of p/m1 is 62%, below 90%".into();
        let firing = slack::payload(&fired, "gw");
        assert!(firing["text"].as_str().unwrap().starts_with("[CRITICAL]"));
        let mut resolved = fired.clone();
        resolved.action = Action::Resolve;
        let text = slack::payload(&resolved, "gw")["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            text.starts_with("[RESOLVED] breaker_open: back to normal"),
            "{text}"
        );
        assert!(text.contains("while it fired: success rate"), "{text}");
    }

    fn drain(rx: &mut mpsc::Receiver<Delivery>) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(d) = rx.try_recv() {
            out.push(serde_json::from_slice(&d.body).unwrap_or(Value::Null));
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_storm_is_limited_but_emergencies_and_resolves_get_through() {
        let (mut m, mut rx) = manager(10, Severity::Info);
        let storm: Vec<AlertEvent> = (0..15)
            .map(|n| event(Action::Trigger, n, Severity::Warning))
            .collect();
        m.handle(Instant::now(), &storm);
        let sent = drain(&mut rx);
        assert_eq!(sent.len(), 10);
        // A suppressed trigger's resolve is not sent; a delivered one's is.
        m.handle(
            Instant::now(),
            &[event(Action::Resolve, 14, Severity::Warning)],
        );
        assert!(drain(&mut rx).is_empty());
        m.handle(
            Instant::now(),
            &[event(Action::Resolve, 0, Severity::Warning)],
        );
        let resolved = drain(&mut rx);
        assert_eq!(resolved.len(), 1);
        assert_eq!(
            (
                resolved[0]["event"].as_str(),
                resolved[0]["dedup_key"].as_str()
            ),
            (Some("resolve"), Some("key0"))
        );
        // Emergencies are exempt from the limit.
        m.handle(
            Instant::now(),
            &[event(Action::Trigger, 99, Severity::Emergency)],
        );
        assert_eq!(drain(&mut rx).len(), 1);
        // The window slides.
        tokio::time::advance(Duration::from_secs(60)).await;
        m.handle(
            Instant::now(),
            &[event(Action::Trigger, 20, Severity::Warning)],
        );
        assert_eq!(drain(&mut rx).len(), 1);
        let text = m.metrics.render();
        assert!(
            text.contains(r#"bulwark_alerts_suppressed_total{channel="webhook"} 5"#),
            "{text}"
        );
        assert!(
            text.contains(r#"bulwark_alerts_total{rule="breaker_open",severity="warning"} 16"#),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_channel_takes_only_its_severities_but_every_emergency() {
        let (mut m, mut rx) = manager(10, Severity::Critical);
        m.handle(
            Instant::now(),
            &[event(Action::Trigger, 1, Severity::Warning)],
        );
        m.handle(
            Instant::now(),
            &[event(Action::Resolve, 1, Severity::Warning)],
        );
        assert!(drain(&mut rx).is_empty());
        m.handle(
            Instant::now(),
            &[event(Action::Trigger, 2, Severity::Emergency)],
        );
        assert_eq!(drain(&mut rx).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let (tx, _rx) = mpsc::channel(1);
        let (mut m, _) = manager(100, Severity::Info);
        m.channels[0].tx = tx;
        let events: Vec<AlertEvent> = (0..3)
            .map(|n| event(Action::Trigger, n, Severity::Warning))
            .collect();
        m.handle(Instant::now(), &events);
        let text = m.metrics.render();
        assert!(
            text.contains(r#"bulwark_alert_notifications_dropped_total{channel="webhook"} 2"#),
            "{text}"
        );
    }
}
