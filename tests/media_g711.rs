//! G.711 bit-exact against sox, an independent implementation, over every 16-bit input and
//! every code.
//!
//! The reference vectors are made by sox in the test setup rather than committed: 130 KiB
//! of binary that no reviewer can read would prove less than the command that makes them,
//! and running it each time keeps the check independent of this crate's own history. It
//! needs Debian's `sox` (CI installs it). `-D` turns off sox's dither, which it otherwise
//! adds when it narrows samples to 14 or 13 bits and which makes its output random. sox
//! rounds 16-bit input to the nearest 14-bit (µ-law) / 13-bit (A-law) value before
//! companding; ours does the same.

use std::path::Path;
use std::process::Command;

use voxrelay::media::g711::{alaw_decode, alaw_encode, ulaw_decode, ulaw_encode, Law};

fn sox(args: &[&str]) {
    let out = Command::new("sox")
        .args(args)
        .output()
        .expect("sox is installed (Debian package `sox`)");
    assert!(
        out.status.success(),
        "sox {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ramp(dir: &Path) -> String {
    let bytes: Vec<u8> = (i16::MIN..=i16::MAX)
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let p = dir.join("ramp.s16");
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_owned()
}

fn encode_check(encoding: &str, ours: fn(i16) -> u8) {
    let dir = tempfile::tempdir().unwrap();
    let input = ramp(dir.path());
    let out = dir.path().join("out.raw");
    // sox -D -t raw -r 8000 -e signed -b 16 -c 1 ramp.s16 -t raw -e mu-law out.raw
    sox(&[
        "-D",
        "-t",
        "raw",
        "-r",
        "8000",
        "-e",
        "signed",
        "-b",
        "16",
        "-c",
        "1",
        &input,
        "-t",
        "raw",
        "-e",
        encoding,
        out.to_str().unwrap(),
    ]);
    let want = std::fs::read(&out).unwrap();
    assert_eq!(want.len(), 65_536);
    let mismatches: Vec<(i16, u8, u8)> = (i16::MIN..=i16::MAX)
        .zip(&want)
        .filter(|(x, &w)| ours(*x) != w)
        .map(|(x, &w)| (x, ours(x), w))
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of 65536 differ, first {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
}

fn decode_check(encoding: &str, ours: fn(u8) -> i16) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("codes.raw");
    std::fs::write(&input, (0..=255u8).collect::<Vec<_>>()).unwrap();
    let out = dir.path().join("out.s16");
    // sox -D -t raw -r 8000 -e mu-law -b 8 -c 1 codes.raw -t raw -e signed -b 16 out.s16
    sox(&[
        "-D",
        "-t",
        "raw",
        "-r",
        "8000",
        "-e",
        encoding,
        "-b",
        "8",
        "-c",
        "1",
        input.to_str().unwrap(),
        "-t",
        "raw",
        "-e",
        "signed",
        "-b",
        "16",
        out.to_str().unwrap(),
    ]);
    let want: Vec<i16> = std::fs::read(&out)
        .unwrap()
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(want.len(), 256);
    for b in 0..=255u8 {
        assert_eq!(ours(b), want[b as usize], "{encoding} code {b:#04x}");
    }
}

#[test]
fn ulaw_encode_matches_sox_for_all_65536_inputs() {
    encode_check("mu-law", ulaw_encode);
}

#[test]
fn alaw_encode_matches_sox_for_all_65536_inputs() {
    encode_check("a-law", alaw_encode);
}

#[test]
fn ulaw_decode_matches_sox_for_all_256_codes() {
    decode_check("mu-law", ulaw_decode);
}

#[test]
fn alaw_decode_matches_sox_for_all_256_codes() {
    decode_check("a-law", alaw_decode);
}

#[test]
fn slice_codecs_agree_with_the_sample_functions() {
    let pcm: Vec<i16> = (i16::MIN..=i16::MAX).step_by(7).collect();
    let mut bytes = vec![0u8; pcm.len()];
    let mut back = vec![0i16; pcm.len()];
    Law::Mu.encode(&pcm, &mut bytes);
    assert!(pcm.iter().zip(&bytes).all(|(&x, &b)| ulaw_encode(x) == b));
    Law::Mu.decode(&bytes, &mut back);
    assert!(bytes.iter().zip(&back).all(|(&b, &y)| ulaw_decode(b) == y));
    Law::A.encode(&pcm, &mut bytes);
    assert!(pcm.iter().zip(&bytes).all(|(&x, &b)| alaw_encode(x) == b));
    Law::A.decode(&bytes, &mut back);
    assert!(bytes.iter().zip(&back).all(|(&b, &y)| alaw_decode(b) == y));
}
