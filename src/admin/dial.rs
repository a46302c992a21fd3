//! `POST /api/calls` `{"to","agent","trunk"?,"context"?}`: the relay calls `to` through a
//! trunk, and `agent` talks to whoever answers (docs/admin.md). The answer is 202 with the
//! call's id at once; the call shows among the live calls once answered. A call that is not
//! answered (busy, no answer, refused) is stored as an ended call with that outcome.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::warn;

use super::calls::parse_body;
use super::error::ApiError;
use super::AdminState;
use crate::booking::store::CallRecord;
use crate::sip::{Dial, DialError, DialOutcome};

/// The longest `context` taken.
const CONTEXT_MAX_CHARS: usize = 2_000;
/// The shortest and longest `ring_timeout_ms` taken.
const RING_MIN_MS: u64 = 5_000;
const RING_MAX_MS: u64 = 120_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DialBody {
    to: String,
    agent: String,
    #[serde(default)]
    trunk: Option<String>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    ring_timeout_ms: Option<u64>,
}

/// Places the call.
pub async fn place(
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b: DialBody = parse_body(
        body,
        "{\"to\": \"+12015550123\", \"agent\": \"receptionist\", \"context\": \"…\"}",
    )?;
    if b.context
        .as_ref()
        .is_some_and(|c| c.chars().count() > CONTEXT_MAX_CHARS)
    {
        return Err(ApiError::bad_request(
            "bad_body",
            format!("`context` is longer than {CONTEXT_MAX_CHARS} characters"),
        ));
    }
    if b.ring_timeout_ms
        .is_some_and(|ms| !(RING_MIN_MS..=RING_MAX_MS).contains(&ms))
    {
        return Err(ApiError::bad_request(
            "bad_body",
            format!("`ring_timeout_ms` must be {RING_MIN_MS}..={RING_MAX_MS}"),
        ));
    }
    if state.agents.get(&b.agent).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "agent_not_found",
            format!("no agent is named {:?}", b.agent),
        ));
    }
    let Some(dialer) = &state.dialer else {
        return Err(ApiError::unavailable(
            "no_dialer",
            "this relay places no calls (no SIP endpoint)",
        ));
    };
    let agent = b.agent.clone();
    let placed = dialer
        .dial(Dial {
            to: b.to,
            trunk: b.trunk,
            agent: b.agent,
            context: b.context,
            ring_timeout: b.ring_timeout_ms.map(std::time::Duration::from_millis),
        })
        .await
        .map_err(|e| match e {
            DialError::BadNumber => ApiError::bad_request("bad_number", e.to_string()),
            DialError::UnknownTrunk(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "trunk_not_found", e.to_string())
            }
            DialError::NoTrunk => {
                ApiError::new(StatusCode::CONFLICT, "no_outbound_trunk", e.to_string())
            }
            DialError::Busy => ApiError::unavailable("relay_busy", e.to_string()),
            DialError::NoPort => ApiError::unavailable("no_rtp_port", e.to_string()),
        })?;
    let answer = json!({
        "id": placed.id,
        "from": placed.from,
        "to": placed.to,
        "trunk": placed.trunk,
        "agent": agent,
        "state": "dialing",
    });
    // a call nobody answered is still a call the operator looks for
    let store = state.store.clone();
    let (id, from, to) = (placed.id, placed.from, placed.to);
    let started_at = Utc::now();
    tokio::spawn(async move {
        let outcome = match placed.outcome.await {
            Ok(o) => o,
            Err(e) => DialOutcome::Failed(e.to_string()),
        };
        if outcome == DialOutcome::Answered {
            return;
        }
        let Some(store) = store else {
            return;
        };
        let record = CallRecord::unanswered(
            id,
            from,
            to,
            agent,
            started_at,
            Utc::now(),
            outcome.as_str(),
        );
        if let Err(e) = store.insert_call(&record).await {
            warn!(error = %e, "the unanswered outbound call was not stored");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(answer)))
}
