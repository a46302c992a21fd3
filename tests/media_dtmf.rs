//! DTMF (RFC 4733): what the sender produces, the receiver turns back into exactly one key
//! per press with its duration, whatever the network repeats or drops.

use std::time::Duration;
use voxrelay::media::dtmf::{dtmf_packets, Digit, DtmfReceiver, TelephoneEvent};

/// Sends `keys` (each held `ms`, 80 ms apart) through `net` and returns what came out.
fn send(keys: &str, ms: u32, net: impl Fn(usize, &[u8; 4]) -> usize) -> Vec<Digit> {
    let mut rx = DtmfReceiver::new();
    let mut got = Vec::new();
    let mut start_ms = 0u32;
    let mut n = 0;
    for key in keys.chars() {
        let ts = 1_000 + start_ms * 8;
        let mut last = 0;
        for pkt in dtmf_packets(key, ms, 10).unwrap() {
            let now = Duration::from_millis((start_ms + pkt.at_ms) as u64);
            // the network may lose (0 copies) or duplicate (2+) each packet
            for _ in 0..net(n, &pkt.payload) {
                got.extend(rx.push(now, ts, &pkt.payload));
                got.extend(rx.poll(now));
            }
            n += 1;
            last = pkt.at_ms;
        }
        start_ms += last + 80;
    }
    got.extend(rx.poll(Duration::from_millis(start_ms as u64 + 2000)));
    got
}

#[test]
fn a_press_makes_the_documented_packets() {
    let pkts: Vec<_> = dtmf_packets('#', 100, 10).unwrap().collect();
    assert_eq!(pkts.len(), 5 + 3);
    assert!(pkts[0].marker && pkts[1..].iter().all(|p| !p.marker));
    let evs: Vec<_> = pkts
        .iter()
        .map(|p| TelephoneEvent::parse(&p.payload).unwrap())
        .collect();
    assert!(evs.iter().all(|e| e.event == 11 && e.volume == 10));
    assert_eq!(
        evs.iter().map(|e| e.duration).collect::<Vec<_>>(),
        [160, 320, 480, 640, 800, 800, 800, 800]
    );
    assert_eq!(evs.iter().filter(|e| e.end).count(), 3);
    assert_eq!(
        pkts.iter().map(|p| p.at_ms).collect::<Vec<_>>(),
        [0, 20, 40, 60, 80, 100, 120, 140]
    );
    assert!(dtmf_packets('x', 100, 10).is_none());
}

#[test]
fn each_press_gives_exactly_one_key_with_its_duration() {
    let got = send("0123456789*#ABCD", 100, |_, _| 1);
    let keys: String = got.iter().map(|d| d.key).collect();
    assert_eq!(keys, "0123456789*#ABCD");
    assert!(got.iter().all(|d| d.duration_ms == 100 && d.volume == 10));
}

#[test]
fn duplicated_packets_do_not_repeat_a_key() {
    let got = send("159", 160, |_, _| 3);
    assert_eq!(
        got.iter()
            .map(|d| (d.key, d.duration_ms))
            .collect::<Vec<_>>(),
        [('1', 160), ('5', 160), ('9', 160)]
    );
}

#[test]
fn losing_some_packets_loses_no_key() {
    // drop every third packet, including some end packets
    let got = send("2468", 120, |n, _| usize::from(n % 3 != 1));
    assert_eq!(got.iter().map(|d| d.key).collect::<String>(), "2468");
    assert!(got.iter().all(|d| d.duration_ms == 120));
}

#[test]
fn losing_all_end_packets_still_gives_the_key_once() {
    let got = send("77", 100, |_, p| {
        if TelephoneEvent::parse(p).unwrap().end {
            0
        } else {
            1
        }
    });
    assert_eq!(got.iter().map(|d| d.key).collect::<String>(), "77");
    // the last update before key-up carried the full duration
    assert!(got.iter().all(|d| d.duration_ms == 100));
}
