//! The task of a call answered by the built-in `echo` agent (a line test). It owns the call's dialog, its RTP leg and its agent, and is the only
//! place that touches them: signalling events, RTP in, one 20 ms frame out every 20 ms,
//! RTCP reports, the operator's controls (hang up, mute; the call has no model, so the
//! registry refuses interrupt and say), and the call's limits.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::{interval, sleep_until, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, Instrument};

use super::echo::EchoBuffer;
use super::registry::{CallDetail, CallPublisher, Control};
use super::{BridgeSettings, Shared};
use crate::media::rtcp::{self, PeerReport, REPORT_INTERVAL};
use crate::media::rtp::{Packetizer, ReceiveStats, FRAME_SAMPLES, HEADER_LEN};
use crate::sip::sdp::Direction;
use crate::sip::{EndReason, IncomingCall, PhoneEvent};

const FRAME: Duration = Duration::from_millis(20);
const FRAME_BYTES: usize = FRAME_SAMPLES as usize;
/// The outcome of a call the operator hung up (as a call with a model reports it).
const OPERATOR_HANGUP: &str = "operator_hangup";

/// Runs one call to its end.
pub async fn run(
    call: IncomingCall,
    settings: Arc<BridgeSettings>,
    shared: Shared,
    stop: CancellationToken,
) {
    let span = info_span!("call", id = %call.id);
    let mut detail = CallDetail::new(
        &call.id,
        &call.from,
        &call.to,
        "echo",
        call.trunk.as_deref(),
    );
    detail.transport = call.transport.into();
    detail.sip_call_id = call.sip_call_id.clone();
    detail.started_at = call.started.into();
    detail.media.codec = call.sip.negotiated().codec.name().into();
    let (publisher, mut controls) = shared.registry.register_without_model(detail);
    shared.metrics.calls_active.inc();
    let outcome = run_inner(call, settings, &publisher, &mut controls, stop)
        .instrument(span)
        .await;
    shared.metrics.calls_active.dec();
    shared.metrics.call_ended(outcome);
    publisher.finish(outcome);
}

/// Applies a mute request.
fn set_muted(publisher: &CallPublisher, muted: &mut bool, m: bool) {
    *muted = m;
    publisher.muted(m);
}

/// Runs the call; returns its outcome label (an [`EndReason`]'s, or `operator_hangup`).
async fn run_inner(
    mut call: IncomingCall,
    settings: Arc<BridgeSettings>,
    publisher: &CallPublisher,
    controls: &mut mpsc::Receiver<Control>,
    stop: CancellationToken,
) -> &'static str {
    let mut muted = false;
    let mut controls_open = true;
    let neg = call.sip.negotiated().clone();
    info!(
        from = %call.from, to = %call.to, transport = call.transport,
        sip_call_id = %call.sip_call_id, source = call.source.map(tracing::field::display),
        trunk = call.trunk.as_deref().unwrap_or("-"), agent = %call.agent,
        codec = neg.codec.name(), dtmf_pt = ?neg.dtmf_payload_type,
        "call started"
    );
    call.sip.ring();
    if !settings.answer_delay.is_zero() {
        let ring_until = Instant::now() + settings.answer_delay;
        loop {
            tokio::select! {
                _ = sleep_until(ring_until) => break,
                ev = call.sip.next_event() => {
                    let reason = match ev {
                        Some(PhoneEvent::Ended(r)) => r,
                        Some(_) => continue,
                        None => EndReason::Other,
                    };
                    info!(reason = reason.as_str(), seconds = 0.0, "call ended");
                    return reason.as_str();
                }
                c = controls.recv(), if controls_open => match c {
                    Some(Control::Hangup) => {
                        info!("the operator hung up");
                        call.sip.hang_up(EndReason::RelayBye).await;
                        info!(reason = OPERATOR_HANGUP, seconds = 0.0, "call ended");
                        return OPERATOR_HANGUP;
                    }
                    Some(Control::Mute(m)) => set_muted(publisher, &mut muted, m),
                    // the registry refuses these for a call without a model
                    Some(Control::Interrupt | Control::Say(_)) => {}
                    None => controls_open = false,
                },
                _ = stop.cancelled() => {
                    call.sip.hang_up(EndReason::Shutdown).await;
                    info!(reason = EndReason::Shutdown.as_str(), seconds = 0.0, "call ended");
                    return EndReason::Shutdown.as_str();
                }
            }
        }
    }
    if let Err(e) = call.sip.answer() {
        info!(error = %e, reason = "rejected", "call ended");
        return EndReason::Rejected.as_str();
    }
    call.rtp.answered();
    let answered = Instant::now();
    publisher.answered();
    info!("call answered");

    let mut direction = neg.direction;
    let mut payload_type = neg.payload_type;
    let mut tx = Packetizer::new(rand::random(), rand::random(), rand::random());
    let mut rx = ReceiveStats::default();
    let mut peer = PeerReport::default();
    let mut echo = EchoBuffer::new(neg.codec.silence_byte());
    let mut in_buf = [0u8; 1500];
    let mut rtcp_buf = [0u8; 1500];
    let mut out = [0u8; HEADER_LEN + FRAME_BYTES];
    let mut frame = [0u8; FRAME_BYTES];
    let mut dtmf_packets = 0u64;

    let mut ticks = interval(FRAME);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut reports = interval(REPORT_INTERVAL);
    reports.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let max_end = answered + settings.max_call;
    let mut last_rx = Instant::now();
    let mut outcome = None;

    let reason = loop {
        tokio::select! {
            ev = call.sip.next_event() => match ev {
                Some(PhoneEvent::Acked) => info!("call acked"),
                Some(PhoneEvent::MediaChanged { remote_rtp, remote_rtcp, direction: d }) => {
                    info!(remote = ?remote_rtp, direction = d.attr(), "call media changed");
                    call.rtp.set_remote(remote_rtp, remote_rtcp);
                    direction = d;
                    payload_type = call.sip.negotiated().payload_type;
                    tx.mark_next();
                    last_rx = Instant::now();
                }
                Some(PhoneEvent::TransferProgress { .. }) => {}
                Some(PhoneEvent::Ended(r)) => break r,
                None => break EndReason::Other,
            },
            r = call.rtp.recv_from(&mut in_buf) => {
                let accepted = r.ok().and_then(|(n, src)| call.rtp.accept(&in_buf[..n], src));
                if let Some(p) = accepted {
                    last_rx = Instant::now();
                    let arrival = (answered.elapsed().as_micros() / 125) as u32;
                    rx.on_packet(&p, arrival);
                    // muted: the caller hears silence, not themselves
                    if p.payload_type == payload_type && !muted {
                        echo.push(&in_buf[p.payload_start..p.payload_end]);
                    } else if Some(p.payload_type) == neg.dtmf_payload_type {
                        dtmf_packets += 1;
                    }
                }
            }
            _ = ticks.tick() => {
                if direction.relay_sends() {
                    echo.pop_into(&mut frame);
                    let n = tx.write(payload_type, &frame, FRAME_SAMPLES, &mut out);
                    call.rtp.send(&out[..n]);
                } else {
                    tx.skip(FRAME_SAMPLES);
                }
                let receiving = matches!(direction, Direction::SendRecv | Direction::RecvOnly);
                if let Some(limit) = settings.rtp_timeout {
                    if receiving && last_rx.elapsed() > limit {
                        call.sip.hang_up(EndReason::RtpTimeout).await;
                        break EndReason::RtpTimeout;
                    }
                }
            }
            r = call.rtp.recv_rtcp_from(&mut rtcp_buf) => {
                // RTCP from a source not taken is dropped (and counted by the leg).
                if let Some((n, _)) = r.ok().filter(|(_, src)| call.rtp.accept_rtcp(*src)) {
                    rtcp::on_peer_packet(&rtcp_buf[..n], tx.ssrc(), &mut peer);
                }
            }
            _ = reports.tick() => {
                let sr = rtcp::sender_report(&tx, &mut rx, SystemTime::now());
                call.rtp.send_rtcp(&sr);
            }
            c = controls.recv(), if controls_open => match c {
                Some(Control::Hangup) => {
                    info!("the operator hung up");
                    call.sip.hang_up(EndReason::RelayBye).await;
                    outcome = Some(OPERATOR_HANGUP);
                    break EndReason::RelayBye;
                }
                Some(Control::Mute(m)) => set_muted(publisher, &mut muted, m),
                // the registry refuses these for a call without a model
                Some(Control::Interrupt | Control::Say(_)) => {}
                None => controls_open = false,
            },
            _ = sleep_until(max_end) => {
                call.sip.hang_up(EndReason::MaxDuration).await;
                break EndReason::MaxDuration;
            }
            _ = stop.cancelled() => {
                call.sip.hang_up(EndReason::Shutdown).await;
                break EndReason::Shutdown;
            }
        }
    };
    let c = call.rtp.counters;
    // Free the call's slot and ports before saying it ended, so whoever reads the log line
    // can count on both.
    drop(call);
    let outcome = outcome.unwrap_or(reason.as_str());
    info!(
        reason = outcome,
        seconds = answered.elapsed().as_secs_f32(),
        rtp_in = c.rx_packets,
        rtp_out = c.tx_packets,
        lost = rx.lost(),
        jitter = rx.jitter(),
        foreign = c.foreign_dropped,
        rtcp_foreign = c.rtcp_foreign_dropped,
        malformed = c.malformed,
        dtmf_packets,
        rtcp_in = c.rtcp_rx,
        rtcp_out = c.rtcp_tx,
        peer_lost = peer.lost,
        "call ended"
    );
    outcome
}
