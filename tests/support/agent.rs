//! Helpers for calls answered by a realtime agent (the in-process simulator): caller speech
//! as a pcap that SIPp plays, SIPp scenarios filled with its path, and the simulator's
//! record of what the relay told the "model".

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{msg, Relay};

/// Voice-like audio: a 140 Hz buzz with a few harmonics, loud (about -12 dBFS) and without
/// gaps, so the simulator's turn detection hears one turn of `ms` milliseconds.
pub fn speech(ms: u32) -> Vec<i16> {
    let n = ms as usize * 8;
    (0..n)
        .map(|i| {
            let t = i as f32 / 8000.0;
            let p = 2.0 * std::f32::consts::PI * 140.0 * t;
            let env = 0.75 + 0.25 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
            let v = p.sin() + 0.5 * (3.0 * p).sin() + 0.3 * (7.0 * p).sin();
            (v * env * 4500.0) as i16
        })
        .collect()
}

/// A-law encoding (G.711), enough for test audio.
fn alaw(x: i16) -> u8 {
    let mut pcm = x as i32 >> 3;
    let mask = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    let seg_end = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let seg = seg_end.iter().position(|&e| pcm <= e).unwrap_or(8);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let mut aval = (seg as i32) << 4;
    aval |= if seg < 2 {
        (pcm >> 1) & 0xF
    } else {
        (pcm >> seg) & 0xF
    };
    (aval ^ mask) as u8
}

/// Writes `pcm` as a pcap of 20 ms PCMA RTP packets (payload type 8) for SIPp's
/// `play_pcap_audio`, which sends them as they are: `stream` picks the SSRC and the first
/// sequence number, so that two plays in one call look like one phone's talk spurts and not
/// a replay of old packets.
pub fn write_pcma_pcap(path: &Path, pcm: &[i16], stream: u16) {
    let mut out = Vec::new();
    // global header: magic, v2.4, tz 0, sigfigs 0, snaplen, linktype 1 (Ethernet)
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let first = stream as usize * 5_000;
    for (i, chunk) in pcm.chunks(160).enumerate() {
        let mut rtp = vec![0x80, 8];
        rtp.extend_from_slice(&((first + i) as u16).to_be_bytes());
        rtp.extend_from_slice(&(((first + i) * 160) as u32).to_be_bytes());
        rtp.extend_from_slice(&(0x1234_5678u32 + stream as u32).to_be_bytes());
        rtp.extend(chunk.iter().map(|&s| alaw(s)));
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&[
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
        ]);
        frame.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&6002u16.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&rtp);
        let us = i as u64 * 20_000;
        out.extend_from_slice(&((us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).unwrap();
}

/// A SIPp scenario from `tests/sipp/<template>` with each `SPEECH_PCAP` replaced by a pcap
/// of `speech_ms` of caller speech (a new stream each time); all written into `dir`. Returns
/// the scenario's path.
pub fn scenario_with_speech(dir: &Path, template: &str, speech_ms: u32) -> PathBuf {
    let mut text = std::fs::read_to_string(super::scenario(template)).unwrap();
    let audio = speech(speech_ms);
    let mut n = 0;
    while text.contains("SPEECH_PCAP") {
        n += 1;
        let pcap = dir.join(format!("speech{n}.pcap"));
        write_pcma_pcap(&pcap, &audio, n);
        text = text.replacen("SPEECH_PCAP", &pcap.display().to_string(), 1);
    }
    let path = dir.join(template);
    std::fs::write(&path, text).unwrap();
    path
}

/// The in-process simulator's base URL, from the relay's WARN line.
pub fn sim_url(relay: &Relay) -> String {
    let line = relay.wait_for(
        |v| msg(v).starts_with("no OPENAI_API_KEY"),
        Duration::from_secs(5),
    );
    line["simulator"]
        .as_str()
        .expect("simulator URL")
        .to_string()
}

/// `GET url` on loopback; the body as JSON.
pub fn get_json(url: &str) -> Value {
    let body = get_text(url);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// `GET url` on loopback; the body.
pub fn get_text(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    }
}

/// `POST url` with a JSON body on loopback; the status and the body.
pub fn post_json(url: &str, body: &Value) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let body = body.to_string();
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n..];
        s = s.strip_prefix("\r\n").unwrap_or(s);
    }
    out
}

/// Every session the simulator saw.
pub fn sim_sessions(relay: &Relay) -> Vec<Value> {
    let url = format!("{}/sim/sessions", sim_url(relay));
    get_json(&url)["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Env for a relay whose calls go to the receptionist on the in-process simulator playing
/// `scenario` (a name or a path).
pub fn agent_env(scenario: &str) -> Vec<(String, String)> {
    let agents = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/agents");
    vec![
        ("VOXRELAY__AGENTS__DEFAULT".into(), "receptionist".into()),
        ("VOXRELAY__AGENTS__DIR".into(), agents.display().to_string()),
        ("VOXRELAY__SIM__SCENARIO".into(), scenario.into()),
    ]
}

/// A scenario file under `tests/scenarios`.
pub fn test_scenario(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(name)
        .display()
        .to_string()
}
