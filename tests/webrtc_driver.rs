//! The WebRTC connection's driver (webrtc 0.21.1, carried in vendor/webrtc with one fix) sends
//! what its own passes queue at once, instead of holding it until its next timer.
//!
//! Both peers run on webrtc's `MockRuntime`: an in-memory network and virtual clocks that move
//! only when this test moves them. The clocks are advanced until both peers are connected (ICE
//! and DTLS), then frozen. The SCTP association and the data channel's open handshake need no
//! timer when no packet is lost, so the channel must open with the clocks frozen. Before the fix,
//! the SCTP INIT queued when DTLS completed (and the DCEP open queued when the association came
//! up) waited for the driver's next timer, about 200 ms of every call's set-up; with frozen clocks
//! the channel never opened and this test failed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use tokio::sync::watch;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceCandidateInit,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, SettingEngineBuilder,
};
use webrtc::runtime::mock::{MockRuntime, MockUDPNetwork};
use webrtc::runtime::Runtime;

/// Virtual time per step while ICE and DTLS connect.
const STEP: Duration = Duration::from_millis(20);
/// Steps before giving up (20 s of virtual time).
const STEPS: usize = 1000;
/// Real time a driver gets to act on one step before the next: ample for in-memory packets.
const STEP_WAIT: Duration = Duration::from_millis(50);
/// Real time the frozen-clock handshake gets; it needs a few milliseconds when it works.
const OPEN_WAIT: Duration = Duration::from_secs(10);

/// What a peer reports: connected (ICE and DTLS), candidates to trickle.
struct Recorder {
    connected: watch::Sender<bool>,
    candidates: Mutex<Vec<RTCIceCandidateInit>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Recorder {
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            self.connected.send_replace(true);
        }
    }

    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            self.candidates.lock().unwrap().push(init);
        }
    }
}

struct Peer {
    pc: Arc<dyn PeerConnection>,
    rt: Arc<MockRuntime>,
    rec: Arc<Recorder>,
    connected: watch::Receiver<bool>,
}

async fn peer(network: &Arc<MockUDPNetwork>) -> Peer {
    let rt = Arc::new(MockRuntime::with_network(network.clone()));
    // far from the wall clock, so a driver reading the wall clock instead could not work
    rt.clock().advance(Duration::from_secs(3600));
    let (tx, connected) = watch::channel(false);
    let rec = Arc::new(Recorder {
        connected: tx,
        candidates: Mutex::new(Vec::new()),
    });
    // mDNS binds the fixed port 5353, which two peers on one mock network would share
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_setting_engine(settings)
        .with_runtime(rt.clone() as Arc<dyn Runtime>)
        .with_handler(rec.clone() as Arc<dyn PeerConnectionEventHandler>)
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await
        .expect("a peer connection on the mock runtime");
    Peer {
        pc: Arc::new(pc),
        rt,
        rec,
        connected,
    }
}

async fn trickle(from: &Peer, to: &Peer) {
    let candidates = std::mem::take(&mut *from.rec.candidates.lock().unwrap());
    for c in candidates {
        to.pc.add_ice_candidate(c).await.expect("add candidate");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_channel_opens_without_waiting_for_a_timer_once_dtls_is_up() {
    let network = Arc::new(MockUDPNetwork::new());
    let offerer = peer(&network).await;
    let answerer = peer(&network).await;

    // as the relay's leg does: the events channel, created before the offer
    let dc = offerer
        .pc
        .create_data_channel("oai-events", None)
        .await
        .expect("create data channel");
    let (open_tx, mut open_rx) = watch::channel(false);
    let reader: Arc<dyn DataChannel> = dc.clone();
    tokio::spawn(async move {
        while let Some(ev) = reader.poll().await {
            if matches!(ev, DataChannelEvent::OnOpen) {
                open_tx.send_replace(true);
            }
        }
    });

    let offer = offerer.pc.create_offer(None).await.expect("offer");
    offerer
        .pc
        .set_local_description(offer.clone())
        .await
        .unwrap();
    answerer.pc.set_remote_description(offer).await.unwrap();
    let answer = answerer.pc.create_answer(None).await.expect("answer");
    answerer
        .pc
        .set_local_description(answer.clone())
        .await
        .unwrap();
    offerer.pc.set_remote_description(answer).await.unwrap();

    // ICE and DTLS: advance both clocks a step at a time, trickling candidates, until both peers
    // are connected
    let mut a_up = offerer.connected.clone();
    let mut b_up = answerer.connected.clone();
    let mut steps = 0;
    while !(*a_up.borrow() && *b_up.borrow()) {
        assert!(
            steps < STEPS,
            "the peers did not connect on the mock network"
        );
        steps += 1;
        trickle(&offerer, &answerer).await;
        trickle(&answerer, &offerer).await;
        offerer.rt.clock().advance(STEP);
        answerer.rt.clock().advance(STEP);
        // wait for the drivers to act on this step (or for both to connect), then step again
        let both = async {
            let _ = a_up.wait_for(|up| *up).await;
            let _ = b_up.wait_for(|up| *up).await;
        };
        let _ = tokio::time::timeout(STEP_WAIT, both).await;
    }
    let frozen_at = (offerer.rt.now(), answerer.rt.now());

    // clocks frozen from here: SCTP and DCEP must complete on packets alone
    let opened = tokio::time::timeout(OPEN_WAIT, open_rx.wait_for(|open| *open)).await;
    assert_eq!(
        frozen_at,
        (offerer.rt.now(), answerer.rt.now()),
        "the clocks must not have moved"
    );
    assert!(
        matches!(opened, Ok(Ok(_))),
        "the data channel did not open with the clocks frozen once DTLS was up: \
         a packet queued by the driver waits for a timer"
    );

    let _ = offerer.pc.close().await;
    let _ = answerer.pc.close().await;
}
