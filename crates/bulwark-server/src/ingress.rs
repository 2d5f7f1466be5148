//! Ingress: the OpenAI and Anthropic endpoints. Decodes the caller's wire format into
//! a neutral request, hands it to the router, and encodes the answer, the stream or
//! the error back in the caller's format.

use std::convert::Infallible;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use bulwark_core::config::journal::Durability;
use bulwark_core::{
    ChatRequest, ErrorClass, ErrorKind, GatewayError, SseFrame, StreamAccumulator, StreamEvent,
    UpstreamError,
};
use bulwark_journal::{Claim, ClaimLease, NewRequest, Outcome, StoredAnswer};
use bulwark_observe::{Observer, RequestOutcome};
use bulwark_providers::{EventStream, anthropic, openai};
use bulwark_router::{Failure, RequestOptions, Served};
use futures::{FutureExt, StreamExt};
use tracing::info;

use crate::app::{AppState, RequestId};
use crate::ledger::{self, Ledger};

/// The caller's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenAi,
    Anthropic,
}

impl Format {
    fn label(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::Anthropic => "anthropic",
        }
    }

    fn decode(self, body: &[u8]) -> Result<ChatRequest, GatewayError> {
        match self {
            Format::OpenAi => openai::serve::decode_request(body),
            Format::Anthropic => anthropic::serve::decode_request(body),
        }
    }

    fn response_id(self, request_id: &str) -> String {
        match self {
            Format::OpenAi => format!("chatcmpl-{request_id}"),
            Format::Anthropic => format!("msg_{request_id}"),
        }
    }

    /// An error answer in this format, with `Retry-After` when the error carries a wait.
    pub fn error_response(self, err: &GatewayError, attempts: Option<u32>) -> Response {
        let body = match self {
            Format::OpenAi => openai::serve::error_body(err),
            Format::Anthropic => anthropic::serve::error_body(err),
        };
        let status =
            StatusCode::from_u16(err.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(wait) = err.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if let Some(n) = attempts {
            headers.insert("x-bulwark-attempts", HeaderValue::from(n));
        }
        response
    }
}

enum Encoder {
    OpenAi(openai::serve::StreamEncoder),
    Anthropic(anthropic::serve::StreamEncoder),
}

impl Encoder {
    fn new(format: Format, id: String, created: u64, include_usage: bool) -> Self {
        match format {
            Format::OpenAi => Encoder::OpenAi(openai::serve::StreamEncoder::new(
                id,
                created,
                include_usage,
            )),
            Format::Anthropic => Encoder::Anthropic(anthropic::serve::StreamEncoder::new(id)),
        }
    }

    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<SseFrame>) {
        match self {
            Encoder::OpenAi(e) => e.encode(event, out),
            Encoder::Anthropic(e) => e.encode(event, out),
        }
    }

    fn encode_error(&mut self, err: &GatewayError, out: &mut Vec<SseFrame>) {
        match self {
            Encoder::OpenAi(e) => e.encode_error(err, out),
            Encoder::Anthropic(e) => e.encode_error(err, out),
        }
    }
}

pub async fn openai_chat(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    req: Request,
) -> Response {
    let (headers, body) = read_request(req).await;
    handle(state, request_id, Format::OpenAi, &headers, body).await
}

pub async fn anthropic_messages(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    req: Request,
) -> Response {
    let (headers, body) = read_request(req).await;
    handle(state, request_id, Format::Anthropic, &headers, body).await
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens, as the first target of the
/// route in service that has a counter (an Anthropic one) counts them. Not journaled:
/// a count is no answer, and asking again is free.
pub async fn anthropic_count_tokens(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    req: Request,
) -> Response {
    let format = Format::Anthropic;
    let (headers, body) = read_request(req).await;
    let decoded = uncompressed(&headers)
        .and(body.map_err(BodyError::into_gateway_error))
        .and_then(|body| anthropic::serve::decode_count_request(&body))
        .and_then(|mut req| {
            req.anthropic_beta = anthropic_beta(&headers)?;
            Ok(req)
        });
    let (req, opts) = match decoded.and_then(|req| Ok((req, request_options(&headers)?))) {
        Ok(decoded) => decoded,
        Err(err) => {
            info!(request_id = request_id.id, status = err.status_code(), error = %err, "rejected token count");
            return format.error_response(&err, None);
        }
    };
    let route = match state.router.resolve(&req.model) {
        Ok(route) => route,
        Err(err) => return format.error_response(&err.to_gateway_error(), None),
    };
    match state.router.count_tokens(&route, &req, &opts).await {
        Ok(served) => {
            let body = serde_json::json!({"input_tokens": served.value}).to_string();
            let mut response = (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response();
            served_headers(&mut response, &served.provider, served.attempts);
            response
        }
        Err(failure) => failure_response(format, &route.name, failure).0,
    }
}

/// How long a caller may take to send a request's body once its headers are in
/// (32 MiB in this time is ~4.5 Mbit/s). A body still arriving after it is
/// answered with a 408, so a trickling client cannot hold a request open.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request's body could not be read.
enum BodyError {
    Rejected(BytesRejection),
    TimedOut,
}

impl BodyError {
    fn into_gateway_error(self) -> GatewayError {
        match self {
            BodyError::TimedOut => GatewayError::new(
                ErrorKind::RequestTimeout,
                format!(
                    "the request body did not arrive within {} s of its headers",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            ),
            BodyError::Rejected(rejection)
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                GatewayError::new(
                    ErrorKind::RequestTooLarge,
                    format!(
                        "the request body is larger than {} MiB",
                        crate::app::MAX_BODY_BYTES / (1024 * 1024)
                    ),
                )
            }
            BodyError::Rejected(rejection) => {
                GatewayError::invalid(format!("cannot read the request body: {rejection}"))
            }
        }
    }
}

/// The request's headers and its whole body, read within [`BODY_READ_TIMEOUT`] (and
/// the body limit the app sets).
async fn read_request(req: Request) -> (HeaderMap, Result<Bytes, BodyError>) {
    let (mut parts, body) = req.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    let read = Bytes::from_request(Request::from_parts(parts, body), &());
    let body = match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(rejection)) => Err(BodyError::Rejected(rejection)),
        Err(_) => Err(BodyError::TimedOut),
    };
    (headers, body)
}

/// A 415 for a request body sent compressed: every `Content-Encoding` header, and every
/// coding listed in one, must be `identity`.
fn uncompressed(headers: &HeaderMap) -> Result<(), GatewayError> {
    match headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .find(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"))
    {
        None => Ok(()),
        Some(encoding) => Err(GatewayError::new(
            ErrorKind::UnsupportedMediaType,
            format!(
                "the request body is sent with Content-Encoding {encoding:?}, which Bulwark does not decode; send it uncompressed"
            ),
        )),
    }
}

/// `bulwark drill`'s traffic: `x-bulwark-drill` carrying the gateway's admin token,
/// which the drill set on the gateway it started (a caller cannot claim it).
fn is_drill(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.admin_token else {
        return false;
    };
    headers
        .get("x-bulwark-drill")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|given| bulwark_observe::http::token_matches(given, token))
}

/// Reads Bulwark's own request headers: `x-bulwark-timeout` (a deadline for the whole
/// request: `30s`, `1500ms`, or plain seconds) and `x-session-id` (sticky target).
fn request_options(headers: &HeaderMap) -> Result<RequestOptions, GatewayError> {
    let mut opts = RequestOptions::default();
    if let Some(raw) = headers.get("x-bulwark-timeout") {
        let text = raw.to_str().unwrap_or("").trim();
        let parsed = text
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
            .map(Duration::from_secs_f64)
            .or_else(|| humantime::parse_duration(text).ok())
            // Under a millisecond no attempt could even start: that is a mistake, not
            // an outage to report.
            .filter(|d| *d >= Duration::from_millis(1));
        match parsed {
            Some(d) => opts.timeout = Some(d),
            None => {
                return Err(GatewayError::invalid_param(
                    "x-bulwark-timeout",
                    format!(
                        "the x-bulwark-timeout header {text:?} is not a duration of 1ms or more (write e.g. `30s`, `1500ms` or `30`)"
                    ),
                ));
            }
        }
    }
    if let Some(raw) = headers.get("x-session-id")
        && let Ok(session) = raw.to_str()
        && !session.is_empty()
        && session.len() <= 256
    {
        opts.session = Some(session.to_string());
    }
    Ok(opts)
}

/// The caller's `anthropic-beta` betas, from one header or several, comma-joined.
fn anthropic_beta(headers: &HeaderMap) -> Result<Option<String>, GatewayError> {
    let mut betas: Vec<&str> = Vec::new();
    for value in headers.get_all("anthropic-beta") {
        let text = value.to_str().ok().filter(|t| {
            t.len() <= 1024
                && t.bytes()
                    .all(|b| b.is_ascii_graphic() || b == b' ' || b == b',')
        });
        let Some(text) = text else {
            return Err(GatewayError::invalid_param(
                "anthropic-beta",
                "the anthropic-beta header must be comma-separated beta names (printable ASCII, at most 1024 characters)",
            ));
        };
        betas.extend(text.split(',').map(str::trim).filter(|b| !b.is_empty()));
    }
    Ok((!betas.is_empty()).then(|| betas.join(",")))
}

async fn handle(
    state: AppState,
    RequestId {
        id: request_id,
        caller: caller_request_id,
    }: RequestId,
    format: Format,
    headers: &HeaderMap,
    body: Result<Bytes, BodyError>,
) -> Response {
    let started = Instant::now();
    let received_at = SystemTime::now();
    let mut meter = Meter::new(&state, None);
    let opts = match request_options(headers) {
        Ok(opts) => opts,
        Err(err) => return meter.error(format, &err),
    };
    if let Err(err) = uncompressed(headers) {
        return meter.error(format, &err);
    }
    let idem_key = match ledger::idempotency_key(headers) {
        Ok(key) => key,
        Err(err) => return meter.error(format, &err),
    };
    let body = match body {
        Ok(body) => body,
        Err(err) => return meter.error(format, &err.into_gateway_error()),
    };
    let decoded = format.decode(&body).and_then(|mut req| {
        if format == Format::Anthropic {
            req.anthropic_beta = anthropic_beta(headers)?;
        }
        Ok(req)
    });
    let req = match decoded {
        Ok(req) => req,
        Err(err) => {
            info!(request_id, ingress = format.label(), status = err.status_code(), error = %err, "rejected request");
            return meter.error(format, &err);
        }
    };
    meter.route = Some(req.model.clone());
    let route = match state.router.resolve(&req.model) {
        Ok(route) => route,
        Err(err) => return meter.error(format, &err.to_gateway_error()),
    };
    let mut opts = opts;
    // Reasoning the caller is not sent: an OpenAI-format caller's format has no field
    // for it; an Anthropic-format caller who did not turn `thinking` on gets none, as
    // from Anthropic (a model behind an OpenAI-compatible server may reason anyway).
    // Such a stream commits at the answer, not at reasoning the caller never sees.
    let hide_reasoning = match format {
        Format::OpenAi => true,
        Format::Anthropic => !req.thinking_on(),
    };
    opts.reasoning_hidden = hide_reasoning;
    let journal_on = state.journal.config().durability != Durability::Off;
    // Hashing the caller's key only matters to the journal.
    let caller = if journal_on {
        ledger::caller_key_id(headers)
    } else {
        None
    };

    // Idempotency: replay a stored answer, wait for a running duplicate, or claim.
    let mut lease = None;
    let mut scoped_key = None;
    let mut hash = None;
    if let (Some(key), true) = (&idem_key, journal_on) {
        let scoped = format!("{}:{key}", caller.as_deref().unwrap_or("anonymous"));
        let body_hash = bulwark_journal::body_hash(&body);
        let deadline = state.router.deadline(&route, &opts);
        match claim(&state, &scoped, &body_hash, deadline).await {
            Ok(Claimed::New(l)) => lease = Some(l),
            Ok(Claimed::Replay(answer)) => {
                info!(request_id, ingress = format.label(), route = %route.name, original = %answer.request_id, "idempotent replay");
                meter.outcome = Some(RequestOutcome::Success);
                return replay_response(format, &req, &answer);
            }
            Err(err) => return meter.error(format, &err),
        }
        scoped_key = Some(scoped);
        hash = Some(body_hash);
    }

    let mut ledger = None;
    if journal_on {
        let request_body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        let new = NewRequest {
            id: request_id.clone(),
            caller_request_id,
            drill: is_drill(&state, headers),
            received_at,
            caller_key_id: caller,
            ingress: format.label().to_string(),
            route: req.model.clone(),
            stream: req.stream,
            request_body,
            idempotency_key: scoped_key,
            body_hash: hash,
        };
        match Ledger::begin(&state.journal, new).await {
            Ok(l) => {
                opts.attempt_sink = Some(l.sink());
                ledger = Some(l);
            }
            Err(err) => return meter.error(format, &err),
        }
    }
    // The key is held by the begun request now.
    drop(lease);

    let response = if req.stream {
        match state.router.chat_stream(&route, &req, &opts).await {
            Ok(mut served) => {
                if hide_reasoning && format == Format::Anthropic {
                    served.value = Box::pin(served.value.filter(|event| {
                        std::future::ready(!matches!(event, Ok(e) if e.is_reasoning()))
                    }));
                }
                stream_response(format, &request_id, &req, served, ledger, meter).await
            }
            Err(failure) => {
                let (response, message) = failure_response(format, &route.name, failure);
                if let Some(mut l) = ledger {
                    let attempts = l.attempts();
                    let _ = l.complete(Outcome::failed(message, attempts)).await;
                }
                meter.finish(response)
            }
        }
    } else {
        match state.router.chat(&route, &req, &opts).await {
            Ok(mut served) => {
                if hide_reasoning {
                    served.value.content.retain(|block| !block.is_thinking());
                }
                let id = format.response_id(&request_id);
                let body = match format {
                    Format::OpenAi => {
                        openai::serve::encode_response(&served.value, &id, unix_now())
                    }
                    Format::Anthropic => anthropic::serve::encode_response(&served.value, &id),
                };
                let written = match ledger.as_mut() {
                    Some(l) => {
                        let attempts = l.attempts().max(served.attempts);
                        l.complete(Outcome::completed(
                            &served.provider,
                            &served.model,
                            served.value,
                            attempts,
                        ))
                        .await
                    }
                    None => Ok(()),
                };
                match written {
                    Ok(()) => {
                        let mut response = (
                            StatusCode::OK,
                            [(header::CONTENT_TYPE, "application/json")],
                            body,
                        )
                            .into_response();
                        served_headers(&mut response, &served.provider, served.attempts);
                        meter.finish(response)
                    }
                    // `sync`: an answer that is not on disk is not released.
                    Err(err) if state.journal.config().durability == Durability::Sync => {
                        meter.error(format, &err.to_gateway_error())
                    }
                    Err(_) => {
                        let mut response = (
                            StatusCode::OK,
                            [(header::CONTENT_TYPE, "application/json")],
                            body,
                        )
                            .into_response();
                        served_headers(&mut response, &served.provider, served.attempts);
                        meter.finish(response)
                    }
                }
            }
            Err(failure) => {
                let (response, message) = failure_response(format, &route.name, failure);
                if let Some(mut l) = ledger {
                    let attempts = l.attempts();
                    let _ = l.complete(Outcome::failed(message, attempts)).await;
                }
                meter.finish(response)
            }
        }
    };
    info!(
        request_id,
        ingress = format.label(),
        route = %route.name,
        stream = req.stream,
        status = response.status().as_u16(),
        provider = response.headers().get("x-bulwark-provider").and_then(|v| v.to_str().ok()),
        attempts = response.headers().get("x-bulwark-attempts").and_then(|v| v.to_str().ok()),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// What the idempotency check decided.
enum Claimed {
    New(ClaimLease),
    Replay(Box<StoredAnswer>),
}

/// Claims `key`, waiting (until `deadline`) for a running request with the same key.
async fn claim(
    state: &AppState,
    key: &str,
    body_hash: &str,
    deadline: tokio::time::Instant,
) -> Result<Claimed, GatewayError> {
    let mut claim = state
        .journal
        .claim(key, body_hash)
        .await
        .map_err(|e| e.to_gateway_error())?;
    loop {
        match claim {
            Claim::New(lease) => return Ok(Claimed::New(lease)),
            Claim::Completed(answer) => return Ok(Claimed::Replay(answer)),
            Claim::Mismatch => {
                return Err(GatewayError::new(
                    ErrorKind::Unprocessable,
                    "this Idempotency-Key was already used with a different request body; use a new key for a new request",
                )
                .with_code("idempotency_key_reused"));
            }
            Claim::InFlight(wait) => {
                match tokio::time::timeout(ledger::remaining(deadline), wait.wait()).await {
                    Ok(Ok(next)) => claim = next,
                    Ok(Err(err)) => return Err(err.to_gateway_error()),
                    Err(_) => {
                        return Err(GatewayError::new(
                            ErrorKind::Conflict,
                            "a request with this Idempotency-Key is still in progress; retry later to get its answer",
                        )
                        .with_code("idempotency_key_in_use"));
                    }
                }
            }
        }
    }
}

/// A stored answer sent again, as JSON or as a stream, in the caller's format.
fn replay_response(format: Format, req: &ChatRequest, answer: &StoredAnswer) -> Response {
    let id = format.response_id(&answer.request_id);
    let mut response = if req.stream {
        let mut encoder = Encoder::new(format, id, unix_now(), req.include_usage);
        let mut frames = Vec::new();
        for event in answer.response.to_events() {
            encoder.encode(&event, &mut frames);
        }
        let mut text = String::new();
        for frame in &frames {
            text.push_str(&frame.to_wire());
        }
        let mut response = Response::new(Body::from(text));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    } else {
        let body = match format {
            Format::OpenAi => openai::serve::encode_response(&answer.response, &id, unix_now()),
            Format::Anthropic => anthropic::serve::encode_response(&answer.response, &id),
        };
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        "x-bulwark-idempotent-replay",
        HeaderValue::from_static("true"),
    );
    if let Some(provider) = &answer.provider
        && let Ok(value) = HeaderValue::from_str(provider)
    {
        headers.insert("x-bulwark-provider", value);
    }
    response
}

/// Counts the request in `bulwark_requests_total` exactly once: with the outcome
/// set, or as cancelled when dropped without one (the caller went away).
struct Meter {
    observer: Arc<Observer>,
    route: Option<String>,
    outcome: Option<RequestOutcome>,
}

impl Meter {
    fn new(state: &AppState, route: Option<String>) -> Self {
        Meter {
            observer: Arc::clone(&state.observer),
            route,
            outcome: None,
        }
    }

    fn error(mut self, format: Format, err: &GatewayError) -> Response {
        self.outcome = Some(RequestOutcome::from_error(err));
        format.error_response(err, None)
    }

    fn finish(mut self, response: Response) -> Response {
        self.outcome = Some(RequestOutcome::from_status(response.status().as_u16()));
        response
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or(RequestOutcome::Cancelled);
        self.observer
            .record_request(self.route.as_deref().unwrap_or(""), outcome);
    }
}

fn served_headers(response: &mut Response, provider: &str, attempts: u32) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(provider) {
        headers.insert("x-bulwark-provider", value);
    }
    headers.insert("x-bulwark-attempts", HeaderValue::from(attempts));
}

/// The caller-facing error when the router gave up.
fn failure_response(format: Format, route: &str, failure: Failure) -> (Response, String) {
    let mut err = GatewayError::from_upstream(&failure.error);
    let from = failure.provider.as_deref().unwrap_or("none");
    err.message = match failure.error.class {
        // The caller's own mistake: the provider's reason, as is.
        ErrorClass::InvalidRequest
        | ErrorClass::ContentPolicy
        | ErrorClass::ContextWindow
        | ErrorClass::Unsupported => failure.error.message.clone(),
        // Never echo what a provider said about our credentials.
        ErrorClass::Auth => format!(
            "no target of `{route}` could serve: provider `{from}` rejected Bulwark's credentials for it"
        ),
        ErrorClass::Transient
        | ErrorClass::Timeout
        | ErrorClass::Throttled
        | ErrorClass::Quota
        | ErrorClass::Protocol
            if failure.attempts == 0 =>
        {
            // Nothing was tried (every target rate-limited, open or out of quota).
            format!(
                "no target of `{route}` could serve: {}",
                failure.error.message
            )
        }
        ErrorClass::Transient
        | ErrorClass::Timeout
        | ErrorClass::Throttled
        | ErrorClass::Quota
        | ErrorClass::Protocol => format!(
            "no target of `{route}` could serve after {} attempt(s); last error from `{from}`: {}",
            failure.attempts, failure.error.message
        ),
    };
    let mut response = format.error_response(&err, Some(failure.attempts));
    if let Some(provider) = failure.provider
        && let Ok(value) = HeaderValue::from_str(&provider)
    {
        response.headers_mut().insert("x-bulwark-provider", value);
    }
    (response, err.message)
}

async fn stream_response(
    format: Format,
    request_id: &str,
    req: &ChatRequest,
    served: Served<EventStream>,
    ledger: Option<Ledger>,
    meter: Meter,
) -> Response {
    let encoder = Encoder::new(
        format,
        format.response_id(request_id),
        unix_now(),
        req.include_usage,
    );
    let Served {
        value: events,
        provider,
        model,
        attempts,
    } = served;
    let mut response_headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&provider) {
        response_headers.insert("x-bulwark-provider", value);
    }
    response_headers.insert("x-bulwark-attempts", HeaderValue::from(attempts));
    let state = EgressState {
        events: Some(events),
        held: None,
        encoder,
        frames: Vec::new(),
        finished: false,
        acc: ledger.as_ref().map(|_| StreamAccumulator::default()),
        ledger,
        meter: Some(meter),
        provider,
        model,
        attempts,
    };
    let body = futures::stream::unfold(state, |mut st| async move {
        let mut events = st.events.take()?;
        st.frames.clear();
        let mut item = match st.held.take() {
            Some(item) => item,
            None => events.next().await,
        };
        loop {
            match item {
                Some(Ok(event)) if !matches!(event, StreamEvent::Finish { .. }) => {
                    if let Some(acc) = st.acc.as_mut() {
                        acc.push(&event);
                    }
                    st.encoder.encode(&event, &mut st.frames);
                }
                last => {
                    // Boxed: this future (journal writes) is needed once per stream,
                    // and inline it would enlarge every open stream's state.
                    Box::pin(st.end_with(last)).await;
                    break;
                }
            }
            // Events already decoded go out in this same write (the first write holds
            // `Start` and the first content together). The end of the stream is held
            // for a write of its own, so nothing before it waits on the journal (an
            // end that waits on nothing joins the first write: `stream_response`).
            //
            // An HTTP/1 upstream body reaches us one chunk per turn of its connection
            // task, so "nothing ready" often only means "not handed over yet": one
            // yield lets that task run, and what it hands over joins this write
            // instead of costing a write (and a wake-up of the caller) of its own. A
            // real stream's next token is milliseconds away: the yield finds nothing
            // and the write goes out at once. (This runs in its own task, see below:
            // a yield inside the body hyper polls would make hyper flush.)
            let mut next = events.next().now_or_never();
            if next.is_none() && st.frames.len() < MAX_FRAMES_PER_WRITE {
                tokio::task::yield_now().await;
                next = events.next().now_or_never();
            }
            match next {
                Some(Some(Ok(event))) if !matches!(event, StreamEvent::Finish { .. }) => {
                    item = Some(Ok(event));
                }
                Some(last) => {
                    st.held = Some(last);
                    st.events = Some(events);
                    break;
                }
                None => {
                    st.events = Some(events);
                    break;
                }
            }
        }
        let size = st.frames.iter().map(|f| f.data.len() + 16).sum();
        let mut bytes = String::with_capacity(size);
        for frame in &st.frames {
            frame.write_to(&mut bytes);
        }
        Some((Ok::<_, Infallible>(Bytes::from(bytes)), st))
    });
    // The first write (`Start`, the first content and whatever arrived with them) is
    // made here, so it leaves with the response headers; the rest is written by a task
    // of its own (`detached_writes`).
    let mut body = Box::pin(body);
    let Some(Ok(first)) = body.next().await else {
        // Not reached (the first step writes the head: `Start` with the first content
        // or the end, as the router commits only then); if it were, an empty
        // `200` stream would read as an answer, so it is an error in the caller's format.
        let err = GatewayError::new(
            ErrorKind::Internal,
            "the answer's stream produced nothing to write",
        );
        return format.error_response(&err, Some(attempts));
    };
    // An answer that has already ended (a fast upstream sent it in one go) and whose end
    // waits on nothing (no journal commit pending) goes out whole in that first write:
    // no task, no second write. Whatever is still pending (the upstream, a `sync`
    // commit) is left to the task, which polls the same stream on: `Unfold` keeps its
    // step across polls.
    let mut head = vec![first];
    let mut ended = false;
    for _ in 0..2 {
        match body.next().now_or_never() {
            Some(Some(Ok(more))) => head.push(more),
            Some(None) => {
                ended = true;
                break;
            }
            None => break,
        }
    }
    let head = match head.as_slice() {
        [one] => one.clone(),
        parts => Bytes::from(parts.concat()),
    };
    let body = if ended {
        Body::from(head)
    } else {
        Body::from_stream(futures::stream::iter([Ok(head)]).chain(detached_writes(body)))
    };
    sse_response(body, response_headers)
}

fn sse_response(body: Body, response_headers: HeaderMap) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.extend(response_headers);
    response
}

/// Runs `writes` in a task of its own and returns the response body that carries what
/// it produces. Dropping the body (the caller went away) aborts the task, which drops
/// the upstream stream and records the request as cancelled. A task that ends without
/// finishing `writes` (a panic) ends the body with an error, so the caller's
/// connection is cut rather than the answer looking complete.
fn detached_writes<S>(writes: S) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>>
where
    S: futures::Stream<Item = Result<Bytes, Infallible>> + Send + Unpin + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::clone(&finished);
    let producer = tokio::spawn(async move {
        let mut writes = writes;
        while let Some(Ok(bytes)) = writes.next().await {
            if tx.send(bytes).await.is_err() {
                return;
            }
        }
        done.store(true, std::sync::atomic::Ordering::Release);
    });
    let guard = AbortOnDrop(producer.abort_handle());
    let mut over = false;
    futures::stream::poll_fn(move |cx| {
        let _held = &guard;
        if over {
            return std::task::Poll::Ready(None);
        }
        rx.poll_recv(cx).map(|item| match item {
            Some(bytes) => Some(Ok(bytes)),
            None => {
                over = true;
                (!finished.load(std::sync::atomic::Ordering::Acquire)).then(|| {
                    Err(std::io::Error::other(
                        "the stream's writer stopped before the end of the stream",
                    ))
                })
            }
        })
    })
}

/// At most this many events are coalesced into one write to the caller.
const MAX_FRAMES_PER_WRITE: usize = 64;

/// Aborts the stream's producer task when the response body is dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct EgressState {
    events: Option<EventStream>,
    /// The end of the stream (`Finish`, an error, or the upstream closing), read while
    /// batching and held for a write of its own.
    held: Option<Option<Result<StreamEvent, UpstreamError>>>,
    encoder: Encoder,
    frames: Vec<SseFrame>,
    finished: bool,
    /// The answer as streamed so far (only when journaling).
    acc: Option<StreamAccumulator>,
    ledger: Option<Ledger>,
    meter: Option<Meter>,
    provider: String,
    model: String,
    attempts: u32,
}

impl EgressState {
    /// Writes the end of the stream: `Finish` once the journal has the answer (in
    /// `sync` mode, the final event goes out only once the answer is on disk), or the
    /// in-band error. The events stream is not read again after this.
    async fn end_with(&mut self, last: Option<Result<StreamEvent, UpstreamError>>) {
        match last {
            Some(Ok(event)) => {
                if let Some(acc) = self.acc.as_mut() {
                    acc.push(&event);
                }
                self.finished = true;
                match self.record_completed().await {
                    Ok(()) => {
                        self.encoder.encode(&event, &mut self.frames);
                        self.end(RequestOutcome::Success);
                    }
                    Err(err) => {
                        self.encoder.encode_error(&err, &mut self.frames);
                        self.end(RequestOutcome::from_error(&err));
                    }
                }
            }
            Some(Err(err)) => {
                let err = midstream_error(&err);
                self.record_failed(&err.message).await;
                self.encoder.encode_error(&err, &mut self.frames);
                self.end(RequestOutcome::from_error(&err));
            }
            None if self.finished => {}
            None => {
                // A decoder must end with Finish or an error; if it did not, the
                // answer is incomplete and must not look complete.
                let err = midstream_error(&UpstreamError::protocol(
                    "the upstream stream ended before the answer was complete",
                ));
                self.record_failed(&err.message).await;
                self.encoder.encode_error(&err, &mut self.frames);
                self.end(RequestOutcome::from_error(&err));
            }
        }
    }

    async fn record_completed(&mut self) -> Result<(), GatewayError> {
        let (Some(ledger), Some(acc)) = (self.ledger.as_mut(), self.acc.take()) else {
            return Ok(());
        };
        let Some(response) = acc.into_response() else {
            return Ok(());
        };
        let attempts = ledger.attempts().max(self.attempts);
        let outcome = Outcome::completed(&self.provider, &self.model, response, attempts);
        match ledger.complete(outcome).await {
            Ok(()) => Ok(()),
            Err(err) if ledger.durability() == Durability::Sync => Err(err.to_gateway_error()),
            Err(_) => Ok(()),
        }
    }

    async fn record_failed(&mut self, message: &str) {
        if let Some(ledger) = self.ledger.as_mut() {
            let attempts = ledger.attempts().max(self.attempts);
            let _ = ledger.complete(Outcome::failed(message, attempts)).await;
        }
    }

    fn end(&mut self, outcome: RequestOutcome) {
        if let Some(mut meter) = self.meter.take() {
            meter.outcome = Some(outcome);
        }
    }
}

/// A failure after the commit point, as the in-band error the caller sees.
fn midstream_error(err: &UpstreamError) -> GatewayError {
    let mut gateway = GatewayError::from_upstream(err);
    gateway.message = format!(
        "the upstream failed after the answer began streaming; the answer is incomplete: {}",
        err.message
    );
    gateway
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &'static str) -> Result<Bytes, Infallible> {
        Ok(Bytes::from_static(text.as_bytes()))
    }

    #[tokio::test]
    async fn detached_writes_pass_every_write_and_end_cleanly() {
        let writes = futures::stream::iter([frame("data: a\n\n"), frame("data: b\n\n")]);
        let got: Vec<_> = detached_writes(writes).collect().await;
        let got: Vec<_> = got.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(
            got,
            [Bytes::from("data: a\n\n"), Bytes::from("data: b\n\n")]
        );
    }

    #[tokio::test]
    async fn a_writer_that_dies_midway_ends_the_body_with_an_error_not_a_clean_end() {
        let writes = futures::stream::iter([frame("data: a\n\n")]).chain(futures::stream::poll_fn(
            |_| -> std::task::Poll<Option<Result<Bytes, Infallible>>> {
                panic!("a bug in the stream's writer")
            },
        ));
        let got: Vec<_> = detached_writes(Box::pin(writes)).take(3).collect().await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].as_ref().unwrap(), &Bytes::from("data: a\n\n"));
        assert!(
            got[1].is_err(),
            "a cut stream must not end like a finished one"
        );
    }
}
