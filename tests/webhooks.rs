//! Each call's `call.ended` event, end to end: SIPp books an appointment through the relay
//! binary (its in-process simulator plays the model and writes the summary through its
//! Responses API), and a receiver on loopback (a plain HTTP/1.1 server, as a clinic's system
//! would run) gets the event signed, once, with the summary and the booking; also after an
//! outage (refused connections, then a 503), and after the relay that wrote it was killed:
//! by its restart, or in a cluster on PostgreSQL by another relay.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::agent::{agent_env, get_json, scenario_with_speech};
use support::{assert_sipp_ok, msg, sipp, Relay};
use voxrelay::secret::Secret;
use voxrelay::webhooks::signature;

const SECRET: &str = "whsec-test-5f0c2a9e8d7b6a41";

/// One request the receiver got.
#[derive(Debug)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The status it answered.
    answered: u16,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver on `addr`: answers the statuses of `script` in turn, then 200 to every
/// later request; each request goes to the returned channel. It stops by itself after 120 s.
fn receiver(addr: SocketAddr, script: Vec<u16>) -> mpsc::Receiver<Received> {
    let listener = TcpListener::bind(addr).expect("the receiver's port is free");
    listener.set_nonblocking(true).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut script = script.into_iter();
        while Instant::now() < deadline {
            let (stream, _) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // nothing waiting: poll again shortly (the loop ends at the deadline)
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(_) => return,
            };
            let status = script.next().unwrap_or(200);
            if let Some(r) = serve_one(stream, status) {
                if tx.send(r).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Reads one request from `s` and answers `status` with `Connection: close`.
fn serve_one(mut s: TcpStream, status: u16) -> Option<Received> {
    s.set_nonblocking(false).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let reason = if status == 200 { "OK" } else { "Unavailable" };
    write!(
        s,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    Some(Received {
        headers,
        body: buf[head_end..head_end + len].to_vec(),
        answered: status,
    })
}

/// A loopback port nobody listens on (bound, then let go).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A relay with the booking agent and one webhook to `hook` (retries from 200 ms, at most
/// 1 s apart), on the database `db` (its own when `None`).
fn start(hook: SocketAddr, db: Option<&str>) -> Relay {
    start_with(hook, db, &[])
}

/// As [`start`], with more settings.
fn start_with(hook: SocketAddr, db: Option<&str>, more: &[(&str, &str)]) -> Relay {
    let env = agent_env("booking");
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let hooks = format!(
        r#"[{{url = "http://{hook}/voxrelay", secret_env = "CLINIC_HOOK_SECRET", retry_first_ms = 200, retry_max_ms = 1000}}]"#
    );
    all.push(("VOXRELAY__WEBHOOKS", &hooks));
    all.push(("CLINIC_HOOK_SECRET", SECRET));
    if let Some(db) = db {
        all.push(("VOXRELAY__BOOKING__DATABASE_URL", db));
    }
    all.extend_from_slice(more);
    Relay::start(&all)
}

/// One booking call; returns the call's id.
fn booking_call(relay: &Relay) -> String {
    let dir = tempfile::tempdir().unwrap();
    let sc = scenario_with_speech(dir.path(), "agent_booking.xml", 1500);
    let run = sipp(relay, sc.to_str().unwrap(), &["-m", "1"]);
    assert_sipp_ok(&run, 1, relay);
    let end = relay.wait_calls_ended(1, Duration::from_secs(30)).remove(0);
    assert_eq!(end["reason"], "agent_end_call", "{}", relay.dump());
    end["span"]["id"].as_str().unwrap().to_string()
}

fn next(rx: &mpsc::Receiver<Received>, relay: &Relay) -> Received {
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no webhook request\n{}", relay.dump()))
}

/// What every delivery of a booking call's event must be: signed with the secret over this
/// very body, the event and the delivery named, the call, its summary and its booking.
fn check_event(r: &Received, call_id: &str) -> Value {
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("voxrelay-event"), Some("call.ended"));
    assert!(r.header("voxrelay-delivery").unwrap().starts_with("dlv_"));
    let sig = r.header(signature::HEADER).expect("signed");
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        signature::verify(&[Secret::new(SECRET)], sig, &r.body, now, 300),
        Ok(())
    );
    // another secret, or a body changed by one byte, does not verify
    let wrong = Secret::new("whsec-someone-else-0000000");
    assert!(signature::verify(&[wrong], sig, &r.body, now, 300).is_err());
    let mut tampered = r.body.clone();
    tampered[0] = b' ';
    assert!(signature::verify(&[Secret::new(SECRET)], sig, &tampered, now, 300).is_err());

    let v = r.json();
    assert_eq!(v["type"], "call.ended", "{v:#}");
    assert_eq!(v["call"]["id"], call_id, "{v:#}");
    assert_eq!(v["call"]["outcome"], "agent_end_call", "{v:#}");
    assert_eq!(v["call"]["agent"], "receptionist", "{v:#}");
    let changes = v["booking_changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{v:#}");
    assert_eq!(changes[0]["change"], "booked");
    let code = changes[0]["booking_id"].as_str().unwrap();
    assert_eq!(code.len(), 6, "{v:#}");
    // the summary came through the (simulated) Responses API, and names the booking
    let summary = v["summary"].as_str().unwrap_or_else(|| panic!("{v:#}"));
    assert!(summary.contains(&format!("booked {code}")), "{summary}");
    assert_eq!(v["summary_error"], Value::Null);
    assert!(v["transcript"].as_array().unwrap().len() >= 2, "{v:#}");
    v
}

fn deliveries(relay: &Relay) -> Vec<Value> {
    let v = get_json(&format!("http://{}/api/webhooks/deliveries", relay.admin));
    v["deliveries"].as_array().unwrap().clone()
}

#[test]
fn a_booking_calls_event_reaches_the_receiver_once_signed_with_its_summary_and_booking() {
    let hook = free_port();
    let rx = receiver(hook, vec![]);
    let relay = start(hook, None);
    let call = booking_call(&relay);
    let r = next(&rx, &relay);
    check_event(&r, &call);
    let done = relay.wait_for(|v| msg(v) == "webhook delivered", Duration::from_secs(10));
    assert_eq!(done["attempts"], 1, "{done}");
    let log = deliveries(&relay);
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0]["status"], "delivered");
    assert_eq!(log[0]["attempts"], 1);
    assert_eq!(log[0]["last_status"], 200);
    assert_eq!(log[0]["call_id"], call.as_str());
    assert_eq!(log[0]["id"], r.header("voxrelay-delivery").unwrap());
    // delivered is final: nothing else came
    assert!(rx.try_recv().is_err());
    // the secret is in no log line and no API answer
    assert!(!relay.dump().contains(SECRET));
    assert!(!serde_json::to_string(&log).unwrap().contains(SECRET));
}

#[test]
fn after_a_receiver_outage_the_event_arrives_once_with_the_same_delivery_id() {
    let hook = free_port();
    let relay = start(hook, None);
    let call = booking_call(&relay);
    // the receiver is down: the first two attempts find nobody listening
    relay.wait_for(
        |v| {
            msg(v) == "webhook delivery failed; it will be retried"
                && v["error"] == "could not connect"
                && v["attempts"] == 2
        },
        Duration::from_secs(30),
    );
    // it comes back answering 503 once, then 200
    let rx = receiver(hook, vec![503]);
    let first = next(&rx, &relay);
    assert_eq!(first.answered, 503);
    let second = next(&rx, &relay);
    assert_eq!(second.answered, 200);
    check_event(&second, &call);
    // the same delivery, the same body: a receiver that took the first would drop the second
    assert_eq!(
        first.header("voxrelay-delivery"),
        second.header("voxrelay-delivery")
    );
    assert_eq!(first.body, second.body);
    let done = relay.wait_for(|v| msg(v) == "webhook delivered", Duration::from_secs(10));
    let attempts = done["attempts"].as_u64().unwrap();
    // every attempt before the last failed, and said so: refused ones, then the 503
    let failed: Vec<Value> = relay
        .logs()
        .into_iter()
        .filter(|v| msg(v) == "webhook delivery failed; it will be retried")
        .collect();
    assert_eq!(attempts as usize, failed.len() + 1, "{}", relay.dump());
    assert!(failed.len() >= 3, "{}", relay.dump());
    assert_eq!(
        failed.last().unwrap()["error"],
        "the receiver answered 503",
        "{}",
        relay.dump()
    );
    let log = deliveries(&relay);
    assert_eq!(log[0]["status"], "delivered", "{log:#?}");
    assert_eq!(log[0]["attempts"], attempts);
    assert!(rx.try_recv().is_err());
}

#[test]
fn an_event_the_killed_relay_could_not_deliver_is_delivered_by_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("shared.db").display());
    let hook = free_port();
    let mut first = start(hook, Some(&db));
    let call = booking_call(&first);
    first.wait_for(
        |v| msg(v) == "webhook delivery failed; it will be retried",
        Duration::from_secs(30),
    );
    first.kill();
    // killed by a signal: no exit code
    assert_eq!(first.wait_exit(Duration::from_secs(10)), None);
    // the receiver is back, and so is the relay (on the same database)
    let rx = receiver(hook, vec![]);
    let again = start(hook, Some(&db));
    let r = next(&rx, &again);
    check_event(&r, &call);
    let log = deliveries(&again);
    assert_eq!(log.len(), 1, "{log:#?}");
    again.wait_for(|v| msg(v) == "webhook delivered", Duration::from_secs(10));
    let log = deliveries(&again);
    assert_eq!(log[0]["status"], "delivered", "{log:#?}");
}

/// Two relays of a cluster on one PostgreSQL database: relay B's event is pending (its
/// receiver down) when B is killed; once B has missed three heartbeats, relay A takes the
/// delivery over and sends it, once.
#[test]
fn in_a_cluster_the_event_of_a_killed_relay_is_sent_by_another() {
    let pg = support::postgres::shared();
    let url = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(pg.create_database());
    let hook = free_port();
    let cluster = |node: &'static str| {
        [
            ("VOXRELAY__CLUSTER__NODE_ID", node),
            (
                "VOXRELAY__CLUSTER__SECRET",
                "a-cluster-secret-of-at-least-32-characters",
            ),
            ("VOXRELAY__CLUSTER__HEARTBEAT_SECONDS", "1"),
        ]
    };
    let a = start_with(hook, Some(&url), &cluster("relay-a"));
    let mut b = start_with(hook, Some(&url), &cluster("relay-b"));
    let call = booking_call(&b);
    b.wait_for(
        |v| msg(v) == "webhook delivery failed; it will be retried",
        Duration::from_secs(30),
    );
    b.kill();
    assert_eq!(b.wait_exit(Duration::from_secs(10)), None);
    let rx = receiver(hook, vec![]);
    let r = next(&rx, &a);
    check_event(&r, &call);
    let took = a.wait_for(
        |v| msg(v) == "took over the webhook deliveries of a relay that is gone",
        Duration::from_secs(10),
    );
    assert_eq!(took["deliveries"], 1, "{took}");
    a.wait_for(|v| msg(v) == "webhook delivered", Duration::from_secs(10));
    let log = deliveries(&a);
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0]["status"], "delivered", "{log:#?}");
    assert!(rx.try_recv().is_err(), "sent once");
}
