//! The axum application: routes, shared state, request ids.

use std::sync::Arc;
use std::time::Instant;

use axum::Router as AxumRouter;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use bulwark_core::config::Secret;
use bulwark_journal::{Backup, Journal, Recovery};
use bulwark_observe::Observer;
use bulwark_router::Router;

use crate::ingress::{self, Format};

/// Largest request body accepted (images arrive inline as base64).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub router: Arc<Router>,
    pub journal: Journal,
    pub observer: Arc<Observer>,
    /// Ships the journal to object storage (`backup:`), when configured.
    pub backup: Option<Arc<Backup>>,
    /// What opening the journal found (requests a crash left unfinished).
    pub recovery: Arc<Recovery>,
    pub admin_token: Option<Secret>,
    pub started: Instant,
}

/// The request id of the current request (a request extension set by [`request_id`]).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub fn build_app(state: AppState) -> AxumRouter {
    let observe =
        bulwark_observe::http::routes(Arc::clone(&state.observer), state.admin_token.clone());
    AxumRouter::new()
        .route("/v1/chat/completions", post(ingress::openai_chat))
        .route("/v1/messages", post(ingress::anthropic_messages))
        .route(
            "/v1/messages/count_tokens",
            post(ingress::anthropic_count_tokens),
        )
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*id}", get(get_model))
        .route("/healthz", get(healthz))
        .route(
            "/admin/chaos",
            post(crate::admin::inject)
                .get(crate::admin::list)
                .delete(crate::admin::clear_all),
        )
        .route("/admin/chaos/{id}", delete(crate::admin::clear_one))
        .with_state(state)
        .merge(observe)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(request_id))
}

/// Takes the caller's `x-request-id` when it is short and printable, otherwise makes
/// one; puts it in the request extensions and on the response (also as
/// `request-id` for Anthropic-format callers: Anthropic's header, which its SDK
/// shows as `_request_id`).
async fn request_id(mut req: Request, next: Next) -> Response {
    let anthropic = format_of(&req) == Format::Anthropic;
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(req).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        if anthropic {
            response.headers_mut().insert("request-id", value.clone());
        }
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// `GET /v1/models`: the routes, in the OpenAI list shape, or the Anthropic one when
/// the caller sends `anthropic-version` (as the Anthropic SDK does).
async fn list_models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let names = state.router.route_names();
    let anthropic = headers.contains_key("anthropic-version");
    let data: Vec<_> = names
        .iter()
        .map(|name| model_object(name, anthropic))
        .collect();
    if anthropic {
        return axum::Json(serde_json::json!({
            "data": data,
            "has_more": false,
            "first_id": names.first(),
            "last_id": names.last(),
        }))
        .into_response();
    }
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}` (the SDKs' `models.retrieve`): a route, or `provider/model`
/// with a configured provider, as the list shows it; else a 404 in the caller's format.
async fn get_model(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let anthropic = headers.contains_key("anthropic-version");
    // Asking builds nothing: a lookup must not create a target's state per name.
    if state.router.knows(&id) {
        return axum::Json(model_object(&id, anthropic)).into_response();
    }
    let err = bulwark_router::ResolveError::UnknownModel(id).to_gateway_error();
    let format = if anthropic {
        Format::Anthropic
    } else {
        Format::OpenAi
    };
    format.error_response(&err, None)
}

/// One model as each SDK's model type has it.
fn model_object(name: &str, anthropic: bool) -> serde_json::Value {
    if anthropic {
        serde_json::json!({
            "type": "model",
            "id": name,
            "display_name": name,
            "created_at": "1970-01-01T00:00:00Z",
        })
    } else {
        serde_json::json!({
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": "bulwark",
        })
    }
}

/// The caller's format as far as a request the endpoints did not take shows it:
/// Anthropic for its path or its SDK's `anthropic-version` header, OpenAI otherwise.
fn format_of(req: &Request) -> Format {
    if req.uri().path().starts_with("/v1/messages")
        || req.headers().contains_key("anthropic-version")
    {
        Format::Anthropic
    } else {
        Format::OpenAi
    }
}

async fn not_found(req: Request) -> Response {
    let err = bulwark_core::GatewayError::new(
        bulwark_core::ErrorKind::NotFound,
        format!("no such endpoint: {} {}", req.method(), req.uri().path()),
    );
    format_of(&req).error_response(&err, None)
}

/// A known path asked with another method (axum adds the `Allow` header).
async fn method_not_allowed(req: Request) -> Response {
    let err = bulwark_core::GatewayError::new(
        bulwark_core::ErrorKind::MethodNotAllowed,
        format!(
            "{} does not take {} requests",
            req.uri().path(),
            req.method()
        ),
    );
    format_of(&req).error_response(&err, None)
}
