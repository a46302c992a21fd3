//! Audio quality through the whole codec path a caller's voice can take: G.711 (the phone)
//! → Opus at 8 kHz (the relay, toward OpenAI) → Opus at 48 kHz (OpenAI's own encoder, as
//! on the way back) decoded straight to 8 kHz (the relay) → G.711 (the phone).
//!
//! Signals: a 1 kHz tone and a spoken sentence made with espeak-ng (Debian `espeak-ng`,
//! converted to 8 kHz mono 16-bit by sox, Debian `sox`). Measures and thresholds are
//! explained on each test.

mod media_support;

use std::process::Command;

use media_support::snr_db;
use voxrelay::media::frame::FRAME_SAMPLES;
use voxrelay::media::g711::Law;
use voxrelay::media::opus_codec::{OpusConfig, OpusDecoder, OpusEncoder, MAX_OPUS_PACKET};

/// The chain, frame by frame, as the relay runs it; returns the phone's decoded output.
fn chain(input: &[i16], law: Law) -> Vec<i16> {
    let mut enc8 = OpusEncoder::new(&OpusConfig::default()).unwrap();
    let mut dec8 = OpusDecoder::new().unwrap();
    // OpenAI's side: 48 kHz mono Opus, VOIP, 32 kbit/s
    let mut enc48 =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    enc48.set_bitrate(opus::Bitrate::Bits(32_000)).unwrap();
    let mut dec_back = OpusDecoder::new().unwrap();
    let mut up = Upsampler6::new();

    let mut out = Vec::with_capacity(input.len());
    let (mut g711, mut pcm, mut pkt) = ([0u8; 160], [0i16; 160], [0u8; MAX_OPUS_PACKET]);
    let mut pcm48 = [0i16; 960];
    for f in input.chunks_exact(FRAME_SAMPLES) {
        // phone → relay: G.711
        law.encode(f, &mut g711);
        law.decode(&g711, &mut pcm);
        // relay → OpenAI: Opus at 8 kHz
        let n = enc8.encode(&pcm, &mut pkt).unwrap();
        let m = dec8.decode(&pkt[..n], &mut pcm).unwrap();
        assert_eq!(m, 160);
        // OpenAI → relay: OpenAI works at 48 kHz; its stream decoded straight to 8 kHz
        up.run(&pcm, &mut pcm48);
        let n = enc48.encode(&pcm48, &mut pkt).unwrap();
        let m = dec_back.decode(&pkt[..n], &mut pcm).unwrap();
        assert_eq!(m, 160);
        // relay → phone: G.711
        law.encode(&pcm, &mut g711);
        law.decode(&g711, &mut pcm);
        out.extend_from_slice(&pcm);
    }
    out
}

/// 8 → 48 kHz for the simulated far end: windowed-sinc interpolation (test-only; the relay
/// itself never resamples).
struct Upsampler6 {
    hist: Vec<f64>,
    taps: Vec<f64>,
}

impl Upsampler6 {
    const HALF: usize = 8; // input samples each side
    fn new() -> Self {
        let n = 2 * Self::HALF * 6 + 1;
        let taps = (0..n)
            .map(|i| {
                let x = (i as f64 - (n / 2) as f64) / 6.0;
                let sinc = if x == 0.0 {
                    1.0
                } else {
                    (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
                };
                let w = 0.5 + 0.5 * (std::f64::consts::PI * x / (Self::HALF as f64 + 0.5)).cos();
                sinc * w
            })
            .collect();
        Self {
            hist: vec![0.0; 2 * Self::HALF],
            taps,
        }
    }
    fn run(&mut self, input: &[i16], out: &mut [i16]) {
        self.hist.extend(input.iter().map(|&s| s as f64));
        let c = self.taps.len() / 2;
        for (j, o) in out.iter_mut().enumerate() {
            // output j sits at input position j/6, delayed by HALF input samples
            let pos6 = j as i64;
            let mut acc = 0.0;
            for (k, &x) in self.hist.iter().enumerate() {
                let d = (k as i64 * 6) - (pos6 + Self::HALF as i64 * 6) + c as i64;
                if d >= 0 && (d as usize) < self.taps.len() {
                    acc += x * self.taps[d as usize];
                }
            }
            *o = acc.round().clamp(-32768.0, 32767.0) as i16;
        }
        let keep = self.hist.len() - 2 * Self::HALF;
        self.hist.drain(..keep);
    }
}

/// The lag (0..=maxlag) at which `y` best matches `x` (the chain's delay).
fn best_lag(x: &[i16], y: &[i16], maxlag: usize) -> usize {
    (0..=maxlag)
        .max_by(|&a, &b| {
            let c = |l: usize| -> f64 {
                x.iter()
                    .zip(&y[l..])
                    .map(|(&p, &q)| p as f64 * q as f64)
                    .sum()
            };
            c(a).partial_cmp(&c(b)).unwrap()
        })
        .unwrap()
}

fn aligned(x: &[i16], y: &[i16], lag: usize) -> (Vec<f64>, Vec<f64>) {
    let n = x.len().min(y.len() - lag);
    (
        x[..n].iter().map(|&v| v as f64).collect(),
        y[lag..lag + n].iter().map(|&v| v as f64).collect(),
    )
}

/// The largest step across a 20 ms frame border in `s`.
fn max_border_step(s: &[i16]) -> i32 {
    (FRAME_SAMPLES..s.len())
        .step_by(FRAME_SAMPLES)
        .map(|n| (s[n] as i32 - s[n - 1] as i32).abs())
        .max()
        .unwrap()
}

/// Magnitude spectrum of one 20 ms frame (Hann window, 256-point DFT), bins 0..=128.
fn spectrum(frame: &[f64]) -> Vec<f64> {
    let n = 256;
    let w: Vec<f64> = (0..frame.len())
        .map(|i| 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / frame.len() as f64).cos())
        .collect();
    (0..=n / 2)
        .map(|k| {
            let (mut re, mut im) = (0.0, 0.0);
            for (i, (&x, &wi)) in frame.iter().zip(&w).enumerate() {
                let a = std::f64::consts::TAU * (k * i) as f64 / n as f64;
                re += x * wi * a.cos();
                im -= x * wi * a.sin();
            }
            (re * re + im * im).sqrt()
        })
        .collect()
}

/// Segmental spectral SNR (dB): for each 20 ms frame of speech (within 40 dB of the loudest
/// frame), the energy of the reference's magnitude spectrum over the energy of the
/// difference of magnitude spectra, in the telephone band 300-3400 Hz; averaged over
/// frames, each clamped to [-10, 35] dB as segmental SNR usually is. Phase is left out.
fn segmental_spectral_snr(x: &[f64], y: &[f64]) -> f64 {
    let frames: Vec<(Vec<f64>, Vec<f64>, f64)> = x
        .chunks_exact(FRAME_SAMPLES)
        .zip(y.chunks_exact(FRAME_SAMPLES))
        .map(|(a, b)| {
            (
                spectrum(a),
                spectrum(b),
                a.iter().map(|v| v * v).sum::<f64>(),
            )
        })
        .collect();
    let loudest = frames.iter().map(|f| f.2).fold(0.0, f64::max);
    let band = 10..=109; // 256-point bins at 31.25 Hz: 312..3406 Hz
    let snrs: Vec<f64> = frames
        .iter()
        .filter(|f| f.2 > loudest * 1e-4)
        .map(|(a, b, _)| {
            let sig: f64 = band.clone().map(|k| a[k] * a[k]).sum();
            let noise: f64 = band.clone().map(|k| (a[k] - b[k]).powi(2)).sum();
            (10.0 * (sig / noise.max(1e-9)).log10()).clamp(-10.0, 35.0)
        })
        .collect();
    snrs.iter().sum::<f64>() / snrs.len() as f64
}

fn tone(n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            ((i as f64 * 1000.0 * std::f64::consts::TAU / 8000.0).sin() * 10_000.0).round() as i16
        })
        .collect()
}

/// A sentence spoken by espeak-ng, as 8 kHz mono 16-bit.
fn speech() -> Vec<i16> {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("s.wav");
    let raw = dir.path().join("s.raw");
    let st = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w", wav.to_str().unwrap()])
        .arg("Thank you for calling the clinic. I can book, move or cancel an appointment for you. What day suits you best?")
        .status()
        .expect("espeak-ng is installed (Debian package `espeak-ng`)");
    assert!(st.success());
    let st = Command::new("sox")
        .args([
            wav.to_str().unwrap(),
            "-D",
            "-r",
            "8000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed",
            "-t",
            "raw",
            raw.to_str().unwrap(),
        ])
        .status()
        .expect("sox is installed (Debian package `sox`)");
    assert!(st.success());
    let bytes = std::fs::read(&raw).unwrap();
    let mut s: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    s.truncate(s.len() / FRAME_SAMPLES * FRAME_SAMPLES);
    assert!(s.len() > 8000 * 4, "a few seconds of speech");
    s
}

fn g711_only(x: &[i16], law: Law) -> Vec<i16> {
    let mut b = vec![0u8; x.len()];
    let mut y = vec![0i16; x.len()];
    law.encode(x, &mut b);
    law.decode(&b, &mut y);
    y
}

/// SINAD of a tone (dB): the best-fitting sinusoid at `hz` (any gain and phase, plus DC)
/// over what is left. This is how a telephone test set measures a tone's signal to noise
/// and distortion: the codec's delay and a small gain change are not noise.
fn sinad_db(y: &[f64], hz: f64) -> f64 {
    let w = std::f64::consts::TAU * hz / 8000.0;
    // least squares on [sin, cos, 1]: normal equations, solved directly
    let basis = |i: usize| [(w * i as f64).sin(), (w * i as f64).cos(), 1.0];
    let mut m = [[0.0f64; 3]; 3];
    let mut v = [0.0f64; 3];
    for (i, &yi) in y.iter().enumerate() {
        let b = basis(i);
        for r in 0..3 {
            v[r] += b[r] * yi;
            for c in 0..3 {
                m[r][c] += b[r] * b[c];
            }
        }
    }
    let coef = solve3(m, v);
    let (mut sig, mut res) = (0.0, 0.0);
    for (i, &yi) in y.iter().enumerate() {
        let b = basis(i);
        let fit = coef[0] * b[0] + coef[1] * b[1];
        sig += fit * fit;
        res += (yi - fit - coef[2]).powi(2);
    }
    10.0 * (sig / res.max(1e-9)).log10()
}

fn solve3(mut m: [[f64; 3]; 3], mut v: [f64; 3]) -> [f64; 3] {
    for col in 0..3 {
        let piv = (col..3)
            .max_by(|&a, &b| m[a][col].abs().partial_cmp(&m[b][col].abs()).unwrap())
            .unwrap();
        m.swap(col, piv);
        v.swap(col, piv);
        for r in 0..3 {
            if r != col {
                let f = m[r][col] / m[col][col];
                let pivot_row = m[col];
                for (x, p) in m[r].iter_mut().zip(pivot_row) {
                    *x -= f * p;
                }
                v[r] -= f * v[col];
            }
        }
    }
    [v[0] / m[0][0], v[1] / m[1][1], v[2] / m[2][2]]
}

/// The largest step at a frame border must not exceed the largest step the same signal
/// takes anywhere else: a click is a jump the signal does not make by itself.
fn assert_no_border_click(y: &[i16], what: &str) {
    let border = max_border_step(y);
    let inner = (1..y.len())
        .filter(|n| n % FRAME_SAMPLES != 0)
        .map(|n| (y[n] as i32 - y[n - 1] as i32).abs())
        .max()
        .unwrap();
    assert!(
        border <= inner,
        "{what}: a click at a frame border ({border} > {inner})"
    );
}

/// G.711 → Opus at 8 kHz → G.711: the relay's own stages only.
fn relay_only(input: &[i16], law: Law) -> Vec<i16> {
    let mut enc = OpusEncoder::new(&OpusConfig::default()).unwrap();
    let mut dec = OpusDecoder::new().unwrap();
    let (mut g711, mut pcm, mut pkt) = ([0u8; 160], [0i16; 160], [0u8; MAX_OPUS_PACKET]);
    let mut out = Vec::new();
    for f in input.chunks_exact(FRAME_SAMPLES) {
        law.encode(f, &mut g711);
        law.decode(&g711, &mut pcm);
        let n = enc.encode(&pcm, &mut pkt).unwrap();
        dec.decode(&pkt[..n], &mut pcm).unwrap();
        law.encode(&pcm, &mut g711);
        law.decode(&g711, &mut pcm);
        out.extend_from_slice(&pcm);
    }
    out
}

#[test]
fn tone_keeps_its_snr_through_the_chain() {
    for law in [Law::Mu, Law::A] {
        let x = tone(8000 * 3);
        let sinad = |y: &[i16]| {
            sinad_db(
                &y[800..].iter().map(|&v| v as f64).collect::<Vec<_>>(),
                1000.0,
            )
        };
        // skip the first 100 ms while the encoders settle
        let y = chain(&x, law);
        let (chain_sinad, relay_sinad, g711_sinad) = (
            sinad(&y),
            sinad(&relay_only(&x, law)),
            sinad(&g711_only(&x, law)),
        );
        eprintln!(
            "{law:?} 1 kHz tone SINAD: G.711 alone {g711_sinad:.1} dB, relay stages {relay_sinad:.1} dB, whole chain {chain_sinad:.1} dB"
        );
        // G.711 alone must meet ITU-T G.712's 35 dB signal to total distortion for a PCM
        // channel at this level: it is our own table, and this is its spec.
        assert!(g711_sinad > 35.0, "{law:?}: {g711_sinad:.1} dB");
        // Opus is a perceptual codec and does not chase a tone's waveform, so no standard
        // line applies. Measured (libopus 1.6): the relay's stages (G.711, our 8 kHz Opus at
        // 24 kbit/s, G.711) 25.0 dB µ-law / 29.9 A-law; the simulated far end (48 kHz,
        // 32 kbit/s) alone ~22.6 dB and so the whole chain 22.5 µ-law / 20.5 A-law. The
        // lines sit ~3 dB under the lower of each: room for libopus versions, while anything
        // broken (a wrong rate, a lost, doubled or shifted frame, a phase jump at borders)
        // falls well under 10 dB.
        assert!(
            relay_sinad > 22.0,
            "{law:?}: relay stages {relay_sinad:.1} dB"
        );
        assert!(chain_sinad > 17.0, "{law:?}: chain {chain_sinad:.1} dB");
        assert_no_border_click(&y[800..], "tone");
    }
}

#[test]
fn speech_keeps_its_spectrum_through_the_chain() {
    // A waveform SNR means little for Opus on speech: SILK codes the spectral envelope and
    // pitch, not the waveform's phase, and the chain measures ~5 dB waveform SNR while
    // sounding close to the input. So speech is judged by segmental spectral SNR (see
    // `segmental_spectral_snr`): magnitude spectra of 20 ms frames in the telephone band.
    let x = speech();
    for law in [Law::Mu, Law::A] {
        let y = chain(&x, law);
        let lag = best_lag(&x, &y, 400);
        let (a, b) = aligned(&x, &y, lag);
        let wave = snr_db(&a, &b);
        let seg = segmental_spectral_snr(&a, &b);
        let g711: Vec<f64> = g711_only(&x, law).iter().map(|&v| v as f64).collect();
        let seg_g711 = segmental_spectral_snr(&a, &g711);
        // what the measure gives the same chain with a plain fault added
        let quieter: Vec<f64> = b.iter().map(|v| v * 0.5).collect();
        let mut muffled = b.clone();
        for _ in 0..4 {
            for i in (1..muffled.len()).rev() {
                muffled[i] = 0.5 * (muffled[i] + muffled[i - 1]);
            }
        }
        let shifted: Vec<f64> = std::iter::repeat_n(0.0, 80)
            .chain(b.iter().copied())
            .take(b.len())
            .collect();
        let faults = [
            ("6 dB quieter", segmental_spectral_snr(&a, &quieter)),
            ("muffled", segmental_spectral_snr(&a, &muffled)),
            ("10 ms out of step", segmental_spectral_snr(&a, &shifted)),
        ];
        eprintln!(
            "{law:?} speech: delay {lag} samples, waveform SNR {wave:.1} dB, segmental spectral SNR {seg:.1} dB (G.711 alone {seg_g711:.1} dB; faults {faults:?})"
        );
        // Threshold 12 dB: the chain measures ~15.3 dB (libopus 1.6), G.711 alone ~34.5;
        // each fault above scores 5-8 dB. 12 dB separates a working chain from those with
        // ~3 dB to spare on each side.
        const LINE: f64 = 12.0;
        assert!(seg > LINE, "{law:?}: {seg:.1} dB");
        for (what, score) in faults {
            assert!(
                score < LINE,
                "the measure must catch '{what}': {score:.1} dB"
            );
        }
        assert_no_border_click(&y, "speech");
    }
}
