//! The phone side of a live call, without IO: caller RTP in (jitter buffer, G.711 decoding,
//! concealment, DTMF) and agent audio out (G.711 encoding, the 60 ms pacer, RTP stamping).
//!
//! The call's task feeds it accepted RTP packets and agent frames, and once per 20 ms tick
//! (the tick's scheduled time, so the media clock never drifts) asks it for the caller's
//! frame for the agent and for the one packet to send to the caller: agent audio when there
//! is some, silence otherwise, so the trunk always sees a steady stream.
//!
//! Agent audio beyond the pacer's 60 ms waits upstream in a bounded queue (a transport may
//! deliver faster than real time); [`PhoneMedia::flush`] drops both at once on barge-in and
//! reports what the caller will now not hear, and what they still hear (the residual).

use std::collections::VecDeque;
use std::time::Duration;

use crate::media::codec::{Codec, Decoder};
use crate::media::dtmf::DtmfReceiver;
use crate::media::frame::{Frame, FRAME_MS, FRAME_SAMPLES, SILENCE};
use crate::media::g711::Law;
use crate::media::jitter::{JitterBuffer, JitterConfig, Playout, Push};
use crate::media::opus_codec::OpusError;
use crate::media::pacer::Pacer;
use crate::media::rtp::{Packetizer, ReceiveStats, RtpIn, HEADER_LEN};
use crate::openai::AgentAudio;

/// One encoded 20 ms frame toward the caller.
pub type G711Frame = [u8; FRAME_SAMPLES];

/// A frame waiting to go to the caller, with when the agent's audio arrived (µs since the
/// call started; `NOT_AGENT` for the relay's own prompts and comfort noise).
#[derive(Debug, Clone, Copy)]
struct Queued {
    frame: G711Frame,
    at_us: u64,
}

const NOT_AGENT: u64 = u64::MAX;
/// The largest RTP packet [`PhoneMedia::poll_out`] writes.
pub const MAX_OUT: usize = HEADER_LEN + FRAME_SAMPLES;
/// Agent audio held upstream of the pacer at most (60 s). Beyond it new audio is dropped
/// and counted; a transport never runs that far ahead in practice.
const UPSTREAM_MAX: usize = 3_000;

/// What the caller's stream did, for the call's media stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhoneCounters {
    /// Frames of caller audio given to the agent.
    pub frames_in: u64,
    /// Of them, concealed (lost or late packets).
    pub concealed: u64,
    /// Frames of agent (or prompt) audio sent to the caller.
    pub frames_out: u64,
    /// Agent frames dropped because the upstream queue was full.
    pub overflow: u64,
    /// Caller packets the jitter buffer refused (late, duplicate, invalid).
    pub refused: u64,
}

/// What a barge-in flush did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Agent audio dropped unplayed, in ms.
    pub unplayed_ms: u32,
    /// Agent audio the caller still hears after `now`: the rest of the frame last sent.
    pub residual_ms: u32,
}

/// The phone leg's media state. See the module docs.
#[derive(Debug)]
pub struct PhoneMedia {
    law: Law,
    payload_type: u8,
    dtmf_payload_type: Option<u8>,
    jitter: JitterBuffer,
    decoder: Decoder,
    dtmf: DtmfReceiver,
    rx: ReceiveStats,
    tx: Packetizer,
    pacer: Pacer<Queued>,
    upstream: VecDeque<Queued>,
    caller: Frame,
    silence: G711Frame,
    /// When the last agent frame went out (tick time), for the residual.
    last_agent_sent: Option<Duration>,
    counters: PhoneCounters,
}

impl PhoneMedia {
    /// Media for a call that agreed on `codec` (PCMU or PCMA) with `payload_type`, and
    /// telephone-event on `dtmf_payload_type`.
    pub fn new(
        codec: Codec,
        payload_type: u8,
        dtmf_payload_type: Option<u8>,
    ) -> Result<Self, OpusError> {
        let law = codec.law().unwrap_or(Law::Mu);
        let silence = [law.silence_byte(); FRAME_SAMPLES];
        Ok(Self {
            law,
            payload_type,
            dtmf_payload_type,
            jitter: JitterBuffer::new(JitterConfig::new(codec)),
            decoder: Decoder::new(codec)?,
            dtmf: DtmfReceiver::new(),
            rx: ReceiveStats::default(),
            tx: Packetizer::new(rand::random(), rand::random(), rand::random()),
            pacer: Pacer::new(Queued {
                frame: silence,
                at_us: NOT_AGENT,
            }),
            upstream: VecDeque::new(),
            caller: SILENCE,
            silence,
            last_agent_sent: None,
            counters: PhoneCounters::default(),
        })
    }

    /// The phone leg's G.711 law.
    pub fn law(&self) -> Law {
        self.law
    }

    /// A re-INVITE changed the payload type numbers.
    pub fn set_payload_types(&mut self, payload_type: u8, dtmf: Option<u8>) {
        self.payload_type = payload_type;
        self.dtmf_payload_type = dtmf;
        self.tx.mark_next();
    }

    /// Takes one accepted RTP packet (`payload` is its payload) arriving at `now`. Returns a
    /// key when a DTMF press ended.
    pub fn on_rtp(&mut self, now: Duration, p: &RtpIn, payload: &[u8]) -> Option<char> {
        self.rx
            .on_packet(p, (now.as_micros() / 125) as u32 /* 8 kHz ticks */);
        if p.payload_type == self.payload_type {
            match self
                .jitter
                .push(now, p.ssrc, p.sequence, p.timestamp, payload)
            {
                Push::Accepted | Push::Restarted | Push::Probation => {}
                Push::Duplicate | Push::Late | Push::Invalid => self.counters.refused += 1,
            }
            None
        } else if Some(p.payload_type) == self.dtmf_payload_type {
            self.dtmf.push(now, p.timestamp, payload).map(|d| d.key)
        } else {
            None
        }
    }

    /// A DTMF key whose end packet was lost, reported once its time passed.
    pub fn poll_dtmf(&mut self, now: Duration) -> Option<char> {
        self.dtmf.poll(now).map(|d| d.key)
    }

    /// The caller's next 20 ms (call once per tick).
    pub fn caller_frame(&mut self, now: Duration) -> (&Frame, Playout) {
        let kind = self.jitter.pop(now, &mut self.decoder, &mut self.caller);
        self.counters.frames_in += 1;
        if kind == Playout::Concealed {
            self.counters.concealed += 1;
        }
        (&self.caller, kind)
    }

    /// Queues 20 ms of agent audio, arrived at `now`, for the caller.
    pub fn push_agent(&mut self, now: Duration, audio: &AgentAudio) {
        let mut frame = self.silence;
        match audio {
            AgentAudio::Pcm(pcm) => self.law.encode(pcm, &mut frame),
            AgentAudio::G711(law, bytes) if *law == self.law => frame = *bytes,
            AgentAudio::G711(law, bytes) => {
                let mut pcm = SILENCE;
                law.decode(bytes, &mut pcm);
                self.law.encode(&pcm, &mut frame);
            }
        }
        self.push_encoded(Queued {
            frame,
            at_us: now.as_micros() as u64,
        });
    }

    /// Queues PCM (a prompt, comfort noise) for the caller, cut into 20 ms frames; a short
    /// last frame is padded with silence.
    pub fn push_pcm(&mut self, samples: &[i16]) {
        for chunk in samples.chunks(FRAME_SAMPLES) {
            let mut frame = self.silence;
            self.law.encode(chunk, &mut frame[..chunk.len()]);
            self.push_encoded(Queued {
                frame,
                at_us: NOT_AGENT,
            });
        }
    }

    fn push_encoded(&mut self, frame: Queued) {
        if !self.upstream.is_empty() {
            if self.upstream.len() >= UPSTREAM_MAX {
                self.counters.overflow += 1;
                return;
            }
            self.upstream.push_back(frame);
        } else if let Err(frame) = self.pacer.push(frame) {
            self.upstream.push_back(frame);
        }
    }

    /// The one packet for the caller at tick `now`, written into `out` (at least
    /// [`MAX_OUT`] bytes): agent audio if any is due, else silence (or a prompt). Returns
    /// its length and, for agent audio, how long the relay held it (arrival to send).
    pub fn poll_out(&mut self, now: Duration, out: &mut [u8]) -> (usize, Option<Duration>) {
        let paced = self.pacer.poll(now);
        // refill the pacer from upstream as it drains
        while let Some(f) = self.upstream.front().copied() {
            if self.pacer.push(f).is_err() {
                break;
            }
            self.upstream.pop_front();
        }
        let (frame, held) = match paced {
            Some(p) => {
                if p.marker {
                    self.tx.mark_next();
                }
                self.last_agent_sent = Some(now);
                self.counters.frames_out += 1;
                let held = (p.frame.at_us != NOT_AGENT)
                    .then(|| now.saturating_sub(Duration::from_micros(p.frame.at_us)));
                (p.frame.frame, held)
            }
            None => (self.silence, None),
        };
        let n = self
            .tx
            .write(self.payload_type, &frame, FRAME_SAMPLES as u32, out);
        (n, held)
    }

    /// Time passes with nothing sent (on hold): keeps the media clock going.
    pub fn skip(&mut self) {
        self.tx.skip(FRAME_SAMPLES as u32);
    }

    /// Barge-in at `now`: drops all agent audio not yet sent.
    pub fn flush(&mut self, now: Duration) -> Flushed {
        let unplayed = self.pacer.flush() + self.upstream.len() as u32 * FRAME_MS;
        self.upstream.clear();
        let frame = Duration::from_millis(FRAME_MS as u64);
        let residual = match self.last_agent_sent {
            Some(sent) if sent + frame > now => (sent + frame - now).as_millis() as u32,
            _ => 0,
        };
        Flushed {
            unplayed_ms: unplayed,
            residual_ms: residual,
        }
    }

    /// Nothing queued for the caller.
    pub fn is_idle(&self) -> bool {
        self.pacer.is_empty() && self.upstream.is_empty()
    }

    /// Counters so far.
    pub fn counters(&self) -> PhoneCounters {
        self.counters
    }

    /// The caller's RTP statistics (loss, jitter), for RTCP and the call's stats.
    pub fn receive_stats(&mut self) -> &mut ReceiveStats {
        &mut self.rx
    }

    /// The sender side, for RTCP sender reports.
    pub fn packetizer(&self) -> &Packetizer {
        &self.tx
    }

    /// The jitter buffer's depth now, in ms.
    pub fn jitter_depth_ms(&self) -> u32 {
        self.jitter.level_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn packet(seq: u16, ts: u32, pt: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = Packetizer::new(7, seq, ts);
        let mut out = vec![0u8; HEADER_LEN + payload.len()];
        let n = p.write(pt, payload, payload.len() as u32, &mut out);
        out.truncate(n);
        out
    }

    fn tone() -> Frame {
        let mut f = SILENCE;
        for (i, s) in f.iter_mut().enumerate() {
            *s = ((i as f32 * 0.3).sin() * 8000.0) as i16;
        }
        f
    }

    #[test]
    fn agent_audio_goes_out_one_frame_per_tick_then_silence() {
        let mut m = PhoneMedia::new(Codec::Pcmu, 0, Some(101)).unwrap();
        for _ in 0..5 {
            m.push_agent(ms(0), &AgentAudio::Pcm(tone()));
        }
        let mut out = [0u8; MAX_OUT];
        let mut agent = 0;
        for t in 0..8u64 {
            let (n, held) = m.poll_out(ms(20 * t), &mut out);
            let a = held.is_some();
            if let Some(h) = held {
                assert_eq!(h, ms(20 * t), "held from arrival at 0 until its slot");
            }
            assert_eq!(n, MAX_OUT, "one full packet every tick");
            let p = rtp::parse(&out[..n]).unwrap();
            assert_eq!(p.payload_type, 0);
            if a {
                agent += 1;
                assert!(out[HEADER_LEN..n].iter().any(|&b| b != 0xFF));
            } else {
                assert!(out[HEADER_LEN..n].iter().all(|&b| b == 0xFF));
            }
        }
        assert_eq!(agent, 5);
        assert!(m.is_idle());
        assert_eq!(m.counters().frames_out, 5);
    }

    #[test]
    fn a_flush_drops_everything_queued_and_reports_the_residual() {
        let mut m = PhoneMedia::new(Codec::Pcma, 8, None).unwrap();
        for _ in 0..50 {
            m.push_agent(ms(0), &AgentAudio::Pcm(tone()));
        }
        let mut out = [0u8; MAX_OUT];
        m.poll_out(ms(0), &mut out);
        m.poll_out(ms(20), &mut out);
        // the relay learns of the barge-in 5 ms after the last frame went out
        let f = m.flush(ms(25));
        assert_eq!(f.residual_ms, 15);
        assert_eq!(f.unplayed_ms, 48 * 20);
        assert!(m.is_idle());
        let (_, held) = m.poll_out(ms(40), &mut out);
        assert!(held.is_none(), "nothing of the old answer after the flush");
        // long after the last agent frame: nothing still heard
        assert_eq!(m.flush(ms(500)).residual_ms, 0);
    }

    #[test]
    fn caller_audio_is_decoded_and_dtmf_keys_come_out() {
        let mut m = PhoneMedia::new(Codec::Pcmu, 0, Some(101)).unwrap();
        let mut enc = [0u8; 160];
        Law::Mu.encode(&tone(), &mut enc);
        let mut loud = 0;
        for i in 0..10u16 {
            let d = packet(i, i as u32 * 160, 0, &enc);
            let p = rtp::parse(&d).unwrap();
            assert_eq!(
                m.on_rtp(ms(20 * i as u64), &p, &d[p.payload_start..p.payload_end]),
                None
            );
            let (f, _) = m.caller_frame(ms(20 * i as u64 + 1));
            if f.iter().any(|&s| s.abs() > 4000) {
                loud += 1;
            }
        }
        assert!(loud >= 7, "the caller's tone reaches the agent: {loud}");
        // key 5: start, then end (E bit), duration 800
        let start = packet(100, 5000, 101, &[5, 10, 0, 160]);
        let end = packet(101, 5000, 101, &[5, 0x80 | 10, 3, 32]);
        let p = rtp::parse(&start).unwrap();
        assert_eq!(
            m.on_rtp(ms(300), &p, &start[p.payload_start..p.payload_end]),
            None
        );
        let p = rtp::parse(&end).unwrap();
        assert_eq!(
            m.on_rtp(ms(400), &p, &end[p.payload_start..p.payload_end]),
            Some('5')
        );
    }

    #[test]
    fn a_prompt_in_another_law_is_transcoded() {
        let mut m = PhoneMedia::new(Codec::Pcma, 8, None).unwrap();
        let mut mu = [0u8; 160];
        Law::Mu.encode(&tone(), &mut mu);
        m.push_agent(ms(0), &AgentAudio::G711(Law::Mu, mu));
        m.push_pcm(&[1000i16; 200]);
        let mut out = [0u8; MAX_OUT];
        let (n, _) = m.poll_out(ms(0), &mut out);
        let mut back = SILENCE;
        Law::A.decode(&out[HEADER_LEN..n], &mut back);
        assert!((back[10] - tone()[10]).abs() < 600);
    }
}
