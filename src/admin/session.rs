//! `GET /api/session[?agent=NAME]`: an ephemeral Realtime key for a browser client, minted
//! with the server's key and that agent's session (the default agent's without `agent`). The
//! ephemeral key is the answer; the server key never leaves the process. A key carries its
//! agent's session only, and the relay remembers which agent it was for: a browser call
//! attached with it (`POST /api/calls/web`) runs that agent's tools.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::warn;

use super::error::ApiError;
use super::AdminState;
use crate::bridge::web_call::WebCallError;
use crate::openai::keys::MintError;

/// `?agent=` of `GET /api/session`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    agent: Option<String>,
}

/// Mints a key; answers OpenAI's `client_secrets` shape `{"value","expires_at","session"}`.
pub async fn mint(
    State(state): State<AdminState>,
    query: Result<Query<SessionQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(SessionQuery { agent }) = query.map_err(|_| {
        ApiError::bad_request(
            "bad_query",
            "the only parameter is `agent` (an agent's name)",
        )
    })?;
    let minted = match (&state.web, &state.minter) {
        (Some(web), _) => web.mint(agent.as_deref()).await.map_err(|e| match e {
            WebCallError::NoSuchAgent(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                "agent_not_found",
                "no agent has that name (GET /api/agents lists them)",
            ),
            WebCallError::Mint(e) => mint_error(e),
            e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }),
        (None, Some(minter)) if agent.is_none() => {
            minter.mint(&state.session).await.map_err(mint_error)
        }
        _ => Err(ApiError::unavailable(
            "no_api_key",
            "OPENAI_API_KEY is not set, so no ephemeral key can be minted",
        )),
    };
    let key = minted?;
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

/// A failed mint in the API's shape.
fn mint_error(e: MintError) -> ApiError {
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
}
