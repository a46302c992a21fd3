//! The OpenAPI 3.1 description of the admin API, served at `/api/openapi.json`. It is a file
//! kept beside the routes; the API tests validate every answer against it.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The document's text.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /api/openapi.json`.
pub async fn document() -> Response {
    let mut resp = DOCUMENT.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_json() {
        let v: serde_json::Value = serde_json::from_str(super::DOCUMENT).unwrap();
        assert!(v["openapi"].as_str().unwrap().starts_with("3.1"));
    }
}
