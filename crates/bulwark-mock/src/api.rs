//! The provider endpoints: one handler per format, all running one call
//! through [`handle_call`]: log it, pick its fault, wait the latency, then fail as
//! the fault says or decode (`serve::*::decode_request`) and answer
//! (`serve::*::encode_response` / `StreamEncoder`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bulwark_core::{ChatRequest, GatewayError};
use bulwark_providers::{anthropic, gemini, openai};
use serde_json::Value;

use crate::answer::Answer;
use crate::conn::ConnHandle;
use crate::fault_errors::error_json;
use crate::model::{Api, Fault};
use crate::state::{MockState, NewCall};
use crate::stream::{Encoder, plan, play};

pub(crate) async fn openai_chat(
    State(state): State<Arc<MockState>>,
    conn: Option<Extension<ConnHandle>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = Incoming::from_body(Api::OpenAi, &uri, &headers, body);
    handle_call(state, conn.map(|c| c.0), call).await
}

pub(crate) async fn anthropic_messages(
    State(state): State<Arc<MockState>>,
    conn: Option<Extension<ConnHandle>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = Incoming::from_body(Api::Anthropic, &uri, &headers, body);
    handle_call(state, conn.map(|c| c.0), call).await
}

/// Anthropic's `POST /v1/messages/count_tokens`: the words of the request (what the
/// mock's answers report as input tokens), or the call's status fault.
pub(crate) async fn anthropic_count_tokens(
    State(state): State<Arc<MockState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = Incoming::from_body(Api::Anthropic, &uri, &headers, body);
    let model = call.record.model.clone();
    let fault = state.take_fault(Api::Anthropic, model.as_deref(), false);
    let seq = state.record_call(call.record, fault.as_ref());
    let response = if let Some(Fault::Status {
        status,
        message,
        code,
        retry_after,
        headers,
    }) = &fault
    {
        status_response(Api::Anthropic, *status, message, code, retry_after, headers)
    } else {
        match anthropic::serve::decode_count_request(&call.raw) {
            Ok(req) => json_response(
                StatusCode::OK,
                serde_json::json!({"input_tokens": crate::answer::request_words(&req).max(1)})
                    .to_string()
                    .into_bytes(),
            ),
            Err(err) => provider_error(Api::Anthropic, &err),
        }
    };
    state.set_call_status(seq, response.status().as_u16());
    with_request_id(Api::Anthropic, seq, response)
}

/// `/v1beta/models/{rest}` where `rest` is `{model}:generateContent` or
/// `{model}:streamGenerateContent` (axum cannot route on a `:` inside a segment).
pub(crate) async fn gemini_models(
    State(state): State<Arc<MockState>>,
    conn: Option<Extension<ConnHandle>>,
    Path(rest): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((model, method)) = rest.rsplit_once(':') else {
        return gemini_path_error(&rest);
    };
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return gemini_path_error(&rest),
    };
    let mut call = Incoming::from_body(Api::Gemini, &uri, &headers, body);
    call.record.model = Some(model.to_string());
    call.record.stream = stream;
    if stream && !query_has(uri.query(), "alt", "sse") {
        let err = GatewayError::invalid_param(
            "alt",
            "bulwark-mock serves streamGenerateContent only with ?alt=sse",
        );
        return provider_error(Api::Gemini, &err);
    }
    handle_call(state, conn.map(|c| c.0), call).await
}

fn gemini_path_error(rest: &str) -> Response {
    let err = GatewayError::new(
        bulwark_core::ErrorKind::NotFound,
        format!(
            "unknown method in models/{rest}: expected :generateContent or :streamGenerateContent"
        ),
    );
    provider_error(Api::Gemini, &err)
}

fn query_has(query: Option<&str>, key: &str, value: &str) -> bool {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .any(|(k, v)| k == key && v == value)
}

/// One call as it arrived.
struct Incoming {
    record: NewCall,
    raw: Bytes,
}

impl Incoming {
    fn from_body(api: Api, uri: &Uri, headers: &HeaderMap, raw: Bytes) -> Self {
        let body: Value = serde_json::from_slice(&raw)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()));
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_string);
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        Incoming {
            record: NewCall {
                api,
                path: uri.path().to_string(),
                query: uri.query().map(str::to_string),
                model,
                stream,
                headers: header_map(headers),
                body,
            },
            raw,
        }
    }
}

fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

async fn handle_call(state: Arc<MockState>, conn: Option<ConnHandle>, call: Incoming) -> Response {
    let api = call.record.api;
    let stream = call.record.stream;
    let requested_model = call.record.model.clone();
    let fault = state.take_fault(api, requested_model.as_deref(), stream);
    let seq = state.record_call(call.record, fault.as_ref());
    let behavior = state.behavior();
    sleep_ms(behavior.latency_ms).await;

    match &fault {
        Some(Fault::Reset) => {
            if let Some(conn) = conn {
                conn.reset();
            }
            // The connection goes away under this future.
            return std::future::pending().await;
        }
        Some(Fault::Hang) => return std::future::pending().await,
        Some(Fault::Status {
            status,
            message,
            code,
            retry_after,
            headers,
        }) => {
            let response = status_response(api, *status, message, code, retry_after, headers);
            state.set_call_status(seq, response.status().as_u16());
            return with_request_id(api, seq, response);
        }
        _ => {}
    }

    let request = match decode(api, requested_model.as_deref(), &call.raw, stream) {
        Ok(request) => request,
        Err(err) => {
            let response = provider_error(api, &err);
            state.set_call_status(seq, response.status().as_u16());
            return with_request_id(api, seq, response);
        }
    };
    let model = match api {
        Api::Gemini => requested_model.unwrap_or_default(),
        Api::OpenAi | Api::Anthropic => request.model.clone(),
    };
    let mut answer = Answer::build(&request, &behavior, api, seq);
    if let Some(Fault::Blocked { after_chunks }) = &fault {
        answer.block(*after_chunks);
    }
    let id = response_id(api, &state.instance, seq);
    let response = if stream && !matches!(fault, Some(Fault::Whole)) {
        let mut encoder = match api {
            Api::OpenAi => Encoder::OpenAi(
                openai::serve::StreamEncoder::new(id.clone(), unix_now(), request.include_usage)
                    .with_reasoning(),
            ),
            Api::Anthropic => Encoder::Anthropic(anthropic::serve::StreamEncoder::new(id.clone())),
            Api::Gemini => Encoder::Gemini(gemini::serve::StreamEncoder::new()),
        };
        let events = answer.events(&id, &model);
        let steps = plan(
            api,
            &mut encoder,
            &events,
            fault.as_ref(),
            behavior.token_delay_ms,
        );
        let mut response = Body::from_stream(play(steps)).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    } else {
        if let Some(Fault::SlowFirstToken { delay_ms }) = &fault {
            sleep_ms(*delay_ms).await;
        }
        let resp = answer.response(&id, &model);
        let body = match api {
            Api::OpenAi => openai::serve::encode_response(&resp, &id, unix_now()),
            Api::Anthropic => anthropic::serve::encode_response(&resp, &id),
            Api::Gemini => gemini::serve::encode_response(&resp),
        };
        json_response(StatusCode::OK, body)
    };
    state.set_call_status(seq, response.status().as_u16());
    with_request_id(api, seq, response)
}

fn decode(
    api: Api,
    model: Option<&str>,
    body: &[u8],
    stream: bool,
) -> Result<ChatRequest, GatewayError> {
    match api {
        Api::OpenAi => openai::serve::decode_request(body),
        Api::Anthropic => {
            let req = anthropic::serve::decode_request(body)?;
            crate::answer::check_thinking(&req)?;
            Ok(req)
        }
        Api::Gemini => gemini::serve::decode_request(model.unwrap_or_default(), body, stream),
    }
}

/// A bad request, in the format's own error shape.
fn provider_error(api: Api, err: &GatewayError) -> Response {
    let body = match api {
        Api::OpenAi => openai::serve::error_body(err),
        Api::Anthropic => anthropic::serve::error_body(err),
        Api::Gemini => gemini::serve::error_body(err),
    };
    let status = StatusCode::from_u16(err.status_code()).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, body)
}

fn status_response(
    api: Api,
    status: u16,
    message: &Option<String>,
    code: &Option<String>,
    retry_after: &Option<String>,
    extra: &BTreeMap<String, String>,
) -> Response {
    let body = error_json(api, status, message.as_deref(), code.as_deref());
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, body.to_string().into_bytes());
    let headers = response.headers_mut();
    if let Some(value) = retry_after
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(RETRY_AFTER, value);
    }
    for (name, value) in extra {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => tracing::warn!(header = %name, "bulwark-mock: skipping an invalid fault header"),
        }
    }
    response
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The request-id header each provider sends (Gemini sends none).
fn with_request_id(api: Api, seq: u64, mut response: Response) -> Response {
    let name = match api {
        Api::OpenAi => "x-request-id",
        Api::Anthropic => "request-id",
        Api::Gemini => return response,
    };
    if let Ok(value) = HeaderValue::from_str(&format!("req_mock_{seq}")) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
    response
}

fn response_id(api: Api, instance: &str, seq: u64) -> String {
    match api {
        Api::OpenAi => format!("chatcmpl-mock-{instance}-{seq}"),
        Api::Anthropic => format!("msg_mock_{instance}_{seq}"),
        Api::Gemini => format!("mock-{instance}-{seq}"),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn sleep_ms(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_matching_finds_alt_sse_among_other_params() {
        assert!(query_has(Some("alt=sse"), "alt", "sse"));
        assert!(query_has(Some("key=k&alt=sse"), "alt", "sse"));
        assert!(!query_has(Some("alt=json"), "alt", "sse"));
        assert!(!query_has(None, "alt", "sse"));
    }

    #[test]
    fn repeated_headers_are_joined_and_names_lowercased() {
        let mut headers = HeaderMap::new();
        headers.append("X-Key", HeaderValue::from_static("a"));
        headers.append("x-key", HeaderValue::from_static("b"));
        let map = header_map(&headers);
        assert_eq!(map.get("x-key").map(String::as_str), Some("a, b"));
    }

    #[test]
    fn status_faults_set_retry_after_and_extra_headers() {
        let extra = BTreeMap::from([("x-ratelimit-remaining".to_string(), "0".to_string())]);
        let response = status_response(
            Api::OpenAi,
            429,
            &None,
            &Some("rate_limit_exceeded".into()),
            &Some("2".into()),
            &extra,
        );
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "2");
        assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn nonstandard_statuses_such_as_529_are_sent_as_is() {
        let response = status_response(Api::Anthropic, 529, &None, &None, &None, &BTreeMap::new());
        assert_eq!(response.status().as_u16(), 529);
    }
}
