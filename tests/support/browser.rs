//! The browser tests' Rust side: the scripts in `tests/browser/` (Node, driving the system's
//! Chromium with `playwright-core`; `npm ci` there first) run as child processes, their
//! screenshots under `target/tmp/`, and a fake microphone's sound made with espeak-ng and sox.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Where a browser test's screenshots go: `target/tmp/<name>`.
pub fn artifact_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// Runs `node <script>` in `tests/browser/` with `env` and `ARTIFACT_DIR`, and returns what it
/// saw: the JSON on the last line of its output. Panics, with the script's output, when it
/// fails, and up front when `playwright-core` or one of the npm `modules` is not installed.
pub fn run_browser_script(
    script: &str,
    artifact_dir: &Path,
    env: &[(&str, &str)],
    modules: &[&str],
) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    for module in ["playwright-core"].iter().chain(modules) {
        assert!(
            dir.join("node_modules").join(module).exists(),
            "{module} is missing: run `npm ci` in tests/browser"
        );
    }
    let out = Command::new("node")
        .arg(script)
        .current_dir(&dir)
        .envs(env.iter().copied())
        .env("ARTIFACT_DIR", artifact_dir)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tests/browser/{script} failed (screenshots in {}):\n{}\n{stdout}",
        artifact_dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("script output ({e}): {stdout}"))
}

/// `text` spoken by espeak-ng (US English, 150 words a minute) as a WAV for Chromium's fake
/// microphone: 48 kHz mono 16-bit, with the sox `effects` applied (padding with silence, say).
pub fn speech_wav(dir: &Path, name: &str, text: &str, effects: &[&str]) -> PathBuf {
    let raw = dir.join(format!("{name}-raw.wav"));
    let st = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .expect("espeak-ng is installed (Debian package `espeak-ng`)");
    assert!(st.success(), "espeak-ng failed");
    let wav = dir.join(format!("{name}.wav"));
    let st = Command::new("sox")
        .arg(&raw)
        .args(["-r", "48000", "-c", "1", "-b", "16"])
        .arg(&wav)
        .args(effects)
        .status()
        .expect("sox is installed");
    assert!(st.success(), "sox failed");
    wav
}
