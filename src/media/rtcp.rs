//! RTCP for the phone leg (RFC 3550 section 6): sender reports every few seconds with one
//! reception report block, and parsing of what the caller reports back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rtc_rtcp::reception_report::ReceptionReport;
use rtc_rtcp::sender_report::SenderReport;
use rtc_shared::marshal::Marshal;

use super::rtp::{Packetizer, ReceiveStats};

/// How often the relay sends a report.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// What the peer told us in its reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerReport {
    /// RTCP packets received from the peer.
    pub packets: u64,
    /// The peer's latest cumulative loss of our stream.
    pub lost: u32,
    /// The peer's latest jitter estimate of our stream, in timestamp units.
    pub jitter: u32,
}

/// NTP time (RFC 5905 64-bit format) of a wall-clock instant.
pub fn ntp_time(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// A sender report for our stream with a block about the caller's stream, marshalled.
pub fn sender_report(tx: &Packetizer, rx: &mut ReceiveStats, now: SystemTime) -> Vec<u8> {
    let reports = match rx.ssrc() {
        Some(ssrc) => vec![ReceptionReport {
            ssrc,
            fraction_lost: rx.take_fraction_lost(),
            total_lost: rx.lost().min(0x7F_FFFF),
            last_sequence_number: rx.extended_max(),
            jitter: rx.jitter(),
            last_sender_report: 0,
            delay: 0,
        }],
        None => Vec::new(),
    };
    let sr = SenderReport {
        ssrc: tx.ssrc(),
        ntp_time: ntp_time(now),
        rtp_time: tx.timestamp(),
        packet_count: tx.packets(),
        octet_count: tx.octets(),
        reports,
        ..Default::default()
    };
    sr.marshal().map(|b| b.to_vec()).unwrap_or_default()
}

/// Reads a compound RTCP packet from the peer; returns false if it is not RTCP.
pub fn on_peer_packet(datagram: &[u8], our_ssrc: u32, peer: &mut PeerReport) -> bool {
    let mut buf = datagram;
    let Ok(packets) = rtc_rtcp::packet::unmarshal(&mut buf) else {
        return false;
    };
    peer.packets += 1;
    for p in packets {
        let blocks: &[ReceptionReport] = if let Some(sr) = p.as_any().downcast_ref::<SenderReport>()
        {
            &sr.reports
        } else if let Some(rr) = p
            .as_any()
            .downcast_ref::<rtc_rtcp::receiver_report::ReceiverReport>()
        {
            &rr.reports
        } else {
            continue;
        };
        for b in blocks.iter().filter(|b| b.ssrc == our_ssrc) {
            peer.lost = b.total_lost;
            peer.jitter = b.jitter;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::RtpIn;

    #[test]
    fn a_sender_report_round_trips_with_its_reception_block() {
        let mut tx = Packetizer::new(11, 0, 0);
        let mut buf = [0u8; 200];
        for _ in 0..5 {
            tx.write(0, &[0; 160], 160, &mut buf);
        }
        let mut rx = ReceiveStats::default();
        for seq in [1u16, 2, 4] {
            let p = RtpIn {
                payload_type: 0,
                marker: false,
                sequence: seq,
                timestamp: u32::from(seq) * 160,
                ssrc: 22,
                payload_start: 12,
                payload_end: 172,
            };
            rx.on_packet(&p, u32::from(seq) * 160);
        }
        let bytes = sender_report(&tx, &mut rx, SystemTime::now());
        let mut b = &bytes[..];
        let parsed = rtc_rtcp::packet::unmarshal(&mut b).unwrap();
        let sr = parsed[0].as_any().downcast_ref::<SenderReport>().unwrap();
        assert_eq!(sr.ssrc, 11);
        assert_eq!(sr.packet_count, 5);
        assert_eq!(sr.octet_count, 800);
        assert_eq!(sr.reports.len(), 1);
        assert_eq!(sr.reports[0].ssrc, 22);
        assert_eq!(sr.reports[0].total_lost, 1);
        assert_eq!(sr.reports[0].last_sequence_number, 4);

        // The caller's side reading a report about its own stream (ssrc 22).
        let mut peer = PeerReport::default();
        assert!(on_peer_packet(&bytes, 22, &mut peer));
        assert_eq!(
            peer,
            PeerReport {
                packets: 1,
                lost: 1,
                jitter: 0
            }
        );
        assert!(!on_peer_packet(b"\x00garbage", 22, &mut peer));
    }

    #[test]
    fn ntp_epoch_offset() {
        assert_eq!(ntp_time(UNIX_EPOCH) >> 32, 2_208_988_800);
    }
}
