//! The dashboard in a real browser: headless Chromium (Debian `chromium`) driven by
//! `playwright-core` (`tests/browser/`, installed by `npm ci` there). The script signs in,
//! waits for a live call and a transcript line, clicks Hang up and waits for the call to end;
//! screenshots go to `target/tmp/dashboard/`. A second script plays an ended call's recording
//! and seeks it from the transcript (screenshot in `tests/artifacts/`).

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveTime, Utc};
use serde_json::{json, Value};
use support::browser::{artifact_dir, run_browser_script};
use voxrelay::admin::{self, AdminState, Readiness};
use voxrelay::booking::store::{NewBooking, RecordingRef, Store};
use voxrelay::bridge::registry::{
    CallDetail, CallEvent, CallPublisher, Control, MediaStats, Registry, Speaker, ToolCallRecord,
    Turn,
};
use voxrelay::media::recording::Recorder;
use voxrelay::metrics::Metrics;
use voxrelay::openai::session::AgentSpec;
use voxrelay::secret::Secret;

const TOKEN: &str = "browser-test-token-41d7";

/// Runs the browser script against `url` and returns what it saw.
fn run_dashboard(url: &str, token: &str, artifact_dir: &Path) -> Value {
    run_script("dashboard.mjs", url, token, artifact_dir, &[])
}

/// Runs `tests/browser/<script>` against `url` with `env` added; what it saw.
fn run_script(
    script: &str,
    url: &str,
    token: &str,
    artifact_dir: &Path,
    env: &[(&str, &str)],
) -> Value {
    let mut env = env.to_vec();
    env.extend([("DASHBOARD_URL", url), ("DASHBOARD_TOKEN", token)]);
    run_browser_script(script, artifact_dir, &env, &[])
}

fn turn(speaker: Speaker, text: &str, at_ms: u64, is_final: bool) -> Turn {
    Turn {
        speaker,
        text: text.into(),
        at_ms,
        is_final,
        cut_off: false,
        item_id: None,
    }
}

fn add_turn(p: &CallPublisher, t: Turn) {
    let index = p.update(|d| {
        d.transcript.push(t.clone());
        d.transcript.len() - 1
    });
    p.emit(CallEvent::Transcript { index, turn: t });
}

/// A call as the bridge would publish it, whose task obeys the operator's controls.
fn scripted_call(reg: &Registry) -> tokio::task::JoinHandle<()> {
    let (p, mut controls) = reg.register(CallDetail::new(
        "c-7f3a",
        "sip:+15551234567@127.0.0.1",
        "sip:+15550001111@127.0.0.1",
        "receptionist",
        Some("main"),
    ));
    p.answered();
    // as a call the relay placed would show it, once its answerer was found a person
    p.update(|d| d.answered_by = Some("person"));
    add_turn(
        &p,
        turn(
            Speaker::Agent,
            "Hello, Bright Smile Dental, this is Maya. How can I help you today?",
            400,
            true,
        ),
    );
    add_turn(
        &p,
        turn(
            Speaker::Caller,
            "Hi, I'd like to book a cleaning for Tuesday morning if you have anything.",
            4_200,
            true,
        ),
    );
    let args = json!({"start_date": "2030-01-08", "end_date": "2030-01-08"});
    p.update(|d| {
        d.tool_calls.push(ToolCallRecord {
            call_id: "call_1".into(),
            name: "check_availability".into(),
            arguments: args.clone(),
            result: json!({"slots": ["09:00", "09:30", "11:00"]}),
            ok: true,
            at_ms: 8_100,
            duration_ms: Some(14),
        });
        d.media = MediaStats {
            codec: "PCMU".into(),
            rtp_in: 1_020,
            rtp_out: 987,
            lost: 2,
            jitter_ms: 3.4,
            concealed_frames: 2,
            jitter_buffer_ms: 40,
            barge_ins: 1,
            echo_gated_frames: 0,
            audio_to_agent_s: 20.4,
            audio_to_caller_s: 14.1,
        };
    });
    add_turn(
        &p,
        turn(
            Speaker::Agent,
            "On Tuesday I have 9:00, 9:30 or 11:00. Which would suit you best?",
            8_400,
            true,
        ),
    );
    add_turn(
        &p,
        turn(Speaker::Caller, "Nine thirty would be", 12_000, false),
    );
    tokio::spawn(async move {
        while let Some(c) = controls.recv().await {
            match c {
                Control::Hangup => {
                    p.finish("operator_hangup");
                    return;
                }
                Control::Say(text) => add_turn(&p, turn(Speaker::Operator, &text, 0, true)),
                Control::Mute(muted) => {
                    p.update(|d| d.muted = muted);
                    p.emit(CallEvent::Muted { muted });
                }
                Control::Interrupt => p.emit(CallEvent::BargeIn {
                    residual_ms: 0,
                    flushed_ms: 0,
                }),
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_a_call_and_hangs_it_up() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let store = Store::open(&url, 2).await.unwrap();
    // the page asks for the browser's local day; both run on this machine
    let today = chrono::Local::now().date_naive();
    for (name, phone, h, m) in [
        ("Ada Lovelace", "+15551234567", 9, 0),
        ("Grace Hopper", "+15552345678", 10, 30),
        ("Alan Turing", "+15553456789", 14, 0),
    ] {
        store
            .insert_booking(
                &NewBooking {
                    patient_name: name.into(),
                    phone: phone.into(),
                    date: today,
                    time: NaiveTime::from_hms_opt(h, m, 0).unwrap(),
                },
                Utc::now(),
            )
            .await
            .unwrap();
    }
    let registry = Registry::new();
    let call = scripted_call(&registry);
    // a second caller still ringing, and one call from earlier
    let (_ringing, _r) = registry.register(CallDetail::new(
        "c-80be",
        "sip:+15559870000@127.0.0.1",
        "sip:+15550001111@127.0.0.1",
        "receptionist",
        Some("main"),
    ));
    let (earlier, _e) = registry.register(CallDetail::new(
        "c-61d0",
        "sip:+15553456789@127.0.0.1",
        "sip:+15550001111@127.0.0.1",
        "receptionist",
        Some("main"),
    ));
    earlier.answered();
    add_turn(
        &earlier,
        turn(
            Speaker::Caller,
            "I need to cancel my appointment.",
            900,
            true,
        ),
    );
    earlier.finish("caller_bye");

    let server = admin::start(
        "127.0.0.1:0".parse().unwrap(),
        AdminState {
            registry: registry.clone(),
            metrics: Metrics::shared(),
            store: Some(store),
            minter: None,
            session: AgentSpec::default().session(None),
            web: None,
            token: Some(Secret::new(TOKEN)),
            trunks: Default::default(),
            readiness: Arc::new(Readiness::ready),
            agents: Default::default(),
            default_agent: String::new(),
            cluster: None,
            dialer: None,
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    let shots = artifact_dir("dashboard");
    let seen = tokio::task::spawn_blocking(move || run_dashboard(&base, TOKEN, &shots))
        .await
        .unwrap();

    assert_eq!(seen["call_id"], "c-7f3a", "{seen}");
    assert_eq!(
        seen["transcript"],
        "Hello, Bright Smile Dental, this is Maya. How can I help you today?"
    );
    assert_eq!(seen["state_before"], "answered");
    // a call the relay placed: who answered it, as answering-machine detection found
    let meta = seen["meta"].as_str().unwrap();
    assert!(meta.contains("a person answered"), "{meta}");
    assert_eq!(seen["live_after"], 0);
    assert_eq!(seen["state_after"], "Ended · operator_hangup");
    assert_eq!(seen["hangup_disabled"], true);
    assert_eq!(
        seen["problems"],
        json!([]),
        "no errors, nothing loaded from elsewhere"
    );
    // the click reached the call's task, which ended the call
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call's task ended")
        .unwrap();
    assert_eq!(
        registry.get("c-7f3a").unwrap().end_reason.as_deref(),
        Some("operator_hangup")
    );
    assert!(artifact_dir("dashboard")
        .join("dashboard-live.png")
        .exists());
    server.shutdown().await;
}

/// An ended call with a recording: the dashboard's player loads it (its length known) and a
/// click on a transcript line moves it to that line's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_plays_a_calls_recording_and_a_transcript_line_seeks_it() {
    let dir = tempfile::tempdir().unwrap();
    // 6 s of call: a low tone from the caller, a higher one from the agent
    let wav = dir.path().join("c-rec1.wav");
    let mut rec = Recorder::create(&wav).unwrap();
    for k in 0..300u64 {
        let at = Duration::from_millis(k * 20);
        let tone = |hz: f32| -> Vec<i16> {
            (0..160)
                .map(|i| {
                    let t = (k * 160 + i) as f32 / 8000.0;
                    ((2.0 * std::f32::consts::PI * hz * t).sin() * 6000.0) as i16
                })
                .collect()
        };
        rec.caller(at, &tone(220.0)).unwrap();
        rec.agent(at, &tone(440.0)).unwrap();
    }
    let length = rec.finish().unwrap();
    // the page also lists today's bookings: an empty database answers them
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let store = Store::open(&url, 2).await.unwrap();
    let registry = Registry::new();
    let (p, _c) = registry.register(CallDetail::new(
        "c-rec1",
        "sip:+15551234567@127.0.0.1",
        "sip:+15550001111@127.0.0.1",
        "receptionist",
        Some("main"),
    ));
    p.answered();
    add_turn(
        &p,
        turn(Speaker::Agent, "Hello, Bright Smile Dental.", 900, true),
    );
    add_turn(
        &p,
        turn(
            Speaker::Caller,
            "I'd like to move my appointment.",
            4_500,
            true,
        ),
    );
    p.update(|d| {
        d.recording = Some(RecordingRef {
            path: wav.display().to_string(),
            bytes: std::fs::metadata(&wav).unwrap().len(),
            duration_ms: length.as_millis() as u64,
            offset_ms: 500,
            deleted_at: None,
        })
    });
    p.finish("caller_bye");
    let server = admin::start(
        "127.0.0.1:0".parse().unwrap(),
        AdminState {
            registry: registry.clone(),
            metrics: Metrics::shared(),
            store: Some(store),
            minter: None,
            session: AgentSpec::default().session(None),
            web: None,
            token: Some(Secret::new(TOKEN)),
            trunks: Default::default(),
            readiness: Arc::new(Readiness::ready),
            agents: Default::default(),
            default_agent: String::new(),
            cluster: None,
            dialer: None,
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts");
    let seen = {
        let shots = shots.clone();
        tokio::task::spawn_blocking(move || {
            run_script(
                "recording.mjs",
                &base,
                TOKEN,
                &shots,
                &[("CALL_ID", "c-rec1")],
            )
        })
        .await
        .unwrap()
    };
    let duration = seen["duration"].as_f64().unwrap();
    assert!(
        (5.9..6.1).contains(&duration),
        "the player knows the length: {seen}"
    );
    assert_eq!(seen["src_is_blob"], true, "fetched with the token: {seen}");
    // the caller's line is 4.5 s into the call, 4.0 s into the recording (which starts at 0.5 s)
    assert_eq!(seen["seek_to"], 4.0, "{seen}");
    assert_eq!(seen["before"], 0.0, "{seen}");
    let after = seen["after"].as_f64().unwrap();
    assert!(
        (3.95..5.0).contains(&after),
        "the click moved the player: {seen}"
    );
    assert_eq!(
        seen["problems"],
        json!([]),
        "no errors, nothing from elsewhere"
    );
    assert!(shots.join("dashboard-recording.png").exists());
    server.shutdown().await;
}

/// The whole path: SIPp calls the relay binary, the call shows on the dashboard with a
/// transcript line, the operator hangs up, SIPp receives the relay's BYE.
#[test]
fn a_sipp_call_appears_on_the_dashboard_and_hang_up_ends_it() {
    use support::{assert_sipp_ok, msg, sipp, Relay};
    let agents = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/agents");
    let relay = Relay::start(&[
        ("VOXRELAY__ADMIN__TOKEN", TOKEN),
        ("VOXRELAY__AGENTS__DEFAULT", "receptionist"),
        ("VOXRELAY__AGENTS__DIR", agents.to_str().unwrap()),
    ]);
    // step 1: the relay serves the admin API (needs Relay::start to call admin::start)
    relay.wait_for(
        |v| msg(v) == "admin HTTP listening",
        Duration::from_secs(10),
    );
    let relay = Arc::new(relay);
    let caller = {
        let relay = relay.clone();
        std::thread::spawn(move || sipp(&relay, "operator_hangs_up.xml", &["-m", "1"]))
    };
    // step 2: the call is listed, a transcript line appears (needs the bridge to register
    // the call and publish transcripts), Hang up ends it
    let base = format!("http://{}", relay.admin);
    let seen = run_dashboard(&base, TOKEN, &artifact_dir("dashboard-e2e"));
    assert!(
        !seen["transcript"].as_str().unwrap_or("").is_empty(),
        "{seen}"
    );
    assert!(
        seen["state_after"].as_str().unwrap().starts_with("Ended"),
        "{seen}"
    );
    assert_eq!(seen["problems"], json!([]));
    // step 3: SIPp got the relay's BYE and answered it
    let run = caller.join().unwrap();
    assert_sipp_ok(&run, 1, &relay);
}
