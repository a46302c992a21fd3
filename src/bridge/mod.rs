//! The per-call task: joins a phone leg to an agent. A call goes to an OpenAI Realtime agent
//! or to the built-in `echo` line test; either way its task (`call_task`) runs the call's
//! decisions in the IO-free call core (`call_core`).

pub mod agent;
pub mod backchannel;
pub mod call_agent;
pub mod call_core;
pub mod call_record;
pub mod call_recording;
pub mod call_task;
pub mod digits;
pub mod echo;
pub mod guardrail;
pub mod moderation;
pub mod overload;
pub mod phone_media;
pub mod prompts;
pub mod recording_retention;
pub mod redaction;
pub mod registry;
pub mod session_io;
pub mod tool_run;
pub mod transcript;
pub mod web_call;
pub mod web_keys;
pub mod web_recording;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::booking::Tools;
use crate::metrics::Metrics;
use crate::openai::Connector;
use crate::sip::{CallHandler, EndReason, IncomingCall};
use call_agent::AgentBook;
use moderation::Moderation;
use registry::Registry;

/// What every realtime call shares.
#[derive(Debug)]
pub struct LiveContext {
    /// Opens realtime legs.
    pub connector: Connector,
    /// The agents (browser calls, and phone calls whose barge-in the service owns).
    pub agents: AgentBook,
    /// The agents as phone calls use them: [`AgentBook::with_relay_turns`] when the relay
    /// owns barge-in (`settings.backchannel`), else the same as `agents`.
    pub phone_agents: AgentBook,
    /// The booking tools (`None`: no database, every booking tool answers an error).
    pub tools: Option<Tools>,
    /// Where calls are listed for the admin API.
    pub registry: Registry,
    /// Where calls are counted.
    pub metrics: Arc<Metrics>,
    /// Limits and timings.
    pub settings: Arc<BridgeSettings>,
    /// The optional moderation check of the agent's words.
    pub moderation: Option<Arc<Moderation>>,
    /// Where each call's `call.ended` event goes (`[[webhooks]]`; `None`: nowhere).
    pub webhooks: Option<crate::webhooks::Webhooks>,
    /// Places a warm transfer's call to the person; set once the SIP side is up.
    pub dialer: std::sync::OnceLock<crate::sip::Dialer>,
}

/// What every call task needs to know, shared.
#[derive(Debug, Clone)]
pub struct BridgeSettings {
    /// Past this a call is ended with BYE.
    pub max_call: Duration,
    /// No RTP from the caller for this long ends the call (`None`: never).
    pub rtp_timeout: Option<Duration>,
    /// Ringing time before the answer (echo agent).
    pub answer_delay: Duration,
    /// How long a tool may run.
    pub tool_timeout: Duration,
    /// A tool running this long puts comfort noise or the hold sound on the line.
    pub hold_after: Duration,
    /// Keypad digits within this much of each other form one group.
    pub dtmf_inter_digit: Duration,
    /// Guardrails check every this many new characters of the agent's transcript.
    pub guardrail_every: usize,
    /// Call recordings.
    pub recording: call_recording::RecordingSettings,
    /// The line-echo gate's margin in dB (`None`: off): see [`crate::media::echo_gate`].
    pub echo_gate_margin_db: Option<f32>,
    /// Stored records have personal data redacted (`privacy.redact_transcripts`).
    pub redact_transcripts: bool,
    /// The relay owns barge-in on phone calls (`None`: the service does): see
    /// [`backchannel`].
    pub backchannel: Option<backchannel::Backchannel>,
    /// Answering-machine detection on placed calls (`None`: off).
    pub amd: Option<crate::media::amd::AmdSettings>,
}

impl Default for BridgeSettings {
    fn default() -> Self {
        Self {
            max_call: Duration::from_secs(1800),
            rtp_timeout: Some(Duration::from_secs(60)),
            answer_delay: Duration::ZERO,
            tool_timeout: Duration::from_secs(5),
            hold_after: Duration::from_millis(700),
            dtmf_inter_digit: Duration::from_millis(1500),
            guardrail_every: 100,
            recording: call_recording::RecordingSettings::default(),
            echo_gate_margin_db: Some(6.0),
            redact_transcripts: false,
            backchannel: None,
            amd: None,
        }
    }
}

/// What every call reports to: the registry of calls and the metrics.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Live and recently ended calls.
    pub registry: Registry,
    /// The relay's metrics.
    pub metrics: Arc<Metrics>,
}

/// Runs calls: one task per call.
#[derive(Debug, Clone)]
pub struct Bridge {
    settings: Arc<BridgeSettings>,
    shared: Shared,
    live: Option<Arc<LiveContext>>,
    hangup_all: CancellationToken,
}

impl Bridge {
    /// A bridge whose calls all end when `hangup_all` is cancelled. Without a `live`
    /// context every call goes to the echo agent.
    pub fn new(
        settings: Arc<BridgeSettings>,
        shared: Shared,
        live: Option<Arc<LiveContext>>,
        hangup_all: CancellationToken,
    ) -> Self {
        Self {
            settings,
            shared,
            live,
            hangup_all,
        }
    }
}

impl CallHandler for Bridge {
    fn on_call(&self, mut call: IncomingCall) {
        let stop = self.hangup_all.child_token();
        if call.agent == "echo" {
            let (settings, shared) = (self.settings.clone(), self.shared.clone());
            tokio::spawn(call_task::run(call, None, settings, shared, stop));
            return;
        }
        let agent = self
            .live
            .as_ref()
            .and_then(|live| Some((live.clone(), live.phone_agents.get(&call.agent)?)));
        match agent {
            Some((live, agent)) => {
                let (settings, shared) = (self.settings.clone(), self.shared.clone());
                tokio::spawn(call_task::run(
                    call,
                    Some((agent, live)),
                    settings,
                    shared,
                    stop,
                ));
            }
            None => {
                // routes and agents are checked at start, so this is a configuration the
                // relay could not foresee; refuse rather than answer with nobody there
                warn!(agent = %call.agent, "no such agent: the call is refused");
                tokio::spawn(async move { call.sip.hang_up(EndReason::Rejected).await });
            }
        }
    }
}
