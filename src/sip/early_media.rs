//! What a placed call's far end plays before it answers (ringback, the network's
//! announcement), listened to for the special information tones that say the number cannot
//! be reached. IO-free: the dialling loop hands it each early datagram and the early answer.
//!
//! The media may overtake the 183 that describes it: the network's announcement server sends
//! RTP straight to the relay while the 183 goes through proxies (and, here, through the SIP
//! stack's tasks). Datagrams that come before the early answer are held, the latest
//! [`HELD_PACKETS`] of them, and listened to once the answer says where the media comes from,
//! so that the first tone is not lost to that race.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::sdp::Negotiated;
use crate::media::frame::Framer;
use crate::media::sit::Sit;

/// Datagrams held while no early answer is known: one second of 20 ms packets.
pub const HELD_PACKETS: usize = 50;
/// Longer datagrams are not held: a G.711 packet of 60 ms is 492 bytes.
pub const HELD_MAX_BYTES: usize = 512;

/// Listens to early media for special information tones.
#[derive(Default)]
pub struct EarlyListener {
    framer: Framer,
    sit: Sit,
    pcm: Vec<i16>,
    /// What came before the early answer, oldest first; spent buffers are reused.
    held: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl EarlyListener {
    /// Takes one early RTP datagram that came from `src`, with the early answer if one came
    /// yet; true once the tones were heard. Only what comes from the early answer's address,
    /// in its codec, is listened to: a stranger who finds the RTP port cannot make a number
    /// look out of service.
    pub fn hears_sit(
        &mut self,
        early: Option<&Negotiated>,
        src: SocketAddr,
        datagram: &[u8],
    ) -> bool {
        match early {
            Some(n) => self.listen(n, src, datagram),
            None => {
                self.hold(src, datagram);
                false
            }
        }
    }

    /// The early answer came: listens to what was held until then; true if the tones were
    /// among it.
    pub fn answered(&mut self, n: &Negotiated) -> bool {
        let mut found = false;
        while let Some((src, datagram)) = self.held.pop_front() {
            found = found || self.listen(n, src, &datagram);
        }
        found
    }

    fn hold(&mut self, src: SocketAddr, datagram: &[u8]) {
        if datagram.len() > HELD_MAX_BYTES {
            return;
        }
        let mut buf = if self.held.len() == HELD_PACKETS {
            self.held.pop_front().map(|(_, b)| b).unwrap_or_default()
        } else {
            Vec::with_capacity(HELD_MAX_BYTES)
        };
        buf.clear();
        buf.extend_from_slice(datagram);
        self.held.push_back((src, buf));
    }

    fn listen(&mut self, n: &Negotiated, src: SocketAddr, datagram: &[u8]) -> bool {
        let Ok(p) = crate::media::rtp::parse(datagram) else {
            return false;
        };
        if n.remote_rtp != Some(src) || p.payload_type != n.payload_type {
            return false;
        }
        let payload = &datagram[p.payload_start..p.payload_end];
        self.pcm.resize(payload.len(), 0);
        n.codec.decode(payload, &mut self.pcm);
        let (framer, sit) = (&mut self.framer, &mut self.sit);
        let mut found = false;
        framer.push(&self.pcm, |f| found |= sit.handle_frame(f));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711::Law;
    use crate::media::rtp::{Packetizer, HEADER_LEN};
    use crate::sip::sdp;

    fn answer() -> Negotiated {
        sdp::negotiate(
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
              m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n",
        )
        .unwrap()
    }

    fn network() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    /// The three tones as 20 ms PCMA packets.
    fn sit_packets() -> Vec<Vec<u8>> {
        let tone = |hz: f32, ms: usize| -> Vec<i16> {
            (0..ms * 8)
                .map(|i| {
                    ((2.0 * std::f32::consts::PI * hz * i as f32 / 8000.0).sin() * 6000.0) as i16
                })
                .collect()
        };
        let sit = [tone(913.8, 274), tone(1370.6, 274), tone(1776.7, 380)].concat();
        let mut rtp = Packetizer::new(7, 0, 0);
        sit.chunks(160)
            .map(|pcm| {
                let mut payload = vec![0u8; pcm.len()];
                Law::A.encode(pcm, &mut payload);
                let mut d = vec![0u8; HEADER_LEN + payload.len()];
                let n = rtp.write(8, &payload, pcm.len() as u32, &mut d);
                d.truncate(n);
                d
            })
            .collect()
    }

    /// Whether the tones are heard when the early answer comes after the first `before`
    /// packets, all of them from `from`.
    fn heard_with_answer_after(before: usize, from: SocketAddr) -> bool {
        let (packets, n) = (sit_packets(), answer());
        let mut l = EarlyListener::default();
        let early = packets[..before].iter().any(|p| l.hears_sit(None, from, p));
        assert!(
            !early,
            "heard before the answer said where the media comes from"
        );
        l.answered(&n)
            || packets[before..]
                .iter()
                .any(|p| l.hears_sit(Some(&n), from, p))
    }

    #[test]
    fn only_the_early_answers_address_is_listened_to_for_the_tones() {
        let stranger: SocketAddr = "127.0.0.1:40002".parse().unwrap();
        assert!(heard_with_answer_after(0, network()));
        assert!(!heard_with_answer_after(0, stranger), "a stranger's tones");
        assert!(
            !heard_with_answer_after(10, stranger),
            "a stranger's tones held before the answer"
        );
    }

    #[test]
    fn tones_that_overtake_the_early_answer_are_heard() {
        // the whole first tone (274 ms), and then the first two, before the 183
        assert!(heard_with_answer_after(15, network()));
        assert!(heard_with_answer_after(30, network()));
        // all of them: heard as the answer comes
        let all = sit_packets().len();
        assert!(all <= HELD_PACKETS);
        assert!(heard_with_answer_after(all, network()));
    }

    #[test]
    fn what_is_held_is_bounded_to_the_latest_second() {
        let mut l = EarlyListener::default();
        let noise = vec![0u8; 172];
        let big = vec![0u8; HELD_MAX_BYTES + 1];
        for _ in 0..10 * HELD_PACKETS {
            l.hears_sit(None, network(), &noise);
            l.hears_sit(None, network(), &big);
        }
        assert_eq!(l.held.len(), HELD_PACKETS);
        assert!(l.held.iter().all(|(_, d)| d.len() == noise.len()));
        // the tones after more than a second of other packets: the oldest went, the tones
        // stayed and are heard
        for p in sit_packets() {
            l.hears_sit(None, network(), &p);
        }
        assert!(l.answered(&answer()));
        assert!(l.held.is_empty());
    }
}
