//! `GET /api/bookings?date=YYYY-MM-DD`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::warn;

use super::error::ApiError;
use super::AdminState;

/// `?date=` of `GET /api/bookings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookingsQuery {
    date: Option<String>,
}

/// Every booking on a date (active and cancelled, by time); without `date`, today on the
/// server's clock (the dashboard always sends the date it shows).
pub async fn list(
    State(state): State<AdminState>,
    query: Result<Query<BookingsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|_| {
        ApiError::bad_request("bad_query", "the only parameter is `date` (YYYY-MM-DD)")
    })?;
    let date = match q.date.as_deref() {
        None => chrono::Local::now().date_naive(),
        Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
            ApiError::bad_request("bad_date", "`date` must be a date as YYYY-MM-DD")
        })?,
    };
    let Some(store) = &state.store else {
        return Err(ApiError::unavailable(
            "bookings_unavailable",
            "the booking database is not available",
        ));
    };
    match store.bookings_on(date).await {
        Ok(bookings) => Ok(Json(json!({"date": date, "bookings": bookings}))),
        Err(e) => {
            warn!(error = %e, "reading bookings failed");
            Err(ApiError::unavailable(
                "database_error",
                "the bookings could not be read from the database",
            ))
        }
    }
}
