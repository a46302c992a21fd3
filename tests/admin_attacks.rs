//! The admin server against a hostile web page and hostile clients, over real sockets on
//! loopback, with no token (the default on loopback, which is the case a page can reach):
//! DNS rebinding (`Host: evil.example`), cross-origin "simple" POSTs, foreign origins, CORS
//! preflights, a client that never finishes its request, an idle keep-alive connection; and,
//! end to end with the relay and SIPp, a tool name made up by the model that must not become
//! a metric label.

mod support;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use voxrelay::admin::{self, AccessPolicy, AdminOptions, AdminServer, AdminState, Readiness};
use voxrelay::bridge::registry::{CallDetail, CallPublisher, Control, Registry};
use voxrelay::metrics::Metrics;
use voxrelay::openai::keys::KeyMinter;
use voxrelay::secret::Secret;

const WAIT: Duration = Duration::from_secs(10);
const APP: &str = "https://app.example.test";

struct Fixture {
    server: AdminServer,
    port: u16,
    base: String,
    registry: Registry,
    http: reqwest::Client,
    /// Where the key minter points: a listener that counts connection attempts, so a test
    /// can see whether `/api/session` tried to mint.
    upstream: tokio::net::TcpListener,
}

async fn fixture(header_read_timeout: Duration) -> Fixture {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let minter = KeyMinter::new(
        reqwest::Client::new(),
        &format!("http://{}", upstream.local_addr().unwrap()),
        Secret::new("sk-test-attacks"),
        Duration::from_millis(500),
        600,
    );
    let registry = Registry::new();
    let state = AdminState {
        registry: registry.clone(),
        metrics: Metrics::shared(),
        store: None,
        minter: Some(minter),
        session: Default::default(),
        web: None,
        token: None,
        trunks: Default::default(),
        readiness: Arc::new(Readiness::ready),
        agents: Default::default(),
        default_agent: String::new(),
        cluster: None,
        dialer: None,
    };
    let options = AdminOptions {
        policy: AccessPolicy::new(&["admin.example.test".into()], &[APP.into()]).unwrap(),
        header_read_timeout,
    };
    let server = admin::start_with("127.0.0.1:0".parse().unwrap(), state, options)
        .await
        .unwrap();
    let port = server.local_addr().port();
    Fixture {
        server,
        port,
        base: format!("http://127.0.0.1:{port}"),
        registry,
        http: reqwest::Client::new(),
        upstream,
    }
}

impl Fixture {
    /// A request with these headers (a `host` among them replaces reqwest's).
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let mut hs = HeaderMap::new();
        for (k, v) in headers {
            hs.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .headers(hs)
            .timeout(WAIT);
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap())
    }

    /// No connection reached the minter's upstream so far. A handler that mints connects
    /// before it answers, so after an answer this is settled.
    fn nothing_minted(&self) -> bool {
        use futures::FutureExt;
        self.upstream.accept().now_or_never().is_none()
    }
}

/// Request headers as (name, value) pairs.
type Headers<'a> = &'a [(&'a str, &'a str)];

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

/// A live call whose task's control queue the test reads.
fn live_call(reg: &Registry, id: &str) -> (CallPublisher, mpsc::Receiver<Control>) {
    let (p, rx) = reg.register(CallDetail::new(
        id,
        "sip:+15551234567@127.0.0.1",
        "sip:+15550001111@127.0.0.1",
        "receptionist",
        None,
    ));
    p.answered();
    (p, rx)
}

#[tokio::test]
async fn a_foreign_host_is_refused_everywhere_and_mints_nothing() {
    let f = fixture(admin::HEADER_READ_TIMEOUT).await;
    let (_call, mut controls) = live_call(&f.registry, "c1");
    let json = ("content-type", "application/json");
    for host in ["evil.example", &format!("evil.example:{}", f.port)] {
        for (method, path, body) in [
            (Method::GET, "/api/calls", None),
            (Method::GET, "/api/calls/c1", None),
            (Method::GET, "/api/session", None),
            (Method::GET, "/api/bookings", None),
            (Method::GET, "/", None),
            (Method::GET, "/healthz", None),
            (Method::GET, "/metrics", None),
            (
                Method::POST,
                "/api/calls/c1/say",
                Some(r#"{"text":"hang up now"}"#),
            ),
            (Method::POST, "/api/calls/c1/hangup", Some("{}")),
        ] {
            let (s, _, b) = f
                .send(method.clone(), path, &[("host", host), json], body)
                .await;
            assert_eq!(s, 421, "{host} {method} {path}: {b}");
            assert_eq!(error_code(&b), "host_not_allowed", "{path}");
        }
    }
    assert!(f.nothing_minted(), "a refused /api/session tried to mint");
    assert!(
        controls.try_recv().is_err(),
        "a refused control reached the call"
    );

    // the same requests with a loopback Host, or the listed public host, are served
    for host in [
        format!("127.0.0.1:{}", f.port),
        format!("localhost:{}", f.port),
        "admin.example.test".to_string(),
        format!("ADMIN.example.test:{}", f.port),
    ] {
        let (s, _, b) = f
            .send(Method::GET, "/api/calls", &[("host", &host)], None)
            .await;
        assert_eq!(s, 200, "{host}: {b}");
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["calls"][0]["id"], "c1");
        let (s, _, _) = f
            .send(Method::GET, "/healthz", &[("host", &host)], None)
            .await;
        assert_eq!(s, 200, "{host}");
    }
    // and a served /api/session does try to mint (so the check above can see a mint)
    let (s, _, b) = f.send(Method::GET, "/api/session", &[], None).await;
    assert!(s == 502 || s == 504, "the upstream never answers: {s} {b}");
    assert!(!f.nothing_minted(), "the minter connected upstream");
    f.server.shutdown().await;
}

#[tokio::test]
async fn cross_origin_posts_are_refused_and_same_origin_json_is_served() {
    let f = fixture(admin::HEADER_READ_TIMEOUT).await;
    let (_call, mut controls) = live_call(&f.registry, "c1");
    let me = format!("http://127.0.0.1:{}", f.port);
    let say = r#"{"text":"Tell the caller the clinic is closed for good."}"#;
    let refused: [(Headers, u16, &str); 6] = [
        // the form/fetch a page can send without a preflight
        (
            &[
                ("content-type", "text/plain"),
                ("origin", "http://evil.example"),
            ],
            403,
            "origin_not_allowed",
        ),
        (
            &[
                ("content-type", "application/json"),
                ("origin", "http://evil.example"),
            ],
            403,
            "origin_not_allowed",
        ),
        (
            &[("content-type", "application/json"), ("origin", "null")],
            403,
            "origin_not_allowed",
        ),
        // a listed CORS origin may call /api/session, not the controls
        (
            &[("content-type", "application/json"), ("origin", APP)],
            403,
            "origin_not_allowed",
        ),
        (
            &[
                ("content-type", "application/json"),
                ("sec-fetch-site", "cross-site"),
            ],
            403,
            "origin_not_allowed",
        ),
        // no Origin (curl), but not JSON
        (
            &[("content-type", "text/plain")],
            415,
            "unsupported_media_type",
        ),
    ];
    for (headers, status, code) in refused {
        let (s, h, b) = f
            .send(Method::POST, "/api/calls/c1/say", headers, Some(say))
            .await;
        assert_eq!(s, status, "{headers:?}: {b}");
        assert_eq!(error_code(&b), code, "{headers:?}");
        assert!(h.get("access-control-allow-origin").is_none());
    }
    assert!(
        controls.try_recv().is_err(),
        "a refused request reached the call"
    );

    // the dashboard (same origin) and curl (no Origin) with JSON are served
    let dashboard: [(&str, &str); 3] = [
        ("content-type", "application/json"),
        ("origin", &me),
        ("sec-fetch-site", "same-origin"),
    ];
    for headers in [&dashboard[..], &dashboard[..1]] {
        let (s, _, b) = f
            .send(Method::POST, "/api/calls/c1/say", headers, Some(say))
            .await;
        assert_eq!(s, 202, "{headers:?}: {b}");
        let got = tokio::time::timeout(WAIT, controls.recv()).await.unwrap();
        assert!(matches!(got, Some(Control::Say(_))), "{got:?}");
    }

    // a cross-site GET of the API (an <img>, a no-cors fetch) is refused; the page is not
    let (s, _, b) = f
        .send(
            Method::GET,
            "/api/calls/c1",
            &[("sec-fetch-site", "cross-site")],
            None,
        )
        .await;
    assert_eq!((s, error_code(&b).as_str()), (403, "origin_not_allowed"));
    let (s, _, _) = f
        .send(Method::GET, "/", &[("sec-fetch-site", "cross-site")], None)
        .await;
    assert_eq!(s, 200);
    f.server.shutdown().await;
}

#[tokio::test]
async fn cors_is_answered_for_a_listed_origin_on_the_session_route_only() {
    let f = fixture(admin::HEADER_READ_TIMEOUT).await;
    let preflight = |origin: &'static str| {
        [
            ("origin", origin),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization"),
        ]
    };
    let (s, h, b) = f
        .send(Method::OPTIONS, "/api/session", &preflight(APP), None)
        .await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(h["access-control-allow-origin"], APP);
    assert_eq!(h["access-control-allow-methods"], "GET");
    assert!(h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    assert!(f.nothing_minted(), "a preflight never mints");

    for (path, origin) in [
        ("/api/session", "https://evil.example"),
        ("/api/session", "http://app.example.test"),
        ("/api/calls", APP),
    ] {
        let (s, h, b) = f
            .send(Method::OPTIONS, path, &preflight(origin), None)
            .await;
        assert_eq!(s, 403, "{path} {origin}: {b}");
        assert_eq!(error_code(&b), "origin_not_allowed");
        assert!(h.get("access-control-allow-origin").is_none());
    }

    // the real request from the listed app gets the header (here with the minter's error,
    // which the app can then read); from another origin it is refused without one
    let (s, h, b) = f
        .send(
            Method::GET,
            "/api/session",
            &[("origin", APP), ("sec-fetch-site", "cross-site")],
            None,
        )
        .await;
    assert!(s == 502 || s == 504, "{s} {b}");
    assert_eq!(h["access-control-allow-origin"], APP);
    assert!(h["vary"].to_str().unwrap().contains("origin"));
    let (s, h, b) = f
        .send(
            Method::GET,
            "/api/session",
            &[
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
            None,
        )
        .await;
    assert_eq!((s, error_code(&b).as_str()), (403, "origin_not_allowed"));
    assert!(h.get("access-control-allow-origin").is_none());
    f.server.shutdown().await;
}

/// Reads until the server closes the connection; the bytes it sent. Panics after `bound`.
async fn until_closed(s: &mut tokio::net::TcpStream, bound: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(bound, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closed the connection");
    got
}

#[tokio::test]
async fn half_sent_requests_and_idle_connections_are_closed() {
    let timeout = Duration::from_secs(1);
    let f = fixture(timeout).await;
    let addr = f.server.local_addr();
    // slowloris: half a request line, then nothing
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /api/ca").await.unwrap();
    // headers that never end
    let mut trickle = tokio::net::TcpStream::connect(addr).await.unwrap();
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: 1\r\n")
        .await
        .unwrap();
    // a keep-alive connection that goes quiet after one answer
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    // a connection that never sends a byte
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();

    let bound = timeout + WAIT;
    let (a, b, c, d) = tokio::join!(
        until_closed(&mut slow, bound),
        until_closed(&mut trickle, bound),
        until_closed(&mut idle, bound),
        until_closed(&mut silent, bound),
    );
    for (name, got) in [
        ("half request line", &a),
        ("trickled headers", &b),
        ("silent", &d),
    ] {
        let text = String::from_utf8_lossy(got);
        assert!(!text.contains(" 200 "), "{name}: {text}");
    }
    let text = String::from_utf8_lossy(&c);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");

    // the server still serves
    let (s, _, _) = f.send(Method::GET, "/healthz", &[], None).await;
    assert_eq!(s, 200);
    f.server.shutdown().await;
}

#[test]
fn a_tool_name_the_model_made_up_is_counted_as_other() {
    use support::agent::{agent_env, get_json, test_scenario};
    use support::{assert_sipp_ok, sipp, Relay};

    let env = agent_env(&test_scenario("unknown_tool.toml"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let relay = Relay::start(&env);
    let run = sipp(&relay, "silent_until_bye.xml", &["-m", "1"]);
    assert_sipp_ok(&run, 1, &relay);
    let end = relay.wait_calls_ended(1, Duration::from_secs(30)).remove(0);
    assert_eq!(end["reason"], "agent_end_call", "{}", relay.dump());
    // the call saw the made-up name (the model's call is recorded as it came)
    let calls = get_json(&format!("http://{}/api/calls?state=ended", relay.admin));
    let id = calls["calls"][0]["id"].as_str().unwrap().to_string();
    let call = get_json(&format!("http://{}/api/calls/{id}", relay.admin));
    let names: Vec<&str> = call["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"export_every_patient_record"), "{call:#}");
    // the metrics did not
    let metrics = get_text(&format!("http://{}/metrics", relay.admin));
    assert!(
        !metrics.contains("export_every_patient_record"),
        "{metrics}"
    );
    let other = metrics
        .lines()
        .find(|l| l.starts_with("voxrelay_tool_call_seconds_count{tool=\"other\""))
        .unwrap_or_else(|| panic!("no `other` tool series:\n{metrics}"));
    assert!(other.ends_with(" 1"), "{other}");
}

/// Blocking `GET` of a text answer on loopback (the relay tests are synchronous); the body
/// is small and the answer not chunked-sensitive for the line checks made on it.
fn get_text(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}
