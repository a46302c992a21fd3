//! The simulator's errors in OpenAI's shape: `{"error":{"message","type","param","code"}}`.
//! A leaf: the HTTP handlers and the WebRTC calls both answer with it.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error answered in OpenAI's shape: `{"error":{"message","type","param","code"}}`.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {message}")]
pub(crate) struct OpenAiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub message: String,
    pub param: Option<String>,
}

impl OpenAiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
        }
    }

    pub(crate) fn bad_request(
        code: &'static str,
        message: impl Into<String>,
        param: Option<&str>,
    ) -> Self {
        Self {
            param: param.map(str::to_string),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some(code),
                message,
            )
        }
    }

    pub(crate) fn from_status(status: u16) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match status.as_u16() {
            429 => Self::new(
                status,
                "requests",
                Some("rate_limit_exceeded"),
                "Rate limit reached for requests. Please try again in 20ms.",
            ),
            401 => Self::new(
                status,
                "invalid_request_error",
                Some("invalid_api_key"),
                "Incorrect API key provided.",
            ),
            403 => Self::new(
                status,
                "invalid_request_error",
                Some("unsupported_country_region_territory"),
                "Country, region, or territory not supported.",
            ),
            s if s >= 500 => Self::new(
                status,
                "server_error",
                None,
                "The server had an error while processing your request. Sorry about that!",
            ),
            _ => Self::new(
                status,
                "invalid_request_error",
                None,
                "Simulated request failure.",
            ),
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}});
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert("retry-after-ms", HeaderValue::from_static("20"));
            resp.headers_mut().insert(
                "x-ratelimit-remaining-requests",
                HeaderValue::from_static("0"),
            );
        }
        resp
    }
}
