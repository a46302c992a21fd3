//! The caller speaking over the agent, on a phone call whose barge-in the relay owns
//! ([`crate::bridge::backchannel`]): the agent's audio pauses at the service's
//! `speech_started`; the relay then times the caller's voice itself, frame by frame (the
//! service says a turn ended only after its silence time, 500 ms by default): `min_speech` of
//! voice interrupts the agent (the answer is cancelled, the rest dropped); a voice that stops
//! sooner lets the agent play on from where it paused, unless the turn's transcript is more
//! than backchannel ("no", "wait"), which then interrupts. The relay also starts every answer
//! after a caller's turn (the service's `create_response` is off), except after backchannel.

use std::time::Duration;

use crate::media::frame::{mean_square, Frame, FRAME_DURATION as FRAME};

use tracing::info;

use super::{CallCore, Mode};
use crate::booking::CallKind;
use crate::bridge::backchannel::Backchannel;

/// Where the caller's current speech stands against the agent's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Overlap {
    /// No caller speech over the agent.
    #[default]
    None,
    /// The caller started speaking over the agent at `since`; its audio is paused while the
    /// relay times the voice.
    Pending {
        /// When the speech started.
        since: Duration,
        /// Voiced time heard since.
        voiced: Duration,
        /// The last voiced frame.
        last_voiced: Duration,
    },
    /// The voice stopped short: the agent plays on; the turn's commit comes next.
    Short,
    /// The speech lasted: the agent was interrupted; its turn gets an answer.
    Interrupted,
    /// The speech was short and the agent plays on; `item_id`'s transcript decides.
    Listening {
        /// The caller's turn.
        item_id: String,
        /// Taken for backchannel if no transcript came by then.
        until: Duration,
    },
}

/// Unvoiced this long, the caller's speech has stopped.
const HANGOVER: Duration = Duration::from_millis(200);

/// Undecided this long past `min_speech` (no frames came to time), the speech counts as long.
const PENDING_LIMIT: Duration = Duration::from_secs(1);

/// Mean power above which a frame is voice: −45 dBFS (a quiet talker on a phone line is
/// about −30 dBFS, line noise below −55).
const VOICE_POWER: i64 = {
    // 32768² × 10^(−45/10) ≈ 33_954, per sample
    33_954
};

/// The frame's mean power is above [`VOICE_POWER`].
fn is_voiced(frame: &Frame) -> bool {
    mean_square(frame) > VOICE_POWER
}

impl CallCore {
    /// The relay owns barge-in on this call.
    pub(super) fn relay_turns(&self) -> Option<&Backchannel> {
        if self.kind != CallKind::Phone || !matches!(self.mode, Mode::Agent(_)) {
            return None;
        }
        self.settings.backchannel.as_ref()
    }

    /// The agent is saying something, or about to: an answer runs or its audio waits.
    fn agent_audible(&self) -> bool {
        self.response_active || !self.media.is_idle() || self.service_playing
    }

    /// `input_audio_buffer.speech_started`.
    pub(super) fn overlap_speech_started(&mut self, now: Duration) {
        if self.goodbye.is_some() || self.dropping_agent_audio || !self.agent_audible() {
            self.overlap = Overlap::None;
            return;
        }
        let residual = self.media.pause(now);
        // the first pause of this speech is the one the caller heard
        if !matches!(self.overlap, Overlap::Pending { .. }) {
            self.paused_residual = Some(residual);
        }
        self.overlap = Overlap::Pending {
            since: now,
            voiced: Duration::ZERO,
            last_voiced: now,
        };
    }

    /// The caller's frame at `now` (after the echo gate), while their speech over the agent
    /// is being timed.
    pub(super) fn overlap_frame(&mut self, now: Duration, frame: &Frame) {
        let Overlap::Pending {
            since,
            mut voiced,
            mut last_voiced,
        } = self.overlap
        else {
            return;
        };
        let Some(min) = self.relay_turns().map(|b| b.min_speech) else {
            return;
        };
        if is_voiced(frame) {
            voiced += FRAME;
            last_voiced = now;
        }
        if voiced >= min {
            self.overlap = Overlap::Interrupted;
            self.barge_in(now, false);
            self.media.resume();
        } else if now.saturating_sub(last_voiced) >= HANGOVER {
            // the voice stopped short: the agent goes on at once
            self.overlap = Overlap::Short;
            self.media.resume();
        } else {
            self.overlap = Overlap::Pending {
                since,
                voiced,
                last_voiced,
            };
        }
    }

    /// The deadline of the overlap, for [`CallCore::poll_timeout`].
    pub(super) fn overlap_deadline(&self) -> Option<Duration> {
        let b = self.relay_turns()?;
        match &self.overlap {
            Overlap::Pending { since, .. } => Some(*since + b.min_speech + PENDING_LIMIT),
            Overlap::Listening { until, .. } => Some(*until),
            _ => None,
        }
    }

    /// Time passed: speech that has lasted interrupts; a transcript that never came leaves
    /// the short turn as backchannel.
    pub(super) fn overlap_timeout(&mut self, now: Duration) {
        let Some(b) = self.relay_turns() else {
            return;
        };
        let min = b.min_speech;
        match self.overlap {
            // no caller frames to time (muted, RTP stopped): the speech counts as long
            Overlap::Pending { since, .. } if now >= since + min + PENDING_LIMIT => {
                self.overlap = Overlap::Interrupted;
                self.barge_in(now, false);
                self.media.resume();
            }
            Overlap::Listening { until, .. } if now >= until => {
                self.overlap = Overlap::None;
                self.backchannel(now, None);
            }
            _ => {}
        }
    }

    /// `input_audio_buffer.committed`: the caller's turn is in the conversation.
    pub(super) fn overlap_committed(&mut self, now: Duration, item_id: String) {
        match std::mem::take(&mut self.overlap) {
            Overlap::Pending { .. } | Overlap::Short => {
                self.media.resume();
                if self.agent_audible() {
                    // short: the agent goes on; the transcript decides
                    let wait = self
                        .relay_turns()
                        .map_or(Duration::ZERO, |b| b.transcript_wait);
                    self.overlap = Overlap::Listening {
                        item_id,
                        until: now + wait,
                    };
                } else {
                    // the agent had finished meanwhile: an ordinary turn
                    self.paused_residual = None;
                    self.respond_turn();
                }
            }
            Overlap::Interrupted | Overlap::None => {
                self.paused_residual = None;
                self.respond_turn();
            }
            listening @ Overlap::Listening { .. } => {
                // a second turn while the first short one waits for its transcript: the
                // first stays undecided; this one is answered
                self.overlap = listening;
                self.respond_turn();
            }
        }
    }

    /// A caller turn's transcript: decides a short turn over the agent.
    pub(super) fn overlap_transcript(&mut self, now: Duration, item_id: &str, transcript: &str) {
        let Overlap::Listening {
            item_id: ref waiting,
            ..
        } = self.overlap
        else {
            return;
        };
        if waiting != item_id {
            return;
        }
        self.overlap = Overlap::None;
        let backchannel = self
            .relay_turns()
            .is_some_and(|b| b.is_backchannel(transcript));
        if backchannel {
            self.backchannel(now, Some(transcript));
        } else {
            // a short real interruption ("no", "wait"): stop the agent now and answer
            self.paused_residual = None;
            self.barge_in(now, false);
            self.respond_turn();
        }
    }

    /// Answers a caller's turn, unless answering-machine detection still holds the agent
    /// (its verdict answers then).
    fn respond_turn(&mut self) {
        if !self.amd_holding() {
            self.respond();
        }
    }

    fn backchannel(&mut self, _now: Duration, transcript: Option<&str>) {
        self.paused_residual = None;
        self.backchannels += 1;
        self.metrics.backchannels.inc();
        info!(
            transcript = transcript.unwrap_or("-"),
            "backchannel: the agent goes on"
        );
    }
}
