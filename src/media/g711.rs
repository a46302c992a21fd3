//! G.711 µ-law (PCMU) and A-law (PCMA), the phone leg's codecs, and their loss concealment.
//!
//! The project keeps its own tables rather than a crate: they are tiny, fixed by ITU-T G.711,
//! and written out here so a reader can check them against the standard (the decode tables
//! literally; the encode tables are built at compile time from the companding rule, also
//! here). Encoding rounds the 16-bit input to the nearest 14-bit (µ-law) or 13-bit (A-law)
//! value before companding, the same as sox does, and is tested bit-exact against sox over
//! all 65,536 inputs (`tests/media_g711.rs`).

/// Which G.711 companding law a payload uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// µ-law, RTP payload type 0 (PCMU): North America and Japan.
    Mu,
    /// A-law, RTP payload type 8 (PCMA): most other countries.
    A,
}

impl Law {
    /// The static RTP payload type of this law (RFC 3551).
    pub const fn payload_type(self) -> u8 {
        match self {
            Law::Mu => 0,
            Law::A => 8,
        }
    }

    /// Its encoding name in SDP (`a=rtpmap`): `PCMU` or `PCMA`.
    pub const fn name(self) -> &'static str {
        match self {
            Law::Mu => "PCMU",
            Law::A => "PCMA",
        }
    }

    /// The byte a silent sample encodes to (for comfort silence without a table lookup).
    pub const fn silence_byte(self) -> u8 {
        match self {
            Law::Mu => 0xFF,
            Law::A => 0xD5,
        }
    }

    /// Encodes `pcm` into `out` (one byte per sample). `out` must be at least as long.
    #[inline]
    pub fn encode(self, pcm: &[i16], out: &mut [u8]) {
        match self {
            Law::Mu => ulaw_encode_slice(pcm, out),
            Law::A => alaw_encode_slice(pcm, out),
        }
    }

    /// Decodes `bytes` into `out` (one sample per byte). `out` must be at least as long.
    #[inline]
    pub fn decode(self, bytes: &[u8], out: &mut [i16]) {
        let table = match self {
            Law::Mu => &ULAW_TO_LINEAR,
            Law::A => &ALAW_TO_LINEAR,
        };
        for (o, &b) in out.iter_mut().zip(bytes) {
            *o = table[b as usize];
        }
    }
}

/// µ-law byte to 16-bit linear (G.711 table 2a, scaled to 16 bits as sox and the Sun
/// reference code do).
pub static ULAW_TO_LINEAR: [i16; 256] = [
    -32124, -31100, -30076, -29052, -28028, -27004, -25980, -24956, -23932, -22908, -21884, -20860,
    -19836, -18812, -17788, -16764, -15996, -15484, -14972, -14460, -13948, -13436, -12924, -12412,
    -11900, -11388, -10876, -10364, -9852, -9340, -8828, -8316, -7932, -7676, -7420, -7164, -6908,
    -6652, -6396, -6140, -5884, -5628, -5372, -5116, -4860, -4604, -4348, -4092, -3900, -3772,
    -3644, -3516, -3388, -3260, -3132, -3004, -2876, -2748, -2620, -2492, -2364, -2236, -2108,
    -1980, -1884, -1820, -1756, -1692, -1628, -1564, -1500, -1436, -1372, -1308, -1244, -1180,
    -1116, -1052, -988, -924, -876, -844, -812, -780, -748, -716, -684, -652, -620, -588, -556,
    -524, -492, -460, -428, -396, -372, -356, -340, -324, -308, -292, -276, -260, -244, -228, -212,
    -196, -180, -164, -148, -132, -120, -112, -104, -96, -88, -80, -72, -64, -56, -48, -40, -32,
    -24, -16, -8, 0, 32124, 31100, 30076, 29052, 28028, 27004, 25980, 24956, 23932, 22908, 21884,
    20860, 19836, 18812, 17788, 16764, 15996, 15484, 14972, 14460, 13948, 13436, 12924, 12412,
    11900, 11388, 10876, 10364, 9852, 9340, 8828, 8316, 7932, 7676, 7420, 7164, 6908, 6652, 6396,
    6140, 5884, 5628, 5372, 5116, 4860, 4604, 4348, 4092, 3900, 3772, 3644, 3516, 3388, 3260, 3132,
    3004, 2876, 2748, 2620, 2492, 2364, 2236, 2108, 1980, 1884, 1820, 1756, 1692, 1628, 1564, 1500,
    1436, 1372, 1308, 1244, 1180, 1116, 1052, 988, 924, 876, 844, 812, 780, 748, 716, 684, 652,
    620, 588, 556, 524, 492, 460, 428, 396, 372, 356, 340, 324, 308, 292, 276, 260, 244, 228, 212,
    196, 180, 164, 148, 132, 120, 112, 104, 96, 88, 80, 72, 64, 56, 48, 40, 32, 24, 16, 8, 0,
];

/// A-law byte to 16-bit linear (G.711 table 1a, scaled to 16 bits; even bits inverted on
/// the wire, so 0xD5 and 0x55 are the two smallest magnitudes).
pub static ALAW_TO_LINEAR: [i16; 256] = [
    -5504, -5248, -6016, -5760, -4480, -4224, -4992, -4736, -7552, -7296, -8064, -7808, -6528,
    -6272, -7040, -6784, -2752, -2624, -3008, -2880, -2240, -2112, -2496, -2368, -3776, -3648,
    -4032, -3904, -3264, -3136, -3520, -3392, -22016, -20992, -24064, -23040, -17920, -16896,
    -19968, -18944, -30208, -29184, -32256, -31232, -26112, -25088, -28160, -27136, -11008, -10496,
    -12032, -11520, -8960, -8448, -9984, -9472, -15104, -14592, -16128, -15616, -13056, -12544,
    -14080, -13568, -344, -328, -376, -360, -280, -264, -312, -296, -472, -456, -504, -488, -408,
    -392, -440, -424, -88, -72, -120, -104, -24, -8, -56, -40, -216, -200, -248, -232, -152, -136,
    -184, -168, -1376, -1312, -1504, -1440, -1120, -1056, -1248, -1184, -1888, -1824, -2016, -1952,
    -1632, -1568, -1760, -1696, -688, -656, -752, -720, -560, -528, -624, -592, -944, -912, -1008,
    -976, -816, -784, -880, -848, 5504, 5248, 6016, 5760, 4480, 4224, 4992, 4736, 7552, 7296, 8064,
    7808, 6528, 6272, 7040, 6784, 2752, 2624, 3008, 2880, 2240, 2112, 2496, 2368, 3776, 3648, 4032,
    3904, 3264, 3136, 3520, 3392, 22016, 20992, 24064, 23040, 17920, 16896, 19968, 18944, 30208,
    29184, 32256, 31232, 26112, 25088, 28160, 27136, 11008, 10496, 12032, 11520, 8960, 8448, 9984,
    9472, 15104, 14592, 16128, 15616, 13056, 12544, 14080, 13568, 344, 328, 376, 360, 280, 264,
    312, 296, 472, 456, 504, 488, 408, 392, 440, 424, 88, 72, 120, 104, 24, 8, 56, 40, 216, 200,
    248, 232, 152, 136, 184, 168, 1376, 1312, 1504, 1440, 1120, 1056, 1248, 1184, 1888, 1824, 2016,
    1952, 1632, 1568, 1760, 1696, 688, 656, 752, 720, 560, 528, 624, 592, 944, 912, 1008, 976, 816,
    784, 880, 848,
];

/// Encodes one 16-bit sample to µ-law.
#[inline]
pub fn ulaw_encode(x: i16) -> u8 {
    ULAW_ENCODE[(((x as i32 + 2) >> 2).min(8191) + 8192) as usize]
}

/// Decodes one µ-law byte.
#[inline]
pub fn ulaw_decode(b: u8) -> i16 {
    ULAW_TO_LINEAR[b as usize]
}

/// Encodes one 16-bit sample to A-law.
#[inline]
pub fn alaw_encode(x: i16) -> u8 {
    ALAW_ENCODE[(((x as i32 + 4) >> 3).min(4095) + 4096) as usize]
}

/// Decodes one A-law byte.
#[inline]
pub fn alaw_decode(b: u8) -> i16 {
    ALAW_TO_LINEAR[b as usize]
}

/// µ-law code of every 14-bit value (index = value + 8192), built at compile time from
/// [`ulaw_compand`]: one load per sample on the hot path instead of the segment search.
static ULAW_ENCODE: [u8; 16384] = {
    let mut t = [0u8; 16384];
    let mut i = 0;
    while i < 16384 {
        t[i] = ulaw_compand(i as i32 - 8192);
        i += 1;
    }
    t
};

/// A-law code of every 13-bit value (index = value + 4096), built at compile time from
/// [`alaw_compand`].
static ALAW_ENCODE: [u8; 8192] = {
    let mut t = [0u8; 8192];
    let mut i = 0;
    while i < 8192 {
        t[i] = alaw_compand(i as i32 - 4096);
        i += 1;
    }
    t
};

/// G.711 µ-law companding of a 14-bit value (-8192..=8191): bias 33, segment from the
/// magnitude's bit length, four mantissa bits, all bits inverted.
pub const fn ulaw_compand(v: i32) -> u8 {
    let (mag, mask) = if v < 0 { (-v, 0x7F) } else { (v, 0xFF) };
    // 8159 + 33 = 8192 would land in a ninth segment; clamping to 0x1FFF gives the same
    // (largest) code
    let mag = if mag > 8159 { 8159 } else { mag };
    let mag = (mag + 33) as u32;
    let mag = if mag > 0x1FFF { 0x1FFF } else { mag };
    let bits = 32 - mag.leading_zeros();
    let seg = bits.saturating_sub(6);
    let code = (seg << 4) | ((mag >> (seg + 1)) & 0xF);
    (code as u8) ^ mask
}

/// G.711 A-law companding of a 13-bit value (-4096..=4095): symmetric around -0.5, segment
/// from the bit length, four mantissa bits, even bits inverted.
pub const fn alaw_compand(v: i32) -> u8 {
    let (mag, mask) = if v >= 0 { (v, 0xD5) } else { (-v - 1, 0x55) };
    let mag = mag as u32;
    let bits = 32 - mag.leading_zeros();
    let seg = bits.saturating_sub(5);
    let mant = if seg < 2 { mag >> 1 } else { mag >> seg } & 0xF;
    (((seg << 4) | mant) as u8) ^ mask
}

fn ulaw_encode_slice(pcm: &[i16], out: &mut [u8]) {
    for (o, &s) in out.iter_mut().zip(pcm) {
        *o = ulaw_encode(s);
    }
}

fn alaw_encode_slice(pcm: &[i16], out: &mut [u8]) {
    for (o, &s) in out.iter_mut().zip(pcm) {
        *o = alaw_encode(s);
    }
}

// ---------------------------------------------------------------------------------------------
// Loss concealment

const HIST: usize = 320; // 40 ms of history: enough for a 20 ms lag and a 10 ms window
const MIN_PITCH: usize = 20; // 400 Hz
const MAX_PITCH: usize = 160; // 50 Hz
const CORR_WIN: usize = 80; // 10 ms compared when looking for the period
const FULL_GAIN: usize = 80; // the first 10 ms of a gap repeat at full level
const FADE_END: usize = 480; // silent after 60 ms, as G.711 Appendix I does
const RECOVER_OLA: usize = 40; // 5 ms crossfade from the repeat into the first good frame

/// Conceals lost G.711 frames by repeating the last pitch period with a fade.
///
/// A plain repeat of the last 20 ms clicks at every copy; repeating one pitch period keeps a
/// voiced sound continuous. The level holds for 10 ms, then falls linearly to silence at
/// 60 ms (the shape of G.711 Appendix I), and the first good frame after a gap is
/// crossfaded in over 5 ms so the return does not click either. Fixed-size state, no
/// allocation.
#[derive(Debug, Clone)]
pub struct FadingRepeat {
    hist: [i16; HIST],
    pitch: usize,
    phase: usize,
    erased: usize,
}

impl Default for FadingRepeat {
    fn default() -> Self {
        Self::new()
    }
}

impl FadingRepeat {
    /// A concealer with silent history.
    pub const fn new() -> Self {
        Self {
            hist: [0; HIST],
            pitch: MAX_PITCH,
            phase: 0,
            erased: 0,
        }
    }

    /// Takes good (decoded) audio, in place: if it follows a gap, its start is crossfaded
    /// from the concealment so the seam is smooth. Then it becomes the history.
    pub fn good(&mut self, pcm: &mut [i16]) {
        if self.erased > 0 {
            let n = RECOVER_OLA.min(pcm.len());
            for (i, s) in pcm[..n].iter_mut().enumerate() {
                let synth = self.synth();
                let w = ((i + 1) * 256 / (n + 1)) as i32;
                *s = ((synth * (256 - w) + *s as i32 * w) >> 8) as i16;
            }
            self.erased = 0;
        }
        if pcm.len() >= HIST {
            self.hist.copy_from_slice(&pcm[pcm.len() - HIST..]);
        } else {
            self.hist.copy_within(pcm.len().., 0);
            self.hist[HIST - pcm.len()..].copy_from_slice(pcm);
        }
    }

    /// Fills `out` with concealment for lost audio.
    pub fn conceal(&mut self, out: &mut [i16]) {
        if self.erased == 0 {
            self.pitch = self.estimate_pitch();
            self.phase = 0;
        }
        for o in out.iter_mut() {
            *o = self.synth() as i16;
        }
    }

    /// True while the concealment has faded to silence (a long gap).
    pub fn faded_out(&self) -> bool {
        self.erased >= FADE_END
    }

    /// Forgets history and any gap in progress (a new stream).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    fn synth(&mut self) -> i32 {
        let s = self.hist[HIST - self.pitch + self.phase] as i32;
        self.phase += 1;
        if self.phase == self.pitch {
            self.phase = 0;
        }
        let e = self.erased;
        self.erased += 1;
        if e < FULL_GAIN {
            s
        } else if e < FADE_END {
            s * (FADE_END - e) as i32 / (FADE_END - FULL_GAIN) as i32
        } else {
            0
        }
    }

    /// The lag in 20..=160 samples whose past best matches the last 10 ms (normalised
    /// cross-correlation). Among lags that match nearly as well (multiples of the period,
    /// for one), the one whose repeat joins most smoothly is taken: the period is rarely a
    /// whole number of samples, and the join is where a repeat would click. Runs only when
    /// a gap starts.
    fn estimate_pitch(&self) -> usize {
        let h = &self.hist;
        let target = &h[HIST - CORR_WIN..];
        let e_target: f64 = target.iter().map(|&a| a as f64 * a as f64).sum();
        let mut r = [0f32; MAX_PITCH + 1];
        let mut best_r = 0f32;
        for (lag, r_lag) in r.iter_mut().enumerate().skip(MIN_PITCH) {
            let past = &h[HIST - CORR_WIN - lag..HIST - lag];
            let mut corr = 0i64;
            let mut energy = 0i64;
            for (&a, &b) in target.iter().zip(past) {
                corr += a as i64 * b as i64;
                energy += b as i64 * b as i64;
            }
            if corr > 0 && energy > 0 && e_target > 0.0 {
                *r_lag = (corr as f64 / (e_target * energy as f64).sqrt()) as f32;
                best_r = best_r.max(*r_lag);
            }
        }
        if best_r <= 0.0 {
            return MAX_PITCH;
        }
        // the sample the history's last two predict next, against what each lag repeats
        let predicted = 2 * h[HIST - 1] as i32 - h[HIST - 2] as i32;
        let mut best = MAX_PITCH;
        let mut best_join = i32::MAX;
        for (lag, &r_lag) in r.iter().enumerate().skip(MIN_PITCH) {
            if r_lag >= best_r - 0.03 {
                let join = (h[HIST - lag] as i32 - predicted).abs();
                if join < best_join {
                    best_join = join;
                    best = lag;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The G.711 decoding formula, written independently of the tables.
    fn ulaw_formula(b: u8) -> i16 {
        let u = !b;
        let t = (((u & 0x0F) as i32) << 3) + 0x84;
        let t = t << ((u & 0x70) >> 4);
        (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
    }

    fn alaw_formula(b: u8) -> i16 {
        let a = b ^ 0x55;
        let seg = (a & 0x70) >> 4;
        let mut t = ((a & 0x0F) as i32) << 4;
        t = match seg {
            0 => t + 8,
            1 => t + 0x108,
            _ => (t + 0x108) << (seg - 1),
        };
        (if a & 0x80 != 0 { t } else { -t }) as i16
    }

    #[test]
    fn tables_match_the_formula() {
        for b in 0..=255u8 {
            assert_eq!(ULAW_TO_LINEAR[b as usize], ulaw_formula(b), "ulaw {b:#x}");
            assert_eq!(ALAW_TO_LINEAR[b as usize], alaw_formula(b), "alaw {b:#x}");
        }
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for b in 0..=255u8 {
            let u = ulaw_encode(ulaw_decode(b));
            // 0x7F and 0xFF both mean zero in µ-law; encoding picks 0xFF.
            if b == 0x7F {
                assert_eq!(u, 0xFF);
            } else {
                assert_eq!(u, b, "ulaw {b:#x}");
            }
            assert_eq!(alaw_encode(alaw_decode(b)), b, "alaw {b:#x}");
        }
    }

    #[test]
    fn known_points() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(Law::Mu.silence_byte(), ulaw_encode(0));
        assert_eq!(Law::A.silence_byte(), alaw_encode(0));
    }

    #[test]
    fn slices_round_trip_within_quantisation() {
        let pcm: Vec<i16> = (0..160)
            .map(|i| ((i as f32 * 0.3).sin() * 12000.0) as i16)
            .collect();
        for law in [Law::Mu, Law::A] {
            let mut enc = [0u8; 160];
            let mut dec = [0i16; 160];
            law.encode(&pcm, &mut enc);
            law.decode(&enc, &mut dec);
            for (a, b) in pcm.iter().zip(&dec) {
                // the largest step in the top segment is 1024 (µ) / 1024 (A): half of it
                assert!((*a as i32 - *b as i32).abs() <= 512, "{law:?} {a} {b}");
            }
        }
    }

    fn tone(start: usize, n: usize) -> Vec<i16> {
        (start..start + n)
            .map(|i| {
                ((i as f32 * 2.0 * std::f32::consts::PI * 200.0 / 8000.0).sin() * 8000.0) as i16
            })
            .collect()
    }

    #[test]
    fn concealment_continues_a_periodic_signal_then_fades() {
        let mut plc = FadingRepeat::new();
        let mut good = tone(0, 320);
        plc.good(&mut good);
        let mut out = [0i16; 160];
        plc.conceal(&mut out);
        // a 200 Hz tone has a 40-sample period: the repeat continues it almost exactly
        let expect = tone(320, 80);
        for i in 0..80 {
            assert!((out[i] as i32 - expect[i] as i32).abs() < 200, "sample {i}");
        }
        // then the level falls
        let peak = |s: &[i16]| s.iter().map(|x| x.unsigned_abs()).max().unwrap();
        assert!(peak(&out[120..]) < peak(&out[..40]));
        plc.conceal(&mut out);
        plc.conceal(&mut out);
        assert!(plc.faded_out());
        assert!(peak(&out[..]) < 3100);
        plc.conceal(&mut out);
        assert_eq!(peak(&out[..]), 0);
    }

    #[test]
    fn recovery_is_crossfaded() {
        let mut plc = FadingRepeat::new();
        let mut good = tone(0, 320);
        plc.good(&mut good);
        let mut out = [0i16; 160];
        plc.conceal(&mut out);
        let mut next = tone(480, 160);
        let raw = next.clone();
        plc.good(&mut next);
        // the seam between concealment and the good frame has no jump bigger than the tone's
        let max_step = 2.0 * std::f32::consts::PI * 200.0 / 8000.0 * 8000.0;
        assert!(((next[0] as i32 - out[159] as i32).abs() as f32) < max_step * 1.5);
        assert_eq!(&next[RECOVER_OLA..], &raw[RECOVER_OLA..]);
    }
}
