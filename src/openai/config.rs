//! The realtime leg's settings, taken from the `[openai]` config section.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::OpenAiConfig;
pub use crate::config::WebRtcCodec;

/// The leg's own settings: keys `openai.codec`, `openai.mint_deadline_ms`,
/// `openai.connect_deadline_ms`, `openai.key_ttl_seconds`, `openai.webrtc_bind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LegSettings {
    /// `openai.codec`: `opus` (default) or `pcmu`.
    pub codec: WebRtcCodec,
    /// `openai.mint_deadline_ms`: how long minting an ephemeral key may take, retries
    /// included (default 3000).
    pub mint_deadline_ms: u64,
    /// `openai.connect_deadline_ms`: from posting the offer (or opening the WebSocket) until
    /// the session is ready (default 10000).
    pub connect_deadline_ms: u64,
    /// `openai.key_ttl_seconds`: lifetime of each call's ephemeral key, 10..=7200 (default
    /// 600; a running session outlives its key).
    pub key_ttl_seconds: u32,
    /// `openai.webrtc_bind`: the local UDP address WebRTC gathers from; unset means
    /// `127.0.0.1:0` for a loopback `base_url` (the simulator), else `0.0.0.0:0`.
    pub webrtc_bind: Option<String>,
}

impl Default for LegSettings {
    /// The `[openai]` section's defaults.
    fn default() -> Self {
        Self::from(&OpenAiConfig::default())
    }
}

impl From<&OpenAiConfig> for LegSettings {
    fn from(c: &OpenAiConfig) -> Self {
        Self {
            codec: c.codec,
            mint_deadline_ms: c.mint_deadline_ms,
            connect_deadline_ms: c.connect_deadline_ms,
            key_ttl_seconds: c.key_ttl_seconds,
            webrtc_bind: c.webrtc_bind.clone(),
        }
    }
}

impl LegSettings {
    /// The mint deadline as a duration.
    pub fn mint_deadline(&self) -> Duration {
        Duration::from_millis(self.mint_deadline_ms)
    }

    /// The connect deadline as a duration.
    pub fn connect_deadline(&self) -> Duration {
        Duration::from_millis(self.connect_deadline_ms)
    }
}
