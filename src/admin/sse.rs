//! Live events as Server-Sent Events: one call's (`/api/calls/{id}/events`) or every call's
//! (`/api/events`).
//!
//! Each stream reads its own receiver of the registry's broadcast channel, which never waits
//! for a reader: a client that falls [`crate::bridge::registry::EVENT_BUFFER`] events behind
//! is sent a last `dropped` event and its stream ends. A call never waits for a browser.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use chrono::Utc;
use futures::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::error::ApiError;
use super::AdminState;
use crate::bridge::registry::{CallEvent, CallState, Envelope};

/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /api/calls/{id}/events`: a `snapshot` of the call, then its events until it ends.
pub async fn call_events(
    State(state): State<AdminState>,
    Extension(stop): Extension<CancellationToken>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // subscribe before the snapshot, so nothing falls between the two
    let rx = state.registry.subscribe();
    let detail = state
        .registry
        .get(&id)
        .ok_or_else(ApiError::call_not_found)?;
    let over = detail.state == CallState::Ended;
    let first = named(
        "snapshot",
        &json!({"type": "snapshot", "call_id": id, "at": Utc::now(), "call": detail}),
    );
    let feed = Feed {
        rx,
        only: Some(id),
        done: over,
    };
    Ok(sse(first, feed, stop))
}

/// `GET /api/events`: a `snapshot` of the live calls, then every call's events.
pub async fn all_events(
    State(state): State<AdminState>,
    Extension(stop): Extension<CancellationToken>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.registry.subscribe();
    let first = named(
        "snapshot",
        &json!({"type": "snapshot", "at": Utc::now(), "calls": state.registry.live()}),
    );
    let feed = Feed {
        rx,
        only: None,
        done: false,
    };
    sse(first, feed, stop)
}

fn sse(
    first: Event,
    feed: Feed,
    stop: CancellationToken,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rest = stream::unfold(feed, next_event);
    let events = stream::once(async move { first })
        .chain(rest)
        .map(Ok)
        // the server's shutdown ends every stream, so graceful shutdown does not wait on them
        .take_until(async move { stop.cancelled_owned().await });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// One client's position in the broadcast.
struct Feed {
    rx: broadcast::Receiver<Arc<Envelope>>,
    /// Only this call's events.
    only: Option<String>,
    /// Nothing more to send.
    done: bool,
}

async fn next_event(mut feed: Feed) -> Option<(Event, Feed)> {
    if feed.done {
        return None;
    }
    loop {
        match feed.rx.recv().await {
            Ok(env) => {
                if feed.only.as_deref().is_some_and(|id| id != env.call_id) {
                    continue;
                }
                // a single call's stream ends with the call
                feed.done = feed.only.is_some() && matches!(env.event, CallEvent::Ended { .. });
                let Ok(v) = serde_json::to_value(&*env) else {
                    continue;
                };
                let kind = v["type"].as_str().unwrap_or("event").to_string();
                return Some((named(&kind, &v), feed));
            }
            Err(RecvError::Lagged(missed)) => {
                warn!(
                    missed,
                    "an admin event stream fell behind; dropping the client"
                );
                feed.done = true;
                let v = json!({"type": "dropped", "at": Utc::now(), "missed": missed});
                return Some((named("dropped", &v), feed));
            }
            Err(RecvError::Closed) => return None,
        }
    }
}

fn named(kind: &str, data: &Value) -> Event {
    Event::default().event(kind).data(data.to_string())
}
