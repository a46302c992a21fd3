//! The phone media's side of the core: caller RTP and RTCP in, the 20 ms tick (the caller's
//! frame for the agent, one packet for the caller, the hold sound while a tool runs long),
//! the recording, and the call's media statistics.

use std::time::{Duration, SystemTime};

use tracing::info;

use super::{CallCore, Ended, Mode, Phase};
use crate::bridge::prompts;
use crate::bridge::registry::{CallEvent, MediaStats};
use crate::media::frame::{Frame, FRAME_DURATION, FRAME_SAMPLES, SILENCE};
use crate::media::jitter::Playout;
use crate::media::rtcp;
use crate::media::rtp::RtpIn;
use crate::media::rtp_leg::LegCounters;

impl CallCore {
    /// An accepted RTP packet from the caller (source, SSRC and SRTP already checked).
    /// Returns the packet to send to a warm transfer's person once the two are joined.
    pub fn handle_rtp(&mut self, now: Duration, p: &RtpIn, payload: &[u8]) -> Option<&[u8]> {
        self.last_rx = now;
        if let Mode::Echo(echo) = &mut self.mode {
            self.media.count_rtp(now, p);
            // muted: the caller hears silence, not themselves
            if p.payload_type == self.media.payload_type() && !self.muted {
                echo.push(payload);
            }
            return None;
        }
        if self.warm.as_ref().is_some_and(|w| w.joined()) {
            self.media.count_rtp(now, p);
            return self.forward(true, p, payload);
        }
        if let Some(caller) = self.parked_caller() {
            // on hold while the agent briefs the person: counted, not heard
            caller.count_rtp(now, p);
            return None;
        }
        if let Some(key) = self.media.on_rtp(now, p, payload) {
            self.on_key(now, key);
        }
        None
    }

    /// The call's per-frame figures, for the task to count its ticks and frame times in.
    pub fn media_metrics(&mut self) -> &mut crate::metrics::CallMetrics {
        &mut self.media_metrics
    }

    /// The caller's 20 ms frame for the agent at this tick (silence while muted). Call it
    /// once per tick, before [`CallCore::handle_tick`].
    pub fn caller_frame(&mut self, now: Duration) -> &Frame {
        if matches!(self.mode, Mode::Echo(_)) {
            return &SILENCE;
        }
        let depth = self.media.jitter_depth_ms();
        let (_, kind) = self.media.caller_frame(now);
        if matches!(kind, Playout::Audio | Playout::Recovered) {
            // what leaves now arrived about one jitter buffer depth ago
            self.media_metrics
                .added_latency("to_agent", depth as f64 / 1000.0);
        }
        if self.muted || self.warm.as_ref().is_some_and(|w| w.on_hold()) {
            // on hold while a warm transfer rings: the agent hears nothing of the caller
            return &SILENCE;
        }
        if matches!(self.overlap, super::overlap::Overlap::Pending { .. }) {
            // the caller speaks over the agent: time the voice (a copy, only meanwhile)
            let frame = *self.media.last_caller_frame();
            self.overlap_frame(now, &frame);
        }
        if self.amd.is_some() {
            // a placed call's first seconds: who answered? (a copy, only meanwhile)
            let frame = *self.media.last_caller_frame();
            self.amd_frame(now, &frame);
        }
        self.media.last_caller_frame()
    }

    /// One 20 ms tick (its scheduled time): returns the packet to send to the caller (none
    /// when the caller's side does not receive), then checks the call's deadlines.
    pub fn handle_tick(&mut self, now: Duration) -> Option<&[u8]> {
        if self.phase != Phase::Live {
            return None;
        }
        if self.warm.as_ref().is_some_and(|w| w.joined()) {
            // the person's packets go to the caller as they come
            self.handle_timeout(now);
            return None;
        }
        if self.parked_caller().is_some() {
            return self.tick_on_hold(now);
        }
        // a tool running long, or a warm transfer ringing: comfort noise or the hold sound,
        // so the line is not dead
        let tool_long = self.tools_running > 0
            && self
                .tool_since
                .is_some_and(|t| now.saturating_sub(t) >= self.settings.hold_after);
        if (tool_long || self.warm.is_some()) && self.media.is_idle() {
            let frame = self.hold_frame();
            self.media.push_pcm(&frame);
        }
        let n = if !self.direction.relay_sends() {
            self.media.skip(now);
            0
        } else if let Mode::Echo(echo) = &mut self.mode {
            let mut frame = [0u8; FRAME_SAMPLES];
            echo.pop_into(&mut frame);
            self.media.write_g711(&frame, &mut self.out)
        } else {
            let (n, held) = self.media.poll_out(now, &mut self.out);
            if let Some(held) = held {
                self.media_metrics
                    .added_latency("to_caller", held.as_secs_f64());
            }
            n
        };
        if let Some(key) = self.media.poll_dtmf(now) {
            self.on_key(now, key);
        }
        self.handle_timeout(now);
        if self.goodbye.is_some() && !self.has_leg && self.media.is_idle() {
            let (reason, sip) = self.goodbye.expect("checked");
            self.end(Ended {
                reason: reason.into(),
                sip: Some(sip),
            });
        }
        self.check_ending(now);
        (n > 0).then(|| &self.out[..n])
    }

    /// The agent's frame that came late for the slot waiting for it, to send to the caller
    /// now: call it after [`CallCore::handle_leg`] queued agent audio (see
    /// [`crate::bridge::phone_media::PhoneMedia::poll_late`]).
    pub fn late_packet(&mut self, now: Duration) -> Option<&[u8]> {
        if self.phase != Phase::Live {
            return None;
        }
        let (n, held) = self.media.poll_late(now, &mut self.out)?;
        if let Some(held) = held {
            self.media_metrics
                .added_latency("to_caller", held.as_secs_f64());
        }
        Some(&self.out[..n])
    }

    /// The next 20 ms of the hold sound (comfort noise when the agent has none).
    pub(super) fn hold_frame(&mut self) -> Frame {
        let sound = match &self.mode {
            Mode::Agent(a) => a.hold_sound.clone(),
            Mode::Echo(_) => None,
        };
        if self.hold_pos == 0 {
            let sound = if sound.is_some() {
                "hold"
            } else {
                "comfort_noise"
            };
            if self.warm.is_some() {
                info!(
                    sound,
                    "a person is being called: the caller hears the hold sound"
                );
            } else {
                info!(sound, "a tool runs long: the caller hears the hold sound");
            }
            // marks the start of this wait (comfort noise does not move `hold_pos`)
            self.hold_pos = 1;
        }
        self.hold_frames += 1;
        let mut frame = SILENCE;
        match &sound {
            Some(sound) if !sound.is_empty() => {
                for s in frame.iter_mut() {
                    *s = sound[self.hold_pos % sound.len()];
                    self.hold_pos += 1;
                }
            }
            _ => prompts::comfort_noise(&mut self.noise, &mut frame),
        }
        frame
    }

    /// An RTCP packet from the caller's side (its source already checked).
    pub fn handle_rtcp(&mut self, packet: &[u8]) {
        let ssrc = self.media.packetizer().ssrc();
        rtcp::on_peer_packet(packet, ssrc, &mut self.peer);
    }

    /// The RTCP sender report to send now (`wall`: the wall clock, for its NTP time).
    pub fn rtcp_report(&mut self, wall: SystemTime) -> Vec<u8> {
        let joined = self.warm.as_ref().and_then(|w| w.to_caller());
        let tx = match joined {
            Some(f) => f.packetizer().clone(),
            None => self.media.packetizer().clone(),
        };
        rtcp::sender_report(&tx, self.media.receive_stats(), wall)
    }

    /// At the answer: records call `id` when `recording.enabled` or the agent's `record` say
    /// so (echo calls are not recorded), the notice queued before the greeting.
    pub fn start_recording(&mut self, now: Duration, id: &str) {
        if let Mode::Agent(a) = &self.mode {
            let rec = &self.settings.recording;
            crate::bridge::call_recording::begin(&mut self.media, rec, a.record, id, now);
        }
    }

    /// Closes the call's recording, if it has one; the call's record says where it is.
    pub fn finish_recording(&mut self) {
        if let Some(info) = self.media.finish_recording() {
            self.p.update(|d| d.recording = Some(info.into()));
        }
    }

    /// The figures of the line that says the call ended.
    pub fn end_figures(&mut self) -> EndFigures {
        let rx = self.media.receive_stats();
        EndFigures {
            lost: rx.lost(),
            jitter: rx.jitter(),
            peer_lost: self.peer.lost,
            hold_frames: self.hold_frames,
        }
    }

    /// Publishes the call's media statistics (registry and metrics); `rtp` are the RTP
    /// socket's counters.
    pub fn publish_stats(&mut self, rtp: LegCounters) {
        let c = self.media.counters();
        let rx = self.media.receive_stats();
        let lost = rx.lost() as u64;
        let jitter_ms = rx.jitter() as f64 / 8.0;
        let stats = MediaStats {
            codec: self.p.update(|d| d.media.codec.clone()),
            rtp_in: rtp.rx_packets,
            rtp_out: rtp.tx_packets,
            lost,
            jitter_ms,
            concealed_frames: c.concealed,
            jitter_buffer_ms: self.media.jitter_depth_ms(),
            barge_ins: self.barge_ins,
            echo_gated_frames: self.media.echo_counters().gated,
            audio_to_agent_s: c.frames_in as f64 * FRAME_DURATION.as_secs_f64(),
            audio_to_caller_s: c.frames_out as f64 * FRAME_DURATION.as_secs_f64(),
        };
        let m = &self.metrics;
        m.rtp_jitter_seconds.observe(jitter_ms / 1000.0);
        m.rtp_lost_packets
            .inc_by(lost.saturating_sub(self.reported_lost));
        m.concealed_frames
            .inc_by(c.concealed.saturating_sub(self.reported_concealed));
        self.reported_lost = lost;
        self.reported_concealed = c.concealed;
        self.p.update(|d| d.media = stats.clone());
        self.p.emit(CallEvent::Media { stats });
    }
}

/// The core's figures for the line that says a call ended.
#[derive(Debug, Clone, Copy)]
pub struct EndFigures {
    lost: u32,
    jitter: u32,
    peer_lost: u32,
    hold_frames: u64,
}

impl EndFigures {
    /// Logs the call's end (`c`: the RTP socket's counters). Said after the call's record
    /// is stored, so whoever reads the line finds the record.
    pub fn log(&self, reason: &str, seconds: f32, c: &LegCounters) {
        info!(
            reason = %reason, seconds,
            rtp_in = c.rx_packets, rtp_out = c.tx_packets, lost = self.lost, jitter = self.jitter,
            srtp_auth_failed = c.srtp_auth_failed, srtp_replayed = c.srtp_replayed,
            foreign = c.foreign_dropped, rtcp_foreign = c.rtcp_foreign_dropped,
            malformed = c.malformed, rtcp_in = c.rtcp_rx, rtcp_out = c.rtcp_tx,
            peer_lost = self.peer_lost, hold_frames = self.hold_frames,
            "call ended"
        );
    }
}
