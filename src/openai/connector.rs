//! Opens one realtime leg per call on the configured transport.

use crate::config::RealtimeTransport;
use crate::media::g711::Law;

use super::config::LegSettings;
use super::keys::KeyMinter;
use super::leg::{LegError, RealtimeLeg};
use super::session::AgentSpec;
use super::webrtc::{WebRtcLeg, WebRtcOptions};
use super::websocket::{CertificateDer, WebSocketLeg, WsTls};
use crate::secret::Secret;

/// Opens realtime legs: one HTTP client, the server key, the transport and its settings.
#[derive(Debug, Clone)]
pub struct Connector {
    http: reqwest::Client,
    ws_tls: WsTls,
    minter: KeyMinter,
    transport: RealtimeTransport,
    settings: LegSettings,
}

impl Connector {
    /// A connector for `base_url` (`openai.base_url`) with the server key (`OPENAI_API_KEY`).
    pub fn new(
        base_url: &str,
        api_key: Secret,
        transport: RealtimeTransport,
        settings: LegSettings,
    ) -> Result<Self, LegError> {
        Self::with_extra_roots(base_url, api_key, transport, settings, &[])
    }

    /// Like [`Connector::new`], trusting `extra_roots` (DER certificates) besides the public
    /// roots on every TLS connection it makes (HTTPS and `wss://`): a test server's
    /// self-signed certificate, or a TLS-terminating proxy with a private CA.
    pub fn with_extra_roots(
        base_url: &str,
        api_key: Secret,
        transport: RealtimeTransport,
        settings: LegSettings,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Self, LegError> {
        let mut http = reqwest::Client::builder().use_rustls_tls();
        for cert in extra_roots {
            let cert = reqwest::Certificate::from_der(cert)
                .map_err(|e| LegError::Transport(format!("an extra TLS root: {e}")))?;
            http = http.add_root_certificate(cert);
        }
        let http = http
            .build()
            .map_err(|e| LegError::Transport(e.to_string()))?;
        let ws_tls = WsTls::new(extra_roots)?;
        let minter = KeyMinter::new(
            http.clone(),
            base_url,
            api_key,
            settings.mint_deadline(),
            settings.key_ttl_seconds,
        );
        Ok(Self {
            http,
            ws_tls,
            minter,
            transport,
            settings,
        })
    }

    /// The transport legs use.
    pub fn transport(&self) -> RealtimeTransport {
        self.transport
    }

    /// The key minter (also what `GET /api/session` hands browsers keys with).
    pub fn minter(&self) -> &KeyMinter {
        &self.minter
    }

    /// Opens a session for `agent`. `caller_law` is the phone leg's codec: the WebSocket
    /// transport passes it through both ways.
    pub async fn connect(
        &self,
        agent: &AgentSpec,
        caller_law: Law,
    ) -> Result<Box<dyn RealtimeLeg>, LegError> {
        match self.transport {
            RealtimeTransport::Webrtc => Ok(Box::new(self.connect_webrtc(agent).await?)),
            RealtimeTransport::Websocket => Ok(Box::new(
                WebSocketLeg::connect(
                    self.minter.base_url(),
                    self.minter.api_key(),
                    &self.ws_tls,
                    agent,
                    caller_law,
                    self.settings.connect_deadline(),
                )
                .await?,
            )),
        }
    }

    /// Attaches to the browser's WebRTC call `call_id` over the sideband with the server
    /// key, and configures its session for `agent`.
    pub async fn attach(
        &self,
        agent: &AgentSpec,
        call_id: &str,
    ) -> Result<Box<dyn RealtimeLeg>, LegError> {
        Ok(Box::new(
            WebSocketLeg::attach(
                self.minter.base_url(),
                self.minter.api_key(),
                &self.ws_tls,
                self.http.clone(),
                call_id,
                agent,
                self.settings.connect_deadline(),
            )
            .await?,
        ))
    }

    /// Mints the call's ephemeral key with the agent's session, then opens the WebRTC leg.
    pub async fn connect_webrtc(&self, agent: &AgentSpec) -> Result<WebRtcLeg, LegError> {
        let key = self.minter.mint(&agent.session(None)).await?;
        let mut opts = WebRtcOptions::new(
            self.minter.base_url(),
            self.settings.codec,
            self.settings.connect_deadline(),
        );
        if let Some(bind) = &self.settings.webrtc_bind {
            opts.bind = bind.clone();
        }
        WebRtcLeg::connect(
            self.http.clone(),
            &opts,
            &key.value,
            self.minter.api_key().clone(),
        )
        .await
    }
}
