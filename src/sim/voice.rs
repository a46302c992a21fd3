//! The simulator's voice: the committed espeak-ng prompt recordings (8 kHz µ-law WAV under
//! `assets/prompts`), WAV reading, a stand-in voice for prompts without a recording, and the
//! 8 kHz ↔ 24 kHz conversions. All model audio inside the simulator is 24 kHz mono i16.

use std::sync::Arc;

use crate::media::wav;
pub use crate::media::wav::WavError;

/// Samples per second of the simulator's internal audio.
pub const RATE: u32 = 24_000;
/// Samples in one 20 ms frame at [`RATE`].
pub const FRAME: usize = (RATE * crate::media::frame::FRAME_MS / 1000) as usize;

const BUILTIN: &[(&str, &[u8])] = &[
    (
        "greeting",
        include_bytes!("../../assets/prompts/greeting.wav"),
    ),
    ("offer", include_bytes!("../../assets/prompts/offer.wav")),
    (
        "confirmed",
        include_bytes!("../../assets/prompts/confirmed.wav"),
    ),
    (
        "anything_else",
        include_bytes!("../../assets/prompts/anything_else.wav"),
    ),
    (
        "goodbye",
        include_bytes!("../../assets/prompts/goodbye.wav"),
    ),
    (
        "echo_ready",
        include_bytes!("../../assets/prompts/echo_ready.wav"),
    ),
    (
        "still_there",
        include_bytes!("../../assets/prompts/still_there.wav"),
    ),
];

/// The names of the built-in prompt recordings.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(n, _)| *n)
}

/// A built-in prompt as 24 kHz audio.
pub fn builtin(name: &str) -> Option<Arc<[i16]>> {
    let (_, bytes) = BUILTIN.iter().find(|(n, _)| *n == name)?;
    read_wav(bytes).ok().map(Arc::from)
}

/// Reads a mono WAV (PCM16, µ-law or A-law; 8 or 24 kHz) into 24 kHz samples.
pub fn read_wav(bytes: &[u8]) -> Result<Vec<i16>, WavError> {
    let (rate, samples) = wav::read_mono(bytes, &[8_000, RATE])?;
    Ok(if rate == 8_000 {
        upsample_8k_to_24k(&samples)
    } else {
        samples
    })
}

/// 8 kHz → 24 kHz by linear interpolation (telephone-band audio; good enough for a simulator).
pub fn upsample_8k_to_24k(input: &[i16]) -> Vec<i16> {
    let mut out = Vec::with_capacity(input.len() * 3);
    upsample_8k_to_24k_into(input, &mut out);
    out
}

/// Like [`upsample_8k_to_24k`], appending to `out` (no allocation once `out` has grown).
pub fn upsample_8k_to_24k_into(input: &[i16], out: &mut Vec<i16>) {
    for (i, &s) in input.iter().enumerate() {
        let next = *input.get(i + 1).unwrap_or(&s) as i32;
        let s = s as i32;
        out.push(s as i16);
        out.push(((2 * s + next) / 3) as i16);
        out.push(((s + 2 * next) / 3) as i16);
    }
}

/// 24 kHz → 8 kHz by averaging each group of three samples (a crude low-pass), appending.
pub fn downsample_24k_to_8k_into(input: &[i16], out: &mut Vec<i16>) {
    for c in input.chunks(3) {
        let sum: i32 = c.iter().map(|&s| s as i32).sum();
        out.push((sum / c.len() as i32) as i16);
    }
}

/// A stand-in voice for a prompt that has no recording: a gliding vowel-like tone, one
/// syllable per word, so that the caller hears something as long as the text would take.
pub fn stand_in(text: &str) -> Arc<[i16]> {
    let words = text.split_whitespace().count().max(1);
    let syllable = RATE as usize * 28 / 100; // 280 ms per word
    let gap = RATE as usize * 6 / 100;
    let mut out = Vec::with_capacity(words * (syllable + gap));
    for w in 0..words {
        let f0 = 140.0 + 30.0 * ((w % 3) as f32);
        for n in 0..syllable {
            let t = n as f32 / RATE as f32;
            let env = (std::f32::consts::PI * n as f32 / syllable as f32).sin();
            let phase = 2.0 * std::f32::consts::PI * f0 * t;
            // a fundamental plus two formant-ish harmonics
            let v = phase.sin() + 0.5 * (phase * 4.0).sin() + 0.3 * (phase * 9.0).sin();
            out.push((v * env * 6_000.0) as i16);
        }
        out.extend(std::iter::repeat_n(0i16, gap));
    }
    Arc::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_prompt_reads_as_speech() {
        for name in builtin_names() {
            let audio = builtin(name).unwrap_or_else(|| panic!("{name} does not read"));
            let secs = audio.len() as f32 / RATE as f32;
            assert!((0.5..10.0).contains(&secs), "{name}: {secs} s");
            let peak = audio.iter().map(|s| s.unsigned_abs()).max().unwrap();
            assert!(peak > 10_000, "{name} is too quiet: {peak}");
        }
    }

    #[test]
    fn bad_wavs_are_errors() {
        assert!(read_wav(b"").is_err());
        assert!(read_wav(b"RIFF\0\0\0\0WAVEfmt \xff\xff\xff\xff").is_err());
        let mut stereo = b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x02\0\x40\x1f\0\0\0\0\0\0\x04\0\x10\0data\0\0\0\0".to_vec();
        assert!(matches!(
            read_wav(&stereo),
            Err(WavError::Unsupported { .. })
        ));
        stereo[22] = 1;
        assert_eq!(read_wav(&stereo).unwrap(), Vec::<i16>::new());
    }
}
