//! A WebRTC session end to end against the simulator, from a `webrtc`-crate offerer on
//! loopback: the answer is shaped like OpenAI's, the `oai-events` channel opens with
//! `session.created`, and audio flows both ways as Opus RTP.

mod sim_support;

use std::sync::Arc;
use std::time::Duration;

use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{json, Value};
use sim_support::{
    call_id_of, hangup, mint, opus_codec, post_offer, recv_event, session, start_sim, OfferOptions,
    Peer,
};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::RTCPeerConnectionState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webrtc_call_opens_the_channel_and_carries_audio_both_ways() {
    let sim = start_sim("booking", None).await;
    // the relay's way: mint an ephemeral key with the session, then post the offer with it
    let ek = mint(
        &sim,
        "sk-test",
        json!({"type": "realtime", "instructions": "You book appointments.",
            "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}}),
    )
    .await;

    let ssrc = 0x5151_0001;
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "caller".to_string(),
        "caller-audio".to_string(),
        "caller".to_string(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: opus_codec(),
            ..Default::default()
        }],
    )));
    let (mut peer, offer) = Peer::offer(OfferOptions {
        track: Some(track.clone()),
        ..Default::default()
    })
    .await;

    let resp = post_offer(&sim, &ek, &offer).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["content-type"], "application/sdp");
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let call_id = call_id_of(&resp);
    assert!(
        location.starts_with("/v1/realtime/calls/rtc_"),
        "{location}"
    );
    let answer = resp.text().await.unwrap();
    // shaped like OpenAI's
    assert!(answer.contains("a=group:BUNDLE 0 1"), "{answer}");
    assert!(answer.contains("a=setup:active"));
    assert!(answer.contains("a=rtcp-mux"));
    assert!(answer.contains("a=sctp-port:5000"));
    let m_audio = answer.lines().find(|l| l.starts_with("m=audio")).unwrap();
    assert!(m_audio.ends_with(" 111 0 8"), "{m_audio}");
    let ufrag = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap()
        .trim();
    assert!(answer
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .all(|l| l.contains(" typ host ") && l.trim_end().ends_with(&format!("ufrag {ufrag}"))));

    peer.accept(&answer).await;
    tokio::time::timeout(Duration::from_secs(10), peer.opened.recv())
        .await
        .expect("the oai-events channel opens");
    let created = recv_event(&mut peer.events, "session.created").await;
    assert_eq!(created["session"]["instructions"], "You book appointments.");
    let session_id = created["session"]["id"].as_str().unwrap().to_string();

    // the model greets: output_audio_buffer.started, and Opus RTP with real speech in it
    peer.send(json!({"type": "response.create"})).await;
    recv_event(&mut peer.events, "output_audio_buffer.started").await;
    let mut loud = 0;
    for _ in 0..50 {
        let (pt, peak) = tokio::time::timeout(Duration::from_secs(5), peer.rtp.recv())
            .await
            .expect("model audio arrives")
            .unwrap();
        assert_eq!(pt, 111);
        if peak > 3_000 {
            loud += 1;
        }
    }
    assert!(
        loud > 10,
        "the greeting is audible ({loud} loud packets of 50)"
    );

    // the caller talks over it: Opus RTP, paced at 20 ms
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let mut buf = vec![0u8; 1_500];
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    for i in 0..40u32 {
        ticker.tick().await;
        let amp = if i < 20 { 9_000.0 } else { 0.0 };
        let pcm: Vec<i16> = (0..960)
            .map(|n| ((n as f32 * 0.07).sin() * amp) as i16)
            .collect();
        let len = enc.encode(&pcm, &mut buf).unwrap();
        let pkt = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                payload_type: 111,
                sequence_number: i as u16,
                timestamp: i * 960,
                ssrc,
                marker: i == 0,
                ..Default::default()
            },
            payload: bytes::Bytes::copy_from_slice(&buf[..len]),
        };
        track.write_rtp(pkt).await.unwrap();
    }
    recv_event(&mut peer.events, "input_audio_buffer.speech_started").await;
    let done = recv_event(&mut peer.events, "response.done").await;
    assert_eq!(done["response"]["status"], "cancelled");
    assert_eq!(
        done["response"]["status_details"]["reason"],
        "turn_detected"
    );
    recv_event(&mut peer.events, "output_audio_buffer.cleared").await;

    let log = session(&sim, &session_id).await;
    assert_eq!(log["transport"], "webrtc");
    assert_eq!(log["call_id"], call_id.as_str());
    assert!(
        log["audio_received_seconds"].as_f64().unwrap() >= 0.4,
        "{log}"
    );
    assert!(log["audio_sent_seconds"].as_f64().unwrap() >= 1.0, "{log}");

    // hangup ends the call: the channel closes and the record says why
    assert_eq!(hangup(&sim, &call_id).await, 200);
    tokio::time::timeout(Duration::from_secs(10), peer.closed.recv())
        .await
        .expect("the channel closes after hangup");
    let log = session(&sim, &session_id).await;
    assert_eq!(log["closed"], "hangup");
    peer.pc.close().await.unwrap();
    sim.shutdown().await;
}

/// A minimal offerer for the fault and G.711 cases: one audio codec, the `oai-events` channel,
/// its offer posted with the server key (the session in a multipart part if given); the peer
/// and the simulator's answer.
async fn offer_to(base: &str, pcmu_only: bool, multipart_session: Option<Value>) -> (Peer, String) {
    let (peer, offer) = Peer::offer(OfferOptions {
        pcmu_only,
        short_ice_timeouts: true,
        track: None,
    })
    .await;
    let http = reqwest::Client::new();
    let req = http
        .post(format!("{base}/v1/realtime/calls"))
        .bearer_auth("sk-test");
    let req = match multipart_session {
        Some(session) => req.multipart(
            reqwest::multipart::Form::new()
                .part(
                    "sdp",
                    reqwest::multipart::Part::text(offer)
                        .mime_str("application/sdp")
                        .unwrap(),
                )
                .part(
                    "session",
                    reqwest::multipart::Part::text(session.to_string())
                        .mime_str("application/json")
                        .unwrap(),
                ),
        ),
        None => req.header("content-type", "application/sdp").body(offer),
    };
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let answer = resp.text().await.unwrap();
    peer.accept(&answer).await;
    (peer, answer)
}

async fn sim_with(
    scenario_toml: Option<&str>,
) -> (voxrelay::sim::SimHandle, Option<tempfile::TempDir>) {
    let (scenario, dir) = match scenario_toml {
        Some(text) => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("scenario.toml");
            std::fs::write(&path, text).unwrap();
            (path.display().to_string(), Some(dir))
        }
        None => ("booking".to_string(), None),
    };
    let sim = start_sim(&scenario, None).await;
    (sim, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_g711_only_offer_with_a_multipart_session_gets_pcmu_audio() {
    let (sim, _dir) = sim_with(None).await;
    let (mut peer, answer) = offer_to(
        &sim.base_url(),
        true,
        Some(json!({"type": "realtime", "instructions": "from the multipart part"})),
    )
    .await;
    let m_audio = answer
        .lines()
        .find(|l| l.starts_with("m=audio"))
        .unwrap()
        .to_string();
    assert!(m_audio.split(' ').skip(3).any(|pt| pt == "0"), "{m_audio}");
    tokio::time::timeout(Duration::from_secs(10), peer.opened.recv())
        .await
        .expect("channel opens");
    let created = recv_event(&mut peer.events, "session.created").await;
    assert_eq!(
        created["session"]["instructions"],
        "from the multipart part"
    );
    peer.send(json!({"type": "response.create"})).await;
    let mut loud = 0;
    for _ in 0..50 {
        let (pt, peak) = tokio::time::timeout(Duration::from_secs(5), peer.rtp.recv())
            .await
            .expect("PCMU audio arrives")
            .unwrap();
        assert_eq!(pt, 0);
        if peak > 3_000 {
            loud += 1;
        }
    }
    assert!(loud > 10, "{loud} loud PCMU packets of 50");
    peer.pc.close().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_closes_when_the_scenario_says() {
    let (sim, _dir) = sim_with(Some(
        "name = \"closes\"\n[[steps]]\nsay = { text = \"hi\" }\n[faults]\nclose_after_ms = 300\n",
    ))
    .await;
    let (mut peer, _) = offer_to(&sim.base_url(), false, Some(json!({"type": "realtime"}))).await;
    tokio::time::timeout(Duration::from_secs(10), peer.opened.recv())
        .await
        .expect("channel opens");
    let created = recv_event(&mut peer.events, "session.created").await;
    tokio::time::timeout(Duration::from_secs(10), peer.closed.recv())
        .await
        .expect("the simulator closes the channel");
    let id = created["session"]["id"].as_str().unwrap();
    let log = session(&sim, id).await;
    assert_eq!(log["closed"], "fault: channel closed");
    peer.pc.close().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_never_completes_when_the_scenario_says() {
    let (sim, _dir) = sim_with(Some(
        "name = \"ice\"\n[[steps]]\nsay = { text = \"hi\" }\n[faults]\nice_never_completes = true\n",
    ))
    .await;
    let (mut peer, answer) = offer_to(&sim.base_url(), false, None).await;
    // the answer still looks right
    assert!(answer.contains("a=setup:active") && answer.contains("typ host"));
    // a client's connect deadline (3 s here) passes without ICE connecting
    let connected = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(s) = peer.states.recv().await {
            if s == RTCPeerConnectionState::Connected {
                return true;
            }
        }
        false
    })
    .await;
    assert!(!matches!(connected, Ok(true)), "ICE must not complete");
    assert!(
        connected.is_err(),
        "the state stream stays open while ICE keeps trying"
    );
    assert!(peer.opened.try_recv().is_err(), "the channel never opened");
    peer.pc.close().await.unwrap();
    sim.shutdown().await;
}
