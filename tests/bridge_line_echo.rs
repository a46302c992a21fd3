//! A caller whose line returns the agent's own voice (a speakerphone, a poor hybrid) at −10 dB
//! with 80 ms of delay, against the relay and its in-process simulator: with the echo gate
//! the agent's echo never interrupts it, and the caller's one real turn still reaches the
//! model and is answered; without the gate the same line interrupts the agent. On the same
//! line, a caller's "uh-huh" over the agent does not stop it, and talking over it does.

mod support;

use std::collections::VecDeque;
use std::time::Duration;

use support::agent::{agent_env, speech};
use support::uac::Uac;
use support::{msg, Relay};
use voxrelay::media::g711::Law;

const FRAME: usize = 160;
/// The line returns the agent at −10 dB (amplitude × 0.316).
const ECHO_GAIN: f32 = 0.316;

/// What one call on the echo line saw.
struct LineCall {
    /// Agent audio frames heard before the caller spoke, and after.
    agent_before: usize,
    agent_after: usize,
    /// The relay's `barge-in` log lines.
    barge_ins: usize,
    /// The agent audio each barge-in left the caller hearing, in ms.
    residuals: Vec<u64>,
    /// The call's media stats as the admin API gives them after the call.
    media: serde_json::Value,
    /// Its transcript, likewise.
    transcript: serde_json::Value,
    /// The transcripts of the caller's turns taken for backchannel.
    backchannels: Vec<String>,
    /// Every packet the caller got: (sequence number, timestamp, marker, agent audio).
    stream: Vec<(u16, u32, bool, bool)>,
}

/// The relay's stream to the caller keeps its 20 ms clock through the agent's answers, sent
/// as they come over WebRTC: consecutive sequence numbers, each packet stamped one frame
/// after the one before it, or two where a slot waited for the agent's next frame and it did
/// not come (nothing is sent in that slot; the answer ended or paused), never less and never
/// more.
fn check_stream(stream: &[(u16, u32, bool, bool)]) {
    assert!(stream.len() > 100, "{} packets", stream.len());
    let mut skipped = 0;
    for w in stream.windows(2) {
        let ((seq_a, ts_a, ..), (seq_b, ts_b, marker, agent)) = (w[0], w[1]);
        assert_eq!(seq_b, seq_a.wrapping_add(1), "consecutive sequence numbers");
        let step = ts_b.wrapping_sub(ts_a);
        assert!(
            step == 160 || step == 320,
            "a timestamp step of {step} between {seq_a} and {seq_b}"
        );
        if step == 320 {
            skipped += 1;
            // a skipped slot ends a run: agent audio after it starts a new one
            assert!(
                !agent || marker,
                "agent audio after a skipped slot is marked"
            );
        }
    }
    let runs = stream.iter().filter(|p| p.2).count();
    // the greeting's end and the answer's: the slot after an answer's last frame waited for
    // more of it, in vain
    assert!(skipped >= 1, "no slot was left without a packet");
    assert!(
        skipped <= runs,
        "{skipped} skipped slots for {runs} runs of agent audio"
    );
}

fn loud(payload: &[u8]) -> bool {
    let mut pcm = [0i16; FRAME];
    let n = payload.len().min(FRAME);
    Law::Mu.decode(&payload[..n], &mut pcm[..n]);
    let power: f64 = pcm
        .iter()
        .map(|&s| f64::from(s) * f64::from(s))
        .sum::<f64>()
        / FRAME as f64;
    power > 100.0 * 100.0
}

/// One call: the line echoes every frame the relay sends; once the agent's greeting has
/// played and gone quiet (or, with `interrupt`, 1 s into the greeting), the caller speaks for
/// 1.5 s; the call goes on until the agent has answered and gone quiet again. Paced by the
/// relay's own packets, 20 ms apart.
fn call_on_echo_line(env: &[(&str, &str)], delay_frames: usize, interrupt: bool) -> LineCall {
    call_on_echo_line_saying(env, delay_frames, interrupt, &speech(1500))
}

/// As [`call_on_echo_line`], the caller saying `talk` (8 kHz samples).
fn call_on_echo_line_saying(
    env: &[(&str, &str)],
    delay_frames: usize,
    interrupt: bool,
    talk: &[i16],
) -> LineCall {
    let relay = Relay::start(env);
    let mut uac = Uac::new(relay.sip);
    uac.dial = "receptionist".into();
    assert_eq!(uac.invite().status(), 200, "{}", relay.dump());
    uac.ack();
    let answered = relay.wait_for(|v| msg(v) == "call answered", Duration::from_secs(10));
    let id = answered["span"]["id"].as_str().unwrap().to_string();

    let mut line: VecDeque<[u8; FRAME]> = (0..delay_frames).map(|_| [0xff; FRAME]).collect();
    let (mut seq, mut ts) = (1000u16, 5000u32);
    let (mut agent_before, mut agent_after) = (0, 0);
    let mut quiet_run = 0;
    let mut stream = Vec::new();
    // 0: the greeting, 1: the caller speaks, 2: the answer
    let mut phase = 0;
    let mut spoken = 0;
    // bounded: 10 s for the greeting, 15 s for the answer
    let mut in_phase = 0;
    for _ in 0..1500 {
        in_phase += 1;
        let Some(p) = uac.recv_rtp(Duration::from_secs(2)) else {
            panic!("the relay stopped sending: {}", relay.dump())
        };
        let payload = &p.5;
        let is_agent = loud(payload);
        stream.push((p.2, p.3, p.0, is_agent));
        match phase {
            0 if is_agent => agent_before += 1,
            2 if is_agent => agent_after += 1,
            _ => {}
        }
        quiet_run = if is_agent { 0 } else { quiet_run + 1 };
        // the line: what the relay sent, 80 ms later, at -10 dB
        let mut pcm = [0i16; FRAME];
        let n = payload.len().min(FRAME);
        Law::Mu.decode(&payload[..n], &mut pcm[..n]);
        for s in pcm.iter_mut() {
            *s = (f32::from(*s) * ECHO_GAIN) as i16;
        }
        if phase == 1 {
            for (s, t) in pcm
                .iter_mut()
                .zip(&talk[spoken * FRAME..(spoken + 1) * FRAME])
            {
                *s = s.saturating_add(*t);
            }
            spoken += 1;
        }
        let mut back = [0u8; FRAME];
        Law::Mu.encode(&pcm, &mut back);
        line.push_back(back);
        let out = line.pop_front().expect("the delay line is never empty");
        uac.send_rtp(0, seq, ts, 0x00ec_0ec0, &out);
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(FRAME as u32);
        let next = match phase {
            // the greeting played and the agent has been quiet for 1 s
            0 if interrupt => agent_before >= 50 || in_phase >= 500,
            0 => (agent_before > 25 && quiet_run >= 50) || in_phase >= 500,
            1 => spoken * FRAME >= talk.len(),
            _ => (agent_after > 25 && quiet_run >= 50) || in_phase >= 750,
        };
        if next {
            if phase == 2 {
                break;
            }
            phase += 1;
            in_phase = 0;
        }
    }
    assert_eq!(uac.bye().status(), 200);
    relay.wait_calls_ended(1, Duration::from_secs(10));
    let logs = relay.logs();
    let cuts: Vec<_> = logs.iter().filter(|v| msg(v) == "barge-in").collect();
    let barge_ins = cuts.len();
    let residuals = cuts
        .iter()
        .map(|v| v["residual_ms"].as_u64().unwrap_or(u64::MAX))
        .collect();
    let detail = support::agent::get_json(&format!("http://{}/api/calls/{id}", relay.admin));
    let backchannels = logs
        .iter()
        .filter(|v| msg(v) == "backchannel: the agent goes on")
        .map(|v| v["transcript"].as_str().unwrap_or("").to_string())
        .collect();
    LineCall {
        agent_before,
        agent_after,
        barge_ins,
        residuals,
        media: detail["media"].clone(),
        transcript: detail["transcript"].clone(),
        backchannels,
        stream,
    }
}

fn env(gate: &str) -> Vec<(String, String)> {
    let mut env = agent_env("booking");
    env.push(("VOXRELAY__BRIDGE__ECHO_GATE".into(), gate.into()));
    env
}

/// One call with the gate on or off and the echo `delay_ms` late; prints its figures.
fn run(gate: &str, delay_ms: usize) -> LineCall {
    run_call(gate, delay_ms, false)
}

fn run_call(gate: &str, delay_ms: usize, interrupt: bool) -> LineCall {
    let env = env(gate);
    let all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let c = call_on_echo_line(&all, delay_ms / 20, interrupt);
    eprintln!(
        "echo line: gate {gate}, -10 dB after {delay_ms} ms, caller interrupts: {interrupt}: {} \
         barge-ins (residual ms {:?}), agent frames {} before the caller spoke and {} after, \
         media {}",
        c.barge_ins, c.residuals, c.agent_before, c.agent_after, c.media
    );
    c
}

/// The gate on: no barge-in from the echo, and the caller's one turn answered.
fn check_gated(delay_ms: usize) {
    let c = run("true", delay_ms);
    check_stream(&c.stream);
    assert!(
        c.agent_before > 25,
        "the greeting played: {} frames",
        c.agent_before
    );
    assert_eq!(
        c.barge_ins, 0,
        "echo taken for the caller; media {}",
        c.media
    );
    // the caller's one turn reached the model: the agent answered it
    assert!(
        c.agent_after > 25,
        "the agent answered: {} frames",
        c.agent_after
    );
    assert!(
        c.media["echo_gated_frames"].as_u64().unwrap() > 25,
        "{}",
        c.media
    );
}

#[test]
fn the_agents_own_echo_80_ms_late_never_interrupts_it_and_the_caller_is_still_heard() {
    check_gated(80);
}

#[test]
fn the_agents_own_echo_40_ms_late_never_interrupts_it() {
    check_gated(40);
}

#[test]
fn the_agents_own_echo_120_ms_late_never_interrupts_it() {
    check_gated(120);
}

/// The gate on, the caller talking over the greeting: one barge-in, which cuts the agent as
/// promptly as on a clean line, and the caller's turn answered.
#[test]
fn the_caller_talking_over_the_agent_on_an_echo_line_still_interrupts_it_at_once() {
    let c = run_call("true", 80, true);
    assert_eq!(
        c.barge_ins, 1,
        "residuals {:?}; media {}",
        c.residuals, c.media
    );
    assert!(c.residuals[0] <= 40, "residual {:?} ms", c.residuals);
    assert!(
        c.agent_after > 25,
        "the agent answered: {} frames",
        c.agent_after
    );
}

/// The barge-in the realtime service owns (`bridge.barge_in_min_speech_ms = 0`, the
/// interruption at the first sound): the echo of the agent stops it.
#[test]
fn without_the_gate_the_same_line_interrupts_the_agent() {
    let mut env = env("false");
    env.push((
        "VOXRELAY__BRIDGE__BARGE_IN_MIN_SPEECH_MS".into(),
        "0".into(),
    ));
    let all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let c = call_on_echo_line(&all, 4, false);
    eprintln!(
        "echo line without the gate, service-owned barge-in: {} barge-ins, media {}",
        c.barge_ins, c.media
    );
    assert!(c.barge_ins >= 1, "no barge-in; media {}", c.media);
    assert_eq!(c.media["echo_gated_frames"], 0, "{}", c.media);
}

/// The caller says "uh-huh" (300 ms) one second into the greeting, on the echo line with the
/// gate on: the agent pauses for it and goes on; nothing is cut, nothing answers the
/// "uh-huh", and the greeting is heard to its end.
#[test]
fn an_uh_huh_over_the_greeting_does_not_stop_the_agent() {
    let scenario = support::agent::test_scenario("backchannel.toml");
    let mut env = agent_env(&scenario);
    env.push(("VOXRELAY__BRIDGE__ECHO_GATE".into(), "true".into()));
    let all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // At the agent's own level, as a caller's voice on the line would be: its frames at -13 to
    // -19 dBFS, the greeting's loud ones at -13 to -19. 6 dB quieter, as the other calls here
    // speak, it stood about at the gate's threshold over the greeting (the loudest frame played
    // in the last 320 ms, -10 dB for the line, +6 dB of margin), and passed or not by how the
    // agent's encoder had rounded the greeting's levels.
    let uh_huh: Vec<i16> = speech(300).iter().map(|&s| s.saturating_mul(2)).collect();
    let c = call_on_echo_line_saying(&all, 4, true, &uh_huh);
    eprintln!(
        "uh-huh over the greeting: {} barge-ins, backchannels {:?}, agent frames {} before and \
         {} after, media {}",
        c.barge_ins, c.backchannels, c.agent_before, c.agent_after, c.media
    );
    assert_eq!(c.barge_ins, 0, "the agent was cut; media {}", c.media);
    assert_eq!(c.backchannels, ["Uh-huh."], "{:#}", c.transcript);
    // the greeting went on after the uh-huh, and it was the agent's only turn
    assert!(
        c.agent_after > 25,
        "the agent went on: {} frames",
        c.agent_after
    );
    let turns = c.transcript.as_array().unwrap();
    let agent: Vec<_> = turns.iter().filter(|t| t["speaker"] == "agent").collect();
    assert_eq!(agent.len(), 1, "{:#}", c.transcript);
    assert_eq!(agent[0]["cut_off"], false, "{:#}", c.transcript);
    assert!(
        agent[0]["text"]
            .as_str()
            .unwrap()
            .ends_with("How can I help you today?"),
        "{:#}",
        c.transcript
    );
}
