//! How the simulator answers browsers (CORS) on `/v1`, as OpenAI's API does.
//!
//! OpenAI's API answers cross-origin requests from any page: a browser holding an ephemeral key
//! posts its SDP offer to `/v1/realtime/calls` itself, and the Agents SDK reads the call id from
//! the answer's `Location`. CORS is not what keeps the server key on the server: the key is.
//! Endpoints that need a server key (`client_secrets`, `moderations`, the sideband WebSocket)
//! refuse an ephemeral key with 401 whoever calls them, and a page cannot hold a server key
//! without leaking it. So the policy is one for all of `/v1`, the way OpenAI's host answers:
//!
//! - any origin (`Access-Control-Allow-Origin: *`), never credentials (no cookies are involved:
//!   the key travels in `Authorization`);
//! - preflights answered 200 with the methods the API has and an explicit list of request
//!   headers: the ones OpenAI's own browser clients send (the Agents SDK's
//!   `X-OpenAI-Agents-SDK`, the openai-node SDK's `OpenAI-Beta` and `X-Stainless-*`), not a
//!   reflection of whatever the page asks, since OpenAI refuses headers outside its list (an
//!   `originator` header fails its preflight);
//! - `Location` exposed, so that a page can read the call id;
//! - preflights cached for a day (a browser caps that: Chromium at two hours).
//!
//! `/sim/*` (the test inspection routes) is not OpenAI's and answers no browser.

use std::time::Duration;

use axum::http::{header, HeaderName, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Request headers a page may send to `/v1` (lowercase; the browser compares without case).
pub const ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "openai-beta",
    "openai-organization",
    "openai-project",
    "x-openai-agents-sdk",
    "x-stainless-arch",
    "x-stainless-async",
    "x-stainless-custom-poll-interval",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-poll-helper",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
];

/// How long a browser may reuse a preflight's answer.
pub const MAX_AGE: Duration = Duration::from_secs(86_400);

/// The layer for the `/v1` routes.
pub fn layer() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers(
            ALLOWED_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect::<Vec<_>>(),
        )
        .expose_headers([header::LOCATION])
        .max_age(MAX_AGE)
}
