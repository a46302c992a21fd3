//! The simulator's shared state: minted keys, live calls, session records and fault counters,
//! which the HTTP handlers and the session tasks use. A leaf: it imports no module that uses it.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::RTCPeerConnectionState;

use super::keys::KeyBook;
use super::record::SessionRecord;
use super::scenario::{HttpFault, Scenario};
use super::voice::FRAME;
use crate::secret::Secret;

/// Session records kept for `/sim/sessions`; the oldest closed ones go first beyond this.
const MAX_RECORDS: usize = 10_000;

/// State shared by the HTTP handlers and the session tasks.
pub(crate) struct State {
    pub scenario: Arc<Scenario>,
    pub api_key: Option<Secret>,
    /// Minted ephemeral keys (expired ones forgotten at the next mint, at most `MAX_KEYS`).
    pub keys: Mutex<KeyBook>,
    pub records: DashMap<String, Arc<SessionRecord>>,
    /// Woken whenever a record changes (tests wait on it instead of polling).
    pub records_changed: Arc<tokio::sync::Notify>,
    record_order: Mutex<VecDeque<String>>,
    pub calls: DashMap<String, mpsc::Sender<RtcInput>>,
    mint_faults: AtomicU32,
    calls_faults: AtomicU32,
    pub shutdown: CancellationToken,
    pub media_ip: IpAddr,
    /// Seconds added to the wall clock when checking key expiry (tests move it forward).
    pub key_clock_offset: AtomicI64,
    /// Ephemeral keys minted since start (`keys_minted` in `/sim/sessions`).
    pub keys_minted: std::sync::atomic::AtomicU64,
}

impl State {
    pub fn new(scenario: Arc<Scenario>, api_key: Option<Secret>, listen: SocketAddr) -> Self {
        let media_ip = if listen.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            listen.ip()
        };
        Self {
            scenario,
            api_key,
            keys: Mutex::new(KeyBook::default()),
            records: DashMap::new(),
            records_changed: Arc::new(tokio::sync::Notify::new()),
            record_order: Mutex::new(VecDeque::new()),
            calls: DashMap::new(),
            mint_faults: AtomicU32::new(0),
            calls_faults: AtomicU32::new(0),
            shutdown: CancellationToken::new(),
            media_ip,
            key_clock_offset: AtomicI64::new(0),
            keys_minted: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The minted keys, locked (a poisoned lock still holds a consistent book).
    pub fn keys(&self) -> std::sync::MutexGuard<'_, KeyBook> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Unix seconds on the key clock (wall clock plus the test offset).
    pub fn key_now(&self) -> i64 {
        unix_now() + self.key_clock_offset.load(Ordering::Relaxed)
    }

    /// Keeps a session's record for `/sim/sessions`, dropping the oldest closed ones past the cap.
    pub fn add_record(&self, id: &str, record: Arc<SessionRecord>) {
        record.notify(self.records_changed.clone());
        self.records.insert(id.to_string(), record);
        let mut order = self.record_order.lock().unwrap_or_else(|p| p.into_inner());
        order.push_back(id.to_string());
        while order.len() > MAX_RECORDS {
            let Some(old) = order.pop_front() else { break };
            self.records.remove(&old);
        }
    }

    /// The record ids, oldest first.
    pub fn record_ids(&self) -> Vec<String> {
        self.record_order
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Whether this request to `client_secrets` (`mint`) or `/calls` is to be faulted.
    pub fn fault_for(&self, which: Endpoint) -> Option<HttpFault> {
        let (fault, counter) = match which {
            Endpoint::Mint => (&self.scenario.faults.mint, &self.mint_faults),
            Endpoint::Calls => (&self.scenario.faults.calls, &self.calls_faults),
        };
        let fault = fault.as_ref()?;
        let n = counter.fetch_add(1, Ordering::Relaxed);
        match fault.times {
            Some(times) if times > 0 && n >= times => None,
            _ => Some(fault.clone()),
        }
    }
}

/// Which endpoint a fault applies to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint {
    Mint,
    Calls,
}

/// What reaches a call's task.
// Audio frames travel by value so that no packet allocates.
#[allow(clippy::large_enum_variant)]
pub(crate) enum RtcInput {
    /// The client's data channel opened.
    DcOpen(Arc<dyn DataChannel>),
    /// A text message on it.
    DcMessage(String),
    /// It closed.
    DcClosed,
    /// 20 ms (or less) of caller audio at 24 kHz.
    Audio([i16; FRAME], usize),
    /// The peer connection's state changed.
    PcState(RTCPeerConnectionState),
    /// `POST …/hangup` (told once the session is recorded closed, so that whoever waits for
    /// the answer finds the session closed) or the simulator stopping.
    Hangup(Option<tokio::sync::oneshot::Sender<()>>),
    /// A sideband WebSocket asks to attach; the call answers `true` if it took it.
    SidebandAttach(SidebandLink, tokio::sync::oneshot::Sender<bool>),
    /// A client event (one text frame) from the sideband with this id.
    SidebandText(u64, String),
    /// The sideband with this id went away (its socket closed).
    SidebandGone(u64),
}

/// A call's end of one sideband WebSocket: the call task queues server events (JSON text) on
/// `events`, and before dropping it says why in `close` (code and reason of the close frame).
pub(crate) struct SidebandLink {
    /// Unique per simulator.
    pub id: u64,
    /// Server events to the socket, bounded.
    pub events: mpsc::Sender<String>,
    /// Set once by the call when it lets the socket go.
    pub close: Arc<std::sync::OnceLock<(u16, String)>>,
}

impl std::fmt::Debug for RtcInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RtcInput::DcOpen(_) => f.write_str("DcOpen"),
            RtcInput::DcMessage(m) => write!(f, "DcMessage({} bytes)", m.len()),
            RtcInput::DcClosed => f.write_str("DcClosed"),
            RtcInput::Audio(_, n) => write!(f, "Audio({n})"),
            RtcInput::PcState(s) => write!(f, "PcState({s})"),
            RtcInput::Hangup(_) => f.write_str("Hangup"),
            RtcInput::SidebandAttach(link, _) => write!(f, "SidebandAttach({})", link.id),
            RtcInput::SidebandText(id, m) => write!(f, "SidebandText({id}, {} bytes)", m.len()),
            RtcInput::SidebandGone(id) => write!(f, "SidebandGone({id})"),
        }
    }
}

/// Unix seconds now.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A random id with this prefix, e.g. `sess_…`.
pub(crate) fn random_id(prefix: &str, len: usize) -> String {
    use rand::Rng as _;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    format!("{prefix}_{tail}")
}
