//! The call's audio chain at chosen Opus settings, for `bench/opus-quality.sh`.
//!
//! Reads a corpus of telephone-band speech (`<clip>.wav`, 8 kHz mono PCM16, the reference;
//! `<clip>.48k.wav`, the same speech at 48 kHz for the agent's side), sends each clip
//! through the relay's own media code and writes what comes out as WAVs for a speech-quality
//! metric to score. One JSON line per (direction, setting, loss rate) on stdout.
//!
//! - caller → agent: G.711 µ-law encode (the caller's phone), the relay's [`Decoder`] for
//!   PCMU, [`OpusEncoder`] at the settings under test, seeded packet loss, then a receiver's
//!   [`OpusDecoder`]: `decode_fec` on the next packet when it carries FEC, concealment
//!   otherwise. The loss pattern is the same for every setting, so settings differ only by
//!   the codec.
//! - agent → caller (`--agent`): an agent-side libopus encoder at 48 kHz (full band, or held
//!   to narrow band as a sender honouring `maxplaybackrate=8000` would), the same loss, the
//!   relay's [`OpusDecoder`] at 8 kHz, G.711 µ-law toward the caller and back.
//! - `g711` baseline: the caller's speech through G.711 alone, the ceiling for the first.
//!
//! Encode and decode times are measured per frame with [`Instant`] around the libopus calls
//! only; the machine's other load shows in them, so compare them within one run.

use clap::Parser;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::time::Instant;
use voxrelay::media::codec::{Codec, Decoder, PayloadDecoder};
use voxrelay::media::frame::{Frame, FRAME_SAMPLES};
use voxrelay::media::g711::Law;
use voxrelay::media::opus_codec::{
    packet_has_fec, OpusConfig, OpusDecoder, OpusEncoder, MAX_OPUS_PACKET,
};
use voxrelay::media::wav;

#[derive(Parser)]
#[command(about = "Speech corpus through the relay's Opus chain at a grid of settings")]
struct Args {
    /// Directory of `<clip>.wav` (8 kHz reference) and `<clip>.48k.wav` files.
    #[arg(long)]
    corpus: PathBuf,
    /// Where the degraded WAVs go, one directory per run.
    #[arg(long)]
    out: PathBuf,
    /// Complexities to test.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,3,4,5,6,7,8,9,10")]
    complexities: Vec<i32>,
    /// Bitrates in bit/s.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "12000,16000,20000,24000,32000"
    )]
    bitrates: Vec<i32>,
    /// FEC settings (true/false).
    #[arg(long, value_delimiter = ',', default_value = "false,true")]
    fec: Vec<bool>,
    /// Packet loss rates in percent.
    #[arg(long, value_delimiter = ',', default_value = "0,5")]
    losses: Vec<u32>,
    /// Seed of the loss patterns.
    #[arg(long, default_value_t = 17)]
    seed: u64,
    /// Also run the agent → caller direction (full band and narrow band senders).
    #[arg(long)]
    agent: bool,
}

/// One clip of the corpus.
struct Clip {
    name: String,
    pcm8: Vec<i16>,
    pcm48: Option<Vec<i16>>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let clips = load_corpus(&args.corpus)?;
    anyhow::ensure!(!clips.is_empty(), "no <clip>.wav in {:?}", args.corpus);
    // one loss pattern per (clip, rate), shared by every setting
    let masks: Vec<Vec<Vec<bool>>> = args
        .losses
        .iter()
        .map(|&pct| {
            clips
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let frames = c.pcm8.len().div_ceil(FRAME_SAMPLES);
                    loss_mask(frames, pct, args.seed ^ ((i as u64) << 8) ^ pct as u64)
                })
                .collect()
        })
        .collect();

    // the caller's speech as the relay hands it to the encoder: G.711 there and back
    let caller: Vec<Vec<Frame>> = clips.iter().map(|c| through_g711(&c.pcm8)).collect();
    {
        let dir = args.out.join("g711");
        std::fs::create_dir_all(&dir)?;
        for (clip, frames) in clips.iter().zip(&caller) {
            write_wav(
                &dir.join(format!("{}.wav", clip.name)),
                8_000,
                frames.as_flattened(),
            )?;
        }
        println!(
            "{}",
            serde_json::json!({"dir": "g711", "out": dir, "clips": clips.len()})
        );
    }

    for &complexity in &args.complexities {
        for &fec in &args.fec {
            for &bitrate in &args.bitrates {
                let cfg = OpusConfig {
                    complexity,
                    bitrate_bps: bitrate,
                    fec,
                    ..OpusConfig::default()
                };
                caller_to_agent(&args, &clips, &caller, &masks, &cfg)?;
            }
        }
    }
    if args.agent {
        for narrow in [false, true] {
            agent_to_caller(&args, &clips, &masks, narrow)?;
        }
    }
    Ok(())
}

fn caller_to_agent(
    args: &Args,
    clips: &[Clip],
    caller: &[Vec<Frame>],
    masks: &[Vec<Vec<bool>>],
    cfg: &OpusConfig,
) -> anyhow::Result<()> {
    let name = format!(
        "c{}_{}k_fec{}",
        cfg.complexity,
        cfg.bitrate_bps / 1000,
        if cfg.fec { "on" } else { "off" }
    );
    // encode once per clip; the loss comes after the encoder, so both rates share the packets
    let mut enc_ns = 0u128;
    let mut frames = 0usize;
    let mut bytes = 0usize;
    let mut fec_pkts = 0usize;
    let mut streams = Vec::with_capacity(clips.len());
    let mut buf = [0u8; MAX_OPUS_PACKET];
    for speech in caller {
        let mut enc = OpusEncoder::new(cfg)?;
        let mut pkts = Vec::with_capacity(speech.len());
        for f in speech {
            let t = Instant::now();
            let n = enc.encode(f, &mut buf)?;
            enc_ns += t.elapsed().as_nanos();
            frames += 1;
            bytes += n;
            fec_pkts += packet_has_fec(&buf[..n]) as usize;
            pkts.push(buf[..n].to_vec());
        }
        streams.push(pkts);
    }
    for (li, &loss) in args.losses.iter().enumerate() {
        let dir = args.out.join(format!("{name}_loss{loss}"));
        std::fs::create_dir_all(&dir)?;
        let mut stats = DecodeStats::default();
        for (ci, (clip, pkts)) in clips.iter().zip(&streams).enumerate() {
            let mut dec = OpusDecoder::new()?;
            let pcm = receive(&mut dec, pkts, &masks[li][ci], &mut stats)?;
            write_wav(&dir.join(format!("{}.wav", clip.name)), 8_000, &pcm)?;
        }
        println!(
            "{}",
            serde_json::json!({
                "dir": "caller_to_agent", "out": dir, "name": name,
                "complexity": cfg.complexity, "bitrate": cfg.bitrate_bps, "fec": cfg.fec,
                "expected_loss_pct": cfg.expected_loss_pct, "loss_pct": loss,
                "frames": frames,
                "encode_us_per_frame": enc_ns as f64 / frames as f64 / 1000.0,
                "decode_us_per_frame": stats.ns as f64 / stats.calls.max(1) as f64 / 1000.0,
                "bytes_per_frame": bytes as f64 / frames as f64,
                "fec_packets_pct": 100.0 * fec_pkts as f64 / frames as f64,
                "lost": stats.lost, "recovered_by_fec": stats.recovered,
            })
        );
    }
    Ok(())
}

/// The agent's speech encoded at 48 kHz by an agent-side encoder (full band, or limited to
/// narrow band), decoded by the relay at 8 kHz and sent to the caller as G.711 µ-law.
fn agent_to_caller(
    args: &Args,
    clips: &[Clip],
    masks: &[Vec<Vec<bool>>],
    narrow: bool,
) -> anyhow::Result<()> {
    const F48: usize = FRAME_SAMPLES * 6;
    const AGENT_BITRATE: i32 = 32_000;
    let name = if narrow { "agent_nb" } else { "agent_fb" };
    let mut enc_ns = 0u128;
    let mut frames = 0usize;
    let mut bytes = 0usize;
    let mut streams = Vec::with_capacity(clips.len());
    let mut buf = [0u8; MAX_OPUS_PACKET];
    for clip in clips {
        let pcm48 = clip
            .pcm48
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("{}.48k.wav missing", clip.name))?;
        // a WebRTC sender's usual voice settings: VOIP, in-band FEC on, 32 kbit/s (libopus
        // would pick about 48 at 48 kHz; a WebRTC stack sets the rate itself)
        let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)?;
        enc.set_bitrate(opus::Bitrate::Bits(AGENT_BITRATE))?;
        enc.set_inband_fec(true)?;
        enc.set_packet_loss_perc(10)?;
        if narrow {
            enc.set_max_bandwidth(opus::Bandwidth::Narrowband)?;
        }
        let mut pkts = Vec::new();
        for chunk in pcm48.chunks(F48) {
            let mut f = [0i16; F48];
            f[..chunk.len()].copy_from_slice(chunk);
            let t = Instant::now();
            let n = enc.encode(&f, &mut buf)?;
            enc_ns += t.elapsed().as_nanos();
            frames += 1;
            bytes += n;
            pkts.push(buf[..n].to_vec());
        }
        streams.push(pkts);
    }
    for (li, &loss) in args.losses.iter().enumerate() {
        let dir = args.out.join(format!("{name}_loss{loss}"));
        std::fs::create_dir_all(&dir)?;
        let mut stats = DecodeStats::default();
        for (ci, (clip, pkts)) in clips.iter().zip(&streams).enumerate() {
            let mut dec = OpusDecoder::new()?;
            let mask = &masks[li][ci];
            let pcm = receive(&mut dec, pkts, mask, &mut stats)?;
            // toward the caller: µ-law, as the phone hears it
            let heard: Vec<Frame> = through_g711(&pcm);
            write_wav(
                &dir.join(format!("{}.wav", clip.name)),
                8_000,
                heard.as_flattened(),
            )?;
        }
        println!(
            "{}",
            serde_json::json!({
                "dir": "agent_to_caller", "out": dir, "name": name, "narrowband_sender": narrow,
                "bitrate": AGENT_BITRATE,
                "loss_pct": loss, "frames": frames,
                "agent_encode_us_per_frame": enc_ns as f64 / frames as f64 / 1000.0,
                "decode_us_per_frame": stats.ns as f64 / stats.calls.max(1) as f64 / 1000.0,
                "bytes_per_frame": bytes as f64 / frames as f64,
                "lost": stats.lost, "recovered_by_fec": stats.recovered,
            })
        );
    }
    Ok(())
}

#[derive(Default)]
struct DecodeStats {
    ns: u128,
    calls: usize,
    lost: usize,
    recovered: usize,
}

/// A receiver's decode of `pkts` with the packets `lost[i]` dropped: a lost frame is rebuilt
/// from the next packet's FEC copy when it has one (as the relay's jitter buffer does), and
/// concealed otherwise.
fn receive(
    dec: &mut OpusDecoder,
    pkts: &[Vec<u8>],
    lost: &[bool],
    stats: &mut DecodeStats,
) -> anyhow::Result<Vec<i16>> {
    let mut pcm = Vec::with_capacity(pkts.len() * FRAME_SAMPLES);
    let mut out = [0i16; FRAME_SAMPLES];
    for (i, p) in pkts.iter().enumerate() {
        let t = Instant::now();
        if lost.get(i).copied().unwrap_or(false) {
            stats.lost += 1;
            match pkts.get(i + 1) {
                Some(next)
                    if !lost.get(i + 1).copied().unwrap_or(false) && packet_has_fec(next) =>
                {
                    dec.decode_fec(next, &mut out)?;
                    stats.recovered += 1;
                }
                _ => {
                    dec.conceal(&mut out)?;
                }
            }
        } else {
            let n = dec.decode(p, &mut out)?;
            anyhow::ensure!(n == FRAME_SAMPLES, "{n} samples from a 20 ms packet");
        }
        stats.ns += t.elapsed().as_nanos();
        stats.calls += 1;
        pcm.extend_from_slice(&out);
    }
    Ok(pcm)
}

/// `pcm` through G.711 µ-law and the relay's PCMU decoder, in 20 ms frames (the last padded
/// with silence).
fn through_g711(pcm: &[i16]) -> Vec<Frame> {
    let mut dec = Decoder::new(Codec::Pcmu).expect("PCMU needs no codec state");
    let mut payload = [0u8; FRAME_SAMPLES];
    pcm.chunks(FRAME_SAMPLES)
        .map(|chunk| {
            let mut f = [0i16; FRAME_SAMPLES];
            f[..chunk.len()].copy_from_slice(chunk);
            Law::Mu.encode(&f, &mut payload);
            let mut out = [0i16; FRAME_SAMPLES];
            let n = dec.decode(&payload, &mut out);
            debug_assert_eq!(n, Some(FRAME_SAMPLES));
            out
        })
        .collect()
}

/// `frames` frames, each lost with probability `pct` %, from `seed`.
fn loss_mask(frames: usize, pct: u32, seed: u64) -> Vec<bool> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..frames)
        .map(|_| rng.random_range(0..100u32) < pct)
        .collect()
}

fn load_corpus(dir: &Path) -> anyhow::Result<Vec<Clip>> {
    let mut clips = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".wav") && !n.ends_with(".48k.wav"))
        .collect();
    names.sort();
    for file in names {
        let name = file.trim_end_matches(".wav").to_string();
        let pcm8 = wav::read_8k(&std::fs::read(dir.join(&file))?)?;
        let wide = dir.join(format!("{name}.48k.wav"));
        let pcm48 = match std::fs::read(&wide) {
            Ok(b) => Some(wav::read_mono(&b, &[48_000])?.1),
            Err(_) => None,
        };
        clips.push(Clip { name, pcm8, pcm48 });
    }
    Ok(clips)
}

/// Writes mono PCM16 as a WAV file.
fn write_wav(path: &Path, rate: u32, pcm: &[i16]) -> std::io::Result<()> {
    let data = (pcm.len() * 2) as u32;
    let mut b = Vec::with_capacity(44 + data as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    for s in pcm {
        b.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, b)
}
