//! Warm transfer, end to end: SIPp calls the relay as the caller, the in-process simulator
//! plays the agent, which calls `transfer_call` with `warm: true`; a second SIPp is the
//! person at the front desk. Both phones' media are this test's own sockets (named in their
//! SDP), so the test hears what each side hears: the caller the hold sound and then the
//! person, never the briefing; the person the agent's briefing and then the caller. A busy
//! person gives the caller back to the agent.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::agent::{sim_sessions, speech, test_scenario};
use support::{msg, sipp, sipp_from, sipp_port, Relay, SippRun};
use voxrelay::media::g711::Law;

/// The caller's tone (Hz), quiet enough (-50 dBFS) that the agent's turn detection ignores it.
const CALLER_HZ: f32 = 1000.0;
/// The person's tone.
const PERSON_HZ: f32 = 400.0;
const TONE_AMPLITUDE: f32 = 100.0;
/// No phone's media runs longer than this.
const MEDIA_LIMIT: Duration = Duration::from_secs(45);

/// A relay whose receptionist transfers to `sip:frontdesk@127.0.0.1:<person_port>`, its
/// agent played by the simulator with `scenario`.
fn relay(scenario: &str, person_port: u16) -> (Relay, tempfile::TempDir) {
    let agents = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/agents");
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let text = text.replace(
            "sip:frontdesk@127.0.0.1:5070",
            &format!("sip:frontdesk@127.0.0.1:{person_port}"),
        );
        std::fs::write(agents.path().join(entry.file_name()), text).unwrap();
    }
    let dir = agents.path().display().to_string();
    let scenario = test_scenario(scenario);
    let relay = Relay::start(&[
        // the caller's trunk, whose caller ID is trusted (the default)
        (
            "VOXRELAY__TRUNKS",
            r#"[{name = "pstn", addresses = ["127.0.0.1/32"]}]"#,
        ),
        ("VOXRELAY__AGENTS__DEFAULT", "receptionist"),
        ("VOXRELAY__AGENTS__DIR", &dir),
        ("VOXRELAY__SIM__SCENARIO", &scenario),
    ]);
    (relay, agents)
}

/// What one phone heard: each packet's audio, decoded, in order.
type Heard = Vec<Vec<i16>>;

/// A phone's media on the test's socket: waits for the relay's first packet, then sends one
/// 20 ms PCMA packet every 20 ms (`frame(k)` for the k-th) back to where it came from, and
/// keeps what it receives; until `stop`, 3 s without a packet after the first, or
/// [`MEDIA_LIMIT`].
fn phone(
    sock: UdpSocket,
    frame: impl Fn(usize) -> Vec<i16> + Send + 'static,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Heard> {
    thread::spawn(move || {
        let started = Instant::now();
        let mut heard = Heard::new();
        let mut buf = [0u8; 1500];
        let mut pcm = vec![0i16; 1500];
        let mut peer: Option<SocketAddr> = None;
        let mut last_rx = Instant::now();
        let (mut k, mut seq, ssrc) = (0usize, 1u16, rand_ssrc(&sock));
        let mut next = Instant::now();
        while started.elapsed() < MEDIA_LIMIT && !stop.load(Ordering::Acquire) {
            if peer.is_some() && last_rx.elapsed() > Duration::from_secs(3) {
                break;
            }
            if let Some(to) = peer.filter(|_| Instant::now() >= next) {
                let samples = frame(k);
                let mut packet = vec![0x80, 8];
                packet.extend_from_slice(&seq.to_be_bytes());
                packet.extend_from_slice(&(k as u32 * 160).to_be_bytes());
                packet.extend_from_slice(&ssrc.to_be_bytes());
                let mut payload = vec![0u8; samples.len()];
                Law::A.encode(&samples, &mut payload);
                packet.extend_from_slice(&payload);
                let _ = sock.send_to(&packet, to);
                k += 1;
                seq = seq.wrapping_add(1);
                next += Duration::from_millis(20);
            }
            let wait = next
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            sock.set_read_timeout(Some(wait)).unwrap();
            if let Ok((n, src)) = sock.recv_from(&mut buf) {
                if n <= 12 || buf[1] & 0x7f != 8 {
                    continue;
                }
                if peer.is_none() {
                    peer = Some(src);
                    next = Instant::now();
                }
                last_rx = Instant::now();
                let payload = &buf[12..n];
                Law::A.decode(payload, &mut pcm[..payload.len()]);
                heard.push(pcm[..payload.len()].to_vec());
            }
        }
        heard
    })
}

fn rand_ssrc(sock: &UdpSocket) -> u32 {
    0x5000_0000 | u32::from(sock.local_addr().unwrap().port())
}

fn tone(hz: f32, k: usize) -> Vec<i16> {
    (0..160)
        .map(|i| {
            let t = (k * 160 + i) as f32 / 8000.0;
            ((2.0 * std::f32::consts::PI * hz * t).sin() * TONE_AMPLITUDE) as i16
        })
        .collect()
}

/// The caller: quiet for 5.5 s (the greeting), asks for a person (1.5 s of speech), then
/// the quiet tone, for the person to hear once they are put through.
fn caller_frame(k: usize) -> Vec<i16> {
    const SPEAK_AT: usize = 275;
    thread_local!(static SPEECH: Vec<i16> = speech(1500));
    match k {
        k if k < SPEAK_AT => vec![0; 160],
        k if k < SPEAK_AT + 75 => {
            SPEECH.with(|s| s[(k - SPEAK_AT) * 160..(k - SPEAK_AT + 1) * 160].to_vec())
        }
        k => tone(CALLER_HZ, k),
    }
}

/// The share of a frame's power at `hz` (Goertzel), 0–1.
fn share_at(frame: &[i16], hz: f32) -> f32 {
    let w = 2.0 * std::f32::consts::PI * hz / 8000.0;
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &x in frame {
        let s = x as f32 + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let bin = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    let total: f32 = frame.iter().map(|&x| (x as f32) * (x as f32)).sum();
    if total < 1.0 {
        return 0.0;
    }
    // a pure tone's bin holds N/2 times its power
    (bin / (frame.len() as f32 / 2.0) / total).min(1.0)
}

fn loudness(frame: &[i16]) -> i32 {
    frame.iter().map(|&s| i32::from(s).abs()).sum::<i32>() / frame.len().max(1) as i32
}

/// Indexes of the frames that carry tone `hz`.
fn tone_frames(heard: &Heard, hz: f32) -> Vec<usize> {
    heard
        .iter()
        .enumerate()
        .filter(|(_, f)| share_at(f, hz) > 0.8 && loudness(f) > 30)
        .map(|(i, _)| i)
        .collect()
}

/// Where the tone is first heard for 200 ms on end (a vowel may have one such frame).
fn tone_starts(frames: &[usize]) -> Option<usize> {
    frames.windows(10).find(|w| w[9] - w[0] == 9).map(|w| w[0])
}

/// A SIPp scenario from `tests/sipp/<template>` with `MEDIA_PORT` set, written into `dir`.
fn with_media_port(dir: &Path, template: &str, port: u16) -> String {
    let text = std::fs::read_to_string(support::scenario(template)).unwrap();
    let path = dir.join(template);
    std::fs::write(&path, text.replace("MEDIA_PORT", &port.to_string())).unwrap();
    path.display().to_string()
}

fn socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

fn tool_output(relay: &Relay, name: &str) -> String {
    let s = &sim_sessions(relay)[0];
    let outputs = s["tool_outputs"].as_array().cloned().unwrap_or_default();
    outputs
        .iter()
        .find(|o| o["name"] == name)
        .and_then(|o| o["output"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// One call through a warm transfer: what each side did and heard.
struct Run {
    relay: Relay,
    _agents: tempfile::TempDir,
    caller: SippRun,
    person: SippRun,
    caller_heard: Heard,
    /// Empty when the person never answers.
    person_heard: Heard,
}

/// The person's SIPp plays `person` (a template: its `MEDIA_PORT` is the test's socket for
/// the person's media); the simulator plays `scenario`; SIPp calls as the caller with
/// `caller` (its `MEDIA_PORT` the test's socket for the caller's media).
fn run_call(scenario: &str, person: &str, caller: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let person_port = sipp_port();
    let (caller_sock, person_sock) = (socket(), socket());
    let caller_media = caller_sock.local_addr().unwrap().port();
    let person_media = person_sock.local_addr().unwrap().port();
    let person_scenario = with_media_port(dir.path(), person, person_media);
    let person_run = thread::spawn(move || {
        sipp_from(
            "127.0.0.1",
            "127.0.0.1:9",
            person_port,
            &person_scenario,
            &["-m", "1"],
        )
    });
    let (relay, agents) = relay(scenario, person_port);
    let stop = Arc::new(AtomicBool::new(false));
    let caller_heard = phone(caller_sock, caller_frame, stop.clone());
    let person_heard = phone(person_sock, |k| tone(PERSON_HZ, k), stop.clone());
    let caller_run = sipp(
        &relay,
        &with_media_port(dir.path(), caller, caller_media),
        &["-m", "1"],
    );
    let person_run = person_run.join().unwrap();
    stop.store(true, Ordering::Release);
    let run = Run {
        caller: caller_run,
        person: person_run,
        caller_heard: caller_heard.join().unwrap(),
        person_heard: person_heard.join().unwrap(),
        relay,
        _agents: agents,
    };
    support::assert_sipp_ok(&run.caller, 1, &run.relay);
    assert!(
        run.person.code == 0 && run.person.successful == 1,
        "the person's SIPp: exit {}\n{}\nrelay:\n{}",
        run.person.code,
        run.person.output,
        run.relay.dump()
    );
    run
}

#[test]
fn the_person_is_briefed_then_the_caller_and_the_person_hear_each_other() {
    // the person's INVITE offers PCMA alone and shows the caller's number; they answer, and
    // hang up after 12 s
    let Run {
        relay,
        caller_heard,
        person_heard,
        ..
    } = run_call("warm_transfer.toml", "warm_person.xml", "warm_caller.xml");
    // the person hung up: the relay ended the caller's call
    let end = relay.wait_calls_ended(1, Duration::from_secs(20)).remove(0);
    assert_eq!(end["reason"], "transferred", "{}", relay.dump());
    let joined = relay.wait_for(
        |v| msg(v) == "warm transfer: the caller and the person are joined; the agent leaves",
        Duration::from_secs(1),
    );
    let setup_ms = joined["setup_ms"].as_u64().unwrap();
    eprintln!("warm transfer: tool call to joined {setup_ms} ms");

    // the agent told the person, then left: its session is closed
    assert!(tool_output(&relay, "transfer_call").contains("briefing"));
    let s = &sim_sessions(&relay)[0];
    assert!(s["closed"].is_string(), "the agent left: {s:#}");

    // the caller heard the person's tone once joined, and no briefing before it
    let at_caller = tone_frames(&caller_heard, PERSON_HZ);
    assert!(
        at_caller.len() >= 100,
        "the caller heard the person: {} frames\n{}",
        at_caller.len(),
        relay.dump()
    );
    let first = tone_starts(&at_caller).expect("the person's tone, held");
    let before = &caller_heard[first.saturating_sub(40)..first];
    assert!(
        before.iter().all(|f| loudness(f) < 300),
        "on hold, not hearing the briefing: {:?}",
        before.iter().map(|f| loudness(f)).collect::<Vec<_>>()
    );
    // the person heard the agent's briefing, then the caller's tone
    let at_person = tone_frames(&person_heard, CALLER_HZ);
    assert!(
        at_person.len() >= 100,
        "the person heard the caller: {} frames",
        at_person.len()
    );
    let briefing = person_heard[..tone_starts(&at_person).expect("the caller's tone, held")]
        .iter()
        .filter(|f| loudness(f) > 500)
        .count();
    assert!(briefing >= 50, "the briefing: {briefing} loud frames");
    // the person's line carries packets from the answer on: the first loud one is when the
    // briefing reached them
    let to_briefing = person_heard.iter().position(|f| loudness(f) > 500).unwrap() * 20;
    eprintln!("warm transfer: person's answer to the briefing heard {to_briefing} ms");
    eprintln!(
        "caller heard {} packets ({} of the person), person {} ({} of the caller, {briefing} of the briefing)",
        caller_heard.len(),
        at_caller.len(),
        person_heard.len(),
        at_person.len()
    );
}

#[test]
fn a_busy_person_gives_the_caller_back_to_the_agent() {
    let Run {
        relay,
        caller_heard,
        person_heard,
        ..
    } = run_call(
        "warm_transfer_busy.toml",
        "warm_person_busy.xml",
        "warm_caller_hangs_up.xml",
    );
    assert!(person_heard.is_empty(), "the person never answered");
    let end = relay.wait_calls_ended(1, Duration::from_secs(20)).remove(0);
    assert_eq!(end["reason"], "caller_bye", "{}", relay.dump());

    let out = tool_output(&relay, "transfer_call");
    assert!(
        out.contains("busy") && out.contains("\"error\":true"),
        "{out}"
    );
    let failed = relay.wait_for(
        |v| msg(v) == "the warm transfer failed",
        Duration::from_secs(1),
    );
    assert_eq!(failed["why"], "the person's line is busy");
    // the agent took the caller back: its apology is in the call's transcript, and the
    // caller heard it after the hold
    let rec: Value = support::agent::get_json(&format!(
        "http://{}/api/calls/{}",
        relay.admin,
        end["span"]["id"].as_str().unwrap()
    ));
    let said = rec["transcript"].to_string();
    assert!(said.contains("nobody at the front desk"), "{said}");
    let loud_at_end = caller_heard
        .iter()
        .rev()
        .take(400)
        .filter(|f| loudness(f) > 500)
        .count();
    assert!(
        loud_at_end >= 50,
        "the agent's apology was heard: {loud_at_end}"
    );
}

#[test]
fn a_caller_who_hangs_up_on_hold_leaves_no_phone_ringing() {
    // the person's phone rings until it is CANCELled (and fails the run if it never is)
    let Run { relay, .. } = run_call(
        "warm_transfer.toml",
        "trunk_rings.xml",
        "warm_caller_hangs_up.xml",
    );
    let end = relay.wait_calls_ended(1, Duration::from_secs(20)).remove(0);
    assert_eq!(end["reason"], "caller_bye", "{}", relay.dump());
    // from the caller's hang-up, not the person's ring timeout
    relay.wait_for(
        |v| msg(v) == "no longer wanted: cancelling the call",
        Duration::from_secs(1),
    );
}
