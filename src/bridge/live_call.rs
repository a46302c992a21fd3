//! The task of a call answered by an OpenAI Realtime agent: the product.
//!
//! It owns everything of the call: the dialog, the RTP socket, the phone media, the realtime
//! leg, the transcript, running tools. Set-up: 180 Ringing while the realtime session opens,
//! 200 OK once it is ready, and the agent greets first; if the session cannot be opened the
//! caller hears a short apology and a BYE. Then one loop: caller RTP into the jitter buffer,
//! one 20 ms tick that sends the caller's frame to the agent and one packet to the caller,
//! realtime events (audio, transcripts, barge-in, tool calls), tool results, DTMF, operator
//! controls, and the call's limits.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::{interval, sleep_until, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use super::call_agent::{AgentBook, CallAgent};
use super::digits::{keypad_text, DigitGrouper};
use super::guardrail::{TranscriptWatch, Trip};
use super::moderation::{Moderation, ModerationError};
use super::phone_media::{PhoneMedia, MAX_OUT};
use super::prompts;
use super::registry::{
    CallDetail, CallEvent, CallPublisher, Control, MediaStats, Registry, Speaker, ToolCallRecord,
};
use super::tool_run::{
    self, arguments_value, classify, error_json, refused_json, ToolDone, ToolKind,
};
use super::transcript::Transcript;
use super::BridgeSettings;
use crate::booking::{CallRecord, Caller, Tools};
use crate::media::frame::SILENCE;
use crate::media::jitter::Playout;
use crate::media::rtcp::{self, PeerReport, REPORT_INTERVAL};
use crate::metrics::Metrics;
use crate::openai::events::{ClientEvent, ContentPart, Item, ServerEvent};
use crate::openai::{
    CallerAudio, Connector, EndReason as LegEnd, LegError, LegEvent, RealtimeLeg, ToolCall, Turns,
};
use crate::sip::sdp::Direction;
use crate::sip::{EndReason, IncomingCall, PhoneEvent};

const FRAME: Duration = Duration::from_millis(20);
/// Media counters go out as an event this often.
const STATS_EVERY: Duration = Duration::from_secs(5);
/// After `end_call`, the goodbye gets this long to play before the BYE goes anyway.
const END_CALL_GRACE: Duration = Duration::from_secs(15);
/// Quiet this long (nothing queued, nothing playing) after `end_call` means the goodbye is
/// over: covers the last frames still on their way from the service.
const END_CALL_QUIET: Duration = Duration::from_millis(200);
/// How long a transfer may take before the agent is told it failed.
const TRANSFER_LIMIT: Duration = Duration::from_secs(30);
/// The note that opens a rolled-over session, before the conversation so far.
const ROLL_OVER_NOTE: &str = "This phone call is already in progress; the conversation so far \
     follows. Continue it from there: do not greet the caller again.";
/// The most turns carried into a rolled-over session (the latest ones).
const MAX_CARRIED_TURNS: usize = 400;
/// Running tools get this long to finish after the call ended (a booking being written is
/// kept, never cut off half-way).
const TOOL_DRAIN: Duration = Duration::from_secs(10);

/// What every realtime call shares.
#[derive(Debug)]
pub struct LiveContext {
    /// Opens realtime legs.
    pub connector: Connector,
    /// The agents.
    pub agents: AgentBook,
    /// The booking tools (`None`: no database, every booking tool answers an error).
    pub tools: Option<Tools>,
    /// Where calls are listed for the admin API.
    pub registry: Registry,
    /// Where calls are counted.
    pub metrics: Arc<Metrics>,
    /// Limits and timings.
    pub settings: Arc<BridgeSettings>,
    /// The optional moderation check of the agent's words.
    pub moderation: Option<Arc<Moderation>>,
}

/// Runs one realtime call to its end.
pub async fn run(
    call: IncomingCall,
    agent: Arc<CallAgent>,
    ctx: Arc<LiveContext>,
    stop: CancellationToken,
) {
    let span = info_span!("call", id = %call.id);
    run_inner(call, agent, ctx, stop).instrument(span).await
}

async fn run_inner(
    mut call: IncomingCall,
    agent: Arc<CallAgent>,
    ctx: Arc<LiveContext>,
    stop: CancellationToken,
) {
    let t0 = Instant::now();
    let neg = call.sip.negotiated().clone();
    // the booking tools act for this caller: a trusted trunk's number, else nobody in particular
    let caller = ctx
        .tools
        .as_ref()
        .map(|t| t.caller(call.caller_number.as_deref()))
        .unwrap_or_default();
    info!(
        from = %call.from, to = %call.to, transport = call.transport,
        sip_call_id = %call.sip_call_id, source = call.source.map(tracing::field::display),
        trunk = call.trunk.as_deref().unwrap_or("-"), agent = %agent.name,
        codec = neg.codec.name(), verified_caller = caller.number().is_some(), "call started"
    );
    let mut detail = CallDetail::new(
        &call.id,
        &call.from,
        &call.to,
        &agent.name,
        call.trunk.as_deref(),
    );
    detail.transport = call.transport.into();
    detail.sip_call_id = call.sip_call_id.clone();
    detail.started_at = call.started.into();
    detail.media.codec = neg.codec.name().into();
    let (publisher, controls) = ctx.registry.register(detail);
    ctx.metrics.calls_active.inc();

    let codec = match neg.codec {
        crate::sip::sdp::Codec::Pcmu => crate::media::codec::Codec::Pcmu,
        crate::sip::sdp::Codec::Pcma => crate::media::codec::Codec::Pcma,
    };
    let media = match PhoneMedia::new(codec, neg.payload_type, neg.dtmf_payload_type) {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "no decoder for the call");
            call.sip.hang_up(EndReason::Other).await;
            finish_early(&ctx, publisher, "media_error").await;
            return;
        }
    };

    // Ring while the realtime session opens; the caller may give up meanwhile.
    call.sip.ring();
    let spec = agent.spec.clone();
    let connect = ctx.connector.connect(&spec, media.law());
    tokio::pin!(connect);
    let opened = loop {
        tokio::select! {
            r = &mut connect => break r,
            ev = call.sip.next_event() => match ev {
                Some(PhoneEvent::Ended(r)) => {
                    finish_early(&ctx, publisher, r.as_str()).await;
                    return;
                }
                Some(_) => {}
                None => {
                    finish_early(&ctx, publisher, "other").await;
                    return;
                }
            },
            _ = stop.cancelled() => {
                call.sip.hang_up(EndReason::Shutdown).await;
                finish_early(&ctx, publisher, EndReason::Shutdown.as_str()).await;
                return;
            }
        }
    };

    if let Err(e) = call.sip.answer() {
        info!(error = %e, "the answer was refused");
        finish_early(&ctx, publisher, "rejected").await;
        return;
    }
    call.rtp.answered();
    let setup = call.started.elapsed().unwrap_or_default();
    ctx.metrics.call_setup_seconds.observe(setup.as_secs_f64());
    publisher.answered();
    let mut live = Live {
        call,
        caller,
        media,
        leg: None,
        agent,
        ctx: ctx.clone(),
        p: publisher,
        transcript: Transcript::new(),
        digits: DigitGrouper::new(ctx.settings.dtmf_inter_digit),
        watch: TranscriptWatch::new(ctx.settings.guardrail_every),
        tools: JoinSet::new(),
        checks: JoinSet::new(),
        tools_running: 0,
        tool_since: None,
        muted: false,
        dropping_agent_audio: false,
        response_active: false,
        current_response: None,
        service_playing: false,
        ending: None,
        transfer: None,
        goodbye: None,
        t0,
        noise: 0x9E37_79B9,
        hold_pos: 0,
        hold_frames: 0,
        barge_ins: 0,
        direction: neg.direction,
        rtp_buf: [0; 1500],
        rtcp_buf: [0; 1500],
        out: [0; MAX_OUT],
        peer: PeerReport::default(),
        last_rx: Instant::now(),
        reported_lost: 0,
        reported_concealed: 0,
    };
    // recording: from the answer on; its notice is queued before the greeting
    let now = live.now();
    super::call_recording::begin(
        &mut live.media,
        &ctx.settings.recording,
        live.agent.record,
        &live.call.id,
        now,
    );
    match opened {
        Ok(leg) => {
            info!(
                setup_ms = setup.as_millis() as u64,
                session = leg.session_id().unwrap_or("-"),
                "call answered"
            );
            live.set_leg(leg).await;
            live.greet().await;
        }
        Err(e) => {
            warn!(error = %e, cause = failure_cause(&e), "the realtime session did not open: apologising");
            ctx.metrics.realtime_failed(failure_cause(&e));
            live.say_goodbye(prompts::apology(), "realtime_failed", EndReason::RelayBye);
        }
    }
    let reason = live.run(controls, stop).await;
    live.finish_call(reason).await;
}

/// Why a leg could not be opened, as the failure metric's `cause` label.
fn failure_cause(e: &LegError) -> &'static str {
    match e {
        LegError::Mint(_) => "mint",
        LegError::Refused { status: 429, .. } => "rate_limited",
        LegError::Refused { status, .. } if *status >= 500 => "server_error",
        LegError::Refused { .. } => "refused",
        LegError::Timeout { .. } => "timeout",
        LegError::BadAnswer(_) => "bad_answer",
        LegError::Transport(_) => "transport",
        LegError::Ended(_) => "ended",
    }
}

fn end_cause(e: &LegEnd) -> &'static str {
    match e {
        LegEnd::Closed => "closed",
        LegEnd::SessionExpired => "session_expired",
        LegEnd::PeerFailed => "peer_failed",
        LegEnd::PeerClosed => "peer_closed",
        LegEnd::Disconnected(_) => "disconnected",
        LegEnd::ChannelClosed => "channel_closed",
        LegEnd::SocketClosed { .. } => "socket_closed",
        LegEnd::Transport(_) => "transport",
    }
}

/// A transfer in progress.
#[derive(Debug)]
struct Transfer {
    call_id: String,
    target: String,
    started: Instant,
    deadline: Instant,
}

/// The state of one live call, owned by its task.
struct Live {
    call: IncomingCall,
    /// Whom the booking tools act for.
    caller: Caller,
    media: PhoneMedia,
    /// `None` after the session failed (the apology plays) or the call is closing.
    leg: Option<Box<dyn RealtimeLeg>>,
    agent: Arc<CallAgent>,
    ctx: Arc<LiveContext>,
    p: CallPublisher,
    transcript: Transcript,
    digits: DigitGrouper,
    watch: TranscriptWatch,
    tools: JoinSet<ToolDone>,
    /// Moderation checks running.
    checks: JoinSet<Result<Option<String>, ModerationError>>,
    tools_running: usize,
    /// When the oldest running tool started.
    tool_since: Option<Instant>,
    muted: bool,
    /// Between a barge-in and the next response: late audio of the old answer is dropped.
    dropping_agent_audio: bool,
    response_active: bool,
    /// The id of the response running (or last run).
    current_response: Option<String>,
    /// WebRTC: the service is still playing audio out (`output_audio_buffer.started`).
    service_playing: bool,
    /// `end_call` was called: hang up at this deadline, or once the goodbye is heard.
    ending: Option<(Instant, Option<Instant>)>,
    transfer: Option<Transfer>,
    /// A relay prompt plays, then BYE for this reason (no leg).
    goodbye: Option<(&'static str, EndReason)>,
    t0: Instant,
    noise: u32,
    hold_pos: usize,
    /// Frames of comfort noise or hold sound played (all calls long).
    hold_frames: u64,
    barge_ins: u64,
    direction: Direction,
    rtp_buf: [u8; 1500],
    rtcp_buf: [u8; 1500],
    out: [u8; MAX_OUT],
    peer: PeerReport,
    last_rx: Instant,
    reported_lost: u64,
    reported_concealed: u64,
}

/// Why the loop ended, with what the call record says.
struct Ended {
    reason: String,
    sip: Option<EndReason>,
}

impl Ended {
    fn sip(r: EndReason) -> Self {
        Self {
            reason: r.as_str().into(),
            sip: None,
        }
    }
    /// The relay hangs up (BYE) for `reason`.
    fn relay(reason: &str) -> Self {
        Self {
            reason: reason.into(),
            sip: Some(EndReason::RelayBye),
        }
    }
}

impl Live {
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    fn at_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    async fn set_leg(&mut self, leg: Box<dyn RealtimeLeg>) {
        let sid = leg.session_id().map(str::to_string);
        self.p.update(|d| d.session_id = sid);
        self.leg = Some(leg);
    }

    async fn send(&mut self, ev: ClientEvent) {
        if let Some(leg) = self.leg.as_mut() {
            if let Err(e) = leg.send(ev).await {
                warn!(error = %e, "sending to the realtime session failed");
            }
        }
    }

    /// The agent speaks first: its greeting when configured, else its own opening.
    async fn greet(&mut self) {
        let response = self.agent.greeting.as_ref().map(
            |g| json!({"instructions": format!("Greet the caller by saying exactly: \"{g}\"")}),
        );
        self.send(ClientEvent::ResponseCreate {
            event_id: None,
            response,
        })
        .await;
    }

    /// Ends the realtime side and plays `prompt` to the caller, then BYE.
    fn say_goodbye(&mut self, prompt: &[i16], reason: &'static str, sip: EndReason) {
        let now = self.now();
        self.media.flush(now);
        self.media.push_pcm(prompt);
        self.goodbye = Some((reason, sip));
        self.dropping_agent_audio = true;
    }

    async fn run(
        &mut self,
        mut controls: tokio::sync::mpsc::Receiver<Control>,
        stop: CancellationToken,
    ) -> Ended {
        let settings = self.ctx.settings.clone();
        let mut ticks = interval(FRAME);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut reports = interval(REPORT_INTERVAL);
        reports.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stats = interval(STATS_EVERY);
        stats.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let max_end = Instant::now() + settings.max_call;
        let mut time_limit_said = false;
        let mut controls_open = true;
        loop {
            let leg = self.leg.as_mut();
            let has_leg = leg.is_some();
            tokio::select! {
                ev = self.call.sip.next_event() => match ev {
                    Some(PhoneEvent::Acked) => {}
                    Some(PhoneEvent::MediaChanged { remote_rtp, remote_rtcp, direction }) => {
                        info!(remote = ?remote_rtp, direction = direction.attr(), "call media changed");
                        self.call.rtp.set_remote(remote_rtp, remote_rtcp);
                        self.direction = direction;
                        let n = self.call.sip.negotiated();
                        self.media.set_payload_types(n.payload_type, n.dtmf_payload_type);
                        self.last_rx = Instant::now();
                    }
                    Some(PhoneEvent::TransferProgress { status }) => {
                        if let Some(end) = self.on_transfer_progress(status).await {
                            return end;
                        }
                    }
                    Some(PhoneEvent::Ended(r)) => return Ended::sip(r),
                    None => return Ended::sip(EndReason::Other),
                },
                r = self.call.rtp.recv_from(&mut self.rtp_buf) => {
                    if let Ok((n, src)) = r {
                        if let Some(p) = self.call.rtp.accept(&self.rtp_buf[..n], src) {
                            self.last_rx = Instant::now();
                            let now = self.t0.elapsed();
                            let payload = &self.rtp_buf[p.payload_start..p.payload_end];
                            if let Some(key) = self.media.on_rtp(now, &p, payload) {
                                self.on_key(key).await;
                            }
                        }
                    }
                }
                tick = ticks.tick() => {
                    let now = tick.saturating_duration_since(self.t0);
                    if let Some(end) = self.on_tick(now).await {
                        return end;
                    }
                }
                ev = async { leg.expect("guarded").recv().await }, if has_leg => {
                    if let Some(end) = self.on_leg(ev).await {
                        return end;
                    }
                }
                Some(done) = self.tools.join_next(), if self.tools_running > 0 => {
                    match done {
                        Ok(done) => self.on_tool_done(done).await,
                        Err(e) => warn!(error = %e, "a tool task failed"),
                    }
                }
                Some(r) = self.checks.join_next(), if !self.checks.is_empty() => {
                    if let Ok(r) = r {
                        self.on_moderation(r).await;
                    }
                }
                c = controls.recv(), if controls_open => match c {
                    Some(c) => if let Some(end) = self.on_control(c).await {
                        return end;
                    },
                    None => controls_open = false,
                },
                r = self.call.rtp.recv_rtcp_from(&mut self.rtcp_buf) => {
                    // RTCP from a source not taken is dropped (and counted by the leg).
                    if let Some((n, _)) = r.ok().filter(|(_, src)| self.call.rtp.accept_rtcp(*src)) {
                        let ssrc = self.media.packetizer().ssrc();
                        rtcp::on_peer_packet(&self.rtcp_buf[..n], ssrc, &mut self.peer);
                    }
                }
                _ = reports.tick() => {
                    let tx = self.media.packetizer().clone();
                    let sr = rtcp::sender_report(&tx, self.media.receive_stats(), SystemTime::now());
                    self.call.rtp.send_rtcp(&sr);
                }
                _ = stats.tick() => self.publish_stats(),
                _ = sleep_until(max_end), if !time_limit_said => {
                    info!("the call reached bridge.max_call_seconds: saying goodbye");
                    time_limit_said = true;
                    self.close_leg().await;
                    self.say_goodbye(
                        prompts::time_limit(),
                        EndReason::MaxDuration.as_str(),
                        EndReason::MaxDuration,
                    );
                }
                _ = stop.cancelled() => return Ended {
                    reason: EndReason::Shutdown.as_str().into(),
                    sip: Some(EndReason::Shutdown),
                },
            }
        }
    }

    /// One 20 ms tick: the caller's frame to the agent, one packet to the caller.
    async fn on_tick(&mut self, now: Duration) -> Option<Ended> {
        // caller -> agent
        let started = std::time::Instant::now();
        let muted = self.muted;
        let depth = self.media.jitter_depth_ms();
        let (frame, kind) = self.media.caller_frame(now);
        if matches!(kind, Playout::Audio | Playout::Recovered) {
            // what leaves now arrived about one jitter buffer depth ago
            self.ctx
                .metrics
                .added_latency("to_agent", depth as f64 / 1000.0);
        }
        let frame = if muted { &SILENCE } else { frame };
        if let Some(leg) = self.leg.as_mut() {
            // a failed send shows up as the leg ending; nothing to do here
            let _ = leg.send_audio(CallerAudio::Pcm(frame)).await;
        }
        self.ctx
            .metrics
            .frame("to_agent", started.elapsed().as_secs_f64());

        // a tool running long: comfort noise or the hold sound, so the line is not dead
        if self.tools_running > 0
            && self.media.is_idle()
            && self
                .tool_since
                .is_some_and(|t| t.elapsed() >= self.ctx.settings.hold_after)
        {
            self.push_hold_frame();
        }

        // agent -> caller
        let started = std::time::Instant::now();
        if self.direction.relay_sends() {
            let (n, held) = self.media.poll_out(now, &mut self.out);
            self.call.rtp.send(&self.out[..n]);
            if let Some(held) = held {
                self.ctx
                    .metrics
                    .added_latency("to_caller", held.as_secs_f64());
            }
        } else {
            self.media.skip();
        }
        self.ctx
            .metrics
            .frame("to_caller", started.elapsed().as_secs_f64());

        if let Some(key) = self.media.poll_dtmf(now) {
            self.on_key(key).await;
        }
        if let Some(group) = self.digits.poll(now) {
            self.send_keypad(group).await;
        }

        if let Some((reason, sip)) = self.goodbye {
            if self.leg.is_none() && self.media.is_idle() {
                return Some(Ended {
                    reason: reason.into(),
                    sip: Some(sip),
                });
            }
        }
        if let Some(end) = self.check_ending() {
            return Some(end);
        }
        if let Some(t) = &self.transfer {
            if Instant::now() >= t.deadline {
                let t = self.transfer.take().expect("checked");
                self.transfer_failed(t, "the transfer target did not answer in time")
                    .await;
            }
        }
        if let Some(limit) = self.ctx.settings.rtp_timeout {
            let receiving = matches!(self.direction, Direction::SendRecv | Direction::RecvOnly);
            if receiving && self.last_rx.elapsed() > limit {
                return Some(Ended {
                    reason: EndReason::RtpTimeout.as_str().into(),
                    sip: Some(EndReason::RtpTimeout),
                });
            }
        }
        None
    }

    fn push_hold_frame(&mut self) {
        if self.hold_pos == 0 {
            info!(
                sound = if self.agent.hold_sound.is_some() {
                    "hold"
                } else {
                    "comfort_noise"
                },
                "a tool runs long: the caller hears the hold sound"
            );
            // marks the start of this wait (comfort noise does not move `hold_pos`)
            self.hold_pos = 1;
        }
        self.hold_frames += 1;
        let mut frame = SILENCE;
        match &self.agent.hold_sound {
            Some(sound) if !sound.is_empty() => {
                for s in frame.iter_mut() {
                    *s = sound[self.hold_pos % sound.len()];
                    self.hold_pos += 1;
                }
            }
            _ => prompts::comfort_noise(&mut self.noise, &mut frame),
        }
        self.media.push_pcm(&frame);
    }

    /// After `end_call`: BYE once the goodbye has played out (or at the deadline).
    fn check_ending(&mut self) -> Option<Ended> {
        let (deadline, quiet_since) = self.ending?;
        let quiet = !self.response_active && !self.service_playing && self.media.is_idle();
        let now = Instant::now();
        if now >= deadline {
            return Some(Ended::relay("agent_end_call"));
        }
        match (quiet, quiet_since) {
            (true, Some(since)) if now.duration_since(since) >= END_CALL_QUIET => {
                Some(Ended::relay("agent_end_call"))
            }
            (true, None) => {
                self.ending = Some((deadline, Some(now)));
                None
            }
            (false, Some(_)) => {
                self.ending = Some((deadline, None));
                None
            }
            _ => None,
        }
    }

    async fn on_leg(&mut self, ev: LegEvent) -> Option<Ended> {
        match ev {
            LegEvent::Audio(a) => {
                if !self.dropping_agent_audio {
                    // timed once per frame, at the tick that sends it
                    let now = self.now();
                    self.media.push_agent(now, &a);
                }
            }
            LegEvent::ToolCall(tc) => self.on_tool_call(tc).await,
            LegEvent::Event(ev) => self.on_event(ev).await,
            LegEvent::Ended(reason) => return self.on_leg_ended(reason).await,
        }
        None
    }

    async fn on_event(&mut self, ev: ServerEvent) {
        match ev {
            ServerEvent::SessionCreated { .. } | ServerEvent::SessionUpdated { .. } => {
                let sid = self
                    .leg
                    .as_ref()
                    .and_then(|l| l.session_id())
                    .map(str::to_string);
                if sid.is_some() {
                    self.p.update(|d| d.session_id = sid);
                }
            }
            ServerEvent::SpeechStarted { .. } => self.barge_in(false).await,
            ServerEvent::OutputAudioBufferCleared { response_id, .. } => {
                self.service_playing = false;
                // a clear we asked for (an interrupt) can arrive after the next response
                // began: only the current response's clear is a barge-in
                if self.current_response.as_deref() == Some(response_id.as_str()) {
                    self.barge_in(false).await;
                }
            }
            ServerEvent::OutputAudioBufferStarted { .. } => self.service_playing = true,
            ServerEvent::OutputAudioBufferStopped { .. } => self.service_playing = false,
            ServerEvent::ResponseCreated { response, .. } => {
                self.current_response = response.id;
                self.response_active = true;
                self.dropping_agent_audio = self.goodbye.is_some();
                self.watch.reset();
            }
            ServerEvent::ResponseDone { .. } => {
                self.response_active = false;
                if let Some(trip) = self.watch.done(&self.agent.guardrails) {
                    self.guardrail_tripped(trip).await;
                }
            }
            ServerEvent::OutputAudioTranscriptDelta { item_id, delta, .. } => {
                if self.dropping_agent_audio {
                    return;
                }
                let at = self.at_ms();
                self.transcript.agent_delta(&self.p, &item_id, &delta, at);
                if let Some(trip) = self.watch.push(&self.agent.guardrails, &delta) {
                    self.guardrail_tripped(trip).await;
                }
            }
            ServerEvent::OutputAudioTranscriptDone {
                item_id,
                transcript,
                ..
            } => {
                let at = self.at_ms();
                self.transcript
                    .agent_done(&self.p, &item_id, &transcript, at);
                self.moderate(transcript);
            }
            ServerEvent::InputTranscriptionCompleted {
                item_id,
                transcript,
                ..
            } => {
                let at = self.at_ms();
                self.transcript.caller(&self.p, &item_id, &transcript, at);
            }
            ServerEvent::Error { error, .. } => {
                warn!(
                    code = error.code.as_deref().unwrap_or("-"),
                    message = %error.message,
                    "the realtime service reported an error"
                );
            }
            _ => {}
        }
    }

    /// The caller talked over the agent (or the operator interrupted): stop its audio at
    /// once and tell the service how much was not heard.
    async fn barge_in(&mut self, forced: bool) {
        // one interruption per answer: the events that follow ours (the service's clear,
        // its speech_started) find the answer already stopped
        if self.goodbye.is_some() || (self.dropping_agent_audio && !forced) {
            return;
        }
        let now = self.now();
        let f = self.media.flush(now);
        let speaking = f.unplayed_ms > 0 || f.residual_ms > 0 || self.service_playing;
        self.dropping_agent_audio = true;
        if !speaking && !forced {
            return;
        }
        self.barge_ins += 1;
        self.ctx
            .metrics
            .barge_in_residual_seconds
            .observe(f.residual_ms as f64 / 1000.0);
        self.transcript.cut_off(&self.p);
        self.p.emit(CallEvent::BargeIn {
            residual_ms: f.residual_ms,
            flushed_ms: f.unplayed_ms,
        });
        info!(
            residual_ms = f.residual_ms,
            flushed_ms = f.unplayed_ms,
            forced,
            "barge-in"
        );
        if let Some(leg) = self.leg.as_mut() {
            if let Err(e) = leg.interrupt(f.unplayed_ms).await {
                warn!(error = %e, "interrupting the realtime session failed");
            }
        }
    }

    async fn guardrail_tripped(&mut self, trip: Trip) {
        warn!(rule = %trip.rule, "an output guardrail stopped the agent");
        self.ctx.metrics.guardrail_trips.inc();
        self.p.emit(CallEvent::Guardrail {
            rule: trip.rule.clone(),
        });
        self.barge_in(true).await;
        self.watch.reset();
        let text = format!(
            "Your last answer was stopped before the caller heard all of it, by the rule \"{}\": {} Answer the caller again without it.",
            trip.rule, trip.message
        );
        self.send(system_message(text)).await;
        self.send(ClientEvent::ResponseCreate {
            event_id: None,
            response: None,
        })
        .await;
    }

    /// The optional moderation check of a finished agent turn, run beside the call; a
    /// flagged turn is handled like a guardrail trip. Fail open: when the check is not
    /// available the call goes on.
    fn moderate(&mut self, text: String) {
        if let Some(m) = self.ctx.moderation.clone() {
            tracing::debug!(chars = text.len(), "moderation check of a turn");
            self.checks.spawn(async move { m.check(&text).await });
        }
    }

    async fn on_moderation(&mut self, r: Result<Option<String>, ModerationError>) {
        match r {
            Ok(Some(category)) => {
                let trip = Trip {
                    rule: format!("moderation:{category}"),
                    matched: String::new(),
                    message: format!("the moderation check flagged it as {category}."),
                };
                self.guardrail_tripped(trip).await;
            }
            Ok(None) => tracing::debug!("the moderation check passed a turn"),
            Err(e) => warn!(error = %e, "the moderation check failed; the call goes on"),
        }
    }

    async fn on_leg_ended(&mut self, reason: LegEnd) -> Option<Ended> {
        if self.goodbye.is_some() || self.ending.is_some() {
            self.leg = None;
            return None;
        }
        if reason == LegEnd::SessionExpired {
            info!("the realtime session expired: continuing in a new one");
            if self.roll_over().await {
                return None;
            }
        }
        warn!(reason = %reason, "the realtime session ended mid-call: apologising");
        self.ctx.metrics.realtime_failed(end_cause(&reason));
        self.close_leg().await;
        self.say_goodbye(prompts::apology(), "realtime_failed", EndReason::RelayBye);
        None
    }

    /// Opens a new session that continues the conversation so far (the service ends a
    /// session after 60 minutes). The session keeps the agent's own instructions; what was
    /// said goes in as conversation items, the caller's words as `user` messages, never into
    /// the instructions (where a caller could write the agent's rules).
    async fn roll_over(&mut self) -> bool {
        self.close_leg().await;
        let now = self.now();
        self.media.flush(now);
        let spec = self.agent.spec.clone();
        match self.ctx.connector.connect(&spec, self.media.law()).await {
            Ok(leg) => {
                self.set_leg(leg).await;
                self.send(system_message(ROLL_OVER_NOTE.into())).await;
                for (role, text) in Transcript::as_items(&self.p, MAX_CARRIED_TURNS) {
                    self.send(message(role, text)).await;
                }
                self.dropping_agent_audio = false;
                self.response_active = false;
                self.service_playing = false;
                true
            }
            Err(e) => {
                warn!(error = %e, "the new realtime session did not open");
                false
            }
        }
    }

    async fn close_leg(&mut self) {
        if let Some(mut leg) = self.leg.take() {
            leg.close().await;
        }
    }

    async fn on_tool_call(&mut self, tc: ToolCall) {
        let at = self.at_ms();
        let args = arguments_value(&tc.arguments);
        info!(tool = %truncate(&tc.name, 64), "tool called");
        self.p.emit(CallEvent::ToolCall {
            call_id: tc.call_id.clone(),
            name: tc.name.clone(),
            arguments: args.clone(),
        });
        let record = ToolCallRecord {
            call_id: tc.call_id.clone(),
            name: tc.name.clone(),
            arguments: args,
            result: Value::Null,
            ok: false,
            at_ms: at,
            duration_ms: None,
        };
        self.p.update(|d| d.tool_calls.push(record));
        if !self.agent.allows(&tc.name) {
            warn!(tool = %truncate(&tc.name, 64), agent = %self.agent.name, "tool refused: not one of the agent's tools");
            self.ctx.metrics.tools_refused.inc();
            // also a failed tool call, under `other` unless the name is a known tool
            self.ctx.metrics.tool(&tc.name, false, 0.0);
            let out = refused_json(&tc.name);
            self.record_result(&tc.call_id, &out, false, Duration::ZERO);
            self.p.emit(CallEvent::ToolResult {
                call_id: tc.call_id.clone(),
                name: tc.name.clone(),
                result: out.clone(),
                ok: false,
                duration_ms: 0,
            });
            if let Some(leg) = self.leg.as_mut() {
                if let Err(e) = leg.submit_tool_output(&tc.call_id, out.to_string()).await {
                    warn!(error = %e, "the tool output did not reach the session");
                }
            }
            return;
        }
        match classify(&tc.name) {
            ToolKind::EndCall => {
                let output = json!({"ok": true, "note": "The call ends after your goodbye."});
                // the output only: no new response, the goodbye is this response's
                self.send(function_output(&tc.call_id, &output)).await;
                self.record_result(&tc.call_id, &output, true, Duration::ZERO);
                info!("the agent ends the call");
                self.ending = Some((Instant::now() + END_CALL_GRACE, None));
            }
            ToolKind::TransferCall => self.start_transfer(tc).await,
            ToolKind::Handoff(target) => self.hand_off(tc, &target).await,
            ToolKind::Booking => {
                self.tools_running += 1;
                self.tool_since.get_or_insert_with(Instant::now);
                self.tools.spawn(tool_run::run_booking(
                    self.ctx.tools.clone(),
                    self.caller.clone(),
                    tc,
                    self.ctx.settings.tool_timeout,
                ));
            }
        }
    }

    fn record_result(&mut self, call_id: &str, result: &Value, ok: bool, took: Duration) {
        let ms = took.as_millis() as u64;
        let update = |r: &mut ToolCallRecord| {
            if r.call_id == call_id {
                r.result = result.clone();
                r.ok = ok;
                r.duration_ms = Some(ms);
            }
        };
        self.p.update(|d| d.tool_calls.iter_mut().for_each(update));
    }

    async fn on_tool_done(&mut self, done: ToolDone) {
        self.tools_running = self.tools_running.saturating_sub(1);
        if self.tools_running == 0 {
            self.tool_since = None;
            self.hold_pos = 0;
        }
        self.ctx
            .metrics
            .tool(&done.name, done.ok, done.elapsed.as_secs_f64());
        if done.ok && done.name == "create_booking" {
            self.ctx.metrics.bookings_created.inc();
        }
        info!(
            tool = %truncate(&done.name, 64), ok = done.ok,
            ms = done.elapsed.as_millis() as u64, "tool answered"
        );
        self.record_result(&done.call_id, &done.result, done.ok, done.elapsed);
        self.p.emit(CallEvent::ToolResult {
            call_id: done.call_id.clone(),
            name: done.name.clone(),
            result: done.result.clone(),
            ok: done.ok,
            duration_ms: done.elapsed.as_millis() as u64,
        });
        // the hold sound stops as soon as the agent can speak again
        if self.tools_running == 0 {
            let now = self.now();
            self.media.flush(now);
        }
        if let Some(leg) = self.leg.as_mut() {
            if let Err(e) = leg
                .submit_tool_output(&done.call_id, done.result.to_string())
                .await
            {
                warn!(error = %e, "the tool output did not reach the session");
            }
        }
    }

    async fn hand_off(&mut self, tc: ToolCall, target: &str) {
        let next = self
            .agent
            .handoff_target(&tc.name)
            .and_then(|name| self.ctx.agents.get(name));
        let Some(next) = next else {
            let out = error_json(format!(
                "There is no agent called {target:?} to hand over to."
            ));
            self.record_result(&tc.call_id, &out, false, Duration::ZERO);
            if let Some(leg) = self.leg.as_mut() {
                let _ = leg.submit_tool_output(&tc.call_id, out.to_string()).await;
            }
            return;
        };
        let from = self.agent.name.clone();
        info!(from = %from, to = %next.name, "handoff");
        let mut spec = next.spec.clone();
        // the voice cannot change once the session has spoken
        spec.voice = None;
        self.send(ClientEvent::SessionUpdate {
            event_id: None,
            session: spec.session(None),
        })
        .await;
        let out = json!({"ok": true, "agent": next.name, "note": "You are now this agent; continue the conversation."});
        self.record_result(&tc.call_id, &out, true, Duration::ZERO);
        self.p.update(|d| d.agent = next.name.clone());
        self.p.emit(CallEvent::Handoff {
            from,
            to: next.name.clone(),
        });
        self.agent = next;
        self.watch.reset();
        if let Some(leg) = self.leg.as_mut() {
            let _ = leg.submit_tool_output(&tc.call_id, out.to_string()).await;
        }
    }

    async fn start_transfer(&mut self, tc: ToolCall) {
        let Some(target) = self.agent.transfer_target.clone() else {
            let out = error_json("This line cannot transfer callers to a person.");
            self.record_result(&tc.call_id, &out, false, Duration::ZERO);
            if let Some(leg) = self.leg.as_mut() {
                let _ = leg.submit_tool_output(&tc.call_id, out.to_string()).await;
            }
            return;
        };
        info!(target = %target, "transferring the caller");
        self.p.emit(CallEvent::Transfer {
            target: target.clone(),
            outcome: "trying".into(),
        });
        let t = Transfer {
            call_id: tc.call_id,
            target: target.clone(),
            started: Instant::now(),
            deadline: Instant::now() + TRANSFER_LIMIT,
        };
        match self.call.sip.refer(&target).await {
            Ok(s) if (200..300).contains(&s) => self.transfer = Some(t),
            Ok(s) => {
                self.transfer_failed(t, &format!("the phone system refused the transfer ({s})"))
                    .await
            }
            Err(e) => {
                self.transfer_failed(t, &format!("the transfer could not be sent ({e})"))
                    .await
            }
        }
    }

    async fn on_transfer_progress(&mut self, status: u16) -> Option<Ended> {
        if status < 200 {
            return None;
        }
        let t = self.transfer.take()?;
        if status < 300 {
            info!(target = %t.target, "the transfer succeeded");
            self.p.emit(CallEvent::Transfer {
                target: t.target.clone(),
                outcome: "succeeded".into(),
            });
            let out = json!({"ok": true});
            self.record_result(&t.call_id, &out, true, t.started.elapsed());
            return Some(Ended::relay("transferred"));
        }
        self.transfer_failed(t, &format!("the person's line answered {status}"))
            .await;
        None
    }

    async fn transfer_failed(&mut self, t: Transfer, why: &str) {
        info!(target = %t.target, why, "the transfer failed");
        self.p.emit(CallEvent::Transfer {
            target: t.target.clone(),
            outcome: format!("failed: {why}"),
        });
        let out = error_json(format!(
            "The transfer failed: {why}. Tell the caller and offer to help or take a message."
        ));
        self.record_result(&t.call_id, &out, false, t.started.elapsed());
        if let Some(leg) = self.leg.as_mut() {
            let _ = leg.submit_tool_output(&t.call_id, out.to_string()).await;
        }
    }

    async fn on_key(&mut self, key: char) {
        let now = self.now();
        if let Some(group) = self.digits.push(now, key) {
            self.send_keypad(group).await;
        }
    }

    async fn send_keypad(&mut self, digits: String) {
        info!(digits = digits.len(), "keypad digits to the agent");
        let at = self.at_ms();
        self.transcript.note(&self.p, Speaker::Keypad, &digits, at);
        self.p.emit(CallEvent::Dtmf {
            digits: digits.clone(),
        });
        self.send(user_message(keypad_text(&digits))).await;
        self.send(ClientEvent::ResponseCreate {
            event_id: None,
            response: None,
        })
        .await;
    }

    async fn on_control(&mut self, c: Control) -> Option<Ended> {
        match c {
            Control::Hangup => {
                info!("the operator hung up");
                return Some(Ended::relay("operator_hangup"));
            }
            Control::Interrupt => self.barge_in(true).await,
            Control::Say(text) => {
                let at = self.at_ms();
                self.transcript.note(&self.p, Speaker::Operator, &text, at);
                self.send(system_message(format!(
                    "A message from the clinic's operator, for you to act on now: {text}"
                )))
                .await;
                self.send(ClientEvent::ResponseCreate {
                    event_id: None,
                    response: None,
                })
                .await;
            }
            Control::Mute(m) => {
                self.muted = m;
                self.p.muted(m);
            }
        }
        None
    }

    fn publish_stats(&mut self) {
        let c = self.media.counters();
        let rx = self.media.receive_stats();
        let lost = rx.lost() as u64;
        let jitter_ms = rx.jitter() as f64 / 8.0;
        let counters = self.call.rtp.counters;
        let stats = MediaStats {
            codec: self.p.update(|d| d.media.codec.clone()),
            rtp_in: counters.rx_packets,
            rtp_out: counters.tx_packets,
            lost,
            jitter_ms,
            concealed_frames: c.concealed,
            jitter_buffer_ms: self.media.jitter_depth_ms(),
            barge_ins: self.barge_ins,
            audio_to_agent_s: c.frames_in as f64 * 0.02,
            audio_to_caller_s: c.frames_out as f64 * 0.02,
        };
        let m = &self.ctx.metrics;
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

    /// The loop is over: close the realtime side, hang up if the relay ends the call, wait
    /// for running tools, store the record.
    async fn finish_call(self, end: Ended) {
        let mut live = self;
        // the caller's BYE must end the realtime call at once
        live.close_leg().await;
        if let Some(r) = end.sip {
            live.call.sip.hang_up(r).await;
        }
        // recording: closed with the call; the record says where it is
        if let Some(info) = live.media.finish_recording() {
            live.p.update(|d| d.recording = Some(info.into()));
        }
        // a booking being written is kept: let running tools finish (bounded)
        let drain = async {
            while let Some(done) = live.tools.join_next().await {
                if let Ok(done) = done {
                    if done.ok && done.name == "create_booking" {
                        live.ctx.metrics.bookings_created.inc();
                    }
                    live.ctx
                        .metrics
                        .tool(&done.name, done.ok, done.elapsed.as_secs_f64());
                    live.record_result(&done.call_id, &done.result, done.ok, done.elapsed);
                }
            }
        };
        if tokio::time::timeout(TOOL_DRAIN, drain).await.is_err() {
            warn!("tools still running at hang-up were abandoned");
        }
        live.publish_stats();
        let c = live.call.rtp.counters;
        let seconds = live.t0.elapsed().as_secs_f32();
        let hold_frames = live.hold_frames;
        let Live { ctx, p, call, .. } = live;
        drop(call);
        // the record is stored before the line that says the call ended, so whoever reads
        // that line finds the record
        finish(&ctx, p, &end.reason).await;
        info!(
            reason = %end.reason, seconds,
            rtp_in = c.rx_packets, rtp_out = c.tx_packets,
            srtp_auth_failed = c.srtp_auth_failed, srtp_replayed = c.srtp_replayed,
            foreign = c.foreign_dropped, rtcp_foreign = c.rtcp_foreign_dropped,
            hold_frames,
            "call ended"
        );
    }
}

/// Ends a call that never got to its loop (cancelled while ringing, refused, shutdown).
async fn finish_early(ctx: &LiveContext, p: CallPublisher, reason: &str) {
    finish(ctx, p, reason).await;
    info!(reason, seconds = 0.0, "call ended");
}

/// Records a call that ended: metrics, the registry's ended list, the database.
async fn finish(ctx: &LiveContext, p: CallPublisher, reason: &str) {
    ctx.metrics.calls_active.dec();
    ctx.metrics.call_ended(reason);
    let d = p.finish(reason);
    if let Some(tools) = &ctx.tools {
        let record = CallRecord {
            id: d.id.clone(),
            caller: d.from.clone(),
            callee: d.to.clone(),
            agent: d.agent.clone(),
            started_at: d.started_at,
            answered_at: d.answered_at,
            ended_at: d.ended_at,
            outcome: reason.to_string(),
            transcript: serde_json::to_value(&d.transcript).unwrap_or(Value::Null),
            tool_calls: serde_json::to_value(&d.tool_calls).unwrap_or(Value::Null),
            recording: d.recording.clone(), // recording:
        };
        if let Err(e) = tools.store().insert_call(&record).await {
            warn!(error = %e, "the call record was not stored");
        }
    }
}

/// A function call's output item alone (no new response).
fn function_output(call_id: &str, output: &Value) -> ClientEvent {
    let [item, _create] = Turns::tool_output(call_id, output.to_string());
    item
}

fn message(role: &str, text: String) -> ClientEvent {
    // the model's own words are output text; everything else is input
    let part = if role == "assistant" {
        ContentPart::OutputText { text: Some(text) }
    } else {
        ContentPart::InputText { text }
    };
    ClientEvent::ConversationItemCreate {
        event_id: None,
        previous_item_id: None,
        item: Item::Message {
            id: None,
            object: None,
            status: None,
            role: role.into(),
            content: vec![part],
        },
    }
}

fn user_message(text: String) -> ClientEvent {
    message("user", text)
}

fn system_message(text: String) -> ClientEvent {
    message("system", text)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
