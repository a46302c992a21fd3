//! The simulator over real sockets on loopback: keys, auth, the WebSocket transport and bad input.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use voxrelay::sim::{SimConfig, SimHandle, Simulator};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn start(scenario: &str, api_key: Option<&str>) -> SimHandle {
    Simulator::start(SimConfig {
        listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        scenario: scenario.into(),
        api_key: api_key.map(Into::into),
    })
    .await
    .unwrap()
}

async fn connect(sim: &SimHandle, key: &str) -> Ws {
    let mut req = format!("ws://{}/v1/realtime?model=gpt-realtime", sim.local_addr())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws
}

async fn next_event(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an event within 10 s")
            .expect("the socket stays open")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

async fn until(ws: &mut Ws, kind: &str) -> (Value, Vec<String>) {
    let mut seen = vec![];
    for _ in 0..10_000 {
        let ev = next_event(ws).await;
        let t = ev["type"].as_str().unwrap_or("").to_string();
        seen.push(t.clone());
        if t == kind {
            return (ev, seen);
        }
    }
    panic!("no {kind} in {seen:?}");
}

async fn send(ws: &mut Ws, ev: Value) {
    ws.send(Message::Text(ev.to_string().into())).await.unwrap();
}

/// Mints a key living `ttl` seconds with the server key `sk-sim-secret`.
async fn mint(http: &reqwest::Client, sim: &SimHandle, ttl: u32) -> String {
    let url = format!("{}/v1/realtime/client_secrets", sim.base_url());
    let minted: Value = http
        .post(&url)
        .bearer_auth("sk-sim-secret")
        .json(
            &json!({"expires_after": {"anchor": "created_at", "seconds": ttl},
            "session": {"type": "realtime"}}),
        )
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    minted["value"].as_str().unwrap().to_string()
}

/// The status a WebSocket upgrade with `key` gets (101 when it opens).
async fn ws_status(sim: &SimHandle, key: &str) -> u16 {
    let mut req = format!("ws://{}/v1/realtime?model=gpt-realtime", sim.local_addr())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((_ws, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn expired_keys_get_401_and_are_forgotten() {
    let sim = start("booking", Some("sk-sim-secret")).await;
    let http = reqwest::Client::new();
    let short = mint(&http, &sim, 10).await;
    let long = mint(&http, &sim, 600).await;
    assert_eq!(ws_status(&sim, &short).await, 101);
    assert_eq!(sim.minted_keys(), 2);

    sim.advance_key_clock(Duration::from_secs(11));
    assert_eq!(ws_status(&sim, &short).await, 401, "expired");
    assert_eq!(ws_status(&sim, &long).await, 101, "still valid");
    // the next mint forgets the expired key: the map holds only live keys
    let fresh = mint(&http, &sim, 600).await;
    assert_eq!(sim.minted_keys(), 2);
    assert_eq!(
        ws_status(&sim, &short).await,
        401,
        "forgotten, still refused"
    );
    let calls = format!("{}/v1/realtime/calls", sim.base_url());
    let refused = http
        .post(&calls)
        .bearer_auth(&short)
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(
        !refused.text().await.unwrap().contains(&short),
        "never echoed"
    );
    assert_eq!(ws_status(&sim, &fresh).await, 101);
    sim.shutdown().await;
}

#[tokio::test]
async fn keys_are_checked_with_openais_error_shape() {
    let sim = start("booking", Some("sk-sim-secret")).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/realtime/client_secrets", sim.base_url());
    let body = json!({"expires_after": {"anchor": "created_at", "seconds": 60},
        "session": {"type": "realtime", "instructions": "hi", "audio": {"output": {"voice": "marin"}}}});

    let missing = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let err: Value = missing.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("didn't provide an API key"));

    let wrong = http
        .post(&url)
        .bearer_auth("sk-other")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let text = wrong.text().await.unwrap();
    assert!(
        text.contains("invalid_api_key") && !text.contains("sk-other"),
        "{text}"
    );

    let ok = http
        .post(&url)
        .bearer_auth("sk-sim-secret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let minted: Value = ok.json().await.unwrap();
    let ek = minted["value"].as_str().unwrap().to_string();
    assert!(ek.starts_with("ek_"));
    assert!(minted["expires_at"].as_i64().unwrap() > 0);
    assert_eq!(minted["session"]["object"], "realtime.session");
    assert_eq!(minted["session"]["instructions"], "hi");
    assert!(minted["session"]["id"]
        .as_str()
        .unwrap()
        .starts_with("sess_"));

    // the ephemeral key opens sessions, with the minted config already in place
    let mut ws = connect(&sim, &ek).await;
    let created = next_event(&mut ws).await;
    assert_eq!(created["type"], "session.created");
    assert_eq!(created["session"]["instructions"], "hi");
    drop(ws);

    // a missing session.type is refused as the service does
    let bad = http
        .post(&url)
        .bearer_auth("sk-sim-secret")
        .json(&json!({"session": {"instructions": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let err: Value = bad.json().await.unwrap();
    assert_eq!(err["error"]["param"], "session.type");
    let bad_ttl = http
        .post(&url)
        .bearer_auth("sk-sim-secret")
        .json(&json!({"expires_after": {"anchor": "created_at", "seconds": 5}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_ttl.status(), 400);

    // once expired, the key is refused everywhere
    sim.advance_key_clock(Duration::from_secs(61));
    let calls = format!("{}/v1/realtime/calls", sim.base_url());
    let expired = http
        .post(&calls)
        .bearer_auth(&ek)
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 401);
    let err: Value = expired.json().await.unwrap();
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
    let mut req = format!("ws://{}/v1/realtime?model=gpt-realtime", sim.local_addr())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {ek}").parse().unwrap());
    let refused = tokio_tungstenite::connect_async(req).await;
    assert!(
        matches!(refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 401)
    );
    // an ephemeral key cannot mint
    let ek2 = http
        .post(&url)
        .bearer_auth("sk-sim-secret")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        http.post(&url)
            .bearer_auth(&ek2)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn without_a_server_key_any_sk_key_is_accepted() {
    let sim = start("echo", None).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/realtime/client_secrets", sim.base_url());
    assert_eq!(
        http.post(&url)
            .bearer_auth("sk-anything")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.post(&url)
            .bearer_auth("pk-nope")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let calls = format!("{}/v1/realtime/calls", sim.base_url());
    let r = http
        .post(&calls)
        .bearer_auth("sk-x")
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(&calls)
        .bearer_auth("sk-x")
        .header("content-type", "application/sdp")
        .body("not sdp")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{calls}/rtc_nope/hangup"))
        .bearer_auth("sk-x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn mint_faults_answer_429_then_recover() {
    let sim = start("config/scenarios/fault-mint-429.toml", None).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/realtime/client_secrets", sim.base_url());
    for _ in 0..2 {
        let r = http.post(&url).bearer_auth("sk-x").send().await.unwrap();
        assert_eq!(r.status(), 429);
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["code"], "rate_limit_exceeded");
    }
    assert_eq!(
        http.post(&url)
            .bearer_auth("sk-x")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    sim.shutdown().await;

    let sim = start("config/scenarios/fault-mint-hang.toml", None).await;
    let url = format!("{}/v1/realtime/client_secrets", sim.base_url());
    let r = http
        .post(&url)
        .bearer_auth("sk-x")
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
    sim.shutdown().await;

    let sim = start("config/scenarios/fault-calls-4xx.toml", None).await;
    let calls = format!("{}/v1/realtime/calls", sim.base_url());
    let r = http
        .post(&calls)
        .bearer_auth("sk-x")
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error");
    sim.shutdown().await;

    let sim = start("config/scenarios/fault-calls-slow.toml", None).await;
    let calls = format!("{}/v1/realtime/calls", sim.base_url());
    let r = http
        .post(&calls)
        .bearer_auth("sk-x")
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(
        r.unwrap_err().is_timeout(),
        "the answer is slower than the client's deadline"
    );
    sim.shutdown().await;

    let sim = start("config/scenarios/fault-mint-500.toml", None).await;
    let url = format!("{}/v1/realtime/client_secrets", sim.base_url());
    assert_eq!(
        http.post(&url)
            .bearer_auth("sk-x")
            .send()
            .await
            .unwrap()
            .status(),
        500
    );
    assert_eq!(
        http.post(&url)
            .bearer_auth("sk-x")
            .send()
            .await
            .unwrap()
            .status(),
        500,
        "every time"
    );
    sim.shutdown().await;

    let sim = start("config/scenarios/fault-calls-5xx.toml", None).await;
    let calls = format!("{}/v1/realtime/calls", sim.base_url());
    let r = http
        .post(&calls)
        .bearer_auth("sk-x")
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["type"], "server_error");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_websocket_session_speaks_and_is_recorded() {
    let sim = start("booking", None).await;
    let mut ws = connect(&sim, "sk-test").await;
    let created = next_event(&mut ws).await;
    assert_eq!(created["type"], "session.created");
    let id = created["session"]["id"].as_str().unwrap().to_string();
    send(&mut ws, json!({"type": "session.update", "session": {"type": "realtime", "instructions": "book things",
        "audio": {"input": {"format": {"type": "audio/pcmu"}, "transcription": {"model": "gpt-4o-transcribe"}}, "output": {"format": {"type": "audio/pcmu"}}}}})).await;
    let (updated, _) = until(&mut ws, "session.updated").await;
    assert_eq!(
        updated["session"]["audio"]["input"]["format"]["type"],
        "audio/pcmu"
    );
    send(&mut ws, json!({"type": "response.create"})).await;
    let (_, seen) = until(&mut ws, "response.done").await;
    assert!(
        seen.iter()
            .filter(|t| *t == "response.output_audio.delta")
            .count()
            >= 10,
        "{seen:?}"
    );
    assert!(!seen.iter().any(|t| t.starts_with("output_audio_buffer")));
    // a spoken turn: 600 ms of tone and 800 ms of silence as µ-law
    let tone: Vec<u8> = (0..4_800)
        .map(|n| voxrelay::media::g711::ulaw_encode(((n as f32 * 0.4).sin() * 9_000.0) as i16))
        .collect();
    let quiet = vec![0xFFu8; 6_400];
    use base64::Engine as _;
    for chunk in [tone, quiet] {
        send(&mut ws, json!({"type": "input_audio_buffer.append", "audio": base64::engine::general_purpose::STANDARD.encode(chunk)})).await;
    }
    let (call, _) = until(&mut ws, "response.function_call_arguments.done").await;
    assert_eq!(call["name"], "check_availability");

    let log: Value = reqwest::get(format!("{}/sim/sessions/{id}", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log["transport"], "websocket");
    assert_eq!(log["session"]["instructions"], "book things");
    assert!((log["audio_received_seconds"].as_f64().unwrap() - 1.4).abs() < 0.05);
    assert_eq!(log["tool_calls"][0]["name"], "check_availability");
    assert!(log["events_sent"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "response.done"));
    let list: Value = reqwest::get(format!("{}/sim/sessions", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == id.as_str()));
    assert_eq!(
        reqwest::get(format!("{}/sim/sessions/sess_nope", sim.base_url()))
            .await
            .unwrap()
            .status(),
        404
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_error_events_and_other_sessions_go_on() {
    let sim = start("booking", None).await;
    let mut bad = connect(&sim, "sk-test").await;
    let mut good = connect(&sim, "sk-test").await;
    assert_eq!(next_event(&mut bad).await["type"], "session.created");
    assert_eq!(next_event(&mut good).await["type"], "session.created");

    send(
        &mut bad,
        json!({"type": "response.create", "event_id": "early"}),
    )
    .await;
    let e = next_event(&mut bad).await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["event_id"], "early");
    bad.send(Message::Text("{{{ not json".into()))
        .await
        .unwrap();
    assert_eq!(next_event(&mut bad).await["error"]["code"], "invalid_json");
    send(&mut bad, json!({"type": "no.such.event"})).await;
    assert_eq!(next_event(&mut bad).await["error"]["param"], "type");
    bad.send(Message::Binary(vec![0xff, 0xfe, 0x00].into()))
        .await
        .unwrap();
    assert_eq!(next_event(&mut bad).await["type"], "error");
    // 16 MiB of junk: an error event, not a dropped connection
    let huge = format!(
        "{{\"type\":\"input_audio_buffer.append\",\"audio\":\"{}\"}}",
        "A".repeat(16 * 1024 * 1024)
    );
    bad.send(Message::Text(huge.into())).await.unwrap();
    assert_eq!(
        next_event(&mut bad).await["error"]["code"],
        "message_too_large"
    );
    send(
        &mut bad,
        json!({"type": "session.update", "session": {"type": "realtime"}}),
    )
    .await;
    assert_eq!(next_event(&mut bad).await["type"], "session.updated");

    send(
        &mut good,
        json!({"type": "session.update", "session": {"type": "realtime"}}),
    )
    .await;
    assert_eq!(next_event(&mut good).await["type"], "session.updated");
    send(&mut good, json!({"type": "response.create"})).await;
    let (done, _) = until(&mut good, "response.done").await;
    assert_eq!(done["response"]["status"], "completed");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_session_expires_with_an_error_event_then_closes() {
    let sim = start("config/scenarios/fault-session-expired.toml", None).await;
    let mut ws = connect(&sim, "sk-test").await;
    let (err, _) = until(&mut ws, "error").await;
    assert_eq!(err["error"]["code"], "session_expired");
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the socket closes after session_expired");
    sim.shutdown().await;
}

#[test]
fn the_config_debug_output_hides_the_key() {
    let cfg = SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        scenario: "echo".into(),
        api_key: Some("sk-very-secret-123".into()),
    };
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("sk-very-secret-123"), "{shown}");
    assert!(shown.contains("redacted") && shown.contains("echo"));
}
