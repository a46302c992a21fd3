//! The WebRTC leg against the simulator on loopback: a whole spoken turn with barge-in and a
//! function call, G.711-only offers, and every fault ending in a typed outcome.

mod openai_support;

use std::time::Duration;

use openai_support::{agent, done_with, kind, record, scenario, sim, tone, until, Seen};
use voxrelay::config::RealtimeTransport;
use voxrelay::media::g711::Law;
use voxrelay::openai::events::{ClientEvent, ServerEvent};
use voxrelay::openai::{
    AgentAudio, CallerAudio, Connector, LegAudioFormat, LegEnd, LegError, LegEvent, LegSettings,
    MintError, RealtimeLeg, WebRtcCodec,
};
use voxrelay::secret::Secret;

fn connector(base: &str, settings: LegSettings) -> Connector {
    Connector::new(
        base,
        Secret::new("sk-test"),
        RealtimeTransport::Webrtc,
        settings,
    )
    .unwrap()
}

fn create() -> ClientEvent {
    ClientEvent::ResponseCreate {
        event_id: None,
        response: None,
    }
}

/// Talks for `loud` frames then stays quiet for `quiet` frames, one frame every 20 ms (what
/// the service sends meanwhile waits in the leg's queue).
async fn talk(leg: &mut dyn RealtimeLeg, loud: u32, quiet: u32) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for i in 0..loud + quiet {
        tick.tick().await;
        let f = tone(i, i < loud);
        leg.send_audio(CallerAudio::Pcm(&f)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_greets_hears_the_caller_and_runs_a_tool() {
    let sim = sim("booking").await;
    let conn = connector(&sim.base_url(), LegSettings::default());
    let mut leg = conn
        .connect_webrtc(&agent())
        .await
        .expect("the session opens");
    assert!(leg.call_id().starts_with("rtc_"), "{}", leg.call_id());
    assert_eq!(leg.audio_format(), LegAudioFormat::Pcm);
    let session_id = leg.session_id().unwrap().to_string();
    let leg: &mut dyn RealtimeLeg = &mut leg;
    let mut seen = Seen::default();

    // session.created carries the agent's config, minted with the key
    let created = until(leg, 5, &mut seen, kind("session.created")).await;
    let LegEvent::Event(ServerEvent::SessionCreated { session, .. }) = created else {
        unreachable!()
    };
    assert_eq!(
        session.instructions.as_deref(),
        Some("You book appointments for the clinic.")
    );

    // the greeting: audible Opus, decoded to 8 kHz frames
    leg.send(create()).await.unwrap();
    until(leg, 5, &mut seen, kind("output_audio_buffer.started")).await;
    while seen.frames < 40 {
        until(leg, 5, &mut seen, |e| matches!(e, LegEvent::Audio(_))).await;
    }
    assert!(seen.loud_frames > 10, "the greeting is audible: {seen:?}");

    // the caller talks over it: the service cancels, the bridge interrupts
    talk(leg, 40, 40).await;
    until(leg, 5, &mut seen, kind("input_audio_buffer.speech_started")).await;
    leg.interrupt(120).await.unwrap();
    // the spoken turn: committed, transcribed, then the model calls the tool
    let call = until(leg, 10, &mut seen, |e| matches!(e, LegEvent::ToolCall(_))).await;
    let LegEvent::ToolCall(call) = call else {
        unreachable!()
    };
    assert_eq!(call.name, "check_availability");
    let args: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
    // the scenario asks from next Monday, whatever the day the test runs
    let start: chrono::NaiveDate = args["start_date"].as_str().unwrap().parse().unwrap();
    assert_eq!(chrono::Datelike::weekday(&start), chrono::Weekday::Mon);
    assert!(start > chrono::Utc::now().date_naive());
    for k in [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.function_call_arguments.done",
    ] {
        assert!(
            seen.kinds.iter().any(|s| s == k),
            "no {k} in {:?}",
            seen.kinds
        );
    }
    assert!(
        seen.kinds.iter().any(|k| k == "response.done"),
        "the greeting was cancelled"
    );

    // the round trip: output, then the next response (held until the call's response.done)
    leg.submit_tool_output(&call.call_id, r#"{"slots":["2027-03-02T10:00"]}"#.into())
        .await
        .unwrap();
    let said = until(
        leg,
        10,
        &mut seen,
        kind("response.output_audio_transcript.done"),
    )
    .await;
    let LegEvent::Event(ServerEvent::OutputAudioTranscriptDone { transcript, .. }) = said else {
        unreachable!()
    };
    assert!(transcript.contains("Tuesday"), "{transcript}");
    until(leg, 10, &mut seen, done_with("completed")).await;

    let log = record(&sim, &session_id).await;
    assert_eq!(log["transport"], "webrtc");
    assert_eq!(log["tool_outputs"][0]["call_id"], call.call_id.as_str());
    assert!(
        log["audio_received_seconds"].as_f64().unwrap() >= 1.0,
        "{log}"
    );
    assert!(log["errors_sent"].as_array().unwrap().is_empty(), "{log}");
    // the offer's maxplaybackrate=8000: the service's encoder sent narrowband, which the
    // greeting above decoded to audible frames
    assert_eq!(log["audio_sent_bandwidth"], "narrowband", "{log}");

    leg.close().await;
    assert_eq!(leg.recv().await, LegEvent::Ended(LegEnd::Closed));
    // the service heard the hangup (waited for on the simulator's record, which wakes waiters
    // on every change)
    let closed = sim
        .wait_record(Duration::from_secs(5), |r| {
            r["id"] == session_id.as_str() && !r["closed"].is_null()
        })
        .await
        .unwrap_or_else(|| panic!("the session never closed"));
    assert_eq!(closed["closed"], "hangup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pcmu_offer_carries_g711_both_ways_untouched() {
    let sim = sim("booking").await;
    let settings = LegSettings {
        codec: WebRtcCodec::Pcmu,
        ..Default::default()
    };
    let mut leg = connector(&sim.base_url(), settings)
        .connect_webrtc(&agent())
        .await
        .unwrap();
    assert_eq!(leg.audio_format(), LegAudioFormat::G711(Law::Mu));
    let session_id = leg.session_id().unwrap().to_string();
    let leg: &mut dyn RealtimeLeg = &mut leg;
    let mut seen = Seen::default();
    leg.send(create()).await.unwrap();
    let mut g711 = 0;
    while g711 < 30 {
        if let LegEvent::Audio(AgentAudio::G711(Law::Mu, _)) =
            until(leg, 5, &mut seen, |e| matches!(e, LegEvent::Audio(_))).await
        {
            g711 += 1;
        }
    }
    assert!(seen.loud_frames > 5, "{seen:?}");
    let mut bytes = [0u8; 160];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for i in 0..25 {
        tick.tick().await;
        Law::Mu.encode(&tone(i, true), &mut bytes);
        leg.send_audio(CallerAudio::G711(Law::Mu, &bytes))
            .await
            .unwrap();
    }
    // the service decoded our µ-law: it counted half a second of caller audio
    let mut heard = 0.0;
    for _ in 0..100 {
        heard = record(&sim, &session_id).await["audio_received_seconds"]
            .as_f64()
            .unwrap();
        if heard >= 0.4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(heard >= 0.4, "{heard}");
    leg.close().await;
}

async fn connect_err(scenario_name: &str, settings: LegSettings) -> LegError {
    let sim = sim(&scenario(scenario_name)).await;
    let err = connector(&sim.base_url(), settings)
        .connect_webrtc(&agent())
        .await
        .expect_err("the session must not open");
    sim.shutdown().await;
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_4xx_and_5xx_are_refusals_with_the_status() {
    let err = connect_err("fault-calls-4xx", LegSettings::default()).await;
    assert!(
        matches!(err, LegError::Refused { status: 400, .. }),
        "{err}"
    );
    let err = connect_err("fault-calls-5xx", LegSettings::default()).await;
    assert!(
        matches!(err, LegError::Refused { status: 503, .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_times_out_at_the_connect_deadline() {
    let settings = LegSettings {
        connect_deadline_ms: 1_000,
        ..Default::default()
    };
    let err = connect_err("fault-calls-slow", settings).await;
    assert!(
        matches!(
            err,
            LegError::Timeout {
                stage: "the SDP answer",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_that_never_completes_times_out_naming_the_stage() {
    let settings = LegSettings {
        connect_deadline_ms: 1_500,
        ..Default::default()
    };
    let err = connect_err("fault-ice-never", settings).await;
    assert!(
        matches!(
            err,
            LegError::Timeout {
                stage: "ICE, DTLS and the data channel",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_failures_stop_the_connect() {
    let settings = LegSettings {
        mint_deadline_ms: 500,
        ..Default::default()
    };
    let err = connect_err("fault-mint-500", settings).await;
    assert!(
        matches!(err, LegError::Mint(MintError::Deadline { .. })),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_closing_mid_call_ends_the_session() {
    let sim = sim(&scenario("fault-channel-closes")).await;
    let mut leg = connector(&sim.base_url(), LegSettings::default())
        .connect_webrtc(&agent())
        .await
        .unwrap();
    let mut seen = Seen::default();
    let end = until(&mut leg, 10, &mut seen, |e| matches!(e, LegEvent::Ended(_))).await;
    assert_eq!(end, LegEvent::Ended(LegEnd::ChannelClosed));
    assert!(matches!(
        leg.send(create()).await,
        Err(LegError::Ended(LegEnd::ChannelClosed))
    ));
    leg.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expired_ends_the_session_as_expired() {
    let sim = sim(&scenario("fault-session-expired")).await;
    let mut leg = connector(&sim.base_url(), LegSettings::default())
        .connect_webrtc(&agent())
        .await
        .unwrap();
    let mut seen = Seen::default();
    let err = until(&mut leg, 10, &mut seen, kind("error")).await;
    assert!(
        matches!(&err, LegEvent::Event(ServerEvent::Error { error, .. }) if error.code.as_deref() == Some("session_expired"))
    );
    assert_eq!(leg.recv().await, LegEvent::Ended(LegEnd::SessionExpired));
    assert_eq!(leg.recv().await, LegEvent::Ended(LegEnd::SessionExpired));
    leg.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_events_do_not_break_the_call() {
    let sim = sim(&scenario("fault-bad-events")).await;
    let mut leg = connector(&sim.base_url(), LegSettings::default())
        .connect_webrtc(&agent())
        .await
        .unwrap();
    let mut seen = Seen::default();
    let unknown = until(&mut leg, 5, &mut seen, kind("response.brand_new_thing")).await;
    assert!(
        matches!(unknown, LegEvent::Event(ServerEvent::Unknown(v)) if v["detail"] == "unknown to every client")
    );
    until(&mut leg, 5, &mut seen, kind("error")).await;
    // and the call goes on: a response still plays
    leg.send(create()).await.unwrap();
    until(&mut leg, 5, &mut seen, kind("output_audio_buffer.started")).await;
    until(&mut leg, 5, &mut seen, |e| matches!(e, LegEvent::Audio(_))).await;
    assert_eq!(leg.malformed_counts().0, 1, "the bad JSON was counted");
    leg.close().await;
}

/// The leg's socket is open to the internet: a stranger who finds its port and sends junk,
/// forged STUN, DTLS and RTP to it is refused by the connection, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_from_a_stranger_do_not_disturb_the_session() {
    let sim = sim("booking").await;
    let mut leg = connector(&sim.base_url(), LegSettings::default())
        .connect_webrtc(&agent())
        .await
        .unwrap();
    let target = leg.local_addrs()[0];
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // a STUN binding request (magic cookie, no valid integrity), a DTLS ClientHello record
    // header, an SRTP-looking packet, and bytes of every kind
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[7; 12]);
    let dtls = [
        22u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1, 0, 0, 1, 0,
    ];
    let mut rtp = vec![0x80, 111, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4];
    rtp.extend_from_slice(&[0xaa; 80]);
    for i in 0..40u32 {
        let junk: Vec<u8> = (0..(i % 97 + 1)).map(|j| (i * 31 + j * 7) as u8).collect();
        for d in [&stun[..], &dtls[..], &rtp[..], &junk[..]] {
            stranger.send_to(d, target).await.unwrap();
        }
    }
    let before = leg.datagrams_received();
    // the session still answers: a response plays, and its audio comes
    let mut seen = Seen::default();
    leg.send(create()).await.unwrap();
    until(&mut leg, 10, &mut seen, kind("output_audio_buffer.started")).await;
    until(&mut leg, 5, &mut seen, |e| matches!(e, LegEvent::Audio(_))).await;
    // the stranger's 160 datagrams (within a socket's default buffer) were read and refused
    assert!(
        leg.datagrams_received() >= before + 160,
        "{} datagrams read",
        leg.datagrams_received() - before
    );
    leg.close().await;
}

/// webrtc 0.21's ICE agent calls a connection `disconnected` 5 s after the last packet it
/// received and `failed` 25 s after that; the leg gives up 5 s into `disconnected`. So when the
/// network goes silent, the session ends as `Disconnected`, about 10 s after the silence
/// (never `PeerFailed`, which would take 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_going_silent_ends_the_session_as_disconnected() {
    let sim = sim(&scenario("fault-media-stops")).await;
    let mut leg = connector(&sim.base_url(), LegSettings::default())
        .connect_webrtc(&agent())
        .await
        .unwrap();
    let opened = tokio::time::Instant::now();
    // the greeting plays until the path goes silent, 1 s into the session
    leg.send(create()).await.unwrap();
    let mut seen = Seen::default();
    let end = until(&mut leg, 40, &mut seen, |e| matches!(e, LegEvent::Ended(_))).await;
    let after = opened.elapsed();
    assert_eq!(
        end,
        LegEvent::Ended(LegEnd::Disconnected(Duration::from_secs(5))),
        "after {after:?}"
    );
    // not before the silence plus the leg's own 5 s, and well before ICE would fail
    assert!(
        after >= Duration::from_secs(6) && after < Duration::from_secs(20),
        "{after:?}"
    );
    // the greeting (several seconds long) stopped with the silence
    assert!(
        (20..=75).contains(&seen.frames),
        "{} frames arrived",
        seen.frames
    );
    assert!(matches!(
        leg.send(create()).await,
        Err(LegError::Ended(LegEnd::Disconnected(_)))
    ));
    leg.close().await;
}
