//! The sideband: a server attaches to a live WebRTC call with `GET /v1/realtime?call_id=rtc_…`
//! over WebSocket and the server key, then receives the call's server events and sends client
//! events, as over the browser's `oai-events` channel.
//!
//! The call's task stays the single owner of its engine: this module only carries text between
//! the socket and the call ([`RtcInput::SidebandAttach`], [`RtcInput::SidebandText`]), and
//! [`Sidebands`] is the call task's set of attached sockets.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tokio::sync::{mpsc, oneshot};

use super::error::OpenAiError;
use super::http::{authorize, realtime_socket, Caller};
use super::state::{RtcInput, SidebandLink, State};

/// Sideband sockets one call takes at once; one more is refused before the upgrade.
pub(crate) const MAX_SIDEBANDS: usize = 4;
/// Server events queued for one sideband socket; a reader this far behind is closed.
const QUEUE: usize = 1_024;
/// Client events from a sideband held until the browser's channel opens (the engine starts
/// then); past this they are dropped.
const MAX_PENDING: usize = 64;
/// How long the call task may take to take an attachment before the request fails.
const ATTACH_DEADLINE: Duration = Duration::from_secs(5);
/// Close code and reason for a reader that let its queue fill.
const TOO_SLOW: (u16, &str) = (1008, "sideband too slow: event queue full");

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn call_not_found() -> OpenAiError {
    // what OpenAI answers for an unknown or ended call, and for an ephemeral key
    OpenAiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        Some("call_id_not_found"),
        "No session found for the provided call_id",
    )
}

/// Answers `GET /v1/realtime?call_id=…`: checks the key and the call before the upgrade, then
/// serves the socket.
pub(crate) async fn attach(
    state: Arc<State>,
    headers: &HeaderMap,
    call_id: &str,
    ws: WebSocketUpgrade,
) -> Result<Response, OpenAiError> {
    match authorize(&state, headers)? {
        Caller::Server => {}
        // OpenAI does not find the call for an ephemeral key: the sideband is the server's
        Caller::Ephemeral(_) => return Err(call_not_found()),
    }
    let call = state
        .calls
        .get(call_id)
        .map(|c| c.clone())
        .ok_or_else(call_not_found)?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (events_tx, events_rx) = mpsc::channel(QUEUE);
    let close = Arc::new(OnceLock::new());
    let (reply_tx, reply_rx) = oneshot::channel();
    let link = SidebandLink {
        id,
        events: events_tx,
        close: close.clone(),
    };
    let taken = tokio::time::timeout(ATTACH_DEADLINE, async {
        call.send(RtcInput::SidebandAttach(link, reply_tx))
            .await
            .map_err(|_| ())?;
        reply_rx.await.map_err(|_| ())
    })
    .await;
    match taken {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            return Err(OpenAiError::new(
                StatusCode::CONFLICT,
                "invalid_request_error",
                Some("too_many_connections"),
                format!("This call already has {MAX_SIDEBANDS} sideband connections."),
            ))
        }
        // the call ended meanwhile
        Ok(Err(_)) => return Err(call_not_found()),
        Err(_) => return Err(OpenAiError::from_status(503)),
    }
    // events emitted from here on wait in the queue until the socket is up; if the upgrade
    // fails the queue's receiver drops and the call lets the link go at its next event
    Ok(realtime_socket(ws)
        .on_upgrade(move |socket| serve(state, socket, call, id, events_rx, close)))
}

/// Moves events from the call to the socket and client events from the socket to the call,
/// until either side ends. Closing the socket never ends the call.
async fn serve(
    state: Arc<State>,
    mut socket: WebSocket,
    call: mpsc::Sender<RtcInput>,
    id: u64,
    mut events: mpsc::Receiver<String>,
    close: Arc<OnceLock<(u16, String)>>,
) {
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(text) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                None => {
                    // the call let this socket go: say why, as the call's own close does
                    let (code, reason) = close
                        .get()
                        .cloned()
                        .unwrap_or_else(|| (1000, "call ended".to_string()));
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame { code, reason: reason.into() })))
                        .await;
                    return;
                }
            },
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(text))) => text.as_str().to_string(),
                    Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                        Ok(text) => text.to_string(),
                        Err(_) => "(binary)".to_string(),
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                };
                // waits when the call is busy: a flooding sideband slows itself, not the call
                if call.send(RtcInput::SidebandText(id, text)).await.is_err() {
                    // the call is gone; its close reaches `events` next
                    continue;
                }
            }
            _ = state.shutdown.cancelled() => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame { code: 1001, reason: "simulator shut down".into() })))
                    .await;
                break;
            }
        }
    }
    let _ = call.send(RtcInput::SidebandGone(id)).await;
}

/// The sideband sockets attached to one call, owned by the call's task.
#[derive(Default)]
pub(crate) struct Sidebands {
    links: Vec<SidebandLink>,
    /// Client events that came before the engine started.
    pending: VecDeque<String>,
}

impl Sidebands {
    /// Takes a new socket unless the call already has [`MAX_SIDEBANDS`].
    pub fn attach(&mut self, link: SidebandLink) -> bool {
        self.links.retain(|l| !l.events.is_closed());
        if self.links.len() >= MAX_SIDEBANDS {
            return false;
        }
        self.links.push(link);
        true
    }

    /// Lets the socket with this id go (it closed).
    pub fn remove(&mut self, id: u64) {
        self.links.retain(|l| l.id != id);
    }

    /// Queues a server event for every socket. A socket whose queue is full is closed rather
    /// than given a gap in the event stream, and the call never waits for it.
    pub fn send(&mut self, text: &str) {
        if self.links.is_empty() {
            return;
        }
        self.links
            .retain(|l| match l.events.try_send(text.to_string()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let _ = l.close.set((TOO_SLOW.0, TOO_SLOW.1.to_string()));
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
    }

    /// Holds a client event until the engine starts.
    pub fn hold(&mut self, text: String) {
        if self.pending.len() < MAX_PENDING {
            self.pending.push_back(text);
        }
    }

    /// The held client events, oldest first.
    pub fn take_pending(&mut self) -> VecDeque<String> {
        std::mem::take(&mut self.pending)
    }

    /// The call ended: every socket gets a close frame with this reason once its queued
    /// events have left.
    pub fn close_all(&mut self, reason: &str) {
        for link in self.links.drain(..) {
            // a close reason is at most 123 bytes
            let mut reason = reason.to_string();
            reason.truncate(120);
            let _ = link.close.set((1000, reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(id: u64, cap: usize) -> (SidebandLink, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(cap);
        (
            SidebandLink {
                id,
                events: tx,
                close: Arc::new(OnceLock::new()),
            },
            rx,
        )
    }

    #[test]
    fn a_call_takes_a_few_sidebands_and_frees_a_slot_when_one_goes() {
        let mut set = Sidebands::default();
        let mut rxs = vec![];
        for id in 0..MAX_SIDEBANDS as u64 {
            let (l, rx) = link(id, 4);
            assert!(set.attach(l));
            rxs.push(rx);
        }
        let (extra, _rx) = link(99, 4);
        assert!(!set.attach(extra));
        set.remove(0);
        let (again, _rx2) = link(100, 4);
        assert!(set.attach(again));
        // a socket whose receiver went away frees its slot too
        drop(rxs.remove(0));
        drop(rxs.remove(0));
        let (more, _rx3) = link(101, 4);
        assert!(set.attach(more));
    }

    #[test]
    fn a_slow_reader_is_closed_and_the_others_keep_every_event() {
        let mut set = Sidebands::default();
        let (slow, mut slow_rx) = link(1, 2);
        let slow_close = slow.close.clone();
        let (fast, mut fast_rx) = link(2, 16);
        let fast_close = fast.close.clone();
        assert!(set.attach(slow));
        assert!(set.attach(fast));
        for i in 0..5 {
            set.send(&format!("e{i}"));
            assert_eq!(fast_rx.try_recv().unwrap(), format!("e{i}"));
        }
        // the slow one got what fit, then its queue ends with the reason set
        assert_eq!(slow_rx.try_recv().unwrap(), "e0");
        assert_eq!(slow_rx.try_recv().unwrap(), "e1");
        assert!(matches!(
            slow_rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert_eq!(slow_close.get().unwrap().0, 1008);
        set.close_all("hangup");
        assert_eq!(fast_close.get().unwrap(), &(1000, "hangup".to_string()));
        assert!(matches!(
            fast_rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn events_before_the_engine_starts_are_held_up_to_a_bound() {
        let mut set = Sidebands::default();
        for i in 0..MAX_PENDING + 10 {
            set.hold(format!("{i}"));
        }
        let held = set.take_pending();
        assert_eq!(held.len(), MAX_PENDING);
        assert_eq!(held.front().unwrap(), "0");
        assert!(set.take_pending().is_empty());
    }
}
