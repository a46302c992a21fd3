//! Ending a WebRTC call at the service: `POST {base}/v1/realtime/calls/{id}/hangup` with the
//! server key (an ephemeral key may have expired by the end of the call). The relay's own
//! WebRTC legs and the browser calls it is attached to end the same way.

use std::time::Duration;

use crate::secret::Secret;

/// How long `…/hangup` may take at the end of a call.
const HANGUP_LIMIT: Duration = Duration::from_secs(2);

/// How to hang one call up.
pub struct CallHangup {
    http: reqwest::Client,
    url: String,
    key: Secret,
}

impl std::fmt::Debug for CallHangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallHangup")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl CallHangup {
    /// The hang-up of call `call_id` at `base_url`, authorised by `key`.
    pub fn new(http: reqwest::Client, base_url: &str, call_id: &str, key: Secret) -> Self {
        let base = base_url.trim_end_matches('/');
        Self {
            http,
            url: format!("{base}/v1/realtime/calls/{call_id}/hangup"),
            key,
        }
    }

    /// Ends the call. A call already gone (404) is fine; a failure is only logged at debug
    /// level: the call is being let go either way.
    pub async fn send(&self) {
        let r = self
            .http
            .post(&self.url)
            .bearer_auth(self.key.expose())
            .timeout(HANGUP_LIMIT)
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() || r.status().as_u16() == 404 => {}
            Ok(r) => tracing::debug!(status = r.status().as_u16(), "realtime hangup refused"),
            Err(e) => tracing::debug!(error = %e, "realtime hangup failed"),
        }
    }
}
