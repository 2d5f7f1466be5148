//! An in-process gateway in front of three mock providers, request helpers, and
//! readers for what the caller and the mocks saw.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulwark_mock::{Behavior, CallRecord, FaultRule, MockServer};
use bulwark_router::target::PROBE_TEXT;
use bulwark_router::{BreakerState, Router, RouterEvent, Tuning};
use serde_json::{Value, json};

/// `primary` (anthropic kind) serving `claude-test`.
pub const P: &str = "{provider: primary, model: claude-test}";
/// `secondary` (openai kind) serving `gpt-test`.
pub const S: &str = "{provider: secondary, model: gpt-test}";
/// `tertiary` (gemini kind) serving `gemini-test`.
pub const T: &str = "{provider: tertiary, model: gemini-test}";

/// The timeouts scaled down so the suite stays short: first token 15 s → 1 s,
/// idle 20 s → 1 s, total 120 s → 10 s.
pub const TIMEOUTS: &str = "timeouts: {connect: 1s, first_token: 1s, idle: 1s, total: 10s}";
/// Breaker open time 30 s → 2 s (other breaker settings at their defaults).
pub const BREAKER: &str = "circuit_breaker: {open_for: 2s}";

/// One route entry of the YAML `routes:` list.
pub fn route(model: &str, targets: &[&str], settings: &[&str]) -> String {
    let mut out = format!("  - model: {model}\n    targets:\n");
    for t in targets {
        out.push_str(&format!("      - {t}\n"));
    }
    for line in settings {
        out.push_str(&format!("    {line}\n"));
    }
    out
}

pub fn fault(rule: Value) -> FaultRule {
    serde_json::from_value(rule).unwrap()
}

pub struct Gw {
    pub addr: SocketAddr,
    pub primary: MockServer,
    pub secondary: MockServer,
    pub tertiary: MockServer,
    pub router: Arc<Router>,
    client: reqwest::Client,
    /// Taken just before the mocks started: their `at_ms` count from about here.
    pub t0: Instant,
    _stop: tokio::sync::oneshot::Sender<()>,
    /// Holds the journal's directory.
    pub _dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
    /// When the request was sent, in ms since `Gw::t0`.
    pub sent_ms: u64,
}

impl Resp {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub fn ms(&self) -> u64 {
        self.elapsed.as_millis() as u64
    }
}

/// Breaker transitions seen: (ms, provider, from, to).
pub type Transitions = Arc<Mutex<Vec<(u64, String, BreakerState, BreakerState)>>>;

impl Gw {
    pub async fn start(routes: &str) -> Gw {
        Gw::start_with(routes, "", Tuning::default()).await
    }

    /// `top` is extra top-level YAML (e.g. `retry_budget: ...`).
    pub async fn start_with(routes: &str, top: &str, tuning: Tuning) -> Gw {
        bulwark_server::install_crypto_provider();
        let t0 = Instant::now();
        let primary = MockServer::start("primary").await.unwrap();
        let secondary = MockServer::start("secondary").await.unwrap();
        let tertiary = MockServer::start("tertiary").await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal.db");
        let yaml = format!(
            "journal: {{path: \"{j}\"}}\nproviders:\n  - {{name: primary, kind: anthropic, api_key: k-a, base_url: \"{a}\"}}\n  - {{name: secondary, kind: openai, api_key: k-b, base_url: \"{b}/v1\"}}\n  - {{name: tertiary, kind: gemini, api_key: k-c, base_url: \"{c}\"}}\n{top}\nroutes:\n{routes}",
            a = primary.url(),
            b = secondary.url(),
            c = tertiary.url(),
            j = journal.display(),
        );
        let config = bulwark_server::config::parse(Path::new("resilience.yaml"), &yaml, &|_| None)
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let state = bulwark_server::build_state_tuned(&config, tuning)
            .await
            .unwrap();
        let router = Arc::clone(&state.router);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            bulwark_server::serve(listener, state, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Gw {
            addr,
            primary,
            secondary,
            tertiary,
            router,
            client: reqwest::Client::new(),
            t0,
            _stop: stop,
            _dir: dir,
        }
    }

    pub async fn post(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Resp {
        let sent = Instant::now();
        let mut req = self
            .client
            .post(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json")
            .body(body.to_string());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap();
        Resp {
            status,
            headers,
            body,
            elapsed: sent.elapsed(),
            sent_ms: sent.duration_since(self.t0).as_millis() as u64,
        }
    }

    pub async fn openai(&self, body: &Value) -> Resp {
        self.post("/v1/chat/completions", body, &[]).await
    }

    pub async fn anthropic(&self, body: &Value) -> Resp {
        self.post("/v1/messages", body, &[]).await
    }

    pub async fn healthy(&self) -> bool {
        self.client
            .get(format!("http://{}/healthz", self.addr))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    pub fn breaker(&self, provider: &str) -> BreakerState {
        self.router
            .targets()
            .into_iter()
            .find(|t| t.provider == provider)
            .map(|t| t.breaker.state())
            .unwrap()
    }

    /// Breaker transitions of every target as (ms since `t0`, provider, from, to).
    pub fn watch_breakers(&self) -> Transitions {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = Arc::clone(&seen);
        let mut events = self.router.subscribe();
        let t0 = self.t0;
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                if let RouterEvent::Breaker {
                    provider, from, to, ..
                } = event
                {
                    let at = t0.elapsed().as_millis() as u64;
                    out.lock().unwrap().push((at, provider, from, to));
                }
            }
        });
        seen
    }
}

pub fn set_reply_tokens(mock: &MockServer, n: u32) {
    mock.set_behavior(Behavior {
        reply_tokens: Some(n),
        ..mock.behavior()
    });
}

pub fn is_probe(call: &CallRecord) -> bool {
    call.body.to_string().contains(PROBE_TEXT)
}

/// The calls a mock got from callers' requests (health probes left out).
pub fn caller_calls(mock: &MockServer) -> Vec<CallRecord> {
    mock.calls().into_iter().filter(|c| !is_probe(c)).collect()
}

pub fn probe_calls(mock: &MockServer) -> Vec<CallRecord> {
    mock.calls().into_iter().filter(is_probe).collect()
}

/// Time between consecutive calls, in ms.
pub fn gaps(calls: &[CallRecord]) -> Vec<u64> {
    calls.windows(2).map(|w| w[1].at_ms - w[0].at_ms).collect()
}

/// An OpenAI Chat Completions request for route `model`.
pub fn openai_body(model: &str, stream: bool) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "hello there"}],
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

pub fn chat(stream: bool) -> Value {
    openai_body("chat", stream)
}

/// An Anthropic Messages request for route `chat`.
pub fn anthropic_chat(stream: bool) -> Value {
    json!({
        "model": "chat",
        "max_tokens": 300,
        "stream": stream,
        "messages": [{"role": "user", "content": "hello there"}],
    })
}

/// What an OpenAI-format stream carried.
#[derive(Debug, Default)]
pub struct OpenAiStream {
    pub text: String,
    pub content_chunks: usize,
    pub roles: usize,
    pub finish_reason: Option<String>,
    pub usage: Option<Value>,
    pub error: Option<Value>,
    pub done: bool,
    /// Every `data:` line was JSON or `[DONE]`.
    pub well_formed: bool,
}

/// The answer's text from an OpenAI-format response, streamed (which must have ended
/// cleanly: `[DONE]`, no in-band error, every chunk JSON) or whole.
pub fn openai_answer_text(r: &Resp, stream: bool) -> String {
    if stream {
        let s = openai_stream(&r.body);
        assert!(s.done && s.error.is_none() && s.well_formed, "{}", r.body);
        s.text
    } else {
        r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub fn openai_stream(body: &str) -> OpenAiStream {
    let mut out = OpenAiStream {
        well_formed: true,
        ..OpenAiStream::default()
    };
    for data in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            out.done = true;
            continue;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            out.well_formed = false;
            continue;
        };
        if !chunk["error"].is_null() {
            out.error = Some(chunk["error"].clone());
            continue;
        }
        if !chunk["usage"].is_null() {
            out.usage = Some(chunk["usage"].clone());
        }
        let choice = &chunk["choices"][0];
        if choice["delta"]["role"].is_string() {
            out.roles += 1;
        }
        if let Some(text) = choice["delta"]["content"].as_str() {
            out.text.push_str(text);
            out.content_chunks += 1;
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            out.finish_reason = Some(reason.to_string());
        }
    }
    out
}

/// The `(event, data)` pairs of an Anthropic-format stream.
pub fn anthropic_events(body: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut name = String::new();
    for line in body.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            let value = serde_json::from_str(data).unwrap_or(Value::Null);
            out.push((name.clone(), value));
        }
    }
    out
}

/// `tok1 tok2 … tokN ` as the mock streams it.
pub fn tokens(from: u32, to: u32) -> String {
    (from..=to).map(|i| format!("tok{i} ")).collect()
}

pub fn scaled() -> Vec<&'static str> {
    vec![TIMEOUTS, BREAKER]
}

pub async fn primary_then_secondary() -> Gw {
    Gw::start(&route("chat", &[P, S], &scaled())).await
}
