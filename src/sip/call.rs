//! The SIP side of one call: its dialog, its SDP, and what the dialog tells the call's task.
//!
//! A [`SipCall`] is owned by the call's task (the bridge). Dialog events for the call arrive
//! on its own channel; [`SipCall::on_dialog_state`] answers in-dialog requests (re-INVITE,
//! OPTIONS, INFO, ...) and turns the rest into [`PhoneEvent`]s.

use std::net::SocketAddr;

use rsipstack::dialog::dialog::{DialogState, TerminatedReason};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Method, StatusCode};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::headers::{allow_headers, sdp_headers, sipfrag_status};
use super::sdp::{self, Direction, LocalSdp, Negotiated};
use super::setup::SetupSlot;
use crate::media::srtp::KeySlot;

/// What happened on the SIP side that the call's task must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneEvent {
    /// The caller acknowledged our 200 OK: media may flow both ways.
    Acked,
    /// A re-INVITE changed where or whether media flows (already answered).
    MediaChanged {
        /// Where to send RTP now; `None` to send nothing.
        remote_rtp: Option<SocketAddr>,
        /// Where to send RTCP now.
        remote_rtcp: Option<SocketAddr>,
        /// The relay's direction now.
        direction: Direction,
    },
    /// A NOTIFY about our REFER: the status line of the transfer target's answer
    /// (`message/sipfrag`), e.g. 100 trying, 180 ringing, 200 answered, 486 busy.
    TransferProgress {
        /// The SIP status the target answered.
        status: u16,
    },
    /// The dialog is over.
    Ended(EndReason),
}

/// Why a call ended, as the logs, metrics and call records name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller sent BYE.
    CallerBye,
    /// The caller cancelled before we answered.
    CallerCancel,
    /// Our 200 OK was never acknowledged.
    AckTimeout,
    /// The relay hung up (agent, operator or limit).
    RelayBye,
    /// The call was refused before answer.
    Rejected,
    /// The call reached `bridge.max_call_seconds`.
    MaxDuration,
    /// No RTP from the caller for `sip.rtp_timeout_seconds`.
    RtpTimeout,
    /// The relay is shutting down.
    Shutdown,
    /// Anything else the stack reported.
    Other,
}

impl EndReason {
    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallerBye => "caller_bye",
            EndReason::CallerCancel => "caller_cancel",
            EndReason::AckTimeout => "ack_timeout",
            EndReason::RelayBye => "relay_bye",
            EndReason::Rejected => "rejected",
            EndReason::MaxDuration => "max_duration",
            EndReason::RtpTimeout => "rtp_timeout",
            EndReason::Shutdown => "shutdown",
            EndReason::Other => "other",
        }
    }
}

/// How long a hang-up waits for the ACK of our 200 OK: as long as the stack resends the 200
/// (64 x T1), after which it ends the dialog itself.
const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(32);

/// What hanging up sends, by the dialog's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HangUp {
    /// BYE now: the caller acknowledged our 200 OK.
    Bye,
    /// BYE once the caller's ACK is in. RFC 3261 15: the callee must not send BYE before
    /// the ACK of its 2xx. Through a proxy, a BYE sent at once can overtake the 200 on its
    /// way to the caller (who then takes it for a stray request and the call hangs).
    ByeAfterAck,
    /// Not answered (yet): refuse the INVITE instead.
    Refuse,
}

/// Decides what hanging up sends (`acked`: the call has seen the ACK).
fn hang_up_with(state: &DialogState, acked: bool) -> HangUp {
    match state {
        _ if acked => HangUp::Bye,
        DialogState::Confirmed(..) => HangUp::Bye,
        DialogState::WaitAck(..) => HangUp::ByeAfterAck,
        _ => HangUp::Refuse,
    }
}

/// The SIP side of one call.
pub struct SipCall {
    dialog: InviteDialog,
    local: LocalSdp,
    negotiated: Negotiated,
    states: mpsc::Receiver<DialogState>,
    acked: bool,
    ended: bool,
    /// Where the call's RTP leg takes its SRTP keys from.
    keys: Option<KeySlot>,
    /// The call's place among the calls being set up, freed on answer.
    setup: Option<SetupSlot>,
    /// The relay placed this call: it is answered already, by the callee.
    outbound: bool,
}

impl std::fmt::Debug for SipCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipCall")
            .field("dialog", &self.dialog.id().to_string())
            .finish()
    }
}

impl SipCall {
    pub(crate) fn new(
        dialog: InviteDialog,
        local: LocalSdp,
        negotiated: Negotiated,
        states: mpsc::Receiver<DialogState>,
        setup: SetupSlot,
    ) -> Self {
        Self {
            setup: Some(setup),
            ..Self::unset(dialog, local, negotiated, states)
        }
    }

    /// A call the relay placed, answered by the callee (our ACK sent).
    pub(crate) fn outbound(
        dialog: InviteDialog,
        local: LocalSdp,
        negotiated: Negotiated,
        states: mpsc::Receiver<DialogState>,
    ) -> Self {
        Self {
            acked: true,
            outbound: true,
            ..Self::unset(dialog, local, negotiated, states)
        }
    }

    fn unset(
        dialog: InviteDialog,
        local: LocalSdp,
        negotiated: Negotiated,
        states: mpsc::Receiver<DialogState>,
    ) -> Self {
        Self {
            dialog,
            local,
            negotiated,
            states,
            acked: false,
            ended: false,
            keys: None,
            setup: None,
            outbound: false,
        }
    }

    /// Hands the negotiated SRTP keys to the call's RTP leg through its slot
    /// ([`crate::media::rtp_leg::RtpLeg::key_slot`]), now and after each re-INVITE that
    /// changes them. A plain call leaves the slot untouched, so its leg stays on the plain
    /// path until a re-INVITE brings keys.
    pub fn share_keys(&mut self, slot: KeySlot) {
        if let Some(s) = &self.negotiated.srtp {
            slot.set(Some(s.keys.clone()));
        }
        self.keys = Some(slot);
    }

    /// What was agreed with the caller.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// Sends 180 Ringing.
    pub fn ring(&self) {
        if self.outbound {
            return;
        }
        if let Err(e) = self.dialog.ringing(None, None) {
            debug!(error = %e, "ringing not sent");
        }
    }

    /// Answers with 200 OK and our SDP; the error says why the stack refused.
    pub fn answer(&mut self) -> Result<(), String> {
        if self.outbound {
            // the callee answered; the relay's side is up already
            return Ok(());
        }
        let body = self.local.answer(&self.negotiated);
        // Answered (or refused by the stack): either way no longer a call in setup.
        self.setup.take();
        self.dialog
            .accept(Some(sdp_headers()), Some(body.into_bytes()))
            .map_err(|e| e.to_string())
    }

    /// Refuses the call before it is answered.
    pub fn reject(&mut self, code: StatusCode) {
        self.ended = true;
        self.setup.take();
        let _ = self.dialog.reject(Some(code), None);
    }

    /// Sends BYE (or, before answer, a 480) and marks the call ended.
    pub async fn hang_up(&mut self, reason: EndReason) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.setup.take();
        let send_bye = match hang_up_with(&self.dialog.state(), self.acked) {
            HangUp::Bye => true,
            HangUp::ByeAfterAck => self.wait_for_ack().await,
            HangUp::Refuse => false,
        };
        if send_bye {
            let r = match reason {
                EndReason::MaxDuration | EndReason::Shutdown | EndReason::RelayBye => {
                    "Q.850;cause=16;text=\"Normal call clearing\""
                }
                _ => "Q.850;cause=41;text=\"Temporary failure\"",
            };
            if let Err(e) = self.dialog.bye_with_reason(r.to_string()).await {
                debug!(error = %e, "BYE not sent");
            }
        } else {
            let _ = self
                .dialog
                .reject(Some(StatusCode::TemporarilyUnavailable), None);
        }
    }

    /// Waits for the caller's ACK of our 200 OK, answering in-dialog requests meanwhile; at
    /// most [`ACK_WAIT`], after which the BYE may go (RFC 3261 15). False when the dialog
    /// ended first (the caller hung up, or the stack gave up on the ACK and said BYE itself).
    async fn wait_for_ack(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.states.recv()).await {
                Ok(Some(DialogState::Confirmed(..))) => {
                    self.acked = true;
                    return true;
                }
                Ok(Some(DialogState::Terminated(..))) | Ok(None) => return false,
                Ok(Some(other)) => {
                    let _ = self.on_dialog_state(other).await;
                }
                Err(_) => return true,
            }
        }
    }

    /// Asks the caller's side to call `target` instead (a blind transfer, RFC 3515). Returns
    /// the REFER's final status (202 when accepted); the outcome follows as
    /// [`PhoneEvent::TransferProgress`] events.
    pub async fn refer(&self, target: &str) -> Result<u16, String> {
        let refer_to = rsipstack::sip::ReferTo::new(format!("<{target}>"));
        match self.dialog.refer(refer_to, None, None).await {
            Ok(Some(resp)) => Ok(u16::from(resp.status_code)),
            Ok(None) => Err("no answer to the REFER".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The next dialog event, turned into what the call needs to know. Requests that need an
    /// answer are answered here. `None` once the dialog is gone.
    pub async fn next_event(&mut self) -> Option<PhoneEvent> {
        loop {
            let state = self.states.recv().await?;
            if let Some(ev) = self.on_dialog_state(state).await {
                return Some(ev);
            }
        }
    }

    /// Handles one dialog state; returns an event for the call if there is one.
    pub async fn on_dialog_state(&mut self, state: DialogState) -> Option<PhoneEvent> {
        match state {
            DialogState::Confirmed(..) => {
                if self.acked {
                    // The stack repeats Confirmed after each in-dialog request.
                    None
                } else {
                    self.acked = true;
                    Some(PhoneEvent::Acked)
                }
            }
            DialogState::Updated(_, req, handle) => {
                if req.method != Method::Invite {
                    // UPDATE without a body (session refresh) or with an offer.
                    if req.body.is_empty() {
                        let _ = handle
                            .respond(StatusCode::OK, Some(allow_headers()), None)
                            .await;
                        return None;
                    }
                }
                if req.body.is_empty() {
                    // An offer-less re-INVITE: our current SDP is the offer in the 200.
                    let body = self.local.answer(&self.negotiated);
                    let _ = handle
                        .respond(StatusCode::OK, Some(sdp_headers()), Some(body.into_bytes()))
                        .await;
                    return None;
                }
                match sdp::negotiate(&req.body) {
                    Ok(mut n) => {
                        n.keep_local_key(&self.negotiated);
                        if n.srtp != self.negotiated.srtp {
                            // The leg has the new keys before the caller has our answer.
                            if let Some(slot) = &self.keys {
                                slot.set(n.srtp.as_ref().map(|s| s.keys.clone()));
                            }
                        }
                        let body = self.local.answer(&n);
                        let ev = PhoneEvent::MediaChanged {
                            remote_rtp: n.remote_rtp,
                            remote_rtcp: n.remote_rtcp,
                            direction: n.direction,
                        };
                        self.negotiated = n;
                        let _ = handle
                            .respond(StatusCode::OK, Some(sdp_headers()), Some(body.into_bytes()))
                            .await;
                        Some(ev)
                    }
                    Err(e) => {
                        warn!(error = %e, "re-INVITE refused");
                        let _ = handle.reply(StatusCode::NotAcceptableHere).await;
                        None
                    }
                }
            }
            DialogState::Options(_, _, handle) | DialogState::Info(_, _, handle) => {
                let _ = handle
                    .respond(StatusCode::OK, Some(allow_headers()), None)
                    .await;
                None
            }
            DialogState::Notify(_, req, handle) => {
                // rsipstack's own ReferStatus parser never matches (see docs): read the
                // sipfrag body ourselves
                let status = sipfrag_status(&req.body);
                let _ = handle.reply(StatusCode::OK).await;
                status.map(|status| PhoneEvent::TransferProgress { status })
            }
            DialogState::Refer(_, _, handle)
            | DialogState::Message(_, _, handle)
            | DialogState::Publish(_, _, handle) => {
                let _ = handle
                    .respond(StatusCode::MethodNotAllowed, Some(allow_headers()), None)
                    .await;
                None
            }
            DialogState::Terminated(_, reason) => {
                if self.ended {
                    return Some(PhoneEvent::Ended(EndReason::RelayBye));
                }
                self.ended = true;
                // on a call the relay placed, the far end is the UAS: its BYE is the
                // other party hanging up ("caller" in the reasons is whoever is not the relay)
                Some(PhoneEvent::Ended(match (reason, self.outbound) {
                    (TerminatedReason::UacBye, false) | (TerminatedReason::UasBye, true) => {
                        EndReason::CallerBye
                    }
                    (TerminatedReason::UacBye, true) | (TerminatedReason::UasBye, false) => {
                        EndReason::RelayBye
                    }
                    (TerminatedReason::UacCancel, _) => EndReason::CallerCancel,
                    (TerminatedReason::Timeout, _) => EndReason::AckTimeout,
                    _ => EndReason::Other,
                }))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::dialog::DialogId;
    use rsipstack::sip::Response;

    fn id() -> DialogId {
        DialogId {
            call_id: "c".into(),
            local_tag: "l".into(),
            remote_tag: "r".into(),
        }
    }

    #[test]
    fn a_hang_up_before_the_ack_of_our_200_waits_for_it() {
        let waiting = DialogState::WaitAck(id(), Response::default());
        assert_eq!(hang_up_with(&waiting, false), HangUp::ByeAfterAck);
        // the call already saw the ACK (the stack's state may lag behind): BYE at once
        assert_eq!(hang_up_with(&waiting, true), HangUp::Bye);
        assert_eq!(
            hang_up_with(&DialogState::Confirmed(id(), Response::default()), false),
            HangUp::Bye
        );
    }

    #[test]
    fn a_hang_up_before_the_answer_refuses_the_call() {
        assert_eq!(
            hang_up_with(&DialogState::Trying(id()), false),
            HangUp::Refuse
        );
        assert_eq!(
            hang_up_with(&DialogState::Early(id(), Response::default()), false),
            HangUp::Refuse
        );
    }
}
