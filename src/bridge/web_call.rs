//! Browser calls: the `/talk` page (or any browser app of the operator's) talks to an agent
//! over WebRTC straight to the realtime service, with an ephemeral key the relay minted for
//! that agent; then it tells the relay its call id, and the relay attaches over the
//! sideband (the server key) and runs the call as it runs a phone call: the agent's
//! greeting, its tools against the database, guardrails, handoffs, moderation, the
//! transcript, the operator's controls and the stored record (kind `web`). The browser
//! never holds a tool, the database or the server key.
//!
//! [`WebCalls`] mints the keys and remembers which agent each was for ([`WebKeys`]); the
//! attach must present the key, so the agent of a browser's call is the one its key was
//! minted for, never one the browser names. The call's task is the same loop as a phone
//! call's around the same [`CallCore`], without the phone.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use super::call_agent::CallAgent;
use super::call_core::{CallCore, CoreParts, Ended};
use super::call_record;
use super::registry::CallDetail;
use super::session_io::{SessionIo, TaskOutput};
use super::web_keys::WebKeys;
use super::web_recording::{Awaiting, Refusal};
use super::{BridgeSettings, LiveContext};
use crate::booking::CallKind;
use crate::media::g711::Law;
use crate::openai::sideband::valid_call_id;
use crate::openai::{EphemeralKey, LegError, MintError, RealtimeLeg};
use crate::sip::sdp::Direction;

/// Browser calls at once, at most: each is a realtime session the relay's key pays for.
pub const MAX_WEB_CALLS: usize = 32;
/// An upload that arrives while its call is still ending waits this long for the call's
/// record to be stored (the page uploads as soon as its side hung up; the relay's side
/// follows within moments, or after draining tools).
const END_WAIT: Duration = Duration::from_secs(15);

/// Why a key was not minted or a call not attached.
#[derive(Debug, thiserror::Error)]
pub enum WebCallError {
    /// No agent has that name.
    #[error("no agent is named {0:?}")]
    NoSuchAgent(String),
    /// Minting the key failed (its message never holds a key).
    #[error("minting the ephemeral key: {0}")]
    Mint(#[from] MintError),
    /// The key presented was not minted here for a browser call, or it expired.
    #[error("the key was not minted by this relay for a browser call, or it expired")]
    UnknownKey,
    /// The call id cannot be one.
    #[error("not a realtime call id")]
    BadCallId,
    /// The relay is already attached to that call.
    #[error("the relay is already attached to this call")]
    AlreadyAttached,
    /// [`MAX_WEB_CALLS`] browser calls run.
    #[error("too many browser calls at once ({MAX_WEB_CALLS})")]
    Full,
    /// The realtime service refused the sideband (no such call, or it ended).
    #[error("the realtime service has no such call ({status})")]
    NoSuchCall {
        /// The service's HTTP status.
        status: u16,
    },
    /// Attaching failed otherwise.
    #[error("attaching to the call: {0}")]
    Attach(LegError),
}

/// Mints browser keys and runs browser calls.
#[derive(Debug)]
pub struct WebCalls {
    live: Arc<LiveContext>,
    default_agent: String,
    stop: CancellationToken,
    keys: Mutex<WebKeys>,
    /// Service call ids the relay is attached to now.
    attached: Arc<Mutex<HashSet<String>>>,
    /// Recorded calls awaiting the page's recording.
    recordings: Arc<Recordings>,
}

/// A browser call the relay attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The relay's id of the call.
    pub id: String,
    /// The relay decided to record it: the page records it and uploads the recording.
    pub record: bool,
}

/// The recorded browser calls whose recording is awaited, and a signal raised each time one
/// ends (an upload that came early waits on it).
#[derive(Debug)]
struct Recordings {
    awaiting: Mutex<Awaiting>,
    ended: tokio::sync::watch::Sender<u64>,
}

impl Recordings {
    fn ended(&self, id: &str) {
        lock(&self.awaiting).ended(id, std::time::Instant::now());
        self.ended.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// An upload of a browser call's recording that was let in; dropping it without
/// [`UploadTicket::done`] lets the call await its recording again.
#[derive(Debug)]
pub struct UploadTicket {
    recordings: Arc<Recordings>,
    id: String,
    done: bool,
}

impl UploadTicket {
    /// The recording is stored: no other upload for this call is taken.
    pub fn done(mut self) {
        self.done = true;
        lock(&self.recordings.awaiting).finish(&self.id, true);
    }
}

impl Drop for UploadTicket {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.recordings.awaiting).finish(&self.id, false);
        }
    }
}

impl WebCalls {
    /// Browser calls on `live`'s agents, ended when `stop` is cancelled.
    pub fn new(live: Arc<LiveContext>, default_agent: &str, stop: CancellationToken) -> Self {
        Self {
            live,
            default_agent: default_agent.to_string(),
            stop,
            keys: Mutex::new(WebKeys::new()),
            attached: Arc::new(Mutex::new(HashSet::new())),
            recordings: Arc::new(Recordings {
                awaiting: Mutex::new(Awaiting::new()),
                ended: tokio::sync::watch::channel(0).0,
            }),
        }
    }

    /// The recording settings browser calls follow (those of phone calls).
    pub fn recording_settings(&self) -> &super::call_recording::RecordingSettings {
        &self.live.settings.recording
    }

    /// Whether the relay decided to record browser call `id` (and still awaits or took its
    /// recording).
    pub fn records(&self, id: &str) -> bool {
        lock(&self.recordings.awaiting).records(id)
    }

    /// Lets in the upload of call `id`'s recording: only for a browser call the relay
    /// decided to record, once, within [`super::web_recording::UPLOAD_WINDOW`] of its end. An
    /// upload that arrives while the call is still ending waits (bounded) for its end.
    pub async fn begin_upload(&self, id: &str) -> Result<UploadTicket, Refusal> {
        let mut ended = self.recordings.ended.subscribe();
        let deadline = Instant::now() + END_WAIT;
        loop {
            // marked seen before looking, so an end between the look and the wait wakes it
            ended.borrow_and_update();
            match lock(&self.recordings.awaiting).begin(id, std::time::Instant::now()) {
                Ok(()) => {
                    return Ok(UploadTicket {
                        recordings: self.recordings.clone(),
                        id: id.to_string(),
                        done: false,
                    })
                }
                Err(Refusal::Live) => {}
                Err(e) => return Err(e),
            }
            match tokio::time::timeout_at(deadline, ended.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(Refusal::Live),
            }
        }
    }

    /// Mints an ephemeral key whose session is `agent`'s (the default agent when `None`),
    /// and remembers it for [`WebCalls::attach`].
    pub async fn mint(&self, agent: Option<&str>) -> Result<EphemeralKey, WebCallError> {
        let name = agent.unwrap_or(&self.default_agent);
        let agent = self
            .live
            .agents
            .get(name)
            .ok_or_else(|| WebCallError::NoSuchAgent(name.to_string()))?;
        let key = self
            .live
            .connector
            .minter()
            .mint(&agent.spec.session(None))
            .await?;
        lock(&self.keys).remember(unix_now(), key.value.clone(), &agent.name, key.expires_at);
        Ok(key)
    }

    /// Attaches to the browser's call `call_id`, opened with `client_secret` (a key minted
    /// here), and runs it with that key's agent. Returns the relay's id of the call once
    /// the session is configured and the greeting asked for.
    pub async fn attach(
        &self,
        call_id: &str,
        client_secret: &str,
    ) -> Result<Attached, WebCallError> {
        if !valid_call_id(call_id) {
            return Err(WebCallError::BadCallId);
        }
        let name = lock(&self.keys)
            .agent_for(unix_now(), client_secret)
            .map(str::to_string)
            .ok_or(WebCallError::UnknownKey)?;
        let agent = self
            .live
            .agents
            .get(&name)
            .ok_or(WebCallError::NoSuchAgent(name))?;
        let claim = Claim::take(&self.attached, call_id)?;
        let started = Instant::now();
        let leg = self
            .live
            .connector
            .attach(&agent.spec, call_id)
            .await
            .map_err(|e| match e {
                LegError::Refused { status, .. } if status == 400 || status == 404 => {
                    WebCallError::NoSuchCall { status }
                }
                e => WebCallError::Attach(e),
            })?;
        let id = format!("web-{:016x}", rand::random::<u64>());
        // decided as for a phone call: the agent's `record`, else `recording.enabled`
        let record = self.live.settings.recording.records(agent.record);
        if record {
            lock(&self.recordings.awaiting).expect(&id, std::time::Instant::now());
        }
        let call = WebCall {
            id: id.clone(),
            service_call_id: call_id.to_string(),
            agent,
            leg,
            setup: started.elapsed(),
            claim,
        };
        let (live, stop) = (self.live.clone(), self.stop.child_token());
        let span = info_span!("call", id = %id);
        let recordings = self.recordings.clone();
        let ended_id = id.clone();
        tokio::spawn(
            async move {
                run(call, live, stop).await;
                // the record is stored: an upload may now name the recording in it
                recordings.ended(&ended_id);
            }
            .instrument(span),
        );
        Ok(Attached { id, record })
    }
}

/// A service call id the relay is attached to; let go when the call's task ends.
struct Claim {
    set: Arc<Mutex<HashSet<String>>>,
    call_id: String,
}

impl Claim {
    fn take(set: &Arc<Mutex<HashSet<String>>>, call_id: &str) -> Result<Self, WebCallError> {
        let mut held = lock(set);
        if held.contains(call_id) {
            return Err(WebCallError::AlreadyAttached);
        }
        if held.len() >= MAX_WEB_CALLS {
            return Err(WebCallError::Full);
        }
        held.insert(call_id.to_string());
        Ok(Self {
            set: set.clone(),
            call_id: call_id.to_string(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.set).remove(&self.call_id);
    }
}

/// A browser's call, attached.
struct WebCall {
    id: String,
    service_call_id: String,
    agent: Arc<CallAgent>,
    leg: Box<dyn RealtimeLeg>,
    setup: Duration,
    claim: Claim,
}

/// Runs a browser's call to its end: the loop of a phone call without the phone.
async fn run(call: WebCall, live: Arc<LiveContext>, stop: CancellationToken) {
    let t0 = Instant::now();
    let WebCall {
        id,
        service_call_id,
        agent,
        leg,
        setup,
        claim: _claim,
    } = call;
    info!(kind = "web", agent = %agent.name, service_call = %service_call_id, "call started");
    let mut detail = CallDetail::new(&id, "browser", &service_call_id, &agent.name, None);
    detail.kind = CallKind::Web;
    detail.transport = "webrtc".into();
    let (registry, metrics) = (live.registry.clone(), live.metrics.clone());
    let (publisher, mut controls) = registry.register(detail);
    metrics.calls_active.inc();
    let settings: Arc<BridgeSettings> = live.settings.clone();
    let mut core = CallCore::new(CoreParts {
        agent: Some(agent),
        agents: live.agents.clone(),
        settings: settings.clone(),
        publisher,
        metrics: metrics.clone(),
        // no phone media: these are unused
        codec: Law::Mu,
        payload_type: 0,
        dtmf_payload_type: None,
        direction: Direction::Inactive,
        moderation: live.moderation.is_some(),
        kind: CallKind::Web,
        outbound: None,
    });
    let session_id = leg.session_id().map(str::to_string);
    core.handle_answered(t0.elapsed(), setup, Ok(session_id));
    // whom the booking tools act for: a browser proves no phone number
    let caller = live
        .tools
        .as_ref()
        .map(|t| t.caller(None))
        .unwrap_or_default();
    let mut io = SessionIo::new(Some(live.clone()), caller);
    io.leg = Some(leg);
    let mut controls_open = true;
    let end = loop {
        if let Some(end) = drain(&mut core, &mut io, t0).await {
            break end;
        }
        let deadline = core.poll_timeout().map(|d| t0 + d);
        let leg = io.leg.as_mut();
        let has_leg = leg.is_some();
        tokio::select! {
            ev = async { leg.expect("guarded").recv().await }, if has_leg => {
                core.handle_leg(t0.elapsed(), ev);
            }
            Some(done) = io.tools.join_next(), if !io.tools.is_empty() => match done {
                Ok(done) => core.handle_tool_done(t0.elapsed(), done),
                Err(e) => warn!(error = %e, "a tool task failed"),
            },
            Some(r) = io.checks.join_next(), if !io.checks.is_empty() => {
                if let Ok(r) = r {
                    core.handle_moderation(t0.elapsed(), r);
                }
            }
            c = controls.recv(), if controls_open => match c {
                Some(c) => core.handle_control(t0.elapsed(), c),
                None => controls_open = false,
            },
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                core.handle_timeout(t0.elapsed());
            }
            _ = stop.cancelled() => core.handle_shutdown(),
        }
    };
    // the relay's end of the call ends the browser's (hang-up at the service); the
    // browser's own end already closed it
    io.close_leg().await;
    io.finish_tools(&mut core, t0).await;
    let seconds = t0.elapsed().as_secs_f32();
    let p = core.into_publisher();
    let redact = live.settings.redact_transcripts;
    let webhooks = live.webhooks.as_ref();
    call_record::finish(
        &metrics,
        live.tools.as_ref(),
        p,
        &end.reason,
        redact,
        webhooks,
    )
    .await;
    info!(kind = "web", reason = %end.reason, seconds, "call ended");
}

/// Carries out what the core asked for, in order; the call's end when it is over.
async fn drain(core: &mut CallCore, io: &mut SessionIo, t0: Instant) -> Option<Ended> {
    while let Some(out) = core.poll_output() {
        let tool_timeout = core.settings().tool_timeout;
        let Some(rest) = io.carry_out(out, tool_timeout).await else {
            continue;
        };
        match rest {
            TaskOutput::OpenLeg => core.handle_leg_opened(
                t0.elapsed(),
                Err("a browser's call cannot move to a new session".into()),
            ),
            TaskOutput::Refer(_) => core.handle_refer_answer(
                t0.elapsed(),
                Err("a browser's call cannot be transferred to a phone".into()),
            ),
            // the core refuses a warm transfer on a browser's call
            TaskOutput::CallPerson { .. } | TaskOutput::DropPerson => {}
            TaskOutput::End(end) => return Some(end),
        }
    }
    None
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
