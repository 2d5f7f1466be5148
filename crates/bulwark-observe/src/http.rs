//! axum handlers: `GET /metrics` (Prometheus text, open like any scrape target) and
//! `GET /admin/status` (JSON, behind `Authorization: Bearer <admin token>` when a
//! token is configured).
//!
//! [`routes`] gives a finished `axum::Router` to `merge` into the server's app;
//! the handlers are public too for a server that mounts them itself.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bulwark_core::config::Secret;

use crate::Observer;

/// The prometheus text format's content type.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the handlers need.
#[derive(Clone)]
pub struct ObserveState {
    pub observer: Arc<Observer>,
    /// When set, `/admin/status` requires `Authorization: Bearer <token>`.
    pub admin_token: Option<Secret>,
}

/// `GET /metrics` and `GET /admin/status`, ready to `merge`.
pub fn routes(observer: Arc<Observer>, admin_token: Option<Secret>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/status", get(status))
        .with_state(ObserveState {
            observer,
            admin_token,
        })
}

pub async fn metrics(State(state): State<ObserveState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(METRICS_CONTENT_TYPE),
        )],
        state.observer.metrics_text(),
    )
        .into_response()
}

pub async fn status(State(state): State<ObserveState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.admin_token
        && !bearer_matches(&headers, token)
    {
        return unauthorized();
    }
    axum::Json(state.observer.status()).into_response()
}

/// Whether `Authorization: Bearer <token>` carries `token` (constant time in the
/// token's bytes).
pub fn bearer_matches(headers: &HeaderMap, token: &Secret) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    else {
        return false;
    };
    token_matches(given, token)
}

/// Whether `given` is `token` (constant time in the token's bytes).
pub fn token_matches(given: &str, token: &Secret) -> bool {
    let (a, b) = (given.trim().as_bytes(), token.expose().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 401 with `WWW-Authenticate: Bearer` and a JSON error body.
pub fn unauthorized() -> Response {
    let body = serde_json::json!({
        "error": {
            "type": "authentication_error",
            "message": "the admin endpoints need `Authorization: Bearer <admin token>`",
        }
    });
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
