//! Registration of the relay to its trunks' registrars (digest auth, refresh before expiry,
//! backoff on failure), with each trunk's state kept for the admin API and metrics.

use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::registration::{RefreshOutcome, Registration};
use rsipstack::transaction::endpoint::EndpointInnerRef;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::trunks::Trunks;

/// One trunk's registration as last seen.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RegistrationState {
    /// Whether the last attempt succeeded.
    pub registered: bool,
    /// The registrar's last status code (0: no answer).
    pub last_status: u16,
    /// Attempts that failed in a row.
    pub failures: u32,
    /// Successful registrations and refreshes so far.
    pub successes: u64,
    /// When the state last changed, seconds since the epoch.
    pub since: u64,
}

/// Registration states by trunk name.
pub type RegistrationStates = Arc<DashMap<String, RegistrationState>>;

/// Starts one keep-alive task per trunk with a registrar; they stop with `token`.
pub fn start(
    endpoint: EndpointInnerRef,
    trunks: &Trunks,
    contact_host: String,
    token: CancellationToken,
) -> RegistrationStates {
    let states: RegistrationStates = Arc::new(DashMap::new());
    for t in trunks.all() {
        let (Some(registrar), Some(user), Some(pass)) = (
            t.cfg.registrar.clone(),
            t.cfg.username.clone(),
            t.password.clone(),
        ) else {
            continue;
        };
        let uri = match rsipstack::sip::Uri::try_from(registrar.as_str()) {
            Ok(u) => u,
            Err(e) => {
                warn!(trunk = %t.cfg.name, error = %e, "registrar URI not usable");
                continue;
            }
        };
        let name = t.cfg.name.clone();
        let expires = t.cfg.expires;
        let proxy = t.cfg.outbound_proxy.as_deref().and_then(|p| p.parse().ok());
        let states = states.clone();
        let endpoint = endpoint.clone();
        let token = token.child_token();
        let contact_host = contact_host.clone();
        states.insert(
            name.clone(),
            RegistrationState {
                registered: false,
                last_status: 0,
                failures: 0,
                successes: 0,
                since: now(),
            },
        );
        tokio::spawn(async move {
            let cred = Credential {
                username: user.clone(),
                password: pass.expose().to_string(),
                realm: None,
                auth_username: None,
            };
            let mut reg = Registration::new(endpoint, Some(cred));
            reg.outbound_proxy = proxy;
            if let Ok(c) =
                rsipstack::sip::Uri::try_from(format!("sip:{user}@{contact_host}").as_str())
            {
                reg.contact = Some(rsipstack::sip::typed::Contact {
                    display_name: None,
                    uri: c,
                    params: vec![],
                });
            }
            reg.keep_alive(uri, expires, token, |outcome| {
                let mut s = states.get(&name).map(|s| s.clone()).unwrap_or(RegistrationState {
                    registered: false,
                    last_status: 0,
                    failures: 0,
                    successes: 0,
                    since: now(),
                });
                let was = s.registered;
                match outcome {
                    RefreshOutcome::Registered(resp) => {
                        s.registered = true;
                        s.failures = 0;
                        s.successes += 1;
                        s.last_status = resp.status_code.code();
                        if !was {
                            s.since = now();
                            info!(trunk = %name, "trunk registered");
                        }
                    }
                    RefreshOutcome::Rejected(resp) => {
                        s.registered = false;
                        s.failures += 1;
                        s.last_status = resp.status_code.code();
                        warn!(trunk = %name, status = s.last_status, failures = s.failures, "trunk registration refused");
                    }
                    RefreshOutcome::Failed(e) => {
                        s.registered = false;
                        s.failures += 1;
                        s.last_status = 0;
                        warn!(trunk = %name, error = %e, failures = s.failures, "trunk registration failed");
                    }
                }
                if was != s.registered {
                    s.since = now();
                }
                states.insert(name.clone(), s);
            })
            .await;
        });
    }
    states
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
