//! The simulator's sideband: a server attaches to a live WebRTC call with
//! `GET /v1/realtime?call_id=…` and the server key, sees the call's events and drives it, while
//! a `webrtc`-crate client on loopback holds the call as a browser would.

mod sim_support;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sim_support::{
    call_id_of, events_received, hangup, mint, post_offer, recv_event as recv_dc, session_of_call,
    start_sim, OfferOptions, Peer, WAIT,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use voxrelay::sim::SimHandle;
use webrtc::peer_connection::RTCPeerConnectionState;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The browser's side of a call: the `webrtc`-crate peer and the call's id.
struct Browser {
    peer: Peer,
    call_id: String,
}

async fn sim(scenario: &str) -> SimHandle {
    start_sim(scenario, None).await
}

/// Opens a WebRTC call to the simulator with the server key and waits for `session.created`.
async fn call(sim: &SimHandle) -> Browser {
    let (mut peer, offer) = Peer::offer(OfferOptions::default()).await;
    let resp = post_offer(sim, "sk-test", &offer).await;
    assert_eq!(resp.status(), 201);
    let call_id = call_id_of(&resp);
    peer.accept(&resp.text().await.unwrap()).await;
    recv_dc(&mut peer.events, "session.created").await;
    Browser { peer, call_id }
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
    session_of_call(sim, call_id)
        .await
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
    let updated = recv_dc(&mut browser.peer.events, "session.updated").await;
    assert_eq!(updated["session"]["instructions"], "Be brief.");
    recv_ws(&mut ws, "session.updated").await;

    // the server makes the model speak: both the browser and the server see the response,
    // and the browser hears it
    send_ws(
        &mut ws,
        json!({"type": "response.create", "event_id": "evt_sideband_1"}),
    )
    .await;
    let created = recv_dc(&mut browser.peer.events, "response.created").await;
    let on_sideband = recv_ws(&mut ws, "response.created").await;
    assert_eq!(created["response"]["id"], on_sideband["response"]["id"]);
    tokio::time::timeout(WAIT, browser.peer.rtp.recv())
        .await
        .expect("model audio reaches the browser")
        .unwrap();
    let done = recv_dc(&mut browser.peer.events, "response.done").await;
    let done_sb = recv_ws(&mut ws, "response.done").await;
    assert_eq!(done["response"]["id"], done_sb["response"]["id"]);
    assert_eq!(done_sb["response"]["status"], "completed");

    // what the browser sends, the server sees
    browser
        .peer
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
    browser.peer.send(json!({"type": "response.create"})).await;
    recv_dc(&mut browser.peer.events, "response.done").await;
    let log = session_of(&sim, &browser.call_id).await;
    assert_eq!(log["closed"], Value::Null, "{log}");
    assert_eq!(log["sideband_attachments"], 1);
    assert_eq!(
        log["sideband_events_received"],
        json!(["session.update", "response.create"])
    );
    let received = events_received(&log);
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
    browser.peer.pc.close().await.unwrap();
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
    let ek = mint(&sim, "sk-test", json!({"type": "realtime"})).await;
    assert!(ek.starts_with("ek_"));
    let (status, body) = refused(&sim, &id, Some(&ek)).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "call_id_not_found");
    assert!(!body.to_string().contains(&ek), "the key is not echoed");

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
    assert_eq!(hangup(&sim, &id).await, 200);
    for mut ws in held {
        until_close(&mut ws).await;
    }
    let (status, _) = refused(&sim, &id, Some("sk-test")).await;
    assert_eq!(status, 404);
    browser.peer.pc.close().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_up_closes_the_sideband_and_the_browsers_channel() {
    let sim = sim("booking").await;
    let mut browser = call(&sim).await;
    let mut ws = attach(&sim, &browser.call_id).await;
    assert_eq!(hangup(&sim, &browser.call_id).await, 200);
    let (frame, _) = until_close(&mut ws).await;
    assert_eq!(frame, Some((CloseCode::Normal, "hangup".to_string())));
    tokio::time::timeout(WAIT, browser.peer.closed.recv())
        .await
        .expect("the browser's channel closes after hangup");
    // and the browser's connection ends too, not only the channel
    let mut states = vec![];
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(s) = browser.peer.states.recv().await {
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
    browser.peer.pc.close().await.unwrap();
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
    browser.peer.pc.close().await.unwrap();
    sim.shutdown().await;
}
