//! Forwarding one phone leg's RTP to another (a warm transfer's caller and person, once
//! joined), IO-free. Both legs carry the same G.711 codec, so the payload goes across
//! untouched; the header is the outgoing leg's own: its SSRC, consecutive sequence numbers,
//! and a timestamp that moves as the incoming one did, so the receiver hears the same
//! timing, gaps included. A new incoming stream (SSRC) starts a talk spurt; a packet older
//! than the last one forwarded is dropped (the far end's jitter buffer would drop it too).

use super::rtp::{Packetizer, RtpIn};

/// A jump of more than this many samples (2 s at 8 kHz) is a new timeline, not a gap.
const MAX_GAP: u32 = 16_000;
/// Samples one frame moves the clock when the incoming timeline cannot be followed.
const FRAME_SAMPLES: u32 = 160;

/// Re-stamps one leg's incoming packets as another leg's outgoing stream.
#[derive(Debug, Clone)]
pub struct Forwarder {
    tx: Packetizer,
    /// Incoming audio and telephone-event payload types, and what they become.
    audio: (u8, u8),
    events: Option<(u8, u8)>,
    /// The last packet forwarded: its SSRC and timestamp.
    last: Option<(u32, u32)>,
}

impl Forwarder {
    /// Continues the outgoing stream `tx` (its SSRC, sequence and clock). `audio`: the
    /// incoming payload type and the outgoing one; `events`: the same for telephone-events
    /// (`None`: one side has none, and key presses are not forwarded).
    pub fn new(mut tx: Packetizer, audio: (u8, u8), events: Option<(u8, u8)>) -> Self {
        tx.mark_next();
        Self {
            tx,
            audio,
            events,
            last: None,
        }
    }

    /// The outgoing stream, for RTCP sender reports.
    pub fn packetizer(&self) -> &Packetizer {
        &self.tx
    }

    /// Writes packet `p` (its `payload`) as the outgoing leg's into `out`; its length, or
    /// `None` when it is not forwarded (another payload type, too old, too big for `out`).
    pub fn forward(&mut self, p: &RtpIn, payload: &[u8], out: &mut [u8]) -> Option<usize> {
        let pt = if p.payload_type == self.audio.0 {
            self.audio.1
        } else {
            match self.events {
                Some((from, to)) if p.payload_type == from => to,
                _ => return None,
            }
        };
        if out.len() < super::rtp::HEADER_LEN + payload.len() {
            return None;
        }
        match self.last {
            None => {}
            Some((ssrc, ts)) if ssrc == p.ssrc => {
                let step = p.timestamp.wrapping_sub(ts);
                if step > u32::MAX / 2 {
                    // older than what went out
                    return None;
                }
                if step > MAX_GAP {
                    self.tx.advance(FRAME_SAMPLES);
                    self.tx.mark_next();
                } else {
                    self.tx.advance(step);
                }
            }
            Some(_) => {
                // another stream on the incoming leg: a new talk spurt, one frame on
                self.tx.advance(FRAME_SAMPLES);
                self.tx.mark_next();
            }
        }
        if p.marker {
            self.tx.mark_next();
        }
        self.last = Some((p.ssrc, p.timestamp));
        Some(self.tx.write(pt, payload, 0, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::parse;

    fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool) -> RtpIn {
        RtpIn {
            payload_type: pt,
            marker,
            sequence: seq,
            timestamp: ts,
            ssrc,
            payload_start: 12,
            payload_end: 172,
        }
    }

    fn fwd() -> Forwarder {
        Forwarder::new(
            Packetizer::new(0xABCD, 1000, 50_000),
            (8, 8),
            Some((101, 96)),
        )
    }

    #[test]
    fn the_outgoing_stream_continues_with_its_own_ssrc_sequence_and_the_incoming_timing() {
        let mut f = fwd();
        let payload = [0xD5u8; 160];
        let mut out = [0u8; 400];
        let mut seen = Vec::new();
        // 20 ms packets, then a 60 ms gap (two lost), then one more
        for (seq, ts) in [(7u16, 900u32), (8, 1060), (9, 1220), (12, 1700)] {
            let n = f
                .forward(&packet(8, seq, ts, 77, false), &payload, &mut out)
                .unwrap();
            let p = parse(&out[..n]).unwrap();
            assert_eq!(&out[p.payload_start..p.payload_end], &payload[..]);
            seen.push((p.ssrc, p.sequence, p.timestamp, p.marker, p.payload_type));
        }
        assert_eq!(
            seen,
            vec![
                (0xABCD, 1000, 50_000, true, 8),
                (0xABCD, 1001, 50_160, false, 8),
                (0xABCD, 1002, 50_320, false, 8),
                (0xABCD, 1003, 50_800, false, 8),
            ]
        );
    }

    #[test]
    fn key_presses_change_payload_type_and_others_are_not_forwarded() {
        let mut f = fwd();
        let mut out = [0u8; 400];
        let n = f
            .forward(&packet(101, 1, 160, 5, true), &[1, 0x0a, 0, 160], &mut out)
            .unwrap();
        assert_eq!(parse(&out[..n]).unwrap().payload_type, 96);
        // the event's later packets share its timestamp
        let n = f
            .forward(&packet(101, 2, 160, 5, false), &[1, 0x0a, 1, 64], &mut out)
            .unwrap();
        let p = parse(&out[..n]).unwrap();
        assert_eq!((p.timestamp, p.sequence), (50_000, 1001));
        assert_eq!(
            f.forward(&packet(13, 3, 320, 5, false), &[0], &mut out),
            None
        );
        let mut no_keys = Forwarder::new(Packetizer::new(1, 1, 1), (0, 0), None);
        assert_eq!(
            no_keys.forward(&packet(101, 1, 160, 5, true), &[1, 0, 0, 0], &mut out),
            None
        );
    }

    #[test]
    fn late_packets_are_dropped_and_new_streams_or_jumps_start_a_talk_spurt() {
        let mut f = fwd();
        let payload = [0u8; 160];
        let mut out = [0u8; 400];
        let mut go = |p: RtpIn| {
            f.forward(&p, &payload, &mut out)
                .map(|n| parse(&out[..n]).unwrap())
        };
        go(packet(8, 1, 1000, 9, false)).unwrap();
        go(packet(8, 2, 1160, 9, false)).unwrap();
        assert!(
            go(packet(8, 1, 1000, 9, false)).is_none(),
            "older than the last"
        );
        // the incoming side restarted with a new SSRC: one frame on, marked
        let p = go(packet(8, 500, 9_999_999, 10, false)).unwrap();
        assert_eq!((p.timestamp, p.marker), (50_320, true));
        // a jump of an hour on the same SSRC: one frame on, marked
        let p = go(packet(
            8,
            501,
            9_999_999u32.wrapping_add(28_800_000),
            10,
            false,
        ))
        .unwrap();
        assert_eq!((p.timestamp, p.marker), (50_480, true));
        // too big for the buffer
        let big = f.forward(&packet(8, 502, 1, 10, false), &[0u8; 1600], &mut [0u8; 400]);
        assert!(big.is_none());
    }
}
