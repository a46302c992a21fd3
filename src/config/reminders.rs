//! `[reminders]`: the relay calls patients before their appointments (src/reminders,
//! docs/reminders.md).
//!
//! ```toml
//! [reminders]
//! enabled = true
//! agent = "receptionist"        # who talks; agents.default when empty
//! trunk = "main"                # which trunk calls out; the first that can when unset
//! before_minutes = 1440         # call this long before the appointment
//! min_notice_minutes = 120      # no call once the appointment is nearer than this
//! max_attempts = 3              # busy or no answer: tried again, this many calls in all
//! retry_after_ms = 3600000      # the wait before another attempt
//! max_concurrent = 2            # reminder calls at once (ringing or talking)
//! ring_timeout_ms = 30000       # a call not answered by then is cancelled: no answer
//!
//! [reminders.hours]             # when calls may go out (the clinic's time zone);
//! monday = ["09:00-19:00"]      # the clinic's opening hours when the section is absent
//! saturday = ["10:00-13:00"]
//! ```

use serde::{Deserialize, Serialize};

use super::WeeklyHours;

/// `[reminders]`. Off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemindersConfig {
    /// Call patients before their appointments.
    pub enabled: bool,
    /// The agent that talks (`agents.default` when empty).
    pub agent: String,
    /// The trunk that calls (the first trunk that can place calls when unset).
    pub trunk: Option<String>,
    /// How long before the appointment the call is due (minutes).
    pub before_minutes: u32,
    /// No call once the appointment is nearer than this (minutes): a reminder that cannot go
    /// out in time (outside calling hours, retries used up) is skipped, not made late.
    pub min_notice_minutes: u32,
    /// When calls may go out, in the clinic's time zone; the clinic's opening hours
    /// (`[booking.hours]`) when absent.
    pub hours: Option<WeeklyHours>,
    /// Calls in all for one appointment: a busy callee, no answer or a failed call is tried
    /// again until then (1..=10).
    pub max_attempts: u32,
    /// The wait before another attempt (ms, ≥ 1000).
    pub retry_after_ms: u64,
    /// Reminder calls at once, ringing or talking (1..=100).
    pub max_concurrent: u32,
    /// A call still ringing after this is cancelled and counts as not answered (ms,
    /// 5000..=120000).
    pub ring_timeout_ms: u64,
    /// How often the bookings are looked at (ms, 100..=600000).
    pub poll_ms: u64,
}

impl Default for RemindersConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            agent: String::new(),
            trunk: None,
            before_minutes: 24 * 60,
            min_notice_minutes: 120,
            hours: None,
            max_attempts: 3,
            retry_after_ms: 3_600_000,
            max_concurrent: 2,
            ring_timeout_ms: 30_000,
            poll_ms: 30_000,
        }
    }
}

impl RemindersConfig {
    /// What is wrong with the section: the dotted key and why.
    pub fn problem(&self) -> Option<(&'static str, String, &'static str)> {
        let checks: [(&'static str, bool, String, &'static str); 6] = [
            (
                "reminders.before_minutes",
                (1..=14 * 24 * 60).contains(&self.before_minutes)
                    && self.min_notice_minutes < self.before_minutes,
                self.before_minutes.to_string(),
                "must be 1..=20160 and more than reminders.min_notice_minutes",
            ),
            (
                "reminders.max_attempts",
                (1..=10).contains(&self.max_attempts),
                self.max_attempts.to_string(),
                "must be 1..=10",
            ),
            (
                "reminders.retry_after_ms",
                self.retry_after_ms >= 1000,
                self.retry_after_ms.to_string(),
                "must be at least 1000",
            ),
            (
                "reminders.max_concurrent",
                (1..=100).contains(&self.max_concurrent),
                self.max_concurrent.to_string(),
                "must be 1..=100",
            ),
            (
                "reminders.ring_timeout_ms",
                (5_000..=120_000).contains(&self.ring_timeout_ms),
                self.ring_timeout_ms.to_string(),
                "must be 5000..=120000",
            ),
            (
                "reminders.poll_ms",
                (100..=600_000).contains(&self.poll_ms),
                self.poll_ms.to_string(),
                "must be 100..=600000",
            ),
        ];
        checks
            .into_iter()
            .find(|(_, ok, _, _)| !ok)
            .map(|(key, _, value, reason)| (key, value, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass_and_each_bad_value_names_its_key() {
        assert_eq!(RemindersConfig::default().problem(), None);
        let key = |f: fn(&mut RemindersConfig)| {
            let mut c = RemindersConfig::default();
            f(&mut c);
            c.problem().map(|(k, _, _)| k)
        };
        assert_eq!(
            key(|c| c.before_minutes = 0),
            Some("reminders.before_minutes")
        );
        assert_eq!(
            key(|c| c.min_notice_minutes = c.before_minutes),
            Some("reminders.before_minutes")
        );
        assert_eq!(key(|c| c.max_attempts = 0), Some("reminders.max_attempts"));
        assert_eq!(key(|c| c.max_attempts = 11), Some("reminders.max_attempts"));
        assert_eq!(
            key(|c| c.retry_after_ms = 999),
            Some("reminders.retry_after_ms")
        );
        assert_eq!(
            key(|c| c.max_concurrent = 0),
            Some("reminders.max_concurrent")
        );
        assert_eq!(
            key(|c| c.ring_timeout_ms = 4_999),
            Some("reminders.ring_timeout_ms")
        );
        assert_eq!(key(|c| c.poll_ms = 50), Some("reminders.poll_ms"));
    }
}
