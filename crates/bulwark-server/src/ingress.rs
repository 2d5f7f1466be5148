//! Ingress: the OpenAI and Anthropic endpoints. Decodes the caller's wire format into
//! a neutral request, hands it to the router, and encodes the answer, the stream or
//! the error back in the caller's format.

use std::convert::Infallible;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bulwark_core::{
    ChatRequest, ErrorClass, ErrorKind, GatewayError, SseFrame, StreamEvent, UpstreamError,
};
use bulwark_providers::{EventStream, anthropic, openai};
use bulwark_router::{Failure, RequestOptions, Served};
use futures::StreamExt;
use tracing::info;

use crate::app::{AppState, RequestId};

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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, request_id.0, Format::OpenAi, &headers, body).await
}

pub async fn anthropic_messages(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, request_id.0, Format::Anthropic, &headers, body).await
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
            .or_else(|| {
                humantime::parse_duration(text)
                    .ok()
                    .filter(|d| !d.is_zero())
            });
        match parsed {
            Some(d) => opts.timeout = Some(d),
            None => {
                return Err(GatewayError::invalid_param(
                    "x-bulwark-timeout",
                    format!(
                        "the x-bulwark-timeout header {text:?} is not a duration (write e.g. `30s`, `1500ms` or `30`)"
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

async fn handle(
    state: AppState,
    request_id: String,
    format: Format,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let opts = match request_options(headers) {
        Ok(opts) => opts,
        Err(err) => return format.error_response(&err, None),
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let err = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                GatewayError::new(
                    ErrorKind::RequestTooLarge,
                    format!(
                        "the request body is larger than {} MiB",
                        crate::app::MAX_BODY_BYTES / (1024 * 1024)
                    ),
                )
            } else {
                GatewayError::invalid(format!("cannot read the request body: {rejection}"))
            };
            return format.error_response(&err, None);
        }
    };
    let req = match format.decode(&body) {
        Ok(req) => req,
        Err(err) => {
            info!(request_id, ingress = format.label(), status = err.status_code(), error = %err, "rejected request");
            return format.error_response(&err, None);
        }
    };
    let route = match state.router.resolve(&req.model) {
        Ok(route) => route,
        Err(err) => {
            let err = GatewayError::new(ErrorKind::NotFound, err.to_string())
                .with_code("model_not_found");
            let mut err = err;
            err.param = Some("model".into());
            return format.error_response(&err, None);
        }
    };
    let response = if req.stream {
        match state.router.chat_stream(&route, &req, &opts).await {
            Ok(served) => stream_response(format, &request_id, &req, served),
            Err(failure) => failure_response(format, &route.name, failure),
        }
    } else {
        match state.router.chat(&route, &req, &opts).await {
            Ok(served) => {
                let id = format.response_id(&request_id);
                let body = match format {
                    Format::OpenAi => {
                        openai::serve::encode_response(&served.value, &id, unix_now())
                    }
                    Format::Anthropic => anthropic::serve::encode_response(&served.value, &id),
                };
                let mut response = (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response();
                served_headers(&mut response, &served.provider, served.attempts);
                response
            }
            Err(failure) => failure_response(format, &route.name, failure),
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

fn served_headers(response: &mut Response, provider: &str, attempts: u32) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(provider) {
        headers.insert("x-bulwark-provider", value);
    }
    headers.insert("x-bulwark-attempts", HeaderValue::from(attempts));
}

/// The caller-facing error when the router gave up.
fn failure_response(format: Format, route: &str, failure: Failure) -> Response {
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
    response
}

fn stream_response(
    format: Format,
    request_id: &str,
    req: &ChatRequest,
    served: Served<EventStream>,
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
        attempts,
        ..
    } = served;
    let state = EgressState {
        events: Some(events),
        encoder,
        frames: Vec::new(),
        finished: false,
    };
    let body = futures::stream::unfold(state, |mut st| async move {
        let mut events = st.events.take()?;
        st.frames.clear();
        match events.next().await {
            Some(Ok(event)) => {
                st.finished |= matches!(event, StreamEvent::Finish { .. });
                st.encoder.encode(&event, &mut st.frames);
                st.events = Some(events);
            }
            Some(Err(err)) => {
                st.encoder
                    .encode_error(&midstream_error(&err), &mut st.frames);
            }
            None if st.finished => return None,
            None => {
                // A decoder must end with Finish or an error; if it did not, the
                // answer is incomplete and must not look complete.
                let err = UpstreamError::protocol(
                    "the upstream stream ended before the answer was complete",
                );
                st.encoder
                    .encode_error(&midstream_error(&err), &mut st.frames);
            }
        }
        let mut bytes = String::new();
        for frame in &st.frames {
            bytes.push_str(&frame.to_wire());
        }
        Some((Ok::<_, Infallible>(Bytes::from(bytes)), st))
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    served_headers(&mut response, &provider, attempts);
    response
}

struct EgressState {
    events: Option<EventStream>,
    encoder: Encoder,
    frames: Vec<SseFrame>,
    finished: bool,
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
