//! The SIP sections of the config: `[sip.limits]`, `[sip.streams]` and `[[trunks]]`, as
//! plain data with their checks. `sip` turns them into rate limiters, stream tables and trunks.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// `[sip.limits]`: sustained rates per source address, with bursts of twice the rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Datagrams per second from one address that is not a trunk's (dropped unparsed beyond).
    pub packets_per_second: u32,
    /// New INVITEs per second from one address.
    pub invites_per_second: u32,
    /// REGISTERs per second from one address.
    pub registers_per_second: u32,
    /// OPTIONS per second from one address.
    pub options_per_second: u32,
    /// In-dialog requests per second from one address that is not a trunk's.
    pub in_dialog_per_second: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            packets_per_second: 300,
            invites_per_second: 30,
            registers_per_second: 5,
            options_per_second: 10,
            in_dialog_per_second: 20,
        }
    }
}

/// `[sip.streams]`: bounds on SIP connections over TCP and TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamsConfig {
    /// Seconds without a SIP message after which a connection from a source that is not a
    /// trunk is closed (0: never). A trunk's connection may stay quiet for a whole call.
    pub idle_seconds: f64,
    /// Seconds a TLS client has to finish its handshake.
    pub tls_handshake_seconds: f64,
    /// Connections open at once from one source address (an IPv6 /64 counts as one) that is
    /// not a trunk; past it new ones are closed at once.
    pub max_per_source: usize,
    /// Connections open at once from all sources that are not trunks.
    pub max_total: usize,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            // Kamailio's tcp_connection_lifetime; SIP over TCP from a phone re-registers or
            // sends keep-alive requests well within it.
            idle_seconds: 120.0,
            // A handshake takes a few round trips; 10 s covers a slow link.
            tls_handshake_seconds: 10.0,
            // A PBX or an office behind one NAT address opens a few; a flood opens thousands.
            max_per_source: 32,
            // Far below a usual 64k descriptor limit, far above sip.max_calls' needs.
            max_total: 4096,
        }
    }
}

impl StreamsConfig {
    /// Checks the values; the error names the key and the value.
    pub fn validate(&self) -> Result<(), String> {
        let ok = |v: f64| v.is_finite() && (0.0..1e9).contains(&v);
        if !ok(self.idle_seconds) {
            return Err(format!(
                "sip.streams.idle_seconds = {}: must be a number of seconds (0: never)",
                self.idle_seconds
            ));
        }
        if !ok(self.tls_handshake_seconds) || self.tls_handshake_seconds == 0.0 {
            return Err(format!(
                "sip.streams.tls_handshake_seconds = {}: must be more than 0",
                self.tls_handshake_seconds
            ));
        }
        for (key, v) in [
            ("sip.streams.max_per_source", self.max_per_source),
            ("sip.streams.max_total", self.max_total),
        ] {
            if v == 0 {
                return Err(format!("{key} = 0: must be at least 1"));
            }
        }
        Ok(())
    }
}

/// One `[[trunks]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// A name for logs, metrics and the admin API.
    pub name: String,
    /// Addresses or CIDRs the trunk's requests come from.
    #[serde(default)]
    pub addresses: Vec<IpNet>,
    /// Register to this registrar (`sip:host[:port]`), if set.
    #[serde(default)]
    pub registrar: Option<String>,
    /// Digest user name for registration and for inbound authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// The environment variable that holds the password (never the password itself).
    #[serde(default)]
    pub password_env: Option<String>,
    /// Registration expiry asked for, in seconds.
    #[serde(default = "default_expires")]
    pub expires: u32,
    /// Send registrations through this proxy (`host:port`).
    #[serde(default)]
    pub outbound_proxy: Option<String>,
    /// Require digest authentication (username/password above) of this trunk's INVITEs.
    #[serde(default)]
    pub inbound_auth: bool,
    /// Take the caller's number from this trunk's `P-Asserted-Identity` / `From`: the booking
    /// tools then show and cancel only that number's bookings. `false` for a trunk that passes
    /// on whatever number its callers claim.
    #[serde(default = "default_trust_caller_id")]
    pub trust_caller_id: bool,
}

fn default_trust_caller_id() -> bool {
    true
}

fn default_expires() -> u32 {
    300
}

/// What to do with a request from an address no trunk lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnknownSource {
    /// Answer 403 Forbidden.
    #[default]
    Reject,
    /// Drop it without an answer (scanners learn nothing).
    Ignore,
}

/// A problem with the trunks section, naming the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid config: {key}: {reason}")]
pub struct TrunkError {
    /// e.g. `trunks[0].password_env`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl TrunkConfig {
    /// Checks the entry (at `index` in `[[trunks]]`) and reads its password with `env` (the
    /// process environment in the relay).
    pub fn check(
        &self,
        index: usize,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Secret>, TrunkError> {
        let c = self;
        let key = |k: &str| format!("trunks[{index}].{k}");
        if c.name.trim().is_empty() {
            return Err(TrunkError {
                key: key("name"),
                reason: "must not be empty".into(),
            });
        }
        let password = match &c.password_env {
            Some(var) => match env(var) {
                Some(p) if !p.is_empty() => Some(Secret::new(p)),
                _ => {
                    return Err(TrunkError {
                        key: key("password_env"),
                        reason: format!("environment variable {var} is not set"),
                    })
                }
            },
            None => None,
        };
        let needs_creds = c.registrar.is_some() || c.inbound_auth;
        if needs_creds && (c.username.is_none() || password.is_none()) {
            return Err(TrunkError {
                key: key("username"),
                reason: "registration and inbound_auth need username and password_env".into(),
            });
        }
        if c.addresses.is_empty() && c.registrar.is_none() {
            return Err(TrunkError {
                key: key("addresses"),
                reason: "a trunk needs the addresses its calls come from".into(),
            });
        }
        if let Some(r) = &c.registrar {
            if !(r.starts_with("sip:") || r.starts_with("sips:")) {
                return Err(TrunkError {
                    key: key("registrar"),
                    reason: format!("{r:?} is not a sip: URI"),
                });
            }
        }
        if !(60..=86_400).contains(&c.expires) {
            return Err(TrunkError {
                key: key("expires"),
                reason: "must be 60 to 86400 seconds".into(),
            });
        }
        Ok(password)
    }
}
