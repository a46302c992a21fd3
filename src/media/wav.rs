//! Reading the mono WAV files the relay ships and accepts (prompts, hold sounds): PCM16,
//! µ-law or A-law. A malformed file is an error, never a panic.

use super::g711;

/// An error reading a WAV file.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    /// Not a RIFF/WAVE file or a chunk runs past the end.
    #[error("not a WAV file: {0}")]
    Malformed(&'static str),
    /// A format this reader does not take.
    #[error("unsupported WAV format {format} at {rate} Hz, {channels} channel(s), {bits} bits (use mono PCM16, mu-law or A-law at 8 kHz)")]
    Unsupported {
        /// WAVE format tag.
        format: u16,
        /// Sample rate.
        rate: u32,
        /// Channel count.
        channels: u16,
        /// Bits per sample.
        bits: u16,
    },
}

/// Reads a mono WAV (PCM16, µ-law or A-law) sampled at one of `rates`: its rate and samples.
pub fn read_mono(bytes: &[u8], rates: &[u32]) -> Result<(u32, Vec<i16>), WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::Malformed("no RIFF/WAVE header"));
    }
    let mut pos = 12;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]) as usize;
        let body = bytes
            .get(pos + 8..pos + 8 + len)
            .ok_or(WavError::Malformed("chunk past the end"))?;
        match id {
            b"fmt " => {
                if body.len() < 16 {
                    return Err(WavError::Malformed("short fmt chunk"));
                }
                let format = u16::from_le_bytes([body[0], body[1]]);
                let channels = u16::from_le_bytes([body[2], body[3]]);
                let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                let bits = u16::from_le_bytes([body[14], body[15]]);
                fmt = Some((format, channels, rate, bits));
            }
            b"data" => {
                let (format, channels, rate, bits) =
                    fmt.ok_or(WavError::Malformed("data before fmt"))?;
                let unsupported = WavError::Unsupported {
                    format,
                    rate,
                    channels,
                    bits,
                };
                if channels != 1 || !rates.contains(&rate) {
                    return Err(unsupported);
                }
                let samples: Vec<i16> = match (format, bits) {
                    (1, 16) => body
                        .chunks_exact(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]]))
                        .collect(),
                    (7, 8) => body.iter().map(|&b| g711::ulaw_decode(b)).collect(),
                    (6, 8) => body.iter().map(|&b| g711::alaw_decode(b)).collect(),
                    _ => return Err(unsupported),
                };
                return Ok((rate, samples));
            }
            _ => {}
        }
        pos += 8 + len + (len & 1);
    }
    Err(WavError::Malformed("no data chunk"))
}

/// Reads a mono 8 kHz WAV into samples (what the phone leg plays).
pub fn read_8k(bytes: &[u8]) -> Result<Vec<i16>, WavError> {
    read_mono(bytes, &[8_000]).map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_errors() {
        assert!(read_8k(b"").is_err());
        assert!(read_8k(b"RIFF\0\0\0\0WAVEfmt \xff\xff\xff\xff").is_err());
        let stereo = b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x02\0\x40\x1f\0\0\0\0\0\0\x04\0\x10\0data\0\0\0\0";
        assert!(matches!(
            read_8k(stereo),
            Err(WavError::Unsupported { channels: 2, .. })
        ));
    }

    #[test]
    fn reads_a_mu_law_prompt() {
        let s = read_8k(include_bytes!("../../assets/prompts/goodbye.wav")).unwrap();
        assert!(s.len() > 4_000);
    }
}
