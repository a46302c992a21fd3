//! `POST /api/calls/web` `{"call_id":"rtc_…","client_secret":"ek_…"}`: a browser that
//! opened a WebRTC call to the realtime service with a key from `GET /api/session` hands the
//! relay the call; the relay attaches over the sideband and runs it with the agent the key
//! was minted for (201 `{"id": …}`, the relay's call id, once the session is configured).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

use super::error::ApiError;
use super::AdminState;
use crate::bridge::web_call::WebCallError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachBody {
    call_id: String,
    client_secret: String,
}

/// Attaches the relay to a browser's call.
pub async fn attach(
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(web) = &state.web else {
        return Err(ApiError::unavailable(
            "no_api_key",
            "OPENAI_API_KEY is not set, so the relay runs no browser calls",
        ));
    };
    let bytes = body
        .map_err(|e| ApiError::new(e.status(), "bad_body", "the request body could not be read"))?;
    // no `Debug` of the body anywhere: it holds a key
    let AttachBody {
        call_id,
        client_secret,
    } = serde_json::from_slice(&bytes).map_err(|_| {
        ApiError::bad_request(
            "bad_body",
            "the body must be JSON like {\"call_id\": \"rtc_…\", \"client_secret\": \"ek_…\"}",
        )
    })?;
    match web.attach(&call_id, &client_secret).await {
        Ok(id) => {
            info!(call = %id, "a browser call attached");
            Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
        }
        Err(e) => Err(match e {
            WebCallError::BadCallId => ApiError::bad_request("bad_call_id", e.to_string()),
            WebCallError::UnknownKey => {
                ApiError::new(StatusCode::FORBIDDEN, "unknown_key", e.to_string())
            }
            WebCallError::AlreadyAttached => {
                ApiError::new(StatusCode::CONFLICT, "already_attached", e.to_string())
            }
            WebCallError::Full => ApiError::unavailable("too_many_web_calls", e.to_string()),
            WebCallError::NoSuchCall { .. } => ApiError::new(
                StatusCode::NOT_FOUND,
                "realtime_call_not_found",
                e.to_string(),
            ),
            WebCallError::NoSuchAgent(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "agent_not_found", e.to_string())
            }
            WebCallError::Mint(_) | WebCallError::Attach(_) => {
                tracing::warn!(error = %e, "attaching to a browser call failed");
                ApiError::new(StatusCode::BAD_GATEWAY, "upstream_error", e.to_string())
            }
        }),
    }
}
