//! A recorded call end to end: the small UDP caller speaks a known recording (one of the
//! bundled espeak-ng prompts) to the receptionist on the in-process simulator and keeps
//! everything it hears; the relay records the call. The WAV, fetched through the admin API,
//! must hold on its left channel what the caller sent (nine in ten of its loud frames at
//! least, in order: see [`frames_found`]) and on its right channel what the caller received
//! (normalised correlation at the best lag, after G.711), and begin with the recording
//! notice.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use support::agent::{agent_env, get_json};
use support::uac::Uac;
use support::{msg, Relay};
use voxrelay::media::g711::{ulaw_decode, ulaw_encode};
use voxrelay::media::wav;

/// A bundled prompt as 8 kHz PCM.
fn prompt(name: &str) -> Vec<i16> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/prompts")
        .join(format!("{name}.wav"));
    wav::read_8k(&std::fs::read(path).unwrap()).unwrap()
}

/// `GET url` on loopback: status, headers (lowercase names) and the raw body.
fn get_bytes(url: &str) -> (u16, String, Vec<u8>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head, buf[split + 4..].to_vec())
}

/// Normalised correlation of `a` and `b` where they overlap, `b` shifted by `lag` samples
/// (`a[i + lag]` against `b[i]`).
fn corr_at(a: &[i16], b: &[i16], lag: isize) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (i, &y) in b.iter().enumerate() {
        let j = i as isize + lag;
        if j < 0 || j as usize >= a.len() {
            continue;
        }
        let x = a[j as usize] as f64;
        let y = y as f64;
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    ab / (aa * bb).sqrt()
}

/// The best normalised correlation of `reference` within `recorded` over every lag: the lag
/// is found with a loud 100 ms window of the reference, then the whole overlap is scored at
/// that lag and its neighbours.
fn best_corr(recorded: &[i16], reference: &[i16]) -> (f64, isize) {
    let start = reference
        .iter()
        .position(|s| s.unsigned_abs() > 3000)
        .expect("the reference has sound");
    let window = &reference[start..(start + 800).min(reference.len())];
    let mut best = (f64::MIN, 0isize);
    for j in 0..recorded.len().saturating_sub(window.len()) {
        let c = corr_at(&recorded[j..j + window.len()], window, 0);
        if c > best.0 {
            best = (c, j as isize - start as isize);
        }
    }
    let lag = best.1;
    (-2..=2)
        .map(|d| (corr_at(recorded, reference, lag + d), lag + d))
        .fold((f64::MIN, 0), |a, b| if b.0 > a.0 { b } else { a })
}

/// How many of `reference`'s loud 20 ms frames are in `recorded`, in order, and how many
/// loud frames it has. A frame is found where it correlates at 0.95 or better within 100 ms
/// of where the frame before it was found (anywhere, for the first one found).
///
/// The caller's side of a recording is what the relay's jitter buffer played, and a buffer
/// that adapts (a frame concealed when a packet comes late, two frames crossfaded into one
/// when it holds too much) moves the rest of the speech by a frame. So the caller's speech
/// is looked for frame by frame, each frame near the one before, rather than at one lag.
fn frames_found(recorded: &[i16], reference: &[i16]) -> (usize, usize) {
    const FRAME: usize = 160;
    const WINDOW: isize = 800;
    let (mut found, mut loud) = (0, 0);
    let mut lag: Option<isize> = None;
    for (k, frame) in reference.chunks_exact(FRAME).enumerate() {
        if !frame.iter().any(|s| s.unsigned_abs() > 1000) {
            continue;
        }
        loud += 1;
        let start = (k * FRAME) as isize;
        let (lo, hi) = match lag {
            Some(l) => (start + l - WINDOW, start + l + WINDOW),
            None => (0, recorded.len() as isize),
        };
        let (lo, hi) = (lo.max(0), hi.min((recorded.len() - FRAME) as isize));
        let best = (lo..=hi)
            .map(|j| {
                (
                    corr_at(&recorded[j as usize..j as usize + FRAME], frame, 0),
                    j,
                )
            })
            .fold((f64::MIN, 0), |a, b| if b.0 > a.0 { b } else { a });
        if best.0 >= 0.95 {
            found += 1;
            lag = Some(best.1 - start);
        }
    }
    (found, loud)
}

#[test]
fn a_recorded_call_holds_what_the_caller_said_and_heard() {
    let mut env = agent_env("booking");
    env.push(("VOXRELAY__RECORDING__ENABLED".into(), "true".into()));
    env.push(("VOXRELAY__RECORDING__ANNOUNCE".into(), "true".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let relay = Relay::start(&env);
    let admin = format!("http://{}", relay.admin);

    let mut uac = Uac::new(relay.sip);
    assert_eq!(uac.invite().status(), 200);
    uac.ack();
    let answered = relay.wait_for(|v| msg(v) == "call answered", Duration::from_secs(10));
    let id = answered["span"]["id"].as_str().unwrap().to_string();

    // 2 s of silence (the notice and the greeting play), the caller's sentence, then 3 s
    // of silence for the answer; each frame sent is paced by one heard.
    let speech = prompt("anything_else");
    let mut said: Vec<i16> = vec![0; 100 * 160];
    said.extend_from_slice(&speech);
    said.resize(said.len().div_ceil(160) * 160 + 150 * 160, 0);
    let mut sent = Vec::new();
    let mut heard: Vec<(u16, Vec<u8>)> = Vec::new();
    for (i, frame) in said.chunks(160).enumerate() {
        let bytes: Vec<u8> = frame.iter().map(|&s| ulaw_encode(s)).collect();
        uac.send_rtp(0, 1000 + i as u16, 5000 + i as u32 * 160, 0x5eed, &bytes);
        sent.extend_from_slice(&bytes);
        if let Some(p) = uac.recv_rtp(Duration::from_millis(100)) {
            heard.push((p.2, p.5));
        }
    }
    assert_eq!(uac.bye().status(), 200);
    // what was still on its way
    while let Some(p) = uac.recv_rtp(Duration::from_millis(100)) {
        heard.push((p.2, p.5));
        assert!(heard.len() < 2000, "the relay stops sending after BYE");
    }
    relay.wait_for(|v| msg(v) == "call ended", Duration::from_secs(20));

    // the call's record names its recording
    let call = get_json(&format!("{admin}/api/calls/{id}"));
    let rec = &call["recording"];
    assert!(rec["bytes"].as_u64().unwrap() > 44, "{call:#}");
    let duration_ms = rec["duration_ms"].as_u64().unwrap();
    assert!(duration_ms >= 5_000, "{call:#}");

    // the file through the API: a stereo 8 kHz 16-bit WAV of the length the record says
    let (status, head, wav) = get_bytes(&format!("{admin}/api/calls/{id}/recording"));
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: audio/wav"), "{head}");
    assert_eq!(wav.len() as u64, rec["bytes"].as_u64().unwrap());
    assert_eq!(&wav[0..4], b"RIFF");
    assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 2, "stereo");
    assert_eq!(
        u32::from_le_bytes(wav[24..28].try_into().unwrap()),
        8000,
        "8 kHz"
    );
    let data = u32::from_le_bytes(wav[40..44].try_into().unwrap()) as usize;
    assert_eq!(data, wav.len() - 44, "the header counts every sample");
    assert_eq!(data as u64 / 32, duration_ms, "its length is the record's");
    let (left, right): (Vec<i16>, Vec<i16>) = wav[44..]
        .chunks_exact(4)
        .map(|c| {
            (
                i16::from_le_bytes([c[0], c[1]]),
                i16::from_le_bytes([c[2], c[3]]),
            )
        })
        .unzip();

    // left: what the caller sent, as the relay took it, frame by frame
    let sent_pcm: Vec<i16> = sent.iter().map(|&b| ulaw_decode(b)).collect();
    let (found, loud) = frames_found(&left, &sent_pcm);
    eprintln!("left: {found} of the caller's {loud} loud frames");
    assert!(loud >= 25, "the caller's sentence has {loud} loud frames");
    assert!(
        found * 10 >= loud * 9,
        "the left channel holds {found} of the caller's {loud} loud frames"
    );

    // right: what the caller heard, packet for packet
    let first_seq = heard[0].0;
    heard.sort_by_key(|(seq, _)| seq.wrapping_sub(first_seq));
    let heard_pcm: Vec<i16> = heard
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&b| ulaw_decode(b)))
        .collect();
    assert!(
        heard_pcm.iter().any(|s| s.unsigned_abs() > 3000),
        "the caller heard the agent"
    );
    let (c, lag) = best_corr(&right, &heard_pcm);
    eprintln!("right {c:.4} lag {lag}");
    assert!(
        c >= 0.9,
        "right channel vs what the caller heard: {c:.3} at lag {lag}"
    );

    // and the two are not the same audio: each side is on its own channel
    let (c, _) = best_corr(&left, &heard_pcm);
    assert!(
        c < 0.5,
        "the caller's channel does not hold the agent: {c:.3}"
    );

    // the first thing said on the line is the recording notice
    let notice = prompt("recording_notice");
    let first = right
        .iter()
        .position(|s| s.unsigned_abs() > 500)
        .expect("the agent side has sound");
    let head_of_call =
        &right[first.saturating_sub(800)..(first + notice.len() + 800).min(right.len())];
    let (c, _) = best_corr(head_of_call, &notice);
    eprintln!("notice {c:.4}");
    assert!(c >= 0.9, "the recording opens with the notice: {c:.3}");

    // the file is where recording.dir says (relative to the relay's working folder)
    assert!(relay
        .dir()
        .join("recordings")
        .join(format!("{id}.wav"))
        .exists());
}

/// At start the relay repairs a recording a crash left with a stale header, and deletes a
/// recording older than `recording.keep_days`.
#[test]
fn at_start_a_torn_recording_is_repaired_and_an_old_one_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // a crash: the header still says 0 bytes, 1,000 stereo samples and half of one follow
    let torn = dir.path().join("0000000000000001.wav");
    let mut bytes = voxrelay::media::recording::header(0).to_vec();
    bytes.extend(std::iter::repeat_n(7u8, 4002));
    std::fs::write(&torn, &bytes).unwrap();
    // a recording last written 40 days ago
    let old = dir.path().join("0000000000000002.wav");
    std::fs::write(&old, voxrelay::media::recording::header(0)).unwrap();
    let forty_days = std::time::SystemTime::now() - Duration::from_secs(40 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(forty_days)
        .unwrap();
    let folder = dir.path().display().to_string();
    let relay = Relay::start(&[
        ("VOXRELAY__RECORDING__DIR", folder.as_str()),
        ("VOXRELAY__RECORDING__KEEP_DAYS", "30"),
    ]);
    let repaired = relay.wait_for(
        |v| msg(v) == "recordings left open by a stop were repaired",
        Duration::from_secs(5),
    );
    assert_eq!(repaired["files"], 1);
    let fixed = std::fs::read(&torn).unwrap();
    assert_eq!(fixed.len(), 44 + 4000, "the torn sample is cut off");
    assert_eq!(u32::from_le_bytes(fixed[40..44].try_into().unwrap()), 4000);
    assert_eq!(
        u32::from_le_bytes(fixed[4..8].try_into().unwrap()),
        36 + 4000
    );
    let swept = relay.wait_for(
        |v| msg(v) == "old recordings deleted",
        Duration::from_secs(10),
    );
    assert_eq!(swept["files"], 1);
    assert!(!old.exists(), "the old recording is gone");
    assert!(torn.exists(), "the recent one stays");
}
