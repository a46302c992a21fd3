//! `voxrelay serve`: starts every part, then drains and stops on SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bridge::{Bridge, BridgeSettings};
use crate::config::Config;
use crate::sip::server::SipSettings;
use crate::sip::trunks::{Routes, Trunks};
use crate::sip::SipServer;

/// How long calls get to send their BYE once told to hang up at shutdown.
const BYE_GRACE: Duration = Duration::from_secs(5);

/// The running relay.
pub struct Relay {
    /// The SIP endpoint.
    pub sip: SipServer,
    hangup_all: CancellationToken,
    drain: Duration,
}

impl Relay {
    /// Starts the relay from a validated config.
    pub async fn start(cfg: Config) -> anyhow::Result<Self> {
        if cfg.agents.default != "echo" {
            warn!(
                agent = %cfg.agents.default,
                "this build has no OpenAI Realtime leg yet: calls go to the built-in echo agent"
            );
        }
        let hangup_all = CancellationToken::new();
        let settings = BridgeSettings {
            max_call: Duration::from_secs(cfg.bridge.max_call_seconds),
            rtp_timeout: match cfg.sip.rtp_timeout_seconds {
                0 => None,
                s => Some(Duration::from_secs(s)),
            },
            answer_delay: Duration::from_millis(cfg.bridge.answer_delay_ms),
        };
        let bridge = Arc::new(Bridge::new(settings, hangup_all.clone()));
        let trunks = Trunks::new(&cfg.trunks, |k| std::env::var(k).ok())?;
        let settings = SipSettings {
            sip: cfg.sip.clone(),
            trunks,
            routes: Routes::new(&cfg.routes),
            default_agent: cfg.agents.default.clone(),
        };
        let sip = SipServer::start(settings, bridge).await?;
        info!(sip = %sip.local_addr(), agent = %cfg.agents.default, "voxrelay ready");
        Ok(Self {
            sip,
            hangup_all,
            drain: Duration::from_secs(cfg.bridge.drain_seconds),
        })
    }

    /// Graceful stop: new INVITEs get 503, live calls may go on for the drain time, then
    /// every call gets BYE and the endpoint closes.
    pub async fn shutdown(self) {
        self.sip.start_draining();
        let live = self.sip.active_calls();
        info!(
            live_calls = live,
            drain_seconds = self.drain.as_secs(),
            "draining"
        );
        if tokio::time::timeout(self.drain, self.sip.wait_until_idle())
            .await
            .is_err()
        {
            info!(
                live_calls = self.sip.active_calls(),
                "drain time over: hanging up"
            );
            self.hangup_all.cancel();
            let _ = tokio::time::timeout(BYE_GRACE, self.sip.wait_until_idle()).await;
        }
        self.sip.stop();
        info!("stopped");
    }
}

/// Runs until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let relay = Relay::start(cfg).await?;
    wait_for_signal().await;
    relay.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
    }
}
