//! Classifying Gemini errors: the body of a non-2xx answer and in-band stream error
//! chunks, both `{"error": {"code", "message", "status", "details": [...]}}` (a
//! `google.rpc.Status`).

use std::time::Duration;

use bulwark_core::{ErrorClass, UpstreamError};
use http::HeaderMap;
use serde_json::Value;

use super::wire::{ERROR_INFO_TYPE, ErrorStatus, QUOTA_FAILURE_TYPE, RETRY_INFO_TYPE};

/// Classifies a non-2xx Gemini answer. The message is Google's own (`error.message`),
/// `code` is the canonical status name (`RESOURCE_EXHAUSTED`), `retry_after` comes from
/// a `google.rpc.RetryInfo` detail (`retryDelay: "2s"`) or else the `Retry-After` header.
///
/// | class | when |
/// |---|---|
/// | `Auth` | 401, 403 (`UNAUTHENTICATED`, `PERMISSION_DENIED`), and a 400 whose `ErrorInfo.reason` says the API key is bad (`API_KEY_INVALID`, `API_KEY_EXPIRED`) |
/// | `ContextWindow` | 400 whose message says the input token count exceeds the maximum |
/// | `Quota` | 400 `FAILED_PRECONDITION` (billing / free tier not available in the region), 402, and a 429 for a per-day quota or a zero limit (see below) |
/// | `Throttled` | other 429s (`RESOURCE_EXHAUSTED`): per-minute request and token limits |
/// | `InvalidRequest` | 404 (unknown model) and other 4xx (`INVALID_ARGUMENT`, ...) |
/// | `Transient` | 408, 500 `INTERNAL`, 502, 503 `UNAVAILABLE`, 504 `DEADLINE_EXCEEDED`, any other 5xx |
///
/// Daily quotas: a 429 whose `QuotaFailure` names a per-day quota
/// (`quotaId: GenerateRequestsPerDayPerProjectPerModel-FreeTier`) or whose message says
/// `limit: 0` (the model is not available on the key's tier) is `Quota`, not
/// `Throttled`: waiting does not help within a request's deadline (the quota resets at
/// the end of the day; Google still attaches a short `RetryInfo`), so the router should
/// fail over rather than wait and retry. The delay is still reported in `retry_after`.
pub fn map_error(status: u16, headers: &HeaderMap, body: &[u8]) -> UpstreamError {
    let parsed = parse_error_body(body);
    let mut err = classify(status, parsed.as_ref());
    if err.retry_after.is_none() {
        err.retry_after = crate::retry_after(headers);
    }
    err
}

/// The error for an in-band `{"error": ...}` chunk of a stream.
pub fn stream_error(chunk: &Value) -> UpstreamError {
    let parsed = chunk
        .get("error")
        .and_then(|e| serde_json::from_value::<ErrorStatus>(e.clone()).ok());
    // A stream error without a code is a failure of the upstream mid-answer.
    let status = parsed.as_ref().and_then(|e| e.code).unwrap_or(500);
    classify(status, parsed.as_ref())
}

/// Reads `{"error": {...}}`; Google occasionally wraps it in a one-element array.
fn parse_error_body(body: &[u8]) -> Option<ErrorStatus> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let envelope = match value {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    };
    serde_json::from_value(envelope.get("error")?.clone()).ok()
}

fn classify(status: u16, error: Option<&ErrorStatus>) -> UpstreamError {
    let code = error.and_then(|e| e.status.clone());
    let message = error
        .and_then(|e| e.message.clone())
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| format!("gemini answered HTTP {status}"));
    let details: &[Value] = error.map(|e| e.details.as_slice()).unwrap_or_default();
    let reason = detail(details, ERROR_INFO_TYPE)
        .and_then(|d| d.get("reason"))
        .and_then(Value::as_str);
    let retry_after = detail(details, RETRY_INFO_TYPE)
        .and_then(|d| d.get("retryDelay"))
        .and_then(Value::as_str)
        .and_then(parse_duration);

    let class = match (status, code.as_deref()) {
        (401 | 403, _) | (_, Some("UNAUTHENTICATED" | "PERMISSION_DENIED")) => ErrorClass::Auth,
        _ if matches!(reason, Some("API_KEY_INVALID" | "API_KEY_EXPIRED")) => ErrorClass::Auth,
        (400, _) if is_token_limit(&message) => ErrorClass::ContextWindow,
        (400, Some("FAILED_PRECONDITION")) | (402, _) => ErrorClass::Quota,
        (429, _) if is_daily_quota(details, &message) => ErrorClass::Quota,
        (429, _) => ErrorClass::Throttled,
        // A redirect (never followed: it would resend the prompt elsewhere) says
        // nothing of the caller's request: something in front of Gemini is amiss.
        (408, _) | (500..=599, _) | (300..=399, _) => ErrorClass::Transient,
        // A 2xx whose body is no answer, where a stream was asked for: Gemini's answer
        // is malformed, whatever the body says of the request.
        (200..=299, _) => ErrorClass::Protocol,
        _ => ErrorClass::InvalidRequest,
    };

    let mut err = UpstreamError::new(class, message)
        .with_status(status)
        .with_retry_after(retry_after);
    err.code = code;
    err
}

/// The first detail of the given `@type`.
fn detail<'a>(details: &'a [Value], type_url: &str) -> Option<&'a Value> {
    details
        .iter()
        .find(|d| d.get("@type").and_then(Value::as_str) == Some(type_url))
}

/// "The input token count (1200293) exceeds the maximum number of tokens allowed (1048576)."
fn is_token_limit(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("input token count") && m.contains("exceeds the maximum")
}

fn is_daily_quota(details: &[Value], message: &str) -> bool {
    let per_day = details
        .iter()
        .filter(|d| d.get("@type").and_then(Value::as_str) == Some(QUOTA_FAILURE_TYPE))
        .filter_map(|d| d.get("violations").and_then(Value::as_array))
        .flatten()
        .filter_map(|v| v.get("quotaId").and_then(Value::as_str))
        .any(|id| id.to_ascii_lowercase().contains("perday"));
    per_day || message.contains("limit: 0")
}

/// A `google.protobuf.Duration` in JSON form: `"2s"`, `"0.5s"`, `"36.429760048s"`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let seconds: f64 = text.trim().strip_suffix('s')?.parse().ok()?;
    crate::provider_wait(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(status: u16, body: Value) -> UpstreamError {
        map_error(status, &HeaderMap::new(), body.to_string().as_bytes())
    }

    #[test]
    fn a_redirect_is_transient_not_the_callers_mistake() {
        for status in [301, 302, 307, 308] {
            let err = map_error(status, &HeaderMap::new(), b"");
            assert_eq!(err.class, ErrorClass::Transient, "{status}");
        }
    }

    #[test]
    fn rate_limit_with_retry_info_is_throttled_with_the_delay() {
        let err = map(
            429,
            json!({"error": {
                "code": 429,
                "message": "You exceeded your current quota.",
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_input_token_count",
                        "quotaId": "GenerateContentPaidTierInputTokensPerModelPerMinute"}]},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}
                ]
            }}),
        );
        assert_eq!(err.class, ErrorClass::Throttled);
        assert_eq!(err.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(err.status, Some(429));
        assert_eq!(err.code.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(err.message, "You exceeded your current quota.");
    }

    #[test]
    fn plain_429_uses_the_retry_after_header() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "3".parse().unwrap());
        let body = json!({"error": {"code": 429, "message": "Resource exhausted.", "status": "RESOURCE_EXHAUSTED"}});
        let err = map_error(429, &headers, body.to_string().as_bytes());
        assert_eq!(err.class, ErrorClass::Throttled);
        assert_eq!(err.retry_after, Some(Duration::from_secs(3)));
    }

    #[test]
    fn daily_quota_is_quota_and_keeps_the_delay() {
        let err = map(
            429,
            json!({"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                        "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "quotaValue": "20"}]},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36.5s"}]}}),
        );
        assert_eq!(err.class, ErrorClass::Quota);
        assert_eq!(err.retry_after, Some(Duration::from_millis(36_500)));

        let err = map(
            429,
            json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                "message": "Quota exceeded for metric: generate_content_free_tier_requests, limit: 0"}}),
        );
        assert_eq!(err.class, ErrorClass::Quota);
    }

    #[test]
    fn token_limit_is_context_window() {
        let err = map(
            400,
            json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                "message": "The input token count (1200293) exceeds the maximum number of tokens allowed (1048576)."}}),
        );
        assert_eq!(err.class, ErrorClass::ContextWindow);
        assert_eq!(err.code.as_deref(), Some("INVALID_ARGUMENT"));
    }

    #[test]
    fn classifies_the_rest_of_the_table() {
        let cases = [
            (
                503,
                json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}),
                ErrorClass::Transient,
            ),
            (
                500,
                json!({"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}),
                ErrorClass::Transient,
            ),
            (
                504,
                json!({"error": {"code": 504, "message": "Deadline", "status": "DEADLINE_EXCEEDED"}}),
                ErrorClass::Transient,
            ),
            (
                403,
                json!({"error": {"code": 403, "message": "Permission denied", "status": "PERMISSION_DENIED"}}),
                ErrorClass::Auth,
            ),
            (
                401,
                json!({"error": {"code": 401, "message": "No key", "status": "UNAUTHENTICATED"}}),
                ErrorClass::Auth,
            ),
            (
                400,
                json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}}),
                ErrorClass::Auth,
            ),
            (
                400,
                json!({"error": {"code": 400, "message": "User location is not supported for the API use.",
                "status": "FAILED_PRECONDITION"}}),
                ErrorClass::Quota,
            ),
            (
                404,
                json!({"error": {"code": 404, "message": "models/nope is not found", "status": "NOT_FOUND"}}),
                ErrorClass::InvalidRequest,
            ),
            (
                400,
                json!({"error": {"code": 400, "message": "Invalid JSON payload", "status": "INVALID_ARGUMENT"}}),
                ErrorClass::InvalidRequest,
            ),
        ];
        for (status, body, class) in cases {
            let err = map(status, body.clone());
            assert_eq!(err.class, class, "{status} {body}");
            assert_eq!(err.status, Some(status));
        }
    }

    #[test]
    fn unreadable_bodies_get_a_generic_message() {
        let err = map_error(502, &HeaderMap::new(), b"<html>Bad Gateway</html>");
        assert_eq!(err.class, ErrorClass::Transient);
        assert_eq!(err.message, "gemini answered HTTP 502");
        assert_eq!(err.code, None);

        let wrapped = json!([{"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}]);
        let err = map(429, wrapped);
        assert_eq!(err.class, ErrorClass::Throttled);
        assert_eq!(err.message, "slow down");
    }

    #[test]
    fn parses_protobuf_durations() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
