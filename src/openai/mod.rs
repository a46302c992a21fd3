//! The OpenAI Realtime leg: keys, transports, typed events, session config.
//!
//! The bridge opens one leg per call with [`Connector::connect`] and then only sees the
//! [`RealtimeLeg`] trait: caller audio in, agent audio, typed events and tool calls out, the
//! same on WebRTC and WebSocket. The pieces: `keys` (ephemeral keys with retries),
//! `key_pool` and `key_refill` (keys minted ahead of calls), `session` (the agent's session
//! config and the IO-free turn logic), `webrtc` and `websocket` (the transports), `sideband`
//! (attaching to a browser's WebRTC call), `config` (the leg's settings). Keys are
//! [`crate::secret::Secret`]s.

pub mod config;
pub mod connector;
pub mod events;
pub mod hangup;
pub mod key_pool;
pub mod key_refill;
pub mod keys;
pub mod leg;
pub mod session;
pub mod sideband;
pub mod webrtc;
pub mod websocket;

pub use config::{LegSettings, WebRtcCodec};
pub use connector::Connector;
pub use key_refill::KeyRefill;
pub use keys::{EphemeralKey, KeyMinter, MintError};
pub use leg::{AgentAudio, CallerAudio, LegAudioFormat, LegEnd, LegError, LegEvent, RealtimeLeg};
pub use session::{AgentSpec, ToolCall, ToolSpec, Turns};
pub use websocket::{CertificateDer, WsTls};
