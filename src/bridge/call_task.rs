//! The task of one call: the IO around its [`CallCore`]. It owns the dialog, the RTP socket,
//! the realtime leg, the running tools and moderation checks; it feeds the core what happens
//! and carries out what the core asks for, in order. Every decision is the core's.
//!
//! Set-up: 180 Ringing while the realtime session opens (or, for the echo line test, for
//! `bridge.answer_delay_ms`), then 200 OK. Then one loop: one 20 ms tick (the caller's RTP
//! that came since the last tick, the caller's frame to the agent, one packet to the
//! caller), realtime events, tool results, operator controls, RTCP, statistics and the
//! core's deadlines. At the end: the session closed, BYE when the relay ends the call,
//! running tools given time to finish (a booking being written is kept), the record stored.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::{interval, sleep, sleep_until, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use super::call_agent::CallAgent;
use super::call_core::{CallCore, CoreParts, Ended};
use super::call_record;
use super::registry::Control;
use super::session_io::{SessionIo, TaskOutput};
use super::{BridgeSettings, LiveContext, Shared};
use crate::media::frame::FRAME_DURATION;
use crate::media::rtcp::REPORT_INTERVAL;
use crate::media::rtp_leg::RtpRead;
use crate::media::rtp_socket::arrived_at;
use crate::metrics::Metrics;
use crate::openai::{CallerAudio, LegError, LegEvent, RealtimeLeg};
use crate::sip::{DialOutcome, EndReason, IncomingCall, LegDial, LegOutcome, PhoneEvent};

/// Media counters go out as an event this often.
const STATS_EVERY: Duration = Duration::from_secs(5);

/// The most caller datagrams read at one tick (a 20 ms trunk sends one); a flood beyond
/// this waits in the socket's buffer, where the kernel drops what does not fit.
const MAX_READ_PER_TICK: usize = 32;

/// Who answers a call: an agent, with what realtime calls share; `None`: the built-in
/// `echo` line test.
pub type Answerer = Option<(Arc<CallAgent>, Arc<LiveContext>)>;

/// Runs one call to its end.
pub async fn run(
    call: IncomingCall,
    who: Answerer,
    settings: Arc<BridgeSettings>,
    shared: Shared,
    stop: CancellationToken,
) {
    let span = info_span!("call", id = %call.id);
    run_inner(call, who, settings, shared, stop)
        .instrument(span)
        .await
}

async fn run_inner(
    call: IncomingCall,
    who: Answerer,
    settings: Arc<BridgeSettings>,
    Shared { registry, metrics }: Shared,
    stop: CancellationToken,
) {
    let t0 = Instant::now();
    let neg = call.sip.negotiated().clone();
    let (agent, ctx) = who.unzip();
    let tools = ctx.as_ref().and_then(|c| c.tools.clone());
    // the booking tools act for this caller: a trusted trunk's number, else nobody in particular
    let caller = tools
        .as_ref()
        .map(|t| t.caller(call.caller_number.as_deref()));
    let agent_name = agent
        .as_ref()
        .map_or_else(|| "echo".into(), |a| a.name.clone());
    info!(
        from = %call.from, to = %call.to, transport = call.transport,
        sip_call_id = %call.sip_call_id, source = call.source.map(tracing::field::display),
        trunk = call.trunk.as_deref().unwrap_or("-"), agent = %agent_name,
        codec = neg.codec.name(), dtmf_pt = ?neg.dtmf_payload_type,
        verified_caller = caller.as_ref().is_some_and(|c| c.number().is_some()), "call started"
    );
    let detail = call_record::detail(&call, &agent_name);
    let (publisher, controls) = match &agent {
        Some(_) => registry.register(detail),
        None => registry.register_without_model(detail),
    };
    metrics.calls_active.inc();
    let core = CallCore::new(CoreParts {
        agent,
        agents: ctx
            .as_ref()
            .map(|c| c.phone_agents.clone())
            .unwrap_or_default(),
        settings,
        publisher,
        metrics: metrics.clone(),
        codec: neg.codec,
        payload_type: neg.payload_type,
        dtmf_payload_type: neg.dtmf_payload_type,
        direction: neg.direction,
        moderation: ctx.as_ref().is_some_and(|c| c.moderation.is_some()),
        kind: crate::booking::CallKind::Phone,
        outbound: call.outbound.clone(),
    });
    let mut task = Task {
        call,
        core,
        io: SessionIo::new(ctx, caller.unwrap_or_default()),
        metrics,
        t0,
        person: Person::default(),
    };
    let end = task.run(controls, stop).await;
    task.finish(end).await;
}

/// A realtime session opened, or why not; `None` for the echo line test.
type Opened = Option<Result<Box<dyn RealtimeLeg>, LegError>>;

/// The IO of one call.
struct Task {
    call: IncomingCall,
    core: CallCore,
    /// The realtime session, the running tools and checks.
    io: SessionIo,
    metrics: Arc<Metrics>,
    t0: Instant,
    /// A warm transfer's person: the call to them, then their leg.
    person: Person,
}

/// A warm transfer's second leg.
#[derive(Default)]
struct Person {
    /// The call to the person while it rings.
    dialing: Option<tokio::task::JoinHandle<LegOutcome>>,
    /// Cancels that call.
    cancel: CancellationToken,
    /// The person's answered leg.
    call: Option<Box<IncomingCall>>,
}

impl Person {
    /// Cancels the call to the person, or hangs it up.
    async fn drop_leg(&mut self) {
        self.cancel.cancel();
        if let Some(mut c) = self.call.take() {
            c.sip.hang_up(EndReason::RelayBye).await;
        }
        *self = Person::default();
    }
}

/// What the agent is told of a call to the person that was not answered.
fn not_answered(o: &DialOutcome) -> &'static str {
    match o {
        DialOutcome::Busy(_) => "the person's line is busy",
        DialOutcome::NoAnswer => "the person did not answer",
        DialOutcome::Refused(_) => "the person's line refused the call",
        DialOutcome::Unreachable => "the person's number cannot be reached",
        DialOutcome::Answered | DialOutcome::Failed(_) => {
            "the call to the person could not be made"
        }
    }
}

impl Task {
    /// Opens a realtime session for the core's current agent; the echo line test, with no
    /// agent, waits `wait` instead (`None`). Made of owned parts, so that the loop's other
    /// branches do not restart it while the phone rings.
    fn open_leg(&self, wait: Duration) -> impl std::future::Future<Output = Opened> + 'static {
        let spec = self.core.agent().map(|a| a.spec.clone());
        let (ctx, law) = (self.io.ctx().cloned(), self.core.media().law());
        async move {
            let (Some(ctx), Some(spec)) = (ctx, spec) else {
                sleep(wait).await;
                return None;
            };
            Some(ctx.connector.connect(&spec, law).await)
        }
    }

    /// Answers (200 OK) once the session is open or could not be; `Some`: the call is over.
    fn answer(&mut self, opened: Opened) -> Option<Ended> {
        if let Err(e) = self.call.sip.answer() {
            info!(error = %e, "the answer was refused");
            return Some(Ended::by_phone(EndReason::Rejected));
        }
        self.call.rtp.answered();
        let now = self.t0.elapsed();
        let setup = self.call.started.elapsed().unwrap_or_default();
        let opened = match opened {
            Some(Ok(leg)) => {
                let id = leg.session_id().map(str::to_string);
                self.io.leg = Some(leg);
                Ok(id)
            }
            Some(Err(e)) => Err(e),
            None => Ok(None),
        };
        self.core.start_recording(now, &self.call.id);
        self.core.handle_answered(now, setup, opened);
        None
    }

    /// Rings, answers, then runs the call until it is over.
    async fn run(
        &mut self,
        mut controls: mpsc::Receiver<Control>,
        stop: CancellationToken,
    ) -> Ended {
        self.call.sip.ring();
        let ready = self.open_leg(self.core.settings().answer_delay);
        tokio::pin!(ready);
        let mut answered = false;
        // the media clock catches up after a stall (bursts: the default); the others need not
        let mut ticks = interval(FRAME_DURATION);
        let (mut reports, mut stats) = (interval(REPORT_INTERVAL), interval(STATS_EVERY));
        reports.set_missed_tick_behavior(MissedTickBehavior::Delay);
        stats.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut controls_open = true;
        let mut rtp_buf = [0u8; 1500];
        let mut rtcp_buf = [0u8; 1500];
        let mut person_buf = [0u8; 1500];
        // one timer for the core's deadlines, moved only when the next deadline moves
        let timer = sleep_until(self.t0);
        tokio::pin!(timer);
        let mut armed = None;
        // the caller's RTP: read at the ticks (a quiet socket) unless each packet must go on
        // at once; quiet from the first turn, as nothing reads it before the answer (the
        // socket is bound woken)
        let mut woken = true;
        loop {
            let wanted = answered && self.core.forwards_caller();
            if wanted != woken {
                woken = wanted;
                if let Err(e) = self.call.rtp.set_woken(wanted) {
                    warn!(error = %e, "the caller's RTP stays read at the ticks");
                }
            }
            let rtp_woken = self.call.rtp.is_woken();
            let deadline = self.core.poll_timeout().map(|d| self.t0 + d);
            if deadline != armed {
                if let Some(d) = deadline {
                    timer.as_mut().reset(d);
                }
                armed = deadline;
            }
            let leg = self.io.leg.as_mut();
            let has_leg = leg.is_some();
            let dialing = self.person.dialing.as_mut();
            let is_dialing = dialing.is_some();
            let (person_sip, person_rtp) = match self.person.call.as_deref_mut() {
                Some(c) => (Some(&mut c.sip), Some(&mut c.rtp)),
                None => (None, None),
            };
            let has_person = person_sip.is_some();
            tokio::select! {
                r = async { dialing.expect("guarded").await }, if is_dialing => {
                    self.person.dialing = None;
                    self.on_person_dialled(r);
                }
                ev = async { person_sip.expect("guarded").next_event().await }, if has_person => match ev {
                    Some(PhoneEvent::MediaChanged { remote_rtp, remote_rtcp, .. }) => {
                        if let Some(c) = self.person.call.as_mut() {
                            c.rtp.set_remote(remote_rtp, remote_rtcp);
                        }
                    }
                    Some(PhoneEvent::Ended(_)) | None => {
                        self.person.call = None;
                        self.core.handle_person_ended(self.t0.elapsed(), "the person hung up");
                    }
                    Some(_) => {}
                },
                r = async { person_rtp.expect("guarded").recv_from(&mut person_buf).await }, if has_person => {
                    if let Some(c) = self.person.call.as_mut() {
                        if let Some(p) = r.ok().and_then(|(n, src)| c.rtp.accept(&person_buf[..n], src)) {
                            let payload = &person_buf[p.payload_start..p.payload_end];
                            if let Some(out) = self.core.handle_person_rtp(self.t0.elapsed(), &p, payload) {
                                self.call.rtp.send(out);
                            }
                        }
                    }
                }
                r = &mut ready, if !answered => {
                    answered = true;
                    if let Some(end) = self.answer(r) {
                        return end;
                    }
                    ticks.reset_immediately();
                    reports.reset();
                    stats.reset();
                }
                ev = self.call.sip.next_event() => match ev {
                    Some(PhoneEvent::Acked) => info!("call acked"),
                    Some(PhoneEvent::MediaChanged { remote_rtp, remote_rtcp, direction }) => {
                        info!(remote = ?remote_rtp, direction = direction.attr(), "call media changed");
                        self.call.rtp.set_remote(remote_rtp, remote_rtcp);
                        let n = self.call.sip.negotiated();
                        let (pt, dtmf) = (n.payload_type, n.dtmf_payload_type);
                        self.core.handle_media_changed(self.t0.elapsed(), direction, pt, dtmf);
                    }
                    Some(PhoneEvent::TransferProgress { status }) => {
                        self.core.handle_transfer_progress(self.t0.elapsed(), status)
                    }
                    Some(PhoneEvent::Ended(r)) => self.core.handle_phone_ended(r),
                    None => self.core.handle_phone_ended(EndReason::Other),
                },
                r = self.call.rtp.recv_from(&mut rtp_buf), if answered && rtp_woken => {
                    if let Ok((n, src)) = r {
                        self.on_caller_datagram(self.t0.elapsed(), &rtp_buf[..n], src);
                    }
                }
                tick = ticks.tick(), if answered => {
                    self.core.media_metrics().tick(tick.elapsed());
                    if !rtp_woken {
                        self.read_caller_rtp(&mut rtp_buf);
                    }
                    self.on_tick(tick.saturating_duration_since(self.t0)).await
                }
                ev = async { leg.expect("guarded").recv().await }, if has_leg => {
                    let audio = matches!(ev, LegEvent::Audio(_));
                    let now = self.t0.elapsed();
                    self.core.handle_leg(now, ev);
                    if audio {
                        // agent audio that came late for its slot goes out as it comes
                        if let Some(packet) = self.core.late_packet(now) {
                            self.call.rtp.send(packet);
                        }
                    }
                }
                Some(done) = self.io.tools.join_next(), if !self.io.tools.is_empty() => match done {
                    Ok(done) => self.core.handle_tool_done(self.t0.elapsed(), done),
                    Err(e) => warn!(error = %e, "a tool task failed"),
                },
                Some(r) = self.io.checks.join_next(), if !self.io.checks.is_empty() => {
                    if let Ok(r) = r {
                        self.core.handle_moderation(self.t0.elapsed(), r);
                    }
                }
                c = controls.recv(), if controls_open => match c {
                    Some(c) => self.core.handle_control(self.t0.elapsed(), c),
                    None => controls_open = false,
                },
                r = self.call.rtp.recv_rtcp_from(&mut rtcp_buf), if answered => {
                    // RTCP from a source not taken is dropped (and counted by the leg).
                    if let Some((n, _)) = r.ok().filter(|(_, src)| self.call.rtp.accept_rtcp(*src)) {
                        self.core.handle_rtcp(&rtcp_buf[..n]);
                    }
                }
                _ = reports.tick(), if answered => self.call.rtp.send_rtcp(&self.core.rtcp_report(SystemTime::now())),
                _ = stats.tick(), if answered => self.core.publish_stats(self.call.rtp.counters),
                _ = &mut timer, if armed.is_some() => {
                    // re-armed on the next turn, even at the same instant
                    armed = None;
                    self.core.handle_timeout(self.t0.elapsed());
                }
                _ = stop.cancelled() => self.core.handle_shutdown(),
            }
            if let Some(end) = self.drain().await {
                return end;
            }
        }
    }

    /// One datagram from the caller's RTP socket, received at `now`.
    fn on_caller_datagram(&mut self, now: Duration, datagram: &[u8], src: SocketAddr) {
        let Some(p) = self.call.rtp.accept(datagram, src) else {
            return;
        };
        let payload = &datagram[p.payload_start..p.payload_end];
        let to_person = self.core.handle_rtp(now, &p, payload);
        if let (Some(out), Some(c)) = (to_person, self.person.call.as_mut()) {
            c.rtp.send(out);
        }
    }

    /// What the caller sent since the last tick (the socket is quiet), each packet handled
    /// at the time the kernel received it, so the jitter buffer sees the network's timing.
    fn read_caller_rtp(&mut self, buf: &mut [u8]) {
        let (now, wall) = (self.t0.elapsed(), SystemTime::now());
        for _ in 0..MAX_READ_PER_TICK {
            match self.call.rtp.try_recv_from(buf) {
                RtpRead::Nothing => break,
                RtpRead::Dropped => {}
                RtpRead::Datagram(n, src, stamp) => {
                    self.on_caller_datagram(arrived_at(now, wall, stamp), &buf[..n], src)
                }
            }
        }
    }

    /// One 20 ms tick: the caller's frame to the agent, one packet to the caller.
    async fn on_tick(&mut self, now: Duration) {
        let started = std::time::Instant::now();
        let frame = self.core.caller_frame(now);
        if let Some(leg) = self.io.leg.as_mut() {
            // a failed send shows up as the leg ending; nothing to do here
            let _ = leg.send_audio(CallerAudio::Pcm(frame)).await;
        }
        self.core
            .media_metrics()
            .frame("to_agent", started.elapsed().as_secs_f64());
        let started = std::time::Instant::now();
        if let Some(packet) = self.core.handle_tick(now) {
            self.call.rtp.send(packet);
        }
        if let Some(packet) = self.core.person_packet(now) {
            if let Some(c) = self.person.call.as_mut() {
                c.rtp.send(packet);
            }
        }
        self.core
            .media_metrics()
            .frame("to_caller", started.elapsed().as_secs_f64());
    }

    /// Carries out what the core asked for, in order; the call's end when it is over.
    async fn drain(&mut self) -> Option<Ended> {
        while let Some(out) = self.core.poll_output() {
            let tool_timeout = self.core.settings().tool_timeout;
            let Some(rest) = self.io.carry_out(out, tool_timeout).await else {
                continue;
            };
            match rest {
                TaskOutput::OpenLeg => {
                    let opened = match self.open_leg(Duration::ZERO).await {
                        Some(Ok(leg)) => {
                            let id = leg.session_id().map(str::to_string);
                            self.io.leg = Some(leg);
                            Ok(id)
                        }
                        Some(Err(e)) => Err(e.to_string()),
                        None => Err("no realtime service".into()),
                    };
                    self.core.handle_leg_opened(self.t0.elapsed(), opened);
                }
                TaskOutput::Refer(target) => {
                    let r = self.call.sip.refer(&target).await;
                    self.core.handle_refer_answer(self.t0.elapsed(), r);
                }
                TaskOutput::CallPerson { target, codec } => self.call_person(target, codec).await,
                TaskOutput::DropPerson => self.person.drop_leg().await,
                TaskOutput::End(end) => return Some(end),
            }
        }
        None
    }

    /// Places the warm transfer's call to the person.
    async fn call_person(&mut self, target: String, codec: crate::media::g711::Law) {
        let dialer = self.io.ctx().and_then(|c| c.dialer.get().cloned());
        let Some(dialer) = dialer else {
            let now = self.t0.elapsed();
            self.core
                .handle_person_ended(now, "this line cannot place calls");
            return;
        };
        self.person.drop_leg().await;
        let d = LegDial {
            uri: target,
            codec,
            ring_timeout: crate::bridge::call_core::TRANSFER_LIMIT,
            cancel: self.person.cancel.clone(),
            shown_as: self.call.caller_number.clone(),
        };
        let agent = self
            .core
            .agent()
            .map_or("-", |a| a.name.as_str())
            .to_string();
        match dialer.dial_leg(d, &agent).await {
            Ok(handle) => self.person.dialing = Some(handle),
            Err(e) => {
                warn!(error = %e, "the call to the person could not be placed");
                let now = self.t0.elapsed();
                self.core
                    .handle_person_ended(now, "the call to the person could not be made");
            }
        }
    }

    /// The call to the person was answered, or not.
    fn on_person_dialled(&mut self, r: Result<LegOutcome, tokio::task::JoinError>) {
        let now = self.t0.elapsed();
        match r {
            Ok(Ok(mut call)) => {
                call.rtp.answered();
                let n = call.sip.negotiated();
                let (codec, pt, dtmf) = (n.codec, n.payload_type, n.dtmf_payload_type);
                self.person.call = Some(call);
                self.core.handle_person_answered(now, codec, pt, dtmf);
            }
            Ok(Err(outcome)) => self.core.handle_person_ended(now, not_answered(&outcome)),
            Err(e) => {
                warn!(error = %e, "the call to the person failed");
                self.core
                    .handle_person_ended(now, "the call to the person could not be made");
            }
        }
    }

    /// The call is over: close the realtime side, hang up if the relay ends the call, wait
    /// for running tools, store the record.
    async fn finish(mut self, end: Ended) {
        // the caller's BYE must end the realtime call at once
        self.io.close_leg().await;
        // and a warm transfer's person is let go
        self.person.drop_leg().await;
        if let Some(r) = end.sip {
            self.call.sip.hang_up(r).await;
        }
        self.core.finish_recording();
        // a booking being written is kept: let running tools finish (bounded)
        self.io.finish_tools(&mut self.core, self.t0).await;
        self.core.publish_stats(self.call.rtp.counters);
        let (c, seconds) = (self.call.rtp.counters, self.t0.elapsed().as_secs_f32());
        let figures = self.core.end_figures();
        // free the call's slot and ports before saying it ended
        drop(self.call);
        // the record is stored before the line that says the call ended, so whoever reads
        // that line finds the record
        let tools = self.io.ctx().and_then(|c| c.tools.as_ref());
        let webhooks = self.io.ctx().and_then(|c| c.webhooks.as_ref());
        let redact = self.core.settings().redact_transcripts;
        let p = self.core.into_publisher();
        call_record::finish(&self.metrics, tools, p, &end.reason, redact, webhooks).await;
        figures.log(&end.reason, seconds, &c);
    }
}
