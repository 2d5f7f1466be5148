//! Provider error bodies for injected faults: the `status` fault's response body
//! and the `error_event` fault's in-band stream event, in each provider's shape.
//!
//! These are written here rather than through `serve::*::error_body`, because a
//! fault names the exact upstream status and code to imitate (529
//! `overloaded_error`, 429 `insufficient_quota`, ...), which the gateway-facing
//! [`bulwark_core::GatewayError`] cannot express. Bad requests to the mock use
//! `serve::*::error_body` instead.
//!
//! | api | body | `code` given | default type by status |
//! |---|---|---|---|
//! | openai | `{"error":{"message","type","param","code"}}` | `code` (and `type` for `insufficient_quota`) | 429 `requests`, 5xx `server_error`, else `invalid_request_error` |
//! | anthropic | `{"type":"error","error":{"type","message"}}` | `error.type` | 400 `invalid_request_error`, 401 `authentication_error`, 402 `billing_error`, 403 `permission_error`, 404 `not_found_error`, 413 `request_too_large`, 429 `rate_limit_error`, 500 `api_error`, 504 `timeout_error`, 529 `overloaded_error` |
//! | gemini | `{"error":{"code","message","status"}}` | `error.status` | 400 `INVALID_ARGUMENT`, 401 `UNAUTHENTICATED`, 402/429 `RESOURCE_EXHAUSTED`, 403 `PERMISSION_DENIED`, 404 `NOT_FOUND`, 500 `INTERNAL`, 503/529 `UNAVAILABLE`, 504 `DEADLINE_EXCEEDED` |

use bulwark_core::SseFrame;
use serde_json::{Value, json};

use crate::model::Api;

/// The status an `error_event` without one imitates.
pub(crate) fn default_event_status(api: Api) -> u16 {
    match api {
        Api::Anthropic => 529,
        Api::OpenAi => 500,
        Api::Gemini => 503,
    }
}

/// The error object a provider sends for `status`.
pub(crate) fn error_json(
    api: Api,
    status: u16,
    message: Option<&str>,
    code: Option<&str>,
) -> Value {
    let message = message.map_or_else(|| default_message(status, code), str::to_string);
    match api {
        Api::OpenAi => {
            let kind = match code {
                Some("insufficient_quota") => "insufficient_quota",
                _ => openai_type(status),
            };
            let param = match code {
                Some("context_length_exceeded") => json!("messages"),
                _ => Value::Null,
            };
            json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
        }
        Api::Anthropic => {
            let kind = code.unwrap_or_else(|| anthropic_type(status));
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Api::Gemini => {
            let kind = code.unwrap_or_else(|| gemini_status(status));
            json!({"error": {"code": status, "message": message, "status": kind}})
        }
    }
}

/// The in-band error a provider writes into a stream that already began.
pub(crate) fn error_frame(
    api: Api,
    status: u16,
    message: Option<&str>,
    code: Option<&str>,
) -> SseFrame {
    let body = error_json(api, status, message, code).to_string();
    match api {
        Api::Anthropic => SseFrame::named("error", body),
        Api::OpenAi | Api::Gemini => SseFrame::data(body),
    }
}

/// A frame whose data is not JSON. Anthropic's carries an event name, since its
/// clients dispatch on the name and skip unnamed events unread.
pub(crate) fn malformed_frame(api: Api) -> SseFrame {
    match api {
        Api::Anthropic => SseFrame::named("content_block_delta", "{not json"),
        Api::OpenAi | Api::Gemini => SseFrame::data("{not json"),
    }
}

fn default_message(status: u16, code: Option<&str>) -> String {
    let reason = match (code, status) {
        (Some("insufficient_quota"), _) => {
            "You exceeded your current quota, please check your plan and billing details"
        }
        (Some("context_length_exceeded"), _) => "This model's maximum context length was exceeded",
        (_, 429) => "Rate limit exceeded",
        (_, 529) => "Overloaded",
        _ => http_reason(status),
    };
    format!("{reason} (injected by bulwark-mock)")
}

fn http_reason(status: u16) -> &'static str {
    axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Injected fault")
}

fn openai_type(status: u16) -> &'static str {
    match status {
        429 => "requests",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    }
}

fn anthropic_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

fn gemini_status(status: u16) -> &'static str {
    match status {
        401 => "UNAUTHENTICATED",
        402 | 429 => "RESOURCE_EXHAUSTED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 | 529 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500..=599 => "INTERNAL",
        _ => "INVALID_ARGUMENT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_bodies_carry_type_param_and_code() {
        assert_eq!(
            error_json(Api::OpenAi, 429, Some("quota"), Some("insufficient_quota")),
            json!({"error": {"message": "quota", "type": "insufficient_quota",
                             "param": null, "code": "insufficient_quota"}})
        );
        assert_eq!(
            error_json(
                Api::OpenAi,
                400,
                Some("long"),
                Some("context_length_exceeded")
            ),
            json!({"error": {"message": "long", "type": "invalid_request_error",
                             "param": "messages", "code": "context_length_exceeded"}})
        );
        let body = error_json(Api::OpenAi, 503, None, None);
        assert_eq!(body["error"]["type"], "server_error");
        assert_eq!(body["error"]["code"], Value::Null);
        assert_eq!(
            body["error"]["message"],
            "Service Unavailable (injected by bulwark-mock)"
        );
    }

    #[test]
    fn anthropic_bodies_take_the_type_from_code_or_status() {
        assert_eq!(
            error_json(Api::Anthropic, 529, Some("Overloaded"), None),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        );
        let body = error_json(Api::Anthropic, 400, None, Some("billing_error"));
        assert_eq!(body["error"]["type"], "billing_error");
        assert_eq!(
            error_json(Api::Anthropic, 429, None, None)["error"]["type"],
            "rate_limit_error"
        );
        assert_eq!(
            error_json(Api::Anthropic, 502, None, None)["error"]["type"],
            "api_error"
        );
    }

    #[test]
    fn gemini_bodies_carry_the_numeric_code_and_rpc_status() {
        assert_eq!(
            error_json(Api::Gemini, 429, Some("slow down"), None),
            json!({"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}})
        );
        assert_eq!(
            error_json(Api::Gemini, 400, None, Some("FAILED_PRECONDITION"))["error"]["status"],
            "FAILED_PRECONDITION"
        );
    }

    #[test]
    fn in_band_errors_use_each_format_s_event_shape() {
        let frame = error_frame(Api::Anthropic, 529, None, None);
        assert_eq!(frame.event, Some("error"));
        let data: Value = serde_json::from_str(&frame.data).unwrap();
        assert_eq!(data["error"]["type"], "overloaded_error");
        let frame = error_frame(Api::OpenAi, 500, Some("boom"), None);
        assert_eq!(frame.event, None);
        let wire = frame.to_wire();
        let data = wire
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(data).unwrap(),
            json!({"error": {"message": "boom", "type": "server_error", "param": null, "code": null}})
        );
        assert_eq!(
            malformed_frame(Api::Gemini).to_wire(),
            "data: {not json\n\n"
        );
    }
}
