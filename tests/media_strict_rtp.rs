//! Strict RTP against the real `voxrelay` binary on loopback: a stranger on another loopback
//! address sprays the relay's (small, sequential) RTP port range with a well-formed stream
//! before, during and after the answer, as an attacker guessing the call's port would; the
//! relay never takes it, and the caller's audio flows both ways (the echo agent plays it back).

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::uac::Uac;
use support::{msg, Relay};

/// The stranger's payload byte: never one the caller sends.
const STRANGE: u8 = 0x99;

/// A loop on a thread of its own, one round after another until stopped or for `limit` at
/// most; stopped and joined when dropped.
struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    fn run(limit: Duration, mut round: impl FnMut() + Send + 'static) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
                    round();
                }
            })
        };
        Background {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One RTP packet of the stranger's stream: well-formed, with the stranger's payload.
fn strange_packet(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[STRANGE; 160]);
    p
}

/// A stranger spraying RTP and RTCP at every port of `ports` from `ip` until stopped (or for
/// 60 s at most): per port one SSRC with consecutive sequence numbers, the stream a relay
/// that learns sources would take. Counts what the relay sends it.
struct Sprayer {
    received: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    thread: Background,
}

impl Sprayer {
    fn start(ip: &str, ports: [u16; 2]) -> Sprayer {
        let sock = UdpSocket::bind((ip, 0)).expect("another loopback address binds");
        // Paces the rounds: waiting for what the relay might send is the only wait.
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let (r, n) = (received.clone(), sent.clone());
        let mut seq = 0u16;
        let mut buf = [0u8; 2048];
        let thread = Background::run(Duration::from_secs(60), move || {
            for port in (ports[0]..=ports[1]).step_by(2) {
                let to = SocketAddr::from(([127, 0, 0, 1], port));
                let p = strange_packet(seq, 0x5747_0000 | u32::from(port));
                if sock.send_to(&p, to).is_ok() {
                    n.fetch_add(1, Ordering::Relaxed);
                }
                // A receiver report too, at the RTCP port.
                let rr = [0x80, 201, 0, 1, 0x57, 0x47, 0, 1];
                let _ = sock.send_to(&rr, SocketAddr::from(([127, 0, 0, 1], port + 1)));
            }
            seq = seq.wrapping_add(1);
            if sock.recv_from(&mut buf).is_ok() {
                r.fetch_add(1, Ordering::Relaxed);
            }
        });
        Sprayer {
            received,
            sent,
            thread,
        }
    }

    fn stop(&mut self) {
        self.thread.stop();
    }
}

#[test]
fn rtp_sprayed_from_another_address_around_answer_is_never_taken() {
    // A small range below the kernel's ephemeral ports, apart for each test process.
    let lo = 30000 + (std::process::id() % 200) as u16 * 8;
    let ports = [lo, lo + 7];
    let relay = Relay::start(&[(
        "VOXRELAY__SIP__RTP_PORTS",
        format!("[{}, {}]", ports[0], ports[1]).as_str(),
    )]);
    let mut stranger = Sprayer::start("127.0.0.9", ports);

    let mut uac = Uac::new(relay.sip);
    let ok = uac.invite();
    assert_eq!(ok.status(), 200);
    let relay_rtp = uac.relay_rtp.expect("an RTP address in the answer");
    assert!((ports[0]..=ports[1]).contains(&relay_rtp.port()));
    uac.ack();
    // The caller talks: 50 frames of its own, each a distinct byte pattern (never STRANGE).
    let (sent, got) = uac.talk_and_listen(50);
    assert_eq!(uac.bye().status(), 200);
    let ended = relay.wait_for(|v| msg(v) == "call ended", Duration::from_secs(30));
    stranger.stop();

    // The caller heard its own audio back, and nothing of the stranger's.
    let echoed: std::collections::HashSet<u8> = got
        .iter()
        .map(|p| p.5[0])
        .filter(|b| sent.contains(b))
        .collect();
    assert!(
        echoed.len() >= 10,
        "the caller's own frames come back: {} of 50; {ended}",
        echoed.len()
    );
    assert!(got.iter().all(|p| p.5[0] != STRANGE));
    // The stranger was heard by the relay (and dropped), and heard nothing from it.
    let spray = stranger.sent.load(Ordering::Relaxed);
    assert!(spray > 100, "the stranger sprayed {spray} packets");
    assert_eq!(
        stranger.received.load(Ordering::Relaxed),
        0,
        "the relay sent nothing to the stranger; {ended}"
    );
    let foreign = ended["foreign"].as_u64().unwrap();
    assert!(foreign > 0, "the spray was counted and dropped: {ended}");
    let rtp_in = ended["rtp_in"].as_u64().unwrap();
    assert!(
        (10..=50).contains(&rtp_in),
        "only the caller's packets were taken: {ended}"
    );
    assert!(
        ended["rtcp_foreign"].as_u64().unwrap() > 0,
        "the stranger's RTCP was dropped too: {ended}"
    );
    assert_eq!(ended["malformed"], 0);
}

/// A stranger flooding one call's RTP port with a well-formed stream: 20,000 datagrams a
/// second (200 every 10 ms) until stopped, 10 s at most.
struct Flooder {
    sent: Arc<AtomicU64>,
    thread: Background,
}

impl Flooder {
    fn start(ip: &str, to: SocketAddr) -> Flooder {
        let sock = UdpSocket::bind((ip, 0)).expect("another loopback address binds");
        let sent = Arc::new(AtomicU64::new(0));
        let n = sent.clone();
        let (start, mut seq, mut round) = (Instant::now(), 0u16, 0u32);
        let thread = Background::run(Duration::from_secs(10), move || {
            for _ in 0..200 {
                if sock.send_to(&strange_packet(seq, 0x5747_0001), to).is_ok() {
                    n.fetch_add(1, Ordering::Relaxed);
                }
                seq = seq.wrapping_add(1);
            }
            round += 1;
            let due = start + Duration::from_millis(10) * round;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        });
        Flooder { sent, thread }
    }

    fn stop(&mut self) {
        self.thread.stop();
    }
}

/// A call reads its caller's RTP at its 20 ms ticks, at most 32 datagrams a tick; a flood
/// beyond that on one call's port is left to the kernel to drop. The relay reads a bounded
/// share of it, and another call's audio flows both ways as if nothing happened.
#[test]
fn a_flood_on_one_calls_rtp_port_is_read_at_a_bounded_rate_and_the_other_call_goes_on() {
    let lo = 31600 + (std::process::id() % 200) as u16 * 8;
    let relay = Relay::start(&[(
        "VOXRELAY__SIP__RTP_PORTS",
        format!("[{}, {}]", lo, lo + 7).as_str(),
    )]);
    let mut flooded = Uac::new(relay.sip);
    assert_eq!(flooded.invite().status(), 200);
    let answered = Instant::now();
    flooded.ack();
    let mut other = Uac::new(relay.sip);
    assert_eq!(other.invite().status(), 200);
    other.ack();

    let mut flood = Flooder::start("127.0.0.9", flooded.relay_rtp.expect("an RTP address"));
    let (sent, got) = other.talk_and_listen(50);
    assert_eq!(flooded.bye().status(), 200);
    let lasted = answered.elapsed();
    flood.stop();
    let ended = relay.wait_for(|v| msg(v) == "call ended", Duration::from_secs(30));
    assert_eq!(other.bye().status(), 200);

    // the other caller heard its own audio back
    let echoed = got
        .iter()
        .map(|p| p.5[0])
        .filter(|b| sent.contains(b))
        .collect::<std::collections::HashSet<u8>>();
    assert!(
        echoed.len() >= 10,
        "the other caller's frames come back: {} of 50",
        echoed.len()
    );
    // the flooded call read at most 32 datagrams a tick (and one tick's catch-up), and
    // dropped what it read; the rest never left the kernel
    let spray = flood.sent.load(Ordering::Relaxed);
    let foreign = ended["foreign"].as_u64().unwrap();
    let ticks = lasted.as_millis() as u64 / 20 + 2;
    assert!(spray > 5_000, "the stranger flooded {spray} datagrams");
    assert!(foreign > 0, "the flood was read and dropped: {ended}");
    assert!(
        foreign <= 32 * ticks,
        "{foreign} of {spray} datagrams read in {ticks} ticks: {ended}"
    );
}
