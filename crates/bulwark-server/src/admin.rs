//! `/admin/chaos`: game-day fault injection on a live gateway (see
//! `bulwark_router::chaos`). Needs the configured admin token; refused outright when
//! none is configured, so a gateway without one can never be broken from outside.
//!
//! ```text
//! POST   /admin/chaos       {"target": "openai" | "openai/gpt-4.1", "fault": {"kind": "down"}, "duration": "5m"}
//! GET    /admin/chaos       the rules in force
//! DELETE /admin/chaos       clear all
//! DELETE /admin/chaos/{id}  clear one
//! ```

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bulwark_core::config::HumanDuration;
use bulwark_router::chaos::ChaosFault;
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;

/// Longest a single injection may last.
const MAX_CHAOS: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChaosRequest {
    /// `provider` (every model) or `provider/model`.
    target: String,
    fault: ChaosFault,
    duration: HumanDuration,
}

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"type": kind, "message": message.into()}})),
    )
        .into_response()
}

/// `Some(refusal)` unless the request carries the admin token.
fn refuse(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &state.admin_token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "permission_error",
            "fault injection is disabled: set `admin_token` in the configuration to enable /admin/chaos",
        ));
    };
    if bulwark_observe::http::bearer_matches(headers, token) {
        None
    } else {
        Some(bulwark_observe::http::unauthorized())
    }
}

pub async fn inject(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(denied) = refuse(&state, &headers) {
        return denied;
    }
    let req: ChaosRequest = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!(
                    "{err}; expected {{\"target\": \"provider[/model]\", \"fault\": {{\"kind\": \"down\" | \"throttle\" | \"slow_first_token\" | \"cut_stream\", ...}}, \"duration\": \"5m\"}}"
                ),
            );
        }
    };
    let (provider, model) = match req.target.split_once('/') {
        Some((p, m)) => (p, Some(m)),
        None => (req.target.as_str(), None),
    };
    if !state.router.has_provider(provider) {
        return error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("no provider named {provider:?} is configured"),
        );
    }
    if req.duration.0.is_zero() || req.duration.0 > MAX_CHAOS {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "duration must be more than 0s and at most 24h",
        );
    }
    let rule = state
        .router
        .chaos()
        .inject(provider, model, req.fault, req.duration.0);
    (StatusCode::CREATED, Json(rule)).into_response()
}

pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(denied) = refuse(&state, &headers) {
        return denied;
    }
    Json(json!({"active": state.router.chaos().active()})).into_response()
}

pub async fn clear_all(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(denied) = refuse(&state, &headers) {
        return denied;
    }
    Json(json!({"cleared": state.router.chaos().clear(None)})).into_response()
}

pub async fn clear_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    if let Some(denied) = refuse(&state, &headers) {
        return denied;
    }
    match state.router.chaos().clear(Some(id)) {
        0 => error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("no active chaos rule #{id}"),
        ),
        n => Json(json!({"cleared": n})).into_response(),
    }
}
