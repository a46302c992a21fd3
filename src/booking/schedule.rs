//! Schedule rules: which wall-clock times can be booked, given the time now.
//!
//! IO-free: every check takes "now" as an argument so tests drive it with a fixed clock.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::error::BookingConfigError;
use crate::config::BookingConfig;

/// Longest range `check_availability` answers for, in days (both ends included).
pub const MAX_RANGE_DAYS: i64 = 31;

/// The parsed, checked schedule rules of one clinic.
#[derive(Debug, Clone)]
pub struct Schedule {
    tz: Tz,
    slot_minutes: u32,
    /// Opening ranges per weekday in minutes since midnight, Monday first, sorted and not
    /// overlapping.
    days: [Vec<(u32, u32)>; 7],
    closed: BTreeSet<NaiveDate>,
    max_days_ahead: u32,
}

/// Why a date and time cannot be booked; `Display` is a sentence a caller can hear.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// The appointment would start at or before now.
    #[error("{} at {} is in the past; today is {}.", speak_date(*.date), speak_time(*.time), speak_date(*.today))]
    InPast {
        /// The asked date.
        date: NaiveDate,
        /// The asked time.
        time: NaiveTime,
        /// Today in the clinic's time zone.
        today: NaiveDate,
    },
    /// Further ahead than bookings are taken.
    #[error("Appointments can be booked up to {}; {} is too far ahead.", speak_date(*.last), speak_date(*.date))]
    TooFarAhead {
        /// The asked date.
        date: NaiveDate,
        /// The last bookable date.
        last: NaiveDate,
    },
    /// The clinic is closed that whole day.
    #[error("The clinic is closed on {}.", speak_date(*.date))]
    Closed {
        /// The asked date.
        date: NaiveDate,
    },
    /// Open that day, but not at that time.
    #[error("{} is outside opening hours on {}; that day the clinic is open {}.", speak_time(*.time), speak_date(*.date), speak_ranges(.open))]
    OutsideHours {
        /// The asked date.
        date: NaiveDate,
        /// The asked time.
        time: NaiveTime,
        /// That day's opening ranges, in minutes since midnight.
        open: Vec<(u32, u32)>,
    },
    /// Within opening hours but not at the start of a slot.
    #[error("Appointments start every {minutes} minutes; the nearest start times are {}.", speak_times(.nearest))]
    OffGrid {
        /// Slot length in minutes.
        minutes: u32,
        /// The slot starts closest to the asked time.
        nearest: Vec<NaiveTime>,
    },
}

/// Why a date range cannot be searched; `Display` is a sentence a caller can hear.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// The end is before the start.
    #[error("The end date {} is before the start date {}.", speak_date(*.end), speak_date(*.start))]
    Backwards {
        /// First day asked.
        start: NaiveDate,
        /// Last day asked.
        end: NaiveDate,
    },
    /// More days than [`MAX_RANGE_DAYS`].
    #[error("That is {days} days; I can look at most {MAX_RANGE_DAYS} days at a time.")]
    TooLong {
        /// Days in the asked range.
        days: i64,
    },
    /// The start day is before today.
    #[error("{} is in the past; today is {}.", speak_date(*.start), speak_date(*.today))]
    InPast {
        /// First day asked.
        start: NaiveDate,
        /// Today in the clinic's time zone.
        today: NaiveDate,
    },
    /// The whole range lies beyond the booking horizon.
    #[error("Appointments can be booked up to {}; {} is too far ahead.", speak_date(*.last), speak_date(*.start))]
    TooFarAhead {
        /// First day asked.
        start: NaiveDate,
        /// The last bookable date.
        last: NaiveDate,
    },
}

impl Schedule {
    /// Parses and checks the schedule rules of `config`; the error names the bad key.
    pub fn from_config(config: &BookingConfig) -> Result<Self, BookingConfigError> {
        let tz: Tz = config.time_zone.parse().map_err(|_| {
            BookingConfigError::new(
                "time_zone",
                format!(
                    "unknown time zone {:?} (use an IANA name such as Europe/Berlin)",
                    config.time_zone
                ),
            )
        })?;
        if config.slot_minutes == 0 || config.slot_minutes > 24 * 60 {
            return Err(BookingConfigError::new(
                "slot_minutes",
                "must be between 1 and 1440",
            ));
        }
        if config.max_days_ahead == 0 || config.max_days_ahead > 3660 {
            return Err(BookingConfigError::new(
                "max_days_ahead",
                "must be between 1 and 3660",
            ));
        }
        super::phone::parse_region(&config.default_region)
            .map_err(|m| BookingConfigError::new("default_region", m))?;
        let days = parse_week(&config.hours, "booking.hours")?;
        Ok(Self {
            tz,
            slot_minutes: config.slot_minutes,
            days,
            closed: config.closed_dates.iter().copied().collect(),
            max_days_ahead: config.max_days_ahead,
        })
    }

    /// The clinic's time zone.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// Length of one appointment in minutes.
    pub fn slot_minutes(&self) -> u32 {
        self.slot_minutes
    }

    /// Today's date on the clinic's wall clock.
    pub fn today(&self, now: DateTime<Utc>) -> NaiveDate {
        now.with_timezone(&self.tz).date_naive()
    }

    /// The last date a caller may book today.
    pub fn last_bookable(&self, now: DateTime<Utc>) -> NaiveDate {
        self.today(now) + Duration::days(i64::from(self.max_days_ahead))
    }

    /// The opening ranges on `date` in minutes since midnight (empty when closed that day).
    pub fn opening(&self, date: NaiveDate) -> &[(u32, u32)] {
        if self.closed.contains(&date) {
            return &[];
        }
        &self.days[date.weekday().num_days_from_monday() as usize]
    }

    /// Every slot start on `date`, taken or not, past or not, in order.
    pub fn slots_on(&self, date: NaiveDate) -> Vec<NaiveTime> {
        let mut out = Vec::new();
        for &(open, close) in self.opening(date) {
            let mut m = open;
            while m + self.slot_minutes <= close {
                let t = time_of(m);
                // A wall time skipped by a daylight-saving change does not exist: no slot there.
                if self.instant(date, t).is_some() {
                    out.push(t);
                }
                m += self.slot_minutes;
            }
        }
        out
    }

    /// The instant a wall-clock date and time denote (the earlier one when a daylight-saving
    /// change makes it ambiguous; `None` when it was skipped).
    pub fn instant(&self, date: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
        self.tz
            .from_local_datetime(&date.and_time(time))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Checks that an appointment may start at `date` `time`, apart from whether it is taken.
    pub fn check_slot(
        &self,
        date: NaiveDate,
        time: NaiveTime,
        now: DateTime<Utc>,
    ) -> Result<(), SlotError> {
        let today = self.today(now);
        let in_past = || SlotError::InPast { date, time, today };
        if date < today {
            return Err(in_past());
        }
        let last = self.last_bookable(now);
        if date > last {
            return Err(SlotError::TooFarAhead { date, last });
        }
        let open = self.opening(date);
        if open.is_empty() {
            return Err(SlotError::Closed { date });
        }
        let t = minutes_of(time);
        let within = open
            .iter()
            .any(|&(a, b)| t >= a && t + self.slot_minutes <= b);
        if !within {
            return Err(SlotError::OutsideHours {
                date,
                time,
                open: open.to_vec(),
            });
        }
        let slots = self.slots_on(date);
        if !slots.contains(&time) {
            let mut nearest = slots;
            nearest.sort_by_key(|s| (minutes_of(*s).abs_diff(t), *s));
            nearest.truncate(2);
            nearest.sort();
            return Err(SlotError::OffGrid {
                minutes: self.slot_minutes,
                nearest,
            });
        }
        match self.instant(date, time) {
            Some(at) if at > now => Ok(()),
            _ => Err(in_past()),
        }
    }

    /// Checks a `check_availability` range and returns the days to search: the asked range
    /// with its end cut at the booking horizon.
    pub fn check_range(
        &self,
        start: NaiveDate,
        end: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<(NaiveDate, NaiveDate), RangeError> {
        if end < start {
            return Err(RangeError::Backwards { start, end });
        }
        let days = (end - start).num_days() + 1;
        if days > MAX_RANGE_DAYS {
            return Err(RangeError::TooLong { days });
        }
        let today = self.today(now);
        if start < today {
            return Err(RangeError::InPast { start, today });
        }
        let last = self.last_bookable(now);
        if start > last {
            return Err(RangeError::TooFarAhead { start, last });
        }
        Ok((start, end.min(last)))
    }

    /// The slots on `date` that start after `now` and are not in `taken`.
    pub fn free_slots(
        &self,
        date: NaiveDate,
        now: DateTime<Utc>,
        taken: &HashSet<NaiveTime>,
    ) -> Vec<NaiveTime> {
        // Slots of days after today are all ahead: only today and earlier need the time-zone
        // arithmetic.
        let may_have_passed = date <= self.today(now);
        self.slots_on(date)
            .into_iter()
            .filter(|t| !taken.contains(t))
            .filter(|t| !may_have_passed || self.instant(date, *t).is_some_and(|at| at > now))
            .collect()
    }
}

fn minutes_of(t: NaiveTime) -> u32 {
    t.hour() * 60 + t.minute()
}

fn time_of(minutes: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0).expect("minutes within a day")
}

/// Parses a week of `"HH:MM-HH:MM"` ranges into minutes since midnight, Monday first, sorted;
/// the error names `{prefix}.{day}` (`booking.hours.monday`).
pub(crate) fn parse_week(
    hours: &crate::config::WeeklyHours,
    prefix: &str,
) -> Result<[Vec<(u32, u32)>; 7], BookingConfigError> {
    let mut days: [Vec<(u32, u32)>; 7] = Default::default();
    for (i, (name, ranges)) in hours.days().into_iter().enumerate() {
        let err = |message: String| BookingConfigError {
            key: format!("{prefix}.{name}"),
            message,
        };
        let mut parsed = Vec::with_capacity(ranges.len());
        for range in ranges {
            parsed.push(parse_range(range).map_err(err)?);
        }
        parsed.sort();
        if parsed.windows(2).any(|w| w[1].0 < w[0].1) {
            return Err(err("opening ranges overlap".into()));
        }
        days[i] = parsed;
    }
    Ok(days)
}

/// Parses `"HH:MM-HH:MM"` into minutes since midnight; `24:00` is allowed as a closing time.
fn parse_range(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not an opening range like \"09:00-17:00\"");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let open = parse_hhmm(a.trim()).map(minutes_of).ok_or_else(bad)?;
    let close = match b.trim() {
        "24:00" => 24 * 60,
        other => parse_hhmm(other).map(minutes_of).ok_or_else(bad)?,
    };
    if close <= open {
        return Err(format!("{s:?} closes before it opens"));
    }
    Ok((open, close))
}

/// Parses a strict `HH:MM` (24-hour clock, two digits each).
pub fn parse_hhmm(s: &str) -> Option<NaiveTime> {
    let b = s.as_bytes();
    if b.len() != 5
        || b[2] != b':'
        || !b
            .iter()
            .enumerate()
            .all(|(i, c)| i == 2 || c.is_ascii_digit())
    {
        return None;
    }
    let h = u32::from(b[0] - b'0') * 10 + u32::from(b[1] - b'0');
    let m = u32::from(b[3] - b'0') * 10 + u32::from(b[4] - b'0');
    NaiveTime::from_hms_opt(h, m, 0)
}

/// A date as a caller hears it: "Tuesday 24 November 2026".
pub fn speak_date(d: NaiveDate) -> String {
    d.format("%A %-d %B %Y").to_string()
}

/// A time as a caller hears it: "09:30".
pub fn speak_time(t: NaiveTime) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

fn speak_times(ts: &[NaiveTime]) -> String {
    ts.iter()
        .map(|t| speak_time(*t))
        .collect::<Vec<_>>()
        .join(" and ")
}

fn speak_ranges(rs: &[(u32, u32)]) -> String {
    let at = |m: u32| {
        if m >= 24 * 60 {
            "midnight".to_string()
        } else {
            speak_time(time_of(m))
        }
    };
    rs.iter()
        .map(|(a, b)| format!("from {} to {}", at(*a), at(*b)))
        .collect::<Vec<_>>()
        .join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }
    fn t(s: &str) -> NaiveTime {
        parse_hhmm(s).unwrap()
    }
    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }
    fn clinic() -> Schedule {
        let mut c = BookingConfig {
            time_zone: "Europe/Berlin".into(),
            ..BookingConfig::default()
        };
        c.closed_dates = vec![d("2026-12-24")];
        Schedule::from_config(&c).unwrap()
    }

    #[test]
    fn default_clinic_has_weekday_slots_with_a_lunch_break() {
        let s = Schedule::from_config(&BookingConfig::default()).unwrap();
        let wed = s.slots_on(d("2026-11-25"));
        assert_eq!(wed.len(), 14);
        assert_eq!(wed.first(), Some(&t("09:00")));
        assert_eq!(wed.last(), Some(&t("16:30")));
        assert!(!wed.contains(&t("12:00")) && !wed.contains(&t("12:30")));
        assert!(s.slots_on(d("2026-11-28")).is_empty(), "Saturday is closed");
    }

    #[test]
    fn each_rule_refuses_with_its_own_reason() {
        let s = clinic();
        // 08:00 UTC on Tuesday 24 November is 09:00 in Berlin.
        let now = at("2026-11-24T08:10:00Z");
        assert_eq!(s.today(now), d("2026-11-24"));
        assert!(s.check_slot(d("2026-11-24"), t("09:30"), now).is_ok());
        assert!(matches!(
            s.check_slot(d("2026-11-24"), t("09:00"), now),
            Err(SlotError::InPast { .. })
        ));
        assert!(matches!(
            s.check_slot(d("2026-11-23"), t("10:00"), now),
            Err(SlotError::InPast { .. })
        ));
        assert!(matches!(
            s.check_slot(d("2026-11-28"), t("10:00"), now),
            Err(SlotError::Closed { .. })
        ));
        assert!(matches!(
            s.check_slot(d("2026-12-24"), t("10:00"), now),
            Err(SlotError::Closed { .. })
        ));
        assert!(matches!(
            s.check_slot(d("2026-11-25"), t("12:00"), now),
            Err(SlotError::OutsideHours { .. })
        ));
        assert!(matches!(
            s.check_slot(d("2026-11-25"), t("16:45"), now),
            Err(SlotError::OutsideHours { .. })
        ));
        assert_eq!(
            s.check_slot(d("2026-11-25"), t("10:10"), now),
            Err(SlotError::OffGrid {
                minutes: 30,
                nearest: vec![t("10:00"), t("10:30")]
            })
        );
        assert!(
            s.check_slot(d("2027-02-22"), t("10:00"), now).is_ok(),
            "90 days ahead"
        );
        assert!(matches!(
            s.check_slot(d("2027-02-23"), t("10:00"), now),
            Err(SlotError::TooFarAhead { .. })
        ));
        let msg = s
            .check_slot(d("2026-11-25"), t("12:00"), now)
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "12:00 is outside opening hours on Wednesday 25 November 2026; that day the clinic is open from 09:00 to 12:00 and from 13:00 to 17:00."
        );
    }

    #[test]
    fn today_follows_the_clinic_time_zone() {
        let s = clinic();
        // 23:30 UTC on the 24th is already the 25th in Berlin.
        let now = at("2026-11-24T23:30:00Z");
        assert_eq!(s.today(now), d("2026-11-25"));
        assert!(matches!(
            s.check_slot(d("2026-11-24"), t("16:30"), now),
            Err(SlotError::InPast { .. })
        ));
    }

    #[test]
    fn ranges_are_bounded() {
        let s = clinic();
        let now = at("2026-11-24T08:10:00Z");
        assert_eq!(
            s.check_range(d("2026-11-24"), d("2026-12-24"), now),
            Ok((d("2026-11-24"), d("2026-12-24")))
        );
        assert_eq!(
            s.check_range(d("2026-11-24"), d("2026-12-25"), now),
            Err(RangeError::TooLong { days: 32 })
        );
        assert!(matches!(
            s.check_range(d("2026-11-25"), d("2026-11-24"), now),
            Err(RangeError::Backwards { .. })
        ));
        assert!(matches!(
            s.check_range(d("2026-11-23"), d("2026-11-25"), now),
            Err(RangeError::InPast { .. })
        ));
        // Cut at the horizon rather than refused.
        assert_eq!(
            s.check_range(d("2027-02-10"), d("2027-03-01"), now),
            Ok((d("2027-02-10"), d("2027-02-22")))
        );
        assert!(matches!(
            s.check_range(d("2027-03-01"), d("2027-03-02"), now),
            Err(RangeError::TooFarAhead { .. })
        ));
    }

    #[test]
    fn free_slots_skip_taken_and_past_ones() {
        let s = clinic();
        let now = at("2026-11-24T08:10:00Z"); // 09:10 in Berlin
        let taken: HashSet<NaiveTime> = [t("10:00")].into();
        let free = s.free_slots(d("2026-11-24"), now, &taken);
        assert_eq!(free.first(), Some(&t("09:30")));
        assert!(!free.contains(&t("10:00")));
        assert_eq!(free.len(), 12);
    }

    #[test]
    fn daylight_saving_gap_has_no_slots() {
        let mut c = BookingConfig {
            time_zone: "Europe/Berlin".into(),
            ..BookingConfig::default()
        };
        c.hours = crate::booking::WeeklyHours::every_day(&["00:00-24:00"]);
        let s = Schedule::from_config(&c).unwrap();
        // 29 March 2026: clocks jump from 02:00 to 03:00.
        let slots = s.slots_on(d("2026-03-29"));
        assert!(!slots.contains(&t("02:00")) && !slots.contains(&t("02:30")));
        assert_eq!(slots.len(), 46);
        assert_eq!(s.slots_on(d("2026-03-30")).len(), 48);
        assert_eq!(s.slots_on(d("2026-03-30")).last(), Some(&t("23:30")));
    }

    #[test]
    fn bad_config_names_the_key() {
        let bad = |f: &dyn Fn(&mut BookingConfig)| {
            let mut c = BookingConfig::default();
            f(&mut c);
            Schedule::from_config(&c).unwrap_err().key
        };
        assert_eq!(
            bad(&|c| c.time_zone = "Mars/Olympus".into()),
            "booking.time_zone"
        );
        assert_eq!(bad(&|c| c.slot_minutes = 0), "booking.slot_minutes");
        assert_eq!(bad(&|c| c.max_days_ahead = 0), "booking.max_days_ahead");
        assert_eq!(
            bad(&|c| c.default_region = "Narnia".into()),
            "booking.default_region"
        );
        assert_eq!(
            bad(&|c| c.hours.tuesday = vec!["9-5".into()]),
            "booking.hours.tuesday"
        );
        assert_eq!(
            bad(&|c| c.hours.friday = vec!["17:00-09:00".into()]),
            "booking.hours.friday"
        );
        assert_eq!(
            bad(&|c| c.hours.sunday = vec!["09:00-12:00".into(), "11:00-13:00".into()]),
            "booking.hours.sunday"
        );
    }

    #[test]
    fn config_reads_from_toml_and_refuses_unknown_keys() {
        let c: BookingConfig = toml::from_str(
            "time_zone = \"America/New_York\"\nslot_minutes = 15\nclosed_dates = [\"2026-12-25\"]\n[hours]\nsaturday = [\"10:00-12:00\"]\n",
        )
        .unwrap();
        assert_eq!(c.slot_minutes, 15);
        assert_eq!(c.hours.saturday, vec!["10:00-12:00".to_string()]);
        assert_eq!(c.hours.monday, BookingConfig::default().hours.monday);
        assert_eq!(c.database_url, "sqlite://voxrelay.db");
        let s = Schedule::from_config(&c).unwrap();
        assert_eq!(s.slots_on(d("2026-11-28")).len(), 8);
        assert!(s.slots_on(d("2026-12-25")).is_empty());
        assert!(toml::from_str::<BookingConfig>("slot_minute = 15").is_err());
        assert!(toml::from_str::<BookingConfig>("[hours]\nmon = []").is_err());
    }
}
