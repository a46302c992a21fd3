//! The middleware in front of every route: applies the [`AccessPolicy`], answers CORS
//! preflights for listed origins, and bounds how long a request may take to be handled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::access::{AccessPolicy, Verdict, CORS_ROUTE};
use super::error::ApiError;

/// A request whose handler has not answered in this long gets 408 (a body trickled in, or a
/// slow upstream): long enough for a key to be minted, short enough to free the connection.
/// Streams (the event routes) answer at once and are not bounded by this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: &str = "600";

/// The addresses of the connection a request came on (set by the server's accept loop).
#[derive(Debug, Clone, Copy)]
pub struct ConnAddrs {
    /// Where the connection arrived (this server's address).
    pub local: SocketAddr,
}

/// Applies the policy, then runs the route with [`REQUEST_TIMEOUT`].
pub async fn guard(State(policy): State<Arc<AccessPolicy>>, req: Request, next: Next) -> Response {
    let local_ip = req.extensions().get::<ConnAddrs>().map(|c| c.local.ip());
    let verdict = policy.decide(req.method(), req.uri(), req.headers(), local_ip);
    let cors_route = req.uri().path() == CORS_ROUTE;
    let mut resp = match verdict {
        Verdict::Refuse(e) => e.into_response(),
        Verdict::Preflight { allow_origin } => preflight(allow_origin),
        Verdict::Pass { allow_origin } => {
            let mut resp = match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
                Ok(resp) => resp,
                Err(_) => ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request was not handled in time",
                )
                .into_response(),
            };
            if let Some(o) = allow_origin {
                resp.headers_mut()
                    .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            }
            resp
        }
    };
    if cors_route {
        // the answer depends on the Origin: no shared cache may give one origin's to another
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static("origin"));
    }
    resp
}

fn preflight(origin: HeaderValue) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    resp
}
