//! The simulator's HTTP surface: `client_secrets`, `/calls`, hangup, the WebSocket upgrade,
//! `moderations` and `/sim/sessions`, with OpenAI's bearer auth and error shape.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::engine::{check_session, merge};
use super::error::OpenAiError;
use super::keys::{Lookup, Minted};
use super::scenario::HttpFault;
use super::sdp;
use super::state::{random_id, Endpoint, State};
use crate::openai::events::Session;

/// Largest request body (an SDP offer with a session is a few KiB).
const MAX_BODY: usize = 256 * 1024;
/// Largest WebSocket message (an append of 15 MiB plus framing gets an error event, not a drop).
pub(crate) const MAX_WS_MESSAGE: usize = 32 * 1024 * 1024;

/// What a valid key allows.
pub(crate) enum Caller {
    /// A server key (`sk-…` or the configured one).
    Server,
    /// An ephemeral key, with the session it was minted for.
    Ephemeral(Value),
}

/// Checks `Authorization: Bearer …` (or, for browsers' WebSockets, the
/// `openai-insecure-api-key.` subprotocol).
pub(crate) fn authorize(state: &State, headers: &HeaderMap) -> Result<Caller, OpenAiError> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let from_protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|p| p.trim().strip_prefix("openai-insecure-api-key."))
        });
    let Some(key) = from_header.or(from_protocol).filter(|k| !k.is_empty()) else {
        return Err(OpenAiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        ));
    };
    if key.starts_with("ek_") {
        let found = state.keys().lookup(key, state.key_now());
        return match found {
            Lookup::Valid(session) => Ok(Caller::Ephemeral(session)),
            Lookup::Expired => Err(OpenAiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
                "The ephemeral key has expired.",
            )),
            Lookup::Unknown => Err(unknown_key()),
        };
    }
    let server_ok = match &state.api_key {
        Some(expected) => expected.matches(key.as_bytes()),
        None => key.starts_with("sk-"),
    };
    if server_ok {
        Ok(Caller::Server)
    } else {
        Err(unknown_key())
    }
}

fn unknown_key() -> OpenAiError {
    // never echo the key back
    OpenAiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        Some("invalid_api_key"),
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
    )
}

/// The simulator's routes.
pub(crate) fn router(state: Arc<State>) -> Router {
    // OpenAI's API answers browsers on every /v1 route (see `cors`); /sim is ours alone
    let v1 = Router::new()
        .route("/v1/realtime/client_secrets", post(mint))
        .route("/v1/realtime/calls", post(calls))
        .route("/v1/realtime/calls/{id}/hangup", post(hangup))
        .route("/v1/realtime", get(websocket))
        .route("/v1/moderations", post(moderations))
        .route("/v1/responses", post(responses))
        .layer(super::cors::layer());
    Router::new()
        .merge(v1)
        .route("/sim/sessions", get(list_sessions))
        .route("/sim/sessions/{id}", get(one_session))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Applies a scenario's HTTP fault: an error answer, a hang, or a delay before going on.
async fn apply_fault(state: &State, which: Endpoint) -> Result<(), OpenAiError> {
    let Some(HttpFault {
        status,
        hang,
        delay_ms,
        ..
    }) = state.fault_for(which)
    else {
        return Ok(());
    };
    if hang {
        // never answer, but let the server shut down
        state.shutdown.cancelled().await;
        return Err(OpenAiError::from_status(503));
    }
    if let Some(ms) = delay_ms {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            _ = state.shutdown.cancelled() => return Err(OpenAiError::from_status(503)),
        }
    }
    match status {
        Some(s) => Err(OpenAiError::from_status(s)),
        None => Ok(()),
    }
}

fn parse_session(value: &Value, param_prefix: &str) -> Result<Value, OpenAiError> {
    let session: Session = serde_json::from_value(value.clone()).map_err(|e| {
        OpenAiError::bad_request(
            "invalid_value",
            format!("Invalid '{param_prefix}': {e}"),
            Some(param_prefix),
        )
    })?;
    check_session(&session).map_err(|(code, message, param)| {
        let mut e = OpenAiError::bad_request(code, message, None);
        e.param = param;
        e
    })?;
    Ok(value.clone())
}

async fn mint(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, OpenAiError> {
    match authorize(&state, &headers)? {
        Caller::Server => {}
        Caller::Ephemeral(_) => {
            return Err(OpenAiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
                "Ephemeral keys cannot mint keys; use a server key.",
            ))
        }
    }
    apply_fault(&state, Endpoint::Mint).await?;
    let req: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            OpenAiError::bad_request(
                "invalid_json",
                format!("We could not parse the JSON body of your request: {e}"),
                None,
            )
        })?
    };
    let ttl = match req.pointer("/expires_after/seconds") {
        None => 600,
        Some(v) => match v.as_i64() {
            Some(s) if (10..=7200).contains(&s) => s,
            _ => {
                return Err(OpenAiError::bad_request(
                    "invalid_value",
                    "Invalid 'expires_after.seconds': must be an integer between 10 and 7200.",
                    Some("expires_after.seconds"),
                ))
            }
        },
    };
    let session = match req.get("session") {
        Some(s) => parse_session(s, "session")?,
        None => json!({"type": "realtime"}),
    };
    let value = random_id("ek", 32);
    state
        .keys_minted
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let expires_at = state.key_now() + ttl;
    let mut shown = json!({
        "type": "realtime", "object": "realtime.session", "id": random_id("sess", 20),
        "model": "gpt-realtime", "output_modalities": ["audio"], "expires_at": 0,
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500, "create_response": true, "interrupt_response": true}},
                  "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1.0}},
        "tools": [], "tool_choice": "auto", "max_output_tokens": "inf"
    });
    merge(&mut shown, &session);
    state.keys().insert(
        value.clone(),
        Minted {
            expires_at,
            session: session.clone(),
        },
        state.key_now(),
    );
    Ok(Json(
        json!({"value": value, "expires_at": expires_at, "session": shown}),
    ))
}

/// The JSON body of a request that takes a server key (ephemeral keys are for the Realtime
/// API only, as at OpenAI).
fn server_key_json(state: &State, headers: &HeaderMap, body: &[u8]) -> Result<Value, OpenAiError> {
    if let Caller::Ephemeral(_) = authorize(state, headers)? {
        return Err(OpenAiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Ephemeral keys are for the Realtime API only; use a server key.",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        OpenAiError::bad_request(
            "invalid_json",
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        )
    })
}

async fn moderations(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, OpenAiError> {
    let req = server_key_json(&state, &headers, &body)?;
    let inputs: Vec<&str> = match req.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                OpenAiError::bad_request(
                    "invalid_value",
                    "Invalid 'input': the simulator takes a string or an array of strings.",
                    Some("input"),
                )
            })?,
        Some(_) => {
            return Err(OpenAiError::bad_request(
                "invalid_value",
                "Invalid 'input': expected a string or an array of strings.",
                Some("input"),
            ))
        }
        None => {
            return Err(OpenAiError::bad_request(
                "missing_required_parameter",
                "Missing required parameter: 'input'.",
                Some("input"),
            ))
        }
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("omni-moderation-latest");
    Ok(Json(super::moderation::answer(model, &inputs)))
}

/// `POST /v1/responses`: a server key, a model and an input; no streaming, no tools.
async fn responses(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, OpenAiError> {
    let req = server_key_json(&state, &headers, &body)?;
    let Some(model) = req.get("model").and_then(Value::as_str) else {
        return Err(OpenAiError::bad_request(
            "missing_required_parameter",
            "Missing required parameter: 'model'.",
            Some("model"),
        ));
    };
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(OpenAiError::bad_request(
            "unsupported_value",
            "The simulator does not stream responses.",
            Some("stream"),
        ));
    }
    let text = req
        .get("input")
        .and_then(super::responses::input_text)
        .ok_or_else(|| {
            OpenAiError::bad_request(
                "invalid_value",
                "Invalid 'input': expected a string or a list of input messages.",
                Some("input"),
            )
        })?;
    let instructions = req.get("instructions").and_then(Value::as_str);
    let now = chrono::Utc::now().timestamp();
    Ok(Json(super::responses::answer(
        model,
        instructions,
        &text,
        now,
    )))
}

async fn calls(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OpenAiError> {
    let caller = authorize(&state, &headers)?;
    apply_fault(&state, Endpoint::Calls).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut session = match caller {
        Caller::Ephemeral(s) => Some(s),
        Caller::Server => None,
    };
    let offer = if content_type.starts_with("application/sdp") {
        String::from_utf8(body.to_vec()).map_err(|_| {
            OpenAiError::bad_request("invalid_value", "The SDP offer is not UTF-8.", Some("sdp"))
        })?
    } else if content_type.starts_with("multipart/form-data") {
        let parts = sdp::parse_multipart(&content_type, &body).ok_or_else(|| {
            OpenAiError::bad_request("invalid_value", "Could not parse the multipart body.", None)
        })?;
        let mut offer = None;
        for part in parts {
            match part.name.as_str() {
                "sdp" => offer = String::from_utf8(part.body.to_vec()).ok(),
                "session" => {
                    let v: Value = serde_json::from_slice(part.body).map_err(|e| {
                        OpenAiError::bad_request(
                            "invalid_json",
                            format!("Invalid 'session' part: {e}"),
                            Some("session"),
                        )
                    })?;
                    let v = parse_session(&v, "session")?;
                    match &mut session {
                        Some(base) => merge(base, &v),
                        None => session = Some(v),
                    }
                }
                _ => {}
            }
        }
        offer.ok_or_else(|| {
            OpenAiError::bad_request(
                "missing_required_parameter",
                "Missing required parameter: 'sdp'.",
                Some("sdp"),
            )
        })?
    } else {
        return Err(OpenAiError::bad_request(
            "invalid_value",
            "Content-Type must be application/sdp or multipart/form-data.",
            None,
        ));
    };
    if !offer.trim_start().starts_with("v=0") || !offer.contains("m=") {
        return Err(OpenAiError::bad_request(
            "invalid_offer",
            "The SDP offer is not a valid session description.",
            Some("sdp"),
        ));
    }
    let (call_id, answer) = super::rtc::accept(state.clone(), &offer, session).await?;
    let mut resp = (StatusCode::CREATED, answer).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/realtime/calls/{call_id}")) {
        h.insert(header::LOCATION, loc);
    }
    Ok(resp)
}

async fn hangup(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, OpenAiError> {
    authorize(&state, &headers)?;
    let tx = state.calls.get(&id).map(|t| t.clone());
    match tx {
        Some(tx) => {
            let (closed_tx, closed) = tokio::sync::oneshot::channel();
            let _ = tx
                .send(super::state::RtcInput::Hangup(Some(closed_tx)))
                .await;
            // answered once the session is closed (or its task gone)
            let _ = closed.await;
            Ok(StatusCode::OK)
        }
        None => Err(OpenAiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("call_not_found"),
            format!("No call with id '{id}'."),
        )),
    }
}

async fn websocket(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Result<Response, OpenAiError> {
    if let Some(call_id) = query.get("call_id") {
        // the sideband of a live WebRTC call (`model`, if also given, is the call's already)
        return super::sideband::attach(state, &headers, call_id, ws).await;
    }
    let caller = authorize(&state, &headers)?;
    let initial = match caller {
        Caller::Ephemeral(s) => Some(s),
        Caller::Server => None,
    };
    let Some(model) = query.get("model").cloned() else {
        return Err(OpenAiError::bad_request(
            "missing_required_parameter",
            "Missing required parameter: 'model'.",
            Some("model"),
        ));
    };
    Ok(realtime_socket(ws)
        .on_upgrade(move |socket| super::ws::serve(state, socket, model, initial)))
}

/// A realtime WebSocket's settings, the same for the `?model=` transport and the sideband.
pub(crate) fn realtime_socket(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws
        // tungstenite's 128 KiB default buffers would dominate a session's memory
        .read_buffer_size(32 * 1024)
        .write_buffer_size(32 * 1024)
        .max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .protocols(["realtime"])
}

async fn list_sessions(AxState(state): AxState<Arc<State>>) -> Json<Value> {
    let sessions: Vec<Value> = state
        .record_ids()
        .iter()
        .filter_map(|id| state.records.get(id).map(|r| r.clone()))
        .map(|r| serde_json::to_value(r.snapshot()).unwrap_or(Value::Null))
        .collect();
    let minted = state.keys_minted.load(std::sync::atomic::Ordering::Relaxed);
    Json(json!({"object": "list", "data": sessions, "keys_minted": minted}))
}

async fn one_session(
    AxState(state): AxState<Arc<State>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, OpenAiError> {
    let record = state.records.get(&id).map(|r| r.clone());
    match record {
        Some(r) => Ok(Json(
            serde_json::to_value(r.snapshot()).unwrap_or(Value::Null),
        )),
        None => Err(OpenAiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("session_not_found"),
            format!("No session with id '{id}'."),
        )),
    }
}
