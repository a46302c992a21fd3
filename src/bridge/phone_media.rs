//! The phone side of a live call, without IO: caller RTP in (jitter buffer, G.711 decoding,
//! concealment, DTMF) and agent audio out (G.711 encoding, the 60 ms pacer, RTP stamping).
//!
//! The call's task feeds it accepted RTP packets and agent frames, and once per 20 ms tick
//! (the tick's scheduled time, so the media clock never drifts) asks it for the caller's
//! frame for the agent and for the one packet to send to the caller: agent audio when there
//! is some, silence otherwise, so the trunk always sees a steady stream. In the middle of an
//! answer whose next frame is late, the tick's slot waits for it instead
//! ([`PhoneMedia::poll_late`] sends it when it comes, within the slot).
//!
//! Agent audio beyond the pacer's 60 ms waits upstream in a bounded queue (a transport may
//! deliver faster than real time); [`PhoneMedia::flush`] drops both at once on barge-in and
//! reports what the caller will now not hear, and what they still hear (the residual).
//!
//! When the call is recorded ([`PhoneMedia::start_recording`]), the tap is here, where the
//! audio is exactly as on the line: the caller's frame as popped each tick, and the PCM of
//! each packet sent (see [`super::call_recording`]).

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use super::call_recording::{CallRecording, RecordingInfo};

use crate::media::codec::{Codec, Decoder, G711Decoder};
use crate::media::dtmf::DtmfReceiver;
use crate::media::echo_gate::{EchoCounters, EchoGate};
use crate::media::frame::{Frame, FRAME_MS, FRAME_SAMPLES, FRAME_US, SILENCE};
use crate::media::g711::Law;
use crate::media::jitter::{JitterBuffer, JitterConfig, Playout, Push};
use crate::media::opus_codec::OpusError;
use crate::media::pacer::{Paced, Pacer};
use crate::media::rtp::{Packetizer, ReceiveStats, RtpIn, HEADER_LEN};
use crate::openai::AgentAudio;

/// One encoded 20 ms frame toward the caller.
pub type G711Frame = [u8; FRAME_SAMPLES];

/// A frame waiting to go to the caller, with when the agent's audio arrived (µs since the
/// call started; `NOT_AGENT` for the relay's own prompts and comfort noise) and the tick it
/// would go out at had the agent's audio never been paused (µs, see [`PhoneMedia::poll_out`]).
#[derive(Debug, Clone, Copy)]
struct Queued {
    frame: G711Frame,
    at_us: u64,
    unpaused_us: u64,
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
    /// The caller's frame as it goes to the agent (the echo gate's output).
    to_agent: Frame,
    /// Keeps the agent's echo on the line from the agent (see [`EchoGate`]), when on.
    echo_gate: Option<EchoGate>,
    silence: G711Frame,
    /// When the last agent frame went out (tick time), for the residual.
    last_agent_sent: Option<Duration>,
    /// The agent's audio is held (the caller speaks over it): silence goes out meanwhile.
    paused: bool,
    /// The tick whose slot waits for the agent's next frame, late (nothing sent in it yet):
    /// [`PhoneMedia::poll_late`] sends the frame when it comes, within the slot.
    held_slot: Option<Duration>,
    /// The last tick [`PhoneMedia::poll_out`] ran at, and when the frame queued last would
    /// go out had the agent's audio never been paused (µs): the same queue without the
    /// pauses, whose wait is the relay's own.
    last_tick_us: Option<u64>,
    unpaused_last_us: Option<u64>,
    counters: PhoneCounters,
    /// The call's recording, while it runs.
    recording: Option<CallRecording>,
}

impl PhoneMedia {
    /// The media of a phone call in G.711 (`law`): what a phone leg always carries.
    pub fn g711(law: Law, payload_type: u8, dtmf_payload_type: Option<u8>) -> Self {
        let codec = match law {
            Law::Mu => Codec::Pcmu,
            Law::A => Codec::Pcma,
        };
        Self::with_decoder(
            codec,
            Decoder::G711(G711Decoder::new(law)),
            payload_type,
            dtmf_payload_type,
        )
    }

    /// Media for a call that agreed on `codec` (PCMU or PCMA) with `payload_type`, and
    /// telephone-event on `dtmf_payload_type`.
    pub fn new(
        codec: Codec,
        payload_type: u8,
        dtmf_payload_type: Option<u8>,
    ) -> Result<Self, OpusError> {
        let decoder = Decoder::new(codec)?;
        Ok(Self::with_decoder(
            codec,
            decoder,
            payload_type,
            dtmf_payload_type,
        ))
    }

    fn with_decoder(
        codec: Codec,
        decoder: Decoder,
        payload_type: u8,
        dtmf_payload_type: Option<u8>,
    ) -> Self {
        let law = codec.law().unwrap_or(Law::Mu);
        let silence = [law.silence_byte(); FRAME_SAMPLES];
        Self {
            law,
            payload_type,
            dtmf_payload_type,
            jitter: JitterBuffer::new(JitterConfig::new(codec)),
            decoder,
            dtmf: DtmfReceiver::new(),
            rx: ReceiveStats::default(),
            tx: Packetizer::new(rand::random(), rand::random(), rand::random()),
            pacer: Pacer::new(Queued {
                frame: silence,
                at_us: NOT_AGENT,
                unpaused_us: 0,
            }),
            upstream: VecDeque::new(),
            caller: SILENCE,
            to_agent: SILENCE,
            echo_gate: None,
            silence,
            last_agent_sent: None,
            paused: false,
            held_slot: None,
            last_tick_us: None,
            unpaused_last_us: None,
            counters: PhoneCounters::default(),
            recording: None,
        }
    }

    /// Turns the line-echo gate on: a caller frame goes to the agent only when it is
    /// `margin_db` louder than the agent's loudest echo could be (see [`EchoGate`]).
    pub fn enable_echo_gate(&mut self, margin_db: f32) {
        self.echo_gate = Some(EchoGate::new(self.law, margin_db));
    }

    /// What the echo gate did (all zero when it is off).
    pub fn echo_counters(&self) -> EchoCounters {
        self.echo_gate
            .as_ref()
            .map(EchoGate::counters)
            .unwrap_or_default()
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

    /// Counts a packet in the receive statistics only (a call that does not decode it: the
    /// echo line test).
    pub fn count_rtp(&mut self, now: Duration, p: &RtpIn) {
        self.rx
            .on_packet(p, (now.as_micros() / 125) as u32 /* 8 kHz ticks */);
    }

    /// The payload type of the call's audio.
    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    /// The telephone-event payload type, if the call has one.
    pub fn dtmf_payload_type(&self) -> Option<u8> {
        self.dtmf_payload_type
    }

    /// Stamps one frame of G.711 the caller is to hear as is (the echo line test) into
    /// `out`; returns the packet's length.
    pub fn write_g711(&mut self, frame: &G711Frame, out: &mut [u8]) -> usize {
        self.counters.frames_out += 1;
        self.tx
            .write(self.payload_type, frame, FRAME_SAMPLES as u32, out)
    }

    /// A DTMF key whose end packet was lost, reported once its time passed.
    pub fn poll_dtmf(&mut self, now: Duration) -> Option<char> {
        self.dtmf.poll(now).map(|d| d.key)
    }

    /// The caller's next 20 ms (call once per tick).
    pub fn caller_frame(&mut self, now: Duration) -> (&Frame, Playout) {
        let kind = self.jitter.pop(now, &mut self.decoder, &mut self.caller);
        if let Some(r) = self.recording.as_mut() {
            r.caller(now, &self.caller);
        }
        self.counters.frames_in += 1;
        if kind == Playout::Concealed {
            self.counters.concealed += 1;
        }
        match self.echo_gate.as_mut() {
            Some(gate) => {
                self.to_agent = self.caller;
                gate.handle_caller(&mut self.to_agent);
                (&self.to_agent, kind)
            }
            None => (&self.caller, kind),
        }
    }

    /// The caller's frame last taken by [`PhoneMedia::caller_frame`], as it goes to the agent.
    pub fn last_caller_frame(&self) -> &Frame {
        if self.echo_gate.is_some() {
            &self.to_agent
        } else {
            &self.caller
        }
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
        self.push_encoded(frame, now.as_micros() as u64);
    }

    /// Queues PCM (a prompt, comfort noise) for the caller, cut into 20 ms frames; a short
    /// last frame is padded with silence.
    pub fn push_pcm(&mut self, samples: &[i16]) {
        for chunk in samples.chunks(FRAME_SAMPLES) {
            let mut frame = self.silence;
            self.law.encode(chunk, &mut frame[..chunk.len()]);
            self.push_encoded(frame, NOT_AGENT);
        }
    }

    /// Queues a frame that arrived at `at_us` (`NOT_AGENT`: a prompt, queued now).
    fn push_encoded(&mut self, frame: G711Frame, at_us: u64) {
        if self.upstream.len() >= UPSTREAM_MAX {
            self.counters.overflow += 1;
            return;
        }
        // without pauses the pacer sends one queued frame a tick: this one goes at the tick
        // after the last one polled (at once before the first), or after the frame before it
        let next_tick = match self.last_tick_us {
            Some(t) => t + FRAME_US,
            None if at_us == NOT_AGENT => 0,
            None => at_us,
        };
        let unpaused_us = self
            .unpaused_last_us
            .map_or(next_tick, |last| next_tick.max(last + FRAME_US));
        self.unpaused_last_us = Some(unpaused_us);
        let frame = Queued {
            frame,
            at_us,
            unpaused_us,
        };
        if !self.upstream.is_empty() {
            self.upstream.push_back(frame);
        } else if let Err(frame) = self.pacer.push(frame) {
            self.upstream.push_back(frame);
        }
    }

    /// The one packet for the caller at tick `now`, written into `out` (at least
    /// [`MAX_OUT`] bytes): agent audio if any is due, else silence (or a prompt). Returns
    /// its length and, for agent audio, how long the relay held it: from its arrival to the
    /// tick it went out at, or would have had the relay not paused the agent's audio while
    /// the caller spoke over it (a pause delays every frame queued behind it on purpose;
    /// that is not latency the relay adds).
    ///
    /// In the middle of the agent's answer with its next frame not there yet, nothing is
    /// sent (length 0): the slot waits for the frame, which [`PhoneMedia::poll_late`] sends
    /// when it comes. A slot the frame did not come in by the next tick carries no packet;
    /// the RTP timestamp moves on over it, as over a sender's silence.
    pub fn poll_out(&mut self, now: Duration, out: &mut [u8]) -> (usize, Option<Duration>) {
        self.close_held_slot();
        self.last_tick_us = Some(now.as_micros() as u64);
        let paced = if self.paused {
            None
        } else {
            self.pacer.poll(now)
        };
        self.refill();
        if paced.is_none() && !self.paused && self.pacer.is_holding() {
            self.held_slot = Some(now);
            return (0, None);
        }
        self.send(now, now, paced, out)
    }

    /// The agent's frame that came late for the slot waiting for it (see
    /// [`PhoneMedia::poll_out`]), to send at `now`, right after it was queued: its packet's
    /// length and how long the relay held it. `None` when no slot waits or no frame came.
    pub fn poll_late(
        &mut self,
        now: Duration,
        out: &mut [u8],
    ) -> Option<(usize, Option<Duration>)> {
        let slot = self.held_slot?;
        if self.paused {
            return None;
        }
        let paced = self.pacer.poll_held(now)?;
        self.held_slot = None;
        self.refill();
        Some(self.send(slot, now, Some(paced), out))
    }

    /// Refills the pacer from upstream as it drains.
    fn refill(&mut self) {
        while let Some(f) = self.upstream.front().copied() {
            if self.pacer.push(f).is_err() {
                break;
            }
            self.upstream.pop_front();
        }
    }

    /// A slot held for a late frame passed without it: no packet went in it; the media clock
    /// moves on over it, and the recording and the echo gate take it as silence.
    fn close_held_slot(&mut self) {
        let Some(slot) = self.held_slot.take() else {
            return;
        };
        self.tx.skip(FRAME_SAMPLES as u32);
        if let Some(r) = self.recording.as_mut() {
            r.agent(slot, &SILENCE);
        }
        if let Some(gate) = self.echo_gate.as_mut() {
            gate.handle_played(&self.silence);
        }
    }

    /// Writes the packet of the slot at tick `slot`, sent at `now`: `paced`'s frame, or
    /// silence.
    fn send(
        &mut self,
        slot: Duration,
        now: Duration,
        paced: Option<Paced<Queued>>,
        out: &mut [u8],
    ) -> (usize, Option<Duration>) {
        let (frame, held) = match paced {
            Some(p) => {
                if p.marker {
                    self.tx.mark_next();
                }
                self.last_agent_sent = Some(now);
                self.counters.frames_out += 1;
                let held = (p.frame.at_us != NOT_AGENT).then(|| {
                    let sent = (now.as_micros() as u64).min(p.frame.unpaused_us);
                    Duration::from_micros(sent.saturating_sub(p.frame.at_us))
                });
                (p.frame.frame, held)
            }
            None => (self.silence, None),
        };
        if let Some(r) = self.recording.as_mut() {
            // what the caller hears is the G.711 sent, decoded
            let mut pcm = SILENCE;
            self.law.decode(&frame, &mut pcm);
            r.agent(slot, &pcm);
        }
        if let Some(gate) = self.echo_gate.as_mut() {
            gate.handle_played(&frame);
        }
        let n = self
            .tx
            .write(self.payload_type, &frame, FRAME_SAMPLES as u32, out);
        (n, held)
    }

    /// Starts recording the call into `path` (a WAV, created or truncated) from tick `now`,
    /// stopping at `max_bytes` of file (0: no cap).
    pub fn start_recording(
        &mut self,
        path: &Path,
        max_bytes: u64,
        now: Duration,
    ) -> std::io::Result<()> {
        self.recording = Some(CallRecording::start(path, max_bytes, now)?);
        Ok(())
    }

    /// Ends the recording, if there is one, and describes the file.
    pub fn finish_recording(&mut self) -> Option<RecordingInfo> {
        self.recording.take()?.finish()
    }

    /// Tick `now` passes with nothing sent (the caller holds the call): keeps the media
    /// clock going. What the agent says meanwhile waits, as in a pause, and is not counted
    /// as held either.
    pub fn skip(&mut self, now: Duration) {
        self.close_held_slot();
        self.last_tick_us = Some(now.as_micros() as u64);
        self.tx.skip(FRAME_SAMPLES as u32);
        if let Some(gate) = self.echo_gate.as_mut() {
            gate.handle_played(&self.silence);
        }
    }

    /// The caller started speaking over the agent at `now`: its audio is held (nothing of it
    /// is dropped) and silence goes out until [`PhoneMedia::resume`]. Returns the residual:
    /// how much of the frame last sent the caller still hears, in ms.
    pub fn pause(&mut self, now: Duration) -> u32 {
        self.paused = true;
        self.residual_ms(now)
    }

    /// The held agent audio plays again, from where it stopped.
    pub fn resume(&mut self) {
        if self.paused {
            self.paused = false;
            self.pacer.restart_run();
        }
    }

    /// The agent's audio is held by [`PhoneMedia::pause`].
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn residual_ms(&self, now: Duration) -> u32 {
        let frame = Duration::from_millis(FRAME_MS as u64);
        match self.last_agent_sent {
            Some(sent) if sent + frame > now => (sent + frame - now).as_millis() as u32,
            _ => 0,
        }
    }

    /// Barge-in at `now`: drops all agent audio not yet sent.
    pub fn flush(&mut self, now: Duration) -> Flushed {
        let unplayed = self.pacer.flush() + self.upstream.len() as u32 * FRAME_MS;
        self.upstream.clear();
        self.unpaused_last_us = None;
        // what is dropped is dropped: nothing is left to hold
        self.paused = false;
        Flushed {
            unplayed_ms: unplayed,
            residual_ms: self.residual_ms(now),
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
        let mut sent = Vec::new();
        for t in 0..8u64 {
            let (n, held) = m.poll_out(ms(20 * t), &mut out);
            if t == 5 {
                // the slot after the answer waits for more of it: nothing goes yet
                assert_eq!(n, 0);
                continue;
            }
            let a = held.is_some();
            if let Some(h) = held {
                assert_eq!(h, ms(20 * t), "held from arrival at 0 until its slot");
            }
            assert_eq!(n, MAX_OUT, "one full packet every other tick");
            let p = rtp::parse(&out[..n]).unwrap();
            assert_eq!(p.payload_type, 0);
            sent.push((t, p.sequence, p.timestamp));
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
        // every packet is stamped with its own tick: the empty slot is a gap in time, not
        // in the sequence
        let (_, seq0, ts0) = sent[0];
        for (i, &(t, seq, ts)) in sent.iter().enumerate() {
            assert_eq!(seq, seq0.wrapping_add(i as u16));
            assert_eq!(ts, ts0.wrapping_add(160 * t as u32));
        }
    }

    /// Sends one tick and returns (length, held, sequence, timestamp, marker).
    fn tick(m: &mut PhoneMedia, t: u64) -> (usize, Option<Duration>, u16, u32, bool) {
        let mut out = [0u8; MAX_OUT];
        let (n, held) = m.poll_out(ms(t), &mut out);
        header(n, held, &out)
    }

    fn late(m: &mut PhoneMedia, t: u64) -> Option<(usize, Option<Duration>, u16, u32, bool)> {
        let mut out = [0u8; MAX_OUT];
        let (n, held) = m.poll_late(ms(t), &mut out)?;
        Some(header(n, held, &out))
    }

    fn header(
        n: usize,
        held: Option<Duration>,
        out: &[u8],
    ) -> (usize, Option<Duration>, u16, u32, bool) {
        match rtp::parse(&out[..n]) {
            Ok(p) if n > 0 => (n, held, p.sequence, p.timestamp, p.marker),
            _ => (n, held, 0, 0, false),
        }
    }

    #[test]
    fn an_agent_frame_late_for_its_slot_goes_out_when_it_comes() {
        let mut m = PhoneMedia::new(Codec::Pcmu, 0, Some(101)).unwrap();
        tick(&mut m, 0);
        m.push_agent(ms(3), &AgentAudio::Pcm(tone()));
        let (_, held, seq, ts, marker) = tick(&mut m, 20);
        assert_eq!(held, Some(ms(17)));
        assert!(marker);
        // the next frame is 7 ms late for its slot: nothing goes at the tick...
        assert_eq!(tick(&mut m, 40).0, 0);
        assert!(late(&mut m, 41).is_none(), "no frame yet");
        m.push_agent(ms(47), &AgentAudio::Pcm(tone()));
        // ...and it goes when it comes, in that slot: next sequence number and timestamp
        let (n, held, s, t, marker) = late(&mut m, 47).expect("sent as it came");
        assert_eq!(n, MAX_OUT);
        assert_eq!(held, Some(ms(0)));
        assert_eq!((s, t, marker), (seq + 1, ts + 160, false));
        // the answer goes on on the grid: the frame after it waits only its own time
        m.push_agent(ms(58), &AgentAudio::Pcm(tone()));
        assert!(
            late(&mut m, 58).is_none(),
            "a frame in time waits for its tick"
        );
        let (_, held, s, t, _) = tick(&mut m, 60);
        assert_eq!(held, Some(ms(2)));
        assert_eq!((s, t), (seq + 2, ts + 320));
        assert_eq!(m.counters().frames_out, 3);
    }

    #[test]
    fn a_slot_whose_frame_never_comes_carries_no_packet() {
        let mut m = PhoneMedia::new(Codec::Pcmu, 0, Some(101)).unwrap();
        m.push_agent(ms(0), &AgentAudio::Pcm(tone()));
        let (_, _, seq, ts, _) = tick(&mut m, 0);
        assert_eq!(tick(&mut m, 20).0, 0);
        // the slot passed: silence at the next tick, stamped for its own time
        let (n, held, s, t, _) = tick(&mut m, 40);
        assert_eq!((n, held), (MAX_OUT, None));
        assert_eq!((s, t), (seq + 1, ts + 320));
        // a frame now starts a new run at the next tick (marker), not at once
        m.push_agent(ms(45), &AgentAudio::Pcm(tone()));
        assert!(late(&mut m, 45).is_none());
        let (_, held, s, t, marker) = tick(&mut m, 60);
        assert_eq!(held, Some(ms(15)));
        assert_eq!((s, t, marker), (seq + 2, ts + 480, true));
    }

    #[test]
    fn a_frame_late_while_the_caller_speaks_over_the_agent_waits_for_the_resume() {
        let mut m = PhoneMedia::new(Codec::Pcmu, 0, Some(101)).unwrap();
        m.push_agent(ms(0), &AgentAudio::Pcm(tone()));
        let (_, _, seq, ts, _) = tick(&mut m, 0);
        assert_eq!(tick(&mut m, 20).0, 0);
        m.pause(ms(25));
        m.push_agent(ms(27), &AgentAudio::Pcm(tone()));
        assert!(late(&mut m, 27).is_none(), "held while the caller speaks");
        let (n, held, s, t, _) = tick(&mut m, 40);
        assert_eq!((n, held), (MAX_OUT, None), "silence");
        assert_eq!((s, t), (seq + 1, ts + 320));
        m.resume();
        let (_, held, s, t, marker) = tick(&mut m, 60);
        assert!(held.is_some());
        assert_eq!((s, t, marker), (seq + 2, ts + 480, true));
    }

    #[test]
    fn a_pause_while_the_caller_speaks_over_the_agent_is_not_counted_as_held() {
        let mut m = PhoneMedia::new(Codec::Pcmu, 0, Some(101)).unwrap();
        for _ in 0..3 {
            m.push_agent(ms(0), &AgentAudio::Pcm(tone()));
        }
        let mut out = [0u8; MAX_OUT];
        assert_eq!(m.poll_out(ms(0), &mut out).1, Some(ms(0)));
        // the caller speaks over the agent for ten ticks; a frame arrives meanwhile
        m.pause(ms(10));
        for t in 1..=10u64 {
            if t == 8 {
                m.push_agent(ms(150), &AgentAudio::Pcm(tone()));
            }
            assert_eq!(m.poll_out(ms(20 * t), &mut out).1, None, "paused");
        }
        m.resume();
        // sent at 220 ms, 200 ms of it paused: its own wait was one slot
        assert_eq!(m.poll_out(ms(220), &mut out).1, Some(ms(20)));
        assert_eq!(m.poll_out(ms(240), &mut out).1, Some(ms(40)));
        // arrived at 150 ms and sent at 260 ms; unpaused, the queue would have been empty
        // then, and it would have gone at the next tick
        assert_eq!(m.poll_out(ms(260), &mut out).1, Some(ms(10)));
        assert!(m.is_idle());
    }

    #[test]
    fn the_agent_audio_queued_behind_a_pause_counts_only_its_own_wait() {
        let mut m = PhoneMedia::new(Codec::Pcmu, 0, Some(101)).unwrap();
        let mut out = [0u8; MAX_OUT];
        m.poll_out(ms(0), &mut out);
        let mut held = Vec::new();
        // the agent's frames arrive 5 ms after each tick, one a tick, for 2 s; the caller
        // talks over it from 0.5 s to 0.8 s, a pause of 15 ticks the agent then plays on from
        for t in 0..100u64 {
            m.push_agent(ms(20 * t + 5), &AgentAudio::Pcm(tone()));
            if t == 25 {
                m.pause(ms(20 * t + 10));
            }
            if t == 40 {
                m.resume();
            }
            if let (_, Some(h)) = m.poll_out(ms(20 * t + 20), &mut out) {
                held.push(h);
            }
        }
        assert_eq!(held.len(), 100 - 15);
        // the rest of the answer goes out 15 ticks late: the pause's doing
        let mut t = 100;
        while let (_, Some(h)) = m.poll_out(ms(20 * t + 20), &mut out) {
            held.push(h);
            t += 1;
        }
        assert_eq!(held.len(), 100);
        assert!(held.iter().all(|&h| h == ms(15)), "{held:?}");
        // the next answer is not held behind the old one either
        m.push_agent(ms(20 * t + 25), &AgentAudio::Pcm(tone()));
        assert_eq!(m.poll_out(ms(20 * t + 40), &mut out).1, Some(ms(15)));
    }

    #[test]
    fn the_agent_audio_held_while_the_caller_holds_the_call_counts_only_its_own_wait() {
        let mut m = PhoneMedia::new(Codec::Pcmu, 0, Some(101)).unwrap();
        let mut out = [0u8; MAX_OUT];
        m.poll_out(ms(0), &mut out);
        // the caller holds the call for ten ticks; the agent speaks from the fifth on
        for t in 0..10u64 {
            if t >= 5 {
                m.push_agent(ms(20 * t + 5), &AgentAudio::Pcm(tone()));
            }
            m.skip(ms(20 * t + 20));
        }
        for t in 10..20u64 {
            m.push_agent(ms(20 * t + 5), &AgentAudio::Pcm(tone()));
            assert_eq!(m.poll_out(ms(20 * t + 20), &mut out).1, Some(ms(15)));
        }
    }

    #[test]
    fn without_a_pause_the_measured_wait_is_the_frames_real_wait() {
        let mut m = PhoneMedia::new(Codec::Pcma, 8, None).unwrap();
        let mut out = [0u8; MAX_OUT];
        m.poll_out(ms(0), &mut out);
        // what is queued, in order: an agent frame's arrival, or a prompt's frame (None)
        let mut queued: VecDeque<Option<Duration>> = VecDeque::new();
        let mut measured = 0;
        // bursts, gaps and more than the pacer's 60 ms at once, with barge-in flushes and
        // prompts among them
        let pattern = [1, 0, 0, 5, 0, 1, 1, 2, 0, 0, 0, 0, 1, 3, 1, 0, 9, 0, 1, 1];
        for (t, &n) in pattern.iter().cycle().take(400).enumerate() {
            let t = t as u64;
            for i in 0..n {
                let at = ms(20 * t + 3 + i);
                m.push_agent(at, &AgentAudio::Pcm(tone()));
                queued.push_back(Some(at));
            }
            if t % 97 == 50 {
                m.flush(ms(20 * t + 15));
                queued.clear();
            }
            if t % 89 == 30 {
                m.push_pcm(&[0; FRAME_SAMPLES * 2]);
                queued.extend([None, None]);
            }
            let now = ms(20 * t + 20);
            let before = m.counters().frames_out;
            let (_, held) = m.poll_out(now, &mut out);
            if m.counters().frames_out > before {
                let arrived = queued.pop_front().expect("a frame was queued");
                assert_eq!(held, arrived.map(|at| now - at), "tick {t}");
                measured += usize::from(held.is_some());
            } else {
                assert_eq!(held, None);
            }
        }
        assert!(measured > 300, "{measured}");
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

    #[test]
    fn the_recording_holds_the_caller_as_taken_and_a_barge_in_cut_as_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.wav");
        let mut m = PhoneMedia::new(Codec::Pcmu, 0, None).unwrap();
        m.start_recording(&path, 0, ms(0)).unwrap();
        let mut enc = [0u8; 160];
        Law::Mu.encode(&tone(), &mut enc);
        for _ in 0..50 {
            m.push_agent(ms(0), &AgentAudio::Pcm(tone()));
        }
        let mut out = [0u8; MAX_OUT];
        let mut sent = Vec::new();
        for i in 0..20u16 {
            let t = ms(20 * i as u64);
            let d = packet(i, i as u32 * 160, 0, &enc);
            let p = rtp::parse(&d).unwrap();
            m.on_rtp(t, &p, &d[p.payload_start..p.payload_end]);
            m.caller_frame(t);
            if i == 10 {
                // the caller barges in: the rest of the answer is dropped
                m.flush(t);
            }
            let (n, _) = m.poll_out(t, &mut out);
            sent.push(out[HEADER_LEN..n].to_vec());
        }
        let info = m.finish_recording().unwrap();
        assert_eq!(info.duration, ms(400));
        assert!(m.finish_recording().is_none(), "finished once");
        let b = std::fs::read(&path).unwrap();
        let at = |i: usize, ch: usize| {
            i16::from_le_bytes([b[44 + i * 4 + ch * 2], b[45 + i * 4 + ch * 2]])
        };
        for (k, bytes) in sent.iter().enumerate() {
            let mut pcm = SILENCE;
            Law::Mu.decode(bytes, &mut pcm);
            let got: Vec<i16> = (0..160).map(|i| at(k * 160 + i, 1)).collect();
            assert_eq!(got, pcm, "frame {k}: the right channel is what was sent");
            let loud = got.iter().any(|s| s.abs() > 4000);
            assert_eq!(
                loud,
                k < 10,
                "frame {k}: the answer until the cut, silence after"
            );
        }
        // the left channel: the caller's tone once the jitter buffer plays out
        let left_loud = (0..20 * 160).filter(|&i| at(i, 0).abs() > 4000).count();
        assert!(left_loud > 10 * 160, "{left_loud}");
    }
}
