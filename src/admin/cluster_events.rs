//! The other relays' live events, followed for an operator's event stream: one signed event
//! stream per live relay, each event marked with its relay's `node`, merged with this
//! relay's own.
//!
//! A relay whose stream ends (it stopped, or was killed) is reported with an empty
//! `snapshot` (`reachable: false`), so a page drops its calls; it is followed again once it
//! is back in the relays table.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::sse::Event;
use bytes::Bytes;
use chrono::Utc;
use eventsource_stream::Eventsource;
use futures::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::cluster_view::tag;
use super::sse::named;
use crate::cluster::peers::PREFIX;
use crate::cluster::{Cluster, RelayRow};

/// Events from the other relays waiting for a slow reader; beyond it their streams wait (and
/// the other relay drops them when they fall too far behind, which is then reported).
const QUEUE: usize = 256;
/// Relays followed at most by one stream.
const MAX_PEERS: usize = 64;

/// This relay's events (`mine`, which ends when its reader falls behind) merged with every
/// other live relay's. The stream ends with `mine`.
pub fn merged(
    cluster: Arc<Cluster>,
    mine: impl Stream<Item = Event> + Send + 'static,
) -> impl Stream<Item = Event> + Send + 'static {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(follow(cluster, tx));
    let mine = mine.map(Some).chain(stream::once(async { None }));
    let theirs = received(rx).map(Some);
    stream::select(mine, theirs)
        .take_while(|e| std::future::ready(e.is_some()))
        .filter_map(std::future::ready)
}

/// One relay's events at `path` (its whole stream or one call's), marked with its node.
pub fn from_peer(
    cluster: Arc<Cluster>,
    relay: RelayRow,
    path: String,
) -> impl Stream<Item = Event> + Send + 'static {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        pump(&cluster, &relay, &path, &tx).await;
    });
    received(rx)
}

fn received(rx: mpsc::Receiver<Event>) -> impl Stream<Item = Event> + Send + 'static {
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
}

/// Follows every live relay until the reader goes away.
async fn follow(cluster: Arc<Cluster>, tx: mpsc::Sender<Event>) {
    let mut streams = JoinSet::new();
    let mut following: HashSet<String> = HashSet::new();
    // a relay whose stream just ended is tried again after one heartbeat, not at once
    let mut resting: HashMap<String, Instant> = HashMap::new();
    let every = cluster.stale_after() / 3;
    let path = format!("{PREFIX}/events");
    loop {
        if let Ok(peers) = cluster.peers().await {
            let now = Instant::now();
            resting.retain(|_, until| *until > now);
            for relay in peers {
                if following.len() >= MAX_PEERS
                    || following.contains(&relay.node_id)
                    || resting.contains_key(&relay.node_id)
                {
                    continue;
                }
                following.insert(relay.node_id.clone());
                let (cluster, tx, path) = (cluster.clone(), tx.clone(), path.clone());
                streams.spawn(async move {
                    pump(&cluster, &relay, &path, &tx).await;
                    let gone = json!({"type": "snapshot", "at": Utc::now(), "node": relay.node_id,
                                      "calls": [], "reachable": false});
                    let _ = tx.send(named("snapshot", &gone)).await;
                    relay.node_id
                });
            }
        }
        tokio::select! {
            _ = tx.closed() => return,
            Some(Ok(node)) = streams.join_next() => {
                following.remove(&node);
                resting.insert(node, Instant::now() + every);
            }
            _ = tokio::time::sleep(every.max(Duration::from_millis(500))) => {}
        }
    }
}

/// Copies one relay's event stream at `path` into `tx` until either ends.
async fn pump(cluster: &Cluster, relay: &RelayRow, path: &str, tx: &mpsc::Sender<Event>) {
    let Ok(resp) = cluster
        .start(relay, Method::GET, path, Bytes::new(), None, None)
        .await
    else {
        return;
    };
    if resp.status() != StatusCode::OK {
        return;
    }
    let mut events = resp.bytes_stream().eventsource();
    loop {
        let ev = tokio::select! {
            _ = tx.closed() => return,
            ev = events.next() => ev,
        };
        let Some(Ok(ev)) = ev else { return };
        let Ok(mut v) = serde_json::from_str::<Value>(&ev.data) else {
            continue;
        };
        tag(&mut v, Some(&relay.node_id));
        if tx.send(named(&ev.event, &v)).await.is_err() {
            return;
        }
    }
}
