//! Special information tones (ITU-T E.180 / Telcordia SR-2275): the three rising tones a
//! telephone network plays before "the number you have dialled is not in service" and its
//! kin. Heard in a placed call's early media, they say the number cannot be reached, so a
//! reminder does not ring it again.
//!
//! IO-free, frame by frame: each 20 ms frame is matched against the three tone groups by the
//! Goertzel algorithm (913.8 or 985.2 Hz; 1370.6 or 1428.5 Hz; 1776.7 Hz), as the share of the
//! frame's power at the group's frequencies. The three groups in order, each held for at least
//! [`MIN_SEGMENT_FRAMES`] frames (the tones last 274 or 380 ms), are the tones. No allocation.

use super::frame::{mean_square, Frame, FRAME_SAMPLES, SAMPLE_RATE};

/// The frequencies of each tone, in order of the sequence.
const GROUPS: [&[f32]; 3] = [&[913.8, 985.2], &[1370.6, 1428.5], &[1776.7]];
/// A frame holds a tone when this share of its power is at the tone's frequency.
const TONE_SHARE: f32 = 0.6;
/// Frames quieter than this mean square (-50 dBFS) hold no tone.
const QUIET: i64 = 10_737;
/// Each tone lasts at least this many frames (240 ms; the shortest SIT segment is 274 ms).
pub const MIN_SEGMENT_FRAMES: u32 = 12;
/// Frames of anything else tolerated inside a segment (its edges straddle frames).
const SLACK: u32 = 2;

/// Listens for the three tones.
#[derive(Debug, Clone, Default)]
pub struct Sit {
    /// The tone now expected (0, 1, 2).
    stage: usize,
    /// Frames of that tone seen in a row.
    held: u32,
    /// Frames of something else since.
    off: u32,
    found: bool,
}

impl Sit {
    /// A detector that has heard nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next frame; true once the three tones have been heard (and from then on).
    pub fn handle_frame(&mut self, frame: &Frame) -> bool {
        if self.found {
            return true;
        }
        let tone = tone_of(frame);
        match tone {
            Some(g) if g == self.stage => {
                self.held += 1;
                self.off = 0;
            }
            Some(g) if g == self.stage + 1 && self.held >= MIN_SEGMENT_FRAMES => {
                self.stage = g;
                self.held = 1;
                self.off = 0;
            }
            Some(0) => {
                self.stage = 0;
                self.held = 1;
                self.off = 0;
            }
            _ => {
                self.off += 1;
                if self.off > SLACK {
                    *self = Self::new();
                }
            }
        }
        if self.stage == 2 && self.held >= MIN_SEGMENT_FRAMES {
            self.found = true;
        }
        self.found
    }
}

/// Which tone group a frame holds, if any.
fn tone_of(frame: &Frame) -> Option<usize> {
    let mean = mean_square(frame);
    if mean < QUIET {
        return None;
    }
    let power = (mean * FRAME_SAMPLES as i64) as f32;
    GROUPS.iter().position(|freqs| {
        freqs
            .iter()
            .map(|&f| goertzel_share(frame, f, power))
            .fold(0.0f32, f32::max)
            >= TONE_SHARE
    })
}

/// The share of `power` (the frame's sum of squares) at frequency `hz`: 1 for a pure tone
/// there.
fn goertzel_share(frame: &Frame, hz: f32, power: f32) -> f32 {
    let w = 2.0 * std::f32::consts::PI * hz / SAMPLE_RATE as f32;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &x in frame {
        let s0 = f32::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let mag2 = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    // a tone of amplitude A: |X|² = (A·N/2)², power = N·A²/2
    2.0 * mag2 / (FRAME_SAMPLES as f32 * power.max(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f32, ms: usize, amp: f32) -> Vec<i16> {
        (0..ms * 8)
            .map(|i| (amp * (2.0 * std::f32::consts::PI * hz * i as f32 / 8000.0).sin()) as i16)
            .collect()
    }

    fn heard(audio: &[i16]) -> Option<usize> {
        let mut sit = Sit::new();
        audio
            .chunks_exact(FRAME_SAMPLES)
            .position(|c| sit.handle_frame(c.try_into().unwrap()))
    }

    #[test]
    fn the_three_tones_are_heard_in_each_variant() {
        for (a, b, ms) in [
            (913.8, 1370.6, 274),
            (985.2, 1428.5, 380),
            (913.8, 1428.5, 380),
            (985.2, 1370.6, 274),
        ] {
            let audio = [
                tone(a, ms, 6000.0),
                tone(b, ms, 6000.0),
                tone(1776.7, 380, 6000.0),
                vec![0; 8000],
            ]
            .concat();
            let at = heard(&audio).unwrap_or_else(|| panic!("{a} {b} {ms}"));
            // found within the third tone, once it was held long enough
            let third_starts = 2 * ms * 8 / FRAME_SAMPLES;
            assert!(
                at >= third_starts && at < third_starts + 19,
                "{a} {b} {ms}: {at}"
            );
        }
        // soft tones too (-30 dBFS)
        let soft = [
            tone(913.8, 274, 1000.0),
            tone(1370.6, 274, 1000.0),
            tone(1776.7, 380, 1000.0),
        ]
        .concat();
        assert!(heard(&soft).is_some());
    }

    #[test]
    fn ringback_beeps_speech_and_a_wrong_order_are_not_tones() {
        let ringback: Vec<i16> = tone(440.0, 2000, 4000.0)
            .iter()
            .zip(tone(480.0, 2000, 4000.0))
            .map(|(a, b)| a.saturating_add(b))
            .collect();
        assert_eq!(heard(&ringback), None);
        assert_eq!(heard(&tone(1000.0, 2000, 6000.0)), None, "a voicemail beep");
        let backwards = [
            tone(1776.7, 380, 6000.0),
            tone(1370.6, 380, 6000.0),
            tone(913.8, 380, 6000.0),
        ]
        .concat();
        assert_eq!(heard(&backwards), None);
        let too_short = [
            tone(913.8, 120, 6000.0),
            tone(1370.6, 120, 6000.0),
            tone(1776.7, 120, 6000.0),
        ]
        .concat();
        assert_eq!(heard(&too_short), None);
        // a voice-like sound: a 150 Hz buzz with its harmonics
        let voice: Vec<i16> = (0..16_000)
            .map(|i| {
                let t = i as f32 / 8000.0;
                let v: f32 = (1..20)
                    .map(|k| (2.0 * std::f32::consts::PI * 150.0 * k as f32 * t).sin() / k as f32)
                    .sum();
                (v * 3000.0) as i16
            })
            .collect();
        assert_eq!(heard(&voice), None);
        assert_eq!(heard(&vec![0; 16_000]), None);
    }
}
