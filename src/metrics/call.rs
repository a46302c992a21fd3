//! The per-frame metrics, counted by each call's task on its own and added to the shared
//! series a few times a second.
//!
//! A call records about 200 figures a second (the time each 20 ms frame took, each way, how
//! long each frame was held, each tick). Written straight into shared histograms, each figure
//! took a lock, and the two worker threads passed the lock's and the buckets' cache lines back
//! and forth for every frame of every call: 2 % of the relay's CPU with 100 WebSocket calls
//! (docs/performance.md, "The per-frame metrics"). [`CallMetrics`] counts into plain numbers
//! the call's task owns and adds them to the shared [`BatchHistogram`]s and counters every
//! [`FLUSH_TICKS`] ticks, and when it is dropped with the call.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use super::{Metrics, DIRECTIONS, LATE_TICK};

/// Upper bounds of the frame processing histogram: 5 µs .. 10 ms.
pub const FRAME_BOUNDS: [f64; 11] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01,
];
/// Upper bounds of the added latency histogram: 5 ms .. 200 ms.
pub const LATENCY_BOUNDS: [f64; 10] = [0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2];
/// The bounds of each kind of per-frame series, as `Metrics::per_frame` is laid out.
const BOUNDS: [&[f64]; 2] = [&FRAME_BOUNDS, &LATENCY_BOUNDS];
/// The most buckets a [`Tally`] holds: the bounds above and `+Inf`.
const MAX_BUCKETS: usize = 12;

/// Ticks between two additions of a call's counts to the shared series: 200 ms, so the
/// overload guard's one-second windows still see each second's ticks.
pub const FLUSH_TICKS: u32 = 10;

/// Counts of one histogram: observations per bucket (not cumulative), their sum and number.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    sum: f64,
    count: u64,
    buckets: [u64; MAX_BUCKETS],
}

impl Tally {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        // the first bucket whose upper bound holds it, as prometheus-client's histogram does;
        // past the last bound (or NaN), `+Inf`
        let i = bounds.iter().position(|b| *b >= v).unwrap_or(bounds.len());
        self.buckets[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    fn add(&mut self, other: &Tally) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

/// A histogram that takes many observations in one go ([`BatchHistogram::add`]), rendered
/// exactly as prometheus-client's own histogram with the same bounds.
#[derive(Debug, Clone)]
pub struct BatchHistogram {
    bounds: &'static [f64],
    tally: Arc<Mutex<Tally>>,
}

impl BatchHistogram {
    /// A histogram with these upper bounds (at most 11; `+Inf` is added).
    pub fn new(bounds: &'static [f64]) -> Self {
        assert!(bounds.len() < MAX_BUCKETS, "too many bounds");
        Self {
            bounds,
            tally: Arc::default(),
        }
    }

    /// One observation.
    pub fn observe(&self, v: f64) {
        self.lock().observe(self.bounds, v);
    }

    /// Observations counted elsewhere with the same bounds.
    pub fn add(&self, tally: &Tally) {
        self.lock().add(tally);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        // a tally is whole after every statement: a panic elsewhere leaves it usable
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TypedMetric for BatchHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for BatchHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let t = *self.lock();
        // prometheus-client's form: per-bucket counts, the last bound f64::MAX for `+Inf`
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(t.buckets)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(t.sum, t.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One call's per-frame figures: counted here by the call's task, added to the relay's
/// [`Metrics`] every [`FLUSH_TICKS`] ticks and when dropped.
#[derive(Debug)]
pub struct CallMetrics {
    shared: Arc<Metrics>,
    /// Frame processing time, then added latency, each by direction (`to_agent`,
    /// `to_caller`): laid out as the shared series they go to (`Metrics::per_frame`).
    tallies: [[Tally; 2]; 2],
    ticks: u32,
    late_ticks: u32,
}

impl CallMetrics {
    /// Counts for a call whose figures go to `shared`.
    pub fn new(shared: Arc<Metrics>) -> Self {
        Self {
            shared,
            tallies: [[Tally::default(); 2]; 2],
            ticks: 0,
            late_ticks: 0,
        }
    }

    /// The time one frame took in `direction` (`to_agent` or `to_caller`).
    pub fn frame(&mut self, direction: &'static str, seconds: f64) {
        self.observe(0, direction, seconds);
    }

    /// How long one frame was held in `direction`.
    pub fn added_latency(&mut self, direction: &'static str, seconds: f64) {
        self.observe(1, direction, seconds);
    }

    fn observe(&mut self, which: usize, direction: &'static str, seconds: f64) {
        match direction_index(direction) {
            Some(i) => self.tallies[which][i].observe(BOUNDS[which], seconds),
            // not one of the two: straight to the shared family, as `Metrics` does
            None => self.shared.observe(which, direction, seconds),
        }
    }

    /// One media tick that started `late` after its time; every [`FLUSH_TICKS`] ticks the
    /// counts go to the shared series.
    pub fn tick(&mut self, late: Duration) {
        self.ticks += 1;
        if late > LATE_TICK {
            self.late_ticks += 1;
        }
        if self.ticks >= FLUSH_TICKS {
            self.flush();
        }
    }

    /// Adds what was counted since the last time to the shared series.
    pub fn flush(&mut self) {
        let m = &self.shared;
        for (tallies, series) in self.tallies.iter_mut().zip(&m.per_frame) {
            for (t, h) in tallies.iter_mut().zip(series) {
                if t.count > 0 {
                    h.add(t);
                    *t = Tally::default();
                }
            }
        }
        if self.ticks > 0 {
            m.media_ticks.inc_by(u64::from(self.ticks));
            self.ticks = 0;
        }
        if self.late_ticks > 0 {
            m.media_ticks_late.inc_by(u64::from(self.late_ticks));
            self.late_ticks = 0;
        }
    }
}

impl Drop for CallMetrics {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The index of `direction` in [`DIRECTIONS`], the second index of `Metrics::per_frame`.
pub(super) fn direction_index(direction: &str) -> Option<usize> {
    DIRECTIONS.iter().position(|d| *d == direction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    /// Renders one histogram under the name `h`.
    fn render(register: impl FnOnce(&mut Registry)) -> String {
        let mut r = Registry::default();
        register(&mut r);
        let mut out = String::new();
        encode(&mut out, &r).unwrap();
        out
    }

    #[test]
    fn renders_as_prometheus_clients_own_histogram() {
        // on the bounds, between them, under the first and past the last
        let values = [0.0, 0.005, 0.007, 0.01, 0.2, 0.21, 3.0, 0.045, 0.045];
        let theirs = Histogram::new(LATENCY_BOUNDS);
        let ours = BatchHistogram::new(&LATENCY_BOUNDS);
        let mut tally = Tally::default();
        for (n, v) in values.iter().enumerate() {
            theirs.observe(*v);
            // half one at a time, half counted apart and added in one go
            if n % 2 == 0 {
                ours.observe(*v);
            } else {
                tally.observe(&LATENCY_BOUNDS, *v);
            }
        }
        ours.add(&tally);
        let a = render(|r| r.register("h", "help", theirs));
        let b = render(|r| r.register("h", "help", ours));
        assert_eq!(a, b);
        assert!(b.contains("h_bucket{le=\"0.01\"} 4"), "{b}");
        assert!(b.contains("h_bucket{le=\"+Inf\"} 9"), "{b}");
    }

    #[test]
    fn a_calls_counts_reach_the_shared_series_every_few_ticks_and_at_its_end() {
        let shared = Arc::new(Metrics::new());
        let mut call = CallMetrics::new(shared.clone());
        let count = |name: &str| {
            let text = shared.render();
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .map(|v| v.parse::<f64>().unwrap())
        };
        for n in 0..FLUSH_TICKS - 1 {
            call.frame("to_agent", 0.000_03);
            call.added_latency("to_caller", 0.015);
            call.tick(Duration::from_millis(if n == 0 { 15 } else { 1 }));
        }
        // not yet added: the shared series are as they started
        assert_eq!(shared.media_ticks.get(), 0);
        assert_eq!(
            count("voxrelay_frame_processing_seconds_count{direction=\"to_agent\"}"),
            Some(0.0)
        );
        call.tick(Duration::ZERO);
        assert_eq!(shared.media_ticks.get(), u64::from(FLUSH_TICKS));
        assert_eq!(shared.media_ticks_late.get(), 1);
        assert_eq!(
            count("voxrelay_frame_processing_seconds_count{direction=\"to_agent\"}"),
            Some(f64::from(FLUSH_TICKS - 1))
        );
        assert_eq!(
            count("voxrelay_added_latency_seconds_bucket{le=\"0.02\",direction=\"to_caller\"}"),
            Some(f64::from(FLUSH_TICKS - 1))
        );
        // what is left when the call ends is not lost
        call.frame("to_caller", 0.000_01);
        call.added_latency("to_agent", 0.035);
        call.tick(Duration::ZERO);
        drop(call);
        assert_eq!(shared.media_ticks.get(), u64::from(FLUSH_TICKS) + 1);
        assert_eq!(
            count("voxrelay_frame_processing_seconds_count{direction=\"to_caller\"}"),
            Some(1.0)
        );
        assert_eq!(
            count("voxrelay_added_latency_seconds_sum{direction=\"to_agent\"}"),
            Some(0.035)
        );
    }
}
