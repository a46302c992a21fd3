//! The libopus work of one WebRTC call, alone: the floor `bench/bridge-load.sh` divides the
//! relay's CPU per call by.
//!
//! Per second of a call the relay encodes 50 frames of the caller's speech toward the agent
//! (the call's [`OpusConfig`] settings, on libopus alone: every frame encoded, without the
//! relay's replay of settled silence) and decodes the agent's packets toward the caller
//! ([`OpusDecoder`], 8 kHz out). This does the same work for `--calls` calls of `--seconds`
//! seconds as fast as it can, on one thread, and prints the process's CPU time per call as a
//! share of one core. The caller's speech is SIPp's own speech pcap (the bench's callers
//! play it); the agent's packets are that speech encoded as the simulator sends it (24 kHz in,
//! held to narrow band when `--agent-band narrow`, as the relay's offer asks).

use std::path::PathBuf;

use clap::Parser;
use voxrelay::media::frame::{Frame, FRAME_SAMPLES};
use voxrelay::media::g711;
use voxrelay::media::opus_codec::{libopus_encoder, OpusConfig, OpusDecoder, MAX_OPUS_PACKET};

#[derive(Parser)]
#[command(about = "The libopus work of WebRTC calls, timed alone")]
struct Args {
    /// Calls.
    #[arg(long, default_value_t = 50)]
    calls: u32,
    /// Seconds of each call.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Agent packets decoded per second of a call (50 while the agent speaks).
    #[arg(long, default_value_t = 50.0)]
    decode_per_second: f64,
    /// The agent's Opus band: `narrow` (what the relay's offer asks for) or `full`.
    #[arg(long, default_value = "narrow")]
    agent_band: String,
    /// Work as the relay does: every call's encoder and decoder alive at once, each 20 ms of
    /// every call in turn (each call's state leaves the CPU's caches before its next frame),
    /// instead of one call's whole length at a time.
    #[arg(long)]
    interleave: bool,
    /// The caller's speech: a pcap of G.711 A-law RTP (SIPp's).
    #[arg(long, default_value = "/usr/share/sip-tester/g711a.pcap")]
    pcap: PathBuf,
}

/// The RTP payloads of a pcap of Ethernet/IPv4/UDP/RTP packets.
fn rtp_payloads(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let magic = bytes.get(..4).ok_or("not a pcap")?;
    if magic != [0xd4, 0xc3, 0xb2, 0xa1] {
        return Err("not a little-endian pcap".into());
    }
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let pkt = bytes.get(at + 16..at + 16 + len).ok_or("truncated pcap")?;
        at += 16 + len;
        // Ethernet (14), IPv4 (IHL words), UDP (8), RTP (12 + 4 per CSRC)
        let ip = pkt.get(14..).ok_or("short frame")?;
        let ihl = usize::from(ip.first().ok_or("short IP")? & 0x0f) * 4;
        let rtp = ip.get(ihl + 8..).ok_or("short UDP")?;
        let cc = usize::from(rtp.first().ok_or("short RTP")? & 0x0f);
        out.push(rtp.get(12 + 4 * cc..).ok_or("short RTP")?);
    }
    Ok(out)
}

/// CPU seconds this process has used (user and system).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15 (1-based), 12 and 13 after the command's ')'
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let pcap = std::fs::read(&args.pcap)?;
    let speech: Vec<i16> = rtp_payloads(&pcap)?
        .into_iter()
        .flatten()
        .map(|&b| g711::alaw_decode(b))
        .collect();
    let frames: Vec<Frame> = speech
        .chunks_exact(FRAME_SAMPLES)
        .map(|c| c.try_into().unwrap())
        .collect();
    if frames.is_empty() {
        return Err("no speech in the pcap".into());
    }
    // the agent's packets: the same speech at 24 kHz (each sample three times), as sent
    let mut agent_enc = opus::Encoder::new(24_000, opus::Channels::Mono, opus::Application::Voip)?;
    if args.agent_band == "narrow" {
        agent_enc.set_max_bandwidth(opus::Bandwidth::Narrowband)?;
    }
    let mut agent_packets = Vec::new();
    let mut buf = [0u8; MAX_OPUS_PACKET];
    for f in &frames {
        let wide: Vec<i16> = f.iter().flat_map(|&s| [s, s, s]).collect();
        let n = agent_enc.encode(&wide, &mut buf)?;
        agent_packets.push(buf[..n].to_vec());
    }

    let encodes = 50 * args.seconds as usize;
    let decodes = (args.decode_per_second * f64::from(args.seconds)).round() as usize;
    let mut out = [0u8; MAX_OPUS_PACKET];
    let mut pcm = [0i16; 960];
    let mut sink = 0usize;
    let before = cpu_seconds();
    if args.interleave {
        let mut calls = (0..args.calls)
            .map(|_| {
                Ok((
                    libopus_encoder(&OpusConfig::default())?,
                    OpusDecoder::new()?,
                ))
            })
            .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
        // the agent's packets spread over the call's frames as evenly as they arrive (at most
        // one a frame: the agent sends 20 ms packets), the same packets as one call at a time
        let mut decoded = 0;
        for i in 0..encodes {
            let decode = decoded < decodes && (i + 1) * decodes >= (decoded + 1) * encodes;
            for (enc, dec) in &mut calls {
                sink += enc.encode(&frames[i % frames.len()], &mut out)?;
                if decode {
                    sink += dec.decode(&agent_packets[decoded % agent_packets.len()], &mut pcm)?;
                }
            }
            if decode {
                decoded += 1;
            }
        }
    } else {
        for _ in 0..args.calls {
            // each call has its own encoder and decoder, as in the relay
            let mut enc = libopus_encoder(&OpusConfig::default())?;
            let mut dec = OpusDecoder::new()?;
            for i in 0..encodes {
                sink += enc.encode(&frames[i % frames.len()], &mut out)?;
            }
            for i in 0..decodes {
                sink += dec.decode(&agent_packets[i % agent_packets.len()], &mut pcm)?;
            }
        }
    }
    let used = cpu_seconds() - before;
    let call_seconds = f64::from(args.calls) * f64::from(args.seconds);
    println!(
        "{{\"calls\": {}, \"seconds\": {}, \"encodes_per_call\": {encodes}, \"decodes_per_call\": {decodes}, \
         \"agent_band\": \"{}\", \"interleave\": {}, \"cpu_seconds\": {used:.3}, \"per_call_pct\": {:.4}, \"checksum\": {sink}}}",
        args.calls,
        args.seconds,
        args.agent_band,
        args.interleave,
        used / call_seconds * 100.0
    );
    Ok(())
}
