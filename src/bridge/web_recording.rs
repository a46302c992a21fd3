//! Recordings of browser calls. The relay is not in a browser call's media path (the browser
//! and the realtime service exchange audio directly), so the `/talk` page records the call
//! itself, in the phone recording's format, and uploads it once when the call ends
//! (`PUT /api/calls/{id}/recording`). The relay decides whether a browser call is recorded
//! (as for a phone call: `recording.enabled` and the agent's `record`), expects that one
//! upload for a bounded time after the call ended, and checks it is a WAV of the expected
//! format within the size cap before it names it in the call's record.
//!
//! IO-free: the upload slots ([`Awaiting`]) and the header check ([`parse_header`]) take
//! `now` and bytes; the admin route streams the body to disk around them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::media::frame::SAMPLE_RATE;

/// How long after a browser call ended its recording may still arrive.
pub const UPLOAD_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Calls remembered at once (live and ended, awaiting their recording): a few windows'
/// worth of [`super::web_call::MAX_WEB_CALLS`]; past it the oldest ended entry goes.
pub const MAX_AWAITING: usize = 4 * super::web_call::MAX_WEB_CALLS;
/// The WAV header the relay writes and accepts (canonical 44 bytes).
pub const HEADER_LEN: usize = 44;
/// Bytes a second of recording: stereo, 16-bit.
pub const BYTES_PER_SECOND: u64 = SAMPLE_RATE as u64 * 4;

/// Why an upload's header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    /// Not a RIFF/WAVE file with a `fmt ` then a `data` chunk in the canonical layout.
    #[error("not a canonical PCM WAV (RIFF, WAVE, a 16-byte fmt chunk, then data)")]
    NotWav,
    /// A WAV, but not 8 kHz stereo 16-bit PCM.
    #[error("the recording must be 8000 Hz, 2 channels (caller left, agent right), 16-bit PCM")]
    Format,
    /// The sizes in the header disagree with each other.
    #[error("the WAV header's sizes disagree")]
    Sizes,
}

/// Checks an uploaded recording's first [`HEADER_LEN`] bytes: the canonical header of an
/// 8 kHz stereo 16-bit PCM WAV (the one `media::recording::header` writes). Returns the
/// number of sample bytes it announces. Never panics on any input.
pub fn parse_header(h: &[u8]) -> Result<u32, WavError> {
    if h.len() < HEADER_LEN {
        return Err(WavError::NotWav);
    }
    let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    if &h[0..4] != b"RIFF" || &h[8..12] != b"WAVE" || &h[12..16] != b"fmt " || &h[36..40] != b"data"
    {
        return Err(WavError::NotWav);
    }
    if u32_at(16) != 16 {
        return Err(WavError::NotWav);
    }
    let (format, channels, rate, byte_rate, align, bits) = (
        u16_at(20),
        u16_at(22),
        u32_at(24),
        u32_at(28),
        u16_at(32),
        u16_at(34),
    );
    if format != 1 || channels != 2 || rate != SAMPLE_RATE || bits != 16 {
        return Err(WavError::Format);
    }
    if byte_rate != SAMPLE_RATE * 4 || align != 4 {
        return Err(WavError::Sizes);
    }
    let data = u32_at(40);
    if data % 4 != 0 || u32_at(4) != data.wrapping_add(36) || data > u32::MAX - 36 {
        return Err(WavError::Sizes);
    }
    Ok(data)
}

/// Where a recorded browser call stands with its upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// The call runs: its record is not stored yet.
    Live,
    /// Ended at this time; awaiting its recording.
    Ended(Instant),
    /// An upload is being received.
    Uploading(Instant),
    /// The recording arrived; further uploads are refused.
    Done(Instant),
}

/// Why an upload is not taken now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The relay expects no recording for this call (not a browser call, not recorded, or
    /// forgotten long after its window).
    #[error("the relay expects no recording for this call")]
    NotAwaited,
    /// The call has not ended yet (its record is not stored).
    #[error("the call has not ended yet")]
    Live,
    /// Another upload for this call is being received.
    #[error("a recording for this call is being uploaded")]
    InProgress,
    /// The recording already arrived.
    #[error("this call's recording was already uploaded")]
    AlreadyUploaded,
    /// The call ended more than [`UPLOAD_WINDOW`] ago.
    #[error("the call ended too long ago for its recording to be taken")]
    WindowClosed,
}

/// The recorded browser calls whose recording the relay awaits. See the module docs.
#[derive(Debug, Default)]
pub struct Awaiting {
    slots: HashMap<String, Slot>,
}

impl Awaiting {
    /// No call awaited.
    pub fn new() -> Self {
        Self::default()
    }

    /// A recorded browser call `id` starts (at `now`): its recording will be awaited when it
    /// ends. Forgets calls whose window closed, and the oldest ended one when full.
    pub fn expect(&mut self, id: &str, now: Instant) {
        self.slots.retain(|_, s| match s {
            Slot::Live | Slot::Uploading(_) => true,
            Slot::Ended(at) | Slot::Done(at) => now.saturating_duration_since(*at) <= UPLOAD_WINDOW,
        });
        if self.slots.len() >= MAX_AWAITING {
            let oldest = self
                .slots
                .iter()
                .filter_map(|(k, s)| match s {
                    Slot::Ended(at) | Slot::Done(at) => Some((*at, k.clone())),
                    _ => None,
                })
                .min();
            match oldest {
                Some((_, k)) => {
                    self.slots.remove(&k);
                }
                // every entry is live or uploading: more than the browser calls allowed
                None => return,
            }
        }
        self.slots.insert(id.to_string(), Slot::Live);
    }

    /// Call `id` ended at `now` and its record is stored: the upload window opens.
    pub fn ended(&mut self, id: &str, now: Instant) {
        if let Some(s) = self.slots.get_mut(id) {
            if *s == Slot::Live {
                *s = Slot::Ended(now);
            }
        }
    }

    /// Whether the relay decided to record call `id` (and still remembers it).
    pub fn records(&self, id: &str) -> bool {
        self.slots.contains_key(id)
    }

    /// An upload for call `id` begins at `now`: taken, or why not.
    pub fn begin(&mut self, id: &str, now: Instant) -> Result<(), Refusal> {
        let slot = self.slots.get_mut(id).ok_or(Refusal::NotAwaited)?;
        match *slot {
            Slot::Live => Err(Refusal::Live),
            Slot::Uploading(_) => Err(Refusal::InProgress),
            Slot::Done(_) => Err(Refusal::AlreadyUploaded),
            Slot::Ended(at) if now.saturating_duration_since(at) > UPLOAD_WINDOW => {
                Err(Refusal::WindowClosed)
            }
            Slot::Ended(at) => {
                *slot = Slot::Uploading(at);
                Ok(())
            }
        }
    }

    /// The upload for call `id` is over: stored (`ok`), or refused/failed, when the call
    /// awaits its recording again (a page may retry within the window).
    pub fn finish(&mut self, id: &str, ok: bool) {
        if let Some(s) = self.slots.get_mut(id) {
            if let Slot::Uploading(at) = *s {
                *s = if ok { Slot::Done(at) } else { Slot::Ended(at) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::recording::header;

    #[test]
    fn the_relays_own_header_is_accepted_and_others_are_not() {
        assert_eq!(parse_header(&header(32_000)), Ok(32_000));
        assert_eq!(parse_header(&header(0)), Ok(0));
        assert_eq!(parse_header(&header(32_000)[..43]), Err(WavError::NotWav));
        assert_eq!(parse_header(&[0xff; 44]), Err(WavError::NotWav));
        assert_eq!(parse_header(&[]), Err(WavError::NotWav));
        let with = |o: usize, b: &[u8]| {
            let mut h = header(32_000);
            h[o..o + b.len()].copy_from_slice(b);
            parse_header(&h)
        };
        // mono, 16 kHz, 8-bit, float
        assert_eq!(with(22, &1u16.to_le_bytes()), Err(WavError::Format));
        assert_eq!(with(24, &16_000u32.to_le_bytes()), Err(WavError::Format));
        assert_eq!(with(34, &8u16.to_le_bytes()), Err(WavError::Format));
        assert_eq!(with(20, &3u16.to_le_bytes()), Err(WavError::Format));
        // sizes that disagree, a torn sample frame, an extended fmt chunk
        assert_eq!(with(4, &0u32.to_le_bytes()), Err(WavError::Sizes));
        assert_eq!(with(40, &32_001u32.to_le_bytes()), Err(WavError::Sizes));
        assert_eq!(with(28, &1u32.to_le_bytes()), Err(WavError::Sizes));
        assert_eq!(with(16, &18u32.to_le_bytes()), Err(WavError::NotWav));
        assert_eq!(
            with(40, &u32::MAX.to_le_bytes()),
            Err(WavError::Sizes),
            "no overflow"
        );
    }

    #[test]
    fn any_bytes_are_answered_without_a_panic() {
        for n in 0..2000u32 {
            let len = (n % 60) as usize;
            let mut h: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
            // half of them start like a WAV so that the later checks run too
            if n % 2 == 0 && len >= 44 {
                h[..44].copy_from_slice(&header(u64::from(rand::random::<u32>())));
                h[rand::random::<u8>() as usize % 44] = rand::random();
            }
            let _ = parse_header(&h);
        }
    }

    #[test]
    fn a_recording_is_taken_once_after_the_call_ended_and_within_the_window() {
        let t0 = Instant::now();
        let mut a = Awaiting::new();
        assert_eq!(a.begin("web-1", t0), Err(Refusal::NotAwaited));
        a.expect("web-1", t0);
        assert!(a.records("web-1"));
        assert_eq!(a.begin("web-1", t0), Err(Refusal::Live));
        a.ended("web-1", t0 + Duration::from_secs(60));
        assert_eq!(a.begin("web-1", t0 + Duration::from_secs(61)), Ok(()));
        assert_eq!(
            a.begin("web-1", t0 + Duration::from_secs(61)),
            Err(Refusal::InProgress)
        );
        // a refused upload leaves the call awaiting: the page may try again
        a.finish("web-1", false);
        assert_eq!(a.begin("web-1", t0 + Duration::from_secs(62)), Ok(()));
        a.finish("web-1", true);
        assert_eq!(
            a.begin("web-1", t0 + Duration::from_secs(63)),
            Err(Refusal::AlreadyUploaded)
        );

        a.expect("web-2", t0);
        a.ended("web-2", t0);
        assert_eq!(
            a.begin("web-2", t0 + UPLOAD_WINDOW + Duration::from_secs(1)),
            Err(Refusal::WindowClosed)
        );
        // a later call forgets both
        a.expect("web-3", t0 + UPLOAD_WINDOW * 2);
        assert!(!a.records("web-1") && !a.records("web-2"));
    }

    #[test]
    fn the_slots_are_bounded_and_the_oldest_ended_call_goes_first() {
        let t0 = Instant::now();
        let mut a = Awaiting::new();
        for i in 0..MAX_AWAITING {
            let id = format!("web-{i}");
            a.expect(&id, t0);
            a.ended(&id, t0 + Duration::from_millis(i as u64));
        }
        a.expect("web-new", t0 + Duration::from_secs(1));
        assert_eq!(a.slots.len(), MAX_AWAITING);
        assert!(!a.records("web-0"), "the oldest ended call was forgotten");
        assert!(a.records("web-1") && a.records("web-new"));
    }
}
