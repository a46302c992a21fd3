//! When reminder calls go out, IO-free: the calling hours as instants, the first call for an
//! appointment and what follows each attempt. Every decision takes "now", so tests drive it
//! on a fixed clock.

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::booking::error::BookingConfigError;
use crate::booking::schedule::parse_week;
use crate::config::{RemindersConfig, WeeklyHours};
use crate::sip::DialOutcome;

/// The hours calls may go out, in a time zone.
#[derive(Debug, Clone)]
pub struct CallingHours {
    tz: Tz,
    /// Per weekday, Monday first: ranges in minutes since midnight, sorted.
    days: [Vec<(u32, u32)>; 7],
}

impl CallingHours {
    /// `hours` read on the clock of `tz`; the error names the bad key under `prefix`.
    pub fn new(tz: Tz, hours: &WeeklyHours, prefix: &str) -> Result<Self, BookingConfigError> {
        Ok(Self {
            tz,
            days: parse_week(hours, prefix)?,
        })
    }

    /// The first instant at or after `t` within the hours; `None` when there is none in the
    /// next eight days (no hours at all).
    pub fn next_open(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let today = t.with_timezone(&self.tz).date_naive();
        for date in today.iter_days().take(8) {
            let ranges = &self.days[date.weekday().num_days_from_monday() as usize];
            for &(open, close) in ranges {
                let (Some(start), Some(end)) = (self.at(date, open), self.at(date, close)) else {
                    continue;
                };
                if t < end {
                    return Some(t.max(start));
                }
            }
        }
        None
    }

    /// The last minute at or before `t` within the hours (a range's last minute when `t` is
    /// past it); `None` when there is none in the eight days before.
    pub fn last_open(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let today = t.with_timezone(&self.tz).date_naive();
        for back in 0..8 {
            let date = today - chrono::Duration::days(back);
            let ranges = &self.days[date.weekday().num_days_from_monday() as usize];
            for &(open, close) in ranges.iter().rev() {
                let (Some(start), Some(end)) = (self.at(date, open), self.at(date, close)) else {
                    continue;
                };
                if start <= t {
                    return Some(t.min(end - chrono::Duration::minutes(1)));
                }
            }
        }
        None
    }

    /// The instant of minute `m` of `date` on the local clock (the next day's midnight for
    /// 24:00; the earlier instant when a clock change repeats it; `None` when it skips it).
    fn at(&self, date: NaiveDate, m: u32) -> Option<DateTime<Utc>> {
        let (date, m) = if m >= 24 * 60 {
            (date.succ_opt()?, m - 24 * 60)
        } else {
            (date, m)
        };
        let time = NaiveTime::from_hms_opt(m / 60, m % 60, 0)?;
        self.tz
            .from_local_datetime(&date.and_time(time))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Why an appointment gets no (more) reminder calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Booked after its reminder was due: the patient has just spoken with the clinic.
    BookedLate,
    /// No calling time is left before `min_notice_minutes` ahead of it.
    TooLate,
    /// Every attempt was made.
    AttemptsUsed,
    /// The callee's trunk refused the number (4xx other than busy or no answer): more calls
    /// would be refused alike.
    Refused,
    /// Cancelled or moved since its reminder was planned.
    Cancelled,
    /// The network said the number is not in service (special information tones).
    Unreachable,
    /// Another appointment of the same number that day has its reminder: one call a day per
    /// number (the agent finds the others with the booking tools).
    SameDay,
    /// The relay cannot call the number (no trunk places calls, or the stored phone is not a
    /// number it dials).
    CannotCall,
}

impl Skip {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::BookedLate => "booked_late",
            Skip::TooLate => "too_late",
            Skip::AttemptsUsed => "attempts_used",
            Skip::Refused => "refused",
            Skip::Cancelled => "cancelled",
            Skip::Unreachable => "unreachable",
            Skip::SameDay => "same_day",
            Skip::CannotCall => "cannot_call",
        }
    }
}

/// What to do next for one appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Call at this instant.
    CallAt(DateTime<Utc>),
    /// The reminder was given (someone or a voicemail answered).
    Done,
    /// No more calls.
    Skip(Skip),
}

/// The reminder rules.
#[derive(Debug, Clone)]
pub struct Plan {
    hours: CallingHours,
    before: chrono::Duration,
    min_notice: chrono::Duration,
    max_attempts: u32,
    retry_after: chrono::Duration,
}

impl Plan {
    /// The rules of `cfg`, with its hours (or `fallback`, the clinic's) read in `tz`.
    pub fn new(
        cfg: &RemindersConfig,
        tz: Tz,
        fallback: &WeeklyHours,
    ) -> Result<Self, BookingConfigError> {
        let hours = match &cfg.hours {
            Some(h) => CallingHours::new(tz, h, "reminders.hours")?,
            None => CallingHours::new(tz, fallback, "booking.hours")?,
        };
        let minutes = |m: u32| chrono::Duration::minutes(i64::from(m));
        Ok(Self {
            hours,
            before: minutes(cfg.before_minutes),
            min_notice: minutes(cfg.min_notice_minutes),
            max_attempts: cfg.max_attempts,
            retry_after: chrono::Duration::from_std(Duration::from_millis(cfg.retry_after_ms))
                .unwrap_or(chrono::Duration::hours(1)),
        })
    }

    /// How far ahead appointments are looked at.
    pub fn horizon(&self) -> chrono::Duration {
        self.before
    }

    /// The first call for an appointment at `appointment`, booked at `booked`: `before` ahead
    /// of it, moved into the calling hours, never later than `min_notice` ahead of it; when
    /// the hours leave no time for that (a Sunday), the last calling minute before (the
    /// Saturday).
    pub fn first(
        &self,
        now: DateTime<Utc>,
        appointment: DateTime<Utc>,
        booked: DateTime<Utc>,
    ) -> Next {
        let due = appointment - self.before;
        if booked > due {
            return Next::Skip(Skip::BookedLate);
        }
        match self.call_from(due.max(now), appointment) {
            Next::Skip(Skip::TooLate) if due > now => self
                .hours
                .last_open(due)
                .filter(|t| *t >= now)
                .map(Next::CallAt)
                .unwrap_or_else(|| self.call_from(now, appointment)),
            next => next,
        }
    }

    /// What follows attempt number `attempts` (1 for the first call) ending with `outcome`
    /// at `now`.
    pub fn after(
        &self,
        now: DateTime<Utc>,
        appointment: DateTime<Utc>,
        attempts: u32,
        outcome: &DialOutcome,
    ) -> Next {
        match outcome {
            DialOutcome::Answered => return Next::Done,
            DialOutcome::Refused(s) if *s < 500 => return Next::Skip(Skip::Refused),
            DialOutcome::Unreachable => return Next::Skip(Skip::Unreachable),
            _ => {}
        }
        if attempts >= self.max_attempts {
            return Next::Skip(Skip::AttemptsUsed);
        }
        self.call_from(now + self.retry_after, appointment)
    }

    /// The first calling time at or after `from` for `appointment`, or too late.
    pub fn call_from(&self, from: DateTime<Utc>, appointment: DateTime<Utc>) -> Next {
        match self.hours.next_open(from) {
            Some(t) if t <= appointment - self.min_notice => Next::CallAt(t),
            _ => Next::Skip(Skip::TooLate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn plan(tz: &str, f: impl FnOnce(&mut RemindersConfig)) -> Plan {
        let mut cfg = RemindersConfig {
            enabled: true,
            ..Default::default()
        };
        let mut hours = WeeklyHours::every_day(&["09:00-19:00"]);
        hours.saturday = vec!["10:00-13:00".into()];
        hours.sunday = Vec::new();
        cfg.hours = Some(hours);
        f(&mut cfg);
        Plan::new(&cfg, tz.parse().unwrap(), &WeeklyHours::default()).unwrap()
    }

    #[test]
    fn the_call_goes_out_a_day_before_within_the_hours() {
        let p = plan("UTC", |_| {});
        let booked = at("2026-12-01T12:00:00Z");
        // Thursday 10:00 → Wednesday 10:00
        let appt = at("2026-12-10T10:00:00Z");
        assert_eq!(
            p.first(at("2026-12-02T00:00:00Z"), appt, booked),
            Next::CallAt(at("2026-12-09T10:00:00Z"))
        );
        // Thursday 08:00 → Wednesday 08:00 is before the hours → Wednesday 09:00
        let appt = at("2026-12-10T08:00:00Z");
        assert_eq!(
            p.first(at("2026-12-02T00:00:00Z"), appt, booked),
            Next::CallAt(at("2026-12-09T09:00:00Z"))
        );
        // Monday 09:30 → Sunday 09:30: no hours on Sunday, and Monday 09:00 is 30 minutes
        // ahead of it, inside the two hours' notice → Saturday's last calling minute
        let appt = at("2026-12-07T09:30:00Z");
        assert_eq!(
            p.first(at("2026-12-02T00:00:00Z"), appt, booked),
            Next::CallAt(at("2026-12-05T12:59:00Z"))
        );
        // ...found on Sunday: too late
        assert_eq!(
            p.first(at("2026-12-06T10:00:00Z"), appt, booked),
            Next::Skip(Skip::TooLate)
        );
        // Monday 14:00 → Sunday 14:00 → Monday 09:00 (five hours ahead)
        let appt = at("2026-12-07T14:00:00Z");
        assert_eq!(
            p.first(at("2026-12-02T00:00:00Z"), appt, booked),
            Next::CallAt(at("2026-12-07T09:00:00Z"))
        );
        // Sunday 12:00 → Saturday 12:00, inside Saturday's 10:00-13:00
        let appt = at("2026-12-13T12:00:00Z");
        assert_eq!(
            p.first(at("2026-12-02T00:00:00Z"), appt, booked),
            Next::CallAt(at("2026-12-12T12:00:00Z"))
        );
    }

    #[test]
    fn a_call_found_late_goes_now_if_the_hours_allow() {
        let p = plan("UTC", |_| {});
        let booked = at("2026-12-01T12:00:00Z");
        let appt = at("2026-12-10T16:00:00Z");
        // the relay was down at Wednesday 16:00; found at Thursday 08:30 → Thursday 09:00
        assert_eq!(
            p.first(at("2026-12-10T08:30:00Z"), appt, booked),
            Next::CallAt(at("2026-12-10T09:00:00Z"))
        );
        // found at Thursday 13:00 → at once
        assert_eq!(
            p.first(at("2026-12-10T13:00:00Z"), appt, booked),
            Next::CallAt(at("2026-12-10T13:00:00Z"))
        );
        // found at 14:30: less than two hours to go
        assert_eq!(
            p.first(at("2026-12-10T14:30:00Z"), appt, booked),
            Next::Skip(Skip::TooLate)
        );
        // a call due but found late goes now only within the hours and the notice
        let now_ok = |now: DateTime<Utc>| p.call_from(now, appt) == Next::CallAt(now);
        assert!(now_ok(at("2026-12-10T13:00:00Z")));
        assert!(!now_ok(at("2026-12-10T14:30:00Z")));
        assert!(!now_ok(at("2026-12-09T20:00:00Z")));
    }

    #[test]
    fn a_booking_made_inside_its_reminder_window_gets_no_call() {
        let p = plan("UTC", |_| {});
        let appt = at("2026-12-10T16:00:00Z");
        assert_eq!(
            p.first(at("2026-12-09T17:00:00Z"), appt, at("2026-12-09T16:30:00Z")),
            Next::Skip(Skip::BookedLate)
        );
    }

    #[test]
    fn busy_and_unanswered_calls_are_retried_then_given_up() {
        let p = plan("UTC", |c| {
            c.retry_after_ms = 30 * 60_000;
            c.max_attempts = 3;
        });
        let appt = at("2026-12-10T16:00:00Z");
        let now = at("2026-12-09T16:00:00Z");
        assert_eq!(
            p.after(now, appt, 1, &DialOutcome::Busy(486)),
            Next::CallAt(at("2026-12-09T16:30:00Z"))
        );
        assert_eq!(
            p.after(now, appt, 2, &DialOutcome::NoAnswer),
            Next::CallAt(at("2026-12-09T16:30:00Z"))
        );
        assert_eq!(
            p.after(now, appt, 3, &DialOutcome::NoAnswer),
            Next::Skip(Skip::AttemptsUsed)
        );
        assert_eq!(
            p.after(now, appt, 1, &DialOutcome::Failed("timeout".into())),
            Next::CallAt(at("2026-12-09T16:30:00Z"))
        );
        assert_eq!(
            p.after(now, appt, 1, &DialOutcome::Refused(503)),
            Next::CallAt(at("2026-12-09T16:30:00Z"))
        );
        assert_eq!(
            p.after(now, appt, 1, &DialOutcome::Refused(404)),
            Next::Skip(Skip::Refused)
        );
        assert_eq!(p.after(now, appt, 1, &DialOutcome::Answered), Next::Done);
        assert_eq!(
            p.after(now, appt, 1, &DialOutcome::Unreachable),
            Next::Skip(Skip::Unreachable)
        );
        // a retry that would fall outside the hours waits for the next morning
        let evening = at("2026-12-09T18:45:00Z");
        let appt = at("2026-12-10T15:00:00Z");
        assert_eq!(
            p.after(evening, appt, 1, &DialOutcome::Busy(486)),
            Next::CallAt(at("2026-12-10T09:00:00Z"))
        );
        // ...unless that is too close to the appointment
        let appt = at("2026-12-10T10:00:00Z");
        assert_eq!(
            p.after(evening, appt, 1, &DialOutcome::Busy(486)),
            Next::Skip(Skip::TooLate)
        );
    }

    #[test]
    fn the_hours_are_the_clinics_wall_clock_across_a_clock_change() {
        // New York, 8 March 2026: clocks go from 02:00 to 03:00 (UTC-5 → UTC-4)
        let p = plan("America/New_York", |c| {
            c.hours = Some(WeeklyHours::every_day(&["09:00-19:00"]));
        });
        let booked = at("2026-03-01T12:00:00Z");
        // Monday 9 March 10:00 EDT (14:00Z) → Sunday 8 March 10:00 EDT = 14:00Z
        assert_eq!(
            p.first(
                at("2026-03-02T00:00:00Z"),
                at("2026-03-09T14:00:00Z"),
                booked
            ),
            Next::CallAt(at("2026-03-08T14:00:00Z"))
        );
        // Sunday 8 March 08:00 EDT → Saturday 08:00 EST (13:00Z), before the hours →
        // Saturday 09:00 EST = 14:00Z
        assert_eq!(
            p.first(
                at("2026-03-02T00:00:00Z"),
                at("2026-03-08T12:00:00Z"),
                booked
            ),
            Next::CallAt(at("2026-03-07T14:00:00Z"))
        );
    }

    #[test]
    fn no_hours_at_all_means_no_call() {
        let p = plan("UTC", |c| {
            c.hours = Some(WeeklyHours::every_day(&[]));
        });
        assert_eq!(
            p.first(
                at("2026-12-02T00:00:00Z"),
                at("2026-12-10T10:00:00Z"),
                at("2026-12-01T00:00:00Z")
            ),
            Next::Skip(Skip::TooLate)
        );
    }

    #[test]
    fn a_bad_range_names_its_key() {
        let cfg = RemindersConfig {
            hours: Some(WeeklyHours {
                tuesday: vec!["9-5".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = Plan::new(&cfg, chrono_tz::UTC, &WeeklyHours::default()).unwrap_err();
        assert_eq!(e.key, "reminders.hours.tuesday");
    }
}
