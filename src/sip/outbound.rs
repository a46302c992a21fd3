//! Calls the relay places (`POST /api/calls`): an INVITE out through a trunk, with its digest
//! credentials when the trunk challenges, to the trunk's `outbound_proxy` (else its
//! registrar). The callee's answer is negotiated like an offer, and the answered call goes to
//! the bridge as any call does, marked outbound. What happens to a call that is not answered
//! (busy, no answer, refused) is its [`DialOutcome`].

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::DialogState;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::transport::SipAddr;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::call::SipCall;
use super::early_media::EarlyListener;
use super::sdp::{self, LocalSdp};
use super::server::{new_call_id, CallSlot, IncomingCall, Shared, DIALOG_QUEUE};
use crate::media::g711::Law;
use crate::media::rtp_leg::RtpLeg;

/// How long an outbound call may ring, unless its [`Dial`] says otherwise, before it is
/// cancelled and counts as not answered.
pub const RING_TIMEOUT: Duration = Duration::from_secs(45);

/// After a CANCEL, how long the INVITE's final answer (487) is waited for before the attempt
/// ends anyway (the SIP stack finishes the transaction, and ends a 200 that crossed the
/// CANCEL with a BYE).
const CANCEL_GRACE: Duration = Duration::from_secs(4);

/// A call to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    /// The number to call: digits, with an optional leading `+`.
    pub to: String,
    /// The trunk to call through (by name); the first trunk that can place calls when `None`.
    pub trunk: Option<String>,
    /// The agent that talks.
    pub agent: String,
    /// What the agent is told about the call (an appointment to confirm, say).
    pub context: Option<String>,
    /// How long it may ring ([`RING_TIMEOUT`] when `None`).
    pub ring_timeout: Option<Duration>,
}

/// A second leg of a live call (a warm transfer's person): placed like any call, but the
/// answered leg is handed to whoever placed it instead of to the bridge.
#[derive(Debug, Clone)]
pub struct LegDial {
    /// Where to call: a `sip:` URI. Through the trunk whose registrar or proxy names the
    /// same host (with its credentials), else straight to the URI's host.
    pub uri: String,
    /// The only codec offered: the first leg's, so that the two need no transcoding.
    pub codec: Law,
    /// How long it may ring before it is cancelled.
    pub ring_timeout: Duration,
    /// Cancels the attempt while it rings (the first leg ended).
    pub cancel: CancellationToken,
    /// The first leg's caller as a trusted trunk gave their number: the display name of our
    /// From, so that the person's phone shows who is being put through.
    pub shown_as: Option<String>,
}

/// What the agent knows of an outbound call it is on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbound {
    /// `Dial::context`.
    pub context: Option<String>,
}

/// Why a call could not even be tried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// No such trunk.
    #[error("no trunk is named {0:?}")]
    UnknownTrunk(String),
    /// The trunk (or every trunk) has neither `outbound_proxy` nor `registrar`.
    #[error("no trunk can place calls (one needs outbound_proxy or registrar)")]
    NoTrunk,
    /// `to` is not a phone number.
    #[error("`to` must be a phone number: digits, with an optional leading +")]
    BadNumber,
    /// At `sip.max_calls`, overloaded (a new call), or draining.
    #[error("the relay takes no more calls now")]
    Busy,
    /// No RTP port free.
    #[error("no RTP port is free")]
    NoPort,
}

/// How a placed call went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialOutcome {
    /// Answered: the call runs in the bridge under this id.
    Answered,
    /// The callee was busy or declined (486, 600, 603).
    Busy(u16),
    /// Nobody answered in time (408, 480, 487, or cancelled at the ring timeout).
    NoAnswer,
    /// Any other refusal, with its status.
    Refused(u16),
    /// The network played special information tones ("not in service") before any answer:
    /// the call was cancelled.
    Unreachable,
    /// No answer could be had (transport, a bad answer).
    Failed(String),
}

impl DialOutcome {
    /// The word call records and logs use.
    pub fn as_str(&self) -> &'static str {
        match self {
            DialOutcome::Answered => "answered",
            DialOutcome::Busy(_) => "busy",
            DialOutcome::NoAnswer => "no_answer",
            DialOutcome::Refused(_) => "refused",
            DialOutcome::Unreachable => "unreachable",
            DialOutcome::Failed(_) => "failed",
        }
    }
}

/// True for a number the relay may dial.
pub fn valid_number(to: &str) -> bool {
    let digits = to.strip_prefix('+').unwrap_or(to);
    (3..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// What became of a [`LegDial`]: the answered leg, or why there is none.
pub type LegOutcome = Result<Box<IncomingCall>, DialOutcome>;

/// Places outbound calls. Cheap to clone.
#[derive(Clone)]
pub struct Dialer {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dialer")
    }
}

/// A placed call: its id (the bridge's, once answered), who it is from and to, and its
/// outcome to come.
#[derive(Debug)]
pub struct Placed {
    /// The call's id.
    pub id: String,
    /// Our From URI.
    pub from: String,
    /// The callee's URI.
    pub to: String,
    /// The trunk used.
    pub trunk: String,
    /// Resolves when the call was answered or not.
    pub outcome: JoinHandle<DialOutcome>,
}

impl Dialer {
    /// Checks `d`, takes a call slot and an RTP port, and sends the INVITE in a task of its
    /// own.
    pub async fn dial(&self, d: Dial) -> Result<Placed, DialError> {
        let shared = &self.shared;
        if !valid_number(&d.to) {
            return Err(DialError::BadNumber);
        }
        let trunk = match &d.trunk {
            Some(name) => {
                let t = shared
                    .gate
                    .trunks
                    .by_name(name)
                    .ok_or_else(|| DialError::UnknownTrunk(name.clone()))?;
                destination(t)
                    .map(|dest| (t.clone(), dest))
                    .ok_or(DialError::NoTrunk)?
            }
            None => shared
                .gate
                .trunks
                .all()
                .iter()
                .find_map(|t| destination(t).map(|dest| (t.clone(), dest)))
                .ok_or(DialError::NoTrunk)?,
        };
        let (trunk, (dest, host)) = trunk;
        // a new call would make every call's audio late; a transfer's leg (below) is part of
        // a call already up and is placed all the same
        if shared.overloaded.load(Ordering::Acquire) {
            return Err(DialError::Busy);
        }
        let (slot, rtp) = self.reserve(dest).await?;
        let from = format!("sip:{}@{host}", trunk_user(Some(&trunk)));
        let to = format!("sip:{}@{host}", d.to);
        let id = new_call_id();
        let placed_id = id.clone();
        let (from_c, to_c, trunk_name) = (from.clone(), to.clone(), trunk.cfg.name.clone());
        let shared = shared.clone();
        let outcome = tokio::spawn(async move {
            let call = Attempt {
                shared: shared.clone(),
                id,
                from: from_c,
                to: to_c,
                dest,
                trunk: Some(trunk),
                dial: d,
                codec: None,
                cancel: CancellationToken::new(),
                display: None,
            };
            match call.run(rtp, slot).await {
                Ok(answered) => {
                    shared.handler.on_call(*answered);
                    DialOutcome::Answered
                }
                Err(outcome) => outcome,
            }
        });
        Ok(Placed {
            id: placed_id,
            from,
            to,
            trunk: trunk_name,
            outcome,
        })
    }

    /// Places a second leg for a live call (`agent`'s): the answered leg comes back through
    /// the returned handle, never to the bridge. It holds a call slot of its own.
    pub async fn dial_leg(
        &self,
        d: LegDial,
        agent: &str,
    ) -> Result<JoinHandle<LegOutcome>, DialError> {
        let shared = &self.shared;
        // `sip:` only: a second leg goes over UDP
        let target = d
            .uri
            .starts_with("sip:")
            .then(|| registrar_host(&d.uri))
            .flatten()
            .ok_or(DialError::BadNumber)?;
        // a trunk that serves this host: its credentials and proxy
        let trunk = shared.gate.trunks.all().iter().find_map(|t| {
            let (dest, host) = destination(t)?;
            (host == target).then(|| (t.clone(), dest))
        });
        let dest = match &trunk {
            Some((_, dest)) => *dest,
            None => resolve(&target).await.ok_or(DialError::BadNumber)?,
        };
        let (slot, rtp) = self.reserve(dest).await?;
        let trunk = trunk.map(|(t, _)| t);
        let attempt = Attempt {
            shared: shared.clone(),
            id: new_call_id(),
            from: format!("sip:{}@{target}", trunk_user(trunk.as_ref())),
            to: d.uri.clone(),
            dest,
            trunk,
            dial: Dial {
                to: d.uri,
                trunk: None,
                agent: agent.to_string(),
                context: None,
                ring_timeout: Some(d.ring_timeout),
            },
            codec: Some(d.codec),
            cancel: d.cancel,
            // a number only (a trusted trunk's, digits and `+`): nothing to quote or escape
            display: d.shown_as.filter(|n| valid_number(n)),
        };
        Ok(tokio::spawn(attempt.run(rtp, slot)))
    }

    /// A call slot and an RTP port for a call to `dest`.
    async fn reserve(&self, dest: SocketAddr) -> Result<(CallSlot, RtpLeg), DialError> {
        let shared = &self.shared;
        if shared.draining.load(Ordering::Acquire) {
            return Err(DialError::Busy);
        }
        let prev = shared.active.fetch_add(1, Ordering::AcqRel);
        let slot = CallSlot::new(shared.active.clone(), shared.changed.clone());
        if prev >= shared.cfg.max_calls {
            drop(slot);
            return Err(DialError::Busy);
        }
        let mut rtp = RtpLeg::bind(&shared.ports, shared.cfg.listen.ip())
            .await
            .map_err(|_| DialError::NoPort)?;
        rtp.set_signalling_ip(Some(dest.ip()));
        Ok((slot, rtp))
    }
}

/// The user part of our From: the trunk's account, else `voxrelay`.
fn trunk_user(trunk: Option<&super::trunks::Trunk>) -> String {
    trunk
        .and_then(|t| t.cfg.username.clone())
        .unwrap_or_else(|| "voxrelay".into())
}

/// `host[:port]` to an address, resolving a name (port 5060 when none is given).
async fn resolve(host: &str) -> Option<SocketAddr> {
    if let Some(a) = literal_addr(host) {
        return Some(a);
    }
    let with_port = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5060")
    };
    tokio::net::lookup_host(with_port).await.ok()?.next()
}

/// Where a trunk takes calls: its `outbound_proxy`, else its registrar's host and port; and
/// the host named in the request URI.
fn destination(t: &super::trunks::Trunk) -> Option<(SocketAddr, String)> {
    if let Some(p) = t.cfg.outbound_proxy.as_deref() {
        let addr: SocketAddr = p.parse().ok()?;
        let host = t
            .cfg
            .registrar
            .as_deref()
            .and_then(registrar_host)
            .unwrap_or_else(|| addr.to_string());
        return Some((addr, host));
    }
    let host = registrar_host(t.cfg.registrar.as_deref()?)?;
    Some((literal_addr(&host)?, host))
}

/// An IP address with an optional port (5060 when none is given); `None` for a name.
fn literal_addr(host: &str) -> Option<SocketAddr> {
    host.parse().ok().or_else(|| {
        let ip: IpAddr = host.parse().ok()?;
        Some(SocketAddr::new(ip, 5060))
    })
}

/// `sip:host[:port][;params]` → `host[:port]`.
fn registrar_host(uri: &str) -> Option<String> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let rest = rest.rsplit('@').next()?;
    let host = rest.split(';').next()?;
    (!host.is_empty()).then(|| host.to_string())
}

struct Attempt {
    shared: Arc<Shared>,
    id: String,
    from: String,
    to: String,
    dest: SocketAddr,
    /// The trunk called through (`None`: straight to `dest`, without credentials).
    trunk: Option<super::trunks::Trunk>,
    dial: Dial,
    /// Offer only this codec (a second leg); both when `None`.
    codec: Option<Law>,
    /// Cancels the attempt while it rings.
    cancel: CancellationToken,
    /// Our From's display name.
    display: Option<String>,
}

impl Attempt {
    /// The answered call, or why there is none.
    async fn run(self, mut rtp: RtpLeg, slot: CallSlot) -> LegOutcome {
        let shared = &self.shared;
        let mut local = LocalSdp::new(
            shared.advertised,
            rtp.local_port(),
            rand::random::<u32>() as u64,
        );
        let offer = local.offer(self.codec);
        let parse = |s: &str| rsipstack::sip::Uri::try_from(s).map_err(|e| e.to_string());
        let (caller, callee) = match (parse(&self.from), parse(&self.to)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return Err(DialOutcome::Failed(format!("bad URI: {e}"))),
        };
        let contact = match super::server::contact_uri(
            shared.advertised,
            shared.port,
            rsipstack::sip::Transport::Udp,
        ) {
            Ok(c) => c,
            Err(e) => return Err(DialOutcome::Failed(e.to_string())),
        };
        let account = self.trunk.as_ref().map(|t| (&t.cfg.username, &t.password));
        let credential = match account {
            Some((Some(user), Some(pass))) => Some(Credential {
                username: user.clone(),
                password: pass.expose().to_string(),
                realm: None,
                auth_username: None,
            }),
            _ => None,
        };
        let opt = InviteOption {
            caller_display_name: self.display.clone(),
            caller,
            callee,
            destination: Some(SipAddr::from(self.dest)),
            content_type: Some("application/sdp".into()),
            offer: Some(offer.into_bytes()),
            contact,
            credential,
            ..Default::default()
        };
        let trunk_name = self.trunk.as_ref().map_or("-", |t| t.cfg.name.as_str());
        info!(call = %self.id, to = %self.to, trunk = trunk_name, agent = %self.dial.agent, "dialling");
        let started = SystemTime::now();
        // the dialog's states pass through here on their way to the server's router, so that
        // a 183's answer (early media) is seen
        let (state_tx, mut states) = shared.layer.new_dialog_state_channel();
        let (early_tx, mut early) = mpsc::unbounded_channel();
        let router = shared.state_tx.clone();
        tokio::spawn(async move {
            while let Some(state) = states.recv().await {
                if let DialogState::Early(_, resp) = &state {
                    if !resp.body.is_empty() {
                        let _ =
                            early_tx.send((u16::from(resp.status_code.clone()), resp.body.clone()));
                    }
                }
                if router.send(state).is_err() {
                    return;
                }
            }
        });
        let (dialog, mut invite) = match shared.layer.do_invite_async(opt, state_tx) {
            Ok(x) => x,
            Err(e) => return self.not_answered(DialOutcome::Failed(e.to_string())),
        };
        let ring = self.dial.ring_timeout.unwrap_or(RING_TIMEOUT);
        let rings_out = tokio::time::sleep(ring);
        tokio::pin!(rings_out);
        let mut early_answer: Option<sdp::Negotiated> = None;
        let mut early_packets = 0u64;
        let mut buf = [0u8; 1500];
        let mut listen = EarlyListener::default();
        let mut sit_heard = false;
        let invited = loop {
            tokio::select! {
                joined = &mut invite => break joined,
                _ = &mut rings_out => {
                    info!(call = %self.id, ring_ms = ring.as_millis() as u64, "no answer in time: cancelling the call");
                    return self.cancel(&dialog, invite, DialOutcome::NoAnswer).await;
                }
                _ = self.cancel.cancelled() => {
                    info!(call = %self.id, "no longer wanted: cancelling the call");
                    return self.cancel(&dialog, invite, DialOutcome::Failed("cancelled".into())).await;
                }
                Some((status, body)) = early.recv() => match sdp::negotiate(&body) {
                    // early media (ringback, an announcement): where the callee's side
                    // sends from, and the answer if the 2xx repeats none
                    Ok(n) if early_answer.is_none() => {
                        info!(call = %self.id, status, remote = ?n.remote_rtp, "early media");
                        rtp.set_remote(n.remote_rtp, n.remote_rtcp);
                        // the media may have overtaken its 183
                        sit_heard = listen.answered(&n);
                        early_answer = Some(n);
                    }
                    Ok(_) => {}
                    Err(e) => info!(call = %self.id, status, error = %e, "an early answer that is not usable: ignored"),
                },
                // what the callee's side plays before the answer is heard by no one (not the
                // agent, not answering-machine detection): drained, not left queued for the call
                r = rtp.recv_from(&mut buf) => {
                    let Ok((n, src)) = r else { continue };
                    early_packets += 1;
                    // ...but listened to for the network's "not in service" tones
                    sit_heard = listen.hears_sit(early_answer.as_ref(), src, &buf[..n]);
                }
            }
            if sit_heard {
                info!(call = %self.id, "special information tones: the number cannot be reached; cancelling the call");
                return self.cancel(&dialog, invite, DialOutcome::Unreachable).await;
            }
        };
        if early_packets > 0 {
            info!(call = %self.id, packets = early_packets, "early media dropped");
        }
        let resp = match invited {
            Err(e) => return self.not_answered(DialOutcome::Failed(e.to_string())),
            Ok(Err(e)) => return self.not_answered(DialOutcome::Failed(e.to_string())),
            Ok(Ok((_, Some(resp)))) => resp,
            Ok(Ok((_, None))) => {
                return self.not_answered(DialOutcome::Failed("no final answer".into()))
            }
        };
        if self.cancel.is_cancelled() {
            // answered as the first leg ended: nobody to join it to
            let _ = dialog.bye().await;
            return self.not_answered(DialOutcome::Failed("cancelled".into()));
        }
        let status = u16::from(resp.status_code.clone());
        if !(200..300).contains(&status) {
            let outcome = match status {
                486 | 600 | 603 => DialOutcome::Busy(status),
                408 | 480 | 487 => DialOutcome::NoAnswer,
                s => DialOutcome::Refused(s),
            };
            return self.not_answered(outcome);
        }
        let answer = if resp.body.is_empty() {
            // the answer came in a 183 only
            early_answer.ok_or(sdp::SdpError::Malformed("no SDP answer".into()))
        } else {
            sdp::negotiate(&resp.body)
        };
        let negotiated = match answer {
            Ok(n) => n,
            Err(e) => {
                warn!(call = %self.id, error = %e, "the callee's answer is not usable: hanging up");
                let _ = dialog.bye().await;
                return self.not_answered(DialOutcome::Failed(format!("bad SDP answer: {e}")));
            }
        };
        rtp.set_remote(negotiated.remote_rtp, negotiated.remote_rtcp);
        let (route_tx, route_rx) = mpsc::channel(DIALOG_QUEUE);
        let dialog_id = dialog.id();
        shared.dialogs.insert(dialog_id.to_string(), route_tx);
        let mut sip = SipCall::outbound(dialog, local, negotiated, route_rx);
        sip.share_keys(rtp.key_slot());
        info!(call = %self.id, to = %self.to, "the callee answered");
        Ok(Box::new(IncomingCall {
            id: self.id.clone(),
            sip_call_id: dialog_id.call_id.clone(),
            source: Some(self.dest),
            from: self.from.clone(),
            to: self.to.clone(),
            transport: "udp",
            // the number the relay called itself: its bookings are the callee's
            caller_number: Some(self.dial.to.clone()),
            trunk: self.trunk.as_ref().map(|t| t.cfg.name.clone()),
            agent: self.dial.agent.clone(),
            started,
            sip,
            rtp,
            slot,
            outbound: Some(Outbound {
                context: self.dial.context.clone(),
            }),
        }))
    }

    /// CANCELs the ringing INVITE and waits (bounded) for its final answer; the attempt
    /// ends with `outcome`.
    async fn cancel<T>(
        &self,
        dialog: &rsipstack::dialog::invite_dialog::InviteDialog,
        invite: T,
        outcome: DialOutcome,
    ) -> LegOutcome
    where
        T: std::future::Future,
    {
        if let Err(e) = dialog.cancel().await {
            warn!(call = %self.id, error = %e, "the CANCEL could not be sent");
        }
        let _ = tokio::time::timeout(CANCEL_GRACE, invite).await;
        self.not_answered(outcome)
    }

    fn not_answered(&self, outcome: DialOutcome) -> LegOutcome {
        info!(call = %self.id, to = %self.to, outcome = outcome.as_str(), detail = ?outcome, "the outbound call was not answered");
        Err(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_digits_with_an_optional_plus() {
        for ok in ["+12015550123", "2015550123", "911", "+4930123456789"] {
            assert!(valid_number(ok), "{ok}");
        }
        for bad in [
            "",
            "+",
            "12",
            "sip:x@y",
            "201 555 0123",
            "+1-201",
            "1234567890123456789012",
            "٣٣٣٣",
        ] {
            assert!(!valid_number(bad), "{bad}");
        }
    }

    #[test]
    fn the_registrar_names_the_host() {
        assert_eq!(
            registrar_host("sip:sip.example.com").as_deref(),
            Some("sip.example.com")
        );
        assert_eq!(
            registrar_host("sip:user@10.0.0.1:5070;transport=udp").as_deref(),
            Some("10.0.0.1:5070")
        );
        assert_eq!(registrar_host("http://x"), None);
    }
}
