//! The WebRTC transport, as OpenAI recommends for realtime audio: one peer connection per
//! call with one `sendrecv` audio transceiver (Opus, or G.711 µ-law with `openai.codec =
//! "pcmu"`) and the `oai-events` data channel, both made before the offer. Non-trickle: the
//! offer goes out with every candidate to `POST {base}/v1/realtime/calls`, authorised with the
//! call's ephemeral key; the call id comes from `Location`; `…/hangup` ends it.
//!
//! The connection is the `rtc` crate's sans-IO peer connection (the core under `webrtc` 0.21),
//! driven by whoever owns the leg, the call's own task: a datagram or a due timer is fed in, and
//! what the core then has to send leaves at once, in the same wake-up. There is no driver task
//! and no channel between the connection and the call, so a packet costs no hop between
//! threads (docs/performance.md, "CPU per call against the libopus floor").

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rtc::data_channel::RTCDataChannelId;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_PCMU,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::media::frame::{Frame, FRAME_SAMPLES};
use crate::media::g711::Law;
use crate::media::opus_codec::{
    OpusConfig, OpusDecoder, OpusEncoder, MAX_OPUS_PACKET, MAX_PACKET_SAMPLES, OPUS_TICKS_PER_FRAME,
};

use super::config::WebRtcCodec;
use super::events::{ClientEvent, ServerEvent};
use super::hangup::CallHangup;
use super::keys::api_error;
use super::leg::{
    AgentAudio, CallerAudio, LegAudioFormat, LegEnd, LegError, LegEvent, RealtimeLeg,
};
use super::session::Turns;
use crate::secret::Secret;

/// The data channel the Realtime API reads events from.
pub const EVENTS_LABEL: &str = "oai-events";
/// Opus payload type in the offer (what OpenAI and browsers use).
const OPUS_PT: u8 = 111;
/// The offer's Opus parameters (RFC 7587 §6.1). The phone leg is 8 kHz, so the relay asks the
/// far end to send narrowband (`maxplaybackrate`) and says it sends no more itself
/// (`sprop-maxcapturerate`): a sender that honours it spends its bits and FEC below 4 kHz,
/// where the caller hears them, and narrowband decodes in about 40 % of the time of a
/// full-band stream (docs/performance.md).
const OPUS_FMTP: &str = "minptime=10;useinbandfec=1;maxplaybackrate=8000;sprop-maxcapturerate=8000";
/// A peer connection disconnected this long ends the session.
pub const DISCONNECTED_LIMIT: Duration = Duration::from_secs(5);
/// The ICE check interval. The default (200 ms) adds up to one interval to every call set-up;
/// OpenAI's candidates are host candidates, so checking fast costs a handful of packets.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(20);
/// Room for one datagram (the path's MTU is below it).
const DATAGRAM_MAX: usize = 2048;
/// Datagrams read in one wake-up before the core's output is taken: what already waits in
/// the socket is fed in together.
const READS_PER_WAKE: usize = 16;
/// Interfaces a wildcard bind offers candidates on, at most.
const MAX_INTERFACES: usize = 4;

/// How to open a WebRTC leg.
#[derive(Debug, Clone)]
pub struct WebRtcOptions {
    /// `https://api.openai.com` or a simulator's base URL.
    pub base_url: String,
    /// Opus or G.711 µ-law only.
    pub codec: WebRtcCodec,
    /// The local UDP address to gather from: `127.0.0.1:0` for a loopback service,
    /// `0.0.0.0:0` (every interface but loopback) otherwise.
    pub bind: String,
    /// From posting the offer until the channel is open and `session.created` came.
    pub connect_deadline: Duration,
    /// Opus encoder settings for the caller's audio.
    pub opus: OpusConfig,
}

impl WebRtcOptions {
    /// Options for `base_url` with the default bind address for it.
    pub fn new(base_url: &str, codec: WebRtcCodec, connect_deadline: Duration) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            codec,
            bind: default_bind(base_url).to_string(),
            connect_deadline,
            opus: OpusConfig::default(),
        }
    }
}

/// `127.0.0.1:0` when the service is on loopback (the simulator), else every interface.
pub fn default_bind(base_url: &str) -> &'static str {
    let host = base_url
        .split("://")
        .nth(1)
        .unwrap_or(base_url)
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    if host == "127.0.0.1" || host == "localhost" || host == "[" {
        "127.0.0.1:0"
    } else {
        "0.0.0.0:0"
    }
}

/// Set-up time of one leg, split by step (for the connect-time figures).
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectTimes {
    /// Building the connection, the offer, and ICE gathering.
    pub offer: Duration,
    /// `POST /calls` until the answer arrived.
    pub answer: Duration,
    /// Answer applied until the data channel opened.
    pub channel_open: Duration,
    /// Channel open until `session.created`.
    pub session_created: Duration,
}

/// One local socket of the connection and the address its host candidate names.
struct LegSocket {
    socket: UdpSocket,
    local: SocketAddr,
}

/// Binds the sockets to offer candidates on: `bind` itself when it names an address, one per
/// usable interface (not loopback, not link-local) when it is a wildcard.
async fn bind_sockets(bind: &str) -> Result<Vec<LegSocket>, LegError> {
    let addr: SocketAddr = bind
        .parse()
        .map_err(|e| transport(format!("bind address {bind}: {e}")))?;
    let addrs: Vec<SocketAddr> = if addr.ip().is_unspecified() {
        let interfaces = rtc::shared::ifaces::ifaces().map_err(transport)?;
        let mut v: Vec<SocketAddr> = Vec::new();
        for ip in interfaces.iter().filter_map(|i| i.addr.map(|a| a.ip())) {
            if ip.is_ipv4() == addr.is_ipv4() && usable(&ip) && !v.iter().any(|a| a.ip() == ip) {
                v.push(SocketAddr::new(ip, addr.port()));
            }
        }
        v.truncate(MAX_INTERFACES);
        v
    } else {
        vec![addr]
    };
    if addrs.is_empty() {
        return Err(transport(format!(
            "no network interface to offer for {bind}"
        )));
    }
    let mut sockets = Vec::with_capacity(addrs.len());
    for a in addrs {
        let socket = UdpSocket::bind(a).await.map_err(transport)?;
        let local = socket.local_addr().map_err(transport)?;
        sockets.push(LegSocket { socket, local });
    }
    Ok(sockets)
}

/// An address a peer could reach: not loopback, unspecified or link-local.
fn usable(ip: &IpAddr) -> bool {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    !ip.is_loopback() && !ip.is_unspecified() && !link_local
}

/// The next datagram on any of `sockets`: its socket's index, length and source.
async fn recv_any(
    sockets: &[LegSocket],
    buf: &mut [u8],
) -> (usize, io::Result<(usize, SocketAddr)>) {
    std::future::poll_fn(|cx| {
        for (i, s) in sockets.iter().enumerate() {
            let mut rb = ReadBuf::new(buf);
            if let Poll::Ready(r) = s.socket.poll_recv_from(cx, &mut rb) {
                return Poll::Ready((i, r.map(|from| (rb.filled().len(), from))));
            }
        }
        Poll::Pending
    })
    .await
}

/// A realtime session over one WebRTC peer connection, driven by its owner's task.
pub struct WebRtcLeg {
    pc: RTCPeerConnection,
    sockets: Vec<LegSocket>,
    buf: Box<[u8; DATAGRAM_MAX]>,
    dc: RTCDataChannelId,
    dc_open: bool,
    sender: RTCRtpSenderId,
    hangup: Option<CallHangup>,
    codec: WebRtcCodec,
    encoder: Option<OpusEncoder>,
    decoder: Option<OpusDecoder>,
    ssrc: u32,
    seq: u16,
    ts: u32,
    first_packet: bool,
    /// Reused buffers: one encoded packet, one decoded packet.
    packet: [u8; MAX_OPUS_PACKET],
    pcm: [i16; MAX_PACKET_SAMPLES],
    turns: Turns,
    /// Released `response.create` events not yet written.
    outbox: VecDeque<ClientEvent>,
    pending: VecDeque<LegEvent>,
    session_id: Option<String>,
    call_id: String,
    disconnected_since: Option<Instant>,
    expired: bool,
    ended: Option<LegEnd>,
    closed: bool,
    times: ConnectTimes,
    /// Counters instead of per-packet logs.
    malformed: u64,
    bad_audio: u64,
    /// Datagrams the core refused (a stranger's, or garbled) and sends the socket refused.
    dropped_in: u64,
    dropped_out: u64,
    received: u64,
}

impl std::fmt::Debug for WebRtcLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcLeg")
            .field("call_id", &self.call_id)
            .field("session_id", &self.session_id)
            .field("codec", &self.codec)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

fn rtp_codec(codec: WebRtcCodec) -> (RTCRtpCodec, u8) {
    match codec {
        WebRtcCodec::Opus => (
            RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: OPUS_FMTP.to_owned(),
                rtcp_feedback: vec![],
            },
            OPUS_PT,
        ),
        WebRtcCodec::Pcmu => (
            RTCRtpCodec {
                mime_type: MIME_TYPE_PCMU.to_owned(),
                clock_rate: 8_000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            0,
        ),
    }
}

fn transport(e: impl std::fmt::Display) -> LegError {
    LegError::Transport(e.to_string())
}

impl WebRtcLeg {
    /// Opens a session: offer, `POST /calls` with `key` (the call's ephemeral key), answer,
    /// and waits until the `oai-events` channel is open and `session.created` came, all within
    /// `opts.connect_deadline`. `hangup_key` (the server key: the ephemeral one may have
    /// expired by the end of the call) authorises `…/hangup`.
    pub async fn connect(
        http: reqwest::Client,
        opts: &WebRtcOptions,
        key: &Secret,
        hangup_key: Secret,
    ) -> Result<Self, LegError> {
        let t0 = Instant::now();
        let end = t0 + opts.connect_deadline;
        let mut leg = Self::offer(opts).await?;
        let offer = leg
            .pc
            .local_description()
            .ok_or_else(|| transport("no local description"))?
            .sdp;
        leg.times.offer = t0.elapsed();

        let t1 = Instant::now();
        let (call_id, sdp) = post_offer(&http, opts, key, offer, end).await?;
        leg.times.answer = t1.elapsed();
        leg.hangup = Some(CallHangup::new(http, &opts.base_url, &call_id, hangup_key));
        leg.call_id = call_id;
        match leg.open(sdp, end, opts.connect_deadline).await {
            Ok(()) => Ok(leg),
            Err(e) => {
                leg.close().await;
                Err(e)
            }
        }
    }

    /// The connection with its track, its channel and its candidates, and the offer set.
    async fn offer(opts: &WebRtcOptions) -> Result<Self, LegError> {
        let (codec_params, pt) = rtp_codec(opts.codec);
        let mut media = MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: codec_params.clone(),
                    payload_type: pt,
                },
                RtpCodecKind::Audio,
            )
            .map_err(transport)?;
        let settings = SettingEngineBuilder::new()
            .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), None)
            .build();
        let now = std::time::Instant::now();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_setting_engine(settings)
            .build(now)
            .map_err(transport)?;
        let ssrc: u32 = rand::random();
        let sender = pc
            .add_track(MediaStreamTrack::new(
                "voxrelay".to_string(),
                "caller-audio".to_string(),
                "caller".to_string(),
                RtpCodecKind::Audio,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec: codec_params,
                    ..Default::default()
                }],
            ))
            .map_err(transport)?;
        let dc = pc
            .create_data_channel(EVENTS_LABEL, None)
            .map_err(transport)?
            .id();
        let sockets = bind_sockets(&opts.bind).await?;
        for s in &sockets {
            let candidate = CandidateHostConfig {
                base_config: CandidateConfig {
                    network: "udp".to_owned(),
                    address: s.local.ip().to_string(),
                    port: s.local.port(),
                    component: 1,
                    ..Default::default()
                },
                ..Default::default()
            }
            .new_candidate_host()
            .map_err(transport)?;
            let init = RTCIceCandidate::from(&candidate)
                .to_json()
                .map_err(transport)?;
            pc.add_local_candidate(init).map_err(transport)?;
        }
        let offer = pc.create_offer(None).map_err(transport)?;
        pc.set_local_description(now, offer).map_err(transport)?;
        Ok(Self {
            pc,
            sockets,
            buf: Box::new([0; DATAGRAM_MAX]),
            dc,
            dc_open: false,
            sender,
            hangup: None,
            codec: opts.codec,
            encoder: match opts.codec {
                WebRtcCodec::Opus => Some(OpusEncoder::new(&opts.opus).map_err(transport)?),
                WebRtcCodec::Pcmu => None,
            },
            decoder: match opts.codec {
                WebRtcCodec::Opus => Some(OpusDecoder::new().map_err(transport)?),
                WebRtcCodec::Pcmu => None,
            },
            ssrc,
            seq: rand::random(),
            ts: rand::random(),
            first_packet: true,
            packet: [0; MAX_OPUS_PACKET],
            pcm: [0; MAX_PACKET_SAMPLES],
            turns: Turns::new(),
            outbox: VecDeque::new(),
            pending: VecDeque::new(),
            session_id: None,
            call_id: String::new(),
            disconnected_since: None,
            expired: false,
            ended: None,
            closed: false,
            times: ConnectTimes::default(),
            malformed: 0,
            bad_audio: 0,
            dropped_in: 0,
            dropped_out: 0,
            received: 0,
        })
    }

    /// Applies the answer and runs the connection until the channel is open and
    /// `session.created` came.
    async fn open(
        &mut self,
        sdp: String,
        end: Instant,
        deadline: Duration,
    ) -> Result<(), LegError> {
        let answer = RTCSessionDescription::answer(sdp)
            .map_err(|e| LegError::BadAnswer(format!("the SDP answer: {e}")))?;
        self.pc
            .set_remote_description(std::time::Instant::now(), answer)
            .map_err(|e| LegError::BadAnswer(format!("the SDP answer was not accepted: {e}")))?;
        let t2 = Instant::now();
        loop {
            self.drive();
            if self.dc_open && self.times.channel_open.is_zero() {
                self.times.channel_open = t2.elapsed();
            }
            if self.session_id.is_some() {
                self.times.session_created = t2.elapsed().saturating_sub(self.times.channel_open);
                return Ok(());
            }
            if let Some(r) = &self.ended {
                return Err(LegError::Ended(r.clone()));
            }
            if !self.wait_input(Some(end)).await {
                let stage = if self.dc_open {
                    "session.created"
                } else {
                    "ICE, DTLS and the data channel"
                };
                return Err(LegError::Timeout {
                    stage,
                    after: deadline,
                });
            }
        }
    }

    /// The call id from `Location` (`rtc_…`).
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// How long each step of the set-up took.
    pub fn connect_times(&self) -> ConnectTimes {
        self.times
    }

    /// Data-channel messages that were not JSON events, and RTP packets that did not decode.
    pub fn malformed_counts(&self) -> (u64, u64) {
        (self.malformed, self.bad_audio)
    }

    /// Datagrams read from the leg's sockets and fed to the connection, whoever sent them.
    pub fn datagrams_received(&self) -> u64 {
        self.received
    }

    /// The local addresses the offer named, one per socket.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(|s| s.local).collect()
    }

    /// Takes what the core has for the leg (state changes, channel messages, RTP) and sends
    /// what it has for the network.
    fn drive(&mut self) {
        while let Some(ev) = self.pc.poll_event() {
            match ev {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                    RTCPeerConnectionState::Failed => self.finish(LegEnd::PeerFailed),
                    RTCPeerConnectionState::Closed => self.finish(LegEnd::PeerClosed),
                    RTCPeerConnectionState::Disconnected => {
                        self.disconnected_since.get_or_insert_with(Instant::now);
                    }
                    RTCPeerConnectionState::Connected => self.disconnected_since = None,
                    _ => {}
                },
                RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(id))
                    if id == self.dc =>
                {
                    self.dc_open = true
                }
                RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnClose(id))
                    if id == self.dc =>
                {
                    self.finish(LegEnd::ChannelClosed)
                }
                _ => {}
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(_, pkt) => {
                    self.take_rtp(pkt.header.payload_type, &pkt.payload)
                }
                RTCMessage::DataChannelMessage(id, msg) if id == self.dc => {
                    self.take_message(&msg.data)
                }
                _ => {}
            }
        }
        self.flush_writes();
    }

    /// Sends every datagram the core has queued, now.
    fn flush_writes(&mut self) {
        while let Some(out) = self.pc.poll_write() {
            let from = out.transport.local_addr;
            let socket = match self.sockets.iter().find(|s| s.local == from) {
                Some(s) => &s.socket,
                None => &self.sockets[0].socket,
            };
            // UDP: a full send buffer drops the datagram, as the network may
            if socket
                .try_send_to(&out.message, out.transport.peer_addr)
                .is_err()
            {
                self.dropped_out += 1;
            }
        }
    }

    /// Waits for datagrams or the core's next timer and feeds them in; false once `until`
    /// passed first. Cancel-safe: nothing is taken from a socket unless it is fed in.
    async fn wait_input(&mut self, until: Option<Instant>) -> bool {
        let timer = self.pc.poll_timeout().map(Instant::from_std);
        let wake = match (timer, until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let got = tokio::select! {
            (i, r) = recv_any(&self.sockets, &mut self.buf[..]) => Some((i, r)),
            _ = sleep => None,
        };
        if let Some((i, r)) = got {
            match r {
                Ok((n, from)) => {
                    self.feed(i, n, from);
                    // what already waits in the socket goes in with it
                    for _ in 1..READS_PER_WAKE {
                        match self.sockets[i].socket.try_recv_from(&mut self.buf[..]) {
                            Ok((n, from)) => self.feed(i, n, from),
                            Err(_) => break,
                        }
                    }
                }
                // an ICMP error surfacing on the socket: ICE decides what it means
                Err(_) => self.dropped_in += 1,
            }
        }
        let now = std::time::Instant::now();
        if self.pc.poll_timeout().is_some_and(|t| t <= now) {
            let _ = self.pc.handle_timeout(now);
        }
        until.is_none_or(|u| Instant::now() < u)
    }

    /// Feeds one datagram of socket `i`, `n` bytes from `from`, to the core.
    fn feed(&mut self, i: usize, n: usize, from: SocketAddr) {
        self.received += 1;
        let msg = TaggedBytesMut {
            now: std::time::Instant::now(),
            transport: TransportContext {
                local_addr: self.sockets[i].local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(&self.buf[..n]),
        };
        if self.pc.handle_read(msg).is_err() {
            self.dropped_in += 1;
        }
    }

    fn take_message(&mut self, bytes: &[u8]) {
        let ev = match std::str::from_utf8(bytes)
            .ok()
            .and_then(|t| ServerEvent::parse(t).ok())
        {
            Some(ev) => ev,
            None => {
                self.malformed += 1;
                return;
            }
        };
        let (release, call) = self.turns.incoming(&ev);
        self.outbox.extend(release);
        match &ev {
            ServerEvent::SessionCreated { session, .. } => self.session_id = session.id.clone(),
            ServerEvent::Error { error, .. }
                if error.code.as_deref() == Some("session_expired") =>
            {
                self.expired = true;
                self.pending.push_back(LegEvent::Event(ev));
                self.finish(LegEnd::SessionExpired);
                return;
            }
            _ => {}
        }
        self.pending.push_back(LegEvent::Event(ev));
        if let Some(call) = call {
            self.pending.push_back(LegEvent::ToolCall(call));
        }
    }

    fn take_rtp(&mut self, pt: u8, payload: &[u8]) {
        match self.codec {
            WebRtcCodec::Opus if pt == OPUS_PT => {
                let Some(dec) = self.decoder.as_mut() else {
                    return;
                };
                let n = match dec.decode(payload, &mut self.pcm) {
                    Ok(n) => n,
                    Err(_) => {
                        self.bad_audio += 1;
                        return;
                    }
                };
                for chunk in self.pcm[..n].chunks(FRAME_SAMPLES) {
                    let mut frame: Frame = [0; FRAME_SAMPLES];
                    frame[..chunk.len()].copy_from_slice(chunk);
                    self.pending
                        .push_back(LegEvent::Audio(AgentAudio::Pcm(frame)));
                }
            }
            WebRtcCodec::Pcmu if pt == 0 => {
                for chunk in payload.chunks(FRAME_SAMPLES) {
                    let mut frame = [Law::Mu.silence_byte(); FRAME_SAMPLES];
                    frame[..chunk.len()].copy_from_slice(chunk);
                    self.pending
                        .push_back(LegEvent::Audio(AgentAudio::G711(Law::Mu, frame)));
                }
            }
            _ => self.bad_audio += 1,
        }
    }

    /// The session is over for `reason`: said once, after what came before it.
    fn finish(&mut self, reason: LegEnd) {
        if self.ended.is_none() {
            let ev = self.end(reason);
            self.pending.push_back(ev);
        }
    }

    /// Writes released events; each leaves the box only once written.
    fn flush_outbox(&mut self) {
        while let Some(ev) = self.outbox.front().cloned() {
            if self.ended.is_some() || self.write_event(&ev).is_err() {
                self.outbox.clear();
                return;
            }
            self.outbox.pop_front();
        }
    }

    fn end(&mut self, reason: LegEnd) -> LegEvent {
        let reason = if self.expired {
            LegEnd::SessionExpired
        } else {
            reason
        };
        LegEvent::Ended(self.ended.get_or_insert(reason).clone())
    }

    /// Sends one client event on the channel, and the datagrams carrying it.
    fn write_event(&mut self, ev: &ClientEvent) -> Result<(), LegError> {
        if let Some(r) = &self.ended {
            return Err(LegError::Ended(r.clone()));
        }
        let now = std::time::Instant::now();
        let sent = match self.pc.data_channel(self.dc) {
            Some(mut dc) => dc.send_text(now, ev.to_json()).map_err(transport),
            None => Err(LegError::Ended(LegEnd::ChannelClosed)),
        };
        self.flush_writes();
        sent
    }
}

/// Posts the offer; the call id from `Location` and the answer's SDP.
async fn post_offer(
    http: &reqwest::Client,
    opts: &WebRtcOptions,
    key: &Secret,
    offer: String,
    end: Instant,
) -> Result<(String, String), LegError> {
    let calls_url = format!("{}/v1/realtime/calls", opts.base_url);
    let resp = http
        .post(&calls_url)
        .bearer_auth(key.expose())
        .header(reqwest::header::CONTENT_TYPE, "application/sdp")
        .body(offer)
        .timeout(end.saturating_duration_since(Instant::now()))
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                LegError::Timeout {
                    stage: "the SDP answer",
                    after: opts.connect_deadline,
                }
            } else {
                transport(format!("POST /v1/realtime/calls: {e}"))
            }
        })?;
    let status = resp.status().as_u16();
    if !resp.status().is_success() {
        let (code, message) = api_error(resp).await;
        return Err(LegError::Refused {
            status,
            code,
            message,
        });
    }
    let call_id = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.trim_end_matches('/').rsplit('/').next())
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .ok_or_else(|| LegError::BadAnswer("no Location with the call id".into()))?;
    let left = end.saturating_duration_since(Instant::now());
    let sdp = tokio::time::timeout(left, resp.text())
        .await
        .map_err(|_| LegError::Timeout {
            stage: "the SDP answer",
            after: opts.connect_deadline,
        })?
        .map_err(|e| transport(format!("reading the answer: {e}")))?;
    Ok((call_id, sdp))
}

#[async_trait::async_trait]
impl RealtimeLeg for WebRtcLeg {
    fn audio_format(&self) -> LegAudioFormat {
        match self.codec {
            WebRtcCodec::Opus => LegAudioFormat::Pcm,
            WebRtcCodec::Pcmu => LegAudioFormat::G711(Law::Mu),
        }
    }

    fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    async fn send_audio(&mut self, frame: CallerAudio<'_>) -> Result<(), LegError> {
        if let Some(r) = &self.ended {
            return Err(LegError::Ended(r.clone()));
        }
        let (len, ticks, pt) = match (self.codec, frame) {
            (WebRtcCodec::Opus, audio) => {
                let mut pcm: Frame = [0; FRAME_SAMPLES];
                let pcm: &Frame = match audio {
                    CallerAudio::Pcm(f) => f,
                    CallerAudio::G711(law, bytes) => {
                        let n = bytes.len().min(FRAME_SAMPLES);
                        law.decode(&bytes[..n], &mut pcm[..n]);
                        &pcm
                    }
                };
                let Some(enc) = self.encoder.as_mut() else {
                    return Ok(());
                };
                let len = enc.encode(pcm, &mut self.packet).map_err(transport)?;
                (len, OPUS_TICKS_PER_FRAME, OPUS_PT)
            }
            (WebRtcCodec::Pcmu, CallerAudio::G711(Law::Mu, bytes)) => {
                let n = bytes.len().min(FRAME_SAMPLES);
                self.packet[..n].copy_from_slice(&bytes[..n]);
                (n, n as u32, 0)
            }
            (WebRtcCodec::Pcmu, CallerAudio::G711(Law::A, bytes)) => {
                let n = bytes.len().min(FRAME_SAMPLES);
                let mut pcm = [0i16; FRAME_SAMPLES];
                Law::A.decode(&bytes[..n], &mut pcm[..n]);
                Law::Mu.encode(&pcm[..n], &mut self.packet[..n]);
                (n, n as u32, 0)
            }
            (WebRtcCodec::Pcmu, CallerAudio::Pcm(pcm)) => {
                Law::Mu.encode(pcm, &mut self.packet[..FRAME_SAMPLES]);
                (FRAME_SAMPLES, FRAME_SAMPLES as u32, 0)
            }
        };
        let pkt = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                marker: self.first_packet,
                payload_type: pt,
                sequence_number: self.seq,
                timestamp: self.ts,
                ssrc: self.ssrc,
                ..Default::default()
            },
            // the stack takes ownership of the payload: one copy per packet is its price
            payload: Bytes::copy_from_slice(&self.packet[..len]),
        };
        self.first_packet = false;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(ticks);
        let sent = match self.pc.rtp_sender(self.sender) {
            Some(mut sender) => sender.write_rtp(std::time::Instant::now(), pkt),
            None => return Ok(()),
        };
        // before the connection is up the core refuses media: that frame is simply not sent
        if sent.is_err() {
            self.dropped_out += 1;
        }
        self.flush_writes();
        Ok(())
    }

    async fn send(&mut self, event: ClientEvent) -> Result<(), LegError> {
        // checked first: a `response.create` held for later would otherwise look accepted
        if let Some(r) = &self.ended {
            return Err(LegError::Ended(r.clone()));
        }
        match self.turns.outgoing(event) {
            Some(ev) => self.write_event(&ev),
            None => Ok(()),
        }
    }

    async fn recv(&mut self) -> LegEvent {
        loop {
            // closed by this side: what was still on its way is not wanted
            if self.closed {
                return LegEvent::Ended(self.ended.clone().unwrap_or(LegEnd::Closed));
            }
            self.drive();
            self.flush_outbox();
            if let Some(ev) = self.pending.pop_front() {
                if let LegEvent::Ended(r) = &ev {
                    self.ended.get_or_insert(r.clone());
                }
                return ev;
            }
            if let Some(r) = &self.ended {
                return LegEvent::Ended(r.clone());
            }
            let limit = self.disconnected_since.map(|t| t + DISCONNECTED_LIMIT);
            if !self.wait_input(limit).await {
                return self.end(LegEnd::Disconnected(DISCONNECTED_LIMIT));
            }
        }
    }

    async fn interrupt(&mut self, _unplayed_ms: u32) -> Result<(), LegError> {
        // the service knows what it played out: cancel, and clear its buffer
        self.drive();
        self.pending.retain(|e| !matches!(e, LegEvent::Audio(_)));
        if self.turns.response_active() {
            self.write_event(&ClientEvent::ResponseCancel {
                event_id: None,
                response_id: None,
            })?;
        }
        self.write_event(&ClientEvent::OutputAudioBufferClear { event_id: None })
    }

    async fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.ended.get_or_insert(LegEnd::Closed);
        if let Some(h) = &self.hangup {
            h.send().await;
        }
        self.shut();
        if self.malformed + self.bad_audio + self.dropped_in + self.dropped_out > 0 {
            tracing::debug!(
                malformed = self.malformed,
                bad_audio = self.bad_audio,
                dropped_in = self.dropped_in,
                dropped_out = self.dropped_out,
                "realtime leg had unreadable input or unsent datagrams"
            );
        }
    }
}

impl WebRtcLeg {
    /// Closes the channel and the connection and sends what that says to the far end.
    fn shut(&mut self) {
        if let Some(mut dc) = self.pc.data_channel(self.dc) {
            let _ = dc.close();
        }
        let _ = self.pc.close();
        self.flush_writes();
    }
}

impl Drop for WebRtcLeg {
    fn drop(&mut self) {
        // dropped without close (a panicking or cancelled owner): still tell the far end
        if !self.closed {
            self.shut();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_services_get_a_loopback_bind() {
        assert_eq!(default_bind("http://127.0.0.1:4000"), "127.0.0.1:0");
        assert_eq!(default_bind("http://localhost:4000/"), "127.0.0.1:0");
        assert_eq!(default_bind("https://api.openai.com"), "0.0.0.0:0");
    }

    #[test]
    fn candidates_are_only_offered_on_addresses_a_peer_can_reach() {
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "169.254.1.2",
            "fe80::1",
            "::1",
            "::",
        ] {
            assert!(!usable(&ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.0.0.5", "192.0.2.7", "2001:db8::1"] {
            assert!(usable(&ip.parse().unwrap()), "{ip}");
        }
    }
}
