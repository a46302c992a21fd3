//! `GET /api/trunks`: each trunk's registration to its registrar, as last seen.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AdminState;

/// The registering trunks, by name.
pub async fn list(State(state): State<AdminState>) -> Json<Value> {
    let mut trunks: Vec<Value> = state
        .trunks
        .iter()
        .map(|e| {
            let s = e.value();
            json!({
                "name": e.key(),
                "registered": s.registered,
                "last_status": s.last_status,
                "failures": s.failures,
                "successes": s.successes,
                "since": s.since,
            })
        })
        .collect();
    trunks.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Json(json!({ "trunks": trunks }))
}
