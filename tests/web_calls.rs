//! Browser calls end to end, below the `/talk` page: a WebRTC client in the browser's place
//! gets a key from the relay's `GET /api/session?agent=…`, opens its call straight to the
//! relay's simulator, and hands the call to the relay (`POST /api/calls/web`); the relay
//! attaches over the sideband and runs the agent's tools server-side. The page itself, in
//! Chromium, is tests/talk_browser.rs.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::agent::{agent_env, sim_url};
use support::Relay;
use tokio::sync::mpsc;
use voxrelay::openai::events::ClientEvent;
use voxrelay::openai::webrtc::{WebRtcLeg, WebRtcOptions};
use voxrelay::openai::{LegEvent, RealtimeLeg, WebRtcCodec};
use voxrelay::secret::Secret;

fn start() -> Relay {
    let env = agent_env("booking");
    let all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Relay::start(&all)
}

fn admin(relay: &Relay, path: &str) -> String {
    format!("http://{}{path}", relay.admin)
}

/// The browser's side of a call: its WebRTC connection, driven from a task; the test sends
/// it events and reads the event types it got.
struct Browser {
    call_id: String,
    key: String,
    commands: mpsc::UnboundedSender<Option<ClientEvent>>,
    seen: mpsc::UnboundedReceiver<String>,
}

impl Browser {
    /// Gets a key for `agent` from the relay and opens a call to the simulator with it.
    async fn open(relay: &Relay, agent: &str) -> Browser {
        let minted = get(relay, &format!("/api/session?agent={agent}")).await;
        let key = minted["value"].as_str().expect("a key").to_string();
        let opts = WebRtcOptions::new(&sim_url(relay), WebRtcCodec::Opus, Duration::from_secs(10));
        let mut leg = WebRtcLeg::connect(
            reqwest::Client::new(),
            &opts,
            &Secret::new(&key),
            Secret::new(&key),
        )
        .await
        .expect("the browser's call opens");
        let call_id = leg.call_id().to_string();
        let (commands, mut rx) = mpsc::unbounded_channel::<Option<ClientEvent>>();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = leg.recv() => {
                        let kind = match &ev {
                            LegEvent::Event(e) => e.kind().to_string(),
                            LegEvent::ToolCall(c) => format!("tool:{}", c.name),
                            LegEvent::Audio(_) => continue,
                            LegEvent::Ended(r) => format!("ended:{r}"),
                        };
                        let over = kind.starts_with("ended:");
                        let _ = seen_tx.send(kind);
                        if over {
                            return;
                        }
                    }
                    c = rx.recv() => match c {
                        Some(Some(ev)) => { let _ = leg.send(ev).await; }
                        _ => { leg.close().await; return; }
                    }
                }
            }
        });
        Browser {
            call_id,
            key,
            commands,
            seen,
        }
    }

    /// Says `text` as the caller (the page's send-text box).
    fn say(&self, text: &str) {
        let item: ClientEvent = serde_json::from_value(json!({
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user",
                     "content": [{"type": "input_text", "text": text}]}
        }))
        .unwrap();
        let _ = self.commands.send(Some(item));
        let _ = self.commands.send(Some(ClientEvent::ResponseCreate {
            event_id: None,
            response: None,
        }));
    }

    fn send(&self, ev: Value) {
        let _ = self
            .commands
            .send(Some(serde_json::from_value(ev).unwrap()));
    }

    /// Waits for an event type, within `secs`.
    async fn until(&mut self, want: &str, secs: u64) -> Vec<String> {
        let mut kinds = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(k)) => {
                    let hit = k.starts_with(want);
                    kinds.push(k);
                    if hit {
                        return kinds;
                    }
                }
                _ => panic!("no {want} within {secs} s; the browser saw {kinds:?}"),
            }
        }
    }
}

async fn attach(relay: &Relay, call_id: &str, key: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(admin(relay, "/api/calls/web"))
        .json(&json!({"call_id": call_id, "client_secret": key}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(relay: &Relay, path: &str) -> Value {
    reqwest::get(admin(relay, path))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls the relay's view of a call until `pred` holds (a live call changes as it goes).
async fn wait_call(relay: &Relay, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut events = relay_events(relay).await;
    loop {
        let v = get(relay, &format!("/api/calls/{id}")).await;
        if pred(&v) {
            return v;
        }
        // the next change of any call wakes this up (no sleeping between polls)
        if tokio::time::timeout_at(deadline, events.chunk())
            .await
            .is_err()
        {
            panic!("the call never got there: {v:#}");
        }
    }
}

/// Polls the relay's view of a call until its run of the tool `name` has ended (it has a
/// duration); the call.
async fn wait_tool_done(relay: &Relay, id: &str, name: &str) -> Value {
    wait_call(relay, id, |c| {
        c["tool_calls"].as_array().is_some_and(|t| {
            t.iter()
                .any(|t| t["name"] == name && !t["duration_ms"].is_null())
        })
    })
    .await
}

/// The call's record of its first run of the tool `name`.
fn tool_call<'a>(call: &'a Value, name: &str) -> &'a Value {
    call["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap()
}

/// The live event stream (SSE) of every call.
async fn relay_events(relay: &Relay) -> reqwest::Response {
    reqwest::get(admin(relay, "/api/events")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_call_books_through_the_relays_own_tool_run_and_is_recorded_as_web() {
    let relay = start();
    let (mut browser, id, _) = attached(&relay, "receptionist").await;
    let call = get(&relay, &format!("/api/calls/{id}")).await;
    assert_eq!(call["kind"], "web");
    assert_eq!(call["agent"], "receptionist");
    assert_eq!(call["state"], "answered");

    // two caller turns: the scenario checks availability, then books; the relay runs both
    // tools (the browser holds none) and its answers make the model go on
    browser.say("I would like to book an appointment next week.");
    browser.until("tool:check_availability", 15).await;
    browser.until("output_audio_buffer.started", 15).await;
    browser.say("Yes please. My name is Ada Lovelace and my number is 201 555 0123.");
    browser.until("tool:create_booking", 15).await;
    let call = wait_tool_done(&relay, &id, "create_booking").await;
    let booked = tool_call(&call, "create_booking").clone();
    assert!(booked["ok"].as_bool().unwrap_or(false), "{booked:#}");

    // the booking is in the schedule, written by the relay
    let date = booked["arguments"]["date"].as_str().unwrap();
    let bookings = get(&relay, &format!("/api/bookings?date={date}")).await;
    let names: Vec<&str> = bookings["bookings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["patient_name"].as_str())
        .collect();
    assert_eq!(names, ["Ada Lovelace"], "{bookings:#}");

    // the agent said goodbye and called end_call: the relay hangs the browser's call up
    let kinds = browser.until("ended:", 30).await;
    assert!(!kinds.iter().any(|k| k == "error"), "{kinds:?}");
    let ended = relay.wait_calls_ended(1, Duration::from_secs(10));
    assert_eq!(ended[0]["kind"], "web");
    assert_eq!(ended[0]["reason"], "agent_end_call");
    let stored = get(&relay, &format!("/api/calls/{id}")).await;
    assert_eq!(stored["kind"], "web");
    assert!(
        stored["transcript"]
            .as_array()
            .is_some_and(|t| t.iter().any(|l| l["speaker"] == "agent")),
        "{stored:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_for_one_agent_cannot_run_another_agents_tools() {
    let relay = start();
    // billing's only tool is end_call; the browser asks the session for the receptionist's
    let (mut browser, id, _) = attached(&relay, "billing").await;
    assert_eq!(
        get(&relay, &format!("/api/calls/{id}")).await["agent"],
        "billing"
    );
    browser.send(
        json!({"type": "session.update", "session": {"type": "realtime",
        "tools": [{"type": "function", "name": "create_booking", "description": "book",
                   "parameters": {"type": "object", "properties": {}}},
                  {"type": "function", "name": "check_availability", "description": "look",
                   "parameters": {"type": "object", "properties": {}}}]}}),
    );
    browser.until("session.updated", 10).await;
    browser.say("I would like to book an appointment next week.");
    browser.until("tool:check_availability", 15).await;
    browser.until("response.done", 15).await;
    browser.say("Yes please. My name is Ada Lovelace and my number is 201 555 0123.");
    browser.until("tool:create_booking", 15).await;
    let call = wait_tool_done(&relay, &id, "create_booking").await;
    for t in call["tool_calls"].as_array().unwrap() {
        assert_eq!(t["ok"], false, "refused, not run: {t:#}");
    }
    let asked = tool_call(&call, "create_booking");
    let date = asked["arguments"]["date"].as_str().unwrap();
    let bookings = get(&relay, &format!("/api/bookings?date={date}")).await;
    assert_eq!(bookings["bookings"].as_array().map(Vec::len), Some(0));
    let _ = browser.commands.send(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_hangs_up_a_browser_call_and_bad_attaches_are_refused() {
    let relay = start();
    let mut browser = Browser::open(&relay, "receptionist").await;

    // a key the relay did not mint, a call id that is not one, a call the service has not
    for (call_id, key, status, code) in [
        (browser.call_id.as_str(), "ek_made_up", 403, "unknown_key"),
        ("rtc_../../x", browser.key.as_str(), 400, "bad_call_id"),
        (
            "rtc_nosuchcall",
            browser.key.as_str(),
            404,
            "realtime_call_not_found",
        ),
    ] {
        let (s, body) = attach(&relay, call_id, key).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(
            !body.to_string().contains(&browser.key),
            "no key in an error"
        );
    }
    let (s, body) = attach(&relay, &browser.call_id, &browser.key).await;
    assert_eq!(s, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let (s, body) = attach(&relay, &browser.call_id, &browser.key).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (409, Some("already_attached"))
    );
    let r = reqwest::get(admin(&relay, "/api/session?agent=nobody"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    browser.until("output_audio_buffer.started", 10).await;
    // the microphone is the browser's: mute is refused; hang-up ends the browser's call
    let mute = reqwest::Client::new()
        .post(admin(&relay, &format!("/api/calls/{id}/mute")))
        .json(&json!({"muted": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(mute.status().as_u16(), 409);
    let hangup = reqwest::Client::new()
        .post(admin(&relay, &format!("/api/calls/{id}/hangup")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(hangup.status().as_u16(), 202);
    browser.until("ended:", 15).await;
    let ended = relay.wait_calls_ended(1, Duration::from_secs(10));
    assert_eq!(ended[0]["reason"], "operator_hangup");
    // the browser's key went through the relay twice (minted, then presented): never logged
    assert!(
        !relay.dump().contains(&browser.key[3..]),
        "a key in the log"
    );
}

/// A WAV in the relay's recording format (8 kHz stereo 16-bit) of `seconds`: a ramp on the
/// left, its negation on the right, so the bytes read back can be told apart.
fn stereo_wav(seconds: u32) -> Vec<u8> {
    let frames = 8000 * seconds;
    let mut wav = voxrelay::media::recording::header(u64::from(frames) * 4).to_vec();
    for i in 0..frames {
        let s = (i % 2000) as i16;
        wav.extend_from_slice(&s.to_le_bytes());
        wav.extend_from_slice(&(-s).to_le_bytes());
    }
    wav
}

/// `PUT /api/calls/{id}/recording` with `body` (`Content-Length` set).
async fn upload(
    admin_addr: std::net::SocketAddr,
    id: &str,
    ct: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let r = reqwest::Client::new()
        .put(format!("http://{admin_addr}/api/calls/{id}/recording"))
        .header("content-type", ct)
        .body(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A `PUT /api/calls/{id}/recording` over a plain socket: `length` sends a
/// `Content-Length` and only `body` (the relay may answer before a body it refuses), else the
/// body goes chunked (a stream of unknown length). The answer's status.
async fn raw_put(
    admin_addr: std::net::SocketAddr,
    id: &str,
    length: Option<usize>,
    body: &[u8],
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin_addr).await.unwrap();
    let framing = match length {
        Some(n) => format!("Content-Length: {n}"),
        None => "Transfer-Encoding: chunked".to_string(),
    };
    let mut req = format!(
        "PUT /api/calls/{id}/recording HTTP/1.1\r\nHost: {admin_addr}\r\n\
         Content-Type: audio/wav\r\n{framing}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    if length.is_some() {
        req.extend_from_slice(body);
    } else {
        for piece in body.chunks(16 * 1024) {
            req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            req.extend_from_slice(piece);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
    }
    s.write_all(&req).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A browser call to `agent`, attached, the greeting heard: the browser, the relay's call id
/// and the attach's answer.
async fn attached(relay: &Relay, agent: &str) -> (Browser, String, Value) {
    let mut browser = Browser::open(relay, agent).await;
    let (status, body) = attach(relay, &browser.call_id, &browser.key).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    // the relay asked for the greeting over the sideband: the browser hears it
    browser.until("output_audio_buffer.started", 10).await;
    (browser, id, body)
}

/// A recorded browser call: attached (the answer says to record), the greeting heard.
async fn recorded_call(relay: &Relay) -> (Browser, String) {
    let (browser, id, body) = attached(relay, "receptionist").await;
    // the relay decided: the page records, tells the caller, and keeps under the cap
    assert_eq!(body["record"], true, "{body}");
    assert_eq!(body["announce"], true, "{body}");
    assert_eq!(body["max_bytes"], 1_000_000, "{body}");
    (browser, id)
}

async fn hang_up(relay: &Relay, browser: &mut Browser, id: &str) {
    let hangup = reqwest::Client::new()
        .post(admin(relay, &format!("/api/calls/{id}/hangup")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(hangup.status().as_u16(), 202);
    browser.until("ended:", 15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_browser_calls_upload_is_checked_taken_once_and_named_in_its_record() {
    let mut env = agent_env("booking");
    for (k, v) in [
        ("VOXRELAY__RECORDING__ENABLED", "true"),
        ("VOXRELAY__RECORDING__ANNOUNCE", "true"),
        ("VOXRELAY__RECORDING__DIR", "rec"),
        ("VOXRELAY__RECORDING__MAX_CALL_MB", "1"),
    ] {
        env.push((k.into(), v.into()));
    }
    let all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let relay = Relay::start(&all);

    // an upload that comes while the call still runs waits for its end (the page hangs up
    // its side first; the relay's record follows), then is taken
    let (mut browser, id) = recorded_call(&relay).await;
    let good = stereo_wav(2);
    let early = {
        let (addr, id, good) = (relay.admin, id.clone(), good.clone());
        tokio::spawn(async move { upload(addr, &id, "audio/wav", good).await })
    };
    hang_up(&relay, &mut browser, &id).await;
    let (status, body) = early.await.unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body,
        json!({"bytes": good.len(), "duration_ms": 2000, "offset_ms": 0})
    );
    // once only
    let (status, body) = upload(relay.admin, &id, "audio/wav", good.clone()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("recording_exists"))
    );
    // fetched as a phone call's recording is, from the file named like one
    let fetched = reqwest::get(admin(&relay, &format!("/api/calls/{id}/recording")))
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.headers()["content-type"], "audio/wav");
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), good.as_slice());
    let file = relay.dir().join("rec").join(format!("{id}.wav"));
    assert_eq!(std::fs::read(&file).unwrap(), good);
    let call = get(&relay, &format!("/api/calls/{id}")).await;
    assert_eq!(call["recording"]["bytes"], good.len(), "{call:#}");
    assert_eq!(call["recording"]["duration_ms"], 2000);
    // and the stored record names it (the registry's view aside)
    let store = voxrelay::booking::Store::open(&relay.database_url(), 1)
        .await
        .unwrap();
    let stored = store.get_call(&id).await.unwrap().expect("stored");
    let rec = stored
        .recording
        .expect("the stored record names the recording");
    assert_eq!((rec.bytes, rec.duration_ms), (good.len() as u64, 2000));
    assert_eq!(std::path::Path::new(&rec.path), file);
    assert_eq!(stored.kind, voxrelay::booking::CallKind::Web);

    // a second call, over: what is not its recording is refused, and a refusal leaves the
    // upload open to a good one
    let (mut browser, id) = recorded_call(&relay).await;
    hang_up(&relay, &mut browser, &id).await;
    let mut mono = stereo_wav(1);
    mono[22] = 1;
    let mut short = stereo_wav(1);
    short.truncate(1000);
    let mut long = stereo_wav(1);
    long.extend_from_slice(&[0; 4]);
    for (what, ct, wav, want, code) in [
        ("mono", "audio/wav", mono, 400, "bad_wav"),
        (
            "not a WAV",
            "audio/wav",
            b"RIFF....WAVEjunk".repeat(8),
            400,
            "bad_wav",
        ),
        (
            "shorter than its header",
            "audio/wav",
            short,
            400,
            "bad_wav",
        ),
        ("longer than its header", "audio/wav", long, 400, "bad_wav"),
        ("empty", "audio/wav", Vec::new(), 400, "bad_wav"),
        (
            "JSON",
            "application/json",
            stereo_wav(1),
            415,
            "unsupported_media_type",
        ),
    ] {
        let (status, body) = upload(relay.admin, &id, ct, wav).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (want, Some(code)),
            "{what}: {body}"
        );
    }
    // past the 1 MB cap: said by the length (refused before the body is read), or by the
    // header of a stream of unknown length
    let mut announced = stereo_wav(1);
    announced[40..44].copy_from_slice(&(40u32 * 32_000).to_le_bytes());
    announced[4..8].copy_from_slice(&(40u32 * 32_000 + 36).to_le_bytes());
    assert_eq!(raw_put(relay.admin, &id, Some(1_280_044), &[]).await, 413);
    assert_eq!(raw_put(relay.admin, &id, None, &announced).await, 413);
    // a stream as long as its header says is taken
    let one = stereo_wav(1);
    assert_eq!(raw_put(relay.admin, &id, None, &one).await, 201);
    let dir: Vec<String> = std::fs::read_dir(relay.dir().join("rec"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        dir.len(),
        2,
        "two recordings and no part file left: {dir:?}"
    );
    assert!(dir.iter().all(|n| n.ends_with(".wav")), "{dir:?}");
}
