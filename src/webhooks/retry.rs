//! What happens after an attempt at a delivery: delivered, tried again later (exponential
//! backoff with jitter, at least what the receiver's `Retry-After` asked), or given up after
//! the last attempt. IO-free: the time and the jitter are given.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::booking::store::{AttemptUpdate, DeliveryStatus};

/// A webhook's retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failed attempt; each later wait doubles it.
    pub first: Duration,
    /// The longest wait.
    pub cap: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
}

/// How an attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered with this HTTP status; `retry_after` is its `Retry-After` in
    /// seconds, when it sent one.
    Answered {
        /// The status.
        status: u16,
        /// `Retry-After`, seconds.
        retry_after: Option<u64>,
    },
    /// No answer: refused, reset, timed out (the reason, without secrets).
    NoAnswer(String),
}

impl RetryPolicy {
    /// The wait after failed attempt number `n` (1 for the first), before jitter.
    pub fn wait_after(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(31);
        self.first.saturating_mul(1u32 << doublings).min(self.cap)
    }

    /// The delivery's state after attempt number `n` (1 for the first) went as `attempt`, at
    /// `now`; `jitter` in `[0, 1)` lengthens the wait by up to a quarter, so that deliveries
    /// held up by one outage do not all come back at the same instant.
    pub fn after(
        &self,
        n: u32,
        attempt: &Attempt,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> AttemptUpdate {
        let (last_status, last_error, retry_after) = match attempt {
            Attempt::Answered { status, .. } if (200..300).contains(status) => {
                return AttemptUpdate {
                    status: DeliveryStatus::Delivered,
                    attempts: n,
                    next_attempt_at: None,
                    last_status: Some(*status),
                    last_error: None,
                    delivered_at: Some(now),
                };
            }
            Attempt::Answered {
                status,
                retry_after,
            } => (
                Some(*status),
                Some(format!("the receiver answered {status}")),
                *retry_after,
            ),
            Attempt::NoAnswer(why) => (None, Some(why.clone()), None),
        };
        if n >= self.max_attempts {
            return AttemptUpdate {
                status: DeliveryStatus::Failed,
                attempts: n,
                next_attempt_at: None,
                last_status,
                last_error,
                delivered_at: None,
            };
        }
        let base = self.wait_after(n);
        let jittered = base.mul_f64(1.0 + 0.25 * jitter.clamp(0.0, 1.0));
        let asked = retry_after.map_or(Duration::ZERO, Duration::from_secs);
        let wait = jittered.max(asked).min(self.cap.max(base));
        let next = now
            .checked_add_signed(chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX))
            .unwrap_or(now);
        AttemptUpdate {
            status: DeliveryStatus::Pending,
            attempts: n,
            next_attempt_at: Some(next),
            last_status,
            last_error,
            delivered_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            first: Duration::from_secs(1),
            cap: Duration::from_secs(300),
            max_attempts: 5,
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn answered(status: u16) -> Attempt {
        Attempt::Answered {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn a_2xx_is_delivered_at_once() {
        for s in [200, 202, 204] {
            let u = policy().after(1, &answered(s), t0(), 0.0);
            assert_eq!(u.status, DeliveryStatus::Delivered);
            assert_eq!(u.delivered_at, Some(t0()));
            assert_eq!(u.next_attempt_at, None);
            assert_eq!(u.last_status, Some(s));
        }
    }

    #[test]
    fn failures_wait_twice_as_long_each_time_then_give_up() {
        let p = policy();
        let mut waits = Vec::new();
        for n in 1..5 {
            let u = p.after(n, &answered(503), t0(), 0.0);
            assert_eq!(u.status, DeliveryStatus::Pending);
            assert_eq!(u.attempts, n);
            assert_eq!(u.last_error.as_deref(), Some("the receiver answered 503"));
            waits.push((u.next_attempt_at.unwrap() - t0()).num_seconds());
        }
        assert_eq!(waits, [1, 2, 4, 8]);
        let last = p.after(
            5,
            &Attempt::NoAnswer("connection refused".into()),
            t0(),
            0.0,
        );
        assert_eq!(last.status, DeliveryStatus::Failed);
        assert_eq!(last.next_attempt_at, None);
        assert_eq!(last.last_status, None);
        assert_eq!(last.last_error.as_deref(), Some("connection refused"));
    }

    #[test]
    fn the_wait_is_capped_and_jitter_adds_at_most_a_quarter() {
        let p = RetryPolicy {
            max_attempts: 100,
            ..policy()
        };
        assert_eq!(p.wait_after(40), Duration::from_secs(300));
        let u = p.after(40, &answered(500), t0(), 0.99);
        assert_eq!((u.next_attempt_at.unwrap() - t0()).num_seconds(), 300);
        let u = p.after(3, &answered(500), t0(), 0.5);
        assert_eq!(
            (u.next_attempt_at.unwrap() - t0()).num_milliseconds(),
            4_500
        );
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let p = policy();
        let slow = Attempt::Answered {
            status: 429,
            retry_after: Some(30),
        };
        let u = p.after(1, &slow, t0(), 0.0);
        assert_eq!((u.next_attempt_at.unwrap() - t0()).num_seconds(), 30);
        let absurd = Attempt::Answered {
            status: 503,
            retry_after: Some(u64::MAX),
        };
        let u = p.after(1, &absurd, t0(), 0.0);
        assert_eq!((u.next_attempt_at.unwrap() - t0()).num_seconds(), 300);
    }

    #[test]
    fn a_redirect_or_client_error_is_retried_like_any_failure() {
        for s in [301, 400, 401, 404, 410] {
            let u = policy().after(1, &answered(s), t0(), 0.0);
            assert_eq!(u.status, DeliveryStatus::Pending, "{s}");
        }
    }
}
