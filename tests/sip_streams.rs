//! SIP over TCP and TLS under attack, against the real `voxrelay` binary on loopback: idle
//! connections and TLS handshakes that never finish are closed by their timeouts, connections
//! past the caps are refused, messages on a stream count against the source's budget, and a
//! trunk's quiet connection and its calls go on meanwhile.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use support::{assert_sipp_ok, msg, sipp_from, sipp_port, Relay};

const TRUNK_LOCAL: &str = r#"[{name = "main", addresses = ["127.0.0.1/32"]}]"#;

/// A self-signed certificate and key as PEM files.
struct TestCert {
    dir: tempfile::TempDir,
}

impl TestCert {
    fn new() -> TestCert {
        let k = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), k.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), k.signing_key.serialize_pem()).unwrap();
        TestCert { dir }
    }

    fn path(&self, name: &str) -> String {
        PathBuf::from(self.dir.path())
            .join(name)
            .display()
            .to_string()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A TCP connection to `to` from `ip` (another loopback address is another source).
async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(ip.parse().unwrap(), 0)).unwrap();
    s.connect(to).await.expect("connect")
}

/// An OPTIONS request over TCP; `n` makes it unique.
fn options(to: SocketAddr, local: SocketAddr, n: usize) -> String {
    format!(
        "OPTIONS sip:ping@{to} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-s{n}\r\n\
         From: <sip:t@{local}>;tag=t{n}\r\nTo: <sip:ping@{to}>\r\nCall-ID: s{n}-{p}@test\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        p = local.port()
    )
}

/// Sends one OPTIONS on `s` and returns the response's status line, or `None` when the
/// connection was closed (end of file or reset) before any answer.
async fn ask(s: &mut TcpStream, n: usize) -> Option<String> {
    let req = options(s.peer_addr().unwrap(), s.local_addr().unwrap(), n);
    if s.write_all(req.as_bytes()).await.is_err() {
        return None;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Bounds a read that never gets an answer; no test waits on this to pass.
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).into_owned();
                        return head.lines().next().map(str::to_string);
                    }
                }
            }
        }
    });
    read.await.expect("an answer or a close within 20 s")
}

/// Writes `first` (if any) and waits until the relay closes the connection (end of file or
/// reset), for `bound` at most: whether it did.
async fn closed_within(mut s: TcpStream, first: Option<&'static [u8]>, bound: Duration) -> bool {
    if let Some(bytes) = first {
        if s.write_all(bytes).await.is_err() {
            return true;
        }
    }
    let mut buf = [0u8; 1024];
    tokio::time::timeout(bound, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// The start of a request whose headers never end (a slow sender).
const PARTIAL_SIP: &[u8] =
    b"OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.3:5;bran";
/// A TLS record header announcing a 512-byte ClientHello, and only its first bytes.
const PARTIAL_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x11, 0x22, 0x33, 0x44,
];

#[test]
fn idle_connections_and_unfinished_tls_handshakes_are_closed_while_a_trunks_call_completes() {
    let cert = TestCert::new();
    let (cert_pem, key_pem) = (cert.path("cert.pem"), cert.path("key.pem"));
    let relay = Relay::start(&[
        ("VOXRELAY__TRUNKS", TRUNK_LOCAL),
        ("VOXRELAY__SIP__TLS_LISTEN", "127.0.0.1:0"),
        ("VOXRELAY__SIP__TLS_CERT", &cert_pem),
        ("VOXRELAY__SIP__TLS_KEY", &key_pem),
        ("VOXRELAY__SIP__STREAMS__IDLE_SECONDS", "2"),
        ("VOXRELAY__SIP__STREAMS__TLS_HANDSHAKE_SECONDS", "2"),
        ("VOXRELAY__SIP__STREAMS__MAX_PER_SOURCE", "5000"),
        ("VOXRELAY__SIP__STREAMS__MAX_TOTAL", "5000"),
        // Thousands of connections from one address: not the packet budget's test.
        ("VOXRELAY__SIP__LIMITS__PACKETS_PER_SECOND", "0"),
    ]);
    let (sip, tls) = (relay.sip, relay.tls.expect("a TLS address"));
    // Generous: closing takes the timeout (2 s) plus the time to notice.
    let bound = Duration::from_secs(60);
    let rt = runtime();
    let trunk_call;
    {
        // The trunk's connection, opened first and quiet throughout.
        let mut trunk = rt.block_on(connect_from("127.0.0.1", sip));
        let mut waits = Vec::new();
        for i in 0..2000 {
            let s = rt.block_on(connect_from("127.0.0.3", sip));
            let first = (i % 2 == 0).then_some(PARTIAL_SIP);
            waits.push(rt.spawn(closed_within(s, first, bound)));
        }
        for i in 0..500 {
            let s = rt.block_on(connect_from("127.0.0.3", tls));
            let first = (i % 2 == 0).then_some(PARTIAL_HELLO);
            waits.push(rt.spawn(closed_within(s, first, bound)));
        }
        // Meanwhile the trunk calls over TCP, with 4 s of audio and no SIP in between: longer
        // than the idle timeout.
        trunk_call = std::thread::spawn(move || {
            sipp_from(
                "127.0.0.1",
                &sip.to_string(),
                sipp_port(),
                "call_pcap.xml",
                &["-m", "1", "-d", "4000", "-t", "t1"],
            )
        });
        let closed = rt.block_on(futures::future::join_all(waits));
        let open = closed.iter().filter(|c| !matches!(c, Ok(true))).count();
        assert_eq!(
            open,
            0,
            "{open} of 2500 idle or half-open connections were not closed; logs:\n{}",
            relay.dump()
        );
        // The trunk's connection was quiet longer than any of them, and still serves.
        let status = rt.block_on(ask(&mut trunk, 1));
        assert_eq!(status.as_deref(), Some("SIP/2.0 200 OK"));
    }
    let run = trunk_call.join().unwrap();
    assert_sipp_ok(&run, 1, &relay);
    let started = relay.wait_for(|v| msg(v) == "call started", Duration::from_secs(5));
    assert_eq!(started["transport"], "tcp");
    assert_eq!(started["trunk"], "main");
}

#[test]
fn connections_past_the_caps_are_refused() {
    let relay = Relay::start(&[
        ("VOXRELAY__SIP__STREAMS__MAX_PER_SOURCE", "5"),
        ("VOXRELAY__SIP__STREAMS__MAX_TOTAL", "8"),
    ]);
    let sip = relay.sip;
    let rt = runtime();
    rt.block_on(async {
        let mut held = Vec::new();
        for i in 0..5 {
            let mut s = connect_from("127.0.0.3", sip).await;
            assert_eq!(ask(&mut s, i).await.as_deref(), Some("SIP/2.0 200 OK"));
            held.push(s);
        }
        // The source's sixth: closed unanswered.
        let mut s = connect_from("127.0.0.3", sip).await;
        assert_eq!(ask(&mut s, 6).await, None, "over the per-source cap");
        // Other sources until the total.
        for i in 0..3 {
            let mut s = connect_from("127.0.0.4", sip).await;
            assert_eq!(ask(&mut s, 10 + i).await.as_deref(), Some("SIP/2.0 200 OK"));
            held.push(s);
        }
        let mut s = connect_from("127.0.0.5", sip).await;
        assert_eq!(ask(&mut s, 20).await, None, "over the total cap");
        // A closed connection frees its place (once the relay has seen it close).
        drop(held.remove(0));
        let mut admitted = false;
        for i in 0..100 {
            let mut s = connect_from("127.0.0.5", sip).await;
            if ask(&mut s, 30 + i).await.is_some() {
                admitted = true;
                break;
            }
        }
        assert!(
            admitted,
            "a place freed by a closed connection is taken again"
        );
        // Datagrams are not connections: UDP still answers the capped source.
    });
    assert_eq!(
        support::sipp_from(
            "127.0.0.3",
            &sip.to_string(),
            sipp_port(),
            "options.xml",
            &["-m", "1"]
        )
        .successful,
        1
    );
}

#[test]
fn a_tcp_flood_of_options_is_held_to_the_sources_packet_budget() {
    // OPTIONS themselves unlimited: only the budget every datagram and stream message pays.
    let relay = Relay::start(&[
        ("VOXRELAY__SIP__LIMITS__PACKETS_PER_SECOND", "20"),
        ("VOXRELAY__SIP__LIMITS__OPTIONS_PER_SECOND", "0"),
    ]);
    let sip = relay.sip;
    let rt = runtime();
    let (answered, other) = rt.block_on(async {
        let mut s = connect_from("127.0.0.3", sip).await;
        let local = s.local_addr().unwrap();
        let flood: String = (0..400).map(|n| options(sip, local, n)).collect();
        s.write_all(flood.as_bytes()).await.unwrap();
        // Count the answers until none has come for 2 s (a bounded wait for "no more").
        let mut text = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
        }
        let answered = String::from_utf8_lossy(&text)
            .matches("SIP/2.0 200 OK")
            .count();
        // Another source's budget is its own.
        let mut o = connect_from("127.0.0.4", sip).await;
        (answered, ask(&mut o, 1000).await)
    });
    // A burst of 40 plus 20 a second while the flood is read: far fewer than 400.
    assert!(answered > 0, "the first ones are answered");
    assert!(
        answered < 200,
        "{answered} of 400 OPTIONS on one connection were answered"
    );
    assert_eq!(other.as_deref(), Some("SIP/2.0 200 OK"));
}
