//! `bulwark-mock`: a fake LLM provider that speaks the OpenAI, Anthropic and
//! Gemini wire formats on their real paths, answers deterministically, and takes
//! faults injected at run time. Bulwark's tests, `bulwark demo` and DR drills point
//! their providers at it.
//!
//! **A test tool.** It checks no credentials and records every request header
//! verbatim, API keys included, so tests can assert that a key went out in the
//! right header. Never expose it beyond the machine.
//!
//! # Layout
//!
//! ```text
//! TcpListener ─▶ conn (hyper-util auto HTTP/1+2; RST on `reset`) ─▶ axum Router
//!     ├─ /v1/chat/completions, /v1/messages, /v1beta/models/* ─▶ api
//!     │     log the call (state) → take a fault (state) → latency → fault or
//!     │     serve::*::decode_request → answer (deterministic) →
//!     │     serve::*::encode_response | StreamEncoder → stream (plan with faults)
//!     └─ /_mock/* ─▶ control (faults, behaviour, call log)
//! ```
//!
//! The wire formats themselves live in `bulwark_providers::{openai, anthropic,
//! gemini}::serve`: the mock speaks exactly what those modules speak.
//!
//! # Endpoints (one listener serves all)
//!
//! | path | format |
//! |---|---|
//! | `POST /v1/chat/completions` | OpenAI Chat Completions (and OpenAI-compatible clients whose base URL ends in `/v1`) |
//! | `POST /v1/messages` | Anthropic Messages |
//! | `POST /v1/messages/count_tokens` | Anthropic token count: `{"input_tokens": N}`, the words of the request (what answers report as input); status faults apply |
//! | `POST /v1beta/models/{model}:generateContent` | Gemini, JSON |
//! | `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` | Gemini, SSE stream |
//!
//! The Gemini methods are also served under `/v1/models/` and `/v1alpha/models/`
//! (the google-genai SDK picks its API version from its own settings).
//!
//! `"stream": true` in an OpenAI or Anthropic body asks for a stream. A body the
//! format's decoder rejects is answered with that format's own error
//! (`serve::*::error_body`), with its status (400 for most).
//!
//! # Answers
//!
//! - Plain prompt: `"Hello from {name}. You said: {last user text}"`, or with
//!   `reply_tokens: N` exactly `"tok1 tok2 … tokN"`. Streams send one word (with
//!   its trailing space) per chunk. Anthropic streams report the prompt's input
//!   tokens in `message_start`, as Anthropic does.
//! - Tools offered, `tool_choice` not `none`, and no tool result in the last user
//!   turn: one call to the first tool (or the forced one), id `call_<seq>`
//!   (`toolu_<seq>` for Anthropic), arguments with each `required` property
//!   filled by its schema type (string `"example"`, number/integer `1`, boolean
//!   `true`, array `[]`, object `{}`; an `enum` gives its first value); stop
//!   reason tool use. Streams send the arguments in two fragments.
//! - A tool result in the last user turn: `"The tool said: {result text}"`
//!   (`reply_tokens` does not change this one).
//! - Usage: input = whitespace-separated words of all request text (system, turns,
//!   tool results; at least 1); output = content chunks (words; a tool call
//!   counts 3: its start and two argument fragments).
//! - `model` is the requested model; ids are unique per call
//!   (`chatcmpl-mock…`, `msg_mock…`). OpenAI answers carry `x-request-id`,
//!   Anthropic ones `request-id`.
//!
//! # Control API (`/_mock/`, JSON)
//!
//! | call | body | answer |
//! |---|---|---|
//! | `POST /_mock/faults` | a fault rule (below) | `{"id": n}` |
//! | `GET /_mock/faults` | | `[{"id", "fault", "times", "api", "model", "remaining", "applied"}]` |
//! | `DELETE /_mock/faults` | | 204, all rules cleared |
//! | `DELETE /_mock/faults/{id}` | | 204, or 404 if no such rule |
//! | `PUT /_mock/behavior` | `{"latency_ms"?, "token_delay_ms"?, "reply_tokens"?, "name"?}` | the whole behaviour |
//! | `GET /_mock/behavior` | | `{"latency_ms": 0, "token_delay_ms": 0, "reply_tokens": null, "name": "…"}` |
//! | `GET /_mock/calls` | | `[{"seq", "api", "path", "query", "model", "stream", "headers", "body", "at_ms", "fault", "status"}]` |
//! | `DELETE /_mock/calls` | | 204 |
//! | `POST /_mock/reset` | | 204: faults, calls and behaviour back to the start |
//! | `GET /_mock/health` | | `{"status": "ok", "name": "…"}` |
//!
//! A body that does not parse (unknown fields included) is a 400 `{"error": "…"}`.
//!
//! ## Fault rules
//!
//! `{"fault": {"kind": …}, "times": N?, "api": "openai"|"anthropic"|"gemini"?, "model": "…"?, "probability": p?}`
//! applies to the next `N` matching calls (no `times`: every one until cleared);
//! with `probability`, each matching call is hit with that chance (a miss does not
//! use up a time).
//! Rules queue in order; a call takes the first matching rule with calls left.
//! `model` matches the requested model exactly (Gemini: the one in the path).
//! Stream-only faults never match a non-streaming call, so they are not used up
//! by one.
//!
//! | `kind` | fields | what the client sees |
//! |---|---|---|
//! | `status` | `status`, `message`?, `code`?, `retry_after`?, `headers`? | that status with the provider's error body (a 2xx too: an error reported in-band, as OpenRouter does once a request is under way); `retry_after` → `Retry-After` (as given); `headers` added as given |
//! | `reset` | | the TCP connection closes with an RST and no HTTP response |
//! | `hang` | | the request is read and never answered, until the client goes away |
//! | `slow_first_token` | `delay_ms` | stream: headers at once, first content chunk after `delay_ms`; JSON: the answer after `delay_ms` |
//! | `cut` | `after_chunks` | stream: that many chunks, then the connection drops mid-body (a body error, no terminator) |
//! | `stall` | `after_chunks`, `stall_ms` | stream: that many chunks, a pause, then the rest |
//! | `malformed` | `after_chunks` | stream: one `data: {not json` frame after that many chunks, then the rest (Anthropic's is `event: content_block_delta`) |
//! | `no_terminator` | | stream: the whole answer with finish reason and usage, minus `[DONE]` (OpenAI) / `message_stop` (Anthropic), then a clean close; Gemini has no terminator, so it is a normal stream |
//! | `whole` | | stream: the whole answer as one JSON document (`application/json`, status 200), as a server that ignores `stream: true` sends it |
//! | `error_event` | `after_chunks`, `status`?, `message`?, `code`? | stream: that many chunks, then the provider's in-band error (OpenAI and Gemini `data: {"error": …}`, Anthropic `event: error`), then the stream ends. Default status: Anthropic 529 (`overloaded_error`), OpenAI 500, Gemini 503 |
//!
//! Chunks are content chunks (one per word; a tool call is 3); the frames that
//! open a stream are not counted. An `after_chunks` past the end of the answer
//! fires just before the final chunk. Error bodies by provider:
//!
//! - OpenAI `{"error": {"message", "type", "param", "code"}}`: `code` as given;
//!   `type` 429 `requests`, 5xx `server_error`, else `invalid_request_error`, and
//!   `insufficient_quota` when that is the code;
//! - Anthropic `{"type": "error", "error": {"type", "message"}}`: `type` is the
//!   code if given, else by status (429 `rate_limit_error`, 529
//!   `overloaded_error`, 500 `api_error`, ...);
//! - Gemini `{"error": {"code": <status>, "message", "status"}}`: `status` is the
//!   code if given, else by status (429 `RESOURCE_EXHAUSTED`, 503 `UNAVAILABLE`, ...).
//!
//! ## Examples
//!
//! ```text
//! # the next 2 Anthropic calls get 529 overloaded_error with Retry-After: 1
//! curl -X POST localhost:9000/_mock/faults -d '{"fault": {"kind": "status", "status": 529, "retry_after": "1"}, "times": 2, "api": "anthropic"}'
//! # every OpenAI call to gpt-4o gets 429 insufficient_quota
//! curl -X POST localhost:9000/_mock/faults -d '{"fault": {"kind": "status", "status": 429, "code": "insufficient_quota"}, "model": "gpt-4o"}'
//! # the next stream is cut after 3 words; the one after that stalls 2 s after 1 word
//! curl -X POST localhost:9000/_mock/faults -d '{"fault": {"kind": "cut", "after_chunks": 3}, "times": 1}'
//! curl -X POST localhost:9000/_mock/faults -d '{"fault": {"kind": "stall", "after_chunks": 1, "stall_ms": 2000}, "times": 1}'
//! # the next call's connection is reset
//! curl -X POST localhost:9000/_mock/faults -d '{"fault": {"kind": "reset"}, "times": 1}'
//! # 50 ms per token, 20-token answers
//! curl -X PUT localhost:9000/_mock/behavior -d '{"token_delay_ms": 50, "reply_tokens": 20}'
//! curl localhost:9000/_mock/calls
//! curl -X POST localhost:9000/_mock/reset
//! ```
//!
//! The same from Rust, in-process:
//!
//! ```no_run
//! use bulwark_mock::{Api, Fault, FaultRule, MockServer};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let mock = MockServer::start("primary").await?;
//! let base_url = format!("{}/v1", mock.url()); // for an OpenAI client
//! mock.push_fault(FaultRule::new(Fault::status(529)).api(Api::Anthropic).times(2));
//! mock.push_fault(FaultRule::new(Fault::Cut { after_chunks: 3 }).times(1));
//! // ... run calls against base_url ...
//! let calls = mock.calls();
//! assert!(calls.iter().all(|c| c.headers.contains_key("authorization")));
//! mock.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod answer;
mod api;
mod conn;
mod control;
mod fault_errors;
mod model;
mod state;
mod stream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use model::{Api, Behavior, BehaviorPatch, CallRecord, Fault, FaultRule, FaultRuleStatus};
pub use state::CALL_LOG_CAPACITY;

use state::MockState;

/// Largest request body the mock reads (big prompts for context-window tests).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A mock running in this process on its own task.
///
/// Dropping it stops the server too; [`MockServer::shutdown`] also waits for it.
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<MockState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Starts a mock on `127.0.0.1`, on a free port.
    pub async fn start(name: &str) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        Ok(MockServer::start_on(listener, name).await)
    }

    /// Starts a mock on a listener the caller bound.
    pub async fn start_on(listener: TcpListener, name: &str) -> MockServer {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let state = Arc::new(MockState::new(name));
        let (stop, stopped) = oneshot::channel::<()>();
        let app = app(state.clone());
        let task = tokio::spawn(conn::accept_loop(listener, app, async move {
            // A dropped sender (the MockServer dropped) stops the server too.
            let _ = stopped.await;
        }));
        MockServer {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash. OpenAI clients want
    /// `{url}/v1`; Anthropic and Gemini clients take it as it is.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a fault rule; returns its id.
    pub fn push_fault(&self, rule: FaultRule) -> u64 {
        self.state.push_fault(rule)
    }

    /// Removes one rule; false if there was none with that id.
    pub fn remove_fault(&self, id: u64) -> bool {
        self.state.remove_fault(id)
    }

    pub fn clear_faults(&self) {
        self.state.clear_faults();
    }

    /// The queued rules, with the calls each has left.
    pub fn faults(&self) -> Vec<FaultRuleStatus> {
        self.state.faults()
    }

    /// Replaces the whole behaviour.
    pub fn set_behavior(&self, behavior: Behavior) {
        self.state.set_behavior(behavior);
    }

    /// Changes some fields of the behaviour; returns the result.
    pub fn update_behavior(&self, patch: &BehaviorPatch) -> Behavior {
        self.state.update_behavior(patch)
    }

    pub fn behavior(&self) -> Behavior {
        self.state.behavior()
    }

    /// The call log, oldest first (the newest [`CALL_LOG_CAPACITY`] calls).
    pub fn calls(&self) -> Vec<CallRecord> {
        self.state.calls()
    }

    pub fn clear_calls(&self) {
        self.state.clear_calls();
    }

    /// Clears faults and calls and restores the starting behaviour.
    pub fn reset(&self) {
        self.state.reset();
    }

    /// Stops accepting, ends every open connection, and waits until done.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs a mock on `listener` until `shutdown` resolves, then ends every open
/// connection. For the CLI: `bulwark mock --listen ADDR` runs this until ctrl-c.
pub async fn serve(
    listener: TcpListener,
    name: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, %name, "bulwark-mock listening");
    let state = Arc::new(MockState::new(&name));
    conn::accept_loop(listener, app(state), shutdown).await;
    Ok(())
}

fn app(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(api::openai_chat))
        .route("/v1/messages", post(api::anthropic_messages))
        .route(
            "/v1/messages/count_tokens",
            post(api::anthropic_count_tokens),
        )
        // google-genai goes to /v1/models/... when given a base URL; the
        // gemini adapter to /v1beta/models/...: same answers on all three.
        .route("/v1beta/models/{*rest}", post(api::gemini_models))
        .route("/v1/models/{*rest}", post(api::gemini_models))
        .route("/v1alpha/models/{*rest}", post(api::gemini_models))
        .nest("/_mock", control::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let message = format!(
        "bulwark-mock serves no {method} {}: POST /v1/chat/completions, /v1/messages, \
         /v1beta/models/{{model}}:generateContent or :streamGenerateContent?alt=sse, \
         and /_mock/...",
        uri.path()
    );
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"error": {"message": message, "type": "not_found"}})),
    )
        .into_response()
}
