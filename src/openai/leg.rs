//! What the call bridge sees of a realtime session, whichever transport carries it.

use std::time::Duration;

use crate::media::frame::{Frame, FRAME_SAMPLES};
use crate::media::g711::Law;

use super::events::{ClientEvent, ServerEvent};
use super::keys::MintError;
use super::session::{ToolCall, Turns};

/// The audio a leg takes from the caller and gives back, at 8 kHz in 20 ms frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegAudioFormat {
    /// 16-bit linear PCM (the leg encodes it, e.g. to Opus).
    Pcm,
    /// G.711 bytes passed through untouched.
    G711(Law),
}

/// One 20 ms frame of the caller's audio, in whatever form the bridge has it. A leg whose
/// [`RealtimeLeg::audio_format`] matches takes it as is; otherwise it converts.
#[derive(Debug, Clone, Copy)]
pub enum CallerAudio<'a> {
    /// Linear PCM, 160 samples.
    Pcm(&'a Frame),
    /// G.711 bytes (160 for 20 ms).
    G711(Law, &'a [u8]),
}

/// One 20 ms frame of the agent's audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentAudio {
    /// Linear PCM, 160 samples.
    Pcm(Frame),
    /// G.711 bytes, 160 of them.
    G711(Law, [u8; FRAME_SAMPLES]),
}

/// What [`RealtimeLeg::recv`] gives.
// Audio (the frequent variant) travels by value with no allocation; boxing the rare events
// would allocate per event for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum LegEvent {
    /// A server event (an `Unknown` one keeps its raw JSON).
    Event(ServerEvent),
    /// The model called a tool: run it and answer with [`RealtimeLeg::submit_tool_output`].
    /// The `response.function_call_arguments.done` event itself came just before.
    ToolCall(ToolCall),
    /// 20 ms of the agent's voice.
    Audio(AgentAudio),
    /// The session is over; every later `recv` says the same.
    Ended(LegEnd),
}

/// Why the realtime leg's session ended (the phone side's is [`crate::sip::EndReason`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegEnd {
    /// This side closed it.
    #[error("closed by the relay")]
    Closed,
    /// The service ended the session at its time limit (`session_expired`).
    #[error("the realtime session expired")]
    SessionExpired,
    /// The WebRTC peer connection failed (ICE or DTLS).
    #[error("the peer connection failed")]
    PeerFailed,
    /// The peer connection closed.
    #[error("the peer connection closed")]
    PeerClosed,
    /// The peer connection stayed disconnected too long.
    #[error("the peer connection stayed disconnected over {0:?}")]
    Disconnected(Duration),
    /// The `oai-events` data channel closed.
    #[error("the oai-events data channel closed")]
    ChannelClosed,
    /// The WebSocket closed (code and reason as the service gave them).
    #[error("the WebSocket closed ({code}: {reason})")]
    SocketClosed {
        /// The close code (1006 when there was no close frame).
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("transport error: {0}")]
    Transport(String),
}

/// Why a session could not be opened, or an operation on it failed.
#[derive(Debug, thiserror::Error)]
pub enum LegError {
    /// No ephemeral key.
    #[error("minting the ephemeral key: {0}")]
    Mint(#[from] MintError),
    /// `POST /v1/realtime/calls` (or the WebSocket upgrade) answered an error.
    #[error("the realtime service refused the session ({status} {code}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// OpenAI's error code.
        code: String,
        /// OpenAI's message.
        message: String,
    },
    /// A step did not finish within the connect deadline.
    #[error("timed out after {after:?} waiting for {stage}")]
    Timeout {
        /// What was awaited: `the SDP answer`, `ICE and DTLS`, `the data channel`, ...
        stage: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// The answer or `Location` could not be used.
    #[error("bad answer from the realtime service: {0}")]
    BadAnswer(String),
    /// The WebRTC stack or the socket failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The session already ended.
    #[error("the session ended: {0}")]
    Ended(LegEnd),
}

/// A realtime session as the call bridge uses it: the same on WebRTC and WebSocket.
#[async_trait::async_trait]
pub trait RealtimeLeg: Send + std::fmt::Debug {
    /// Which audio `send_audio` takes without converting, and `recv` gives.
    fn audio_format(&self) -> LegAudioFormat;

    /// The service's id of the session (`sess_…`), once `session.created` came.
    fn session_id(&self) -> Option<&str>;

    /// Sends 20 ms of caller audio.
    async fn send_audio(&mut self, frame: CallerAudio<'_>) -> Result<(), LegError>;

    /// Sends a client event. A `response.create` while a response runs is held and sent
    /// after that response's `response.done`.
    async fn send(&mut self, event: ClientEvent) -> Result<(), LegError>;

    /// The next thing from the service. Cancel-safe: use it in `select!`.
    async fn recv(&mut self) -> LegEvent;

    /// The caller talked over the agent (after `speech_started`) or the operator
    /// interrupted: stop the response. `unplayed_ms` is the agent audio already received
    /// but dropped unplayed (the bridge's playout queue at that moment); the WebSocket leg
    /// truncates the item at what was actually played, WebRTC clears the service's buffer.
    async fn interrupt(&mut self, unplayed_ms: u32) -> Result<(), LegError>;

    /// Answers a function call: its output item, then a `response.create` (held until the
    /// call's own response is done).
    async fn submit_tool_output(&mut self, call_id: &str, output: String) -> Result<(), LegError> {
        for ev in Turns::tool_output(call_id, output) {
            self.send(ev).await?;
        }
        Ok(())
    }

    /// Ends the session (hangup on WebRTC, a close frame on WebSocket) and frees it.
    async fn close(&mut self);
}
