//! The per-packet path allocates nothing: after set-up, a call's media work for thousands
//! of frames (jitter buffer with loss and reordering, G.711, Opus both ways with FEC and
//! concealment, the pacer with flushes, DTMF, recording, SRTP both ways, the per-frame metrics
//! and their additions to the shared series) makes no heap allocation. Counted
//! with a global allocator wrapper, in its own test binary so nothing else runs alongside.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use voxrelay::media::codec::{Codec, Decoder};
use voxrelay::media::dtmf::{dtmf_packets, DtmfReceiver};
use voxrelay::media::frame::{Frame, FRAME_SAMPLES};
use voxrelay::media::g711::Law;
use voxrelay::media::jitter::{JitterBuffer, JitterConfig};
use voxrelay::media::opus_codec::{
    OpusConfig, OpusDecoder, OpusEncoder, MAX_OPUS_PACKET, OPUS_TICKS_PER_FRAME,
};
use voxrelay::media::pacer::Pacer;
use voxrelay::media::recording::Recorder;
use voxrelay::media::rtp::{Packetizer, HEADER_LEN};
use voxrelay::media::srtp::{CryptoSuite, MasterKey, SrtpContext, SrtpKeys};
use voxrelay::metrics::{CallMetrics, Metrics};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_media_path_does_not_allocate() {
    // set-up: everything a call owns, created once
    let dir = tempfile::tempdir().unwrap();
    let mut rec = Recorder::create(dir.path().join("call.wav")).unwrap();
    let mut jb_in = JitterBuffer::new(JitterConfig::new(Codec::Pcmu));
    let mut dec_in = Decoder::new(Codec::Pcmu).unwrap();
    let mut enc = OpusEncoder::new(&OpusConfig::default()).unwrap();
    let mut jb_out = JitterBuffer::new(JitterConfig::new(Codec::Opus));
    let mut dec_out = Decoder::new(Codec::Opus).unwrap();
    let mut far_enc = OpusEncoder::new(&OpusConfig::default()).unwrap();
    let mut far_dec = OpusDecoder::new().unwrap();
    let mut pacer = Pacer::new([0u8; FRAME_SAMPLES]);
    let mut dtmf = DtmfReceiver::new();
    let key: Vec<_> = dtmf_packets('5', 100, 10).unwrap().collect();

    let mut pcm: Frame = [0; FRAME_SAMPLES];
    let mut g711 = [0u8; FRAME_SAMPLES];
    let mut opus = [0u8; MAX_OPUS_PACKET];
    let mut far = [0u8; MAX_OPUS_PACKET];
    let mut scratch: Frame = [0; FRAME_SAMPLES];
    let relay_keys = SrtpKeys {
        suite: CryptoSuite::AesCm128HmacSha1_80,
        local: MasterKey::random(),
        remote: MasterKey::random(),
    };
    let caller_keys = SrtpKeys {
        suite: relay_keys.suite,
        local: relay_keys.remote.clone(),
        remote: relay_keys.local.clone(),
    };
    let mut srtp_relay = SrtpContext::new(&relay_keys).unwrap();
    let mut srtp_caller = SrtpContext::new(&caller_keys).unwrap();
    let mut tx = Packetizer::new(7, 65000, 0);
    let mut plain = [0u8; HEADER_LEN + FRAME_SAMPLES];
    let mut sealed = [0u8; 1500];
    let rtcp = [0x80u8, 201, 0, 1, 0, 0, 0, 7];
    let shared = std::sync::Arc::new(Metrics::new());
    let mut figures = CallMetrics::new(shared.clone());

    let mut body = |k: u32| {
        let t = Duration::from_millis(k as u64 * 20);
        // the phone sends a voiced-ish frame, or silence while the caller listens (the
        // encoder then replays its settled silence); every 17th is lost, every 23rd late
        for (i, s) in pcm.iter_mut().enumerate() {
            *s = (((k as usize * FRAME_SAMPLES + i) as f32 * 0.07).sin() * 8000.0) as i16;
        }
        if k % 400 >= 250 {
            pcm.fill(0);
        }
        Law::Mu.encode(&pcm, &mut g711);
        if k % 17 != 0 {
            let late = if k % 23 == 0 {
                Duration::from_millis(25)
            } else {
                Duration::ZERO
            };
            jb_in.push(t + late, 0xAB, k as u16, k * 160, &g711);
        }
        if k % 200 == 50 {
            for p in &key {
                let _ = dtmf.push(t, 4242 + k, &p.payload);
            }
        }
        let _ = dtmf.poll(t);
        // caller → OpenAI
        jb_in.pop(t + Duration::from_millis(1), &mut dec_in, &mut scratch);
        rec.caller(t, &scratch).unwrap();
        let n = enc.encode(&scratch, &mut opus).unwrap();
        // the far end answers (its packet also 5% lost) → jitter → 8 kHz → G.711 → pacer
        far_dec.decode(&opus[..n], &mut pcm).unwrap();
        let m = far_enc.encode(&pcm, &mut far).unwrap();
        if k % 20 != 7 {
            jb_out.push(
                t,
                0xCD,
                k as u16,
                k.wrapping_mul(OPUS_TICKS_PER_FRAME),
                &far[..m],
            );
        }
        jb_out.pop(t + Duration::from_millis(1), &mut dec_out, &mut pcm);
        Law::Mu.encode(&pcm, &mut g711);
        let _ = pacer.push(g711);
        if let Some(p) = pacer.poll(t) {
            Law::Mu.decode(&p.frame, &mut pcm);
            rec.agent(t, &pcm).unwrap();
        }
        if k % 300 == 299 {
            pacer.flush();
        }
        // SRTP: the relay's packet out and the caller's in (a forged one now and then)
        let n = tx.write(0, &g711, 160, &mut plain);
        let m = srtp_relay.protect_rtp(&plain[..n], &mut sealed).unwrap();
        srtp_caller.unprotect_rtp(&mut sealed[..m]).unwrap();
        let m = srtp_caller.protect_rtp(&plain[..n], &mut sealed).unwrap();
        if k % 50 == 0 {
            sealed[m - 1] ^= 1;
            assert!(srtp_relay.unprotect_rtp(&mut sealed[..m]).is_err());
        } else {
            srtp_relay.unprotect_rtp(&mut sealed[..m]).unwrap();
        }
        // the call's figures: a tick, each way's frame time and hold (added every few ticks)
        figures.frame("to_agent", 0.000_04);
        figures.frame("to_caller", 0.000_01);
        figures.added_latency("to_agent", 0.035);
        figures.added_latency("to_caller", 0.015);
        figures.tick(Duration::from_millis(u64::from(k % 40)));
        if k % 250 == 0 {
            let m = srtp_relay.protect_rtcp(&rtcp, &mut sealed).unwrap();
            srtp_caller.unprotect_rtcp(&mut sealed[..m]).unwrap();
        }
    };

    // warm up (first frames, first drains of the recorder), then count
    for k in 0..500 {
        body(k);
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for k in 500..3500 {
        body(k);
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(
        allocs, 0,
        "{allocs} heap allocations in 3000 frames of steady state"
    );
    assert!(jb_in.stats().lost > 100 && jb_out.stats().lost > 100);
    assert!(enc.silent_frames_replayed() > 500, "the replay path ran");
    // the figures reached the shared series meanwhile
    assert!(shared.media_ticks.get() >= 3490 && shared.media_ticks_late.get() > 1000);
    rec.finish().unwrap();
}
