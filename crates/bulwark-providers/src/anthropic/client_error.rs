//! Classifying Anthropic failures (HTTP error responses and in-stream `error`
//! events) into [`ErrorClass`], with the wait Anthropic asks for.
//!
//! Anthropic's error body is `{"type": "error", "error": {"type", "message"},
//! "request_id"}`. The wait comes from `retry-after` or, on a 429 without it, from
//! the `anthropic-ratelimit-*-reset` headers (RFC 3339 timestamps), parsed by the
//! small parser at the bottom of this file.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bulwark_core::{ErrorClass, UpstreamError};
use http::HeaderMap;

use super::wire::ErrorBody;

/// The rate-limit families Anthropic reports, each with a `-remaining` and a
/// `-reset` header (`anthropic-ratelimit-<family>-reset`).
const RATE_LIMIT_FAMILIES: [&str; 4] = ["requests", "tokens", "input-tokens", "output-tokens"];

/// Classifies a non-2xx Anthropic response.
///
/// | status / error type | class |
/// |---|---|
/// | 529, or `overloaded_error` with any status | `Transient` |
/// | 401, 403 | `Auth` |
/// | 402, `billing_error` | `Quota` |
/// | 408, 500–599 | `Transient` |
/// | 429 whose message says credit balance / spend or usage limit, with no `retry-after` | `Quota` |
/// | 429 otherwise (`rate_limit_error`) | `Throttled` |
/// | 400 (or other 4xx) whose message says "prompt is too long" / context limit exceeded | `ContextWindow` |
/// | 400 (or other 4xx) whose message says credit balance / spend or usage limit | `Quota` |
/// | 400 (or other 4xx) whose message names `output_config` (a model without structured output, a schema it will not take) | `Unsupported` |
/// | 400, 404, 413, 422 and other 4xx | `InvalidRequest` |
/// | 3xx (a redirect, never followed) | `Transient` |
/// | anything else (1xx) | `Protocol` |
///
/// `retry_after` is `retry-after` / `retry-after-ms` when present; on a 429 without
/// them, the wait until the `anthropic-ratelimit-*-reset` of the exhausted limit
/// (the family whose `-remaining` is 0; the latest if several), or the earliest
/// reset when no family says it is exhausted.
pub fn map_error(status: u16, headers: &HeaderMap, body: &[u8]) -> UpstreamError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (error_type, message) = match parsed {
        Some(body) => (body.error.kind, body.error.message),
        None => (String::new(), String::new()),
    };
    let message = if message.trim().is_empty() {
        format!("anthropic returned HTTP {status}")
    } else {
        message
    };
    let header_wait = crate::retry_after(headers);
    let class = classify(Some(status), &error_type, &message, header_wait.is_some());
    let retry_after = match (header_wait, class) {
        (Some(wait), _) => Some(wait),
        (None, ErrorClass::Throttled) => rate_limit_reset_wait(headers, SystemTime::now()),
        (None, _) => None,
    };
    let mut err = UpstreamError::new(class, message)
        .with_status(status)
        .with_retry_after(retry_after);
    if !error_type.is_empty() {
        err = err.with_code(error_type);
    }
    err
}

/// The class of an in-stream `error` event (no HTTP status; the type decides).
pub(crate) fn classify_error_type(error_type: &str) -> ErrorClass {
    classify(None, error_type, "", false)
}

fn classify(status: Option<u16>, error_type: &str, message: &str, has_wait: bool) -> ErrorClass {
    let lower = message.to_ascii_lowercase();
    let out_of_money = error_type == "billing_error" || mentions_spend_limit(&lower);
    if status == Some(529) || error_type == "overloaded_error" {
        return ErrorClass::Transient;
    }
    match status {
        Some(401 | 403) => ErrorClass::Auth,
        Some(402) => ErrorClass::Quota,
        // A redirect says nothing of the caller's request: something in front of
        // Anthropic is amiss (it is never followed: that would resend the prompt).
        Some(300..=399 | 408 | 500..=599) => ErrorClass::Transient,
        Some(429) if out_of_money && !has_wait => ErrorClass::Quota,
        Some(429) => ErrorClass::Throttled,
        Some(400..=499) if mentions_context_window(&lower) => ErrorClass::ContextWindow,
        Some(400..=499) if out_of_money => ErrorClass::Quota,
        // Structured output this model or this schema cannot have: another target may.
        Some(400..=499) if lower.contains("output_config") => ErrorClass::Unsupported,
        Some(400..=499) => ErrorClass::InvalidRequest,
        Some(_) => ErrorClass::Protocol,
        None => match error_type {
            "rate_limit_error" => ErrorClass::Throttled,
            "billing_error" => ErrorClass::Quota,
            "authentication_error" | "permission_error" => ErrorClass::Auth,
            "invalid_request_error" | "not_found_error" | "request_too_large" => {
                ErrorClass::InvalidRequest
            }
            // api_error, timeout_error and types added later: server-side trouble.
            _ => ErrorClass::Transient,
        },
    }
}

/// "Your credit balance is too low to access the Anthropic API…", "You have reached
/// your specified API usage limits…", workspace spend limits.
fn mentions_spend_limit(lower: &str) -> bool {
    ["credit balance", "spend limit", "usage limit", "billing"]
        .iter()
        .any(|needle| lower.contains(needle))
}

/// "prompt is too long: 208310 tokens > 200000 maximum", "input length and
/// `max_tokens` exceed context limit: …".
fn mentions_context_window(lower: &str) -> bool {
    lower.contains("prompt is too long") || lower.contains("exceed context limit")
}

/// The wait until the relevant `anthropic-ratelimit-*-reset` time.
fn rate_limit_reset_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let mut exhausted: Option<SystemTime> = None;
    let mut earliest: Option<SystemTime> = None;
    for family in RATE_LIMIT_FAMILIES {
        let header = |suffix: &str| {
            headers
                .get(format!("anthropic-ratelimit-{family}-{suffix}"))
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let Some(reset) = header("reset").and_then(parse_rfc3339) else {
            continue;
        };
        earliest = Some(earliest.map_or(reset, |e| e.min(reset)));
        if header("remaining") == Some("0") {
            exhausted = Some(exhausted.map_or(reset, |e| e.max(reset)));
        }
    }
    let reset = exhausted.or(earliest)?;
    Some(
        reset
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(crate::MAX_PROVIDER_WAIT),
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (RFC 3339; `t`/`z` and a space
/// separator accepted). Returns `None` for anything else or a time before 1970.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        digits
            .iter()
            .try_fold(0i64, |acc, d| Some(acc * 10 + i64::from(d - b'0')))
    };
    let sep = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }

    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset_secs = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let offset = oh * 3600 + om * 60;
            if *sign == b'+' { offset } else { -offset }
        }
        _ => return None,
    };

    let days = days_from_civil(year, month, day);
    // A leap second (":60") is read as the first second of the next minute.
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    fn body(error_type: &str, message: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": "req_011"
        }))
        .unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn at(s: &str) -> SystemTime {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn overloaded_529_is_transient() {
        let err = map_error(
            529,
            &HeaderMap::new(),
            &body("overloaded_error", "Overloaded"),
        );
        assert_eq!(err.class, ErrorClass::Transient);
        assert_eq!(err.status, Some(529));
        assert_eq!(err.code.as_deref(), Some("overloaded_error"));
        assert_eq!(err.message, "Overloaded");
        assert_eq!(err.retry_after, None);
    }

    #[test]
    fn rate_limit_429_with_retry_after_is_throttled_with_that_wait() {
        let h = headers(&[
            ("retry-after", "17"),
            ("anthropic-ratelimit-requests-reset", "2000-01-01T00:00:00Z"),
        ]);
        let err = map_error(
            429,
            &h,
            &body(
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            ),
        );
        assert_eq!(err.class, ErrorClass::Throttled);
        assert_eq!(err.retry_after, Some(Duration::from_secs(17)));
        assert_eq!(err.code.as_deref(), Some("rate_limit_error"));
    }

    #[test]
    fn rate_limit_429_with_only_reset_headers_waits_until_the_reset() {
        let now = SystemTime::now();
        let in_secs = |s: u64| {
            let t = now.duration_since(UNIX_EPOCH).unwrap().as_secs() + s;
            let days = (t / 86_400) as i64;
            // Format via the inverse of days_from_civil (search is fine in a test).
            let mut y = 1970;
            while days_from_civil(y + 1, 1, 1) <= days {
                y += 1;
            }
            let mut m = 1;
            while m < 12 && days_from_civil(y, m + 1, 1) <= days {
                m += 1;
            }
            let d = days - days_from_civil(y, m, 1) + 1;
            let rem = t % 86_400;
            format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            )
        };
        let h = headers(&[
            ("anthropic-ratelimit-requests-reset", &in_secs(30)),
            ("anthropic-ratelimit-tokens-reset", &in_secs(90)),
        ]);
        let err = map_error(429, &h, &body("rate_limit_error", "rate limited"));
        assert_eq!(err.class, ErrorClass::Throttled);
        let wait = err.retry_after.unwrap();
        assert!(
            wait <= Duration::from_secs(30) && wait >= Duration::from_secs(28),
            "{wait:?}"
        );
    }

    #[test]
    fn reset_wait_prefers_the_exhausted_limit() {
        let now = at("2025-06-01T12:00:00Z");
        let h = headers(&[
            ("anthropic-ratelimit-requests-remaining", "40"),
            ("anthropic-ratelimit-requests-reset", "2025-06-01T12:00:05Z"),
            ("anthropic-ratelimit-input-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2025-06-01T12:00:20.5Z",
            ),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2025-06-01T12:00:02Z",
            ),
        ]);
        assert_eq!(
            rate_limit_reset_wait(&h, now),
            Some(Duration::from_millis(20_500))
        );
        let h = headers(&[
            ("anthropic-ratelimit-requests-reset", "2025-06-01T12:00:05Z"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2025-06-01T14:00:02+02:00",
            ),
        ]);
        assert_eq!(rate_limit_reset_wait(&h, now), Some(Duration::from_secs(2)));
        let past = headers(&[("anthropic-ratelimit-tokens-reset", "2025-06-01T11:00:00Z")]);
        assert_eq!(rate_limit_reset_wait(&past, now), Some(Duration::ZERO));
        assert_eq!(rate_limit_reset_wait(&HeaderMap::new(), now), None);
    }

    #[test]
    fn prompt_too_long_is_context_window() {
        let err = map_error(
            400,
            &HeaderMap::new(),
            &body(
                "invalid_request_error",
                "prompt is too long: 208310 tokens > 200000 maximum",
            ),
        );
        assert_eq!(err.class, ErrorClass::ContextWindow);
        assert_eq!(err.status, Some(400));
        assert!(err.message.contains("208310"));
    }

    #[test]
    fn a_refused_structured_output_is_unsupported_so_another_target_may_serve() {
        for message in [
            "output_config.format: structured outputs are not supported for this model",
            "output_config.format.schema: For 'object' type, 'additionalProperties' must be explicitly set to false",
        ] {
            let err = map_error(
                400,
                &HeaderMap::new(),
                &body("invalid_request_error", message),
            );
            assert_eq!(err.class, ErrorClass::Unsupported, "{message}");
        }
        let other = map_error(
            400,
            &HeaderMap::new(),
            &body("invalid_request_error", "max_tokens: Field required"),
        );
        assert_eq!(other.class, ErrorClass::InvalidRequest);
    }

    #[test]
    fn credit_balance_and_spend_limits_are_quota() {
        let credit = "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.";
        let err = map_error(
            400,
            &HeaderMap::new(),
            &body("invalid_request_error", credit),
        );
        assert_eq!(err.class, ErrorClass::Quota);
        let usage = "You have reached your specified API usage limits. You will regain access on 2025-07-01 at 00:00 UTC.";
        let err = map_error(429, &HeaderMap::new(), &body("rate_limit_error", usage));
        assert_eq!(err.class, ErrorClass::Quota);
        // With a retry-after, a 429 is a wait, not an empty wallet.
        let err = map_error(
            429,
            &headers(&[("retry-after", "5")]),
            &body("rate_limit_error", usage),
        );
        assert_eq!(err.class, ErrorClass::Throttled);
        let err = map_error(
            402,
            &HeaderMap::new(),
            &body("billing_error", "Payment required"),
        );
        assert_eq!(err.class, ErrorClass::Quota);
    }

    #[test]
    fn status_table() {
        let cases = [
            (401, "authentication_error", ErrorClass::Auth),
            (403, "permission_error", ErrorClass::Auth),
            (404, "not_found_error", ErrorClass::InvalidRequest),
            (413, "request_too_large", ErrorClass::InvalidRequest),
            (422, "invalid_request_error", ErrorClass::InvalidRequest),
            (400, "invalid_request_error", ErrorClass::InvalidRequest),
            (408, "timeout_error", ErrorClass::Transient),
            (500, "api_error", ErrorClass::Transient),
            (502, "api_error", ErrorClass::Transient),
            (503, "overloaded_error", ErrorClass::Transient),
            (504, "timeout_error", ErrorClass::Transient),
            (302, "", ErrorClass::Transient),
            (103, "", ErrorClass::Protocol),
        ];
        for (status, kind, class) in cases {
            let err = map_error(status, &HeaderMap::new(), &body(kind, "boom"));
            assert_eq!(err.class, class, "{status}");
            assert_eq!(err.status, Some(status));
        }
    }

    #[test]
    fn unparsable_body_gets_a_generic_message_without_headers() {
        let h = headers(&[("x-api-key", "sk-secret")]);
        let err = map_error(502, &h, b"<html>Bad Gateway</html>");
        assert_eq!(err.class, ErrorClass::Transient);
        assert_eq!(err.message, "anthropic returned HTTP 502");
        assert_eq!(err.code, None);
    }

    #[test]
    fn rfc3339_parser_accepts_the_forms_anthropic_sends() {
        let base = UNIX_EPOCH + Duration::from_secs(1_748_779_200); // 2025-06-01T12:00:00Z
        assert_eq!(parse_rfc3339("2025-06-01T12:00:00Z"), Some(base));
        assert_eq!(
            parse_rfc3339("2025-06-01T12:00:00.25Z"),
            Some(base + Duration::from_millis(250))
        );
        assert_eq!(parse_rfc3339("2025-06-01T14:30:00+02:30"), Some(base));
        assert_eq!(parse_rfc3339("2025-06-01T09:00:00-03:00"), Some(base));
        assert_eq!(parse_rfc3339("2024-02-29t00:00:00z").map(|_| ()), Some(()));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        for bad in [
            "",
            "2025-06-01",
            "2025-06-01T12:00:00",
            "2025-13-01T12:00:00Z",
            "2025-02-29T12:00:00Z",
            "2025-06-01T24:00:00Z",
            "2025-06-01T12:00:00.Z",
            "2025-06-01T12:00:00+0200",
            "2025-06-01T12:00:00Zjunk",
            "1969-12-31T23:59:59Z",
            "Sun, 01 Jun 2025 12:00:00 GMT",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
