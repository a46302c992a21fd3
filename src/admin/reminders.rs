//! `GET /api/reminders?status=&limit=`: the reminder calls (`[reminders]`) of every relay
//! sharing the database, the latest appointments first.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::warn;

use super::error::ApiError;
use super::AdminState;
use crate::booking::store::ReminderStatus;

/// The most reminders one answer lists.
const MAX_LIMIT: u32 = 500;

/// The query of `GET /api/reminders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemindersQuery {
    status: Option<String>,
    limit: Option<u32>,
}

/// The reminders.
pub async fn list(
    State(state): State<AdminState>,
    query: Result<Query<RemindersQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "bad_query",
            "the parameters are `status` (pending, calling, done or skipped) and `limit` (1..=500)",
        )
    };
    let Query(q) = query.map_err(|_| bad())?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(ReminderStatus::parse(s).ok_or_else(bad)?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad());
    }
    let Some(store) = &state.store else {
        return Err(ApiError::unavailable(
            "database_unavailable",
            "the database is not available",
        ));
    };
    match store.list_reminders(status, limit).await {
        Ok(list) => Ok(Json(json!({ "reminders": list }))),
        Err(e) => {
            warn!(error = %e, "reading reminders failed");
            Err(ApiError::unavailable(
                "database_error",
                "the reminders could not be read from the database",
            ))
        }
    }
}
