//! Error types of the booking module.

use std::fmt;

/// A bad value in the `[booking]` section, naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingConfigError {
    /// The full key, e.g. `booking.hours.monday`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl BookingConfigError {
    pub(crate) fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: format!("booking.{key}"),
            message: message.into(),
        }
    }
}

impl fmt::Display for BookingConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for BookingConfigError {}

/// A failure of the booking store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is neither `sqlite:` nor `postgres:`, or does not parse.
    #[error("booking.database_url: {0}")]
    BadUrl(String),
    /// The database answered with an error or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The embedded migrations could not be applied.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored JSON column does not parse (written by something else).
    #[error("stored JSON does not parse: {0}")]
    Json(#[from] serde_json::Error),
    /// A stored value does not parse (written by something else).
    #[error("stored value does not parse: {0}")]
    Corrupt(String),
    /// No free confirmation code was found after several tries (the code space is nearly full).
    #[error("could not find an unused confirmation code")]
    CodesExhausted,
}

/// Why a booking could not be inserted.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// Another active booking holds the slot (the database's unique index said so).
    #[error("the slot is already booked")]
    SlotTaken,
    /// Anything else.
    #[error(transparent)]
    Store(#[from] StoreError),
}
