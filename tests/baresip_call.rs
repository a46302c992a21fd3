//! baresip, a real softphone, calls the relay's echo agent with a 440 Hz tone and records
//! what it hears: the tone must come back.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{msg, Relay};

/// Samples of a 16-bit mono WAV file (header skipped by finding the `data` chunk).
fn wav_samples(bytes: &[u8]) -> Vec<i16> {
    let pos = bytes
        .windows(4)
        .position(|w| w == b"data")
        .expect("a data chunk")
        + 8;
    bytes[pos..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

#[test]
fn baresip_hears_its_own_tone_back() {
    let relay = Relay::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    // baresip listens on UDP and TCP at this port
    let sip_port = support::free_udp_and_tcp_port();
    // Below the relays' RTP ranges and the kernel's ephemeral ports.
    let rtp_lo = 20000 + (std::process::id() % 45) * 20;
    let config = format!(
        "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\nmodule_path /usr/lib/baresip/modules\n\
         module g711.so\nmodule ausine.so\nmodule aubridge.so\nmodule sndfile.so\n\
         module_app account.so\nmodule_app menu.so\n\
         audio_player aubridge,sink\naudio_source ausine,440\naudio_alert aubridge,alert\n\
         ausrc_srate 48000\nauplay_srate 48000\nausrc_channels 2\n\
         rtp_ports {rtp_lo}-{}\n",
        rtp_lo + 20
    );
    std::fs::write(dir.path().join("config"), config).unwrap();
    std::fs::write(
        dir.path().join("accounts"),
        "<sip:caller@127.0.0.1>;regint=0\n",
    )
    .unwrap();
    let status = Command::new("baresip")
        .arg("-f")
        .arg(dir.path())
        .arg("-e")
        .arg(format!("/dial sip:echo@{}", relay.sip))
        .args(["-t", "4"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("baresip runs (Debian package baresip)");
    assert!(status.success(), "baresip exit {status:?}");

    let ended = relay.wait_for(
        |v| msg(v) == "call ended" && v["reason"] == "caller_bye",
        Duration::from_secs(10),
    );
    assert!(ended["rtp_in"].as_u64().unwrap() >= 100, "{ended}");

    let dec = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with("-dec.wav"))
        .expect("baresip recorded what it heard");
    let samples = wav_samples(&std::fs::read(dec.path()).unwrap());
    // Skip the first half second (call set-up, silence before the echo starts).
    let heard = &samples[samples.len().min(4000)..];
    assert!(
        heard.len() >= 8000,
        "at least a second of audio: {}",
        heard.len()
    );
    let rms =
        (heard.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / heard.len() as f64).sqrt();
    assert!(
        rms > 3000.0,
        "the tone is loud enough to hear: rms {rms:.0}"
    );
    let crossings = heard
        .windows(2)
        .filter(|w| (w[0] < 0) != (w[1] < 0))
        .count();
    let freq = crossings as f64 / 2.0 / (heard.len() as f64 / 8000.0);
    assert!(
        (420.0..460.0).contains(&freq),
        "heard {freq:.0} Hz, sent 440 Hz"
    );
}
