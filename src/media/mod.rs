//! Media for the phone leg: RTP, G.711, Opus, jitter buffer, pacing, DTMF, recording.
//! Every part here is IO-free except `rtp_leg`, which owns the call's UDP sockets.

pub mod ports;
pub mod rtcp;
pub mod rtp;
pub mod rtp_leg;
