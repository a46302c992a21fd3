//! Silence without the encoder: the packets libopus settles into on a silent input, replayed.
//!
//! A caller is silent for much of a call: while the agent speaks, the echo gate hands the
//! model digital silence in place of the line's echo. libopus still runs most of its analysis
//! on a silent frame. Fed digital silence, it settles within a few frames into a cycle of four
//! packets (SILK's excitation seed turns over every four frames), byte for byte the same for
//! as long as the silence lasts. [`SilenceCycle`] watches the packets of consecutive silent
//! frames; once two whole turns of the cycle agree, it hands out the cycle's next packet
//! instead of encoding. The packets sent are the ones the encoder would have produced; when
//! the caller speaks again the encoder goes on from the state it had after its last silent
//! frame, as after a shorter pause. IO-free and allocation-free.

/// The cycle's length: SILK's excitation seed is the frame counter modulo 4.
pub const CYCLE: usize = 4;
/// The longest packet the cycle keeps. A settled silent frame codes to about 6 bytes; longer
/// packets mean the encoder has not settled, and end the watch.
pub const MAX_SILENT_PACKET: usize = 16;

/// True when `pcm` is digital silence: every sample zero. That is what the echo gate hands on
/// in place of echo, and what a μ-law line's idle code decodes to. Anything else, A-law's idle
/// code (±8) included, is coded as it is: libopus codes a quiet line's noise, and the model's
/// turn detection hears what it always heard.
#[inline]
pub fn is_silent(pcm: &[i16]) -> bool {
    pcm.iter().all(|&s| s == 0)
}

/// The encoder's packets over a run of silent frames, and whether they have settled.
#[derive(Debug, Clone, Default)]
pub struct SilenceCycle {
    packets: [[u8; MAX_SILENT_PACKET]; CYCLE],
    lens: [u8; CYCLE],
    /// Silent frames in the current run, encoded or replayed.
    run: u64,
    /// Consecutive encoded silent packets equal to the one a cycle before them.
    agreeing: usize,
    /// Frames replayed instead of encoded, over the cycle's life.
    replayed: u64,
}

impl SilenceCycle {
    /// Settled: the last [`CYCLE`] encoded packets each equalled the one before them by a
    /// whole cycle, so the next silent frame's packet is known.
    pub fn settled(&self) -> bool {
        self.agreeing >= CYCLE
    }

    /// The packet for the next silent frame, if the cycle has settled; the run moves on.
    pub fn replay(&mut self) -> Option<&[u8]> {
        if !self.settled() {
            return None;
        }
        let slot = (self.run % CYCLE as u64) as usize;
        self.run += 1;
        self.replayed += 1;
        Some(&self.packets[slot][..usize::from(self.lens[slot])])
    }

    /// The encoder coded a silent frame into `packet`.
    pub fn handle_encoded(&mut self, packet: &[u8]) {
        let slot = (self.run % CYCLE as u64) as usize;
        self.run += 1;
        if packet.len() > MAX_SILENT_PACKET {
            self.agreeing = 0;
            self.lens[slot] = 0;
            return;
        }
        let same = self.run > CYCLE as u64
            && usize::from(self.lens[slot]) == packet.len()
            && self.packets[slot][..packet.len()] == *packet;
        self.agreeing = if same { self.agreeing + 1 } else { 0 };
        self.packets[slot][..packet.len()].copy_from_slice(packet);
        self.lens[slot] = packet.len() as u8;
    }

    /// A frame that is not silent, or the encoder's settings changed: the run is over.
    pub fn reset(&mut self) {
        self.run = 0;
        self.agreeing = 0;
    }

    /// Silent frames replayed instead of encoded so far.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(c: &mut SilenceCycle, packets: &[&[u8]]) {
        for p in packets {
            assert!(c.replay().is_none(), "replayed before settling");
            c.handle_encoded(p);
        }
    }

    #[test]
    fn settles_after_two_agreeing_turns_and_replays_the_cycle_in_order() {
        let mut c = SilenceCycle::default();
        let (a, b, d, e): (&[u8], &[u8], &[u8], &[u8]) = (&[1, 2], &[3], &[4, 5, 6], &[7]);
        // warm-up packets differ, then the cycle a b d e twice
        feed(&mut c, &[&[9, 9, 9], &[8], a, b, d, e, a, b, d]);
        assert!(!c.settled());
        c.handle_encoded(e);
        assert!(c.settled());
        let got: Vec<Vec<u8>> = (0..6).map(|_| c.replay().unwrap().to_vec()).collect();
        assert_eq!(got, [a, b, d, e, a, b].map(|p| p.to_vec()));
        assert_eq!(c.replayed(), 6);
    }

    #[test]
    fn a_packet_that_breaks_the_cycle_starts_the_count_again() {
        let mut c = SilenceCycle::default();
        let (a, b, d, e): (&[u8], &[u8], &[u8], &[u8]) = (&[1], &[2], &[3], &[4]);
        // the odd packet disagrees with the turn before it, and the next turn with it
        feed(&mut c, &[a, b, d, e, a, b, &[0], e, a, b, d, e, a, b]);
        assert!(!c.settled(), "one odd packet must hold off the replay");
        c.handle_encoded(d);
        assert!(c.settled());
    }

    #[test]
    fn speech_ends_the_run_and_a_new_run_must_settle_again() {
        let mut c = SilenceCycle::default();
        let cycle: [&[u8]; 4] = [&[1], &[2], &[3], &[4]];
        for _ in 0..2 {
            feed(&mut c, &cycle);
        }
        assert!(c.replay().is_some());
        c.reset();
        assert!(c.replay().is_none());
        feed(&mut c, &cycle);
        assert!(!c.settled(), "one turn after a reset is not enough");
    }

    #[test]
    fn long_packets_are_never_kept() {
        let mut c = SilenceCycle::default();
        let long = [7u8; MAX_SILENT_PACKET + 1];
        for _ in 0..12 {
            c.handle_encoded(&long);
        }
        assert!(!c.settled());
        assert!(c.replay().is_none());
    }

    #[test]
    fn only_digital_silence_is_silent() {
        assert!(is_silent(&[0; 160]));
        assert!(
            !is_silent(&[0, 8, 0, -8]),
            "A-law's idle code is a quiet line"
        );
        assert!(!is_silent(&[0, 1, 0]));
        assert!(!is_silent(&[i16::MIN]));
    }
}
