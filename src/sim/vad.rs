//! An energy detector standing in for OpenAI's `server_vad`: it turns the caller's decoded audio
//! (20 ms frames at 24 kHz) into speech-start and speech-stop decisions with the session's
//! `threshold`, `prefix_padding_ms` and `silence_duration_ms`.

/// What one frame changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech began; `audio_start_ms` already includes the prefix padding.
    Started {
        /// Milliseconds of input audio before the (padded) start.
        audio_start_ms: u64,
    },
    /// Silence lasted `silence_duration_ms`.
    Stopped {
        /// Milliseconds of input audio where the speech ended.
        audio_end_ms: u64,
    },
}

/// The detector's settings, from `session.audio.input.turn_detection`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadSettings {
    /// 0.0–1.0; mapped to a level of `-60 + 40·threshold` dBFS (0.5 → -40 dBFS).
    pub threshold: f64,
    /// Audio kept before the detected start.
    pub prefix_padding_ms: u64,
    /// Silence that ends speech.
    pub silence_duration_ms: u64,
}

impl Default for VadSettings {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
        }
    }
}

/// Frames of continuous energy needed to call it speech (filters clicks).
const START_FRAMES: u32 = 2;
const FRAME_MS: u64 = crate::media::frame::FRAME_MS as u64;

/// The detector's state.
#[derive(Debug, Clone)]
pub struct EnergyVad {
    settings: VadSettings,
    level_sq: f64,
    speaking: bool,
    loud_run: u32,
    quiet_ms: u64,
    last_loud_end_ms: u64,
}

impl EnergyVad {
    /// A detector with these settings.
    pub fn new(settings: VadSettings) -> Self {
        let mut v = Self {
            settings,
            level_sq: 0.0,
            speaking: false,
            loud_run: 0,
            quiet_ms: 0,
            last_loud_end_ms: 0,
        };
        v.set(settings);
        v
    }

    /// Changes the settings (a `session.update`), keeping the state.
    pub fn set(&mut self, settings: VadSettings) {
        self.settings = settings;
        let dbfs = -60.0 + 40.0 * settings.threshold.clamp(0.0, 1.0);
        let level = 32_768.0 * 10f64.powf(dbfs / 20.0);
        self.level_sq = level * level;
    }

    /// True between `Started` and `Stopped`.
    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// Forgets a turn in progress (`input_audio_buffer.clear`).
    pub fn reset(&mut self) {
        self.speaking = false;
        self.loud_run = 0;
        self.quiet_ms = 0;
    }

    /// Feeds one 20 ms frame that ends at `end_ms` of input audio.
    pub fn push(&mut self, frame: &[i16], end_ms: u64) -> Option<VadEvent> {
        let energy = if frame.is_empty() {
            0.0
        } else {
            frame.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / frame.len() as f64
        };
        let loud = energy >= self.level_sq;
        if loud {
            self.loud_run += 1;
            self.quiet_ms = 0;
            self.last_loud_end_ms = end_ms;
        } else {
            self.loud_run = 0;
            self.quiet_ms += FRAME_MS;
        }
        if !self.speaking && self.loud_run >= START_FRAMES {
            self.speaking = true;
            let first_loud_start = end_ms.saturating_sub(FRAME_MS * START_FRAMES as u64);
            return Some(VadEvent::Started {
                audio_start_ms: first_loud_start.saturating_sub(self.settings.prefix_padding_ms),
            });
        }
        if self.speaking
            && !loud
            && self.quiet_ms >= self.settings.silence_duration_ms.max(FRAME_MS)
        {
            self.speaking = false;
            return Some(VadEvent::Stopped {
                audio_end_ms: self.last_loud_end_ms,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(amp: f32) -> Vec<i16> {
        (0..480)
            .map(|n| ((n as f32 * 0.1).sin() * amp) as i16)
            .collect()
    }

    #[test]
    fn speech_then_silence_starts_and_stops() {
        let mut v = EnergyVad::new(VadSettings::default());
        let (loud, quiet) = (tone(8_000.0), tone(50.0));
        let mut events = vec![];
        let mut ms = 0;
        for i in 0..100 {
            ms += 20;
            let f = if (20..50).contains(&i) { &loud } else { &quiet };
            if let Some(e) = v.push(f, ms) {
                events.push(e);
            }
        }
        // loud frames cover 400..1000 ms; start detected on the second loud frame
        assert_eq!(
            events,
            vec![
                VadEvent::Started {
                    audio_start_ms: 100
                },
                VadEvent::Stopped { audio_end_ms: 1000 }
            ]
        );
    }

    #[test]
    fn a_higher_threshold_ignores_quiet_speech() {
        let mut v = EnergyVad::new(VadSettings {
            threshold: 0.9,
            ..Default::default()
        });
        let quietish = tone(600.0);
        assert!((1..=50).all(|i| v.push(&quietish, i * 20).is_none()));
        v.set(VadSettings {
            threshold: 0.2,
            ..Default::default()
        });
        assert!((51..=53).any(|i| v.push(&quietish, i * 20).is_some()));
    }
}
