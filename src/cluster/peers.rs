//! Requests to the other relays' internal routes (`/cluster/v1/…` on their admin servers),
//! signed with the cluster secret: their live calls, one call, a control, their events.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use bytes::Bytes;
use chrono::Utc;
use futures::future::join_all;
use serde_json::Value;
use tracing::warn;

use super::auth::{self, HEADER};
use super::{Cluster, RelayRow};

/// Connecting to another relay's admin server takes at most this long (they are on one
/// network; a relay that does not connect in a second is as good as gone).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A request to another relay (not an event stream) takes at most this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The internal routes' prefix.
pub const PREFIX: &str = "/cluster/v1";
/// The largest answer read from another relay (one call's detail with a long transcript).
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// What another relay answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its JSON body.
    pub body: Bytes,
}

/// Why another relay gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Not reachable, or too slow.
    #[error("relay {node} did not answer: {reason}")]
    Unreachable {
        /// The relay.
        node: String,
        /// Why, without the URL's secrets (it has none) or the signature.
        reason: String,
    },
}

/// One relay's live calls, or why they are missing.
#[derive(Debug)]
pub struct PeerCalls {
    /// The relay.
    pub relay: RelayRow,
    /// Its `calls` array, or `None` when it did not answer.
    pub calls: Option<Vec<Value>>,
}

/// Reads `resp`'s body, at most `max` bytes whatever its headers say: a chunked answer has
/// no length to check first, so the limit is kept while reading.
async fn read_bounded(mut resp: reqwest::Response, max: usize) -> Result<Bytes, String> {
    const TOO_LARGE: &str = "answer too large";
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(TOO_LARGE.into());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if body.len() + chunk.len() > max {
            return Err(TOO_LARGE.into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

impl Cluster {
    /// Sends a signed request to `peer` and reads the whole answer.
    pub async fn request(
        &self,
        peer: &RelayRow,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Answer, PeerError> {
        let resp = self
            .start(peer, method, path, body, Some(REQUEST_TIMEOUT), None)
            .await?;
        let status = resp.status();
        let body =
            read_bounded(resp, MAX_ANSWER)
                .await
                .map_err(|reason| PeerError::Unreachable {
                    node: peer.node_id.clone(),
                    reason,
                })?;
        Ok(Answer { status, body })
    }

    /// Sends a signed request to `peer` and returns the response as it starts (an event
    /// stream is read by the caller); `timeout` bounds the whole exchange when given; `range`
    /// is passed on as the `Range` header (a recording's byte range; not signed: it selects
    /// bytes of the one resource the signed path names).
    pub async fn start(
        &self,
        peer: &RelayRow,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Option<Duration>,
        range: Option<&str>,
    ) -> Result<reqwest::Response, PeerError> {
        let header = self.signer.sign(
            &peer.node_id,
            Utc::now().timestamp(),
            rand::random::<u128>(),
            auth::Request {
                method: method.as_str(),
                path,
                body: &body,
            },
        );
        let mut req = self
            .http
            .request(method, format!("{}{path}", peer.admin_url))
            .header(HEADER, header);
        if !body.is_empty() {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(r) = range {
            req = req.header(reqwest::header::RANGE, r);
        }
        req.send().await.map_err(|e| PeerError::Unreachable {
            node: peer.node_id.clone(),
            reason: e.without_url().to_string(),
        })
    }

    /// The live relay named `node`, other than this one.
    pub async fn peer(&self, node: &str) -> Result<Option<RelayRow>, sqlx::Error> {
        Ok(self.peers().await?.into_iter().find(|r| r.node_id == node))
    }

    /// Every other live relay's live calls, asked at once.
    pub async fn peer_calls(&self) -> Result<Vec<PeerCalls>, sqlx::Error> {
        let peers = self.peers().await?;
        let path = format!("{PREFIX}/calls");
        let asks = peers.into_iter().map(|relay| {
            let path = path.clone();
            async move {
                let calls = match self.request(&relay, Method::GET, &path, Bytes::new()).await {
                    Ok(a) if a.status == StatusCode::OK => serde_json::from_slice::<Value>(&a.body)
                        .ok()
                        .and_then(|v| v.get("calls").and_then(Value::as_array).cloned()),
                    Ok(a) => {
                        warn!(node = %relay.node_id, status = %a.status, "a relay refused to list its calls");
                        None
                    }
                    Err(e) => {
                        warn!(error = %e, "a relay did not list its calls");
                        None
                    }
                };
                PeerCalls { relay, calls }
            }
        });
        Ok(join_all(asks).await)
    }

    /// Sends `method path` to every other live relay at once and returns the first answer
    /// that is not 404 (the call's owner: call ids are unique), with the relay that gave it.
    /// `None`: no live relay has the call.
    pub async fn ask_owner(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Option<(RelayRow, Answer)>, sqlx::Error> {
        let peers = self.peers().await?;
        let asks = peers.into_iter().map(|relay| {
            let (method, body) = (method.clone(), body.clone());
            async move {
                let answer = self.request(&relay, method, path, body).await;
                (relay, answer)
            }
        });
        for (relay, answer) in join_all(asks).await {
            match answer {
                Ok(a) if a.status != StatusCode::NOT_FOUND => return Ok(Some((relay, a))),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "a relay did not answer about a call"),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers one request with a chunked body of `chunks` chunks of `size`
    /// bytes, and its URL.
    async fn chunked_server(chunks: usize, size: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await;
            let chunk = vec![b'x'; size];
            for _ in 0..chunks {
                let _ = s.write_all(format!("{size:x}\r\n").as_bytes()).await;
                let _ = s.write_all(&chunk).await;
                let _ = s.write_all(b"\r\n").await;
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
        });
        url
    }

    #[tokio::test]
    async fn a_chunked_answer_is_cut_at_the_limit_without_a_length_to_check() {
        let http = reqwest::Client::new();
        let small = http.get(chunked_server(2, 400).await).send().await.unwrap();
        assert_eq!(small.content_length(), None, "chunked: no length");
        assert_eq!(read_bounded(small, 1_000).await.unwrap().len(), 800);
        let large = http.get(chunked_server(3, 400).await).send().await.unwrap();
        assert_eq!(
            read_bounded(large, 1_000).await.unwrap_err(),
            "answer too large"
        );
    }
}
