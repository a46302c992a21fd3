//! The simulated model of one session, without IO: fed client events, caller audio and the time
//! (a `Duration` since the session opened), it returns server events, model audio frames and
//! the next deadline. The WebRTC and WebSocket tasks only move bytes in and out of it, and tests
//! drive it with a fake clock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::record::{RecordedToolCall, SessionRecord, ToolOutput};
use super::scenario::{fill_dates, fill_template, Call, Mode, Prompt, Scenario};
use super::vad::{EnergyVad, VadEvent, VadSettings};
use super::voice::{self, FRAME};
use crate::media::frame::FRAME_DURATION;
use crate::media::g711;
use crate::openai::events::{
    ClientEvent, ContentPart, ErrorBody, Item, RateLimit, Response, ResponsePart, ServerEvent,
    Session, StatusDetails,
};

/// The longest a session lives, as on the real service.
pub const MAX_SESSION: Duration = Duration::from_secs(60 * 60);
/// Largest client event accepted (the service's limit for an append is 15 MiB).
pub const MAX_EVENT_BYTES: usize = 15 * 1024 * 1024;
/// Caller audio kept for one turn (echo mode plays it back).
const MAX_TURN_SAMPLES: usize = 30 * 24_000;
/// How long audio "plays out" after `response.cancel` before `output_audio_buffer.stopped`,
/// giving the client time for the `output_audio_buffer.clear` of a manual interrupt.
const CANCEL_PLAYOUT: Duration = Duration::from_millis(100);
/// Frames per `response.output_audio.delta` on WebSocket (100 ms).
const WS_FRAMES_PER_DELTA: usize = 5;

/// Which transport carries the session: it decides how model audio leaves and which
/// `output_audio_buffer.*` events exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Audio as RTP; `output_audio_buffer.*` events.
    WebRtc,
    /// Audio as base64 in events.
    WebSocket,
}

/// What the engine asks its transport to do.
// Outputs are drained as soon as they are made; most of them are events anyway.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Output {
    /// Send this event.
    Event(ServerEvent),
    /// Send this text as is (fault injection).
    Raw(String),
    /// WebRTC: send this 20 ms frame of model audio (24 kHz, padded with silence if short).
    Audio(AudioFrame),
    /// WebRTC: drop model audio queued but not yet sent.
    ClearAudio,
    /// Close the session.
    Close(CloseReason),
}

/// Why the engine closes a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The session reached its maximum duration (`session_expired` was sent).
    Expired,
    /// A scenario fault: the channel closes without a word.
    Fault,
}

/// A 20 ms slice of model audio, sharing the prompt's samples.
#[derive(Debug, Clone)]
pub struct AudioFrame {
    src: Arc<[i16]>,
    start: usize,
    len: usize,
}

impl AudioFrame {
    /// The samples (up to [`FRAME`]).
    pub fn samples(&self) -> &[i16] {
        &self.src[self.start..self.start + self.len]
    }
}

/// How a session starts.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// `sess_…`.
    pub session_id: String,
    /// The model the client asked for.
    pub model: String,
    /// The transport.
    pub transport: Transport,
    /// What the model does.
    pub scenario: Arc<Scenario>,
    /// A session config set before the session opened (mint or `/calls`), already checked.
    pub initial: Option<Value>,
    /// Unix seconds now, for `expires_at`.
    pub unix_now: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Pcm24,
    Pcmu,
    Pcma,
}

impl Format {
    fn from_session(v: Option<&Value>) -> Self {
        match v.and_then(|f| f.get("type")).and_then(Value::as_str) {
            Some("audio/pcmu") => Format::Pcmu,
            Some("audio/pcma") => Format::Pcma,
            _ => Format::Pcm24,
        }
    }
}

#[derive(Debug, Clone)]
enum Plan {
    Say {
        prompt: Prompt,
        then_call: Option<Call>,
    },
    Call(Call),
}

#[derive(Debug)]
struct Active {
    id: String,
    item_id: String,
    output_index: u32,
    audio: Arc<[i16]>,
    pos: usize,
    next_frame_at: Duration,
    text: String,
    words: Vec<usize>,
    words_sent: usize,
    then_call: Option<Call>,
    output: Vec<Item>,
    audio_started: bool,
    ws_pending: Vec<u8>,
    ws_frames: usize,
}

/// One session's simulated model.
pub struct Engine {
    id: String,
    tag: String,
    transport: Transport,
    scenario: Arc<Scenario>,
    record: Arc<SessionRecord>,
    session: Value,
    configured: bool,
    voice_locked: bool,
    in_format: Format,
    out_format: Format,
    vad: EnergyVad,
    vad_on: bool,
    create_response: bool,
    interrupt_response: bool,
    idle_timeout: Option<Duration>,
    transcription_on: bool,
    frame: Vec<i16>,
    decode_buf: Vec<i16>,
    audio_ms: u64,
    buffer_ms: u64,
    prefix: VecDeque<i16>,
    prefix_max: usize,
    turn: Vec<i16>,
    in_turn: bool,
    turn_item: Option<String>,
    speech_start_ms: u64,
    last_turn_audio: Option<Arc<[i16]>>,
    items: Vec<Item>,
    cursor: usize,
    caller_input: bool,
    pending_heard: Option<String>,
    /// Short turns heard so far (`short_turns.heard` is used in order).
    short_heard: usize,
    awaiting_call: Option<String>,
    last_output: Option<String>,
    active: Option<Active>,
    playing: Option<(String, Duration)>,
    idle_at: Option<Duration>,
    inject_next: usize,
    expire_at: Duration,
    close_at: Option<Duration>,
    seq: u64,
    out: VecDeque<Output>,
    closed: bool,
}

impl Engine {
    /// A new session; call [`Engine::open`] when its channel is up.
    pub fn new(cfg: EngineConfig, record: Arc<SessionRecord>) -> Self {
        let tag: String = cfg
            .session_id
            .chars()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let mut session = json!({
            "type": "realtime",
            "object": "realtime.session",
            "id": cfg.session_id,
            "model": cfg.model,
            "output_modalities": ["audio"],
            "instructions": "You are a helpful assistant.",
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": null,
            "truncation": "auto",
            "prompt": null,
            "expires_at": cfg.unix_now + MAX_SESSION.as_secs() as i64,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": null,
                    "noise_reduction": null,
                    "turn_detection": {
                        "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                        "silence_duration_ms": 500, "idle_timeout_ms": null,
                        "create_response": true, "interrupt_response": true
                    }
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1.0}
            },
            "include": null
        });
        let configured = cfg.initial.is_some();
        if let Some(initial) = &cfg.initial {
            merge(&mut session, initial);
            record.with(|l| l.session_updates.push(initial.clone()));
        }
        let expire_at = match cfg.scenario.faults.session_expired_after_ms {
            Some(ms) => Duration::from_millis(ms).min(MAX_SESSION),
            None => MAX_SESSION,
        };
        let close_at = cfg
            .scenario
            .faults
            .close_after_ms
            .map(Duration::from_millis);
        let mut e = Engine {
            id: cfg.session_id,
            tag,
            transport: cfg.transport,
            scenario: cfg.scenario,
            record,
            session,
            configured,
            voice_locked: false,
            in_format: Format::Pcm24,
            out_format: Format::Pcm24,
            vad: EnergyVad::new(VadSettings::default()),
            vad_on: true,
            create_response: true,
            interrupt_response: true,
            idle_timeout: None,
            transcription_on: false,
            frame: Vec::with_capacity(FRAME),
            decode_buf: Vec::with_capacity(FRAME * 8),
            audio_ms: 0,
            buffer_ms: 0,
            prefix: VecDeque::new(),
            prefix_max: 0,
            turn: Vec::new(),
            in_turn: false,
            turn_item: None,
            speech_start_ms: 0,
            last_turn_audio: None,
            items: Vec::new(),
            cursor: 0,
            caller_input: false,
            pending_heard: None,
            short_heard: 0,
            awaiting_call: None,
            last_output: None,
            active: None,
            playing: None,
            idle_at: None,
            inject_next: 0,
            expire_at,
            close_at,
            seq: 0,
            out: VecDeque::new(),
            closed: false,
        };
        e.apply_session();
        e.record.with(|l| l.session = e.session.clone());
        e
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// True once the engine asked to close.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The channel is up: sends `session.created`.
    pub fn open(&mut self, _now: Duration) {
        let session = self.typed_session();
        let event_id = self.event_id();
        self.emit(ServerEvent::SessionCreated { event_id, session });
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Engine::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.closed {
            return None;
        }
        let injections = &self.scenario.faults.inject;
        [
            self.active.as_ref().map(|a| a.next_frame_at),
            self.playing.as_ref().map(|p| p.1),
            self.idle_at,
            injections
                .get(self.inject_next)
                .map(|i| Duration::from_millis(i.at_ms)),
            Some(self.expire_at),
            self.close_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Advances time to `now`: paces model audio, fires timers and faults.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.closed {
            return;
        }
        if now >= self.expire_at {
            self.error_full(
                "invalid_request_error",
                Some("session_expired"),
                "Your session hit the maximum duration of 60 minutes.",
                None,
                None,
            );
            self.close(CloseReason::Expired, "session_expired");
            return;
        }
        if self.close_at.is_some_and(|t| now >= t) {
            self.close(CloseReason::Fault, "fault: channel closed");
            return;
        }
        while let Some(inj) = self.scenario.faults.inject.get(self.inject_next) {
            if Duration::from_millis(inj.at_ms) > now {
                break;
            }
            let text = match (&inj.raw, &inj.event) {
                (Some(raw), _) => raw.clone(),
                (None, Some(ev)) => {
                    let mut ev = ev.clone();
                    if let Some(obj) = ev.as_object_mut() {
                        if !obj.contains_key("event_id") {
                            obj.insert("event_id".into(), Value::String(self.event_id()));
                        }
                    }
                    ev.to_string()
                }
                (None, None) => String::new(),
            };
            self.inject_next += 1;
            self.record.sent("(injected)");
            self.out.push_back(Output::Raw(text));
        }
        if let Some((resp, at)) = &self.playing {
            if now >= *at {
                let response_id = resp.clone();
                self.playing = None;
                let event_id = self.event_id();
                self.emit(ServerEvent::OutputAudioBufferStopped {
                    event_id,
                    response_id,
                });
            }
        }
        // bounded: a response has finitely many frames, and a late wake-up catches up at once
        while self.active.as_ref().is_some_and(|a| a.next_frame_at <= now) {
            self.next_frame(now);
        }
        if self.idle_at.is_some_and(|t| now >= t) {
            self.idle_at = None;
            if self.active.is_none() && !self.in_turn {
                let item_id = self.new_id("item");
                let event_id = self.event_id();
                self.emit(ServerEvent::InputAudioBufferTimeoutTriggered {
                    event_id,
                    audio_start_ms: self.audio_ms,
                    audio_end_ms: self.audio_ms,
                    item_id,
                });
                let prompt = self.scenario.idle.clone();
                self.start_response(
                    now,
                    Plan::Say {
                        prompt,
                        then_call: None,
                    },
                );
            }
        }
    }

    /// A client event as received (text of one data-channel message or WebSocket frame).
    pub fn handle_text(&mut self, now: Duration, text: &str) {
        if self.closed {
            return;
        }
        if text.len() > MAX_EVENT_BYTES {
            self.record.received("(too large)");
            self.error_full(
                "invalid_request_error",
                Some("message_too_large"),
                &format!(
                    "Message of {} bytes exceeds the maximum of {MAX_EVENT_BYTES} bytes.",
                    text.len()
                ),
                None,
                None,
            );
            return;
        }
        match ClientEvent::parse(text) {
            Ok(ev) => self.handle_event(now, ev),
            Err(e) => {
                self.record.received("(invalid)");
                self.error_full(
                    "invalid_request_error",
                    Some("invalid_json"),
                    &format!("We could not parse the JSON body of your request: {e}"),
                    None,
                    None,
                );
            }
        }
    }

    /// A parsed client event.
    pub fn handle_event(&mut self, now: Duration, ev: ClientEvent) {
        if self.closed {
            return;
        }
        self.record.received(ev.kind());
        let event_id = ev.event_id().map(str::to_string);
        if let ClientEvent::Unknown(raw) = &ev {
            let kind = ev.kind().to_string();
            if ev.is_malformed() {
                self.error_full(
                    "invalid_request_error",
                    Some("invalid_value"),
                    &format!("The '{kind}' event has missing or invalid fields: {raw}"),
                    None,
                    event_id,
                );
            } else {
                self.error_full(
                    "invalid_request_error",
                    Some("invalid_value"),
                    &format!(
                        "Invalid value: '{kind}'. Supported values are: {}.",
                        crate::openai::events::CLIENT_EVENT_TYPES.join(", ")
                    ),
                    Some("type"),
                    event_id,
                );
            }
            return;
        }
        if !self.configured && !matches!(ev, ClientEvent::SessionUpdate { .. }) {
            self.error_full(
                "invalid_request_error",
                Some("session_not_configured"),
                "Send session.update (with session.type) before other events.",
                None,
                event_id,
            );
            return;
        }
        match ev {
            ClientEvent::SessionUpdate { session, .. } => self.session_update(session, event_id),
            ClientEvent::InputAudioBufferAppend { audio, .. } => {
                if self.transport == Transport::WebRtc {
                    self.error_full(
                        "invalid_request_error",
                        Some("invalid_value"),
                        "input_audio_buffer.append is not supported over WebRTC; send audio as RTP.",
                        Some("type"),
                        event_id,
                    );
                    return;
                }
                match base64::engine::general_purpose::STANDARD.decode(audio.as_bytes()) {
                    Ok(bytes) => self.append_encoded(now, &bytes),
                    Err(_) => self.error_full(
                        "invalid_request_error",
                        Some("invalid_value"),
                        "Invalid 'audio': expected base64-encoded audio.",
                        Some("audio"),
                        event_id,
                    ),
                }
            }
            ClientEvent::InputAudioBufferCommit { .. } => {
                if self.buffer_ms < 100 {
                    self.error_full(
                        "invalid_request_error",
                        Some("input_audio_buffer_commit_empty"),
                        &format!("Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, but buffer only has {}.00ms of audio.", self.buffer_ms),
                        None,
                        event_id,
                    );
                } else {
                    let item = self.turn_item.take().unwrap_or_else(|| self.new_id("item"));
                    self.commit_turn(now, item, false);
                }
            }
            ClientEvent::InputAudioBufferClear { .. } => {
                self.buffer_ms = 0;
                self.turn.clear();
                self.in_turn = false;
                self.turn_item = None;
                self.vad.reset();
                let event_id = self.event_id();
                self.emit(ServerEvent::InputAudioBufferCleared { event_id });
            }
            ClientEvent::OutputAudioBufferClear { .. } => {
                if self.transport != Transport::WebRtc {
                    self.error_full(
                        "invalid_request_error",
                        Some("invalid_value"),
                        "output_audio_buffer.clear is only supported over WebRTC.",
                        Some("type"),
                        event_id,
                    );
                    return;
                }
                if self.active.as_ref().is_some_and(|a| a.audio_started) {
                    self.cancel(now, "client_cancelled", true);
                } else if let Some((response_id, _)) = self.playing.take() {
                    self.out.push_back(Output::ClearAudio);
                    let event_id = self.event_id();
                    self.emit(ServerEvent::OutputAudioBufferCleared {
                        event_id,
                        response_id,
                    });
                }
            }
            ClientEvent::ConversationItemCreate { item, .. } => self.item_create(item, event_id),
            ClientEvent::ConversationItemTruncate {
                item_id,
                content_index,
                audio_end_ms,
                ..
            } => {
                let is_assistant_audio = self.items.iter().any(|i| {
                    matches!(i, Item::Message { id: Some(id), role, .. } if *id == item_id && role == "assistant")
                });
                if !is_assistant_audio {
                    self.error_full(
                        "invalid_request_error",
                        Some("invalid_value"),
                        &format!("Invalid 'item_id': no assistant audio item with id '{item_id}'."),
                        Some("item_id"),
                        event_id,
                    );
                } else {
                    let ev = self.event_id();
                    self.emit(ServerEvent::ConversationItemTruncated {
                        event_id: ev,
                        item_id,
                        content_index,
                        audio_end_ms,
                    });
                }
            }
            ClientEvent::ConversationItemDelete { item_id, .. } => {
                let before = self.items.len();
                self.items.retain(|i| i.id() != Some(item_id.as_str()));
                if self.items.len() == before {
                    self.error_full(
                        "invalid_request_error",
                        Some("item_not_found"),
                        &format!("Item with item_id not found: {item_id}"),
                        Some("item_id"),
                        event_id,
                    );
                } else {
                    let ev = self.event_id();
                    self.emit(ServerEvent::ConversationItemDeleted {
                        event_id: ev,
                        item_id,
                    });
                }
            }
            ClientEvent::ConversationItemRetrieve { item_id, .. } => {
                match self
                    .items
                    .iter()
                    .find(|i| i.id() == Some(item_id.as_str()))
                    .cloned()
                {
                    Some(item) => {
                        let ev = json!({"type": "conversation.item.retrieved", "event_id": self.event_id(), "item": item});
                        self.emit(ServerEvent::Unknown(ev));
                    }
                    None => self.error_full(
                        "invalid_request_error",
                        Some("item_not_found"),
                        &format!("Item with item_id not found: {item_id}"),
                        Some("item_id"),
                        event_id,
                    ),
                }
            }
            ClientEvent::ResponseCreate { .. } => {
                if let Some(a) = &self.active {
                    let id = a.id.clone();
                    self.error_full(
                        "invalid_request_error",
                        Some("conversation_already_has_active_response"),
                        &format!("Conversation already has an active response in progress: {id}. Wait until the response is finished before creating a new one."),
                        None,
                        event_id,
                    );
                    return;
                }
                let plan = self.plan();
                self.start_response(now, plan);
            }
            ClientEvent::ResponseCancel { .. } => {
                if self.active.is_some() {
                    self.cancel(now, "client_cancelled", false);
                } else {
                    self.error_full(
                        "invalid_request_error",
                        Some("response_cancel_not_active"),
                        "Cancellation failed: no active response found",
                        None,
                        event_id,
                    );
                }
            }
            ClientEvent::Unknown(_) => {}
        }
    }

    /// Caller audio from WebRTC, decoded to 24 kHz.
    pub fn handle_audio(&mut self, now: Duration, samples: &[i16]) {
        if self.closed {
            return;
        }
        self.record.add_audio_in(samples.len());
        if !self.configured {
            return;
        }
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (FRAME - self.frame.len()).min(rest.len());
            self.frame.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.frame.len() == FRAME {
                let frame = std::mem::take(&mut self.frame);
                self.input_frame(now, &frame);
                self.frame = frame;
                self.frame.clear();
            }
        }
    }

    fn append_encoded(&mut self, now: Duration, bytes: &[u8]) {
        let mut buf = std::mem::take(&mut self.decode_buf);
        buf.clear();
        match self.in_format {
            Format::Pcm24 => buf.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]])),
            ),
            Format::Pcmu | Format::Pcma => {
                let narrow: Vec<i16> = bytes
                    .iter()
                    .map(|&b| {
                        if self.in_format == Format::Pcmu {
                            g711::ulaw_decode(b)
                        } else {
                            g711::alaw_decode(b)
                        }
                    })
                    .collect();
                voice::upsample_8k_to_24k_into(&narrow, &mut buf);
            }
        }
        self.handle_audio(now, &buf);
        self.decode_buf = buf;
    }

    fn input_frame(&mut self, now: Duration, frame: &[i16]) {
        self.audio_ms += 20;
        self.buffer_ms += 20;
        if self.in_turn || !self.vad_on {
            if self.turn.len() + frame.len() <= MAX_TURN_SAMPLES {
                self.turn.extend_from_slice(frame);
            }
        } else {
            self.prefix.extend(frame.iter().copied());
            while self.prefix.len() > self.prefix_max {
                self.prefix.pop_front();
            }
        }
        if !self.vad_on {
            return;
        }
        match self.vad.push(frame, self.audio_ms) {
            Some(VadEvent::Started { audio_start_ms }) => {
                self.in_turn = true;
                self.idle_at = None;
                self.speech_start_ms = audio_start_ms;
                self.turn.clear();
                self.turn.extend(self.prefix.drain(..));
                let item_id = self.new_id("item");
                self.turn_item = Some(item_id.clone());
                let event_id = self.event_id();
                self.emit(ServerEvent::SpeechStarted {
                    event_id,
                    audio_start_ms,
                    item_id,
                });
                let interrupt =
                    self.interrupt_response && (self.active.is_some() || self.playing.is_some());
                if interrupt {
                    if self.active.is_some() {
                        self.cancel(now, "turn_detected", true);
                    } else if let Some((response_id, _)) = self.playing.take() {
                        self.clear_audio(response_id);
                    }
                }
            }
            Some(VadEvent::Stopped { audio_end_ms }) => {
                self.in_turn = false;
                let item_id = self.turn_item.take().unwrap_or_else(|| self.new_id("item"));
                let event_id = self.event_id();
                self.emit(ServerEvent::SpeechStopped {
                    event_id,
                    audio_end_ms,
                    item_id: item_id.clone(),
                });
                self.commit_turn(now, item_id, true);
            }
            None => {}
        }
    }

    fn commit_turn(&mut self, now: Duration, item_id: String, by_vad: bool) {
        self.buffer_ms = 0;
        self.last_turn_audio = Some(Arc::from(std::mem::take(&mut self.turn)));
        let previous_item_id = self.items.last().and_then(|i| i.id().map(str::to_string));
        let event_id = self.event_id();
        self.emit(ServerEvent::InputAudioBufferCommitted {
            event_id,
            previous_item_id: previous_item_id.clone(),
            item_id: item_id.clone(),
        });
        let heard = self.heard_for_turn();
        let item = Item::Message {
            id: Some(item_id.clone()),
            object: Some("realtime.item".into()),
            status: Some("completed".into()),
            role: "user".into(),
            content: vec![ContentPart::InputAudio {
                audio: None,
                transcript: None,
            }],
        };
        self.add_item(item.clone(), previous_item_id, true);
        self.caller_input = true;
        if self.transcription_on {
            let event_id = self.event_id();
            self.emit(ServerEvent::InputTranscriptionDelta {
                event_id,
                item_id: item_id.clone(),
                content_index: 0,
                delta: heard.clone(),
            });
            let event_id = self.event_id();
            let seconds = self
                .last_turn_audio
                .as_ref()
                .map_or(0.0, |a| a.len() as f64 / 24_000.0);
            self.emit(ServerEvent::InputTranscriptionCompleted {
                event_id,
                item_id: item_id.clone(),
                content_index: 0,
                transcript: heard.clone(),
                usage: Some(json!({"type": "duration", "seconds": seconds})),
            });
            self.record.with(|l| {
                if let Some(v) = l
                    .items
                    .iter_mut()
                    .rev()
                    .find(|v| v.get("id").and_then(Value::as_str) == Some(item_id.as_str()))
                {
                    v["content"][0]["transcript"] = Value::String(heard);
                }
            });
        }
        if by_vad && self.create_response && self.active.is_none() {
            let plan = self.plan();
            self.start_response(now, plan);
        }
    }

    /// The transcript of a caller turn: what the step waiting for it says was heard.
    fn heard_for_turn(&mut self) -> String {
        if let Some(h) = self.pending_heard.take() {
            return h;
        }
        if let Some(short) = &self.scenario.short_turns {
            let ms = self
                .last_turn_audio
                .as_ref()
                .map_or(0, |a| a.len() as u64 * 1000 / 24_000);
            if ms < u64::from(short.max_ms) {
                if let Some(h) = short.heard.get(self.short_heard) {
                    self.short_heard += 1;
                    return h.clone();
                }
            }
        }
        if self.scenario.mode == Mode::Script {
            if let Some(step) = self.scenario.steps.get(self.cursor) {
                if step.after_caller {
                    if let Some(h) = &step.heard {
                        return h.clone();
                    }
                }
            }
        }
        self.scenario.default_heard.clone()
    }

    fn session_update(&mut self, session: Session, event_id: Option<String>) {
        let Ok(update) = serde_json::to_value(&session) else {
            return;
        };
        if let Err((code, message, param)) = self.validate(&session) {
            self.error_full(
                "invalid_request_error",
                Some(code),
                &message,
                param.as_deref(),
                event_id,
            );
            return;
        }
        let mut next = self.session.clone();
        merge(&mut next, &update);
        // the server owns these
        next["id"] = Value::String(self.id.clone());
        next["object"] = Value::String("realtime.session".into());
        self.session = next;
        self.configured = true;
        self.apply_session();
        let snapshot = self.session.clone();
        self.record.with(|l| {
            l.session_updates.push(update);
            l.session = snapshot;
        });
        let session = self.typed_session();
        let event_id = self.event_id();
        self.emit(ServerEvent::SessionUpdated { event_id, session });
    }

    fn validate(&self, s: &Session) -> Result<(), (&'static str, String, Option<String>)> {
        check_session(s)?;
        let new_voice = s
            .audio
            .as_ref()
            .and_then(|a| a.output.as_ref())
            .and_then(|o| o.voice.as_deref());
        let old_voice = self.session["audio"]["output"]["voice"].as_str();
        if self.voice_locked && new_voice.is_some() && new_voice != old_voice {
            return Err((
                "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.".into(),
                Some("session.audio.output.voice".into()),
            ));
        }
        Ok(())
    }

    /// Reads the effective session into the engine's settings.
    fn apply_session(&mut self) {
        let input = &self.session["audio"]["input"];
        self.in_format = Format::from_session(input.get("format"));
        self.out_format = Format::from_session(self.session["audio"]["output"].get("format"));
        self.transcription_on = input.get("transcription").is_some_and(|t| !t.is_null());
        let td = input.get("turn_detection").cloned().unwrap_or(Value::Null);
        self.vad_on = !td.is_null();
        self.create_response = td
            .get("create_response")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        self.interrupt_response = td
            .get("interrupt_response")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        self.idle_timeout = td
            .get("idle_timeout_ms")
            .and_then(Value::as_u64)
            .map(Duration::from_millis);
        let semantic = td.get("type").and_then(Value::as_str) == Some("semantic_vad");
        let settings = VadSettings {
            threshold: td.get("threshold").and_then(Value::as_f64).unwrap_or(0.5),
            prefix_padding_ms: td
                .get("prefix_padding_ms")
                .and_then(Value::as_u64)
                .unwrap_or(300),
            // semantic_vad at "auto" eagerness waits a little longer than server_vad's default
            silence_duration_ms: td
                .get("silence_duration_ms")
                .and_then(Value::as_u64)
                .unwrap_or(if semantic { 800 } else { 500 }),
        };
        self.prefix_max = (settings.prefix_padding_ms as usize) * 24;
        self.vad.set(settings);
    }

    fn typed_session(&self) -> Session {
        serde_json::from_value(self.session.clone()).unwrap_or_default()
    }

    fn item_create(&mut self, item: Item, event_id: Option<String>) {
        let previous_item_id = self.items.last().and_then(|i| i.id().map(str::to_string));
        let item = match item {
            Item::Unknown(raw) => {
                self.error_full(
                    "invalid_request_error",
                    Some("invalid_value"),
                    &format!("Invalid 'item': {raw}"),
                    Some("item"),
                    event_id,
                );
                return;
            }
            Item::FunctionCallOutput {
                id,
                call_id,
                output,
                ..
            } => {
                let name = self.items.iter().find_map(|i| match i {
                    Item::FunctionCall {
                        call_id: c, name, ..
                    } if *c == call_id => Some(name.clone()),
                    _ => None,
                });
                if self.awaiting_call.as_deref() == Some(call_id.as_str()) {
                    self.awaiting_call = None;
                    self.last_output = Some(output.clone());
                }
                let out = ToolOutput {
                    call_id: call_id.clone(),
                    name,
                    output: output.clone(),
                };
                self.record.with(|l| l.tool_outputs.push(out));
                Item::FunctionCallOutput {
                    id: Some(id.unwrap_or_else(|| self.new_id("item"))),
                    object: Some("realtime.item".into()),
                    status: Some("completed".into()),
                    call_id,
                    output,
                }
            }
            Item::Message {
                id, role, content, ..
            } => {
                if role == "user" {
                    for part in &content {
                        if let ContentPart::InputText { text } = part {
                            self.text_item(text);
                        }
                    }
                }
                Item::Message {
                    id: Some(id.unwrap_or_else(|| self.new_id("item"))),
                    object: Some("realtime.item".into()),
                    status: Some("completed".into()),
                    role,
                    content,
                }
            }
            Item::FunctionCall {
                id,
                call_id,
                name,
                arguments,
                ..
            } => Item::FunctionCall {
                id: Some(id.unwrap_or_else(|| self.new_id("item"))),
                object: Some("realtime.item".into()),
                status: Some("completed".into()),
                call_id,
                name,
                arguments,
            },
        };
        self.add_item(item, previous_item_id, true);
    }

    /// A text from the caller (typed, or DTMF digits): it may pick a branch of the script.
    fn text_item(&mut self, text: &str) {
        let text = text.trim().to_string();
        self.record.with(|l| l.text_items.push(text.clone()));
        // the relay sends keys as `[keypad] 2`; branches name the keys alone
        let key = text
            .strip_prefix("[keypad]")
            .map_or(text.as_str(), str::trim_start);
        self.caller_input = true;
        if self.scenario.mode == Mode::Script {
            if let Some(step) = self.scenario.steps.get(self.cursor) {
                if let Some(&to) = step.branches.get(key) {
                    self.cursor = to;
                    // a branch taken by a text has consumed the caller's turn
                    self.caller_input = self.scenario.steps[to].after_caller;
                    self.awaiting_call = None;
                }
            }
        }
        self.pending_heard = Some(text);
    }

    fn add_item(&mut self, item: Item, previous_item_id: Option<String>, done: bool) {
        self.items.push(item.clone());
        let value = serde_json::to_value(&item).unwrap_or(Value::Null);
        self.record.with(|l| l.items.push(value));
        let event_id = self.event_id();
        self.emit(ServerEvent::ConversationItemAdded {
            event_id,
            previous_item_id: previous_item_id.clone(),
            item: item.clone(),
        });
        if done {
            let event_id = self.event_id();
            self.emit(ServerEvent::ConversationItemDone {
                event_id,
                previous_item_id,
                item,
            });
        }
    }

    /// What the next response does.
    fn plan(&mut self) -> Plan {
        let fallback = || Plan::Say {
            prompt: self.scenario.fallback.clone(),
            then_call: None,
        };
        if self.awaiting_call.is_some() {
            // the script waits for the function_call_output before going on
            return fallback();
        }
        if self.scenario.mode == Mode::Echo && self.caller_input {
            self.caller_input = false;
            self.pending_heard = None;
            if let Some(audio) = self.last_turn_audio.clone().filter(|a| !a.is_empty()) {
                return Plan::Say {
                    prompt: Prompt {
                        text: self.scenario.default_heard.clone(),
                        audio,
                    },
                    then_call: None,
                };
            }
            return fallback();
        }
        let Some(step) = self.scenario.steps.get(self.cursor).cloned() else {
            return fallback();
        };
        if step.after_caller && !self.caller_input {
            return fallback();
        }
        if step.after_caller {
            self.caller_input = false;
            self.pending_heard = None;
        }
        self.cursor = if step.end {
            self.scenario.steps.len()
        } else {
            self.cursor + 1
        };
        match (step.say, step.call) {
            (Some(mut prompt), then_call) => {
                prompt.text = fill_template(&prompt.text, self.last_output.as_deref());
                Plan::Say { prompt, then_call }
            }
            (None, Some(call)) => Plan::Call(call),
            (None, None) => fallback(),
        }
    }

    fn start_response(&mut self, now: Duration, plan: Plan) {
        self.idle_at = None;
        let id = self.new_id("resp");
        let voice = self.session["audio"]["output"]["voice"].clone();
        let text_only = self.session["output_modalities"] == json!(["text"]);
        let response = Response {
            id: Some(id.clone()),
            object: Some("realtime.response".into()),
            status: Some("in_progress".into()),
            status_details: None,
            output: vec![],
            usage: None,
            extra: json!({
                "conversation_id": format!("conv_{}", self.tag),
                "output_modalities": self.session["output_modalities"],
                "max_output_tokens": self.session["max_output_tokens"],
                "audio": {"output": {"format": self.session["audio"]["output"]["format"], "voice": voice}},
                "metadata": null
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        };
        let event_id = self.event_id();
        self.emit(ServerEvent::ResponseCreated { event_id, response });
        let event_id = self.event_id();
        self.emit(ServerEvent::RateLimitsUpdated {
            event_id,
            rate_limits: vec![
                RateLimit {
                    name: Some("requests".into()),
                    limit: Some(5_000),
                    remaining: Some(4_999),
                    reset_seconds: Some(0.012),
                },
                RateLimit {
                    name: Some("tokens".into()),
                    limit: Some(800_000),
                    remaining: Some(799_000),
                    reset_seconds: Some(0.075),
                },
            ],
        });
        let mut active = Active {
            id,
            item_id: String::new(),
            output_index: 0,
            audio: Arc::from(Vec::new()),
            pos: 0,
            next_frame_at: now,
            text: String::new(),
            words: vec![],
            words_sent: 0,
            then_call: None,
            output: vec![],
            audio_started: false,
            ws_pending: Vec::new(),
            ws_frames: 0,
        };
        match plan {
            Plan::Call(call) => {
                self.emit_call(&mut active, call);
                self.finish(now, active, "completed", None);
            }
            Plan::Say { prompt, then_call } => {
                active.item_id = self.new_id("item");
                active.text = prompt.text;
                active.words = word_ends(&active.text);
                active.audio = prompt.audio;
                active.then_call = then_call;
                let item = Item::Message {
                    id: Some(active.item_id.clone()),
                    object: Some("realtime.item".into()),
                    status: Some("in_progress".into()),
                    role: "assistant".into(),
                    content: vec![],
                };
                let previous_item_id = self.items.last().and_then(|i| i.id().map(str::to_string));
                let event_id = self.event_id();
                self.emit(ServerEvent::OutputItemAdded {
                    event_id,
                    response_id: active.id.clone(),
                    output_index: 0,
                    item: item.clone(),
                });
                self.add_item(item, previous_item_id, false);
                let part = ResponsePart {
                    kind: Some(if text_only { "text" } else { "audio" }.into()),
                    text: text_only.then(String::new),
                    transcript: (!text_only).then(String::new),
                    audio: None,
                };
                let event_id = self.event_id();
                self.emit(ServerEvent::ContentPartAdded {
                    event_id,
                    response_id: active.id.clone(),
                    item_id: active.item_id.clone(),
                    output_index: 0,
                    content_index: 0,
                    part,
                });
                if text_only {
                    let event_id = self.event_id();
                    self.emit(ServerEvent::OutputTextDelta {
                        event_id,
                        response_id: active.id.clone(),
                        item_id: active.item_id.clone(),
                        output_index: 0,
                        content_index: 0,
                        delta: active.text.clone(),
                    });
                    let event_id = self.event_id();
                    self.emit(ServerEvent::OutputTextDone {
                        event_id,
                        response_id: active.id.clone(),
                        item_id: active.item_id.clone(),
                        output_index: 0,
                        content_index: 0,
                        text: active.text.clone(),
                    });
                    self.finish_say(now, active, "completed", None, true);
                    return;
                }
                self.voice_locked = true;
                if self.transport == Transport::WebRtc {
                    let event_id = self.event_id();
                    self.emit(ServerEvent::OutputAudioBufferStarted {
                        event_id,
                        response_id: active.id.clone(),
                    });
                }
                active.audio_started = true;
                self.active = Some(active);
                self.next_frame(now);
            }
        }
    }

    /// Sends the next 20 ms of the active response, its due transcript words, and finishes it
    /// after the last frame.
    fn next_frame(&mut self, now: Duration) {
        let Some(mut a) = self.active.take() else {
            return;
        };
        let total = a.audio.len();
        if a.pos < total {
            let len = FRAME.min(total - a.pos);
            let frame = AudioFrame {
                src: a.audio.clone(),
                start: a.pos,
                len,
            };
            a.pos += len;
            self.record.add_audio_out(FRAME);
            match self.transport {
                Transport::WebRtc => self.out.push_back(Output::Audio(frame)),
                Transport::WebSocket => {
                    encode_out(self.out_format, frame.samples(), &mut a.ws_pending);
                    a.ws_frames += 1;
                    if a.ws_frames >= WS_FRAMES_PER_DELTA || a.pos >= total {
                        self.flush_ws_audio(&mut a);
                    }
                }
            }
        }
        // transcript words in step with the audio
        let due = if total == 0 {
            a.words.len()
        } else {
            (a.words.len() * a.pos).div_ceil(total)
        };
        while a.words_sent < due.min(a.words.len()) {
            let from = if a.words_sent == 0 {
                0
            } else {
                a.words[a.words_sent - 1]
            };
            let to = a.words[a.words_sent];
            a.words_sent += 1;
            let event_id = self.event_id();
            self.emit(ServerEvent::OutputAudioTranscriptDelta {
                event_id,
                response_id: a.id.clone(),
                item_id: a.item_id.clone(),
                output_index: a.output_index,
                content_index: 0,
                delta: a.text[from..to].to_string(),
            });
        }
        a.next_frame_at += FRAME_DURATION;
        if a.pos >= total {
            let playout_end = a.next_frame_at.max(now);
            self.finish_say(playout_end, a, "completed", None, false);
        } else {
            self.active = Some(a);
        }
    }

    fn flush_ws_audio(&mut self, a: &mut Active) {
        if a.ws_pending.is_empty() {
            return;
        }
        let delta = base64::engine::general_purpose::STANDARD.encode(&a.ws_pending);
        a.ws_pending.clear();
        a.ws_frames = 0;
        let event_id = self.event_id();
        self.emit(ServerEvent::OutputAudioDelta {
            event_id,
            response_id: a.id.clone(),
            item_id: a.item_id.clone(),
            output_index: a.output_index,
            content_index: 0,
            delta,
        });
    }

    /// Ends the spoken part of a response (normally or cancelled) with the closing events.
    fn finish_say(
        &mut self,
        now: Duration,
        mut a: Active,
        status: &str,
        reason: Option<&str>,
        text_only: bool,
    ) {
        let completed = status == "completed";
        let spoken = if completed || a.words_sent == 0 {
            if completed {
                a.text.clone()
            } else {
                String::new()
            }
        } else {
            a.text[..a.words[a.words_sent - 1]].to_string()
        };
        if !text_only {
            if self.transport == Transport::WebSocket {
                self.flush_ws_audio(&mut a);
            }
            let event_id = self.event_id();
            self.emit(ServerEvent::OutputAudioDone {
                event_id,
                response_id: a.id.clone(),
                item_id: a.item_id.clone(),
                output_index: a.output_index,
                content_index: 0,
            });
            let event_id = self.event_id();
            self.emit(ServerEvent::OutputAudioTranscriptDone {
                event_id,
                response_id: a.id.clone(),
                item_id: a.item_id.clone(),
                output_index: a.output_index,
                content_index: 0,
                transcript: spoken.clone(),
            });
        }
        let part = if text_only {
            ResponsePart {
                kind: Some("text".into()),
                text: Some(spoken.clone()),
                ..Default::default()
            }
        } else {
            ResponsePart {
                kind: Some("audio".into()),
                transcript: Some(spoken.clone()),
                ..Default::default()
            }
        };
        let event_id = self.event_id();
        self.emit(ServerEvent::ContentPartDone {
            event_id,
            response_id: a.id.clone(),
            item_id: a.item_id.clone(),
            output_index: a.output_index,
            content_index: 0,
            part,
        });
        let content = if text_only {
            ContentPart::OutputText {
                text: Some(spoken.clone()),
            }
        } else {
            ContentPart::OutputAudio {
                audio: None,
                transcript: Some(spoken),
            }
        };
        let item = Item::Message {
            id: Some(a.item_id.clone()),
            object: Some("realtime.item".into()),
            status: Some(if completed { "completed" } else { "incomplete" }.into()),
            role: "assistant".into(),
            content: vec![content],
        };
        if let Some(slot) = self
            .items
            .iter_mut()
            .find(|i| i.id() == Some(a.item_id.as_str()))
        {
            *slot = item.clone();
        }
        let value = serde_json::to_value(&item).unwrap_or(Value::Null);
        let item_id = a.item_id.clone();
        self.record.with(|l| {
            if let Some(v) = l
                .items
                .iter_mut()
                .find(|v| v.get("id").and_then(Value::as_str) == Some(item_id.as_str()))
            {
                *v = value;
            }
        });
        let event_id = self.event_id();
        self.emit(ServerEvent::OutputItemDone {
            event_id,
            response_id: a.id.clone(),
            output_index: a.output_index,
            item: item.clone(),
        });
        let event_id = self.event_id();
        self.emit(ServerEvent::ConversationItemDone {
            event_id,
            previous_item_id: None,
            item: item.clone(),
        });
        a.output.push(item);
        if completed {
            if let Some(call) = a.then_call.take() {
                a.output_index += 1;
                self.emit_call(&mut a, call);
            }
        }
        let audio_started = a.audio_started && !text_only;
        let response_id = a.id.clone();
        self.finish(now, a, status, reason);
        if audio_started && self.transport == Transport::WebRtc {
            if completed {
                let event_id = self.event_id();
                self.emit(ServerEvent::OutputAudioBufferStopped {
                    event_id,
                    response_id,
                });
            } else {
                self.playing = Some((response_id, now + CANCEL_PLAYOUT));
            }
        }
    }

    fn emit_call(&mut self, a: &mut Active, mut call: Call) {
        call.arguments = fill_dates(&call.arguments, chrono::Utc::now().date_naive());
        let item_id = self.new_id("item");
        let call_id = self.new_id("call");
        let in_progress = Item::FunctionCall {
            id: Some(item_id.clone()),
            object: Some("realtime.item".into()),
            status: Some("in_progress".into()),
            call_id: call_id.clone(),
            name: call.name.clone(),
            arguments: String::new(),
        };
        let previous_item_id = self.items.last().and_then(|i| i.id().map(str::to_string));
        let event_id = self.event_id();
        self.emit(ServerEvent::OutputItemAdded {
            event_id,
            response_id: a.id.clone(),
            output_index: a.output_index,
            item: in_progress.clone(),
        });
        self.add_item(in_progress, previous_item_id, false);
        let event_id = self.event_id();
        self.emit(ServerEvent::FunctionCallArgumentsDelta {
            event_id,
            response_id: a.id.clone(),
            item_id: item_id.clone(),
            output_index: a.output_index,
            call_id: call_id.clone(),
            delta: call.arguments.clone(),
        });
        let event_id = self.event_id();
        self.emit(ServerEvent::FunctionCallArgumentsDone {
            event_id,
            response_id: a.id.clone(),
            item_id: item_id.clone(),
            output_index: a.output_index,
            call_id: call_id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
        });
        let item = Item::FunctionCall {
            id: Some(item_id.clone()),
            object: Some("realtime.item".into()),
            status: Some("completed".into()),
            call_id: call_id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
        };
        if let Some(slot) = self
            .items
            .iter_mut()
            .find(|i| i.id() == Some(item_id.as_str()))
        {
            *slot = item.clone();
        }
        let value = serde_json::to_value(&item).unwrap_or(Value::Null);
        let record_call = RecordedToolCall {
            call_id: call_id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
        };
        self.record.with(|l| {
            if let Some(v) = l
                .items
                .iter_mut()
                .find(|v| v.get("id").and_then(Value::as_str) == Some(item_id.as_str()))
            {
                *v = value;
            }
            l.tool_calls.push(record_call);
        });
        let event_id = self.event_id();
        self.emit(ServerEvent::OutputItemDone {
            event_id,
            response_id: a.id.clone(),
            output_index: a.output_index,
            item: item.clone(),
        });
        let event_id = self.event_id();
        self.emit(ServerEvent::ConversationItemDone {
            event_id,
            previous_item_id: None,
            item: item.clone(),
        });
        a.output.push(item);
        self.awaiting_call = Some(call_id);
    }

    fn finish(&mut self, now: Duration, a: Active, status: &str, reason: Option<&str>) {
        let out_tokens = a.words_sent as u64 * 4 + 8;
        let response = Response {
            id: Some(a.id.clone()),
            object: Some("realtime.response".into()),
            status: Some(status.into()),
            status_details: (status != "completed").then(|| StatusDetails {
                kind: Some(status.into()),
                reason: reason.map(str::to_string),
                error: None,
            }),
            output: a.output,
            usage: Some(json!({
                "total_tokens": 200 + out_tokens, "input_tokens": 200, "output_tokens": out_tokens,
                "input_token_details": {"text_tokens": 150, "audio_tokens": 50, "cached_tokens": 0},
                "output_token_details": {"text_tokens": out_tokens / 4, "audio_tokens": out_tokens - out_tokens / 4}
            })),
            extra: Map::from_iter([(
                "conversation_id".to_string(),
                Value::String(format!("conv_{}", self.tag)),
            )]),
        };
        let event_id = self.event_id();
        self.emit(ServerEvent::ResponseDone { event_id, response });
        self.active = None;
        if self.vad_on {
            if let Some(idle) = self.idle_timeout {
                self.idle_at = Some(now + idle);
            }
        }
    }

    /// Cancels the active response; `clear` also drops its audio (barge-in, buffer clear).
    fn cancel(&mut self, now: Duration, reason: &str, clear: bool) {
        let Some(a) = self.active.take() else {
            return;
        };
        let response_id = a.id.clone();
        let audio_started = a.audio_started;
        if clear && audio_started && self.transport == Transport::WebRtc {
            // stop the audio first: nothing more may leave after this point
            self.out.push_back(Output::ClearAudio);
        }
        let text_only = self.session["output_modalities"] == json!(["text"]);
        self.finish_say(now, a, "cancelled", Some(reason), text_only);
        if clear && audio_started && self.transport == Transport::WebRtc {
            self.playing = None;
            let event_id = self.event_id();
            self.emit(ServerEvent::OutputAudioBufferCleared {
                event_id,
                response_id,
            });
        }
    }

    fn clear_audio(&mut self, response_id: String) {
        self.out.push_back(Output::ClearAudio);
        let event_id = self.event_id();
        self.emit(ServerEvent::OutputAudioBufferCleared {
            event_id,
            response_id,
        });
    }

    fn close(&mut self, reason: CloseReason, why: &str) {
        self.closed = true;
        self.active = None;
        self.record.with(|l| l.closed = Some(why.to_string()));
        self.out.push_back(Output::Close(reason));
    }

    /// Notes that the transport closed (the client went away).
    pub fn closed_by_peer(&mut self, why: &str) {
        if !self.closed {
            self.closed = true;
            self.record.with(|l| l.closed = Some(why.to_string()));
        }
    }

    fn error_full(
        &mut self,
        kind: &str,
        code: Option<&str>,
        message: &str,
        param: Option<&str>,
        client_event_id: Option<String>,
    ) {
        let error = ErrorBody {
            kind: kind.into(),
            code: code.map(str::to_string),
            message: message.into(),
            param: param.map(str::to_string),
            event_id: client_event_id,
        };
        let value = serde_json::to_value(&error).unwrap_or(Value::Null);
        self.record.with(|l| l.errors_sent.push(value));
        let event_id = self.event_id();
        self.emit(ServerEvent::Error { event_id, error });
    }

    fn emit(&mut self, ev: ServerEvent) {
        self.record.sent(ev.kind());
        self.out.push_back(Output::Event(ev));
    }

    fn event_id(&mut self) -> String {
        self.seq += 1;
        format!("event_{}{:05}", self.tag, self.seq)
    }

    fn new_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}_{}{:05}", self.tag, self.seq)
    }
}

/// Ends of words (byte offsets) in `text`, each word carrying its leading space.
fn word_ends(text: &str) -> Vec<usize> {
    let mut ends = vec![];
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                ends.push(i);
            }
            in_word = false;
        } else {
            in_word = true;
        }
    }
    if in_word || ends.is_empty() {
        ends.push(text.len());
    }
    ends
}

fn encode_out(format: Format, samples: &[i16], out: &mut Vec<u8>) {
    match format {
        Format::Pcm24 => {
            for s in samples {
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
        Format::Pcmu | Format::Pcma => {
            let mut narrow = Vec::with_capacity(samples.len() / 3 + 1);
            voice::downsample_24k_to_8k_into(samples, &mut narrow);
            out.extend(narrow.iter().map(|&s| {
                if format == Format::Pcmu {
                    g711::ulaw_encode(s)
                } else {
                    g711::alaw_encode(s)
                }
            }));
        }
    }
}

/// Checks a session object as the service does: `session.type` required, known audio formats,
/// turn detection, tool names. Errors are (code, message, param).
pub fn check_session(s: &Session) -> Result<(), (&'static str, String, Option<String>)> {
    let invalid =
        |param: &str, message: String| Err(("invalid_value", message, Some(param.to_string())));
    match s.kind.as_deref() {
        None => {
            return Err((
                "missing_required_parameter",
                "Missing required parameter: 'session.type'.".into(),
                Some("session.type".into()),
            ))
        }
        Some("realtime") => {}
        Some(other) => {
            return invalid(
                "session.type",
                format!("Invalid value: '{other}'. Supported values are: 'realtime'."),
            )
        }
    }
    if let Some(m) = &s.output_modalities {
        if !(m == &["audio"] || m == &["text"]) {
            return invalid(
                "session.output_modalities",
                "Invalid 'output_modalities': use [\"audio\"] or [\"text\"].".into(),
            );
        }
    }
    if let Some(audio) = &s.audio {
        let formats = [
            (
                "session.audio.input.format",
                audio.input.as_ref().and_then(|i| i.format.as_ref()),
            ),
            (
                "session.audio.output.format",
                audio.output.as_ref().and_then(|o| o.format.as_ref()),
            ),
        ];
        for (param, f) in formats {
            let Some(f) = f else { continue };
            match (f.kind.as_str(), f.rate) {
                ("audio/pcm", None | Some(24_000)) | ("audio/pcmu" | "audio/pcma", None | Some(8_000)) => {}
                ("audio/pcm", Some(r)) => {
                    return invalid(
                        &format!("{param}.rate"),
                        format!("Invalid 'rate': {r}. Supported values are: 24000."),
                    )
                }
                (other, _) => {
                    return invalid(
                        &format!("{param}.type"),
                        format!("Invalid value: '{other}'. Supported values are: 'audio/pcm', 'audio/pcmu', and 'audio/pcma'."),
                    )
                }
            }
        }
        if let Some(Some(td)) = audio.input.as_ref().and_then(|i| i.turn_detection.as_ref()) {
            if td.kind != "server_vad" && td.kind != "semantic_vad" {
                return invalid(
                    "session.audio.input.turn_detection.type",
                    format!("Invalid value: '{}'. Supported values are: 'server_vad' and 'semantic_vad'.", td.kind),
                );
            }
            if td.threshold.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
                return invalid(
                    "session.audio.input.turn_detection.threshold",
                    "Invalid 'threshold': must be between 0 and 1.".into(),
                );
            }
        }
    }
    for (i, t) in s.tools.iter().flatten().enumerate() {
        if t.kind == "function" && t.name.as_deref().is_none_or(str::is_empty) {
            return Err((
                "missing_required_parameter",
                format!("Missing required parameter: 'session.tools[{i}].name'."),
                Some(format!("session.tools[{i}].name")),
            ));
        }
    }
    Ok(())
}

/// JSON merge: objects merge key by key, anything else replaces.
pub fn merge(base: &mut Value, update: &Value) {
    match (base, update) {
        (Value::Object(b), Value::Object(u)) => {
            for (k, v) in u {
                match b.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, u) => *b = u.clone(),
    }
}
