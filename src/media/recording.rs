//! Call recording (off by default): one stereo WAV per call, the caller on the left and the
//! agent on the right, 8 kHz 16-bit, the two sides aligned by the time each frame was heard.
//!
//! Streamed: each side writes into a one-second ring at the position its time gives, and
//! what is older than the newest audio by 300 ms goes to disk, so memory stays bounded
//! however long the call. The header's sizes are rewritten about once a second and at the
//! end; if the process dies in between, [`repair_wav`] (run over the folder at startup by
//! [`repair_dir`]) rewrites them from the file's length, so every recording opens.
//!
//! The only IO in `media`: small sequential writes to a local file. The call task may own
//! the recorder directly (a write is a page-cache copy) or hand frames to a blocking task.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::frame::{FRAME_SAMPLES, SAMPLE_RATE};

/// Which side of the call a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// What the caller said (left channel).
    Caller = 0,
    /// What the agent said (right channel).
    Agent = 1,
}

const HEADER: u64 = 44;
const CHANNELS: u16 = 2;
const BLOCK_ALIGN: u16 = CHANNELS * 2;
/// Ring of stereo samples (~1 s).
const RING: usize = 8192;
/// Audio this far behind the newest stays in memory, so the slower side can still land.
const LAG: u64 = 2400;
/// Write out in chunks of about this much (200 ms).
const CHUNK: u64 = 1600;
/// A side's frame this close to where its last one ended continues it (timer jitter);
/// further away it is placed by its time (a pause, or drift).
const SNAP: u64 = FRAME_SAMPLES as u64;
/// Rewrite the header's sizes after about this many bytes (1 s).
const HEADER_EVERY: u64 = SAMPLE_RATE as u64 * BLOCK_ALIGN as u64;

/// Writes one call's stereo recording. See the module docs.
#[derive(Debug)]
pub struct Recorder {
    file: File,
    path: PathBuf,
    ring: Box<[[i16; 2]]>,
    /// Absolute sample index of the first sample not yet written out.
    base: u64,
    /// Per side, the absolute sample index its audio reaches.
    end: [u64; 2],
    scratch: Vec<u8>,
    data_bytes: u64,
    header_at: u64,
    late_samples: u64,
}

impl Recorder {
    /// Creates (or truncates) `path` and writes a header for an empty recording.
    pub fn create(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        file.write_all(&header(0))?;
        Ok(Self {
            file,
            path,
            ring: vec![[0; 2]; RING].into_boxed_slice(),
            base: 0,
            end: [0; 2],
            scratch: Vec::with_capacity(RING * BLOCK_ALIGN as usize),
            data_bytes: 0,
            header_at: 0,
            late_samples: 0,
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Samples that arrived too late to place (more than 300 ms behind the other side).
    pub fn late_samples(&self) -> u64 {
        self.late_samples
    }

    /// Records `pcm` for `side`, heard at `at` (time since the call started).
    pub fn write(&mut self, side: Side, at: Duration, pcm: &[i16]) -> io::Result<()> {
        let ch = side as usize;
        let mut pos = at.as_micros() as u64 * SAMPLE_RATE as u64 / 1_000_000;
        if pos.abs_diff(self.end[ch]) <= SNAP && self.end[ch] > 0 {
            pos = self.end[ch];
        }
        let mut pcm = pcm;
        if pos < self.base {
            let skip = (self.base - pos).min(pcm.len() as u64);
            self.late_samples += skip;
            pcm = &pcm[skip as usize..];
            pos = self.base;
        }
        if pcm.is_empty() {
            return Ok(());
        }
        let end = pos + pcm.len() as u64;
        if end > self.base + RING as u64 {
            self.drain_to(end - RING as u64)?;
        }
        for (i, &s) in pcm.iter().enumerate() {
            self.ring[((pos + i as u64) % RING as u64) as usize][ch] = s;
        }
        self.end[ch] = self.end[ch].max(end);
        let newest = self.end[0].max(self.end[1]);
        if newest >= self.base + LAG + CHUNK {
            self.drain_to(newest - LAG)?;
        }
        Ok(())
    }

    /// Records the caller's audio (left).
    pub fn caller(&mut self, at: Duration, pcm: &[i16]) -> io::Result<()> {
        self.write(Side::Caller, at, pcm)
    }

    /// Records the agent's audio (right).
    pub fn agent(&mut self, at: Duration, pcm: &[i16]) -> io::Result<()> {
        self.write(Side::Agent, at, pcm)
    }

    /// Writes out the rest, fixes the header and closes the file. Returns the recording's
    /// length.
    pub fn finish(mut self) -> io::Result<Duration> {
        let newest = self.end[0].max(self.end[1]);
        self.drain_to(newest)?;
        self.write_header()?;
        self.file.sync_data()?;
        let frames = self.data_bytes / BLOCK_ALIGN as u64;
        Ok(Duration::from_micros(
            frames * 1_000_000 / SAMPLE_RATE as u64,
        ))
    }

    /// Writes samples `[base, upto)` to the file and frees their ring cells.
    /// In chunks of at most the ring, so the scratch buffer never grows (a side jumping far
    /// ahead writes silence chunk by chunk).
    fn drain_to(&mut self, upto: u64) -> io::Result<()> {
        while self.base < upto {
            let stop = upto.min(self.base + RING as u64);
            self.scratch.clear();
            for abs in self.base..stop {
                let cell = &mut self.ring[(abs % RING as u64) as usize];
                self.scratch.extend_from_slice(&cell[0].to_le_bytes());
                self.scratch.extend_from_slice(&cell[1].to_le_bytes());
                *cell = [0; 2];
            }
            self.file.write_all(&self.scratch)?;
            self.data_bytes += self.scratch.len() as u64;
            self.base = stop;
        }
        if self.data_bytes - self.header_at >= HEADER_EVERY {
            self.write_header()?;
        }
        Ok(())
    }

    fn write_header(&mut self) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&header(self.data_bytes))?;
        self.file.seek(SeekFrom::End(0))?;
        self.header_at = self.data_bytes;
        Ok(())
    }
}

/// A canonical 44-byte PCM WAV header: 8 kHz, stereo, 16-bit, `data_bytes` of samples.
pub fn header(data_bytes: u64) -> [u8; 44] {
    let data = data_bytes.min(u32::MAX as u64 - 36) as u32;
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&(SAMPLE_RATE * BLOCK_ALIGN as u32).to_le_bytes());
    h[32..34].copy_from_slice(&BLOCK_ALIGN.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    h
}

/// Makes a WAV file left by a crash valid: its sizes are rewritten from the file's length
/// and a torn last sample frame is cut off. Returns true if it changed anything. Fails with
/// `InvalidData` for a file that is not a canonical PCM WAV (for instance, shorter than its
/// header).
pub fn repair_wav(path: &Path) -> io::Result<bool> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let mut h = [0u8; 44];
    if len < HEADER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "shorter than a WAV header",
        ));
    }
    file.read_exact(&mut h)?;
    if &h[0..4] != b"RIFF" || &h[8..12] != b"WAVE" || &h[12..16] != b"fmt " || &h[36..40] != b"data"
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a canonical PCM WAV",
        ));
    }
    let align = u16::from_le_bytes([h[32], h[33]]).max(1) as u64;
    let data = (len - HEADER) / align * align;
    let mut changed = false;
    if HEADER + data != len {
        file.set_len(HEADER + data)?;
        changed = true;
    }
    let data32 = data.min(u32::MAX as u64 - 36) as u32;
    let riff = (36 + data32).to_le_bytes();
    let size = data32.to_le_bytes();
    if h[4..8] != riff || h[40..44] != size {
        file.seek(SeekFrom::Start(4))?;
        file.write_all(&riff)?;
        file.seek(SeekFrom::Start(40))?;
        file.write_all(&size)?;
        changed = true;
    }
    if changed {
        file.sync_data()?;
    }
    Ok(changed)
}

/// Repairs every `.wav` in `dir` (see [`repair_wav`]); for startup. Returns the files it
/// changed. Files it cannot read as WAV are left alone; a missing folder is not an error.
pub fn repair_dir(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut fixed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(fixed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("wav"))
            && matches!(repair_wav(&path), Ok(true))
        {
            fixed.push(path);
        }
    }
    Ok(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_samples(path: &Path) -> Vec<[i16; 2]> {
        let bytes = std::fs::read(path).unwrap();
        bytes[44..]
            .chunks_exact(4)
            .map(|c| {
                [
                    i16::from_le_bytes([c[0], c[1]]),
                    i16::from_le_bytes([c[2], c[3]]),
                ]
            })
            .collect()
    }

    #[test]
    fn sides_land_on_their_channels_at_their_times() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wav");
        let mut r = Recorder::create(&path).unwrap();
        // caller speaks for 1 s from 0; agent answers for 0.5 s from 1.5 s
        for k in 0..50u64 {
            r.caller(Duration::from_millis(k * 20), &[1000; 160])
                .unwrap();
        }
        for k in 0..25u64 {
            r.agent(Duration::from_millis(1500 + k * 20), &[-2000; 160])
                .unwrap();
        }
        assert_eq!(r.finish().unwrap(), Duration::from_secs(2));
        let s = read_samples(&path);
        assert_eq!(s.len(), 16000);
        assert!(s[..8000].iter().all(|x| *x == [1000, 0]));
        assert!(s[8000..12000].iter().all(|x| *x == [0, 0]));
        assert!(s[12000..].iter().all(|x| *x == [0, -2000]));
    }

    #[test]
    fn header_is_rewritten_as_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.wav");
        let mut r = Recorder::create(&path).unwrap();
        for k in 0..250u64 {
            r.caller(Duration::from_millis(k * 20), &[7; 160]).unwrap();
        }
        // 5 s written in: the header already counts at least 4 s of it
        let bytes = std::fs::read(&path).unwrap();
        let data = u32::from_le_bytes(bytes[40..44].try_into().unwrap()) as u64;
        assert!(data >= 4 * HEADER_EVERY, "{data}");
        assert!(bytes.len() as u64 >= HEADER + data);
        drop(r);
    }
}
