//! The control API under `/_mock/` (JSON in, JSON out). See the crate docs for
//! the list with examples. A body that does not parse is a 400
//! `{"error": "<what is wrong>"}`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::model::{Behavior, BehaviorPatch, FaultRule};
use crate::state::MockState;

/// The control routes, to be nested under `/_mock`.
pub(crate) fn routes() -> Router<Arc<MockState>> {
    Router::new()
        .route(
            "/faults",
            post(push_fault).get(list_faults).delete(clear_faults),
        )
        .route("/faults/{id}", delete(remove_fault))
        .route("/behavior", get(get_behavior).put(put_behavior))
        .route("/calls", get(list_calls).delete(clear_calls))
        .route("/reset", post(reset))
        .route("/health", get(health))
}

/// The parsed body, or the message of a 400.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|err| err.to_string())
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

async fn push_fault(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    match parse::<FaultRule>(&body) {
        Ok(rule) => Json(json!({ "id": state.push_fault(rule) })).into_response(),
        Err(message) => bad_request(&message),
    }
}

async fn list_faults(State(state): State<Arc<MockState>>) -> Response {
    Json(state.faults()).into_response()
}

async fn clear_faults(State(state): State<Arc<MockState>>) -> StatusCode {
    state.clear_faults();
    StatusCode::NO_CONTENT
}

async fn remove_fault(State(state): State<Arc<MockState>>, Path(id): Path<u64>) -> StatusCode {
    if state.remove_fault(id) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn get_behavior(State(state): State<Arc<MockState>>) -> Json<Behavior> {
    Json(state.behavior())
}

async fn put_behavior(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    match parse::<BehaviorPatch>(&body) {
        Ok(patch) => Json(state.update_behavior(&patch)).into_response(),
        Err(message) => bad_request(&message),
    }
}

async fn list_calls(State(state): State<Arc<MockState>>) -> Response {
    Json(state.calls()).into_response()
}

async fn clear_calls(State(state): State<Arc<MockState>>) -> StatusCode {
    state.clear_calls();
    StatusCode::NO_CONTENT
}

async fn reset(State(state): State<Arc<MockState>>) -> StatusCode {
    state.reset();
    StatusCode::NO_CONTENT
}

async fn health(State(state): State<Arc<MockState>>) -> Response {
    Json(json!({ "status": "ok", "name": state.behavior().name })).into_response()
}
