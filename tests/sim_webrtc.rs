//! A WebRTC session end to end against the simulator, from a `webrtc`-crate offerer on
//! loopback: the answer is shaped like OpenAI's, the `oai-events` channel opens with
//! `session.created`, and audio flows both ways as Opus RTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_OPUS};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use voxrelay::sim::{SimConfig, Simulator};
use webrtc::data_channel::DataChannelEvent;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

struct Offerer {
    gathered: mpsc::Sender<()>,
    states: mpsc::Sender<RTCPeerConnectionState>,
    /// (payload type, max abs sample of the decoded packet)
    rtp: mpsc::Sender<(u8, i16)>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Offerer {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.states.try_send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let tx = self.rtp.clone();
        tokio::spawn(async move {
            let mut dec = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
            let mut pcm = vec![0i16; 5_760];
            while let Some(ev) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = ev {
                    let n = if p.header.payload_type == 0 {
                        for (i, b) in p.payload.iter().take(pcm.len()).enumerate() {
                            pcm[i] = voxrelay::sim::g711::ulaw_decode(*b);
                        }
                        p.payload.len().min(pcm.len())
                    } else {
                        dec.decode(&p.payload, &mut pcm, false).unwrap_or(0)
                    };
                    let peak = pcm[..n]
                        .iter()
                        .map(|s| s.saturating_abs())
                        .max()
                        .unwrap_or(0);
                    let _ = tx.try_send((p.header.payload_type, peak));
                }
            }
        });
    }
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

async fn recv_event(rx: &mut mpsc::Receiver<Value>, kind: &str) -> Value {
    let mut seen = vec![];
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {kind} within 10 s; saw {seen:?}"))
            .expect("channel open");
        let t = ev["type"].as_str().unwrap_or("").to_string();
        if t == kind {
            return ev;
        }
        seen.push(t);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webrtc_call_opens_the_channel_and_carries_audio_both_ways() {
    let sim = Simulator::start(SimConfig {
        listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        scenario: "booking".into(),
        api_key: None,
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    // the relay's way: mint an ephemeral key with the session, then post the offer with it
    let minted: Value = http
        .post(format!("{}/v1/realtime/client_secrets", sim.base_url()))
        .bearer_auth("sk-test")
        .json(
            &json!({"session": {"type": "realtime", "instructions": "You book appointments.",
            "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ek = minted["value"].as_str().unwrap().to_string();

    let (gathered_tx, mut gathered_rx) = mpsc::channel(1);
    let (states_tx, _states_rx) = mpsc::channel(64);
    let (rtp_tx, mut rtp_rx) = mpsc::channel(4_096);
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media)
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                .build(),
        )
        .with_handler(Arc::new(Offerer {
            gathered: gathered_tx,
            states: states_tx,
            rtp: rtp_tx,
        }))
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .build()
        .await
        .unwrap();
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
    pc.add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let dc = pc.create_data_channel("oai-events", None).await.unwrap();
    let (ev_tx, mut ev_rx) = mpsc::channel::<Value>(4_096);
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    let (closed_tx, mut closed_rx) = mpsc::channel::<()>(1);
    {
        let dc = dc.clone();
        tokio::spawn(async move {
            while let Some(ev) = dc.poll().await {
                match ev {
                    DataChannelEvent::OnOpen => {
                        let _ = open_tx.try_send(());
                    }
                    DataChannelEvent::OnMessage(m) => {
                        if let Ok(v) = serde_json::from_slice::<Value>(&m.data) {
                            let _ = ev_tx.send(v).await;
                        }
                    }
                    DataChannelEvent::OnClose => {
                        let _ = closed_tx.try_send(());
                        break;
                    }
                    _ => {}
                }
            }
        });
    }
    let offer = pc.create_offer(None).await.unwrap();
    pc.set_local_description(offer).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), gathered_rx.recv())
        .await
        .unwrap();
    let offer = pc.local_description().await.unwrap();

    let resp = http
        .post(format!("{}/v1/realtime/calls", sim.base_url()))
        .bearer_auth(&ek)
        .header("content-type", "application/sdp")
        .body(offer.sdp.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["content-type"], "application/sdp");
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let call_id = location.rsplit('/').next().unwrap().to_string();
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

    pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), open_rx.recv())
        .await
        .expect("the oai-events channel opens");
    let created = recv_event(&mut ev_rx, "session.created").await;
    assert_eq!(created["session"]["instructions"], "You book appointments.");
    let session_id = created["session"]["id"].as_str().unwrap().to_string();

    // the model greets: output_audio_buffer.started, and Opus RTP with real speech in it
    dc.send_text(&json!({"type": "response.create"}).to_string())
        .await
        .unwrap();
    recv_event(&mut ev_rx, "output_audio_buffer.started").await;
    let mut loud = 0;
    for _ in 0..50 {
        let (pt, peak) = tokio::time::timeout(Duration::from_secs(5), rtp_rx.recv())
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
    recv_event(&mut ev_rx, "input_audio_buffer.speech_started").await;
    let done = recv_event(&mut ev_rx, "response.done").await;
    assert_eq!(done["response"]["status"], "cancelled");
    assert_eq!(
        done["response"]["status_details"]["reason"],
        "turn_detected"
    );
    recv_event(&mut ev_rx, "output_audio_buffer.cleared").await;

    let log: Value = http
        .get(format!("{}/sim/sessions/{session_id}", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log["transport"], "webrtc");
    assert!(
        log["audio_received_seconds"].as_f64().unwrap() >= 0.4,
        "{log}"
    );
    assert!(log["audio_sent_seconds"].as_f64().unwrap() >= 1.0, "{log}");

    // hangup ends the call: the channel closes and the record says why
    let r = http
        .post(format!(
            "{}/v1/realtime/calls/{call_id}/hangup",
            sim.base_url()
        ))
        .bearer_auth("sk-test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::timeout(Duration::from_secs(10), closed_rx.recv())
        .await
        .expect("the channel closes after hangup");
    let log: Value = http
        .get(format!("{}/sim/sessions/{session_id}", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log["closed"], "hangup");
    pc.close().await.unwrap();
    sim.shutdown().await;
}

/// A minimal offerer for the fault and G.711 cases: one audio codec, the `oai-events` channel.
struct Peer {
    pc: Box<dyn PeerConnection>,
    dc: Arc<dyn webrtc::data_channel::DataChannel>,
    events: mpsc::Receiver<Value>,
    opened: mpsc::Receiver<()>,
    closed: mpsc::Receiver<()>,
    states: mpsc::Receiver<RTCPeerConnectionState>,
    rtp: mpsc::Receiver<(u8, i16)>,
    answer: String,
}

async fn offer_to(base: &str, pcmu_only: bool, multipart_session: Option<Value>) -> Peer {
    let (gathered_tx, mut gathered_rx) = mpsc::channel(1);
    let (states_tx, states) = mpsc::channel(64);
    let (rtp_tx, rtp) = mpsc::channel(4_096);
    let mut media = MediaEngine::default();
    if pcmu_only {
        media
            .register_codec(
                rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type:
                            rtc::peer_connection::configuration::media_engine::MIME_TYPE_PCMU
                                .to_owned(),
                        clock_rate: 8_000,
                        channels: 0,
                        sdp_fmtp_line: String::new(),
                        rtcp_feedback: vec![],
                    },
                    payload_type: 0,
                },
                RtpCodecKind::Audio,
            )
            .unwrap();
    } else {
        media.register_default_codecs().unwrap();
    }
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media)
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                .with_ice_timeouts(
                    Some(Duration::from_secs(1)),
                    Some(Duration::from_secs(2)),
                    Some(Duration::from_millis(500)),
                )
                .build(),
        )
        .with_handler(Arc::new(Offerer {
            gathered: gathered_tx,
            states: states_tx,
            rtp: rtp_tx,
        }))
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .build()
        .await
        .unwrap();
    pc.add_transceiver_from_kind(RtpCodecKind::Audio, None)
        .await
        .unwrap();
    let dc = pc.create_data_channel("oai-events", None).await.unwrap();
    let (ev_tx, events) = mpsc::channel::<Value>(4_096);
    let (open_tx, opened) = mpsc::channel::<()>(1);
    let (closed_tx, closed) = mpsc::channel::<()>(1);
    {
        let dc = dc.clone();
        tokio::spawn(async move {
            while let Some(ev) = dc.poll().await {
                match ev {
                    DataChannelEvent::OnOpen => {
                        let _ = open_tx.try_send(());
                    }
                    DataChannelEvent::OnMessage(m) => {
                        if let Ok(v) = serde_json::from_slice::<Value>(&m.data) {
                            let _ = ev_tx.send(v).await;
                        }
                    }
                    DataChannelEvent::OnClose => {
                        let _ = closed_tx.try_send(());
                        break;
                    }
                    _ => {}
                }
            }
        });
    }
    let offer = pc.create_offer(None).await.unwrap();
    pc.set_local_description(offer).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), gathered_rx.recv())
        .await
        .unwrap();
    let offer = pc.local_description().await.unwrap().sdp;
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
    pc.set_remote_description(RTCSessionDescription::answer(answer.clone()).unwrap())
        .await
        .unwrap();
    Peer {
        pc: Box::new(pc),
        dc,
        events,
        opened,
        closed,
        states,
        rtp,
        answer,
    }
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
    let sim = Simulator::start(SimConfig {
        listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        scenario,
        api_key: None,
    })
    .await
    .unwrap();
    (sim, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_g711_only_offer_with_a_multipart_session_gets_pcmu_audio() {
    let (sim, _dir) = sim_with(None).await;
    let mut peer = offer_to(
        &sim.base_url(),
        true,
        Some(json!({"type": "realtime", "instructions": "from the multipart part"})),
    )
    .await;
    let m_audio = peer
        .answer
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
    peer.dc
        .send_text(&json!({"type": "response.create"}).to_string())
        .await
        .unwrap();
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
    let mut peer = offer_to(&sim.base_url(), false, Some(json!({"type": "realtime"}))).await;
    tokio::time::timeout(Duration::from_secs(10), peer.opened.recv())
        .await
        .expect("channel opens");
    let created = recv_event(&mut peer.events, "session.created").await;
    tokio::time::timeout(Duration::from_secs(10), peer.closed.recv())
        .await
        .expect("the simulator closes the channel");
    let id = created["session"]["id"].as_str().unwrap();
    let log: Value = reqwest::get(format!("{}/sim/sessions/{id}", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let mut peer = offer_to(&sim.base_url(), false, None).await;
    // the answer still looks right
    assert!(peer.answer.contains("a=setup:active") && peer.answer.contains("typ host"));
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
        matches!(connected, Err(_)),
        "the state stream stays open while ICE keeps trying"
    );
    assert!(peer.opened.try_recv().is_err(), "the channel never opened");
    peer.pc.close().await.unwrap();
    sim.shutdown().await;
}
