//! Agents: one TOML file each under the agents folder (`agents.dir`). An agent is a system
//! prompt, a voice, the tools it may call, the other agents it may hand a caller to, an
//! optional person to transfer to, and output guardrails. [`Agents::load`] reads and checks a
//! whole folder once at start-up, so a bad file stops the relay with a message naming the file
//! and the bad value instead of failing a caller mid-call.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use crate::booking::{Tools, TOOL_NAMES};
use crate::bridge::guardrail::RuleConfig;
use crate::media::wav;
use crate::openai::events::TurnDetection;
use crate::openai::{AgentSpec, ToolSpec};

/// The tool that hangs up after the agent's last words.
pub const END_CALL: &str = "end_call";
/// The tool that transfers the caller to the agent's configured person (`transfer_target`).
pub const TRANSFER_CALL: &str = "transfer_call";
/// Handoff tools are named `transfer_to_<agent>`, as in OpenAI's Agents SDK.
pub const HANDOFF_PREFIX: &str = "transfer_to_";
/// The transcription model used when an agent file names none.
pub const DEFAULT_TRANSCRIPTION_MODEL: &str = "gpt-4o-transcribe";
/// The built-in line-test agent; no file may take its name.
pub const ECHO_AGENT: &str = "echo";

/// Longest agent name: the handoff tool name (prefix + name) must fit OpenAI's 64 characters.
const MAX_NAME_CHARS: usize = 64 - HANDOFF_PREFIX.len();
/// Largest hold sound read (8 kHz PCM16 is 16 kB a second: this is minutes of sound).
const MAX_HOLD_SOUND_BYTES: u64 = 8 * 1024 * 1024;
/// Largest compiled guardrail pattern: a huge one is a config error, not a memory spike.
const MAX_PATTERN_BYTES: usize = 2 * 1024 * 1024;
/// The kinds of turn detection the service knows.
const TURN_DETECTION_KINDS: [&str; 2] = ["server_vad", "semantic_vad"];
/// `semantic_vad` eagerness values.
const EAGERNESS: [&str; 4] = ["low", "medium", "high", "auto"];

/// One agent file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's name (routes, `agents.default` and handoffs use it); the file stem when
    /// absent. Lowercase letters, digits, `_` and `-`.
    #[serde(default)]
    pub name: String,
    /// One line saying what the agent handles; other agents' handoff tools carry it so their
    /// model knows when to hand over.
    #[serde(default)]
    pub description: String,
    /// The system prompt.
    pub instructions: String,
    /// The voice, e.g. `marin`; `None` keeps the service's default.
    #[serde(default)]
    pub voice: Option<String>,
    /// What the agent says first; the bridge asks the model to say it when the call starts.
    #[serde(default)]
    pub greeting: Option<String>,
    /// Booking tools allowed (names from [`TOOL_NAMES`]) and/or [`END_CALL`].
    #[serde(default)]
    pub tools: Vec<String>,
    /// Other agents it may hand the caller to: one `transfer_to_<name>` tool each.
    #[serde(default)]
    pub handoffs: Vec<String>,
    /// A person's SIP URI (`sip:` or `sips:`); adds the [`TRANSFER_CALL`] tool.
    #[serde(default)]
    pub transfer_target: Option<String>,
    /// Transcription of the caller's speech; `None`: [`DEFAULT_TRANSCRIPTION_MODEL`], `""`: off.
    #[serde(default)]
    pub transcription_model: Option<String>,
    /// The caller's language (ISO 639-1, e.g. `en`), a hint for transcription.
    #[serde(default)]
    pub transcription_language: Option<String>,
    /// Turn detection; `None` keeps the service's default. Unknown keys are refused.
    #[serde(default, deserialize_with = "strict_turn_detection")]
    pub turn_detection: Option<TurnDetection>,
    /// A WAV (8 kHz mono, PCM16 or G.711) played while a tool runs long; `None`: comfort
    /// noise. A relative path is relative to the agent file's folder; after
    /// [`Agents::load`] it holds the resolved path.
    #[serde(default)]
    pub hold_sound: Option<String>,
    /// Output guardrails checked on the agent's transcript.
    #[serde(default)]
    pub guardrails: Vec<RuleConfig>,
    /// Record this agent's calls (`true`) or not (`false`) whatever `recording.enabled`
    /// says; `None` follows `recording.enabled`.
    #[serde(default)]
    pub record: Option<bool>,
}

/// `turn_detection` as an agent file writes it: [`TurnDetection`]'s keys with unknown ones
/// refused, so that a typo such as `silence_ms` stops the load instead of being ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrictTurnDetection {
    #[serde(rename = "type")]
    kind: String,
    threshold: Option<f64>,
    prefix_padding_ms: Option<u32>,
    silence_duration_ms: Option<u32>,
    idle_timeout_ms: Option<u64>,
    create_response: Option<bool>,
    interrupt_response: Option<bool>,
    eagerness: Option<String>,
}

fn strict_turn_detection<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<TurnDetection>, D::Error> {
    let Some(s) = Option::<StrictTurnDetection>::deserialize(d)? else {
        return Ok(None);
    };
    Ok(Some(TurnDetection {
        kind: s.kind,
        threshold: s.threshold,
        prefix_padding_ms: s.prefix_padding_ms,
        silence_duration_ms: s.silence_duration_ms,
        idle_timeout_ms: s.idle_timeout_ms,
        create_response: s.create_response,
        interrupt_response: s.interrupt_response,
        eagerness: s.eagerness,
    }))
}

/// Why an agent file or folder was refused. Each message names the file or agent and the
/// bad value.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The folder or a file could not be read.
    #[error("agent files: cannot read {}: {source}", path.display())]
    Io {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid TOML or does not match the agent format.
    #[error("agent file {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (line, column, key).
        message: String,
    },
    /// An agent name is empty, too long, reserved or has characters outside `a-z0-9_-`.
    #[error("agent name {name:?}: {reason}")]
    BadName {
        /// The name (or the file stem it came from).
        name: String,
        /// Why.
        reason: String,
    },
    /// `tools` lists a tool that does not exist.
    #[error("agent {agent:?}: unknown tool {tool:?} (tools may list {}, {END_CALL}; {TRANSFER_CALL} comes from transfer_target and transfer_to_* from handoffs)", TOOL_NAMES.join(", "))]
    UnknownTool {
        /// The agent.
        agent: String,
        /// The bad tool name.
        tool: String,
    },
    /// `handoffs` names an agent that is not in the folder, or the agent itself.
    #[error("agent {agent:?}: handoff to {target:?}: {reason}")]
    UnknownHandoff {
        /// The agent.
        agent: String,
        /// The bad target.
        target: String,
        /// Why.
        reason: String,
    },
    /// Two agents have the same name.
    #[error("agent name {name:?} is used twice (a name defaults to its file's name)")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// No agent has this name.
    #[error("no agent named {name:?}")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// `transfer_target` is not a `sip:` or `sips:` URI.
    #[error("agent {agent:?}: transfer_target {target:?}: {reason}")]
    BadTransferTarget {
        /// The agent.
        agent: String,
        /// The bad value.
        target: String,
        /// Why.
        reason: String,
    },
    /// `hold_sound` cannot be read or is not a usable WAV.
    #[error("agent {agent:?}: hold_sound {}: {reason}", path.display())]
    BadHoldSound {
        /// The agent.
        agent: String,
        /// The resolved path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another key has a bad value.
    #[error("agent {agent:?}: {key} {value:?}: {reason}")]
    Invalid {
        /// The agent.
        agent: String,
        /// The key, e.g. `turn_detection.type` or `guardrails[0].patterns`.
        key: String,
        /// The bad value.
        value: String,
        /// Why.
        reason: String,
    },
}

/// Every agent of a folder, checked, with their hold sounds decoded.
#[derive(Clone, Default)]
pub struct Agents {
    agents: BTreeMap<String, Arc<AgentConfig>>,
    hold_sounds: BTreeMap<String, Arc<[i16]>>,
}

impl fmt::Debug for Agents {
    // The hold sounds are thousands of samples: show their lengths only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sounds: BTreeMap<&str, usize> = self
            .hold_sounds
            .iter()
            .map(|(k, v)| (k.as_str(), v.len()))
            .collect();
        f.debug_struct("Agents")
            .field("agents", &self.agents)
            .field("hold_sound_samples", &sounds)
            .finish()
    }
}

impl Agents {
    /// Reads every `*.toml` of `dir` (not its subfolders; hidden files skipped) and checks
    /// them together. A missing folder is an [`AgentError::Io`]; a folder without agent files
    /// gives an empty set.
    pub fn load(dir: &Path) -> Result<Self, AgentError> {
        Self::from_configs(read_dir(dir)?)
    }

    /// The bundled agents ([`crate::bundled`]), extended by the files of `dir` when given: a
    /// file's agent replaces a bundled agent of the same name. All are checked together.
    pub fn load_with_bundled(dir: Option<&Path>) -> Result<Self, AgentError> {
        let mut by_name: BTreeMap<String, AgentConfig> = BTreeMap::new();
        for (stem, text) in crate::bundled::agents() {
            let config = parse(text, Path::new(&format!("(bundled) {stem}.toml")), stem)?;
            by_name.insert(config.name.clone(), config);
        }
        if let Some(dir) = dir {
            let mut from_files = std::collections::BTreeSet::new();
            for config in read_dir(dir)? {
                // a file replaces a bundled agent; two files of one name stay an error
                if !from_files.insert(config.name.clone()) {
                    return Err(AgentError::Duplicate { name: config.name });
                }
                by_name.insert(config.name.clone(), config);
            }
        }
        Self::from_configs(by_name.into_values().collect())
    }

    /// Checks agents given as values (relative hold sound paths are relative to the working
    /// folder): the same checks as [`Agents::load`].
    pub fn from_configs(v: Vec<AgentConfig>) -> Result<Self, AgentError> {
        let mut agents = BTreeMap::new();
        let mut tool_names: BTreeMap<String, String> = BTreeMap::new();
        for config in v {
            check_name(&config.name)?;
            if agents.contains_key(&config.name) {
                return Err(AgentError::Duplicate { name: config.name });
            }
            // `a-b` and `a_b` would share one handoff tool name
            let tool = handoff_tool_name(&config.name);
            if let Some(other) = tool_names.insert(tool.clone(), config.name.clone()) {
                return Err(AgentError::BadName {
                    name: config.name,
                    reason: format!("its handoff tool {tool} is also agent {other:?}'s"),
                });
            }
            check_fields(&config)?;
            agents.insert(config.name.clone(), Arc::new(config));
        }
        for config in agents.values() {
            for target in &config.handoffs {
                let reason = if *target == config.name {
                    "an agent cannot hand a caller to itself"
                } else if !agents.contains_key(target) {
                    "no agent has this name"
                } else {
                    continue;
                };
                return Err(AgentError::UnknownHandoff {
                    agent: config.name.clone(),
                    target: target.clone(),
                    reason: reason.into(),
                });
            }
        }
        let mut hold_sounds = BTreeMap::new();
        for config in agents.values() {
            if let Some(path) = &config.hold_sound {
                let samples = read_hold_sound(&config.name, Path::new(path))?;
                hold_sounds.insert(config.name.clone(), samples);
            }
        }
        Ok(Self {
            agents,
            hold_sounds,
        })
    }

    /// The agent called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<AgentConfig>> {
        self.agents.get(name).cloned()
    }

    /// The agent called `name`, or [`AgentError::NotFound`] (for start-up checks such as
    /// `agents.default` and routes).
    pub fn require(&self, name: &str) -> Result<Arc<AgentConfig>, AgentError> {
        self.get(name).ok_or_else(|| AgentError::NotFound {
            name: name.to_string(),
        })
    }

    /// All agent names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.agents.keys().cloned().collect()
    }

    /// How many agents there are.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// No agents at all.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// The agent's hold sound, decoded at load (8 kHz samples); `None` when it has none.
    pub fn hold_sound(&self, name: &str) -> Option<Arc<[i16]>> {
        self.hold_sounds.get(name).cloned()
    }
}

impl AgentConfig {
    /// The realtime session's view of this agent: instructions, voice, transcription, turn
    /// detection, and tools in this order: the allowed booking tools (as listed), `end_call`
    /// (if listed), `transfer_call` (if there is a transfer target), then one
    /// `transfer_to_<name>` per handoff whose target is in `agents`.
    pub fn spec(&self, model: &str, agents: &Agents) -> AgentSpec {
        let mut tools = Vec::new();
        let mut seen = BTreeSet::new();
        let booking = Tools::definitions();
        for name in &self.tools {
            if !seen.insert(name.as_str()) || name == END_CALL {
                continue;
            }
            if let Some(tool) = booking
                .iter()
                .find(|d| d["name"] == name.as_str())
                .and_then(tool_spec)
            {
                tools.push(tool);
            }
        }
        if seen.contains(END_CALL) {
            tools.push(Self::end_call_tool());
        }
        if self.transfer_target.is_some() {
            tools.push(Self::transfer_call_tool());
        }
        let mut handed = BTreeSet::new();
        for target in &self.handoffs {
            if !handed.insert(target.as_str()) {
                continue;
            }
            if let Some(agent) = agents.get(target) {
                tools.push(handoff_tool(&agent));
            }
        }
        let transcription_model = match self.transcription_model.as_deref() {
            None => Some(DEFAULT_TRANSCRIPTION_MODEL.to_string()),
            Some("") => None,
            Some(m) => Some(m.to_string()),
        };
        AgentSpec {
            model: model.to_string(),
            instructions: self.instructions.clone(),
            voice: self.voice.clone(),
            tools,
            turn_detection: self.turn_detection.clone(),
            transcription_model,
            transcription_language: self.transcription_language.clone(),
        }
    }

    /// The agent a handoff tool name points at (`transfer_to_billing` -> `Some("billing")`),
    /// if it is one of this agent's handoffs.
    pub fn handoff_target(&self, tool: &str) -> Option<&str> {
        let rest = tool.strip_prefix(HANDOFF_PREFIX)?;
        self.handoffs
            .iter()
            .find(|h| h.len() == rest.len() && h.chars().map(tool_char).eq(rest.chars()))
            .map(String::as_str)
    }

    /// The `end_call` tool: hang up after the agent's last words; an optional `reason`.
    pub fn end_call_tool() -> ToolSpec {
        ToolSpec {
            name: END_CALL.into(),
            description: "Ends the phone call. Say goodbye first; call this only when the \
                caller has nothing more to ask or asks to hang up. The line closes after your \
                last words have been played."
                .into(),
            parameters: reason_only("Why the call ends, in a few words, for the call log."),
        }
    }

    /// The `transfer_call` tool: put the caller through to the configured person (the target
    /// is never the model's choice); an optional `reason`.
    pub fn transfer_call_tool() -> ToolSpec {
        ToolSpec {
            name: TRANSFER_CALL.into(),
            description: "Transfers the caller to a member of staff, a real person. Use it \
                when the caller asks for a person or needs something you cannot do. Tell the \
                caller you are putting them through before calling it. Without `warm` your \
                part of the call ends once the transfer starts. With `warm: true` the caller \
                waits on hold while the person is called; when they answer, you speak to them \
                alone to brief them, then the caller is put through and you leave; if they do \
                not answer, the caller is back with you and the tool's output says why."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "reason": {
                        "type": "string",
                        "description": "Why the caller needs a person, in a few words, for the staff member."
                    },
                    "warm": {
                        "type": "boolean",
                        "description": "Stay on the line and brief the person before the caller is put through."
                    }
                },
                "additionalProperties": false
            }),
        }
    }
}

/// The handoff tool name for agent `name`: `transfer_to_` and the name with anything but
/// ASCII letters and digits as `_`, lowercase.
pub fn handoff_tool_name(name: &str) -> String {
    let mut s = String::with_capacity(HANDOFF_PREFIX.len() + name.len());
    s.push_str(HANDOFF_PREFIX);
    s.extend(name.chars().map(tool_char));
    s
}

fn tool_char(c: char) -> char {
    if c.is_ascii_alphanumeric() {
        c.to_ascii_lowercase()
    } else {
        '_'
    }
}

/// `{"type":"object"}` with one optional string argument, `reason`.
fn reason_only(what: &str) -> Value {
    json!({
        "type": "object",
        "properties": {"reason": {"type": "string", "description": what}},
        "additionalProperties": false
    })
}

fn handoff_tool(target: &AgentConfig) -> ToolSpec {
    let about = target.description.trim();
    let description = format!(
        "Hands the caller over to the {} agent, who takes over the conversation from here. {}",
        target.name, about
    );
    ToolSpec {
        name: handoff_tool_name(&target.name),
        description: description.trim_end().to_string(),
        parameters: reason_only("Why the caller is handed over, in a few words."),
    }
}

/// A booking tool definition (`{"type":"function","name",…}`) as a [`ToolSpec`].
fn tool_spec(definition: &Value) -> Option<ToolSpec> {
    Some(ToolSpec {
        name: definition["name"].as_str()?.to_string(),
        description: definition["description"].as_str()?.to_string(),
        parameters: definition.get("parameters")?.clone(),
    })
}

fn check_name(name: &str) -> Result<(), AgentError> {
    let bad = |reason: &str| {
        Err(AgentError::BadName {
            name: name.to_string(),
            reason: reason.into(),
        })
    };
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return bad(&format!("longer than {MAX_NAME_CHARS} characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return bad("use lowercase letters, digits, '_' and '-' only");
    }
    if name == ECHO_AGENT {
        return bad("is the built-in line test's name");
    }
    Ok(())
}

/// The checks of one agent on its own (handoff targets and hold sounds come after).
fn check_fields(c: &AgentConfig) -> Result<(), AgentError> {
    let agent = &c.name;
    let invalid = |key: &str, value: &str, reason: &str| AgentError::Invalid {
        agent: agent.clone(),
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    if c.instructions.trim().is_empty() {
        return Err(invalid(
            "instructions",
            &c.instructions,
            "must not be empty",
        ));
    }
    if c.description.trim().contains('\n') {
        return Err(invalid("description", &c.description, "must be one line"));
    }
    for (key, value) in [("voice", &c.voice), ("greeting", &c.greeting)] {
        if let Some(v) = value {
            if v.trim().is_empty() {
                return Err(invalid(
                    key,
                    v,
                    "must not be empty (leave the key out instead)",
                ));
            }
        }
    }
    for tool in &c.tools {
        if tool != END_CALL && !TOOL_NAMES.contains(&tool.as_str()) {
            return Err(AgentError::UnknownTool {
                agent: agent.clone(),
                tool: tool.clone(),
            });
        }
    }
    if let Some(target) = &c.transfer_target {
        check_transfer_target(target).map_err(|reason| AgentError::BadTransferTarget {
            agent: agent.clone(),
            target: target.clone(),
            reason,
        })?;
    }
    if let Some(model) = &c.transcription_model {
        if !model.is_empty() && (model.trim() != model || model.contains(char::is_whitespace)) {
            return Err(invalid(
                "transcription_model",
                model,
                "must be a model name, or \"\" to turn transcription off",
            ));
        }
    }
    if let Some(lang) = &c.transcription_language {
        if lang.len() != 2 || !lang.chars().all(|ch| ch.is_ascii_lowercase()) {
            return Err(invalid(
                "transcription_language",
                lang,
                "must be a two-letter ISO 639-1 code such as \"en\"",
            ));
        }
    }
    if let Some(td) = &c.turn_detection {
        if !TURN_DETECTION_KINDS.contains(&td.kind.as_str()) {
            return Err(invalid(
                "turn_detection.type",
                &td.kind,
                "must be \"server_vad\" or \"semantic_vad\"",
            ));
        }
        if let Some(t) = td.threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(invalid(
                    "turn_detection.threshold",
                    &t.to_string(),
                    "must be between 0.0 and 1.0",
                ));
            }
        }
        if let Some(e) = &td.eagerness {
            if !EAGERNESS.contains(&e.as_str()) {
                return Err(invalid(
                    "turn_detection.eagerness",
                    e,
                    "must be low, medium, high or auto",
                ));
            }
        }
    }
    let mut rule_names = BTreeSet::new();
    for (i, rule) in c.guardrails.iter().enumerate() {
        let key = |field: &str| format!("guardrails[{i}].{field}");
        if rule.name.trim().is_empty() {
            return Err(invalid(&key("name"), &rule.name, "must not be empty"));
        }
        if !rule_names.insert(rule.name.as_str()) {
            return Err(invalid(&key("name"), &rule.name, "is used by two rules"));
        }
        if rule.patterns.is_empty() && rule.words.is_empty() {
            return Err(invalid(
                &format!("guardrails[{i}]"),
                &rule.name,
                "a rule needs at least one pattern or word",
            ));
        }
        // an empty pattern matches everything: the rule would trip on every word
        for (field, list) in [("patterns", &rule.patterns), ("words", &rule.words)] {
            if let Some(empty) = list.iter().find(|p| p.trim().is_empty()) {
                return Err(invalid(&key(field), empty, "must not be empty"));
            }
        }
        for pattern in &rule.patterns {
            if let Err(e) = regex::RegexBuilder::new(pattern)
                .size_limit(MAX_PATTERN_BYTES)
                .build()
            {
                return Err(invalid(&key("patterns"), pattern, &e.to_string()));
            }
        }
    }
    Ok(())
}

/// A transfer target must be a SIP URI with a host, so that a typo is caught at start-up
/// rather than when a caller asks for a person.
fn check_transfer_target(target: &str) -> Result<(), String> {
    use rsipstack::sip::uri::Scheme;
    let lower = target.trim().to_ascii_lowercase();
    if !(lower.starts_with("sip:") || lower.starts_with("sips:")) {
        return Err("must start with sip: or sips:".into());
    }
    let uri =
        rsipstack::sip::Uri::try_from(target.trim()).map_err(|e| format!("not a SIP URI ({e})"))?;
    match uri.scheme {
        Some(Scheme::Sip) | Some(Scheme::Sips) => {}
        _ => return Err("must start with sip: or sips:".into()),
    }
    if uri.host_with_port.host.to_string().trim().is_empty() {
        return Err("has no host".into());
    }
    Ok(())
}

/// Reads and parses every `*.toml` of `dir` (not its subfolders; hidden files skipped), in
/// file name order; relative hold sounds are resolved against `dir`.
fn read_dir(dir: &Path) -> Result<Vec<AgentConfig>, AgentError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AgentError::Io { path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if !hidden && path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    // sorted, so that the same folder always gives the same first error
    files.sort();
    let mut configs = Vec::with_capacity(files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut config = parse(&text, &path, &stem)?;
        if let Some(sound) = &config.hold_sound {
            config.hold_sound = Some(dir.join(sound).to_string_lossy().into_owned());
        }
        configs.push(config);
    }
    Ok(configs)
}

/// Parses one agent file's text; `path` names it in errors, `stem` is the default name.
fn parse(text: &str, path: &Path, stem: &str) -> Result<AgentConfig, AgentError> {
    let mut config: AgentConfig = toml::from_str(text).map_err(|e| AgentError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    if config.name.is_empty() {
        config.name = stem.to_string();
    }
    Ok(config)
}

fn read_hold_sound(agent: &str, path: &Path) -> Result<Arc<[i16]>, AgentError> {
    let bad = |reason: String| AgentError::BadHoldSound {
        agent: agent.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| bad(e.to_string()))?
        .len();
    if size > MAX_HOLD_SOUND_BYTES {
        return Err(bad(format!(
            "{size} bytes; at most {MAX_HOLD_SOUND_BYTES} are read"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let samples = wav::read_8k(&bytes).map_err(|e| bad(e.to_string()))?;
    if samples.is_empty() {
        return Err(bad("holds no sound".into()));
    }
    Ok(samples.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The minimum an agent needs.
    fn agent(name: &str) -> AgentConfig {
        AgentConfig {
            name: name.into(),
            description: format!("Handles {name} questions."),
            instructions: "Help the caller.".into(),
            voice: None,
            greeting: None,
            tools: Vec::new(),
            handoffs: Vec::new(),
            transfer_target: None,
            transcription_model: None,
            transcription_language: None,
            turn_detection: None,
            hold_sound: None,
            guardrails: Vec::new(),
            record: None,
        }
    }

    fn rule(name: &str, patterns: &[&str], words: &[&str]) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            patterns: patterns.iter().map(|s| s.to_string()).collect(),
            words: words.iter().map(|s| s.to_string()).collect(),
            message: None,
        }
    }

    fn tool_names(spec: &AgentSpec) -> Vec<&str> {
        spec.tools.iter().map(|t| t.name.as_str()).collect()
    }

    /// The error of `from_configs`, as its message, which must name `value`.
    fn refused(configs: Vec<AgentConfig>, value: &str) -> AgentError {
        let err = Agents::from_configs(configs).expect_err("should be refused");
        let msg = err.to_string();
        assert!(msg.contains(value), "{msg:?} should name {value:?}");
        err
    }

    fn project_file(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }

    #[test]
    fn an_agent_may_say_whether_its_calls_are_recorded() {
        let parse = |t: &str| toml::from_str::<AgentConfig>(t).map(|c| c.record);
        assert_eq!(parse("instructions = \"x\"").unwrap(), None);
        assert_eq!(
            parse("instructions = \"x\"\nrecord = false").unwrap(),
            Some(false)
        );
        assert_eq!(
            parse("instructions = \"x\"\nrecord = true").unwrap(),
            Some(true)
        );
        assert!(parse("instructions = \"x\"\nrecord = \"yes\"").is_err());
    }

    #[test]
    fn the_bundled_agents_load_and_a_folder_extends_and_replaces_them() {
        let bundled = Agents::load_with_bundled(None).unwrap();
        assert_eq!(bundled.names(), ["billing", "receptionist"]);
        let shipped = Agents::load(&project_file("config/agents")).unwrap();
        assert_eq!(bundled.get("receptionist"), shipped.get("receptionist"));

        let dir = tempfile::tempdir().unwrap();
        let write = |file: &str, text: &str| std::fs::write(dir.path().join(file), text).unwrap();
        write(
            "receptionist.toml",
            "instructions = 'Hilltop clinic.'\nhandoffs = ['front']\n",
        );
        write("front.toml", "instructions = 'Front desk.'\n");
        let both = Agents::load_with_bundled(Some(dir.path())).unwrap();
        assert_eq!(both.names(), ["billing", "front", "receptionist"]);
        assert_eq!(
            both.get("receptionist").unwrap().instructions,
            "Hilltop clinic."
        );
        // the bundled billing agent hands back to whichever receptionist there is
        assert_eq!(both.get("billing").unwrap().handoffs, ["receptionist"]);

        // a file's errors still name the file; a configured folder must exist
        write("zz.toml", "voise = 'x'\n");
        let e = Agents::load_with_bundled(Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("zz.toml") && e.contains("voise"), "{e}");
        let e = Agents::load_with_bundled(Some(&dir.path().join("nope")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
        // two files of one name are refused, as in a folder alone
        std::fs::remove_file(dir.path().join("zz.toml")).unwrap();
        write("other.toml", "name = 'front'\ninstructions = 'x'\n");
        let e = Agents::load_with_bundled(Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("front"), "{e}");
    }

    #[test]
    fn the_shipped_agents_load() {
        let agents = Agents::load(&project_file("config/agents")).unwrap();
        assert_eq!(agents.names(), ["billing", "receptionist"]);
        let r = agents.get("receptionist").unwrap();
        let spec = r.spec("gpt-realtime", &agents);
        let names = tool_names(&spec);
        for tool in TOOL_NAMES {
            assert!(names.contains(&tool), "{names:?} lacks {tool}");
        }
        for tool in [END_CALL, TRANSFER_CALL, "transfer_to_billing"] {
            assert!(names.contains(&tool), "{names:?} lacks {tool}");
        }
        assert!(r.greeting.is_some());
        assert!(r.instructions.contains("[keypad]"));
        assert!(!r.guardrails.is_empty());
        assert_eq!(
            r.transfer_target.as_deref(),
            Some("sip:frontdesk@127.0.0.1:5070")
        );
        let b = agents.get("billing").unwrap();
        assert_eq!(
            b.handoff_target("transfer_to_receptionist"),
            Some("receptionist")
        );
        let b_spec = b.spec("gpt-realtime", &agents);
        let names = tool_names(&b_spec);
        assert!(names.contains(&"transfer_to_receptionist"), "{names:?}");
        assert!(!names.contains(&"create_booking"), "{names:?}");
    }

    #[test]
    fn a_file_without_a_name_takes_its_stem_and_hold_sounds_are_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            project_file("assets/prompts/goodbye.wav"),
            dir.path().join("hold.wav"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("front-desk.toml"),
            "instructions = \"Answer.\"\nhold_sound = \"hold.wav\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("README.md"), "not an agent").unwrap();
        std::fs::write(dir.path().join(".draft.toml"), "not toml at all [").unwrap();
        let agents = Agents::load(dir.path()).unwrap();
        assert_eq!(agents.names(), ["front-desk"]);
        let sound = agents.hold_sound("front-desk").unwrap();
        assert!(sound.len() > 4_000, "{} samples", sound.len());
        assert!(agents.hold_sound("nobody").is_none());
        let a = agents.get("front-desk").unwrap();
        assert_eq!(
            a.hold_sound.as_deref().map(Path::new),
            Some(dir.path().join("hold.wav").as_path())
        );
        // defaults
        let spec = a.spec("m", &agents);
        assert_eq!(spec.model, "m");
        assert_eq!(
            spec.transcription_model.as_deref(),
            Some(DEFAULT_TRANSCRIPTION_MODEL)
        );
        assert!(spec.tools.is_empty());
        assert!(spec.turn_detection.is_none());
        assert!(a.greeting.is_none());
    }

    #[test]
    fn an_empty_folder_has_no_agents_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Agents::load(dir.path()).unwrap().is_empty());
        let missing = dir.path().join("nope");
        let err = Agents::load(&missing).unwrap_err();
        assert!(matches!(err, AgentError::Io { .. }));
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn file_errors_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typo.toml");
        std::fs::write(&path, "instructions = \"x\"\nvoise = \"marin\"\n").unwrap();
        let err = Agents::load(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, AgentError::Parse { .. }));
        assert!(msg.contains("typo.toml") && msg.contains("voise"), "{msg}");

        std::fs::write(&path, "instructions = \"x\"\ntools = [\"create_booking\"\n").unwrap();
        let msg = Agents::load(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("typo.toml"), "{msg}");

        std::fs::write(&path, "description = \"no prompt\"\n").unwrap();
        let msg = Agents::load(dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains("typo.toml") && msg.contains("instructions"),
            "{msg}"
        );

        std::fs::write(
            &path,
            "instructions = \"x\"\n[turn_detection]\ntype = \"server_vad\"\nsilence_ms = 500\n",
        )
        .unwrap();
        let msg = Agents::load(dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains("typo.toml") && msg.contains("silence_ms"),
            "{msg}"
        );

        std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        let err = Agents::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("typo.toml"), "{err}");
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", "Billing", "front desk", "echo", &"a".repeat(60)] {
            let err = Agents::from_configs(vec![agent(name)]).unwrap_err();
            assert!(matches!(err, AgentError::BadName { .. }), "{name:?}: {err}");
            assert!(err.to_string().contains(&format!("{name:?}")), "{err}");
        }
        let err = refused(vec![agent("sales"), agent("sales")], "\"sales\"");
        assert!(matches!(err, AgentError::Duplicate { .. }));
        // one handoff tool name for both
        let err = refused(vec![agent("front-desk"), agent("front_desk")], "front_desk");
        assert!(matches!(err, AgentError::BadName { .. }));
        // a file named like an existing agent's `name` key
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.toml"),
            "name = \"b\"\ninstructions = \"x\"",
        )
        .unwrap();
        std::fs::write(dir.path().join("b.toml"), "instructions = \"x\"").unwrap();
        let err = Agents::load(dir.path()).unwrap_err();
        assert!(
            matches!(err, AgentError::Duplicate { ref name } if name == "b"),
            "{err}"
        );
    }

    #[test]
    fn unknown_tools_are_refused() {
        for tool in ["book_flight", TRANSFER_CALL, "transfer_to_billing", ""] {
            let mut a = agent("a");
            a.tools = vec!["find_bookings".into(), tool.into()];
            let err = refused(vec![a], &format!("{tool:?}"));
            assert!(matches!(err, AgentError::UnknownTool { .. }), "{err}");
        }
    }

    #[test]
    fn handoffs_must_name_another_agent() {
        let mut a = agent("a");
        a.handoffs = vec!["billing".into()];
        let err = refused(vec![a.clone()], "\"billing\"");
        assert!(matches!(err, AgentError::UnknownHandoff { .. }));
        assert!(err.to_string().contains("\"a\""), "{err}");
        // with the target present it loads
        Agents::from_configs(vec![a, agent("billing")]).unwrap();
        let mut own = agent("a");
        own.handoffs = vec!["a".into()];
        let err = refused(vec![own], "itself");
        assert!(matches!(err, AgentError::UnknownHandoff { .. }));
    }

    #[test]
    fn transfer_targets_must_be_sip_uris() {
        for good in [
            "sip:frontdesk@127.0.0.1:5070",
            "sips:nurse@clinic.example.com",
            "sip:+15551230000@pbx.example.net;transport=tcp",
        ] {
            let mut a = agent("a");
            a.transfer_target = Some(good.into());
            Agents::from_configs(vec![a]).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "",
            "frontdesk@127.0.0.1",
            "tel:+15551230000",
            "https://example.com",
            "sip:",
        ] {
            let mut a = agent("a");
            a.transfer_target = Some(bad.into());
            let err = refused(vec![a], &format!("{bad:?}"));
            assert!(
                matches!(err, AgentError::BadTransferTarget { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn hold_sounds_must_be_readable_8k_wavs() {
        let dir = tempfile::tempdir().unwrap();
        let not_wav = dir.path().join("noise.wav");
        std::fs::write(&not_wav, b"definitely not a wav").unwrap();
        // a valid header and no samples
        let empty = dir.path().join("empty.wav");
        std::fs::write(
            &empty,
            b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x40\x1f\0\0\0\0\0\0\x02\0\x10\0data\0\0\0\0",
        )
        .unwrap();
        // 16 kHz: the phone leg plays 8 kHz only
        let wide = dir.path().join("wide.wav");
        std::fs::write(
            &wide,
            b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0\0\0\0\0\x02\0\x10\0data\x02\0\0\0\x01\0",
        )
        .unwrap();
        let missing = dir.path().join("missing.wav");
        for path in [&not_wav, &empty, &wide, &missing] {
            let mut a = agent("a");
            a.hold_sound = Some(path.to_string_lossy().into_owned());
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let err = refused(vec![a], &name);
            assert!(matches!(err, AgentError::BadHoldSound { .. }), "{err}");
        }
    }

    #[test]
    fn other_bad_values_are_refused_by_key() {
        type Edit = fn(&mut AgentConfig);
        let cases: [(Edit, &str); 12] = [
            (|a| a.instructions = "  ".into(), "instructions"),
            (|a| a.description = "two\nlines".into(), "description"),
            (|a| a.voice = Some(String::new()), "voice"),
            (|a| a.greeting = Some(" ".into()), "greeting"),
            (|a| a.transcription_model = Some("gpt 4o".into()), "gpt 4o"),
            (
                |a| a.transcription_language = Some("english".into()),
                "english",
            ),
            (
                |a| {
                    a.turn_detection = Some(TurnDetection {
                        kind: "push_to_talk".into(),
                        ..Default::default()
                    })
                },
                "push_to_talk",
            ),
            (
                |a| {
                    a.turn_detection = Some(TurnDetection {
                        kind: "server_vad".into(),
                        threshold: Some(1.5),
                        ..Default::default()
                    })
                },
                "1.5",
            ),
            (
                |a| {
                    a.turn_detection = Some(TurnDetection {
                        kind: "semantic_vad".into(),
                        eagerness: Some("eager".into()),
                        ..Default::default()
                    })
                },
                "eager",
            ),
            (
                |a| a.guardrails = vec![rule("dosage", &[""], &[])],
                "guardrails[0].patterns",
            ),
            (
                |a| a.guardrails = vec![rule("dosage", &[r"\d+ (mg"], &[])],
                r"\\d+ (mg",
            ),
            (
                |a| a.guardrails = vec![rule("x", &["a"], &[]), rule("x", &[], &["b"])],
                "guardrails[1].name",
            ),
        ];
        for (edit, named) in cases {
            let mut a = agent("a");
            edit(&mut a);
            let err = refused(vec![a], named);
            assert!(matches!(err, AgentError::Invalid { .. }), "{err}");
        }
        let mut a = agent("a");
        a.guardrails = vec![rule("nothing", &[], &[])];
        refused(vec![a], "nothing");
        // "" turns transcription off
        let mut a = agent("a");
        a.transcription_model = Some(String::new());
        let agents = Agents::from_configs(vec![a.clone()]).unwrap();
        assert_eq!(a.spec("m", &agents).transcription_model, None);
    }

    #[test]
    fn spec_lists_the_allowed_tools_in_order() {
        let mut a = agent("front");
        a.tools = vec![
            "find_bookings".into(),
            END_CALL.into(),
            "create_booking".into(),
            "find_bookings".into(),
        ];
        a.voice = Some("marin".into());
        a.transcription_language = Some("en".into());
        a.instructions = "Be brief.".into();
        let agents = Agents::from_configs(vec![a.clone()]).unwrap();
        let spec = a.spec("gpt-realtime", &agents);
        assert_eq!(
            tool_names(&spec),
            ["find_bookings", "create_booking", END_CALL],
            "duplicates once, end_call after the booking tools, no transfer_call without a target"
        );
        assert_eq!(spec.instructions, "Be brief.");
        assert_eq!(spec.voice.as_deref(), Some("marin"));
        assert_eq!(spec.transcription_language.as_deref(), Some("en"));
        // booking tools carry the booking module's own schema
        let create = &spec.tools[1];
        assert_eq!(
            create.parameters["required"],
            json!(["patient_name", "phone", "date", "time"])
        );
        // the session object the service gets
        let session = serde_json::to_value(spec.session(None)).unwrap();
        assert_eq!(session["tools"][2]["name"], END_CALL);
        assert_eq!(session["tools"][2]["type"], "function");

        a.transfer_target = Some("sip:frontdesk@127.0.0.1:5070".into());
        let spec = a.spec("gpt-realtime", &agents);
        assert_eq!(
            tool_names(&spec),
            ["find_bookings", "create_booking", END_CALL, TRANSFER_CALL]
        );
        // the model never sees where the transfer goes
        let text = serde_json::to_string(&spec.tools).unwrap();
        assert!(!text.contains("frontdesk"), "{text}");
    }

    #[test]
    fn end_and_transfer_take_only_optional_arguments() {
        for (tool, args) in [
            (AgentConfig::end_call_tool(), 1),
            // transfer_call: the reason, and `warm`
            (AgentConfig::transfer_call_tool(), 2),
        ] {
            let p = &tool.parameters;
            assert_eq!(p["type"], "object");
            assert_eq!(p["properties"]["reason"]["type"], "string");
            assert_eq!(p["properties"].as_object().unwrap().len(), args, "{p}");
            assert!(p.get("required").is_none(), "{p}");
            assert!(!tool.description.is_empty());
        }
        let t = AgentConfig::transfer_call_tool();
        assert_eq!(t.parameters["properties"]["warm"]["type"], "boolean");
        assert_eq!(AgentConfig::end_call_tool().name, END_CALL);
        assert_eq!(AgentConfig::transfer_call_tool().name, TRANSFER_CALL);
    }

    #[test]
    fn handoff_tools_describe_their_target() {
        let mut front = agent("front");
        front.handoffs = vec!["billing".into(), "after-hours".into(), "billing".into()];
        let mut billing = agent("billing");
        billing.description = "Answers questions about invoices and payments.".into();
        let mut late = agent("after-hours");
        late.description = String::new();
        let agents = Agents::from_configs(vec![front.clone(), billing, late]).unwrap();
        let spec = front.spec("m", &agents);
        assert_eq!(
            tool_names(&spec),
            ["transfer_to_billing", "transfer_to_after_hours"]
        );
        let to_billing = &spec.tools[0];
        assert!(
            to_billing.description.contains("billing agent")
                && to_billing
                    .description
                    .contains("Answers questions about invoices and payments."),
            "{}",
            to_billing.description
        );
        assert!(spec.tools[1].description.contains("after-hours agent"));
        let p = &to_billing.parameters;
        assert_eq!(p["properties"]["reason"]["type"], "string");
        assert!(p.get("required").is_none(), "{p}");
        // a target missing from the set given is left out rather than offered
        let alone = Agents::from_configs(vec![agent("billing")]).unwrap();
        assert_eq!(
            tool_names(&front.spec("m", &alone)),
            ["transfer_to_billing"]
        );
    }

    #[test]
    fn handoff_target_maps_tool_names_back() {
        let mut front = agent("front");
        front.handoffs = vec!["billing".into(), "after-hours".into()];
        assert_eq!(front.handoff_target("transfer_to_billing"), Some("billing"));
        assert_eq!(
            front.handoff_target("transfer_to_after_hours"),
            Some("after-hours")
        );
        assert_eq!(
            front.handoff_target(&handoff_tool_name("after-hours")),
            Some("after-hours")
        );
        for other in [
            "transfer_to_sales",
            "transfer_to_",
            "billing",
            "transfer_to_billing2",
            END_CALL,
            TRANSFER_CALL,
            "",
        ] {
            assert_eq!(front.handoff_target(other), None, "{other:?}");
        }
    }

    #[test]
    fn require_names_the_missing_agent() {
        let agents = Agents::from_configs(vec![agent("a")]).unwrap();
        assert_eq!(agents.require("a").unwrap().name, "a");
        assert_eq!(agents.len(), 1);
        let err = agents.require("receptionist").unwrap_err();
        assert!(matches!(err, AgentError::NotFound { .. }));
        assert!(err.to_string().contains("receptionist"), "{err}");
    }

    #[test]
    fn debug_shows_sample_counts_not_samples() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = agent("a");
        let wav = dir.path().join("h.wav");
        std::fs::copy(project_file("assets/prompts/goodbye.wav"), &wav).unwrap();
        a.hold_sound = Some(wav.to_string_lossy().into_owned());
        let agents = Agents::from_configs(vec![a]).unwrap();
        let text = format!("{agents:?}");
        assert!(text.len() < 2_000, "{} chars", text.len());
        assert!(text.contains("hold_sound_samples"), "{text}");
    }
}
