//! The WebRTC transport, as OpenAI recommends for realtime audio: one peer connection per
//! call with one `sendrecv` audio transceiver (Opus, or G.711 µ-law with `openai.codec =
//! "pcmu"`) and the `oai-events` data channel, both made before the offer. Non-trickle: the
//! offer goes out with every candidate to `POST {base}/v1/realtime/calls`, authorised with the
//! call's ephemeral key; the call id comes from `Location`; `…/hangup` ends it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_PCMU,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
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
/// How long gathering may take (host candidates only: a few milliseconds).
const GATHER_LIMIT: Duration = Duration::from_secs(2);
/// Inputs buffered between the connection's tasks and the leg's owner.
const INPUT_QUEUE: usize = 512;

/// What the connection's tasks hand to the leg's owner.
enum Input {
    DcOpen,
    DcMessage(Bytes),
    DcClosed,
    Rtp { pt: u8, payload: Bytes },
    PcState(RTCPeerConnectionState),
}

struct Handler {
    tx: mpsc::Sender<Input>,
    gathered: mpsc::Sender<()>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        // state changes are rare and must not be lost: wait for room, off the driver
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(Input::PcState(state)).await;
        });
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let tx = self.tx.clone();
        // runs on the connection's driver: hand the track to a task, never block here
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(pkt) = ev {
                    let input = Input::Rtp {
                        pt: pkt.header.payload_type,
                        payload: pkt.payload,
                    };
                    if tx.send(input).await.is_err() {
                        break;
                    }
                }
            }
        });
    }
}

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

/// A realtime session over one WebRTC peer connection.
pub struct WebRtcLeg {
    pc: Arc<dyn PeerConnection>,
    dc: Arc<dyn DataChannel>,
    track: Arc<TrackLocalStaticRTP>,
    rx: mpsc::Receiver<Input>,
    hangup: CallHangup,
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
    /// Released `response.create` events not yet written (kept here so a cancelled `recv`
    /// loses none).
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
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), None)
            .build();
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        let (gathered_tx, mut gathered_rx) = mpsc::channel(1);
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_handler(Arc::new(Handler {
                tx: tx.clone(),
                gathered: gathered_tx,
            }))
            .with_udp_addrs(vec![opts.bind.clone()])
            .build()
            .await
            .map_err(transport)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let ssrc: u32 = rand::random();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
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
        )));
        let mut times = ConnectTimes::default();
        let setup = async {
            pc.add_track(track.clone() as Arc<dyn TrackLocal>)
                .await
                .map_err(transport)?;
            let dc = pc
                .create_data_channel(EVENTS_LABEL, None)
                .await
                .map_err(transport)?;
            spawn_channel_reader(dc.clone(), tx.clone());
            let offer = pc.create_offer(None).await.map_err(transport)?;
            pc.set_local_description(offer).await.map_err(transport)?;
            tokio::time::timeout(GATHER_LIMIT, gathered_rx.recv())
                .await
                .map_err(|_| LegError::Timeout {
                    stage: "ICE gathering",
                    after: GATHER_LIMIT,
                })?;
            let offer = pc
                .local_description()
                .await
                .ok_or_else(|| transport("no local description after gathering"))?;
            Ok::<_, LegError>((dc, offer.sdp))
        };
        let (dc, offer) = match setup.await {
            Ok(v) => v,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };
        times.offer = t0.elapsed();

        let t1 = Instant::now();
        let calls_url = format!("{}/v1/realtime/calls", opts.base_url);
        let posted = http
            .post(&calls_url)
            .bearer_auth(key.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/sdp")
            .body(offer)
            .timeout(end.saturating_duration_since(Instant::now()))
            .send()
            .await;
        let answer = async {
            let resp = posted.map_err(|e| {
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
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let call_id = location
                .as_deref()
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
        .await;
        let (call_id, sdp) = match answer {
            Ok(v) => v,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };
        times.answer = t1.elapsed();
        let hangup = CallHangup::new(http, &opts.base_url, &call_id, hangup_key);

        let mut leg = Self {
            pc,
            dc,
            track,
            rx,
            hangup,
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
            call_id,
            disconnected_since: None,
            expired: false,
            ended: None,
            closed: false,
            times,
            malformed: 0,
            bad_audio: 0,
        };
        match leg.open(sdp, end, opts.connect_deadline).await {
            Ok(()) => Ok(leg),
            Err(e) => {
                leg.close().await;
                Err(e)
            }
        }
    }

    /// Applies the answer and waits for the channel and `session.created`.
    async fn open(
        &mut self,
        sdp: String,
        end: Instant,
        deadline: Duration,
    ) -> Result<(), LegError> {
        let answer = RTCSessionDescription::answer(sdp)
            .map_err(|e| LegError::BadAnswer(format!("the SDP answer: {e}")))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| LegError::BadAnswer(format!("the SDP answer was not accepted: {e}")))?;
        let t2 = Instant::now();
        let mut stage = "ICE, DTLS and the data channel";
        loop {
            let input = tokio::select! {
                input = self.rx.recv() => input,
                _ = tokio::time::sleep_until(end) => {
                    return Err(LegError::Timeout { stage, after: deadline })
                }
            };
            match input {
                Some(Input::DcOpen) => {
                    self.times.channel_open = t2.elapsed();
                    stage = "session.created";
                }
                Some(Input::DcMessage(bytes)) => {
                    self.take_message(&bytes).await;
                    if self.session_id.is_some() {
                        self.times.session_created =
                            t2.elapsed().saturating_sub(self.times.channel_open);
                        return Ok(());
                    }
                }
                Some(Input::PcState(RTCPeerConnectionState::Failed)) => {
                    return Err(LegError::Ended(LegEnd::PeerFailed))
                }
                Some(Input::PcState(RTCPeerConnectionState::Closed)) => {
                    return Err(LegError::Ended(LegEnd::PeerClosed))
                }
                Some(Input::DcClosed) => return Err(LegError::Ended(LegEnd::ChannelClosed)),
                Some(Input::Rtp { pt, payload }) => self.take_rtp(pt, &payload),
                Some(Input::PcState(_)) => {}
                None => return Err(LegError::Ended(LegEnd::PeerClosed)),
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

    async fn take_message(&mut self, bytes: &[u8]) {
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
                self.pending
                    .push_back(LegEvent::Ended(LegEnd::SessionExpired));
                return;
            }
            // the service stopped sending audio: what the bridge holds is all there is
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

    /// Takes one input in; returns why the session ended, if it did.
    async fn take_input(&mut self, input: Option<Input>) -> Option<LegEnd> {
        match input {
            Some(Input::DcMessage(bytes)) => self.take_message(&bytes).await,
            Some(Input::Rtp { pt, payload }) => self.take_rtp(pt, &payload),
            Some(Input::DcClosed) => return Some(LegEnd::ChannelClosed),
            Some(Input::PcState(state)) => match state {
                RTCPeerConnectionState::Failed => return Some(LegEnd::PeerFailed),
                RTCPeerConnectionState::Closed => return Some(LegEnd::PeerClosed),
                RTCPeerConnectionState::Disconnected => {
                    self.disconnected_since.get_or_insert_with(Instant::now);
                }
                RTCPeerConnectionState::Connected => self.disconnected_since = None,
                _ => {}
            },
            Some(Input::DcOpen) => {}
            None => return Some(LegEnd::PeerClosed),
        }
        None
    }

    /// Takes in what already arrived, so decisions see the latest turn state.
    async fn drain_ready(&mut self) {
        while self.ended.is_none() {
            let Ok(input) = self.rx.try_recv() else { break };
            if let Some(end) = self.take_input(Some(input)).await {
                let ev = self.end(end);
                self.pending.push_back(ev);
            }
        }
    }

    /// Writes released events; each leaves the box only once written.
    async fn flush_outbox(&mut self) {
        while let Some(ev) = self.outbox.front().cloned() {
            if self.ended.is_some() || self.dc.send_text(&ev.to_json()).await.is_err() {
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

    async fn write_event(&mut self, ev: &ClientEvent) -> Result<(), LegError> {
        if let Some(r) = &self.ended {
            return Err(LegError::Ended(r.clone()));
        }
        self.dc.send_text(&ev.to_json()).await.map_err(transport)
    }
}

/// Moves the channel's events to the leg's owner, off the connection's driver.
fn spawn_channel_reader(dc: Arc<dyn DataChannel>, tx: mpsc::Sender<Input>) {
    tokio::spawn(async move {
        while let Some(ev) = dc.poll().await {
            let input = match ev {
                DataChannelEvent::OnOpen => Input::DcOpen,
                DataChannelEvent::OnMessage(msg) => Input::DcMessage(msg.data.freeze()),
                DataChannelEvent::OnClose => {
                    let _ = tx.send(Input::DcClosed).await;
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
        self.track.write_rtp(pkt).await.map_err(transport)
    }

    async fn send(&mut self, event: ClientEvent) -> Result<(), LegError> {
        // checked first: a `response.create` held for later would otherwise look accepted
        if let Some(r) = &self.ended {
            return Err(LegError::Ended(r.clone()));
        }
        match self.turns.outgoing(event) {
            Some(ev) => self.write_event(&ev).await,
            None => Ok(()),
        }
    }

    async fn recv(&mut self) -> LegEvent {
        loop {
            self.flush_outbox().await;
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
            let input = match limit {
                Some(limit) => match tokio::time::timeout_at(limit, self.rx.recv()).await {
                    Ok(input) => input,
                    Err(_) => return self.end(LegEnd::Disconnected(DISCONNECTED_LIMIT)),
                },
                None => self.rx.recv().await,
            };
            if let Some(end) = self.take_input(input).await {
                return self.end(end);
            }
        }
    }

    async fn interrupt(&mut self, _unplayed_ms: u32) -> Result<(), LegError> {
        // the service knows what it played out: cancel, and clear its buffer
        self.drain_ready().await;
        self.pending.retain(|e| !matches!(e, LegEvent::Audio(_)));
        if self.turns.response_active() {
            self.write_event(&ClientEvent::ResponseCancel {
                event_id: None,
                response_id: None,
            })
            .await?;
        }
        self.write_event(&ClientEvent::OutputAudioBufferClear { event_id: None })
            .await
    }

    async fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.ended.get_or_insert(LegEnd::Closed);
        self.hangup.send().await;
        let _ = self.dc.close().await;
        let _ = self.pc.close().await;
        if self.malformed + self.bad_audio > 0 {
            tracing::debug!(
                malformed = self.malformed,
                bad_audio = self.bad_audio,
                "realtime leg had unreadable input"
            );
        }
    }
}

impl Drop for WebRtcLeg {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        // dropped without close (a panicking or cancelled owner): free the connection anyway
        let pc = self.pc.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = pc.close().await;
            });
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
}
