//! A browser voice app built on the official Agents SDK (`@openai/agents-realtime`, pinned in
//! `tests/browser/package.json`) in headless Chromium with normal web security, as a user of
//! the relay would write one: the page, served from its own origin, gets an ephemeral key from
//! the relay's `GET /api/session` (its origin listed in `admin.cors_origins`) and talks WebRTC
//! straight to the Realtime API (the simulator, through the transport's `baseUrl`), with a fake
//! microphone playing a spoken question. `tests/browser/sdk.mjs` drives it; screenshots go to
//! `target/tmp/sdk/`.

mod sim_support;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sim_support::{events_received, session_of_call, sessions, start_sim};
use support::browser::{artifact_dir, run_browser_script, speech_wav};
use support::{free_tcp_port, msg, Relay};
use voxrelay::sim::SimHandle;

const SERVER_KEY: &str = "sk-sdk-browser-test";
const TOKEN: &str = "sdk-browser-admin-token-5c1e";

/// The caller: 8 s of silence (the greeting plays), the question, then silence for the rest of
/// the test (Chromium loops the file).
fn microphone(dir: &Path) -> PathBuf {
    speech_wav(
        dir,
        "mic",
        "What are your opening hours on Tuesday?",
        &["pad", "8", "60"],
    )
}

/// Runs `tests/browser/sdk.mjs` with `env`; what it saw.
fn run_sdk_page(env: &[(&str, String)]) -> Value {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_browser_script(
        "sdk.mjs",
        &artifact_dir("sdk"),
        &env,
        &["@openai/agents-realtime", "esbuild"],
    )
}

/// The simulator's record of the WebRTC call `call_id`, once `done` holds for it.
async fn sim_session(sim: &SimHandle, call_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let found = sim
        .wait_record(Duration::from_secs(10), |s| {
            s["call_id"] == call_id && done(s)
        })
        .await;
    match found {
        Some(s) => s,
        None => panic!(
            "the simulator's record of {call_id} never got there: {:#}",
            session_of_call(sim, call_id).await.unwrap_or_default()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_sdk_in_chromium_gets_a_key_from_the_relay_and_talks_to_the_simulator() {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/sdk.toml");
    let sim = start_sim(&scenario.display().to_string(), Some(SERVER_KEY)).await;
    // the app's two origins: one listed in admin.cors_origins, one not
    let page_port = free_tcp_port();
    let other_port = free_tcp_port();
    let listed = format!("[\"http://127.0.0.1:{page_port}\"]");
    let base = sim.base_url();
    let agents = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/agents");
    let relay = tokio::task::spawn_blocking(move || {
        // /api/session mints keys for the default agent (the echo agent has no session)
        let relay = Relay::start(&[
            ("VOXRELAY__AGENTS__DEFAULT", "receptionist"),
            ("VOXRELAY__AGENTS__DIR", agents.to_str().unwrap()),
            ("OPENAI_API_KEY", SERVER_KEY),
            ("VOXRELAY__OPENAI__BASE_URL", &base),
            ("VOXRELAY__ADMIN__TOKEN", TOKEN),
            ("VOXRELAY__ADMIN__CORS_ORIGINS", &listed),
            // the key count below is the browsers': none minted ahead of phone calls
            ("VOXRELAY__OPENAI__KEY_POOL", "0"),
        ]);
        relay.wait_for(
            |v| msg(v) == "admin HTTP listening",
            Duration::from_secs(10),
        );
        relay
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mic = microphone(dir.path());
    let env = vec![
        ("RELAY_URL", format!("http://{}", relay.admin)),
        ("RELAY_TOKEN", TOKEN.to_string()),
        ("CALLS_URL", format!("{}/v1/realtime/calls", sim.base_url())),
        ("PAGE_PORT", page_port.to_string()),
        ("OTHER_PORT", other_port.to_string()),
        ("MIC_WAV", mic.display().to_string()),
    ];
    let seen = tokio::task::spawn_blocking(move || run_sdk_page(&env))
        .await
        .unwrap();

    // the page: a key from the relay (its Authorization header preflighted), the call up, the
    // greeting heard, its own tool run, no error from the SDK, none in the console
    assert_eq!(
        seen["relay_answers"],
        serde_json::json!(["GET 200"]),
        "{seen}"
    );
    let call_id = seen["call_id"].as_str().expect("the SDK read Location");
    assert!(call_id.starts_with("rtc_"), "{seen}");
    assert!(
        seen["transcripts"][0]
            .as_str()
            .unwrap()
            .starts_with("Hello, you have reached the clinic"),
        "{seen}"
    );
    assert_eq!(seen["tool_runs"], serde_json::json!(["tuesday"]), "{seen}");
    assert_eq!(seen["playing_when_interrupted"], true, "{seen}");
    assert!(
        seen["after_interrupt"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "output_audio_buffer.cleared" || t == "response.done"),
        "{seen}"
    );
    assert_eq!(seen["mute"]["muted"], true, "{seen}");
    assert_eq!(
        seen["mute"]["tracksEnabled"],
        serde_json::json!([false]),
        "the microphone track is off: {seen}"
    );
    assert_eq!(seen["closed_status"], "disconnected", "{seen}");
    assert_eq!(
        seen["errors"],
        serde_json::json!([]),
        "no error event: {seen}"
    );
    assert_eq!(
        seen["problems"],
        serde_json::json!([]),
        "no console error: {seen}"
    );

    // the simulator: it heard the caller, got the tool's output, the interrupt and the close
    let s = sim_session(&sim, call_id, |s| !s["closed"].is_null()).await;
    assert_eq!(s["tool_calls"][0]["name"], "get_opening_hours", "{s:#}");
    let output = s["tool_outputs"][0]["output"].as_str().unwrap_or_default();
    assert!(output.contains("8:00 to 17:00"), "{s:#}");
    let received = events_received(&s);
    assert!(received.contains(&"response.cancel"), "{received:?}");
    assert!(
        received.contains(&"output_audio_buffer.clear"),
        "{received:?}"
    );
    assert_eq!(s["errors_sent"], serde_json::json!([]), "{s:#}");
    assert!(s["audio_received_seconds"].as_f64().unwrap() > 1.0, "{s:#}");
    // the relay minted one key for the listed origin, none for the other
    let all = sessions(&sim).await;
    assert_eq!(all["keys_minted"], 1, "{all:#}");

    // the same page on an origin the relay does not list gets no key: the browser's preflight
    // is refused, so its fetch fails and the GET is never sent
    assert_eq!(
        seen["other_origin"]["error"], "TypeError: Failed to fetch",
        "{seen}"
    );
    assert_eq!(seen["other_relay_answers"], serde_json::json!([]), "{seen}");
    // (what the browser was told: 403, no Access-Control-Allow-Origin)
    let refused = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{}/api/session", relay.admin),
        )
        .header("origin", format!("http://127.0.0.1:{other_port}"))
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    eprintln!(
        "sdk page: key from the relay {} ms; key + session.connect() {} ms; first greeting sound on the remote track {} ms after the key was asked for; bundle {} bytes ({} gzip), page {} bytes",
        seen["key_ms"], seen["connect_ms"], seen["greeting_audio_ms"],
        seen["bundle"]["js_bytes"], seen["bundle"]["js_gzip_bytes"], seen["bundle"]["html_bytes"]
    );
    drop(relay);
    sim.shutdown().await;
}
