//! An offline OpenAI Realtime API (GA) for tests and the no-key mode: the key and call
//! endpoints, the WebSocket transport and a WebRTC answerer, driven by a scenario.
//!
//! The simulator talks to the relay only over the wire; it shares nothing with the relay but the
//! typed events of [`crate::openai::events`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use voxrelay::sim::{SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig {
//!     listen: "127.0.0.1:0".parse()?,
//!     scenario: "booking".into(), // or "echo", or a path to a scenario file
//!     api_key: None,              // then any `sk-…` key is a server key
//! })
//! .await?;
//! let base_url = sim.base_url(); // give this to the relay as `openai.base_url`
//! # let _ = base_url;
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//! | method and path | |
//! |---|---|
//! | `POST /v1/realtime/client_secrets` | mints `ek_…` keys (TTL 10–7200 s, default 600) with the session they open; expired keys are forgotten at the next mint, at most 10,000 kept |
//! | `POST /v1/realtime/calls` | SDP offer as `application/sdp` or multipart (`sdp`, `session`) → 201, the answer, `Location: /v1/realtime/calls/rtc_…` |
//! | `POST /v1/realtime/calls/{id}/hangup` | ends the call: the `oai-events` channel closes, then the peer connection, and every sideband gets a close frame; answered 200 once the session is recorded closed |
//! | `POST /v1/moderations` | flags text holding a word of a fixed list as `harassment` (list in `config/scenarios/README.md`), in OpenAI's answer shape |
//! | `GET /v1/realtime?model=…` | the WebSocket transport (`audio/pcm` 24 kHz, `audio/pcmu`, `audio/pcma`) |
//! | `GET /v1/realtime?call_id=rtc_…` | the sideband of a live WebRTC call (server key only; `sideband`, details in `config/scenarios/README.md`) |
//! | `GET /sim/sessions`, `GET /sim/sessions/{id}` | what each session received and sent, and the keys minted so far (`keys_minted`); no auth, for tests |
//!
//! Every `/v1` endpoint needs `Authorization: Bearer` with the configured server key (or any
//! `sk-…` key when none is configured) or an unexpired `ek_…` key it minted (`client_secrets`
//! and `moderations` take server keys only); otherwise 401 in OpenAI's error shape, never echoing the key.
//!
//! # Browsers
//! Every `/v1` route answers CORS as OpenAI's API does (`cors`): preflights 200 with the methods
//! and the request headers OpenAI's browser SDKs send, `Access-Control-Allow-Origin: *` on every
//! answer (errors too), `Location` exposed. Server-key endpoints answer browsers too but refuse
//! an ephemeral key. `/sim/*` answers no browser. Details: `config/scenarios/README.md`.
//!
//! # The answer
//! Shaped like OpenAI's: BUNDLE, rtcp-mux, `setup:active` (the simulator is the DTLS client),
//! the offered Opus payload type plus PCMU 0 and PCMA 8, inline host candidates with the extra
//! `ufrag` attribute, `sctp-port:5000`. `session.created` is sent when the `oai-events` channel
//! opens; model audio is Opus RTP (or G.711 when the offer had no Opus), paced in real time.
//!
//! # Parts
//! `engine` (the simulated model of one session, IO-free, fake-clock tested), `keys` (the minted
//! keys: expiry and a bound, IO-free), `scenario` (what
//! it says and which faults it injects; format in `config/scenarios/README.md`), `vad` (an
//! energy detector standing in for server VAD), `voice` (the prompt recordings; G.711 from `media::g711`), `record` (what
//! each session saw), `sdp` (answer shaping, multipart), `moderation` (the stand-in classifier), `cors` (what browsers may do), and the transports `http`, `ws`, `rtc`.

pub mod engine;
pub mod record;
pub mod scenario;
pub mod sdp;
pub mod vad;
pub mod voice;

mod cors;
mod error;
mod http;
mod keys;
mod moderation;
mod responses;
mod rtc;
mod server;
mod sideband;
mod state;
mod ws;

pub use server::{run, SimConfig, SimHandle, Simulator};
