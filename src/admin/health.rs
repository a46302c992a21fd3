//! `/healthz`, `/readyz` and `/metrics`: the routes that monitoring reaches without a token.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::ApiError;
use super::AdminState;

/// A database that does not answer a ping in this long counts as down.
const DB_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The media type of prometheus-client's text encoding (OpenMetrics 1.0).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// 200 while the process serves.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when SIP, media and the database are up; 503 while draining or when a part is down.
pub async fn readyz(State(state): State<AdminState>) -> Result<Json<serde_json::Value>, ApiError> {
    let r = (state.readiness)();
    if r.draining {
        return Err(ApiError::unavailable(
            "draining",
            "the relay is draining for a shutdown and takes no new calls",
        ));
    }
    let database = match &state.store {
        Some(store) => matches!(
            tokio::time::timeout(DB_PING_TIMEOUT, store.ping()).await,
            Ok(Ok(()))
        ),
        None => false,
    };
    let down: Vec<&str> = [("sip", r.sip), ("media", r.media), ("database", database)]
        .into_iter()
        .filter(|(_, up)| !up)
        .map(|(name, _)| name)
        .collect();
    if down.is_empty() {
        Ok(Json(
            json!({"status": "ready", "checks": {"sip": true, "media": true, "database": true}}),
        ))
    } else {
        Err(ApiError::unavailable(
            "not_ready",
            format!("not ready: {} down", down.join(", ")),
        ))
    }
}

/// The Prometheus metrics as text.
pub async fn metrics(State(state): State<AdminState>) -> Response {
    // the registry is the truth about live calls, whatever the call tasks have counted
    let live = i64::try_from(state.registry.live_count()).unwrap_or(i64::MAX);
    state.metrics.calls_active.set(live);
    for t in state.trunks.iter() {
        state
            .metrics
            .trunk_registered
            .get_or_create(&crate::metrics::TrunkLabel {
                trunk: t.key().clone(),
            })
            .set(i64::from(t.value().registered));
    }
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    resp
}
