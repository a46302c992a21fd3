//! The relay's configuration: TOML file, then `VOXRELAY__SECTION__KEY` environment overrides.
//!
//! Every section denies unknown keys so that a typo is an error naming the key, not a silently
//! ignored setting. Secrets (the admin token) come from the environment and never print.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

mod booking;
mod cluster;
mod reminders;
mod sip;
mod webhooks;
pub use self::booking::{redact_url, BookingConfig, WeeklyHours};
pub use self::cluster::{admin_url_host, valid_node_id, ClusterConfig, ClusterError};
pub use self::reminders::RemindersConfig;
pub use self::sip::{LimitsConfig, StreamsConfig, TrunkConfig, TrunkError, UnknownSource};
pub use self::webhooks::{SummaryConfig, WebhookConfig, WebhookError, MIN_SECRET_CHARS};

/// The config file read when `--config` is not given and the file exists.
pub const DEFAULT_CONFIG_PATH: &str = "config/voxrelay.toml";

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// SIP signalling and the phone legs' RTP.
    pub sip: SipConfig,
    /// The OpenAI Realtime leg.
    pub openai: OpenAiConfig,
    /// The admin HTTP endpoint.
    pub admin: AdminConfig,
    /// Bookings and the schedule.
    pub booking: BookingConfig,
    /// Which agent answers.
    pub agents: AgentsConfig,
    /// Per-call limits.
    pub bridge: BridgeConfig,
    /// The embedded simulator used when there is no API key.
    pub sim: SimSection,
    /// Logging.
    pub log: LogConfig,
    /// Call recordings (off by default).
    pub recording: RecordingConfig,
    /// Several relays sharing one PostgreSQL database (off by default).
    pub cluster: ClusterConfig,
    /// What the relay keeps of callers' personal data.
    pub privacy: PrivacyConfig,
    /// Answering-machine detection on the calls the relay places.
    pub amd: AmdConfig,
    /// SIP trunks: who may call, and registrations. None: any source may call.
    pub trunks: Vec<TrunkConfig>,
    /// Dialled number -> agent; `*` for every other number. Empty: `agents.default` answers.
    pub routes: std::collections::BTreeMap<String, String>,
    /// Where each call's `call.ended` event is posted, signed (none by default).
    pub webhooks: Vec<WebhookConfig>,
    /// The call's summary in that event.
    pub summary: SummaryConfig,
    /// Reminder calls before appointments (off by default).
    pub reminders: RemindersConfig,
}

/// `[amd]`: answering-machine detection on the calls the relay places (src/media/amd.rs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmdConfig {
    /// Listen to the callee's first seconds before the agent speaks: a person gets the agent
    /// at once, a machine gets its message after the beep (needs
    /// `bridge.barge_in_min_speech_ms` > 0: the relay must own the agent's turns).
    pub enabled: bool,
    /// Mean power over which a frame is speech (dBFS, -60..-10).
    pub speech_dbfs: f32,
    /// A person's greeting is at most this much speech (ms).
    pub greeting_ms: u64,
    /// Silence after a short greeting that makes it a person's (ms).
    pub after_greeting_ms: u64,
    /// No speech this long from the answer: the agent speaks first (ms).
    pub initial_silence_ms: u64,
    /// No decision this long: the agent speaks (ms).
    pub total_ms: u64,
    /// A tone at least this long is a machine's beep (ms).
    pub beep_min_ms: u64,
    /// After a machine's greeting, no beep this long: the message is left anyway (ms).
    pub beep_wait_ms: u64,
}

impl Default for AmdConfig {
    fn default() -> Self {
        let d = crate::media::amd::AmdSettings::default();
        Self {
            enabled: true,
            speech_dbfs: d.speech_dbfs,
            greeting_ms: d.greeting.as_millis() as u64,
            after_greeting_ms: d.after_greeting.as_millis() as u64,
            initial_silence_ms: d.initial_silence.as_millis() as u64,
            total_ms: d.total.as_millis() as u64,
            beep_min_ms: d.beep_min.as_millis() as u64,
            beep_wait_ms: d.beep_wait.as_millis() as u64,
        }
    }
}

impl AmdConfig {
    /// The detector's settings.
    pub fn settings(&self) -> crate::media::amd::AmdSettings {
        use std::time::Duration;
        crate::media::amd::AmdSettings {
            speech_dbfs: self.speech_dbfs,
            word_gap: crate::media::amd::AmdSettings::default().word_gap,
            greeting: Duration::from_millis(self.greeting_ms),
            after_greeting: Duration::from_millis(self.after_greeting_ms),
            initial_silence: Duration::from_millis(self.initial_silence_ms),
            total: Duration::from_millis(self.total_ms),
            beep_min: Duration::from_millis(self.beep_min_ms),
            beep_wait: Duration::from_millis(self.beep_wait_ms),
        }
    }
}

/// `[privacy]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Store call transcripts and tool calls with phone numbers, email addresses and the
    /// names the call's tools handled replaced by `[phone]`, `[email]` and `[name]`.
    pub redact_transcripts: bool,
}

/// `[sip]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// SIP over UDP and TCP on this address.
    pub listen: SocketAddr,
    /// SIP over TLS (SIPS) on this address, typically port 5061; unset: no TLS.
    pub tls_listen: Option<SocketAddr>,
    /// The TLS certificate chain, a PEM file (leaf first); required with `tls_listen`.
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key, a PEM file (PKCS#8 or RSA PKCS#1); required with `tls_listen`.
    pub tls_key: Option<PathBuf>,
    /// Address written into SDP `c=` and Contact; the listen IP when unset.
    pub external_ip: Option<IpAddr>,
    /// Inclusive RTP port range for the phone legs (RTP on even ports, RTCP on the next one).
    pub rtp_ports: [u16; 2],
    /// Beyond this many live calls a new INVITE gets 503 with Retry-After.
    pub max_calls: usize,
    /// Seconds sent in Retry-After with a 503.
    pub retry_after_seconds: u32,
    /// New INVITEs and OPTIONS get 503 with Retry-After once this share (per cent) of the
    /// calls' 20 ms media ticks or more has started over 10 ms late in 2 of the last 5
    /// seconds: the machine has no CPU to spare and another call would make every call's audio
    /// late. Calls are taken again after 10 s in a row under half of it. 0: off.
    pub overload_late_ticks_percent: f64,
    /// Seconds without any RTP from the caller after which the call is ended (0: never).
    pub rtp_timeout_seconds: u64,
    /// With trunks configured, what a request from any other address gets: `reject` (403)
    /// or `ignore` (no answer at all, dropped before parsing).
    pub unknown_source: UnknownSource,
    /// Per-source rate limits.
    pub limits: LimitsConfig,
    /// With no `[[trunks]]`, let a relay listening on a non-loopback address take calls from
    /// anyone (refused at start otherwise).
    pub allow_any_source: bool,
    /// Calls being set up at once (INVITE taken, realtime session opening, not yet
    /// answered); beyond it a new INVITE gets 503 with Retry-After (0: no cap).
    pub max_setup_calls: usize,
    /// The same from one source address (an IPv6 /64); 0: no cap.
    pub max_setup_calls_per_source: usize,
    /// Bounds on SIP connections over TCP and TLS (`[sip.streams]`).
    pub streams: StreamsConfig,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            external_ip: None,
            rtp_ports: [20000, 20999],
            max_calls: 500,
            retry_after_seconds: 5,
            overload_late_ticks_percent: 2.0,
            rtp_timeout_seconds: 60,
            unknown_source: UnknownSource::Reject,
            limits: LimitsConfig::default(),
            allow_any_source: false,
            max_setup_calls: 100,
            max_setup_calls_per_source: 30,
            streams: Default::default(),
        }
    }
}

impl SipConfig {
    /// The address the relay advertises in SDP and Contact.
    pub fn advertised_ip(&self) -> IpAddr {
        self.external_ip.unwrap_or(self.listen.ip())
    }

    /// The address the relay advertises in Contact for calls over TLS.
    pub fn advertised_tls_ip(&self) -> IpAddr {
        self.external_ip
            .unwrap_or(self.tls_listen.map_or(self.listen.ip(), |a| a.ip()))
    }

    /// Whether SIP listens on anything but loopback (UDP/TCP or TLS).
    pub fn is_public(&self) -> bool {
        !self.listen.ip().is_loopback() || self.tls_listen.is_some_and(|a| !a.ip().is_loopback())
    }

    /// The TLS certificate and key files, with the keys TLS needs checked; `None` when TLS
    /// is off. `sip::tls::TlsFiles::from_config` reads and checks the files themselves.
    pub fn tls_paths(&self) -> Result<Option<(&Path, &Path)>, ConfigError> {
        let unset = |key: &'static str, reason: &'static str| ConfigError::Invalid {
            key,
            value: "(unset)".into(),
            reason,
        };
        let Some(listen) = self.tls_listen else {
            if self.tls_cert.is_some() || self.tls_key.is_some() {
                return Err(unset(
                    "sip.tls_listen",
                    "required when sip.tls_cert or sip.tls_key is set",
                ));
            }
            return Ok(None);
        };
        let cert = self
            .tls_cert
            .as_ref()
            .ok_or_else(|| unset("sip.tls_cert", "required when sip.tls_listen is set"))?;
        let key = self
            .tls_key
            .as_ref()
            .ok_or_else(|| unset("sip.tls_key", "required when sip.tls_listen is set"))?;
        if listen.ip().is_unspecified() && self.external_ip.is_none() {
            return Err(unset(
                "sip.external_ip",
                "required when sip.tls_listen is a wildcard address: Contact needs a real address",
            ));
        }
        Ok(Some((cert.as_path(), key.as_path())))
    }
}

/// How the relay reaches OpenAI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RealtimeTransport {
    /// One WebRTC peer connection per call (the default).
    Webrtc,
    /// A WebSocket per call, with G.711 passed through.
    Websocket,
}

/// Which codec the WebRTC leg offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebRtcCodec {
    /// Opus (the default, what OpenAI recommends).
    #[default]
    Opus,
    /// G.711 µ-law only, so a PCMU caller needs no transcoding. Unverified against the real
    /// service (reported unreliable in mid-2025), hence off by default.
    Pcmu,
}

/// `[openai]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Where the Realtime API is.
    pub base_url: String,
    /// The realtime model.
    pub model: String,
    /// `webrtc` or `websocket`.
    pub transport: RealtimeTransport,
    /// The WebRTC leg's codec: `opus` (default) or `pcmu` (G.711 only, unverified against
    /// the real service).
    pub codec: WebRtcCodec,
    /// How long minting a call's ephemeral key may take, retries included.
    pub mint_deadline_ms: u64,
    /// From posting the offer (or opening the WebSocket) until the session is ready.
    pub connect_deadline_ms: u64,
    /// Lifetime of each call's ephemeral key, 10..=7200 seconds.
    pub key_ttl_seconds: u32,
    /// Ephemeral keys minted ahead of calls and kept ready, per agent (WebRTC only), 0..=16;
    /// 0 mints each call's key during its set-up.
    pub key_pool: usize,
    /// The local UDP address WebRTC gathers candidates from (unset: loopback for a loopback
    /// `base_url`, else all interfaces).
    pub webrtc_bind: Option<String>,
    /// Check what the agent says with OpenAI's moderation endpoint too (off by default).
    pub moderation: bool,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com".into(),
            model: "gpt-realtime".into(),
            transport: RealtimeTransport::Webrtc,
            codec: WebRtcCodec::Opus,
            mint_deadline_ms: 3_000,
            connect_deadline_ms: 10_000,
            // a running session outlives its key
            key_ttl_seconds: 600,
            // a call takes one and its replacement is minted at once, so the pool covers calls
            // arriving faster than a mint: about (calls per second × mint time) + 1. Four hold
            // 10 calls/s with 250 ms mints (docs/performance.md, "Set-up")
            key_pool: 4,
            webrtc_bind: None,
            moderation: false,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Admin HTTP address.
    pub listen: SocketAddr,
    /// Bearer token; set it from the environment (`VOXRELAY__ADMIN__TOKEN`).
    pub token: Option<Secret>,
    /// `Host` names (with an optional port) the admin server answers to besides loopback
    /// names and its own address, e.g. `admin.example.com` behind a proxy.
    pub public_hosts: Vec<String>,
    /// Browser apps on other origins (`https://app.example.com`) that may call `/api/session`.
    pub cors_origins: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            public_hosts: Vec::new(),
            cors_origins: Vec::new(),
        }
    }
}

/// `[agents]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// The agent that answers: a bundled agent, one of `<dir>/*.toml`, or the built-in `echo`.
    pub default: String,
    /// A folder of agent files that extends the bundled agents (a file's agent replaces a
    /// bundled one of the same name); unset: the bundled agents only.
    pub dir: Option<PathBuf>,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            default: "receptionist".into(),
            dir: None,
        }
    }
}

/// `[bridge]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeConfig {
    /// Past this the relay ends the call with BYE.
    pub max_call_seconds: u64,
    /// On SIGTERM/SIGINT, how long live calls may go on before they get BYE.
    pub drain_seconds: u64,
    /// How long the caller hears ringing before the relay answers (0: at once). Echo agent
    /// only: a realtime call is answered as soon as its session is ready.
    pub answer_delay_ms: u64,
    /// How long a tool may run before the model is told it failed.
    pub tool_timeout_ms: u64,
    /// A tool running this long puts comfort noise (or the agent's hold sound) on the line.
    pub hold_after_ms: u64,
    /// Keypad digits pressed within this much of each other reach the agent as one group.
    pub dtmf_inter_digit_ms: u64,
    /// Output guardrails check the agent's transcript every this many new characters.
    pub guardrail_every_chars: usize,
    /// Keep the agent's own voice, returned by the caller's line (a speakerphone, a poor
    /// hybrid), from reaching the model as the caller's: see `src/media/echo_gate.rs`.
    pub echo_gate: bool,
    /// A caller frame heard while the agent speaks goes to the model only when it is this many
    /// dB louder than the loudest echo the line could return (0–30).
    pub echo_gate_margin_db: u8,
    /// Phone calls: the caller's speech over the agent pauses its audio at once, and stops
    /// it (the relay cancels the answer) once it has lasted this long; shorter speech lets
    /// the agent go on unless its transcript holds more than `backchannel_words` (ms; 0: the
    /// realtime service interrupts at the first sound, as without the relay).
    pub barge_in_min_speech_ms: u64,
    /// What a short turn over the agent may say without stopping it ("uh-huh", "okay").
    pub backchannel_words: Vec<String>,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            max_call_seconds: 1800,
            drain_seconds: 30,
            answer_delay_ms: 0,
            tool_timeout_ms: 5000,
            hold_after_ms: 700,
            dtmf_inter_digit_ms: 1500,
            guardrail_every_chars: 100,
            echo_gate: true,
            echo_gate_margin_db: 6,
            barge_in_min_speech_ms: 400,
            backchannel_words: crate::bridge::backchannel::DEFAULT_WORDS
                .iter()
                .map(|w| w.to_string())
                .collect(),
        }
    }
}

/// `[recording]`: one stereo WAV per call, the caller left and the agent right.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingConfig {
    /// Record calls. Off by default: recording callers needs their consent. An agent's
    /// `record` overrides it for that agent's calls.
    pub enabled: bool,
    /// Folder of the WAV files (`<call id>.wav`); created when missing. A relative path in
    /// the file is relative to the file's folder.
    pub dir: PathBuf,
    /// Recordings of calls that started more than this many days ago are deleted (at start and
    /// every hour); 0 keeps them forever.
    pub keep_days: u32,
    /// Play the bundled notice "This call is recorded." before the greeting of every recorded
    /// call.
    pub announce: bool,
    /// The longest recording in MB (10^6 bytes, about 31 s per MB); the recording stops
    /// cleanly there and the call goes on. 0: no cap.
    pub max_call_mb: u32,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: PathBuf::from("recordings"),
            keep_days: 30,
            announce: false,
            max_call_mb: 100,
        }
    }
}

/// `[sim]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimSection {
    /// A bundled scenario (`booking`, `echo`, `fault-…`: the stems of `config/scenarios`), or
    /// a scenario file path.
    pub scenario: String,
}

impl Default for SimSection {
    fn default() -> Self {
        Self {
            scenario: "booking".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `voxrelay=debug,rsipstack=warn`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an override could not be read or has a bad value.
    #[error("{0}")]
    Parse(String),
    /// The values parse but do not make sense together.
    #[error("invalid config: {key} = {value}: {reason}")]
    Invalid {
        /// The dotted key, e.g. `sip.rtp_ports`.
        key: &'static str,
        /// The offending value as written.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The named config file does not exist.
    #[error("config file {0} not found")]
    Missing(PathBuf),
}

impl Config {
    /// Loads the configuration: built-in defaults, then the file (the given one, which must
    /// exist, or `config/voxrelay.toml` if present), then the environment of this process.
    ///
    /// A relative path written in the file is relative to the file's folder; one given by an
    /// environment override (or a default) is relative to the working directory. The loaded
    /// config holds the resolved paths (see [`Config::resolve_paths`]).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        let file = match path {
            Some(p) if !p.exists() => return Err(ConfigError::Missing(p.to_path_buf())),
            Some(p) => Some(p),
            None => Some(Path::new(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()),
        };
        if let Some(p) = file {
            // absolute, so that figment reads this very file (it searches parent folders for
            // a relative one) and its folder is known when paths in it are resolved
            let p = std::fs::canonicalize(p)
                .map_err(|e| ConfigError::Parse(format!("config file {}: {e}", p.display())))?;
            fig = fig.merge(Toml::file_exact(p));
        }
        let env: std::collections::HashMap<String, String> = env.into_iter().collect();
        let overrides: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with("VOXRELAY__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // The overrides become one more TOML layer, so tests can pass an environment without
        // mutating the process's own.
        let env_toml = overrides_to_toml(&overrides)?;
        fig = fig.merge(Toml::string(&env_toml));
        let mut cfg: Config = fig
            .extract()
            .map_err(|e| ConfigError::Parse(describe(&fig, e)))?;
        cfg.resolve_paths(|key| file_folder(&fig, key));
        cfg.validate()?;
        for (i, t) in cfg.trunks.iter().enumerate() {
            t.check(i, |k| env.get(k).cloned())
                .map_err(|e| ConfigError::Parse(e.to_string()))?;
        }
        for (i, w) in cfg.webhooks.iter().enumerate() {
            w.check(i, |k| env.get(k).cloned())
                .map_err(|e| ConfigError::Parse(e.to_string()))?;
        }
        Ok(cfg)
    }

    /// Makes the relative paths among the values absolute: `base(key)` gives the folder a
    /// key's value is relative to (the config file's folder when the value came from the
    /// file), `None` leaves it as it is (relative to the working directory). The keys:
    /// `agents.dir`, `sim.scenario` (unless it names a bundled scenario), `sip.tls_cert`,
    /// `sip.tls_key`, `recording.dir` and a `sqlite:` file in `booking.database_url`.
    pub fn resolve_paths(&mut self, base: impl Fn(&str) -> Option<PathBuf>) {
        let join = |key: &str, p: &Path| match base(key) {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        };
        if let Some(dir) = &self.agents.dir {
            self.agents.dir = Some(join("agents.dir", dir));
        }
        if crate::bundled::scenario(&self.sim.scenario).is_none() {
            let p = join("sim.scenario", Path::new(&self.sim.scenario));
            self.sim.scenario = p.to_string_lossy().into_owned();
        }
        for (key, value) in [
            ("sip.tls_cert", &mut self.sip.tls_cert),
            ("sip.tls_key", &mut self.sip.tls_key),
        ] {
            if let Some(p) = value.as_ref() {
                *value = Some(join(key, p));
            }
        }
        self.recording.dir = join("recording.dir", &self.recording.dir);
        if let Some(dir) = base("booking.database_url") {
            self.booking.database_url = sqlite_relative_to(&self.booking.database_url, &dir);
        }
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let [lo, hi] = self.sip.rtp_ports;
        if lo == 0 || lo > hi || hi - lo < 1 {
            return Err(ConfigError::Invalid {
                key: "sip.rtp_ports",
                value: format!("[{lo}, {hi}]"),
                reason: "needs a low and a high port, low < high, low > 0",
            });
        }
        if !(10..=7200).contains(&self.openai.key_ttl_seconds) {
            return Err(ConfigError::Invalid {
                key: "openai.key_ttl_seconds",
                value: self.openai.key_ttl_seconds.to_string(),
                reason: "must be 10..=7200",
            });
        }
        if self.openai.key_pool > crate::openai::key_pool::MAX_TARGET {
            return Err(ConfigError::Invalid {
                key: "openai.key_pool",
                value: self.openai.key_pool.to_string(),
                reason: "must be 0..=16",
            });
        }
        if self.bridge.echo_gate_margin_db > 30 {
            return Err(ConfigError::Invalid {
                key: "bridge.echo_gate_margin_db",
                value: self.bridge.echo_gate_margin_db.to_string(),
                reason: "must be 0..=30",
            });
        }
        if self.bridge.barge_in_min_speech_ms > 2000 {
            return Err(ConfigError::Invalid {
                key: "bridge.barge_in_min_speech_ms",
                value: self.bridge.barge_in_min_speech_ms.to_string(),
                reason: "must be 0..=2000",
            });
        }
        if !(-60.0..=-10.0).contains(&self.amd.speech_dbfs) {
            return Err(ConfigError::Invalid {
                key: "amd.speech_dbfs",
                value: self.amd.speech_dbfs.to_string(),
                reason: "must be -60..=-10",
            });
        }
        let a = &self.amd;
        if [
            a.greeting_ms,
            a.after_greeting_ms,
            a.initial_silence_ms,
            a.total_ms,
            a.beep_min_ms,
            a.beep_wait_ms,
        ]
        .iter()
        .any(|&ms| !(20..=120_000).contains(&ms))
        {
            return Err(ConfigError::Invalid {
                key: "amd",
                value: format!("{a:?}"),
                reason: "every time must be 20..=120000 ms",
            });
        }
        if let Some((key, value, reason)) = self.reminders.problem() {
            return Err(ConfigError::Invalid { key, value, reason });
        }
        if let Some(hours) = &self.reminders.hours {
            crate::booking::schedule::parse_week(hours, "reminders.hours").map_err(|e| {
                ConfigError::Parse(format!("invalid config: {}: {}", e.key, e.message))
            })?;
        }
        if self.bridge.guardrail_every_chars == 0 {
            return Err(ConfigError::Invalid {
                key: "bridge.guardrail_every_chars",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        if self.sip.max_calls == 0 {
            return Err(ConfigError::Invalid {
                key: "sip.max_calls",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        let overload = self.sip.overload_late_ticks_percent;
        if !(0.0..=100.0).contains(&overload) {
            return Err(ConfigError::Invalid {
                key: "sip.overload_late_ticks_percent",
                value: overload.to_string(),
                reason: "must be from 0 (off) to 100",
            });
        }
        if self.sip.listen.ip().is_unspecified() && self.sip.external_ip.is_none() {
            return Err(ConfigError::Invalid {
                key: "sip.external_ip",
                value: "(unset)".into(),
                reason: "required when sip.listen is a wildcard address: SDP needs a real address",
            });
        }
        if !self.admin.listen.ip().is_loopback() && self.admin.token.is_none() {
            return Err(ConfigError::Invalid {
                key: "admin.token",
                value: "(unset)".into(),
                reason: "required when admin.listen is not loopback: set VOXRELAY__ADMIN__TOKEN",
            });
        }
        if !(self.openai.base_url.starts_with("http://")
            || self.openai.base_url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid {
                key: "openai.base_url",
                value: self.openai.base_url.clone(),
                reason: "must start with http:// or https://",
            });
        }
        if self.bridge.max_call_seconds == 0 {
            return Err(ConfigError::Invalid {
                key: "bridge.max_call_seconds",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        self.sip.tls_paths()?;
        if self.sip.is_public() && self.trunks.is_empty() && !self.sip.allow_any_source {
            return Err(ConfigError::Invalid {
                key: "sip.allow_any_source",
                value: "false".into(),
                reason: "sip.listen (or sip.tls_listen) is not loopback and no [[trunks]] list \
                         who may call: add [[trunks]] with the addresses your provider calls \
                         from, or set sip.allow_any_source = true \
                         (VOXRELAY__SIP__ALLOW_ANY_SOURCE=true) to take calls from anyone",
            });
        }
        if self.sip.allow_any_source && !self.trunks.is_empty() {
            return Err(ConfigError::Invalid {
                key: "sip.allow_any_source",
                value: "true".into(),
                reason: "contradicts [[trunks]]: with trunks only their addresses may call; \
                         remove one of the two",
            });
        }
        if let Err(e) = self.sip.streams.validate() {
            return Err(ConfigError::Parse(format!("invalid config: {e}")));
        }
        if let Err(e) = self.booking.validate() {
            return Err(ConfigError::Parse(format!(
                "invalid config: {}: {}",
                e.key, e.message
            )));
        }
        if let Err(e) = self
            .cluster
            .validate(&self.booking.database_url, self.admin.listen)
        {
            return Err(ConfigError::Parse(format!(
                "invalid config: {}: {}",
                e.key, e.reason
            )));
        }
        if self.agents.default.is_empty() {
            return Err(ConfigError::Invalid {
                key: "agents.default",
                value: "\"\"".into(),
                reason: "must name an agent",
            });
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted (for `check-config`).
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.booking = self.booking.redacted();
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

/// The folder of the config file that gave `key` its value; `None` when the value is a
/// default or an environment override.
fn file_folder(fig: &Figment, key: &str) -> Option<PathBuf> {
    match &fig.find_metadata(key)?.source {
        Some(figment::Source::File(p)) => p.parent().map(Path::to_path_buf),
        _ => None,
    }
}

/// A `sqlite:` URL naming a relative file, made relative to `dir`; any other URL (absolute
/// file, `:memory:`, PostgreSQL) as it is. The query string is kept.
fn sqlite_relative_to(url: &str, dir: &Path) -> String {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return url.to_string();
    };
    let (file, query) = rest.split_at(rest.find('?').unwrap_or(rest.len()));
    if file.is_empty() || file.starts_with(':') || Path::new(file).is_absolute() {
        return url.to_string();
    }
    format!("sqlite://{}{query}", dir.join(file).display())
}

/// Turns `VOXRELAY__SIP__LISTEN=…` pairs into a TOML document. Values that parse as TOML
/// (numbers, booleans, arrays) keep their type; anything else is a string.
fn overrides_to_toml(pairs: &[(String, String)]) -> Result<String, ConfigError> {
    let mut root = toml::Table::new();
    for (name, raw) in pairs {
        let path: Vec<String> = name["VOXRELAY__".len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::Parse(format!(
                "environment variable {name}: empty key part"
            )));
        }
        let value = parse_env_value(raw);
        let mut table = &mut root;
        for part in &path[..path.len() - 1] {
            let entry = table
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::Parse(format!(
                        "environment variable {name}: {part} is not a section"
                    )))
                }
            };
        }
        table.insert(path[path.len() - 1].clone(), value);
    }
    toml::to_string(&root).map_err(|e| ConfigError::Parse(format!("environment overrides: {e}")))
}

fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// A value fit for an error message: a scalar (a table could hold a secret), with a password
/// in a URL masked, and nothing for a secret key.
fn shown_value(key: &str, v: &figment::value::Value) -> Option<String> {
    use figment::value::Value;
    let lower = key.to_ascii_lowercase();
    if ["token", "password", "secret"]
        .iter()
        .any(|s| lower.contains(s))
    {
        return Some("[redacted]".into());
    }
    match v {
        Value::String(_, s) => serde_json::to_string(&redact_url(s)).ok(),
        Value::Dict(..) => None,
        other => serde_json::to_string(other).ok(),
    }
}

/// figment's error, phrased with the key, the value given and where it came from.
fn describe(fig: &Figment, e: figment::Error) -> String {
    let mut out = Vec::new();
    for err in e {
        let key = if err.path.is_empty() {
            "(top level)".to_string()
        } else {
            err.path.join(".")
        };
        let value = fig
            .find_value(&key)
            .ok()
            .and_then(|v| shown_value(&key, &v))
            .map(|v| format!(" = {v}"))
            .unwrap_or_default();
        let src = err
            .metadata
            .as_ref()
            .map(|m| match &m.source {
                Some(s) => format!(" (from {s})"),
                None => format!(" (from {})", m.name),
            })
            .unwrap_or_default();
        out.push(format!("invalid config: {key}{value}: {}{src}", err.kind));
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_str(toml_text: &str, e: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, toml_text).unwrap();
        Config::load_with_env(Some(&p), env(e))
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = load_str("", &[]).unwrap();
        assert_eq!(
            c.sip.listen,
            "127.0.0.1:5060".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(c.sip.rtp_ports, [20000, 20999]);
        assert_eq!(c.sip.max_calls, 500);
        assert_eq!(c.openai.base_url, "https://api.openai.com");
        assert_eq!(c.openai.model, "gpt-realtime");
        assert_eq!(c.openai.transport, RealtimeTransport::Webrtc);
        assert_eq!(
            c.admin.listen,
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(c.booking.database_url, "sqlite://voxrelay.db");
        assert_eq!(c.agents.default, "receptionist");
        assert_eq!(c.agents.dir, None, "the bundled agents only");
        assert_eq!(c.bridge.max_call_seconds, 1800);
        assert_eq!(c.sim.scenario, "booking");
        assert_eq!(
            c.sip.advertised_ip(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn file_then_environment_overrides() {
        let c = load_str(
            "[sip]\nlisten = \"127.0.0.1:5070\"\nmax_calls = 10\n",
            &[
                ("VOXRELAY__SIP__LISTEN", "127.0.0.1:5080"),
                ("VOXRELAY__SIP__RTP_PORTS", "[30000, 30099]"),
                ("VOXRELAY__AGENTS__DEFAULT", "echo"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.sip.listen.port(), 5080);
        assert_eq!(c.sip.max_calls, 10);
        assert_eq!(c.sip.rtp_ports, [30000, 30099]);
        assert_eq!(c.agents.default, "echo");
    }

    #[test]
    fn a_bad_value_names_its_key_and_value() {
        let e = load_str("[sip]\nlisten = \"nowhere\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sip.listen"), "{e}");
        assert!(e.contains("nowhere"), "{e}");
        let e = load_str("", &[("VOXRELAY__SIP__MAX_CALLS", "lots")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sip.max_calls"), "{e}");
        let e = load_str("[sip]\nrtp_ports = [5000, 4000]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sip.rtp_ports") && e.contains("5000"), "{e}");
        for bad in ["150", "-1", "nan"] {
            let e = load_str(
                &format!("[sip]\noverload_late_ticks_percent = {bad}\n"),
                &[],
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("sip.overload_late_ticks_percent"), "{e}");
        }
        let c = load_str("[sip]\noverload_late_ticks_percent = 0\n", &[]).unwrap();
        assert_eq!(
            c.sip.overload_late_ticks_percent, 0.0,
            "0 turns the guard off"
        );
    }

    #[test]
    fn an_unknown_key_is_an_error() {
        let e = load_str("[sip]\nlisen = \"127.0.0.1:5060\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("lisen"), "{e}");
        let e = load_str("", &[("VOXRELAY__SIPP__LISTEN", "x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sipp"), "{e}");
    }

    #[test]
    fn a_public_admin_address_needs_a_token_which_never_prints() {
        let e = load_str("[admin]\nlisten = \"0.0.0.0:8080\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin.token"), "{e}");
        let c = load_str(
            "[admin]\nlisten = \"0.0.0.0:8080\"\n",
            &[("VOXRELAY__ADMIN__TOKEN", "hunter2-very-secret")],
        )
        .unwrap();
        assert_eq!(
            c.admin.token.as_ref().unwrap().expose(),
            "hunter2-very-secret"
        );
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!c.to_redacted_toml().contains("hunter2"));
        assert!(c.to_redacted_toml().contains("[redacted]"));
    }

    #[test]
    fn a_public_sip_listen_needs_trunks_or_allow_any_source() {
        let token = [("VOXRELAY__SIP__EXTERNAL_IP", "203.0.113.10")];
        let e = load_str("[sip]\nlisten = \"0.0.0.0:5060\"\n", &token)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sip.allow_any_source"), "{e}");
        let c = load_str(
            "[sip]\nlisten = \"0.0.0.0:5060\"\nallow_any_source = true\n",
            &token,
        )
        .unwrap();
        assert!(c.sip.allow_any_source);
        load_str(
            "[sip]\nlisten = \"0.0.0.0:5060\"\n[[trunks]]\nname = \"t\"\naddresses = [\"203.0.113.0/24\"]\n",
            &token,
        )
        .unwrap();
        let e = load_str(
            "[sip]\nallow_any_source = true\n[[trunks]]\nname = \"t\"\naddresses = [\"203.0.113.0/24\"]\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sip.allow_any_source") && e.contains("contradicts"),
            "{e}"
        );
        // Loopback needs neither.
        assert!(!load_str("", &[]).unwrap().sip.allow_any_source);
    }

    #[test]
    fn trunks_and_routes_parse() {
        let c = load_str(
            "[[trunks]]\nname = \"main\"\naddresses = [\"203.0.113.0/24\"]\n[routes]\n\"+15551230000\" = \"receptionist\"\n\"*\" = \"echo\"\n",
            &[("VOXRELAY__SIP__UNKNOWN_SOURCE", "ignore")],
        )
        .unwrap();
        assert_eq!(c.trunks[0].name, "main");
        assert_eq!(c.routes["*"], "echo");
        assert_eq!(c.sip.unknown_source, UnknownSource::Ignore);
        let e = load_str(
            "[[trunks]]\nname = \"t\"\naddresses = [\"300.1.1.1/8\"]\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("trunks"), "{e}");
    }

    #[test]
    fn booking_rules_are_checked_and_database_passwords_hidden() {
        let e = load_str("[booking]\nslot_minutes = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("booking.slot_minutes"), "{e}");
        let c = load_str(
            "[booking]\ndatabase_url = \"postgres://u:hunter2@db/v\"\n",
            &[],
        )
        .unwrap();
        assert!(!c.to_redacted_toml().contains("hunter2"));
    }

    #[test]
    fn tls_keys_are_checked_together_and_the_key_never_prints() {
        let dir = tempfile::tempdir().unwrap();
        let k = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, k.cert.pem()).unwrap();
        std::fs::write(&key, k.signing_key.serialize_pem()).unwrap();
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        fn tls<'a>(c: &'a str, k: &'a str) -> Vec<(&'static str, &'a str)> {
            let mut v = vec![("VOXRELAY__SIP__TLS_LISTEN", "127.0.0.1:5061")];
            if !c.is_empty() {
                v.push(("VOXRELAY__SIP__TLS_CERT", c));
            }
            if !k.is_empty() {
                v.push(("VOXRELAY__SIP__TLS_KEY", k));
            }
            v
        }
        let c = load_str("", &tls(&cert, &key)).unwrap();
        assert_eq!(c.sip.tls_listen.unwrap().port(), 5061);
        let shown = c.to_redacted_toml();
        assert!(shown.contains("tls_listen = \"127.0.0.1:5061\""), "{shown}");
        assert!(shown.contains(&key) && shown.contains(&cert), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");

        let e = load_str("", &tls(&cert, "")).unwrap_err().to_string();
        assert!(e.contains("sip.tls_key"), "{e}");
        let e = load_str("", &tls("", &key)).unwrap_err().to_string();
        assert!(e.contains("sip.tls_cert"), "{e}");
        // the files themselves are read and checked by sip::tls, at start and by check-config
        let files = |env: &[(&str, &str)]| {
            load_str("", env)
                .and_then(|c| crate::sip::tls::TlsFiles::from_config(&c.sip).map(|_| c))
        };
        let e = files(&tls("/nonexistent/cert.pem", &key))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sip.tls_cert") && e.contains("/nonexistent/cert.pem"),
            "{e}"
        );
        let e = files(&tls(&cert, &cert)).unwrap_err().to_string();
        assert!(e.contains("sip.tls_key"), "{e}");
        let e = load_str("", &[("VOXRELAY__SIP__TLS_CERT", cert.as_str())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sip.tls_listen"), "{e}");
        let mut wild = tls(&cert, &key);
        wild[0].1 = "0.0.0.0:5061";
        let e = load_str("", &wild).unwrap_err().to_string();
        assert!(e.contains("sip.external_ip"), "{e}");
        // Without TLS keys, no TLS.
        assert!(load_str("", &[])
            .unwrap()
            .sip
            .tls_paths()
            .unwrap()
            .is_none());
    }

    #[test]
    fn relative_paths_in_the_file_are_relative_to_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("etc");
        std::fs::create_dir(&conf).unwrap();
        let k = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::create_dir(conf.join("tls")).unwrap();
        std::fs::write(conf.join("tls/cert.pem"), k.cert.pem()).unwrap();
        std::fs::write(conf.join("tls/key.pem"), k.signing_key.serialize_pem()).unwrap();
        let p = conf.join("voxrelay.toml");
        std::fs::write(
            &p,
            "[sip]\ntls_listen = \"127.0.0.1:5061\"\ntls_cert = \"tls/cert.pem\"\ntls_key = \"tls/key.pem\"\n\
             [agents]\ndir = \"agents\"\n[sim]\nscenario = \"scenarios/mine.toml\"\n\
             [booking]\ndatabase_url = \"sqlite://data/v.db?mode=rwc\"\n",
        )
        .unwrap();
        // a relative --config path works too: it is taken from the working directory
        let c = Config::load_with_env(Some(&p), env(&[])).unwrap();
        let conf = std::fs::canonicalize(&conf).unwrap();
        assert_eq!(c.agents.dir, Some(conf.join("agents")));
        assert_eq!(
            c.sim.scenario,
            conf.join("scenarios/mine.toml").display().to_string()
        );
        assert_eq!(c.sip.tls_cert, Some(conf.join("tls/cert.pem")));
        assert_eq!(c.sip.tls_key, Some(conf.join("tls/key.pem")));
        assert_eq!(
            c.booking.database_url,
            format!("sqlite://{}?mode=rwc", conf.join("data/v.db").display())
        );
        let shown = c.to_redacted_toml();
        assert!(
            shown.contains(&conf.join("agents").display().to_string()),
            "{shown}"
        );

        // environment overrides stay relative to the working directory, as do defaults
        let c = Config::load_with_env(
            Some(&p),
            env(&[
                ("VOXRELAY__AGENTS__DIR", "my/agents"),
                ("VOXRELAY__BOOKING__DATABASE_URL", "sqlite://here.db"),
                ("VOXRELAY__SIM__SCENARIO", "echo"),
            ]),
        )
        .unwrap();
        assert_eq!(c.agents.dir, Some(PathBuf::from("my/agents")));
        assert_eq!(c.booking.database_url, "sqlite://here.db");
        assert_eq!(
            c.sim.scenario, "echo",
            "a bundled scenario is a name, not a path"
        );
        let c = load_str("", &[]).unwrap();
        assert_eq!(c.booking.database_url, "sqlite://voxrelay.db");
        assert_eq!(c.sim.scenario, "booking");
    }

    #[test]
    fn only_relative_sqlite_files_move() {
        let d = Path::new("/etc/vr");
        for (url, moved) in [
            ("sqlite://v.db", "sqlite:///etc/vr/v.db"),
            ("sqlite:v.db", "sqlite:///etc/vr/v.db"),
            (
                "sqlite://../data/v.db?mode=rwc",
                "sqlite:///etc/vr/../data/v.db?mode=rwc",
            ),
            ("sqlite:///var/lib/v.db", "sqlite:///var/lib/v.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("sqlite://:memory:", "sqlite://:memory:"),
            ("postgres://u@db/v", "postgres://u@db/v"),
        ] {
            assert_eq!(sqlite_relative_to(url, d), moved, "{url}");
        }
    }

    #[test]
    fn errors_never_show_a_database_password_or_a_token() {
        for text in [
            "[booking]\ndatabase_url = \"postgres://u:hunter2@db/v?password=hunter3\"\nbogus = 1\n",
            "[booking]\ndatabase_url = \"postgres://db/v?PASSWORD=hunter3\"\nslot_minutes = \"x\"\n",
        ] {
            let e = load_str(text, &[("VOXRELAY__ADMIN__TOKEN", "hunter4")])
                .unwrap_err()
                .to_string();
            assert!(e.contains("booking"), "{e}");
            assert!(!e.contains("hunter"), "{e}");
        }
        let c = load_str(
            "[booking]\ndatabase_url = \"postgres://db/v?sslmode=disable&Password=hunter3\"\n",
            &[],
        )
        .unwrap();
        assert!(!c.to_redacted_toml().contains("hunter3"));
        assert!(!format!("{c:?}").contains("hunter3"));
    }

    #[test]
    fn a_missing_named_file_is_an_error() {
        let e = Config::load_with_env(Some(Path::new("/nonexistent/v.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/v.toml"), "{e}");
    }

    #[test]
    fn recording_is_off_by_default_and_its_folder_is_relative_to_the_file() {
        let c = load_str("", &[]).unwrap();
        assert!(
            !c.recording.enabled,
            "recording callers needs their consent"
        );
        assert_eq!(c.recording.keep_days, 30);
        assert!(!c.recording.announce);
        assert_eq!(c.recording.max_call_mb, 100);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[recording]\nenabled = true\ndir = \"rec\"\nkeep_days = 7\nannounce = true\nmax_call_mb = 5\n",
        )
        .unwrap();
        let c = Config::load_with_env(Some(&p), env(&[])).unwrap();
        let folder = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(c.recording.dir, folder.join("rec"));
        assert!(c.recording.enabled && c.recording.announce);
        assert_eq!((c.recording.keep_days, c.recording.max_call_mb), (7, 5));
        let c = Config::load_with_env(
            Some(&p),
            env(&[
                ("VOXRELAY__RECORDING__ENABLED", "false"),
                ("VOXRELAY__RECORDING__DIR", "elsewhere"),
            ]),
        )
        .unwrap();
        assert!(!c.recording.enabled);
        assert_eq!(
            c.recording.dir,
            Path::new("elsewhere"),
            "relative to the working folder"
        );
        assert!(
            load_str("[recording]\nrecord = true\n", &[]).is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/voxrelay.toml");
        Config::load_with_env(Some(&p), env(&[])).unwrap();
    }
}
