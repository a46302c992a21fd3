//! The unit every media stage exchanges: 20 ms of 8 kHz mono 16-bit PCM.
//!
//! The phone leg runs at 8 kHz (G.711) and the Opus codec is opened at 8 kHz too, so one
//! frame type fits the whole path and no stage resamples.

/// Sample rate of every PCM frame on the media path.
pub const SAMPLE_RATE: u32 = 8_000;
/// Duration of one frame in milliseconds.
pub const FRAME_MS: u32 = 20;
/// Samples in one frame (20 ms at 8 kHz).
pub const FRAME_SAMPLES: usize = (SAMPLE_RATE * FRAME_MS / 1000) as usize;
/// One frame as a [`Duration`](std::time::Duration): the media tick.
pub const FRAME_DURATION: std::time::Duration = std::time::Duration::from_millis(FRAME_MS as u64);
/// One frame in microseconds, for clocks kept as whole µs.
pub const FRAME_US: u64 = FRAME_MS as u64 * 1000;
/// RTP timestamp units in one frame (the 8 kHz clock of G.711 and of telephone-event).
pub const FRAME_TICKS: u32 = FRAME_SAMPLES as u32;

/// One 20 ms frame of 8 kHz mono PCM.
pub type Frame = [i16; FRAME_SAMPLES];

/// A silent frame.
pub const SILENCE: Frame = [0; FRAME_SAMPLES];

/// A frame's mean power: the mean of its squared samples.
pub fn mean_square(frame: &Frame) -> i64 {
    let sum: i64 = frame.iter().map(|&s| i64::from(s) * i64::from(s)).sum();
    sum / frame.len() as i64
}

/// Cuts a stream of PCM chunks of any length into whole frames.
///
/// The WebSocket transport delivers model audio in chunks of arbitrary size; this turns them
/// into the 20 ms frames the pacer and encoders take. It holds at most one partial frame, so
/// it never grows.
#[derive(Debug, Clone)]
pub struct Framer {
    partial: Frame,
    len: usize,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

impl Framer {
    /// An empty framer.
    pub const fn new() -> Self {
        Self {
            partial: SILENCE,
            len: 0,
        }
    }

    /// Feeds `samples`; calls `emit` once for every frame completed. Returns the number of
    /// frames emitted.
    pub fn push(&mut self, mut samples: &[i16], mut emit: impl FnMut(&Frame)) -> usize {
        let mut emitted = 0;
        while !samples.is_empty() {
            let take = (FRAME_SAMPLES - self.len).min(samples.len());
            self.partial[self.len..self.len + take].copy_from_slice(&samples[..take]);
            self.len += take;
            samples = &samples[take..];
            if self.len == FRAME_SAMPLES {
                emit(&self.partial);
                emitted += 1;
                self.len = 0;
            }
        }
        emitted
    }

    /// Samples waiting for a frame to complete.
    pub fn pending(&self) -> usize {
        self.len
    }

    /// Emits the partial frame padded with silence, if any samples are pending (end of a
    /// response), and empties the framer.
    pub fn finish(&mut self) -> Option<Frame> {
        if self.len == 0 {
            return None;
        }
        let mut out = self.partial;
        out[self.len..].fill(0);
        self.len = 0;
        Some(out)
    }

    /// Drops any pending samples (barge-in).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framer_cuts_odd_chunks_into_frames() {
        let input: Vec<i16> = (0..1000).map(|i| i as i16).collect();
        let mut f = Framer::new();
        let mut out = Vec::new();
        for chunk in input.chunks(37) {
            f.push(chunk, |fr| out.extend_from_slice(fr));
        }
        assert_eq!(out.len(), 960);
        assert_eq!(&out[..], &input[..960]);
        assert_eq!(f.pending(), 40);
        let last = f.finish().unwrap();
        assert_eq!(&last[..40], &input[960..]);
        assert!(last[40..].iter().all(|&s| s == 0));
        assert!(f.finish().is_none());
    }
}
