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
pub struct RequestId {
    /// Bulwark's own, unique (the journal's key).
    pub id: String,
    /// The caller's own id for it ([`caller_request_id`]), read once here.
    pub caller: Option<String>,
}

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

/// Gives every request an id of its own, the journal's key: on the response as
/// `x-request-id` (and `request-id` for Anthropic-format callers: Anthropic's header,
/// which its SDK shows as `_request_id`), as OpenAI and Anthropic give theirs. A
/// caller's own id ([`caller_request_id`]) is never that key: two requests sent with
/// the same one would be one journal entry. It is echoed as `x-client-request-id`
/// (OpenAI's header for it) and kept in the journal beside the request.
async fn request_id(mut req: Request, next: Next) -> Response {
    let anthropic = format_of(&req) == Format::Anthropic;
    let caller = caller_request_id(req.headers());
    let id = uuid::Uuid::now_v7().simple().to_string();
    req.extensions_mut().insert(RequestId {
        id: id.clone(),
        caller: caller.clone(),
    });
    let mut response = next.run(req).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        if anthropic {
            response.headers_mut().insert("request-id", value.clone());
        }
        response.headers_mut().insert("x-request-id", value);
    }
    if let Some(value) = caller.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert("x-client-request-id", value);
    }
    response
}

/// The caller's own id for a request: `x-client-request-id` (OpenAI's header for
/// it) or `x-request-id`, when short (≤ 128) and printable.
pub fn caller_request_id(headers: &HeaderMap) -> Option<String> {
    ["x-client-request-id", "x-request-id"]
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok())
        .find(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// `GET /v1/models`: the routes, in the OpenAI list shape, or the Anthropic one when
/// the caller sends `anthropic-version` (as the Anthropic SDK does), paged as
/// Anthropic pages it (`limit`, `after_id`, `before_id`).
async fn list_models(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let names = state.router.route_names();
    if headers.contains_key("anthropic-version") {
        return match anthropic_model_page(names, query.as_deref().unwrap_or("")) {
            Ok(page) => axum::Json(page).into_response(),
            Err(err) => Format::Anthropic.error_response(&err, None),
        };
    }
    let data: Vec<_> = names.iter().map(|name| model_object(name, false)).collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

/// One page of the Anthropic models list: `limit` (1–1000, default 20) models after
/// `after_id` or before `before_id` (the routes in config order), with `has_more`
/// and the page's `first_id` / `last_id`.
fn anthropic_model_page(
    names: &[String],
    query: &str,
) -> Result<serde_json::Value, bulwark_core::GatewayError> {
    let (mut limit, mut after, mut before) = (20usize, None, None);
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        bulwark_core::GatewayError::invalid_param(
                            "limit",
                            format!("limit: Input should be a whole number from 1 to 1000, not {value:?}"),
                        )
                    })?;
            }
            "after_id" => after = Some(value.into_owned()),
            "before_id" => before = Some(value.into_owned()),
            _ => {}
        }
    }
    let at = |id: &str| names.iter().position(|n| n == id);
    let (start, end, has_more) = match (after, before) {
        (Some(_), Some(_)) => {
            return Err(bulwark_core::GatewayError::invalid(
                "after_id and before_id cannot be given together",
            ));
        }
        (None, Some(before)) => {
            let end = at(&before).unwrap_or(0);
            let start = end.saturating_sub(limit);
            (start, end, start > 0)
        }
        (after, None) => {
            let start = after
                .as_deref()
                .map_or(0, |id| at(id).map_or(names.len(), |i| i + 1));
            let end = start.saturating_add(limit).min(names.len());
            (start, end, end < names.len())
        }
    };
    let page = &names[start..end];
    Ok(serde_json::json!({
        "data": page.iter().map(|n| model_object(n, true)).collect::<Vec<_>>(),
        "has_more": has_more,
        "first_id": page.first(),
        "last_id": page.last(),
    }))
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

#[cfg(test)]
mod model_page_tests {
    use super::anthropic_model_page;

    fn ids(page: &serde_json::Value) -> Vec<&str> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn the_anthropic_list_pages_by_limit_and_cursor() {
        let names: Vec<String> = ["r1", "r2", "r3"].map(String::from).to_vec();
        let all = anthropic_model_page(&names, "").unwrap();
        assert_eq!(ids(&all), ["r1", "r2", "r3"]);
        assert_eq!(all["has_more"], false);

        let first = anthropic_model_page(&names, "limit=1").unwrap();
        assert_eq!(ids(&first), ["r1"]);
        assert_eq!(
            (first["has_more"].clone(), first["last_id"].clone()),
            (true.into(), "r1".into())
        );
        let next = anthropic_model_page(&names, "limit=2&after_id=r1").unwrap();
        assert_eq!(ids(&next), ["r2", "r3"]);
        assert_eq!(next["has_more"], false);
        let back = anthropic_model_page(&names, "limit=1&before_id=r3").unwrap();
        assert_eq!(ids(&back), ["r2"]);
        assert_eq!(back["has_more"], true);
        let past = anthropic_model_page(&names, "after_id=r3").unwrap();
        assert!(ids(&past).is_empty());
        assert!(past["first_id"].is_null());

        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "after_id=r1&before_id=r3",
        ] {
            assert!(anthropic_model_page(&names, bad).is_err(), "{bad}");
        }
    }
}
