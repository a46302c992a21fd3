//! `PUT /api/calls/{id}/recording` (`Content-Type: audio/wav`): the `/talk` page's upload of
//! a browser call's recording (the relay is not in a browser call's media path, so the page
//! records it; see `bridge::web_recording`). Taken once, only for a browser call the relay
//! decided to record, within a bounded time after the call ended, only as an 8 kHz stereo
//! 16-bit WAV no larger than `recording.max_call_mb` (and than the call's length allows). The
//! body is streamed to a part file beside the recordings and renamed into place, named like
//! a phone call's; then the call's view and its stored record name it. Nothing of the body is
//! logged, only its size.

use std::path::{Path as FsPath, PathBuf};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use super::error::ApiError;
use super::AdminState;
use crate::booking::{CallKind, RecordingRef};
use crate::bridge::call_record;
use crate::bridge::web_recording::{parse_header, Refusal, BYTES_PER_SECOND, HEADER_LEN};

/// Ids longer than this are not looked up (no call has one).
const ID_MAX_LEN: usize = 128;
/// The recording may be this much longer than the call the relay saw (the page starts
/// recording when the relay's answer reaches it, and stops after its side hung up).
const LENGTH_SLACK_S: u64 = 30;

/// `PUT /api/calls/{id}/recording`.
pub async fn upload(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if id.len() > ID_MAX_LEN {
        return Err(ApiError::call_not_found());
    }
    if !is_wav(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a recording is uploaded with `Content-Type: audio/wav`",
        ));
    }
    let Some(web) = state.web.clone() else {
        return Err(not_awaited(&state, &id));
    };
    let ticket = web.begin_upload(&id).await.map_err(|r| match r {
        Refusal::NotAwaited => not_awaited(&state, &id),
        Refusal::Live => ApiError::new(
            StatusCode::CONFLICT,
            "call_not_ended",
            "the call has not ended: upload its recording once it is over",
        ),
        Refusal::InProgress => {
            ApiError::new(StatusCode::CONFLICT, "upload_in_progress", r.to_string())
        }
        Refusal::AlreadyUploaded => {
            ApiError::new(StatusCode::CONFLICT, "recording_exists", r.to_string())
        }
        Refusal::WindowClosed => {
            ApiError::new(StatusCode::GONE, "upload_window_closed", r.to_string())
        }
    })?;
    let Some(detail) = state.registry.get(&id) else {
        // ended so long ago (or so many calls since) that the registry forgot it
        return Err(ApiError::new(
            StatusCode::GONE,
            "upload_window_closed",
            "the call ended too long ago for its recording to be taken",
        ));
    };
    let settings = web.recording_settings();
    // the cap, and a length the call allows: a recording far longer than its call is not one
    let seconds = detail
        .ended_at
        .unwrap_or_else(chrono::Utc::now)
        .signed_duration_since(detail.started_at)
        .num_seconds()
        .max(0) as u64;
    let mut limit = (seconds + LENGTH_SLACK_S) * BYTES_PER_SECOND + HEADER_LEN as u64;
    if settings.max_bytes > 0 {
        limit = limit.min(settings.max_bytes);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let path = settings.path(&id);
    // removed however this ends short of the rename, the request timeout's drop included
    let part = PartFile(part_path(&path));
    let data = receive(body, &part.0, limit).await?;
    if let Err(e) = tokio::fs::rename(&part.0, &path).await {
        warn!(error = %e, "the browser call's recording could not be put in place");
        return Err(write_failed());
    }
    drop(part);
    let rec = RecordingRef {
        path: path.to_string_lossy().into_owned(),
        bytes: data + HEADER_LEN as u64,
        duration_ms: data * 1000 / BYTES_PER_SECOND,
        // the page starts recording when the relay's answer reaches it, which is when the
        // relay's call (the transcript's clock) starts
        offset_ms: 0,
        deleted_at: None,
    };
    if let Err(e) = name_in_record(&state, &id, rec.clone()).await {
        // keep no file that no record names: retention would find it only by age
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e);
    }
    ticket.done();
    info!(call = %id, bytes = rec.bytes, duration_ms = rec.duration_ms, "a browser call's recording arrived");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "bytes": rec.bytes, "duration_ms": rec.duration_ms, "offset_ms": 0 })),
    ))
}

/// `Content-Type: audio/wav` (parameters allowed).
fn is_wav(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("audio/wav"))
}

/// A half-received upload: its file goes when this is dropped (after the rename there is no
/// file left at that path, and removing nothing is fine).
struct PartFile(PathBuf);

impl Drop for PartFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `<dir>/<id>.wav.part`: not a `.wav`, so startup repair never takes a half upload for a
/// recording; removed on any failure.
fn part_path(path: &FsPath) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".part");
    PathBuf::from(p)
}

/// Streams the body into `part`, checking the header as soon as it is in and the length all
/// along; the number of sample bytes on success.
async fn receive(body: Body, part: &FsPath, limit: u64) -> Result<u64, ApiError> {
    if let Some(dir) = part.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(|e| {
            warn!(error = %e, "the recordings folder could not be created");
            write_failed()
        })?;
    }
    let mut file = tokio::fs::File::create(part).await.map_err(|e| {
        warn!(error = %e, "a browser call's recording could not be created");
        write_failed()
    })?;
    let mut stream = body.into_data_stream();
    let mut head: Vec<u8> = Vec::with_capacity(HEADER_LEN);
    let mut expected: Option<u64> = None;
    let mut total: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::bad_request("bad_body", "the recording could not be read to its end")
        })?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(too_large(limit));
        }
        if expected.is_none() {
            let take = (HEADER_LEN - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
            if head.len() == HEADER_LEN {
                let data = parse_header(&head).map_err(|e| bad_wav(e.to_string()))?;
                let whole = HEADER_LEN as u64 + u64::from(data);
                if whole > limit {
                    return Err(too_large(limit));
                }
                expected = Some(whole);
            }
        }
        if expected.is_some_and(|n| total > n) {
            return Err(bad_wav(
                "the body is longer than its WAV header says".into(),
            ));
        }
        file.write_all(&chunk).await.map_err(|e| {
            warn!(error = %e, "writing a browser call's recording failed");
            write_failed()
        })?;
    }
    match expected {
        None => Err(bad_wav("shorter than a WAV header".into())),
        Some(n) if n != total => Err(bad_wav(
            "the body is shorter than its WAV header says".into(),
        )),
        Some(n) => {
            file.sync_all().await.map_err(|_| write_failed())?;
            Ok(n - HEADER_LEN as u64)
        }
    }
}

/// Names the recording in call `id`'s view and upserts its stored record (the call ended,
/// so its record is stored already).
async fn name_in_record(state: &AdminState, id: &str, rec: RecordingRef) -> Result<(), ApiError> {
    let record = match state.registry.set_recording(id, rec.clone()) {
        Some(d) => call_record::record(&d, d.end_reason.as_deref().unwrap_or("other")),
        None => {
            let mut r = super::calls::stored_call(state, id).await?;
            r.recording = Some(rec);
            r
        }
    };
    if let Some(store) = &state.store {
        store.insert_call(&record).await.map_err(|e| {
            warn!(error = %e, "the call record was not updated with its recording");
            ApiError::unavailable(
                "database_error",
                "the call's record could not be updated with its recording",
            )
        })?;
    }
    Ok(())
}

/// Why no recording is taken for a call the relay does not await one for.
fn not_awaited(state: &AdminState, id: &str) -> ApiError {
    match state.registry.get(id) {
        None => ApiError::call_not_found(),
        Some(d) if d.kind != CallKind::Web => ApiError::new(
            StatusCode::CONFLICT,
            "not_a_web_call",
            "only a browser call's recording is uploaded; the relay records phone calls itself",
        ),
        Some(_) => ApiError::new(
            StatusCode::CONFLICT,
            "not_recorded",
            "the relay did not decide to record this call (recording.enabled, the agent's record)",
        ),
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "recording_too_large",
        format!(
            "the recording may be at most {limit} bytes (recording.max_call_mb, the call's length)"
        ),
    )
}

fn bad_wav(why: String) -> ApiError {
    ApiError::bad_request("bad_wav", why)
}

fn write_failed() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "recording_not_written",
        "the recording could not be written on the relay",
    )
}
