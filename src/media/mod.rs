//! Media for the phone leg: RTP (and SRTP), G.711, Opus, jitter buffer, pacing, DTMF, recording.
//! Every part here is IO-free except `rtp_leg`, which owns the call's UDP sockets, and
//! `recording`, which writes the call's WAV file.
//!
//! How a call's task drives the audio parts, all with the time since the call started and
//! caller-owned buffers (nothing allocates per packet):
//! - caller → OpenAI: each RTP packet from the phone goes to a [`jitter::JitterBuffer`]
//!   (`push`); every 20 ms, `pop` with a [`codec::Decoder`] gives a [`frame::Frame`] (G.711
//!   decoded, losses concealed), which [`opus_codec::OpusEncoder`] encodes for OpenAI
//!   (RTP timestamps +960 per frame). Telephone-event packets go to [`dtmf::DtmfReceiver`].
//! - OpenAI → caller: Opus from OpenAI goes through its own jitter buffer (WebRTC leg) and
//!   [`opus_codec::OpusDecoder`] at 8 kHz (or PCM chunks from the WebSocket leg through
//!   [`frame::Framer`]); each frame is G.711-encoded into a [`pacer::Pacer`], which releases
//!   one every 20 ms. Barge-in is `Pacer::flush`, which reports the milliseconds dropped.
//! - [`echo_gate::EchoGate`] sees every frame played to the caller and keeps the agent's own
//!   echo on the caller's line from reaching the model as the caller's voice.
//! - Two phone legs joined (a warm transfer): each packet from one leg goes out on the other
//!   as it comes, re-stamped by [`forward::Forwarder`] into the other leg's own stream.
//! - [`recording::Recorder`] (when enabled) takes the caller's frames as popped and the
//!   agent's as released, each with its time.

pub mod amd;
pub mod codec;
pub mod dtmf;
pub mod echo_gate;
pub mod forward;
pub mod frame;
pub mod g711;
pub mod jitter;
pub mod opus_codec;
pub mod opus_silence;
pub mod pacer;
pub mod ports;
pub mod recording;
pub mod rtcp;
pub mod rtp;
pub mod rtp_leg;
pub mod rtp_socket;
pub mod sit;
pub mod srtp;
pub mod strict_rtp;
pub mod wav;
