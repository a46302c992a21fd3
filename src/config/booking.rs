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
//! keep_call_records_days = 90              # 0: keep call records forever
//!
//! [booking.hours]
//! monday = ["09:00-12:00", "13:00-17:00"]
//! saturday = ["09:00-12:00"]
//! sunday = []
//! ```

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Where bookings live and the rules of the schedule.
///
/// Every field has a default, so an empty `[booking]` section (or none at all) gives a clinic
/// open Monday to Friday, 09:00–12:00 and 13:00–17:00 UTC, with 30-minute appointments
/// bookable up to 90 days ahead.
///
/// `Debug` and [`BookingConfig::redacted`] hide a password in `database_url`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
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
    /// Call records (transcripts, tool calls) older than this many days are deleted, at start
    /// and every hour; `0` keeps them forever.
    pub keep_call_records_days: u32,
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
            keep_call_records_days: 90,
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

impl fmt::Debug for BookingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BookingConfig")
            .field("database_url", &redact_url(&self.database_url))
            .field("max_connections", &self.max_connections)
            .field("time_zone", &self.time_zone)
            .field("slot_minutes", &self.slot_minutes)
            .field("hours", &self.hours)
            .field("closed_dates", &self.closed_dates)
            .field("max_days_ahead", &self.max_days_ahead)
            .field("default_region", &self.default_region)
            .field("keep_call_records_days", &self.keep_call_records_days)
            .finish()
    }
}

/// `url` with its passwords replaced by `***`: the password of the user-info part
/// (`postgres://relay:***@db.example/clinic`) and the value of every query parameter whose
/// name, percent-decoded and in any case, contains `password` (`?password=***`,
/// `&sslpassword=***`). Anything else is returned as it is. When unsure where the user-info
/// ends it masks more, never less: the result is for showing, not for connecting.
pub fn redact_url(url: &str) -> String {
    let (before_query, query) = match url.find('?') {
        Some(q) => (&url[..q], Some(&url[q + 1..])),
        None => (url, None),
    };
    let mut out = redact_userinfo(before_query);
    if let Some(query) = query {
        out.push('?');
        let (params, fragment) = query.split_at(query.find('#').unwrap_or(query.len()));
        let params: Vec<String> = params
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_password_param(name) => format!("{name}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push_str(&params.join("&"));
        out.push_str(fragment);
    }
    out
}

/// The part of a URL before its query with the user-info password masked.
fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    // The user-info ends at the last '@' (a password may hold '@' or '/' unescaped).
    let Some(at) = rest.rfind('@') else {
        return url.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{}://{user}:***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_string(),
    }
}

/// Whether a query parameter's name (percent-decoded, any case) names a password: drivers
/// decode the name before matching it, so `pass%77ord` is a password too.
fn is_password_param(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                decoded.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b'+', ..) => {
                decoded.push(b' ');
                i += 1;
            }
            (b, ..) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded)
        .to_ascii_lowercase()
        .contains("password")
}

impl BookingConfig {
    /// A copy fit for printing (`check-config`): the database password replaced by `***`.
    pub fn redacted(&self) -> Self {
        Self {
            database_url: redact_url(&self.database_url),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_stay_out_of_debug_and_printing() {
        let c = BookingConfig {
            database_url: "postgres://relay:s3cret@db.example:5432/clinic".into(),
            ..Default::default()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret")
                && shown.contains("postgres://relay:***@db.example:5432/clinic"),
            "{shown}"
        );
        assert_eq!(
            c.redacted().database_url,
            "postgres://relay:***@db.example:5432/clinic"
        );
        assert_eq!(redact_url("sqlite://voxrelay.db"), "sqlite://voxrelay.db");
        assert_eq!(
            redact_url("postgres://relay@db/clinic"),
            "postgres://relay@db/clinic"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@db/x"),
            "postgres://u:***@db/x"
        );
        assert_eq!(
            redact_url("sqlite://dir@x/file.db"),
            "sqlite://dir@x/file.db"
        );
    }

    #[test]
    fn password_query_parameters_are_masked_in_any_case_and_spelling() {
        for (url, shown) in [
            (
                "postgres://relay@db/clinic?password=s3cret",
                "postgres://relay@db/clinic?password=***",
            ),
            (
                "postgresql://db/clinic?sslmode=require&PassWord=s3cret&application_name=v",
                "postgresql://db/clinic?sslmode=require&PassWord=***&application_name=v",
            ),
            (
                "postgres://db/c?pass%77ord=s3cret",
                "postgres://db/c?pass%77ord=***",
            ),
            (
                "postgres://db/c?sslpassword=s3cret#x",
                "postgres://db/c?sslpassword=***#x",
            ),
            (
                "postgres://u:s3cret@db/c?password=s3cret&password=s3cret",
                "postgres://u:***@db/c?password=***&password=***",
            ),
            // a password holding '/' or '@' unescaped: masked up to the last '@'
            ("postgres://u:s3/c@ret@db/c", "postgres://u:***@db/c"),
            ("postgres://db/c?user=relay", "postgres://db/c?user=relay"),
            ("sqlite://v.db?mode=rwc", "sqlite://v.db?mode=rwc"),
            ("postgres://db/c?password", "postgres://db/c?password"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let c = BookingConfig {
            database_url: "postgres://relay@db/clinic?Password=s3cret".into(),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!c.redacted().database_url.contains("s3cret"));
    }
}
