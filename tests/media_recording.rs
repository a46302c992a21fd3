//! Recording: the two sides time-aligned in one stereo WAV, and a file cut short by a crash
//! made valid again. Validity is judged by sox (Debian `sox`), an independent WAV reader.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use voxrelay::media::recording::{repair_dir, repair_wav, Recorder};

fn sox_samples(path: &Path) -> u64 {
    let out = Command::new("sox")
        .arg("--i")
        .arg("-s")
        .arg(path)
        .output()
        .expect("sox is installed (Debian package `sox`)");
    assert!(
        out.status.success(),
        "sox rejects {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn samples(path: &Path) -> Vec<[i16; 2]> {
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

fn sine(start: usize, n: usize, hz: f64) -> Vec<i16> {
    (start..start + n)
        .map(|i| ((i as f64 * hz * std::f64::consts::TAU / 8000.0).sin() * 8000.0) as i16)
        .collect()
}

#[test]
fn sides_stay_aligned_and_continuous_despite_timer_jitter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("call.wav");
    let mut rec = Recorder::create(&path).unwrap();
    // both sides play a continuous tone in 20 ms frames; their ticks wobble by up to 3 ms
    for k in 0..500usize {
        let wobble = [0i64, 3, -2, 1, -3, 2][k % 6];
        let at = Duration::from_micros((k as i64 * 20_000 + 5_000 + wobble * 1000) as u64);
        rec.caller(at, &sine(k * 160, 160, 440.0)).unwrap();
        let at = Duration::from_micros((k as i64 * 20_000 + 5_000 - wobble * 1000) as u64);
        rec.agent(at, &sine(k * 160, 160, 660.0)).unwrap();
    }
    assert_eq!(rec.late_samples(), 0);
    rec.finish().unwrap();
    assert_eq!(sox_samples(&path), 500 * 160 + 40);
    let s = samples(&path);
    // 5 ms of silence, then each side is its tone sample for sample: no gap, no overlap
    assert!(s[..40].iter().all(|x| *x == [0, 0]));
    let l: Vec<i16> = s[40..].iter().map(|x| x[0]).collect();
    let r: Vec<i16> = s[40..].iter().map(|x| x[1]).collect();
    assert_eq!(l, sine(0, 80_000, 440.0));
    assert_eq!(r, sine(0, 80_000, 660.0));
}

#[test]
fn a_side_that_pauses_resumes_at_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pause.wav");
    let mut rec = Recorder::create(&path).unwrap();
    for k in 0..200u64 {
        rec.caller(Duration::from_millis(k * 20), &[100; 160])
            .unwrap();
        // the agent talks 0.4-1 s and 3-4 s
        if (20..50).contains(&k) || (150..200).contains(&k) {
            rec.agent(Duration::from_millis(k * 20), &[200; 160])
                .unwrap();
        }
    }
    rec.finish().unwrap();
    let s = samples(&path);
    assert_eq!(s.len(), 32_000);
    let right = |from_ms: usize, to_ms: usize| {
        s[from_ms * 8..to_ms * 8]
            .iter()
            .map(|x| x[1])
            .collect::<Vec<_>>()
    };
    assert!(right(0, 400).iter().all(|&v| v == 0));
    assert!(right(400, 1000).iter().all(|&v| v == 200));
    assert!(right(1000, 3000).iter().all(|&v| v == 0));
    assert!(right(3000, 4000).iter().all(|&v| v == 200));
    assert!(s.iter().all(|x| x[0] == 100));
}

#[test]
fn a_crash_leaves_a_file_that_repair_makes_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.wav");
    let mut rec = Recorder::create(&path).unwrap();
    for k in 0..180u64 {
        rec.caller(
            Duration::from_millis(k * 20),
            &sine(k as usize * 160, 160, 300.0),
        )
        .unwrap();
    }
    // the process dies: no finish(); the last write was torn mid-sample
    drop(rec);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, &[1, 2, 3]).unwrap();
    drop(f);
    let len = std::fs::metadata(&path).unwrap().len();
    let stale =
        u32::from_le_bytes(std::fs::read(&path).unwrap()[40..44].try_into().unwrap()) as u64;
    assert!(stale < len - 44 - 3, "the header is behind the data");

    assert_eq!(repair_dir(dir.path()).unwrap(), vec![path.clone()]);
    let fixed_len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(fixed_len, len - 3, "the torn sample is cut");
    assert_eq!(sox_samples(&path), (fixed_len - 44) / 4);
    // what was streamed before the crash is all there (all but the last 300 ms held back)
    assert!((fixed_len - 44) / 4 >= 180 * 160 - 2400 - 1600);
    // repairing again changes nothing
    assert!(!repair_wav(&path).unwrap());
}

#[test]
fn repair_leaves_other_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.wav"), b"not a wav").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
    assert!(repair_wav(&dir.path().join("junk.wav")).is_err());
    assert!(repair_dir(dir.path()).unwrap().is_empty());
    assert!(repair_dir(&dir.path().join("missing")).unwrap().is_empty());
}
