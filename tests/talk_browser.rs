//! A test call from the relay's own voice page (`/talk`) in headless Chromium (Debian
//! `chromium`, driven by `playwright-core` from `tests/browser/`; `npm ci` there), with a fake
//! microphone playing a sentence spoken by espeak-ng. The relay binary runs with its
//! in-process simulator playing `tests/scenarios/talk.toml`: the page opens WebRTC straight to
//! the simulator with a key from `/api/session`, the relay attaches to the call over the
//! sideband and runs the agent's tools, so the spoken request books an appointment in the
//! relay's database. The dashboard, in a second tab, shows the web call and hangs it up; the
//! page sees its call end. Screenshots go to `target/tmp/talk/`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::{msg, Relay};

const TOKEN: &str = "talk-test-token-93c1";
/// What the fake microphone says (the scenario's `heard` for the caller's turn).
const REQUEST: &str = "I would like to book an appointment on Tuesday at ten";

/// The microphone's sound: 6 s of silence (the greeting plays meanwhile), the request, then
/// 4 s of silence so that turn detection ends the caller's turn. 48 kHz mono PCM16.
fn speech_file(dir: &Path) -> PathBuf {
    let raw = dir.join("request-raw.wav");
    let wav = dir.join("request.wav");
    let spoke = Command::new("espeak-ng")
        .args(["-s", "150", "-w"])
        .arg(&raw)
        .arg(REQUEST)
        .status()
        .expect("espeak-ng runs");
    assert!(spoke.success(), "espeak-ng failed");
    let converted = Command::new("sox")
        .arg(&raw)
        .args(["-r", "48000", "-c", "1", "-b", "16"])
        .arg(&wav)
        .args(["norm", "-3", "pad", "6", "4"])
        .status()
        .expect("sox runs");
    assert!(converted.success(), "sox failed");
    wav
}

/// Runs `tests/browser/talk.mjs` against the relay at `url`; what it saw.
fn run_talk(url: &str, wav: &Path, artifact_dir: &Path) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci` in tests/browser"
    );
    let out = Command::new("node")
        .arg("talk.mjs")
        .current_dir(&dir)
        .env("DASHBOARD_URL", url)
        .env("DASHBOARD_TOKEN", TOKEN)
        .env("SPEECH_WAV", wav)
        .env("AGENT", "receptionist")
        .env("ARTIFACT_DIR", artifact_dir)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the talk script failed (screenshots in {}):\n{}\n{stdout}",
        artifact_dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("script output ({e}): {stdout}"))
}

/// `GET {base}{path}` with the token: the JSON answer (a 2xx is required).
fn get(base: &str, path: &str) -> Value {
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
        resp.json().await.unwrap()
    })
}

#[test]
fn a_spoken_request_on_the_talk_page_books_and_the_dashboard_hangs_up() {
    let dir = tempfile::tempdir().unwrap();
    let wav = speech_file(dir.path());
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/talk.toml");
    let agents = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/agents");
    // no OPENAI_API_KEY (the test's environment is cleared): the in-process simulator answers
    let relay = Relay::start(&[
        ("VOXRELAY__ADMIN__TOKEN", TOKEN),
        ("VOXRELAY__AGENTS__DEFAULT", "receptionist"),
        ("VOXRELAY__AGENTS__DIR", agents.to_str().unwrap()),
        ("VOXRELAY__SIM__SCENARIO", scenario.to_str().unwrap()),
    ]);
    relay.wait_for(
        |v| msg(v) == "admin HTTP listening",
        Duration::from_secs(10),
    );
    let base = format!("http://{}", relay.admin);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("talk");
    let seen = run_talk(&base, &wav, &shots);

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
