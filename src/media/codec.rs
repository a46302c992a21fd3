//! The payload formats of the media path and one decoder type over all of them, which the
//! jitter buffer drives (decode, FEC recovery, concealment) without knowing the codec.

use super::frame::SAMPLE_RATE;
use super::g711::{FadingRepeat, Law};
use super::opus_codec::{self, OpusDecoder, OpusError, OPUS_CLOCK_RATE};

/// A payload format the media path carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, 8 kHz clock.
    Pcmu,
    /// G.711 A-law, 8 kHz clock.
    Pcma,
    /// Opus, 48 kHz RTP clock whatever its coded rate.
    Opus,
}

impl Codec {
    /// The RTP clock rate.
    pub const fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => SAMPLE_RATE,
            Codec::Opus => OPUS_CLOCK_RATE,
        }
    }

    /// RTP timestamp ticks per 8 kHz sample (1 for G.711, 6 for Opus).
    pub const fn ticks_per_sample(self) -> u32 {
        self.clock_rate() / SAMPLE_RATE
    }

    /// The largest payload the jitter buffer stores: 60 ms of G.711 (larger packetisation
    /// is not used on SIP trunks), or the largest Opus packet.
    pub const fn max_payload(self) -> usize {
        match self {
            Codec::Pcmu | Codec::Pcma => 480,
            Codec::Opus => opus_codec::MAX_OPUS_PACKET,
        }
    }

    /// Samples at 8 kHz in `payload`, read without decoding; `None` if it is not a valid
    /// payload of this codec.
    pub fn payload_samples(self, payload: &[u8]) -> Option<usize> {
        match self {
            Codec::Pcmu | Codec::Pcma => (!payload.is_empty()
                && payload.len() <= self.max_payload())
            .then_some(payload.len()),
            Codec::Opus => opus_codec::packet_samples(payload),
        }
    }

    /// Whether a lost payload can be rebuilt from the next one (Opus in-band FEC).
    pub fn can_recover_from(self, next: &[u8]) -> bool {
        self == Codec::Opus && opus_codec::packet_has_fec(next)
    }

    /// The G.711 law, for the G.711 codecs.
    pub const fn law(self) -> Option<Law> {
        match self {
            Codec::Pcmu => Some(Law::Mu),
            Codec::Pcma => Some(Law::A),
            Codec::Opus => None,
        }
    }
}

/// What the jitter buffer needs from a decoder. Outputs are 8 kHz samples written into
/// caller-owned buffers.
pub trait PayloadDecoder {
    /// Decodes `payload` into `out` and returns the samples written, or `None` if the
    /// payload is corrupt (the buffer then conceals it).
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Option<usize>;
    /// Rebuilds `out.len()` lost samples from the FEC inside `next`; false if it cannot.
    fn recover(&mut self, next: &[u8], out: &mut [i16]) -> bool;
    /// Fills `out` with concealment for lost audio.
    fn conceal(&mut self, out: &mut [i16]);
    /// Forgets the stream (the sender restarted).
    fn reset(&mut self);
}

/// G.711 decoding with the fading-repeat concealment.
#[derive(Debug, Clone)]
pub struct G711Decoder {
    law: Law,
    plc: FadingRepeat,
}

impl G711Decoder {
    /// A decoder for `law`.
    pub const fn new(law: Law) -> Self {
        Self {
            law,
            plc: FadingRepeat::new(),
        }
    }
}

impl PayloadDecoder for G711Decoder {
    #[inline]
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Option<usize> {
        let n = payload.len().min(out.len());
        self.law.decode(&payload[..n], &mut out[..n]);
        self.plc.good(&mut out[..n]);
        Some(n)
    }

    fn recover(&mut self, _next: &[u8], _out: &mut [i16]) -> bool {
        false
    }

    fn conceal(&mut self, out: &mut [i16]) {
        self.plc.conceal(out);
    }

    fn reset(&mut self) {
        self.plc.reset();
    }
}

impl PayloadDecoder for OpusDecoder {
    #[inline]
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Option<usize> {
        OpusDecoder::decode(self, payload, out).ok()
    }

    fn recover(&mut self, next: &[u8], out: &mut [i16]) -> bool {
        self.decode_fec(next, out).is_ok()
    }

    fn conceal(&mut self, out: &mut [i16]) {
        if OpusDecoder::conceal(self, out).is_err() {
            out.fill(0);
        }
    }

    fn reset(&mut self) {
        let _ = OpusDecoder::reset(self);
    }
}

/// A decoder for any [`Codec`], dispatched without a trait object.
// The G.711 variant carries its 40 ms concealment history inline: one decoder per call,
// owned by the call's task, so the size costs nothing and a box would cost an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Decoder {
    /// PCMU or PCMA.
    G711(G711Decoder),
    /// Opus at 8 kHz.
    Opus(OpusDecoder),
}

impl Decoder {
    /// A decoder for `codec`.
    pub fn new(codec: Codec) -> Result<Self, OpusError> {
        Ok(match codec.law() {
            Some(law) => Decoder::G711(G711Decoder::new(law)),
            None => Decoder::Opus(OpusDecoder::new()?),
        })
    }
}

impl PayloadDecoder for Decoder {
    #[inline]
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Option<usize> {
        match self {
            Decoder::G711(d) => d.decode(payload, out),
            Decoder::Opus(d) => PayloadDecoder::decode(d, payload, out),
        }
    }

    fn recover(&mut self, next: &[u8], out: &mut [i16]) -> bool {
        match self {
            Decoder::G711(d) => d.recover(next, out),
            Decoder::Opus(d) => d.recover(next, out),
        }
    }

    fn conceal(&mut self, out: &mut [i16]) {
        match self {
            Decoder::G711(d) => d.conceal(out),
            Decoder::Opus(d) => PayloadDecoder::conceal(d, out),
        }
    }

    fn reset(&mut self) {
        match self {
            Decoder::G711(d) => d.reset(),
            Decoder::Opus(d) => PayloadDecoder::reset(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_and_sizes() {
        assert_eq!(Codec::Pcmu.ticks_per_sample(), 1);
        assert_eq!(Codec::Opus.ticks_per_sample(), 6);
        assert_eq!(Codec::Pcma.payload_samples(&[0xD5; 160]), Some(160));
        assert_eq!(Codec::Pcma.payload_samples(&[]), None);
        assert_eq!(Codec::Pcmu.payload_samples(&[0; 481]), None);
        assert_eq!(Codec::Opus.payload_samples(&[]), None);
    }

    #[test]
    fn g711_decoder_conceals_after_good_audio() {
        let mut d = Decoder::new(Codec::Pcmu).unwrap();
        let mut enc = [0u8; 160];
        let pcm: Vec<i16> = (0..160)
            .map(|i| ((i as f32 * 0.3).sin() * 9000.0) as i16)
            .collect();
        Law::Mu.encode(&pcm, &mut enc);
        let mut out = [0i16; 160];
        assert_eq!(d.decode(&enc, &mut out), Some(160));
        assert!(!d.recover(&enc, &mut out));
        d.conceal(&mut out);
        assert!(out.iter().any(|&s| s != 0));
    }
}
