//! The relay's own spoken prompts, played to the caller without the model: the apology when
//! the realtime service fails, the goodbye at the call time limit and the recording notice. Bundled in the binary
//! (8 kHz µ-law WAV under `assets/prompts`, made with espeak-ng), decoded once.

use std::sync::OnceLock;

use crate::media::wav;

static APOLOGY: OnceLock<Vec<i16>> = OnceLock::new();
static TIME_LIMIT: OnceLock<Vec<i16>> = OnceLock::new();
static RECORDING_NOTICE: OnceLock<Vec<i16>> = OnceLock::new();

fn load(cell: &'static OnceLock<Vec<i16>>, bytes: &'static [u8]) -> &'static [i16] {
    // The files are part of the build and tested below, so a failure here would be a broken
    // build; a short silence keeps the call going (and the BYE coming) even then.
    cell.get_or_init(|| wav::read_8k(bytes).unwrap_or_else(|_| vec![0; 1600]))
}

/// "I am sorry, our assistant is not available right now. Please call again later. Goodbye."
pub fn apology() -> &'static [i16] {
    load(&APOLOGY, include_bytes!("../../assets/prompts/apology.wav"))
}

/// "We have reached the time limit for this call. Thank you for calling. Goodbye."
pub fn time_limit() -> &'static [i16] {
    load(
        &TIME_LIMIT,
        include_bytes!("../../assets/prompts/time_limit.wav"),
    )
}

/// "This call is recorded." (`recording.announce`, before the greeting).
pub fn recording_notice() -> &'static [i16] {
    load(
        &RECORDING_NOTICE,
        include_bytes!("../../assets/prompts/recording_notice.wav"),
    )
}

/// Comfort noise while the caller waits on a tool: quiet pink-ish noise around -60 dBFS, so
/// the line does not sound dead. `state` carries the generator from frame to frame.
pub fn comfort_noise(state: &mut u32, out: &mut [i16]) {
    let mut last = 0i32;
    for s in out.iter_mut() {
        // xorshift32: cheap, no allocation, good enough for noise
        *state ^= *state << 13;
        *state ^= *state >> 17;
        *state ^= *state << 5;
        let white = (*state >> 16) as i32 - 32_768;
        // a one-pole low-pass takes the hiss off
        last = (last * 3 + white / 1024) / 4;
        *s = last as i16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_seconds_of_speech() {
        for p in [apology(), time_limit(), recording_notice()] {
            let secs = p.len() as f32 / 8000.0;
            assert!((1.0..10.0).contains(&secs), "{secs}");
            assert!(p.iter().any(|s| s.abs() > 8000), "audible");
        }
    }

    #[test]
    fn comfort_noise_is_quiet_but_not_silent() {
        let mut st = 0x1234_5678;
        let mut f = [0i16; 160];
        comfort_noise(&mut st, &mut f);
        let peak = f.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((1..200).contains(&peak), "{peak}");
    }
}
