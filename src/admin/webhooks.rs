//! `GET /api/webhooks/deliveries?status=&call=&limit=`: the webhook delivery log, newest
//! first, of every relay sharing the database. The bodies are not listed.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::warn;

use super::error::ApiError;
use super::AdminState;
use crate::booking::store::{DeliveryFilter, DeliveryStatus};

/// The most deliveries one answer lists.
const MAX_LIMIT: u32 = 500;

/// The query of `GET /api/webhooks/deliveries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    status: Option<String>,
    call: Option<String>,
    limit: Option<u32>,
}

/// The delivery log.
pub async fn deliveries(
    State(state): State<AdminState>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "bad_query",
            "the parameters are `status` (pending, delivered or failed), `call` (a call id) and `limit` (1..=500)",
        )
    };
    let Query(q) = query.map_err(|_| bad())?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(bad)?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) || q.call.as_ref().is_some_and(|c| c.len() > 200) {
        return Err(bad());
    }
    let Some(store) = &state.store else {
        return Err(ApiError::unavailable(
            "database_unavailable",
            "the database is not available",
        ));
    };
    let filter = DeliveryFilter {
        status,
        call_id: q.call,
    };
    match store.list_deliveries(&filter, limit).await {
        Ok(list) => Ok(Json(json!({ "deliveries": list }))),
        Err(e) => {
            warn!(error = %e, "reading webhook deliveries failed");
            Err(ApiError::unavailable(
                "database_error",
                "the deliveries could not be read from the database",
            ))
        }
    }
}
