//! The realtime session's side of the core: its events, barge-in, guardrail and moderation
//! trips, and the session ending (roll-over into a new one, or the apology).

use std::time::Duration;

use tracing::{info, warn};

use super::{message, CallCore, Ended, Mode, Output};
use crate::booking::CallKind;
use crate::bridge::guardrail::Trip;
use crate::bridge::prompts;
use crate::bridge::registry::CallEvent;
use crate::bridge::transcript::Transcript;
use crate::openai::events::ServerEvent;
use crate::openai::{LegEnd, LegError, LegEvent};
use crate::sip::EndReason;

/// The note that opens a rolled-over session, before the conversation so far.
pub const ROLL_OVER_NOTE: &str = "This phone call is already in progress; the conversation so \
     far follows. Continue it from there: do not greet the caller again.";
/// The most turns carried into a rolled-over session (the latest ones).
pub const MAX_CARRIED_TURNS: usize = 400;

/// Why a session ended, as the failure metric's `cause` label.
pub fn end_cause(e: &LegEnd) -> &'static str {
    match e {
        LegEnd::Closed => "closed",
        LegEnd::SessionExpired => "session_expired",
        LegEnd::PeerFailed => "peer_failed",
        LegEnd::PeerClosed => "peer_closed",
        LegEnd::Disconnected(_) => "disconnected",
        LegEnd::ChannelClosed => "channel_closed",
        LegEnd::SocketClosed { .. } => "socket_closed",
        LegEnd::Transport(_) => "transport",
    }
}

/// Why a leg could not be opened, as the failure metric's `cause` label.
pub fn failure_cause(e: &LegError) -> &'static str {
    match e {
        LegError::Mint(_) => "mint",
        LegError::Refused { status: 429, .. } => "rate_limited",
        LegError::Refused { status, .. } if *status >= 500 => "server_error",
        LegError::Refused { .. } => "refused",
        LegError::Timeout { .. } => "timeout",
        LegError::BadAnswer(_) => "bad_answer",
        LegError::Transport(_) => "transport",
        LegError::Ended(_) => "ended",
    }
}

impl CallCore {
    /// Something came from the realtime session.
    pub fn handle_leg(&mut self, now: Duration, ev: LegEvent) {
        if self.is_over() {
            return;
        }
        match ev {
            LegEvent::Audio(a) => {
                if !self.dropping_agent_audio {
                    self.media.push_agent(now, &a);
                }
            }
            LegEvent::ToolCall(tc) => self.handle_tool_call(now, tc),
            LegEvent::Event(ev) => self.on_event(now, ev),
            LegEvent::Ended(reason) => self.on_leg_ended(now, reason),
        }
        if self.kind == CallKind::Web {
            // no media ticks on a browser's call: the events say when the goodbye is over
            self.check_ending(now);
        }
    }

    fn on_event(&mut self, now: Duration, ev: ServerEvent) {
        match ev {
            ServerEvent::SessionCreated { session, .. }
            | ServerEvent::SessionUpdated { session, .. }
                if session.id.is_some() =>
            {
                self.p.update(|d| d.session_id = session.id);
            }
            ServerEvent::SpeechStarted { .. } => {
                // the callee of an outbound call spoke first: the agent answers that turn
                self.opening_at = None;
                if self.relay_turns().is_some() {
                    self.overlap_speech_started(now);
                } else {
                    self.barge_in(now, false);
                }
            }
            ServerEvent::InputAudioBufferCommitted { item_id, .. }
                if self.relay_turns().is_some() =>
            {
                self.overlap_committed(now, item_id);
            }
            ServerEvent::OutputAudioBufferCleared { response_id, .. } => {
                self.service_playing = false;
                // a clear we asked for (an interrupt) can arrive after the next response
                // began: only the current response's clear is a barge-in
                if self.current_response.as_deref() == Some(response_id.as_str()) {
                    self.barge_in(now, false);
                }
            }
            ServerEvent::OutputAudioBufferStarted { .. } => self.service_playing = true,
            ServerEvent::OutputAudioBufferStopped { .. } => self.service_playing = false,
            ServerEvent::ResponseCreated { response, .. } => {
                self.opening_at = None;
                self.current_response = response.id;
                self.response_active = true;
                self.dropping_agent_audio = self.goodbye.is_some();
                self.watch.reset();
            }
            ServerEvent::ResponseDone { .. } => {
                self.response_active = false;
                if let Some(trip) = self.agent_guardrails(|w, g| w.done(g)) {
                    self.guardrail_tripped(now, trip);
                }
            }
            ServerEvent::OutputAudioTranscriptDelta { item_id, delta, .. } => {
                if self.dropping_agent_audio {
                    return;
                }
                self.transcript
                    .agent_delta(&self.p, &item_id, &delta, super::at_ms(now));
                if let Some(trip) = self.agent_guardrails(|w, g| w.push(g, &delta)) {
                    self.guardrail_tripped(now, trip);
                }
            }
            ServerEvent::OutputAudioTranscriptDone {
                item_id,
                transcript,
                ..
            } => {
                self.transcript
                    .agent_done(&self.p, &item_id, &transcript, super::at_ms(now));
                if self.moderation {
                    tracing::debug!(chars = transcript.len(), "moderation check of a turn");
                    self.outputs.push_back(Output::Moderate(transcript));
                }
            }
            ServerEvent::InputTranscriptionCompleted {
                item_id,
                transcript,
                ..
            } => {
                self.transcript
                    .caller(&self.p, &item_id, &transcript, super::at_ms(now));
                self.overlap_transcript(now, &item_id, &transcript);
            }
            ServerEvent::Error { error, .. } => {
                warn!(
                    code = error.code.as_deref().unwrap_or("-"),
                    message = %error.message,
                    "the realtime service reported an error"
                );
            }
            _ => {}
        }
    }

    /// Runs the agent's guardrails through `f` with the transcript watch.
    fn agent_guardrails(
        &mut self,
        f: impl FnOnce(
            &mut crate::bridge::guardrail::TranscriptWatch,
            &crate::bridge::guardrail::Guardrails,
        ) -> Option<Trip>,
    ) -> Option<Trip> {
        let Mode::Agent(agent) = &self.mode else {
            return None;
        };
        f(&mut self.watch, &agent.guardrails)
    }

    /// The caller talked over the agent (or the operator interrupted, or a guardrail
    /// tripped): stop its audio at once and tell the service how much was not heard.
    pub(super) fn barge_in(&mut self, now: Duration, forced: bool) {
        // one interruption per answer: the events that follow ours (the service's clear,
        // its speech_started) find the answer already stopped
        if self.goodbye.is_some() || (self.dropping_agent_audio && !forced) {
            return;
        }
        let mut f = self.media.flush(now);
        // speech over the agent paused its audio first: the caller heard what was left then
        if let Some(r) = self.paused_residual.take() {
            f.residual_ms = r;
        }
        let speaking = f.unplayed_ms > 0 || f.residual_ms > 0 || self.service_playing;
        self.dropping_agent_audio = true;
        if !speaking && !forced {
            return;
        }
        self.barge_ins += 1;
        self.metrics
            .barge_in_residual_seconds
            .observe(f.residual_ms as f64 / 1000.0);
        self.transcript.cut_off(&self.p);
        self.p.emit(CallEvent::BargeIn {
            residual_ms: f.residual_ms,
            flushed_ms: f.unplayed_ms,
        });
        info!(
            residual_ms = f.residual_ms,
            flushed_ms = f.unplayed_ms,
            forced,
            "barge-in"
        );
        if self.has_leg {
            self.outputs.push_back(Output::Interrupt {
                unplayed_ms: f.unplayed_ms,
            });
        }
    }

    fn guardrail_tripped(&mut self, now: Duration, trip: Trip) {
        warn!(rule = %trip.rule, "an output guardrail stopped the agent");
        self.metrics.guardrail_trips.inc();
        self.p.emit(CallEvent::Guardrail {
            rule: trip.rule.clone(),
        });
        self.barge_in(now, true);
        self.watch.reset();
        let text = format!(
            "Your last answer was stopped before the caller heard all of it, by the rule \"{}\": {} Answer the caller again without it.",
            trip.rule, trip.message
        );
        self.send(message("system", text));
        self.respond();
    }

    /// The moderation check of a turn answered: `Some(category)` flagged it (handled like a
    /// guardrail trip); an error lets the call go on (fail open).
    pub fn handle_moderation(&mut self, now: Duration, r: Result<Option<String>, String>) {
        if self.is_over() {
            return;
        }
        match r {
            Ok(Some(category)) => {
                let trip = Trip {
                    rule: format!("moderation:{category}"),
                    matched: String::new(),
                    message: format!("the moderation check flagged it as {category}."),
                };
                self.guardrail_tripped(now, trip);
            }
            Ok(None) => tracing::debug!("the moderation check passed a turn"),
            Err(e) => warn!(error = %e, "the moderation check failed; the call goes on"),
        }
    }

    fn on_leg_ended(&mut self, now: Duration, reason: LegEnd) {
        // the task lets the ended session go (it would say it ended again and again)
        self.has_leg = false;
        self.outputs.push_back(Output::CloseLeg);
        if self.goodbye.is_some() || self.ending.is_some() {
            return;
        }
        if self.kind == CallKind::Web {
            // the sideband is the browser's call: its end is the call's end
            let outcome = match &reason {
                // the service closes the sideband when the browser's call ends
                LegEnd::SocketClosed { .. } => "caller_hangup",
                LegEnd::SessionExpired => "session_expired",
                other => {
                    warn!(reason = %other, "the sideband of a browser's call failed");
                    self.metrics.realtime_failed(end_cause(other));
                    "realtime_failed"
                }
            };
            self.end(Ended {
                reason: outcome.into(),
                sip: None,
            });
            return;
        }
        if self.warm_session_lost(now) {
            // the person, once they answer, is put through without a briefing
            return;
        }
        if reason == LegEnd::SessionExpired {
            // the service ends a session after 60 minutes: continue in a new one
            info!("the realtime session expired: continuing in a new one");
            self.media.flush(now);
            self.rolling_over = true;
            self.outputs.push_back(Output::OpenLeg);
            return;
        }
        self.session_lost(now, end_cause(&reason), &reason.to_string());
    }

    /// The session is gone for good: the caller hears the apology, then BYE.
    fn session_lost(&mut self, now: Duration, cause: &'static str, why: &str) {
        warn!(reason = %why, "the realtime session ended mid-call: apologising");
        self.apologise(now, cause);
    }

    /// No session, none to come: counts the failure under `cause`, and the caller hears the
    /// apology, then BYE.
    pub(super) fn apologise(&mut self, now: Duration, cause: &'static str) {
        self.metrics.realtime_failed(cause);
        self.say_goodbye(
            now,
            prompts::apology(),
            "realtime_failed",
            EndReason::RelayBye,
        );
    }

    /// The session asked for with [`Output::OpenLeg`] is open (its id) or could not be.
    /// The new session keeps the agent's own instructions; what was said goes in as
    /// conversation items, the caller's words as `user` messages, never into the
    /// instructions (where a caller could write the agent's rules).
    pub fn handle_leg_opened(&mut self, now: Duration, opened: Result<Option<String>, String>) {
        if !std::mem::take(&mut self.rolling_over) || self.is_over() {
            return;
        }
        match opened {
            Ok(session_id) => {
                self.has_leg = true;
                self.p.update(|d| d.session_id = session_id);
                self.send(message("system", ROLL_OVER_NOTE.into()));
                for (role, text) in Transcript::as_items(&self.p, MAX_CARRIED_TURNS) {
                    self.send(message(role, text));
                }
                self.dropping_agent_audio = false;
                self.response_active = false;
                self.service_playing = false;
            }
            Err(e) => {
                warn!(error = %e, "the new realtime session did not open");
                self.session_lost(now, "session_expired", "the session expired");
            }
        }
    }
}
