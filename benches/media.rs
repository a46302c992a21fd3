//! Per-frame cost of each media stage and of the two chains a call runs every 20 ms.
//!
//! Run: `cargo bench --bench media -- --warm-up-time 1 --measurement-time 3`
//! The figures and what they mean are in docs/performance.md (## Media).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use voxrelay::media::codec::{Codec, G711Decoder, PayloadDecoder};
use voxrelay::media::echo_gate::EchoGate;
use voxrelay::media::forward::Forwarder;
use voxrelay::media::frame::{Frame, FRAME_SAMPLES};
use voxrelay::media::g711::Law;
use voxrelay::media::jitter::{JitterBuffer, JitterConfig};
use voxrelay::media::opus_codec::{
    OpusConfig, OpusDecoder, OpusEncoder, MAX_OPUS_PACKET, OPUS_TICKS_PER_FRAME,
};
use voxrelay::media::pacer::Pacer;
use voxrelay::media::rtp::{Packetizer, HEADER_LEN};

/// 2 s of a voiced, syllable-like signal (so Opus does real work, not silence).
fn voiced_frames() -> Vec<Frame> {
    let mut ph = 0f64;
    let s: Vec<i16> = (0..16_000)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let f0 = 120.0 + 30.0 * (t * std::f64::consts::TAU * 1.3).sin();
            ph += std::f64::consts::TAU * f0 / 8000.0;
            let env = (0.6 - 0.4 * (t * std::f64::consts::TAU * 3.0).cos()).powi(2);
            let v: f64 = (1..20).map(|h| (ph * h as f64).sin() / h as f64).sum();
            (v * env * 6000.0) as i16
        })
        .collect();
    s.chunks_exact(FRAME_SAMPLES)
        .map(|f| f.try_into().unwrap())
        .collect()
}

/// OpenAI-like packets: 48 kHz mono Opus at 32 kbit/s, 20 ms each.
fn openai_packets(frames: &[Frame]) -> Vec<Vec<u8>> {
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    enc.set_bitrate(opus::Bitrate::Bits(32_000)).unwrap();
    frames
        .iter()
        .map(|f| {
            // zero-order hold to 48 kHz is enough to give the encoder realistic content
            let up: Vec<i16> = f.iter().flat_map(|&s| std::iter::repeat_n(s, 6)).collect();
            let mut b = vec![0u8; MAX_OPUS_PACKET];
            let n = enc.encode(&up, &mut b).unwrap();
            b.truncate(n);
            b
        })
        .collect()
}

/// A decoder that only copies, to time the jitter buffer itself.
struct Copy;
impl PayloadDecoder for Copy {
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Option<usize> {
        for (o, &b) in out.iter_mut().zip(payload.iter().cycle()) {
            *o = b as i16;
        }
        Some(out.len())
    }
    fn recover(&mut self, _: &[u8], _: &mut [i16]) -> bool {
        false
    }
    fn conceal(&mut self, out: &mut [i16]) {
        out.fill(0);
    }
    fn reset(&mut self) {}
}

fn stages(c: &mut Criterion) {
    let frames = voiced_frames();
    let mut g711 = Vec::new();
    for f in &frames {
        let mut b = [0u8; FRAME_SAMPLES];
        Law::Mu.encode(f, &mut b);
        g711.push(b);
    }

    let mut g = c.benchmark_group("stage");
    for (name, law) in [("ulaw", Law::Mu), ("alaw", Law::A)] {
        let mut i = 0;
        let mut out = [0u8; FRAME_SAMPLES];
        g.bench_function(format!("g711_{name}_encode"), |b| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                law.encode(black_box(&frames[i]), &mut out);
                black_box(&out);
            })
        });
        let mut pcm = [0i16; FRAME_SAMPLES];
        g.bench_function(format!("g711_{name}_decode"), |b| {
            b.iter(|| {
                i = (i + 1) % g711.len();
                law.decode(black_box(&g711[i]), &mut pcm);
                black_box(&pcm);
            })
        });
    }

    // a warm transfer's joined legs: one packet parsed and re-stamped into the other leg's
    // stream (both directions do this for every packet)
    let packets: Vec<Vec<u8>> = g711
        .iter()
        .enumerate()
        .map(|(n, payload)| {
            let mut tx = Packetizer::new(0x1234, n as u16, n as u32 * 160);
            let mut d = vec![0u8; HEADER_LEN + FRAME_SAMPLES];
            tx.write(0, payload, 160, &mut d);
            d
        })
        .collect();
    let mut fwd = Forwarder::new(Packetizer::new(0x9999, 7, 0), (0, 0), Some((101, 101)));
    let mut out = [0u8; 1500];
    let mut i = 0;
    g.bench_function("rtp_forward", |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            let d = black_box(&packets[i]);
            let p = voxrelay::media::rtp::parse(d).unwrap();
            black_box(fwd.forward(&p, &d[p.payload_start..p.payload_end], &mut out));
        })
    });

    // the line-echo gate, both halves of one tick: the frame played, the caller's frame
    // judged (the caller returns the agent's audio at -10 dB, so most frames are gated)
    let mut gate = EchoGate::new(Law::Mu, 6.0);
    let mut i = 0;
    let echo: Vec<Frame> = frames
        .iter()
        .map(|f| std::array::from_fn(|n| (f32::from(f[n]) * 0.316) as i16))
        .collect();
    g.bench_function("echo_gate_tick", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            gate.handle_played(black_box(&g711[i]));
            let mut f = echo[(i + frames.len() - 4) % frames.len()];
            black_box(gate.handle_caller(&mut f));
        })
    });

    // bare libopus at 8 kHz, complexity 5 and 24 kbit/s with FEC (the figure to beat,
    // and the call's setting before the quality bench chose complexity 1 at 32 kbit/s)
    let c5 = OpusConfig {
        complexity: 5,
        bitrate_bps: 24_000,
        ..OpusConfig::default()
    };
    let mut enc = OpusEncoder::new(&c5).unwrap();
    let mut pkt = [0u8; MAX_OPUS_PACKET];
    let mut i = 0;
    g.bench_function("opus_encode_8k_c5", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(enc.encode(black_box(&frames[i]), &mut pkt).unwrap());
        })
    });
    // the same without FEC and at libopus's own bitrate choice: what FEC costs
    let mut plain = OpusEncoder::new(&OpusConfig {
        fec: false,
        expected_loss_pct: 0,
        ..c5
    })
    .unwrap();
    g.bench_function("opus_encode_8k_c5_no_fec", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(plain.encode(black_box(&frames[i]), &mut pkt).unwrap());
        })
    });
    // the call's setting (OpusConfig::default())
    let mut call = OpusEncoder::new(&OpusConfig::default()).unwrap();
    g.bench_function("opus_encode_8k_call", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(call.encode(black_box(&frames[i]), &mut pkt).unwrap());
        })
    });
    let own: Vec<Vec<u8>> = {
        let mut enc = OpusEncoder::new(&OpusConfig::default()).unwrap();
        frames
            .iter()
            .map(|f| {
                let n = enc.encode(f, &mut pkt).unwrap();
                pkt[..n].to_vec()
            })
            .collect()
    };
    let mut dec = OpusDecoder::new().unwrap();
    let mut pcm = [0i16; FRAME_SAMPLES];
    g.bench_function("opus_decode_8k", |b| {
        b.iter(|| {
            i = (i + 1) % own.len();
            black_box(dec.decode(black_box(&own[i]), &mut pcm).unwrap());
        })
    });
    let openai = openai_packets(&frames);
    let mut dec = OpusDecoder::new().unwrap();
    g.bench_function("opus_decode_48k_stream_at_8k", |b| {
        b.iter(|| {
            i = (i + 1) % openai.len();
            black_box(dec.decode(black_box(&openai[i]), &mut pcm).unwrap());
        })
    });

    // the jitter buffer alone: push one packet, pop one frame, time advancing 20 ms
    let mut jb = JitterBuffer::new(JitterConfig::new(Codec::Pcmu));
    let (mut seq, mut t) = (0u16, 0u64);
    let mut out: Frame = [0; FRAME_SAMPLES];
    let mut copy = Copy;
    g.bench_function("jitter_push_pop", |b| {
        b.iter(|| {
            i = (i + 1) % g711.len();
            seq = seq.wrapping_add(1);
            t += 20_000;
            jb.push(
                Duration::from_micros(t),
                1,
                seq,
                (seq as u32) * 160,
                black_box(&g711[i]),
            );
            black_box(jb.pop(Duration::from_micros(t + 1), &mut copy, &mut out));
        })
    });

    // the pacer alone: one frame in, one out, time advancing 20 ms
    let mut pacer = Pacer::new([0u8; FRAME_SAMPLES]);
    let mut t = 0u64;
    g.bench_function("pacer_push_poll", |b| {
        b.iter(|| {
            i = (i + 1) % g711.len();
            t += 20_000;
            let _ = pacer.push(black_box(g711[i]));
            black_box(pacer.poll(Duration::from_micros(t)));
        })
    });
    g.finish();
}

fn chains(c: &mut Criterion) {
    let frames = voiced_frames();
    let g711: Vec<[u8; FRAME_SAMPLES]> = frames
        .iter()
        .map(|f| {
            let mut b = [0u8; FRAME_SAMPLES];
            Law::Mu.encode(f, &mut b);
            b
        })
        .collect();
    let openai = openai_packets(&frames);
    let mut g = c.benchmark_group("chain");

    // caller → OpenAI: RTP payload (G.711) → jitter buffer → G.711 decode → Opus encode
    let mut jb = JitterBuffer::new(JitterConfig::new(Codec::Pcmu));
    let mut dec = G711Decoder::new(Law::Mu);
    let mut enc = OpusEncoder::new(&OpusConfig::default()).unwrap();
    let mut pcm: Frame = [0; FRAME_SAMPLES];
    let mut pkt = [0u8; MAX_OPUS_PACKET];
    let (mut i, mut seq, mut t) = (0usize, 0u16, 0u64);
    g.bench_function("caller_to_openai", |b| {
        b.iter(|| {
            i = (i + 1) % g711.len();
            seq = seq.wrapping_add(1);
            t += 20_000;
            jb.push(
                Duration::from_micros(t),
                1,
                seq,
                (seq as u32) * 160,
                black_box(&g711[i]),
            );
            jb.pop(Duration::from_micros(t + 1), &mut dec, &mut pcm);
            black_box(enc.encode(&pcm, &mut pkt).unwrap());
        })
    });

    // what that chain adds to libopus: the same steps with the encoder left out
    let mut jb = JitterBuffer::new(JitterConfig::new(Codec::Pcmu));
    let mut dec = G711Decoder::new(Law::Mu);
    g.bench_function("caller_to_openai_added", |b| {
        b.iter(|| {
            i = (i + 1) % g711.len();
            seq = seq.wrapping_add(1);
            t += 20_000;
            jb.push(
                Duration::from_micros(t),
                1,
                seq,
                (seq as u32) * 160,
                black_box(&g711[i]),
            );
            jb.pop(Duration::from_micros(t + 1), &mut dec, &mut pcm);
            black_box(&pcm);
        })
    });

    // OpenAI → caller: Opus (48 kHz stream) decoded at 8 kHz → G.711 encode → pacer
    let mut dec = OpusDecoder::new().unwrap();
    let mut pacer = Pacer::new([0u8; FRAME_SAMPLES]);
    let mut payload = [0u8; FRAME_SAMPLES];
    g.bench_function("openai_to_caller", |b| {
        b.iter(|| {
            i = (i + 1) % openai.len();
            t += 20_000;
            dec.decode(black_box(&openai[i]), &mut pcm).unwrap();
            Law::Mu.encode(&pcm, &mut payload);
            let _ = pacer.push(payload);
            black_box(pacer.poll(Duration::from_micros(t)));
        })
    });

    // what it adds to libopus: G.711 encode and the pacer
    let decoded: Vec<Frame> = {
        let mut dec = OpusDecoder::new().unwrap();
        openai
            .iter()
            .map(|p| {
                let mut f = [0i16; FRAME_SAMPLES];
                dec.decode(p, &mut f).unwrap();
                f
            })
            .collect()
    };
    g.bench_function("openai_to_caller_added", |b| {
        b.iter(|| {
            i = (i + 1) % decoded.len();
            t += 20_000;
            Law::Mu.encode(black_box(&decoded[i]), &mut payload);
            let _ = pacer.push(payload);
            black_box(pacer.poll(Duration::from_micros(t)));
        })
    });

    // the same with the Opus stream going through a jitter buffer first (the WebRTC leg)
    let mut jb = JitterBuffer::new(JitterConfig::new(Codec::Opus));
    let mut dec = OpusDecoder::new().unwrap();
    let mut seq = 0u16;
    g.bench_function("openai_to_caller_with_jitter", |b| {
        b.iter(|| {
            i = (i + 1) % openai.len();
            seq = seq.wrapping_add(1);
            t += 20_000;
            jb.push(
                Duration::from_micros(t),
                1,
                seq,
                (seq as u32).wrapping_mul(OPUS_TICKS_PER_FRAME),
                black_box(&openai[i]),
            );
            jb.pop(Duration::from_micros(t + 1), &mut dec, &mut pcm);
            Law::Mu.encode(&pcm, &mut payload);
            let _ = pacer.push(payload);
            black_box(pacer.poll(Duration::from_micros(t)));
        })
    });

    // what that adds to libopus: the jitter buffer (with a copying decoder), G.711, pacer
    let mut jb = JitterBuffer::new(JitterConfig::new(Codec::Opus));
    let mut copy = Copy;
    g.bench_function("openai_to_caller_added_with_jitter", |b| {
        b.iter(|| {
            i = (i + 1) % openai.len();
            seq = seq.wrapping_add(1);
            t += 20_000;
            jb.push(
                Duration::from_micros(t),
                1,
                seq,
                (seq as u32).wrapping_mul(OPUS_TICKS_PER_FRAME),
                black_box(&openai[i]),
            );
            jb.pop(Duration::from_micros(t + 1), &mut copy, &mut pcm);
            Law::Mu.encode(&pcm, &mut payload);
            let _ = pacer.push(payload);
            black_box(pacer.poll(Duration::from_micros(t)));
        })
    });
    g.finish();
}

criterion_group!(benches, stages, chains);
criterion_main!(benches);
