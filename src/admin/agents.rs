//! `GET /api/agents`: the agents a browser can talk to, for the `/talk` page's choice.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AdminState;

/// Every agent by name (sorted), with its description when it has one and which one is
/// `agents.default`. Nothing else of an agent (its prompt, tools or guardrails) is shown.
pub async fn list(State(state): State<AdminState>) -> Json<Value> {
    let agents: Vec<Value> = state
        .agents
        .names()
        .filter_map(|name| state.agents.get(name))
        .map(|a| {
            let mut v = json!({
                "name": a.name,
                "default": a.name == state.default_agent,
            });
            if !a.description().is_empty() {
                v["description"] = json!(a.description());
            }
            v
        })
        .collect();
    Json(Value::Array(agents))
}
