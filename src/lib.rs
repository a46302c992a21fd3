//! voxrelay: answers SIP phone calls and bridges each call to an OpenAI Realtime voice agent.
//!
//! The path of one call: `sip` (signalling) → `bridge` (one task per call) ↔ `media` (RTP,
//! codecs, jitter, pacing) ↔ `openai` (the realtime leg). `booking` holds the agent's tools,
//! `admin` the operator's HTTP surface and `sim` an offline Realtime API for tests.

pub mod admin;
pub mod app;
pub mod booking;
pub mod bridge;
pub mod bundled;
pub mod cli;
pub mod cluster;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod openai;
pub mod reminders;
pub mod secret;
pub mod sim;
pub mod sip;
pub mod webhooks;
