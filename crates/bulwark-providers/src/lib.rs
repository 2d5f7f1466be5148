//! Provider adapters: one module per upstream wire format.
//!
//! # Layout
//!
//! Each format module (`openai`, `anthropic`, `gemini`) has three files:
//!
//! - `wire.rs`: the serde structs of the provider's published API (requests,
//!   responses, stream chunks, error bodies), checked against its reference;
//! - `client.rs`: the [`Adapter`] Bulwark uses to *call* that provider: neutral
//!   request → wire, wire response/stream/error → neutral, and the error-class
//!   mapping (`map_error`);
//! - `serve.rs`: the other direction, used where Bulwark *speaks* the format: the
//!   ingress (OpenAI, Anthropic) and the mock provider (all three): wire request →
//!   neutral, neutral response/stream/error → wire.
//!
//! This module holds what is common: the [`Adapter`] and [`StreamDecoder`] traits and
//! [`Provider`], which owns the HTTP client and turns an adapter into calls.
//! Nothing here knows about routes, retries or the caller's ingress format.

pub mod anthropic;
pub mod gemini;
pub mod openai;

use std::pin::Pin;
use std::time::Duration;

use bulwark_core::config::{ProviderConfig, ProviderKind};
use bulwark_core::{ChatRequest, ChatResponse, ErrorClass, StreamEvent, UpstreamError};
use futures::{Stream, StreamExt};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// A stream of neutral events from one upstream attempt.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, UpstreamError>> + Send>>;

/// The client side of one upstream wire format.
pub trait Adapter: Send + Sync {
    /// The full URL of a chat call. `base_url` has no trailing slash and is in the
    /// form the provider's official SDK takes (OpenAI: ends in `/v1`; Anthropic and
    /// Gemini: the host root).
    fn url(&self, base_url: &str, model: &str, stream: bool) -> String;

    /// Adds authentication and API-version headers.
    fn auth_headers(&self, api_key: Option<&str>, headers: &mut HeaderMap);

    /// Encodes the request body. Fails with [`ErrorClass::Unsupported`] naming the
    /// feature when the request uses something this provider cannot do.
    fn encode_request(
        &self,
        req: &ChatRequest,
        model: &str,
        stream: bool,
    ) -> Result<Vec<u8>, UpstreamError>;

    /// Decodes a 2xx non-streaming response body.
    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, UpstreamError>;

    /// A fresh decoder for one streamed response.
    fn stream_decoder(&self) -> Box<dyn StreamDecoder>;

    /// Classifies a non-2xx response. The message must be the provider's own reason,
    /// never a header value or anything that could hold a credential.
    fn map_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> UpstreamError;
}

/// Stateful translation of one upstream SSE stream into neutral events (ids, model,
/// tool-call indexes are carried across chunks). Must uphold the contract documented
/// on [`StreamEvent`].
pub trait StreamDecoder: Send {
    /// One SSE event (`event:` name if any, `data:` payload). Pushes zero or more
    /// neutral events. A provider error event or an unparsable chunk is an `Err`.
    fn feed(
        &mut self,
        event: Option<&str>,
        data: &str,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), UpstreamError>;

    /// The upstream closed the stream. Pushes the final events if the upstream had
    /// signalled the end of the answer (even if its terminator was missing); an `Err`
    /// if the answer was cut short.
    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), UpstreamError>;
}

/// The longest wait a provider's throttling hint is taken at. A server asking for
/// more (a year, `1e300` seconds) gets its target tried again after this, and
/// answers for itself then.
pub const MAX_PROVIDER_WAIT: Duration = Duration::from_secs(24 * 3600);

/// A wait a provider asked for, in seconds: `None` when it is not a number of
/// seconds at all (negative, NaN, infinite), at most [`MAX_PROVIDER_WAIT`].
pub(crate) fn provider_wait(seconds: f64) -> Option<Duration> {
    if !(seconds.is_finite() && seconds >= 0.0) {
        return None;
    }
    Some(Duration::from_secs_f64(
        seconds.min(MAX_PROVIDER_WAIT.as_secs_f64()),
    ))
}

/// For the providers that reject an empty message (Anthropic, Gemini), whose encoders
/// drop empty turns: refuses, as [`ErrorClass::Unsupported`] (the router tries the
/// next target, which may take it: OpenAI accepts empty messages), a conversation
/// that dropping them would change. That is one with nothing left to send, or one
/// that ends with an empty user turn after an assistant turn: without the user turn,
/// the assistant's would read as a prefill to continue instead of a turn to answer.
pub(crate) fn check_not_emptied(kind: &str, req: &ChatRequest) -> Result<(), UpstreamError> {
    use bulwark_core::{ContentBlock, Role};
    let empty = |m: &&bulwark_core::Message| {
        m.content
            .iter()
            .all(|b| matches!(b, ContentBlock::Text { text } if text.is_empty()))
    };
    // Trailing empty assistant turns are an empty prefill, which is no prefill.
    let mut turns = req.messages.as_slice();
    while let [rest @ .., last] = turns
        && last.role == Role::Assistant
        && empty(&last)
    {
        turns = rest;
    }
    let ends_with_user = turns.last().is_some_and(|m| m.role == Role::User);
    match turns.iter().rev().find(|m| !empty(m)) {
        None => Err(UpstreamError::unsupported(
            kind,
            "a conversation whose every message is empty",
        )),
        Some(kept) if ends_with_user && kept.role == Role::Assistant => Err(
            UpstreamError::unsupported(kind, "an empty user message after the assistant's"),
        ),
        Some(_) => Ok(()),
    }
}

/// Parses a `Retry-After` header (seconds, possibly fractional, or an HTTP-date,
/// RFC 9110 §10.2.3) and the millisecond variant `retry-after-ms` some providers
/// send. A date in the past is no wait; every wait is capped at [`MAX_PROVIDER_WAIT`].
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(wait) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|ms| provider_wait(ms / 1000.0))
    {
        return Some(wait);
    }
    let text = headers.get("retry-after")?.to_str().ok()?.trim();
    match text.parse::<f64>() {
        Ok(seconds) => provider_wait(seconds),
        Err(_) => {
            let at = httpdate::parse_http_date(text).ok()?;
            let wait = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO);
            Some(wait.min(MAX_PROVIDER_WAIT))
        }
    }
}

/// The adapter for a provider kind.
pub fn adapter_for(config: &ProviderConfig) -> Box<dyn Adapter> {
    match config.kind {
        ProviderKind::Anthropic => Box::new(anthropic::AnthropicAdapter::new(
            config
                .default_max_tokens
                .unwrap_or(anthropic::DEFAULT_MAX_TOKENS),
        )),
        ProviderKind::Openai => Box::new(openai::OpenAiAdapter::new(false)),
        ProviderKind::OpenaiCompatible => Box::new(openai::OpenAiAdapter::new(true)),
        ProviderKind::Gemini => Box::new(gemini::GeminiAdapter::new()),
    }
}

/// One configured upstream provider: its adapter, endpoint and credentials.
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    base_url: String,
    /// The credential and the configured header values (at least 4 characters): what
    /// [`scrub`] removes from every error message before it leaves this crate.
    secrets: std::sync::Arc<[String]>,
    /// The headers of every call, built once: the configured extras, the adapter's
    /// authentication (all marked sensitive) and the content type.
    request_headers: HeaderMap,
    adapter: Box<dyn Adapter>,
    client: reqwest::Client,
    /// Parsed endpoint URLs by their text: parsing one (with IDNA host mapping) costs
    /// more than the rest of building a request, and a provider calls only a few.
    urls: UrlCache,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Errors building a [`Provider`] from (already validated) configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("provider `{0}` has no base_url and its kind has no default endpoint")]
    NoBaseUrl(String),
    #[error("provider `{provider}`: header `{header}` is not a valid HTTP header")]
    BadHeader { provider: String, header: String },
}

impl Provider {
    pub fn new(config: &ProviderConfig, client: reqwest::Client) -> Result<Self, BuildError> {
        let base_url = config
            .base_url
            .as_deref()
            .or(config.kind.default_base_url())
            .ok_or_else(|| BuildError::NoBaseUrl(config.name.clone()))?
            .trim_end_matches('/')
            .to_string();
        let mut extra_headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let bad = || BuildError::BadHeader {
                provider: config.name.clone(),
                header: name.clone(),
            };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| bad())?;
            value.set_sensitive(true);
            extra_headers.insert(name, value);
        }
        let adapter = adapter_for(config);
        let mut request_headers = extra_headers.clone();
        adapter.auth_headers(
            config.api_key.as_ref().map(|k| k.expose()),
            &mut request_headers,
        );
        for value in request_headers.values_mut() {
            value.set_sensitive(true);
        }
        request_headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(Provider {
            name: config.name.clone(),
            kind: config.kind,
            base_url,
            secrets: config
                .api_key
                .iter()
                .map(|k| k.expose().to_string())
                .chain(
                    extra_headers
                        .values()
                        .filter_map(|v| v.to_str().ok().map(str::to_string)),
                )
                .filter(|s| s.len() >= 4)
                .collect(),
            request_headers,
            adapter,
            client,
            urls: UrlCache::default(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn request(
        &self,
        req: &ChatRequest,
        model: &str,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, UpstreamError> {
        let body = self.adapter.encode_request(req, model, stream)?;
        let headers = self.headers_for(req, stream);
        let url = self.adapter.url(&self.base_url, model, stream);
        let builder = match self.urls.get(&url) {
            Some(parsed) => self.client.post(parsed),
            None => self.client.post(url),
        };
        Ok(builder.headers(headers).body(body))
    }

    /// The headers of a call for `req`: the provider's own, and the caller's betas.
    fn headers_for(&self, req: &ChatRequest, stream: bool) -> HeaderMap {
        let mut headers = self.request_headers.clone();
        if self.kind == ProviderKind::Anthropic
            && let Some(betas) = &req.anthropic_beta
        {
            // The caller's betas after any the operator configured for this provider.
            let joined = match headers.get("anthropic-beta").and_then(|v| v.to_str().ok()) {
                Some(configured) => format!("{configured},{betas}"),
                None => betas.clone(),
            };
            if let Ok(value) = HeaderValue::from_str(&joined) {
                headers.insert("anthropic-beta", value);
            }
        }
        if stream {
            headers.insert(
                http::header::ACCEPT,
                HeaderValue::from_static("text/event-stream"),
            );
        }
        headers
    }

    /// Sends the request and returns the response once its headers are in and its
    /// status is 2xx; a non-2xx status is read and mapped to an [`UpstreamError`].
    async fn send(
        &self,
        req: &ChatRequest,
        model: &str,
        stream: bool,
    ) -> Result<reqwest::Response, UpstreamError> {
        self.checked(self.request(req, model, stream)?).await
    }

    /// Sends a built call: the response once its status is 2xx, or the error its
    /// status and body say, with every secret taken out.
    async fn checked(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, UpstreamError> {
        let response = builder.send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let headers = response.headers().clone();
        // An error needs no more than its first part: an upstream answering with a
        // gigabyte of HTML is not read into memory.
        let body = read_capped(response, MAX_ERROR_BODY_BYTES)
            .await
            .unwrap_or_default();
        Err(scrub(
            &self.secrets,
            self.adapter.map_error(status, &headers, &body),
        ))
    }

    /// The prompt tokens of `req` as the provider counts them, for Anthropic's
    /// `POST /v1/messages/count_tokens`: only Anthropic upstreams have that counter
    /// (an estimate would be passed off as a count), the other kinds answer
    /// "unsupported".
    pub async fn count_tokens(&self, req: &ChatRequest, model: &str) -> Result<u64, UpstreamError> {
        if self.kind != ProviderKind::Anthropic {
            return Err(UpstreamError::unsupported(
                self.kind.as_str(),
                "counting tokens",
            ));
        }
        let body = anthropic::client::count_tokens_body(&*self.adapter, req, model)?;
        let url = format!("{}/v1/messages/count_tokens", self.base_url);
        let builder = self
            .client
            .post(url)
            .headers(self.headers_for(req, false))
            .body(body);
        let response = self.checked(builder).await?;
        let body = read_capped(response, MAX_ERROR_BODY_BYTES).await?;
        anthropic::client::decode_count(&body).map_err(|e| scrub(&self.secrets, e))
    }

    /// One non-streaming call.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        model: &str,
    ) -> Result<ChatResponse, UpstreamError> {
        let response = self.send(req, model, false).await?;
        let body = read_capped(response, MAX_SSE_EVENT_BYTES).await?;
        let mut answer = self
            .adapter
            .decode_response(&body)
            .map_err(|e| scrub(&self.secrets, e))?;
        if self.keeps_one_call(req) {
            keep_first_call(&mut answer);
        }
        Ok(answer)
    }

    /// `parallel_tool_calls: false` to a provider that cannot be told (Gemini): the
    /// model may still call several tools in a turn, and the caller gets the first.
    fn keeps_one_call(&self, req: &ChatRequest) -> bool {
        self.kind == ProviderKind::Gemini && req.parallel_tool_calls == Some(false)
    }

    /// One streaming call. Resolves once the upstream answered 2xx; the stream then
    /// yields neutral events, ending with `Finish` or an error.
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        model: &str,
    ) -> Result<EventStream, UpstreamError> {
        let mut response = self.send(req, model, true).await?;
        let body = if is_json(response.headers()) {
            // Labelled JSON: a whole document, unless its first bytes are events (some
            // servers label their streams `application/json`).
            let first = response.chunk().await.map_err(transport_error)?;
            if first.as_deref().is_some_and(starts_as_json) {
                return self.whole_answer(response, first, req).await;
            }
            futures::stream::iter(first.map(Ok))
                .chain(response.bytes_stream())
                .left_stream()
        } else {
            response.bytes_stream().right_stream()
        };
        let sse = sse_stream::SseByteStream::new(bounded_events(body));
        let decoder = self.adapter.stream_decoder();
        // An in-band error event is the provider's text too: scrub it like a status error.
        let secrets = std::sync::Arc::clone(&self.secrets);
        let events = decode_sse(sse, decoder).map(move |item| item.map_err(|e| scrub(&secrets, e)));
        if self.keeps_one_call(req) {
            return Ok(Box::pin(first_call_only(events)));
        }
        Ok(Box::pin(events))
    }
}

impl Provider {
    /// A 2xx JSON document where a stream was asked for: a server that ignores
    /// `stream: true` sends its whole answer, and a relay that reports errors in-band
    /// (OpenRouter, some OpenAI-compatible proxies) sends an error with status 200.
    /// The answer is replayed as the events that would have streamed it; anything else
    /// is mapped as the error it is, so that its class (context window, quota, rate
    /// limit…) decides what happens next, as for a non-2xx status.
    async fn whole_answer(
        &self,
        response: reqwest::Response,
        first: Option<bytes::Bytes>,
        req: &ChatRequest,
    ) -> Result<EventStream, UpstreamError> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = first.map(Vec::from).unwrap_or_default();
        body.extend(read_capped(response, MAX_SSE_EVENT_BYTES.saturating_sub(body.len())).await?);
        match self.adapter.decode_response(&body) {
            Ok(mut answer) => {
                if self.keeps_one_call(req) {
                    keep_first_call(&mut answer);
                }
                let events = answer.to_events().into_iter().map(Ok);
                Ok(Box::pin(futures::stream::iter(events)))
            }
            // An error document: classed by what it says, as with its own status.
            Err(_) if is_error_document(&body) => Err(scrub(
                &self.secrets,
                self.adapter.map_error(status, &headers, &body),
            )),
            Err(not_an_answer) => Err(scrub(&self.secrets, not_an_answer)),
        }
    }
}

/// Bytes that begin a JSON object (after any whitespace), not an SSE field.
fn starts_as_json(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// A JSON object that is an error report in one of the shapes providers use: an
/// `error` member (OpenAI, Gemini, OpenRouter), `"object": "error"` (vLLM) or
/// `"type": "error"` (Anthropic).
fn is_error_document(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|doc| {
        doc.get("error").is_some_and(|e| !e.is_null())
            || doc.get("object").and_then(|v| v.as_str()) == Some("error")
            || doc.get("type").and_then(|v| v.as_str()) == Some("error")
    })
}

/// A response whose body is one JSON document (`application/json`, `…+json`), not
/// server-sent events.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
}

/// The answer with its first tool call and none after it.
fn keep_first_call(answer: &mut ChatResponse) {
    let mut seen = false;
    answer.content.retain(|block| {
        !matches!(block, bulwark_core::ContentBlock::ToolUse { .. })
            || !std::mem::replace(&mut seen, true)
    });
}

/// The events of a stream without the tool calls after its first (neutral tool-call
/// indexes count from 0 in the order calls start).
fn first_call_only(
    events: impl Stream<Item = Result<StreamEvent, UpstreamError>>,
) -> impl Stream<Item = Result<StreamEvent, UpstreamError>> {
    events.filter(|item| {
        let later_call = matches!(
            item,
            Ok(StreamEvent::ToolCallStart { index, .. } | StreamEvent::ToolCallDelta { index, .. })
                if *index > 0
        );
        futures::future::ready(!later_call)
    })
}

/// Providers sometimes quote the credential they rejected; no secret we hold may
/// survive into a message that reaches logs, the journal or callers.
fn scrub(secrets: &[String], mut err: UpstreamError) -> UpstreamError {
    for secret in secrets {
        if err.message.contains(secret.as_str()) {
            err.message = err.message.replace(secret.as_str(), "***");
        }
    }
    err
}

/// Endpoint URLs already parsed, keyed by their text. Bounded: a route of the form
/// `provider/model` lets callers choose the model, which some adapters put in the URL.
#[derive(Default)]
struct UrlCache(std::sync::RwLock<std::collections::HashMap<String, reqwest::Url>>);

impl UrlCache {
    const MAX_ENTRIES: usize = 64;

    /// The parsed form of `url`, parsing and remembering it on first use. `None` when
    /// it does not parse: the caller hands the text to reqwest, which reports the error.
    fn get(&self, url: &str) -> Option<reqwest::Url> {
        if let Some(parsed) = self.0.read().unwrap_or_else(|e| e.into_inner()).get(url) {
            return Some(parsed.clone());
        }
        let parsed = reqwest::Url::parse(url).ok()?;
        let mut cache = self.0.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() < Self::MAX_ENTRIES {
            cache.insert(url.to_string(), parsed.clone());
        }
        Some(parsed)
    }
}

/// How much of an upstream's error body is read.
const MAX_ERROR_BODY_BYTES: usize = 1024 * 1024;

/// The response's body, or its first `cap` bytes when it is longer: the rest is
/// never read (for an error its start is enough; a whole answer cut short fails
/// to decode).
async fn read_capped(response: reqwest::Response, cap: usize) -> Result<Vec<u8>, UpstreamError> {
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(transport_error)?;
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The most an upstream SSE event may hold before the blank line that ends it. The
/// SSE parser keeps an unfinished event in memory: without a bound, an upstream
/// that never ends its event (one endless `data:` line) would grow it until the
/// deadline. Real events are a few KB; a whole answer in one event stays far below.
pub const MAX_SSE_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// `body`, failing once an event runs past [`MAX_SSE_EVENT_BYTES`].
fn bounded_events<S, E>(body: S) -> impl Stream<Item = Result<bytes::Bytes, std::io::Error>>
where
    S: Stream<Item = Result<bytes::Bytes, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut open = 0usize;
    let mut tail = [0u8; 2];
    body.map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        open = match end_of_last_event(&tail, &chunk) {
            Some(end) => chunk.len() - end,
            None => open.saturating_add(chunk.len()),
        };
        for &byte in chunk.iter().rev().take(2).rev() {
            tail = [tail[1], byte];
        }
        if open > MAX_SSE_EVENT_BYTES {
            return Err(std::io::Error::other(format!(
                "an event ran past {} MiB without ending",
                MAX_SSE_EVENT_BYTES / (1024 * 1024)
            )));
        }
        Ok(chunk)
    })
}

/// Where in `chunk` the last complete event ends (just after its blank line:
/// `\n\n`, `\r\r` or `\n\r\n`), looking back into the two bytes before it (`tail`).
fn end_of_last_event(tail: &[u8; 2], chunk: &[u8]) -> Option<usize> {
    let ends_event = |window: &[u8]| {
        window.ends_with(b"\n\n") || window.ends_with(b"\r\r") || window.ends_with(b"\n\r\n")
    };
    (0..chunk.len()).rev().find_map(|i| {
        let mut window = [0u8; 3];
        for (k, slot) in window.iter_mut().enumerate() {
            // window = the three bytes ending at chunk[i], reaching into the tail.
            let at = i as isize - 2 + k as isize;
            *slot = if at >= 0 {
                chunk[at as usize]
            } else {
                tail[(2 + at) as usize]
            };
        }
        ends_event(&window).then_some(i + 1)
    })
}

/// Drives a [`StreamDecoder`] over an SSE byte stream.
fn decode_sse<S>(sse: S, decoder: Box<dyn StreamDecoder>) -> EventStream
where
    S: Stream<Item = Result<sse_stream::Sse, sse_stream::Error>> + Send + 'static,
{
    struct State<S> {
        sse: Pin<Box<S>>,
        decoder: Box<dyn StreamDecoder>,
        pending: std::collections::VecDeque<StreamEvent>,
        failed: Option<UpstreamError>,
        buf: Vec<StreamEvent>,
        done: bool,
    }
    let state = State {
        sse: Box::pin(sse),
        decoder,
        pending: Default::default(),
        failed: None,
        buf: Vec::new(),
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            // Events decoded before a failure are delivered first, then the failure.
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if let Some(err) = st.failed.take() {
                return Some((Err(err), st));
            }
            if st.done {
                return None;
            }
            let step = match st.sse.next().await {
                // An event with no data, or only whitespace (a bare `data:` line some
                // proxies send as a keep-alive), carries nothing to decode.
                Some(Ok(sse)) => match sse.data {
                    Some(data) if !data.trim().is_empty() => {
                        st.decoder.feed(sse.event.as_deref(), &data, &mut st.buf)
                    }
                    _ => Ok(()),
                },
                Some(Err(err)) => Err(UpstreamError::new(
                    ErrorClass::Transient,
                    format!("upstream stream broke: {}", error_chain(&err)),
                )),
                None => {
                    st.done = true;
                    st.decoder.finish(&mut st.buf)
                }
            };
            st.pending.extend(st.buf.drain(..));
            if let Err(err) = step {
                st.done = true;
                st.failed = Some(err);
            }
        }
    }))
}

/// A transport failure (no HTTP status): classify by whether we could even connect.
fn transport_error(err: reqwest::Error) -> UpstreamError {
    let class = if err.is_timeout() {
        ErrorClass::Timeout
    } else {
        ErrorClass::Transient
    };
    // reqwest's Display can include the URL; ours never carries credentials in URLs
    // (keys go in headers), so the chain is safe to show.
    UpstreamError::new(
        class,
        format!("upstream unreachable: {}", error_chain(&err)),
    )
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        // Wrappers that print their cause in their own text already said it.
        let text = inner.to_string();
        if out.ends_with(&text) {
            source = inner.source();
            continue;
        }
        out.push_str(": ");
        out.push_str(&text);
        source = inner.source();
    }
    out
}

#[cfg(test)]
mod bounded_events_tests {
    use super::*;
    use bytes::Bytes;

    fn run(chunks: Vec<Vec<u8>>) -> Vec<Result<usize, String>> {
        let body = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from(c))),
        );
        futures::executor::block_on(
            bounded_events(body)
                .map(|r| r.map(|b| b.len()).map_err(|e| e.to_string()))
                .collect(),
        )
    }

    /// A wrapper that prints its cause in its own text: the cause is not said twice.
    #[test]
    fn an_error_chain_says_each_cause_once() {
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "upstream body: {}", self.0)
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = Wrapper(std::io::Error::other("an event ran past 16 MiB"));
        assert_eq!(error_chain(&err), "upstream body: an event ran past 16 MiB");
    }

    #[test]
    fn finds_event_ends_inside_and_across_chunks() {
        assert_eq!(end_of_last_event(b"xx", b"data: a\n\ndata: b"), Some(9));
        assert_eq!(end_of_last_event(b"xx", b"data: a\r\n\r\n"), Some(11));
        assert_eq!(end_of_last_event(b"xx", b"data: a\r\r"), Some(9));
        assert_eq!(end_of_last_event(b"a\n", b"\ndata"), Some(1));
        assert_eq!(end_of_last_event(b"\r\n", b"\r\n"), Some(2));
        assert_eq!(end_of_last_event(b"xx", b"data: a\ndata: b\n"), None);
    }

    #[test]
    fn an_event_that_never_ends_is_cut_off_and_ended_events_are_not() {
        let mib = 1024 * 1024;
        // Many ended events, far more bytes in all than the bound: all pass.
        let event = b"data: {\"x\":1}\n\n".repeat(mib / 8);
        let passed = run(vec![event.clone(); 10]);
        assert!(passed.iter().all(Result::is_ok));
        // One endless line, a MiB at a time: cut off just past the bound.
        let line = vec![b'a'; mib];
        let mut chunks = vec![b"data: ".to_vec()];
        chunks.extend(std::iter::repeat_n(line, 20));
        let got = run(chunks);
        let failed_at = got.iter().position(Result::is_err).unwrap();
        // "data: " and 16 MiB: the 16th MiB chunk is the first past the bound.
        assert_eq!(failed_at, MAX_SSE_EVENT_BYTES / mib, "{got:?}");
        assert!(
            got[failed_at]
                .as_ref()
                .unwrap_err()
                .contains("without ending")
        );
    }
}

#[cfg(test)]
mod retry_after_tests {
    use super::*;
    use http::HeaderValue;

    fn wait(name: &'static str, value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        retry_after(&headers)
    }

    #[test]
    fn seconds_and_milliseconds_are_read_as_given() {
        assert_eq!(wait("retry-after", "2"), Some(Duration::from_secs(2)));
        assert_eq!(
            wait("retry-after", " 1.5 "),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            wait("retry-after-ms", "250"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(wait("retry-after", "-1"), None);
        assert_eq!(wait("retry-after", "NaN"), None);
        assert_eq!(wait("retry-after", "soon"), None);
    }

    #[test]
    fn a_wait_too_large_for_a_duration_is_capped_instead_of_panicking() {
        for (name, value) in [
            ("retry-after", "1e300"),
            ("retry-after", "99999999999999999999"),
            ("retry-after-ms", "1e30"),
            ("retry-after-ms", "18446744073709551615"),
        ] {
            assert_eq!(
                wait(name, value),
                Some(MAX_PROVIDER_WAIT),
                "{name}: {value}"
            );
        }
    }

    #[test]
    fn an_http_date_is_the_wait_until_then() {
        let in_ten = std::time::SystemTime::now() + Duration::from_secs(10);
        let got = wait("retry-after", &httpdate::fmt_http_date(in_ten)).unwrap();
        // The date has whole seconds: 9 to 10 s from now.
        assert!(
            got > Duration::from_secs(8) && got <= Duration::from_secs(10),
            "{got:?}"
        );
        assert_eq!(
            wait("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            wait("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(MAX_PROVIDER_WAIT)
        );
    }
}

#[cfg(test)]
mod emptied_tests {
    use bulwark_core::{ChatRequest, ContentBlock, ErrorClass, Message, Role};

    use crate::Adapter;
    use crate::anthropic::client::{AnthropicAdapter, DEFAULT_MAX_TOKENS};
    use crate::gemini::client::GeminiAdapter;
    use crate::openai::client::OpenAiAdapter;

    fn text(role: Role, text: &str) -> Message {
        Message {
            role,
            content: vec![ContentBlock::Text { text: text.into() }],
        }
    }

    /// Anthropic and Gemini refuse (as a feature they lack, so the router tries the
    /// next target) exactly the conversations that dropping empty turns would change;
    /// OpenAI takes every one as it is.
    #[test]
    fn a_conversation_that_dropping_empty_turns_would_change_is_unsupported() {
        use Role::{Assistant, User};
        let changed: [Vec<Message>; 4] = [
            vec![text(User, "")],
            vec![text(User, ""), text(Assistant, "")],
            vec![text(User, "hi"), text(Assistant, "hello"), text(User, "")],
            vec![
                text(User, "hi"),
                text(Assistant, "x"),
                text(User, ""),
                text(Assistant, ""),
            ],
        ];
        let unchanged: [Vec<Message>; 4] = [
            vec![text(User, "hi")],
            vec![text(User, ""), text(User, "hi")],
            vec![text(User, "hi"), text(User, "")],
            // An empty prefill is no prefill.
            vec![text(User, "hi"), text(Assistant, "")],
        ];
        let adapters: [(&str, Box<dyn Adapter>); 3] = [
            (
                "anthropic",
                Box::new(AnthropicAdapter::new(DEFAULT_MAX_TOKENS)),
            ),
            ("gemini", Box::new(GeminiAdapter::new())),
            ("openai", Box::new(OpenAiAdapter::new(false))),
        ];
        for (kind, adapter) in adapters {
            for messages in &changed {
                let req = ChatRequest {
                    messages: messages.clone(),
                    ..ChatRequest::default()
                };
                let result = adapter.encode_request(&req, "m", false);
                if kind == "openai" {
                    assert!(result.is_ok(), "{kind} {messages:?}");
                } else {
                    let err = result.unwrap_err();
                    assert_eq!(err.class, ErrorClass::Unsupported, "{kind} {messages:?}");
                    assert!(err.message.contains("empty"), "{}", err.message);
                }
            }
            for messages in &unchanged {
                let req = ChatRequest {
                    messages: messages.clone(),
                    ..ChatRequest::default()
                };
                assert!(
                    adapter.encode_request(&req, "m", false).is_ok(),
                    "{kind} {messages:?}"
                );
            }
        }
    }
}

#[cfg(test)]
mod one_call_tests {
    use super::*;
    use bulwark_core::{ContentBlock, StopReason, Usage};
    use serde_json::json;

    fn call(index: u32) -> [StreamEvent; 2] {
        [
            StreamEvent::ToolCallStart {
                index,
                id: format!("call_{index}"),
                name: "f".into(),
            },
            StreamEvent::ToolCallDelta {
                index,
                arguments: "{}".into(),
            },
        ]
    }

    #[tokio::test]
    async fn a_stream_keeps_its_first_tool_call_and_everything_else() {
        let finish = StreamEvent::Finish {
            stop_reason: StopReason::ToolUse,
            stop_sequence: None,
            usage: Usage::default(),
        };
        let text = StreamEvent::TextDelta { text: "ok".into() };
        let events: Vec<StreamEvent> = [text.clone()]
            .into_iter()
            .chain(call(0))
            .chain(call(1))
            .chain(call(2))
            .chain([finish.clone()])
            .collect();
        let kept: Vec<StreamEvent> =
            first_call_only(futures::stream::iter(events.into_iter().map(Ok)))
                .map(Result::unwrap)
                .collect()
                .await;
        let expected: Vec<StreamEvent> =
            [text].into_iter().chain(call(0)).chain([finish]).collect();
        assert_eq!(kept, expected);
    }

    #[test]
    fn an_answer_keeps_its_first_tool_call_and_everything_else() {
        let tool = |id: &str| ContentBlock::ToolUse {
            id: id.into(),
            name: "f".into(),
            input: json!({}),
        };
        let mut answer = ChatResponse {
            id: "r".into(),
            model: "m".into(),
            content: vec![
                ContentBlock::Text { text: "ok".into() },
                tool("a"),
                tool("b"),
                ContentBlock::Text {
                    text: "done".into(),
                },
            ],
            stop_reason: StopReason::ToolUse,
            stop_sequence: None,
            usage: Usage::default(),
        };
        keep_first_call(&mut answer);
        assert_eq!(
            answer.content,
            [
                ContentBlock::Text { text: "ok".into() },
                tool("a"),
                ContentBlock::Text {
                    text: "done".into()
                }
            ]
        );
    }
}

#[cfg(test)]
mod decode_sse_tests {
    use super::*;
    use bytes::Bytes;

    /// An Anthropic stream with a bare `data:` line between its events (a keep-alive
    /// some proxies send): decoded as if it were not there.
    #[test]
    fn an_event_without_data_is_skipped_not_decoded() {
        let body = concat!(
            "event: message_start\n",
            r#"data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"usage":{"input_tokens":3,"output_tokens":0}}}"#,
            "\n\ndata:\n\n",
            "data:   \n\n",
            "event: content_block_start\n",
            r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            "\n\nevent: content_block_delta\n",
            r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            "\n\nevent: message_delta\n",
            r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":1}}"#,
            "\n\nevent: message_stop\n",
            r#"data: {"type":"message_stop"}"#,
            "\n\n",
        );
        let bytes = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(body))]);
        let sse = sse_stream::SseByteStream::new(bytes);
        let decoder = Box::new(anthropic::client_stream::AnthropicStreamDecoder::default());
        let events: Vec<_> = futures::executor::block_on(decode_sse(sse, decoder).collect());
        let events: Vec<StreamEvent> = events.into_iter().map(Result::unwrap).collect();
        assert!(events.contains(&StreamEvent::TextDelta { text: "Hi".into() }));
        assert!(matches!(
            events.last(),
            Some(StreamEvent::Finish {
                stop_reason: bulwark_core::StopReason::EndTurn,
                ..
            })
        ));
    }
}

#[cfg(test)]
mod whole_document_tests {
    use super::*;

    #[test]
    fn a_json_label_on_events_is_read_as_events_and_errors_are_told_from_answers() {
        // Some servers label their event streams `application/json`: their first
        // bytes are SSE fields, not a JSON object.
        assert!(starts_as_json(b"  \n{\"id\":\"x\"}"));
        assert!(!starts_as_json(b"data: {\"id\":\"x\"}\n\n"));
        assert!(!starts_as_json(b": keep-alive\n\n"));
        assert!(!starts_as_json(b"event: message_start\n"));
        assert!(is_error_document(br#"{"error": {"code": 429}}"#));
        assert!(is_error_document(br#"{"object": "error", "message": "m"}"#));
        assert!(is_error_document(
            br#"{"type": "error", "error": {"type": "overloaded_error"}}"#
        ));
        assert!(!is_error_document(br#"{"error": null, "choices": []}"#));
        assert!(!is_error_document(br#"{"id": "x", "choices": [{}]}"#));
        assert!(!is_error_document(b"not json"));
    }
}
