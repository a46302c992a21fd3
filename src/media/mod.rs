//! Media for the phone leg: RTP, G.711, Opus, jitter buffer, pacing, DTMF, recording.
//! Every part here is IO-free except `rtp_leg`, which owns the call's UDP socket.

pub mod codec;
pub mod dtmf;
pub mod frame;
pub mod g711;
pub mod jitter;
pub mod opus_codec;
pub mod pacer;
pub mod recording;
