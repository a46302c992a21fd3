//! Logging with `tracing`: readable lines by default, one JSON object per line with
//! `--log-format json`. `RUST_LOG` replaces the configured filter (`log.level`), but never the
//! safety caps below, which apply on top of whatever either says.
//!
//! rsipstack logs every SIP message in full (at INFO and below: `raw_message`, dialog bodies),
//! and an SDES call's SDP carries its SRTP master keys (`a=crypto:… inline:…`), so rsipstack is
//! held at WARN at most: its warnings and errors name the fault, never the message. Without a
//! filter asking for more it is held at ERROR: a flood of garbage datagrams must not become a
//! flood of log lines.

use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::LogFormat;

/// The quietest-by-default settings added to `log.level` when `RUST_LOG` is unset. The `rtc`
/// crate's handler pipeline warns once per packet it cannot take (a STUN check that arrives
/// before the SDP answer is applied, a datagram sent to a closing connection, junk sent to the
/// connection's port), so it is held at ERROR: a stranger's datagrams must not become log lines.
const DEFAULT_QUIET: &str =
    "rsipstack=error,webrtc=warn,rtc=warn,rtc::peer_connection::handler=error,\
     rtc_ice=warn,rtc_dtls=warn,rtc_sctp=warn,rtc_srtp=warn";

/// The caps no filter can lift: targets whose verbose events carry secrets.
pub fn safety_caps() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("rsipstack", LevelFilter::WARN)
}

/// The filter a user asked for: `RUST_LOG` (`rust_log`) when set and valid, else `level` with
/// the quiet defaults.
fn user_filter(rust_log: Option<&str>, level: &str) -> EnvFilter {
    rust_log
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("{level},{DEFAULT_QUIET}")))
}

/// Installs the global subscriber (once; later calls do nothing).
pub fn init(format: LogFormat, level: &str) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = user_filter(rust_log.as_deref(), level).and(safety_caps());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Json => layer.json().flatten_event(true).with_filter(filter).boxed(),
        LogFormat::Text => layer.compact().with_filter(filter).boxed(),
    };
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn no_filter_lifts_rsipstack_above_warn() {
        let caps = safety_caps();
        assert!(!caps.would_enable("rsipstack::transport::udp", &Level::INFO));
        assert!(!caps.would_enable("rsipstack", &Level::TRACE));
        assert!(caps.would_enable("rsipstack::transaction", &Level::WARN));
        assert!(caps.would_enable("voxrelay::sip", &Level::TRACE));
    }

    #[test]
    fn by_default_the_webrtc_stacks_per_packet_warnings_are_held_back() {
        use std::sync::{Arc, Mutex};
        struct Seen(Arc<Mutex<Vec<String>>>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
            fn on_event(
                &self,
                e: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                let m = e.metadata();
                self.0
                    .lock()
                    .unwrap()
                    .push(format!("{} {}", m.target(), m.level()));
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(Seen(seen.clone()).with_filter(user_filter(None, "info")));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "rtc::peer_connection::handler", "IceHandler.handle_read got error");
            tracing::error!(target: "rtc::peer_connection::handler", "an error");
            tracing::warn!(target: "rtc::peer_connection", "a warning");
            tracing::info!(target: "voxrelay::bridge", "call answered");
        });
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "rtc::peer_connection::handler ERROR",
                "rtc::peer_connection WARN",
                "voxrelay::bridge INFO"
            ]
        );
    }
}
