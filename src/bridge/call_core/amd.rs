//! Answering-machine detection on a call the relay placed ([`crate::media::amd`]): the agent
//! holds its turns while the callee's first seconds are heard. A person gets the agent at once
//! (its answer to their "hello?"); nothing said, or no decision, lets the agent open; a
//! machine's greeting is listened to until its beep, and the agent then leaves its message.

use std::time::Duration;

use tracing::info;

use super::{message, CallCore};
use crate::bridge::registry::CallEvent;
use crate::media::amd::{Amd, Verdict};
use crate::media::frame::Frame;

/// What the agent is told when the beep has sounded.
pub const VOICEMAIL_NOTE: &str = "You reached a voicemail, and its beep has just sounded: \
     leave your message now, in one short turn (who you are, why you called, how to call \
     back), then end the call.";

impl CallCore {
    /// The callee answered a placed call: start listening.
    pub(super) fn amd_start(&mut self) {
        if let Some(s) = self.settings.amd {
            self.amd = Some(Box::new(Amd::new(s)));
        }
    }

    /// The agent holds its turns: the detector has not let it speak yet, or a machine
    /// answered (its beep and its silence are no one's turns: the agent leaves its one
    /// message when the beep is over).
    pub(super) fn amd_holding(&self) -> bool {
        self.amd.is_some() || self.voicemail
    }

    /// The callee's frame at `now`, while the detector listens.
    pub(super) fn amd_frame(&mut self, now: Duration, frame: &Frame) {
        let Some(amd) = self.amd.as_mut() else {
            return;
        };
        amd.handle_frame(now, frame);
        let verdict = amd.poll_verdict();
        let listening = amd.is_listening();
        if !listening {
            self.amd = None;
        }
        if let Some(v) = verdict {
            self.amd_verdict(now, v);
        }
    }

    /// Who answered, in the call's view and its event stream.
    fn answered_by(&mut self, v: Verdict) {
        self.p.update(|d| d.answered_by = Some(v.as_str()));
        self.p.emit(CallEvent::AnsweredBy {
            answered_by: v.as_str(),
        });
    }

    fn amd_verdict(&mut self, now: Duration, v: Verdict) {
        info!(
            verdict = v.as_str(),
            at_ms = super::at_ms(now),
            "answering machine detection"
        );
        match v {
            Verdict::Person | Verdict::Silent | Verdict::Unsure => {
                self.answered_by(v);
                // the agent answers the callee's hello, or opens
                self.respond();
            }
            Verdict::Machine => {
                self.voicemail = true;
                self.answered_by(v);
            }
            Verdict::Beep | Verdict::NoBeep => {
                self.send(message("system", VOICEMAIL_NOTE.into()));
                self.respond();
            }
        }
    }
}
