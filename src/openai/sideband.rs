//! The sideband: the relay attaches to a WebRTC call that a browser opened straight to the
//! realtime service (`GET /v1/realtime?call_id=rtc_…`, a WebSocket with the server key). It
//! carries the call's events both ways and no audio: the browser and the service exchange
//! the audio themselves. The relay configures the session for the agent, runs its tools,
//! guardrails and handoffs, and ends the call with `POST /v1/realtime/calls/{id}/hangup`.
//!
//! It is a [`WebSocketLeg`] in sideband mode: the same event handling as the WebSocket
//! transport; barge-in and the end as on WebRTC (the service knows what it played).

use std::time::Duration;

use super::hangup::CallHangup;
use super::leg::LegError;
use super::session::AgentSpec;
use super::websocket::{open_socket, socket_url, WebSocketLeg, WsTls};
use crate::media::g711::Law;
use crate::secret::Secret;

/// Longest call id taken (OpenAI's are `rtc_` and about 30 characters).
const CALL_ID_MAX: usize = 128;

/// The WebRTC call a sideband leg is attached to, and how to end it.
#[derive(Debug)]
pub struct Sideband {
    call_id: String,
    hangup: CallHangup,
}

impl Sideband {
    /// The call's id at the service (`rtc_…`).
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Ends the browser's call at the service.
    pub(super) async fn hang_up(&self) {
        self.hangup.send().await;
    }
}

/// Whether `id` can be a realtime call id: what goes into a URL must be plain.
pub fn valid_call_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= CALL_ID_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl WebSocketLeg {
    /// Attaches to the WebRTC call `call_id` with the server `key`, configures its session
    /// for `agent` (instructions, voice, tools) and returns once `session.updated` confirms
    /// it, all within `deadline`.
    pub async fn attach(
        base_url: &str,
        key: &Secret,
        tls: &WsTls,
        http: reqwest::Client,
        call_id: &str,
        agent: &AgentSpec,
        deadline: Duration,
    ) -> Result<Self, LegError> {
        if !valid_call_id(call_id) {
            return Err(LegError::BadAnswer("not a realtime call id".into()));
        }
        let attach = async {
            let url = socket_url(base_url, &format!("call_id={call_id}"));
            let ws = open_socket(url, key, tls).await?;
            let sideband = Sideband {
                call_id: call_id.to_string(),
                hangup: CallHangup::new(http, base_url, call_id, key.clone()),
            };
            // the law is unused: no audio travels on the sideband
            let mut leg = WebSocketLeg::new(ws, Law::Mu, Some(sideband));
            leg.configure(agent, None).await?;
            Ok(leg)
        };
        let timeout = LegError::Timeout {
            stage: "the sideband session",
            after: deadline,
        };
        tokio::time::timeout(deadline, attach)
            .await
            .unwrap_or(Err(timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_are_plain() {
        assert!(valid_call_id("rtc_0123abcdEF-_"));
        for bad in [
            "",
            "rtc/../x",
            "rtc_1?x=1",
            "rtc 1",
            "rtc_é",
            &"a".repeat(129),
        ] {
            assert!(!valid_call_id(bad), "{bad:?}");
        }
    }
}
