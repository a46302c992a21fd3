//! Scenarios: what the simulated model says and does, and which faults it injects.
//!
//! A scenario is a TOML file (format in `config/scenarios/README.md`); every scenario of
//! `config/scenarios` is built in under its file stem (`booking`, `echo`, `fault-mint-429`, …). Steps run in order, one per response; a step with `after = "caller"` waits for a
//! caller turn (speech or a text item), `say` speaks a prompt, `call` emits a function call and
//! waits for its `function_call_output`, `branches` lets a text item (DTMF digits) jump to
//! another step, and `end = true` stops the script (further responses use `fallback`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::voice;

/// An error loading a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML does not fit the format.
    #[error("bad scenario {name}: {message}")]
    Invalid {
        /// File or built-in name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// Whether the model follows a script or plays the caller back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Follow `steps`.
    #[default]
    Script,
    /// Answer each caller turn with that turn's own audio.
    Echo,
}

/// The TOML form of a prompt.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptSpec {
    text: String,
    #[serde(default)]
    audio: Option<String>,
}

/// The TOML form of a function call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallSpec {
    name: String,
    #[serde(default)]
    arguments: Option<toml::Table>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    heard: Option<String>,
    #[serde(default)]
    say: Option<PromptSpec>,
    #[serde(default)]
    call: Option<CallSpec>,
    #[serde(default)]
    branches: BTreeMap<String, String>,
    #[serde(default)]
    end: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioSpec {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    fallback: Option<PromptSpec>,
    #[serde(default)]
    idle: Option<PromptSpec>,
    #[serde(default)]
    default_heard: Option<String>,
    #[serde(default)]
    short_turns: Option<ShortTurns>,
    #[serde(default)]
    steps: Vec<StepSpec>,
    #[serde(default)]
    faults: Faults,
}

/// Short caller turns (a backchannel, a quick "no"): a turn shorter than `max_ms` is heard
/// as the next entry of `heard`, in order, without using a step's `heard` (no speech
/// recognition here: the script says what the short sounds were).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShortTurns {
    /// Turns shorter than this (ms of audio) are short.
    pub max_ms: u32,
    /// What each short turn says, in order; once used up, short turns are heard as others.
    pub heard: Vec<String>,
}

/// Something the model says: the transcript and the 24 kHz audio.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The transcript; `{output.key}` is filled from the last tool output.
    pub text: String,
    /// The audio at 24 kHz.
    pub audio: Arc<[i16]>,
}

/// A function call the model makes.
#[derive(Debug, Clone)]
pub struct Call {
    /// The tool's name.
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

/// One step of a script.
#[derive(Debug, Clone)]
pub struct Step {
    /// Name for `branches`.
    pub id: Option<String>,
    /// Waits for a caller turn before running.
    pub after_caller: bool,
    /// The transcript given to the caller turn this step consumes.
    pub heard: Option<String>,
    /// What the model says.
    pub say: Option<Prompt>,
    /// The function the model calls (after saying `say`, if both).
    pub call: Option<Call>,
    /// Text item → step id.
    pub branches: BTreeMap<String, usize>,
    /// Stop the script after this step.
    pub end: bool,
}

/// A fault on `client_secrets` or `/calls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFault {
    /// Answer with this status (and OpenAI's error shape).
    #[serde(default)]
    pub status: Option<u16>,
    /// Never answer (the client must time out).
    #[serde(default)]
    pub hang: bool,
    /// Answer after this delay.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Only the first N requests are faulted (0 or absent: all).
    #[serde(default)]
    pub times: Option<u32>,
}

/// A raw text or an event sent at a time into the session.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Injection {
    /// Milliseconds after the session opens.
    pub at_ms: u64,
    /// Text sent as is (malformed JSON, unknown events).
    #[serde(default)]
    pub raw: Option<String>,
    /// An event object; `event_id` is added when missing.
    #[serde(default)]
    pub event: Option<Value>,
}

/// Faults a scenario injects.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// `POST /v1/realtime/client_secrets`.
    #[serde(default)]
    pub mint: Option<HttpFault>,
    /// `POST /v1/realtime/calls`.
    #[serde(default)]
    pub calls: Option<HttpFault>,
    /// The SDP answer points at a port that never answers ICE checks.
    #[serde(default)]
    pub ice_never_completes: bool,
    /// The data channel (or WebSocket) closes this long after the session opens.
    #[serde(default)]
    pub close_after_ms: Option<u64>,
    /// WebRTC only: this long after the session opens, the simulator's peer goes silent
    /// (no more ICE consent answers, RTP, DTLS or SCTP), as if the network dropped it.
    #[serde(default)]
    pub media_stops_after_ms: Option<u64>,
    /// An `error` event `session_expired` at this time, then the session closes.
    #[serde(default)]
    pub session_expired_after_ms: Option<u64>,
    /// Raw texts and events sent at given times.
    #[serde(default)]
    pub inject: Vec<Injection>,
}

/// A loaded scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Script or echo.
    pub mode: Mode,
    /// Said when the script has nothing (left) to say.
    pub fallback: Prompt,
    /// Said when `idle_timeout_ms` fires.
    pub idle: Prompt,
    /// Transcript of a caller turn no step names.
    pub default_heard: String,
    /// How short caller turns are heard.
    pub short_turns: Option<ShortTurns>,
    /// The script.
    pub steps: Vec<Step>,
    /// Faults.
    pub faults: Faults,
}

impl Scenario {
    /// A bundled scenario's name (`booking`, `echo`, … see [`crate::bundled`]), or a path to
    /// a TOML file.
    pub fn load(name_or_path: &str) -> Result<Arc<Self>, ScenarioError> {
        match crate::bundled::scenario(name_or_path) {
            Some(text) => Self::from_toml(text, name_or_path, None),
            None => {
                let path = Path::new(name_or_path);
                let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Self::from_toml(&text, &path.display().to_string(), path.parent())
            }
        }
        .map(Arc::new)
    }

    /// Parses a scenario; `dir` resolves relative `audio` paths.
    pub fn from_toml(text: &str, name: &str, dir: Option<&Path>) -> Result<Self, ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid {
            name: name.to_string(),
            message,
        };
        let spec: ScenarioSpec = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let prompt = |p: &PromptSpec| -> Result<Prompt, ScenarioError> {
            let audio = match &p.audio {
                None => voice::stand_in(&p.text),
                Some(a) => match voice::builtin(a) {
                    Some(audio) => audio,
                    None => {
                        let path = dir.map(|d| d.join(a)).unwrap_or_else(|| PathBuf::from(a));
                        let bytes = std::fs::read(&path).map_err(|e| {
                            invalid(format!(
                                "audio {a:?} is neither a built-in prompt ({}) nor a readable file: {e}",
                                voice::builtin_names().collect::<Vec<_>>().join(", ")
                            ))
                        })?;
                        Arc::from(
                            voice::read_wav(&bytes)
                                .map_err(|e| invalid(format!("audio {a:?}: {e}")))?,
                        )
                    }
                },
            };
            Ok(Prompt {
                text: p.text.clone(),
                audio,
            })
        };
        let ids: BTreeMap<String, usize> = spec
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.id.clone().map(|id| (id, i)))
            .collect();
        let mut steps = Vec::with_capacity(spec.steps.len());
        for (i, s) in spec.steps.iter().enumerate() {
            let after_caller = match s.after.as_deref() {
                None => false,
                Some("caller") => true,
                Some(other) => {
                    return Err(invalid(format!(
                        "step {i}: after = {other:?}; the only value is \"caller\""
                    )))
                }
            };
            if s.say.is_none() && s.call.is_none() {
                return Err(invalid(format!("step {i} has neither `say` nor `call`")));
            }
            let mut branches = BTreeMap::new();
            for (text, target) in &s.branches {
                let to = ids.get(target).ok_or_else(|| {
                    invalid(format!("step {i}: branch to unknown step {target:?}"))
                })?;
                branches.insert(text.trim().to_string(), *to);
            }
            steps.push(Step {
                id: s.id.clone(),
                after_caller,
                heard: s.heard.clone(),
                say: s.say.as_ref().map(&prompt).transpose()?,
                call: s
                    .call
                    .as_ref()
                    .map(|c| -> Result<Call, ScenarioError> {
                        let args = c.arguments.clone().unwrap_or_default();
                        let json = serde_json::to_string(&args)
                            .map_err(|e| invalid(format!("step {i}: arguments: {e}")))?;
                        Ok(Call {
                            name: c.name.clone(),
                            arguments: json,
                        })
                    })
                    .transpose()?,
                branches,
                end: s.end,
            });
        }
        let fallback = match &spec.fallback {
            Some(p) => prompt(p)?,
            None => Prompt {
                text: "Is there anything else I can help you with?".into(),
                audio: voice::builtin("anything_else")
                    .unwrap_or_else(|| voice::stand_in("anything else")),
            },
        };
        let idle = match &spec.idle {
            Some(p) => prompt(p)?,
            None => Prompt {
                text: "Are you still there?".into(),
                audio: voice::builtin("still_there")
                    .unwrap_or_else(|| voice::stand_in("still there")),
            },
        };
        for f in [&spec.faults.mint, &spec.faults.calls]
            .into_iter()
            .flatten()
        {
            if let Some(s) = f.status {
                if !(100..=599).contains(&s) {
                    return Err(invalid(format!("fault status {s} is not an HTTP status")));
                }
            }
        }
        for inj in &spec.faults.inject {
            if inj.raw.is_none() == inj.event.is_none() {
                return Err(invalid(format!(
                    "inject at {} ms needs exactly one of `raw` and `event`",
                    inj.at_ms
                )));
            }
        }
        Ok(Scenario {
            name: spec.name,
            description: spec.description.unwrap_or_default(),
            mode: spec.mode,
            fallback,
            idle,
            default_heard: spec
                .default_heard
                .unwrap_or_else(|| "(caller speech)".to_string()),
            short_turns: spec.short_turns,
            steps,
            faults: spec.faults,
        })
    }
}

/// Fills date placeholders in a tool call's arguments, so a script stays valid whatever the
/// day: `{next:monday}` is the date (YYYY-MM-DD) of the first Monday after `today`, and
/// `{next:monday+1}` the day after it. Unknown placeholders are left as they are.
pub fn fill_dates(text: &str, today: chrono::NaiveDate) -> String {
    use chrono::{Datelike, Duration, Weekday};
    if !text.contains("{next:") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{next:") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let spec = &rest[start + 6..start + len];
        let (day, plus) = match spec.split_once('+') {
            Some((d, n)) => (d, n.trim().parse::<i64>().ok()),
            None => (spec, Some(0)),
        };
        let weekday = day.trim().parse::<Weekday>().ok();
        match (weekday, plus) {
            (Some(w), Some(plus)) => {
                let ahead = (7 + w.num_days_from_monday() as i64
                    - today.weekday().num_days_from_monday() as i64)
                    % 7;
                let ahead = if ahead == 0 { 7 } else { ahead };
                let date = today + Duration::days(ahead + plus);
                out.push_str(&date.format("%Y-%m-%d").to_string());
            }
            _ => out.push_str(&rest[start..start + len + 1]),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// Fills `{output}` and `{output.a.b}` from the last tool output (JSON text).
pub fn fill_template(text: &str, last_output: Option<&str>) -> String {
    if !text.contains("{output") {
        return text.to_string();
    }
    let json: Option<Value> = last_output.and_then(|o| serde_json::from_str(o).ok());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{output") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let key = &rest[start + 1..start + len];
        let value = if key == "output" {
            last_output.unwrap_or("").to_string()
        } else {
            // `a.b|c` tries each path in turn: tool outputs name things differently
            let found = key
                .trim_start_matches("output.")
                .split('|')
                .find_map(|path| {
                    let mut v = json.as_ref();
                    for part in path.trim().split('.') {
                        v = v.and_then(|v| match part.parse::<usize>() {
                            Ok(i) => v.get(i),
                            Err(_) => v.get(part),
                        });
                    }
                    v
                });
            match found {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "unknown".to_string(),
            }
        };
        out.push_str(&value);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod date_tests {
    use super::fill_dates;
    use chrono::NaiveDate;

    #[test]
    fn next_weekday_placeholders() {
        // 2026-12-01 is a Tuesday
        let today = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_eq!(
            fill_dates(
                r#"{"a":"{next:monday}","b":"{next:monday+1}","c":"{next:tuesday}"}"#,
                today
            ),
            r#"{"a":"2026-12-07","b":"2026-12-08","c":"2026-12-08"}"#
        );
        assert_eq!(
            fill_dates("{next:funday} {next:mon", today),
            "{next:funday} {next:mon"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_load() {
        let b = Scenario::load("booking").unwrap();
        assert_eq!(b.mode, Mode::Script);
        assert!(b
            .steps
            .iter()
            .any(|s| s.call.as_ref().is_some_and(|c| c.name == "create_booking")));
        assert_eq!(Scenario::load("echo").unwrap().mode, Mode::Echo);
        // every bundled scenario loads without reading a file
        for name in crate::bundled::scenario_names() {
            Scenario::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(Scenario::load("fault-mint-429")
            .unwrap()
            .faults
            .mint
            .is_some());
    }

    #[test]
    fn bad_scenarios_name_the_problem() {
        let e = Scenario::from_toml("name='x'\n[[steps]]\nid='a'\n", "t", None).unwrap_err();
        assert!(e.to_string().contains("neither"), "{e}");
        let e = Scenario::from_toml(
            "name='x'\n[[steps]]\nsay={text='hi'}\nbranches={'1'='nowhere'}\n",
            "t",
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
        let e = Scenario::from_toml("name='x'\nbogus=1\n", "t", None).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        assert!(Scenario::load("/nonexistent/file.toml").is_err());
    }

    #[test]
    fn templates_fill_from_tool_output() {
        let out = r#"{"booking_id":"B-7","slot":{"time":"10:00"}}"#;
        assert_eq!(
            fill_template("Ref {output.booking_id} at {output.slot.time}.", Some(out)),
            "Ref B-7 at 10:00."
        );
        assert_eq!(fill_template("Ref {output.nope}", Some(out)), "Ref unknown");
        assert_eq!(
            fill_template("Ref {output.id|booking_id}", Some(out)),
            "Ref B-7"
        );
        assert_eq!(fill_template("plain", None), "plain");
        assert_eq!(fill_template("open {output", None), "open {output");
    }
}
