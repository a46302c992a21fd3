//! Shared parts of the realtime-leg tests: a simulator on loopback, an agent, caller audio,
//! and waiting on the leg's events with a timeout.

#![allow(dead_code)] // each test binary uses its own share of these

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use voxrelay::media::frame::{Frame, FRAME_SAMPLES};
use voxrelay::openai::events::{ServerEvent, TurnDetection};
use voxrelay::openai::{AgentAudio, AgentSpec, LegEvent, RealtimeLeg, ToolSpec};
use voxrelay::sim::{SimConfig, SimHandle, Simulator};

/// A simulator on a loopback port playing `scenario` (a built-in name or a path).
pub async fn sim(scenario: &str) -> SimHandle {
    Simulator::start(SimConfig {
        listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        scenario: scenario.to_string(),
        api_key: None,
    })
    .await
    .expect("the simulator starts")
}

/// A fault scenario file from `config/scenarios/`.
pub fn scenario(name: &str) -> String {
    format!(
        "{}/config/scenarios/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The receptionist, as the bridge would describe it.
pub fn agent() -> AgentSpec {
    AgentSpec {
        instructions: "You book appointments for the clinic.".into(),
        voice: Some("marin".into()),
        tools: vec![ToolSpec {
            name: "check_availability".into(),
            description: "Free slots between two dates".into(),
            parameters: json!({"type": "object", "properties": {
                "start_date": {"type": "string"}, "end_date": {"type": "string"}}}),
        }],
        turn_detection: Some(TurnDetection {
            kind: "server_vad".into(),
            silence_duration_ms: Some(400),
            create_response: Some(true),
            interrupt_response: Some(true),
            ..Default::default()
        }),
        transcription_model: Some("gpt-4o-transcribe".into()),
        transcription_language: Some("en".into()),
        ..Default::default()
    }
}

/// 20 ms of a 440 Hz tone at 8 kHz (loud enough for the simulator's voice detector), or
/// silence.
pub fn tone(frame_no: u32, loud: bool) -> Frame {
    let mut f = [0i16; FRAME_SAMPLES];
    if loud {
        for (i, s) in f.iter_mut().enumerate() {
            let t = (frame_no as usize * FRAME_SAMPLES + i) as f32 / 8_000.0;
            *s = ((t * 440.0 * std::f32::consts::TAU).sin() * 9_000.0) as i16;
        }
    }
    f
}

/// Peak amplitude of an agent frame (G.711 decoded).
pub fn peak(audio: &AgentAudio) -> i16 {
    match audio {
        AgentAudio::Pcm(f) => f.iter().map(|s| s.saturating_abs()).max().unwrap_or(0),
        AgentAudio::G711(law, bytes) => {
            let mut pcm = [0i16; FRAME_SAMPLES];
            law.decode(bytes, &mut pcm);
            pcm.iter().map(|s| s.saturating_abs()).max().unwrap_or(0)
        }
    }
}

/// What happened while waiting.
#[derive(Debug, Default)]
pub struct Seen {
    /// Event types, in order.
    pub kinds: Vec<String>,
    /// Agent audio frames, and how many were audible.
    pub frames: usize,
    pub loud_frames: usize,
}

/// Receives until `want` matches, within `secs`; panics with what was seen otherwise.
pub async fn until(
    leg: &mut dyn RealtimeLeg,
    secs: u64,
    seen: &mut Seen,
    mut want: impl FnMut(&LegEvent) -> bool,
) -> LegEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let ev = match tokio::time::timeout_at(deadline, leg.recv()).await {
            Ok(ev) => ev,
            Err(_) => panic!("nothing matched within {secs} s; saw {:?}", seen.kinds),
        };
        match &ev {
            LegEvent::Audio(a) => {
                seen.frames += 1;
                if peak(a) > 2_000 {
                    seen.loud_frames += 1;
                }
            }
            LegEvent::Event(e) => seen.kinds.push(e.kind().to_string()),
            LegEvent::ToolCall(c) => seen.kinds.push(format!("tool:{}", c.name)),
            LegEvent::Ended(r) => seen.kinds.push(format!("ended:{r}")),
        }
        if want(&ev) {
            return ev;
        }
        if let LegEvent::Ended(r) = &ev {
            panic!(
                "the session ended ({r}) before a match; saw {:?}",
                seen.kinds
            );
        }
    }
}

/// Matches a server event of this type.
pub fn kind(k: &'static str) -> impl FnMut(&LegEvent) -> bool {
    move |ev| matches!(ev, LegEvent::Event(e) if e.kind() == k)
}

/// The simulator's record of a session.
pub async fn record(sim: &SimHandle, session_id: &str) -> Value {
    reqwest::get(format!("{}/sim/sessions/{session_id}", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// True for a `response.done` with this status.
pub fn done_with(status: &'static str) -> impl FnMut(&LegEvent) -> bool {
    move |ev| {
        matches!(ev, LegEvent::Event(ServerEvent::ResponseDone { response, .. })
            if response.status.as_deref() == Some(status))
    }
}
