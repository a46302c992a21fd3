//! Opens one realtime leg per call on the configured transport.

use crate::config::RealtimeTransport;
use crate::media::g711::Law;

use super::config::LegSettings;
use super::events::Session;
use super::key_refill::KeyRefill;
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
    /// Keys minted ahead of calls (WebRTC only), if `openai.key_pool` is above 0.
    pool: Option<KeyRefill>,
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
            pool: None,
        })
    }

    /// The transport legs use.
    pub fn transport(&self) -> RealtimeTransport {
        self.transport
    }

    /// Mints `per_agent` keys ahead of calls for each of `agents` (name and session) and
    /// keeps them ready, WebRTC only (the WebSocket transport uses the server key). Counts
    /// into `metrics`. Needs a tokio runtime.
    pub fn with_key_pool(
        mut self,
        per_agent: usize,
        agents: Vec<(String, Session)>,
        metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    ) -> Self {
        if per_agent > 0 && self.transport == RealtimeTransport::Webrtc {
            let ttl = std::time::Duration::from_secs(self.settings.key_ttl_seconds.into());
            self.pool = Some(KeyRefill::start(
                self.minter.clone(),
                per_agent,
                ttl,
                agents,
                metrics,
            ));
        }
        self
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

    /// Takes a key minted ahead for the agent's session, or mints the call's own, then opens
    /// the WebRTC leg.
    pub async fn connect_webrtc(&self, agent: &AgentSpec) -> Result<WebRtcLeg, LegError> {
        let session = agent.session(None);
        let key = match self.pool.as_ref().and_then(|p| p.take(&session)) {
            Some(key) => key,
            None => self.minter.mint(&session).await?,
        };
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
