//! The simulator's sideband: a server attaches to a live WebRTC call with
//! `GET /v1/realtime?call_id=…` and the server key, sees the call's events and drives it, while
//! a `webrtc`-crate client on loopback holds the call as a browser would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use voxrelay::sim::{SimConfig, SimHandle, Simulator};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

const WAIT: Duration = Duration::from_secs(20);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Offerer {
    gathered: mpsc::Sender<()>,
    states: mpsc::Sender<RTCPeerConnectionState>,
    rtp: mpsc::Sender<()>,
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
            while let Some(ev) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = ev {
                    if !p.payload.is_empty() {
                        let _ = tx.try_send(());
                    }
                }
            }
        });
    }
}

/// The browser's side of a call: the peer connection, its `oai-events` channel and what
/// arrived on them.
struct Browser {
    pc: Box<dyn PeerConnection>,
    dc: Arc<dyn DataChannel>,
    call_id: String,
    events: mpsc::Receiver<Value>,
    closed: mpsc::Receiver<()>,
    states: mpsc::Receiver<RTCPeerConnectionState>,
    rtp: mpsc::Receiver<()>,
}

impl Browser {
    async fn send(&self, event: Value) {
        self.dc.send_text(&event.to_string()).await.unwrap();
    }
}

async fn sim(scenario: &str) -> SimHandle {
    Simulator::start(SimConfig {
        listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        scenario: scenario.into(),
        api_key: None,
    })
    .await
    .unwrap()
}

/// Opens a WebRTC call to the simulator with the server key and waits for `session.created`.
async fn call(sim: &SimHandle) -> Browser {
    let (gathered_tx, mut gathered_rx) = mpsc::channel(1);
    let (states_tx, states) = mpsc::channel(64);
    let (rtp_tx, rtp) = mpsc::channel(4_096);
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
    pc.add_transceiver_from_kind(RtpCodecKind::Audio, None)
        .await
        .unwrap();
    let dc = pc.create_data_channel("oai-events", None).await.unwrap();
    let (ev_tx, mut events) = mpsc::channel::<Value>(4_096);
    let (closed_tx, closed) = mpsc::channel::<()>(1);
    {
        let dc = dc.clone();
        tokio::spawn(async move {
            while let Some(ev) = dc.poll().await {
                match ev {
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
    tokio::time::timeout(WAIT, gathered_rx.recv())
        .await
        .unwrap();
    let offer = pc.local_description().await.unwrap().sdp;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/realtime/calls", sim.base_url()))
        .bearer_auth("sk-test")
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let call_id = resp
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let answer = resp.text().await.unwrap();
    pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    recv_dc(&mut events, "session.created").await;
    Browser {
        pc: Box::new(pc),
        dc,
        call_id,
        events,
        closed,
        states,
        rtp,
    }
}

/// The next event of this type on the data channel.
async fn recv_dc(rx: &mut mpsc::Receiver<Value>, kind: &str) -> Value {
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

fn sideband_request(
    sim: &SimHandle,
    call_id: &str,
    key: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = format!("ws://{}/v1/realtime?call_id={call_id}", sim.local_addr())
        .into_client_request()
        .unwrap();
    if let Some(key) = key {
        req.headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    req
}

async fn attach(sim: &SimHandle, call_id: &str) -> Ws {
    let (ws, resp) =
        tokio_tungstenite::connect_async(sideband_request(sim, call_id, Some("sk-test")))
            .await
            .expect("the sideband attaches");
    assert_eq!(resp.status(), 101);
    ws
}

/// The status and JSON body of a refused attachment.
async fn refused(sim: &SimHandle, call_id: &str, key: Option<&str>) -> (u16, Value) {
    match tokio_tungstenite::connect_async(sideband_request(sim, call_id, key)).await {
        Ok(_) => panic!("the sideband attached to {call_id} with {key:?}"),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let body = r
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            (r.status().as_u16(), body)
        }
        Err(e) => panic!("{e}"),
    }
}

/// The next server event of this type on the sideband (text frames only).
async fn recv_ws(ws: &mut Ws, kind: &str) -> Value {
    let mut seen = vec![];
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} on the sideband; saw {seen:?}"))
            .expect("the sideband is open")
            .expect("no transport error");
        match msg {
            Message::Text(t) => {
                let ev: Value = serde_json::from_str(t.as_str()).unwrap();
                let t = ev["type"].as_str().unwrap_or("").to_string();
                if t == kind {
                    return ev;
                }
                seen.push(t);
            }
            Message::Close(frame) => {
                panic!("sideband closed ({frame:?}) before {kind}; saw {seen:?}")
            }
            _ => {}
        }
    }
}

/// Reads the sideband to its close frame; returns it with the event types seen before.
async fn until_close(ws: &mut Ws) -> (Option<(CloseCode, String)>, Vec<Value>) {
    let mut seen = vec![];
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap_or_else(|_| panic!("the sideband stays open; saw {seen:?}"));
        match msg {
            Some(Ok(Message::Text(t))) => seen.push(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                return (frame.map(|f| (f.code, f.reason.to_string())), seen)
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("the sideband ended without a close frame: {e}"),
            None => panic!("the sideband ended without a close frame"),
        }
    }
}

async fn session_of(sim: &SimHandle, call_id: &str) -> Value {
    let all: Value = reqwest::get(format!("{}/sim/sessions", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["call_id"] == call_id)
        .cloned()
        .expect("the call has a session record")
}

async fn send_ws(ws: &mut Ws, event: Value) {
    ws.send(Message::Text(event.to_string().into()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sideband_drives_the_call_and_sees_what_the_browser_sends() {
    let sim = sim("booking").await;
    let mut browser = call(&sim).await;
    let mut ws = attach(&sim, &browser.call_id).await;

    // the server configures the session: the browser sees it as session.updated
    send_ws(
        &mut ws,
        json!({"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}}),
    )
    .await;
    let updated = recv_dc(&mut browser.events, "session.updated").await;
    assert_eq!(updated["session"]["instructions"], "Be brief.");
    recv_ws(&mut ws, "session.updated").await;

    // the server makes the model speak: both the browser and the server see the response,
    // and the browser hears it
    send_ws(
        &mut ws,
        json!({"type": "response.create", "event_id": "evt_sideband_1"}),
    )
    .await;
    let created = recv_dc(&mut browser.events, "response.created").await;
    let on_sideband = recv_ws(&mut ws, "response.created").await;
    assert_eq!(created["response"]["id"], on_sideband["response"]["id"]);
    tokio::time::timeout(WAIT, browser.rtp.recv())
        .await
        .expect("model audio reaches the browser")
        .unwrap();
    let done = recv_dc(&mut browser.events, "response.done").await;
    let done_sb = recv_ws(&mut ws, "response.done").await;
    assert_eq!(done["response"]["id"], done_sb["response"]["id"]);
    assert_eq!(done_sb["response"]["status"], "completed");

    // what the browser sends, the server sees
    browser
        .send(json!({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "typed in the browser"}]
        }}))
        .await;
    let added = recv_ws(&mut ws, "conversation.item.added").await;
    assert_eq!(added["item"]["content"][0]["text"], "typed in the browser");

    // the sideband goes away; the call goes on
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    browser.send(json!({"type": "response.create"})).await;
    recv_dc(&mut browser.events, "response.done").await;
    let log = session_of(&sim, &browser.call_id).await;
    assert_eq!(log["closed"], Value::Null, "{log}");
    assert_eq!(log["sideband_attachments"], 1);
    assert_eq!(
        log["sideband_events_received"],
        json!(["session.update", "response.create"])
    );
    let received: Vec<&str> = log["events_received"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        received,
        [
            "session.update",
            "response.create",
            "conversation.item.create",
            "response.create"
        ]
    );

    // another sideband may attach to the same call later
    let mut again = attach(&sim, &browser.call_id).await;
    send_ws(&mut again, json!({"type": "response.create"})).await;
    recv_ws(&mut again, "response.created").await;
    assert_eq!(
        session_of(&sim, &browser.call_id).await["sideband_attachments"],
        2
    );
    browser.pc.close().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sideband_takes_the_server_key_and_a_live_call_only() {
    let sim = sim("booking").await;
    let browser = call(&sim).await;
    let id = browser.call_id.clone();

    let (status, body) = refused(&sim, &id, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, _) = refused(&sim, &id, Some("not-a-key")).await;
    assert_eq!(status, 401);

    // an ephemeral key, though valid for /calls, does not find the call
    let minted: Value = reqwest::Client::new()
        .post(format!("{}/v1/realtime/client_secrets", sim.base_url()))
        .bearer_auth("sk-test")
        .json(&json!({"session": {"type": "realtime"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ek = minted["value"].as_str().unwrap();
    assert!(ek.starts_with("ek_"));
    let (status, body) = refused(&sim, &id, Some(ek)).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "call_id_not_found");
    assert!(!body.to_string().contains(ek), "the key is not echoed");

    let (status, body) = refused(&sim, "rtc_nosuchcall", Some("sk-test")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "call_id_not_found");
    assert_eq!(
        body["error"]["message"],
        "No session found for the provided call_id"
    );

    // a few sidebands per call, not more
    let mut held = vec![];
    for _ in 0..4 {
        held.push(attach(&sim, &id).await);
    }
    let (status, body) = refused(&sim, &id, Some("sk-test")).await;
    assert_eq!(status, 409, "{body}");
    // one leaves, and its slot is free again
    let mut first = held.remove(0);
    first.close(None).await.unwrap();
    while first.next().await.is_some() {}
    let log = session_of(&sim, &id).await;
    assert_eq!(log["sideband_attachments"], 4);
    let fifth = tokio::time::timeout(WAIT, async {
        loop {
            match tokio_tungstenite::connect_async(sideband_request(&sim, &id, Some("sk-test")))
                .await
            {
                Ok((ws, _)) => return ws,
                // the call may not have heard yet that the socket went
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 409 => {
                    tokio::task::yield_now().await
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("a freed slot takes a new sideband");
    drop(fifth);

    // an ended call is not found
    let r = reqwest::Client::new()
        .post(format!("{}/v1/realtime/calls/{id}/hangup", sim.base_url()))
        .bearer_auth("sk-test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for mut ws in held {
        until_close(&mut ws).await;
    }
    let (status, _) = refused(&sim, &id, Some("sk-test")).await;
    assert_eq!(status, 404);
    browser.pc.close().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_up_closes_the_sideband_and_the_browsers_channel() {
    let sim = sim("booking").await;
    let mut browser = call(&sim).await;
    let mut ws = attach(&sim, &browser.call_id).await;
    let r = reqwest::Client::new()
        .post(format!(
            "{}/v1/realtime/calls/{}/hangup",
            sim.base_url(),
            browser.call_id
        ))
        .bearer_auth("sk-test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (frame, _) = until_close(&mut ws).await;
    assert_eq!(frame, Some((CloseCode::Normal, "hangup".to_string())));
    tokio::time::timeout(WAIT, browser.closed.recv())
        .await
        .expect("the browser's channel closes after hangup");
    // and the browser's connection ends too, not only the channel
    let mut states = vec![];
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(s) = browser.states.recv().await {
            states.push(s);
            if matches!(
                s,
                RTCPeerConnectionState::Closed
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Disconnected
            ) {
                return s;
            }
        }
        panic!("no more connection states");
    })
    .await;
    assert!(ended.is_ok(), "the connection stays up: {states:?}");
    let log = session_of(&sim, &browser.call_id).await;
    assert_eq!(log["closed"], "hangup");
    browser.pc.close().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_tells_the_sideband_why_before_closing_it() {
    let sim = sim(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/scenarios/fault-session-expired.toml"
    ))
    .await;
    let browser = call(&sim).await;
    let mut ws = attach(&sim, &browser.call_id).await;
    let (frame, seen) = until_close(&mut ws).await;
    let last = seen.last().expect("an event before the close");
    assert_eq!(last["type"], "error");
    assert_eq!(last["error"]["code"], "session_expired");
    assert_eq!(
        frame,
        Some((CloseCode::Normal, "session_expired".to_string()))
    );
    browser.pc.close().await.unwrap();
    sim.shutdown().await;
}
