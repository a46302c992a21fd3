//! The pacer toward the caller, driven like the call task drives it: model audio arrives in
//! bursts faster than real time, one frame leaves every 20 ms, and a barge-in flushes.

use std::time::Duration;

use voxrelay::media::frame::{Framer, FRAME_SAMPLES};
use voxrelay::media::pacer::{Pacer, CAPACITY};

/// A response of `frames` frames, frame k holding the value k in every sample.
fn response(frames: usize) -> Vec<i16> {
    (0..frames * FRAME_SAMPLES)
        .map(|i| (i / FRAME_SAMPLES) as i16)
        .collect()
}

struct Call {
    pacer: Pacer<[i16; FRAME_SAMPLES]>,
    /// Frames of the response not yet in the pacer (the task's own queue upstream).
    upstream: std::collections::VecDeque<[i16; FRAME_SAMPLES]>,
    /// (time ms, first sample of the frame, marker) for every frame sent to the phone.
    sent: Vec<(u64, i16, bool)>,
}

impl Call {
    fn new() -> Self {
        Self {
            pacer: Pacer::new([0; FRAME_SAMPLES]),
            upstream: Default::default(),
            sent: Vec::new(),
        }
    }
    /// Model audio arrives: chunks of odd sizes, all at once (WebSocket deltas).
    fn deliver(&mut self, pcm: &[i16]) {
        let mut framer = Framer::new();
        for chunk in pcm.chunks(1234) {
            framer.push(chunk, |f| self.upstream.push_back(*f));
        }
        if let Some(last) = framer.finish() {
            self.upstream.push_back(last);
        }
    }
    /// One millisecond of the task's loop.
    fn tick(&mut self, ms: u64) {
        while !self.pacer.is_full() {
            let Some(f) = self.upstream.pop_front() else {
                break;
            };
            self.pacer.push(f).unwrap();
        }
        if let Some(p) = self.pacer.poll(Duration::from_millis(ms)) {
            self.sent.push((ms, p.frame[0], p.marker));
        }
    }
    /// Barge-in: drop what is held and what is queued; returns the ms the pacer dropped.
    fn barge_in(&mut self) -> u32 {
        self.upstream.clear();
        self.pacer.flush()
    }
}

#[test]
fn a_burst_is_played_at_exactly_one_frame_per_20_ms() {
    let mut call = Call::new();
    call.deliver(&response(150)); // 3 s of audio, delivered at once
    for ms in 0..4000 {
        call.tick(ms);
        assert!(call.pacer.held_ms() <= (CAPACITY * 20) as u32);
    }
    assert_eq!(call.sent.len(), 150);
    for (k, (ms, first, marker)) in call.sent.iter().enumerate() {
        assert_eq!(*ms, k as u64 * 20, "frame {k}");
        assert_eq!(*first, k as i16, "in order");
        assert_eq!(*marker, k == 0);
    }
}

#[test]
fn barge_in_stops_the_agent_within_one_frame_and_reports_what_it_cut() {
    let mut call = Call::new();
    call.deliver(&response(150));
    let mut dropped = 0;
    for ms in 0..3000 {
        if ms == 1234 {
            dropped = call.barge_in();
        }
        call.tick(ms);
    }
    // before 1234 ms: frames at 0, 20, ..., 1220 (62 frames); after it nothing more
    let last = call.sent.last().unwrap();
    assert_eq!(call.sent.len(), 62);
    assert!(
        1234 - last.0 <= 20,
        "the last frame left at most one frame before the barge-in"
    );
    // the pacer held the next 60 ms when the caller spoke
    assert_eq!(dropped, 60);
    assert_eq!(call.pacer.stats().flushed_ms, 60);

    // the model's next answer starts a new run, marked, on its own schedule
    call.deliver(&response(10));
    for ms in 3000..3300 {
        call.tick(ms);
    }
    assert_eq!(call.sent.len(), 72);
    let (ms, first, marker) = call.sent[62];
    assert_eq!((ms, first, marker), (3000, 0, true));
}

#[test]
fn a_slow_producer_gets_pauses_not_bursts() {
    let mut call = Call::new();
    // the model produces 20 ms of audio every 25 ms (slower than real time)
    let mut next = 0i16;
    for ms in 0..2000u64 {
        if ms % 25 == 0 {
            call.upstream.push_back([next; FRAME_SAMPLES]);
            next += 1;
        }
        call.tick(ms);
    }
    let gaps: Vec<u64> = call.sent.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(
        gaps.iter().all(|&g| g >= 20),
        "never two frames closer than 20 ms: {gaps:?}"
    );
    assert!(call.sent.iter().map(|s| s.1).eq(0..call.sent.len() as i16));
}
