//! The `[cluster]` section: a relay's place among several behind one SIP proxy.
//!
//! ```toml
//! [cluster]
//! node_id = "relay-1"                      # unset: this relay is on its own
//! admin_url = "http://10.0.0.11:8080"      # how the other relays reach this one's admin port
//! heartbeat_seconds = 2
//! # secret: set VOXRELAY__CLUSTER__SECRET, the same on every relay (at least 32 characters)
//! ```
//!
//! With `node_id` set the relay writes itself into the shared PostgreSQL database's `relays`
//! table, its admin API shows every relay's live calls, and an operator's control of a call
//! on another relay is forwarded to it, signed with `secret`.

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The shortest cluster secret taken: 32 characters, 192 bits or more from a random source.
pub const SECRET_MIN_CHARS: usize = 32;
/// The longest `node_id`.
pub const NODE_ID_MAX_CHARS: usize = 64;

/// `[cluster]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This relay's name in the cluster (letters, digits, `.`, `_`, `-`); unset: no cluster.
    pub node_id: Option<String>,
    /// The URL the other relays use for this relay's admin server (`http://host:port`); unset:
    /// `http://` and the address the admin server listens on (which must then not be a
    /// wildcard address).
    pub admin_url: Option<String>,
    /// The key the relays sign their requests to each other with; set it from the environment
    /// (`VOXRELAY__CLUSTER__SECRET`), the same on every relay.
    pub secret: Option<Secret>,
    /// How often the relay writes its heartbeat; a relay not heard from for three heartbeats
    /// is left out of the cluster's view.
    pub heartbeat_seconds: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            admin_url: None,
            secret: None,
            heartbeat_seconds: 2,
        }
    }
}

/// What is wrong with a `[cluster]` section: the key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterError {
    /// The key at fault.
    pub key: &'static str,
    /// Why.
    pub reason: String,
}

impl ClusterConfig {
    /// Whether this relay is part of a cluster.
    pub fn enabled(&self) -> bool {
        self.node_id.is_some()
    }

    /// Checks the section against the database URL and the admin address.
    pub fn validate(
        &self,
        database_url: &str,
        admin_listen: std::net::SocketAddr,
    ) -> Result<(), ClusterError> {
        let err = |key, reason: &str| {
            Err(ClusterError {
                key,
                reason: reason.to_string(),
            })
        };
        let Some(id) = &self.node_id else {
            if self.admin_url.is_some() || self.secret.is_some() {
                return err(
                    "cluster.node_id",
                    "unset, but other [cluster] keys are set: name this relay or remove them",
                );
            }
            return Ok(());
        };
        if !valid_node_id(id) {
            return err(
                "cluster.node_id",
                "must be 1 to 64 letters, digits, '.', '_' or '-'",
            );
        }
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return err(
                "booking.database_url",
                "a cluster shares one PostgreSQL database (postgres://…); SQLite is one machine's",
            );
        }
        match &self.secret {
            None => {
                return err(
                    "cluster.secret",
                    "required with cluster.node_id: set VOXRELAY__CLUSTER__SECRET, the same on every relay",
                )
            }
            Some(s) if s.expose().chars().count() < SECRET_MIN_CHARS => {
                return err(
                    "cluster.secret",
                    "shorter than 32 characters: use a long random value (openssl rand -hex 32)",
                )
            }
            Some(_) => {}
        }
        if !(1..=60).contains(&self.heartbeat_seconds) {
            return err("cluster.heartbeat_seconds", "must be 1..=60");
        }
        match &self.admin_url {
            Some(u) if admin_url_host(u).is_none() => {
                return err(
                    "cluster.admin_url",
                    "must be http:// or https://, a host and an optional port, no path",
                );
            }
            Some(_) => {}
            None if admin_listen.ip().is_unspecified() => {
                return err(
                    "cluster.admin_url",
                    "required when admin.listen is a wildcard address: the other relays need an address to reach",
                )
            }
            None => {}
        }
        Ok(())
    }
}

/// A node id: 1 to [`NODE_ID_MAX_CHARS`] of `[A-Za-z0-9._-]`.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= NODE_ID_MAX_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The `host[:port]` of an admin URL (`http(s)://host[:port]` with at most a trailing `/`), or
/// `None` when it is not one.
pub fn admin_url_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let host = rest.strip_suffix('/').unwrap_or(rest);
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: &str = "postgres://voxrelay@127.0.0.1/voxrelay";

    fn on(node: &str) -> ClusterConfig {
        ClusterConfig {
            node_id: Some(node.into()),
            secret: Some(Secret::new("x".repeat(32))),
            ..Default::default()
        }
    }

    fn lo() -> std::net::SocketAddr {
        "127.0.0.1:8080".parse().unwrap()
    }

    #[test]
    fn off_by_default_and_keys_without_a_node_id_are_refused() {
        let c = ClusterConfig::default();
        assert!(!c.enabled());
        assert!(c.validate("sqlite://x.db", lo()).is_ok());
        let stray = ClusterConfig {
            secret: Some(Secret::new("x".repeat(40))),
            ..Default::default()
        };
        assert_eq!(stray.validate(PG, lo()).unwrap_err().key, "cluster.node_id");
    }

    #[test]
    fn a_cluster_needs_postgres_a_long_secret_and_a_reachable_admin_url() {
        assert!(on("relay-1").validate(PG, lo()).is_ok());
        assert_eq!(
            on("relay-1")
                .validate("sqlite://x.db", lo())
                .unwrap_err()
                .key,
            "booking.database_url"
        );
        let mut c = on("relay-1");
        c.secret = None;
        assert_eq!(c.validate(PG, lo()).unwrap_err().key, "cluster.secret");
        c.secret = Some(Secret::new("short"));
        let e = c.validate(PG, lo()).unwrap_err();
        assert_eq!(e.key, "cluster.secret");
        assert!(!e.reason.contains("short\""), "the secret is not echoed");
        let any: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(
            on("relay-1").validate(PG, any).unwrap_err().key,
            "cluster.admin_url"
        );
        let mut c = on("relay-1");
        c.admin_url = Some("http://relay-1:8080".into());
        assert!(c.validate(PG, any).is_ok());
        c.admin_url = Some("http://relay-1:8080/admin?x=1".into());
        assert_eq!(c.validate(PG, any).unwrap_err().key, "cluster.admin_url");
        c.admin_url = Some("ftp://relay-1".into());
        assert_eq!(c.validate(PG, any).unwrap_err().key, "cluster.admin_url");
    }

    #[test]
    fn node_ids_are_short_plain_names() {
        assert!(valid_node_id("relay-1"));
        assert!(valid_node_id("eu.west_2"));
        for bad in ["", "relay 1", "relay/1", "réłay", &"r".repeat(65)] {
            assert!(!valid_node_id(bad), "{bad:?}");
            assert_eq!(
                on(bad).validate(PG, lo()).unwrap_err().key,
                "cluster.node_id"
            );
        }
    }

    #[test]
    fn the_admin_url_host_is_what_peers_send_as_host() {
        assert_eq!(
            admin_url_host("http://10.0.0.5:8080"),
            Some("10.0.0.5:8080")
        );
        assert_eq!(admin_url_host("https://relay-2/"), Some("relay-2"));
        assert_eq!(admin_url_host("http://[::1]:8080"), Some("[::1]:8080"));
        assert_eq!(admin_url_host("http://"), None);
        assert_eq!(admin_url_host("http://a/b"), None);
        assert_eq!(admin_url_host("http://a@b"), None);
    }
}
