//! `voxrelay serve`: starts every part, then drains and stops on SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::{self, AdminServer, AdminState, Readiness};
use crate::booking::{Store, SystemClock, Tools};
use crate::bridge::agent::Agents;
use crate::bridge::call_agent::AgentBook;
use crate::bridge::moderation::Moderation;
use crate::bridge::registry::Registry;
use crate::bridge::{Bridge, BridgeSettings, LiveContext};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::openai::Connector;
use crate::secret::Secret;
use crate::sim::{SimConfig, SimHandle, Simulator};
use crate::sip::server::SipSettings;
use crate::sip::trunks::{Routes, Trunks};
use crate::sip::SipServer;

/// How long calls get to send their BYE once told to hang up at shutdown.
const BYE_GRACE: Duration = Duration::from_secs(5);

/// The default `openai.base_url`: with it and no `OPENAI_API_KEY` the simulator stands in.
const OPENAI_BASE: &str = "https://api.openai.com";

/// The running relay.
pub struct Relay {
    /// The SIP endpoint.
    pub sip: SipServer,
    /// Calls, live and recently ended.
    pub registry: Registry,
    /// The relay's metrics.
    pub metrics: Arc<Metrics>,
    /// The booking store, when one is open.
    pub store: Option<Store>,
    /// The in-process realtime simulator (no `OPENAI_API_KEY`).
    pub sim: Option<SimHandle>,
    /// The realtime connector, when agents need one.
    pub connector: Option<Connector>,
    /// The admin HTTP server.
    pub admin: AdminServer,
    hangup_all: CancellationToken,
    drain: Duration,
    /// Deletes old call records (`booking.keep_call_records_days`).
    pruner: Option<tokio::task::JoinHandle<()>>,
    /// Deletes old recordings (`recording.keep_days`).
    recording_sweep: Option<tokio::task::JoinHandle<()>>,
    /// Judges whether the calls' media ticks run late (`sip.overload_late_ticks_percent`).
    overload: Option<tokio::task::JoinHandle<()>>,
    /// This relay's row in the cluster's `relays` table (`cluster.node_id`).
    heartbeat: Option<crate::cluster::Heartbeat>,
    /// Sends the webhook deliveries (what it has not sent is sent after the next start).
    webhook_sender: Option<tokio::task::JoinHandle<()>>,
    /// Places reminder calls (`[reminders]`).
    reminders: Option<tokio::task::JoinHandle<()>>,
}

/// What answers calls: the realtime side, set up from the config.
struct Realtime {
    live: Option<Arc<LiveContext>>,
    sim: Option<SimHandle>,
    connector: Option<Connector>,
    /// Sends the webhook deliveries.
    webhook_sender: Option<tokio::task::JoinHandle<()>>,
}

/// The `[[webhooks]]` (their secrets from the environment, checked when the config was
/// loaded), with `[summary]` through `base_url`; `None` without webhooks or a database.
fn webhooks(
    cfg: &Config,
    tools: Option<&Tools>,
    base_url: &str,
    key: &str,
) -> Option<crate::webhooks::Webhooks> {
    use crate::webhooks::{retry::RetryPolicy, summary::Summarizer, Webhook, Webhooks};
    let store = tools?.store().clone();
    let hooks: Vec<Webhook> = cfg
        .webhooks
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            let secret = w.check(i, |k| std::env::var(k).ok()).ok()?;
            Some(Webhook {
                url: w.url.clone(),
                secret,
                policy: RetryPolicy {
                    first: Duration::from_millis(w.retry_first_ms),
                    cap: Duration::from_millis(w.retry_max_ms),
                    max_attempts: w.max_attempts,
                },
                timeout: Duration::from_millis(w.timeout_ms),
            })
        })
        .collect();
    if hooks.is_empty() {
        return None;
    }
    let summarizer = cfg.summary.enabled.then(|| {
        Summarizer::new(
            reqwest::Client::new(),
            base_url,
            Secret::new(key),
            &cfg.summary.model,
            Duration::from_millis(cfg.summary.timeout_ms),
        )
    });
    info!(
        webhooks = hooks.len(),
        summary = cfg.summary.enabled,
        "call events go to webhooks"
    );
    // in a cluster, the pending deliveries of a relay that is gone are taken over
    Some(Webhooks::with_adoption(
        store,
        hooks,
        summarizer,
        gone_after(cfg),
    ))
}

/// In a cluster, how long a relay goes unseen (three heartbeats) before the others take over
/// its pending work (webhook deliveries, reminder calls); `None` outside a cluster.
fn gone_after(cfg: &Config) -> Option<Duration> {
    cfg.cluster
        .enabled()
        .then(|| Duration::from_secs(cfg.cluster.heartbeat_seconds.max(1) * 3))
}

/// The reminder scheduler's task, when `[reminders]` is on.
fn reminder_scheduler(
    cfg: &Config,
    store: &Store,
    dialer: crate::sip::Dialer,
    registry: &Registry,
    metrics: &Arc<Metrics>,
    known_agent: impl Fn(&str) -> bool,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    use crate::reminders::{scheduler::CallSettings, Plan, Scheduler, SipPlacer};
    let r = &cfg.reminders;
    if !r.enabled {
        return Ok(None);
    }
    let schedule = crate::booking::schedule::Schedule::from_config(&cfg.booking)?;
    let plan = Plan::new(r, schedule.time_zone(), &cfg.booking.hours)?;
    let agent = if r.agent.is_empty() {
        cfg.agents.default.clone()
    } else {
        r.agent.clone()
    };
    if !known_agent(&agent) {
        anyhow::bail!("invalid config: reminders.agent: no agent is named {agent:?}");
    }
    let calls = CallSettings {
        agent: agent.clone(),
        trunk: r.trunk.clone(),
        ring_timeout: Duration::from_millis(r.ring_timeout_ms),
        max_concurrent: r.max_concurrent as usize,
    };
    let placer = Arc::new(SipPlacer {
        dialer,
        registry: registry.clone(),
    });
    info!(
        agent = %agent,
        before_minutes = r.before_minutes,
        max_attempts = r.max_attempts,
        "reminder calls on"
    );
    let scheduler =
        Scheduler::new(store.clone(), plan, schedule, calls, placer).with_metrics(metrics.clone());
    Ok(Some(scheduler.spawn(
        Arc::new(SystemClock),
        Duration::from_millis(r.poll_ms),
        gone_after(cfg),
    )))
}

/// The admin token, as the admin server takes it.
fn admin_token(cfg: &Config) -> Option<Secret> {
    cfg.admin.token.clone()
}

/// Every agent a call can reach: the default and every route's.
fn agents_needed(cfg: &Config) -> Vec<String> {
    let mut names: Vec<String> = std::iter::once(cfg.agents.default.clone())
        .chain(cfg.routes.values().cloned())
        .filter(|n| n != "echo")
        .collect();
    names.sort();
    names.dedup();
    names
}

async fn realtime(
    cfg: &Config,
    settings: &Arc<BridgeSettings>,
    tools: Option<Tools>,
    registry: &Registry,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Realtime> {
    let needed = agents_needed(cfg);
    if needed.is_empty() {
        return Ok(Realtime {
            live: None,
            sim: None,
            connector: None,
            webhook_sender: None,
        });
    }
    // the bundled agents, extended (and replaced by name) by the files of agents.dir
    let dir = cfg.agents.dir.as_deref();
    let from = dir.map_or("bundled".into(), |d| format!("bundled and {}", d.display()));
    let agents =
        Agents::load_with_bundled(dir).map_err(|e| anyhow::anyhow!("agents ({from}): {e}"))?;
    for name in &needed {
        if agents.get(name).is_none() {
            anyhow::bail!(
                "agent {name:?} (agents.default or a route) is not among the agents ({from}): {}",
                agents.names().join(", ")
            );
        }
    }
    let key = std::env::var("OPENAI_API_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty());
    let base = cfg.openai.base_url.trim_end_matches('/');
    let (base_url, key, sim) = match key {
        Some(k) => (base.to_string(), k, None),
        None if base == OPENAI_BASE => {
            let local_key = format!("sk-local-{:032x}", rand::random::<u128>());
            let sim = Simulator::start(SimConfig {
                listen: "127.0.0.1:0".parse()?,
                scenario: cfg.sim.scenario.clone(),
                api_key: Some(Secret::new(local_key.clone())),
            })
            .await?;
            warn!(
                simulator = %sim.base_url(), scenario = %cfg.sim.scenario,
                "no OPENAI_API_KEY: calls go to the offline realtime simulator started in this process"
            );
            (sim.base_url(), local_key, Some(sim))
        }
        None => anyhow::bail!(
            "OPENAI_API_KEY is not set; it is needed for openai.base_url = {base:?} (leave base_url at its default to use the built-in simulator)"
        ),
    };
    let book = AgentBook::new(&agents, &cfg.openai.model)?;
    let phone_book = if settings.backchannel.is_some() {
        book.with_relay_turns()
    } else {
        book.clone()
    };
    // keys minted ahead for the agents a phone call reaches first (handoffs mint their own)
    let pooled = needed
        .iter()
        .filter_map(|n| phone_book.get(n).map(|a| (n.clone(), a.spec.session(None))))
        .collect();
    let connector = Connector::new(
        &base_url,
        Secret::new(key.clone()),
        cfg.openai.transport,
        crate::openai::LegSettings::from(&cfg.openai),
    )?
    .with_key_pool(cfg.openai.key_pool, pooled, Some(metrics.clone()));
    let webhooks = webhooks(cfg, tools.as_ref(), &base_url, &key);
    let webhook_sender = webhooks.as_ref().map(|w| w.spawn_sender());
    let moderation = cfg.openai.moderation.then(|| {
        Arc::new(Moderation::new(
            reqwest::Client::new(),
            &base_url,
            Secret::new(key),
            Duration::from_secs(2),
        ))
    });
    let live = LiveContext {
        connector: connector.clone(),
        agents: book,
        phone_agents: phone_book,
        tools,
        registry: registry.clone(),
        metrics: metrics.clone(),
        settings: settings.clone(),
        moderation,
        webhooks,
        dialer: std::sync::OnceLock::new(),
    };
    Ok(Realtime {
        live: Some(Arc::new(live)),
        sim,
        connector: Some(connector),
        webhook_sender,
    })
}

impl Relay {
    /// Starts the relay from a validated config.
    pub async fn start(cfg: Config) -> anyhow::Result<Self> {
        let hangup_all = CancellationToken::new();
        let b = &cfg.bridge;
        let settings = Arc::new(BridgeSettings {
            max_call: Duration::from_secs(b.max_call_seconds),
            rtp_timeout: match cfg.sip.rtp_timeout_seconds {
                0 => None,
                s => Some(Duration::from_secs(s)),
            },
            answer_delay: Duration::from_millis(b.answer_delay_ms),
            tool_timeout: Duration::from_millis(b.tool_timeout_ms),
            hold_after: Duration::from_millis(b.hold_after_ms),
            dtmf_inter_digit: Duration::from_millis(b.dtmf_inter_digit_ms),
            guardrail_every: b.guardrail_every_chars,
            recording: recording_settings(&cfg),
            echo_gate_margin_db: b.echo_gate.then_some(f32::from(b.echo_gate_margin_db)),
            redact_transcripts: cfg.privacy.redact_transcripts,
            // the detector holds the agent's turns: only when the relay owns them
            amd: (cfg.amd.enabled && b.barge_in_min_speech_ms > 0).then(|| cfg.amd.settings()),
            backchannel: (b.barge_in_min_speech_ms > 0).then(|| {
                crate::bridge::backchannel::Backchannel::new(
                    Duration::from_millis(b.barge_in_min_speech_ms),
                    &b.backchannel_words,
                )
            }),
        });
        let metrics = Metrics::shared();
        let registry = Registry::new();
        admin::check_exposure(cfg.admin.listen, admin_token(&cfg).as_ref())?;
        // the other relays of a cluster reach this one's admin server by cluster.admin_url
        let mut public_hosts = cfg.admin.public_hosts.clone();
        if let Some(host) = cfg
            .cluster
            .admin_url
            .as_deref()
            .and_then(crate::config::admin_url_host)
        {
            public_hosts.push(host.to_string());
        }
        let admin_policy = admin::AccessPolicy::new(&public_hosts, &cfg.admin.cors_origins)?;
        let store = Store::open_config(&cfg.booking)
            .await
            .map_err(|e| anyhow::anyhow!("booking database: {e}"))?
            .for_node(cfg.cluster.node_id.as_deref());
        let cluster = if cfg.cluster.enabled() {
            Some(crate::cluster::Cluster::new(
                &cfg.cluster,
                store.postgres(),
            )?)
        } else {
            None
        };
        let tools = Tools::new(store.clone(), &cfg.booking, Arc::new(SystemClock))?;
        let pruner = crate::booking::retention::spawn(
            store.clone(),
            cfg.booking.keep_call_records_days,
            Arc::new(SystemClock),
        );
        let recording_sweep = crate::bridge::recording_retention::spawn(
            Some(store.clone()),
            settings.recording.dir.clone(),
            cfg.recording.keep_days,
            Arc::new(SystemClock),
        );
        let rt = realtime(&cfg, &settings, Some(tools), &registry, &metrics).await?;
        let session = rt
            .live
            .as_ref()
            .and_then(|l| l.agents.get(&cfg.agents.default))
            .map(|a| a.spec.session(None))
            .unwrap_or_default();
        let minter = rt.connector.as_ref().map(|c| c.minter().clone());
        let agent_book = rt
            .live
            .as_ref()
            .map(|l| l.agents.clone())
            .unwrap_or_default();
        let web = rt.live.as_ref().map(|live| {
            Arc::new(crate::bridge::web_call::WebCalls::new(
                live.clone(),
                &cfg.agents.default,
                hangup_all.clone(),
            ))
        });
        let shared = crate::bridge::Shared {
            registry: registry.clone(),
            metrics: metrics.clone(),
        };
        let live = rt.live.clone();
        let bridge = Arc::new(Bridge::new(settings, shared, rt.live, hangup_all.clone()));
        let trunks = Trunks::new(&cfg.trunks, |k| std::env::var(k).ok())?;
        let settings = SipSettings {
            sip: cfg.sip.clone(),
            trunks,
            routes: Routes::new(&cfg.routes),
            default_agent: cfg.agents.default.clone(),
        };
        let sip = SipServer::start(settings, bridge).await?;
        if let Some(live) = &live {
            // warm transfers call the person through the same SIP side
            let _ = live.dialer.set(sip.dialer());
        }
        let overload = crate::bridge::overload::spawn(
            metrics.clone(),
            sip.overload_flag(),
            cfg.sip.overload_late_ticks_percent,
        );
        let draining = sip.draining_flag();
        let admin = admin::start_with(
            cfg.admin.listen,
            AdminState {
                registry: registry.clone(),
                metrics: metrics.clone(),
                store: Some(store.clone()),
                minter,
                session,
                web,
                token: admin_token(&cfg),
                trunks: sip.registrations().clone(),
                readiness: Arc::new(move || Readiness {
                    sip: true,
                    media: true,
                    draining: draining.load(std::sync::atomic::Ordering::Acquire),
                }),
                agents: agent_book.clone(),
                default_agent: cfg.agents.default.clone(),
                cluster: cluster.clone(),
                dialer: Some(sip.dialer()),
            },
            admin::AdminOptions {
                policy: admin_policy,
                ..Default::default()
            },
        )
        .await?;
        let reminders = reminder_scheduler(&cfg, &store, sip.dialer(), &registry, &metrics, |a| {
            agent_book.get(a).is_some()
        })?;
        let heartbeat = match cluster {
            Some(cluster) => {
                cluster.default_admin_url(admin.local_addr());
                let draining = sip.draining_flag();
                let live = registry.clone();
                let load: crate::cluster::LoadProbe = Arc::new(move || {
                    (
                        live.live_count(),
                        draining.load(std::sync::atomic::Ordering::Acquire),
                    )
                });
                let sip_address =
                    std::net::SocketAddr::new(cfg.sip.advertised_ip(), sip.local_addr().port());
                Some(
                    crate::cluster::spawn_heartbeat(
                        cluster,
                        sip_address.to_string(),
                        cfg.sip.max_calls,
                        load,
                    )
                    .await?,
                )
            }
            None => None,
        };
        info!(
            sip = %sip.local_addr(),
            tls = sip.tls_addr().map(tracing::field::display),
            agent = %cfg.agents.default,
            "voxrelay ready"
        );
        Ok(Self {
            sip,
            registry,
            metrics,
            store: Some(store),
            sim: rt.sim,
            admin,
            connector: rt.connector,
            hangup_all,
            drain: Duration::from_secs(cfg.bridge.drain_seconds),
            pruner,
            recording_sweep,
            overload,
            heartbeat,
            webhook_sender: rt.webhook_sender,
            reminders,
        })
    }

    /// Graceful stop: new INVITEs get 503, live calls may go on for the drain time, then
    /// every call gets BYE and the endpoint closes.
    pub async fn shutdown(self) {
        self.sip.start_draining();
        if let Some(h) = &self.heartbeat {
            // the other relays' views show this one draining at once
            h.beat_now().await;
        }
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
        if let Some(h) = self.heartbeat {
            h.leave().await;
        }
        self.admin.shutdown().await;
        if let Some(sim) = self.sim {
            sim.shutdown().await;
        }
        if let Some(p) = self.pruner {
            p.abort();
        }
        if let Some(p) = self.recording_sweep {
            p.abort();
        }
        if let Some(p) = self.overload {
            p.abort();
        }
        if let Some(p) = self.reminders {
            p.abort();
        }
        if let Some(p) = self.webhook_sender {
            p.abort();
        }
        if let Some(store) = self.store {
            store.close().await;
        }
        info!("stopped");
    }
}

/// The call tasks' view of `[recording]`, with the folder made absolute (the record keeps
/// the file's path), and the recordings a crash left open repaired.
fn recording_settings(cfg: &Config) -> crate::bridge::call_recording::RecordingSettings {
    let r = &cfg.recording;
    let dir = std::path::absolute(&r.dir).unwrap_or_else(|_| r.dir.clone());
    match crate::media::recording::repair_dir(&dir) {
        Ok(fixed) if !fixed.is_empty() => {
            info!(files = fixed.len(), dir = %dir.display(), "recordings left open by a stop were repaired")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "the recordings folder could not be checked")
        }
    }
    crate::bridge::call_recording::RecordingSettings {
        enabled: r.enabled,
        dir,
        max_bytes: u64::from(r.max_call_mb) * 1_000_000,
        announce: r.announce,
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
