//! Shared helpers for the media integration tests: a seeded RNG, a scripted network and
//! signal measures. (A folder, so cargo does not build it as a test of its own.)
#![allow(dead_code)]

use std::time::Duration;

use voxrelay::media::codec::{Codec, PayloadDecoder};
use voxrelay::media::frame::{Frame, FRAME_SAMPLES};
use voxrelay::media::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout};

/// SplitMix64: a tiny seeded generator, so scenarios replay identically on every machine
/// and every version of every crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A decoder that records which packets it decoded (the id is in the payload's first four
/// bytes) and writes a constant, so tests can follow every packet through the buffer.
#[derive(Default)]
pub struct Tracer {
    pub decoded: Vec<u32>,
    pub concealed_samples: usize,
    pub resets: usize,
}

impl PayloadDecoder for Tracer {
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Option<usize> {
        self.decoded
            .push(u32::from_le_bytes(payload[..4].try_into().unwrap()));
        out.fill(1000);
        Some(out.len())
    }
    fn recover(&mut self, _next: &[u8], _out: &mut [i16]) -> bool {
        false
    }
    fn conceal(&mut self, out: &mut [i16]) {
        self.concealed_samples += out.len();
        out.fill(0);
    }
    fn reset(&mut self) {
        self.resets += 1;
    }
}

/// One packet on the wire.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    /// The packet's index in the sender's stream (its id).
    pub id: u32,
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    /// When the sender sent it (µs, receiver's clock).
    pub sent_us: u64,
    /// When it arrived (µs, receiver's clock).
    pub arrival_us: u64,
}

/// A sender of 20 ms G.711 packets: `n` of them, its clock running `skew` fast (+0.005 is
/// 0.5% fast), starting at seq/ts given.
pub fn stream(n: u32, skew: f64) -> Vec<Sent> {
    (0..n)
        .map(|id| {
            let sent_us = (id as f64 * 20_000.0 / (1.0 + skew)) as u64;
            Sent {
                id,
                ssrc: 0x1234,
                seq: 60_000u16.wrapping_add(id as u16), // wraps within the test
                ts: 4_294_900_000u32.wrapping_add(id * 160),
                sent_us,
                arrival_us: sent_us + 30_000,
            }
        })
        .collect()
}

/// The outcome of a scripted run.
#[derive(Debug)]
pub struct Run {
    pub stats: JitterStats,
    /// Packet ids in the order they were decoded.
    pub decoded: Vec<u32>,
    /// For every decoded packet, how long after it was sent it was played (µs).
    pub delays_us: Vec<u64>,
    pub kinds: Vec<Playout>,
    /// The greatest level seen before a pop (ms).
    pub max_level_ms: u32,
    pub concealed_samples: usize,
    pub resets: usize,
}

impl Run {
    pub fn count(&self, kind: Playout) -> usize {
        self.kinds.iter().filter(|&&k| k == kind).count()
    }
    pub fn max_delay_ms(&self) -> f64 {
        self.delays_us.iter().copied().max().unwrap_or(0) as f64 / 1000.0
    }
    /// Mean delay of the last quarter of the run (after adaptation).
    pub fn settled_delay_ms(&self) -> f64 {
        let tail = &self.delays_us[self.delays_us.len() * 3 / 4..];
        tail.iter().sum::<u64>() as f64 / tail.len() as f64 / 1000.0
    }
}

/// Delivers `packets` (in arrival order) to a G.711 jitter buffer and pops it every 20 ms
/// (first pop at `phase_us`) until `until_us`.
pub fn play(packets: &[Sent], phase_us: u64, until_us: u64) -> Run {
    let mut arrivals = packets.to_vec();
    arrivals.sort_by_key(|p| p.arrival_us);
    let sent_at: std::collections::HashMap<u32, u64> =
        packets.iter().map(|p| (p.id, p.sent_us)).collect();
    let mut jb = JitterBuffer::new(JitterConfig::new(Codec::Pcmu));
    let mut dec = Tracer::default();
    let mut out: Frame = [0; FRAME_SAMPLES];
    let mut payload = [0xFFu8; 160];
    let mut kinds = Vec::new();
    let mut delays_us = Vec::new();
    let mut max_level_ms = 0;
    let mut next = 0;
    let mut t = phase_us;
    while t <= until_us {
        while next < arrivals.len() && arrivals[next].arrival_us <= t {
            let p = arrivals[next];
            payload[..4].copy_from_slice(&p.id.to_le_bytes());
            jb.push(
                Duration::from_micros(p.arrival_us),
                p.ssrc,
                p.seq,
                p.ts,
                &payload,
            );
            next += 1;
        }
        max_level_ms = max_level_ms.max(jb.level_ms());
        let before = dec.decoded.len();
        kinds.push(jb.pop(Duration::from_micros(t), &mut dec, &mut out));
        for id in &dec.decoded[before..] {
            delays_us.push(t - sent_at[id]);
        }
        t += 20_000;
    }
    Run {
        stats: jb.stats(),
        decoded: dec.decoded,
        delays_us,
        kinds,
        max_level_ms,
        concealed_samples: dec.concealed_samples,
        resets: dec.resets,
    }
}

/// Signal to noise ratio in dB of `test` against `reference`.
pub fn snr_db(reference: &[f64], test: &[f64]) -> f64 {
    let sig: f64 = reference.iter().map(|x| x * x).sum();
    let noise: f64 = reference
        .iter()
        .zip(test)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    10.0 * (sig / noise.max(1e-9)).log10()
}
