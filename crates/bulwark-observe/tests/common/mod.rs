//! Shared test harness: a switchable in-process upstream, a router over it, local
//! HTTP receivers that record what alert channels post, and a Prometheus text parser.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod prom;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use bulwark_core::config::Config;
use bulwark_core::{
    ChatRequest, ChatResponse, ContentBlock, ErrorClass, Message, StopReason, StreamEvent,
    UpstreamError, Usage,
};
use bulwark_observe::{AlertsConfig, Observer, RequestOutcome};
use bulwark_router::{EventStream, RequestOptions, Router, Tuning, Upstream};
use futures::future::BoxFuture;
use serde_json::{Value, json};

pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An upstream that answers, or fails with a chosen class, at a switch.
pub struct Switch {
    pub failing: AtomicBool,
    pub class: Mutex<ErrorClass>,
    pub calls: AtomicU32,
    pub ttft: Mutex<Duration>,
}

impl Switch {
    pub fn new() -> Arc<Self> {
        Arc::new(Switch {
            failing: AtomicBool::new(false),
            class: Mutex::new(ErrorClass::Transient),
            calls: AtomicU32::new(0),
            ttft: Mutex::new(Duration::ZERO),
        })
    }

    pub fn fail(&self, class: ErrorClass) {
        *self.class.lock().unwrap() = class;
        self.failing.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.failing.store(false, Ordering::SeqCst);
    }

    fn outcome(&self) -> Result<(), UpstreamError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            let class = *self.class.lock().unwrap();
            Err(
                UpstreamError::new(class, "scripted failure: sk-secret-must-not-leak")
                    .with_status(503),
            )
        } else {
            Ok(())
        }
    }
}

impl Upstream for Switch {
    fn chat<'a>(
        &'a self,
        _req: &'a ChatRequest,
        model: &'a str,
    ) -> BoxFuture<'a, Result<ChatResponse, UpstreamError>> {
        Box::pin(async move {
            self.outcome()?;
            Ok(ChatResponse {
                id: "r1".into(),
                model: model.to_string(),
                content: vec![ContentBlock::Text { text: "ok".into() }],
                stop_reason: StopReason::EndTurn,
                stop_sequence: None,
                usage: Usage::default(),
            })
        })
    }

    fn chat_stream<'a>(
        &'a self,
        _req: &'a ChatRequest,
        model: &'a str,
    ) -> BoxFuture<'a, Result<EventStream, UpstreamError>> {
        Box::pin(async move {
            self.outcome()?;
            let ttft = *self.ttft.lock().unwrap();
            if !ttft.is_zero() {
                tokio::time::sleep(ttft).await;
            }
            let events = vec![
                Ok(StreamEvent::Start {
                    id: "r1".into(),
                    model: model.to_string(),
                }),
                Ok(StreamEvent::TextDelta { text: "ok".into() }),
                Ok(StreamEvent::Finish {
                    stop_reason: StopReason::EndTurn,
                    stop_sequence: None,
                    usage: Usage::default(),
                }),
            ];
            let stream: EventStream = Box::pin(futures::stream::iter(events));
            Ok(stream)
        })
    }
}

/// Route `chat`: `primary/m1` then `backup/m2`; the breaker opens after
/// `consecutive_failures` failures and stays open `open_for`.
pub fn config(consecutive_failures: u32, open_for: &str) -> Config {
    serde_json::from_value(json!({
        "providers": [
            {"name": "primary", "kind": "openai-compatible", "base_url": "http://127.0.0.1:9"},
            {"name": "backup", "kind": "openai-compatible", "base_url": "http://127.0.0.1:9"}
        ],
        "routes": [{
            "model": "chat",
            "targets": [
                {"provider": "primary", "model": "m1"},
                {"provider": "backup", "model": "m2"}
            ],
            "retry": {"max_attempts": 1, "base_delay": "10ms", "max_delay": "10ms"},
            "circuit_breaker": {
                "consecutive_failures": consecutive_failures,
                "open_for": open_for,
                "max_open_for": open_for
            }
        }]
    }))
    .unwrap()
}

pub struct Gateway {
    pub router: Arc<Router>,
    pub observer: Arc<Observer>,
    pub primary: Arc<Switch>,
    pub backup: Arc<Switch>,
}

pub fn gateway(config: &Config, alerts: AlertsConfig, probe_every: Duration) -> Gateway {
    let primary = Switch::new();
    let backup = Switch::new();
    let mut upstreams: HashMap<String, Arc<dyn Upstream>> = HashMap::new();
    upstreams.insert("primary".into(), Arc::clone(&primary) as Arc<dyn Upstream>);
    upstreams.insert("backup".into(), Arc::clone(&backup) as Arc<dyn Upstream>);
    let tuning = Tuning {
        backoff_jitter: 0.0,
        breaker_jitter: 0.0,
        recovery_probe_interval: probe_every,
    };
    let router = Arc::new(Router::with_upstreams(config, upstreams, tuning));
    let providers = config.providers.iter().map(|p| p.name.clone()).collect();
    let observer = Observer::new(
        Arc::clone(&router),
        providers,
        alerts,
        reqwest::Client::new(),
    );
    Gateway {
        router,
        observer,
        primary,
        backup,
    }
}

impl Gateway {
    /// One caller request through the router, counted as the server would count it.
    /// Returns the provider that served.
    pub async fn request(&self) -> Option<String> {
        let route = self.router.resolve("chat").unwrap();
        let req = ChatRequest {
            model: "chat".into(),
            messages: vec![Message::user_text("hi")],
            ..ChatRequest::default()
        };
        let result = self
            .router
            .chat(&route, &req, &RequestOptions::default())
            .await;
        let outcome = match &result {
            Ok(_) => RequestOutcome::Success,
            Err(f) => {
                RequestOutcome::from_error(&bulwark_core::GatewayError::from_upstream(&f.error))
            }
        };
        self.observer.record_request("chat", outcome);
        result.ok().map(|s| s.provider)
    }
}

/// What a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A local HTTP receiver: records every POST; answers 503 to the first
/// `fail_first` calls; waits `delay` before answering.
#[derive(Clone, Default)]
pub struct Receiver {
    pub got: Arc<Mutex<Vec<Received>>>,
    pub fail_first: Arc<AtomicU32>,
    pub delay: Arc<Mutex<Duration>>,
    pub answered: Arc<AtomicU32>,
}

impl Receiver {
    pub async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (receiver, addr)
    }

    pub fn on(&self, path: &str) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

async fn receive(
    State(r): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    r.got.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        headers,
        body,
    });
    let delay = *r.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let failing = r
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    r.answered.fetch_add(1, Ordering::SeqCst);
    if failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::ACCEPTED
    }
}

/// An address nothing listens on.
pub async fn dead_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// Polls `check` every 20 ms until it holds or `within` passes.
pub async fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
