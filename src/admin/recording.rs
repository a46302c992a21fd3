//! `GET /api/calls/{id}/recording`: the call's stereo WAV (caller left, agent right), with
//! single byte-range requests (206) so a player can seek. HEAD answers the same headers.
//!
//! The file's path comes only from the call's record (the registry's or the database's),
//! never from the request: the id is only looked up.

use std::io::SeekFrom;
use std::ops::RangeInclusive;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::warn;

use super::error::ApiError;
use super::AdminState;
use crate::booking::RecordingRef;

/// Ids longer than this are not looked up (no call has one).
const ID_MAX_LEN: usize = 128;
/// The body is read from the file in pieces of this size.
const CHUNK: usize = 64 * 1024;

/// What a `Range` header asks for, against a file of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// The whole file (no `Range`, another unit, or several ranges: RFC 9110 lets a server
    /// answer those with the whole representation).
    All,
    /// These bytes.
    Part(RangeInclusive<u64>),
    /// A byte range that is malformed or starts past the end: 416.
    Unsatisfiable,
}

/// Reads a `Range` header value (`bytes=a-b`, `bytes=a-`, `bytes=-n`) for a file of `len`
/// bytes. Never panics on any input.
pub fn parse_range(value: Option<&str>, len: u64) -> Wanted {
    let Some(value) = value else {
        return Wanted::All;
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Wanted::All;
    };
    if spec.contains(',') {
        return Wanted::All;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Unsatisfiable;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if len == 0 {
        return Wanted::Unsatisfiable;
    }
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // the last n bytes
        (true, false) => match num(last) {
            Some(n) if n > 0 => Wanted::Part(len - n.min(len)..=len - 1),
            _ => Wanted::Unsatisfiable,
        },
        (false, _) => {
            let Some(start) = num(first) else {
                return Wanted::Unsatisfiable;
            };
            let end = if last.trim().is_empty() {
                Some(len - 1)
            } else {
                num(last)
            };
            match end {
                Some(end) if start <= end && start < len => Wanted::Part(start..=end.min(len - 1)),
                _ => Wanted::Unsatisfiable,
            }
        }
        (true, true) => Wanted::Unsatisfiable,
    }
}

/// `GET` (and `HEAD`) `/api/calls/{id}/recording`.
pub async fn get(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rec = match find(&state, &id).await? {
        Found::Here(rec) => rec,
        Found::On(node) => return from_relay(&state, &node, &id, method, &headers).await,
    };
    if rec.deleted_at.is_some() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "recording_deleted",
            "this call's recording was deleted (recording.keep_days)",
        ));
    }
    let mut file = match tokio::fs::File::open(&rec.path).await {
        Ok(f) => f,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(error = %e, "a recording could not be opened");
            }
            return Err(no_recording());
        }
    };
    let len = file.metadata().await.map_err(|_| no_recording())?.len();
    let range = headers
        .get(header::RANGE)
        .map(|v| v.to_str().unwrap_or("bytes=x"));
    let (status, span) = match parse_range(range, len) {
        Wanted::All => (StatusCode::OK, None),
        Wanted::Part(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
        Wanted::Unsatisfiable => {
            let mut resp = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "bad_range",
                format!("the range is not within the recording's {len} bytes"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    let (start, count) = match &span {
        Some(r) => (*r.start(), r.end() - r.start() + 1),
        None => (0, len),
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "audio/wav")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, count)
        // a recording is personal data: never kept by caches on the way
        .header(header::CACHE_CONTROL, "no-store");
    if let Some(r) = &span {
        resp = resp.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{len}", r.start(), r.end()),
        );
    }
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        if start > 0 && file.seek(SeekFrom::Start(start)).await.is_err() {
            return Err(no_recording());
        }
        Body::from_stream(file_stream(file, count))
    };
    resp.body(body)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no answer"))
}

/// `count` bytes of `file` from where it stands, in pieces.
fn file_stream(
    file: tokio::fs::File,
    count: u64,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send {
    futures::stream::unfold((file, count), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; CHUNK.min(left as usize)];
        match file.read(&mut buf).await {
            // the file got shorter: end the body early, the length tells the client
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    })
}

fn no_recording() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_recording",
        "this call has no recording",
    )
}

/// Where a call's recording is.
enum Found {
    /// On this relay, as its record names it.
    Here(RecordingRef),
    /// On another relay of the cluster (the record's `node`): the file is on that relay's disk.
    On(String),
}

/// The recording the call's record names: the registry's (live or recent), else the
/// database's, which in a cluster may be another relay's.
async fn find(state: &AdminState, id: &str) -> Result<Found, ApiError> {
    if id.len() > ID_MAX_LEN {
        return Err(ApiError::call_not_found());
    }
    if let Some(detail) = state.registry.get(id) {
        return detail.recording.map(Found::Here).ok_or_else(no_recording);
    }
    let record = super::calls::stored_call(state, id).await?;
    match (record.node, state.node_id()) {
        (Some(node), Some(me)) if node != me => Ok(Found::On(node)),
        _ => record.recording.map(Found::Here).ok_or_else(no_recording),
    }
}

/// Headers of another relay's answer passed on to the client.
const PASSED_ON: [header::HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::ACCEPT_RANGES,
    header::CACHE_CONTROL,
];

/// The recording of a call another relay ran, from that relay (with the client's `Range`),
/// streamed through as it comes.
async fn from_relay(
    state: &AdminState,
    node: &str,
    id: &str,
    method: Method,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let unreachable = || {
        ApiError::unavailable(
            "recording_unreachable",
            format!("this call's recording is on relay {node}, which does not answer"),
        )
    };
    let Some(cluster) = &state.cluster else {
        return Err(no_recording());
    };
    let relay = cluster
        .peer(node)
        .await
        .map_err(|_| unreachable())?
        .ok_or_else(unreachable)?;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let path = format!("{}/calls/{id}/recording", crate::cluster::peers::PREFIX);
    let resp = cluster
        .start(&relay, method, &path, Default::default(), None, range)
        .await
        .map_err(|e| {
            warn!(error = %e, "fetching a recording from another relay failed");
            unreachable()
        })?;
    let mut out = Response::builder().status(resp.status());
    for name in PASSED_ON {
        if let Some(v) = resp.headers().get(&name) {
            out = out.header(name, v);
        }
    }
    out.body(Body::from_stream(resp.bytes_stream()))
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        let p = |v: &str| parse_range(Some(v), 1000);
        assert_eq!(parse_range(None, 1000), Wanted::All);
        assert_eq!(p("bytes=0-99"), Wanted::Part(0..=99));
        assert_eq!(p("bytes=900-"), Wanted::Part(900..=999));
        assert_eq!(p("bytes=-100"), Wanted::Part(900..=999));
        assert_eq!(p("bytes=-5000"), Wanted::Part(0..=999));
        assert_eq!(p("bytes=990-5000"), Wanted::Part(990..=999));
        assert_eq!(p("bytes=0-0,5-9"), Wanted::All);
        assert_eq!(p("items=0-9"), Wanted::All);
        for bad in [
            "bytes=1000-",
            "bytes=5-4",
            "bytes=-0",
            "bytes=-",
            "bytes=abc",
            "bytes=+1-2",
            "bytes=1-x",
            "bytes=99999999999999999999999-",
            "bytes=",
        ] {
            assert_eq!(p(bad), Wanted::Unsatisfiable, "{bad}");
        }
        assert_eq!(parse_range(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
    }
}
