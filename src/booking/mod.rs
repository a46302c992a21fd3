//! Appointment booking: schedule rules, the store (SQLite or PostgreSQL) and the agent's tools.
//!
//! Wiring: open a [`Store`] from [`BookingConfig::database_url`], build [`Tools`] over it with
//! the config and a [`Clock`], send [`Tools::definitions`] in the Realtime session's `tools`,
//! and answer each function call with [`Tools::call`]. Call records go through
//! [`Store::insert_call`], [`Store::get_call`] and [`Store::list_calls`]; the admin API lists a
//! day's bookings with [`Store::bookings_on`].

#![warn(missing_docs)]

pub mod caller;
pub mod clock;
pub mod code;
pub mod error;
pub mod name;
pub mod phone;
pub mod retention;
pub mod schedule;
pub mod store;
pub mod tools;

pub use crate::config::{redact_url, BookingConfig, WeeklyHours};
pub use caller::Caller;
pub use clock::{Clock, FixedClock, SystemClock};
pub use error::{BookingConfigError, InsertError, StoreError};
pub use schedule::Schedule;
pub use store::{Backend, Booking, CallKind, CallRecord, NewBooking, RecordingRef, Status, Store};
pub use tools::{Tools, TOOL_NAMES};

impl BookingConfig {
    /// Checks every schedule rule and the phone region; the error names the bad key
    /// (`booking.hours.monday`, …). The database URL is checked when the store opens.
    pub fn validate(&self) -> Result<(), BookingConfigError> {
        Schedule::from_config(self).map(|_| ())
    }
}
