//! Game-day fault injection: make a named target fail in a chosen way for a chosen
//! time, inside the gateway, so failover can be rehearsed against the real secondary
//! providers without touching the primary.
//!
//! Every upstream a target calls is wrapped in [`Chaotic`], which consults the
//! [`ChaosBoard`] before each call. While a rule matches the target:
//!
//! | fault | what the router sees | provider called |
//! |---|---|---|
//! | `down` | a transient error (as a refused connection), at once | no |
//! | `throttle` | 429 with `retry_after` | no |
//! | `slow_first_token` | the call starts only after `delay` (the first-token timeout decides) | yes, after the delay |
//! | `cut_stream` | the stream ends with a transient error after `after_events` events | yes |
//!
//! Health probes go through the same wrapper, so a target under chaos stays unhealthy
//! for its breaker until the rule ends. Rules expire on their own; setting and expiry
//! are logged at `warn`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bulwark_core::config::HumanDuration;
use bulwark_core::{ChatRequest, ChatResponse, ErrorClass, UpstreamError};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{EventStream, Upstream};

/// How an injected fault behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChaosFault {
    /// Every call fails at once, as if the provider refused connections.
    Down,
    /// Every call is answered 429 with this wait.
    Throttle {
        #[serde(default = "default_retry_after")]
        retry_after: HumanDuration,
    },
    /// Every call waits this long before it starts.
    SlowFirstToken { delay: HumanDuration },
    /// Streams break after this many events.
    CutStream {
        #[serde(default = "default_after_events")]
        after_events: u32,
    },
}

fn default_retry_after() -> HumanDuration {
    HumanDuration::secs(10)
}

fn default_after_events() -> u32 {
    3
}

/// One active rule.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosRule {
    pub id: u64,
    /// The provider name.
    pub provider: String,
    /// One model of the provider, or every model when `None`.
    pub model: Option<String>,
    pub fault: ChaosFault,
    /// Unix milliseconds.
    pub started_at_ms: u64,
    pub expires_at_ms: u64,
    #[serde(skip)]
    expires: Instant,
}

impl ChaosRule {
    fn matches(&self, provider: &str, model: &str) -> bool {
        self.provider == provider && self.model.as_deref().is_none_or(|m| m == model)
    }

    /// Time left.
    pub fn remaining(&self) -> Duration {
        self.expires.saturating_duration_since(Instant::now())
    }
}

/// The active rules of one gateway.
#[derive(Debug, Default)]
pub struct ChaosBoard {
    rules: Mutex<Vec<ChaosRule>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl ChaosBoard {
    /// Adds a rule for `duration`; returns it.
    pub fn inject(
        &self,
        provider: &str,
        model: Option<&str>,
        fault: ChaosFault,
        duration: Duration,
    ) -> ChaosRule {
        let now_ms = unix_ms(SystemTime::now());
        let rule = ChaosRule {
            id: self
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1,
            provider: provider.to_string(),
            model: model.map(str::to_string),
            fault,
            started_at_ms: now_ms,
            expires_at_ms: now_ms + u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            expires: Instant::now() + duration,
        };
        tracing::warn!(
            chaos_id = rule.id,
            provider = %rule.provider,
            model = rule.model.as_deref().unwrap_or("*"),
            fault = ?rule.fault,
            duration = %humantime::format_duration(duration),
            "CHAOS: fault injected by an operator; calls to this target are faked until it ends"
        );
        self.lock().push(rule.clone());
        rule
    }

    /// The rules still in force (expired ones are dropped and logged).
    pub fn active(&self) -> Vec<ChaosRule> {
        let mut rules = self.lock();
        let now = Instant::now();
        rules.retain(|r| {
            let live = r.expires > now;
            if !live {
                tracing::warn!(chaos_id = r.id, provider = %r.provider, "CHAOS: fault ended");
            }
            live
        });
        rules.clone()
    }

    /// Removes one rule (`Some(id)`) or all; returns how many were removed.
    pub fn clear(&self, id: Option<u64>) -> usize {
        let mut rules = self.lock();
        let before = rules.len();
        rules.retain(|r| id.is_some_and(|id| r.id != id));
        let removed = before - rules.len();
        if removed > 0 {
            tracing::warn!(removed, "CHAOS: fault(s) cleared by an operator");
        }
        removed
    }

    fn fault_for(&self, provider: &str, model: &str) -> Option<ChaosFault> {
        let rules = self.lock();
        if rules.is_empty() {
            return None;
        }
        let now = Instant::now();
        rules
            .iter()
            .find(|r| r.expires > now && r.matches(provider, model))
            .map(|r| r.fault.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ChaosRule>> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// An upstream behind the chaos board.
pub(crate) struct Chaotic {
    pub inner: Arc<dyn Upstream>,
    pub provider: String,
    pub model: String,
    pub board: Arc<ChaosBoard>,
}

fn down() -> UpstreamError {
    UpstreamError::new(
        ErrorClass::Transient,
        "chaos: the target is down (fault injected through /admin/chaos)",
    )
}

fn throttled(wait: Duration) -> UpstreamError {
    let mut err = UpstreamError::new(
        ErrorClass::Throttled,
        "chaos: rate limited (fault injected through /admin/chaos)",
    );
    err.status = Some(429);
    err.retry_after = Some(wait);
    err
}

/// The failure a fault answers every call with before it reaches the provider (down,
/// throttled); `None` for the faults that act on the answer itself.
fn refusal(fault: Option<&ChaosFault>) -> Option<UpstreamError> {
    match fault? {
        ChaosFault::Down => Some(down()),
        ChaosFault::Throttle { retry_after } => Some(throttled(retry_after.0)),
        ChaosFault::SlowFirstToken { .. } | ChaosFault::CutStream { .. } => None,
    }
}

impl Upstream for Chaotic {
    fn count_tokens<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
    ) -> BoxFuture<'a, Result<u64, UpstreamError>> {
        Box::pin(async move {
            let fault = self.board.fault_for(&self.provider, &self.model);
            match refusal(fault.as_ref()) {
                Some(err) => Err(err),
                None => self.inner.count_tokens(req, model).await,
            }
        })
    }

    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
    ) -> BoxFuture<'a, Result<ChatResponse, UpstreamError>> {
        Box::pin(async move {
            let fault = self.board.fault_for(&self.provider, &self.model);
            if let Some(err) = refusal(fault.as_ref()) {
                return Err(err);
            }
            if let Some(ChaosFault::SlowFirstToken { delay }) = fault {
                tokio::time::sleep(delay.0).await;
            }
            self.inner.chat(req, model).await
        })
    }

    fn chat_stream<'a>(
        &'a self,
        req: &'a ChatRequest,
        model: &'a str,
    ) -> BoxFuture<'a, Result<EventStream, UpstreamError>> {
        Box::pin(async move {
            let fault = self.board.fault_for(&self.provider, &self.model);
            if let Some(err) = refusal(fault.as_ref()) {
                return Err(err);
            }
            match fault {
                Some(ChaosFault::Down | ChaosFault::Throttle { .. }) | None => {
                    self.inner.chat_stream(req, model).await
                }
                Some(ChaosFault::SlowFirstToken { delay }) => {
                    tokio::time::sleep(delay.0).await;
                    self.inner.chat_stream(req, model).await
                }
                Some(ChaosFault::CutStream { after_events }) => {
                    let stream = self.inner.chat_stream(req, model).await?;
                    let limit = usize::try_from(after_events).unwrap_or(usize::MAX);
                    let cut = stream.take(limit).chain(futures::stream::once(async {
                        Err(UpstreamError::new(
                            ErrorClass::Transient,
                            "chaos: the stream was cut (fault injected through /admin/chaos)",
                        ))
                    }));
                    Ok(Box::pin(cut) as EventStream)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_decode_from_the_admin_api_shape() {
        let f: ChaosFault = serde_json::from_value(serde_json::json!({"kind": "down"})).unwrap();
        assert_eq!(f, ChaosFault::Down);
        let f: ChaosFault =
            serde_json::from_value(serde_json::json!({"kind": "slow_first_token", "delay": "3s"}))
                .unwrap();
        assert_eq!(
            f,
            ChaosFault::SlowFirstToken {
                delay: HumanDuration::secs(3)
            }
        );
        let f: ChaosFault =
            serde_json::from_value(serde_json::json!({"kind": "throttle"})).unwrap();
        assert_eq!(
            f,
            ChaosFault::Throttle {
                retry_after: HumanDuration::secs(10)
            }
        );
        assert!(
            serde_json::from_value::<ChaosFault>(serde_json::json!({"kind": "explode"})).is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rules_match_their_target_and_expire() {
        let board = ChaosBoard::default();
        board.inject("a", None, ChaosFault::Down, Duration::from_secs(10));
        board.inject("b", Some("m1"), ChaosFault::Down, Duration::from_secs(5));
        assert!(board.fault_for("a", "anything").is_some());
        assert!(board.fault_for("b", "m1").is_some());
        assert!(board.fault_for("b", "m2").is_none());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(board.fault_for("b", "m1").is_none());
        assert_eq!(board.active().len(), 1);
        assert_eq!(board.clear(None), 1);
        assert!(board.fault_for("a", "x").is_none());
    }
}
