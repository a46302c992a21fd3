//! Conformance with OpenAI's own types: the official `openai` Python SDK drives a WebSocket
//! session through a spoken turn, a function call and a barge-in, and every server event must
//! validate against the SDK's typed realtime models; and it asks the Responses API for a call's
//! summary, whose answer must validate as the SDK's `Response` (`tests/conformance/`).
//!
//! Needs Python 3 with `pip install -r tests/conformance/requirements.txt`; the interpreter is
//! `$VOXRELAY_CONFORMANCE_PYTHON` or else `python3`.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use voxrelay::sim::{SimConfig, Simulator};

/// Runs `script` (under tests/conformance) against a simulator playing the booking scenario,
/// within `limit`; its standard output, after checking that it succeeded and reported no
/// failures.
async fn run_script(script: &str, limit: Duration) -> String {
    let sim = Simulator::start(SimConfig {
        listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        scenario: "booking".into(),
        api_key: None,
    })
    .await
    .unwrap();
    let python = std::env::var("VOXRELAY_CONFORMANCE_PYTHON").unwrap_or_else(|_| "python3".into());
    let path = format!("{}/tests/conformance/{script}", env!("CARGO_MANIFEST_DIR"));
    let child = tokio::process::Command::new(&python)
        .arg(&path)
        .arg("--base-url")
        .arg(sim.base_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} finishes within {limit:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "conformance failed ({}):\n{stderr}\n{stdout}\n(needs: {python} -m pip install -r tests/conformance/requirements.txt)",
        out.status
    );
    assert!(stdout.contains("\"failures\": []"), "{stdout}");
    sim.shutdown().await;
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_parses_every_server_event() {
    let stdout = run_script("realtime_conformance.py", Duration::from_secs(120)).await;
    println!("{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_reads_a_call_summary_from_the_responses_api() {
    let stdout = run_script("responses_conformance.py", Duration::from_secs(60)).await;
    assert!(stdout.contains("booked KTH472"), "{stdout}");
}
