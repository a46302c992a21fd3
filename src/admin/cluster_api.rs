//! The internal routes the relays of a cluster call on each other (`/cluster/v1/…`), signed
//! with the cluster secret instead of the admin token. Each acts on this relay's own calls
//! only (never forwarded again), so a request cannot loop between relays.
//!
//! | route | |
//! |---|---|
//! | `GET /cluster/v1/calls` | this relay's live calls |
//! | `GET /cluster/v1/calls/{id}` | one of its calls |
//! | `GET /cluster/v1/calls/{id}/events` · `GET /cluster/v1/events` | its events |
//! | `POST /cluster/v1/calls/{id}/hangup` · `interrupt` · `say` · `mute` | a control |
//!
//! Without `cluster.node_id` every one of them answers 404.

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tracing::debug;

use super::error::ApiError;
use super::{calls, cluster_view::tag, sse, AdminState};
use crate::bridge::registry::Control;
use crate::cluster::auth::{Request as Signed, HEADER};

/// The largest body a relay sends another (a `say` text).
const BODY_LIMIT: usize = 16 * 1024;

/// The internal routes, behind [`require_peer`].
pub fn router(state: AdminState) -> Router<AdminState> {
    Router::new()
        .route("/cluster/v1/calls", get(list))
        .route("/cluster/v1/calls/{id}", get(detail))
        .route("/cluster/v1/calls/{id}/events", get(sse::local_call_events))
        .route("/cluster/v1/events", get(sse::local_events))
        .route("/cluster/v1/calls/{id}/hangup", post(hangup))
        .route("/cluster/v1/calls/{id}/interrupt", post(interrupt))
        .route("/cluster/v1/calls/{id}/say", post(say))
        .route("/cluster/v1/calls/{id}/mute", post(mute))
        .route_layer(middleware::from_fn_with_state(state, require_peer))
}

/// Lets a request through when it is signed by a relay of this cluster for this relay;
/// 404 when this relay is not in a cluster, 401 otherwise.
async fn require_peer(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response();
    };
    let (parts, body) = req.into_parts();
    let Ok(body) = to_bytes(body, BODY_LIMIT).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "bad_body",
            "the request body is too large",
        )
        .into_response();
    };
    let header = parts.headers.get(HEADER).and_then(|v| v.to_str().ok());
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let signed = Signed {
        method: parts.method.as_str(),
        path,
        body: &body,
    };
    match cluster.verify(header, signed) {
        Ok(from) => {
            debug!(from = %from, path = %parts.uri.path(), "a request from another relay");
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Err(why) => {
            // counted, and logged at debug, not warn: anyone can send these, and a log line
            // each would let them flood the log
            state.metrics.cluster_requests_refused.inc();
            debug!(reason = %why, "refused an unsigned or wrongly signed cluster request");
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this route is for the relays of the cluster",
            )
            .into_response()
        }
    }
}

async fn list(State(state): State<AdminState>) -> Json<Value> {
    let mut v = json!({ "calls": state.registry.live() });
    tag(&mut v, state.node_id());
    Json(v)
}

async fn detail(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let detail = state
        .registry
        .get(&id)
        .ok_or_else(ApiError::call_not_found)?;
    let mut v = json!(detail);
    tag(&mut v, state.node_id());
    Ok(Json(v))
}

type Answer = Result<(StatusCode, Json<Value>), ApiError>;

async fn hangup(State(state): State<AdminState>, Path(id): Path<String>) -> Answer {
    calls::send(&state, &id, Control::Hangup, "hangup")
}

async fn interrupt(State(state): State<AdminState>, Path(id): Path<String>) -> Answer {
    calls::send(&state, &id, Control::Interrupt, "interrupt")
}

async fn say(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    calls::send(&state, &id, calls::say_control(body)?, "say")
}

async fn mute(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    calls::send(&state, &id, calls::mute_control(body)?, "mute")
}
