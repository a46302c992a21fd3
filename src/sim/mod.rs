//! An offline OpenAI Realtime API (GA) for tests and the no-key mode: the key and call
//! endpoints, the WebSocket transport and a WebRTC answerer, driven by a scenario.
//!
//! The simulator talks to the relay only over the wire. Its parts: `engine` (the simulated
//! model of one session, IO-free), `scenario` (what it says and which faults it injects),
//! `vad` (an energy detector standing in for server VAD), `voice` (prompt recordings),
//! `record` (what each session saw, for `GET /sim/sessions`).

pub mod engine;
pub mod g711;
pub mod record;
pub mod scenario;
pub mod vad;
pub mod voice;

mod http;
mod rtc;
pub mod sdp;
mod server;
mod ws;

pub use server::{run, SimConfig, SimHandle, Simulator};
