//! RTP for the phone leg, IO-free: the packetizer that stamps outgoing frames and the
//! receive statistics of RFC 3550 (loss, jitter) that feed RTCP reports.

use rtc_rtp::header::Header;
use rtc_shared::marshal::{Marshal, MarshalSize, Unmarshal};

/// Size of a fixed RTP header with no CSRC and no extension.
pub const HEADER_LEN: usize = 12;

/// Why a datagram is not an RTP packet the relay can use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RtpError {
    /// Too short, wrong version, or a header that does not fit the datagram.
    #[error("malformed RTP packet")]
    Malformed,
}

/// The parts of a received packet the relay needs; the payload is a range of the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpIn {
    /// Payload type.
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Sender's SSRC.
    pub ssrc: u32,
    /// Where the payload starts in the datagram.
    pub payload_start: usize,
    /// Where the payload ends (padding removed).
    pub payload_end: usize,
}

/// Parses an RTP datagram (no allocation for the usual packet without CSRCs or extensions).
pub fn parse(datagram: &[u8]) -> Result<RtpIn, RtpError> {
    if datagram.len() < HEADER_LEN || datagram[0] >> 6 != 2 {
        return Err(RtpError::Malformed);
    }
    let mut reader = datagram;
    let h = Header::unmarshal(&mut reader).map_err(|_| RtpError::Malformed)?;
    let start = h.marshal_size();
    let mut end = datagram.len();
    if h.padding {
        let pad = usize::from(datagram[end - 1]);
        if pad == 0 || start + pad > end {
            return Err(RtpError::Malformed);
        }
        end -= pad;
    }
    if start > end {
        return Err(RtpError::Malformed);
    }
    Ok(RtpIn {
        payload_type: h.payload_type,
        marker: h.marker,
        sequence: h.sequence_number,
        timestamp: h.timestamp,
        ssrc: h.ssrc,
        payload_start: start,
        payload_end: end,
    })
}

/// Stamps outgoing packets: one SSRC, consecutive sequence numbers, timestamps that follow
/// the media clock, and the marker bit on the first packet of a talk spurt.
#[derive(Debug, Clone)]
pub struct Packetizer {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    marker_next: bool,
    packets: u32,
    octets: u32,
}

impl Packetizer {
    /// A stream with the given SSRC and random starting sequence and timestamp (RFC 3550 5.1).
    pub fn new(ssrc: u32, first_sequence: u16, first_timestamp: u32) -> Self {
        Self {
            ssrc,
            sequence: first_sequence,
            timestamp: first_timestamp,
            marker_next: true,
            packets: 0,
            octets: 0,
        }
    }

    /// Writes header and payload into `out` and returns the datagram's length; advances the
    /// clock by `samples`. `out` must hold `HEADER_LEN + payload.len()` bytes.
    pub fn write(
        &mut self,
        payload_type: u8,
        payload: &[u8],
        samples: u32,
        out: &mut [u8],
    ) -> usize {
        let h = Header {
            version: 2,
            marker: self.marker_next,
            payload_type,
            sequence_number: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
            ..Default::default()
        };
        let n = h.marshal_to(out).unwrap_or(0);
        out[n..n + payload.len()].copy_from_slice(payload);
        self.marker_next = false;
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload.len() as u32);
        n + payload.len()
    }

    /// A frame's worth of time passed with nothing sent: keep the clock running and mark the
    /// next packet as the start of a talk spurt.
    pub fn skip(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.marker_next = true;
    }

    /// Moves the clock on by `samples` without sending (time the forwarded stream skipped).
    pub fn advance(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
    }

    /// The next packet starts a talk spurt (after a hold, or a media change).
    pub fn mark_next(&mut self) {
        self.marker_next = true;
    }

    /// SSRC of this stream.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }
    /// Timestamp the next packet will carry.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }
    /// Packets sent so far.
    pub fn packets(&self) -> u32 {
        self.packets
    }
    /// Payload octets sent so far.
    pub fn octets(&self) -> u32 {
        self.octets
    }
}

/// RFC 3550 A.8 interarrival jitter, the one estimator of the crate: RTCP reports
/// ([`ReceiveStats`]) and the jitter buffer's depth both read it.
#[derive(Debug, Clone, Copy, Default)]
pub struct InterarrivalJitter {
    /// The estimate in timestamp units, scaled by 16 as in A.8; at most `u32::MAX`.
    q4: u64,
    last_transit: Option<i64>,
}

impl InterarrivalJitter {
    /// Records one packet's transit time (arrival minus RTP timestamp, both in timestamp
    /// units). A difference `|D|` of `max_step` or more is skipped (a stall or a restart, not
    /// jitter); `u64::MAX` keeps every one, as the RFC does.
    pub fn on_transit(&mut self, transit: i64, max_step: u64) {
        if let Some(last) = self.last_transit {
            let d = transit.saturating_sub(last).unsigned_abs();
            if d < max_step {
                // J += (|D| - J) / 16, kept scaled by 16; in 64 bits and saturated, as a
                // peer's timestamps can make |D| as large as 2^32 - 1 (found by fuzzing).
                let d = d.min(u64::from(u32::MAX));
                let j = self.q4 + d - ((self.q4 + 8) >> 4);
                self.q4 = j.min(u64::from(u32::MAX));
            }
        }
        self.last_transit = Some(transit);
    }

    /// Forgets the last transit time (a new numbering starts), keeping the estimate.
    pub fn forget_transit(&mut self) {
        self.last_transit = None;
    }

    /// The estimate in timestamp units.
    pub fn ticks(&self) -> u32 {
        (self.q4 >> 4) as u32
    }
}

/// Reception statistics for one source (RFC 3550 appendix A.1, A.3 and A.8).
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    ssrc: Option<u32>,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    jitter: InterarrivalJitter,
}

impl ReceiveStats {
    /// Records one packet: its header and its arrival time in media clock units.
    pub fn on_packet(&mut self, p: &RtpIn, arrival_ticks: u32) {
        if self.ssrc != Some(p.ssrc) {
            // A new source (or a restarted one) starts its statistics afresh.
            *self = Self {
                ssrc: Some(p.ssrc),
                base_seq: u32::from(p.sequence),
                max_seq: p.sequence,
                ..Default::default()
            };
        } else {
            let delta = p.sequence.wrapping_sub(self.max_seq);
            if delta != 0 && delta < 0x8000 {
                if p.sequence < self.max_seq {
                    self.cycles = self.cycles.wrapping_add(1 << 16);
                }
                self.max_seq = p.sequence;
            }
        }
        self.received = self.received.wrapping_add(1);
        let transit = i64::from(arrival_ticks) - i64::from(p.timestamp);
        self.jitter.on_transit(transit, u64::MAX);
    }

    /// The source's SSRC, once a packet arrived.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }
    /// Packets received.
    pub fn received(&self) -> u32 {
        self.received
    }
    /// Extended highest sequence number received.
    pub fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }
    /// Packets expected from the sequence numbers seen.
    pub fn expected(&self) -> u32 {
        if self.ssrc.is_none() {
            return 0;
        }
        self.extended_max()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1)
    }
    /// Cumulative packets lost (never negative here; duplicates can make the RFC's value so).
    pub fn lost(&self) -> u32 {
        self.expected().saturating_sub(self.received)
    }
    /// Interarrival jitter in timestamp units.
    pub fn jitter(&self) -> u32 {
        self.jitter.ticks()
    }
    /// Fraction lost since the last call, as the 8-bit fixed point of a report block.
    pub fn take_fraction_lost(&mut self) -> u8 {
        let expected = self.expected();
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost = expected_interval.saturating_sub(received_interval);
        if expected_interval == 0 || lost == 0 {
            0
        } else {
            ((lost << 8) / expected_interval).min(255) as u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::FRAME_TICKS;

    #[test]
    fn interarrival_jitter_converges_and_skips_stalls() {
        let mut j = InterarrivalJitter::default();
        // transit alternating by 80 ticks: |D| = 80 every packet, so J tends to 80
        for i in 0..500 {
            j.on_transit(if i % 2 == 0 { 0 } else { 80 }, u64::MAX);
        }
        assert!((78..=80).contains(&j.ticks()), "{}", j.ticks());
        // a 2 s stall at 8 kHz is skipped when the step limit is a second
        let before = j.ticks();
        j.on_transit(16_000, 8_000);
        assert_eq!(j.ticks(), before);
        // and counted when there is no limit, saturating rather than overflowing
        j.on_transit(i64::MIN, u64::MAX);
        j.on_transit(i64::MAX, u64::MAX);
        assert!(j.ticks() > before);
    }

    #[test]
    fn packets_carry_consecutive_numbers_and_a_running_clock() {
        let mut p = Packetizer::new(0xdead_beef, 65534, u32::MAX - 100);
        let mut buf = [0u8; 200];
        let payload = [0xFFu8; 160];
        let mut seen = Vec::new();
        for i in 0..4 {
            if i == 2 {
                p.skip(FRAME_TICKS);
            }
            let n = p.write(0, &payload, FRAME_TICKS, &mut buf);
            assert_eq!(n, HEADER_LEN + 160);
            let h = parse(&buf[..n]).unwrap();
            assert_eq!(&buf[h.payload_start..h.payload_end], &payload[..]);
            seen.push((h.sequence, h.timestamp, h.marker, h.ssrc));
        }
        assert_eq!(seen[0], (65534, u32::MAX - 100, true, 0xdead_beef));
        assert_eq!(seen[1], (65535, 59, false, 0xdead_beef), "timestamp wraps");
        assert_eq!(
            seen[2],
            (0, 59 + 320, true, 0xdead_beef),
            "a skipped frame keeps the clock and marks"
        );
        assert_eq!(seen[3], (1, 59 + 480, false, 0xdead_beef));
        assert_eq!(p.packets(), 4);
        assert_eq!(p.octets(), 640);
    }

    #[test]
    fn timestamps_far_apart_saturate_the_jitter() {
        // Found by fuzzing: a transit jump of 2^32 - 1 took the scaled jitter to its
        // maximum, and the next packet overflowed it.
        let mut stats = ReceiveStats::default();
        for (seq, ts) in [(1u16, 0u32), (2, u32::MAX), (3, 0), (4, u32::MAX)] {
            let p = RtpIn {
                payload_type: 0,
                marker: false,
                sequence: seq,
                timestamp: ts,
                ssrc: 7,
                payload_start: 12,
                payload_end: 12,
            };
            stats.on_packet(&p, 0);
        }
        assert_eq!(stats.jitter(), u32::MAX >> 4);
    }

    #[test]
    fn malformed_datagrams_are_errors() {
        assert_eq!(parse(&[]), Err(RtpError::Malformed));
        assert_eq!(parse(&[0x80; 11]), Err(RtpError::Malformed));
        assert_eq!(parse(&[0x40; 20]), Err(RtpError::Malformed), "version 1");
        // padding bit with a padding length longer than the packet
        let mut b = [0u8; 16];
        b[0] = 0xA0;
        b[15] = 200;
        assert_eq!(parse(&b), Err(RtpError::Malformed));
        // CSRC count larger than the datagram
        let mut b = [0u8; 12];
        b[0] = 0x8F;
        assert_eq!(parse(&b), Err(RtpError::Malformed));
    }

    #[test]
    fn loss_and_jitter_follow_rfc3550() {
        let mut s = ReceiveStats::default();
        let mk = |seq: u16, ts: u32| RtpIn {
            payload_type: 0,
            marker: false,
            sequence: seq,
            timestamp: ts,
            ssrc: 7,
            payload_start: 12,
            payload_end: 172,
        };
        // 10 packets sent across a sequence wrap, numbers 3 and 6 lost, perfect timing.
        for i in 0u16..10 {
            if i == 3 || i == 6 {
                continue;
            }
            let seq = 65530u16.wrapping_add(i);
            s.on_packet(&mk(seq, u32::from(i) * 160), 1000 + u32::from(i) * 160);
        }
        assert_eq!(s.expected(), 10);
        assert_eq!(s.received(), 8);
        assert_eq!(s.lost(), 2);
        assert_eq!(s.jitter(), 0);
        assert_eq!(s.take_fraction_lost(), (2u32 * 256 / 10) as u8);
        assert_eq!(
            s.take_fraction_lost(),
            0,
            "nothing new since the last report"
        );
        // Arrivals alternating 0 and 40 ticks late: jitter converges towards 40.
        let mut t = ReceiveStats::default();
        for i in 0u32..400 {
            let late = if i % 2 == 0 { 0 } else { 40 };
            t.on_packet(&mk(i as u16, i * 160), i * 160 + late);
        }
        assert!((36..=40).contains(&t.jitter()), "{}", t.jitter());
    }
}
