//! The WebSocket leg against the simulator: G.711 both ways untouched, barge-in truncating the
//! agent's item at what was played, a tool round trip, and the faults.

mod openai_support;

use std::time::Duration;

use openai_support::{agent, done_with, kind, record, scenario, sim, tone, until, Seen};
use voxrelay::config::RealtimeTransport;
use voxrelay::media::g711::Law;
use voxrelay::openai::events::{ClientEvent, ServerEvent};
use voxrelay::openai::{
    AgentAudio, AgentSpec, CallerAudio, Connector, LegAudioFormat, LegEnd, LegError, LegEvent,
    LegSettings, RealtimeLeg,
};
use voxrelay::secret::Secret;

async fn open(base: &str, key: &str) -> Result<Box<dyn RealtimeLeg>, LegError> {
    Connector::new(
        base,
        Secret::new(key),
        RealtimeTransport::Websocket,
        LegSettings::default(),
    )
    .unwrap()
    .connect(&agent(), Law::Mu)
    .await
}

async fn open_as(base: &str, agent: &AgentSpec) -> Box<dyn RealtimeLeg> {
    Connector::new(
        base,
        Secret::new("sk-test"),
        RealtimeTransport::Websocket,
        LegSettings::default(),
    )
    .unwrap()
    .connect(agent, Law::Mu)
    .await
    .expect("the session opens")
}

/// The client event types the simulator received.
fn client_events(log: &serde_json::Value) -> Vec<String> {
    log["events_received"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect()
}

fn create() -> ClientEvent {
    ClientEvent::ResponseCreate {
        event_id: None,
        response: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g711_passes_through_and_barge_in_truncates_at_what_was_played() {
    let sim = sim("booking").await;
    let mut leg = open(&sim.base_url(), "sk-test")
        .await
        .expect("the session opens");
    assert_eq!(leg.audio_format(), LegAudioFormat::G711(Law::Mu));
    let session_id = leg.session_id().unwrap().to_string();
    let leg: &mut dyn RealtimeLeg = leg.as_mut();
    let mut seen = Seen::default();
    let updated = until(leg, 5, &mut seen, kind("session.updated")).await;
    let LegEvent::Event(ServerEvent::SessionUpdated { session, .. }) = updated else {
        unreachable!()
    };
    let input = session.audio.as_ref().unwrap().input.as_ref().unwrap();
    assert_eq!(input.format.as_ref().unwrap().kind, "audio/pcmu");

    // the greeting arrives as µ-law frames, audible
    leg.send(create()).await.unwrap();
    while seen.frames < 30 {
        let ev = until(leg, 5, &mut seen, |e| matches!(e, LegEvent::Audio(_))).await;
        assert!(matches!(ev, LegEvent::Audio(AgentAudio::G711(Law::Mu, _))));
    }
    assert!(seen.loud_frames > 5, "{seen:?}");
    let played_frames = seen.frames as u64;

    // the caller talks over it, in µ-law; when the service hears it, the bridge (which had
    // 100 ms queued for the phone) interrupts at once
    let mut bytes = [0u8; 160];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut interrupted_at = None;
    for i in 0..80u32 {
        tick.tick().await;
        Law::Mu.encode(&tone(i, i < 40), &mut bytes);
        leg.send_audio(CallerAudio::G711(Law::Mu, &bytes))
            .await
            .unwrap();
        while interrupted_at.is_none() {
            let Ok(ev) = tokio::time::timeout(Duration::ZERO, leg.recv()).await else {
                break;
            };
            match ev {
                LegEvent::Audio(_) => seen.frames += 1,
                LegEvent::Event(e) if e.kind() == "input_audio_buffer.speech_started" => {
                    leg.interrupt(100).await.unwrap();
                    interrupted_at = Some(seen.frames as u64);
                }
                LegEvent::Event(e) => seen.kinds.push(e.kind().to_string()),
                other => panic!("{other:?}"),
            }
        }
    }
    let delivered = interrupted_at.expect("the service heard the caller");
    assert!(delivered >= played_frames);
    let truncated = until(leg, 5, &mut seen, kind("conversation.item.truncated")).await;
    let LegEvent::Event(ServerEvent::ConversationItemTruncated { audio_end_ms, .. }) = truncated
    else {
        unreachable!()
    };
    assert_eq!(audio_end_ms, delivered * 20 - 100);

    // the turn goes on to the tool call, answered through the same trait
    let call = until(leg, 10, &mut seen, |e| matches!(e, LegEvent::ToolCall(_))).await;
    let LegEvent::ToolCall(call) = call else {
        unreachable!()
    };
    assert_eq!(call.name, "check_availability");
    leg.submit_tool_output(&call.call_id, r#"{"slots":[]}"#.into())
        .await
        .unwrap();
    until(
        leg,
        10,
        &mut seen,
        kind("response.output_audio_transcript.done"),
    )
    .await;
    until(leg, 10, &mut seen, done_with("completed")).await;

    let log = record(&sim, &session_id).await;
    assert_eq!(log["transport"], "websocket");
    assert_eq!(log["tool_outputs"][0]["call_id"], call.call_id.as_str());
    assert!(
        log["audio_received_seconds"].as_f64().unwrap() >= 1.5,
        "{log}"
    );
    // with interrupt_response the service cancelled the response itself on speech: the leg
    // truncated but sent no response.cancel of its own, so nothing raced into an error
    assert!(log["errors_sent"].as_array().unwrap().is_empty(), "{log}");
    let received = client_events(&log);
    assert!(received.contains(&"conversation.item.truncate".to_string()));
    assert!(
        !received.contains(&"response.cancel".to_string()),
        "{received:?}"
    );
    assert!(
        log["events_sent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "response.done"),
        "{log}"
    );
    leg.close().await;
    assert_eq!(leg.recv().await, LegEvent::Ended(LegEnd::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_a_refusal_with_the_status() {
    let sim = sim("booking").await;
    let err = open(&sim.base_url(), "not-a-key").await.unwrap_err();
    assert!(
        matches!(err, LegError::Refused { status: 401, .. }),
        "{err}"
    );
    assert!(!format!("{err} {err:?}").contains("not-a-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_closing_mid_call_ends_the_session_with_its_code() {
    let sim = sim(&scenario("fault-channel-closes")).await;
    let mut leg = open(&sim.base_url(), "sk-test").await.unwrap();
    let mut seen = Seen::default();
    let end = until(leg.as_mut(), 10, &mut seen, |e| {
        matches!(e, LegEvent::Ended(_))
    })
    .await;
    assert!(
        matches!(
            end,
            LegEvent::Ended(LegEnd::SocketClosed { code: 1011, .. })
        ),
        "{end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expired_ends_the_session_as_expired() {
    let sim = sim(&scenario("fault-session-expired")).await;
    let mut leg = open(&sim.base_url(), "sk-test").await.unwrap();
    let mut seen = Seen::default();
    until(leg.as_mut(), 10, &mut seen, kind("error")).await;
    assert_eq!(leg.recv().await, LegEvent::Ended(LegEnd::SessionExpired));
    assert!(matches!(
        leg.send(create()).await,
        Err(LegError::Ended(LegEnd::SessionExpired))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_events_do_not_break_the_call() {
    let sim = sim(&scenario("fault-bad-events")).await;
    let mut leg = open(&sim.base_url(), "sk-test").await.unwrap();
    let leg = leg.as_mut();
    let mut seen = Seen::default();
    until(leg, 5, &mut seen, kind("response.brand_new_thing")).await;
    until(leg, 5, &mut seen, kind("error")).await;
    leg.send(create()).await.unwrap();
    until(leg, 5, &mut seen, |e| matches!(e, LegEvent::Audio(_))).await;
    leg.close().await;
}

/// Starts the greeting and waits for some of it.
async fn greeting_playing(leg: &mut dyn RealtimeLeg, seen: &mut Seen) {
    leg.send(create()).await.unwrap();
    while seen.frames < 10 {
        until(leg, 5, seen, |e| matches!(e, LegEvent::Audio(_))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_interrupt_cancels_the_response() {
    let sim = sim("booking").await;
    let mut leg = open_as(&sim.base_url(), &agent()).await;
    let session_id = leg.session_id().unwrap().to_string();
    let leg = leg.as_mut();
    let mut seen = Seen::default();
    greeting_playing(leg, &mut seen).await;
    // the operator interrupts: nobody spoke, so only our cancel stops the response
    leg.interrupt(0).await.unwrap();
    until(leg, 5, &mut seen, done_with("cancelled")).await;
    let log = record(&sim, &session_id).await;
    assert!(client_events(&log).contains(&"response.cancel".to_string()));
    assert!(log["errors_sent"].as_array().unwrap().is_empty(), "{log}");
    leg.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_interrupt_response_barge_in_cancels_the_response() {
    let sim = sim("booking").await;
    let mut spec = agent();
    if let Some(td) = spec.turn_detection.as_mut() {
        td.interrupt_response = Some(false);
    }
    let mut leg = open_as(&sim.base_url(), &spec).await;
    let session_id = leg.session_id().unwrap().to_string();
    let leg = leg.as_mut();
    let mut seen = Seen::default();
    greeting_playing(leg, &mut seen).await;
    // the caller talks; the service hears it but lets the response run
    let mut bytes = [0u8; 160];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut heard = false;
    for i in 0..100u32 {
        tick.tick().await;
        Law::Mu.encode(&tone(i, true), &mut bytes);
        leg.send_audio(CallerAudio::G711(Law::Mu, &bytes))
            .await
            .unwrap();
        while let Ok(ev) = tokio::time::timeout(Duration::ZERO, leg.recv()).await {
            if matches!(&ev, LegEvent::Event(e) if e.kind() == "input_audio_buffer.speech_started")
            {
                heard = true;
            }
        }
        if heard {
            break;
        }
    }
    assert!(heard, "the service heard the caller");
    leg.interrupt(0).await.unwrap();
    until(leg, 5, &mut seen, done_with("cancelled")).await;
    let log = record(&sim, &session_id).await;
    assert!(client_events(&log).contains(&"response.cancel".to_string()));
    assert!(log["errors_sent"].as_array().unwrap().is_empty(), "{log}");
    leg.close().await;
}

/// An event far larger than what the leg reads from the connection at a time (8 KiB) arrives
/// whole: with 40 KB of instructions the simulator's `session.updated` is over 40 KB, the
/// leg opens once it has it, and the call goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_larger_than_a_read_arrives_whole() {
    let sim = sim("echo").await;
    let mut spec = agent();
    spec.instructions = "Book appointments for the clinic, briefly. ".repeat(1000);
    assert!(spec.instructions.len() > 40_000);
    let mut leg = open_as(&sim.base_url(), &spec).await;
    let session_id = leg.session_id().expect("a session").to_string();
    let log = record(&sim, &session_id).await;
    assert_eq!(
        log["session"]["instructions"].as_str().map(str::len),
        Some(spec.instructions.len()),
        "{log:#}"
    );
    let mut seen = Seen::default();
    leg.send(create()).await.unwrap();
    until(leg.as_mut(), 5, &mut seen, |e| {
        matches!(e, LegEvent::Audio(_))
    })
    .await;
    leg.close().await;
}
