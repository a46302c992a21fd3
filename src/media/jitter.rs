//! The adaptive jitter buffer: RTP packets in, in any order and at any time; one 20 ms frame
//! of 8 kHz PCM out per playout tick.
//!
//! It is a plain value driven by the call's task: [`JitterBuffer::push`] for each packet
//! (with the time it arrived) and [`JitterBuffer::pop`] once per 20 ms tick. No IO, no
//! clock of its own (the time is passed in, so tests run on a fake clock), no allocation
//! after [`JitterBuffer::new`].
//!
//! How it works:
//! - Packets are ordered by extended sequence number in a ring of [`SLOTS`] slots, so
//!   reordering up to the buffer's depth is undone; a copy of a packet already held or
//!   played is a duplicate, a packet whose turn has passed is late. Both are dropped and
//!   counted.
//! - Depth: a talkspurt starts playing once the buffer holds the *target* depth, which is
//!   20 ms plus three times the RFC 3550 interarrival jitter, kept within 20..=80 ms. During
//!   a talkspurt the depth follows the network: a tick that finds nothing to play conceals
//!   one frame and so adds 20 ms (delay grows when packets come late), and when the buffer
//!   never fell below two frames for a whole second, one frame is surplus and is removed by
//!   crossfading two frames into one (delay shrinks without a click). That same pair of
//!   moves absorbs a sender clock running up to a few tenths of a percent fast or slow.
//!   Past 80 ms plus one frame (a stalled network delivering a burst) the oldest audio is
//!   dropped at once.
//! - Loss: a packet missing when its turn comes while later ones are held is lost. With
//!   Opus and a next packet carrying FEC, the frame is rebuilt from that copy; otherwise
//!   the decoder conceals (Opus PLC, or G.711's fading pitch repeat). If the buffer is
//!   below its target and no FEC can rebuild the packet, the tick first waits one frame
//!   (concealing) in case it was only reordered. After 60 ms with nothing at all to play,
//!   the talkspurt is over: it fades to silence and buffers again. Packets of any duration
//!   (10, 30, 40 ms G.711; any Opus frame size) are decoded whole and played out in 20 ms
//!   frames.
//! - A sender restarting its sequence numbers (a new SSRC at once, or the same SSRC after
//!   two consecutive packets far from the old numbering, as RFC 3550 A.1 does) is spliced
//!   on after the old stream, so what the buffer holds still plays.

use std::time::Duration;

use super::codec::{Codec, PayloadDecoder};
use super::frame::{Frame, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE};
use super::opus_codec::MAX_PACKET_SAMPLES;
use super::rtp::InterarrivalJitter;

/// Packets the buffer can hold: 640 ms of 20 ms packets, far beyond the 80 ms depth, so a
/// burst after a stall or deep reordering still fits.
pub const SLOTS: usize = 32;
/// A jump back further than this is not reordering (RFC 3550 A.1 `MAX_MISORDER`).
const MAX_MISORDER: i32 = 100;
/// A jump forward further than this is not loss (RFC 3550 A.1 `MAX_DROPOUT`).
const MAX_DROPOUT: i32 = 3000;
/// Playout ticks per depth review (1 s).
const WINDOW_POPS: u32 = 50;
/// Concealment with nothing held, before the talkspurt is taken to have ended.
const MAX_UNDERRUN_SAMPLES: usize = 3 * FRAME_SAMPLES;
/// Decoded audio waiting to be played: one largest Opus packet plus two frames.
const STAGE: usize = MAX_PACKET_SAMPLES + 2 * FRAME_SAMPLES;
/// Samples over which a discontinuity (dropped audio, a new stream) is ramped away.
const DECLICK: usize = 20;
const EMPTY: u64 = u64::MAX;
/// First extended sequence number: high, so packets reordered before the first one stay
/// positive.
const SEQ_ORIGIN: u64 = 1 << 32;
const TS_ORIGIN: u64 = 1 << 40;

/// Jitter buffer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// The payload format of the stream.
    pub codec: Codec,
    /// The least depth (ms); one frame.
    pub min_depth_ms: u32,
    /// The greatest depth (ms); beyond it audio is dropped rather than delayed.
    pub max_depth_ms: u32,
}

impl JitterConfig {
    /// The defaults for `codec`: depth 20..=80 ms.
    pub const fn new(codec: Codec) -> Self {
        Self {
            codec,
            min_depth_ms: 20,
            max_depth_ms: 80,
        }
    }
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Stored for playout.
    Accepted,
    /// A copy of a packet already held or played: dropped.
    Duplicate,
    /// Its turn had passed: dropped.
    Late,
    /// Far from the current numbering: held aside until the next packet confirms a restart.
    Probation,
    /// The first packets of a restarted stream (new SSRC or confirmed renumbering).
    Restarted,
    /// Not a valid payload for the codec, or too large: dropped.
    Invalid,
}

/// What [`JitterBuffer::pop`] put in the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout {
    /// Received audio.
    Audio,
    /// Partly rebuilt from Opus FEC.
    Recovered,
    /// Partly or wholly concealment.
    Concealed,
    /// Silence: nothing received yet, or between talkspurts.
    Silence,
}

/// Counters and gauges, for the call's media stats and RTCP.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Packets pushed.
    pub received: u64,
    /// Packets decoded and played.
    pub played: u64,
    /// Packets that never arrived in time to play (never arrived, or arrived late).
    pub lost: u64,
    /// Packets that arrived after their turn.
    pub late: u64,
    /// Copies of packets already held or played.
    pub duplicates: u64,
    /// Lost packets rebuilt from Opus FEC.
    pub recovered: u64,
    /// Frames that were partly or wholly concealment.
    pub concealed_frames: u64,
    /// Ticks that found nothing at all held (each adds a frame of delay).
    pub underruns: u64,
    /// Frames removed to shrink the delay (two crossfaded into one).
    pub compressed: u64,
    /// Packets dropped unplayed because the buffer was over its maximum depth.
    pub dropped: u64,
    /// Invalid or oversized payloads.
    pub invalid: u64,
    /// Sender restarts (SSRC change or renumbering).
    pub restarts: u64,
    /// RFC 3550 interarrival jitter, in ms.
    pub jitter_ms: f32,
    /// The depth a talkspurt starts at, in ms.
    pub target_ms: u32,
    /// Audio held right now (packets plus decoded), in ms.
    pub level_ms: u32,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    ext: u64,
    arrival_us: u64,
    len: u16,
    samples: u16,
}

const EMPTY_SLOT: Slot = Slot {
    ext: EMPTY,
    arrival_us: 0,
    len: 0,
    samples: 0,
};

#[derive(Debug, Clone, Copy)]
struct Probe {
    ssrc: u32,
    seq: u16,
    ts: u32,
    len: usize,
    samples: usize,
    arrival_us: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Buffering,
    Playing,
}

/// The adaptive jitter buffer. See the module docs.
#[derive(Debug)]
pub struct JitterBuffer {
    codec: Codec,
    min_samples: usize,
    max_samples: usize,
    ticks_per_sample: u64,

    slots: [Slot; SLOTS],
    data: Box<[u8]>,
    max_payload: usize,
    held: usize,
    held_samples: usize,

    // sequence and timestamp unwrapping
    started: bool,
    ssrc: u32,
    prev_ssrc: Option<u32>,
    max_raw_seq: u16,
    max_ext: u64,
    max_raw_ts: u32,
    max_ext_ts: u64,
    probe: Option<Probe>,
    probe_data: Box<[u8]>,

    // playout
    state: State,
    next: Option<u64>,
    recv_mask: u64,
    reset_at: Option<u64>,
    stage: [i16; STAGE],
    stage_len: usize,
    last_samples: usize,
    credit: usize,
    underrun_run: usize,
    last_out: i16,
    splice: bool,

    // adaptation
    jitter: InterarrivalJitter,
    target_samples: usize,
    compress_due: bool,
    win_min: usize,
    win_pops: u32,

    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer. Allocates its packet storage once, here.
    pub fn new(config: JitterConfig) -> Self {
        let ms = |v: u32| v as usize * SAMPLE_RATE as usize / 1000;
        let min_samples = ms(config.min_depth_ms.max(FRAME_MS));
        let max_samples = ms(config.max_depth_ms).max(min_samples);
        let max_payload = config.codec.max_payload();
        Self {
            codec: config.codec,
            min_samples,
            max_samples,
            ticks_per_sample: config.codec.ticks_per_sample() as u64,
            slots: [EMPTY_SLOT; SLOTS],
            data: vec![0; SLOTS * max_payload].into_boxed_slice(),
            max_payload,
            held: 0,
            held_samples: 0,
            started: false,
            ssrc: 0,
            prev_ssrc: None,
            max_raw_seq: 0,
            max_ext: SEQ_ORIGIN,
            max_raw_ts: 0,
            max_ext_ts: TS_ORIGIN,
            probe: None,
            probe_data: vec![0; max_payload].into_boxed_slice(),
            state: State::Buffering,
            next: None,
            recv_mask: 0,
            reset_at: None,
            stage: [0; STAGE],
            stage_len: 0,
            last_samples: FRAME_SAMPLES,
            credit: 0,
            underrun_run: 0,
            last_out: 0,
            splice: false,
            jitter: InterarrivalJitter::default(),
            target_samples: min_samples,
            compress_due: false,
            win_min: usize::MAX,
            win_pops: 0,
            stats: JitterStats {
                target_ms: config.min_depth_ms.max(FRAME_MS),
                ..JitterStats::default()
            },
        }
    }

    /// The counters and gauges now.
    pub fn stats(&self) -> JitterStats {
        let mut s = self.stats;
        s.jitter_ms = self.jitter_ticks() as f32 * 1000.0 / self.codec.clock_rate() as f32;
        s.target_ms = to_ms(self.target_samples);
        s.level_ms = to_ms(self.level());
        s
    }

    /// RFC 3550 interarrival jitter in RTP timestamp units (for RTCP receiver reports).
    pub fn jitter_ticks(&self) -> u32 {
        self.jitter.ticks()
    }

    /// Audio held (packets not yet decoded plus decoded samples not yet played), in ms.
    pub fn level_ms(&self) -> u32 {
        to_ms(self.level())
    }

    /// The codec this buffer carries.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    fn level(&self) -> usize {
        self.held_samples + self.stage_len
    }

    // -----------------------------------------------------------------------------------
    // Arrival

    /// Takes one RTP packet's fields, with `now` the time it arrived (since any fixed
    /// origin, the same one `pop` uses). Copies the payload; keeps no reference.
    pub fn push(&mut self, now: Duration, ssrc: u32, seq: u16, ts: u32, payload: &[u8]) -> Push {
        self.stats.received += 1;
        let arrival_us = now.as_micros() as u64;
        let samples = match self.codec.payload_samples(payload) {
            Some(n) if payload.len() <= self.max_payload => n,
            _ => {
                self.stats.invalid += 1;
                return Push::Invalid;
            }
        };

        if !self.started {
            self.started = true;
            self.ssrc = ssrc;
            self.max_raw_seq = seq;
            self.max_raw_ts = ts;
        } else if ssrc != self.ssrc {
            if self.prev_ssrc == Some(ssrc) {
                // a straggler of the stream that was replaced
                self.stats.late += 1;
                return Push::Late;
            }
            self.prev_ssrc = Some(self.ssrc);
            self.restart(ssrc, seq, ts);
            self.insert_unwrapped(seq, ts, payload, samples, arrival_us);
            return Push::Restarted;
        } else {
            let d = seq.wrapping_sub(self.max_raw_seq) as i16 as i32;
            if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&d) {
                return self.probation(ssrc, seq, ts, payload, samples, arrival_us);
            }
        }
        self.probe = None;
        self.insert_unwrapped(seq, ts, payload, samples, arrival_us)
    }

    /// A packet far from the numbering: a restart if the one before was its predecessor.
    fn probation(
        &mut self,
        ssrc: u32,
        seq: u16,
        ts: u32,
        payload: &[u8],
        samples: usize,
        arrival_us: u64,
    ) -> Push {
        match self.probe {
            Some(p) if p.ssrc == ssrc && p.seq.wrapping_add(1) == seq => {
                self.probe = None;
                self.restart(ssrc, p.seq, p.ts);
                let (len, data) = (p.len, std::mem::take(&mut self.probe_data));
                self.insert_unwrapped(p.seq, p.ts, &data[..len], p.samples, p.arrival_us);
                self.probe_data = data;
                self.insert_unwrapped(seq, ts, payload, samples, arrival_us);
                Push::Restarted
            }
            _ => {
                self.probe_data[..payload.len()].copy_from_slice(payload);
                self.probe = Some(Probe {
                    ssrc,
                    seq,
                    ts,
                    len: payload.len(),
                    samples,
                    arrival_us,
                });
                Push::Probation
            }
        }
    }

    /// Maps a new numbering onto the end of the old one, so the new stream's first packet
    /// comes right after the old stream's last.
    fn restart(&mut self, ssrc: u32, seq: u16, ts: u32) {
        self.stats.restarts += 1;
        self.ssrc = ssrc;
        self.max_raw_seq = seq.wrapping_sub(1);
        // a virtual packet just before the new first one sits at the old stream's end
        self.max_raw_ts =
            ts.wrapping_sub((self.last_samples as u64 * self.ticks_per_sample) as u32);
        self.jitter.forget_transit();
        self.reset_at = Some(self.max_ext + 1);
        self.probe = None;
    }

    fn insert_unwrapped(
        &mut self,
        seq: u16,
        ts: u32,
        payload: &[u8],
        samples: usize,
        arrival_us: u64,
    ) -> Push {
        let d = seq.wrapping_sub(self.max_raw_seq) as i16 as i64;
        let ext = (self.max_ext as i64 + d) as u64;
        let ext_ts =
            (self.max_ext_ts as i64 + ts.wrapping_sub(self.max_raw_ts) as i32 as i64) as u64;
        if d > 0 {
            self.max_raw_seq = seq;
            self.max_ext = ext;
            self.max_raw_ts = ts;
            self.max_ext_ts = ext_ts;
        }
        self.update_jitter(arrival_us, ext_ts);
        self.insert(ext, payload, samples, arrival_us)
    }

    /// RFC 3550 A.8 jitter ([`InterarrivalJitter`]), and the target depth it sets.
    fn update_jitter(&mut self, arrival_us: u64, ext_ts: u64) {
        // u64 holds µs × 48 kHz for over four days: far beyond any call
        let arrival_ticks =
            (arrival_us.saturating_mul(self.codec.clock_rate() as u64) / 1_000_000) as i64;
        let transit = arrival_ticks - ext_ts as i64;
        // a jump of a second or more is a stall or a restart, not jitter
        self.jitter
            .on_transit(transit, u64::from(self.codec.clock_rate()));
        let jitter_samples = self.jitter.ticks() as usize / self.ticks_per_sample as usize;
        self.target_samples =
            (FRAME_SAMPLES + 3 * jitter_samples).clamp(self.min_samples, self.max_samples);
    }

    fn insert(&mut self, ext: u64, payload: &[u8], samples: usize, arrival_us: u64) -> Push {
        if let Some(next) = self.next {
            if ext < next {
                let age = next - ext - 1;
                if age < 64 && self.recv_mask & (1 << age) != 0 {
                    self.stats.duplicates += 1;
                    return Push::Duplicate;
                }
                if age < 64 {
                    self.recv_mask |= 1 << age;
                }
                self.stats.late += 1;
                return Push::Late;
            }
        }
        let i = (ext % SLOTS as u64) as usize;
        if self.slots[i].ext == ext {
            self.stats.duplicates += 1;
            return Push::Duplicate;
        }
        // keep every held packet within SLOTS of the playout point
        let base = match self.next {
            Some(n) => n,
            None => self.lowest_held().unwrap_or(ext).min(ext),
        };
        if ext >= base + SLOTS as u64 {
            self.drop_below(ext + 1 - SLOTS as u64);
        } else if self.next.is_none() {
            if let Some(hi) = self.highest_held() {
                if hi >= ext + SLOTS as u64 {
                    self.stats.late += 1;
                    return Push::Late;
                }
            }
        }
        if self.slots[i].ext != EMPTY {
            self.remove(i);
            self.stats.dropped += 1;
        }
        let off = i * self.max_payload;
        self.data[off..off + payload.len()].copy_from_slice(payload);
        self.slots[i] = Slot {
            ext,
            arrival_us,
            len: payload.len() as u16,
            samples: samples as u16,
        };
        self.held += 1;
        self.held_samples += samples;
        Push::Accepted
    }

    /// Drops everything held below `new_base` and moves the playout point up to it.
    fn drop_below(&mut self, new_base: u64) {
        for i in 0..SLOTS {
            if self.slots[i].ext != EMPTY && self.slots[i].ext < new_base {
                self.remove(i);
                self.stats.dropped += 1;
            }
        }
        if let Some(n) = self.next {
            if n < new_base {
                self.advance_to(new_base);
                self.splice = true;
            }
        }
    }

    /// Moves the playout point to `to`, counting the packets in between as lost.
    fn advance_to(&mut self, to: u64) {
        if let Some(n) = self.next {
            let gap = to.saturating_sub(n);
            self.stats.lost += gap;
            self.recv_mask = if gap >= 64 { 0 } else { self.recv_mask << gap };
        }
        self.next = Some(to);
    }

    fn remove(&mut self, i: usize) {
        self.held -= 1;
        self.held_samples -= self.slots[i].samples as usize;
        self.slots[i] = EMPTY_SLOT;
    }

    fn lowest_held(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter(|s| s.ext != EMPTY)
            .map(|s| s.ext)
            .min()
    }

    fn highest_held(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter(|s| s.ext != EMPTY)
            .map(|s| s.ext)
            .max()
    }

    fn slot_of(&self, ext: u64) -> Option<usize> {
        let i = (ext % SLOTS as u64) as usize;
        (self.slots[i].ext == ext).then_some(i)
    }

    fn payload(&self, i: usize) -> &[u8] {
        let off = i * self.max_payload;
        &self.data[off..off + self.slots[i].len as usize]
    }

    // -----------------------------------------------------------------------------------
    // Playout

    /// Produces the next 20 ms frame into `out`, decoding with `dec` (the call's decoder for
    /// this stream). Call once per 20 ms tick.
    pub fn pop<D: PayloadDecoder>(
        &mut self,
        now: Duration,
        dec: &mut D,
        out: &mut Frame,
    ) -> Playout {
        let now_us = now.as_micros() as u64;
        if self.state == State::Buffering && !self.try_start(now_us) {
            out.fill(0);
            self.last_out = 0;
            return Playout::Silence;
        }

        let level = self.level();
        self.review_depth(level);

        let mut kind = Playout::Audio;
        if level > self.max_samples + FRAME_SAMPLES {
            self.trim_to(self.target_samples + FRAME_SAMPLES);
        }
        if self.compress_due && self.level() >= 2 * FRAME_SAMPLES {
            self.compress_due = false;
            if self.fill(2 * FRAME_SAMPLES, dec, &mut kind) {
                let (a, b) = self.stage.split_at(FRAME_SAMPLES);
                for (i, o) in out.iter_mut().enumerate() {
                    let w = i as i32;
                    *o = ((a[i] as i32 * (FRAME_SAMPLES as i32 - w) + b[i] as i32 * w)
                        / FRAME_SAMPLES as i32) as i16;
                }
                self.consume(2 * FRAME_SAMPLES);
                self.stats.compressed += 1;
                return self.finish(out, kind);
            }
        }
        if !self.fill(FRAME_SAMPLES, dec, &mut kind) {
            // the talkspurt ended: fade out what concealment produced and wait
            let n = self.stage_len.min(FRAME_SAMPLES);
            out[..n].copy_from_slice(&self.stage[..n]);
            out[n..].fill(0);
            fade_out(&mut out[..n.max(1)]);
            self.stage_len = 0;
            self.state = State::Buffering;
            self.last_out = 0;
            return Playout::Silence;
        }
        out.copy_from_slice(&self.stage[..FRAME_SAMPLES]);
        self.consume(FRAME_SAMPLES);
        self.finish(out, kind)
    }

    fn finish(&mut self, out: &mut Frame, kind: Playout) -> Playout {
        if self.splice && kind == Playout::Audio {
            declick(out, self.last_out);
        }
        self.splice = false;
        self.last_out = out[FRAME_SAMPLES - 1];
        if kind == Playout::Concealed {
            self.stats.concealed_frames += 1;
        }
        kind
    }

    /// In the buffering state: starts a talkspurt once the target depth is held, or once
    /// the oldest packet has waited that long.
    fn try_start(&mut self, now_us: u64) -> bool {
        if self.held == 0 {
            return false;
        }
        let oldest = self
            .slots
            .iter()
            .filter(|s| s.ext != EMPTY)
            .map(|s| s.arrival_us)
            .min()
            .unwrap_or(now_us);
        let target_us = self.target_samples as u64 * 1_000_000 / SAMPLE_RATE as u64;
        if self.held_samples < self.target_samples && now_us.saturating_sub(oldest) < target_us {
            return false;
        }
        let lowest = self.lowest_held().expect("held > 0");
        match self.next {
            Some(n) if n < lowest => self.advance_to(lowest),
            _ => self.next = Some(lowest),
        }
        self.state = State::Playing;
        self.credit = 0;
        self.underrun_run = 0;
        self.splice = true;
        self.win_min = usize::MAX;
        self.win_pops = 0;
        // a burst after a stall: play only the newest `target` of it
        self.trim_to(self.target_samples);
        true
    }

    /// Once a second: if the buffer never went below two frames, one is surplus.
    fn review_depth(&mut self, level: usize) {
        self.win_min = self.win_min.min(level);
        self.win_pops += 1;
        if self.win_pops >= WINDOW_POPS {
            self.compress_due = self.win_min >= 2 * FRAME_SAMPLES;
            self.win_pops = 0;
            self.win_min = usize::MAX;
        }
    }

    /// Drops the oldest undecoded packets until at most `keep` samples are held.
    fn trim_to(&mut self, keep: usize) {
        while self.level() > keep && self.held > 0 {
            let Some(n) = self.next else { return };
            if let Some(i) = self.slot_of(n) {
                if self.level() < keep + self.slots[i].samples as usize {
                    return;
                }
                self.remove(i);
                self.stats.dropped += 1;
                self.recv_mask = (self.recv_mask << 1) | 1;
                self.next = Some(n + 1);
            } else {
                self.advance_to(n + 1);
            }
            self.splice = true;
        }
    }

    fn consume(&mut self, n: usize) {
        self.stage.copy_within(n..self.stage_len, 0);
        self.stage_len -= n;
    }

    /// Decodes or conceals units until `want` samples are staged. False if the talkspurt
    /// ended (nothing held for longer than concealment lasts).
    fn fill<D: PayloadDecoder>(&mut self, want: usize, dec: &mut D, kind: &mut Playout) -> bool {
        while self.stage_len < want {
            let n = self.next.expect("playing has a playout point");
            if let Some(i) = self.slot_of(n) {
                if self.reset_at.is_some_and(|r| n >= r) {
                    self.reset_at = None;
                    dec.reset();
                    self.splice = true;
                }
                let samples = self.slots[i].samples as usize;
                let off = i * self.max_payload;
                let len = self.slots[i].len as usize;
                let dst = &mut self.stage[self.stage_len..self.stage_len + samples];
                match dec.decode(&self.data[off..off + len], dst) {
                    Some(got) if got == samples => self.stats.played += 1,
                    _ => {
                        dec.conceal(dst);
                        self.stats.invalid += 1;
                        *kind = Playout::Concealed;
                    }
                }
                self.stage_len += samples;
                self.last_samples = samples;
                self.remove(i);
                self.recv_mask = (self.recv_mask << 1) | 1;
                self.next = Some(n + 1);
                self.credit = 0;
                self.underrun_run = 0;
            } else if self.held > 0 {
                // missing while later packets wait
                if self.credit >= self.last_samples {
                    // already covered by concealment played while waiting for it
                    self.credit -= self.last_samples;
                    self.advance_to(n + 1);
                    continue;
                }
                let fec = self
                    .slot_of(n + 1)
                    .filter(|&j| self.codec.can_recover_from(self.payload(j)));
                if fec.is_none()
                    && self.level() < self.target_samples
                    && self.credit + FRAME_SAMPLES <= self.target_samples
                {
                    // below target: wait a frame in case it was only reordered (not when the
                    // next packet can rebuild it: FEC is nearly as good as the packet)
                    self.conceal(dec, FRAME_SAMPLES, kind);
                    self.credit += FRAME_SAMPLES;
                    continue;
                }
                self.advance_to(n + 1);
                let samples = self.last_samples;
                let recovered = match fec {
                    Some(j) => {
                        let off = j * self.max_payload;
                        let len = self.slots[j].len as usize;
                        let dst = &mut self.stage[self.stage_len..self.stage_len + samples];
                        dec.recover(&self.data[off..off + len], dst)
                    }
                    _ => false,
                };
                if recovered {
                    self.stage_len += samples;
                    self.stats.recovered += 1;
                    if *kind == Playout::Audio {
                        *kind = Playout::Recovered;
                    }
                } else {
                    self.conceal(dec, samples, kind);
                }
            } else {
                // nothing held at all
                if self.underrun_run >= MAX_UNDERRUN_SAMPLES {
                    return false;
                }
                self.stats.underruns += 1;
                self.conceal(dec, FRAME_SAMPLES, kind);
                self.credit += FRAME_SAMPLES;
                self.underrun_run += FRAME_SAMPLES;
                if self.underrun_run >= MAX_UNDERRUN_SAMPLES {
                    // the last frame of concealment before silence fades out
                    let end = self.stage_len;
                    fade_out(&mut self.stage[end - FRAME_SAMPLES..end]);
                }
            }
        }
        true
    }

    fn conceal<D: PayloadDecoder>(&mut self, dec: &mut D, samples: usize, kind: &mut Playout) {
        dec.conceal(&mut self.stage[self.stage_len..self.stage_len + samples]);
        self.stage_len += samples;
        *kind = Playout::Concealed;
    }
}

fn to_ms(samples: usize) -> u32 {
    (samples as u64 * 1000 / SAMPLE_RATE as u64) as u32
}

/// Ramps a step between the previous frame's last sample and this frame's first away over
/// a few samples, so dropped audio or a new stream does not click.
fn declick(out: &mut [i16], prev: i16) {
    let delta = prev as i32 - out[0] as i32;
    for (i, s) in out.iter_mut().take(DECLICK).enumerate() {
        let v = *s as i32 + delta * (DECLICK - i) as i32 / (DECLICK + 1) as i32;
        *s = v.clamp(i16::MIN as i32, i16::MAX as i32) as i16;
    }
}

fn fade_out(s: &mut [i16]) {
    let n = s.len() as i32;
    for (i, v) in s.iter_mut().enumerate() {
        *v = (*v as i32 * (n - 1 - i as i32) / n) as i16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::G711Decoder;
    use crate::media::g711::Law;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn setup() -> (JitterBuffer, G711Decoder, Frame) {
        (
            JitterBuffer::new(JitterConfig::new(Codec::Pcmu)),
            G711Decoder::new(Law::Mu),
            [0; FRAME_SAMPLES],
        )
    }

    #[test]
    fn silence_before_anything_arrives() {
        let (mut jb, mut dec, mut out) = setup();
        out.fill(5);
        assert_eq!(jb.pop(ms(0), &mut dec, &mut out), Playout::Silence);
        assert!(out.iter().all(|&s| s == 0));
        assert_eq!(jb.stats().target_ms, 20);
    }

    #[test]
    fn plays_a_packet_once_the_target_is_held() {
        let (mut jb, mut dec, mut out) = setup();
        assert_eq!(jb.push(ms(1), 1, 10, 0, &[0x80; 160]), Push::Accepted);
        assert_eq!(jb.level_ms(), 20);
        assert_eq!(jb.pop(ms(2), &mut dec, &mut out), Playout::Audio);
        assert!(out[DECLICK..].iter().all(|&s| s == 32124));
        assert_eq!(jb.stats().played, 1);
    }

    #[test]
    fn classifies_duplicates_and_late_packets() {
        let (mut jb, mut dec, mut out) = setup();
        jb.push(ms(0), 1, 10, 0, &[0xFF; 160]);
        assert_eq!(jb.push(ms(1), 1, 10, 0, &[0xFF; 160]), Push::Duplicate);
        jb.pop(ms(1), &mut dec, &mut out); // plays 10
        jb.push(ms(40), 1, 12, 320, &[0xFF; 160]);
        jb.pop(ms(41), &mut dec, &mut out); // 11 missing, 12 held: lost
        assert_eq!(jb.stats().lost, 1);
        assert_eq!(jb.push(ms(41), 1, 11, 160, &[0xFF; 160]), Push::Late);
        assert_eq!(jb.push(ms(42), 1, 11, 160, &[0xFF; 160]), Push::Duplicate);
        assert_eq!(jb.push(ms(43), 1, 10, 0, &[0xFF; 160]), Push::Duplicate);
        let s = jb.stats();
        assert_eq!((s.late, s.duplicates), (1, 3));
    }

    #[test]
    fn rejects_invalid_payloads() {
        let (mut jb, _, _) = setup();
        assert_eq!(jb.push(ms(0), 1, 1, 0, &[]), Push::Invalid);
        assert_eq!(jb.push(ms(0), 1, 1, 0, &[0; 2000]), Push::Invalid);
        let mut opus = JitterBuffer::new(JitterConfig::new(Codec::Opus));
        // a TOC byte of code 3 with a frame count of zero is not a valid Opus packet
        assert_eq!(opus.push(ms(0), 1, 1, 0, &[0x03, 0x00]), Push::Invalid);
        assert_eq!(jb.stats().invalid, 2);
    }

    #[test]
    fn a_new_ssrc_restarts_at_once() {
        let (mut jb, _, _) = setup();
        jb.push(ms(0), 1, 100, 0, &[0xFF; 160]);
        assert_eq!(jb.push(ms(20), 2, 9000, 777, &[0xFF; 160]), Push::Restarted);
        assert_eq!(
            jb.level_ms(),
            40,
            "both held, the new one right after the old"
        );
        assert_eq!(jb.stats().restarts, 1);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let (mut jb, mut dec, mut out) = setup();
        for (i, seq) in [65534u16, 65535, 0, 1].into_iter().enumerate() {
            jb.push(ms(i as u64 * 20), 1, seq, i as u32 * 160, &[0xFF; 160]);
            jb.pop(ms(i as u64 * 20 + 1), &mut dec, &mut out);
        }
        let s = jb.stats();
        assert_eq!((s.played, s.lost, s.late, s.restarts), (4, 0, 0, 0));
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let (mut jb, _, _) = setup();
        // every packet 10 ms later than the one before it should be: |D| = 80 ticks each time
        for i in 0..200u32 {
            let at = ms(i as u64 * 20 + if i % 2 == 0 { 0 } else { 10 });
            jb.push(at, 1, i as u16, i * 160, &[0xFF; 160]);
        }
        // J converges to |D| = 80 ticks = 10 ms; the target follows (20 + 3 * 10, capped)
        assert!(
            (jb.jitter_ticks() as i32 - 80).abs() <= 2,
            "{}",
            jb.jitter_ticks()
        );
        assert!((49..=50).contains(&jb.stats().target_ms));
    }
}
