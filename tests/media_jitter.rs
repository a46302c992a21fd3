//! Jitter buffer scenarios on scripted arrivals and a fake clock: reordering, random loss,
//! bursts, clock skew, a sender restarting its numbering, duplicates, jitter.

mod media_support;

use media_support::{play, stream, Rng, Sent};
use voxrelay::media::jitter::Playout;

const SECOND: u64 = 1_000_000;

fn is_increasing(ids: &[u32]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}

#[test]
fn clean_network_plays_everything_in_order_at_minimum_depth() {
    let pkts = stream(500, 0.0);
    let run = play(&pkts, 7_000, 11 * SECOND);
    eprintln!(
        "{:?} max {} settled {}",
        run.stats,
        run.max_delay_ms(),
        run.settled_delay_ms()
    );
    assert_eq!(run.decoded, (0..500).collect::<Vec<_>>());
    assert_eq!(run.stats.lost, 0);
    assert_eq!(
        run.stats.concealed_frames, 3,
        "only the fade-out after the last packet"
    );
    assert_eq!(run.stats.target_ms, 20);
    // 30 ms of network plus at most one frame of buffer and one tick of phase
    assert!(run.max_delay_ms() <= 30.0 + 40.0, "{}", run.max_delay_ms());
}

#[test]
fn reordering_is_undone() {
    let mut rng = Rng(7);
    let mut pkts = stream(1500, 0.0);
    // one packet in ten overtaken by its successor (arrives 25 ms later than its turn)
    for p in pkts.iter_mut() {
        if rng.unit() < 0.10 {
            p.arrival_us += 25_000;
        }
    }
    let run = play(&pkts, 3_000, 31 * SECOND);
    eprintln!(
        "{:?} max {} settled {}",
        run.stats,
        run.max_delay_ms(),
        run.settled_delay_ms()
    );
    assert!(is_increasing(&run.decoded));
    // the first few may be late before the depth grows; after that none
    assert!(run.stats.late <= 5, "{:?}", run.stats);
    assert!(run.stats.target_ms >= 40, "{:?}", run.stats);
    assert!(run.decoded.len() >= 1495);
}

fn random_loss(rate: f64, seed: u64) {
    let mut rng = Rng(seed);
    let pkts: Vec<Sent> = stream(3000, 0.0)
        .into_iter()
        .filter(|_| rng.unit() >= rate)
        .collect();
    let dropped = 3000 - pkts.len() as u64;
    let run = play(&pkts, 5_000, 61 * SECOND);
    eprintln!(
        "rate {rate}: sent 3000 dropped {dropped} {:?} max {}",
        run.stats,
        run.max_delay_ms()
    );
    assert!(is_increasing(&run.decoded));
    assert_eq!(run.decoded.len() as u64, 3000 - dropped);
    // every lost packet is counted (one trailing loss may stay unnoticed)
    assert!(
        run.stats.lost + 1 >= dropped && run.stats.lost <= dropped,
        "{:?}",
        run.stats
    );
    // and covered: by concealment, or past 60 ms of consecutive loss by silence
    assert_eq!(run.count(Playout::Audio), run.decoded.len());
    let covered = run.stats.concealed_frames + run.count(Playout::Silence) as u64;
    assert!(covered >= dropped, "{covered} {dropped}");
    assert!(
        run.stats.concealed_frames as f64 >= 0.98 * dropped as f64,
        "{:?}",
        run.stats
    );
    // loss is not jitter: the delay stays at the bottom
    assert!(run.max_delay_ms() <= 30.0 + 60.0, "{}", run.max_delay_ms());
    assert_eq!(run.stats.late, 0);
}

#[test]
fn five_percent_random_loss() {
    random_loss(0.05, 1);
}

#[test]
fn twenty_percent_random_loss() {
    random_loss(0.20, 2);
}

#[test]
fn loss_bursts_conceal_then_fall_silent_then_recover() {
    // 10 packets (200 ms) lost at 100 and 3 (60 ms) at 300
    let pkts: Vec<Sent> = stream(500, 0.0)
        .into_iter()
        .filter(|p| !(100..110).contains(&p.id) && !(300..303).contains(&p.id))
        .collect();
    let run = play(&pkts, 5_000, 11 * SECOND);
    eprintln!("{:?} {:?}", run.stats, &run.kinds[95..125]);
    assert_eq!(run.stats.lost, 13);
    assert!(is_increasing(&run.decoded));
    assert_eq!(run.decoded.len(), 487);
    // the long burst: 3 frames of concealment (60 ms), then silence, then audio again
    assert!(run.count(Playout::Silence) >= 7 + 2);
    assert!(run.max_delay_ms() <= 30.0 + 60.0, "{}", run.max_delay_ms());
}

fn skew(skew: f64) -> media_support::Run {
    // two minutes of a sender whose clock runs fast or slow, with a little jitter
    let mut rng = Rng(11);
    let mut pkts = stream(6000, skew);
    for p in pkts.iter_mut() {
        p.arrival_us += (rng.unit() * 4_000.0) as u64;
    }
    let run = play(&pkts, 9_000, 121 * SECOND);
    eprintln!(
        "skew {skew}: {:?} max {} settled {}",
        run.stats,
        run.max_delay_ms(),
        run.settled_delay_ms()
    );
    assert!(is_increasing(&run.decoded));
    // the delay never runs away, either way
    assert!(
        run.max_delay_ms() <= 30.0 + 80.0 + 20.0,
        "{}",
        run.max_delay_ms()
    );
    assert!(
        run.settled_delay_ms() <= 30.0 + 60.0,
        "{}",
        run.settled_delay_ms()
    );
    run
}

#[test]
fn sender_clock_half_a_percent_fast() {
    let run = skew(0.005);
    // 0.5% of 120 s is 600 ms: about 30 frames have to go, by crossfading
    assert!((20..=40).contains(&run.stats.compressed), "{:?}", run.stats);
    assert_eq!(run.stats.lost, 0);
    assert_eq!(run.stats.dropped, 0);
}

#[test]
fn sender_clock_half_a_percent_slow() {
    let run = skew(-0.005);
    // 600 ms of audio missing over two minutes: about 30 frames concealed, nothing lost
    assert_eq!(run.stats.lost, 0);
    assert_eq!(run.decoded.len(), 6000);
    assert!(run.stats.concealed_frames <= 45, "{:?}", run.stats);
}

#[test]
fn sequence_restart_same_ssrc() {
    let mut pkts = stream(1000, 0.0);
    for p in pkts.iter_mut().skip(400) {
        p.seq = p.seq.wrapping_add(20_000);
        p.ts = p.ts.wrapping_add(123_456_789);
    }
    let run = play(&pkts, 5_000, 21 * SECOND);
    eprintln!("{:?}", run.stats);
    assert_eq!(run.stats.restarts, 1);
    assert_eq!(
        run.decoded,
        (0..1000).collect::<Vec<_>>(),
        "nothing lost across the restart"
    );
    assert_eq!(
        run.resets, 1,
        "the decoder starts afresh for the new stream"
    );
    assert!(
        run.stats.jitter_ms < 1.0,
        "the jump is not jitter: {:?}",
        run.stats
    );
}

#[test]
fn sequence_restart_new_ssrc_with_reordering_across() {
    let mut pkts = stream(1000, 0.0);
    for p in pkts.iter_mut().skip(400) {
        p.ssrc = 0xBEEF;
        p.seq = p.seq.wrapping_sub(30_000);
    }
    // the old stream's last packet arrives after the new stream's first two
    pkts[399].arrival_us += 45_000;
    let run = play(&pkts, 5_000, 21 * SECOND);
    eprintln!("{:?}", run.stats);
    assert_eq!(run.stats.restarts, 1, "the straggler does not switch back");
    assert_eq!(run.stats.late, 1);
    assert!(is_increasing(&run.decoded));
    assert_eq!(run.decoded.len(), 999);
}

#[test]
fn a_stray_packet_is_not_a_restart() {
    let mut pkts = stream(300, 0.0);
    pkts[150].seq = pkts[150].seq.wrapping_add(30_000);
    let run = play(&pkts, 5_000, 7 * SECOND);
    assert_eq!(run.stats.restarts, 0);
    assert_eq!(run.stats.lost, 1);
    assert_eq!(run.decoded.len(), 299);
}

#[test]
fn duplicates_are_dropped() {
    let mut pkts = stream(500, 0.0);
    let copies: Vec<Sent> = pkts
        .iter()
        .map(|p| Sent {
            arrival_us: p.arrival_us + 45_000,
            ..*p
        })
        .collect();
    pkts.extend(copies);
    let run = play(&pkts, 5_000, 11 * SECOND);
    assert_eq!(run.decoded, (0..500).collect::<Vec<_>>());
    assert_eq!(run.stats.duplicates + run.stats.late, 500);
    assert!(run.stats.duplicates >= 490, "{:?}", run.stats);
}

#[test]
fn depth_follows_measured_jitter() {
    // uniform 0..50 ms of extra delay on every packet
    let mut rng = Rng(3);
    let mut pkts = stream(3000, 0.0);
    for p in pkts.iter_mut() {
        p.arrival_us += (rng.unit() * 50_000.0) as u64;
    }
    let run = play(&pkts, 5_000, 61 * SECOND);
    eprintln!(
        "{:?} max {} settled {}",
        run.stats,
        run.max_delay_ms(),
        run.settled_delay_ms()
    );
    // RFC 3550 jitter of uniform 0..X is about X/3
    assert!(
        (12.0..=22.0).contains(&run.stats.jitter_ms),
        "{:?}",
        run.stats
    );
    assert!((50..=80).contains(&run.stats.target_ms), "{:?}", run.stats);
    // after adapting, few packets miss their turn
    let missed = run.stats.lost as f64 / 3000.0;
    assert!(missed < 0.02, "{:?}", run.stats);
    assert!(
        run.settled_delay_ms() <= 30.0 + 50.0 + 60.0,
        "{}",
        run.settled_delay_ms()
    );
}

#[test]
fn jitter_above_the_cap_keeps_latency_bounded() {
    let mut rng = Rng(5);
    let mut pkts = stream(3000, 0.0);
    for p in pkts.iter_mut() {
        p.arrival_us += (rng.unit() * 200_000.0) as u64;
    }
    let run = play(&pkts, 5_000, 61 * SECOND);
    eprintln!(
        "{:?} max {} settled {}",
        run.stats,
        run.max_delay_ms(),
        run.settled_delay_ms()
    );
    assert_eq!(run.stats.target_ms, 80);
    assert!(is_increasing(&run.decoded));
    assert!(
        run.settled_delay_ms() <= 30.0 + 200.0 + 20.0,
        "{}",
        run.settled_delay_ms()
    );
}

#[test]
fn stall_then_burst_is_trimmed_to_target() {
    let mut pkts = stream(600, 0.0);
    // a 400 ms stall: packets 200..220 all arrive together at its end
    for p in pkts.iter_mut().filter(|p| (200..220).contains(&p.id)) {
        p.arrival_us = pkts_end(200) + 400_000;
    }
    let run = play(&pkts, 5_000, 13 * SECOND);
    eprintln!(
        "{:?} max {} settled {}",
        run.stats,
        run.max_delay_ms(),
        run.settled_delay_ms()
    );
    assert!(is_increasing(&run.decoded));
    assert!(run.stats.dropped > 10, "{:?}", run.stats);
    assert!(
        run.settled_delay_ms() <= 30.0 + 40.0,
        "{}",
        run.settled_delay_ms()
    );
}

fn pkts_end(id: u32) -> u64 {
    id as u64 * 20_000 + 30_000
}

// ---------------------------------------------------------------------------------------
// The same buffer with the real decoders: concealment must sound continuous.

use std::time::Duration;
use voxrelay::media::codec::{Codec, Decoder};
use voxrelay::media::frame::{Frame, FRAME_SAMPLES};
use voxrelay::media::g711::Law;
use voxrelay::media::jitter::{JitterBuffer, JitterConfig, JitterStats};
use voxrelay::media::opus_codec::{OpusConfig, OpusEncoder, MAX_OPUS_PACKET};

/// Packetises `signal` for `codec` (20 ms per packet).
fn packetise(signal: &[i16], codec: Codec) -> Vec<Vec<u8>> {
    let mut enc = OpusEncoder::new(&OpusConfig {
        expected_loss_pct: 10,
        ..OpusConfig::default()
    })
    .unwrap();
    signal
        .chunks_exact(FRAME_SAMPLES)
        .map(|f| match codec.law() {
            Some(law) => {
                let mut b = vec![0u8; FRAME_SAMPLES];
                law.encode(f, &mut b);
                b
            }
            None => {
                let mut b = vec![0u8; MAX_OPUS_PACKET];
                let n = enc.encode(f.try_into().unwrap(), &mut b).unwrap();
                b.truncate(n);
                b
            }
        })
        .collect()
}

/// Sends `packets` over a network with `loss`, uniform jitter up to `jitter_ms` and a
/// sender clock `skew`; plays them out; returns the output and the buffer's counters.
fn through_buffer(
    codec: Codec,
    packets: &[Vec<u8>],
    loss: f64,
    jitter_ms: f64,
    skew: f64,
    min_depth_ms: u32,
) -> (Vec<i16>, JitterStats) {
    let mut rng = Rng(99);
    let ticks = codec.clock_rate() / 50;
    let mut arrivals: Vec<(u64, usize)> = Vec::new();
    for i in 0..packets.len() {
        let (lost, wobble) = (rng.unit() < loss, rng.unit());
        if !lost {
            arrivals.push((
                (i as f64 * 20_000.0 / (1.0 + skew) + 10_000.0 + wobble * jitter_ms * 1000.0)
                    as u64,
                i,
            ));
        }
    }
    arrivals.sort();
    let mut jb = JitterBuffer::new(JitterConfig {
        min_depth_ms,
        ..JitterConfig::new(codec)
    });
    let mut dec = Decoder::new(codec).unwrap();
    let mut out = Vec::new();
    let mut frame: Frame = [0; FRAME_SAMPLES];
    let mut next = 0;
    let end = packets.len() as u64 * 20_000 + 200_000;
    let mut t = 4_000;
    while t < end {
        while next < arrivals.len() && arrivals[next].0 <= t {
            let (at, i) = arrivals[next];
            jb.push(
                Duration::from_micros(at),
                7,
                i as u16,
                (i as u32).wrapping_mul(ticks),
                &packets[i],
            );
            next += 1;
        }
        jb.pop(Duration::from_micros(t), &mut dec, &mut frame);
        out.extend_from_slice(&frame);
        t += 20_000;
    }
    (out, jb.stats())
}

fn voiced(n: usize) -> Vec<i16> {
    let mut ph = 0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let f0 = 120.0 + 30.0 * (t * std::f64::consts::TAU * 1.3).sin();
            ph += std::f64::consts::TAU * f0 / 8000.0;
            let env = (0.6 - 0.4 * (t * std::f64::consts::TAU * 3.0).cos()).powi(2);
            let s: f64 = (1..20).map(|h| (ph * h as f64).sin() / h as f64).sum();
            (s * env * 6000.0) as i16
        })
        .collect()
}

fn tone(n: usize, hz: f64) -> Vec<i16> {
    (0..n)
        .map(|i| ((i as f64 * hz * std::f64::consts::TAU / 8000.0).sin() * 10_000.0) as i16)
        .collect()
}

/// The largest step at a frame border of `y`, and the largest anywhere.
fn steps(y: &[i16]) -> (i32, i32) {
    let step = |n: usize| (y[n] as i32 - y[n - 1] as i32).abs();
    let border = (FRAME_SAMPLES..y.len())
        .step_by(FRAME_SAMPLES)
        .map(step)
        .max()
        .unwrap();
    (border, (1..y.len()).map(step).max().unwrap())
}

#[test]
fn g711_concealment_and_depth_changes_make_no_clicks() {
    for (name, signal) in [
        ("440 Hz", tone(8000 * 20, 440.0)),
        ("voiced", voiced(8000 * 20)),
    ] {
        for (law, codec) in [(Law::Mu, Codec::Pcmu), (Law::A, Codec::Pcma)] {
            let pkts = packetise(&signal, codec);
            let mut clean = vec![0i16; signal.len()];
            law.decode(&pkts.concat(), &mut clean);
            let (_, own) = steps(&clean);
            // 5% loss, 15 ms jitter, a fast sender: concealment, waits and crossfades all happen
            let (y, stats) = through_buffer(codec, &pkts, 0.05, 15.0, 0.005, 20);
            let (border, anywhere) = steps(&y);
            eprintln!("{name} {law:?}: steps at borders {border}, anywhere {anywhere}, the signal's own {own}; {stats:?}");
            assert!(
                stats.lost > 20 && stats.concealed_frames > 20 && stats.compressed > 0,
                "{stats:?}"
            );
            assert!(
                border <= own,
                "{name} {law:?}: click at a frame border ({border} > {own})"
            );
            if name == "440 Hz" {
                // a pure tone shows any seam: concealment joins, crossfades, fades
                assert!(
                    anywhere <= own,
                    "{name} {law:?}: a step of {anywhere} > {own}"
                );
            }
        }
    }
}

#[test]
fn opus_recovers_lost_packets_from_fec() {
    let signal = voiced(8000 * 20);
    let pkts = packetise(&signal, Codec::Opus);
    // 10% loss with 40 ms of depth, so the next packet is usually there when one is missing
    let (lossy, stats) = through_buffer(Codec::Opus, &pkts, 0.10, 10.0, 0.0, 40);
    eprintln!("{stats:?}");
    assert!(stats.lost > 50);
    assert!(
        stats.recovered * 2 > stats.lost,
        "most losses rebuilt from FEC: {stats:?}"
    );
    let (border, _) = steps(&lossy);
    let (clean, _) = through_buffer(Codec::Opus, &pkts, 0.0, 0.0, 0.0, 40);
    let (_, own) = steps(&clean);
    assert!(border <= own, "click at a frame border ({border} > {own})");
    // (that an FEC rebuild is closer to the lost frame than concealment is tested in
    // opus_codec's unit tests, where the frames line up)
}

/// Packets of `ptime_ms` (10, 30, 40 ms G.711) played out in 20 ms frames.
fn other_ptime(ptime_ms: u64) -> JitterStats {
    let samples = (ptime_ms * 8) as usize;
    let mut jb = JitterBuffer::new(JitterConfig::new(Codec::Pcmu));
    let mut dec = media_support::Tracer::default();
    let mut out: Frame = [0; FRAME_SAMPLES];
    let mut payload = vec![0xFFu8; samples];
    let n = 60_000 / ptime_ms; // one minute
    let mut rng = Rng(17);
    let mut arrivals: Vec<(u64, u32)> = (0..n as u32)
        .map(|k| {
            (
                k as u64 * ptime_ms * 1000 + 20_000 + (rng.unit() * 3000.0) as u64,
                k,
            )
        })
        .collect();
    arrivals.sort();
    let mut next = 0;
    for tick in 0..3100u64 {
        let t = tick * 20_000 + 1_000;
        while next < arrivals.len() && arrivals[next].0 <= t {
            let (at, k) = arrivals[next];
            payload[..4].copy_from_slice(&k.to_le_bytes());
            jb.push(
                Duration::from_micros(at),
                1,
                k as u16,
                k * samples as u32,
                &payload,
            );
            next += 1;
        }
        jb.pop(Duration::from_micros(t), &mut dec, &mut out);
    }
    assert!(dec.decoded.windows(2).all(|w| w[0] < w[1]));
    jb.stats()
}

#[test]
fn packets_of_10_30_and_40_ms_play_out_in_20_ms_frames() {
    for ptime in [10, 30, 40] {
        let s = other_ptime(ptime);
        eprintln!("{ptime} ms: {s:?}");
        let n = 60_000 / ptime;
        assert_eq!(s.played + s.dropped, n, "{ptime} ms: {s:?}");
        assert_eq!(s.lost, 0, "{ptime} ms: {s:?}");
        // a few concealments while the depth settles, plus the fade-out at the end
        assert!(s.concealed_frames <= 10, "{ptime} ms: {s:?}");
        assert!(s.compressed <= 5, "{ptime} ms: {s:?}");
    }
}
