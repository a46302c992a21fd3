//! The cluster as the operator sees it through any relay: every relay's live calls in one
//! list, one call's detail from the relay that has it, and controls forwarded there.

use axum::http::{Method, StatusCode};
use bytes::Bytes;
use serde_json::{json, Value};
use tracing::warn;

use super::error::ApiError;
use super::AdminState;
use crate::cluster::Cluster;

/// Marks an answer (a call summary or detail, an event, a snapshot) with the relay it comes
/// from: `node` on the object itself, on its `call` and on each of its `calls`.
pub fn tag(v: &mut Value, node: Option<&str>) {
    let Some(node) = node else { return };
    let Value::Object(map) = v else { return };
    if let Some(Value::Array(calls)) = map.get_mut("calls") {
        for c in calls.iter_mut() {
            if let Value::Object(c) = c {
                c.insert("node".into(), json!(node));
            }
        }
    }
    if let Some(Value::Object(call)) = map.get_mut("call") {
        call.insert("node".into(), json!(node));
    }
    map.insert("node".into(), json!(node));
}

/// Whether a call id may be sent to the other relays: the shape of the ids relays make
/// (letters, digits, `-`, `_`; at most 128), so an id that is not one (a `/`, a `?`) never
/// changes the internal path it is put in.
pub fn forwardable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// 503 `cluster_unavailable`: the relays table could not be read.
pub fn cluster_unavailable(e: sqlx::Error) -> ApiError {
    warn!(error = %e, "reading the relays table failed");
    ApiError::unavailable(
        "cluster_unavailable",
        "the cluster's relays could not be read from the database",
    )
}

/// `GET /api/calls` in a cluster: this relay's live calls and every other live relay's,
/// each marked with its `node`, oldest first, and `nodes`: every relay the table knows, with
/// whether it answered.
pub async fn live_calls(state: &AdminState, cluster: &Cluster) -> Value {
    let me = cluster.node_id();
    let mut calls: Vec<Value> = Vec::new();
    let mut local = json!({ "calls": state.registry.live() });
    tag(&mut local, Some(me));
    if let Value::Array(mine) = local["calls"].take() {
        calls.extend(mine);
    }
    let (relays, peers) = match (cluster.relays().await, cluster.peer_calls().await) {
        (Ok(relays), Ok(peers)) => (relays, peers),
        (Err(e), _) | (_, Err(e)) => {
            // the database is down: this relay's own calls are still worth showing
            warn!(error = %e, "reading the relays table failed; listing this relay's calls only");
            let live = calls.len();
            return json!({ "calls": calls, "nodes": [{
                "node_id": me, "live_calls": live, "alive": true, "reachable": true, "self": true,
            }], "cluster_error": "the relays table could not be read" });
        }
    };
    let mut nodes = Vec::new();
    for r in relays.iter() {
        let mut n = json!(r);
        n["self"] = json!(r.node_id == me);
        n["reachable"] = json!(r.node_id == me);
        if r.node_id == me {
            n["live_calls"] = json!(state.registry.live_count());
        }
        nodes.push(n);
    }
    for p in peers {
        if let Some(n) = nodes
            .iter_mut()
            .find(|n| n["node_id"] == p.relay.node_id.as_str())
        {
            n["reachable"] = json!(p.calls.is_some());
        }
        for mut c in p.calls.unwrap_or_default() {
            tag(&mut c, Some(&p.relay.node_id));
            calls.push(c);
        }
    }
    calls.sort_by(|a, b| {
        let key = |v: &Value| v["started_at"].as_str().unwrap_or("").to_string();
        key(a).cmp(&key(b))
    });
    json!({ "calls": calls, "nodes": nodes })
}

/// Asks the other relays for `path` and returns the owner's answer as it is: its status and
/// JSON body (with `node` added). `None`: no live relay has the call.
pub async fn answer_from_owner(
    cluster: &Cluster,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<Option<(StatusCode, Value)>, ApiError> {
    let Some((relay, answer)) = cluster
        .ask_owner(method, path, body)
        .await
        .map_err(cluster_unavailable)?
    else {
        return Ok(None);
    };
    let mut v: Value = serde_json::from_slice(&answer.body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_peer_answer",
            format!(
                "relay {} answered with something other than JSON",
                relay.node_id
            ),
        )
    })?;
    tag(&mut v, Some(&relay.node_id));
    Ok(Some((answer.status, v)))
}

/// As [`answer_from_owner`] for a read: the owner's 200 body, its error passed on.
pub async fn from_owner(
    cluster: &Cluster,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<Option<Value>, ApiError> {
    match answer_from_owner(cluster, method, path, body).await? {
        None => Ok(None),
        Some((StatusCode::OK, v)) => Ok(Some(v)),
        Some((status, v)) => Err(ApiError::new(
            status,
            "peer_error",
            v["error"]["message"]
                .as_str()
                .unwrap_or("the relay that has the call refused the request")
                .to_string(),
        )),
    }
}

/// `GET /api/cluster`: this relay's `node_id` and every relay of the relays table (`null` and
/// an empty list for a relay on its own).
pub async fn relays(
    axum::extract::State(state): axum::extract::State<AdminState>,
) -> Result<axum::Json<Value>, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok(axum::Json(json!({ "node_id": null, "relays": [] })));
    };
    let rows = cluster.relays().await.map_err(cluster_unavailable)?;
    Ok(axum::Json(json!({
        "node_id": cluster.node_id(),
        "stale_after_seconds": cluster.stale_after().as_secs(),
        "relays": *rows,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_of_the_relays_own_shape_are_sent_to_the_others() {
        for id in ["3f2a9c0d11e4b7a8", "web-3f2a9c0d11e4b7a8", "call_x"] {
            assert!(forwardable(id), "{id}");
        }
        for id in [
            "",
            "a/b",
            "../x",
            "x?y=1",
            "x#y",
            "x%2F",
            "é",
            &"a".repeat(129),
        ] {
            assert!(!forwardable(id), "{id:?}");
        }
    }

    #[test]
    fn tag_marks_the_object_its_call_and_its_calls() {
        let mut v = json!({"type": "snapshot", "calls": [{"id": "a"}], "call": {"id": "b"}});
        tag(&mut v, Some("relay-b"));
        assert_eq!(v["node"], "relay-b");
        assert_eq!(v["calls"][0]["node"], "relay-b");
        assert_eq!(v["call"]["node"], "relay-b");
        let mut alone = json!({"id": "c"});
        tag(&mut alone, None);
        assert_eq!(alone, json!({"id": "c"}));
    }
}
