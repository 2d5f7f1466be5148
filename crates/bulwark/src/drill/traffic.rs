//! The drill's callers: steady OpenAI Chat Completions traffic on the route, a mix of
//! streaming and plain requests, each with its own `x-request-id`, each recorded as
//! the caller experienced it (sent, ended, status, complete or not, who served).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::gateway::{SharedEndpoint, current};
use super::scenario::TrafficSpec;

/// What one caller request got. Times are milliseconds since the drill started.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub id: String,
    pub caller: u32,
    pub stream: bool,
    /// Which gateway it was sent to (0 is the first; each restart adds one).
    pub generation: u32,
    pub sent_ms: u64,
    pub done_ms: u64,
    /// `None`: no HTTP status arrived (refused, reset, timed out).
    pub status: Option<u16>,
    /// A whole answer: JSON 200 with content, or a stream with a finish reason, no
    /// error chunk, and `[DONE]`.
    pub complete: bool,
    /// `x-bulwark-provider`.
    pub provider: Option<String>,
    /// Why it was not a complete answer.
    pub failure: Option<String>,
    /// The answer's text (compared with the journal; not written to the report).
    #[serde(skip)]
    pub text: Option<String>,
}

impl Outcome {
    pub fn latency_ms(&self) -> u64 {
        self.done_ms.saturating_sub(self.sent_ms)
    }
}

/// Everything the callers need.
pub struct TrafficPlan {
    pub route: String,
    pub spec: TrafficSpec,
    /// In every request id: `drill-<run_id>-<n>`.
    pub run_id: String,
    pub started: Instant,
    /// No request is sent at or after this time.
    pub until: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// The admin token of the gateways the drill starts: sent as `x-bulwark-drill`, it
    /// marks the journal's records as drill traffic.
    pub drill_token: String,
}

/// The running callers.
pub struct Traffic {
    pub outcomes: Arc<Mutex<Vec<Outcome>>>,
    paused: watch::Sender<bool>,
    in_flight: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Traffic {
    pub fn start(plan: TrafficPlan, endpoint: SharedEndpoint) -> anyhow::Result<Traffic> {
        let client = reqwest::Client::builder()
            .timeout(plan.timeout)
            .connect_timeout(Duration::from_secs(1))
            .build()?;
        let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
        let (paused, paused_rx) = watch::channel(false);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let counter = Arc::new(AtomicU64::new(0));
        let plan = Arc::new(plan);
        let tasks = (0..plan.spec.callers)
            .map(|caller| {
                let caller_state = Caller {
                    caller,
                    plan: Arc::clone(&plan),
                    client: client.clone(),
                    endpoint: Arc::clone(&endpoint),
                    outcomes: Arc::clone(&outcomes),
                    paused: paused_rx.clone(),
                    in_flight: Arc::clone(&in_flight),
                    counter: Arc::clone(&counter),
                };
                tokio::spawn(caller_state.run())
            })
            .collect();
        Ok(Traffic {
            outcomes,
            paused,
            in_flight,
            tasks,
        })
    }

    /// Callers send nothing new until [`Traffic::resume`].
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Waits until no request is in flight (at most `limit`); whether it got there.
    pub async fn drained(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Waits for every caller to finish (they stop sending at `until`), and returns
    /// the outcomes in the order the requests ended.
    pub async fn finish(self) -> Vec<Outcome> {
        self.resume();
        for task in self.tasks {
            let _ = task.await;
        }
        std::mem::take(&mut *lock(&self.outcomes))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Caller {
    caller: u32,
    plan: Arc<TrafficPlan>,
    client: reqwest::Client,
    endpoint: SharedEndpoint,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    paused: watch::Receiver<bool>,
    in_flight: Arc<AtomicUsize>,
    counter: Arc<AtomicU64>,
}

impl Caller {
    async fn run(mut self) {
        let plan = Arc::clone(&self.plan);
        // Spread the callers over the first interval.
        let offset = plan.spec.interval.0 * self.caller / plan.spec.callers.max(1);
        tokio::time::sleep_until(plan.started + offset).await;
        // Open loop: a request goes out every interval whether or not the earlier
        // ones were answered. Waiting for each answer first would send almost nothing
        // while the gateway is slow, and judge an outage by the minutes around it.
        let mut requests = tokio::task::JoinSet::new();
        loop {
            if *self.paused.borrow() && self.paused.wait_for(|p| !*p).await.is_err() {
                break;
            }
            let sent = plan.started.elapsed();
            if sent >= plan.until {
                break;
            }
            let n = self.counter.fetch_add(1, Ordering::SeqCst);
            let stream = streams(n, plan.spec.stream_share);
            let id = format!("drill-{}-{n:06}", plan.run_id);
            let endpoint = current(&self.endpoint);
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let (client, plan_for, outcomes, in_flight) = (
                self.client.clone(),
                Arc::clone(&plan),
                Arc::clone(&self.outcomes),
                Arc::clone(&self.in_flight),
            );
            let caller = self.caller;
            requests.spawn(async move {
                let got = send(&client, &endpoint.base, &plan_for, &id, stream).await;
                let done = plan_for.started.elapsed();
                let outcome = Outcome {
                    id,
                    caller,
                    stream,
                    generation: endpoint.generation,
                    sent_ms: millis(sent),
                    done_ms: millis(done),
                    status: got.status,
                    complete: got.text.is_some(),
                    provider: got.provider,
                    failure: got.failure,
                    text: got.text,
                };
                lock(&outcomes).push(outcome);
                in_flight.fetch_sub(1, Ordering::SeqCst);
            });
            let next = sent + plan.spec.interval.0;
            if next >= plan.until {
                break;
            }
            tokio::time::sleep_until(plan.started + next).await;
        }
        while requests.join_next().await.is_some() {}
    }
}

pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether request `n` streams, spreading `share` evenly (0.5: every other one).
fn streams(n: u64, share: f64) -> bool {
    let before = (n as f64 * share).floor();
    let after = ((n + 1) as f64 * share).floor();
    after > before
}

struct Got {
    status: Option<u16>,
    provider: Option<String>,
    /// `Some` only for a complete answer.
    text: Option<String>,
    failure: Option<String>,
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    plan: &TrafficPlan,
    id: &str,
    stream: bool,
) -> Got {
    let body = serde_json::json!({
        "model": plan.route,
        "messages": [{
            "role": "user",
            "content": format!("Bulwark DR drill request {id}. Reply with one short sentence."),
        }],
        "max_tokens": plan.spec.max_tokens,
        "stream": stream,
    });
    let fail = |status: Option<u16>, provider: Option<String>, why: String| Got {
        status,
        provider,
        text: None,
        failure: Some(why),
    };
    let response = match client
        .post(format!("{base}/v1/chat/completions"))
        .header("x-request-id", id)
        .header("x-bulwark-drill", &plan.drill_token)
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(err) => return fail(None, None, transport_failure(&err)),
    };
    let status = response.status().as_u16();
    let provider = response
        .headers()
        .get("x-bulwark-provider")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = match response.text().await {
        Ok(text) => text,
        Err(err) => {
            return fail(
                Some(status),
                provider,
                format!("body broken: {}", transport_failure(&err)),
            );
        }
    };
    if status != 200 {
        return fail(Some(status), provider, format!("status {status}"));
    }
    let answer = if stream {
        stream_answer(&text)
    } else {
        json_answer(&text)
    };
    match answer {
        Ok(answer) => Got {
            status: Some(status),
            provider,
            text: Some(answer),
            failure: None,
        },
        Err(why) => fail(Some(status), provider, why),
    }
}

fn transport_failure(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".to_string()
    } else if err.is_connect() {
        "connection refused".to_string()
    } else {
        "connection lost".to_string()
    }
}

pub(crate) fn json_answer(body: &str) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|_| "the answer is not JSON".to_string())?;
    value["choices"][0]["message"]["content"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "the answer has no content".to_string())
}

/// The text of an OpenAI stream that finished cleanly: a finish reason, no error
/// chunk, then `data: [DONE]`.
pub(crate) fn stream_answer(body: &str) -> Result<String, String> {
    let mut text = String::new();
    let mut finished = false;
    let mut done = false;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data:").map(str::trim_start) else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: serde_json::Value =
            serde_json::from_str(data).map_err(|_| "a stream chunk is not JSON".to_string())?;
        if chunk.get("error").is_some() {
            return Err("the stream ended with an error".to_string());
        }
        if let Some(choice) = chunk["choices"].get(0) {
            if let Some(delta) = choice["delta"]["content"].as_str() {
                text.push_str(delta);
            }
            if choice["finish_reason"].is_string() {
                finished = true;
            }
        }
    }
    match (finished, done) {
        (true, true) => Ok(text),
        (false, _) => Err("the stream ended without a finish reason".to_string()),
        (true, false) => Err("the stream ended without [DONE]".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_of_the_requests_stream_alternately() {
        let flags: Vec<bool> = (0..6).map(|n| streams(n, 0.5)).collect();
        assert_eq!(flags, [false, true, false, true, false, true]);
        assert!((0..10).all(|n| !streams(n, 0.0)));
        assert!((0..10).all(|n| streams(n, 1.0)));
    }

    #[test]
    fn only_a_stream_with_finish_reason_and_done_is_complete() {
        let ok = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        assert_eq!(stream_answer(ok).unwrap(), "Hi");
        let cut = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n";
        assert!(stream_answer(cut).is_err());
        let broken = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"error\":{\"message\":\"x\"}}\n\ndata: [DONE]\n\n";
        assert!(stream_answer(broken).is_err());
        assert_eq!(
            json_answer("{\"choices\":[{\"message\":{\"content\":\"yes\"}}]}").unwrap(),
            "yes"
        );
    }
}
