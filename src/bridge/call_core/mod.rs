//! Every decision of one call, without IO, in the shape of str0m and quinn-proto: the call's
//! task feeds it what happened (`handle_*(now, …)`), then carries out what it asks for
//! ([`CallCore::poll_output`]) and wakes it at [`CallCore::poll_timeout`].
//!
//! `now` is the time since the call's task started, on the task's clock; a test drives the
//! core with any clock it likes. The core owns the phone media (jitter buffer, pacer, RTP
//! stamping, DTMF), the transcript, the guardrail watch and the call's timers; it writes to
//! the call's registry entry and the metrics (both in memory). The task owns the sockets,
//! the dialog, the realtime leg, running tools and the database.
//!
//! Decisions: the answer (greeting, or the apology when the session did not open), barge-in
//! (once per answer), the hold sound while a tool runs long, tool dispatch (booking tools,
//! `end_call` and its grace, handoffs, transfer and its deadline), guardrail and moderation
//! trips, roll-over to a new session, keypad digit grouping, operator controls, the call's
//! time limit and RTP timeout. Echo calls (the line test) use the same core without a model.

mod amd;
mod media;
mod overlap;
mod realtime;
mod tools;
mod warm;

pub use media::EndFigures;

pub use realtime::{end_cause, failure_cause};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod warm_tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tracing::{info, warn};

use super::call_agent::{AgentBook, CallAgent};
use super::digits::{keypad_text, DigitGrouper};
use super::echo::EchoBuffer;
use super::guardrail::TranscriptWatch;
use super::phone_media::{PhoneMedia, MAX_OUT};
use super::prompts;
use super::registry::{CallEvent, CallPublisher, Control, Speaker};
use super::transcript::Transcript;
use super::BridgeSettings;
use crate::booking::CallKind;
use crate::media::g711::Law;
use crate::media::rtcp::PeerReport;
use crate::metrics::{CallMetrics, Metrics};
use crate::openai::events::{ClientEvent, ContentPart, Item};
use crate::openai::{LegError, ToolCall};
use crate::sip::sdp::Direction;
use crate::sip::EndReason;

/// After `end_call`, the goodbye gets this long to play before the BYE goes anyway.
pub const END_CALL_GRACE: Duration = Duration::from_secs(15);
/// Quiet this long (nothing queued, nothing playing) after `end_call` means the goodbye is
/// over: covers the last frames still on their way from the service.
pub const END_CALL_QUIET: Duration = Duration::from_millis(200);
/// How long a transfer may take before the agent is told it failed.
pub const TRANSFER_LIMIT: Duration = Duration::from_secs(30);

/// What the call's task must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this event to the realtime session.
    Send(Box<ClientEvent>),
    /// Stop the agent's answer at the service; `unplayed_ms` of it never reached the caller.
    Interrupt { unplayed_ms: u32 },
    /// Give a tool's output to the session (the leg adds the `response.create`).
    ToolOutput { call_id: String, output: String },
    /// Run this booking tool beside the call; answer with [`CallCore::handle_tool_done`].
    RunTool(ToolCall),
    /// Check this finished agent turn with the moderation service; answer with
    /// [`CallCore::handle_moderation`].
    Moderate(String),
    /// Close the realtime session; the call goes on without it.
    CloseLeg,
    /// Open a new realtime session for the current agent; answer with
    /// [`CallCore::handle_leg_opened`].
    OpenLeg,
    /// Ask the caller's side to transfer the call (SIP REFER); answer with
    /// [`CallCore::handle_refer_answer`].
    Refer(String),
    /// Call the person of a warm transfer at `target`, offering only `codec`, ringing at
    /// most [`TRANSFER_LIMIT`]; answer with [`CallCore::handle_person_answered`] or
    /// [`CallCore::handle_person_ended`].
    CallPerson { target: String, codec: Law },
    /// Cancel the call to the person, or hang it up if it was answered.
    DropPerson,
    /// The call is over: close the session, send the BYE when `sip` says so, store it.
    End(Ended),
}

/// Why a call ended, as its record says, and the BYE the relay sends (`None`: the other
/// side already ended it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The call record's outcome.
    pub reason: String,
    /// The relay hangs up with this reason.
    pub sip: Option<EndReason>,
}

impl Ended {
    /// The caller's side ended the call.
    pub fn by_phone(r: EndReason) -> Self {
        Self {
            reason: r.as_str().into(),
            sip: None,
        }
    }

    /// The relay hangs up (BYE) and records `reason`.
    pub fn relay(reason: &str) -> Self {
        Self {
            reason: reason.into(),
            sip: Some(EndReason::RelayBye),
        }
    }

    /// The relay hangs up for `r`, recorded as such.
    pub fn hang_up(r: EndReason) -> Self {
        Self {
            reason: r.as_str().into(),
            sip: Some(r),
        }
    }
}

/// Who answers the caller.
#[derive(Debug)]
pub enum Mode {
    /// A realtime agent.
    Agent(Arc<CallAgent>),
    /// The built-in line test: the caller hears their own voice.
    Echo(Box<EchoBuffer>),
}

/// What a core is made of.
#[derive(Debug)]
pub struct CoreParts {
    /// The agent that answers; `None`: the built-in echo line test.
    pub agent: Option<Arc<CallAgent>>,
    /// Every agent, for handoffs.
    pub agents: AgentBook,
    pub settings: Arc<BridgeSettings>,
    /// The call's registry entry.
    pub publisher: CallPublisher,
    pub metrics: Arc<Metrics>,
    /// The phone media as negotiated: G.711 law, payload types, direction.
    pub codec: Law,
    pub payload_type: u8,
    pub dtmf_payload_type: Option<u8>,
    pub direction: Direction,
    /// A moderation check is configured.
    pub moderation: bool,
    /// A phone call, or a browser's call (no phone media: the browser and the service
    /// exchange the audio; the core sees only the events, over the sideband).
    pub kind: CallKind,
    /// A call the relay placed, with what the agent is told about it.
    pub outbound: Option<crate::sip::Outbound>,
}

/// The call's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ringing,
    Live,
    Over,
}

/// `end_call` was called: hang up at the deadline, or once the goodbye has been heard.
#[derive(Debug, Clone, Copy)]
struct Ending {
    deadline: Duration,
    quiet_since: Option<Duration>,
}

/// A transfer in progress.
#[derive(Debug, Clone)]
struct Transfer {
    call_id: String,
    target: String,
    started: Duration,
    deadline: Duration,
}

/// The state of one call.
#[derive(Debug)]
pub struct CallCore {
    mode: Mode,
    agents: AgentBook,
    settings: Arc<BridgeSettings>,
    p: CallPublisher,
    metrics: Arc<Metrics>,
    /// The per-frame figures, counted here and added to `metrics` a few times a second.
    media_metrics: CallMetrics,
    moderation: bool,
    kind: CallKind,
    media: PhoneMedia,
    direction: Direction,
    phase: Phase,
    outputs: VecDeque<Output>,
    /// A realtime session is open.
    has_leg: bool,
    /// A new session is being opened to replace an expired one.
    rolling_over: bool,
    transcript: Transcript,
    digits: DigitGrouper,
    watch: TranscriptWatch,
    tools_running: usize,
    /// When the oldest running tool started.
    tool_since: Option<Duration>,
    muted: bool,
    /// Between a barge-in and the next response: late audio of the old answer is dropped.
    dropping_agent_audio: bool,
    response_active: bool,
    /// The id of the response running (or last run).
    current_response: Option<String>,
    /// WebRTC: the service is still playing audio out (`output_audio_buffer.started`).
    service_playing: bool,
    ending: Option<Ending>,
    transfer: Option<Transfer>,
    /// A warm transfer in progress.
    warm: Option<Box<warm::Warm>>,
    /// A relay prompt plays, then BYE for this reason (no session).
    goodbye: Option<(&'static str, EndReason)>,
    /// The call's time limit (from the answer).
    max_end: Option<Duration>,
    last_rx: Duration,
    /// When RTP silence is next checked (see [`CallCore::check_rtp`]): a deadline that moves
    /// only when it is reached, not with every packet, so the task keeps one timer.
    rtp_check: Duration,
    noise: u32,
    hold_pos: usize,
    /// Frames of comfort noise or hold sound played (all calls long).
    hold_frames: u64,
    barge_ins: u64,
    /// The caller's speech over the agent (relay-owned barge-in).
    overlap: overlap::Overlap,
    /// What the caller heard of the agent after they started speaking, measured when its
    /// audio paused (the barge-in that follows reports it).
    paused_residual: Option<u32>,
    backchannels: u64,
    /// A call the relay placed.
    outbound: Option<crate::sip::Outbound>,
    /// An outbound call's agent speaks first at this time if the callee has said nothing.
    opening_at: Option<Duration>,
    /// Answering-machine detection, while it holds the agent's turns (placed calls).
    amd: Option<Box<crate::media::amd::Amd>>,
    /// A machine answered this placed call: its sounds (the beep) are no one's turns.
    voicemail: bool,
    out: [u8; MAX_OUT],
    reported_lost: u64,
    reported_concealed: u64,
    /// What the caller's side reports of our stream.
    peer: PeerReport,
}

impl CallCore {
    /// A ringing call.
    pub fn new(parts: CoreParts) -> Self {
        let settings = parts.settings;
        let law = parts.codec;
        let mode = match parts.agent {
            Some(a) => Mode::Agent(a),
            None => Mode::Echo(Box::new(EchoBuffer::new(law.silence_byte()))),
        };
        Self {
            mode,
            agents: parts.agents,
            p: parts.publisher,
            media_metrics: CallMetrics::new(parts.metrics.clone()),
            metrics: parts.metrics,
            moderation: parts.moderation,
            kind: parts.kind,
            media: {
                let mut m = PhoneMedia::g711(law, parts.payload_type, parts.dtmf_payload_type);
                if let Some(db) = settings.echo_gate_margin_db {
                    m.enable_echo_gate(db);
                }
                m
            },
            direction: parts.direction,
            phase: Phase::Ringing,
            outputs: VecDeque::new(),
            has_leg: false,
            rolling_over: false,
            transcript: Transcript::new(),
            digits: DigitGrouper::new(settings.dtmf_inter_digit),
            watch: TranscriptWatch::new(settings.guardrail_every),
            settings,
            tools_running: 0,
            tool_since: None,
            muted: false,
            dropping_agent_audio: false,
            response_active: false,
            current_response: None,
            service_playing: false,
            ending: None,
            transfer: None,
            warm: None,
            goodbye: None,
            max_end: None,
            last_rx: Duration::ZERO,
            rtp_check: Duration::ZERO,
            noise: 0x9E37_79B9,
            hold_pos: 0,
            hold_frames: 0,
            barge_ins: 0,
            overlap: overlap::Overlap::None,
            paused_residual: None,
            backchannels: 0,
            outbound: parts.outbound,
            opening_at: None,
            amd: None,
            voicemail: false,
            out: [0; MAX_OUT],
            reported_lost: 0,
            reported_concealed: 0,
            peer: PeerReport::default(),
        }
    }

    /// The next thing the task must do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the core must next be woken with [`CallCore::handle_timeout`] (besides the
    /// 20 ms media ticks, which check the same deadlines).
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.phase != Phase::Live {
            return None;
        }
        let rtp = self
            .settings
            .rtp_timeout
            .filter(|_| self.receiving() || self.person_silent_since().is_some())
            .map(|_| self.rtp_check);
        [
            self.max_end.filter(|_| self.goodbye.is_none()),
            self.ending.map(|e| e.deadline),
            self.transfer.as_ref().map(|t| t.deadline),
            self.warm.as_ref().map(|w| w.deadline()),
            self.digits.deadline(),
            self.overlap_deadline(),
            self.opening_at,
            rtp,
            // a browser's call has no media ticks: its goodbye's quiet is a deadline
            self.ending
                .and_then(|e| e.quiet_since)
                .filter(|_| self.kind == CallKind::Web)
                .map(|since| since + END_CALL_QUIET),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The call is over (an [`Output::End`] was given).
    pub fn is_over(&self) -> bool {
        self.phase == Phase::Over
    }

    /// The agent answering now (`None` on an echo call).
    pub fn agent(&self) -> Option<&Arc<CallAgent>> {
        match &self.mode {
            Mode::Agent(a) => Some(a),
            Mode::Echo(_) => None,
        }
    }

    /// The call's limits and timings.
    pub fn settings(&self) -> &BridgeSettings {
        &self.settings
    }

    /// The phone media, for RTCP reports.
    pub fn media(&self) -> &PhoneMedia {
        &self.media
    }

    /// The call's registry entry back, to close it.
    pub fn into_publisher(self) -> CallPublisher {
        self.p
    }

    /// Frames of comfort noise or hold sound played so far.
    pub fn hold_frames(&self) -> u64 {
        self.hold_frames
    }

    fn end(&mut self, e: Ended) {
        if self.phase == Phase::Over {
            return;
        }
        self.phase = Phase::Over;
        self.outputs.push_back(Output::End(e));
    }

    fn send(&mut self, ev: ClientEvent) {
        if self.has_leg {
            self.outputs.push_back(Output::Send(Box::new(ev)));
        }
    }

    fn respond(&mut self) {
        self.send(ClientEvent::ResponseCreate {
            event_id: None,
            response: None,
        });
    }

    /// The caller's RTP is expected (a browser's call has none through the relay).
    fn receiving(&self) -> bool {
        self.kind == CallKind::Phone
            && matches!(self.direction, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The call was answered, `setup` after its INVITE. `opened`: the realtime session
    /// that is ready (its id), or why it could not be opened; an echo call passes `Ok(None)`.
    pub fn handle_answered(
        &mut self,
        now: Duration,
        setup: Duration,
        opened: Result<Option<String>, LegError>,
    ) {
        if self.phase != Phase::Ringing {
            return;
        }
        self.phase = Phase::Live;
        self.max_end = Some(now + self.settings.max_call);
        self.watch_rtp_from(now);
        self.p.answered();
        let greeting = match &self.mode {
            Mode::Echo(_) => {
                info!("call answered");
                return;
            }
            Mode::Agent(a) => a.greeting.clone(),
        };
        match opened {
            Ok(session_id) => {
                self.metrics.call_setup_seconds.observe(setup.as_secs_f64());
                info!(
                    setup_ms = setup.as_millis() as u64,
                    session = session_id.as_deref().unwrap_or("-"),
                    "call answered"
                );
                self.has_leg = true;
                self.p.update(|d| d.session_id = session_id);
                if let Some(o) = &self.outbound {
                    // the callee speaks first ("hello?"); the agent then says who it is
                    let note = outbound_note(o.context.as_deref());
                    self.send(message("system", note));
                    if self.settings.amd.is_some() && self.relay_turns().is_some() {
                        // who answered decides when the agent speaks
                        self.amd_start();
                    } else {
                        self.opening_at = Some(now + OUTBOUND_OPENING_WAIT);
                    }
                    return;
                }
                // the agent speaks first: its greeting when configured, else its own opening
                let response = greeting.map(|g| {
                    json!({"instructions": format!("Greet the caller by saying exactly: \"{g}\"")})
                });
                self.send(ClientEvent::ResponseCreate {
                    event_id: None,
                    response,
                });
            }
            Err(e) => {
                let cause = failure_cause(&e);
                warn!(error = %e, cause, "the realtime session did not open: apologising");
                self.apologise(now, cause);
            }
        }
    }

    /// The phone side ended the call (BYE, CANCEL, the dialog failed).
    pub fn handle_phone_ended(&mut self, r: EndReason) {
        self.end(Ended::by_phone(r));
    }

    /// The relay is shutting down.
    pub fn handle_shutdown(&mut self) {
        self.end(Ended::hang_up(EndReason::Shutdown));
    }

    /// The caller's media moved (re-INVITE): new payload types and direction.
    pub fn handle_media_changed(
        &mut self,
        now: Duration,
        direction: Direction,
        payload_type: u8,
        dtmf_payload_type: Option<u8>,
    ) {
        self.direction = direction;
        self.media
            .set_payload_types(payload_type, dtmf_payload_type);
        self.watch_rtp_from(now);
    }

    /// The caller's RTP is expected from `now` on (the answer, a re-INVITE): silence is
    /// counted, and first checked, from here.
    fn watch_rtp_from(&mut self, now: Duration) {
        self.last_rx = now;
        self.rtp_check = now + self.settings.rtp_timeout.unwrap_or_default();
    }

    /// The call's deadlines: keypad digits, the time limit, a transfer, RTP silence.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.phase != Phase::Live {
            return;
        }
        if let Some(group) = self.digits.poll(now) {
            self.send_keypad(now, group);
        }
        self.overlap_timeout(now);
        if self.opening_at.is_some_and(|t| now >= t) {
            self.opening_at = None;
            if !self.response_active && self.overlap == overlap::Overlap::None {
                // the callee said nothing: the agent opens
                self.respond();
            }
        }
        if self.max_end.is_some_and(|end| now >= end) {
            self.max_end = None;
            match self.mode {
                // no agent's line to say goodbye on while a person is called or on the call
                _ if self.warm.is_some() => self.end(Ended::hang_up(EndReason::MaxDuration)),
                Mode::Echo(_) => self.end(Ended::hang_up(EndReason::MaxDuration)),
                Mode::Agent(_) => {
                    info!("the call reached bridge.max_call_seconds: saying goodbye");
                    self.close_leg();
                    self.say_goodbye(
                        now,
                        prompts::time_limit(),
                        EndReason::MaxDuration.as_str(),
                        EndReason::MaxDuration,
                    );
                }
            }
        }
        if self.ending.is_some_and(|e| now >= e.deadline) {
            self.end(Ended::relay("agent_end_call"));
        }
        if self.transfer.as_ref().is_some_and(|t| now >= t.deadline) {
            let t = self.transfer.take().expect("checked");
            self.transfer_failed(now, t, "the transfer target did not answer in time");
        }
        self.warm_timeout(now);
        if self.kind == CallKind::Web {
            self.check_ending(now);
        }
        self.check_rtp(now);
    }

    /// Ends the call when the caller's line, or a warm transfer person's, has sent no RTP
    /// for `rtp_timeout`; else sets the next check for when the older of the two last
    /// packets would be that old (a packet arriving meanwhile only moves `last_rx`).
    fn check_rtp(&mut self, now: Duration) {
        let Some(limit) = self.settings.rtp_timeout else {
            return;
        };
        if now < self.rtp_check {
            return;
        }
        let caller = self.receiving().then_some(self.last_rx);
        let person = self.person_silent_since();
        if caller.is_some_and(|rx| now.saturating_sub(rx) > limit) {
            self.end(Ended::hang_up(EndReason::RtpTimeout));
        } else if person.is_some_and(|rx| now.saturating_sub(rx) > limit) {
            info!("no RTP from the person's line: the call ends");
            self.end(Ended::hang_up(EndReason::RtpTimeout));
        }
        let oldest = caller.into_iter().chain(person).min().unwrap_or(now);
        // just past the limit: a packet exactly `limit` old is not yet a timeout
        self.rtp_check = (oldest + limit).max(now) + Duration::from_millis(1);
    }

    /// After `end_call`: BYE once the goodbye has played out.
    fn check_ending(&mut self, now: Duration) {
        let Some(mut ending) = self.ending else {
            return;
        };
        if played_out(self.agent_quiet(), &mut ending.quiet_since, now) {
            self.end(Ended::relay("agent_end_call"));
        } else {
            self.ending = Some(ending);
        }
    }

    /// Nothing of the agent is being said or played on its line.
    fn agent_quiet(&self) -> bool {
        !self.response_active && !self.service_playing && self.media.is_idle()
    }

    /// Ends the realtime side's part and plays `prompt` to the caller, then BYE. A
    /// browser's call has no line for the relay to play on: it ends at once.
    fn say_goodbye(&mut self, now: Duration, prompt: &[i16], reason: &'static str, sip: EndReason) {
        if self.kind == CallKind::Web {
            self.end(Ended {
                reason: reason.into(),
                sip: None,
            });
            return;
        }
        self.media.flush(now);
        self.media.push_pcm(prompt);
        self.goodbye = Some((reason, sip));
        self.dropping_agent_audio = true;
    }

    fn close_leg(&mut self) {
        if self.has_leg {
            self.has_leg = false;
            self.outputs.push_back(Output::CloseLeg);
        }
    }

    fn on_key(&mut self, now: Duration, key: char) {
        if let Some(group) = self.digits.push(now, key) {
            self.send_keypad(now, group);
        }
    }

    fn send_keypad(&mut self, now: Duration, digits: String) {
        if matches!(self.mode, Mode::Echo(_)) {
            return;
        }
        info!(digits = digits.len(), "keypad digits to the agent");
        self.transcript
            .note(&self.p, Speaker::Keypad, &digits, at_ms(now));
        self.p.emit(CallEvent::Dtmf {
            digits: digits.clone(),
        });
        self.send(message("user", keypad_text(&digits)));
        self.respond();
    }

    /// An operator's control from the admin API.
    pub fn handle_control(&mut self, now: Duration, c: Control) {
        match c {
            Control::Hangup => {
                info!("the operator hung up");
                self.end(Ended::relay("operator_hangup"));
            }
            Control::Mute(m) => {
                self.muted = m;
                self.p.muted(m);
            }
            // the registry refuses these for a call without a model
            Control::Interrupt | Control::Say(_) if matches!(self.mode, Mode::Echo(_)) => {}
            Control::Interrupt => self.barge_in(now, true),
            Control::Say(text) => {
                self.transcript
                    .note(&self.p, Speaker::Operator, &text, at_ms(now));
                self.send(message(
                    "system",
                    format!("A message from the clinic's operator, for you to act on now: {text}"),
                ));
                self.respond();
            }
        }
    }
}

/// True once the agent's line has been `quiet` for [`END_CALL_QUIET`] (its last words heard);
/// `since` keeps when the quiet began, and is cleared when it is not quiet.
fn played_out(quiet: bool, since: &mut Option<Duration>, now: Duration) -> bool {
    if !quiet {
        *since = None;
        return false;
    }
    now.saturating_sub(*since.get_or_insert(now)) >= END_CALL_QUIET
}

/// Milliseconds since the call's start, as transcript lines carry them.
fn at_ms(now: Duration) -> u64 {
    now.as_millis() as u64
}

/// A conversation message: the model's own words are output text, everything else input.
/// How long an outbound call's agent waits for the callee to speak first.
pub const OUTBOUND_OPENING_WAIT: Duration = Duration::from_millis(1500);

/// What an outbound call's agent is told when the callee answers.
pub fn outbound_note(context: Option<&str>) -> String {
    let mut note = String::from(
        "You placed this phone call: it is an outbound call, not someone calling the clinic. \
         When the person answers, say briefly who you are and why you are calling. If you \
         reach a voicemail, leave a short message and end the call.",
    );
    if let Some(c) = context.filter(|c| !c.trim().is_empty()) {
        note.push_str(" Why you are calling: ");
        note.push_str(c.trim());
    }
    note
}

pub(crate) fn message(role: &str, text: String) -> ClientEvent {
    let part = if role == "assistant" {
        ContentPart::OutputText { text: Some(text) }
    } else {
        ContentPart::InputText { text }
    };
    ClientEvent::ConversationItemCreate {
        event_id: None,
        previous_item_id: None,
        item: Item::Message {
            id: None,
            object: None,
            status: None,
            role: role.into(),
            content: vec![part],
        },
    }
}

/// At most `max` characters of `s` (for logging names the model made up).
fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
