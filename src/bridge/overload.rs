//! Overload: whether the relay can take another call without making the calls it carries
//! sound worse.
//!
//! Each call's task runs a media tick every 20 ms (the caller's frame to the agent, one packet
//! to the caller). When the machine has no CPU to spare, the ticks start late, and every call's
//! audio goes out late together: that is what callers hear, whatever the cause (too many calls,
//! another process, a starved virtual machine). So the relay counts its late ticks
//! ([`crate::metrics::LATE_TICK`]) and judges their share once a [`WINDOW`]. Once
//! [`ENTER_WINDOWS`] of the last [`RECENT_WINDOWS`] windows had a share at or above
//! `sip.overload_late_ticks_percent`, it answers new INVITEs and OPTIONS probes with 503 and
//! Retry-After (a proxy in front sends new calls to another relay; a trunk tries its next
//! route). It takes calls again once the share has stayed under half the threshold for
//! [`LEAVE_WINDOWS`] windows in a row. The calls already up go on.
//!
//! Why these counts: one stall of the host (a second's window with a fifth of its ticks
//! late) says nothing about the calls, so one late window is not enough. But a relay near its
//! limit is late in bursts, not steadily: with 200 WebRTC calls on two cores, windows of 4–47 %
//! came between windows of none (docs/performance.md, "Overload"), so the windows need not be
//! consecutive. And a calm between two bursts is no recovery, so leaving takes longer.
//!
//! IO-free: [`Overload::handle_counts`] takes the metrics' tick counters at
//! [`Overload::poll_timeout`]; [`Overload::poll_output`] gives each change. The shell,
//! [`spawn`], feeds it and sets the flag the SIP server reads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// How often the late share is judged.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Late windows among the last [`RECENT_WINDOWS`] before new calls are refused.
pub const ENTER_WINDOWS: u32 = 2;
/// The windows [`ENTER_WINDOWS`] is counted in.
pub const RECENT_WINDOWS: u32 = 5;
/// Windows in a row under half the threshold before new calls are taken again.
pub const LEAVE_WINDOWS: u32 = 10;
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
    /// One bit a window, the last in the lowest bit: set when it was late.
    recent: u32,
    /// Windows in a row under half the threshold.
    calm: u32,
    overloaded: bool,
    /// The last window's share of late ticks, per cent (0 with too few ticks to judge).
    share: f64,
    change: Option<Change>,
}

impl Overload {
    /// Refuses new calls when `threshold` per cent or more of the ticks start late.
    pub fn new(threshold: f64) -> Self {
        Self {
            threshold,
            last: None,
            next: Duration::ZERO,
            recent: 0,
            calm: 0,
            overloaded: false,
            share: 0.0,
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
        self.share = share;
        let late_window = share >= self.threshold;
        self.recent = (self.recent << 1 | u32::from(late_window)) & ((1 << RECENT_WINDOWS) - 1);
        // between half the threshold and the threshold: not late, not calm either
        self.calm = if share < self.threshold / 2.0 {
            self.calm + 1
        } else {
            0
        };
        if !self.overloaded && self.recent.count_ones() >= ENTER_WINDOWS {
            self.overloaded = true;
            self.change = Some(Change::Entered {
                late_percent: share,
            });
        } else if self.overloaded && self.calm >= LEAVE_WINDOWS {
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

    /// The last window's share of late ticks, per cent.
    pub fn late_percent(&self) -> f64 {
        self.share
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
            debug!(
                late_percent = format_args!("{:.2}", core.late_percent()),
                ticks_total = ticks,
                "media ticks judged"
            );
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
    fn two_late_windows_within_five_refuse_new_calls() {
        let mut o = Overload::new(2.0);
        // 200 WebRTC calls on two cores, as measured: bursts between calm windows
        let seen = run(
            &mut o,
            &[(9_700, 10), (9_711, 431), (10_000, 0), (10_000, 0)],
        );
        assert_eq!(seen[..2], [None, None]);
        let seen = run(&mut o, &[(10_115, 2_598)]);
        assert!(
            matches!(seen[0], Some(Change::Entered { late_percent }) if (late_percent - 25.68).abs() < 0.01),
            "{seen:?}"
        );
        assert!(o.is_overloaded());
    }

    /// Asserts that a relay whose ticks go as in `windows` takes calls all along.
    fn never_refuses(windows: &[(u64, u64)]) {
        let mut o = Overload::new(2.0);
        let seen = run(&mut o, windows);
        assert!(seen.iter().all(Option::is_none), "{seen:?}");
        assert!(!o.is_overloaded());
    }

    #[test]
    fn a_healthy_relay_is_never_overloaded() {
        // 100 calls with 0.1 % of their ticks late, for a minute
        never_refuses(&[(5_000, 5); 60]);
    }

    #[test]
    fn a_stall_now_and_then_does_not_refuse_calls() {
        // a 200 ms stall of the host every five seconds makes every call's ticks late for one
        // window in five, for a minute
        let windows: Vec<(u64, u64)> = (0..60)
            .map(|i| {
                if i % 5 == 0 {
                    (5_000, 1_000)
                } else {
                    (5_000, 0)
                }
            })
            .collect();
        never_refuses(&windows);
    }

    #[test]
    fn calls_are_taken_again_after_ten_calm_windows() {
        let mut o = Overload::new(2.0);
        run(&mut o, &[(10_000, 1_000); 2]);
        assert!(o.is_overloaded());
        // a calm between bursts is no recovery: nine calm windows, then a burst
        let mut windows = vec![(10_000, 0); 9];
        windows.push((10_000, 4_000));
        let seen = run(&mut o, &windows);
        assert!(seen.iter().all(Option::is_none));
        // calls end, the share falls: between the threshold and its half is not calm
        let seen = run(&mut o, &[(8_000, 120), (8_000, 100)]);
        assert!(seen.iter().all(Option::is_none));
        let seen = run(&mut o, &[(8_000, 10); 9]);
        assert!(seen.iter().all(Option::is_none));
        assert!(o.is_overloaded());
        let seen = run(&mut o, &[(8_000, 10)]);
        assert_eq!(seen, [Some(Change::Left)]);
        assert!(!o.is_overloaded());
        // and the windows late before it count no more
        let seen = run(&mut o, &[(8_000, 800)]);
        assert_eq!(seen, [None]);
    }

    #[test]
    fn a_few_calls_say_nothing_however_late() {
        // four calls on a starved machine: every tick late, but too few to judge
        never_refuses(&[(200, 200); 10]);
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
        assert_eq!(fresh.late_percent(), 0.0);
    }
}
