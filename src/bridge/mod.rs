//! The per-call task: joins a phone leg to an agent. Today the agent is the built-in `echo`
//! line test; the OpenAI Realtime agent plugs in here.

pub mod agent;
pub mod call;
pub mod digits;
pub mod echo;
pub mod guardrail;
pub mod moderation;
pub mod phone_media;
pub mod registry;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::sip::{CallHandler, IncomingCall};

/// What every call task needs to know, shared.
#[derive(Debug, Clone)]
pub struct BridgeSettings {
    /// Past this a call is ended with BYE.
    pub max_call: Duration,
    /// No RTP from the caller for this long ends the call (`None`: never).
    pub rtp_timeout: Option<Duration>,
    /// Ringing time before the answer.
    pub answer_delay: Duration,
}

/// Runs calls: one task per call.
#[derive(Debug, Clone)]
pub struct Bridge {
    settings: Arc<BridgeSettings>,
    hangup_all: CancellationToken,
}

impl Bridge {
    /// A bridge whose calls all end when `hangup_all` is cancelled.
    pub fn new(settings: BridgeSettings, hangup_all: CancellationToken) -> Self {
        Self {
            settings: Arc::new(settings),
            hangup_all,
        }
    }
}

impl CallHandler for Bridge {
    fn on_call(&self, call: IncomingCall) {
        let settings = self.settings.clone();
        let stop = self.hangup_all.child_token();
        tokio::spawn(call::run(call, settings, stop));
    }
}
