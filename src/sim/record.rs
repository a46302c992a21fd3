//! What a session received and sent, kept for `GET /sim/sessions[/{id}]` so that tests can
//! check what the relay told the "model".

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

/// Event types kept in order per session; past this only the per-type counts grow, so that a
/// long session's record stays small.
const MAX_EVENT_NAMES: usize = 2_000;

/// A tool output the client sent.
#[derive(Debug, Clone, Serialize)]
pub struct ToolOutput {
    /// The call it answers.
    pub call_id: String,
    /// The tool the simulated model called with that id, if it did.
    pub name: Option<String>,
    /// The output text.
    pub output: String,
}

/// A function call the simulated model made.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedToolCall {
    /// `call_…`.
    pub call_id: String,
    /// The tool.
    pub name: String,
    /// JSON text of the arguments.
    pub arguments: String,
}

/// The JSON of one session for `/sim/sessions/{id}`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionLog {
    /// `sess_…`.
    pub id: String,
    /// `webrtc` or `websocket`.
    pub transport: String,
    /// The WebRTC call id (`rtc_…`, the last segment of `Location`), if any.
    pub call_id: Option<String>,
    /// The scenario's name.
    pub scenario: String,
    /// The effective session config.
    pub session: Value,
    /// Each `session` object the client sent (by mint, `/calls` or `session.update`).
    pub session_updates: Vec<Value>,
    /// Items in the conversation, in order (the client's and the model's).
    pub items: Vec<Value>,
    /// Function calls the model made.
    pub tool_calls: Vec<RecordedToolCall>,
    /// Function call outputs the client sent.
    pub tool_outputs: Vec<ToolOutput>,
    /// `input_text` of user messages (DTMF digits the relay forwards).
    pub text_items: Vec<String>,
    /// Seconds of caller audio received.
    pub audio_received_seconds: f64,
    /// Seconds of model audio sent.
    pub audio_sent_seconds: f64,
    /// The widest audio band of the Opus packets sent (`narrowband` … `fullband`), if any.
    pub audio_sent_bandwidth: Option<&'static str>,
    /// Types of the client events received, in order (the first 2 000; appends only counted).
    pub events_received: Vec<String>,
    /// Count of `input_audio_buffer.append` events received.
    pub appends_received: u64,
    /// Types of the server events sent, in order (the first 2 000; audio deltas only counted).
    pub events_sent: Vec<String>,
    /// Count of server events sent.
    pub events_sent_count: u64,
    /// Count of server events sent, by type.
    pub events_sent_by_type: std::collections::BTreeMap<String, u64>,
    /// Error events sent, as sent.
    pub errors_sent: Vec<Value>,
    /// Why the session ended, once it has.
    pub closed: Option<String>,
    /// Sideband WebSockets (`GET /v1/realtime?call_id=…`) that attached to this call.
    pub sideband_attachments: u64,
    /// Types of the client events that arrived over a sideband, in order (the first 2 000;
    /// also in `events_received`).
    pub sideband_events_received: Vec<String>,
}

/// A session's record, shared between its task (writer) and the HTTP handlers (readers).
/// The lock is taken per event, never per audio frame: audio is counted in atomics.
#[derive(Debug, Default)]
pub struct SessionRecord {
    log: Mutex<SessionLog>,
    /// Woken after every change of the log (not of the audio counters).
    changed: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
    audio_in_samples: AtomicU64,
    audio_out_samples: AtomicU64,
    /// The widest Opus band sent, 1 (narrowband) to 5 (fullband); 0 before any.
    audio_out_band: AtomicU8,
}

impl SessionRecord {
    /// A record for a new session.
    pub fn new(id: &str, transport: &str, scenario: &str) -> Self {
        Self {
            log: Mutex::new(SessionLog {
                id: id.to_string(),
                transport: transport.to_string(),
                scenario: scenario.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Changes the log under its lock.
    pub fn with<R>(&self, f: impl FnOnce(&mut SessionLog) -> R) -> R {
        let r = {
            let mut guard = match self.log.lock() {
                Ok(g) => g,
                // a panic elsewhere must not hide the record
                Err(poisoned) => poisoned.into_inner(),
            };
            f(&mut guard)
        };
        if let Some(n) = self.changed.get() {
            n.notify_waiters();
        }
        r
    }

    /// Wakes `changed` after every change of the log from now on (once per record).
    pub fn notify(&self, changed: Arc<tokio::sync::Notify>) {
        let _ = self.changed.set(changed);
    }

    /// Counts caller audio (24 kHz samples).
    pub fn add_audio_in(&self, samples: usize) {
        self.audio_in_samples
            .fetch_add(samples as u64, Ordering::Relaxed);
    }

    /// Counts model audio (24 kHz samples).
    pub fn add_audio_out(&self, samples: usize) {
        self.audio_out_samples
            .fetch_add(samples as u64, Ordering::Relaxed);
    }

    /// Seconds of caller audio so far.
    pub fn audio_in_seconds(&self) -> f64 {
        self.audio_in_samples.load(Ordering::Relaxed) as f64 / 24_000.0
    }

    /// Notes a sent event.
    pub fn sent(&self, kind: &str) {
        self.with(|l| {
            l.events_sent_count += 1;
            match l.events_sent_by_type.get_mut(kind) {
                Some(n) => *n += 1,
                None => {
                    l.events_sent_by_type.insert(kind.to_string(), 1);
                }
            }
            if l.events_sent.len() < MAX_EVENT_NAMES && kind != "response.output_audio.delta" {
                l.events_sent.push(kind.to_string());
            }
        });
    }

    /// Notes a received event.
    pub fn received(&self, kind: &str) {
        self.with(|l| {
            if kind == "input_audio_buffer.append" {
                l.appends_received += 1;
            } else if l.events_received.len() < MAX_EVENT_NAMES {
                l.events_received.push(kind.to_string());
            }
        });
    }

    /// Notes client events that arrived over a sideband: those `events_received` gained
    /// since it held `before` names.
    pub fn received_over_sideband(&self, before: usize) {
        self.with(|l| {
            let room = MAX_EVENT_NAMES.saturating_sub(l.sideband_events_received.len());
            let new = l.events_received.get(before..).unwrap_or_default();
            let take = new.len().min(room);
            let new: Vec<String> = new[..take].to_vec();
            l.sideband_events_received.extend(new);
        });
    }

    /// How many event names `events_received` holds.
    pub fn received_count(&self) -> usize {
        self.with(|l| l.events_received.len())
    }

    /// Notes the Opus band of the model audio sent (its rank, 1 narrowband to 5 fullband).
    pub fn audio_band(&self, rank: u8) {
        self.audio_out_band.fetch_max(rank, Ordering::Relaxed);
    }

    /// A copy of the log with the audio counters filled in.
    pub fn snapshot(&self) -> SessionLog {
        let mut log = self.with(|l| l.clone());
        log.audio_received_seconds = self.audio_in_seconds();
        log.audio_sent_seconds = self.audio_out_samples.load(Ordering::Relaxed) as f64 / 24_000.0;
        log.audio_sent_bandwidth = band_name(self.audio_out_band.load(Ordering::Relaxed));
        log
    }
}

/// The name of an Opus band's rank (1 narrowband … 5 fullband).
fn band_name(rank: u8) -> Option<&'static str> {
    [
        "narrowband",
        "mediumband",
        "wideband",
        "superwideband",
        "fullband",
    ]
    .get(usize::from(rank).checked_sub(1)?)
    .copied()
}
