//! The route table: which paths exist and which of them need the token.

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use axum::{Extension, Router};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use super::access::AccessPolicy;

use super::error::ApiError;
use super::{
    agents, auth, bookings, calls, cluster_view, dashboard, dial, guard, health, openapi,
    recording, session, sse, talk, trunks, web_calls, web_recording, webhooks, AdminState,
};

/// Request bodies are small JSON objects.
const BODY_LIMIT: usize = 16 * 1024;

/// Every route. `/healthz`, `/readyz`, `/metrics` and the dashboard's and `/talk`'s static files are open
/// (probes and browsers cannot send a bearer token; the page holds no data); everything under
/// `/api` needs the token when one is set. Every route, the fallbacks included, is behind
/// the [`guard`] (`Host`, `Origin`, JSON POSTs, the request timeout).
pub fn router(state: AdminState, policy: Arc<AccessPolicy>, stop: CancellationToken) -> Router {
    let api = Router::new()
        .route("/api/calls", get(calls::list).post(dial::place))
        .route("/api/calls/web", post(web_calls::attach))
        .route("/api/calls/{id}", get(calls::get))
        .route("/api/calls/{id}/events", get(sse::call_events))
        .route("/api/calls/{id}/hangup", post(calls::hangup))
        .route("/api/calls/{id}/interrupt", post(calls::interrupt))
        .route("/api/calls/{id}/say", post(calls::say))
        .route("/api/calls/{id}/mute", post(calls::mute))
        .route(
            "/api/calls/{id}/recording",
            get(recording::get).put(web_recording::upload),
        )
        .route("/api/events", get(sse::all_events))
        .route("/api/bookings", get(bookings::list))
        .route("/api/trunks", get(trunks::list))
        .route("/api/webhooks/deliveries", get(webhooks::deliveries))
        .route("/api/reminders", get(super::reminders::list))
        .route("/api/cluster", get(cluster_view::relays))
        .route("/api/agents", get(agents::list))
        .route("/api/session", get(session::mint))
        .route("/api/openapi.json", get(openapi::document))
        .route_layer(middleware::from_fn_with_state(
            state.token.clone(),
            auth::require_token,
        ));
    let open = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/", get(dashboard::index))
        .route("/app.js", get(dashboard::script))
        .route("/style.css", get(dashboard::style))
        .route("/talk", get(talk::page))
        .route("/talk.js", get(talk::script))
        .route("/talk.css", get(talk::style))
        .route("/talk-recorder.js", get(talk::recorder));
    let cluster = super::cluster_api::router(state.clone());
    api.merge(open)
        .merge(cluster)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(Extension(stop))
        .layer(middleware::from_fn_with_state(policy, guard::guard))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
