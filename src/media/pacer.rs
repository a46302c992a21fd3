//! The pacer toward the caller: model audio arrives in bursts (the WebSocket transport sends
//! it faster than real time), the phone wants one 20 ms packet every 20 ms.
//!
//! It holds at most [`CAPACITY`] frames (60 ms): the call task keeps the rest of a response
//! upstream and feeds the pacer as it drains ([`Pacer::push`] refuses a frame when full).
//! Holding so little is what makes barge-in quick: [`Pacer::flush`] drops everything held
//! at once and reports how much, so the caller hears at most the frame already sent and the
//! bridge can tell the model where its speech was cut off.
//!
//! A frame of a run that comes late for its slot is not made to wait for the next one: the
//! slot is held open ([`Pacer::poll`] sends nothing in it) and [`Pacer::poll_held`] releases
//! the frame the moment it comes, still no sooner than 20 ms after the frame before it. Only a
//! frame later than a whole slot ends the run (a pause). So the arrival's jitter never leaves a
//! frame queued behind another for the rest of the answer.
//!
//! IO-free: the task passes the time to [`Pacer::poll`] and sends what it returns.

use std::time::Duration;

use super::frame::{FRAME_MS, FRAME_US};

/// Frames held at most (60 ms).
pub const CAPACITY: usize = 3;

/// A frame released by the pacer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paced<T> {
    /// The frame to send now.
    pub frame: T,
    /// The first frame after a pause or a flush: set the RTP marker bit (RFC 3551 4.1).
    pub marker: bool,
}

/// Pacer counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacerStats {
    /// Frames released.
    pub sent: u64,
    /// Frames refused because 60 ms were already held.
    pub refused: u64,
    /// Times the pacer ran dry in the middle of audio and paused (a run's next frame did
    /// not come within its slot).
    pub pauses: u64,
    /// Frames that came late for their slot and went out when they came, in the slot.
    pub late: u64,
    /// Times the task polled more than a frame late and the schedule was moved.
    pub resyncs: u64,
    /// Flushes that dropped something.
    pub flushes: u64,
    /// Milliseconds of audio dropped by flushes.
    pub flushed_ms: u64,
}

/// Releases one frame per 20 ms. `T` is whatever the send path wants: encoded G.711
/// payloads (`[u8; 160]`) or PCM frames.
#[derive(Debug, Clone)]
pub struct Pacer<T: Copy> {
    ring: [T; CAPACITY],
    head: usize,
    len: usize,
    /// Earliest time (µs) the next frame may go.
    next_due: u64,
    /// Not in a run of audio: the next frame starts a new one.
    idle: bool,
    /// A run's slot (µs) found no frame and is held open for it (see [`Pacer::poll_held`]).
    held: Option<u64>,
    stats: PacerStats,
}

impl<T: Copy> Pacer<T> {
    /// An empty pacer; `blank` only fills the unused slots.
    pub fn new(blank: T) -> Self {
        Self {
            ring: [blank; CAPACITY],
            head: 0,
            len: 0,
            next_due: 0,
            idle: true,
            held: None,
            stats: PacerStats::default(),
        }
    }

    /// Queues a frame. Gives it back if 60 ms are already held (try again after the next
    /// release).
    pub fn push(&mut self, frame: T) -> Result<(), T> {
        if self.len == CAPACITY {
            self.stats.refused += 1;
            return Err(frame);
        }
        self.ring[(self.head + self.len) % CAPACITY] = frame;
        self.len += 1;
        Ok(())
    }

    /// Releases the frame due at `now`, if any. Call it at [`Pacer::next_deadline`] (or on
    /// every 20 ms tick). Between frames of a run the schedule stays on a 20 ms grid, so a
    /// late poll does not shift the ones after it; a run starts at once, but never less than
    /// 20 ms after the previous frame.
    pub fn poll(&mut self, now: Duration) -> Option<Paced<T>> {
        let now = now.as_micros() as u64;
        if let Some(slot) = self.held {
            if now < slot + FRAME_US {
                // still the held slot: only its frame may go (the run goes on)
                return self.release_held(now);
            }
            // the held slot passed without its frame: pause; the next frame starts a run
            self.held = None;
            self.idle = true;
            self.stats.pauses += 1;
        }
        if now < self.next_due {
            return None;
        }
        if self.len == 0 {
            if !self.idle {
                // the slot came and nothing filled it: hold it open for the run's next frame
                self.held = Some(self.next_due);
            }
            return None;
        }
        self.release(now)
    }

    /// Releases a frame into the slot held open for it (see [`Pacer::poll`]), if one is
    /// queued and the slot is not over: the frame that came late goes out when it comes,
    /// not at the next slot. Call it when a frame is pushed between two polls. Nothing while
    /// no slot is held: a new run starts only at a [`Pacer::poll`].
    pub fn poll_held(&mut self, now: Duration) -> Option<Paced<T>> {
        let now = now.as_micros() as u64;
        match self.held {
            Some(slot) if now < slot + FRAME_US => self.release_held(now),
            _ => None,
        }
    }

    /// True while a slot waits for a late frame (nothing was sent in it yet).
    pub fn is_holding(&self) -> bool {
        self.held.is_some()
    }

    fn release_held(&mut self, now: u64) -> Option<Paced<T>> {
        if self.len == 0 {
            return None;
        }
        self.held = None;
        self.stats.late += 1;
        self.release(now)
    }

    fn release(&mut self, now: u64) -> Option<Paced<T>> {
        let frame = self.ring[self.head];
        self.head = (self.head + 1) % CAPACITY;
        self.len -= 1;
        let marker = self.idle;
        if self.idle {
            self.idle = false;
            self.next_due = now + FRAME_US;
        } else {
            self.next_due += FRAME_US;
            if self.next_due <= now {
                // the task stalled for more than a frame: do not burst to catch up
                self.next_due = now + FRAME_US;
                self.stats.resyncs += 1;
            }
        }
        self.stats.sent += 1;
        Some(Paced { frame, marker })
    }

    /// When [`Pacer::poll`] next has something to do: release a frame, or notice a pause.
    /// `None` while idle and empty. While a slot is held, the end of that slot.
    pub fn next_deadline(&self) -> Option<Duration> {
        if let Some(slot) = self.held {
            return Some(Duration::from_micros(slot + FRAME_US));
        }
        (self.len > 0 || !self.idle).then(|| Duration::from_micros(self.next_due))
    }

    /// Drops everything held (barge-in) and returns how many milliseconds that was. The
    /// next frame pushed starts a new run (marker set), still no sooner than 20 ms after
    /// the last frame sent.
    pub fn flush(&mut self) -> u32 {
        let ms = self.len as u32 * FRAME_MS;
        if self.len > 0 {
            self.stats.flushes += 1;
            self.stats.flushed_ms += ms as u64;
        }
        self.len = 0;
        self.head = 0;
        self.idle = true;
        // the run is over: a held slot is not kept for the next answer
        self.held = None;
        ms
    }

    /// The caller's side stopped taking frames for a while (the relay paused the agent's
    /// audio) and goes on now: what is held is kept, and the next frame starts a new run
    /// (marker set) at the next poll instead of being taken for a late one.
    pub fn restart_run(&mut self) {
        self.idle = true;
        self.held = None;
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when 60 ms are held and [`Pacer::push`] would refuse.
    pub fn is_full(&self) -> bool {
        self.len == CAPACITY
    }

    /// Milliseconds of audio held.
    pub fn held_ms(&self) -> u32 {
        self.len as u32 * FRAME_MS
    }

    /// Counters.
    pub fn stats(&self) -> PacerStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn holds_at_most_sixty_ms() {
        let mut p = Pacer::new(0u32);
        for i in 0..3 {
            p.push(i).unwrap();
        }
        assert!(p.is_full());
        assert_eq!(p.held_ms(), 60);
        assert_eq!(p.push(9), Err(9));
        assert_eq!(p.stats().refused, 1);
    }

    #[test]
    fn one_frame_per_twenty_ms_on_a_grid() {
        let mut p = Pacer::new(0u32);
        let mut next = 0;
        let mut sent = Vec::new();
        // poll every millisecond for 1 s, keeping the pacer fed
        for t in 0..1000u64 {
            while p.push(next).is_ok() {
                next += 1;
            }
            if let Some(f) = p.poll(ms(t)) {
                sent.push((t, f.frame, f.marker));
            }
        }
        assert_eq!(sent.len(), 50);
        for (i, (t, frame, marker)) in sent.iter().enumerate() {
            assert_eq!(*t, i as u64 * 20);
            assert_eq!(*frame, i as u32);
            assert_eq!(*marker, i == 0);
        }
    }

    #[test]
    fn late_polls_keep_the_grid_and_a_stall_does_not_burst() {
        let mut p = Pacer::new(0u8);
        p.push(1).unwrap();
        p.push(2).unwrap();
        p.push(3).unwrap();
        assert!(p.poll(ms(0)).is_some());
        assert!(p.poll(ms(19)).is_none());
        assert!(p.poll(ms(23)).is_some()); // 3 ms late
        assert_eq!(p.next_deadline(), Some(ms(40)), "back on the grid");
        // a 100 ms stall: one frame now, then 20 ms later, not all at once
        assert!(p.poll(ms(140)).is_some());
        assert_eq!(p.stats().resyncs, 1);
        assert_eq!(p.next_deadline(), Some(ms(160)));
    }

    #[test]
    fn running_dry_pauses_and_the_next_run_has_the_marker() {
        let mut p = Pacer::new(0u8);
        p.push(1).unwrap();
        assert!(p.poll(ms(0)).unwrap().marker);
        // the run's next slot waits for its frame; it does not come within the slot
        assert!(p.poll(ms(20)).is_none());
        assert!(p.is_holding());
        assert_eq!(p.stats().pauses, 0);
        assert_eq!(p.next_deadline(), Some(ms(40)));
        assert!(p.poll(ms(40)).is_none());
        assert!(!p.is_holding());
        assert_eq!(p.stats().pauses, 1);
        assert_eq!(p.next_deadline(), None);
        p.push(2).unwrap();
        // no slot waits: a new run starts at a poll, not when the frame comes
        assert!(p.poll_held(ms(45)).is_none());
        let f = p.poll(ms(53)).unwrap();
        assert!(f.marker);
        assert_eq!(p.next_deadline(), Some(ms(73)));
    }

    #[test]
    fn a_frame_late_for_its_slot_goes_out_when_it_comes_and_the_grid_stays() {
        let mut p = Pacer::new(0u8);
        p.push(1).unwrap();
        assert!(p.poll(ms(0)).is_some());
        assert!(p.poll(ms(20)).is_none());
        assert!(p.poll_held(ms(21)).is_none(), "nothing queued yet");
        p.push(2).unwrap();
        let f = p.poll_held(ms(27)).unwrap();
        assert_eq!((f.frame, f.marker), (2, false), "the same run goes on");
        assert_eq!(p.stats().late, 1);
        assert!(!p.is_holding());
        // the next frame goes at the next slot of the grid, not 20 ms after the late one
        assert_eq!(p.next_deadline(), Some(ms(40)));
        p.push(3).unwrap();
        assert!(
            p.poll_held(ms(30)).is_none(),
            "only a waiting slot takes a frame early"
        );
        assert_eq!(p.poll(ms(40)).unwrap().frame, 3);
        assert_eq!(p.stats().pauses, 0);
    }

    #[test]
    fn a_barge_in_ends_the_slot_waiting_for_a_frame() {
        let mut p = Pacer::new(0u8);
        p.push(1).unwrap();
        assert!(p.poll(ms(0)).is_some());
        assert!(p.poll(ms(20)).is_none());
        assert!(p.is_holding());
        p.flush();
        assert!(!p.is_holding());
        // the next answer starts a new run at a poll, on the grid
        p.push(2).unwrap();
        assert!(p.poll_held(ms(25)).is_none());
        let f = p.poll(ms(40)).unwrap();
        assert_eq!((f.frame, f.marker), (2, true));
    }

    #[test]
    fn flush_drops_everything_and_reports_it() {
        let mut p = Pacer::new(0u8);
        for i in 0..3 {
            p.push(i).unwrap();
        }
        assert_eq!(p.poll(ms(0)).unwrap().frame, 0);
        p.push(3).unwrap();
        assert_eq!(p.flush(), 60);
        assert!(p.is_empty());
        assert!(p.poll(ms(20)).is_none());
        assert_eq!(p.flush(), 0);
        assert_eq!(p.stats().flushes, 1);
        assert_eq!(p.stats().flushed_ms, 60);
        // new speech right after the flush: not sooner than 20 ms after the last frame
        p.push(7).unwrap();
        let f = p.poll(ms(20)).unwrap();
        assert_eq!((f.frame, f.marker), (7, true));
    }

    #[test]
    fn never_two_frames_closer_than_twenty_ms_across_a_flush() {
        let mut p = Pacer::new(0u8);
        p.push(1).unwrap();
        p.push(2).unwrap();
        assert!(p.poll(ms(100)).is_some());
        p.flush();
        p.push(3).unwrap();
        assert!(p.poll(ms(105)).is_none());
        assert!(p.poll(ms(120)).is_some());
    }
}
