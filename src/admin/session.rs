//! `GET /api/session`: an ephemeral Realtime key for a browser client, minted with the
//! server's key and the default agent's session. The ephemeral key is the answer; the server
//! key never leaves the process.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::warn;

use super::error::ApiError;
use super::AdminState;
use crate::openai::keys::MintError;

/// Mints a key; answers OpenAI's `client_secrets` shape `{"value","expires_at","session"}`.
pub async fn mint(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let Some(minter) = &state.minter else {
        return Err(ApiError::unavailable(
            "no_api_key",
            "OPENAI_API_KEY is not set, so no ephemeral key can be minted",
        ));
    };
    let key = minter.mint(&state.session).await.map_err(|e| {
        // MintError's messages never contain a key (see openai::keys)
        warn!(error = %e, "minting an ephemeral key for the admin API failed");
        let (status, code) = match &e {
            MintError::Deadline { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            MintError::Unauthorized { .. } | MintError::Forbidden { .. } => {
                (StatusCode::BAD_GATEWAY, "upstream_refused_key")
            }
            MintError::Rejected { .. } | MintError::BadAnswer(_) => {
                (StatusCode::BAD_GATEWAY, "upstream_error")
            }
        };
        ApiError::new(status, code, e.to_string())
    })?;
    let body = json!({
        "value": key.value.expose(),
        "expires_at": key.expires_at,
        "session": key.session,
    });
    let mut resp = Json(body).into_response();
    // a credential: no cache may keep it
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
