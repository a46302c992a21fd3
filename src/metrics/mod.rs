//! The relay's Prometheus metrics: one registry, written to by the call tasks and rendered by
//! `GET /metrics`. The figures a call records every frame are counted by its own task and
//! added here a few times a second ([`CallMetrics`]); nothing is allocated per packet.
//!
//! Names follow the Prometheus conventions: a `voxrelay_` prefix, base units (seconds),
//! `_total` on counters (added by the encoder), and labels from closed sets (outcomes, causes,
//! known tool names, directions; never call ids, numbers or names a model made up).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod call;
pub use call::{BatchHistogram, CallMetrics, Tally, FLUSH_TICKS};
use call::{FRAME_BOUNDS, LATENCY_BOUNDS};

/// A label set with one label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// How the call ended.
    pub outcome: String,
}

/// A label set with one label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    /// What failed.
    pub cause: String,
}

/// A label set with one label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `to_agent` or `to_caller`.
    pub direction: &'static str,
}

/// Tool label set.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    /// The tool: one of [`KNOWN_TOOLS`], or [`OTHER_TOOL`].
    pub tool: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// Label: where a call's ephemeral key came from.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeySourceLabel {
    /// `pool` (minted ahead) or `minted` (during the call's set-up).
    pub source: &'static str,
}

/// Trunk label set.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrunkLabel {
    /// The trunk's name.
    pub trunk: String,
}

/// The tool names a `tool` label may take: the booking tools and the relay's own. The model
/// names the tool it calls, so any other name it makes up is counted as [`OTHER_TOOL`]: labels
/// come from a closed set and a model cannot grow the series without bound.
pub const KNOWN_TOOLS: [&str; 6] = [
    crate::booking::TOOL_NAMES[0],
    crate::booking::TOOL_NAMES[1],
    crate::booking::TOOL_NAMES[2],
    crate::booking::TOOL_NAMES[3],
    crate::bridge::agent::END_CALL,
    crate::bridge::agent::TRANSFER_CALL,
];

/// The `tool` label of every name not in [`KNOWN_TOOLS`].
pub const OTHER_TOOL: &str = "other";

/// The label for a tool name from the model.
pub fn tool_label(name: &str) -> &'static str {
    KNOWN_TOOLS
        .iter()
        .find(|k| **k == name)
        .copied()
        .unwrap_or(OTHER_TOOL)
}

fn setup_hist() -> Histogram {
    Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0])
}

fn frame_hist() -> BatchHistogram {
    BatchHistogram::new(&FRAME_BOUNDS)
}

fn latency_hist() -> BatchHistogram {
    BatchHistogram::new(&LATENCY_BOUNDS)
}

fn residual_hist() -> Histogram {
    Histogram::new([0.0, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.2, 0.5])
}

fn tool_hist() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.7, 1.0, 2.5, 5.0])
}

fn jitter_hist() -> Histogram {
    Histogram::new([0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1])
}

/// How late a media tick may start and still count as on time: half a frame.
pub const LATE_TICK: Duration = Duration::from_millis(10);

/// Every metric the relay exports.
pub struct Metrics {
    registry: Registry,
    /// Calls in progress.
    pub calls_active: Gauge,
    /// Calls ended, by outcome.
    pub calls: Family<OutcomeLabel, Counter>,
    /// INVITE to 200 OK.
    pub call_setup_seconds: Histogram,
    /// Time to process one 20 ms frame, per direction.
    pub frame_seconds: Family<DirectionLabel, BatchHistogram, fn() -> BatchHistogram>,
    /// How long the relay holds audio, per direction (jitter buffer toward the agent, pacer
    /// toward the caller).
    pub added_latency_seconds: Family<DirectionLabel, BatchHistogram, fn() -> BatchHistogram>,
    /// Agent audio the caller still heard after the relay learnt of a barge-in.
    pub barge_in_residual_seconds: Histogram,
    /// Caller interarrival jitter, sampled every few seconds per call.
    pub rtp_jitter_seconds: Histogram,
    /// Caller RTP packets lost.
    pub rtp_lost_packets: Counter,
    /// Caller frames concealed.
    pub concealed_frames: Counter,
    /// Tool call latency, per tool and outcome.
    pub tool_seconds: Family<ToolLabels, Histogram, fn() -> Histogram>,
    /// Realtime sessions that failed, by cause.
    pub realtime_failures: Family<CauseLabel, Counter>,
    /// Bookings created by callers.
    pub bookings_created: Counter,
    /// Output guardrail trips.
    pub guardrail_trips: Counter,
    /// Short caller turns over the agent taken for backchannel: the agent went on.
    pub backchannels: Counter,
    /// Function calls refused because the agent does not have the tool.
    pub tools_refused: Counter,
    /// Reminder calls placed, by how they went (`answered`, `busy`, `no_answer`,
    /// `unreachable`, `refused`, `failed`).
    pub reminder_calls: Family<OutcomeLabel, Counter>,
    /// Registration state per trunk (1 registered, 0 not).
    pub trunk_registered: Family<TrunkLabel, Gauge>,
    /// Requests to the cluster's internal routes refused (unsigned, wrongly signed, replayed,
    /// or for another relay).
    pub cluster_requests_refused: Counter,
    /// Ephemeral keys minted ahead and held ready, all agents together.
    pub openai_keys_ready: Gauge,
    /// Ephemeral keys the calls used, by where they came from.
    pub openai_keys_used: Family<KeySourceLabel, Counter>,
    /// 20 ms media ticks run by the calls' tasks.
    pub media_ticks: Counter,
    /// Media ticks that started more than [`LATE_TICK`] after their time: the call's task
    /// waited that long for a thread, so its audio went out late.
    pub media_ticks_late: Counter,
    /// 1 while new calls are refused because the media ticks run late (`sip.overload_late_ticks_percent`).
    pub overloaded: Gauge,
    /// The per-direction series, looked up once: the calls add their counts to them several
    /// times a second, so no label hashing or family lock on that path.
    per_frame: [[BatchHistogram; 2]; 2],
}

const DIRECTIONS: [&str; 2] = ["to_agent", "to_caller"];

/// One direction's series of a family (a handle sharing the family's data).
fn series(
    family: &Family<DirectionLabel, BatchHistogram, fn() -> BatchHistogram>,
    direction: &'static str,
) -> BatchHistogram {
    family.get_or_create(&DirectionLabel { direction }).clone()
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered.
    pub fn new() -> Self {
        let frame_seconds: Family<DirectionLabel, BatchHistogram, fn() -> BatchHistogram> =
            Family::new_with_constructor(frame_hist);
        let added_latency_seconds: Family<DirectionLabel, BatchHistogram, fn() -> BatchHistogram> =
            Family::new_with_constructor(latency_hist);
        let mut m = Self {
            registry: Registry::with_prefix("voxrelay"),
            calls_active: Gauge::default(),
            calls: Family::default(),
            call_setup_seconds: setup_hist(),
            frame_seconds: frame_seconds.clone(),
            added_latency_seconds: added_latency_seconds.clone(),
            barge_in_residual_seconds: residual_hist(),
            rtp_jitter_seconds: jitter_hist(),
            rtp_lost_packets: Counter::default(),
            concealed_frames: Counter::default(),
            tool_seconds: Family::new_with_constructor(tool_hist),
            realtime_failures: Family::default(),
            bookings_created: Counter::default(),
            guardrail_trips: Counter::default(),
            backchannels: Counter::default(),
            tools_refused: Counter::default(),
            reminder_calls: Family::default(),
            trunk_registered: Family::default(),
            cluster_requests_refused: Counter::default(),
            openai_keys_ready: Gauge::default(),
            openai_keys_used: Family::default(),
            media_ticks: Counter::default(),
            media_ticks_late: Counter::default(),
            overloaded: Gauge::default(),
            per_frame: [
                DIRECTIONS.map(|d| series(&frame_seconds, d)),
                DIRECTIONS.map(|d| series(&added_latency_seconds, d)),
            ],
        };
        let r = &mut m.registry;
        r.register("calls_active", "Calls in progress", m.calls_active.clone());
        r.register("calls", "Calls ended, by outcome", m.calls.clone());
        r.register(
            "call_setup_seconds",
            "Time from INVITE to 200 OK, realtime session included",
            m.call_setup_seconds.clone(),
        );
        r.register(
            "frame_processing_seconds",
            "Time to process one 20 ms audio frame, per direction",
            m.frame_seconds.clone(),
        );
        r.register(
            "added_latency_seconds",
            "Audio held by the relay per direction: jitter buffer to the agent, pacer to the caller (as if the agent's audio had not been paused while the caller talked over it)",
            m.added_latency_seconds.clone(),
        );
        r.register(
            "barge_in_residual_seconds",
            "Agent audio the caller still heard after the relay learnt of an interruption",
            m.barge_in_residual_seconds.clone(),
        );
        r.register(
            "rtp_jitter_seconds",
            "Interarrival jitter of callers' RTP, sampled every 5 s per call",
            m.rtp_jitter_seconds.clone(),
        );
        r.register(
            "rtp_lost_packets",
            "Callers' RTP packets lost in the network",
            m.rtp_lost_packets.clone(),
        );
        r.register(
            "concealed_frames",
            "Frames of callers' audio concealed by the jitter buffer",
            m.concealed_frames.clone(),
        );
        r.register(
            "tool_call_seconds",
            "Tool call latency, per tool and outcome",
            m.tool_seconds.clone(),
        );
        r.register(
            "realtime_failures",
            "Realtime sessions that failed, by cause",
            m.realtime_failures.clone(),
        );
        r.register(
            "bookings_created",
            "Bookings created by callers",
            m.bookings_created.clone(),
        );
        r.register(
            "guardrail_trips",
            "Agent answers stopped by an output guardrail",
            m.guardrail_trips.clone(),
        );
        r.register(
            "backchannels",
            "Short caller turns over the agent (\"uh-huh\", \"okay\") that did not stop it",
            m.backchannels.clone(),
        );
        r.register(
            "tools_refused",
            "Function calls refused because the agent does not have the tool",
            m.tools_refused.clone(),
        );
        r.register(
            "reminder_calls",
            "Reminder calls placed, by how they went (answered, busy, no_answer, unreachable, refused, failed)",
            m.reminder_calls.clone(),
        );
        r.register(
            "trunk_registered",
            "Registration state per trunk (1 registered)",
            m.trunk_registered.clone(),
        );
        r.register(
            "cluster_requests_refused",
            "Requests to the cluster's internal routes refused (unsigned, wrongly signed, replayed)",
            m.cluster_requests_refused.clone(),
        );
        r.register(
            "openai_keys_ready",
            "Ephemeral keys minted ahead and held ready (openai.key_pool per agent)",
            m.openai_keys_ready.clone(),
        );
        r.register(
            "openai_keys_used",
            "Ephemeral keys used by calls, from the pool or minted during set-up",
            m.openai_keys_used.clone(),
        );
        r.register(
            "media_ticks",
            "20 ms media ticks run by the calls",
            m.media_ticks.clone(),
        );
        r.register(
            "media_ticks_late",
            "Media ticks that started more than 10 ms (half a frame) after their time",
            m.media_ticks_late.clone(),
        );
        r.register(
            "overloaded",
            "1 while new calls get 503 because the calls' media ticks run late",
            m.overloaded.clone(),
        );
        m
    }

    /// A shared instance.
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::new())
    }

    /// Counts a call that ended.
    pub fn call_ended(&self, outcome: &str) {
        self.calls
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts a reminder call that was answered or not.
    pub fn reminder_call(&self, outcome: &str) {
        self.reminder_calls
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts a realtime failure.
    pub fn realtime_failed(&self, cause: &str) {
        self.realtime_failures
            .get_or_create(&CauseLabel {
                cause: cause.to_string(),
            })
            .inc();
    }

    /// Records a tool call; a name not in [`KNOWN_TOOLS`] is counted as [`OTHER_TOOL`].
    pub fn tool(&self, tool: &str, ok: bool, seconds: f64) {
        self.tool_seconds
            .get_or_create(&ToolLabels {
                tool: tool_label(tool),
                outcome: if ok { "ok" } else { "error" },
            })
            .observe(seconds);
    }

    /// Records the time one frame took in `direction` (`to_agent` or `to_caller`), straight
    /// into the shared series; a call's task counts through [`CallMetrics`] instead.
    pub fn frame(&self, direction: &'static str, seconds: f64) {
        self.observe(0, direction, seconds);
    }

    fn observe(&self, which: usize, direction: &'static str, seconds: f64) {
        match call::direction_index(direction) {
            Some(i) => self.per_frame[which][i].observe(seconds),
            None => {
                let family = if which == 0 {
                    &self.frame_seconds
                } else {
                    &self.added_latency_seconds
                };
                family
                    .get_or_create(&DirectionLabel { direction })
                    .observe(seconds);
            }
        }
    }

    /// Records how long one frame was held in `direction`, straight into the shared series;
    /// a call's task counts through [`CallMetrics`] instead.
    pub fn added_latency(&self, direction: &'static str, seconds: f64) {
        self.observe(1, direction, seconds);
    }

    /// The Prometheus text exposition (OpenMetrics-compatible text).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_names_in_the_conventions() {
        let m = Metrics::new();
        m.call_ended("caller_bye");
        m.tool("create_booking", true, 0.02);
        m.frame("to_agent", 0.000_03);
        m.bookings_created.inc();
        let text = m.render();
        assert!(
            text.contains("voxrelay_calls_total{outcome=\"caller_bye\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "voxrelay_tool_call_seconds_count{tool=\"create_booking\",outcome=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("voxrelay_bookings_created_total 1"), "{text}");
        assert!(text.contains("# TYPE voxrelay_barge_in_residual_seconds histogram"));
    }

    #[test]
    fn tool_names_from_the_model_come_from_a_closed_set() {
        let m = Metrics::new();
        for i in 0..100 {
            m.tool(&format!("made_up_{i}"), false, 0.001);
        }
        m.tool("find_bookings\"} 1\n", false, 0.001);
        m.tool("find_bookings", true, 0.001);
        let text = m.render();
        assert!(
            text.contains("voxrelay_tool_call_seconds_count{tool=\"other\",outcome=\"error\"} 101"),
            "{text}"
        );
        assert!(
            text.contains("tool=\"find_bookings\",outcome=\"ok\""),
            "{text}"
        );
        assert!(!text.contains("made_up"), "{text}");
        let series = text
            .lines()
            .filter(|l| l.starts_with("voxrelay_tool_call_seconds_count"))
            .count();
        assert_eq!(series, 2, "{text}");
        assert_eq!(tool_label("end_call"), "end_call");
    }
}
