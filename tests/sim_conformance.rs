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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_parses_every_server_event() {
    let sim = Simulator::start(SimConfig {
        listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        scenario: "booking".into(),
        api_key: None,
    })
    .await
    .unwrap();
    let python = std::env::var("VOXRELAY_CONFORMANCE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/conformance/realtime_conformance.py"
    );
    let child = tokio::process::Command::new(&python)
        .arg(script)
        .arg("--base-url")
        .arg(sim.base_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the conformance script finishes within 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "conformance failed ({}):\n{stderr}\n{stdout}\n(needs: {python} -m pip install -r tests/conformance/requirements.txt)",
        out.status
    );
    assert!(stdout.contains("\"failures\": []"), "{stdout}");
    println!("{stdout}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_reads_a_call_summary_from_the_responses_api() {
    let sim = Simulator::start(SimConfig {
        listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        scenario: "booking".into(),
        api_key: None,
    })
    .await
    .unwrap();
    let python = std::env::var("VOXRELAY_CONFORMANCE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/conformance/responses_conformance.py"
    );
    let child = tokio::process::Command::new(&python)
        .arg(script)
        .arg("--base-url")
        .arg(sim.base_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the conformance script finishes within 60 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "conformance failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    assert!(stdout.contains("\"failures\": []"), "{stdout}");
    sim.shutdown().await;
}
