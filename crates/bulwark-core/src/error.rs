//! Error classes (what the router does about an upstream failure) and the
//! caller-facing gateway error (what the ingress writes back, in the caller's format).

use std::time::Duration;

/// What kind of failure an upstream attempt ended in. The router's whole policy keys
/// off this; the mapping from a provider's status and body to a class is done once,
/// in that provider's `map_error`.
///
/// | class | examples | router does |
/// |---|---|---|
/// | `Transient` | connect refused/reset, 408, 500, 502, 503, 504, 529 overloaded | retry with backoff, then fail over |
/// | `Timeout` | no response / no first token in time | fail over, never retry the same target in this request |
/// | `Throttled` | 429 with a reset signal | wait if it fits the deadline, else fail over |
/// | `Quota` | `insufficient_quota`, 402, spend limit | fail over, no retry |
/// | `Auth` | 401/403 from the provider | fail over (the target is misconfigured) |
/// | `InvalidRequest` | 400, 404 model, 413, 422 | give up: the caller's mistake, passed back |
/// | `ContextWindow` | prompt too long | no retry; only a target with a larger window |
/// | `ContentPolicy` | safety block, refusal | give up, reason passed back |
/// | `Unsupported` | a feature this adapter cannot express | skip to the next target, no penalty |
/// | `Protocol` | malformed or truncated upstream response | fail over before the commit point |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    Transient,
    Timeout,
    Throttled,
    Quota,
    Auth,
    InvalidRequest,
    ContextWindow,
    ContentPolicy,
    Unsupported,
    Protocol,
}

impl ErrorClass {
    /// A short, stable, low-cardinality label (metrics, logs, journal).
    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Throttled => "throttled",
            ErrorClass::Quota => "quota",
            ErrorClass::Auth => "auth",
            ErrorClass::InvalidRequest => "invalid_request",
            ErrorClass::ContextWindow => "context_window",
            ErrorClass::ContentPolicy => "content_policy",
            ErrorClass::Unsupported => "unsupported",
            ErrorClass::Protocol => "protocol",
        }
    }

    /// Whether the failure is the caller's to fix, so no other target should be tried.
    pub fn is_caller_fault(self) -> bool {
        matches!(
            self,
            ErrorClass::InvalidRequest | ErrorClass::ContentPolicy | ErrorClass::ContextWindow
        )
    }
}

/// One failed upstream attempt, already classified. Never holds a credential.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{class:?} (status {status:?}): {message}")]
pub struct UpstreamError {
    pub class: ErrorClass,
    /// The upstream's HTTP status, when it answered with one.
    pub status: Option<u16>,
    /// The provider's own reason (its error message), safe to show the caller.
    pub message: String,
    /// The provider's own error type/code (`overloaded_error`, `insufficient_quota`, `RESOURCE_EXHAUSTED`).
    pub code: Option<String>,
    /// How long the provider asked us to wait before trying again.
    pub retry_after: Option<Duration>,
}

impl UpstreamError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        UpstreamError {
            class,
            status: None,
            message: message.into(),
            code: None,
            retry_after: None,
        }
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_retry_after(mut self, wait: Option<Duration>) -> Self {
        self.retry_after = wait;
        self
    }

    /// A feature the adapter cannot express for this provider.
    pub fn unsupported(provider_kind: &str, feature: &str) -> Self {
        UpstreamError::new(
            ErrorClass::Unsupported,
            format!("{feature} is not supported by the {provider_kind} provider"),
        )
    }

    /// An upstream response that does not follow its own wire format.
    pub fn protocol(message: impl Into<String>) -> Self {
        UpstreamError::new(ErrorClass::Protocol, message)
    }
}

/// The kind of error a caller sees; decides the HTTP status and the error `type`
/// in each wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 400: malformed JSON, missing or wrongly typed fields, unsupported values.
    InvalidRequest,
    /// 401: the caller's credentials to Bulwark.
    Authentication,
    /// 403
    PermissionDenied,
    /// 404: unknown model/route, unknown path.
    NotFound,
    /// 405: an endpoint asked with a method it does not take.
    MethodNotAllowed,
    /// 408: the caller did not send its whole request in time.
    RequestTimeout,
    /// 409: a request with the same idempotency key is still running.
    Conflict,
    /// 413
    RequestTooLarge,
    /// 415: a request body in an encoding Bulwark does not read (`Content-Encoding`).
    UnsupportedMediaType,
    /// 422: e.g. an idempotency key reused with another body.
    Unprocessable,
    /// 429
    RateLimited,
    /// 500: a bug in Bulwark.
    Internal,
    /// 502: the upstream answered with something unusable.
    BadGateway,
    /// 503: no target could serve.
    Unavailable,
    /// 504: the request's deadline passed.
    Timeout,
}

impl ErrorKind {
    pub fn status_code(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::Conflict => 409,
            ErrorKind::RequestTooLarge => 413,
            ErrorKind::Unprocessable => 422,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::RateLimited => 429,
            ErrorKind::Internal => 500,
            ErrorKind::BadGateway => 502,
            ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
        }
    }

    /// The kind for an upstream status passed back to the caller.
    pub fn from_status(status: u16) -> Self {
        match status {
            400 => ErrorKind::InvalidRequest,
            401 => ErrorKind::Authentication,
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            413 => ErrorKind::RequestTooLarge,
            422 => ErrorKind::Unprocessable,
            415 => ErrorKind::UnsupportedMediaType,
            429 => ErrorKind::RateLimited,
            408 | 504 => ErrorKind::Timeout,
            503 | 529 => ErrorKind::Unavailable,
            500..=599 => ErrorKind::BadGateway,
            _ => ErrorKind::InvalidRequest,
        }
    }
}

/// An error as the caller sees it. Each ingress format encodes it in its own shape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub message: String,
    /// The request field at fault, when known (OpenAI's `param`).
    pub param: Option<String>,
    /// A machine-readable code (OpenAI's `code`, e.g. `context_length_exceeded`).
    pub code: Option<String>,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    pub retry_after: Option<Duration>,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        GatewayError {
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        GatewayError::new(ErrorKind::InvalidRequest, message)
    }

    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        let mut err = GatewayError::invalid(message);
        err.param = Some(param.into());
        err
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn status_code(&self) -> u16 {
        self.kind.status_code()
    }

    /// The caller-facing error for an upstream failure that ends the request.
    pub fn from_upstream(err: &UpstreamError) -> Self {
        let kind = match err.class {
            ErrorClass::InvalidRequest | ErrorClass::ContentPolicy => err
                .status
                .filter(|s| (400..500).contains(s) && *s != 429)
                .map(ErrorKind::from_status)
                .unwrap_or(ErrorKind::InvalidRequest),
            ErrorClass::ContextWindow | ErrorClass::Unsupported => ErrorKind::InvalidRequest,
            ErrorClass::Throttled | ErrorClass::Quota => ErrorKind::RateLimited,
            ErrorClass::Timeout => ErrorKind::Timeout,
            ErrorClass::Auth | ErrorClass::Transient => ErrorKind::Unavailable,
            ErrorClass::Protocol => ErrorKind::BadGateway,
        };
        GatewayError {
            kind,
            message: err.message.clone(),
            param: None,
            code: err.code.clone(),
            retry_after: err.retry_after,
        }
    }
}
