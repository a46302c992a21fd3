//! Logging with `tracing`: readable lines by default, one JSON object per line with
//! `--log-format json`. `RUST_LOG` overrides the configured level. rsipstack logs every
//! message at INFO and every malformed datagram at WARN, so it is held at ERROR unless asked
//! for: a flood of garbage must not become a flood of log lines.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber (once; later calls do nothing).
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!(
            "{level},rsipstack=error,webrtc=warn,rtc=warn,rtc_ice=warn,rtc_dtls=warn,rtc_sctp=warn,rtc_srtp=warn"
        )));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.compact().try_init(),
    };
}
