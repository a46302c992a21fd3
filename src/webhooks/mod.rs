//! After each call: its `call.ended` event (the call, its summary, the schedule's changes, the
//! stored transcript) posted to every `[[webhooks]]` URL, signed with HMAC-SHA256, retried
//! with backoff until the receiver accepts it, and logged in the database for the admin API
//! (docs/webhooks.md).
//!
//! The decisions are IO-free ([`retry`], [`signature`], [`payload`]); [`sender`] is the task
//! that makes the attempts. A delivery is written to the database before its first attempt,
//! so neither a receiver's outage nor a restart of the relay loses it.

pub mod payload;
pub mod retry;
pub mod sender;
pub mod signature;
pub mod summary;

pub use sender::{Webhook, Webhooks};
