//! Phone calls against the real `voxrelay` binary on loopback, with SIPp (Debian
//! `sip-tester`) and a small hand-made caller as the peers. The echo agent answers.

mod support;

use std::time::Duration;

use support::uac::Uac;
use support::{assert_sipp_ok, msg, sipp, Relay};

fn ended_with(relay: &Relay, reason: &str) -> serde_json::Value {
    relay.wait_for(
        |v| msg(v) == "call ended" && v["reason"] == reason,
        Duration::from_secs(60),
    )
}

#[test]
fn a_call_with_rtp_from_a_pcap_and_bye_from_the_caller() {
    let relay = Relay::start(&[]);
    let run = sipp(&relay, "call_pcap.xml", &["-m", "1", "-d", "3000"]);
    assert_sipp_ok(&run, 1, &relay);
    let ended = ended_with(&relay, "caller_bye");
    // The pcap holds G.711 A-law at 50 packets a second; the echo answers with as many.
    assert!(ended["rtp_in"].as_u64().unwrap() >= 100, "{ended}");
    assert!(ended["rtp_out"].as_u64().unwrap() >= 100, "{ended}");
    assert_eq!(ended["malformed"], 0);
}

#[test]
fn a_call_over_tcp() {
    let relay = Relay::start(&[]);
    let run = sipp(
        &relay,
        "call_pcap.xml",
        &["-m", "1", "-d", "1000", "-t", "t1"],
    );
    assert_sipp_ok(&run, 1, &relay);
    ended_with(&relay, "caller_bye");
    relay.wait_for(
        |v| msg(v) == "call started" && v["transport"] == "tcp",
        Duration::from_secs(5),
    );
}

#[test]
fn cancel_before_answer_gets_200_and_487() {
    // An agent that rings for a while is needed to CANCEL before the 200: the echo agent
    // answers at once, so the call is held in ringing by answer_delay.
    let relay = Relay::start(&[("VOXRELAY__BRIDGE__ANSWER_DELAY_MS", "3000")]);
    let run = sipp(&relay, "cancel.xml", &["-m", "1"]);
    assert_sipp_ok(&run, 1, &relay);
    ended_with(&relay, "caller_cancel");
}

#[test]
fn options_is_answered_on_udp_and_tcp() {
    let relay = Relay::start(&[]);
    assert_sipp_ok(&sipp(&relay, "options.xml", &["-m", "3"]), 3, &relay);
    assert_sipp_ok(
        &sipp(&relay, "options.xml", &["-m", "1", "-t", "t1"]),
        1,
        &relay,
    );
}

#[test]
fn reinvite_holds_and_resumes() {
    let relay = Relay::start(&[]);
    assert_sipp_ok(&sipp(&relay, "hold_resume.xml", &["-m", "1"]), 1, &relay);
    relay.wait_for(
        |v| msg(v) == "call media changed" && v["direction"] == "recvonly",
        Duration::from_secs(5),
    );
    relay.wait_for(
        |v| msg(v) == "call media changed" && v["direction"] == "inactive",
        Duration::from_secs(5),
    );
    ended_with(&relay, "caller_bye");
}

#[test]
fn compact_and_folded_headers_are_accepted() {
    let relay = Relay::start(&[]);
    assert_sipp_ok(&sipp(&relay, "compact.xml", &["-m", "1"]), 1, &relay);
    let started = relay.wait_for(|v| msg(v) == "call started", Duration::from_secs(5));
    assert_eq!(started["codec"], "PCMU");
}

#[test]
fn no_common_codec_gets_488() {
    let relay = Relay::start(&[]);
    assert_sipp_ok(&sipp(&relay, "no_codec.xml", &["-m", "1"]), 1, &relay);
}

#[test]
fn unknown_dialog_gets_481_and_other_methods_405() {
    let relay = Relay::start(&[]);
    assert_sipp_ok(&sipp(&relay, "unknown_dialog.xml", &["-m", "1"]), 1, &relay);
    assert_sipp_ok(
        &sipp(&relay, "method_not_allowed.xml", &["-m", "1"]),
        1,
        &relay,
    );
}

#[test]
fn the_relay_hangs_up_at_max_call_seconds() {
    let relay = Relay::start(&[("VOXRELAY__BRIDGE__MAX_CALL_SECONDS", "2")]);
    assert_sipp_ok(&sipp(&relay, "relay_hangs_up.xml", &["-m", "1"]), 1, &relay);
    let ended = ended_with(&relay, "max_duration");
    let secs = ended["seconds"].as_f64().unwrap();
    assert!((1.9..4.0).contains(&secs), "ended after {secs} s");
}

#[test]
fn a_caller_whose_line_goes_silent_is_hung_up_at_the_rtp_timeout() {
    let relay = Relay::start(&[("VOXRELAY__SIP__RTP_TIMEOUT_SECONDS", "2")]);
    let mut uac = Uac::new(relay.sip);
    assert_eq!(uac.invite().status(), 200);
    uac.ack();
    // a second of audio, each frame paced by one coming back, then nothing
    let mut heard = 0;
    for i in 0..50u16 {
        uac.send_rtp(
            0,
            1000 + i,
            5000 + u32::from(i) * 160,
            0xabcdef,
            &[0x55; 160],
        );
        heard += usize::from(uac.recv_rtp(Duration::from_millis(100)).is_some());
    }
    let silent_from = std::time::Instant::now();
    assert!(heard >= 25, "the call carried audio: {heard} packets");
    let bye = loop {
        let m = uac
            .recv(Duration::from_secs(10))
            .expect("the relay hangs up a silent line");
        if m.method() == "BYE" {
            break m;
        }
    };
    let waited = silent_from.elapsed().as_secs_f64();
    uac.reply_ok(&bye);
    let ended = ended_with(&relay, "rtp_timeout");
    assert!(
        (1.9..4.0).contains(&waited),
        "hung up {waited:.2} s after the last packet"
    );
    assert!(ended["rtp_in"].as_u64().unwrap() >= 25, "{ended}");
}

/// The relay reads a caller's RTP at its 20 ms ticks, not as each packet comes, yet it times
/// each packet by when the kernel received it: the interarrival jitter it measures (RFC 3550,
/// reported at the call's end) is the network's. Packets of 30 ms read at 20 ms ticks would
/// otherwise seem to jitter by 10 ms.
#[test]
fn the_callers_jitter_is_timed_at_each_packets_arrival_not_at_the_ticks() {
    let relay = Relay::start(&[]);
    let mut uac = Uac::new(relay.sip);
    assert_eq!(uac.invite().status(), 200);
    uac.ack();
    // 3 s of 30 ms packets on a steady clock; the test's own jitter filter (RFC 3550 A.8,
    // in 8 kHz units) follows when each really left
    let start = std::time::Instant::now();
    let (mut sender_jitter, mut last_transit) = (0f64, None::<f64>);
    for i in 0..100u16 {
        let due = start + Duration::from_millis(30 * u64::from(i));
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        let ts = 5000 + u32::from(i) * 240;
        let sent = start.elapsed().as_secs_f64() * 8000.0;
        uac.send_rtp(0, 1000 + i, ts, 0xabcdef, &[0x55; 240]);
        let transit = sent - f64::from(ts);
        if let Some(last) = last_transit {
            sender_jitter += ((transit - last).abs() - sender_jitter) / 16.0;
        }
        last_transit = Some(transit);
    }
    assert_eq!(uac.bye().status(), 200);
    let ended = ended_with(&relay, "caller_bye");
    assert!(ended["rtp_in"].as_u64().unwrap() >= 99, "{ended}");
    let jitter = ended["jitter"].as_f64().expect("the call's jitter");
    // 2 ms of slack (16 units) for the test's own sends being late after it read the clock
    assert!(
        jitter <= sender_jitter + 16.0,
        "the relay measured {jitter} (8 kHz units) where the caller sent with {sender_jitter:.1}"
    );
}

#[test]
fn past_max_calls_a_new_invite_gets_503_with_retry_after() {
    let relay = Relay::start(&[("VOXRELAY__SIP__MAX_CALLS", "1")]);
    let mut first = Uac::new(relay.sip);
    assert_eq!(first.invite().status(), 200);
    first.ack();
    assert_sipp_ok(&sipp(&relay, "busy.xml", &["-m", "1"]), 1, &relay);
    assert_eq!(first.bye().status(), 200);
    // The slot is free again once the first call ended.
    ended_with(&relay, "caller_bye");
    let mut second = Uac::new(relay.sip);
    assert_eq!(second.invite().status(), 200);
    second.ack();
    assert_eq!(second.bye().status(), 200);
}

#[test]
fn the_echo_agent_plays_the_callers_audio_back_with_clean_rtp() {
    let relay = Relay::start(&[]);
    let mut uac = Uac::new(relay.sip);
    let ok = uac.invite();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.header("content-type"), Some("application/sdp"));
    uac.ack();
    // 50 frames, each a distinct byte pattern; the caller's own SSRC and numbering.
    let (sent, got) = uac.talk_and_listen(50);
    let _ = uac.bye();
    assert!(got.len() >= 10, "the relay sends a frame every 20 ms");
    let ssrc = got[0].4;
    for w in got.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert_eq!(b.4, ssrc, "one SSRC");
        assert_eq!(b.2, a.2.wrapping_add(1), "consecutive sequence numbers");
        assert_eq!(
            b.3,
            a.3.wrapping_add(160),
            "timestamps advance 160 per 20 ms"
        );
        assert!(!b.0, "marker only at the start");
        assert_eq!(b.1, 0, "PCMU as negotiated");
        assert_eq!(b.5.len(), 160);
    }
    assert_ne!(ssrc, 0xabcdef, "the relay has its own SSRC");
    let echoed: std::collections::HashSet<u8> = got
        .iter()
        .map(|p| p.5[0])
        .filter(|b| sent.contains(b))
        .collect();
    assert!(
        echoed.len() >= 10,
        "the caller's own frames come back: {} of 50",
        echoed.len()
    );
}

#[test]
fn the_200_is_repeated_until_acked_and_the_dialog_torn_down_without_ack() {
    let relay = Relay::start(&[]);
    let mut uac = Uac::new(relay.sip);
    assert_eq!(uac.invite().status(), 200);
    // No ACK: the 200 comes again (at 0.5, 1, 2, 4, 4 ... s), then after 64*T1 a BYE.
    let mut repeats = 0;
    let bye = loop {
        let m = uac
            .recv(Duration::from_secs(40))
            .expect("repeated 200s, then BYE");
        match (m.status(), m.method()) {
            (200, _) => repeats += 1,
            (0, "BYE") => break m,
            _ => {}
        }
    };
    uac.reply_ok(&bye);
    assert!(repeats >= 3, "the 200 was repeated {repeats} times");
    ended_with(&relay, "ack_timeout");
}

#[test]
fn sigterm_refuses_new_calls_then_ends_live_ones_with_bye() {
    let mut relay = Relay::start(&[("VOXRELAY__BRIDGE__DRAIN_SECONDS", "2")]);
    let mut live = Uac::new(relay.sip);
    assert_eq!(live.invite().status(), 200);
    live.ack();
    relay.terminate();
    relay.wait_for(|v| msg(v) == "draining", Duration::from_secs(5));
    let mut late = Uac::new(relay.sip);
    let refused = late.invite();
    assert_eq!(refused.status(), 503);
    assert!(refused.header("retry-after").is_some());
    // After the drain time the live call gets BYE.
    let bye = loop {
        let m = live
            .recv(Duration::from_secs(10))
            .expect("BYE after the drain time");
        if m.method() == "BYE" {
            break m;
        }
    };
    live.reply_ok(&bye);
    assert_eq!(relay.wait_exit(Duration::from_secs(15)), Some(0));
    // the process is gone; its last lines may still be in the pipe to the reader
    relay.wait_for(
        |v| msg(v) == "call ended" && v["reason"] == "shutdown",
        Duration::from_secs(5),
    );
}

#[test]
fn a_reinvite_with_a_new_address_moves_the_media() {
    let relay = Relay::start(&[]);
    let mut uac = Uac::new(relay.sip);
    assert_eq!(uac.invite().status(), 200);
    uac.ack();
    let first = uac
        .recv_rtp(Duration::from_secs(2))
        .expect("RTP to the first address");
    let ok = uac.reinvite_new_address();
    assert_eq!(ok.status(), 200);
    assert!(ok.body.contains("a=sendrecv"));
    assert!(ok.body.contains("o=voxrelay "), "{}", ok.body);
    let moved = uac
        .recv_rtp(Duration::from_secs(2))
        .expect("RTP to the new address");
    assert_eq!(moved.4, first.4, "same stream, same SSRC");
    relay.wait_for(|v| msg(v) == "call media changed", Duration::from_secs(5));
    assert_eq!(uac.bye().status(), 200);
}

#[test]
fn external_ip_goes_into_sdp_and_contact() {
    let relay = Relay::start(&[("VOXRELAY__SIP__EXTERNAL_IP", "192.0.2.33")]);
    let mut uac = Uac::new(relay.sip);
    let ok = uac.invite();
    assert_eq!(ok.status(), 200);
    assert!(ok.body.contains("c=IN IP4 192.0.2.33"), "{}", ok.body);
    assert!(
        ok.header("contact").unwrap().contains("192.0.2.33"),
        "{:?}",
        ok.header("contact")
    );
    uac.ack();
    assert_eq!(uac.bye().status(), 200);
}

#[test]
fn rtcp_sender_reports_describe_the_relays_stream() {
    let relay = Relay::start(&[]);
    let mut uac = Uac::new(relay.sip);
    assert_eq!(uac.invite().status(), 200);
    uac.ack();
    let rtp = uac.recv_rtp(Duration::from_secs(2)).expect("RTP");
    // Reports come every 5 s; the first one right after the answer.
    let sr = uac
        .recv_rtcp(Duration::from_secs(7))
        .expect("an RTCP sender report");
    assert_eq!(sr[0] >> 6, 2, "RTCP version 2");
    assert_eq!(sr[1], 200, "packet type SR");
    let ssrc = u32::from_be_bytes([sr[4], sr[5], sr[6], sr[7]]);
    assert_eq!(ssrc, rtp.4, "the SR names the RTP stream's SSRC");
    assert_eq!(uac.bye().status(), 200);
}
