//! Appointment booking: schedule rules, the store and the agent's tools.

pub mod config;
pub use config::BookingConfig;
