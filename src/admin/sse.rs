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
use axum::http::Method;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use chrono::Utc;
use futures::stream::{self, BoxStream, Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::cluster_view::{cluster_unavailable, forwardable, tag};
use super::error::ApiError;
use super::AdminState;
use crate::bridge::registry::{CallEvent, CallState, Envelope};
use crate::cluster::peers::PREFIX;

/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /api/calls/{id}/events`: a `snapshot` of the call, then its events until it ends. In
/// a cluster, a call of another relay is followed through that relay.
pub async fn call_events(
    State(state): State<AdminState>,
    Extension(stop): Extension<CancellationToken>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if state.registry.get(&id).is_none() {
        if let Some(cluster) = state.cluster.as_ref().filter(|_| forwardable(&id)) {
            let path = format!("{PREFIX}/calls/{id}");
            if let Some((relay, _)) = cluster
                .ask_owner(Method::GET, &path, Bytes::new())
                .await
                .map_err(cluster_unavailable)?
            {
                let events = super::cluster_events::from_peer(
                    cluster.clone(),
                    relay,
                    format!("{path}/events"),
                );
                return Ok(sse(events.boxed(), stop).into_response());
            }
        }
    }
    local_call_events(State(state), Extension(stop), Path(id)).await
}

/// This relay's call `id` only (the internal route the other relays follow).
pub async fn local_call_events(
    State(state): State<AdminState>,
    Extension(stop): Extension<CancellationToken>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // subscribe before the snapshot, so nothing falls between the two
    let rx = state.registry.subscribe();
    let detail = state
        .registry
        .get(&id)
        .ok_or_else(ApiError::call_not_found)?;
    let over = detail.state == CallState::Ended;
    let node = state.node_id().map(str::to_string);
    let mut first = json!({"type": "snapshot", "call_id": id, "at": Utc::now(), "call": detail});
    tag(&mut first, node.as_deref());
    let feed = Feed {
        rx,
        only: Some(id),
        done: over,
        node,
    };
    Ok(sse(local(named("snapshot", &first), feed).boxed(), stop).into_response())
}

/// `GET /api/events`: a `snapshot` of the live calls, then every call's events; in a
/// cluster, every relay's (each relay's `snapshot` and events marked with its `node`).
pub async fn all_events(
    State(state): State<AdminState>,
    Extension(stop): Extension<CancellationToken>,
) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return local_events(State(state), Extension(stop)).await;
    };
    let mine = local_all(&state);
    sse(super::cluster_events::merged(cluster, mine).boxed(), stop).into_response()
}

/// This relay's events only (the internal route the other relays follow).
pub async fn local_events(
    State(state): State<AdminState>,
    Extension(stop): Extension<CancellationToken>,
) -> Response {
    sse(local_all(&state).boxed(), stop).into_response()
}

fn local_all(state: &AdminState) -> impl Stream<Item = Event> + Send + 'static {
    let rx = state.registry.subscribe();
    let node = state.node_id().map(str::to_string);
    let mut first = json!({"type": "snapshot", "at": Utc::now(), "calls": state.registry.live()});
    tag(&mut first, node.as_deref());
    let feed = Feed {
        rx,
        only: None,
        done: false,
        node,
    };
    local(named("snapshot", &first), feed)
}

fn local(first: Event, feed: Feed) -> impl Stream<Item = Event> + Send + 'static {
    stream::once(async move { first }).chain(stream::unfold(feed, next_event))
}

fn sse(
    events: BoxStream<'static, Event>,
    stop: CancellationToken,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = events
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
    /// This relay's `cluster.node_id`, marked on each event in a cluster.
    node: Option<String>,
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
                let Ok(mut v) = serde_json::to_value(&*env) else {
                    continue;
                };
                tag(&mut v, feed.node.as_deref());
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

/// An SSE event named `kind` with `data` as its JSON.
pub(super) fn named(kind: &str, data: &Value) -> Event {
    Event::default().event(kind).data(data.to_string())
}
