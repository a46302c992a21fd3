//! The simulator's event engine, driven with a fake clock: no sockets, no sleeps.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use voxrelay::openai::events::{ClientEvent, Item, ServerEvent};
use voxrelay::sim::engine::{CloseReason, Engine, EngineConfig, Output, Transport};
use voxrelay::sim::record::SessionRecord;
use voxrelay::sim::scenario::Scenario;

const MS: Duration = Duration::from_millis(1);

struct Sim {
    engine: Engine,
    record: Arc<SessionRecord>,
    now: Duration,
    out: Vec<Output>,
}

impl Sim {
    fn new(scenario: &str, transport: Transport) -> Self {
        Self::with(Scenario::load(scenario).unwrap(), transport)
    }

    fn with(scenario: Arc<Scenario>, transport: Transport) -> Self {
        let record = Arc::new(SessionRecord::new("sess_test", "t", &scenario.name));
        let mut engine = Engine::new(
            EngineConfig {
                session_id: "sess_TESTTEST".into(),
                model: "gpt-realtime".into(),
                transport,
                scenario,
                initial: None,
                unix_now: 1_800_000_000,
            },
            record.clone(),
        );
        engine.open(Duration::ZERO);
        let mut sim = Sim {
            engine,
            record,
            now: Duration::ZERO,
            out: vec![],
        };
        sim.drain();
        sim
    }

    fn drain(&mut self) {
        while let Some(o) = self.engine.poll_output() {
            self.out.push(o);
        }
    }

    fn send(&mut self, ev: Value) {
        self.engine.handle_text(self.now, &ev.to_string());
        self.drain();
    }

    fn configure(&mut self, extra: Value) {
        let mut session = json!({"type": "realtime", "instructions": "be brief",
            "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe", "language": "en"}}}});
        voxrelay::sim::engine::merge(&mut session, &extra);
        self.send(json!({"type": "session.update", "session": session}));
    }

    /// Advances the clock to `until`, waking the engine at each deadline as a transport would.
    fn run_until(&mut self, until: Duration) {
        for _ in 0..1_000_000 {
            match self.engine.poll_timeout() {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.engine.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = until;
        self.engine.handle_timeout(self.now);
        self.drain();
    }

    /// Feeds `ms` of caller audio at amplitude `amp`, 20 ms at a time, in real time.
    fn speak(&mut self, ms: u64, amp: f32) {
        for _ in 0..ms / 20 {
            let frame: Vec<i16> = (0..480)
                .map(|n| ((n as f32 * 0.13).sin() * amp) as i16)
                .collect();
            let next = self.now + 20 * MS;
            self.run_until(next);
            self.engine.handle_audio(self.now, &frame);
            self.drain();
        }
    }

    /// A caller turn: speech then enough silence to end it.
    fn turn(&mut self) {
        self.speak(600, 9_000.0);
        self.speak(700, 20.0);
    }

    fn kinds(&self) -> Vec<String> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e.kind().to_string()),
                Output::Raw(_) => Some("(raw)".into()),
                Output::ClearAudio => Some("(clear audio)".into()),
                Output::Close(_) => Some("(close)".into()),
                Output::Audio(_) => None,
            })
            .collect()
    }

    fn events(&self) -> Vec<&ServerEvent> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    fn errors(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                ServerEvent::Error { error, .. } => error.code.clone(),
                _ => None,
            })
            .collect()
    }
}

fn position(kinds: &[String], kind: &str) -> usize {
    kinds
        .iter()
        .position(|k| k == kind)
        .unwrap_or_else(|| panic!("no {kind} in {kinds:?}"))
}

#[test]
fn session_update_is_checked_merged_and_answered() {
    let mut s = Sim::new("booking", Transport::WebRtc);
    assert_eq!(s.kinds(), vec!["session.created"]);
    s.take();
    s.send(json!({"type": "session.update", "event_id": "c1", "session": {"instructions": "x"}}));
    let ServerEvent::Error { error, .. } = s.events()[0] else {
        panic!("{:?}", s.kinds())
    };
    assert_eq!(error.code.as_deref(), Some("missing_required_parameter"));
    assert_eq!(error.param.as_deref(), Some("session.type"));
    assert_eq!(error.event_id.as_deref(), Some("c1"));
    s.take();
    s.send(json!({"type": "session.update", "session": {"type": "realtime", "instructions": "first",
        "tools": [{"type": "function", "name": "check_availability", "parameters": {"type": "object"}}]}}));
    s.send(json!({"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": "cedar"}}}}));
    let ServerEvent::SessionUpdated { session, .. } = s.events()[1] else {
        panic!("{:?}", s.kinds())
    };
    assert_eq!(
        session.instructions.as_deref(),
        Some("first"),
        "merge keeps earlier fields"
    );
    assert_eq!(
        session
            .audio
            .as_ref()
            .unwrap()
            .output
            .as_ref()
            .unwrap()
            .voice
            .as_deref(),
        Some("cedar")
    );
    assert_eq!(session.tools.as_ref().unwrap().len(), 1);
    assert_eq!(s.record.snapshot().session_updates.len(), 2);
    s.take();
    s.send(json!({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}}));
    assert_eq!(s.errors(), vec!["invalid_value"]);
}

#[test]
fn events_before_session_update_and_bad_input_get_error_events() {
    let mut s = Sim::new("booking", Transport::WebSocket);
    s.take();
    s.send(json!({"type": "response.create"}));
    assert_eq!(s.errors(), vec!["session_not_configured"]);
    s.take();
    s.engine.handle_text(s.now, "not json at all");
    s.engine.handle_text(s.now, "[1,2]");
    s.engine.handle_text(s.now, r#"{"type":"made.up.event"}"#);
    s.engine.handle_text(
        s.now,
        r#"{"type":"conversation.item.truncate","item_id":5}"#,
    );
    s.engine.handle_text(
        s.now,
        &"x".repeat(voxrelay::sim::engine::MAX_EVENT_BYTES + 1),
    );
    s.drain();
    assert_eq!(
        s.errors(),
        vec![
            "invalid_json",
            "invalid_json",
            "invalid_value",
            "invalid_value",
            "message_too_large"
        ]
    );
    // and the session still works
    s.take();
    s.configure(json!({}));
    s.send(json!({"type": "response.create"}));
    assert_eq!(s.kinds()[..2], ["session.updated", "response.created"]);
}

#[test]
fn a_spoken_response_has_the_full_event_order_and_real_time_audio() {
    let mut s = Sim::new("booking", Transport::WebRtc);
    s.configure(json!({}));
    s.take();
    s.send(json!({"type": "response.create"}));
    s.run_until(Duration::from_secs(10));
    let kinds = s.kinds();
    let order = [
        "response.created",
        "rate_limits.updated",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "output_audio_buffer.started",
        "response.output_audio_transcript.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
        "output_audio_buffer.stopped",
    ];
    let positions: Vec<usize> = order.iter().map(|k| position(&kinds, k)).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{kinds:?}");
    let greeting = voxrelay::sim::voice::builtin("greeting").unwrap();
    let frames = s
        .out
        .iter()
        .filter(|o| matches!(o, Output::Audio(_)))
        .count();
    assert_eq!(frames, greeting.len().div_ceil(480));
    // the transcript deltas add up to the scenario's text
    let text: String = s
        .events()
        .iter()
        .filter_map(|e| match e {
            ServerEvent::OutputAudioTranscriptDelta { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        text,
        "Hello, you have reached the clinic. How can I help you today?"
    );
}

#[test]
fn audio_is_paced_one_frame_per_20_ms() {
    let mut s = Sim::new("booking", Transport::WebRtc);
    s.configure(json!({}));
    s.send(json!({"type": "response.create"}));
    s.take();
    s.run_until(Duration::from_millis(1_000));
    let frames = s
        .out
        .iter()
        .filter(|o| matches!(o, Output::Audio(_)))
        .count();
    // frame 0 went out at t=0 (taken above); 50 more are due in (0, 1000 ms]
    assert_eq!(frames, 50);
}

#[test]
fn caller_turns_drive_the_booking_script_with_function_calls() {
    let mut s = Sim::new("booking", Transport::WebRtc);
    s.configure(json!({}));
    s.send(json!({"type": "response.create"}));
    s.run_until(Duration::from_secs(6));
    s.take();
    s.turn();
    let kinds = s.kinds();
    let order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.function_call_arguments.done",
        "response.done",
    ];
    let positions: Vec<usize> = order.iter().map(|k| position(&kinds, k)).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{kinds:?}");
    let (call_id, name, args) = s
        .events()
        .iter()
        .find_map(|e| match e {
            ServerEvent::FunctionCallArgumentsDone {
                call_id,
                name,
                arguments,
                ..
            } => Some((call_id.clone(), name.clone(), arguments.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(name, "check_availability");
    let args: Value = serde_json::from_str(&args).unwrap();
    // the scenario asks from next Monday, whatever the day the test runs
    let start: chrono::NaiveDate = args["start_date"].as_str().unwrap().parse().unwrap();
    assert_eq!(chrono::Datelike::weekday(&start), chrono::Weekday::Mon);
    assert!(start > chrono::Utc::now().date_naive());
    let transcript = s
        .events()
        .iter()
        .find_map(|e| match e {
            ServerEvent::InputTranscriptionCompleted { transcript, .. } => Some(transcript.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(transcript, "I would like to book an appointment next week.");
    let ServerEvent::ResponseDone { response, .. } = s
        .events()
        .into_iter()
        .rfind(|e| matches!(e, ServerEvent::ResponseDone { .. }))
        .unwrap()
    else {
        unreachable!()
    };
    assert!(
        matches!(&response.output[..], [Item::FunctionCall { name, .. }] if name == "check_availability")
    );

    // a response.create without the output does not advance the script
    s.take();
    s.send(json!({"type": "response.create"}));
    s.run_until(s.now + Duration::from_secs(5));
    assert!(!s
        .kinds()
        .contains(&"response.function_call_arguments.done".to_string()));
    let said: String = s
        .events()
        .iter()
        .filter_map(|e| match e {
            ServerEvent::OutputAudioTranscriptDone { transcript, .. } => Some(transcript.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(said, "Is there anything else I can help you with?");

    // the output arrives: the script goes on to the offer, then books on the next turn
    s.take();
    s.send(json!({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": call_id, "output": "{\"slots\":[\"2027-03-02T10:00\"]}"}}));
    s.send(json!({"type": "response.create"}));
    s.run_until(s.now + Duration::from_secs(8));
    assert!(s.events().iter().any(|e| matches!(e, ServerEvent::OutputAudioTranscriptDone { transcript, .. } if transcript.starts_with("I have a free slot"))));
    s.take();
    s.turn();
    let call_id = s
        .events()
        .iter()
        .find_map(|e| match e {
            ServerEvent::FunctionCallArgumentsDone { call_id, name, .. }
                if name == "create_booking" =>
            {
                Some(call_id.clone())
            }
            _ => None,
        })
        .expect("create_booking");
    s.take();
    s.send(json!({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": call_id, "output": "{\"booking_id\":\"BK-42\"}"}}));
    s.send(json!({"type": "response.create"}));
    s.run_until(s.now + Duration::from_secs(8));
    assert!(s.events().iter().any(|e| matches!(e, ServerEvent::OutputAudioTranscriptDone { transcript, .. } if transcript.contains("reference BK-42"))));
    let log = s.record.snapshot();
    // check_availability, create_booking, and end_call after the goodbye
    let names: Vec<&str> = log.tool_calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["check_availability", "create_booking", "end_call"]);
    assert_eq!(log.tool_outputs.len(), 2);
    assert_eq!(log.tool_outputs[1].name.as_deref(), Some("create_booking"));
    assert!(log.audio_received_seconds > 2.5);
}

#[test]
fn a_dtmf_text_item_picks_the_branch() {
    dtmf_branch("2");
}

#[test]
fn a_keypad_text_item_as_the_relay_sends_it_picks_the_branch() {
    dtmf_branch("[keypad] 2");
}

/// Runs the booking script to its offer, then answers it with the user text `text`: the
/// script must take the "2" branch (goodbye).
fn dtmf_branch(text: &str) {
    let mut s = Sim::new("booking", Transport::WebRtc);
    s.configure(json!({}));
    s.send(json!({"type": "response.create"}));
    s.run_until(Duration::from_secs(6));
    s.turn();
    let call_id = s
        .events()
        .iter()
        .find_map(|e| match e {
            ServerEvent::FunctionCallArgumentsDone { call_id, .. } => Some(call_id.clone()),
            _ => None,
        })
        .unwrap();
    s.send(json!({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": call_id, "output": "{}"}}));
    s.send(json!({"type": "response.create"}));
    s.run_until(s.now + Duration::from_secs(8));
    s.take();
    s.send(json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}));
    s.send(json!({"type": "response.create"}));
    s.run_until(s.now + Duration::from_secs(5));
    assert!(s.events().iter().any(|e| matches!(e, ServerEvent::OutputAudioTranscriptDone { transcript, .. } if transcript == "No problem. Goodbye.")), "{:?}", s.kinds());
    // no booking: the goodbye step's only call is end_call
    let calls: Vec<&str> = s
        .events()
        .iter()
        .filter_map(|e| match e {
            ServerEvent::FunctionCallArgumentsDone { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(calls, ["end_call"]);
    assert_eq!(s.record.snapshot().text_items, vec![text]);
}

#[test]
fn barge_in_cancels_and_stops_audio_within_one_frame() {
    let mut s = Sim::new("booking", Transport::WebRtc);
    s.configure(json!({}));
    s.send(json!({"type": "response.create"}));
    s.run_until(Duration::from_millis(1_000));
    s.take();
    // the caller talks over the greeting
    s.speak(60, 9_000.0);
    let out = s.take();
    let started = out
        .iter()
        .position(|o| matches!(o, Output::Event(ServerEvent::SpeechStarted { .. })))
        .expect("speech_started");
    let clear = out
        .iter()
        .position(|o| matches!(o, Output::ClearAudio))
        .expect("clear audio");
    assert!(clear > started);
    assert!(
        !out[clear..].iter().any(|o| matches!(o, Output::Audio(_))),
        "audio after the clear"
    );
    let done = out
        .iter()
        .find_map(|o| match o {
            Output::Event(ServerEvent::ResponseDone { response, .. }) => Some(response.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(done.status.as_deref(), Some("cancelled"));
    assert_eq!(
        done.status_details.unwrap().reason.as_deref(),
        Some("turn_detected")
    );
    let cleared = out
        .iter()
        .position(|o| {
            matches!(
                o,
                Output::Event(ServerEvent::OutputAudioBufferCleared { .. })
            )
        })
        .expect("cleared");
    assert!(cleared > clear);
    // at most one frame went out between the detector's decision and the clear
    let frames_after_start = out[started..clear]
        .iter()
        .filter(|o| matches!(o, Output::Audio(_)))
        .count();
    assert!(frames_after_start <= 1);
    // nothing more is sent while the caller goes on
    s.speak(200, 9_000.0);
    assert!(!s.out.iter().any(|o| matches!(o, Output::Audio(_))));
}

#[test]
fn response_cancel_and_output_audio_buffer_clear_are_honoured() {
    let mut s = Sim::new("booking", Transport::WebRtc);
    s.configure(json!({}));
    s.send(json!({"type": "response.create"}));
    s.run_until(Duration::from_millis(500));
    s.take();
    s.send(json!({"type": "response.cancel"}));
    s.send(json!({"type": "output_audio_buffer.clear"}));
    s.run_until(s.now + Duration::from_secs(2));
    let kinds = s.kinds();
    let done = position(&kinds, "response.done");
    let cleared = position(&kinds, "output_audio_buffer.cleared");
    assert!(done < cleared, "{kinds:?}");
    assert!(!kinds.contains(&"output_audio_buffer.stopped".to_string()));
    assert!(!s.out.iter().any(|o| matches!(o, Output::Audio(_))));
    let ServerEvent::ResponseDone { response, .. } = s.events()[kinds
        .iter()
        .filter(|k| !k.starts_with('('))
        .position(|k| k == "response.done")
        .unwrap()]
    else {
        unreachable!()
    };
    assert_eq!(
        response.status_details.as_ref().unwrap().reason.as_deref(),
        Some("client_cancelled")
    );
    // a cancel with nothing running is an error, not a crash
    s.take();
    s.send(json!({"type": "response.cancel"}));
    assert_eq!(s.errors(), vec!["response_cancel_not_active"]);
}

#[test]
fn a_second_response_create_while_one_runs_is_refused() {
    let mut s = Sim::new("booking", Transport::WebRtc);
    s.configure(json!({}));
    s.send(json!({"type": "response.create"}));
    s.take();
    s.send(json!({"type": "response.create", "event_id": "again"}));
    assert_eq!(s.errors(), vec!["conversation_already_has_active_response"]);
}

#[test]
fn websocket_pcmu_audio_goes_both_ways_and_echo_plays_the_turn_back() {
    let mut s = Sim::new("echo", Transport::WebSocket);
    s.configure(json!({"audio": {"input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}}}));
    s.take();
    // 600 ms of a loud tone then 700 ms of near silence, as 8 kHz µ-law in 100 ms appends
    let tone: Vec<u8> = (0..800)
        .map(|n| voxrelay::media::g711::ulaw_encode(((n as f32 * 0.4).sin() * 9_000.0) as i16))
        .collect();
    let quiet = vec![0xFFu8; 800];
    for i in 0..13 {
        let chunk = if i < 6 { &tone } else { &quiet };
        let audio = base64::engine::general_purpose::STANDARD.encode(chunk);
        s.run_until(s.now + Duration::from_millis(100));
        s.send(json!({"type": "input_audio_buffer.append", "audio": audio}));
    }
    s.run_until(s.now + Duration::from_secs(3));
    let kinds = s.kinds();
    assert!(
        kinds.contains(&"input_audio_buffer.speech_stopped".to_string()),
        "{kinds:?}"
    );
    assert!(
        !kinds.iter().any(|k| k.starts_with("output_audio_buffer")),
        "WebRTC-only events on WebSocket"
    );
    let bytes: usize = s
        .events()
        .iter()
        .filter_map(|e| match e {
            ServerEvent::OutputAudioDelta { delta, .. } => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(delta)
                    .unwrap()
                    .len(),
            ),
            _ => None,
        })
        .sum();
    // the echo is the turn (from its padded start to the stop) at 8 kHz: about 0.6–1.2 s
    assert!((4_800..=9_600).contains(&bytes), "{bytes} bytes of echo");
    let log = s.record.snapshot();
    assert!(
        (1.2..1.4).contains(&log.audio_received_seconds),
        "{}",
        log.audio_received_seconds
    );
}

#[test]
fn websocket_only_and_webrtc_only_events_are_refused_on_the_other_transport() {
    let mut s = Sim::new("echo", Transport::WebRtc);
    s.configure(json!({}));
    s.take();
    s.send(json!({"type": "input_audio_buffer.append", "audio": "AAAA"}));
    let mut w = Sim::new("echo", Transport::WebSocket);
    w.configure(json!({}));
    w.take();
    w.send(json!({"type": "output_audio_buffer.clear"}));
    w.send(json!({"type": "input_audio_buffer.append", "audio": "***"}));
    assert_eq!(s.errors(), vec!["invalid_value"]);
    assert_eq!(w.errors(), vec!["invalid_value", "invalid_value"]);
}

#[test]
fn manual_commit_without_turn_detection() {
    let mut s = Sim::new("booking", Transport::WebSocket);
    s.configure(json!({"audio": {"input": {"turn_detection": null}}}));
    s.take();
    s.send(json!({"type": "input_audio_buffer.commit"}));
    assert_eq!(s.errors(), vec!["input_audio_buffer_commit_empty"]);
    let pcm = vec![0u8; 24_000 * 2 / 5]; // 200 ms
    s.send(json!({"type": "input_audio_buffer.append", "audio": base64::engine::general_purpose::STANDARD.encode(&pcm)}));
    s.send(json!({"type": "input_audio_buffer.commit"}));
    let kinds = s.kinds();
    assert!(kinds.contains(&"input_audio_buffer.committed".to_string()));
    assert!(!kinds.contains(&"input_audio_buffer.speech_started".to_string()));
    assert!(
        !kinds.contains(&"response.created".to_string()),
        "no automatic response without VAD"
    );
}

#[test]
fn faults_fire_at_their_times() {
    let scenario = Arc::new(
        Scenario::from_toml(
            r#"
name = "f"
[[steps]]
say = { text = "hi" }
[faults]
session_expired_after_ms = 3000
[[faults.inject]]
at_ms = 1000
raw = "{broken"
[[faults.inject]]
at_ms = 2000
event = { type = "error", error = { type = "server_error", message = "boom" } }
"#,
            "f",
            None,
        )
        .unwrap(),
    );
    let mut s = Sim::with(scenario, Transport::WebRtc);
    s.take();
    s.run_until(Duration::from_millis(999));
    assert!(s.out.is_empty());
    s.run_until(Duration::from_millis(2_500));
    let raws: Vec<String> = s
        .out
        .iter()
        .filter_map(|o| match o {
            Output::Raw(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(raws[0], "{broken");
    let ev: Value = serde_json::from_str(&raws[1]).unwrap();
    assert_eq!(ev["error"]["message"], "boom");
    assert!(ev["event_id"].is_string());
    s.take();
    s.run_until(Duration::from_secs(10));
    assert_eq!(s.errors(), vec!["session_expired"]);
    assert!(matches!(
        s.out.last(),
        Some(Output::Close(CloseReason::Expired))
    ));
    assert!(s.engine.is_closed());
    assert_eq!(s.engine.poll_timeout(), None);

    let scenario = Scenario::load("config/scenarios/fault-channel-closes.toml").unwrap();
    let mut s = Sim::with(scenario, Transport::WebRtc);
    s.run_until(Duration::from_millis(2_999));
    assert!(!s.engine.is_closed());
    s.run_until(Duration::from_millis(3_000));
    assert!(matches!(
        s.out.last(),
        Some(Output::Close(CloseReason::Fault))
    ));
}

#[test]
fn client_events_round_trip_through_the_typed_parser() {
    // the engine reads what the relay's OpenAI leg writes
    let ev = ClientEvent::ResponseCancel {
        event_id: Some("e1".into()),
        response_id: None,
    };
    let mut s = Sim::new("booking", Transport::WebRtc);
    s.configure(json!({}));
    s.take();
    s.engine.handle_event(s.now, ev);
    s.drain();
    let ServerEvent::Error { error, .. } = s.events()[0] else {
        panic!()
    };
    assert_eq!(error.event_id.as_deref(), Some("e1"));
}

#[test]
fn idle_timeout_prompts_the_caller_after_silence() {
    let mut s = Sim::new("booking", Transport::WebRtc);
    s.configure(json!({"audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 3000}}}}));
    s.send(json!({"type": "response.create"}));
    // the greeting (4.2 s) ends; the idle timer runs from its end
    s.run_until(Duration::from_secs(6));
    let greeting_end = s.now;
    s.take();
    s.speak(1_000, 20.0); // a quiet line, no speech, until 7.0 s
    assert!(!s
        .kinds()
        .contains(&"input_audio_buffer.timeout_triggered".to_string()));
    s.run_until(greeting_end + Duration::from_secs(8));
    let kinds = s.kinds();
    let t = position(&kinds, "input_audio_buffer.timeout_triggered");
    assert!(t < position(&kinds, "response.created"), "{kinds:?}");
    assert!(s.events().iter().any(|e| matches!(e, ServerEvent::OutputAudioTranscriptDone { transcript, .. } if transcript == "Are you still there?")));
}

#[test]
fn text_only_sessions_get_text_events_and_no_audio() {
    let mut s = Sim::new("booking", Transport::WebRtc);
    s.configure(json!({"output_modalities": ["text"]}));
    s.take();
    s.send(json!({"type": "response.create"}));
    s.run_until(Duration::from_secs(1));
    let kinds = s.kinds();
    assert!(
        kinds.contains(&"response.output_text.done".to_string()),
        "{kinds:?}"
    );
    assert!(!kinds.iter().any(|k| k.contains("audio")), "{kinds:?}");
    assert!(!s.out.iter().any(|o| matches!(o, Output::Audio(_))));
}

#[test]
fn the_voice_cannot_change_after_the_model_has_spoken() {
    let mut s = Sim::new("booking", Transport::WebRtc);
    s.configure(json!({"audio": {"output": {"voice": "cedar"}}}));
    s.send(json!({"type": "response.create"}));
    s.run_until(Duration::from_secs(6));
    s.take();
    s.send(json!({"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": "marin"}}}}));
    assert_eq!(s.errors(), vec!["cannot_update_voice"]);
    s.take();
    s.send(json!({"type": "session.update", "session": {"type": "realtime", "instructions": "still fine"}}));
    assert_eq!(s.kinds(), vec!["session.updated"]);
}

#[test]
fn websocket_pcma_echo_comes_back_as_audible_a_law() {
    let mut s = Sim::new("echo", Transport::WebSocket);
    s.configure(json!({"audio": {"input": {"format": {"type": "audio/pcma"}}, "output": {"format": {"type": "audio/pcma"}}}}));
    s.take();
    let tone: Vec<u8> = (0..800)
        .map(|n| voxrelay::media::g711::alaw_encode(((n as f32 * 0.4).sin() * 9_000.0) as i16))
        .collect();
    let quiet = vec![voxrelay::media::g711::alaw_encode(0); 800];
    for i in 0..13 {
        let chunk = if i < 6 { &tone } else { &quiet };
        let audio = base64::engine::general_purpose::STANDARD.encode(chunk);
        s.run_until(s.now + Duration::from_millis(100));
        s.send(json!({"type": "input_audio_buffer.append", "audio": audio}));
    }
    s.run_until(s.now + Duration::from_secs(3));
    let echoed: Vec<i16> = s
        .events()
        .iter()
        .filter_map(|e| match e {
            ServerEvent::OutputAudioDelta { delta, .. } => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(delta)
                    .unwrap(),
            ),
            _ => None,
        })
        .flatten()
        .map(voxrelay::media::g711::alaw_decode)
        .collect();
    let loud = echoed.iter().filter(|v| v.unsigned_abs() > 4_000).count();
    // the 600 ms tone comes back: thousands of loud samples at 8 kHz
    assert!(loud > 1_500, "{loud} loud samples of {}", echoed.len());
}

#[test]
fn thousands_of_random_events_never_panic_the_engine() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let kinds: Vec<&str> = voxrelay::openai::events::CLIENT_EVENT_TYPES
        .iter()
        .copied()
        .chain(["", "error", "session.created", "x.y"])
        .collect();
    let values = [
        json!(null),
        json!(1),
        json!(-5),
        json!("text"),
        json!("AAAA"),
        json!([1, "a"]),
        json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "2"}]}),
        json!({"type": "function_call_output", "call_id": "call_x", "output": "{}"}),
        json!({"type": "realtime", "audio": {"input": {"turn_detection": null}}}),
        json!({"type": "realtime", "output_modalities": ["text"]}),
        json!({"type": "bogus"}),
    ];
    let fields = [
        "session",
        "audio",
        "item",
        "item_id",
        "content_index",
        "audio_end_ms",
        "response",
        "event_id",
        "response_id",
    ];
    let mut s = Sim::new("booking", Transport::WebSocket);
    for _ in 0..3_000 {
        let mut ev = serde_json::Map::new();
        ev.insert(
            "type".into(),
            json!(kinds[rng.random_range(0..kinds.len())]),
        );
        for _ in 0..rng.random_range(0..4) {
            ev.insert(
                fields[rng.random_range(0..fields.len())].into(),
                values[rng.random_range(0..values.len())].clone(),
            );
        }
        s.send(Value::Object(ev));
        if rng.random_bool(0.1) {
            let next = s.now + Duration::from_millis(rng.random_range(0..500));
            s.run_until(next);
        }
        s.take();
    }
    s.configure(json!({"audio": {"input": {"turn_detection": {"type": "server_vad"}}}, "output_modalities": ["audio"]}));
    assert!(
        s.kinds().contains(&"session.updated".to_string()),
        "{:?}",
        s.kinds()
    );
}
