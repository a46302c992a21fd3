//! The WebSocket transport: one socket per call, G.711 (`audio/pcmu` or `audio/pcma`) both
//! ways with no transcoding, and barge-in done by the client (`conversation.item.truncate` at
//! the milliseconds actually played).
//!
//! `wss://` (the real service) goes through rustls with Mozilla's roots (`webpki-roots`), with
//! a client config built once per [`WsTls`] and shared by every call.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use rustls::pki_types::CertificateDer;

use crate::media::frame::FRAME_SAMPLES;
use crate::media::g711::Law;

use super::events::{AudioFormat, ClientEvent, ServerEvent};
use super::leg::{
    AgentAudio, CallerAudio, LegAudioFormat, LegEnd, LegError, LegEvent, RealtimeLeg,
};
use super::session::{AgentSpec, Turns};
use super::sideband::Sideband;
use crate::media::frame::FRAME_MS;
use crate::secret::Secret;

pub(super) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bytes the WebSocket reads from the connection at a time. tungstenite zero-fills this much
/// of its read buffer on every read, the reads that find nothing included; at its default
/// (128 KiB) that zeroing was a fifth of a WebSocket call's CPU (docs/performance.md). An
/// event of 100 ms of agent audio is about 6.5 KB; a larger one is read in several goes.
const READ_BUFFER: usize = 8 * 1024;

/// A realtime session over one WebSocket.
pub struct WebSocketLeg {
    ws: Socket,
    law: Law,
    /// Attached to a browser's WebRTC call (`?call_id=`): no audio here, barge-in and the
    /// end as on WebRTC.
    sideband: Option<Sideband>,
    turns: Turns,
    /// Released `response.create` events not yet written (kept here so a cancelled `recv`
    /// loses none).
    outbox: VecDeque<ClientEvent>,
    pending: VecDeque<LegEvent>,
    session_id: Option<String>,
    ended: Option<LegEnd>,
    expired: bool,
    /// Reused buffers: base64 text of caller frames, decoded agent audio, a G.711 frame.
    b64: String,
    decoded: Vec<u8>,
    g711: [u8; FRAME_SAMPLES],
    /// Agent audio bytes of an unfinished frame (deltas need not end on a frame).
    partial: Vec<u8>,
    /// The assistant audio item being played, and how much of it went to the bridge.
    audio_item: Option<String>,
    delivered_ms: u64,
    /// Server messages that were not events (bad JSON, no `type`), counted, not logged each.
    malformed: u64,
}

impl std::fmt::Debug for WebSocketLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketLeg")
            .field("law", &self.law)
            .field("sideband", &self.sideband)
            .field("session_id", &self.session_id)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// The TLS client settings of `wss://` sockets: Mozilla's root certificates, plus any extra
/// roots given (a test server's self-signed certificate, a private TLS-terminating proxy).
/// Cheap to clone; build it once, not per call.
#[derive(Clone)]
pub struct WsTls(Arc<rustls::ClientConfig>);

impl std::fmt::Debug for WsTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsTls").finish_non_exhaustive()
    }
}

impl WsTls {
    /// Trusts the public roots and `extra_roots` (DER certificates); an extra root that
    /// does not parse is an error.
    pub fn new(extra_roots: &[CertificateDer<'static>]) -> Result<Self, LegError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in extra_roots {
            roots
                .add(cert.clone())
                .map_err(|e| LegError::Transport(format!("an extra TLS root: {e}")))?;
        }
        // The crypto provider is named here rather than taken from the process default:
        // `ClientConfig::builder()` (what tokio-tungstenite does without a config) looks for a
        // provider installed process-wide and, with none, picks one from rustls's crate
        // features, panicking when both `ring` and `aws-lc-rs` are compiled in (any
        // dependency can turn the second one on). `builder_with_provider` touches no global
        // state, so it cannot panic whatever gets linked or installed. `ring` is the provider
        // reqwest and webrtc already use here.
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| LegError::Transport(format!("TLS settings: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self(Arc::new(config)))
    }
}

/// `ws://…/v1/realtime?{query}` (`model=…`, or `call_id=…` for the sideband) from an
/// `http(s)://` base.
pub(super) fn socket_url(base_url: &str, query: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{base}/v1/realtime?{query}")
}

/// Opens the socket at `url` with `key`, over TLS with `tls` for `wss://`; an HTTP error
/// answer to the upgrade comes back as [`LegError::Refused`] with OpenAI's code.
pub(super) async fn open_socket(
    url: String,
    key: &Secret,
    tls: &WsTls,
) -> Result<Socket, LegError> {
    let mut req = url
        .into_client_request()
        .map_err(|e| LegError::Transport(e.to_string()))?;
    let auth = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
        .map_err(|_| LegError::Transport("the key is not a valid header value".into()))?;
    req.headers_mut().insert("authorization", auth);
    // the connector is used only for `wss://`; `ws://` stays plain TCP
    let connector = tokio_tungstenite::Connector::Rustls(tls.0.clone());
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let connected =
        tokio_tungstenite::connect_async_tls_with_config(req, Some(config), false, Some(connector))
            .await;
    match connected {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => {
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            let text = |p: &str| {
                body.pointer(p)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            Err(LegError::Refused {
                status,
                code: text("/error/code"),
                message: text("/error/message"),
            })
        }
        Err(e) => Err(LegError::Transport(e.to_string())),
    }
}

impl WebSocketLeg {
    /// Opens the socket with `key` (the server key, or an ephemeral one), over TLS with
    /// `tls` for an `https://` base, configures the session for `agent` with G.711 `law` both
    /// ways, and returns once `session.updated` confirms it, all within `deadline`.
    pub async fn connect(
        base_url: &str,
        key: &Secret,
        tls: &WsTls,
        agent: &AgentSpec,
        law: Law,
        deadline: Duration,
    ) -> Result<Self, LegError> {
        let timeout = LegError::Timeout {
            stage: "the WebSocket session",
            after: deadline,
        };
        tokio::time::timeout(deadline, Self::open(base_url, key, tls, agent, law))
            .await
            .unwrap_or(Err(timeout))
    }

    async fn open(
        base_url: &str,
        key: &Secret,
        tls: &WsTls,
        agent: &AgentSpec,
        law: Law,
    ) -> Result<Self, LegError> {
        let url = socket_url(base_url, &format!("model={}", agent.model));
        let ws = open_socket(url, key, tls).await?;
        let mut leg = Self::new(ws, law, None);
        let format = match law {
            Law::Mu => AudioFormat::pcmu(),
            Law::A => AudioFormat::pcma(),
        };
        leg.configure(agent, Some(format)).await?;
        Ok(leg)
    }

    /// A leg on an open socket; `sideband`: the WebRTC call it is attached to.
    pub(super) fn new(ws: Socket, law: Law, sideband: Option<Sideband>) -> Self {
        Self {
            ws,
            law,
            sideband,
            turns: Turns::new(),
            outbox: VecDeque::new(),
            pending: VecDeque::new(),
            session_id: None,
            ended: None,
            expired: false,
            b64: String::with_capacity(256),
            decoded: Vec::with_capacity(4_096),
            g711: [law.silence_byte(); FRAME_SAMPLES],
            partial: Vec::with_capacity(FRAME_SAMPLES),
            audio_item: None,
            delivered_ms: 0,
            malformed: 0,
        }
    }

    /// Configures the session for `agent` and returns once `session.updated` confirms it;
    /// what came before is kept for the bridge.
    pub(super) async fn configure(
        &mut self,
        agent: &AgentSpec,
        format: Option<AudioFormat>,
    ) -> Result<(), LegError> {
        self.send(ClientEvent::SessionUpdate {
            event_id: None,
            session: agent.session(format),
        })
        .await?;
        let mut before = Vec::new();
        loop {
            match self.recv().await {
                LegEvent::Event(ServerEvent::SessionUpdated { event_id, session }) => {
                    if self.session_id.is_none() {
                        self.session_id = session.id.clone();
                    }
                    before.push(LegEvent::Event(ServerEvent::SessionUpdated {
                        event_id,
                        session,
                    }));
                    for ev in before.into_iter().rev() {
                        self.pending.push_front(ev);
                    }
                    return Ok(());
                }
                LegEvent::Event(ServerEvent::Error { error, .. }) => {
                    return Err(LegError::Refused {
                        status: 400,
                        code: error.code.unwrap_or(error.kind),
                        message: error.message,
                    })
                }
                LegEvent::Ended(r) => return Err(LegError::Ended(r)),
                other => before.push(other),
            }
        }
    }

    async fn write(&mut self, text: String) -> Result<(), LegError> {
        if let Some(r) = &self.ended {
            return Err(LegError::Ended(r.clone()));
        }
        if let Err(e) = self.ws.send(Message::Text(text.into())).await {
            let reason = LegEnd::Transport(e.to_string());
            self.ended = Some(reason.clone());
            return Err(LegError::Ended(reason));
        }
        Ok(())
    }

    /// Takes one server event in: tracks turns and audio, queues what the bridge gets.
    async fn take(&mut self, ev: ServerEvent) {
        let (release, call) = self.turns.incoming(&ev);
        self.outbox.extend(release);
        match ev {
            ServerEvent::OutputAudioDelta { item_id, delta, .. } => {
                if self.audio_item.as_deref() != Some(item_id.as_str()) {
                    self.audio_item = Some(item_id);
                    self.delivered_ms = 0;
                    self.partial.clear();
                }
                self.decoded.clear();
                if base64::engine::general_purpose::STANDARD
                    .decode_vec(delta.as_bytes(), &mut self.decoded)
                    .is_err()
                {
                    self.malformed += 1;
                    return;
                }
                let mut rest: &[u8] = &self.decoded;
                while !rest.is_empty() {
                    let take = (FRAME_SAMPLES - self.partial.len()).min(rest.len());
                    self.partial.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if self.partial.len() == FRAME_SAMPLES {
                        let mut frame = [0u8; FRAME_SAMPLES];
                        frame.copy_from_slice(&self.partial);
                        self.partial.clear();
                        self.pending
                            .push_back(LegEvent::Audio(AgentAudio::G711(self.law, frame)));
                    }
                }
            }
            ServerEvent::OutputAudioDone { .. } => {
                if !self.partial.is_empty() {
                    let mut frame = [self.law.silence_byte(); FRAME_SAMPLES];
                    frame[..self.partial.len()].copy_from_slice(&self.partial);
                    self.partial.clear();
                    self.pending
                        .push_back(LegEvent::Audio(AgentAudio::G711(self.law, frame)));
                }
                self.pending.push_back(LegEvent::Event(ev));
            }
            ServerEvent::Error { ref error, .. }
                if error.code.as_deref() == Some("session_expired") =>
            {
                self.expired = true;
                self.pending.push_back(LegEvent::Event(ev));
                self.pending
                    .push_back(LegEvent::Ended(LegEnd::SessionExpired));
            }
            ServerEvent::SessionCreated { ref session, .. } => {
                self.session_id = session.id.clone();
                self.pending.push_back(LegEvent::Event(ev));
            }
            ev => {
                self.pending.push_back(LegEvent::Event(ev));
                if let Some(call) = call {
                    self.pending.push_back(LegEvent::ToolCall(call));
                }
            }
        }
    }

    /// Writes released events; each leaves the box only once written.
    async fn flush_outbox(&mut self) {
        while let Some(ev) = self.outbox.front().cloned() {
            if self.ended.is_some() || self.write(ev.to_json()).await.is_err() {
                self.outbox.clear();
                return;
            }
            self.outbox.pop_front();
        }
    }

    /// Takes one socket message in; returns why the session ended, if it did.
    async fn take_message(&mut self, next: Option<Result<Message, WsError>>) -> Option<LegEnd> {
        let msg = match next {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => return Some(LegEnd::Transport(e.to_string())),
            None => {
                return Some(LegEnd::SocketClosed {
                    code: 1006,
                    reason: String::new(),
                })
            }
        };
        let text = match &msg {
            Message::Text(t) => t.as_str(),
            Message::Binary(b) => match std::str::from_utf8(b) {
                Ok(t) => t,
                Err(_) => {
                    self.malformed += 1;
                    return None;
                }
            },
            Message::Close(frame) => {
                let (code, reason) = frame
                    .as_ref()
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Some(LegEnd::SocketClosed { code, reason });
            }
            _ => return None,
        };
        match ServerEvent::parse(text) {
            Ok(ev) => self.take(ev).await,
            Err(_) => self.malformed += 1,
        }
        None
    }

    /// Takes in what already arrived, so decisions see the latest turn state.
    async fn drain_ready(&mut self) {
        use futures::FutureExt as _;
        while self.ended.is_none() {
            let Some(next) = self.ws.next().now_or_never() else {
                break;
            };
            if let Some(end) = self.take_message(next).await {
                let ev = self.end(end);
                self.pending.push_back(ev);
            }
        }
    }

    fn end(&mut self, reason: LegEnd) -> LegEvent {
        let reason = if self.expired {
            LegEnd::SessionExpired
        } else {
            reason
        };
        let reason = self.ended.get_or_insert(reason).clone();
        if self.malformed > 0 {
            tracing::debug!(
                malformed = self.malformed,
                "realtime socket had malformed messages"
            );
        }
        LegEvent::Ended(reason)
    }
}

#[async_trait::async_trait]
impl RealtimeLeg for WebSocketLeg {
    fn audio_format(&self) -> LegAudioFormat {
        LegAudioFormat::G711(self.law)
    }

    fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    async fn send_audio(&mut self, frame: CallerAudio<'_>) -> Result<(), LegError> {
        if self.sideband.is_some() {
            // the browser sends its own audio to the service
            return Ok(());
        }
        let bytes: &[u8] = match frame {
            CallerAudio::G711(law, bytes) if law == self.law => bytes,
            CallerAudio::G711(law, bytes) => {
                // another law: through linear, sample by sample, no allocation
                let n = bytes.len().min(FRAME_SAMPLES);
                let mut pcm = [0i16; FRAME_SAMPLES];
                law.decode(&bytes[..n], &mut pcm[..n]);
                self.law.encode(&pcm[..n], &mut self.g711[..n]);
                &self.g711[..n]
            }
            CallerAudio::Pcm(pcm) => {
                self.law.encode(pcm, &mut self.g711);
                &self.g711
            }
        };
        self.b64.clear();
        self.b64
            .push_str(r#"{"type":"input_audio_buffer.append","audio":""#);
        base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut self.b64);
        self.b64.push_str("\"}");
        let text = self.b64.clone();
        self.write(text).await
    }

    async fn send(&mut self, event: ClientEvent) -> Result<(), LegError> {
        // checked first: a `response.create` held for later would otherwise look accepted
        if let Some(r) = &self.ended {
            return Err(LegError::Ended(r.clone()));
        }
        match self.turns.outgoing(event) {
            Some(ev) => self.write(ev.to_json()).await,
            None => Ok(()),
        }
    }

    async fn recv(&mut self) -> LegEvent {
        loop {
            self.flush_outbox().await;
            if let Some(ev) = self.pending.pop_front() {
                match &ev {
                    LegEvent::Audio(_) => self.delivered_ms += u64::from(FRAME_MS),
                    LegEvent::Ended(r) => {
                        self.ended.get_or_insert(r.clone());
                    }
                    _ => {}
                }
                return ev;
            }
            if let Some(r) = &self.ended {
                return LegEvent::Ended(r.clone());
            }
            let next = self.ws.next().await;
            if let Some(end) = self.take_message(next).await {
                return self.end(end);
            }
        }
    }

    async fn interrupt(&mut self, unplayed_ms: u32) -> Result<(), LegError> {
        self.drain_ready().await;
        if self.sideband.is_some() {
            // a WebRTC call: the service knows what it played out; cancel, clear its buffer
            if self.turns.response_active() {
                let cancel = ClientEvent::ResponseCancel {
                    event_id: None,
                    response_id: None,
                };
                self.write(cancel.to_json()).await?;
            }
            let clear = ClientEvent::OutputAudioBufferClear { event_id: None };
            return self.write(clear.to_json()).await;
        }
        // audio still queued here was never played either
        let queued = self
            .pending
            .iter()
            .filter(|e| matches!(e, LegEvent::Audio(_)))
            .count();
        self.pending.retain(|e| !matches!(e, LegEvent::Audio(_)));
        self.partial.clear();
        // with turn detection that interrupts, the service cancels on `speech_started` by
        // itself: a cancel of ours would race it (`response_cancel_not_active`)
        if self.turns.cancel_needed() {
            self.write(
                ClientEvent::ResponseCancel {
                    event_id: None,
                    response_id: None,
                }
                .to_json(),
            )
            .await?;
        }
        if let Some(item_id) = self.audio_item.take() {
            let played = self.delivered_ms.saturating_sub(unplayed_ms as u64);
            tracing::debug!(
                played_ms = played,
                dropped_frames = queued,
                "barge-in truncates the agent's item"
            );
            self.write(
                ClientEvent::ConversationItemTruncate {
                    event_id: None,
                    item_id,
                    content_index: 0,
                    audio_end_ms: played,
                }
                .to_json(),
            )
            .await?;
        }
        Ok(())
    }

    async fn close(&mut self) {
        if let Some(sideband) = &self.sideband {
            // the relay ends a browser's call: hang it up at the service (its socket and
            // the browser's connection close with it)
            if !matches!(self.ended, Some(LegEnd::Closed)) {
                sideband.hang_up().await;
            }
        }
        if self.ended.is_none() {
            let _ = self
                .ws
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "call ended".into(),
                })))
                .await;
            let _ = self.ws.close(None).await;
            self.ended = Some(LegEnd::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_url_follows_the_scheme() {
        assert_eq!(
            socket_url("https://api.openai.com/", "model=gpt-realtime"),
            "wss://api.openai.com/v1/realtime?model=gpt-realtime"
        );
        assert_eq!(
            socket_url("http://127.0.0.1:9", "model=m"),
            "ws://127.0.0.1:9/v1/realtime?model=m"
        );
    }
}
