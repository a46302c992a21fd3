//! Overload: whether the relay can take another call without making the calls it carries
//! sound worse.
//!
//! Each call's task runs a media tick every 20 ms (the caller's frame to the agent, one packet
//! to the caller). When the machine has no CPU to spare, the ticks start late, and every call's
//! audio goes out late together: that is what callers hear, whatever the cause (too many calls,
//! another process, a starved virtual machine). So the relay counts its late ticks
//! ([`crate::metrics::LATE_TICK`]) and, once the late share has stayed at or above
//! `sip.overload_late_ticks_percent` for [`ENTER_WINDOWS`] seconds in a row, answers new
//! INVITEs and OPTIONS probes with 503 and Retry-After (a proxy in front sends new calls to
//! another relay; a trunk tries its next route). It takes calls again once the share has
//! stayed under half the threshold for [`LEAVE_WINDOWS`] seconds. The calls already up go on.
//!
//! IO-free: [`Overload::handle_counts`] takes the metrics' tick counters at
//! [`Overload::poll_timeout`]; [`Overload::poll_output`] gives each change. The shell,
//! [`spawn`], feeds it and sets the flag the SIP server reads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// How often the late share is judged.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Windows in a row at or above the threshold before new calls are refused.
pub const ENTER_WINDOWS: u32 = 3;
/// Windows in a row under half the threshold before new calls are taken again.
pub const LEAVE_WINDOWS: u32 = 5;
/// Fewer ticks than this in a window (five calls' worth) say nothing: a handful of calls does
/// not overload a relay, and one stall would be most of their ticks.
pub const MIN_TICKS: u64 = 5 * 50;

/// A change of the overload state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// New calls are refused from now on; the share of late ticks in the last window.
    Entered { late_percent: f64 },
    /// New calls are taken again.
    Left,
}

/// The overload state. See the module docs.
#[derive(Debug, Clone)]
pub struct Overload {
    threshold: f64,
    /// The counters at the last window's end.
    last: Option<(u64, u64)>,
    next: Duration,
    bad: u32,
    good: u32,
    overloaded: bool,
    change: Option<Change>,
}

impl Overload {
    /// Refuses new calls when `threshold` per cent or more of the ticks start late.
    pub fn new(threshold: f64) -> Self {
        Self {
            threshold,
            last: None,
            next: Duration::ZERO,
            bad: 0,
            good: 0,
            overloaded: false,
            change: None,
        }
    }

    /// The tick counters (all ticks, late ticks) read at `now`. Counts given before
    /// [`Self::poll_timeout`] are taken as the window's end all the same.
    pub fn handle_counts(&mut self, now: Duration, ticks: u64, late: u64) {
        self.next = now + WINDOW;
        let Some((ticks0, late0)) = self.last.replace((ticks, late)) else {
            return;
        };
        let (ticks, late) = (ticks.saturating_sub(ticks0), late.saturating_sub(late0));
        let share = if ticks < MIN_TICKS {
            0.0
        } else {
            late.min(ticks) as f64 * 100.0 / ticks as f64
        };
        if share >= self.threshold {
            self.bad += 1;
            self.good = 0;
        } else if share < self.threshold / 2.0 {
            self.good += 1;
            self.bad = 0;
        } else {
            // between the two: neither worse nor recovered
            self.bad = 0;
            self.good = 0;
        }
        if !self.overloaded && self.bad >= ENTER_WINDOWS {
            self.overloaded = true;
            self.change = Some(Change::Entered {
                late_percent: share,
            });
        } else if self.overloaded && self.good >= LEAVE_WINDOWS {
            self.overloaded = false;
            self.change = Some(Change::Left);
        }
    }

    /// When the counters should be read next.
    pub fn poll_timeout(&self) -> Duration {
        self.next
    }

    /// The last change, once.
    pub fn poll_output(&mut self) -> Option<Change> {
        self.change.take()
    }

    /// Whether new calls are refused.
    pub fn is_overloaded(&self) -> bool {
        self.overloaded
    }
}

/// Judges the metrics' tick counters every [`WINDOW`] and keeps `flag` set while new calls
/// are to be refused; `None` when `threshold` is 0 (off).
pub fn spawn(
    metrics: Arc<Metrics>,
    flag: Arc<AtomicBool>,
    threshold: f64,
) -> Option<JoinHandle<()>> {
    if threshold <= 0.0 {
        return None;
    }
    Some(tokio::spawn(async move {
        let t0 = tokio::time::Instant::now();
        let mut core = Overload::new(threshold);
        loop {
            tokio::time::sleep_until(t0 + core.poll_timeout()).await;
            let (ticks, late) = (metrics.media_ticks.get(), metrics.media_ticks_late.get());
            core.handle_counts(t0.elapsed(), ticks, late);
            let Some(change) = core.poll_output() else {
                continue;
            };
            // the flag first: what the log says is already so
            let on = core.is_overloaded();
            flag.store(on, Ordering::Release);
            metrics.overloaded.set(i64::from(on));
            match change {
                Change::Entered { late_percent } => warn!(
                    late_percent = format_args!("{late_percent:.1}"),
                    threshold, "overloaded: the calls' media ticks run late; new calls get 503"
                ),
                Change::Left => info!("no longer overloaded: new calls are taken"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = WINDOW;

    /// Feeds one window per entry, each `(ticks, late)` in that window; the changes seen.
    fn run(core: &mut Overload, windows: &[(u64, u64)]) -> Vec<Option<Change>> {
        if core.last.is_none() {
            core.handle_counts(Duration::ZERO, 0, 0);
        }
        let (mut ticks, mut late) = core.last.expect("read once");
        windows
            .iter()
            .map(|&(t, l)| {
                ticks += t;
                late += l;
                let now = core.poll_timeout();
                core.handle_counts(now, ticks, late);
                core.poll_output()
            })
            .collect()
    }

    #[test]
    fn a_sustained_late_share_refuses_new_calls_after_three_windows() {
        let mut o = Overload::new(2.0);
        // 200 calls, a fifth of the ticks late (as measured with 200 WebRTC calls on 2 cores)
        let seen = run(&mut o, &[(10_000, 2_000); 3]);
        assert_eq!(seen[..2], [None, None]);
        assert!(
            matches!(seen[2], Some(Change::Entered { late_percent }) if (late_percent - 20.0).abs() < 1e-9)
        );
        assert!(o.is_overloaded());
    }

    #[test]
    fn a_healthy_relay_is_never_overloaded() {
        let mut o = Overload::new(2.0);
        // 100 calls with 0.1 % of their ticks late, for a minute
        let seen = run(&mut o, &[(5_000, 5); 60]);
        assert!(seen.iter().all(Option::is_none));
        assert!(!o.is_overloaded());
    }

    #[test]
    fn one_stall_does_not_refuse_calls() {
        let mut o = Overload::new(2.0);
        // a 200 ms stall of the host makes every call's ticks late for one window, twice
        let seen = run(
            &mut o,
            &[
                (5_000, 500),
                (5_000, 0),
                (5_000, 0),
                (5_000, 500),
                (5_000, 500),
                (5_000, 5),
            ],
        );
        assert!(seen.iter().all(Option::is_none), "{seen:?}");
        assert!(!o.is_overloaded());
    }

    #[test]
    fn calls_are_taken_again_after_five_quiet_windows() {
        let mut o = Overload::new(2.0);
        run(&mut o, &[(10_000, 1_000); 3]);
        assert!(o.is_overloaded());
        // calls end, the share falls: between the threshold and its half is not recovered
        let seen = run(
            &mut o,
            &[(8_000, 120), (8_000, 100), (8_000, 10), (8_000, 10)],
        );
        assert!(seen.iter().all(Option::is_none));
        assert!(o.is_overloaded());
        // a window at the threshold again starts the count anew
        let seen = run(
            &mut o,
            &[
                (8_000, 200),
                (8_000, 10),
                (8_000, 10),
                (8_000, 10),
                (8_000, 10),
            ],
        );
        assert!(seen.iter().all(Option::is_none));
        let seen = run(&mut o, &[(8_000, 10)]);
        assert_eq!(seen, [Some(Change::Left)]);
        assert!(!o.is_overloaded());
    }

    #[test]
    fn a_few_calls_say_nothing_however_late() {
        let mut o = Overload::new(2.0);
        // four calls on a starved machine: every tick late, but too few to judge
        let seen = run(&mut o, &[(200, 200); 10]);
        assert!(seen.iter().all(Option::is_none));
        assert!(!o.is_overloaded());
    }

    #[test]
    fn the_counters_are_read_once_a_window() {
        let mut o = Overload::new(2.0);
        assert_eq!(o.poll_timeout(), Duration::ZERO);
        o.handle_counts(Duration::ZERO, 0, 0);
        assert_eq!(o.poll_timeout(), S);
        // the first reading only starts the first window
        let mut fresh = Overload::new(2.0);
        fresh.handle_counts(S * 7, 1_000_000, 1_000_000);
        assert_eq!(fresh.poll_output(), None);
        assert_eq!(fresh.poll_timeout(), S * 8);
    }
}
