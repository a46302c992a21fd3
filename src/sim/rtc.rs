//! The WebRTC answerer: answers an offer like OpenAI does, then one task per call owns the
//! session's engine, reading the `oai-events` channel and the caller's RTP (Opus, or G.711 when
//! only that was offered) and sending events and model audio paced in real time.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_PCMA, MIME_TYPE_PCMU,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

use super::engine::{CloseReason, Engine, EngineConfig, Output, Transport};
use super::error::OpenAiError;
use super::record::SessionRecord;
use super::sideband::Sidebands;
use super::state::{random_id, unix_now, RtcInput, State};
use super::voice::{self, FRAME};
use crate::media::g711;

/// How long the data channel may take to open before the call is given up.
const OPEN_DEADLINE: Duration = Duration::from_secs(30);
/// A peer connection disconnected this long ends the session.
const DISCONNECTED_LIMIT: Duration = Duration::from_secs(5);
/// An ICE-never-completes answer's black hole stays bound this long at most.
const BLACK_HOLE_LIFETIME: Duration = Duration::from_secs(120);

/// The codec the call's audio uses, both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Opus(u8),
    Pcmu,
    Pcma,
}

impl Codec {
    fn from_offer(offer: &str) -> Option<Codec> {
        if let Some(pt) = super::sdp::offered_opus_pt(offer) {
            return Some(Codec::Opus(pt));
        }
        let audio_line = offer.lines().find(|l| l.starts_with("m=audio"))?;
        let pts: Vec<&str> = audio_line.split(' ').skip(3).map(str::trim).collect();
        if pts.contains(&"0") {
            Some(Codec::Pcmu)
        } else if pts.contains(&"8") {
            Some(Codec::Pcma)
        } else {
            None
        }
    }

    fn pt(self) -> u8 {
        match self {
            Codec::Opus(pt) => pt,
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    fn rtp_codec(self) -> RTCRtpCodec {
        match self {
            Codec::Opus(_) => RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            Codec::Pcmu | Codec::Pcma => RTCRtpCodec {
                mime_type: if self == Codec::Pcmu {
                    MIME_TYPE_PCMU
                } else {
                    MIME_TYPE_PCMA
                }
                .to_owned(),
                clock_rate: 8_000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
        }
    }

    /// RTP clock ticks per 20 ms.
    fn ticks(self) -> u32 {
        match self {
            Codec::Opus(_) => 960,
            _ => 160,
        }
    }
}

struct Handler {
    tx: mpsc::Sender<RtcInput>,
    gathered: mpsc::Sender<()>,
    codec: Codec,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.try_send(RtcInput::PcState(state));
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let tx = self.tx.clone();
        // runs on the connection's driver: hand the channel to a task, never block here
        tokio::spawn(async move {
            while let Some(ev) = dc.poll().await {
                let input = match ev {
                    DataChannelEvent::OnOpen => RtcInput::DcOpen(dc.clone()),
                    DataChannelEvent::OnMessage(msg) => {
                        RtcInput::DcMessage(String::from_utf8_lossy(&msg.data).into_owned())
                    }
                    DataChannelEvent::OnClose => {
                        let _ = tx.send(RtcInput::DcClosed).await;
                        break;
                    }
                    _ => continue,
                };
                if tx.send(input).await.is_err() {
                    break;
                }
            }
        });
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let tx = self.tx.clone();
        let codec = self.codec;
        tokio::spawn(async move {
            let mut decoder = match codec {
                Codec::Opus(_) => opus::Decoder::new(voice::RATE, opus::Channels::Mono).ok(),
                _ => None,
            };
            // one buffer per call, reused: up to 120 ms of decoded audio
            let mut pcm = vec![0i16; voice::RATE as usize * 120 / 1000];
            let mut narrow = Vec::with_capacity(960);
            let mut wide = Vec::with_capacity(2_880);
            while let Some(ev) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(pkt) = ev else {
                    continue;
                };
                let samples: &[i16] = match codec {
                    Codec::Opus(pt) if pkt.header.payload_type == pt => {
                        let Some(dec) = decoder.as_mut() else {
                            continue;
                        };
                        match dec.decode(&pkt.payload, &mut pcm, false) {
                            Ok(n) => &pcm[..n],
                            Err(_) => continue, // a corrupt packet is skipped, not fatal
                        }
                    }
                    Codec::Pcmu | Codec::Pcma if pkt.header.payload_type == codec.pt() => {
                        narrow.clear();
                        narrow.extend(pkt.payload.iter().map(|&b| {
                            if codec == Codec::Pcmu {
                                g711::ulaw_decode(b)
                            } else {
                                g711::alaw_decode(b)
                            }
                        }));
                        wide.clear();
                        voice::upsample_8k_to_24k_into(&narrow, &mut wide);
                        &wide
                    }
                    _ => continue,
                };
                for chunk in samples.chunks(FRAME) {
                    let mut frame = [0i16; FRAME];
                    frame[..chunk.len()].copy_from_slice(chunk);
                    if tx.send(RtcInput::Audio(frame, chunk.len())).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// The media-stops fault: a UDP relay between the two peers, each told the other is at one
/// of its sockets (the offer's and the answer's candidates are rewritten), that forwards
/// every packet until `cut`, then drops them all. Both sockets stay bound, so the client
/// sees a silent network, not an unreachable port.
struct MediaGate {
    /// Faces the client: the answer's candidate.
    client_side: tokio::net::UdpSocket,
    /// Faces the simulator's peer: the candidate its copy of the offer names.
    sim_side: tokio::net::UdpSocket,
}

impl MediaGate {
    async fn bind(ip: std::net::IpAddr) -> std::io::Result<Self> {
        Ok(Self {
            client_side: tokio::net::UdpSocket::bind((ip, 0)).await?,
            sim_side: tokio::net::UdpSocket::bind((ip, 0)).await?,
        })
    }

    fn ports(&self) -> (u16, u16) {
        let port = |s: &tokio::net::UdpSocket| s.local_addr().map(|a| a.port()).unwrap_or(9);
        (port(&self.client_side), port(&self.sim_side))
    }

    /// Forwards between `client` (learnt again from each packet) and `sim` until `cut`, then
    /// drops everything until `stop`.
    async fn run(
        self,
        mut client: std::net::SocketAddr,
        sim: std::net::SocketAddr,
        cut: tokio_util::sync::CancellationToken,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut from_client = vec![0u8; 2_048];
        let mut from_sim = vec![0u8; 2_048];
        let until = Instant::now() + BLACK_HOLE_LIFETIME;
        loop {
            let cut_now = cut.is_cancelled();
            tokio::select! {
                r = self.client_side.recv_from(&mut from_client) => {
                    let Ok((n, src)) = r else { continue };
                    client = src;
                    if !cut_now {
                        let _ = self.sim_side.send_to(&from_client[..n], sim).await;
                    }
                }
                r = self.sim_side.recv_from(&mut from_sim) => {
                    let Ok((n, _)) = r else { continue };
                    if !cut_now {
                        let _ = self.client_side.send_to(&from_sim[..n], client).await;
                    }
                }
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(until) => return,
            }
        }
    }
}

fn offer_error(message: impl Into<String>) -> OpenAiError {
    let mut e = OpenAiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some("invalid_offer"),
        message,
    );
    e.param = Some("sdp".into());
    e
}

/// Answers an offer: returns the call id and the answer SDP, and starts the call's task.
pub(crate) async fn accept(
    state: Arc<State>,
    offer: &str,
    session: Option<Value>,
) -> Result<(String, String), OpenAiError> {
    let codec = Codec::from_offer(offer)
        .ok_or_else(|| offer_error("The offer has no audio m-line with Opus, PCMU or PCMA."))?;
    let max_playback_rate = match codec {
        Codec::Opus(pt) => super::sdp::offered_max_playback_rate(offer, pt),
        _ => None,
    };
    let internal = |e: webrtc::error::Error| {
        tracing::warn!(error = %e, "simulator peer connection failed");
        OpenAiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            "The server had an error while processing your request.",
        )
    };
    let mut media = MediaEngine::default();
    let mut codecs = vec![(Codec::Pcmu, 0u8), (Codec::Pcma, 8u8)];
    if let Codec::Opus(pt) = codec {
        codecs.insert(0, (codec, pt));
    }
    for (c, pt) in codecs {
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: c.rtp_codec(),
                    payload_type: pt,
                },
                RtpCodecKind::Audio,
            )
            .map_err(internal)?;
    }
    let settings = SettingEngineBuilder::new()
        // OpenAI is the DTLS client: its answers say `setup:active`
        .with_answering_dtls_role(rtc::peer_connection::transport::RTCDtlsRole::Client)
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_ice_connection_attempts(Some(Duration::from_millis(20)), None)
        .build();
    let (tx, rx) = mpsc::channel(256);
    let (gathered_tx, mut gathered_rx) = mpsc::channel(1);
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media)
        .with_setting_engine(settings)
        .with_handler(Arc::new(Handler {
            tx: tx.clone(),
            gathered: gathered_tx,
            codec,
        }))
        .with_udp_addrs(vec![format!("{}:0", state.media_ip)])
        .build()
        .await
        .map_err(internal)?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    let gate = match state.scenario.faults.media_stops_after_ms {
        Some(_) => match MediaGate::bind(state.media_ip).await {
            Ok(g) => Some(g),
            Err(e) => {
                let _ = pc.close().await;
                return Err(internal(webrtc::error::Error::Other(e.to_string())));
            }
        },
        None => None,
    };
    let client_addr = super::sdp::first_udp_candidate(offer);
    // with the gate, the simulator's peer is told the client is at the gate
    let offer = match &gate {
        Some(g) => super::sdp::redirect_candidates(offer, &state.media_ip.to_string(), g.ports().1),
        None => offer.to_string(),
    };
    let ssrc: u32 = rand::random();
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "oai-sim".to_string(),
        "oai-sim-audio".to_string(),
        "model audio".to_string(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec.rtp_codec(),
            ..Default::default()
        }],
    )));
    let answer = async {
        pc.add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(internal)?;
        let offer = RTCSessionDescription::offer(offer)
            .map_err(|e| offer_error(format!("Invalid SDP offer: {e}")))?;
        pc.set_remote_description(offer)
            .await
            .map_err(|e| offer_error(format!("The SDP offer was rejected: {e}")))?;
        let answer = pc.create_answer(None).await.map_err(internal)?;
        pc.set_local_description(answer).await.map_err(internal)?;
        let _ = tokio::time::timeout(Duration::from_secs(5), gathered_rx.recv()).await;
        let local = pc
            .local_description()
            .await
            .ok_or_else(|| internal(webrtc::error::Error::Other("no local description".into())))?;
        Ok::<String, OpenAiError>(super::sdp::shape_answer(&local.sdp))
    }
    .await;
    let mut answer = match answer {
        Ok(a) => a,
        Err(e) => {
            let _ = pc.close().await;
            return Err(e);
        }
    };
    let mut media_cut = None;
    if let (Some(gate), Some(after)) = (gate, state.scenario.faults.media_stops_after_ms) {
        let (Some(client), Some(sim)) = (client_addr, super::sdp::first_udp_candidate(&answer))
        else {
            let _ = pc.close().await;
            return Err(offer_error("The offer has no UDP candidate."));
        };
        // ... and the client is told the simulator's peer is at the gate
        answer =
            super::sdp::redirect_candidates(&answer, &state.media_ip.to_string(), gate.ports().0);
        let cut = tokio_util::sync::CancellationToken::new();
        tokio::spawn(gate.run(client, sim, cut.clone(), state.shutdown.clone()));
        media_cut = Some((cut, Duration::from_millis(after)));
    }
    let call_id = random_id("rtc", 24);
    let session_id = random_id("sess", 20);
    let record = Arc::new(SessionRecord::new(
        &session_id,
        "webrtc",
        &state.scenario.name,
    ));
    record.with(|l| {
        l.call_id = Some(call_id.clone());
        if let Some(s) = &session {
            l.session_updates.push(s.clone());
        }
    });
    state.add_record(&session_id, record.clone());

    if state.scenario.faults.ice_never_completes {
        // a well-formed answer whose candidate is a socket nobody reads
        let _ = pc.close().await;
        let hole = tokio::net::UdpSocket::bind((state.media_ip, 0))
            .await
            .map_err(|e| internal(webrtc::error::Error::Other(e.to_string())))?;
        let port = hole.local_addr().map(|a| a.port()).unwrap_or(9);
        let shutdown = state.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(BLACK_HOLE_LIFETIME) => {}
                _ = shutdown.cancelled() => {}
            }
            drop(hole);
        });
        record.with(|l| l.closed = Some("fault: ICE never completes".into()));
        let answer = super::sdp::redirect_candidates(&answer, &state.media_ip.to_string(), port);
        return Ok((call_id, answer));
    }

    state.calls.insert(call_id.clone(), tx);
    let call = Call {
        state: state.clone(),
        call_id: call_id.clone(),
        session_id,
        pc,
        track,
        ssrc,
        codec,
        max_playback_rate,
        session,
        record,
        media_cut,
    };
    tokio::spawn(call.run(rx));
    Ok((call_id, answer))
}

struct Call {
    state: Arc<State>,
    call_id: String,
    session_id: String,
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    codec: Codec,
    /// The offer's `maxplaybackrate` for Opus: the widest audio the client wants.
    max_playback_rate: Option<u32>,
    session: Option<Value>,
    record: Arc<SessionRecord>,
    /// The media-stops fault: cut the gate this long after the session opens.
    media_cut: Option<(tokio_util::sync::CancellationToken, Duration)>,
}

/// The agent's Opus encoder complexity: 1, as the relay's own encoder runs, rather than
/// libopus's default 9. A client cannot tell the two apart from the packets (the same bands,
/// frame size and rate); at 9, a bench of 100 sessions spent most of a core of its two on the
/// simulator, and the simulator's own lateness showed up as the relay's latency
/// (docs/performance.md, "The simulator's encoder").
const ENCODER_COMPLEXITY: i32 = 1;

/// Turns model audio frames into RTP packets: one encoder and one buffer per call.
struct Sender {
    codec: Codec,
    encoder: Option<opus::Encoder>,
    seq: u16,
    ts: u32,
    ssrc: u32,
    talking: bool,
    buf: Vec<u8>,
    pcm: [i16; FRAME],
    narrow: Vec<i16>,
    /// The widest Opus audio band sent so far ([`band_rank`]; 0 before any).
    widest: u8,
}

/// The Opus band that holds audio up to `rate` Hz.
fn widest_band(rate: u32) -> opus::Bandwidth {
    match rate {
        0..=8_000 => opus::Bandwidth::Narrowband,
        8_001..=12_000 => opus::Bandwidth::Mediumband,
        12_001..=16_000 => opus::Bandwidth::Wideband,
        16_001..=24_000 => opus::Bandwidth::Superwideband,
        _ => opus::Bandwidth::Fullband,
    }
}

/// Opus bands in order of width, 1 (narrowband) to 5 (fullband), as the record counts them.
fn band_rank(band: opus::Bandwidth) -> u8 {
    match band {
        opus::Bandwidth::Narrowband => 1,
        opus::Bandwidth::Mediumband => 2,
        opus::Bandwidth::Wideband => 3,
        opus::Bandwidth::Superwideband => 4,
        opus::Bandwidth::Fullband => 5,
        _ => 0,
    }
}

impl Sender {
    /// A sender; an Opus encoder holds its audio to `max_playback_rate` when the offer gave
    /// one, as a browser's or OpenAI's encoder may (RFC 7587 §6.1).
    fn new(codec: Codec, ssrc: u32, max_playback_rate: Option<u32>) -> Self {
        let encoder = match codec {
            Codec::Opus(_) => {
                let mut e =
                    opus::Encoder::new(voice::RATE, opus::Channels::Mono, opus::Application::Voip)
                        .ok();
                if let Some(e) = e.as_mut() {
                    let _ = e.set_complexity(ENCODER_COMPLEXITY);
                    if let Some(rate) = max_playback_rate {
                        let _ = e.set_max_bandwidth(widest_band(rate));
                    }
                }
                e
            }
            _ => None,
        };
        Self {
            codec,
            encoder,
            seq: rand::random(),
            ts: rand::random(),
            ssrc,
            talking: false,
            buf: vec![0u8; 1_500],
            pcm: [0; FRAME],
            narrow: Vec::with_capacity(FRAME / 3),
            widest: 0,
        }
    }

    fn packet(&mut self, samples: &[i16]) -> Option<rtc::rtp::Packet> {
        self.pcm.fill(0);
        self.pcm[..samples.len()].copy_from_slice(samples);
        let len = match self.codec {
            Codec::Opus(_) => {
                let encoder = self.encoder.as_mut()?;
                let len = encoder.encode(&self.pcm, &mut self.buf).ok()?;
                if let Ok(band) = encoder.get_bandwidth() {
                    self.widest = self.widest.max(band_rank(band));
                }
                len
            }
            Codec::Pcmu | Codec::Pcma => {
                self.narrow.clear();
                voice::downsample_24k_to_8k_into(&self.pcm, &mut self.narrow);
                for (i, &s) in self.narrow.iter().enumerate() {
                    self.buf[i] = if self.codec == Codec::Pcmu {
                        g711::ulaw_encode(s)
                    } else {
                        g711::alaw_encode(s)
                    };
                }
                self.narrow.len()
            }
        };
        let header = rtc::rtp::Header {
            version: 2,
            marker: !self.talking,
            payload_type: self.codec.pt(),
            sequence_number: self.seq,
            timestamp: self.ts,
            ssrc: self.ssrc,
            ..Default::default()
        };
        self.talking = true;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(self.codec.ticks());
        Some(rtc::rtp::Packet {
            header,
            payload: Bytes::copy_from_slice(&self.buf[..len]),
        })
    }

    /// Audio stopped: time still runs, the next packet starts a talk spurt.
    fn pause(&mut self) {
        self.talking = false;
    }
}

/// Lets the events queued on the channel leave (the last may say why it closes, as
/// `session_expired` does), then closes it.
async fn close_channel(dc: Arc<dyn DataChannel>) {
    let until = Instant::now() + Duration::from_millis(500);
    while dc.outstanding_bytes().await.unwrap_or(0) > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = dc.close().await;
}

/// A client event from a sideband: handled as one from the data channel, and noted as having
/// come over the sideband.
fn handle_sideband_text(engine: &mut Engine, record: &SessionRecord, start: Instant, text: &str) {
    let before = record.received_count();
    engine.handle_text(start.elapsed(), text);
    record.received_over_sideband(before);
}

impl Call {
    async fn run(self, mut rx: mpsc::Receiver<RtcInput>) {
        let accepted = Instant::now();
        let mut start = accepted;
        let mut engine: Option<Engine> = None;
        let mut dc: Option<Arc<dyn DataChannel>> = None;
        let mut sender = Sender::new(self.codec, self.ssrc, self.max_playback_rate);
        let mut disconnected_since: Option<Instant> = None;
        let mut last_frame_at: Option<Instant> = None;
        let mut sidebands = Sidebands::default();
        let why;
        let mut hung_up = None;
        'call: loop {
            if let Some(engine) = engine.as_mut() {
                while let Some(out) = engine.poll_output() {
                    match out {
                        Output::Event(ev) => {
                            let text = ev.to_json();
                            if let Some(dc) = &dc {
                                let _ = dc.send_text(&text).await;
                            }
                            sidebands.send(&text);
                        }
                        Output::Raw(text) => {
                            if let Some(dc) = &dc {
                                let _ = dc.send_text(&text).await;
                            }
                            sidebands.send(&text);
                        }
                        Output::Audio(frame) => {
                            let now = Instant::now();
                            if last_frame_at.is_some_and(|t| now - t > Duration::from_millis(60)) {
                                sender.pause();
                            }
                            last_frame_at = Some(now);
                            if let Some(pkt) = sender.packet(frame.samples()) {
                                let _ = self.track.write_rtp(pkt).await;
                                self.record.audio_band(sender.widest);
                            }
                        }
                        // frames leave as they fall due, so nothing is queued to drop
                        Output::ClearAudio => sender.pause(),
                        Output::Close(reason) => {
                            why = match reason {
                                CloseReason::Expired => "session_expired",
                                CloseReason::Fault => "fault: channel closed",
                            };
                            if let Some(dc) = dc.take() {
                                close_channel(dc).await;
                            }
                            break 'call;
                        }
                    }
                }
            }
            let mut deadline = match &engine {
                Some(e) => e.poll_timeout().map(|d| start + d),
                None => Some(accepted + OPEN_DEADLINE),
            };
            if let Some(since) = disconnected_since {
                let limit = since + DISCONNECTED_LIMIT;
                deadline = Some(deadline.map_or(limit, |d| d.min(limit)));
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                input = rx.recv() => match input {
                    Some(RtcInput::DcOpen(channel)) => {
                        if dc.is_none() {
                            dc = Some(channel);
                            start = Instant::now();
                            let mut e = Engine::new(
                                EngineConfig {
                                    session_id: self.session_id.clone(),
                                    model: self.session.as_ref().and_then(|s| s.get("model")).and_then(Value::as_str).unwrap_or("gpt-realtime").to_string(),
                                    transport: Transport::WebRtc,
                                    scenario: self.state.scenario.clone(),
                                    initial: self.session.clone(),
                                    unix_now: unix_now(),
                                },
                                self.record.clone(),
                            );
                            e.open(Duration::ZERO);
                            for text in sidebands.take_pending() {
                                handle_sideband_text(&mut e, &self.record, start, &text);
                            }
                            engine = Some(e);
                            if let Some((cut, after)) = self.media_cut.clone() {
                                tokio::spawn(async move {
                                    tokio::time::sleep(after).await;
                                    tracing::debug!("simulator fault: the media path goes silent");
                                    cut.cancel();
                                });
                            }
                        }
                    }
                    Some(RtcInput::DcMessage(text)) => {
                        if let Some(e) = engine.as_mut() {
                            e.handle_text(start.elapsed(), &text);
                        }
                    }
                    Some(RtcInput::Audio(frame, n)) => {
                        match engine.as_mut() {
                            Some(e) => e.handle_audio(start.elapsed(), &frame[..n]),
                            None => self.record.add_audio_in(n),
                        }
                    }
                    Some(RtcInput::SidebandAttach(link, reply)) => {
                        let taken = sidebands.attach(link);
                        if taken {
                            self.record.with(|l| l.sideband_attachments += 1);
                        }
                        let _ = reply.send(taken);
                    }
                    Some(RtcInput::SidebandText(_, text)) => match engine.as_mut() {
                        Some(e) => handle_sideband_text(e, &self.record, start, &text),
                        // the browser's channel is not open yet: the session starts then
                        None => sidebands.hold(text),
                    },
                    Some(RtcInput::SidebandGone(id)) => sidebands.remove(id),
                    Some(RtcInput::DcClosed) => { why = "data channel closed"; dc = None; break }
                    Some(RtcInput::PcState(s)) => match s {
                        RTCPeerConnectionState::Failed => { why = "peer connection failed"; dc = None; break }
                        RTCPeerConnectionState::Closed => { why = "peer connection closed"; dc = None; break }
                        RTCPeerConnectionState::Disconnected => disconnected_since = Some(Instant::now()),
                        RTCPeerConnectionState::Connected => disconnected_since = None,
                        _ => {}
                    },
                    Some(RtcInput::Hangup(told)) => { why = "hangup"; hung_up = told; break }
                    None => { why = "hangup"; break }
                },
                _ = sleep => {
                    let now = Instant::now();
                    if disconnected_since.is_some_and(|t| now - t >= DISCONNECTED_LIMIT) {
                        why = "peer connection disconnected over 5 s";
                        break;
                    }
                    match engine.as_mut() {
                        Some(e) => e.handle_timeout(start.elapsed()),
                        None => { why = "data channel never opened"; break }
                    }
                }
                _ = self.state.shutdown.cancelled() => { why = "simulator shut down"; break }
            }
        }
        self.state.calls.remove(&self.call_id);
        match engine.as_mut() {
            Some(e) => e.closed_by_peer(why),
            None => self.record.with(|l| l.closed = Some(why.to_string())),
        }
        if let Some(told) = hung_up {
            let _ = told.send(());
        }
        sidebands.close_all(why);
        // the connection's close alone also ends the channel (a browser sees `close` at once),
        // but would cut off the events still queued on it: let those leave first
        if let Some(dc) = dc.take() {
            close_channel(dc).await;
        }
        let _ = self.pc.close().await;
    }
}
