//! The simulator from a client's side, shared by the tests that talk to it directly: starting
//! one on loopback, minting an ephemeral key, its session records, hanging a call up, and a
//! `webrtc`-crate offerer standing where a browser would (the peer connection, its
//! `oai-events` channel and what arrives on both).

#![allow(dead_code)] // each test binary uses its own share of these

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_PCMU};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use voxrelay::sim::{SimConfig, SimHandle, Simulator};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

/// How long a test waits for one thing the simulator or the peer connection should do.
pub const WAIT: Duration = Duration::from_secs(20);

/// A simulator on a loopback port playing `scenario` (a built-in name or a path), taking
/// `api_key` as its server key (`None`: any key).
pub async fn start_sim(scenario: &str, api_key: Option<&str>) -> SimHandle {
    Simulator::start(SimConfig {
        listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        scenario: scenario.to_string(),
        api_key: api_key.map(Into::into),
    })
    .await
    .unwrap()
}

/// Mints an ephemeral key for `session` with the server key, as the relay does; its value.
pub async fn mint(sim: &SimHandle, server_key: &str, session: Value) -> String {
    let minted: Value = reqwest::Client::new()
        .post(format!("{}/v1/realtime/client_secrets", sim.base_url()))
        .bearer_auth(server_key)
        .json(&json!({ "session": session }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    minted["value"].as_str().expect("a minted key").to_string()
}

/// `GET /sim/sessions`: every session's record and the simulator's counters.
pub async fn sessions(sim: &SimHandle) -> Value {
    get_json(&format!("{}/sim/sessions", sim.base_url())).await
}

/// `GET /sim/sessions/{id}`: one session's record.
pub async fn session(sim: &SimHandle, session_id: &str) -> Value {
    get_json(&format!("{}/sim/sessions/{session_id}", sim.base_url())).await
}

/// The record of the session serving the WebRTC call `call_id`, if there is one.
pub async fn session_of_call(sim: &SimHandle, call_id: &str) -> Option<Value> {
    sessions(sim).await["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["call_id"] == call_id)
        .cloned()
}

/// The types of the client events a session's record says it received, in order.
pub fn events_received(record: &Value) -> Vec<&str> {
    record["events_received"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

/// `POST /v1/realtime/calls/{call_id}/hangup` with the server key `sk-test`; the status.
pub async fn hangup(sim: &SimHandle, call_id: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!(
            "{}/v1/realtime/calls/{call_id}/hangup",
            sim.base_url()
        ))
        .bearer_auth("sk-test")
        .send()
        .await
        .unwrap()
        .status()
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// `POST /v1/realtime/calls` with `offer` as `application/sdp`, authorized by `key`.
pub async fn post_offer(sim: &SimHandle, key: &str, offer: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/realtime/calls", sim.base_url()))
        .bearer_auth(key)
        .header("content-type", "application/sdp")
        .body(offer.to_string())
        .send()
        .await
        .unwrap()
}

/// The call id at the end of a `POST /v1/realtime/calls` answer's `Location`.
pub fn call_id_of(resp: &reqwest::Response) -> String {
    resp.headers()["location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string()
}

/// The next event of type `kind` among `rx`'s, within [`WAIT`]; the types seen before it (and
/// whole error events) go into the panic message.
pub async fn recv_event(rx: &mut mpsc::Receiver<Value>, kind: &str) -> Value {
    let mut seen = vec![];
    loop {
        let ev = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {kind} on the data channel; saw {seen:?}"))
            .expect("the data channel is open");
        let t = ev["type"].as_str().unwrap_or("").to_string();
        if t == kind {
            return ev;
        }
        seen.push(if t == "error" { ev.to_string() } else { t });
    }
}

/// The Opus codec a browser offers.
pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// What the offerer offers.
#[derive(Default)]
pub struct OfferOptions {
    /// Offer PCMU (payload type 0) as the only audio codec, instead of the default codecs.
    pub pcmu_only: bool,
    /// Give up on ICE within seconds (for a call that should never connect).
    pub short_ice_timeouts: bool,
    /// A track to send from; without one, a receive-only audio transceiver.
    pub track: Option<Arc<TrackLocalStaticRTP>>,
}

/// The offerer's side of a call: the peer connection, its `oai-events` channel and what
/// arrived on them.
pub struct Peer {
    pub pc: Box<dyn PeerConnection>,
    pub dc: Arc<dyn DataChannel>,
    /// The data channel's events, parsed.
    pub events: mpsc::Receiver<Value>,
    /// Once when the data channel opens.
    pub opened: mpsc::Receiver<()>,
    /// Once when the data channel closes.
    pub closed: mpsc::Receiver<()>,
    pub states: mpsc::Receiver<RTCPeerConnectionState>,
    /// Each RTP packet with a payload received: (payload type, peak sample once decoded).
    pub rtp: mpsc::Receiver<(u8, i16)>,
}

impl Peer {
    /// Builds the peer connection on loopback with the `oai-events` channel, sets its offer and
    /// waits for ICE gathering; the peer and its offer's SDP (candidates included).
    pub async fn offer(opts: OfferOptions) -> (Peer, String) {
        let (gathered_tx, mut gathered_rx) = mpsc::channel(1);
        let (states_tx, states) = mpsc::channel(64);
        let (rtp_tx, rtp) = mpsc::channel(4_096);
        let mut media = MediaEngine::default();
        if opts.pcmu_only {
            media
                .register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: RTCRtpCodec {
                            mime_type: MIME_TYPE_PCMU.to_owned(),
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
        let mut settings =
            SettingEngineBuilder::new().with_multicast_dns_mode(MulticastDnsMode::Disabled);
        if opts.short_ice_timeouts {
            settings = settings.with_ice_timeouts(
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(2)),
                Some(Duration::from_millis(500)),
            );
        }
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_setting_engine(settings.build())
            .with_handler(Arc::new(Offerer {
                gathered: gathered_tx,
                states: states_tx,
                rtp: rtp_tx,
            }))
            .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
            .build()
            .await
            .unwrap();
        match opts.track {
            Some(track) => {
                pc.add_track(track as Arc<dyn TrackLocal>).await.unwrap();
            }
            None => {
                pc.add_transceiver_from_kind(RtpCodecKind::Audio, None)
                    .await
                    .unwrap();
            }
        }
        let dc = pc.create_data_channel("oai-events", None).await.unwrap();
        let (events, opened, closed) = pump(dc.clone());
        let offer = pc.create_offer(None).await.unwrap();
        pc.set_local_description(offer).await.unwrap();
        tokio::time::timeout(WAIT, gathered_rx.recv())
            .await
            .expect("ICE gathering completes");
        let sdp = pc.local_description().await.unwrap().sdp;
        let peer = Peer {
            pc: Box::new(pc),
            dc,
            events,
            opened,
            closed,
            states,
            rtp,
        };
        (peer, sdp)
    }

    /// Takes the simulator's SDP answer.
    pub async fn accept(&self, answer: &str) {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer.to_string()).unwrap())
            .await
            .unwrap();
    }

    /// Sends a client event on the `oai-events` channel.
    pub async fn send(&self, event: Value) {
        self.dc.send_text(&event.to_string()).await.unwrap();
    }
}

/// Reads the data channel in a task: its parsed messages, its opening and its closing.
fn pump(
    dc: Arc<dyn DataChannel>,
) -> (
    mpsc::Receiver<Value>,
    mpsc::Receiver<()>,
    mpsc::Receiver<()>,
) {
    let (ev_tx, events) = mpsc::channel::<Value>(4_096);
    let (open_tx, opened) = mpsc::channel::<()>(1);
    let (closed_tx, closed) = mpsc::channel::<()>(1);
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
    (events, opened, closed)
}

/// The peer connection's handler: gathering done, connection states, and the remote track's
/// packets decoded (Opus, or PCMU for payload type 0) to their peak sample.
struct Offerer {
    gathered: mpsc::Sender<()>,
    states: mpsc::Sender<RTCPeerConnectionState>,
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
                let TrackRemoteEvent::OnRtpPacket(p) = ev else {
                    continue;
                };
                if p.payload.is_empty() {
                    continue;
                }
                let n = if p.header.payload_type == 0 {
                    for (i, b) in p.payload.iter().take(pcm.len()).enumerate() {
                        pcm[i] = voxrelay::media::g711::ulaw_decode(*b);
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
        });
    }
}
