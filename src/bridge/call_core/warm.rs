//! Warm transfer (`transfer_call` with `warm: true`): the relay calls the agent's person
//! itself while the caller hears the hold sound; when the person answers (and the agent's
//! last words to the caller have played out), the agent talks to them (its audio on the
//! person's line, their voice to the model) and briefs them; once
//! the briefing has played out, the session closes and the two phone legs are joined, each
//! packet forwarded as it comes. No answer, or the person hanging up before the join, gives
//! the caller back to the agent, who is told why.
//!
//! During the briefing the core's `media` is the person's line, so that everything the
//! agent does (its audio, barge-in, the frames it hears) acts on it unchanged; the caller's
//! media is parked here meanwhile, playing the hold sound, and comes back at the join.

use std::time::Duration;

use serde_json::json;
use tracing::info;

use super::{message, played_out, CallCore, Ended, Output, TRANSFER_LIMIT};
use crate::bridge::phone_media::PhoneMedia;
use crate::bridge::registry::CallEvent;
use crate::bridge::tool_run::error_json;
use crate::media::forward::Forwarder;
use crate::media::g711::Law;
use crate::media::rtp::RtpIn;
use crate::openai::ToolCall;

/// The briefing's longest: past this the caller is joined even if the agent still talks.
pub const BRIEFING_LIMIT: Duration = Duration::from_secs(30);
/// The dialler cancels at [`TRANSFER_LIMIT`]; past this too the core gives up on its own.
const RING_BACKSTOP: Duration = Duration::from_secs(5);

/// What the model is told when the person answers (with the tool's output).
pub const BRIEFING_NOTE: &str = "The staff member answered and hears you now; the caller is \
    on hold and cannot hear you. Brief the staff member in one or two sentences: who is \
    calling and what they need. This is your last turn: after it the caller is put through to \
    them and you leave the call. Call no tools.";

/// A warm transfer in progress.
#[derive(Debug)]
pub(super) struct Warm {
    call_id: String,
    target: String,
    started: Duration,
    /// Ringing: when to give up; briefing: when to join anyway.
    deadline: Duration,
    state: State,
    /// The session ended or failed meanwhile: the person is joined without a briefing.
    no_agent: bool,
}

#[derive(Debug)]
enum State {
    /// The person's phone rings; the caller is on hold.
    Ringing,
    /// The person answered while the agent's last words to the caller still play: the
    /// briefing waits for them to end (the person hears silence meanwhile).
    Answered {
        person: Box<PhoneMedia>,
        person_rx: Duration,
    },
    /// The agent briefs the person; the caller's media is parked here.
    Briefing {
        caller: Box<PhoneMedia>,
        /// A response began since the answer (the briefing).
        spoke: bool,
        quiet_since: Option<Duration>,
        person_rx: Duration,
    },
    /// The caller and the person talk; the agent is gone.
    Joined(Box<Joined>),
}

#[derive(Debug)]
struct Joined {
    to_person: Forwarder,
    to_caller: Forwarder,
    person_rx: Duration,
    out: [u8; 1500],
}

impl Warm {
    /// The caller is on hold and the agent hears nothing of them (the person's phone rings,
    /// or they answered and wait for the briefing).
    pub(super) fn on_hold(&self) -> bool {
        matches!(self.state, State::Ringing | State::Answered { .. })
    }

    /// The two phone legs are joined.
    pub(super) fn joined(&self) -> bool {
        matches!(self.state, State::Joined(_))
    }

    /// When the core must look at the transfer again.
    pub(super) fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The caller's outgoing stream while joined (for RTCP sender reports).
    pub(super) fn to_caller(&self) -> Option<&Forwarder> {
        match &self.state {
            State::Joined(j) => Some(&j.to_caller),
            _ => None,
        }
    }
}

impl CallCore {
    /// `transfer_call` with `warm: true` to `target`: call the person, the caller on hold.
    pub(super) fn start_warm_transfer(&mut self, now: Duration, tc: ToolCall, target: String) {
        info!(target = %target, "warm transfer: calling the person, the caller on hold");
        self.p.emit(CallEvent::Transfer {
            target: target.clone(),
            outcome: "trying".into(),
        });
        self.warm = Some(Box::new(Warm {
            call_id: tc.call_id,
            target: target.clone(),
            started: now,
            deadline: now + TRANSFER_LIMIT + RING_BACKSTOP,
            state: State::Ringing,
            no_agent: false,
        }));
        self.outputs.push_back(Output::CallPerson {
            target,
            codec: self.media.law(),
        });
    }

    /// The person's phone answered, with these payload types and codec.
    pub fn handle_person_answered(
        &mut self,
        now: Duration,
        codec: Law,
        payload_type: u8,
        dtmf_payload_type: Option<u8>,
    ) {
        let ringing = matches!(self.warm.as_ref().map(|w| &w.state), Some(State::Ringing));
        if self.is_over() || !ringing {
            // too late (the call ended, the transfer gave up): nobody to join them to
            self.outputs.push_back(Output::DropPerson);
            return;
        }
        if codec != self.media.law() {
            self.outputs.push_back(Output::DropPerson);
            self.handle_person_ended(now, "the person's phone answered with another codec");
            return;
        }
        let person = Box::new(self.line_media(codec, payload_type, dtmf_payload_type));
        let audible = !self.agent_quiet();
        let w = self.warm.as_mut().expect("checked");
        w.deadline = now + BRIEFING_LIMIT;
        if w.no_agent {
            info!(target = %w.target, "warm transfer: the person answered; no agent to brief them");
            self.swap_in_person(now, person);
            self.join(now);
        } else if audible {
            info!(target = %w.target, "warm transfer: the person answered; the agent's last words to the caller play out first");
            w.state = State::Answered {
                person,
                person_rx: now,
            };
        } else {
            self.brief(now, person);
        }
    }

    /// The person's line becomes the agent's, the caller's is parked on hold.
    fn swap_in_person(&mut self, now: Duration, mut person: Box<PhoneMedia>) {
        std::mem::swap(&mut self.media, &mut person);
        // the caller's line plays the hold sound again, whatever was held on it
        person.resume();
        if let Some(w) = self.warm.as_mut() {
            w.state = State::Briefing {
                caller: person,
                spoke: false,
                quiet_since: None,
                person_rx: now,
            };
        }
    }

    /// The agent speaks to the person: the tool's output tells it to brief them.
    fn brief(&mut self, now: Duration, person: Box<PhoneMedia>) {
        self.swap_in_person(now, person);
        let Some(w) = self.warm.as_mut() else {
            return;
        };
        info!(target = %w.target, "warm transfer: the person answered; the agent briefs them");
        w.deadline = now + BRIEFING_LIMIT;
        let (target, call_id) = (w.target.clone(), w.call_id.clone());
        self.overlap = super::overlap::Overlap::None;
        self.dropping_agent_audio = false;
        self.p.emit(CallEvent::Transfer {
            target,
            outcome: "briefing".into(),
        });
        self.tool_output(
            call_id,
            &json!({"ok": true, "state": "briefing", "note": BRIEFING_NOTE}),
        );
    }

    /// The person's leg is gone: not answered (`why`), refused, or hung up.
    pub fn handle_person_ended(&mut self, now: Duration, why: &str) {
        if self.is_over() {
            return;
        }
        let Some(mut w) = self.warm.take() else {
            return;
        };
        let state = std::mem::replace(&mut w.state, State::Ringing);
        // the tool call still waits for its output
        let unanswered = matches!(state, State::Ringing | State::Answered { .. });
        match state {
            State::Joined(_) => {
                info!("the person hung up: the call ends");
                self.end(Ended::relay("transferred"));
                return;
            }
            State::Briefing { caller, .. } => {
                // the caller's line back to the agent; what it said to the person is dropped,
                // and what it still sends of it too
                self.media = *caller;
                if self.response_active || self.service_playing {
                    self.barge_in(now, true);
                }
            }
            State::Ringing | State::Answered { .. } => {}
        }
        // the hold sound stops
        self.media.flush(now);
        self.hold_pos = 0;
        info!(target = %w.target, why, "the warm transfer failed");
        self.p.emit(CallEvent::Transfer {
            target: w.target.clone(),
            outcome: format!("failed: {why}"),
        });
        let text = format!(
            "The transfer failed: {why}. You are speaking to the caller again: tell them, \
             apologise, and offer to help or take a message."
        );
        let out = error_json(&text);
        self.record_result(&w.call_id, &out, false, now.saturating_sub(w.started));
        if w.no_agent || !self.has_leg {
            // no agent to take the caller back either
            self.apologise(now, "realtime_failed");
            return;
        }
        if unanswered {
            self.tool_output(w.call_id, &out);
        } else {
            self.send(message("system", text));
            self.respond();
        }
    }

    /// An RTP packet from the person's line; when joined, the packet to send to the caller.
    pub fn handle_person_rtp(&mut self, now: Duration, p: &RtpIn, payload: &[u8]) -> Option<&[u8]> {
        match &mut self.warm.as_mut()?.state {
            State::Ringing => return None,
            State::Answered { person, person_rx } => {
                *person_rx = now;
                person.count_rtp(now, p);
                return None;
            }
            State::Joined(j) => j.person_rx = now,
            State::Briefing { person_rx, .. } => {
                *person_rx = now;
                // the person's line is the agent's: their voice and keys reach it as the
                // caller's would
                if let Some(key) = self.media.on_rtp(now, p, payload) {
                    self.on_key(now, key);
                }
                return None;
            }
        }
        self.forward(false, p, payload)
    }

    /// A packet of one joined leg as the other's (`to_person`: the caller's, for the
    /// person): the packet to send, if it is forwarded.
    pub(super) fn forward(&mut self, to_person: bool, p: &RtpIn, payload: &[u8]) -> Option<&[u8]> {
        let State::Joined(j) = &mut self.warm.as_mut()?.state else {
            return None;
        };
        let f = if to_person {
            &mut j.to_person
        } else {
            &mut j.to_caller
        };
        let n = f.forward(p, payload, &mut j.out)?;
        Some(&j.out[..n])
    }

    /// A tick while the agent briefs a warm transfer's person: the caller, parked, hears
    /// the hold sound ([`CallCore::person_packet`] gives the person's packet).
    pub(super) fn tick_on_hold(&mut self, now: Duration) -> Option<&[u8]> {
        if self.parked_caller().is_some_and(|c| c.is_idle()) {
            let frame = self.hold_frame();
            if let Some(caller) = self.parked_caller() {
                caller.push_pcm(&frame);
            }
        }
        let sends = self.direction.relay_sends();
        let n = match self.warm.as_mut().map(|w| &mut w.state) {
            Some(State::Briefing { caller, .. }) if sends => caller.poll_out(now, &mut self.out).0,
            Some(State::Briefing { caller, .. }) => {
                caller.skip(now);
                0
            }
            _ => 0,
        };
        self.handle_timeout(now);
        self.check_ending(now);
        (n > 0).then(|| &self.out[..n])
    }

    /// Whether the caller's packets go out as they come (a joined warm transfer forwards
    /// them to the person), so the task must read each one at once; otherwise it may read
    /// them at its ticks, as only the next frame's playout needs them.
    pub fn forwards_caller(&self) -> bool {
        self.warm.as_ref().is_some_and(|w| w.joined())
    }

    /// The caller's parked media, while the agent briefs the person.
    pub(super) fn parked_caller(&mut self) -> Option<&mut PhoneMedia> {
        match &mut self.warm.as_mut()?.state {
            State::Briefing { caller, .. } => Some(caller),
            _ => None,
        }
    }

    /// The packet for the person's line at this tick (the agent's briefing), after
    /// [`CallCore::handle_tick`].
    pub fn person_packet(&mut self, now: Duration) -> Option<&[u8]> {
        if self.is_over() {
            return None;
        }
        let line = match &mut self.warm.as_mut()?.state {
            // silence while the agent finishes with the caller
            State::Answered { person, .. } => person,
            State::Briefing { .. } => &mut self.media,
            State::Ringing | State::Joined(_) => return None,
        };
        let (n, _) = line.poll_out(now, &mut self.out);
        (n > 0).then(|| &self.out[..n])
    }

    /// The warm transfer's deadlines and the end of the briefing (called on every tick and
    /// timeout).
    pub(super) fn warm_timeout(&mut self, now: Duration) {
        let quiet = self.agent_quiet();
        let response_active = self.response_active;
        let Some(w) = self.warm.as_mut() else {
            return;
        };
        let past = now >= w.deadline;
        match &mut w.state {
            State::Ringing if past => {
                self.outputs.push_back(Output::DropPerson);
                self.handle_person_ended(now, "the person did not answer in time");
            }
            State::Answered { .. } if quiet || past => {
                let State::Answered { person, .. } =
                    std::mem::replace(&mut w.state, State::Ringing)
                else {
                    unreachable!("matched");
                };
                self.brief(now, person);
            }
            State::Briefing {
                spoke, quiet_since, ..
            } => {
                *spoke |= response_active;
                if played_out(*spoke && quiet, quiet_since, now) || past {
                    self.join(now);
                }
            }
            State::Joined(_) => w.deadline = Duration::MAX,
            State::Ringing | State::Answered { .. } => {}
        }
    }

    /// The briefing is over (or there is none): the agent leaves and the legs are joined.
    fn join(&mut self, now: Duration) {
        let Some(w) = self.warm.as_mut() else {
            return;
        };
        let State::Briefing {
            caller, person_rx, ..
        } = std::mem::replace(&mut w.state, State::Ringing)
        else {
            return;
        };
        let person = std::mem::replace(&mut self.media, *caller);
        // the hold sound stops; what the caller hears now is the person
        self.media.flush(now);
        let (caller_pt, caller_dtmf) = (self.media.payload_type(), self.media.dtmf_payload_type());
        let (person_pt, person_dtmf) = (person.payload_type(), person.dtmf_payload_type());
        let events = |from: Option<u8>, to: Option<u8>| from.zip(to);
        w.state = State::Joined(Box::new(Joined {
            to_person: Forwarder::new(
                person.packetizer().clone(),
                (caller_pt, person_pt),
                events(caller_dtmf, person_dtmf),
            ),
            to_caller: Forwarder::new(
                self.media.packetizer().clone(),
                (person_pt, caller_pt),
                events(person_dtmf, caller_dtmf),
            ),
            person_rx,
            out: [0; 1500],
        }));
        let (target, call_id, took) = (w.target.clone(), w.call_id.clone(), now - w.started);
        info!(target = %target, setup_ms = took.as_millis() as u64, "warm transfer: the caller and the person are joined; the agent leaves");
        self.p.emit(CallEvent::Transfer {
            target,
            outcome: "succeeded".into(),
        });
        self.record_result(&call_id, &json!({"ok": true}), true, took);
        self.close_leg();
        self.tools_running = 0;
        self.tool_since = None;
    }

    /// The session ended or failed during a warm transfer: the person, once they answer, is
    /// joined without a briefing. False when there is no transfer to carry the call on.
    pub(super) fn warm_session_lost(&mut self, now: Duration) -> bool {
        let Some(w) = self.warm.as_mut() else {
            return false;
        };
        w.no_agent = true;
        match std::mem::replace(&mut w.state, State::Ringing) {
            State::Answered { person, .. } => {
                self.swap_in_person(now, person);
                self.join(now);
            }
            state @ State::Briefing { .. } => {
                w.state = state;
                self.join(now);
            }
            State::Ringing => info!("the session ended while the person's phone rings: they are joined without a briefing"),
            state @ State::Joined(_) => w.state = state,
        }
        true
    }

    /// The person's line stays alive while joined: their RTP timeout, as the caller's.
    pub(super) fn person_silent_since(&self) -> Option<Duration> {
        match &self.warm.as_ref()?.state {
            State::Answered { person_rx, .. } | State::Briefing { person_rx, .. } => {
                Some(*person_rx)
            }
            State::Joined(j) => Some(j.person_rx),
            State::Ringing => None,
        }
    }

    /// Media for a second phone line (the person's), set up as the caller's.
    fn line_media(&self, law: Law, payload_type: u8, dtmf: Option<u8>) -> PhoneMedia {
        let mut m = PhoneMedia::g711(law, payload_type, dtmf);
        if let Some(db) = self.settings.echo_gate_margin_db {
            m.enable_echo_gate(db);
        }
        m
    }
}
