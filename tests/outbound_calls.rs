//! Calls the relay places (`POST /api/calls`), end to end: SIPp plays the trunk (it
//! challenges the INVITE with a 407 and checks the digest, rings, answers with PCMU, and
//! hangs up after a while), the relay binary bridges the answered call to the booking agent
//! played by its in-process simulator, which is told why it is calling. A busy callee gives a
//! stored call with outcome `busy`. Answering-machine detection: the callee's side plays a
//! recording (a person's "hello?", or a voicemail greeting and its beep); the agent answers
//! the person, and leaves its message after the beep.

mod support;

use std::thread;
use std::time::Duration;

use serde_json::{json, Value};
use support::agent::{agent_env, get_json, post_json, sim_sessions, speech, write_pcma_pcap};
use support::{msg, sipp_from, sipp_port, Relay};

const PASSWORD: &str = "trunk-secret-123";

/// A relay with the receptionist and one trunk at `127.0.0.1:port` that it may call through
/// (`outbound_proxy`), with digest credentials.
fn relay(port: u16) -> Relay {
    let env = agent_env("booking");
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let trunk = format!(
        r#"[{{name = "out", addresses = ["127.0.0.1/32"], outbound_proxy = "127.0.0.1:{port}", username = "relayuser", password_env = "OUT_TRUNK_PW"}}]"#
    );
    all.push(("VOXRELAY__TRUNKS", &trunk));
    all.push(("OUT_TRUNK_PW", PASSWORD));
    Relay::start(&all)
}

/// SIPp playing the trunk on `port` with `scenario`, in a thread of its own.
fn trunk(
    port: u16,
    scenario: &'static str,
    args: &'static [&'static str],
) -> thread::JoinHandle<support::SippRun> {
    thread::spawn(move || sipp_from("127.0.0.1", "127.0.0.1:9", port, scenario, args))
}

fn dial(relay: &Relay, body: Value) -> (u16, Value) {
    let (status, text) = post_json(&format!("http://{}/api/calls", relay.admin), &body);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn the_agent_calls_out_through_a_trunk_that_asks_for_digest_and_knows_why() {
    let port = sipp_port();
    let trunk = trunk(port, "trunk_answers.xml", &["-m", "1", "-d", "4000"]);
    let relay = relay(port);
    let context = "Remind Ada Lovelace of her check-up tomorrow at 10:00.";
    let (status, placed) = dial(
        &relay,
        json!({"to": "+12015550123", "agent": "receptionist", "trunk": "out", "context": context}),
    );
    assert_eq!(status, 202, "{placed}");
    assert_eq!(placed["state"], "dialing");
    assert_eq!(placed["to"], format!("sip:+12015550123@127.0.0.1:{port}"));
    let id = placed["id"].as_str().unwrap().to_string();

    let run = trunk.join().unwrap();
    assert!(
        run.code == 0 && run.successful == 1,
        "the trunk saw a good digest, answered and hung up: exit {}\n{}\nrelay:\n{}",
        run.code,
        run.output,
        relay.dump()
    );
    let end = relay.wait_calls_ended(1, Duration::from_secs(20)).remove(0);
    assert_eq!(end["reason"], "caller_bye", "{}", relay.dump());
    assert_eq!(end["span"]["id"], id.as_str());
    // the agent spoke to the callee: the relay sent audio, and the model was told the context
    assert!(end["rtp_out"].as_u64().unwrap() > 50, "{end}");
    let sessions = sim_sessions(&relay);
    let told = serde_json::to_string(&sessions).unwrap();
    assert!(told.contains("outbound call"), "{told}");
    assert!(told.contains(context), "{told}");
    // the call's record: ours to the callee, ended by the callee
    let call = get_json(&format!("http://{}/api/calls/{id}", relay.admin));
    assert_eq!(
        call["to"],
        format!("sip:+12015550123@127.0.0.1:{port}"),
        "{call}"
    );
    assert_eq!(
        call["from"],
        format!("sip:relayuser@127.0.0.1:{port}"),
        "{call}"
    );
    assert!(!relay.dump().contains(PASSWORD));
}

#[test]
fn a_busy_callee_is_a_stored_call_with_outcome_busy() {
    let port = sipp_port();
    let trunk = trunk(port, "trunk_busy.xml", &["-m", "1"]);
    let relay = relay(port);
    let (status, placed) = dial(&relay, json!({"to": "2015550123", "agent": "receptionist"}));
    assert_eq!(status, 202, "{placed}");
    let id = placed["id"].as_str().unwrap().to_string();
    let run = trunk.join().unwrap();
    assert_eq!(run.code, 0, "{}", run.output);
    relay.wait_for(
        |v| msg(v) == "the outbound call was not answered" && v["outcome"] == "busy",
        Duration::from_secs(10),
    );
    // stored by the task that waited for the outcome: look until it is there (bounded)
    let mut call = Value::Null;
    for _ in 0..100 {
        call = get_json(&format!("http://{}/api/calls/{id}", relay.admin));
        if call["end_reason"] == "busy" {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(call["end_reason"], "busy", "{call}");
    assert_eq!(call["answered_at"], Value::Null, "{call}");
}

#[test]
fn bad_requests_are_refused_before_any_sip() {
    let relay = relay(9);
    for (body, status, code) in [
        (
            json!({"to": "not a number", "agent": "receptionist"}),
            400,
            "bad_number",
        ),
        (
            json!({"to": "+12015550123", "agent": "nobody"}),
            404,
            "agent_not_found",
        ),
        (
            json!({"to": "+12015550123", "agent": "receptionist", "trunk": "other"}),
            404,
            "trunk_not_found",
        ),
        (json!({"to": "+12015550123"}), 400, "bad_body"),
        (
            json!({"to": "+12015550123", "agent": "receptionist", "ring_timeout_ms": 100}),
            400,
            "bad_body",
        ),
        (
            json!({"to": "+12015550123", "agent": "receptionist", "extra": 1}),
            400,
            "bad_body",
        ),
    ] {
        let (s, v) = dial(&relay, body.clone());
        assert_eq!(s, status, "{body}: {v}");
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
    }
    assert!(!relay.dump().contains("dialling"), "{}", relay.dump());
}

fn tone(hz: f32, ms: u32) -> Vec<i16> {
    (0..ms * 8)
        .map(|i| ((2.0 * std::f32::consts::PI * hz * i as f32 / 8000.0).sin() * 6000.0) as i16)
        .collect()
}

fn silence(ms: u32) -> Vec<i16> {
    vec![0; ms as usize * 8]
}

/// One placed call whose callee's side plays `audio` and hangs up after `hold_ms`; the
/// relay's call detail after it ended, and the simulator's sessions.
fn call_a_recording(audio: &[i16], hold_ms: u32) -> (Value, Vec<Value>, Relay) {
    call_a_recording_after(None, audio, hold_ms)
}

/// As [`call_a_recording`]; with `early`, the trunk first sends 183 with SDP and plays it
/// as early media (3 s) before it answers.
fn call_a_recording_after(
    early: Option<&[i16]>,
    audio: &[i16],
    hold_ms: u32,
) -> (Value, Vec<Value>, Relay) {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("callee.pcap");
    write_pcma_pcap(&pcap, audio, 1);
    let scenario = if early.is_some() {
        "trunk_early_media.xml"
    } else {
        "trunk_plays.xml"
    };
    let mut text = std::fs::read_to_string(support::scenario(scenario))
        .unwrap()
        .replace("AUDIO_PCAP", &pcap.display().to_string());
    if let Some(early) = early {
        let ringback = dir.path().join("early.pcap");
        write_pcma_pcap(&ringback, early, 2);
        text = text.replace("EARLY_PCAP", &ringback.display().to_string());
    }
    let sc = dir.path().join(scenario);
    std::fs::write(&sc, text).unwrap();
    let port = sipp_port();
    let hold = hold_ms.to_string();
    let trunk = thread::spawn(move || {
        sipp_from(
            "127.0.0.1",
            "127.0.0.1:9",
            port,
            sc.to_str().unwrap(),
            &["-m", "1", "-d", &hold],
        )
    });
    let relay = relay(port);
    let (status, placed) = dial(
        &relay,
        json!({"to": "+12015550123", "agent": "receptionist", "context": "Remind Ada of her check-up tomorrow at 10:00."}),
    );
    assert_eq!(status, 202, "{placed}");
    let id = placed["id"].as_str().unwrap().to_string();
    let run = trunk.join().unwrap();
    assert!(
        run.code == 0 && run.successful == 1,
        "{}\n{}",
        run.output,
        relay.dump()
    );
    relay.wait_calls_ended(1, Duration::from_secs(20));
    let call = get_json(&format!("http://{}/api/calls/{id}", relay.admin));
    let sessions = sim_sessions(&relay);
    (call, sessions, relay)
}

fn agent_turns(call: &Value) -> Vec<Value> {
    call["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["speaker"] == "agent")
        .cloned()
        .collect()
}

#[test]
fn a_person_saying_hello_is_detected_and_answered_by_the_agent() {
    let audio = [silence(400), speech(700), silence(5000)].concat();
    let (call, _sessions, relay) = call_a_recording(&audio, 6000);
    let verdict = relay.wait_for(
        |v| msg(v) == "answering machine detection",
        Duration::from_secs(1),
    );
    eprintln!("person: {verdict}");
    assert_eq!(verdict["verdict"], "person", "{}", relay.dump());
    assert_eq!(call["answered_by"], "person", "{call}");
    assert!(
        !agent_turns(&call).is_empty(),
        "the agent answered: {call:#}"
    );
}

/// Ringback: 440 + 480 Hz, two seconds on, then silence (the North American cadence).
fn ringback() -> Vec<i16> {
    let on: Vec<i16> = (0..2000 * 8)
        .map(|i| {
            let t = i as f32 / 8000.0;
            let two = (2.0 * std::f32::consts::PI * 440.0 * t).sin()
                + (2.0 * std::f32::consts::PI * 480.0 * t).sin();
            (two * 3000.0) as i16
        })
        .collect();
    [on, silence(600)].concat()
}

#[test]
fn early_media_before_the_answer_is_dropped_and_the_callee_is_still_heard() {
    // the trunk sends 183 with SDP and plays 2.6 s of ringback (about 130 packets), then
    // answers (a 200 without SDP: the 183's answer stands) and the callee says "hello?" (6.1 s
    // of audio, 305 packets): the ringback is drained while the call rings, so the call
    // receives only what came after the answer
    let audio = [silence(400), speech(700), silence(5000)].concat();
    let (call, _sessions, relay) = call_a_recording_after(Some(&ringback()), &audio, 6000);
    let early = relay.wait_for(|v| msg(v) == "early media", Duration::from_secs(1));
    assert_eq!(early["status"], 183, "{early}");
    let dropped = relay.wait_for(|v| msg(v) == "early media dropped", Duration::from_secs(1));
    assert!(dropped["packets"].as_u64().unwrap() >= 90, "{dropped}");
    let end = relay.wait_for(|v| msg(v) == "call ended", Duration::from_secs(1));
    eprintln!(
        "early media: {} packets dropped; the call received {}",
        dropped["packets"], end["rtp_in"]
    );
    assert!(
        end["rtp_in"].as_u64().unwrap() <= 310,
        "the call received the ringback too: {end}"
    );
    let verdict = relay.wait_for(
        |v| msg(v) == "answering machine detection",
        Duration::from_secs(1),
    );
    assert_eq!(verdict["verdict"], "person", "{}", relay.dump());
    assert_eq!(call["answered_by"], "person", "{call}");
    assert!(
        !agent_turns(&call).is_empty(),
        "the agent answered: {call:#}"
    );
}

#[test]
fn a_voicemail_is_detected_and_the_message_is_left_after_the_beep() {
    let greeting = [
        speech(1200),
        silence(250),
        speech(1500),
        silence(200),
        speech(1000),
        silence(400),
    ]
    .concat();
    let beep_end_ms = (greeting.len() / 8) as u64 + 500;
    let audio = [greeting, tone(1000.0, 500), silence(7000)].concat();
    let (call, sessions, relay) = call_a_recording(&audio, 10_000);
    let verdicts: Vec<Value> = relay
        .logs()
        .into_iter()
        .filter(|v| msg(v) == "answering machine detection")
        .collect();
    eprintln!("voicemail: {verdicts:?}");
    let kinds: Vec<&str> = verdicts
        .iter()
        .map(|v| v["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["machine", "beep"], "{}", relay.dump());
    assert_eq!(call["answered_by"], "machine", "{call}");
    // the agent spoke only after the beep, once, and was told it reached a voicemail. The
    // call's clock (at_ms) starts when the relay hands the answered call to its task, a few ms
    // after SIPp starts playing the recording on our ACK: the beep verdict is compared with
    // the recording's beep within that offset, and the message with the verdict on one clock.
    let beep_at = verdicts[1]["at_ms"].as_u64().unwrap();
    assert!(
        beep_at + 100 >= beep_end_ms,
        "the beep was found at {beep_at} ms of the call, the recording's beep ends at {beep_end_ms} ms"
    );
    let turns = agent_turns(&call);
    assert_eq!(turns.len(), 1, "{call:#}");
    assert!(
        turns[0]["at_ms"].as_u64().unwrap() >= beep_at,
        "the message started at {} ms, before the beep was over at {beep_at} ms",
        turns[0]["at_ms"]
    );
    let told = serde_json::to_string(&sessions).unwrap();
    assert!(told.contains("reached a voicemail"), "{told}");
    // the stored record keeps who answered
    let id = call["id"].as_str().unwrap().to_string();
    let stored = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = voxrelay::booking::Store::open(&relay.database_url(), 1)
                .await
                .unwrap();
            store.get_call(&id).await.unwrap()
        })
        .expect("the call's record is stored");
    assert_eq!(stored.answered_by.as_deref(), Some("machine"));
}
