//! Opus for the realtime leg, through libopus (the `opus` crate).
//!
//! One [`OpusEncoder`] and one [`OpusDecoder`] per call, both opened at 8 kHz mono: the
//! phone leg is 8 kHz, so encoding at 8 kHz sends narrowband Opus with no resampler, and
//! the decoder turns OpenAI's 48 kHz (possibly stereo) stream straight into 8 kHz mono —
//! libopus decodes any Opus stream at any of its rates, so no resampler on the way back
//! either. RTP timestamps for Opus run on a 48 kHz clock whatever the coded rate (RFC 7587).

use super::frame::{Frame, FRAME_SAMPLES, SAMPLE_RATE};
use super::opus_silence::{is_silent, SilenceCycle, MAX_SILENT_PACKET};
use opus::{Application, Bitrate, Channels};

/// RTP clock rate of Opus (RFC 7587): always 48 kHz.
pub const OPUS_CLOCK_RATE: u32 = 48_000;
/// RTP timestamp ticks in one 20 ms frame.
pub const OPUS_TICKS_PER_FRAME: u32 = 960;
/// The largest Opus packet (RFC 6716, 3.4), the size an encode buffer needs.
pub const MAX_OPUS_PACKET: usize = 1275;
/// The longest audio one Opus packet can carry (120 ms) in samples at 8 kHz.
pub const MAX_PACKET_SAMPLES: usize = 960;

/// A libopus failure (bad packet, bad setting).
#[derive(Debug, thiserror::Error)]
#[error("opus: {0}")]
pub struct OpusError(#[from] opus::Error);

/// Encoder settings (a `media.opus`-style config section; every key optional). The
/// defaults are what a call uses unless configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct OpusConfig {
    /// libopus complexity 0..=10. 1, chosen by measured quality (`bench/opus-quality.sh`,
    /// docs/performance.md, "Opus settings by measured quality"): at 32 kbit/s with FEC it
    /// scores within 0.03 PESQ MOS of the best setting at 0 % and 5 % loss, for a third of
    /// complexity 5's encoding time. 0 is a trap: it codes no FEC below 32 kbit/s.
    pub complexity: i32,
    /// Target bitrate. libopus adds the FEC copy only above a bitrate that depends on the
    /// complexity (from 24 kbit/s at complexity 1, 20 at 2 and up, 32 at 0), and the copy
    /// takes bits from the frame it rides on: 32 kbit/s leaves room for both (+0.07 MOS at
    /// 0 % loss and +0.10 at 5 % over the former 24 kbit/s at complexity 5).
    pub bitrate_bps: i32,
    /// In-band forward error correction (LBRR): each packet also carries a coarse copy of
    /// the previous frame, so one lost packet is recovered from the next.
    pub fec: bool,
    /// The loss rate the encoder plans for. libopus only spends bits on FEC when this is
    /// above zero; the call may raise it from RTCP reports with
    /// [`OpusEncoder::set_expected_loss`].
    pub expected_loss_pct: u8,
}

impl Default for OpusConfig {
    fn default() -> Self {
        Self {
            complexity: 1,
            bitrate_bps: 32_000,
            fec: true,
            expected_loss_pct: 10,
        }
    }
}

/// libopus's own encoder, 8 kHz mono, VOIP application, set up with `config`: what
/// [`OpusEncoder`] wraps, and what benches and tests compare it with.
pub fn libopus_encoder(config: &OpusConfig) -> Result<opus::Encoder, OpusError> {
    let mut e = opus::Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip)?;
    e.set_complexity(config.complexity.clamp(0, 10))?;
    e.set_bitrate(Bitrate::Bits(config.bitrate_bps))?;
    e.set_inband_fec(config.fec)?;
    e.set_packet_loss_perc(config.expected_loss_pct.min(100) as i32)?;
    Ok(e)
}

/// One call's Opus encoder: 8 kHz mono, VOIP application. A run of digitally silent frames is
/// encoded until libopus's packets settle into their cycle, then replayed from it
/// ([`SilenceCycle`]).
pub struct OpusEncoder {
    inner: opus::Encoder,
    silence: SilenceCycle,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder").finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// Opens an encoder with `config`.
    pub fn new(config: &OpusConfig) -> Result<Self, OpusError> {
        Ok(Self {
            inner: libopus_encoder(config)?,
            silence: SilenceCycle::default(),
        })
    }

    /// Encodes one 20 ms frame into `out` (size it [`MAX_OPUS_PACKET`]); returns the packet
    /// length. Once the packets of a run of silent frames ([`is_silent`]) have settled, the
    /// next silent frame's packet is taken from their cycle without encoding.
    #[inline]
    pub fn encode(&mut self, pcm: &Frame, out: &mut [u8]) -> Result<usize, OpusError> {
        if !is_silent(pcm) {
            self.silence.reset();
            return Ok(self.inner.encode(pcm, out)?);
        }
        if out.len() >= MAX_SILENT_PACKET {
            if let Some(packet) = self.silence.replay() {
                out[..packet.len()].copy_from_slice(packet);
                return Ok(packet.len());
            }
        }
        let n = self.inner.encode(pcm, out)?;
        self.silence.handle_encoded(&out[..n]);
        Ok(n)
    }

    /// Silent frames taken from the settled cycle instead of encoded, so far.
    pub fn silent_frames_replayed(&self) -> u64 {
        self.silence.replayed()
    }

    /// Tells the encoder the loss rate the far end reports, so FEC follows the network.
    pub fn set_expected_loss(&mut self, pct: u8) -> Result<(), OpusError> {
        self.silence.reset();
        Ok(self.inner.set_packet_loss_perc(pct.min(100) as i32)?)
    }

    /// Sets the complexity (0..=10).
    pub fn set_complexity(&mut self, complexity: i32) -> Result<(), OpusError> {
        self.silence.reset();
        Ok(self.inner.set_complexity(complexity.clamp(0, 10))?)
    }

    /// The encoder's lookahead in samples at 8 kHz (its algorithmic delay beyond the frame).
    pub fn lookahead(&mut self) -> Result<usize, OpusError> {
        Ok(self.inner.get_lookahead()? as usize)
    }
}

/// One call's Opus decoder, producing 8 kHz mono whatever the stream's coded rate and
/// channel count.
pub struct OpusDecoder {
    inner: opus::Decoder,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder").finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// Opens a decoder at 8 kHz mono.
    pub fn new() -> Result<Self, OpusError> {
        Ok(Self {
            inner: opus::Decoder::new(SAMPLE_RATE, Channels::Mono)?,
        })
    }

    /// Decodes `packet` into `out` (at least [`MAX_PACKET_SAMPLES`] long for any packet, or
    /// [`FRAME_SAMPLES`] for 20 ms ones); returns the samples written.
    #[inline]
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, OpusError> {
        Ok(self.inner.decode(packet, out, false)?)
    }

    /// Rebuilds a lost frame from the FEC copy inside `next` (the packet after the lost
    /// one). `out.len()` is the lost duration (a multiple of 2.5 ms); fills it in full. If
    /// `next` carries no FEC, libopus fills it with its own concealment instead.
    #[inline]
    pub fn decode_fec(&mut self, next: &[u8], out: &mut [i16]) -> Result<usize, OpusError> {
        Ok(self.inner.decode(next, out, true)?)
    }

    /// Fills `out` (a multiple of 2.5 ms) with libopus's packet loss concealment.
    #[inline]
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, OpusError> {
        Ok(self.inner.decode(&[], out, false)?)
    }

    /// Forgets the stream (a new sender).
    pub fn reset(&mut self) -> Result<(), OpusError> {
        Ok(self.inner.reset_state()?)
    }
}

/// Samples at 8 kHz that `packet` decodes to, from its table of contents, without decoding.
pub fn packet_samples(packet: &[u8]) -> Option<usize> {
    if packet.is_empty() {
        return None;
    }
    match opus::packet::get_nb_samples(packet, SAMPLE_RATE) {
        Ok(n) if n > 0 && n <= MAX_PACKET_SAMPLES => Some(n),
        _ => None,
    }
}

/// True if `packet` carries an FEC copy of the frame before it (SILK LBRR flag), checked
/// without decoding. Lets the jitter buffer prefer FEC only where it exists.
pub fn packet_has_fec(packet: &[u8]) -> bool {
    // RFC 6716 4.2.3 / libopus opus_packet_has_lbrr: SILK or hybrid mode, the LBRR flag is
    // the bit after the VAD flags of the first frame.
    let Some(&toc) = packet.first() else {
        return false;
    };
    if toc & 0x80 != 0 {
        return false; // CELT only: no LBRR
    }
    let Ok(parsed) = opus::packet::parse(packet) else {
        return false;
    };
    let Some(first) = parsed.frames.first() else {
        return false;
    };
    let Some(&b0) = first.first() else {
        return false;
    };
    let silk_frames = match (toc >> 3) & 0x3 {
        // SILK 10/20/40/60 ms per Opus frame: 40 and 60 ms hold 2 and 3 SILK frames
        2 if toc & 0x80 == 0 => 2,
        3 if toc & 0x80 == 0 => 3,
        _ => 1,
    };
    // first byte: the mid channel's VAD flags (one per SILK frame) then its LBRR flag; a
    // stereo stream follows with the side channel's
    let mid = (b0 >> (7 - silk_frames)) & 1 == 1;
    let side = toc & 0x4 != 0 && (b0 >> (6 - 2 * silk_frames)) & 1 == 1;
    mid || side
}

const _: () = assert!(FRAME_SAMPLES * 6 == MAX_PACKET_SAMPLES);

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, start: usize) -> Vec<i16> {
        (start..start + n)
            .map(|i| {
                ((i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 8000.0).sin() * 10000.0) as i16
            })
            .collect()
    }

    /// A voiced, syllable-like signal: a buzz at a wandering pitch under a 3 Hz envelope.
    /// libopus's VAD calls a steady tone noise after a while and stops sending FEC for it,
    /// so FEC is tested on something it takes for speech.
    fn voiced(n: usize) -> Vec<i16> {
        let mut ph = 0f32;
        (0..n)
            .map(|i| {
                let t = i as f32 / 8000.0;
                let f0 = 120.0 + 30.0 * (t * 2.0 * std::f32::consts::PI * 1.3).sin();
                ph += 2.0 * std::f32::consts::PI * f0 / 8000.0;
                let env = (0.6 - 0.4 * (t * 2.0 * std::f32::consts::PI * 3.0).cos()).powi(2);
                let s: f32 = (1..20).map(|h| (ph * h as f32).sin() / h as f32).sum();
                (s * env * 6000.0) as i16
            })
            .collect()
    }

    fn frame(v: &[i16]) -> Frame {
        v.try_into().unwrap()
    }

    #[test]
    fn round_trip_20ms_frames() {
        let mut enc = OpusEncoder::new(&OpusConfig::default()).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let mut pkt = [0u8; MAX_OPUS_PACKET];
        let mut out = [0i16; MAX_PACKET_SAMPLES];
        let sig = tone(160 * 50, 0);
        let mut decoded = Vec::new();
        for f in sig.chunks(160) {
            let n = enc.encode(&frame(f), &mut pkt).unwrap();
            assert!(n > 0 && n < 200, "{n} bytes");
            assert_eq!(packet_samples(&pkt[..n]), Some(160));
            let m = dec.decode(&pkt[..n], &mut out).unwrap();
            assert_eq!(m, 160);
            decoded.extend_from_slice(&out[..m]);
        }
        // energy survives (the codec delay shifts the waveform, so compare levels)
        let rms = |s: &[i16]| {
            (s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
        };
        let (a, b) = (rms(&sig[1600..]), rms(&decoded[1600..]));
        assert!((b / a - 1.0).abs() < 0.2, "{a} {b}");
    }

    /// A call's encoder and libopus alone, both on the defaults.
    fn encoder_and_plain_libopus() -> (OpusEncoder, opus::Encoder) {
        let cfg = OpusConfig::default();
        (
            OpusEncoder::new(&cfg).unwrap(),
            libopus_encoder(&cfg).unwrap(),
        )
    }

    #[test]
    fn a_silence_after_speech_sends_what_libopus_would_and_mostly_without_it() {
        let (mut enc, mut plain) = encoder_and_plain_libopus();
        let (mut a, mut b) = ([0u8; MAX_OPUS_PACKET], [0u8; MAX_OPUS_PACKET]);
        let mut sig = voiced(160 * 50);
        sig.extend(std::iter::repeat_n(0, 160 * 150)); // 3 s of silence
        for (i, f) in sig.chunks(160).enumerate() {
            let n = enc.encode(&frame(f), &mut a).unwrap();
            let m = plain.encode(f, &mut b).unwrap();
            assert_eq!(a[..n], b[..m], "frame {i} differs from libopus's own");
        }
        let replayed = enc.silent_frames_replayed();
        assert!(
            replayed >= 135,
            "only {replayed} of 150 silent frames replayed"
        );
    }

    #[test]
    fn a_quiet_line_is_coded_as_it_is() {
        let (mut enc, mut plain) = encoder_and_plain_libopus();
        let (mut a, mut b) = ([0u8; MAX_OPUS_PACKET], [0u8; MAX_OPUS_PACKET]);
        // A-law's idle codes 0xD5 and 0x55 decode to +8 and -8
        let idle: Frame = std::array::from_fn(|i| if i % 3 == 0 { 8 } else { -8 });
        for i in 0..40 {
            let n = enc.encode(&idle, &mut a).unwrap();
            let m = plain.encode(&idle, &mut b).unwrap();
            assert_eq!(a[..n], b[..m], "frame {i}");
        }
        assert_eq!(enc.silent_frames_replayed(), 0);
    }

    #[test]
    fn speech_after_a_replayed_silence_is_coded_as_after_the_encoded_part_of_it() {
        let talk = voiced(160 * 50);
        let packets = |enc: &mut dyn FnMut(&[i16], &mut [u8]) -> usize, silent: usize| {
            let mut sig = talk.clone();
            sig.extend(std::iter::repeat_n(0, 160 * silent));
            sig.extend_from_slice(&talk);
            let mut pkt = [0u8; MAX_OPUS_PACKET];
            let all: Vec<Vec<u8>> = sig
                .chunks(160)
                .map(|f| {
                    let n = enc(f, &mut pkt);
                    pkt[..n].to_vec()
                })
                .collect();
            all[50 + silent..].to_vec()
        };
        let (mut enc, mut plain) = encoder_and_plain_libopus();
        let replaying = packets(&mut |f, out| enc.encode(&frame(f), out).unwrap(), 101);
        let replayed = enc.silent_frames_replayed() as usize;
        assert!(replayed > 80, "{replayed} of 101 silent frames replayed");
        // the encoder saw only the silent frames it coded: libopus given just those says
        // the same of the speech that follows, byte for byte
        let shorter = packets(&mut |f, out| plain.encode(f, out).unwrap(), 101 - replayed);
        assert_eq!(replaying.len(), 50);
        assert_eq!(replaying, shorter);
    }

    #[test]
    fn decodes_a_48k_stereo_stream_at_8k() {
        // what OpenAI sends: fullband stereo Opus, 960 ticks per packet
        let mut enc = opus::Encoder::new(48_000, Channels::Stereo, Application::Voip).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let pcm48: Vec<i16> = (0..960 * 2)
            .map(|i| ((i / 2) as f32 * 0.06).sin() as i16 * 5000)
            .collect();
        let mut pkt = [0u8; MAX_OPUS_PACKET];
        let n = enc.encode(&pcm48, &mut pkt).unwrap();
        assert_eq!(
            opus::packet::get_nb_samples(&pkt[..n], OPUS_CLOCK_RATE).unwrap(),
            960
        );
        let mut out = [0i16; MAX_PACKET_SAMPLES];
        assert_eq!(dec.decode(&pkt[..n], &mut out).unwrap(), 160);
    }

    #[test]
    fn fec_recovers_a_lost_frame_better_than_concealment() {
        let cfg = OpusConfig {
            expected_loss_pct: 20,
            ..OpusConfig::default()
        };
        let mut enc = OpusEncoder::new(&cfg).unwrap();
        const LOST: usize = 24; // mid-syllable: VAD active, so packet 25 carries LBRR
        let sig = voiced(160 * 40);
        let mut pkts = Vec::new();
        let mut buf = [0u8; MAX_OPUS_PACKET];
        for f in sig.chunks(160) {
            let n = enc.encode(&frame(f), &mut buf).unwrap();
            pkts.push(buf[..n].to_vec());
        }
        assert!(
            packet_has_fec(&pkts[LOST + 1]),
            "FEC is on: voiced packets carry LBRR"
        );
        // reference decode without loss, then decode losing one packet with FEC / PLC
        let run = |mode: u8| {
            let mut dec = OpusDecoder::new().unwrap();
            let mut out = [0i16; 160];
            let mut frames = Vec::new();
            for (i, p) in pkts.iter().enumerate() {
                if i == LOST && mode > 0 {
                    if mode == 1 {
                        dec.decode_fec(&pkts[LOST + 1], &mut out).unwrap();
                    } else {
                        dec.conceal(&mut out).unwrap();
                    }
                } else {
                    dec.decode(p, &mut out).unwrap();
                }
                frames.push(out);
            }
            frames
        };
        let (clean, fec, plc) = (run(0), run(1), run(2));
        let err = |x: &Frame| -> f64 {
            x.iter()
                .zip(&clean[LOST])
                .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                .sum()
        };
        assert!(
            err(&fec[LOST]) * 2.0 < err(&plc[LOST]),
            "fec {} plc {}",
            err(&fec[LOST]),
            err(&plc[LOST])
        );
    }

    #[test]
    fn no_fec_flag_without_fec() {
        let cfg = OpusConfig {
            fec: false,
            ..OpusConfig::default()
        };
        let mut enc = OpusEncoder::new(&cfg).unwrap();
        let mut buf = [0u8; MAX_OPUS_PACKET];
        let sig = tone(160 * 10, 0);
        let mut any = false;
        for f in sig.chunks(160) {
            let n = enc.encode(&frame(f), &mut buf).unwrap();
            any |= packet_has_fec(&buf[..n]);
        }
        assert!(!any);
        assert_eq!(packet_samples(&[]), None);
    }
}
