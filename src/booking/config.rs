//! The `[booking]` section of the relay's configuration.

use serde::{Deserialize, Serialize};

/// Where bookings live and the rules of the schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BookingConfig {
    /// `sqlite://voxrelay.db` (the default) or `postgres://…`.
    pub database_url: String,
}

impl Default for BookingConfig {
    fn default() -> Self {
        Self { database_url: "sqlite://voxrelay.db".into() }
    }
}
