//! A test call from the relay's own voice page (`/talk`) in headless Chromium (Debian
//! `chromium`, driven by `playwright-core` from `tests/browser/`; `npm ci` there), with a fake
//! microphone playing a sentence spoken by espeak-ng. The relay binary runs with its
//! in-process simulator playing `tests/scenarios/talk.toml`: the page opens WebRTC straight to
//! the simulator with a key from `/api/session`, the relay attaches to the call over the
//! sideband and runs the agent's tools, so the spoken request books an appointment in the
//! relay's database. The dashboard, in a second tab, shows the web call and hangs it up; the
//! page sees its call end. Screenshots go to `target/tmp/talk/`.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::browser::{artifact_dir, run_browser_script, speech_wav};
use support::{msg, Relay};

const TOKEN: &str = "talk-test-token-93c1";
/// What the fake microphone says (the scenario's `heard` for the caller's turn).
const REQUEST: &str = "I would like to book an appointment on Tuesday at ten";

/// Runs `tests/browser/talk.mjs` against the relay at `url`, the microphone playing `wav`;
/// what it saw.
fn run_talk(url: &str, wav: &Path, artifact_dir: &Path) -> Value {
    let wav = wav.display().to_string();
    run_browser_script(
        "talk.mjs",
        artifact_dir,
        &[
            ("DASHBOARD_URL", url),
            ("DASHBOARD_TOKEN", TOKEN),
            ("SPEECH_WAV", &wav),
            ("AGENT", "receptionist"),
            ("RECORDED", "1"),
        ],
        &[],
    )
}

/// `GET {base}{path}` with the token: the JSON answer (a 2xx is required).
fn get(base: &str, path: &str) -> Value {
    let body = get_bytes(base, path);
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// `GET {base}{path}` with the token: the body's bytes (a 2xx is required).
fn get_bytes(base: &str, path: &str) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.bytes().await.unwrap().to_vec()
    })
}

/// A recording's two channels (8 kHz stereo 16-bit WAV, the relay's format), as -1..1.
fn channels(wav: &[u8]) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(&wav[0..4], b"RIFF");
    assert_eq!(&wav[8..16], b"WAVEfmt ");
    let u16_at = |o: usize| u16::from_le_bytes([wav[o], wav[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(wav[o..o + 4].try_into().unwrap());
    assert_eq!(
        (u16_at(20), u16_at(22), u32_at(24), u16_at(34)),
        (1, 2, 8000, 16),
        "PCM, stereo, 8 kHz, 16-bit"
    );
    assert_eq!(
        u32_at(40) as usize,
        wav.len() - 44,
        "the header counts every sample"
    );
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for f in wav[44..].chunks_exact(4) {
        left.push(f32::from(i16::from_le_bytes([f[0], f[1]])) / 32768.0);
        right.push(f32::from(i16::from_le_bytes([f[2], f[3]])) / 32768.0);
    }
    (left, right)
}

/// The RMS of each half second.
fn rms_per_half_second(x: &[f32]) -> Vec<f32> {
    x.chunks(4000)
        .map(|c| (c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32).sqrt())
        .collect()
}

#[test]
fn a_spoken_request_on_the_talk_page_books_and_the_dashboard_hangs_up() {
    let dir = tempfile::tempdir().unwrap();
    // 6 s of silence (the greeting plays meanwhile), the request, then 4 s of silence so that
    // turn detection ends the caller's turn
    let wav = speech_wav(
        dir.path(),
        "request",
        REQUEST,
        &["norm", "-3", "pad", "6", "4"],
    );
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/talk.toml");
    let agents = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/agents");
    // no OPENAI_API_KEY (the test's environment is cleared): the in-process simulator answers
    let relay = Relay::start(&[
        ("VOXRELAY__ADMIN__TOKEN", TOKEN),
        ("VOXRELAY__AGENTS__DEFAULT", "receptionist"),
        ("VOXRELAY__AGENTS__DIR", agents.to_str().unwrap()),
        ("VOXRELAY__SIM__SCENARIO", scenario.to_str().unwrap()),
        // the call is recorded: the page records it and uploads it when it ends
        ("VOXRELAY__RECORDING__ENABLED", "true"),
        ("VOXRELAY__RECORDING__ANNOUNCE", "true"),
        ("VOXRELAY__RECORDING__DIR", "rec"),
    ]);
    relay.wait_for(
        |v| msg(v) == "admin HTTP listening",
        Duration::from_secs(10),
    );
    let base = format!("http://{}", relay.admin);
    let seen = run_talk(&base, &wav, &artifact_dir("talk"));

    // the page: connected, the greeting heard and written, the request heard, the booking
    // confirmed by the agent
    assert_eq!(
        seen["problems"],
        json!([]),
        "no errors, nothing from elsewhere: {seen}"
    );
    assert_eq!(seen["agents"], json!(["billing", "receptionist"]), "{seen}");
    assert_eq!(seen["connected"], true, "{seen}");
    assert!(seen["first_audio_ms"].as_u64().is_some(), "{seen}");
    assert_eq!(
        seen["greeting"],
        "Hello, you have reached the clinic. How can I help you today?"
    );
    assert_eq!(
        seen["caller"],
        "I would like to book an appointment on Tuesday at ten."
    );

    assert_eq!(seen["typed"], "Thank you, that is all.");
    assert_eq!(
        seen["reply"], "Is there anything else I can help you with?",
        "{seen}"
    );
    assert_eq!(
        seen["interrupted"], "false",
        "the agent stopped speaking: {seen}"
    );
    assert_eq!(
        seen["muted"],
        json!({"pressed": "true", "label": "Unmute", "track_enabled": false})
    );
    assert_eq!(seen["unmuted_track_enabled"], true);

    // the call as the relay recorded it: a web call, whose create_booking ran on the relay
    let id = seen["call_id"].as_str().expect("the relay's call id");
    let call = get(&base, &format!("/api/calls/{id}"));
    assert_eq!(call["kind"], "web", "{call}");
    assert_eq!(call["agent"], "receptionist");
    let booking = call["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "create_booking")
        .unwrap_or_else(|| panic!("no create_booking in {call}"));
    assert_eq!(booking["ok"], true, "{booking}");
    assert_eq!(booking["arguments"]["patient_name"], "Ada Lovelace");
    // and the booking is in the relay's database
    let date = booking["arguments"]["date"].as_str().unwrap();
    let list = get(&base, &format!("/api/bookings?date={date}"));
    let stored = list["bookings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["patient_name"] == "Ada Lovelace")
        .unwrap_or_else(|| panic!("the booking is not in the database: {list}"));
    assert_eq!(stored["time"], "10:00:00", "{stored}");
    assert_eq!(stored["phone"], "+12015550123");

    // the dashboard showed it as a web call with its transcript and the tool call
    assert_eq!(seen["test_call_link"], "/talk");
    assert_eq!(seen["dashboard_kind"], "web", "{seen}");
    assert!(
        seen["dashboard_from"]
            .as_str()
            .unwrap()
            .starts_with("Browser"),
        "{seen}"
    );
    let lines: Vec<&str> = seen["dashboard_lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        lines.contains(&"Hello, you have reached the clinic. How can I help you today?"),
        "{seen}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("You are booked in")),
        "{seen}"
    );
    assert!(
        seen["dashboard_tools"]
            .as_array()
            .unwrap()
            .contains(&json!("create_booking")),
        "{seen}"
    );

    // hanging up on the dashboard ended the browser's call, from the other side
    assert_eq!(seen["talk_reason"], "remote", "{seen}");
    assert_eq!(seen["talk_state"], "ended");
    assert_eq!(seen["hangup_disabled"], true);
    let ended = get(&base, &format!("/api/calls/{id}"));
    assert_eq!(ended["state"], "ended");
    assert_eq!(ended["end_reason"], "operator_hangup", "{ended}");

    // the recording: the relay said to record and to tell the caller; the page recorded the
    // call and uploaded it when the dashboard hung up; the dashboard plays it
    assert_eq!(seen["recording_notice"], "This call is recorded.", "{seen}");
    assert_eq!(seen["recording_state"], "saved", "{seen}");
    assert_eq!(seen["dashboard_player"]["visible"], true, "{seen}");
    assert_eq!(seen["dashboard_player"]["blob"], true, "{seen}");
    let rec = &ended["recording"];
    let wav = get_bytes(&base, &format!("/api/calls/{id}/recording"));
    assert_eq!(rec["bytes"], wav.len(), "{ended}");
    assert!(
        (seen["dashboard_player"]["duration"].as_f64().unwrap() * 1000.0
            - rec["duration_ms"].as_f64().unwrap())
        .abs()
            < 50.0,
        "the player plays the whole recording: {seen} {rec}"
    );
    let (left, right) = channels(&wav);
    let (l, r) = (rms_per_half_second(&left), rms_per_half_second(&right));
    println!("recording, RMS per half second:\n left  {l:.3?}\n right {r:.3?}");
    // the microphone plays 6 s of silence, the request, then silence; the recording starts
    // after the page connected (within a couple of seconds of the microphone opening): its
    // first 3 s on the left are silence, and the caller's speech is there later
    let quiet_left = l[..6].iter().cloned().fold(0.0f32, f32::max);
    let (speech_at, speech) =
        l.iter()
            .enumerate()
            .fold((0, 0.0f32), |b, (i, v)| if *v > b.1 { (i, *v) } else { b });
    assert!(speech > 0.05, "the caller's speech is on the left: {l:.3?}");
    assert!(
        quiet_left < speech / 10.0,
        "the left is quiet before the caller speaks: {l:.3?}"
    );
    assert!(
        (6..=20).contains(&speech_at),
        "the caller speaks 3 to 10 s into the recording: {l:.3?}"
    );
    // the agent's greeting opens the right channel, while the caller is silent
    let greeting = r[..6].iter().cloned().fold(0.0f32, f32::max);
    assert!(greeting > 0.02, "the greeting is on the right: {r:.3?}");
    assert!(
        greeting > quiet_left * 10.0,
        "the greeting is not on the left: {l:.3?} {r:.3?}"
    );
    assert!(
        speech > r[speech_at] * 3.0,
        "the caller's speech is not on the right: {l:.3?} {r:.3?}"
    );

    // for docs/performance.md
    let bytes: u64 = seen["page_bytes"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_u64)
        .sum();
    println!(
        "talk page: connected {} ms and the greeting heard {} ms after the Connect click; \
         the page weighs {bytes} bytes (HTML+JS+CSS: {})",
        seen["connected_ms"], seen["first_audio_ms"], seen["page_bytes"]
    );
    assert_eq!(seen["page_bytes"].as_object().unwrap().len(), 3, "{seen}");
}
