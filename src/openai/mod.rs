//! The OpenAI Realtime leg: keys, transports, typed events, session config.

pub mod events;
