//! The registry of calls: what the admin API reads and how it reaches a live call.
//!
//! Each call's task owns its state; the registry holds only a handle per call: a snapshot of
//! the call's public view ([`CallDetail`], updated by the task through its [`CallPublisher`],
//! never locked across an `.await`) and the sender of the call's [`Control`] channel. Every
//! change is also broadcast as a [`CallEvent`]; a subscriber that falls behind loses events
//! (and is told so), it never slows a call.

use crate::booking::CallKind;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

/// Ended calls kept for `GET /api/calls?state=ended`.
pub const ENDED_KEPT: usize = 200;
/// Events buffered per subscriber before it is counted as lagging.
pub const EVENT_BUFFER: usize = 1024;
/// Control requests queued per call.
const CONTROL_QUEUE: usize = 16;

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// The INVITE arrived; the realtime session is being opened.
    Ringing,
    /// Answered: caller and agent talk.
    Answered,
    /// Over.
    Ended,
}

/// Who said a transcript line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    /// The caller (input transcription).
    Caller,
    /// The agent (output transcript).
    Agent,
    /// The caller's keypad (DTMF digits).
    Keypad,
    /// The operator (text injected with `say`).
    Operator,
}

/// One line of a call's transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Turn {
    /// Who spoke.
    pub speaker: Speaker,
    /// What was said (so far, while `final` is false).
    pub text: String,
    /// Milliseconds since the call started when the turn began.
    pub at_ms: u64,
    /// The turn is complete.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The agent was interrupted: the caller heard only part of this.
    pub cut_off: bool,
    /// The realtime conversation item this turn belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
}

/// One tool call and its result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallRecord {
    /// The model's call id.
    pub call_id: String,
    /// The tool.
    pub name: String,
    /// The arguments as the model sent them (JSON if they parsed, else the raw text).
    pub arguments: Value,
    /// The result given to the model; `null` while running.
    pub result: Value,
    /// The tool answered without an error.
    pub ok: bool,
    /// Milliseconds since the call started when the model called it.
    pub at_ms: u64,
    /// How long it took; `None` while running.
    pub duration_ms: Option<u64>,
}

/// Media counters of a call, refreshed every few seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MediaStats {
    /// The phone leg's codec (`PCMU`, `PCMA`).
    pub codec: String,
    /// RTP packets from the caller.
    pub rtp_in: u64,
    /// RTP packets to the caller.
    pub rtp_out: u64,
    /// Caller packets lost in the network.
    pub lost: u64,
    /// Interarrival jitter of the caller's stream, in milliseconds.
    pub jitter_ms: f64,
    /// Frames of the caller's audio concealed (lost or late).
    pub concealed_frames: u64,
    /// Current jitter buffer depth, in milliseconds.
    pub jitter_buffer_ms: u32,
    /// Times the caller interrupted the agent.
    pub barge_ins: u64,
    /// Frames of the caller's audio the agent got as silence: the agent's own voice coming
    /// back on the caller's line (`bridge.echo_gate`).
    pub echo_gated_frames: u64,
    /// Seconds of caller audio sent to the agent.
    pub audio_to_agent_s: f64,
    /// Seconds of agent audio played to the caller.
    pub audio_to_caller_s: f64,
}

/// A call's public view: what `GET /api/calls/{id}` returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallDetail {
    /// The relay's call id.
    pub id: String,
    /// The caller (From URI).
    pub from: String,
    /// The dialled party (To URI).
    pub to: String,
    /// The agent answering now (changes on a handoff).
    pub agent: String,
    /// A phone call or a browser's call.
    pub kind: CallKind,
    /// The trunk the call came from.
    pub trunk: Option<String>,
    /// `udp` or `tcp`.
    pub transport: String,
    /// The caller's SIP Call-ID (not unique: `id` is the call's identity).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sip_call_id: String,
    /// Where the call is.
    pub state: CallState,
    /// When the INVITE arrived.
    pub started_at: DateTime<Utc>,
    /// When the relay answered.
    pub answered_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// How it ended (`caller_bye`, `agent_end_call`, `transferred`, ...).
    pub end_reason: Option<String>,
    /// The operator muted the caller (the agent hears nothing).
    pub muted: bool,
    /// The realtime session id (`sess_…`), once known.
    pub session_id: Option<String>,
    /// The transcript so far.
    pub transcript: Vec<Turn>,
    /// Tool calls so far.
    pub tool_calls: Vec<ToolCallRecord>,
    /// Media counters.
    pub media: MediaStats,
    /// The call's recording, once it is finished (`None`: not recorded).
    pub recording: Option<crate::booking::RecordingRef>,
    /// On a call the relay placed: who answered, as answering-machine detection found
    /// (`person`, `machine`, `silent`, `unsure`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<&'static str>,
}

/// The short form of a call, for lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallSummary {
    /// The relay's call id.
    pub id: String,
    /// The caller.
    pub from: String,
    /// The dialled party.
    pub to: String,
    /// The agent answering now.
    pub agent: String,
    /// A phone call or a browser's call.
    pub kind: CallKind,
    /// Where the call is.
    pub state: CallState,
    /// When the INVITE arrived.
    pub started_at: DateTime<Utc>,
    /// When the relay answered.
    pub answered_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// How it ended.
    pub end_reason: Option<String>,
    /// The operator muted the caller.
    pub muted: bool,
    /// Transcript lines so far.
    pub turns: usize,
}

impl CallDetail {
    /// A new call, ringing.
    pub fn new(id: &str, from: &str, to: &str, agent: &str, trunk: Option<&str>) -> Self {
        Self {
            id: id.into(),
            from: from.into(),
            to: to.into(),
            agent: agent.into(),
            kind: CallKind::Phone,
            trunk: trunk.map(Into::into),
            transport: "udp".into(),
            sip_call_id: String::new(),
            state: CallState::Ringing,
            started_at: Utc::now(),
            answered_at: None,
            ended_at: None,
            end_reason: None,
            muted: false,
            session_id: None,
            transcript: Vec::new(),
            tool_calls: Vec::new(),
            media: MediaStats::default(),
            recording: None,
            answered_by: None,
        }
    }

    /// The short form.
    pub fn summary(&self) -> CallSummary {
        CallSummary {
            id: self.id.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            agent: self.agent.clone(),
            kind: self.kind,
            state: self.state,
            started_at: self.started_at,
            answered_at: self.answered_at,
            ended_at: self.ended_at,
            end_reason: self.end_reason.clone(),
            muted: self.muted,
            turns: self.transcript.len(),
        }
    }
}

/// What happened on a call, as the live event stream carries it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallEvent {
    /// A call arrived.
    Started {
        /// The call as it is now.
        call: CallSummary,
    },
    /// The relay answered.
    Answered,
    /// The call ended.
    Ended {
        /// Why.
        reason: String,
    },
    /// A transcript line began, grew or ended (`index` is its place in the transcript).
    Transcript {
        /// Index in the call's transcript.
        index: usize,
        /// The line as it is now.
        turn: Turn,
    },
    /// The model called a tool.
    ToolCall {
        /// The model's call id (`tool_call_id` in JSON: the envelope's `call_id` is the call's).
        #[serde(rename = "tool_call_id")]
        call_id: String,
        /// The tool.
        name: String,
        /// Its arguments.
        arguments: Value,
    },
    /// A tool answered.
    ToolResult {
        /// The model's call id (`tool_call_id` in JSON, as in [`CallEvent::ToolCall`]).
        #[serde(rename = "tool_call_id")]
        call_id: String,
        /// The tool.
        name: String,
        /// What the model got.
        result: Value,
        /// Without an error.
        ok: bool,
        /// How long it took.
        duration_ms: u64,
    },
    /// The caller (or the operator) interrupted the agent.
    BargeIn {
        /// Agent audio the caller still heard after the relay learnt of it, in ms.
        residual_ms: u32,
        /// Agent audio dropped unplayed, in ms.
        flushed_ms: u32,
    },
    /// The caller pressed keys.
    Dtmf {
        /// The digits, grouped.
        digits: String,
    },
    /// The conversation moved to another agent.
    Handoff {
        /// The agent before.
        from: String,
        /// The agent now.
        to: String,
    },
    /// An output guardrail stopped the agent.
    Guardrail {
        /// The rule that tripped.
        rule: String,
    },
    /// A transfer to a person was tried.
    Transfer {
        /// Where to.
        target: String,
        /// `trying`, `briefing` (a warm transfer's person answered), `succeeded` or
        /// `failed: …`.
        outcome: String,
    },
    /// Answering-machine detection decided who answered a call the relay placed.
    AnsweredBy {
        /// `person`, `machine`, `silent` or `unsure`.
        answered_by: &'static str,
    },
    /// The operator muted or unmuted the caller.
    Muted {
        /// Muted now.
        muted: bool,
    },
    /// Media counters (every few seconds).
    Media {
        /// The counters.
        stats: MediaStats,
    },
    /// The call's recording is there, after the call ended (a browser call's, uploaded by
    /// its page).
    Recording {
        /// What it holds (never its path).
        recording: crate::booking::RecordingRef,
    },
}

/// A [`CallEvent`] with the call it belongs to and when it happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope {
    /// The call.
    pub call_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    #[serde(flatten)]
    pub event: CallEvent,
}

/// What the operator can ask a live call to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// End the call (the relay sends BYE).
    Hangup,
    /// Stop the agent's current answer.
    Interrupt,
    /// Give the agent this text to act on (as if the caller had said it).
    Say(String),
    /// Stop (or resume) sending the caller's audio to the agent.
    Mute(bool),
}

impl Control {
    /// It acts on a model (interrupt, say): a call without one (the `echo` line test) cannot
    /// take it.
    pub fn needs_model(&self) -> bool {
        matches!(self, Control::Interrupt | Control::Say(_))
    }
}

/// Why a control request did not reach a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No call has this id.
    #[error("no such call")]
    NotFound,
    /// The call is over.
    #[error("the call has ended")]
    Ended,
    /// The call's queue is full (it is not keeping up).
    #[error("the call is busy; try again")]
    Busy,
    /// The call cannot take it: no model to interrupt or speak to (the `echo` line test),
    /// or a browser's call, whose microphone the relay cannot mute.
    #[error("this call cannot take that control")]
    NotSupported,
}

struct Live {
    detail: Arc<RwLock<CallDetail>>,
    control: mpsc::Sender<Control>,
    /// It has a model: [`Control::needs_model`] requests reach it.
    has_model: bool,
    /// A browser's call: its microphone is the browser's, not the relay's to mute.
    web: bool,
}

struct Inner {
    live: DashMap<String, Live>,
    ended: Mutex<VecDeque<CallDetail>>,
    events: broadcast::Sender<Arc<Envelope>>,
}

/// The registry of live and recently ended calls. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("live", &self.inner.live.len())
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            inner: Arc::new(Inner {
                live: DashMap::new(),
                ended: Mutex::new(VecDeque::new()),
                events,
            }),
        }
    }

    /// Adds a new call; the call's task keeps the publisher and reads its controls.
    pub fn register(&self, detail: CallDetail) -> (CallPublisher, mpsc::Receiver<Control>) {
        self.add(detail, true)
    }

    /// Adds a call that has no model (the `echo` line test): it reads hang-up and mute only,
    /// and [`Registry::control`] answers [`ControlError::NotSupported`] to the others.
    pub fn register_without_model(
        &self,
        detail: CallDetail,
    ) -> (CallPublisher, mpsc::Receiver<Control>) {
        self.add(detail, false)
    }

    fn add(&self, detail: CallDetail, has_model: bool) -> (CallPublisher, mpsc::Receiver<Control>) {
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
        let id = detail.id.clone();
        let summary = detail.summary();
        let web = detail.kind == CallKind::Web;
        let detail = Arc::new(RwLock::new(detail));
        self.inner.live.insert(
            id.clone(),
            Live {
                detail: detail.clone(),
                control: tx,
                has_model,
                web,
            },
        );
        let publisher = CallPublisher {
            id,
            detail,
            registry: self.clone(),
            finished: false,
        };
        publisher.emit(CallEvent::Started { call: summary });
        (publisher, rx)
    }

    /// Live calls, oldest first.
    pub fn live(&self) -> Vec<CallSummary> {
        let mut v: Vec<CallSummary> = self
            .inner
            .live
            .iter()
            .map(|e| read(&e.value().detail).summary())
            .collect();
        v.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        v
    }

    /// Recently ended calls, newest first.
    pub fn ended(&self) -> Vec<CallSummary> {
        let ended = self.inner.ended.lock().unwrap_or_else(|e| e.into_inner());
        ended.iter().rev().map(CallDetail::summary).collect()
    }

    /// Whether call `id` is live here.
    pub fn is_live(&self, id: &str) -> bool {
        self.inner.live.contains_key(id)
    }

    /// Live calls now.
    pub fn live_count(&self) -> usize {
        self.inner.live.len()
    }

    /// One call, live or recently ended.
    pub fn get(&self, id: &str) -> Option<CallDetail> {
        if let Some(e) = self.inner.live.get(id) {
            return Some(read(&e.value().detail));
        }
        let ended = self.inner.ended.lock().unwrap_or_else(|e| e.into_inner());
        ended.iter().rev().find(|d| d.id == id).cloned()
    }

    /// Names a recording in call `id`'s view, live or recently ended (a browser call's
    /// recording arrives after the call ended; then a [`CallEvent::Recording`] says so); its
    /// view as it is then, `None` when the call is not known here.
    pub fn set_recording(&self, id: &str, rec: crate::booking::RecordingRef) -> Option<CallDetail> {
        if let Some(e) = self.inner.live.get(id) {
            let mut d = e.value().detail.write().unwrap_or_else(|e| e.into_inner());
            d.recording = Some(rec);
            return Some(d.clone());
        }
        let detail = {
            let mut ended = self.inner.ended.lock().unwrap_or_else(|e| e.into_inner());
            let d = ended.iter_mut().rev().find(|d| d.id == id)?;
            d.recording = Some(rec.clone());
            d.clone()
        };
        // an operator watching the ended call gets its player without opening it again
        let env = Envelope {
            call_id: id.to_string(),
            at: Utc::now(),
            event: CallEvent::Recording { recording: rec },
        };
        let _ = self.inner.events.send(Arc::new(env));
        Some(detail)
    }

    /// Sends a control request to a live call.
    pub fn control(&self, id: &str, c: Control) -> Result<(), ControlError> {
        let tx = match self.inner.live.get(id) {
            Some(e) if !e.value().has_model && c.needs_model() => {
                return Err(ControlError::NotSupported)
            }
            Some(e) if e.value().web && matches!(c, Control::Mute(_)) => {
                return Err(ControlError::NotSupported)
            }
            Some(e) => e.value().control.clone(),
            None => {
                return Err(if self.get(id).is_some() {
                    ControlError::Ended
                } else {
                    ControlError::NotFound
                })
            }
        };
        tx.try_send(c).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ControlError::Busy,
            mpsc::error::TrySendError::Closed(_) => ControlError::Ended,
        })
    }

    /// Every call's events from now on. A receiver that falls [`EVENT_BUFFER`] events behind
    /// gets `RecvError::Lagged`: drop it (the caller of this is a slow client).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.inner.events.subscribe()
    }
}

fn read(d: &RwLock<CallDetail>) -> CallDetail {
    d.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A call task's side of the registry: updates the call's view and broadcasts its events.
/// Dropping it (however the task ends) moves the call to the ended list.
pub struct CallPublisher {
    id: String,
    detail: Arc<RwLock<CallDetail>>,
    registry: Registry,
    finished: bool,
}

impl std::fmt::Debug for CallPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallPublisher")
            .field("id", &self.id)
            .finish()
    }
}

impl CallPublisher {
    /// The operator muted or unmuted the caller: the call's view and its event say so, then
    /// the log (so a reader of the log finds the view already changed).
    pub fn muted(&self, muted: bool) {
        self.update(|d| d.muted = muted);
        self.emit(CallEvent::Muted { muted });
        tracing::info!(muted, "the operator muted the caller");
    }

    /// The call's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Changes the call's view (without an event).
    pub fn update<R>(&self, f: impl FnOnce(&mut CallDetail) -> R) -> R {
        let mut d = self.detail.write().unwrap_or_else(|e| e.into_inner());
        f(&mut d)
    }

    /// A copy of the call's view now.
    pub fn snapshot(&self) -> CallDetail {
        read(&self.detail)
    }

    /// Broadcasts an event (nobody listening is fine).
    pub fn emit(&self, event: CallEvent) {
        let env = Envelope {
            call_id: self.id.clone(),
            at: Utc::now(),
            event,
        };
        let _ = self.registry.inner.events.send(Arc::new(env));
    }

    /// Marks the call answered.
    pub fn answered(&self) {
        self.update(|d| {
            d.state = CallState::Answered;
            d.answered_at = Some(Utc::now());
        });
        self.emit(CallEvent::Answered);
    }

    /// Ends the call with `reason` and returns its final view.
    pub fn finish(mut self, reason: &str) -> CallDetail {
        self.end(reason)
    }

    fn end(&mut self, reason: &str) -> CallDetail {
        self.finished = true;
        let detail = self.update(|d| {
            d.state = CallState::Ended;
            d.ended_at = Some(Utc::now());
            d.end_reason = Some(reason.to_string());
            for t in &mut d.transcript {
                t.is_final = true;
            }
            d.clone()
        });
        self.registry.inner.live.remove(&self.id);
        {
            let mut ended = self
                .registry
                .inner
                .ended
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if ended.len() == ENDED_KEPT {
                ended.pop_front();
            }
            ended.push_back(detail.clone());
        }
        self.emit(CallEvent::Ended {
            reason: reason.to_string(),
        });
        detail
    }
}

impl Drop for CallPublisher {
    fn drop(&mut self) {
        if !self.finished {
            self.end("other");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_without_a_model_takes_hang_up_and_mute_only() {
        let reg = Registry::new();
        let (_p, mut ctl) =
            reg.register_without_model(CallDetail::new("e1", "sip:a@x", "sip:b@y", "echo", None));
        for c in [Control::Interrupt, Control::Say("hi".into())] {
            assert_eq!(reg.control("e1", c), Err(ControlError::NotSupported));
        }
        reg.control("e1", Control::Mute(true)).unwrap();
        reg.control("e1", Control::Hangup).unwrap();
        assert_eq!(ctl.recv().await, Some(Control::Mute(true)));
        assert_eq!(ctl.recv().await, Some(Control::Hangup));
    }

    #[tokio::test]
    async fn a_call_is_listed_controlled_and_kept_after_it_ends() {
        let reg = Registry::new();
        let mut events = reg.subscribe();
        let (p, mut ctl) = reg.register(CallDetail::new("c1", "sip:a@x", "sip:b@y", "rec", None));
        assert_eq!(reg.live().len(), 1);
        assert!(matches!(
            events.recv().await.unwrap().event,
            CallEvent::Started { .. }
        ));
        reg.control("c1", Control::Mute(true)).unwrap();
        assert_eq!(ctl.recv().await, Some(Control::Mute(true)));
        assert_eq!(
            reg.control("nope", Control::Hangup),
            Err(ControlError::NotFound)
        );
        p.answered();
        p.update(|d| {
            d.transcript.push(Turn {
                speaker: Speaker::Agent,
                text: "Hello".into(),
                at_ms: 10,
                is_final: false,
                cut_off: false,
                item_id: None,
            })
        });
        assert_eq!(reg.get("c1").unwrap().state, CallState::Answered);
        let d = p.finish("caller_bye");
        assert!(d.transcript[0].is_final);
        assert!(reg.live().is_empty());
        assert_eq!(reg.ended()[0].end_reason.as_deref(), Some("caller_bye"));
        assert_eq!(reg.control("c1", Control::Hangup), Err(ControlError::Ended));
        let json = serde_json::to_value(reg.get("c1").unwrap()).unwrap();
        assert_eq!(json["transcript"][0]["final"], true);
        assert_eq!(json["state"], "ended");
    }

    #[test]
    fn a_dropped_publisher_still_ends_the_call() {
        let reg = Registry::new();
        let (p, _ctl) = reg.register(CallDetail::new("c2", "a", "b", "rec", None));
        drop(p);
        assert_eq!(reg.live_count(), 0);
        assert_eq!(reg.ended()[0].end_reason.as_deref(), Some("other"));
    }

    #[test]
    fn events_serialize_with_their_type() {
        let env = Envelope {
            call_id: "c".into(),
            at: Utc::now(),
            event: CallEvent::BargeIn {
                residual_ms: 20,
                flushed_ms: 40,
            },
        };
        let v = serde_json::to_value(env).unwrap();
        assert_eq!(v["type"], "barge_in");
        assert_eq!(v["call_id"], "c");
        assert_eq!(v["residual_ms"], 20);
        // the tool's call id must not overwrite the envelope's call id
        let env = Envelope {
            call_id: "c".into(),
            at: Utc::now(),
            event: CallEvent::ToolCall {
                call_id: "call_1".into(),
                name: "find_bookings".into(),
                arguments: Value::Null,
            },
        };
        let text = serde_json::to_string(&env).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["call_id"], "c", "{text}");
        assert_eq!(v["tool_call_id"], "call_1", "{text}");
        assert_eq!(text.matches("call_id\"").count(), 2, "{text}");
    }
}
