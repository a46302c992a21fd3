//! The WebSocket transport: one task per connection owns the session's engine, moving text
//! frames in and events (audio as base64 deltas) out, and waking at the engine's deadlines.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use serde_json::Value;
use tokio::time::Instant;

use super::engine::{CloseReason, Engine, EngineConfig, Output, Transport};
use super::record::SessionRecord;
use super::state::{random_id, unix_now, State};

/// Runs one WebSocket session to its end.
pub(crate) async fn serve(
    state: Arc<State>,
    mut socket: WebSocket,
    model: String,
    initial: Option<Value>,
) {
    let id = random_id("sess", 20);
    let record = Arc::new(SessionRecord::new(&id, "websocket", &state.scenario.name));
    state.add_record(&id, record.clone());
    let mut engine = Engine::new(
        EngineConfig {
            session_id: id,
            model,
            transport: Transport::WebSocket,
            scenario: state.scenario.clone(),
            initial,
            unix_now: unix_now(),
        },
        record,
    );
    let start = Instant::now();
    engine.open(start.elapsed());
    let mut why = "client closed";
    'session: loop {
        while let Some(out) = engine.poll_output() {
            let msg = match out {
                Output::Event(ev) => Message::Text(ev.to_json().into()),
                Output::Raw(text) => Message::Text(text.into()),
                Output::Close(reason) => {
                    let (code, text) = match reason {
                        CloseReason::Expired => (1000, "session_expired"),
                        CloseReason::Fault => (1011, "simulated fault"),
                    };
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code,
                            reason: text.into(),
                        })))
                        .await;
                    break 'session;
                }
                Output::Audio(_) | Output::ClearAudio => continue,
            };
            if socket.send(msg).await.is_err() {
                why = "send failed";
                break 'session;
            }
        }
        let deadline = engine.poll_timeout().map(|d| start + d);
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(text))) => engine.handle_text(start.elapsed(), text.as_str()),
                Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                    Ok(text) => engine.handle_text(start.elapsed(), text),
                    Err(_) => engine.handle_text(start.elapsed(), "(binary)"),
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(_)) => { why = "transport error"; break }
            },
            _ = sleep => engine.handle_timeout(start.elapsed()),
            _ = state.shutdown.cancelled() => { why = "simulator shut down"; break }
        }
    }
    engine.closed_by_peer(why);
}
