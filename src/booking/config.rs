//! The `[booking]` section of the relay's configuration.
//!
//! ```toml
//! [booking]
//! database_url = "sqlite://voxrelay.db"     # or postgres://user@host/db for several relays
//! time_zone = "Europe/London"              # the clinic's wall clock
//! slot_minutes = 30
//! max_days_ahead = 90
//! closed_dates = ["2026-12-25", "2026-12-26"]
//! default_region = "GB"
//!
//! [booking.hours]
//! monday = ["09:00-12:00", "13:00-17:00"]
//! saturday = ["09:00-12:00"]
//! sunday = []
//! ```

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Where bookings live and the rules of the schedule.
///
/// Every field has a default, so an empty `[booking]` section (or none at all) gives a clinic
/// open Monday to Friday, 09:00–12:00 and 13:00–17:00 UTC, with 30-minute appointments
/// bookable up to 90 days ahead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BookingConfig {
    /// `sqlite://voxrelay.db` (the default; the file is created when missing) or
    /// `postgres://…` when several relays share one schedule.
    pub database_url: String,
    /// Most connections the store opens to the database.
    pub max_connections: u32,
    /// IANA time zone of the clinic (`Europe/Berlin`, `America/New_York`); dates and times that
    /// callers say and hear are wall-clock times in this zone.
    pub time_zone: String,
    /// Length of one appointment in minutes; appointments start on this grid from the opening
    /// time of each opening range.
    pub slot_minutes: u32,
    /// Opening hours per weekday.
    pub hours: WeeklyHours,
    /// Whole days without appointments (holidays), as `YYYY-MM-DD`.
    pub closed_dates: Vec<NaiveDate>,
    /// How many days after today a caller may book (today plus this many days is the last
    /// bookable date).
    pub max_days_ahead: u32,
    /// Region (ISO 3166 two-letter code, e.g. `US`, `GB`, `DE`) assumed for phone numbers said
    /// without a country code; every number is stored in E.164 form.
    pub default_region: String,
}

impl Default for BookingConfig {
    fn default() -> Self {
        Self {
            database_url: "sqlite://voxrelay.db".into(),
            max_connections: 8,
            time_zone: "UTC".into(),
            slot_minutes: 30,
            hours: WeeklyHours::default(),
            closed_dates: Vec::new(),
            max_days_ahead: 90,
            default_region: "US".into(),
        }
    }
}

/// Opening hours for each day of the week: a list of `"HH:MM-HH:MM"` ranges per day, in the
/// clinic's time zone. An empty list means closed all day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WeeklyHours {
    /// Monday's opening ranges.
    pub monday: Vec<String>,
    /// Tuesday's opening ranges.
    pub tuesday: Vec<String>,
    /// Wednesday's opening ranges.
    pub wednesday: Vec<String>,
    /// Thursday's opening ranges.
    pub thursday: Vec<String>,
    /// Friday's opening ranges.
    pub friday: Vec<String>,
    /// Saturday's opening ranges.
    pub saturday: Vec<String>,
    /// Sunday's opening ranges.
    pub sunday: Vec<String>,
}

impl Default for WeeklyHours {
    fn default() -> Self {
        let weekday = || vec!["09:00-12:00".to_string(), "13:00-17:00".to_string()];
        Self {
            monday: weekday(),
            tuesday: weekday(),
            wednesday: weekday(),
            thursday: weekday(),
            friday: weekday(),
            saturday: Vec::new(),
            sunday: Vec::new(),
        }
    }
}

impl WeeklyHours {
    /// The same ranges on all seven days.
    pub fn every_day(ranges: &[&str]) -> Self {
        let day = || ranges.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        Self {
            monday: day(),
            tuesday: day(),
            wednesday: day(),
            thursday: day(),
            friday: day(),
            saturday: day(),
            sunday: day(),
        }
    }

    /// The days in order Monday first, with the key name each has in the config.
    pub fn days(&self) -> [(&'static str, &[String]); 7] {
        [
            ("monday", &self.monday),
            ("tuesday", &self.tuesday),
            ("wednesday", &self.wednesday),
            ("thursday", &self.thursday),
            ("friday", &self.friday),
            ("saturday", &self.saturday),
            ("sunday", &self.sunday),
        ]
    }
}

impl BookingConfig {
    /// Checks every schedule rule and the phone region; the error names the bad key
    /// (`booking.hours.monday`, …). The database URL is checked when the store opens.
    pub fn validate(&self) -> Result<(), crate::booking::ConfigError> {
        crate::booking::Schedule::from_config(self).map(|_| ())
    }
}
