//! SIP attacks against the real binary: a forged Via `received`, calls from unlisted
//! sources, replayed and misdirected digest credentials, a public listen with nobody listed,
//! a flood of calls kept ringing, and two calls sharing one Call-ID. What an attacker must
//! never get is a realtime session: the in-process simulator counts the keys minted and the
//! sessions opened.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use serde_json::Value;
use support::agent::{agent_env, get_json, sim_url};
use support::uac::{Msg, Uac};
use support::{msg, relay_binary, Relay};

/// One trunk, at an address the tests' strangers do not have.
const TRUNK_2: &str = r#"[{name = "main", addresses = ["127.0.0.2/32"]}]"#;

/// A relay whose calls go to the receptionist on the in-process simulator.
fn agent_relay(scenario: &str, extra: &[(&str, &str)]) -> Relay {
    let env = agent_env(scenario);
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // no keys minted ahead of calls: every key the simulator counts is one a call asked for
    // (tests/openai_key_pool.rs checks that an attack takes none from the pool either)
    all.push(("VOXRELAY__OPENAI__KEY_POOL", "0"));
    all.extend_from_slice(extra);
    Relay::start(&all)
}

/// The simulator's counts: (keys minted, sessions opened).
fn sim_counts(relay: &Relay) -> (u64, usize) {
    let v = get_json(&format!("{}/sim/sessions", sim_url(relay)));
    let sessions = v["data"].as_array().map_or(0, |a| a.len());
    (v["keys_minted"].as_u64().expect("keys_minted"), sessions)
}

/// A SIP socket for hand-made requests.
struct Raw {
    sock: UdpSocket,
    relay: SocketAddr,
    rtp: UdpSocket,
}

impl Raw {
    fn bind(ip: &str, relay: SocketAddr) -> Raw {
        Raw {
            sock: UdpSocket::bind((ip, 0)).unwrap(),
            relay,
            rtp: UdpSocket::bind("127.0.0.1:0").unwrap(),
        }
    }

    fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn ruri(&self) -> String {
        format!("sip:reception@{}", self.relay)
    }

    /// An INVITE with a PCMU offer; `via` is the whole top Via value, `extra` more headers.
    fn invite(&self, call_id: &str, tag: &str, cseq: u32, via: &str, extra: &str) -> String {
        let l = self.local();
        let body = format!(
            "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
            self.rtp.local_addr().unwrap().port()
        );
        format!(
            "INVITE {ruri} SIP/2.0\r\nVia: {via}\r\nFrom: <sip:caller@{l}>;tag={tag}\r\n\
             To: <sip:reception@{r}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\n\
             Contact: <sip:caller@{l}>\r\nMax-Forwards: 70\r\n{extra}\
             Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{body}",
            ruri = self.ruri(),
            r = self.relay,
            len = body.len(),
        )
    }

    fn via(&self, branch: &str) -> String {
        format!("SIP/2.0/UDP {};branch=z9hG4bK-{branch};rport", self.local())
    }

    fn send(&self, text: &str) {
        self.sock.send_to(text.as_bytes(), self.relay).unwrap();
    }

    /// The next final response within `timeout` (provisionals skipped).
    fn final_response(&self, timeout: Duration) -> Option<Msg> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            let (n, _) = self.sock.recv_from(&mut buf).ok()?;
            if let Some(m) = Msg::parse(&buf[..n]) {
                if m.status() >= 200 {
                    return Some(m);
                }
            }
        }
    }

    /// ACK for a final response to the INVITE sent with `via`.
    fn ack(&self, resp: &Msg, via: &str) {
        let cseq = resp.header("cseq").unwrap_or("1 INVITE");
        let n = cseq.split_whitespace().next().unwrap_or("1");
        let text = format!(
            "ACK {ruri} SIP/2.0\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\n\
             CSeq: {n} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            ruri = self.ruri(),
            from = resp.header("from").unwrap(),
            to = resp.header("to").unwrap(),
            cid = resp.header("call-id").unwrap(),
        );
        self.send(&text);
    }

    /// BYE in the dialog the 200 OK `resp` established; returns the final response.
    fn bye(&self, resp: &Msg, branch: &str) -> Msg {
        let cseq: u32 = resp
            .header("cseq")
            .and_then(|c| c.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let text = format!(
            "BYE {ruri} SIP/2.0\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\n\
             CSeq: {n} BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            ruri = self.ruri(),
            via = self.via(branch),
            from = resp.header("from").unwrap(),
            to = resp.header("to").unwrap(),
            cid = resp.header("call-id").unwrap(),
            n = cseq + 1,
        );
        self.send(&text);
        self.final_response(Duration::from_secs(5))
            .expect("an answer to BYE")
    }
}

/// A call from the trunk's own address reaches the agent: the proof that the counts the
/// attack tests expect to stay at zero do move for a caller who is allowed.
fn trunk_call_reaches_the_agent(relay: &Relay) {
    let mut trunk = Uac::new_from("127.0.0.2", relay.sip);
    let answer = trunk.invite();
    assert_eq!(answer.status(), 200, "{answer:?}\n{}", relay.dump());
    trunk.ack();
    assert_eq!(trunk.bye().status(), 200);
    let (minted, sessions) = sim_counts(relay);
    assert_eq!(
        (minted, sessions),
        (1, 1),
        "the trunk's call opened one session"
    );
}

#[test]
fn a_forged_via_received_does_not_make_a_stranger_the_trunk() {
    let relay = agent_relay("echo", &[("VOXRELAY__TRUNKS", TRUNK_2)]);
    // Sent from 127.0.0.1, claiming in its Via to have been received from the trunk.
    let stranger = Raw::bind("127.0.0.1", relay.sip);
    let via = format!(
        "SIP/2.0/UDP {};branch=z9hG4bK-spoof;received=127.0.0.2;rport",
        stranger.local()
    );
    stranger.send(&stranger.invite("spoof-1", "s1", 1, &via, ""));
    let resp = stranger
        .final_response(Duration::from_secs(5))
        .expect("the answer goes to the real source, not to the forged received");
    assert_eq!(resp.status(), 403, "{resp:?}");
    stranger.ack(&resp, &via);
    let refused = relay.wait_for(
        |v| msg(v) == "request refused: not from a trunk",
        Duration::from_secs(5),
    );
    let source = refused["source"].as_str().unwrap_or_default();
    assert_eq!(source, stranger.local().to_string(), "{refused}");
    assert_eq!(
        sim_counts(&relay),
        (0, 0),
        "no key minted, no session opened"
    );
    trunk_call_reaches_the_agent(&relay);
}

#[test]
fn an_unlisted_source_never_reaches_the_simulator() {
    let relay = agent_relay("echo", &[("VOXRELAY__TRUNKS", TRUNK_2)]);
    for _ in 0..3 {
        let mut stranger = Uac::new_from("127.0.0.3", relay.sip);
        assert_eq!(stranger.invite().status(), 403);
        stranger.ack();
    }
    // Over TCP too: the connection's peer address decides, whatever the Via says.
    {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(relay.sip).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let local = tcp.local_addr().unwrap();
        let raw = Raw::bind("127.0.0.1", relay.sip);
        let via = "SIP/2.0/TCP 127.0.0.2:5060;branch=z9hG4bK-tcp1;received=127.0.0.2";
        let text = raw
            .invite("tcp-spoof", "t1", 1, via, "")
            .replace(&raw.local().to_string(), &local.to_string());
        tcp.write_all(text.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("SIP/2.0 403") {
            let n = tcp.read(&mut buf).expect("an answer over TCP");
            assert!(
                n > 0,
                "closed without an answer: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    }
    assert_eq!(
        sim_counts(&relay),
        (0, 0),
        "no key minted, no session opened"
    );
    let started = relay
        .logs()
        .iter()
        .filter(|v| msg(v) == "call started")
        .count();
    assert_eq!(started, 0);
    trunk_call_reaches_the_agent(&relay);
}

/// The digest response a client computes (RFC 2617 3.2.2, qop=auth).
fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    h.update(parts.join(":").as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn authorization(challenge: &str, uri: &str, nc: u32) -> String {
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a nonce");
    let nc = format!("{nc:08x}");
    let ha1 = md5_hex(&["trunkuser", "voxrelay", "pa55-w0rd"]);
    let ha2 = md5_hex(&["INVITE", uri]);
    let resp = md5_hex(&[&ha1, nonce, &nc, "c0ffee", "auth", &ha2]);
    format!(
        "Authorization: Digest username=\"trunkuser\", realm=\"voxrelay\", nonce=\"{nonce}\", \
         uri=\"{uri}\", response=\"{resp}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"c0ffee\"\r\n"
    )
}

#[test]
fn a_replayed_or_misdirected_digest_is_refused_and_a_fresh_one_works() {
    let trunk = r#"[{name = "auth", addresses = ["127.0.0.1/32"], username = "trunkuser", password_env = "TEST_TRUNK_PW", inbound_auth = true}]"#;
    let relay = Relay::start(&[("VOXRELAY__TRUNKS", trunk), ("TEST_TRUNK_PW", "pa55-w0rd")]);
    let c = Raw::bind("127.0.0.1", relay.sip);
    let uri = c.ruri();
    // Challenged, then answered with the right credentials.
    let via = c.via("a1");
    c.send(&c.invite("dg-1", "d1", 1, &via, ""));
    let challenge = c.final_response(Duration::from_secs(5)).unwrap();
    assert_eq!(challenge.status(), 401);
    c.ack(&challenge, &via);
    let www = challenge.header("www-authenticate").unwrap().to_string();
    let auth = authorization(&www, &uri, 1);
    let via = c.via("a2");
    c.send(&c.invite("dg-1", "d1", 2, &via, &auth));
    let ok = c.final_response(Duration::from_secs(5)).unwrap();
    assert_eq!(ok.status(), 200, "{ok:?}\n{}", relay.dump());
    c.ack(&ok, &via);
    assert_eq!(c.bye(&ok, "a3").status(), 200);

    // The same Authorization header in another call: a replay, refused.
    let via = c.via("r1");
    c.send(&c.invite("dg-2", "d2", 1, &via, &auth));
    let replay = c.final_response(Duration::from_secs(5)).unwrap();
    assert_eq!(replay.status(), 401, "{replay:?}");
    c.ack(&replay, &via);
    relay.wait_for(
        |v| msg(v) == "INVITE challenged" && v["reason"] == "replayed nonce count",
        Duration::from_secs(5),
    );

    // Credentials computed for another Request-URI: refused.
    let www = replay.header("www-authenticate").unwrap().to_string();
    let elsewhere = authorization(&www, "sip:billing@192.0.2.1", 1);
    let via = c.via("u1");
    c.send(&c.invite("dg-3", "d3", 1, &via, &elsewhere));
    let wrong_uri = c.final_response(Duration::from_secs(5)).unwrap();
    assert_eq!(wrong_uri.status(), 401);
    c.ack(&wrong_uri, &via);
    relay.wait_for(
        |v| msg(v) == "INVITE challenged" && v["reason"] == "digest uri is not the Request-URI",
        Duration::from_secs(5),
    );

    // A fresh answer to the latest challenge works.
    let www = wrong_uri.header("www-authenticate").unwrap().to_string();
    let fresh = authorization(&www, &uri, 1);
    let via = c.via("f1");
    c.send(&c.invite("dg-4", "d4", 1, &via, &fresh));
    let ok = c.final_response(Duration::from_secs(5)).unwrap();
    assert_eq!(ok.status(), 200, "{ok:?}\n{}", relay.dump());
    c.ack(&ok, &via);
    assert_eq!(c.bye(&ok, "f2").status(), 200);
    let started = relay
        .logs()
        .iter()
        .filter(|v| msg(v) == "call started")
        .count();
    assert_eq!(started, 2, "only the two honest INVITEs became calls");
}

/// Runs the binary with a cleared environment plus `env`; (exit code, stderr).
fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(relay_binary());
    cmd.args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("VOXRELAY__AGENTS__DEFAULT", "echo")
        .env("VOXRELAY__ADMIN__LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // A refused config exits at once, and so does check-config; a relay that started
    // instead is killed after 20 s, and the test fails on its exit code.
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(out)) => (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        _ => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            (0, "still running after 20 s".into())
        }
    }
}

#[test]
fn a_public_listen_with_nobody_listed_refuses_to_start() {
    let public = [
        ("VOXRELAY__SIP__LISTEN", "0.0.0.0:0"),
        ("VOXRELAY__SIP__EXTERNAL_IP", "127.0.0.1"),
    ];
    for cmd in ["check-config", "serve"] {
        let (code, err) = run_binary(&[cmd], &public);
        assert_ne!(code, 0, "{cmd}: {err}");
        assert!(err.contains("sip.allow_any_source"), "{cmd}: {err}");
    }
    let mut open = public.to_vec();
    open.push(("VOXRELAY__SIP__ALLOW_ANY_SOURCE", "true"));
    let (code, err) = run_binary(&["check-config"], &open);
    assert_eq!(code, 0, "{err}");
    // And serve starts with it set (the echo agent; stopped at once).
    let relay = Relay::start(&open);
    let mut uac = Uac::new(SocketAddr::from(([127, 0, 0, 1], relay.sip.port())));
    let options = uac.request("OPTIONS", "");
    uac.send_raw(options.as_bytes());
    assert_eq!(
        uac.recv(Duration::from_secs(5))
            .expect("an answer")
            .status(),
        200
    );
}

#[test]
fn calls_kept_ringing_are_capped_per_source_while_another_source_gets_through() {
    // Realtime sessions that take 5 s to open keep each call in setup that long.
    let slow = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/scenarios/fault-calls-slow.toml")
        .display()
        .to_string();
    let relay = agent_relay(&slow, &[("VOXRELAY__SIP__MAX_SETUP_CALLS_PER_SOURCE", "2")]);
    let flooders: Vec<Uac> = (0..2)
        .map(|_| {
            let mut u = Uac::new_from("127.0.0.3", relay.sip);
            let offer = u.offer();
            let invite = u.request("INVITE", &offer);
            u.send_raw(invite.as_bytes());
            u
        })
        .collect();
    // Both are ringing: each has started (its Call-ID ends with its SIP port).
    for u in &flooders {
        let port = format!("-{}", u.sip.local_addr().unwrap().port());
        relay.wait_for(
            |v| {
                msg(v) == "call started"
                    && v["sip_call_id"]
                        .as_str()
                        .is_some_and(|c| c.ends_with(&port))
            },
            Duration::from_secs(10),
        );
    }
    // A third ringing call from the same source: refused at once, told when to retry.
    let mut third = Uac::new_from("127.0.0.3", relay.sip);
    let refused = third.invite();
    assert_eq!(refused.status(), 503, "{refused:?}");
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
    relay.wait_for(
        |v| {
            msg(v) == "call refused: too many calls being set up"
                && v["cap"] == "sip.max_setup_calls_per_source"
        },
        Duration::from_secs(5),
    );
    // Another source's call is set up and answered meanwhile.
    let mut other = Uac::new(relay.sip);
    let answered = other.invite();
    assert_eq!(answered.status(), 200, "{answered:?}\n{}", relay.dump());
    other.ack();
    assert_eq!(other.bye().status(), 200);
    drop(flooders);
}

#[test]
fn two_calls_with_one_call_id_live_side_by_side() {
    let relay = Relay::start(&[]);
    let a = Raw::bind("127.0.0.1", relay.sip);
    let b = Raw::bind("127.0.0.1", relay.sip);
    let mut answers = Vec::new();
    for (c, tag) in [(&a, "tag-a"), (&b, "tag-b")] {
        let via = c.via(tag);
        c.send(&c.invite("same-call-id@example", tag, 1, &via, ""));
        let ok = c.final_response(Duration::from_secs(5)).unwrap();
        assert_eq!(ok.status(), 200, "{ok:?}");
        c.ack(&ok, &via);
        answers.push(ok);
    }
    // Both were answered, so both are listed (a call is listed before it is answered).
    let url = format!("http://{}/api/calls", relay.admin);
    let calls: Vec<Value> = get_json(&url)["calls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    for c in &calls {
        let id = c["id"].as_str().unwrap();
        assert_ne!(id, "same-call-id@example");
        let detail = get_json(&format!("{url}/{id}"));
        assert_eq!(detail["sip_call_id"], "same-call-id@example", "{detail}");
    }
    // Each hangs up its own call.
    assert_eq!(a.bye(&answers[0], "bye-a").status(), 200);
    assert_eq!(b.bye(&answers[1], "bye-b").status(), 200);
    let ended = relay.wait_calls_ended(2, Duration::from_secs(5));
    assert_eq!(ended.len(), 2);
}

#[test]
fn a_flood_inside_a_dialog_is_limited_and_the_call_survives() {
    // Only the in-dialog limit is under test: the per-packet one is lifted (it would drop
    // the BYE retries below unparsed).
    let relay = Relay::start(&[
        ("VOXRELAY__SIP__LIMITS__IN_DIALOG_PER_SECOND", "5"),
        ("VOXRELAY__SIP__LIMITS__PACKETS_PER_SECOND", "0"),
    ]);
    let c = Raw::bind("127.0.0.1", relay.sip);
    let via = c.via("call");
    c.send(&c.invite("flood-in-dialog", "fl", 1, &via, ""));
    let ok = c.final_response(Duration::from_secs(5)).unwrap();
    assert_eq!(ok.status(), 200, "{ok:?}");
    c.ack(&ok, &via);
    // A request that overtakes the ACK is not for a confirmed dialog yet.
    relay.wait_for(|v| msg(v) == "call acked", Duration::from_secs(5));
    // 100 INFOs in the dialog, each sent as soon as the previous one is answered (in order:
    // the stack drops a request whose CSeq is older than one it has seen).
    let in_dialog = |method: &str, cseq: u32, branch: &str| {
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\n\
             CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            ruri = c.ruri(),
            via = c.via(branch),
            from = ok.header("from").unwrap(),
            to = ok.header("to").unwrap(),
            cid = ok.header("call-id").unwrap(),
        )
    };
    let mut codes = Vec::new();
    for i in 0..100u32 {
        c.send(&in_dialog("INFO", 10 + i, &format!("info-{i}")));
        match c.final_response(Duration::from_secs(5)) {
            Some(m) => codes.push(m.status()),
            None => break,
        }
    }
    let limited = codes.iter().filter(|c| **c == 503).count();
    let served = codes.iter().filter(|c| **c == 200).count();
    assert_eq!(
        codes.len(),
        100,
        "every request is answered: {codes:?}\n{}",
        relay.dump()
    );
    assert!(limited >= 50, "most of the flood is refused: {codes:?}");
    assert!(served >= 5, "the burst is served: {codes:?}");
    // The call is still up: once the budget refills, BYE ends it (bounded retries, each
    // waiting for its answer).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut cseq = 1000;
    loop {
        cseq += 1;
        c.send(&in_dialog("BYE", cseq, &format!("bye-{cseq}")));
        let m = c
            .final_response(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("an answer to BYE {cseq}\n{}", relay.dump()));
        if m.status() == 200 {
            break;
        }
        assert_eq!(m.status(), 503, "{m:?}");
        assert!(Instant::now() < deadline, "BYE never got through");
    }
    let ended = relay.wait_calls_ended(1, Duration::from_secs(5));
    assert_eq!(ended[0]["reason"], "caller_bye", "{}", relay.dump());
}
