//! `/api/calls…`: live and ended calls, one call's detail, and the operator's controls.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::warn;

use super::cluster_view::{forwardable, tag};
use super::error::ApiError;
use super::AdminState;
use crate::booking::store::CallRecord;
use crate::bridge::registry::{
    CallState, CallSummary, Control, ControlError, MediaStats, ENDED_KEPT,
};
use crate::cluster::peers::PREFIX;

/// The longest text an operator may give the agent with `say`.
const SAY_MAX_CHARS: usize = 2_000;
/// Ids longer than this are not looked up (no call has one).
const ID_MAX_LEN: usize = 128;

/// `?state=` of `GET /api/calls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
}

/// `GET /api/calls[?state=live|ended]`.
pub async fn list(
    State(state): State<AdminState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|_| {
        ApiError::bad_request("bad_query", "the only parameter is `state` (live or ended)")
    })?;
    match q.state.as_deref() {
        None | Some("live") => match &state.cluster {
            Some(cluster) => Ok(Json(super::cluster_view::live_calls(&state, cluster).await)),
            None => Ok(Json(json!({ "calls": state.registry.live() }))),
        },
        Some("ended") => Ok(Json(json!({ "calls": ended(&state).await }))),
        Some(_) => Err(ApiError::bad_request(
            "bad_query",
            "`state` is `live` or `ended`",
        )),
    }
}

/// Recently ended calls, newest first: the registry's, then stored records it no longer has;
/// in a cluster each with the `node` that ran it (the stored records are every relay's).
async fn ended(state: &AdminState) -> Vec<Value> {
    let mut calls: Vec<(CallSummary, Option<String>)> = state
        .registry
        .ended()
        .into_iter()
        .map(|c| (c, state.node_id().map(str::to_string)))
        .collect();
    if let Some(store) = &state.store {
        match store.list_calls(ENDED_KEPT as u32).await {
            Ok(records) => {
                let known: HashSet<String> = calls.iter().map(|(c, _)| c.id.clone()).collect();
                calls.extend(
                    records
                        .iter()
                        .filter(|r| !known.contains(&r.id))
                        .map(|r| (record_summary(r), r.node.clone())),
                );
            }
            Err(e) => warn!(error = %e, "listing stored calls failed; showing recent ones only"),
        }
    }
    calls.sort_by(|(a, _), (b, _)| b.started_at.cmp(&a.started_at).then(a.id.cmp(&b.id)));
    calls.truncate(ENDED_KEPT);
    calls
        .into_iter()
        .map(|(c, node)| {
            let mut v = json!(c);
            tag(&mut v, node.as_deref());
            v
        })
        .collect()
}

/// The stored record of call `id`: 404 without a database or such a record, 503 when the
/// database cannot be read.
pub(super) async fn stored_call(state: &AdminState, id: &str) -> Result<CallRecord, ApiError> {
    let Some(store) = &state.store else {
        return Err(ApiError::call_not_found());
    };
    match store.get_call(id).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(ApiError::call_not_found()),
        Err(e) => {
            warn!(error = %e, "reading a stored call failed");
            Err(ApiError::unavailable(
                "database_error",
                "the call history could not be read from the database",
            ))
        }
    }
}

/// `GET /api/calls/{id}`: a live or recent call from the registry, else a stored record.
pub async fn get(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if id.len() > ID_MAX_LEN {
        return Err(ApiError::call_not_found());
    }
    if let Some(detail) = state.registry.get(&id) {
        let mut v = json!(detail);
        tag(&mut v, state.node_id());
        return Ok(Json(v));
    }
    if let Some(cluster) = state.cluster.as_ref().filter(|_| forwardable(&id)) {
        let path = format!("{PREFIX}/calls/{id}");
        if let Some(answer) =
            super::cluster_view::from_owner(cluster, Method::GET, &path, Bytes::new()).await?
        {
            return Ok(Json(answer));
        }
    }
    let record = stored_call(&state, &id).await?;
    Ok(Json(record_detail(&record)))
}

/// The short form of a stored call.
fn record_summary(r: &CallRecord) -> CallSummary {
    CallSummary {
        id: r.id.clone(),
        from: r.caller.clone(),
        to: r.callee.clone(),
        agent: r.agent.clone(),
        kind: r.kind,
        state: CallState::Ended,
        started_at: r.started_at,
        answered_at: r.answered_at,
        ended_at: r.ended_at,
        end_reason: Some(r.outcome.clone()),
        muted: false,
        turns: r.transcript.as_array().map_or(0, Vec::len),
    }
}

/// A stored call in the shape of a live call's detail (what the record does not keep is
/// empty: no trunk, no media counters).
fn record_detail(r: &CallRecord) -> Value {
    let list = |v: &Value| match v {
        Value::Array(_) => v.clone(),
        _ => Value::Array(Vec::new()),
    };
    let mut v = json!({
        "id": r.id,
        "from": r.caller,
        "to": r.callee,
        "agent": r.agent,
        "kind": r.kind,
        "trunk": null,
        "transport": "unknown",
        "state": CallState::Ended,
        "started_at": r.started_at,
        "answered_at": r.answered_at,
        "ended_at": r.ended_at,
        "end_reason": r.outcome,
        "muted": false,
        "session_id": null,
        "transcript": list(&r.transcript),
        "tool_calls": list(&r.tool_calls),
        "media": MediaStats::default(),
        "recording": r.recording,
    });
    if let Some(by) = &r.answered_by {
        v["answered_by"] = json!(by);
    }
    tag(&mut v, r.node.as_deref());
    v
}

/// `POST /api/calls/{id}/hangup`.
pub async fn hangup(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    control(&state, &id, Control::Hangup, "hangup").await
}

/// `POST /api/calls/{id}/interrupt`.
pub async fn interrupt(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    control(&state, &id, Control::Interrupt, "interrupt").await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SayBody {
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteBody {
    muted: bool,
}

/// `POST /api/calls/{id}/say` `{"text": "…"}`.
pub async fn say(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    control(&state, &id, say_control(body)?, "say").await
}

/// `POST /api/calls/{id}/mute` `{"muted": true|false}`.
pub async fn mute(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    control(&state, &id, mute_control(body)?, "mute").await
}

/// The control a `say` body asks for.
pub(super) fn say_control(body: Result<Bytes, BytesRejection>) -> Result<Control, ApiError> {
    let SayBody { text } = parse_body(body, "{\"text\": \"…\"}")?;
    let text = text.trim();
    if text.is_empty() {
        return Err(ApiError::bad_request("bad_body", "`text` is empty"));
    }
    if text.chars().count() > SAY_MAX_CHARS {
        return Err(ApiError::bad_request(
            "bad_body",
            format!("`text` is longer than {SAY_MAX_CHARS} characters"),
        ));
    }
    Ok(Control::Say(text.to_string()))
}

/// The control a `mute` body asks for.
pub(super) fn mute_control(body: Result<Bytes, BytesRejection>) -> Result<Control, ApiError> {
    let MuteBody { muted } = parse_body(body, "{\"muted\": true}")?;
    Ok(Control::Mute(muted))
}

/// A JSON body (the guard has already refused other content types); errors in our shape.
pub(super) fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    example: &str,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        ApiError::new(
            e.status(),
            "bad_body",
            "the request body could not be read (at most 16 KiB)",
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!("the body must be JSON like {example}: {e}"),
        )
    })
}

/// The operator's control of call `id`: sent to the call's task when the call is this
/// relay's, else (in a cluster) forwarded to the relay that has it, whose answer is passed on.
async fn control(
    state: &AdminState,
    id: &str,
    control: Control,
    action: &'static str,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    match (send(state, id, control.clone(), action), &state.cluster) {
        (Err(e), Some(cluster)) if e.status == StatusCode::NOT_FOUND && forwardable(id) => {
            let path = format!("{PREFIX}/calls/{id}/{action}");
            let body = Bytes::from(control_body(&control).to_string());
            match super::cluster_view::answer_from_owner(cluster, Method::POST, &path, body).await?
            {
                Some((status, v)) => Ok((status, Json(v))),
                None => Err(e),
            }
        }
        (result, _) => result,
    }
}

/// The JSON body of a control as the internal route takes it.
fn control_body(control: &Control) -> Value {
    match control {
        Control::Say(text) => json!({ "text": text }),
        Control::Mute(muted) => json!({ "muted": muted }),
        _ => json!({}),
    }
}

/// Sends a control to a call of this relay.
pub(super) fn send(
    state: &AdminState,
    id: &str,
    control: Control,
    action: &'static str,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if id.len() > ID_MAX_LEN {
        return Err(ApiError::call_not_found());
    }
    match state.registry.control(id, control) {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"call_id": id, "action": action, "status": "accepted"})),
        )),
        Err(ControlError::NotFound) => Err(ApiError::call_not_found()),
        Err(ControlError::Ended) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "call_ended",
            "the call has ended",
        )),
        Err(ControlError::NotSupported) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_supported",
            "this call cannot take that control: the echo line test has no model to interrupt or speak to (hang up and mute work); a browser's call has its microphone in the browser (hang up, interrupt and say work)",
        )),
        Err(ControlError::Busy) => Err(ApiError::unavailable(
            "call_busy",
            "the call has too many requests queued; try again",
        )),
    }
}
