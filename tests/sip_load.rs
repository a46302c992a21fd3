//! Fifty concurrent ten-second calls with RTP: every one completes.

mod support;

use std::time::Duration;

use support::{assert_sipp_ok, msg, sipp, Relay};

#[test]
fn fifty_concurrent_ten_second_calls_with_rtp_all_complete() {
    let relay = Relay::start(&[]);
    let run = sipp(
        &relay,
        "call_pcap.xml",
        &["-m", "50", "-l", "50", "-r", "25", "-d", "10000"],
    );
    assert_sipp_ok(&run, 50, &relay);
    let ended = relay.wait_calls_ended(50, Duration::from_secs(30));
    for e in &ended {
        assert_eq!(e["reason"], "caller_bye", "{e}");
        // Each call heard its own audio: ten seconds at 50 packets a second from the relay.
        assert!(e["rtp_out"].as_u64().unwrap() >= 400, "{e}");
        assert!(e["rtp_in"].as_u64().unwrap() >= 100, "{e}");
    }
    assert_eq!(ended.iter().filter(|e| msg(e) == "call ended").count(), 50);
}
