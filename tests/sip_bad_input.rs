//! Malformed and mutated SIP over UDP and TCP while a real call is up: the call completes and
//! the relay still answers OPTIONS afterwards.

mod support;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::uac::Uac;
use support::{assert_sipp_ok, msg, sipp, Relay};

const VALID_INVITE: &str = "INVITE sip:echo@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-fuzz-1;rport\r\n\
From: <sip:fuzz@127.0.0.1>;tag=f1\r\n\
To: <sip:echo@127.0.0.1>\r\n\
Call-ID: fuzz-call-1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:fuzz@127.0.0.1:5999>\r\n\
Max-Forwards: 70\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 128\r\n\r\n\
v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5998 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// The malformed messages: fixed nasty cases, then seeded random mutations.
fn corpus(rng: &mut StdRng, n: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\r\n\r\n".to_vec(),
        b"INVITE".to_vec(),
        b"INVITE sip:x SIP/2.0\r\n\r\n".to_vec(),
        VALID_INVITE
            .replace("Call-ID: fuzz-call-1\r\n", "")
            .into_bytes(),
        VALID_INVITE.replace(";tag=f1", "").into_bytes(),
        VALID_INVITE
            .replace("Content-Length: 128", "Content-Length: 99999")
            .into_bytes(),
        VALID_INVITE
            .replace("Content-Length: 128", "Content-Length: -5")
            .into_bytes(),
        VALID_INVITE
            .replace(
                "Content-Length: 128",
                "Content-Length: 18446744073709551615",
            )
            .into_bytes(),
        VALID_INVITE
            .replace("CSeq: 1 INVITE", "CSeq: 99999999999999999999 INVITE")
            .into_bytes(),
        VALID_INVITE
            .replace("m=audio 5998", "m=audio 99999999")
            .into_bytes(),
        VALID_INVITE
            .replace("SIP/2.0\r\n", "SIP/9.9\r\n")
            .into_bytes(),
        format!(
            "{}X-Huge: {}\r\n\r\n",
            &VALID_INVITE[..VALID_INVITE.find("\r\n\r\n").unwrap() + 2],
            "a".repeat(60_000)
        )
        .into_bytes(),
        VALID_INVITE.replace("\r\n", "\n").into_bytes(),
        VALID_INVITE.replace("Via: ", "Via:\r\n ").into_bytes(),
    ];
    let base = VALID_INVITE.as_bytes();
    while out.len() < n {
        let mut m = match rng.random_range(0..4) {
            // truncated at a random point
            0 => base[..rng.random_range(0..base.len())].to_vec(),
            // random bytes
            1 => (0..rng.random_range(1..1500))
                .map(|_| rng.random())
                .collect(),
            // a valid message with some bytes flipped
            _ => base.to_vec(),
        };
        if !m.is_empty() {
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..m.len());
                m[i] = rng.random();
            }
        }
        out.push(m);
    }
    out
}

#[test]
fn malformed_sip_never_stops_a_live_call_or_the_relay() {
    let relay = Relay::start(&[]);
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let messages = corpus(&mut rng, 3000);

    // A real call with RTP runs while the garbage arrives.
    let call = std::thread::scope(|s| {
        let call = s.spawn(|| sipp(&relay, "call_pcap.xml", &["-m", "1", "-d", "4000"]));
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        for m in &messages {
            let _ = udp.send_to(m, relay.sip);
        }
        // Over TCP: one connection per message for a few hundred, so framing errors on one
        // connection do not hide the rest.
        for m in messages.iter().take(300) {
            if let Ok(mut c) = TcpStream::connect(relay.sip) {
                let _ = c.write_all(m);
            }
        }
        call.join().unwrap()
    });
    assert_sipp_ok(&call, 1, &relay);
    relay.wait_for(
        |v| msg(v) == "call ended" && v["reason"] == "caller_bye",
        Duration::from_secs(30),
    );

    // Still serving: OPTIONS over both transports, and a new call.
    assert_sipp_ok(&sipp(&relay, "options.xml", &["-m", "1"]), 1, &relay);
    assert_sipp_ok(
        &sipp(&relay, "options.xml", &["-m", "1", "-t", "t1"]),
        1,
        &relay,
    );
    let mut uac = Uac::new(relay.sip);
    assert_eq!(uac.invite().status(), 200);
    uac.ack();
    assert_eq!(uac.bye().status(), 200);
}
