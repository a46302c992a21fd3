//! The admin HTTP API over real sockets on loopback: every route with and without the token,
//! the error shapes, answers checked against the served OpenAPI document, the live event
//! stream (order, and a slow client dropped without holding up calls), metrics through
//! Python's `prometheus_client` parsers, and `/api/session` against the simulator.
//!
//! Calls are made by hand through `Registry::register` and the `CallPublisher` it returns,
//! the same objects the bridge uses.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{NaiveTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use voxrelay::admin::{self, AdminServer, AdminState, Readiness};
use voxrelay::booking::store::{
    CallRecord, Delivery, DeliveryStatus, NewBooking, RecordingRef, Reminder, ReminderStatus, Store,
};
use voxrelay::bridge::agent::Agents;
use voxrelay::bridge::call_agent::AgentBook;
use voxrelay::bridge::registry::{
    CallDetail, CallEvent, CallPublisher, Control, MediaStats, Registry, Speaker, ToolCallRecord,
    Turn,
};
use voxrelay::metrics::Metrics;
use voxrelay::openai::keys::KeyMinter;
use voxrelay::openai::session::AgentSpec;
use voxrelay::secret::Secret;
use voxrelay::sim::{SimConfig, SimHandle, Simulator};

const TOKEN: &str = "admin-test-token-5b2f";
const WAIT: Duration = Duration::from_secs(10);

// ---------- fixture ----------

struct Fixture {
    server: AdminServer,
    base: String,
    registry: Registry,
    metrics: Arc<Metrics>,
    trunks: voxrelay::sip::register::RegistrationStates,
    draining: Arc<std::sync::atomic::AtomicBool>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

struct Options {
    token: bool,
    store: bool,
    minter: Option<KeyMinter>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token: true,
            store: true,
            minter: None,
        }
    }
}

/// The agents built into the binary (receptionist and billing), as the relay resolves them.
fn bundled_agents() -> AgentBook {
    let agents = Agents::load_with_bundled(None).unwrap();
    AgentBook::new(&agents, "gpt-realtime").unwrap()
}

async fn open_store(dir: &tempfile::TempDir) -> Store {
    let url = format!("sqlite://{}", dir.path().join("admin.db").display());
    Store::open(&url, 2).await.unwrap()
}

async fn fixture_with(opts: Options, store: Option<Store>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = match (opts.store, store) {
        (_, Some(s)) => Some(s),
        (true, None) => Some(open_store(&dir).await),
        (false, None) => None,
    };
    let registry = Registry::new();
    let metrics = Metrics::shared();
    let trunks: voxrelay::sip::register::RegistrationStates = Default::default();
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = draining.clone();
    let agent = AgentSpec {
        instructions: "You answer the phone for a dental clinic.".into(),
        voice: Some("marin".into()),
        ..AgentSpec::default()
    };
    let state = AdminState {
        registry: registry.clone(),
        metrics: metrics.clone(),
        store,
        minter: opts.minter,
        session: agent.session(None),
        web: None,
        token: opts.token.then(|| Secret::new(TOKEN)),
        trunks: trunks.clone(),
        readiness: Arc::new(move || Readiness {
            draining: flag.load(std::sync::atomic::Ordering::SeqCst),
            ..Readiness::ready()
        }),
        agents: bundled_agents(),
        default_agent: "receptionist".into(),
        cluster: None,
        dialer: None,
    };
    let server = admin::start("127.0.0.1:0".parse().unwrap(), state)
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr());
    Fixture {
        server,
        base,
        registry,
        metrics,
        trunks,
        draining,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

async fn fixture() -> Fixture {
    fixture_with(Options::default(), None).await
}

impl Fixture {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(Some(TOKEN), method, path, body).await
    }

    async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        // every POST is JSON (the server refuses others), an empty object when no body
        let body = body.or_else(|| (method == Method::POST).then(|| json!({})));
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .timeout(WAIT);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: answer is not JSON ({e}): {text}"));
        (status, v)
    }
}

/// A call registered as the bridge would: ringing, then answered, with a transcript line
/// and a tool call.
fn place_call(reg: &Registry, id: &str) -> (CallPublisher, mpsc::Receiver<Control>) {
    let (p, ctl) = reg.register(CallDetail::new(
        id,
        "sip:+15551234567@127.0.0.1",
        "sip:+15550001111@127.0.0.1",
        "receptionist",
        Some("main"),
    ));
    p.answered();
    say(
        &p,
        Speaker::Agent,
        "Hello, Bright Smile Dental, how can I help?",
    );
    p.update(|d| {
        d.tool_calls.push(ToolCallRecord {
            call_id: "call_1".into(),
            name: "check_availability".into(),
            arguments: json!({"start_date": "2030-01-07", "end_date": "2030-01-07"}),
            result: json!({"slots": ["09:00"]}),
            ok: true,
            at_ms: 900,
            duration_ms: Some(12),
        });
        d.media = MediaStats {
            codec: "PCMU".into(),
            rtp_in: 250,
            rtp_out: 240,
            jitter_ms: 1.5,
            ..MediaStats::default()
        };
    });
    (p, ctl)
}

fn say(p: &CallPublisher, speaker: Speaker, text: &str) {
    let turn = Turn {
        speaker,
        text: text.into(),
        at_ms: 500,
        is_final: true,
        cut_off: false,
        item_id: Some("item_1".into()),
    };
    let index = p.update(|d| {
        d.transcript.push(turn.clone());
        d.transcript.len() - 1
    });
    p.emit(CallEvent::Transcript { index, turn });
}

/// A valid body for a control action.
fn good_body(action: &str) -> Option<Value> {
    match action {
        "say" => Some(json!({"text": "Offer Tuesday."})),
        "mute" => Some(json!({"muted": true})),
        _ => None,
    }
}

// ---------- the OpenAPI document ----------

/// The served OpenAPI document and which documented answers the tests have seen.
struct Spec {
    doc: Value,
    seen: Mutex<BTreeSet<(String, String, u16)>>,
}

impl Spec {
    async fn load(f: &Fixture) -> Spec {
        let (status, doc) = f.call(Method::GET, "/api/openapi.json", None).await;
        assert_eq!(status, 200);
        Spec {
            doc,
            seen: Mutex::new(BTreeSet::new()),
        }
    }

    /// Asserts `body` is what the document promises for `method path` answering `status`.
    fn check(&self, method: &str, path: &str, status: StatusCode, body: &Value) {
        let code = status.as_u16();
        let escaped = path.replace('~', "~0").replace('/', "~1");
        let pointer = format!(
            "/paths/{escaped}/{}/responses/{code}/content/application~1json/schema",
            method.to_lowercase()
        );
        assert!(
            self.doc.pointer(&pointer).is_some(),
            "the document has no JSON answer {code} for {method} {path}"
        );
        // a `$ref` is a URI: braces in the path must be percent-encoded
        let uri = pointer.replace('{', "%7B").replace('}', "%7D");
        self.check_schema(&format!("#{uri}"), body);
        self.seen
            .lock()
            .unwrap()
            .insert((path.to_string(), method.to_lowercase(), code));
    }

    /// Asserts `value` matches the schema at `reference` (a `#/…` pointer into the document),
    /// with the components' `$ref`s resolved and formats (date-time, date) checked.
    fn check_schema(&self, reference: &str, value: &Value) {
        let mut root = self.doc.clone();
        root["$ref"] = json!(reference);
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("schema {reference} does not build: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "answer does not match {reference}:\n{}\n{value:#}",
            errors.join("\n")
        );
    }

    /// Every JSON answer the document lists.
    fn documented(&self) -> BTreeSet<(String, String, u16)> {
        let mut all = BTreeSet::new();
        for (path, ops) in self.doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                for (code, resp) in op["responses"].as_object().unwrap() {
                    if resp.pointer("/content/application~1json").is_some() {
                        all.insert((path.clone(), method.clone(), code.parse().unwrap()));
                    }
                }
            }
        }
        all
    }
}

// ---------- tests ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_the_openapi_document_says() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let f = fixture_with(Options::default(), Some(store.clone())).await;
    let spec = Spec::load(&f).await;
    let doc = spec.doc.clone();
    spec.check("get", "/api/openapi.json", StatusCode::OK, &doc);
    let today = Utc::now().date_naive();

    // health and readiness
    let (s, v) = f.call_as(None, Method::GET, "/healthz", None).await;
    assert_eq!(s, 200);
    spec.check("get", "/healthz", s, &v);
    let (s, v) = f.call_as(None, Method::GET, "/readyz", None).await;
    assert_eq!(s, 200, "{v}");
    spec.check("get", "/readyz", s, &v);

    // calls: one live, one ended in the registry, one only in the database
    let (live, mut controls) = place_call(&f.registry, "call-live");
    let (over, _c) = place_call(&f.registry, "call-over");
    // its recording: a WAV header and 2,000 bytes of samples 0, 1, 2, ...
    let wav_path = dir.path().join("call-over.wav");
    let mut wav = voxrelay::media::recording::header(2000).to_vec();
    wav.extend((0..2000u32).map(|i| i as u8));
    std::fs::write(&wav_path, &wav).unwrap();
    let recording = RecordingRef {
        path: wav_path.display().to_string(),
        bytes: wav.len() as u64,
        duration_ms: 62,
        offset_ms: 300,
        deleted_at: None,
    };
    over.update(|d| d.recording = Some(recording.clone()));
    over.finish("caller_bye");
    // in the database only: one recorded, one whose recording retention deleted
    let three_days_ago = Utc::now() - chrono::Duration::days(3);
    for (id, deleted_at) in [("call-rec", None), ("call-gone", Some(Utc::now()))] {
        store
            .insert_call(&CallRecord {
                id: id.into(),
                caller: "sip:+15557654321@127.0.0.1".into(),
                callee: "sip:+15550001111@127.0.0.1".into(),
                agent: "receptionist".into(),
                kind: Default::default(),
                started_at: three_days_ago,
                answered_at: None,
                ended_at: None,
                outcome: "caller_bye".into(),
                transcript: json!([]),
                tool_calls: json!([]),
                recording: Some(RecordingRef {
                    deleted_at,
                    ..recording.clone()
                }),
                node: None,
                answered_by: None,
            })
            .await
            .unwrap();
    }
    store
        .insert_call(&CallRecord {
            id: "call-stored".into(),
            caller: "sip:+15557654321@127.0.0.1".into(),
            callee: "sip:+15550001111@127.0.0.1".into(),
            agent: "receptionist".into(),
            kind: voxrelay::booking::CallKind::Web,
            started_at: Utc::now() - chrono::Duration::days(2),
            answered_at: Some(Utc::now() - chrono::Duration::days(2)),
            ended_at: Some(Utc::now() - chrono::Duration::days(2)),
            outcome: "agent_end_call".into(),
            transcript: json!([{"speaker": "agent", "text": "Goodbye!", "at_ms": 100, "final": true, "cut_off": false}]),
            tool_calls: json!([]),
            recording: None,
            node: None,
            answered_by: None,
        })
        .await
        .unwrap();

    let (s, v) = f.call(Method::GET, "/api/calls", None).await;
    assert_eq!(s, 200);
    spec.check("get", "/api/calls", s, &v);
    let ids: Vec<&str> = v["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["call-live"]);
    assert_eq!(v["calls"][0]["state"], "answered");
    assert_eq!(v["calls"][0]["turns"], 1);

    let (s, v) = f.call(Method::GET, "/api/calls?state=ended", None).await;
    assert_eq!(s, 200);
    spec.check("get", "/api/calls", s, &v);
    let ids: Vec<&str> = v["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["call-over", "call-stored", "call-gone", "call-rec"],
        "newest first"
    );
    assert_eq!(v["calls"][1]["end_reason"], "agent_end_call");
    // the stored record keeps where the call came from
    assert_eq!(v["calls"][1]["kind"], "web");
    assert_eq!(v["calls"][0]["kind"], "phone");

    let (s, v) = f.call(Method::GET, "/api/calls?state=sideways", None).await;
    assert_eq!(s, 400);
    spec.check("get", "/api/calls", s, &v);
    assert_eq!(v["error"]["code"], "bad_query");

    let (s, v) = f.call(Method::GET, "/api/calls/call-live", None).await;
    assert_eq!(s, 200);
    spec.check("get", "/api/calls/{id}", s, &v);
    assert_eq!(v["from"], "sip:+15551234567@127.0.0.1");
    assert_eq!(
        v["transcript"][0]["text"],
        "Hello, Bright Smile Dental, how can I help?"
    );
    assert_eq!(v["tool_calls"][0]["name"], "check_availability");
    assert_eq!(v["media"]["codec"], "PCMU");

    let (s, v) = f.call(Method::GET, "/api/calls/call-stored", None).await;
    assert_eq!(s, 200);
    spec.check("get", "/api/calls/{id}", s, &v);
    assert_eq!(v["state"], "ended");
    assert_eq!(v["kind"], "web");
    assert_eq!(v["transcript"][0]["text"], "Goodbye!");

    let (s, v) = f.call(Method::GET, "/api/calls/no-such-call", None).await;
    assert_eq!(s, 404);
    spec.check("get", "/api/calls/{id}", s, &v);
    assert_eq!(v["error"]["code"], "call_not_found");
    let (s, v) = f
        .call(Method::GET, "/api/calls/no-such-call/events", None)
        .await;
    assert_eq!(s, 404);
    spec.check("get", "/api/calls/{id}/events", s, &v);

    // the recording: the whole file, ranges, HEAD, and the refusals
    let rec_path = "/api/calls/{id}/recording";
    let (s, v) = f.call(Method::GET, "/api/calls/call-over", None).await;
    assert_eq!(s, 200);
    spec.check("get", "/api/calls/{id}", s, &v);
    assert_eq!(v["recording"]["offset_ms"], 300, "{v}");
    assert!(
        !v.to_string().contains(&wav_path.display().to_string()),
        "the file's path stays on the relay"
    );
    let (s, v) = f.call(Method::GET, "/api/calls/call-rec", None).await;
    spec.check("get", "/api/calls/{id}", s, &v);
    assert_eq!(v["recording"]["bytes"], wav.len());
    let fetch = |id: &str, method: Method, range: Option<&str>| {
        let mut req = f
            .http
            .request(method, format!("{}/api/calls/{id}/recording", f.base))
            .bearer_auth(TOKEN)
            .timeout(WAIT);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let h = resp.headers().clone();
            let header = move |n: &str| {
                h.get(n)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            (status, header, resp.bytes().await.unwrap().to_vec())
        }
    };
    for id in ["call-over", "call-rec"] {
        let (status, h, body) = fetch(id, Method::GET, None).await;
        assert_eq!(status, 200, "{id}");
        assert_eq!(h("content-type"), "audio/wav");
        assert_eq!(h("accept-ranges"), "bytes");
        assert_eq!(body, wav, "{id}: the whole file");
    }
    let len = wav.len();
    for (range, from, to) in [
        ("bytes=44-143", 44, 143),
        ("bytes=-10", len - 10, len - 1),
        ("bytes=2000-", 2000, len - 1),
        ("bytes=0-999999", 0, len - 1),
    ] {
        let (status, h, body) = fetch("call-over", Method::GET, Some(range)).await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(h("content-range"), format!("bytes {from}-{to}/{len}"));
        assert_eq!(h("content-length"), (to - from + 1).to_string());
        assert_eq!(body, wav[from..=to], "{range}");
    }
    for range in [
        format!("bytes={len}-"),
        "bytes=9-3".into(),
        "bytes=x".into(),
    ] {
        let (status, h, body) = fetch("call-over", Method::GET, Some(&range)).await;
        assert_eq!(status, 416, "{range}");
        assert_eq!(h("content-range"), format!("bytes */{len}"));
        let v: Value = serde_json::from_slice(&body).unwrap();
        spec.check("get", rec_path, status, &v);
        assert_eq!(v["error"]["code"], "bad_range");
    }
    let (status, h, body) = fetch("call-over", Method::HEAD, None).await;
    assert_eq!(status, 200);
    assert_eq!(h("content-length"), len.to_string());
    assert!(body.is_empty(), "HEAD has no body");
    for (id, code) in [
        ("call-live", "no_recording"),
        ("call-stored", "no_recording"),
        ("call-gone", "recording_deleted"),
        ("no-such-call", "call_not_found"),
        ("..%2F..%2Fetc%2Fpasswd", "call_not_found"),
    ] {
        let (s, v) = f
            .call(Method::GET, &format!("/api/calls/{id}/recording"), None)
            .await;
        assert_eq!(s, 404, "{id}: {v}");
        spec.check("get", rec_path, s, &v);
        assert_eq!(v["error"]["code"], code, "{id}");
    }

    // a recording upload is only for a browser call the relay decided to record: refused
    // here before a byte is stored (tests/web_calls.rs uploads real ones)
    let mut web = CallDetail::new("web-unrecorded", "browser", "rtc_x", "receptionist", None);
    web.kind = voxrelay::booking::CallKind::Web;
    let (_web, _web_ctl) = f.registry.register(web);
    let wav0 = voxrelay::media::recording::header(0).to_vec();
    for (id, ct, status, code) in [
        ("no-such-call", "audio/wav", 404, "call_not_found"),
        ("call-live", "audio/wav", 409, "not_a_web_call"),
        ("call-over", "audio/wav; codecs=1", 409, "not_a_web_call"),
        ("web-unrecorded", "audio/wav", 409, "not_recorded"),
        // JSON passes the guard (as on every route) but is no recording
        (
            "web-unrecorded",
            "application/json",
            415,
            "unsupported_media_type",
        ),
    ] {
        let resp = f
            .http
            .put(format!("{}/api/calls/{id}/recording", f.base))
            .bearer_auth(TOKEN)
            .header("content-type", ct)
            .body(wav0.clone())
            .timeout(WAIT)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{id} {ct}");
        let v: Value = resp.json().await.unwrap();
        spec.check("put", rec_path, StatusCode::from_u16(status).unwrap(), &v);
        assert_eq!(v["error"]["code"], code, "{id} {ct}");
    }
    // the audio exception is this route's PUT only: audio anywhere else is still refused
    for (m, path) in [
        (Method::POST, "/api/calls/call-live/say"),
        (Method::POST, "/api/calls/call-live/recording"),
        (Method::POST, "/api/calls/web"),
    ] {
        let resp = f
            .http
            .request(m.clone(), format!("{}{path}", f.base))
            .bearer_auth(TOKEN)
            .header("content-type", "audio/wav")
            .body(wav0.clone())
            .timeout(WAIT)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 415, "{m} {path}");
    }

    // controls reach the call's task
    for (action, body, expect) in [
        ("hangup", None, Control::Hangup),
        ("interrupt", None, Control::Interrupt),
        (
            "say",
            Some(json!({"text": "  Please offer Tuesday.  "})),
            Control::Say("Please offer Tuesday.".into()),
        ),
        ("mute", Some(json!({"muted": true})), Control::Mute(true)),
    ] {
        let path = format!("/api/calls/{{id}}/{action}");
        let (s, v) = f
            .call(
                Method::POST,
                &format!("/api/calls/call-live/{action}"),
                body,
            )
            .await;
        assert_eq!(s, 202, "{action}: {v}");
        spec.check("post", &path, s, &v);
        assert_eq!(v["action"], action);
        let got = tokio::time::timeout(WAIT, controls.recv()).await.unwrap();
        assert_eq!(got, Some(expect));

        let (s, v) = f
            .call(
                Method::POST,
                &format!("/api/calls/nope/{action}"),
                good_body(action),
            )
            .await;
        assert_eq!(s, 404, "{action}: {v}");
        assert_eq!(v["error"]["code"], "call_not_found");
        spec.check("post", &path, s, &v);
        let (s, v) = f
            .call(
                Method::POST,
                &format!("/api/calls/call-over/{action}"),
                good_body(action),
            )
            .await;
        assert_eq!(s, 409, "{action}: {v}");
        assert_eq!(v["error"]["code"], "call_ended");
        spec.check("post", &path, s, &v);
    }

    // bad bodies get JSON errors
    for (action, body) in [
        ("say", "not json"),
        ("say", r#"{"text": "   "}"#),
        ("say", r#"{"words": "hi"}"#),
        ("mute", r#"{"muted": "yes"}"#),
        ("mute", ""),
    ] {
        let resp = f
            .http
            .post(format!("{}/api/calls/call-live/{action}", f.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{action} {body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "bad_body", "{action} {body}: {v}");
        spec.check(
            "post",
            &format!("/api/calls/{{id}}/{action}"),
            StatusCode::BAD_REQUEST,
            &v,
        );
    }
    let long = "x".repeat(2_001);
    let (s, v) = f
        .call(
            Method::POST,
            "/api/calls/call-live/say",
            Some(json!({ "text": long })),
        )
        .await;
    assert_eq!(s, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("2000"));
    for action in ["say", "mute"] {
        let huge = json!({ "text": "x".repeat(20_000) });
        let (s, v) = f
            .call(
                Method::POST,
                &format!("/api/calls/call-live/{action}"),
                Some(huge),
            )
            .await;
        assert_eq!(s, 413, "{v}");
        spec.check("post", &format!("/api/calls/{{id}}/{action}"), s, &v);
    }

    // placing a call: the body is checked, then the agent; this fixture has no SIP endpoint
    // (answers with one: tests/outbound_calls.rs)
    for (body, code, error) in [
        (json!({"to": "+12015550123"}), 400, "bad_body"),
        (
            json!({"to": "+12015550123", "agent": "receptionist", "context": "x".repeat(2001)}),
            400,
            "bad_body",
        ),
        (
            json!({"to": "+12015550123", "agent": "nobody"}),
            404,
            "agent_not_found",
        ),
        (
            json!({"to": "+12015550123", "agent": "receptionist"}),
            503,
            "no_dialer",
        ),
        (
            json!({"to": "x".repeat(20_000), "agent": "receptionist"}),
            413,
            "bad_body",
        ),
    ] {
        let (s, v) = f.call(Method::POST, "/api/calls", Some(body)).await;
        assert_eq!(
            (s.as_u16(), v["error"]["code"].as_str()),
            (code, Some(error)),
            "{v}"
        );
        spec.check("post", "/api/calls", s, &v);
    }

    // a call whose task does not read its controls: the queue fills, then 503 call_busy
    let (_stuck, _stuck_rx) = place_call(&f.registry, "call-stuck");
    let mut busy = None;
    for _ in 0..64 {
        let (s, v) = f
            .call(Method::POST, "/api/calls/call-stuck/interrupt", None)
            .await;
        if s != 202 {
            busy = Some((s, v));
            break;
        }
    }
    let (s, v) = busy.expect("the control queue is bounded");
    assert_eq!(s, 503);
    assert_eq!(v["error"]["code"], "call_busy");
    for action in ["hangup", "interrupt", "say", "mute"] {
        let (s, v) = f
            .call(
                Method::POST,
                &format!("/api/calls/call-stuck/{action}"),
                good_body(action),
            )
            .await;
        assert_eq!(s, 503, "{action}");
        spec.check("post", &format!("/api/calls/{{id}}/{action}"), s, &v);
    }

    // bookings
    store
        .insert_booking(
            &NewBooking {
                patient_name: "Ada Lovelace".into(),
                phone: "+15551234567".into(),
                date: today,
                time: NaiveTime::from_hms_opt(9, 30, 0).unwrap(),
            },
            Utc::now(),
        )
        .await
        .unwrap();
    let (s, v) = f
        .call(Method::GET, &format!("/api/bookings?date={today}"), None)
        .await;
    assert_eq!(s, 200);
    spec.check("get", "/api/bookings", s, &v);
    assert_eq!(v["bookings"][0]["patient_name"], "Ada Lovelace");

    // trunks: the registration state the SIP side keeps, also as a metric
    f.trunks.insert(
        "main".into(),
        voxrelay::sip::register::RegistrationState {
            registered: true,
            last_status: 200,
            failures: 0,
            successes: 3,
            since: 1_790_000_000,
        },
    );
    let (ts, tv) = f.call(Method::GET, "/api/trunks", None).await;
    assert_eq!(ts, 200);
    spec.check("get", "/api/trunks", ts, &tv);
    assert_eq!(tv["trunks"][0]["name"], "main");
    assert_eq!(tv["trunks"][0]["registered"], true);

    // the webhook delivery log: one delivered, one pending; filtered; bad queries refused
    let at = Utc::now();
    let delivery = |id: &str, status: DeliveryStatus| Delivery {
        id: id.into(),
        url: "https://clinic.example/hook".into(),
        event: "call.ended".into(),
        call_id: "call-over".into(),
        payload: r#"{"secret_body": true}"#.into(),
        status,
        attempts: 1,
        next_attempt_at: (status == DeliveryStatus::Pending).then_some(at),
        last_status: Some(503),
        last_error: Some("the receiver answered 503".into()),
        created_at: at,
        delivered_at: None,
    };
    store
        .insert_deliveries(&[
            delivery("dlv_a", DeliveryStatus::Pending),
            delivery("dlv_b", DeliveryStatus::Delivered),
        ])
        .await
        .unwrap();
    let (s, dv) = f.call(Method::GET, "/api/webhooks/deliveries", None).await;
    assert_eq!(s, 200, "{dv}");
    spec.check("get", "/api/webhooks/deliveries", s, &dv);
    assert_eq!(dv["deliveries"].as_array().unwrap().len(), 2, "{dv}");
    assert!(!dv.to_string().contains("secret_body"), "{dv}");
    let (s, dv) = f
        .call(
            Method::GET,
            "/api/webhooks/deliveries?status=pending&call=call-over&limit=5",
            None,
        )
        .await;
    assert_eq!(s, 200, "{dv}");
    assert_eq!(dv["deliveries"][0]["id"], "dlv_a", "{dv}");
    assert_eq!(dv["deliveries"].as_array().unwrap().len(), 1, "{dv}");
    let (s, dv) = f
        .call(Method::GET, "/api/webhooks/deliveries?call=nobody", None)
        .await;
    assert_eq!(
        (s, dv["deliveries"].as_array().unwrap().len()),
        (StatusCode::OK, 0)
    );
    for bad in ["status=lost", "limit=0", "limit=501", "limit=x", "other=1"] {
        let (s, dv) = f
            .call(
                Method::GET,
                &format!("/api/webhooks/deliveries?{bad}"),
                None,
            )
            .await;
        assert_eq!(s, 400, "{bad}: {dv}");
        spec.check("get", "/api/webhooks/deliveries", s, &dv);
    }

    // the reminder calls: one given, one skipped; filtered; bad queries refused
    let reminder = |code: &str, status: ReminderStatus| Reminder {
        booking_code: code.into(),
        appointment_at: at + chrono::Duration::days(1),
        status,
        attempts: 1,
        next_attempt_at: None,
        last_outcome: Some(
            if status == ReminderStatus::Done {
                "answered"
            } else {
                "refused"
            }
            .into(),
        ),
        skip_reason: (status == ReminderStatus::Skipped).then(|| "refused".into()),
        last_call_id: Some("call-over".into()),
        created_at: at,
        updated_at: at,
    };
    for r in [
        reminder("BK-DONE", ReminderStatus::Done),
        reminder("BK-SKIP", ReminderStatus::Skipped),
    ] {
        assert!(store.insert_reminder(&r).await.unwrap());
    }
    let (s, rv) = f.call(Method::GET, "/api/reminders", None).await;
    assert_eq!(s, 200, "{rv}");
    spec.check("get", "/api/reminders", s, &rv);
    assert_eq!(rv["reminders"].as_array().unwrap().len(), 2, "{rv}");
    let (s, rv) = f
        .call(Method::GET, "/api/reminders?status=skipped&limit=5", None)
        .await;
    assert_eq!(s, 200, "{rv}");
    assert_eq!(rv["reminders"][0]["booking_code"], "BK-SKIP", "{rv}");
    assert_eq!(rv["reminders"][0]["skip_reason"], "refused", "{rv}");
    assert_eq!(rv["reminders"].as_array().unwrap().len(), 1, "{rv}");
    for bad in ["status=lost", "limit=0", "limit=501", "other=1"] {
        let (s, rv) = f
            .call(Method::GET, &format!("/api/reminders?{bad}"), None)
            .await;
        assert_eq!(s, 400, "{bad}: {rv}");
        spec.check("get", "/api/reminders", s, &rv);
    }

    // a relay on its own: no node id, no other relays
    let (s, cluster) = f.call(Method::GET, "/api/cluster", None).await;
    assert_eq!(s, 200, "{cluster}");
    spec.check("get", "/api/cluster", s, &cluster);
    assert_eq!(cluster, json!({"node_id": null, "relays": []}));

    // the agents a browser can talk to: names, descriptions and the default, nothing more
    let (s, agents) = f.call(Method::GET, "/api/agents", None).await;
    assert_eq!(s, 200, "{agents}");
    spec.check("get", "/api/agents", s, &agents);
    let names: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["billing", "receptionist"]);
    assert_eq!(agents[0]["default"], false);
    assert_eq!(agents[1]["default"], true);
    assert!(agents[1]["description"]
        .as_str()
        .unwrap()
        .contains("appointments"));
    assert!(
        !agents.to_string().contains("instructions")
            && !agents.to_string().contains("create_booking"),
        "no prompt or tool leaves through the list: {agents}"
    );
    let text = f
        .http
        .get(format!("{}/metrics", f.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("voxrelay_trunk_registered{trunk=\"main\"} 1"),
        "{text}"
    );
    assert_eq!(v["bookings"][0]["time"], "09:30:00");
    let (s, v) = f
        .call(Method::GET, "/api/bookings?date=2030-01-07", None)
        .await;
    assert_eq!(
        (s, v["bookings"].as_array().unwrap().len()),
        (StatusCode::OK, 0)
    );
    for bad in ["2030-13-01", "tomorrow", "2030-01-07&x=1"] {
        let (s, v) = f
            .call(Method::GET, &format!("/api/bookings?date={bad}"), None)
            .await;
        assert_eq!(s, 400, "{bad}");
        spec.check("get", "/api/bookings", s, &v);
    }

    // the session endpoint without a key
    let (s, v) = f.call(Method::GET, "/api/session", None).await;
    assert_eq!(s, 503);
    spec.check("get", "/api/session", s, &v);
    assert_eq!(v["error"]["code"], "no_api_key");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("OPENAI_API_KEY"));
    let (s, v) = f.call(Method::GET, "/api/session?model=x", None).await;
    assert_eq!(s, 400);
    spec.check("get", "/api/session", s, &v);
    // nor browser calls
    let body = json!({"call_id": "rtc_1", "client_secret": "ek_1"});
    let (s, v) = f.call(Method::POST, "/api/calls/web", Some(body)).await;
    assert_eq!(s, 503);
    assert_eq!(v["error"]["code"], "no_api_key");
    spec.check("post", "/api/calls/web", s, &v);

    // unknown routes and methods
    let (s, v) = f.call(Method::GET, "/api/nothing-here", None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, v) = f.call(Method::DELETE, "/api/calls", None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );

    // without the token: 401 in the error shape on every /api route, never the token
    for (method, path) in [
        ("get", "/api/calls"),
        ("get", "/api/calls/{id}"),
        ("post", "/api/calls/web"),
        ("get", "/api/calls/{id}/events"),
        ("post", "/api/calls"),
        ("post", "/api/calls/{id}/hangup"),
        ("post", "/api/calls/{id}/interrupt"),
        ("post", "/api/calls/{id}/say"),
        ("post", "/api/calls/{id}/mute"),
        ("get", "/api/calls/{id}/recording"),
        ("put", "/api/calls/{id}/recording"),
        ("get", "/api/events"),
        ("get", "/api/bookings"),
        ("get", "/api/trunks"),
        ("get", "/api/webhooks/deliveries"),
        ("get", "/api/reminders"),
        ("get", "/api/agents"),
        ("get", "/api/cluster"),
        ("get", "/api/session"),
        ("get", "/api/openapi.json"),
    ] {
        let real = path.replace("{id}", "call-live");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        for token in [None, Some("wrong-token"), Some(&TOKEN[..TOKEN.len() - 1])] {
            let resp = f
                .http
                .request(m.clone(), format!("{}{real}", f.base))
                .headers(token.map_or_else(Default::default, |t| {
                    let mut h = reqwest::header::HeaderMap::new();
                    h.insert("authorization", format!("Bearer {t}").parse().unwrap());
                    h
                }))
                .json(&json!({"text": "x", "muted": true}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 401, "{method} {path} with {token:?}");
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            let text = resp.text().await.unwrap();
            assert!(!text.contains(TOKEN), "{text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["error"]["code"], "unauthorized");
            spec.check(method, path, StatusCode::UNAUTHORIZED, &v);
        }
    }
    assert_eq!(
        tokio::time::timeout(Duration::from_millis(0), controls.recv())
            .await
            .ok(),
        None,
        "no unauthorised request reached the call"
    );
    // the open routes answer without the token
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/",
        "/app.js",
        "/style.css",
        "/talk",
        "/talk.js",
        "/talk.css",
    ] {
        let resp = f
            .http
            .get(format!("{}{path}", f.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let text = resp.text().await.unwrap();
        assert!(!text.contains(TOKEN), "{path}");
    }

    // the database breaks: stored history gives 503, readiness says so
    store.close().await;
    let (s, v) = f.call(Method::GET, "/api/calls/call-stored", None).await;
    assert_eq!(s, 503);
    spec.check("get", "/api/calls/{id}", s, &v);
    assert_eq!(v["error"]["code"], "database_error");
    let (s, v) = f
        .call(Method::GET, "/api/calls/call-stored/recording", None)
        .await;
    assert_eq!(s, 503);
    spec.check("get", "/api/calls/{id}/recording", s, &v);
    let (s, v) = f.call(Method::GET, "/api/bookings", None).await;
    assert_eq!(s, 503);
    spec.check("get", "/api/bookings", s, &v);
    let (s, v) = f.call(Method::GET, "/api/webhooks/deliveries", None).await;
    assert_eq!(s, 503);
    spec.check("get", "/api/webhooks/deliveries", s, &v);
    assert_eq!(v["error"]["code"], "database_error");
    let (s, v) = f.call(Method::GET, "/api/reminders", None).await;
    assert_eq!(s, 503);
    spec.check("get", "/api/reminders", s, &v);
    assert_eq!(v["error"]["code"], "database_error");
    let (s, v) = f.call_as(None, Method::GET, "/readyz", None).await;
    assert_eq!(s, 503);
    spec.check("get", "/readyz", s, &v);
    assert!(v["error"]["message"].as_str().unwrap().contains("database"));

    // the guard's answers on every route: a foreign Host (421), a request from another site
    // to the API (403), a POST that is not JSON (415); none reaches the call
    for (path, method, code) in spec.documented() {
        if ![421u16, 403, 415].contains(&code) {
            continue;
        }
        let real = path.replace("{id}", "call-live");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let req = f
            .http
            .request(m, format!("{}{real}", f.base))
            .bearer_auth(TOKEN)
            .timeout(WAIT);
        let req = match code {
            421 => req.header("host", "evil.example"),
            403 => req
                .header("origin", "http://evil.example")
                .header("access-control-request-method", "GET")
                .header("content-type", "application/json")
                .body("{}"),
            _ => req.header("content-type", "text/plain").body("{}"),
        };
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), code, "{method} {path}");
        assert!(resp.headers().get("access-control-allow-origin").is_none());
        let v: Value = resp.json().await.unwrap();
        spec.check(&method, &path, StatusCode::from_u16(code).unwrap(), &v);
    }
    assert!(
        controls.try_recv().is_err(),
        "a refused request reached the call"
    );

    drop(live);
    let seen = spec.seen.lock().unwrap().clone();
    let missing: Vec<_> = spec
        .documented()
        .into_iter()
        .filter(|k| !seen.contains(k))
        // each of these has its own test below
        .filter(|(p, _, c)| !(p == "/api/session" && [200, 502, 504].contains(c)))
        // browser calls need a realtime service: tests/web_calls.rs
        .filter(|(p, _, c)| !(p == "/api/session" && *c == 404))
        .filter(|(p, _, c)| !(p == "/api/calls/web" && [201, 400, 403, 404, 409, 502].contains(c)))
        // a placed call needs a SIP endpoint and a trunk: tests/outbound_calls.rs
        .filter(|(p, m, c)| !(p == "/api/calls" && m == "post" && [202, 409].contains(c)))
        // uploads of a browser call's recording: tests/web_calls.rs (the 5-minute window's
        // 410 and the write failures by the unit tests and by reading)
        .filter(|(p, m, c)| {
            !(p == "/api/calls/{id}/recording"
                && m == "put"
                && [201, 400, 410, 413, 500, 503].contains(c))
        })
        .filter(|(p, _, c)| {
            !(p == "/api/bookings" && *c == 503 && seen.contains(&(p.clone(), "get".into(), 503)))
        })
        // answers only a relay in a cluster gives: tests/cluster_admin.rs
        .filter(|(p, _, c)| {
            !((p == "/api/cluster" && *c == 503)
                || (p.starts_with("/api/calls/{id}") && [502, 503].contains(c)))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "documented answers never checked: {missing:?}"
    );
    f.server.shutdown().await;
}

#[tokio::test]
async fn without_a_store_bookings_answer_503_and_readiness_fails() {
    let f = fixture_with(
        Options {
            store: false,
            ..Options::default()
        },
        None,
    )
    .await;
    let spec = Spec::load(&f).await;
    let (s, v) = f
        .call(Method::GET, "/api/bookings?date=2030-01-07", None)
        .await;
    assert_eq!(s, 503);
    assert_eq!(v["error"]["code"], "bookings_unavailable");
    spec.check("get", "/api/bookings", s, &v);
    let (s, _) = f.call_as(None, Method::GET, "/readyz", None).await;
    assert_eq!(s, 503);
}

#[tokio::test]
async fn readiness_turns_503_while_draining() {
    let f = fixture().await;
    let (s, v) = f.call_as(None, Method::GET, "/readyz", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["checks"]["database"], true);
    f.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    let (s, v) = f.call_as(None, Method::GET, "/readyz", None).await;
    assert_eq!(s, 503);
    assert_eq!(v["error"]["code"], "draining");
    // liveness is unaffected
    let (s, _) = f.call_as(None, Method::GET, "/healthz", None).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn without_a_token_on_loopback_everything_is_open() {
    let f = fixture_with(
        Options {
            token: false,
            ..Options::default()
        },
        None,
    )
    .await;
    let (s, v) = f.call_as(None, Method::GET, "/api/calls", None).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn a_non_loopback_listen_without_a_token_is_refused() {
    let state = AdminState {
        registry: Registry::new(),
        metrics: Metrics::shared(),
        store: None,
        minter: None,
        session: AgentSpec::default().session(None),
        web: None,
        token: None,
        trunks: Default::default(),
        readiness: Arc::new(Readiness::ready),
        agents: Default::default(),
        default_agent: String::new(),
        cluster: None,
        dialer: None,
    };
    let err = admin::start("0.0.0.0:0".parse().unwrap(), state)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("admin.token"), "{err}");
}

// ---------- live events ----------

/// A Server-Sent Events reader over a raw response.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(f: &Fixture, path: &str) -> Events {
        let resp = f
            .http
            .get(format!("{}{path}", f.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Events {
            resp,
            buf: String::new(),
        }
    }

    /// The next event's name and data; `None` when the stream ends.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).unwrap()));
            }
            let chunk = tokio::time::timeout(WAIT, self.resp.chunk())
                .await
                .expect("an event within the timeout")
                .unwrap()?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_events_arrive_in_order_and_match_the_document() {
    let f = fixture().await;
    let spec = Spec::load(&f).await;
    let (p, _ctl) = f.registry.register(CallDetail::new(
        "c-ev",
        "sip:+15551234567@127.0.0.1",
        "sip:100@127.0.0.1",
        "receptionist",
        None,
    ));
    let mut all = Events::open(&f, "/api/events").await;
    let mut one = Events::open(&f, "/api/calls/c-ev/events").await;

    let (name, snap) = one.next().await.unwrap();
    assert_eq!(name, "snapshot");
    assert_eq!(snap["call"]["state"], "ringing");
    spec.check_schema("#/components/schemas/StreamEvent", &snap);
    let (name, snap) = all.next().await.unwrap();
    assert_eq!(name, "snapshot");
    assert_eq!(snap["calls"][0]["id"], "c-ev");
    spec.check_schema("#/components/schemas/StreamEvent", &snap);

    p.answered();
    say(&p, Speaker::Caller, "I'd like an appointment on Tuesday.");
    p.emit(CallEvent::ToolCall {
        call_id: "call_9".into(),
        name: "check_availability".into(),
        arguments: json!({"start_date": "2030-01-08", "end_date": "2030-01-08"}),
    });
    p.emit(CallEvent::ToolResult {
        call_id: "call_9".into(),
        name: "check_availability".into(),
        result: json!({"slots": ["10:00"]}),
        ok: true,
        duration_ms: 7,
    });
    p.emit(CallEvent::BargeIn {
        residual_ms: 40,
        flushed_ms: 300,
    });
    p.emit(CallEvent::Dtmf {
        digits: "12#".into(),
    });
    p.emit(CallEvent::Handoff {
        from: "receptionist".into(),
        to: "billing".into(),
    });
    p.emit(CallEvent::Guardrail {
        rule: "no_diagnosis".into(),
    });
    p.emit(CallEvent::Transfer {
        target: "sip:desk@127.0.0.1".into(),
        outcome: "trying".into(),
    });
    p.emit(CallEvent::AnsweredBy {
        answered_by: "machine",
    });
    p.emit(CallEvent::Muted { muted: true });
    p.emit(CallEvent::Media {
        stats: MediaStats {
            codec: "PCMA".into(),
            rtp_in: 250,
            ..MediaStats::default()
        },
    });
    p.finish("operator_hangup");

    let want = [
        "answered",
        "transcript",
        "tool_call",
        "tool_result",
        "barge_in",
        "dtmf",
        "handoff",
        "guardrail",
        "transfer",
        "answered_by",
        "muted",
        "media",
        "ended",
    ];
    let mut got = vec![];
    while let Some((name, data)) = one.next().await {
        assert_eq!(
            data["type"],
            name.as_str(),
            "the SSE name is the event type"
        );
        assert_eq!(data["call_id"], "c-ev");
        spec.check_schema("#/components/schemas/StreamEvent", &data);
        match name.as_str() {
            "transcript" => {
                assert_eq!(data["turn"]["text"], "I'd like an appointment on Tuesday.");
                assert_eq!(data["turn"]["speaker"], "caller");
            }
            "tool_call" => assert_eq!(data["tool_call_id"], "call_9"),
            "barge_in" => assert_eq!(data["residual_ms"], 40),
            "answered_by" => assert_eq!(data["answered_by"], "machine"),
            "ended" => assert_eq!(data["reason"], "operator_hangup"),
            _ => {}
        }
        got.push(name);
    }
    assert_eq!(got, want, "the call's stream closes after `ended`");

    let mut got_all = vec![];
    for _ in 0..want.len() {
        let (name, _) = all.next().await.unwrap();
        got_all.push(name);
    }
    assert_eq!(got_all, want);

    // a browser call's recording arrives after its end: told on the all-calls stream, with
    // what the record now says (never the file's path)
    let rec = voxrelay::booking::RecordingRef {
        path: "/secret/place/c-ev.wav".into(),
        bytes: 32_044,
        duration_ms: 1000,
        offset_ms: 0,
        deleted_at: None,
    };
    let named = f
        .registry
        .set_recording("c-ev", rec)
        .expect("the ended call");
    assert_eq!(named.recording.as_ref().map(|r| r.bytes), Some(32_044));
    let (name, data) = all.next().await.unwrap();
    assert_eq!(name, "recording");
    spec.check_schema("#/components/schemas/StreamEvent", &data);
    assert_eq!(data["recording"]["duration_ms"], 1000);
    assert!(!data.to_string().contains("secret"), "{data}");
    let (_, v) = f.call(Method::GET, "/api/calls/c-ev", None).await;
    assert_eq!(v["recording"]["bytes"], 32_044);
    assert!(f
        .registry
        .set_recording("no-such-call", RecordingRef::default())
        .is_none());

    // an ended call's stream: its snapshot, then the end
    let mut after = Events::open(&f, "/api/calls/c-ev/events").await;
    let (name, snap) = after.next().await.unwrap();
    assert_eq!(
        (name.as_str(), snap["call"]["state"].as_str()),
        ("snapshot", Some("ended"))
    );
    assert!(after.next().await.is_none());

    let (s, v) = f.call(Method::GET, "/api/calls/nope/events", None).await;
    assert_eq!(s, 404);
    spec.check("get", "/api/calls/{id}/events", s, &v);
    // shutdown ends the all-calls stream instead of waiting on it
    tokio::time::timeout(WAIT, f.server.shutdown())
        .await
        .unwrap();
    assert!(all.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_dropped_and_never_holds_up_a_call() {
    let f = fixture().await;
    let (p, _ctl) = f
        .registry
        .register(CallDetail::new("c-slow", "a", "b", "receptionist", None));
    let addr: SocketAddr = f.server.local_addr();

    // the slow client: a raw socket that sends its request and then reads nothing
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(
        format!("GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    // a fast client that reads everything
    let mut fast = Events::open(&f, "/api/events").await;
    assert_eq!(fast.next().await.unwrap().0, "snapshot");
    // the slow client is subscribed once its headers arrive; read just those
    let mut head = vec![0u8; 1];
    let mut seen = Vec::new();
    while !seen.ends_with(b"\r\n\r\n") {
        slow.read_exact(&mut head).await.unwrap();
        seen.push(head[0]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));

    // far more than the broadcast buffer and the socket buffers hold, in batches the fast
    // client keeps up with; publishing never waits
    let text = "word ".repeat(800);
    let batches = 40;
    let per_batch = 200;
    for b in 0..batches {
        let started = std::time::Instant::now();
        for i in 0..per_batch {
            p.emit(CallEvent::Transcript {
                index: b * per_batch + i,
                turn: Turn {
                    speaker: Speaker::Agent,
                    text: text.clone(),
                    at_ms: 0,
                    is_final: true,
                    cut_off: false,
                    item_id: None,
                },
            });
        }
        // not a timing assert on the test's speed: a publish that waited for the stuck
        // socket would never return at all, so this only bounds a hang
        assert!(started.elapsed() < WAIT, "publishing was held up");
        for i in 0..per_batch {
            let (name, data) = fast.next().await.unwrap();
            assert_eq!(name, "transcript");
            assert_eq!(data["index"], b * per_batch + i, "in order, none missing");
        }
    }

    // now the slow client reads: what was buffered, then `dropped`, then the end
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT * 3, slow.read_to_end(&mut rest))
        .await
        .expect("the slow client's stream is closed")
        .unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.contains("event: dropped"),
        "the client is told it was dropped"
    );
    let delivered = rest.matches("event: transcript").count();
    assert!(
        delivered < batches * per_batch,
        "a slow client cannot have got everything ({delivered})"
    );
    // the call and the fast client go on
    say(&p, Speaker::Caller, "still here");
    let (name, data) = fast.next().await.unwrap();
    assert_eq!(
        (name.as_str(), data["turn"]["text"].as_str()),
        ("transcript", Some("still here"))
    );
}

// ---------- metrics ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_with_prometheus_client() {
    let f = fixture().await;
    let (_p, _c) = place_call(&f.registry, "m1");
    let m = &f.metrics;
    m.call_ended("caller_bye");
    m.call_ended("agent_end_call");
    m.call_setup_seconds.observe(0.8);
    m.frame("to_agent", 0.000_04);
    m.frame("to_caller", 0.000_02);
    m.barge_in_residual_seconds.observe(0.03);
    m.rtp_jitter_seconds.observe(0.004);
    m.rtp_lost_packets.inc_by(3);
    m.tool("create_booking", true, 0.05);
    m.realtime_failed("mint_timeout");
    m.bookings_created.inc();

    let resp = f
        .http
        .get(format!("{}/metrics", f.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = resp.text().await.unwrap();
    assert!(!text.contains(TOKEN));

    let python = std::env::var("VOXRELAY_CONFORMANCE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/conformance/prometheus_parse.py"
    );
    let mut child = tokio::process::Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python} runs: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejects the text (pip install -r tests/conformance/requirements.txt): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let om = &parsed["openmetrics"];
    let family = |name: &str, kind: &str| {
        assert_eq!(om[name]["type"], kind, "{name} in {om:#}");
        om[name]["samples"].as_array().unwrap().clone()
    };
    let sample = |samples: &[Value], name: &str, label: Option<(&str, &str)>| -> f64 {
        samples
            .iter()
            .find(|s| s["name"] == name && label.is_none_or(|(k, v)| s["labels"][k] == v))
            .unwrap_or_else(|| panic!("no {name} {label:?}"))["value"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(
        sample(
            &family("voxrelay_calls_active", "gauge"),
            "voxrelay_calls_active",
            None
        ),
        1.0
    );
    let calls = family("voxrelay_calls", "counter");
    assert_eq!(
        sample(
            &calls,
            "voxrelay_calls_total",
            Some(("outcome", "caller_bye"))
        ),
        1.0
    );
    assert_eq!(
        sample(
            &calls,
            "voxrelay_calls_total",
            Some(("outcome", "agent_end_call"))
        ),
        1.0
    );
    let setup = family("voxrelay_call_setup_seconds", "histogram");
    assert_eq!(
        sample(&setup, "voxrelay_call_setup_seconds_count", None),
        1.0
    );
    let frames = family("voxrelay_frame_processing_seconds", "histogram");
    for dir in ["to_agent", "to_caller"] {
        assert_eq!(
            sample(
                &frames,
                "voxrelay_frame_processing_seconds_count",
                Some(("direction", dir))
            ),
            1.0
        );
    }
    family("voxrelay_barge_in_residual_seconds", "histogram");
    family("voxrelay_rtp_jitter_seconds", "histogram");
    assert_eq!(
        sample(
            &family("voxrelay_rtp_lost_packets", "counter"),
            "voxrelay_rtp_lost_packets_total",
            None
        ),
        3.0
    );
    let tools = family("voxrelay_tool_call_seconds", "histogram");
    assert_eq!(
        sample(
            &tools,
            "voxrelay_tool_call_seconds_count",
            Some(("tool", "create_booking"))
        ),
        1.0
    );
    assert_eq!(
        sample(
            &family("voxrelay_realtime_failures", "counter"),
            "voxrelay_realtime_failures_total",
            Some(("cause", "mint_timeout"))
        ),
        1.0
    );
    assert_eq!(
        sample(
            &family("voxrelay_bookings_created", "counter"),
            "voxrelay_bookings_created_total",
            None
        ),
        1.0
    );
    // the classic Prometheus text parser reads it too
    assert!(parsed["prometheus"]["voxrelay_calls_active"]["samples"][0]["value"] == 1.0);
}

// ---------- ephemeral keys ----------

const SERVER_KEY: &str = "sk-test-admin";

async fn sim(scenario: &str) -> SimHandle {
    Simulator::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        scenario: scenario.into(),
        api_key: Some(SERVER_KEY.into()),
    })
    .await
    .unwrap()
}

fn minter(sim: &SimHandle, key: &str) -> KeyMinter {
    KeyMinter::new(
        reqwest::Client::new(),
        &sim.base_url(),
        Secret::new(key),
        Duration::from_secs(3),
        600,
    )
}

/// The admin API with `/api/session` minting keys at `sim` with the server key `key`.
async fn fixture_minting(sim: &SimHandle, key: &str) -> Fixture {
    fixture_with(
        Options {
            minter: Some(minter(sim, key)),
            ..Options::default()
        },
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mints_an_ephemeral_key_and_never_shows_the_server_key() {
    let sim = sim("booking").await;
    let f = fixture_minting(&sim, SERVER_KEY).await;
    let spec = Spec::load(&f).await;
    let resp = f
        .http
        .get(format!("{}/api/session", f.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let text = resp.text().await.unwrap();
    assert!(!text.contains(SERVER_KEY), "the server key leaked: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    spec.check("get", "/api/session", StatusCode::OK, &v);
    assert!(v["value"].as_str().unwrap().starts_with("ek_"), "{v}");
    assert!(v["expires_at"].as_i64().unwrap() > Utc::now().timestamp());
    assert_eq!(
        v["session"]["instructions"], "You answer the phone for a dental clinic.",
        "minted with the default agent's session"
    );
    assert_eq!(v["session"]["audio"]["output"]["voice"], "marin");

    // the key works against the Realtime API: the simulator accepts it for a session
    let ek = v["value"].as_str().unwrap();
    let check = reqwest::Client::new()
        .post(format!("{}/v1/realtime/calls", sim.base_url()))
        .bearer_auth(ek)
        .header("content-type", "application/sdp")
        .body("not an offer")
        .send()
        .await
        .unwrap();
    assert_ne!(check.status(), 401, "the minted key is accepted");
}

/// `/talk` names the realtime API the relay uses, in its page and in its
/// Content-Security-Policy (the only other origin the page may reach), and holds no data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_talk_page_may_reach_the_realtime_api_and_nothing_else() {
    let sim = sim("booking").await;
    let f = fixture_minting(&sim, SERVER_KEY).await;
    let resp = f.http.get(format!("{}/talk", f.base)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let base = sim.base_url();
    assert!(
        csp.contains(&format!(
            "connect-src 'self' {};",
            base.trim_end_matches('/')
        )),
        "{csp}"
    );
    assert!(csp.contains("script-src 'self';"), "{csp}");
    let html = resp.text().await.unwrap();
    assert!(
        html.contains(&format!(r#"<meta name="openai-base" content="{base}">"#)),
        "{html}"
    );
    assert!(!html.contains(SERVER_KEY) && !html.contains(TOKEN));

    // without a key the page still loads; it may reach this server only
    let keyless = fixture().await;
    let resp = keyless
        .http
        .get(format!("{}/talk", keyless.base))
        .send()
        .await
        .unwrap();
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("connect-src 'self';"), "{csp}");
    let html = resp.text().await.unwrap();
    assert!(html.contains(r#"<meta name="openai-base" content="">"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_errors_are_clear_and_keyless() {
    // a server key the API refuses: 502, and the key is not in the answer
    let sim = sim("booking").await;
    let wrong = "sk-test-wrong";
    let f = fixture_minting(&sim, wrong).await;
    let spec = Spec::load(&f).await;
    let resp = f
        .http
        .get(format!("{}/api/session", f.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(
        !text.contains(wrong) && !text.contains(SERVER_KEY),
        "{text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "upstream_refused_key");
    spec.check("get", "/api/session", StatusCode::BAD_GATEWAY, &v);

    // minting keeps failing with 5xx until the deadline: 504
    let flaky = Simulator::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        scenario: concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/scenarios/fault-mint-500.toml"
        )
        .into(),
        api_key: Some(SERVER_KEY.into()),
    })
    .await
    .unwrap();
    let f2 = fixture_with(
        Options {
            minter: Some(KeyMinter::new(
                reqwest::Client::new(),
                &flaky.base_url(),
                Secret::new(SERVER_KEY),
                Duration::from_millis(600),
                600,
            )),
            ..Options::default()
        },
        None,
    )
    .await;
    let (s, v) = f2.call(Method::GET, "/api/session", None).await;
    assert_eq!(s, 504, "{v}");
    assert_eq!(v["error"]["code"], "upstream_timeout");
    assert!(!v.to_string().contains(SERVER_KEY));
    spec.check("get", "/api/session", s, &v);
}

#[tokio::test]
async fn the_document_lists_exactly_the_served_routes() {
    let f = fixture().await;
    let spec = Spec::load(&f).await;
    let documented: BTreeSet<String> = spec.doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let served: BTreeSet<String> = [
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/calls",
        "/api/calls/web",
        "/api/calls/{id}",
        "/api/calls/{id}/events",
        "/api/calls/{id}/hangup",
        "/api/calls/{id}/interrupt",
        "/api/calls/{id}/say",
        "/api/calls/{id}/mute",
        "/api/calls/{id}/recording",
        "/api/events",
        "/api/bookings",
        "/api/trunks",
        "/api/webhooks/deliveries",
        "/api/reminders",
        "/api/cluster",
        "/api/agents",
        "/api/session",
        "/api/openapi.json",
        "/talk",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(documented, served);
    // and each one is there: no documented path answers the router's 404
    for p in &served {
        let real = p.replace("{id}", "call-x");
        let is_post = ["hangup", "interrupt", "say", "mute"]
            .iter()
            .any(|a| p.ends_with(a));
        let m = if is_post { Method::POST } else { Method::GET };
        let resp = f
            .http
            .request(m, format!("{}{real}", f.base))
            .bearer_auth(TOKEN)
            .json(&good_body(p.rsplit('/').next().unwrap()).unwrap_or(json!({})))
            .timeout(WAIT)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        if status == 404 {
            let v: Value = resp.json().await.unwrap();
            assert_ne!(v["error"]["code"], "not_found", "{p} is not routed");
        }
    }
}
