//! A call's recording as heard on the line, fed by [`PhoneMedia`](super::phone_media): the
//! left channel is the caller's audio as the relay took it (the decoded frame each 20 ms tick
//! pops from the jitter buffer, before the operator's mute), the right channel exactly the
//! PCM of each packet sent to the caller (agent audio, hold sound, prompts, silence), so a
//! barge-in cut is heard where it happened. Both sides are placed by the tick's time, so
//! they stay aligned.
//!
//! The size cap is a length: a stereo 8 kHz 16-bit WAV grows 32,000 bytes a second, so the
//! recording stops cleanly (header written, file closed) at the tick that would pass the cap
//! and the call goes on unrecorded. A write error also stops it, logged once.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::warn;

use super::phone_media::PhoneMedia;
use super::prompts;
use crate::booking::store::RecordingRef;
use crate::media::frame::SAMPLE_RATE;
use crate::media::recording::{self, Recorder, Side};

/// Bytes per second of recording (stereo, 16-bit).
const BYTES_PER_SECOND: u64 = SAMPLE_RATE as u64 * 4;
/// The WAV header's size.
const HEADER: u64 = 44;

/// What the call tasks need to know about recording (from `[recording]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordingSettings {
    /// `recording.enabled`: record calls whose agent does not say otherwise.
    pub enabled: bool,
    /// The folder of the WAV files (absolute).
    pub dir: PathBuf,
    /// The file size cap in bytes (0: none).
    pub max_bytes: u64,
    /// Play the recording notice before the greeting.
    pub announce: bool,
}

impl RecordingSettings {
    /// Whether a call of an agent whose `record` is `agent` is recorded: the agent's word
    /// wins over `recording.enabled`.
    pub fn records(&self, agent: Option<bool>) -> bool {
        agent.unwrap_or(self.enabled)
    }

    /// The file of call `id`'s recording: `<dir>/<id>.wav`, with anything but letters,
    /// digits, `-` and `_` left out of the id (the relay makes ids; this keeps the file in
    /// `dir` whatever an id holds).
    pub fn path(&self, id: &str) -> PathBuf {
        let name: String = id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(64)
            .collect();
        self.dir.join(format!("{name}.wav"))
    }
}

/// At the answer of call `id` (call time `now`): starts its recording when `settings` and
/// the agent's `record` say so, and queues the recording notice when `recording.announce`
/// is on, so that it plays before the greeting. A file that cannot be created leaves the
/// call unrecorded (logged), never fails it.
pub fn begin(
    media: &mut PhoneMedia,
    settings: &RecordingSettings,
    agent_record: Option<bool>,
    id: &str,
    now: Duration,
) {
    if !settings.records(agent_record) {
        return;
    }
    let path = settings.path(id);
    match media.start_recording(&path, settings.max_bytes, now) {
        Ok(()) => {
            tracing::info!(file = %path.display(), "the call is recorded");
            if settings.announce {
                media.push_pcm(prompts::recording_notice());
            }
        }
        Err(e) => warn!(error = %e, file = %path.display(), "the call cannot be recorded"),
    }
}

/// A finished recording, for the call record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingInfo {
    /// The WAV file.
    pub path: PathBuf,
    /// Its size in bytes, header included.
    pub bytes: u64,
    /// Its length.
    pub duration: Duration,
    /// When the recording starts, from the call's start (the clock of the transcript's
    /// `at_ms`).
    pub offset: Duration,
    /// It stopped at the size cap before the call ended.
    pub capped: bool,
}

impl From<RecordingInfo> for RecordingRef {
    fn from(i: RecordingInfo) -> Self {
        Self {
            path: i.path.to_string_lossy().into_owned(),
            bytes: i.bytes,
            duration_ms: i.duration.as_millis() as u64,
            offset_ms: i.offset.as_millis() as u64,
            deleted_at: None,
        }
    }
}

/// The recording of one call while it runs. See the module docs.
#[derive(Debug)]
pub struct CallRecording {
    /// `None` once stopped (cap, error).
    recorder: Option<Recorder>,
    path: PathBuf,
    /// Call time of the recording's first sample.
    start: Duration,
    /// Recording time at which it stops (`None`: no cap).
    limit: Option<Duration>,
    /// The length once stopped early.
    stopped: Option<Duration>,
    capped: bool,
}

impl CallRecording {
    /// Starts a recording into `path` at call time `now`, stopping at `max_bytes` of file
    /// (0: no cap).
    pub fn start(path: &Path, max_bytes: u64, now: Duration) -> io::Result<Self> {
        let limit = (max_bytes > 0).then(|| {
            Duration::from_micros(max_bytes.saturating_sub(HEADER) * 1_000_000 / BYTES_PER_SECOND)
        });
        Ok(Self {
            recorder: Some(Recorder::create(path)?),
            path: path.to_path_buf(),
            start: now,
            limit,
            stopped: None,
            capped: false,
        })
    }

    /// The caller's frame taken at call time `now`.
    pub fn caller(&mut self, now: Duration, pcm: &[i16]) {
        self.write(Side::Caller, now, pcm);
    }

    /// The PCM sent to the caller at call time `now`.
    pub fn agent(&mut self, now: Duration, pcm: &[i16]) {
        self.write(Side::Agent, now, pcm);
    }

    fn write(&mut self, side: Side, now: Duration, pcm: &[i16]) {
        let Some(rec) = self.recorder.as_mut() else {
            return;
        };
        let at = now.saturating_sub(self.start);
        let len = Duration::from_micros(pcm.len() as u64 * 1_000_000 / SAMPLE_RATE as u64);
        if self.limit.is_some_and(|limit| at + len > limit) {
            self.capped = true;
            self.stop("the recording reached recording.max_call_mb: it stops here");
            return;
        }
        if let Err(e) = rec.write(side, at, pcm) {
            warn!(error = %e, "writing the recording failed: it stops here");
            self.stop_quietly();
        }
    }

    fn stop(&mut self, why: &'static str) {
        tracing::info!("{why}");
        self.stop_quietly();
    }

    fn stop_quietly(&mut self) {
        if let Some(rec) = self.recorder.take() {
            match rec.finish() {
                Ok(d) => self.stopped = Some(d),
                Err(e) => {
                    warn!(error = %e, "closing the recording failed");
                    // what reached the file is kept readable
                    let _ = recording::repair_wav(&self.path);
                }
            }
        }
    }

    /// Ends the recording (if still running) and describes the file; `None` when there is no
    /// file left to describe.
    pub fn finish(mut self) -> Option<RecordingInfo> {
        self.stop_quietly();
        let bytes = std::fs::metadata(&self.path).ok()?.len();
        let duration = self.stopped.unwrap_or_else(|| {
            Duration::from_micros(bytes.saturating_sub(HEADER) * 1_000_000 / BYTES_PER_SECOND)
        });
        Some(RecordingInfo {
            path: self.path,
            bytes,
            duration,
            offset: self.start,
            capped: self.capped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_agents_record_wins_over_the_global_switch() {
        let on = RecordingSettings {
            enabled: true,
            ..RecordingSettings::default()
        };
        let off = RecordingSettings::default();
        assert!(on.records(None));
        assert!(!on.records(Some(false)));
        assert!(!off.records(None));
        assert!(off.records(Some(true)));
    }

    #[test]
    fn a_recordings_file_stays_in_its_folder() {
        let s = RecordingSettings {
            dir: PathBuf::from("/rec"),
            ..RecordingSettings::default()
        };
        assert_eq!(s.path("00ab12cd"), Path::new("/rec/00ab12cd.wav"));
        assert_eq!(s.path("../../etc/x"), Path::new("/rec/etcx.wav"));
    }

    #[test]
    fn the_cap_stops_the_recording_cleanly_and_the_file_stays_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.wav");
        // room for one second of audio after the header
        let mut r = CallRecording::start(&path, HEADER + BYTES_PER_SECOND, ms(500)).unwrap();
        for k in 0..100u64 {
            r.caller(ms(500 + k * 20), &[100; 160]);
            r.agent(ms(500 + k * 20), &[-100; 160]);
        }
        let info = r.finish().unwrap();
        assert!(info.capped);
        assert_eq!(info.offset, ms(500));
        assert_eq!(info.duration, Duration::from_secs(1));
        assert_eq!(info.bytes, HEADER + BYTES_PER_SECOND);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, info.bytes);
        let data = u32::from_le_bytes(bytes[40..44].try_into().unwrap()) as u64;
        assert_eq!(data, BYTES_PER_SECOND, "the header counts every sample");
    }

    #[test]
    fn without_a_cap_both_sides_land_at_their_tick() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.wav");
        let mut r = CallRecording::start(&path, 0, ms(40)).unwrap();
        r.caller(ms(40), &[1; 160]);
        r.agent(ms(60), &[2; 160]);
        let info = r.finish().unwrap();
        assert!(!info.capped);
        assert_eq!(info.duration, ms(40));
        let b = std::fs::read(&path).unwrap();
        let sample = |i: usize, ch: usize| {
            let o = 44 + i * 4 + ch * 2;
            i16::from_le_bytes([b[o], b[o + 1]])
        };
        assert_eq!((sample(0, 0), sample(0, 1)), (1, 0));
        assert_eq!((sample(160, 0), sample(160, 1)), (0, 2));
    }
}
