//! Delivery of alert notifications: one task and one bounded queue per channel.
//!
//! The evaluator hands a ready [`Delivery`] to a channel with `try_send`, which never
//! waits: a full queue drops the notification and counts it
//! (`bulwark_alert_notifications_dropped_total`). Each channel's task sends its
//! queue in order (so a resolve never overtakes its trigger), each notification with
//! up to `attempts` tries, exponential backoff between them (a 429's `Retry-After`
//! is honoured up to `max_backoff`), and a timeout per try. Network errors, 429 and
//! 5xx are retried; other 4xx are not (the payload or the key is wrong, and sending
//! it again will not help). Every failed try counts in
//! `bulwark_alert_delivery_failures_total{channel}`.
//!
//! A slow or dead receiver therefore delays only its own channel's later
//! notifications, never the side-car, never a request.
//!
//! Payload shapes: [`slack`], [`pagerduty`], [`webhook`].

pub mod pagerduty;
pub mod slack;
pub mod webhook;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bulwark_core::config::Secret;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::config::DeliveryConfig;
use crate::metrics::Metrics;

/// One notification, ready to post.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `slack`, `pagerduty` or `webhook` (the metrics label).
    pub channel: &'static str,
    /// Where to post; may hold a token (Slack), so it is never logged.
    pub url: Secret,
    pub body: Vec<u8>,
    /// Signs the body (generic webhook with a secret).
    pub sign_with: Option<Secret>,
    /// For logs: `trigger success_rate bulwark/gw/...`.
    pub what: String,
}

/// Retry settings of a channel.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
}

impl From<&DeliveryConfig> for Retry {
    fn from(c: &DeliveryConfig) -> Self {
        Retry {
            attempts: c.attempts.max(1),
            backoff: c.backoff.0,
            max_backoff: c.max_backoff.0,
            timeout: c.timeout.0,
        }
    }
}

impl Retry {
    /// The wait before try `n + 1` (n ≥ 1): backoff × 2^(n−1), capped.
    pub fn wait_after(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(16));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// Starts a channel's delivery task; returns its queue and the task.
pub fn spawn_channel(
    channel: &'static str,
    client: reqwest::Client,
    retry: Retry,
    queue: usize,
    metrics: Arc<Metrics>,
) -> (mpsc::Sender<Delivery>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Delivery>(queue.max(1));
    let task = tokio::spawn(async move {
        while let Some(delivery) = rx.recv().await {
            deliver(&client, &retry, &metrics, &delivery).await;
        }
        debug!(channel, "alert channel closed");
    });
    (tx, task)
}

/// Why one try failed.
#[derive(Debug)]
struct TryError {
    retryable: bool,
    reason: String,
    retry_after: Option<Duration>,
}

async fn deliver(client: &reqwest::Client, retry: &Retry, metrics: &Metrics, d: &Delivery) {
    for n in 1..=retry.attempts {
        match try_once(client, retry.timeout, d).await {
            Ok(()) => {
                debug!(channel = d.channel, what = %d.what, tries = n, "alert delivered");
                return;
            }
            Err(e) => {
                metrics.delivery_failure(d.channel);
                let last = n == retry.attempts || !e.retryable;
                warn!(
                    channel = d.channel,
                    what = %d.what,
                    try_number = n,
                    reason = %e.reason,
                    giving_up = last,
                    "alert delivery failed"
                );
                if last {
                    metrics.notification_dropped(d.channel);
                    return;
                }
                let wait = e
                    .retry_after
                    .map_or_else(|| retry.wait_after(n), |w| w.min(retry.max_backoff));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

async fn try_once(
    client: &reqwest::Client,
    timeout: Duration,
    d: &Delivery,
) -> Result<(), TryError> {
    let mut request = client
        .post(d.url.expose())
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            reqwest::header::USER_AGENT,
            concat!("bulwark/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(secret) = &d.sign_with {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = webhook::signature(secret.expose().as_bytes(), timestamp, &d.body);
        request = request
            .header(webhook::TIMESTAMP_HEADER, timestamp.to_string())
            .header(webhook::SIGNATURE_HEADER, signature);
    }
    let response = request
        .body(d.body.clone())
        .send()
        .await
        .map_err(|e| TryError {
            retryable: true,
            // Without the URL: a Slack webhook URL is a credential.
            reason: describe_transport_error(&e),
            retry_after: None,
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Err(TryError {
        retryable: status.as_u16() == 429 || status.is_server_error(),
        reason: format!("HTTP {}", status.as_u16()),
        retry_after,
    })
}

fn describe_transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "transport error".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = Retry {
            attempts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
        };
        let waits: Vec<u64> = (1..=5).map(|n| r.wait_after(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 5, 5]);
    }
}
