//! Reminder calls (`[reminders]`, docs/reminders.md): before each appointment the relay
//! calls the patient through a trunk, and the agent confirms, moves or cancels it, or leaves a
//! message on a voicemail. [`plan`] decides when (IO-free); [`scheduler`] finds the bookings,
//! claims each reminder in the database and places the calls.

pub mod plan;
pub mod scheduler;

pub use plan::{CallingHours, Next, Plan, Skip};
pub use scheduler::{Attempt, Placer, Scheduler, SipPlacer};

#[cfg(test)]
mod tests;
